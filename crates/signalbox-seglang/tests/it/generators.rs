//! proptest strategies: valid definitions in Klaviyo JSON, arbitrary JSON, and mutations.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Value};

const INSTANTS: &[&str] = &[
    "2021-03-01",
    "2022-11-08T00:00:00+00:00",
    "2023-06-15T12:30:00+02:00",
    "2024-01-01T00:00:00Z",
    "2024-02-29T23:59:59.5Z",
    "2024-06-15 08:00:00",
];

const WORDS: &[&str] = &["Acme", "pro", "a b", "", "Ünïcödé", "x'y", "42", "true"];

const METHODS: &[&str] = &["api", "form", "manual_import", "preference_page", "shopify"];

fn word() -> impl Strategy<Value = String> {
    select(WORDS).prop_map(str::to_owned)
}

fn unit() -> impl Strategy<Value = &'static str> {
    select(&["hour", "day", "week"][..])
}

fn instant() -> impl Strategy<Value = &'static str> {
    select(INSTANTS)
}

/// Static bounds in order (`INSTANTS` is sorted by instant).
fn static_range() -> impl Strategy<Value = Value> {
    (0..INSTANTS.len(), 0..INSTANTS.len()).prop_map(|(a, b)| {
        json!({"type": "date", "operator": "between-static",
               "start": INSTANTS[a.min(b)], "end": INSTANTS[a.max(b)]})
    })
}

fn relative(operators: &'static [&'static str]) -> impl Strategy<Value = Value> {
    (select(operators), 1u32..500, unit()).prop_map(|(op, quantity, unit)| {
        json!({"type": "date", "operator": op, "quantity": quantity, "unit": unit})
    })
}

fn between_relative() -> impl Strategy<Value = Value> {
    (0u32..100, 0u32..100, unit()).prop_map(|(start, end, unit)| {
        json!({"type": "date", "operator": "between", "start": start, "end": end, "unit": unit})
    })
}

fn before_after() -> impl Strategy<Value = Value> {
    (select(&["before", "after"][..]), instant())
        .prop_map(|(op, date)| json!({"type": "date", "operator": op, "date": date}))
}

/// Static and relative windows (metric, membership and date property filters share these).
fn window() -> impl Strategy<Value = Value> {
    prop_oneof![
        before_after(),
        static_range(),
        relative(&["in-the-last", "at-least", "in-the-next"]),
        between_relative(),
    ]
}

fn metric_timeframe() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"type": "date", "operator": "alltime"})),
        window()
    ]
}

fn property_date() -> impl Strategy<Value = Value> {
    prop_oneof![
        window(),
        relative(&["anniversary-last", "anniversary-next"]),
        select(&["anniversary", "anniversary-month"][..])
            .prop_map(|op| json!({"type": "date", "operator": op})),
        (1u8..=12).prop_map(|m| json!({"type": "date", "operator": "calendar-month", "value": m})),
    ]
}

fn numeric() -> impl Strategy<Value = Value> {
    let operators = &[
        "equals",
        "not-equals",
        "greater-than",
        "greater-than-or-equal",
        "less-than",
        "less-than-or-equal",
    ][..];
    let value = prop_oneof![
        (-1000i64..1000).prop_map(|n| json!(n)),
        (-1000.0f64..1000.0).prop_map(|n| json!(n)),
    ];
    (select(operators), value)
        .prop_map(|(op, value)| json!({"type": "numeric", "operator": op, "value": value}))
}

fn string_filter() -> impl Strategy<Value = Value> {
    let operators = &[
        "equals",
        "not-equals",
        "contains",
        "not-contains",
        "starts-with",
        "not-starts-with",
        "ends-with",
        "not-ends-with",
    ][..];
    prop_oneof![
        (select(operators), word())
            .prop_map(|(op, v)| json!({"type": "string", "operator": op, "value": v})),
        (select(&["in", "not-in"][..]), vec(word(), 0..3))
            .prop_map(|(op, v)| json!({"type": "string", "operator": op, "value": v})),
    ]
}

fn boolean() -> impl Strategy<Value = Value> {
    any::<bool>().prop_map(|b| json!({"type": "boolean", "operator": "equals", "value": b}))
}

fn existence() -> impl Strategy<Value = Value> {
    select(&["is-set", "not-set"][..]).prop_map(|op| json!({"type": "existence", "operator": op}))
}

fn list_length() -> impl Strategy<Value = Value> {
    let operators = &[
        "length-equals",
        "length-greater-than",
        "length-greater-than-or-equal",
        "length-less-than",
        "length-less-than-or-equal",
    ][..];
    (select(operators), 0u64..10)
        .prop_map(|(op, n)| json!({"type": "list", "operator": op, "value": n}))
}

fn event_filter() -> impl Strategy<Value = Value> {
    let sets = &[
        "contains-all",
        "contains-any",
        "not-contains-all",
        "not-contains-any",
    ][..];
    let filter = prop_oneof![
        string_filter(),
        numeric(),
        boolean(),
        existence(),
        list_length(),
        (select(sets), vec(word(), 0..3))
            .prop_map(|(op, v)| json!({"type": "list", "operator": op, "value": v})),
        (
            select(&["contains-substring", "not-contains-substring"][..]),
            word()
        )
            .prop_map(|(op, v)| json!({"type": "list", "operator": op, "value": v})),
    ];
    (select(&["Brand", "Items", "$value", "Total"][..]), filter)
        .prop_map(|(property, filter)| json!({"property": property, "filter": filter}))
}

fn property_filter() -> impl Strategy<Value = Value> {
    let item = prop_oneof![
        word().prop_map(Value::from),
        (-5i64..5).prop_map(Value::from),
        Just(Value::Null)
    ];
    prop_oneof![
        string_filter(),
        numeric(),
        boolean(),
        existence(),
        list_length(),
        (select(&["contains", "not-contains"][..]), item)
            .prop_map(|(op, v)| json!({"type": "list", "operator": op, "value": v})),
        property_date(),
    ]
}

fn metric_condition() -> impl Strategy<Value = Value> {
    let filters = prop_oneof![
        Just(Value::Null),
        vec(event_filter(), 0..3).prop_map(Value::from)
    ];
    (
        select(&["PO", "VP", "01GDDKASAP8TKDDA2GRZDSVP4H"][..]),
        select(&["count", "sum"][..]),
        numeric(),
        metric_timeframe(),
        filters,
    )
        .prop_map(|(id, measurement, filter, timeframe, filters)| {
            json!({"type": "profile-metric", "metric_id": id, "measurement": measurement,
                   "measurement_filter": filter, "timeframe_filter": timeframe,
                   "metric_filters": filters})
        })
}

fn property_condition() -> impl Strategy<Value = Value> {
    let paths = &[
        "email",
        "first_name",
        "created",
        "location['city']",
        "properties['Plan']",
        "properties['Customer's Tier']",
    ][..];
    (select(paths), property_filter()).prop_map(
        |(path, filter)| json!({"type": "profile-property", "property": path, "filter": filter}),
    )
}

fn membership_condition() -> impl Strategy<Value = Value> {
    let ids = vec(select(&["L1", "S2", "S3"][..]), 1..3);
    (any::<bool>(), ids, proptest::option::of(window())).prop_map(|(is_member, ids, timeframe)| {
        let mut out =
            json!({"type": "profile-group-membership", "is_member": is_member, "group_ids": ids});
        if let (true, Some(timeframe)) = (is_member, timeframe) {
            out["timeframe_filter"] = timeframe;
        }
        out
    })
}

fn consent_filter(can_receive: bool) -> BoxedStrategy<Value> {
    let equals = |v: String| json!({"type": "string", "operator": "equals", "value": v});
    let common = prop_oneof![
        boolean().prop_map(|f| json!({"field": "is_double_opt_in", "filter": f})),
        property_date().prop_map(|f| json!({"field": "status_date", "filter": f})),
        word().prop_map(move |w| json!({"field": "custom_source", "filter": equals(w)})),
        (
            select(&["method", "subscribe_method"][..]),
            select(METHODS),
            proptest::option::of(vec(word(), 0..3))
        )
            .prop_map(|(field, method, detail)| {
                let mut out = json!({"field": field, "method": method});
                if let Some(ids) = detail {
                    out["filter"] = json!({"type": "string", "operator": "in", "value": ids});
                }
                out
            }),
    ];
    if can_receive {
        return common.boxed();
    }
    let suppression = (
        select(
            &[
                "bounce_date",
                "manual_suppression_date",
                "invalid_email_date",
            ][..],
        ),
        prop_oneof![
            Just(json!({"type": "existence", "operator": "is-set"})),
            property_date()
        ],
    )
        .prop_map(|(field, filter)| json!({"field": field, "filter": filter}));
    prop_oneof![common, suppression].boxed()
}

fn consent_condition() -> impl Strategy<Value = Value> {
    any::<bool>().prop_flat_map(|can_receive| {
        let subscriptions: &[&str] = if can_receive {
            &["any", "subscribed", "never_subscribed"]
        } else {
            &["any", "subscribed", "unsubscribed", "never_subscribed"]
        };
        (
            select(&["email", "sms", "push"][..]),
            select(subscriptions),
            vec(consent_filter(can_receive), 0..3),
        )
            .prop_map(move |(channel, subscription, filters)| {
                json!({"type": "profile-marketing-consent", "consent": {
                    "channel": channel, "can_receive_marketing": can_receive,
                    "consent_status": {"subscription": subscription, "filters": filters}}})
            })
    })
}

pub fn condition() -> impl Strategy<Value = Value> {
    prop_oneof![
        metric_condition(),
        property_condition(),
        membership_condition(),
        consent_condition(),
    ]
}

/// A valid segment definition.
pub fn definition() -> impl Strategy<Value = Value> {
    vec(vec(condition(), 1..4), 1..4).prop_map(|groups| {
        let groups: Vec<Value> = groups
            .into_iter()
            .map(|conditions| json!({"conditions": conditions}))
            .collect();
        json!({"condition_groups": groups})
    })
}

const KEYS: &[&str] = &[
    "condition_groups",
    "conditions",
    "type",
    "metric_id",
    "measurement",
    "measurement_filter",
    "operator",
    "value",
    "timeframe_filter",
    "quantity",
    "unit",
    "metric_filters",
    "property",
    "filter",
    "is_member",
    "group_ids",
    "consent",
    "channel",
    "consent_status",
    "subscription",
    "filters",
    "field",
    "method",
    "date",
    "start",
    "end",
];

const STRINGS: &[&str] = &[
    "profile-metric",
    "profile-property",
    "profile-group-membership",
    "profile-marketing-consent",
    "numeric",
    "date",
    "string",
    "list",
    "boolean",
    "existence",
    "alltime",
    "in-the-last",
    "between",
    "between-static",
    "anniversary",
    "count",
    "sum",
    "day",
    "email",
    "properties['X']",
    "equals",
    "contains",
    "is-set",
    "2024-01-01T00:00:00Z",
];

/// Any JSON, biased towards the definition vocabulary so it reaches deep into the parser.
pub fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        select(STRINGS).prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 96, 6, |inner| {
        let key = prop_oneof![select(KEYS).prop_map(str::to_owned), ".{0,6}"];
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(key, inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Replaces the `index`-th node (preorder, modulo the node count) of `value`.
pub fn mutate(mut value: Value, index: usize, replacement: Value) -> Value {
    let count = count_nodes(&value);
    let mut target = index % count;
    replace_nth(&mut value, &mut target, replacement);
    value
}

fn count_nodes(value: &Value) -> usize {
    1 + match value {
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        Value::Object(map) => map.values().map(count_nodes).sum(),
        _ => 0,
    }
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
