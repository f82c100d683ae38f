//! Fuzz targets of the segment condition language: `condition_groups` JSON parsed, and
//! whatever parses evaluated, explained, scheduled and checked for cycles against hostile
//! profiles (events, properties, joins and consent dates at the ends of time; sums past
//! `f64::MAX`; numbers past every integer range).
//!
//! The inputs are valid definitions with one to three nodes replaced by extreme values
//! (quantities at and past their bounds, numbers past `i64`/`u64`/`f64`, dates at the ends of
//! the calendar, long and odd strings, huge arrays), and arbitrary JSON.
//!
//! Properties: nothing panics; a refusal is a list of `DefinitionError`s, each at a pointer
//! under the definition, with a bounded detail, and no more of them than the input has
//! nodes; what parses prints back to itself; `next_change_after` is after `now`; each case
//! ends in bounded time.
//!
//! Each target runs the number of cases its `config` names (hundreds) in `cargo test`, well
//! under a few seconds in a debug build;
//! `PROPTEST_CASES=100000 cargo test -p signalbox-seglang --test it fuzz_` runs longer.
//! Failures are not persisted: a case found is kept as a plain regression test.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config;
use serde_json::{json, Value};
use signalbox_seglang::{
    find_cycles, parse_with, ConsentStatus, ConsentView, Definition, EvalContext, ParseOptions,
    Suppression, SuppressionReason,
};

use crate::facts::{Event, MemoryFacts};
use crate::generators::{any_json, definition, mutate};

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

const CASE_TIME: Duration = Duration::from_secs(30);

/// Values at and past the edges of what each field takes.
fn extreme_leaf() -> impl Strategy<Value = Value> {
    let numbers = select(vec![
        json!(0),
        json!(-1),
        json!(100_000),
        json!(100_001),
        json!(u32::MAX),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(i64::MAX),
        json!(1e308),
        json!(-1e308),
        json!(1.5),
        json!(5e-324),
        json!(-0.0),
        json!(12),
        json!(13),
        json!(255),
    ]);
    let strings = select(
        &[
            "",
            "-009999-01-01",
            "-009999-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            "9999-12-31T23:59:59-25:59",
            "+275760-09-13T00:00:00Z",
            "2024-02-30",
            "2024-02-29",
            "0000-01-01",
            "\u{0}",
            "properties['']",
            "properties['\u{0}']",
            "location['nope']",
            "\u{202e}\u{feff}😀",
            "in-the-last",
            "anniversary-next",
            "calendar-month",
            "between",
            "flow-start",
            "week",
            "hour",
        ][..],
    )
    .prop_map(Value::from);
    prop_oneof![
        numbers,
        strings,
        (10_000usize..40_000).prop_map(|n| Value::from("x".repeat(n))),
        (1usize..5_000).prop_map(|n| Value::Array(vec![json!("L1"); n])),
        any_json(),
    ]
}

/// A valid definition with up to three nodes replaced by extreme values.
fn mutated_definition() -> impl Strategy<Value = Value> {
    (
        definition(),
        prop::collection::vec((any::<usize>(), extreme_leaf()), 1..4),
    )
        .prop_map(|(mut json, mutations)| {
            for (index, replacement) in mutations {
                json = mutate(json, index, replacement);
            }
            json
        })
}

/// Definitions past the count limits: many groups, many conditions, many ids.
fn oversized_definition() -> impl Strategy<Value = Value> {
    let condition =
        json!({"type": "profile-group-membership", "is_member": true, "group_ids": ["L1"]});
    prop_oneof![
        (1usize..300).prop_map(move |n| json!({"condition_groups": vec![json!({"conditions": [condition.clone()]}); n]})),
        (1usize..20_000).prop_map(|n| json!({"condition_groups": [{"conditions": [
            {"type": "profile-group-membership", "is_member": true, "group_ids": vec!["S2"; n]}]}]})),
        (1usize..2_000).prop_map(|n| {
            let bad: Vec<Value> = (0..n).map(|i| json!({"type": i})).collect();
            json!({"condition_groups": [{"conditions": bad}]})
        }),
    ]
}

fn instant() -> impl Strategy<Value = Timestamp> {
    let now = now_2024();
    prop_oneof![
        select(vec![
            Timestamp::MIN,
            Timestamp::MAX,
            "0000-01-01T00:00:00Z".parse().unwrap(),
            "9999-12-30T00:00:00Z".parse().unwrap(),
            "2024-02-29T12:00:00Z".parse().unwrap(),
        ]),
        (-2_000_000i64..2_000_000).prop_map(move |hours| {
            now.checked_add(SignedDuration::from_hours(hours))
                .unwrap_or(now)
        }),
    ]
}

fn now_2024() -> Timestamp {
    "2024-06-15T12:00:00Z".parse().unwrap()
}

/// A profile with data at the ends of every range.
fn hostile_facts() -> impl Strategy<Value = MemoryFacts> {
    let event = (
        select(&["PO", "VP", "01GDDKASAP8TKDDA2GRZDSVP4H"][..]),
        instant(),
        select(&[0.0, -1.0, 1.0, f64::MAX, -f64::MAX, 1e308, 5e-324][..]),
        prop::option::of(any_json()),
    )
        .prop_map(|(metric, time, value, properties)| Event {
            metric: metric.to_owned(),
            time,
            value,
            properties: properties
                .and_then(|p| p.as_object().cloned())
                .unwrap_or_else(|| {
                    json!({"Brand": "Acme", "Items": ["a", 1, null], "Total": 1e308, "$value": i64::MIN})
                        .as_object()
                        .cloned()
                        .unwrap_or_default()
                }),
        });
    let property_value = prop_oneof![
        extreme_leaf(),
        instant().prop_map(|t| Value::from(t.to_string())),
        instant().prop_map(|t| Value::from(t.as_second())),
    ];
    let paths = select(
        &[
            "email",
            "first_name",
            "created",
            "location['city']",
            "properties['Plan']",
            "properties['Customer's Tier']",
            "properties['X']",
            "properties['Signup']",
        ][..],
    );
    let consent = (
        prop::option::of(instant()),
        prop::collection::vec(instant(), 0..3),
        any::<bool>(),
    )
        .prop_map(|(status_date, suppressed, can_receive)| ConsentView {
            status: ConsentStatus::Subscribed,
            can_receive_marketing: can_receive,
            status_date,
            method: Some("form".into()),
            method_detail: Some("\u{0}".into()),
            custom_source: Some("Ünïcödé".into()),
            double_opt_in: Some(true),
            suppressions: suppressed
                .into_iter()
                .map(|timestamp| Suppression {
                    reason: SuppressionReason::HardBounce,
                    timestamp,
                })
                .collect(),
        });
    (
        prop::collection::vec(event, 0..12),
        prop::collection::vec((paths, property_value), 0..6),
        prop::collection::vec(
            (select(&["L1", "S2", "S3"][..]), prop::option::of(instant())),
            0..3,
        ),
        consent,
    )
        .prop_map(|(events, properties, groups, email)| {
            let mut facts = MemoryFacts::new();
            facts.events = events;
            for (path, value) in properties {
                facts = facts.prop(path, value);
            }
            for (group, joined) in groups {
                facts.groups.insert(group.to_owned(), joined);
            }
            facts.email = email;
            facts
        })
}

fn count_nodes(value: &Value) -> usize {
    1 + match value {
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        Value::Object(map) => map.len() + map.values().map(count_nodes).sum::<usize>(),
        _ => 0,
    }
}

/// Parses with both option sets and checks what holds for every input.
fn check_parse(json: &Value) -> Result<Vec<Definition>, TestCaseError> {
    let mut parsed = Vec::new();
    for options in [ParseOptions::default(), ParseOptions::flow_profile_filter()] {
        let started = Instant::now();
        let result = parse_with(json, &options);
        prop_assert!(started.elapsed() < CASE_TIME);
        match result {
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                prop_assert!(
                    errors.len() <= 2 * count_nodes(json) + 2,
                    "{} errors",
                    errors.len()
                );
                for error in &errors {
                    prop_assert!(
                        error.pointer.starts_with(&options.pointer_prefix),
                        "{}",
                        error.pointer
                    );
                    prop_assert!(error.detail.chars().count() <= 401, "{}", error.detail);
                }
            }
            Ok(definition) => {
                let written = definition.to_json();
                let reparsed = parse_with(&written, &options);
                prop_assert_eq!(reparsed.as_ref(), Ok(&definition), "written: {}", written);
                parsed.push(definition);
            }
        }
    }
    Ok(parsed)
}

/// Evaluates a parsed definition every way the engines do.
fn check_eval(
    definition: &Definition,
    facts: &MemoryFacts,
    now: Timestamp,
) -> Result<(), TestCaseError> {
    let started = Instant::now();
    for ctx in [
        EvalContext::default(),
        EvalContext::flow(now),
        EvalContext::flow(Timestamp::MIN),
    ] {
        let matched = definition.matches(facts, now, &ctx);
        let explained = definition.explain(facts, now, &ctx);
        for result in &explained {
            let _ = result.to_string();
        }
        let by_groups = definition
            .condition_groups()
            .iter()
            .enumerate()
            .all(|(g, group)| {
                (0..group.conditions.len()).any(|c| {
                    explained
                        .iter()
                        .any(|r| r.at.group == g && r.at.condition == c && r.matched)
                })
            });
        prop_assert_eq!(matched, by_groups);
        if let Some(next) = definition.next_change_after(facts, now, &ctx) {
            prop_assert!(next > now, "{} is not after {}", next, now);
        }
    }
    let _ = definition.dependencies();
    prop_assert!(
        started.elapsed() < CASE_TIME,
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn fuzz_seglang_mutated_definitions(
        json in mutated_definition(),
        facts in hostile_facts(),
        now in prop_oneof![3 => Just(now_2024()), 1 => instant()],
    ) {
        for definition in check_parse(&json)? {
            check_eval(&definition, &facts, now)?;
        }
    }

    #[test]
    fn fuzz_seglang_arbitrary_json(json in prop_oneof![
        any_json(),
        extreme_leaf(),
        any_json().prop_map(|c| json!({"condition_groups": [{"conditions": [c]}]})),
        oversized_definition(),
    ]) {
        for definition in check_parse(&json)? {
            check_eval(&definition, &MemoryFacts::new(), now_2024())?;
        }
    }

    #[test]
    fn fuzz_seglang_cycles(
        definitions in prop::collection::vec(mutated_definition(), 1..4),
    ) {
        let mut parsed = BTreeMap::new();
        for (index, json) in definitions.iter().enumerate() {
            if let Some(definition) = check_parse(json)?.into_iter().next() {
                parsed.insert(["L1", "S2", "S3"][index % 3].to_owned(), definition);
            }
        }
        let started = Instant::now();
        for cycle in find_cycles(&parsed) {
            prop_assert!(!cycle.hops.is_empty());
        }
        prop_assert!(started.elapsed() < CASE_TIME);
    }
}
