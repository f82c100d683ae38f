//! Fuzz targets of what the Klaviyo API reads from query strings: the `filter` language
//! (`klaviyo::filter`), and the shared parameters of `klaviyo::jsonapi` (`sort`, `include`,
//! `fields[...]`, `page[size]`, `page[cursor]`, next links and sparse fieldsets).
//!
//! Properties: nothing panics on any text; a refusal is a `FilterError` or a 400 `ApiError`
//! whose message is bounded by what was sent; what parses stays inside the limits
//! (conditions, list lengths, page size, allowed names); a filter printed from conditions
//! parses back to the same conditions; a cursor put in a next link is the cursor read back
//! from it.
//!
//! Each target runs the number of cases its `config` names (hundreds) in `cargo test`, well
//! under a few seconds in a debug build;
//! `PROPTEST_CASES=100000 cargo test -p signalbox-server --test it fuzz_` runs longer.
//! Failures are not persisted: a case found is kept as a plain regression test.

use std::time::{Duration, Instant};

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config;
use serde_json::{Map, Value as Json};
use signalbox_server::klaviyo::filter::{
    self, Condition, DateTimeLit, FieldRule, Op, Value, MAX_CONDITIONS, MAX_FILTER_LEN,
    MAX_LIST_LEN,
};
use signalbox_server::klaviyo::jsonapi::{self, BaseUrl, Params, QuerySpec, RawQuery};

use crate::decode_properties::arb_json;

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

const RULES: &[FieldRule] = &[
    FieldRule {
        field: "email",
        ops: &[Op::Equals, Op::Any],
    },
    FieldRule {
        field: "datetime",
        ops: &[
            Op::GreaterThan,
            Op::GreaterOrEqual,
            Op::LessThan,
            Op::LessOrEqual,
        ],
    },
    FieldRule {
        field: "name",
        ops: &[Op::Equals, Op::Contains, Op::StartsWith, Op::EndsWith],
    },
    FieldRule {
        field: "profile",
        ops: &[Op::Has],
    },
];

const SPEC: QuerySpec = QuerySpec {
    filters: RULES,
    sorts: &["datetime", "-datetime", "name"],
    includes: &["metric", "profile"],
    fieldsets: &[
        ("event", &["datetime", "uuid", "event_properties"]),
        ("profile", &["email", "location.city"]),
    ],
    page_size: Some((20, 100)),
    paged: true,
};

/// Parses, and checks what holds for every filter text.
fn check_filter(text: &str) -> Result<Option<Vec<Condition>>, TestCaseError> {
    let started = Instant::now();
    let result = filter::parse(text);
    prop_assert!(started.elapsed() < CASE_TIME);
    match result {
        Err(err) => {
            prop_assert!(!err.message.is_empty());
            // A refusal quotes at most the filter and a fixed text.
            prop_assert!(
                err.message.len() <= text.len().min(MAX_FILTER_LEN) + 512,
                "a refusal of {} bytes for {} bytes",
                err.message.len(),
                text.len()
            );
            Ok(None)
        }
        Ok(conditions) => {
            prop_assert!(text.len() <= MAX_FILTER_LEN);
            prop_assert!(!conditions.is_empty() && conditions.len() <= MAX_CONDITIONS);
            for condition in &conditions {
                prop_assert!(!condition.field.is_empty());
                prop_assert_eq!(condition.value.is_none(), condition.op == Op::Has);
                if let Some(Value::List(items)) = &condition.value {
                    prop_assert!(!items.is_empty() && items.len() <= MAX_LIST_LEN);
                    prop_assert!(items.iter().all(|v| !matches!(v, Value::List(_))));
                }
                if let Some(Value::Number(n)) = &condition.value {
                    prop_assert!(n.is_finite());
                }
                // What endpoints then ask of a condition never panics either.
                let _ = condition.strings();
                let _ = condition.string();
                for tz in zones() {
                    for seconds in [false, true] {
                        let _ = condition.instant(&tz, seconds);
                    }
                }
            }
            let _ = filter::check(&conditions, RULES);
            Ok(Some(conditions))
        }
    }
}

fn zones() -> [TimeZone; 3] {
    [
        TimeZone::UTC,
        TimeZone::fixed(jiff::tz::Offset::constant(-25)),
        TimeZone::fixed(jiff::tz::Offset::constant(25)),
    ]
}

/// Tokens of the filter language and its neighbours, to build near misses from.
const TOKENS: &[&str] = &[
    "equals",
    "any",
    "has",
    "greater-than",
    "less-or-equal",
    "contains-all",
    "starts-with",
    "(",
    ")",
    ",",
    "[",
    "]",
    "\"",
    "'",
    "\\",
    "\\u",
    "\\ud83d",
    "\\ude00",
    "\\x",
    "\\xe9",
    "\\u00",
    "email",
    "datetime",
    " ",
    "\u{3000}",
    "true",
    "null",
    "1e400",
    "-1e-400",
    "1.5e308",
    "18446744073709551616",
    "-",
    "+",
    "2023-04-19T00:00:00Z",
    "2023-04-19T00:00:00 05:00",
    "2023-04-19",
    "9999-12-31T23:59:59",
    "0000-01-01",
    "2023-13-45",
    "2023-04-19T25:00",
    "2023-04-19T00:00:00[Europe/Paris]",
    "-009999-01-01T00:00:00Z",
    "é",
    "😀",
    "\u{0}",
    "\u{feff}",
    "\u{202e}",
];

fn near_miss() -> impl Strategy<Value = String> {
    prop::collection::vec(select(TOKENS), 0..40).prop_map(|tokens| tokens.concat())
}

/// Text at and over the length limit, of conditions and of lists.
fn oversized() -> impl Strategy<Value = String> {
    prop_oneof![
        (MAX_CONDITIONS - 1..MAX_CONDITIONS + 3)
            .prop_map(|n| vec![r#"equals(email,"a")"#; n].join(",")),
        (MAX_LIST_LEN - 1..MAX_LIST_LEN + 3)
            .prop_map(|n| format!("any(email,[{}])", vec!["'a'"; n].join(","))),
        (MAX_FILTER_LEN - 20..MAX_FILTER_LEN + 20)
            .prop_map(|n| format!("equals(email,\"{}\")", "x".repeat(n))),
        (1usize..2_000).prop_map(|n| format!("any(email,{}\"a\"{})", "[".repeat(n), "]".repeat(n))),
        (1usize..2_000).prop_map(|n| "equals(".repeat(n)),
        (1usize..4_000).prop_map(|n| format!("equals(email,\"{}\")", "\\u".repeat(n))),
    ]
}

/// A value that prints to text the parser reads back exactly.
fn printable_value() -> impl Strategy<Value = Value> {
    let instant = (
        Timestamp::from_second(-62_167_219_200).unwrap().as_second()..=Timestamp::MAX.as_second(),
        0i32..1_000_000_000,
    )
        .prop_map(|(s, ns)| {
            Timestamp::new(s, ns)
                .or_else(|_| Timestamp::new(s, 0))
                .unwrap()
        });
    let local = (0i16..=9999, 1i8..=12, 1i8..=28, 0i8..24, 0i8..60, 0i8..60)
        .prop_map(|(y, mo, d, h, mi, s)| DateTime::new(y, mo, d, h, mi, s, 0).unwrap());
    prop_oneof![
        any::<String>().prop_map(Value::String),
        "[\"'\\\\ ,()\\[\\]\u{0}-\u{1f}é😀]{0,12}".prop_map(Value::String),
        any::<f64>()
            .prop_filter("finite", |n| n.is_finite())
            .prop_map(Value::Number),
        select(
            &[
                0.0,
                -0.0,
                f64::MAX,
                f64::MIN,
                f64::MIN_POSITIVE,
                1e-300,
                5e-324
            ][..]
        )
        .prop_map(Value::Number),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
        instant.prop_map(|ts| Value::DateTime(DateTimeLit::Instant(ts))),
        local.prop_map(|dt| Value::DateTime(DateTimeLit::Local(dt))),
    ]
}

fn printable_condition() -> impl Strategy<Value = Condition> {
    // Anything but the characters that end or break a field name, not blank at either end.
    let field = "[^,()\\[\\]\"'\\s][^,()\\[\\]\"']{0,20}"
        .prop_filter("trimmed", |f| f.trim() == f && !f.is_empty());
    let value_ops = select(&Op::ALL[..11]);
    prop_oneof![
        3 => (field.clone(), value_ops, printable_value()).prop_map(|(field, op, value)| {
            Condition { op, field, value: Some(value) }
        }),
        1 => (field.clone(), prop_oneof![
                prop::collection::vec(printable_value(), 1..8),
                // At the limit: short items, so that the text stays under its own limit.
                prop::collection::vec(
                    (-99i32..99).prop_map(|n| Value::Number(f64::from(n))),
                    MAX_LIST_LEN - 2..=MAX_LIST_LEN,
                ),
            ])
            .prop_map(|(field, items)| Condition {
                op: Op::Any,
                field,
                value: Some(Value::List(items)),
            }),
        1 => field.prop_map(|field| Condition { op: Op::Has, field, value: None }),
    ]
}

/// Prints a value as a client would write it: strings JSON-quoted or, as the SDK writes
/// lists, Python-quoted.
fn print_value(value: &Value, python_quotes: bool) -> String {
    match value {
        Value::String(s) if python_quotes => {
            format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
        }
        Value::String(s) => Json::String(s.clone()).to_string(),
        Value::Number(n) => format!("{n}"),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_owned(),
        Value::DateTime(DateTimeLit::Instant(ts)) => ts.to_string(),
        Value::DateTime(DateTimeLit::Local(dt)) => dt.to_string(),
        Value::List(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|v| print_value(v, python_quotes))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

fn print(conditions: &[Condition], python_quotes: bool, space: &str) -> String {
    conditions
        .iter()
        .map(|c| match &c.value {
            None => format!("{}({space}{}{space})", c.op, c.field),
            Some(v) => format!(
                "{}({space}{}{space},{space}{}{space})",
                c.op,
                c.field,
                print_value(v, python_quotes)
            ),
        })
        .collect::<Vec<_>>()
        .join(&format!("{space},{space}"))
}

/// Query pairs made of the parameter names endpoints know and near misses of them.
fn query_pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    let key = prop_oneof![
        select(
            &[
                "filter",
                "sort",
                "include",
                "page[size]",
                "page[cursor]",
                "fields[event]",
                "fields[profile]",
                "fields[nope]",
                "fields[]",
                "fields[",
                "page[number]",
                "additional-fields[profile]",
            ][..]
        )
        .prop_map(str::to_owned),
        any::<String>(),
    ];
    let value = prop_oneof![
        select(
            &[
                "datetime",
                "-datetime",
                "metric,profile",
                "metric,metric",
                " metric , profile ",
                ",",
                "",
                "email,location.city",
                "0",
                "1",
                "100",
                "101",
                "4294967296",
                "-1",
                "+5",
                "equals(email,\"a\")",
                "has(profile)",
                "https://h/api/events/?page[cursor]=abc",
                "/api/events/?page%5Bcursor%5D=a%2Bb",
                "=abc",
            ][..]
        )
        .prop_map(str::to_owned),
        near_miss(),
        any::<String>(),
    ];
    prop::collection::vec((key, value), 0..6)
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn fuzz_filter_arbitrary_text(text in prop_oneof![
        any::<String>(),
        "\\PC{0,300}",
        near_miss(),
        near_miss().prop_map(|t| format!("equals(email,{t})")),
        near_miss().prop_map(|t| format!("any(email,[{t}])")),
        oversized(),
    ]) {
        check_filter(&text)?;
    }

    #[test]
    fn fuzz_filter_printed_conditions_parse_back(
        conditions in prop::collection::vec(printable_condition(), 1..8),
        python_quotes in any::<bool>(),
        space in select(&["", " ", "  \t", "\n"][..]),
    ) {
        let text = print(&conditions, python_quotes, space);
        prop_assume!(text.len() <= MAX_FILTER_LEN);
        let parsed = check_filter(&text)?;
        prop_assert_eq!(parsed.as_ref(), Some(&conditions), "{}", text);
    }

    #[test]
    fn fuzz_query_parameters(pairs in query_pairs()) {
        let started = Instant::now();
        let result = Params::parse(RawQuery(pairs.clone()), &SPEC);
        prop_assert!(started.elapsed() < CASE_TIME);
        match result {
            Err(err) => {
                prop_assert_eq!(err.status().as_u16(), 400);
                let sent: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
                prop_assert!(err.0.detail.len() <= 2 * sent + 1024, "{}", err.0.detail);
            }
            Ok(params) => {
                prop_assert!((1..=100).contains(&params.page_size));
                prop_assert!(params.include.iter().all(|i| SPEC.includes.contains(i)));
                prop_assert!(params.filter.len() <= MAX_CONDITIONS);
                filter::check(&params.filter, RULES)
                    .map_err(|e| TestCaseError::fail(e.message))?;
                for (kind, names) in &params.fields {
                    let allowed = SPEC.fieldsets.iter().find(|(k, _)| k == kind).map(|(_, a)| *a);
                    prop_assert!(allowed.is_some());
                    prop_assert!(names.iter().all(|n| allowed.unwrap().contains(&n.as_str())));
                }
                if let Some(cursor) = &params.cursor {
                    prop_assert!(!cursor.is_empty());
                }
                // The next link of any cursor carries that cursor back.
                let links = params.collection_links(&BaseUrl("https://h:1".into()), "events", Some("n_x-1"));
                let next = links["next"].as_str().unwrap_or_default().to_owned();
                prop_assert_eq!(jsonapi::cursor_from(&next), Some("n_x-1".to_owned()), "{}", next);
            }
        }
    }

    #[test]
    fn fuzz_cursor_round_trips_through_the_next_link(
        cursor in "[A-Za-z0-9_~.-][A-Za-z0-9_~.+/=%-]{0,100}",
        pairs in query_pairs(),
    ) {
        // Whatever else the request carried, as far as it parses.
        let params = Params::parse(RawQuery(pairs), &SPEC).unwrap_or_default();
        let links = params.collection_links(&BaseUrl("https://h:1".into()), "events", Some(&cursor));
        let next = links["next"].as_str().unwrap_or_default();
        prop_assert_eq!(jsonapi::cursor_from(next), Some(cursor.clone()), "{}", next);
        // A bare cursor, and the stray `=` an SDK leaves after cutting one out of a link.
        prop_assert_eq!(jsonapi::cursor_from(&cursor), Some(cursor.clone()));
        prop_assert_eq!(jsonapi::cursor_from(&format!("={cursor}")), Some(cursor.clone()));
    }

    #[test]
    fn fuzz_cursor_from_any_text(text in prop_oneof![
        any::<String>(),
        "(https?://|/)[a-z/]{0,10}\\?.{0,80}",
    ]) {
        if let Some(cursor) = jsonapi::cursor_from(&text) {
            prop_assert!(!cursor.is_empty());
            prop_assert!(cursor.len() <= text.len());
        }
    }

    #[test]
    fn fuzz_sparse_fieldsets_keep_only_what_is_there(
        attributes in prop::collection::btree_map("[a-c]{1,2}", arb_json(), 0..6),
        fields in prop::collection::vec("[a-c.]{0,8}", 0..6),
    ) {
        let attributes: Map<String, Json> = attributes.into_iter().collect();
        let kept = jsonapi::sparse(&attributes, &fields);
        let before = Json::Object(attributes).to_string().len();
        let after = Json::Object(kept).to_string().len();
        prop_assert!(after <= before, "{} bytes from {}", after, before);
    }
}
