//! Ids, derived from the log so that a rebuild gives every profile, event and metric the id it
//! had before.
//!
//! Profile and event ids are ULID-like: 26 characters of Crockford base32 for 128 bits, the
//! first 48 a time in milliseconds, the last 80 the row key, itself derived from the log
//! sequence number of the entry that made the row. So an id decodes back to its row key, and
//! no index on id strings is needed to find it. Metric ids are 6 base-62 characters of a hash
//! of (integration, name).

use sha2::{Digest, Sha256};

use crate::model::MetricId;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Profiles one log entry may create at most (one entry can split into a profile per email).
pub(crate) const PROFILES_PER_ENTRY: i64 = 8;
/// Events one log entry may create at most (an order and its products).
pub(crate) const EVENTS_PER_ENTRY: i64 = 4096;

/// The row key of the `n`th profile created by log entry `seq`.
pub(crate) fn profile_key(seq: i64, n: i64) -> i64 {
    debug_assert!(n < PROFILES_PER_ENTRY);
    seq * PROFILES_PER_ENTRY + n
}

/// The row key of the `n`th event made from log entry `seq`.
pub(crate) fn event_key(seq: i64, n: i64) -> i64 {
    debug_assert!(n < EVENTS_PER_ENTRY);
    seq * EVENTS_PER_ENTRY + n
}

/// An odd multiplier and its inverse modulo 2^64: row keys are mixed so that ids look random
/// (as Klaviyo's do) yet decode back to their key.
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;
const UNMIX: u64 = inverse(MIX);

const fn inverse(k: u64) -> u64 {
    // Newton's iteration doubles the correct low bits each step: 5 steps reach 64.
    let mut x = k;
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2u64.wrapping_sub(k.wrapping_mul(x)));
        i += 1;
    }
    x
}

/// 16 check bits of a mixed key: a text that merely looks like an id is refused.
fn check_bits(mixed: u64) -> u128 {
    ((mixed.rotate_left(23) ^ 0x5A5A) & 0xFFFF) as u128
}

/// A ULID-like id from a time (milliseconds since the epoch) and a row key.
pub(crate) fn ulid(ms: i64, key: i64) -> String {
    let ms = (ms.max(0) as u128) & ((1 << 48) - 1);
    let mixed = (key as u64).wrapping_mul(MIX);
    let value = (ms << 80) | (check_bits(mixed) << 64) | mixed as u128;
    let mut out = [0u8; 26];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 5 * (25 - i);
        *slot = CROCKFORD[((value >> shift) & 31) as usize];
    }
    String::from_utf8(out.to_vec()).expect("ascii")
}

/// The row key inside a ULID-like id, when the text is one of ours.
pub(crate) fn ulid_key(id: &str) -> Option<i64> {
    if id.len() != 26 {
        return None;
    }
    let mut value: u128 = 0;
    for c in id.bytes() {
        let c = c.to_ascii_uppercase();
        let digit = CROCKFORD.iter().position(|&d| d == c)? as u128;
        value = value.checked_mul(32)? | digit;
    }
    // The top two bits of 130 do not exist: the first character is at most '7'.
    if id.as_bytes()[0] > b'7' {
        return None;
    }
    let mixed = value as u64;
    if (value >> 64) & 0xFFFF != check_bits(mixed) {
        return None;
    }
    let key = mixed.wrapping_mul(UNMIX);
    i64::try_from(key).ok()
}

/// The dedupe key of an event's unique id.
pub(crate) fn unique_hash(unique_id: &str) -> i64 {
    let digest = Sha256::digest(unique_id.as_bytes());
    i64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// An event's id: its time and key.
pub(crate) fn event_id(time_us: i64, key: i64) -> String {
    ulid(time_us.div_euclid(1000), key)
}

/// The metric id for (integration, name); `attempt` > 0 after a collision.
pub(crate) fn metric_id(integration: &str, name: &str, attempt: u32) -> MetricId {
    let mut hasher = Sha256::new();
    hasher.update(integration.as_bytes());
    hasher.update([0]);
    hasher.update(name.as_bytes());
    if attempt > 0 {
        hasher.update(attempt.to_le_bytes());
    }
    let digest = hasher.finalize();
    let mut n = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    let mut out = String::with_capacity(6);
    for _ in 0..6 {
        out.push(BASE62[(n % 62) as usize] as char);
        n /= 62;
    }
    MetricId(out)
}

/// The id of the list created by log entry `seq`: 6 base-62 characters, like Klaviyo's;
/// `attempt` > 0 after a collision.
pub(crate) fn list_id(seq: i64, attempt: u32) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"list");
    hasher.update(seq.to_le_bytes());
    hasher.update(attempt.to_le_bytes());
    let digest = hasher.finalize();
    let mut n = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    let mut out = String::with_capacity(6);
    for _ in 0..6 {
        out.push(BASE62[(n % 62) as usize] as char);
        n /= 62;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulid_round_trip_and_shape() {
        let ms = 1_767_225_600_000; // 2026-01-01
        for key in [
            0,
            1,
            profile_key(123_456, 3),
            event_key(987_654_321, 4095),
            i64::MAX,
        ] {
            let id = ulid(ms, key);
            assert_eq!(id.len(), 26);
            assert!(id.as_bytes()[0] <= b'7');
            assert_eq!(ulid_key(&id), Some(key), "{id}");
            assert_eq!(ulid_key(&id.to_lowercase()), Some(key));
        }
        assert!(ulid(ms, 1) < ulid(ms + 1, 0));
        assert_eq!(ulid_key("not an id"), None);
        assert_eq!(ulid_key("ZZZZZZZZZZZZZZZZZZZZZZZZZZ"), None);
        assert_eq!(ulid_key("01ARZ3NDEKTSV4RRFFQ69G5FAV"), None);
        assert_eq!(MIX.wrapping_mul(UNMIX), 1);
        assert_eq!(ulid_key("01GDDKASAP8TKDDA2GRZDSVP4U"), None);
    }

    #[test]
    fn metric_ids_are_stable_and_alphanumeric() {
        let a = metric_id("Segment", "Order Completed", 0);
        assert_eq!(a, metric_id("Segment", "Order Completed", 0));
        assert_ne!(a, metric_id("API", "Order Completed", 0));
        assert_ne!(a, metric_id("Segment", "Order Completed", 1));
        assert_eq!(a.0.len(), 6);
        assert!(a.0.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
