//! Generated ecommerce data for `bench segments`: profiles (identify) and a shop's events
//! (track) appended to a call log the way ingest appends them.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use signalbox_core::{CallKind, NewCall, SourceId};
use signalbox_store::{Store, StoreError};

/// The shop's metrics and how often each occurs (per 100 events).
pub const METRICS: [(&str, u32); 4] = [
    ("Viewed Product", 55),
    ("Added to Cart", 20),
    ("Checkout Started", 15),
    ("Placed Order", 10),
];

pub const CATEGORIES: [&str; 8] = [
    "Shirts", "Hats", "Shoes", "Bags", "Socks", "Coats", "Belts", "Scarves",
];

pub const PLANS: [&str; 3] = ["free", "pro", "team"];

/// Calls per append.
const BATCH: usize = 1_000;

pub fn call(kind: CallKind, received: Timestamp, mut message: Value) -> NewCall {
    let message_id = uuid::Uuid::new_v4().to_string();
    message["type"] = json!(kind.as_str());
    message["messageId"] = json!(message_id);
    message["receivedAt"] = json!(received.to_string());
    if message.get("timestamp").is_none() {
        message["timestamp"] = json!(received.to_string());
    }
    NewCall {
        kind,
        message_id,
        received_at: received,
        payload: message.to_string(),
    }
}

pub fn user(i: usize) -> String {
    format!("user-{i}")
}

pub fn identify(i: usize, received: Timestamp) -> NewCall {
    call(
        CallKind::Identify,
        received,
        json!({"userId": user(i), "traits": {
            "email": format!("user{i}@example.com"),
            "plan": PLANS[i % PLANS.len()],
            "firstName": format!("First{i}"),
        }}),
    )
}

pub fn track(user_index: usize, metric: &str, time: Timestamp, rng: &mut StdRng) -> NewCall {
    let category = CATEGORIES[rng.random_range(0..CATEGORIES.len())];
    let mut properties = json!({
        "category": category,
        "product_id": format!("P{}", rng.random_range(0..500)),
    });
    if metric == "Placed Order" {
        properties["revenue"] = json!(rng.random_range(5..300) as f64 + 0.99);
    }
    call(
        CallKind::Track,
        Timestamp::now(),
        json!({"userId": user(user_index), "event": metric, "timestamp": time.to_string(),
               "properties": properties}),
    )
}

pub fn pick_metric(rng: &mut StdRng) -> &'static str {
    let mut roll = rng.random_range(0..100);
    for (name, weight) in METRICS {
        if roll < weight {
            return name;
        }
        roll -= weight;
    }
    METRICS[0].0
}

pub async fn append(store: &Arc<dyn Store>, source: SourceId, calls: Vec<NewCall>) -> i64 {
    loop {
        match store.append(source, calls.clone(), Vec::new()).await {
            Ok(outcome) => return outcome.last_seq,
            Err(StoreError::Overloaded) => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(err) => panic!("append: {err}"),
        }
    }
}

/// Identifies for profiles `0..n`.
pub async fn append_profiles(store: &Arc<dyn Store>, source: SourceId, n: usize) {
    let mut batch = Vec::with_capacity(BATCH);
    for i in 0..n {
        batch.push(identify(i, Timestamp::now()));
        if batch.len() == BATCH {
            append(store, source, std::mem::take(&mut batch)).await;
        }
    }
    if !batch.is_empty() {
        append(store, source, batch).await;
    }
}

/// `n` events of random profiles among `profiles`, at random times in the `days` before
/// `now` (or at `now` when `days` is 0).
pub async fn append_events(
    store: &Arc<dyn Store>,
    source: SourceId,
    n: usize,
    profiles: usize,
    now: Timestamp,
    days: i64,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let span_us = SignedDuration::from_hours(24 * days).as_micros() as i64;
    let mut batch = Vec::with_capacity(BATCH);
    for _ in 0..n {
        let ago = if span_us > 0 {
            rng.random_range(0..span_us)
        } else {
            0
        };
        let time = now
            .checked_sub(SignedDuration::from_micros(ago))
            .unwrap_or(now);
        let metric = pick_metric(&mut rng);
        batch.push(track(rng.random_range(0..profiles), metric, time, &mut rng));
        if batch.len() == BATCH {
            append(store, source, std::mem::take(&mut batch)).await;
        }
    }
    if !batch.is_empty() {
        append(store, source, batch).await;
    }
}

/// Klaviyo's `profile-metric` condition counting a metric's events.
pub fn metric_count(metric_id: &str, operator: &str, value: f64, timeframe: Value) -> Value {
    json!({"type": "profile-metric", "metric_id": metric_id, "measurement": "count",
           "measurement_filter": {"type": "numeric", "operator": operator, "value": value},
           "timeframe_filter": timeframe})
}

/// Klaviyo's "in the last `days` days" timeframe.
pub fn last_days(days: usize) -> Value {
    json!({"type": "date", "operator": "in-the-last", "quantity": days, "unit": "day"})
}
