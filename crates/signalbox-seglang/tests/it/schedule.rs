//! `next_change_after`: hand-computed instants, and a brute-force check hour by hour.

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use serde_json::{json, Value};
use signalbox_seglang::{ConsentView, Definition, EvalContext};

use crate::facts::MemoryFacts;
use crate::{def, flow_def, single, ts};

fn hours(n: i64) -> SignedDuration {
    SignedDuration::from_hours(n)
}

fn at(now: Timestamp, offset_hours: i64) -> Timestamp {
    now.checked_add(hours(offset_hours)).unwrap()
}

fn orders_count(operator: &str, value: u64, timeframe: Value) -> Value {
    json!({"type": "profile-metric", "metric_id": "PO", "measurement": "count",
           "measurement_filter": {"type": "numeric", "operator": operator, "value": value},
           "timeframe_filter": timeframe})
}

fn last(quantity: u32, unit: &str) -> Value {
    json!({"type": "date", "operator": "in-the-last", "quantity": quantity, "unit": unit})
}

fn next(definition: &Definition, facts: &MemoryFacts, now: &str) -> Option<Timestamp> {
    definition.next_change_after(facts, ts(now), &EvalContext::default())
}

const NOW: &str = "2024-06-15T12:00:00Z";

#[test]
fn an_event_ageing_out_of_in_the_last() {
    let now = ts(NOW);
    let facts = MemoryFacts::new()
        .event_at("PO", at(now, -29 * 24), 1.0)
        .event_at("PO", at(now, -10 * 24), 1.0);
    let twice = def(single(orders_count(
        "greater-than-or-equal",
        2,
        last(30, "day"),
    )));
    assert_eq!(next(&twice, &facts, NOW), Some(ts("2024-06-16T12:00:00Z")));
    // The first event leaving does not change "at least once"; the second one does.
    let once = def(single(orders_count(
        "greater-than-or-equal",
        1,
        last(30, "day"),
    )));
    assert_eq!(next(&once, &facts, NOW), Some(ts("2024-07-05T12:00:00Z")));
    // Always true: nothing to schedule.
    let any = def(single(orders_count(
        "greater-than-or-equal",
        0,
        last(30, "day"),
    )));
    assert_eq!(next(&any, &facts, NOW), None);
}

#[test]
fn a_future_event_entering_its_window() {
    let facts = MemoryFacts::new().event("PO", "2024-06-20T00:00:00Z", 1.0, json!({}));
    let once = def(single(orders_count(
        "greater-than-or-equal",
        1,
        last(30, "day"),
    )));
    assert_eq!(next(&once, &facts, NOW), Some(ts("2024-06-20T00:00:00Z")));
    let soon = def(single(orders_count(
        "equals",
        1,
        json!({"type": "date", "operator": "in-the-next", "quantity": 2, "unit": "day"}),
    )));
    // In the next two days from 2024-06-18T00:00, until it is no longer in the future.
    assert_eq!(next(&soon, &facts, NOW), Some(ts("2024-06-18T00:00:00Z")));
    assert_eq!(
        next(&soon, &facts, "2024-06-18T00:00:00Z"),
        Some(ts("2024-06-20T00:00:00Z"))
    );
}

#[test]
fn flow_start_windows_change_when_future_events_arrive() {
    let facts = MemoryFacts::new().event("PO", "2024-06-20T00:00:00Z", 1.0, json!({}));
    let none_since = flow_def(single(orders_count(
        "equals",
        0,
        json!({"type": "date", "operator": "flow-start"}),
    )));
    let ctx = EvalContext::flow(ts("2024-06-01T00:00:00Z"));
    assert_eq!(
        none_since.next_change_after(&facts, ts(NOW), &ctx),
        Some(ts("2024-06-20T00:00:00Z"))
    );
}

#[test]
fn static_definitions_never_change_with_time() {
    let facts = MemoryFacts::new().event("PO", "2024-06-01T00:00:00Z", 1.0, json!({}));
    let alltime = def(single(orders_count(
        "greater-than",
        0,
        json!({"type": "date", "operator": "alltime"}),
    )));
    assert_eq!(next(&alltime, &facts, NOW), None);
    assert!(!alltime.dependencies().time_dependent);
}

fn date_property(path: &str, filter: Value) -> Value {
    json!({"type": "profile-property", "property": path, "filter": filter})
}

#[test]
fn relative_and_anniversary_dates() {
    let facts = MemoryFacts::new()
        .prop("properties['Signup']", json!("2024-06-10T00:00:00Z"))
        .prop("properties['Birthday']", json!("1990-06-20"))
        .prop("created", json!("2023-01-01T00:00:00Z"));
    let signup = def(single(date_property(
        "properties['Signup']",
        last(7, "day"),
    )));
    assert_eq!(next(&signup, &facts, NOW), Some(ts("2024-06-17T00:00:00Z")));

    let soon =
        json!({"type": "date", "operator": "anniversary-next", "quantity": 7, "unit": "day"});
    let birthday_soon = def(single(date_property("properties['Birthday']", soon)));
    let early = "2024-06-10T00:00:00Z";
    assert_eq!(
        next(&birthday_soon, &facts, early),
        Some(ts("2024-06-13T00:00:00Z"))
    );
    assert_eq!(
        next(&birthday_soon, &facts, "2024-06-13T00:00:00Z"),
        Some(ts("2024-06-20T00:00:00Z"))
    );

    let today = json!({"type": "date", "operator": "anniversary"});
    let birthday = def(single(date_property(
        "properties['Birthday']",
        today.clone(),
    )));
    assert_eq!(
        next(&birthday, &facts, early),
        Some(ts("2024-06-20T00:00:00Z"))
    );
    assert_eq!(
        next(&birthday, &facts, "2024-06-20T05:00:00Z"),
        Some(ts("2024-06-21T00:00:00Z"))
    );
    // After the birthday, the next change is next year's.
    assert_eq!(
        next(&birthday, &facts, "2024-06-21T00:00:00Z"),
        Some(ts("2025-06-20T00:00:00Z"))
    );

    // Birthday today AND signed up at least 104 weeks ago (from 2024-12-29): the first
    // birthday after that is 2025-06-20.
    let veteran = json!({"type": "date", "operator": "at-least", "quantity": 104, "unit": "week"});
    let masked = def(json!({"condition_groups": [
        {"conditions": [date_property("properties['Birthday']", today)]},
        {"conditions": [date_property("created", veteran)]},
    ]}));
    assert_eq!(
        next(&masked, &facts, early),
        Some(ts("2025-06-20T00:00:00Z"))
    );

    let month = json!({"type": "date", "operator": "anniversary-month"});
    let birthday_month = def(single(date_property("properties['Birthday']", month)));
    assert_eq!(
        next(&birthday_month, &facts, early),
        Some(ts("2024-07-01T00:00:00Z"))
    );
    assert_eq!(
        next(&birthday_month, &facts, "2024-07-01T00:00:00Z"),
        Some(ts("2025-06-01T00:00:00Z"))
    );
}

#[test]
fn join_and_consent_dates_age() {
    let mut facts = MemoryFacts::new().member("L1", Some("2024-06-01T00:00:00Z"));
    facts.email = ConsentView {
        can_receive_marketing: true,
        status_date: Some(ts("2024-06-05T00:00:00Z")),
        ..ConsentView::default()
    };
    let joined = def(single(
        json!({"type": "profile-group-membership", "is_member": true,
        "group_ids": ["L1"], "timeframe_filter": last(30, "day")}),
    ));
    assert_eq!(next(&joined, &facts, NOW), Some(ts("2024-07-01T00:00:00Z")));
    let consented = def(single(
        json!({"type": "profile-marketing-consent", "consent": {
        "channel": "email", "can_receive_marketing": true, "consent_status": {
            "subscription": "any", "filters": [{"field": "status_date", "filter": last(30, "day")}]}}}),
    ));
    assert_eq!(
        next(&consented, &facts, NOW),
        Some(ts("2024-07-05T00:00:00Z"))
    );
}

/// One condition of the brute-force definitions, by index.
fn brute_condition(kind: u8, quantity: u32, threshold: u64) -> Value {
    let rel = |op: &str, unit: &str| json!({"type": "date", "operator": op, "quantity": quantity, "unit": unit});
    match kind % 6 {
        0 => orders_count(
            "greater-than-or-equal",
            threshold,
            rel("in-the-last", "hour"),
        ),
        1 => orders_count("less-than", threshold, rel("in-the-last", "day")),
        2 => orders_count("equals", threshold, rel("at-least", "day")),
        3 => orders_count("greater-than", threshold, rel("in-the-next", "hour")),
        4 => orders_count(
            "greater-than-or-equal",
            threshold,
            json!({"type": "date", "operator": "between", "start": quantity / 2,
                   "end": quantity, "unit": "day"}),
        ),
        _ => date_property("properties['Signup']", rel("in-the-last", "day")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Between now and the answer the result stays as it is now, and at the answer it flips.
    #[test]
    fn next_change_is_the_first_flip(
        offsets in proptest::collection::vec(-1_500i64..300, 0..10),
        signup in -1_000i64..100,
        a in (any::<u8>(), 1u32..40, 0u64..4),
        b in (any::<u8>(), 1u32..40, 0u64..4),
        anded in any::<bool>(),
    ) {
        let now = ts(NOW);
        let mut facts = MemoryFacts::new()
            .prop("properties['Signup']", json!(at(now, signup).to_string()));
        for offset in &offsets {
            facts = facts.event_at("PO", at(now, *offset), 1.0);
        }
        let (ca, cb) = (brute_condition(a.0, a.1, a.2), brute_condition(b.0, b.1, b.2));
        let json = if anded {
            json!({"condition_groups": [{"conditions": [ca]}, {"conditions": [cb]}]})
        } else {
            json!({"condition_groups": [{"conditions": [ca, cb]}]})
        };
        let definition = def(json);
        let ctx = EvalContext::default();
        let current = definition.matches(&facts, now, &ctx);
        let answer = definition.next_change_after(&facts, now, &ctx);
        // Every change instant here is a whole hour after now; look ~4 months ahead.
        let horizon = 3_000;
        let end = match answer {
            Some(t) => {
                prop_assert!(t > now);
                prop_assert_ne!(definition.matches(&facts, t, &ctx), current, "no flip at {}", t);
                (t.duration_since(now).as_hours()).min(horizon)
            }
            None => horizon + 1,
        };
        for h in 1..end {
            prop_assert_eq!(
                definition.matches(&facts, at(now, h), &ctx),
                current,
                "flipped at +{}h before the answer {:?}", h, answer
            );
        }
    }
}
