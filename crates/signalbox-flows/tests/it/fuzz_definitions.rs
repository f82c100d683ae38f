//! Fuzz targets of flow definitions (`FlowDefinition::parse`): valid definitions with nodes
//! replaced by extreme values (numbers past every range, long and odd strings, huge arrays,
//! broken templates), arbitrary JSON, and action graphs of any shape and length (long
//! chains, random links, loops).
//!
//! Properties: nothing panics or exhausts the stack; a refusal is a list of problems, each
//! at a pointer under the definition; what parses prints back to JSON that parses to the
//! same JSON; each case ends in bounded time.
//!
//! Each target runs the number of cases its `config` names (hundreds) in `cargo test`, well
//! under a few seconds in a debug build;
//! `PROPTEST_CASES=100000 cargo test -p signalbox-flows --test it fuzz_` runs longer.
//! Failures are not persisted: a case found is kept as a plain regression test.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config;
use serde_json::{json, Value};
use signalbox_flows::definition::DEFINITION_POINTER;
use signalbox_flows::FlowDefinition;

/// Cases per target unless `PROPTEST_CASES` says otherwise; failures are not persisted.
fn config(cases: u32) -> Config {
    let mut config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

const CASE_TIME: Duration = Duration::from_secs(60);

fn metric_flow() -> Value {
    json!({
        "triggers": [{"type": "metric", "id": "STARTED", "trigger_filter": {"condition_groups": [{"conditions": [
            {"type": "metric-property", "metric_id": "STARTED", "field": "$value",
             "filter": {"type": "numeric", "operator": "greater-than", "value": 50}}]}]}}],
        "profile_filter": {"condition_groups": [{"conditions": [{"type": "profile-metric", "metric_id": "PLACED",
            "measurement": "count", "measurement_filter": {"type": "numeric", "operator": "equals", "value": 0},
            "timeframe_filter": {"type": "date", "operator": "flow-start"}}]}]},
        "entry_action_id": "a1",
        "actions": [
            {"temporary_id": "a1", "type": "time-delay", "data": {"unit": "hours", "value": 4}, "links": {"next": "a2"}},
            {"temporary_id": "a2", "type": "trigger-split", "data": {"trigger_filter": {"condition_groups": [{"conditions": [
                {"type": "metric-property", "field": "n", "filter": {"type": "numeric", "operator": "equals", "value": 1}}]}]}},
             "links": {"next_if_true": "a3", "next_if_false": null}},
            {"temporary_id": "a3", "type": "send-email", "data": {"status": "draft", "message": {
                "from_email": "shop@x.com", "subject_line": "Hi {{ first_name|default:'there' }}",
                "html": "<p>{% for i in event.Items %}{{ i.Name }}{% endfor %}</p>"}}, "links": {"next": null}}
        ],
        "reentry_criteria": {"duration": 1, "unit": "day"}
    })
}

fn date_flow() -> Value {
    json!({
        "triggers": [{"type": "date", "date_field_type": "profile-property", "date_profile_property": "Birthday",
            "timedelta_unit_before_date": "weeks", "timedelta_value_before_date": 1,
            "recurrence_frequency": "annually", "timezone": "profile"}],
        "profile_filter": {"condition_groups": [{"conditions": [{"type": "profile-not-in-flow"}]}]},
        "entry_action_id": "1",
        "actions": [
            {"id": "1", "type": "time-delay", "data": {"unit": "days", "value": 2, "delay_until_time": "09:30",
                "delay_until_weekdays": ["monday", "friday"], "timezone": "Europe/Paris"}, "links": {"next": "2"}},
            {"id": "2", "type": "conditional-split", "data": {"profile_filter": {"condition_groups": [{"conditions": [
                {"type": "profile-property", "property": "properties['vip']", "filter": {"type": "boolean", "operator": "equals", "value": true}}]}]}},
             "links": {"next_if_true": "3", "next_if_false": "4"}},
            {"id": "3", "type": "send-webhook", "data": {"status": "live", "url": "https://hooks.example.com/x",
                "headers": {"X-A": "b"}, "body": "{\"e\": \"{{ email }}\"}", "secret": "s3cret"}, "links": {"next": "5"}},
            {"id": "4", "type": "list-update", "data": {"list_id": "L", "action": "remove"}, "links": {"next": "5"}},
            {"id": "5", "type": "update-profile", "data": {"profile_operations": [
                {"operation": "update", "key": "seen", "value": 1}, {"operation": "unset", "key": "old"}]}, "links": {"next": null}}
        ],
        "reentry_criteria": {"duration": 2, "unit": "week"}
    })
}

/// Values at and past the edges of what fields take.
fn extreme_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        select(vec![
            json!(0),
            json!(-1),
            json!(1),
            json!(366),
            json!(367),
            json!(527_040),
            json!(100_000),
            json!(100_001),
            json!(u32::MAX),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(i64::MAX),
            json!(1e308),
            json!(-0.0),
            json!(1.5),
            json!(null),
            json!(true),
            json!([]),
            json!({}),
        ]),
        select(
            &[
                "",
                "a1",
                "a2",
                "1",
                "5",
                "\u{0}",
                "24:00",
                "23:59:60",
                "Mars/Olympus",
                "+25:59",
                "{% if %}",
                "{{ x|nosuch }}",
                "{{ prénom }}",
                "{{ x|divisibleby:-1 }}",
                "https://",
                "javascript:alert(1)",
                "hours",
                "weeks",
                "alltime",
                "\u{202e}😀",
            ][..],
        )
        .prop_map(Value::from),
        (10_000usize..60_000).prop_map(|n| Value::from("x".repeat(n))),
        (1usize..3_000).prop_map(|n| Value::Array(vec![json!("monday"); n])),
    ]
}

fn count_nodes(value: &Value) -> usize {
    1 + match value {
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        Value::Object(map) => map.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// Replaces the `index`-th node (preorder, modulo the node count).
fn mutate(mut value: Value, index: usize, replacement: Value) -> Value {
    let mut target = index % count_nodes(&value);
    replace_nth(&mut value, &mut target, replacement);
    value
}

fn replace_nth(value: &mut Value, target: &mut usize, replacement: Value) -> Option<Value> {
    if *target == 0 {
        *value = replacement;
        return None;
    }
    *target -= 1;
    let mut replacement = Some(replacement);
    let children: Vec<&mut Value> = match value {
        Value::Array(items) => items.iter_mut().collect(),
        Value::Object(map) => map.values_mut().collect(),
        _ => Vec::new(),
    };
    for child in children {
        let Some(r) = replacement.take() else { break };
        replacement = replace_nth(child, target, r);
    }
    replacement
}

fn mutated_flow() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just(metric_flow()), Just(date_flow())],
        prop::collection::vec((any::<usize>(), extreme_leaf()), 1..4),
    )
        .prop_map(|(mut json, mutations)| {
            for (index, replacement) in mutations {
                json = mutate(json, index, replacement);
            }
            json
        })
}

/// `count` actions, each linked to the one `link(i)` names (`None`: the end).
fn graph(count: usize, link: impl Fn(usize) -> Option<usize>) -> Value {
    let actions: Vec<Value> = (0..count)
        .map(|i| {
            json!({"temporary_id": format!("a{i}"), "type": "time-delay",
                   "data": {"unit": "minutes", "value": 1},
                   "links": {"next": link(i).map(|j| format!("a{j}"))}})
        })
        .collect();
    json!({"triggers": [{"type": "list", "id": "L1"}], "entry_action_id": "a0", "actions": actions})
}

fn any_graph() -> impl Strategy<Value = Value> {
    prop_oneof![
        // A chain, as long as a request body allows.
        (1usize..20_000).prop_map(|n| graph(n, |i| (i + 1 < n).then_some(i + 1))),
        // A chain whose end links back somewhere: a loop.
        (2usize..20_000, any::<prop::sample::Index>()).prop_map(|(n, back)| {
            let back = back.index(n - 1);
            graph(n, move |i| Some(if i + 1 < n { i + 1 } else { back }))
        }),
        // Random links.
        prop::collection::vec(prop::option::of(any::<prop::sample::Index>()), 1..60).prop_map(
            |links| {
                let n = links.len();
                graph(n, move |i| links[i].map(|to| to.index(n)))
            }
        ),
    ]
}

/// Parses, and checks what holds for every input.
fn check(json: &Value) -> Result<(), TestCaseError> {
    let started = Instant::now();
    let result = FlowDefinition::parse(json);
    match result {
        Err(problems) => {
            prop_assert!(!problems.is_empty());
            prop_assert!(problems.len() <= 2 * count_nodes(json) + 2);
            for problem in &problems {
                prop_assert!(
                    problem.pointer.starts_with(DEFINITION_POINTER),
                    "{}",
                    problem.pointer
                );
                prop_assert!(!problem.detail.is_empty());
            }
        }
        Ok(definition) => {
            let written = definition.to_json();
            let again = FlowDefinition::parse(&written);
            prop_assert!(again.is_ok(), "{:?} for {}", again.err(), written);
            prop_assert_eq!(again.unwrap().to_json(), written);
        }
    }
    prop_assert!(
        started.elapsed() < CASE_TIME,
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn fuzz_flow_definitions_mutated(json in mutated_flow()) {
        check(&json)?;
    }

    #[test]
    fn fuzz_flow_definitions_arbitrary(json in prop_oneof![
        extreme_leaf(),
        extreme_leaf().prop_map(|leaf| json!({"triggers": [leaf.clone()], "entry_action_id": leaf.clone(), "actions": [leaf]})),
    ]) {
        check(&json)?;
    }
}

proptest! {
    #![proptest_config(config(8))]

    #[test]
    fn fuzz_flow_definitions_graphs(json in any_graph()) {
        check(&json)?;
    }
}
