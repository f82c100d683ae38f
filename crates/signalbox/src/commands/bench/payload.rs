//! Realistic `/v1/batch` bodies, made cheaply.
//!
//! A handful of batch bodies are rendered once with serde_json from ecommerce call templates
//! (Product Viewed, Product Added, Checkout Started, Order Completed, identify). Each call
//! holds a 36-character `messageId` placeholder whose byte offset is remembered; a request
//! copies one rendered body and writes fresh ids over the placeholders, so no JSON is built
//! while the load runs and the CPU stays with the server.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use clap::ValueEnum;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Bytes of one rendered call, inclusive.
pub const CALL_BYTES: std::ops::RangeInclusive<usize> = 300..=600;
/// Length of a `messageId` (UUID-shaped).
const ID_LEN: usize = 36;
const ID_PLACEHOLDER: &str = "00000000-0000-4000-8000-000000000000";
/// Distinct rendered bodies requests cycle through.
const TEMPLATES: usize = 32;

/// How message ids are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IdStyle {
    /// UUID-shaped, increasing (time-ordered ids such as UUIDv7 or ULID).
    Sequential,
    /// UUID-shaped, scattered like random v4 ids (what most Segment libraries send).
    Random,
}

/// Hands out batch bodies whose message ids are unique for the life of the factory (and,
/// through a random per-run part, across runs against the same log).
pub struct BodyFactory {
    templates: Vec<Template>,
    batch_size: usize,
    next_id: AtomicU64,
    run_nonce: u64,
    style: IdStyle,
}

struct Template {
    bytes: Vec<u8>,
    /// Where each call's `messageId` value starts.
    id_offsets: Vec<usize>,
}

impl BodyFactory {
    pub fn new(batch_size: usize, style: IdStyle, seed: u64) -> BodyFactory {
        let mut rng = StdRng::seed_from_u64(seed);
        let sent_at = jiff::Timestamp::now();
        let templates = (0..TEMPLATES)
            .map(|_| render_batch(&mut rng, batch_size, sent_at))
            .collect();
        BodyFactory {
            templates,
            batch_size,
            next_id: AtomicU64::new(0),
            run_nonce: rand::random::<u64>(),
            style,
        }
    }

    /// Calls per body.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Average body size in bytes.
    pub fn mean_body_bytes(&self) -> usize {
        self.templates.iter().map(|t| t.bytes.len()).sum::<usize>() / self.templates.len()
    }

    /// A fresh body with ids nobody has sent before.
    pub fn next_body(&self) -> Bytes {
        let first = self
            .next_id
            .fetch_add(self.batch_size as u64, Ordering::Relaxed);
        let template = &self.templates[(first / self.batch_size as u64) as usize % TEMPLATES];
        let mut bytes = template.bytes.clone();
        for (idx, &offset) in template.id_offsets.iter().enumerate() {
            let id = self.id_number(first + idx as u64);
            write_id(&mut bytes[offset..offset + ID_LEN], id, self.run_nonce);
        }
        Bytes::from(bytes)
    }

    fn id_number(&self, counter: u64) -> u64 {
        match self.style {
            // A bijection, so distinct counters give distinct ids.
            IdStyle::Random => mix64(counter ^ self.run_nonce),
            IdStyle::Sequential => counter,
        }
    }
}

/// The splitmix64 finaliser: a bijection on u64 that scatters consecutive inputs.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Writes `xxxxxxxx-xxxx-xxxx-4xxx-xxxxxxxxxxxx`: the first 16 hex digits are `number`, the
/// rest come from the run's nonce.
fn write_id(out: &mut [u8], number: u64, nonce: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 32];
    for (i, digit) in digits[..16].iter_mut().enumerate() {
        *digit = HEX[((number >> (60 - 4 * i)) & 0xf) as usize];
    }
    for (i, digit) in digits[16..].iter_mut().enumerate() {
        *digit = HEX[((nonce >> (60 - 4 * i)) & 0xf) as usize];
    }
    digits[16] = b'4';
    let mut src = 0;
    for (pos, byte) in out.iter_mut().enumerate() {
        if matches!(pos, 8 | 13 | 18 | 23) {
            *byte = b'-';
        } else {
            *byte = digits[src];
            src += 1;
        }
    }
}

fn render_batch(rng: &mut StdRng, batch_size: usize, sent_at: jiff::Timestamp) -> Template {
    let mut bytes = Vec::with_capacity(batch_size * 512);
    let mut id_offsets = Vec::with_capacity(batch_size);
    bytes.extend_from_slice(b"{\"batch\":[");
    for idx in 0..batch_size {
        if idx > 0 {
            bytes.push(b',');
        }
        let call = loop {
            let call = serde_json::to_string(&ecommerce_call(rng, sent_at)).expect("json");
            if CALL_BYTES.contains(&call.len()) {
                break call;
            }
        };
        let marker = "\"messageId\":\"";
        let at = call.find(marker).expect("every call has a messageId") + marker.len();
        id_offsets.push(bytes.len() + at);
        bytes.extend_from_slice(call.as_bytes());
    }
    // Segment's server libraries send the batch and its send time; context is per call.
    let envelope = json!({"sentAt": format_ms(sent_at)});
    let envelope = serde_json::to_string(&envelope).expect("json");
    bytes.extend_from_slice(b"],");
    bytes.extend_from_slice(&envelope.as_bytes()[1..]);
    Template { bytes, id_offsets }
}

fn format_ms(ts: jiff::Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

const PRODUCTS: &[(&str, &str, &str, f64)] = &[
    ("Trail Runner 2", "Shoes", "Northwind", 89.99),
    ("Merino Crew Sock", "Socks", "Fjellgear", 14.5),
    ("Rain Shell Jacket", "Outerwear", "Northwind", 149.0),
    ("Canvas Tote", "Bags", "Harbor & Co", 24.0),
    ("Espresso Grinder", "Kitchen", "Brewline", 219.95),
    ("Linen Shirt", "Shirts", "Harbor & Co", 59.0),
    ("Wool Beanie", "Accessories", "Fjellgear", 19.99),
    ("Pour-Over Kettle", "Kitchen", "Brewline", 64.25),
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148",
];
const FIRST_NAMES: &[&str] = &["Ada", "Grace", "Linus", "Margit", "Tomas", "Yuki", "Noor"];

fn product(rng: &mut StdRng, with_quantity: bool) -> Value {
    let idx = rng.random_range(0..PRODUCTS.len());
    let (name, category, brand, price) = PRODUCTS[idx];
    let colour = ["BL", "RD", "GR"][rng.random_range(0..3)];
    let mut p = json!({
        "product_id": format!("P-{}", 1000 + idx * 37),
        "sku": format!("SKU-{}-{colour}", 1000 + idx * 37),
        "name": name,
        "category": category,
        "brand": brand,
        "price": price,
    });
    if with_quantity {
        p["quantity"] = json!(rng.random_range(1..4));
    }
    p
}

fn ecommerce_call(rng: &mut StdRng, now: jiff::Timestamp) -> Value {
    let user = rng.random_range(10_000..99_999);
    let anonymous = format!("anon-{:016x}", rng.random::<u64>());
    let timestamp = format_ms(now - jiff::SignedDuration::from_millis(rng.random_range(0..5_000)));
    let context = json!({
        "ip": format!("203.0.113.{}", rng.random_range(1..255)),
        "userAgent": AGENTS.choose(rng).expect("agents"),
        "library": {"name": "signalbox-bench", "version": env!("CARGO_PKG_VERSION")},
    });
    let mut call = match rng.random_range(0..10) {
        0..=3 => {
            let mut p = product(rng, false);
            p["currency"] = json!("USD");
            json!({"type": "track", "event": "Product Viewed", "properties": p})
        }
        4..=5 => {
            let mut p = product(rng, true);
            p["cart_id"] = json!(format!("cart-{}", rng.random_range(100_000..999_999)));
            json!({"type": "track", "event": "Product Added", "properties": p})
        }
        6 => {
            let products: Vec<Value> = (0..rng.random_range(1..3))
                .map(|_| product(rng, true))
                .collect();
            json!({"type": "track", "event": "Checkout Started", "properties": {
                "order_id": format!("ord-{}", rng.random_range(100_000..999_999)),
                "value": 120.5, "currency": "USD", "products": products}})
        }
        7 => {
            let products: Vec<Value> = (0..rng.random_range(1..3))
                .map(|_| product(rng, true))
                .collect();
            json!({"type": "track", "event": "Order Completed", "properties": {
                "order_id": format!("ord-{}", rng.random_range(100_000..999_999)),
                "total": 131.45, "revenue": 120.5, "shipping": 5.95, "tax": 5.0,
                "currency": "USD", "products": products}})
        }
        _ => {
            let first = *FIRST_NAMES.choose(rng).expect("names");
            let plan = ["free", "plus", "pro"][rng.random_range(0..3)];
            let city = ["Oslo", "Lisbon", "Osaka", "Austin"][rng.random_range(0..4)];
            json!({"type": "identify", "traits": {
                "email": format!("{}.{user}@example.com", first.to_lowercase()),
                "first_name": first,
                "plan": plan,
                "city": city,
                "accepts_marketing": rng.random_bool(0.5)}})
        }
    };
    call["messageId"] = json!(ID_PLACEHOLDER);
    call["userId"] = json!(format!("user-{user}"));
    call["anonymousId"] = json!(anonymous);
    call["timestamp"] = json!(timestamp);
    call["context"] = context;
    call
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn bodies_are_valid_batches_of_realistic_calls_with_unique_ids() {
        for style in [IdStyle::Random, IdStyle::Sequential] {
            let factory = BodyFactory::new(100, style, 7);
            let mut ids = HashSet::new();
            for _ in 0..(2 * TEMPLATES) {
                let body: Value = serde_json::from_slice(&factory.next_body()).unwrap();
                let batch = body["batch"].as_array().unwrap();
                assert_eq!(batch.len(), 100);
                for call in batch {
                    let len = serde_json::to_string(call).unwrap().len();
                    assert!(CALL_BYTES.contains(&len), "{len} bytes");
                    let id = call["messageId"].as_str().unwrap().to_owned();
                    assert_eq!(id.len(), ID_LEN);
                    assert!(ids.insert(id), "duplicate id");
                }
                assert!(body["sentAt"].is_string());
            }
        }
    }

    #[test]
    fn sequential_ids_sort_in_sending_order() {
        let mut a = [0u8; ID_LEN];
        let mut b = [0u8; ID_LEN];
        write_id(&mut a, 9, 1);
        write_id(&mut b, 10, 1);
        assert!(a < b);
        assert_eq!(std::str::from_utf8(&a).unwrap().matches('-').count(), 4);
    }
}
