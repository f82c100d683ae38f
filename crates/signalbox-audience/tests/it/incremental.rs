//! Property: after any sequence of events, profile updates, list additions, clock advances
//! and restarts (the worker reading its membership and schedule back from the store),
//! incremental membership equals a from-scratch evaluation (a segment with the same
//! definition created at the end, which backfills).

use jiff::SignedDuration;
use proptest::prelude::*;
use serde_json::{json, Value};
use signalbox_engage::OptInProcess;

use crate::helpers::{last_days, metric, one, TestApp};

#[derive(Debug, Clone)]
enum Op {
    Event { user: u8, metric: u8, value: u8 },
    Plan { user: u8, plan: u8 },
    List { user: u8 },
    Advance { hours: u16 },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..4u8, 0..2u8, 0..100u8).prop_map(|(user, metric, value)| Op::Event { user, metric, value }),
        2 => (0..4u8, 0..3u8).prop_map(|(user, plan)| Op::Plan { user, plan }),
        1 => (0..4u8).prop_map(|user| Op::List { user }),
        2 => (1..200u16).prop_map(|hours| Op::Advance { hours }),
        1 => Just(Op::Restart),
    ]
}

const PLANS: [&str; 3] = ["free", "pro", "team"];
const METRICS: [&str; 2] = ["Viewed", "Ordered"];

fn definitions(viewed: &str, ordered: &str, l1: &str) -> Vec<Value> {
    let sum = json!({"type": "profile-metric", "metric_id": ordered, "measurement": "sum",
        "measurement_filter": {"type": "numeric", "operator": "greater-than", "value": 60},
        "timeframe_filter": {"type": "date", "operator": "in-the-last", "quantity": 5, "unit": "day"}});
    vec![
        one(metric(viewed, "greater-than-or-equal", 2.0, last_days(2))),
        json!({"condition_groups": [
            {"conditions": [metric(viewed, "greater-than", 0.0, last_days(3))]},
            {"conditions": [metric(ordered, "equals", 0.0, last_days(3))]},
        ]}),
        json!({"condition_groups": [{"conditions": [sum,
            {"type": "profile-property", "property": "properties['Plan']",
             "filter": {"type": "string", "operator": "equals", "value": "pro"}}]}]}),
        one(json!({"type": "profile-group-membership", "is_member": true, "group_ids": [l1]})),
        json!({"condition_groups": [
            {"conditions": [{"type": "profile-group-membership", "is_member": false, "group_ids": [l1]}]},
            {"conditions": [metric(ordered, "greater-than", 0.0,
                json!({"type": "date", "operator": "between", "start": 1, "end": 4, "unit": "day"}))]},
        ]}),
    ]
}

async fn run(ops: Vec<Op>) {
    let mut app = TestApp::start().await;
    let l1 = app
        .engage
        .create_list("L1", OptInProcess::SingleOptIn)
        .await
        .unwrap()
        .id
        .0;
    // Every user exists and each metric has an event, so definitions can name the metrics.
    for user in 0..4 {
        app.identify(json!({"userId": format!("u{user}"), "traits": {"email": format!("u{user}@example.com")}}))
            .await;
    }
    for name in METRICS {
        app.track(json!({"userId": "u0", "event": name, "properties": {"revenue": 1}}))
            .await;
    }
    app.settle().await;
    let viewed = app.metric_id("Viewed").await;
    let ordered = app.metric_id("Ordered").await;
    let mut live = Vec::new();
    for (n, definition) in definitions(&viewed, &ordered, &l1).into_iter().enumerate() {
        live.push(app.segment(&format!("live {n}"), definition).await);
    }
    // Segment on segment.
    let first = live[0].id.clone();
    live.push(
        app.segment("live on live", json!({"condition_groups": [
            {"conditions": [{"type": "profile-group-membership", "is_member": true, "group_ids": [first]}]},
            {"conditions": [{"type": "profile-property", "property": "properties['Plan']",
                             "filter": {"type": "existence", "operator": "is-set"}}]}]}))
            .await,
    );
    for op in ops {
        match op {
            Op::Event {
                user,
                metric,
                value,
            } => {
                app.track(
                    json!({"userId": format!("u{user}"), "event": METRICS[metric as usize],
                                 "properties": {"revenue": value}}),
                )
                .await
            }
            Op::Plan { user, plan } => {
                app.identify(
                    json!({"userId": format!("u{user}"), "traits": {"Plan": PLANS[plan as usize]}}),
                )
                .await
            }
            // The list is written by identify with a list id; a trait marks the profile changed.
            Op::List { user } => {
                app.identify(json!({"userId": format!("u{user}"),
                    "traits": {"email": format!("u{user}@example.com"), "Listed": true},
                    "integrations": {"Klaviyo": {"listId": l1}}}))
                    .await
            }
            Op::Advance { hours } => {
                app.settle().await;
                app.advance(SignedDuration::from_hours(i64::from(hours)));
            }
            Op::Restart => {
                app.settle().await;
                app.restart_audience().await;
            }
        }
    }
    app.settle().await;
    let mut scratch = Vec::new();
    for segment in &live {
        // The copy of "live on live" reads the live segment, itself checked against its copy.
        let definition = segment.definition.clone();
        scratch.push(
            app.segment(&format!("scratch {}", segment.name), definition)
                .await,
        );
    }
    for (live, scratch) in live.iter().zip(&scratch) {
        assert_eq!(
            app.emails(live).await,
            app.emails(scratch).await,
            "{} after the sequence",
            live.name
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn incremental_membership_equals_a_from_scratch_evaluation(ops in proptest::collection::vec(op(), 1..25)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run(ops));
    }
}
