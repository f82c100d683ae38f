//! Parse never panics; parse → serialise → parse gives the same tree; evaluation is total.

use proptest::prelude::*;
use serde_json::{json, Value};
use signalbox_seglang::{parse, parse_with, ConsentView, EvalContext, ParseOptions};

use crate::facts::MemoryFacts;
use crate::generators::{any_json, definition, mutate};
use crate::{def, flow_def, single, ts};

/// If `json` parses, its serialisation parses to the same tree and serialises identically.
fn assert_round_trip(json: &Value) -> Result<(), TestCaseError> {
    if let Ok(parsed) = parse(json) {
        let written = parsed.to_json();
        let reparsed = parse(&written);
        prop_assert_eq!(reparsed.as_ref(), Ok(&parsed), "written: {}", written);
        prop_assert_eq!(reparsed.unwrap().to_json(), written);
    }
    Ok(())
}

fn sample_facts(offsets: &[i64]) -> MemoryFacts {
    let now = ts("2024-06-15T12:00:00Z");
    let mut facts = MemoryFacts::new()
        .prop("email", json!("a@b.com"))
        .prop("created", json!("2023-06-16T00:00:00Z"))
        .prop("location['city']", json!("Boston"))
        .prop("properties['Plan']", json!(["pro", 3]))
        .member("L1", Some("2024-06-01T00:00:00Z"))
        .member("S2", None);
    facts.email = ConsentView {
        can_receive_marketing: true,
        status_date: Some(ts("2024-05-01T00:00:00Z")),
        ..ConsentView::default()
    };
    for (i, hours) in offsets.iter().enumerate() {
        let time = now
            .checked_add(jiff::SignedDuration::from_hours(*hours))
            .unwrap_or(now);
        let metric = if i % 2 == 0 { "PO" } else { "VP" };
        facts = facts.event_at(metric, time, i as f64);
        if let Some(last) = facts.events.last_mut() {
            last.properties = json!({"Brand": "Acme", "Items": ["a"], "Total": i})
                .as_object()
                .cloned()
                .unwrap_or_default();
        }
    }
    facts
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parse_never_panics_on_arbitrary_json(json in any_json()) {
        let _ = parse(&json);
        let _ = parse_with(&json, &ParseOptions::flow_profile_filter());
        let _ = parse(&json!({"condition_groups": [{"conditions": [json.clone()]}]}));
        assert_round_trip(&json)?;
    }

    #[test]
    fn parse_never_panics_on_mutated_definitions(
        valid in definition(),
        index in any::<usize>(),
        replacement in any_json(),
    ) {
        let json = mutate(valid, index, replacement);
        let _ = parse_with(&json, &ParseOptions::flow_profile_filter());
        assert_round_trip(&json)?;
    }

    #[test]
    fn generated_definitions_parse_and_round_trip(json in definition()) {
        let parsed = parse(&json);
        prop_assert!(parsed.is_ok(), "{:#?}\n{}", parsed, json);
        assert_round_trip(&json)?;
    }

    #[test]
    fn evaluation_is_total_and_explain_agrees_with_matches(
        json in definition(),
        offsets in proptest::collection::vec(-2_000i64..500, 0..8),
        flow_start in proptest::option::of(-1_000i64..0),
    ) {
        let definition = def(json);
        let facts = sample_facts(&offsets);
        let now = ts("2024-06-15T12:00:00Z");
        let ctx = EvalContext {
            flow_start: flow_start.and_then(|h| now.checked_add(jiff::SignedDuration::from_hours(h)).ok()),
        };
        let matched = definition.matches(&facts, now, &ctx);
        let explained = definition.explain(&facts, now, &ctx);
        let by_groups = definition.condition_groups().iter().enumerate().all(|(g, group)| {
            (0..group.conditions.len()).any(|c| {
                explained.iter().any(|r| r.at.group == g && r.at.condition == c && r.matched)
            })
        });
        prop_assert_eq!(matched, by_groups);
        if let Some(next) = definition.next_change_after(&facts, now, &ctx) {
            prop_assert!(next > now);
        }
        let _ = definition.dependencies();
    }
}

#[test]
fn klaviyo_example_serialises_back_unchanged() {
    let json = json!({"condition_groups": [
        {"conditions": [{"type": "profile-metric", "metric_id": "PLACED_ORDER_ID", "measurement": "count",
            "measurement_filter": {"type": "numeric", "operator": "greater-than", "value": 0},
            "timeframe_filter": {"type": "date", "operator": "in-the-last", "quantity": 30, "unit": "day"},
            "metric_filters": [{"property": "Brand",
                "filter": {"type": "string", "operator": "equals", "value": "Acme"}}]}]},
        {"conditions": [{"type": "profile-marketing-consent", "consent": {"channel": "email",
            "can_receive_marketing": true, "consent_status": {"subscription": "subscribed"}}}]},
    ]});
    assert_eq!(def(json.clone()).to_json(), json);
}

#[test]
fn flow_filters_round_trip() {
    let json = single(
        json!({"type": "profile-metric", "metric_id": "PO", "measurement": "count",
        "measurement_filter": {"type": "numeric", "operator": "equals", "value": 0},
        "timeframe_filter": {"type": "date", "operator": "flow-start"}}),
    );
    let parsed = flow_def(json.clone());
    assert_eq!(parsed.to_json(), json);
}

#[test]
fn instants_are_written_in_utc() {
    let parsed = def(single(
        json!({"type": "profile-property", "property": "created",
        "filter": {"type": "date", "operator": "before", "date": "2023-06-15T12:30:00+02:00"}}),
    ));
    assert_eq!(
        parsed.to_json()["condition_groups"][0]["conditions"][0]["filter"]["date"],
        "2023-06-15T10:30:00Z"
    );
}

#[test]
fn serde_reads_and_writes_definitions() {
    let json =
        single(json!({"type": "profile-group-membership", "is_member": true, "group_ids": ["L1"]}));
    let parsed: signalbox_seglang::Definition = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(serde_json::to_value(&parsed).unwrap(), json);
    let error =
        serde_json::from_value::<signalbox_seglang::Definition>(json!({"condition_groups": []}))
            .unwrap_err()
            .to_string();
    assert_eq!(
        error,
        "invalid definition: /condition_groups: at least one condition group is required"
    );
}
