//! Rough costs of parsing, evaluating and scheduling one definition over an in-memory profile
//! with 1,000 events. Run with `cargo run --release -p signalbox-seglang --example eval_timing`.

use std::hint::black_box;
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Map, Value};
use signalbox_seglang::{
    event_matches, parse, ConsentStatus, ConsentView, EvalContext, EventFilter, ProfileFacts,
    PropertyPath, TimeWindow,
};

struct Event {
    time: Timestamp,
    value: f64,
    properties: Map<String, Value>,
}

struct Profile {
    events: Vec<Event>,
    email: Value,
}

impl Profile {
    fn matching<'a>(
        &'a self,
        window: TimeWindow,
        filters: &'a [EventFilter],
    ) -> impl Iterator<Item = &'a Event> + 'a {
        self.events
            .iter()
            .filter(move |e| window.contains(e.time) && event_matches(filters, &e.properties))
    }
}

impl ProfileFacts for Profile {
    fn metric_count(&self, _metric: &str, window: TimeWindow, filters: &[EventFilter]) -> u64 {
        self.matching(window, filters).count() as u64
    }

    fn metric_sum(&self, _metric: &str, window: TimeWindow, filters: &[EventFilter]) -> f64 {
        self.matching(window, filters).map(|e| e.value).sum()
    }

    fn metric_event_times(
        &self,
        _metric: &str,
        window: TimeWindow,
        filters: &[EventFilter],
    ) -> Vec<Timestamp> {
        self.matching(window, filters).map(|e| e.time).collect()
    }

    fn property(&self, path: &PropertyPath) -> Option<&Value> {
        matches!(path, PropertyPath::BuiltIn(_)).then_some(&self.email)
    }

    fn is_member(&self, group_id: &str) -> bool {
        group_id == "L1"
    }

    fn email_consent(&self) -> ConsentView {
        ConsentView {
            status: ConsentStatus::Subscribed,
            can_receive_marketing: true,
            ..ConsentView::default()
        }
    }
}

fn per_call(label: &str, iterations: u32, mut f: impl FnMut()) {
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    let each = start.elapsed() / iterations;
    println!("{label:<40} {each:>12?} per call");
}

fn main() {
    let definition_json = json!({"condition_groups": [
        {"conditions": [{"type": "profile-metric", "metric_id": "PO", "measurement": "count",
            "measurement_filter": {"type": "numeric", "operator": "greater-than-or-equal", "value": 3},
            "timeframe_filter": {"type": "date", "operator": "in-the-last", "quantity": 30, "unit": "day"},
            "metric_filters": [
                {"property": "Brand", "filter": {"type": "string", "operator": "equals", "value": "acme"}},
                {"property": "Total", "filter": {"type": "numeric", "operator": "greater-than", "value": 10}}]}]},
        {"conditions": [
            {"type": "profile-property", "property": "email",
             "filter": {"type": "string", "operator": "ends-with", "value": "@example.com"}},
            {"type": "profile-group-membership", "is_member": true, "group_ids": ["L1"]}]},
        {"conditions": [{"type": "profile-marketing-consent", "consent": {"channel": "email",
            "can_receive_marketing": true, "consent_status": {"subscription": "subscribed"}}}]},
    ]});
    let now: Timestamp = "2024-06-15T12:00:00Z".parse().expect("timestamp");
    let events = (0..1_000)
        .map(|i| Event {
            time: now - SignedDuration::from_hours(i * 9),
            value: f64::from(i as u32 % 50),
            properties:
                json!({"Brand": if i % 3 == 0 { "Acme" } else { "Other" }, "Total": i % 40})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
        })
        .collect();
    let profile = Profile {
        events,
        email: json!("ann@example.com"),
    };
    let definition = parse(&definition_json).expect("valid definition");
    let ctx = EvalContext::default();
    println!(
        "matches: {}, next change: {:?}",
        definition.matches(&profile, now, &ctx),
        definition.next_change_after(&profile, now, &ctx)
    );

    per_call("parse (3 groups, 5 conditions)", 20_000, || {
        black_box(parse(black_box(&definition_json)).is_ok());
    });
    per_call("serialise", 20_000, || {
        black_box(definition.to_json());
    });
    per_call("matches (1,000 events)", 5_000, || {
        black_box(definition.matches(&profile, black_box(now), &ctx));
    });
    per_call("explain (1,000 events)", 5_000, || {
        black_box(definition.explain(&profile, black_box(now), &ctx));
    });
    per_call("next_change_after (1,000 events)", 1_000, || {
        black_box(definition.next_change_after(&profile, black_box(now), &ctx));
    });
    per_call("dependencies", 20_000, || {
        black_box(definition.dependencies());
    });
}
