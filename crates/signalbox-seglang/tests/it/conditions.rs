//! Every condition type and operator against hand-computed expectations.
//!
//! Unless a test says otherwise, "now" is 2024-06-15T12:00:00Z.

use jiff::Timestamp;
use serde_json::{json, Value};
use signalbox_seglang::{
    ConsentStatus, ConsentView, EvalContext, Observed, Suppression, SuppressionReason,
};

use crate::facts::MemoryFacts;
use crate::{def, flow_def, single, ts};

fn now() -> Timestamp {
    ts("2024-06-15T12:00:00Z")
}

// ---- profile-metric ----------------------------------------------------------------------

/// Placed Order events around "now", plus one event of another metric.
fn orders() -> MemoryFacts {
    MemoryFacts::new()
        .event(
            "PO",
            "2024-06-14T12:00:00Z",
            10.0,
            json!({"Brand": "Acme", "Items": ["Tee", "Cap"], "Gift": true, "Total": 30}),
        )
        .event(
            "PO",
            "2024-06-01T00:00:00Z",
            20.0,
            json!({"Brand": "Other", "Items": ["Mug"], "Gift": false, "Total": 5}),
        )
        .event(
            "PO",
            "2024-05-01T00:00:00Z",
            5.0,
            json!({"Brand": "acme", "Total": "12.5"}),
        )
        .event("PO", "2023-01-01T00:00:00Z", 100.0, json!({}))
        .event("PO", "2024-06-20T00:00:00Z", 1.0, json!({"Brand": "Acme"}))
        .event("VP", "2024-06-15T00:00:00Z", 7.0, json!({"Brand": "Acme"}))
}

fn metric_condition(measurement: &str, timeframe: Value, filters: Value) -> Value {
    json!({
        "type": "profile-metric", "metric_id": "PO", "measurement": measurement,
        "measurement_filter": {"type": "numeric", "operator": "greater-than-or-equal", "value": 0},
        "timeframe_filter": timeframe,
        "metric_filters": filters,
    })
}

/// The count or sum a metric condition observes.
fn observed(measurement: &str, timeframe: Value, filters: Value, ctx: &EvalContext) -> f64 {
    let json = single(metric_condition(measurement, timeframe, filters));
    let definition = match ctx.flow_start {
        Some(_) => flow_def(json),
        None => def(json),
    };
    match &definition.explain(&orders(), now(), ctx)[0].observed {
        Observed::Metric { value, .. } => *value,
        other => panic!("expected a metric observation, got {other:?}"),
    }
}

fn count(timeframe: Value) -> f64 {
    observed("count", timeframe, Value::Null, &EvalContext::default())
}

fn count_where(filters: Value) -> f64 {
    observed(
        "count",
        json!({"type": "date", "operator": "alltime"}),
        filters,
        &EvalContext::default(),
    )
}

#[test]
fn metric_timeframes_count_the_right_events() {
    let rel = |op: &str, quantity: u32, unit: &str| json!({"type": "date", "operator": op, "quantity": quantity, "unit": unit});
    // All five Placed Order events, including the future-dated one.
    assert_eq!(count(json!({"type": "date", "operator": "alltime"})), 5.0);
    // (2024-05-16T12:00, now]: 06-14 and 06-01.
    assert_eq!(count(rel("in-the-last", 30, "day")), 2.0);
    // (2024-06-14T12:00, now]: the 06-14T12:00 event sits exactly on the open end.
    assert_eq!(count(rel("in-the-last", 24, "hour")), 0.0);
    assert_eq!(count(rel("in-the-last", 25, "hour")), 1.0);
    assert_eq!(count(rel("in-the-last", 3, "week")), 2.0);
    // At or before 2024-05-16T12:00: 05-01 and 2023-01-01.
    assert_eq!(count(rel("at-least", 30, "day")), 2.0);
    // (now, 2024-06-22T12:00]: the future-dated event.
    assert_eq!(count(rel("in-the-next", 7, "day")), 1.0);
    // (now − 60 d, now − 10 d] = (04-16T12:00, 06-05T12:00]: 06-01 and 05-01; order of the
    // bounds does not matter.
    let between = |start: u32, end: u32| json!({"type": "date", "operator": "between", "start": start, "end": end, "unit": "day"});
    assert_eq!(count(between(10, 60)), 2.0);
    assert_eq!(count(between(60, 10)), 2.0);
    // Static bounds: before/after are strict, between-static inclusive.
    let at = "2024-06-01T00:00:00+00:00";
    assert_eq!(
        count(json!({"type": "date", "operator": "before", "date": at})),
        2.0
    );
    assert_eq!(
        count(json!({"type": "date", "operator": "after", "date": at})),
        2.0
    );
    assert_eq!(
        count(json!({"type": "date", "operator": "between-static",
            "start": "2024-05-01T00:00:00Z", "end": at})),
        2.0
    );
}

#[test]
fn flow_start_counts_since_the_flow_started() {
    let timeframe = json!({"type": "date", "operator": "flow-start"});
    let ctx = EvalContext::flow(ts("2024-06-01T00:00:00Z"));
    // [06-01, now]: 06-14 and 06-01 (inclusive start); the future event is not yet in.
    assert_eq!(observed("count", timeframe.clone(), Value::Null, &ctx), 2.0);
    assert_eq!(observed("sum", timeframe.clone(), Value::Null, &ctx), 30.0);

    // Without a flow start nothing is counted, so "zero times since flow start" holds.
    let zero = flow_def(single(json!({
        "type": "profile-metric", "metric_id": "PO", "measurement": "count",
        "measurement_filter": {"type": "numeric", "operator": "equals", "value": 0},
        "timeframe_filter": timeframe,
    })));
    assert!(zero.matches(&orders(), now(), &EvalContext::default()));
    assert!(!zero.matches(&orders(), now(), &ctx));
    // The flow started after the last order: zero orders since, the profile stays in.
    assert!(zero.matches(
        &orders(),
        now(),
        &EvalContext::flow(ts("2024-06-15T00:00:00Z"))
    ));
}

#[test]
fn metric_sums_add_event_values() {
    let ctx = EvalContext::default();
    let alltime = json!({"type": "date", "operator": "alltime"});
    assert_eq!(observed("sum", alltime, Value::Null, &ctx), 136.0);
    let last30 = json!({"type": "date", "operator": "in-the-last", "quantity": 30, "unit": "day"});
    assert_eq!(observed("sum", last30, Value::Null, &ctx), 30.0);
}

#[test]
fn metric_filters_on_event_properties() {
    let f = |property: &str, filter: Value| json!([{"property": property, "filter": filter}]);
    let string = |op: &str, value: Value| json!({"type": "string", "operator": op, "value": value});
    let list = |op: &str, value: Value| json!({"type": "list", "operator": op, "value": value});

    // Text ignores case: "Acme", "acme" and the future "Acme".
    assert_eq!(
        count_where(f("Brand", string("equals", json!("ACME")))),
        3.0
    );
    // Negative operators skip events without the property (2023-01-01 has none).
    assert_eq!(
        count_where(f("Brand", string("not-equals", json!("acme")))),
        1.0
    );
    assert_eq!(
        count_where(f("Brand", string("contains", json!("cm")))),
        3.0
    );
    assert_eq!(
        count_where(f("Brand", string("starts-with", json!("oth")))),
        1.0
    );
    assert_eq!(
        count_where(f("Brand", string("ends-with", json!("ER")))),
        1.0
    );
    assert_eq!(
        count_where(f("Brand", string("not-contains", json!("cm")))),
        1.0
    );
    assert_eq!(
        count_where(f("Brand", string("in", json!(["Other", "Nope"])))),
        1.0
    );
    assert_eq!(
        count_where(f("Brand", string("not-in", json!(["Other"])))),
        3.0
    );
    // Numbers, and strings holding numbers ("12.5").
    let num = |op: &str, v: f64| json!({"type": "numeric", "operator": op, "value": v});
    assert_eq!(count_where(f("Total", num("greater-than", 10.0))), 2.0);
    assert_eq!(count_where(f("Total", num("less-than-or-equal", 5.0))), 1.0);
    assert_eq!(
        count_where(f(
            "Gift",
            json!({"type": "boolean", "operator": "equals", "value": true})
        )),
        1.0
    );
    let exists = |op: &str| json!({"type": "existence", "operator": op});
    assert_eq!(count_where(f("Brand", exists("is-set"))), 4.0);
    assert_eq!(count_where(f("Brand", exists("not-set"))), 1.0);
    // Lists.
    assert_eq!(
        count_where(f("Items", list("contains-any", json!(["mug", "cap"])))),
        2.0
    );
    assert_eq!(
        count_where(f("Items", list("contains-all", json!(["Tee", "Cap"])))),
        1.0
    );
    assert_eq!(
        count_where(f("Items", list("not-contains-all", json!(["Tee", "Cap"])))),
        1.0
    );
    assert_eq!(
        count_where(f("Items", list("not-contains-any", json!(["Mug"])))),
        1.0
    );
    assert_eq!(
        count_where(f("Items", list("contains-substring", json!("EE")))),
        1.0
    );
    assert_eq!(
        count_where(f("Items", list("not-contains-substring", json!("ee")))),
        1.0
    );
    assert_eq!(
        count_where(f("Items", list("length-greater-than", json!(1)))),
        1.0
    );
    assert_eq!(
        count_where(f("Items", list("length-equals", json!(1)))),
        1.0
    );
    // Several filters are ANDed.
    let both = json!([
        {"property": "Brand", "filter": string("equals", json!("acme"))},
        {"property": "Total", "filter": num("greater-than-or-equal", 20.0)},
    ]);
    assert_eq!(count_where(both), 1.0);
}

#[test]
fn measurement_operators() {
    // Five Placed Order events of all time.
    let check = |operator: &str, value: Value, expected: bool| {
        let definition = def(single(json!({
            "type": "profile-metric", "metric_id": "PO", "measurement": "count",
            "measurement_filter": {"type": "numeric", "operator": operator, "value": value},
            "timeframe_filter": {"type": "date", "operator": "alltime"},
        })));
        let got = definition.matches(&orders(), now(), &EvalContext::default());
        assert_eq!(got, expected, "count {operator} {value}");
    };
    check("equals", json!(5), true);
    check("equals", json!(5.0), true);
    check("not-equals", json!(5), false);
    check("greater-than", json!(4), true);
    check("greater-than", json!(5), false);
    check("greater-than-or-equal", json!(5), true);
    check("less-than", json!(5), false);
    check("less-than", json!(5.5), true);
    check("less-than-or-equal", json!(5), true);
    // A metric the profile never did counts zero.
    let never = def(single(json!({
        "type": "profile-metric", "metric_id": "NEVER", "measurement": "count",
        "measurement_filter": {"type": "numeric", "operator": "equals", "value": 0},
        "timeframe_filter": {"type": "date", "operator": "alltime"},
    })));
    assert!(never.matches(&orders(), now(), &EvalContext::default()));
}

// ---- profile-property --------------------------------------------------------------------

fn person() -> MemoryFacts {
    MemoryFacts::new()
        .prop("email", json!("Ann@Example.com"))
        .prop("first_name", json!("Ann"))
        .prop("location['city']", json!("Boston"))
        .prop("properties['Plan']", json!("pro"))
        .prop("properties['Age']", json!(42))
        .prop("properties['AgeText']", json!("42"))
        .prop("properties['VIP']", json!(true))
        .prop("properties['Tags']", json!(["a", "B", 3]))
        .prop("properties['Birthday']", json!("1990-06-20"))
        .prop("properties['Wedding']", json!("2000-06-15"))
        .prop("properties['Signup']", json!("2024-06-10T00:00:00Z"))
        .prop("properties['Zip']", json!(10017))
        .prop("properties['Nothing']", Value::Null)
        .prop("properties['Empty']", json!(""))
        .prop("properties['Customer's Tier']", json!("gold"))
}

fn property_matches(property: &str, filter: Value) -> bool {
    let definition = def(single(json!({
        "type": "profile-property", "property": property, "filter": filter,
    })));
    definition.matches(&person(), now(), &EvalContext::default())
}

#[track_caller]
fn check_property(property: &str, filter: Value, expected: bool) {
    assert_eq!(
        property_matches(property, filter.clone()),
        expected,
        "{property} {filter}"
    );
}

#[test]
fn string_filters() {
    let s = |op: &str, v: Value| json!({"type": "string", "operator": op, "value": v});
    check_property("email", s("equals", json!("ann@example.com")), true);
    check_property("email", s("not-equals", json!("bob@example.com")), true);
    check_property("email", s("contains", json!("@EXAMPLE")), true);
    check_property("email", s("not-contains", json!("@example")), false);
    check_property("email", s("starts-with", json!("ann")), true);
    check_property("email", s("not-starts-with", json!("bob")), true);
    check_property("email", s("ends-with", json!(".com")), true);
    check_property("email", s("not-ends-with", json!(".com")), false);
    check_property("location['city']", s("in", json!(["boston", "NYC"])), true);
    check_property("location['city']", s("not-in", json!(["Boston"])), false);
    // Numbers compare by their JSON spelling.
    check_property("properties['Zip']", s("equals", json!("10017")), true);
    // Apostrophes inside custom names are part of the name.
    check_property(
        "properties['Customer's Tier']",
        s("equals", json!("Gold")),
        true,
    );
    // Unset properties match no filter, negative ones included (Klaviyo, 2023 onward).
    check_property("properties['Missing']", s("not-in", json!(["x"])), false);
    check_property("properties['Missing']", s("not-equals", json!("x")), false);
    check_property("last_name", s("not-equals", json!("x")), false);
}

#[test]
fn numeric_and_boolean_filters() {
    let n = |op: &str, v: Value| json!({"type": "numeric", "operator": op, "value": v});
    check_property("properties['Age']", n("equals", json!(42)), true);
    check_property("properties['Age']", n("not-equals", json!(42)), false);
    check_property("properties['Age']", n("greater-than", json!(41.5)), true);
    check_property(
        "properties['Age']",
        n("greater-than-or-equal", json!(42)),
        true,
    );
    check_property("properties['Age']", n("less-than", json!(42)), false);
    check_property(
        "properties['Age']",
        n("less-than-or-equal", json!(42)),
        true,
    );
    check_property("properties['AgeText']", n("greater-than", json!(41)), true);
    check_property("properties['Plan']", n("equals", json!(0)), false);

    let b = |v: bool| json!({"type": "boolean", "operator": "equals", "value": v});
    check_property("properties['VIP']", b(true), true);
    check_property("properties['VIP']", b(false), false);
    check_property("properties['Missing']", b(false), false);
}

#[test]
fn existence_and_list_filters() {
    let e = |op: &str| json!({"type": "existence", "operator": op});
    check_property("properties['Plan']", e("is-set"), true);
    check_property("properties['Plan']", e("not-set"), false);
    check_property("properties['Missing']", e("not-set"), true);
    check_property("properties['Nothing']", e("not-set"), true);
    check_property("properties['Nothing']", e("is-set"), false);
    check_property("properties['Empty']", e("is-set"), true);
    check_property("location['city']", e("is-set"), true);
    check_property("location['zip']", e("not-set"), true);

    let l = |op: &str, v: Value| json!({"type": "list", "operator": op, "value": v});
    check_property("properties['Tags']", l("contains", json!("b")), true);
    check_property("properties['Tags']", l("contains", json!(3)), true);
    check_property("properties['Tags']", l("contains", json!("z")), false);
    check_property("properties['Tags']", l("contains", Value::Null), false);
    check_property("properties['Tags']", l("not-contains", json!("z")), true);
    check_property("properties['Tags']", l("not-contains", json!("a")), false);
    check_property("properties['Tags']", l("length-equals", json!(3)), true);
    check_property(
        "properties['Tags']",
        l("length-greater-than", json!(3)),
        false,
    );
    check_property(
        "properties['Tags']",
        l("length-greater-than-or-equal", json!(3)),
        true,
    );
    check_property("properties['Tags']", l("length-less-than", json!(4)), true);
    check_property(
        "properties['Tags']",
        l("length-less-than-or-equal", json!(2)),
        false,
    );
    // A scalar is not a list.
    check_property("properties['Plan']", l("contains", json!("pro")), false);
}

#[test]
fn date_filters_static_and_relative() {
    let rel = |op: &str, q: u32, unit: &str| json!({"type": "date", "operator": op, "quantity": q, "unit": unit});
    let signup = "properties['Signup']"; // 2024-06-10T00:00:00Z, 5.5 days before now
    check_property(signup, rel("in-the-last", 7, "day"), true);
    check_property(signup, rel("in-the-last", 5, "day"), false);
    check_property(signup, rel("in-the-last", 132, "hour"), false);
    check_property(signup, rel("in-the-last", 133, "hour"), true);
    check_property(signup, rel("in-the-last", 1, "week"), true);
    check_property(signup, rel("at-least", 5, "day"), true);
    check_property(signup, rel("at-least", 6, "day"), false);
    check_property(signup, rel("in-the-next", 7, "day"), false);
    let between = |a: u32, b: u32| json!({"type": "date", "operator": "between", "start": a, "end": b, "unit": "day"});
    check_property(signup, between(1, 7), true);
    check_property(signup, between(6, 10), false);
    let at = |op: &str, date: &str| json!({"type": "date", "operator": op, "date": date});
    check_property(signup, at("before", "2024-06-11T00:00:00Z"), true);
    check_property(signup, at("before", "2024-06-10T00:00:00Z"), false);
    check_property(signup, at("after", "2024-06-11T00:00:00Z"), false);
    check_property(signup, at("after", "2024-06-09T23:59:59Z"), true);
    check_property(
        signup,
        json!({"type": "date", "operator": "between-static",
               "start": "2024-06-01T00:00:00Z", "end": "2024-06-10T00:00:00Z"}),
        true,
    );
    // Dates stored as plain dates, date-times without offset, or Unix seconds.
    check_property(
        "properties['Birthday']",
        at("before", "1990-06-21T00:00:00Z"),
        true,
    );
    check_property(
        "properties['Age']",
        at("before", "1970-01-02T00:00:00Z"),
        true,
    );
    // Not a date at all.
    check_property("properties['Plan']", rel("in-the-last", 7, "day"), false);
    // Built-in date fields work the same way.
    let facts = person().prop("created", json!("2024-06-15T11:00:00Z"));
    let created = def(single(json!({
        "type": "profile-property", "property": "created", "filter": rel("in-the-last", 1, "day"),
    })));
    assert!(created.matches(&facts, now(), &EvalContext::default()));
}

#[test]
fn date_filters_anniversary_and_calendar() {
    let rel = |op: &str, q: u32, unit: &str| json!({"type": "date", "operator": op, "quantity": q, "unit": unit});
    let op = |op: &str| json!({"type": "date", "operator": op});
    let birthday = "properties['Birthday']"; // 1990-06-20: five days ahead
    check_property(birthday, rel("anniversary-next", 7, "day"), true);
    check_property(birthday, rel("anniversary-next", 4, "day"), false);
    check_property(birthday, rel("anniversary-next", 108, "hour"), true);
    check_property(birthday, rel("anniversary-last", 7, "day"), false);
    check_property(birthday, rel("anniversary-last", 362, "day"), true);
    check_property(birthday, op("anniversary"), false);
    check_property(birthday, op("anniversary-month"), true);
    check_property(
        birthday,
        json!({"type": "date", "operator": "calendar-month", "value": 6}),
        true,
    );
    check_property(
        birthday,
        json!({"type": "date", "operator": "calendar-month", "value": 7}),
        false,
    );
    check_property(birthday, rel("in-the-next", 7, "day"), false);
    // 2000-06-15 is today's anniversary.
    check_property("properties['Wedding']", op("anniversary"), true);
    check_property(
        "properties['Wedding']",
        rel("anniversary-last", 1, "day"),
        true,
    );
    // A date's own day counts, days before it do not.
    check_property("properties['Signup']", op("anniversary-month"), true);
    check_property(
        "properties['Signup']",
        rel("anniversary-last", 7, "day"),
        true,
    );

    // 29 February is celebrated on the 28th in other years.
    let leap = MemoryFacts::new().prop("properties['Born']", json!("2000-02-29"));
    let definition = def(single(json!({
        "type": "profile-property", "property": "properties['Born']", "filter": op("anniversary"),
    })));
    let ctx = EvalContext::default();
    assert!(definition.matches(&leap, ts("2023-02-28T10:00:00Z"), &ctx));
    assert!(!definition.matches(&leap, ts("2023-03-01T10:00:00Z"), &ctx));
    assert!(definition.matches(&leap, ts("2024-02-29T10:00:00Z"), &ctx));
    assert!(!definition.matches(&leap, ts("2024-02-28T10:00:00Z"), &ctx));
}

// ---- profile-group-membership ------------------------------------------------------------

fn member_of(is_member: bool, ids: Value, timeframe: Option<Value>) -> bool {
    let mut condition = json!({
        "type": "profile-group-membership", "is_member": is_member, "group_ids": ids,
    });
    if let Some(timeframe) = timeframe {
        condition["timeframe_filter"] = timeframe;
    }
    let facts = MemoryFacts::new()
        .member("L1", Some("2024-06-01T00:00:00Z"))
        .member("S2", None);
    def(single(condition)).matches(&facts, now(), &EvalContext::default())
}

#[test]
fn group_membership() {
    assert!(member_of(true, json!(["L1"]), None));
    assert!(!member_of(true, json!(["X"]), None));
    assert!(
        member_of(true, json!(["X", "L1"]), None),
        "any of the groups"
    );
    assert!(member_of(false, json!(["X"]), None));
    assert!(
        !member_of(false, json!(["X", "L1"]), None),
        "none of the groups"
    );

    let last =
        |q: u32| json!({"type": "date", "operator": "in-the-last", "quantity": q, "unit": "day"});
    assert!(member_of(true, json!(["L1"]), Some(last(30))));
    assert!(!member_of(true, json!(["L1"]), Some(last(7))));
    assert!(
        !member_of(true, json!(["S2"]), Some(last(30))),
        "join time unknown"
    );
    let before = json!({"type": "date", "operator": "before", "date": "2024-06-02T00:00:00Z"});
    assert!(member_of(true, json!(["L1"]), Some(before)));
}

// ---- profile-marketing-consent -----------------------------------------------------------

fn subscribed() -> ConsentView {
    ConsentView {
        status: ConsentStatus::Subscribed,
        can_receive_marketing: true,
        status_date: Some(ts("2024-06-01T00:00:00Z")),
        method: Some("form".into()),
        method_detail: Some("F1".into()),
        custom_source: Some("Checkout".into()),
        double_opt_in: Some(true),
        suppressions: Vec::new(),
    }
}

fn bounced() -> ConsentView {
    ConsentView {
        can_receive_marketing: false,
        suppressions: vec![Suppression {
            reason: SuppressionReason::HardBounce,
            timestamp: ts("2024-06-10T00:00:00Z"),
        }],
        ..subscribed()
    }
}

fn consent_matches(view: ConsentView, consent: Value) -> bool {
    let facts = MemoryFacts {
        email: view,
        ..MemoryFacts::new()
    };
    let definition = def(single(
        json!({"type": "profile-marketing-consent", "consent": consent}),
    ));
    definition.matches(&facts, now(), &EvalContext::default())
}

fn email(can_receive: bool, subscription: &str, filters: Value) -> Value {
    json!({
        "channel": "email", "can_receive_marketing": can_receive,
        "consent_status": {"subscription": subscription, "filters": filters},
    })
}

#[test]
fn marketing_consent() {
    assert!(consent_matches(
        subscribed(),
        email(true, "subscribed", Value::Null)
    ));
    assert!(consent_matches(
        subscribed(),
        email(true, "any", Value::Null)
    ));
    assert!(!consent_matches(
        subscribed(),
        email(true, "never_subscribed", Value::Null)
    ));
    assert!(!consent_matches(
        subscribed(),
        email(false, "any", Value::Null)
    ));
    // Implicit consent: never subscribed but not suppressed.
    let implicit = ConsentView {
        can_receive_marketing: true,
        ..ConsentView::default()
    };
    assert!(consent_matches(
        implicit.clone(),
        email(true, "never_subscribed", Value::Null)
    ));
    let unsubscribed = ConsentView {
        status: ConsentStatus::Unsubscribed,
        ..ConsentView::default()
    };
    assert!(consent_matches(
        unsubscribed,
        email(false, "unsubscribed", json!([]))
    ));

    let with =
        |filter: Value| consent_matches(subscribed(), email(true, "subscribed", json!([filter])));
    let boolean = |v: bool| json!({"type": "boolean", "operator": "equals", "value": v});
    assert!(with(
        json!({"field": "is_double_opt_in", "filter": boolean(true)})
    ));
    assert!(!with(
        json!({"field": "is_double_opt_in", "filter": boolean(false)})
    ));
    let last30 = json!({"type": "date", "operator": "in-the-last", "quantity": 30, "unit": "day"});
    assert!(with(json!({"field": "status_date", "filter": last30})));
    let before = json!({"type": "date", "operator": "before", "date": "2024-05-01T00:00:00Z"});
    assert!(!with(json!({"field": "status_date", "filter": before})));
    let equals = |v: &str| json!({"type": "string", "operator": "equals", "value": v});
    assert!(with(
        json!({"field": "custom_source", "filter": equals("checkout")})
    ));
    let within = |ids: Value| json!({"type": "string", "operator": "in", "value": ids});
    assert!(with(
        json!({"field": "method", "method": "form", "filter": within(json!(["F1", "F2"]))})
    ));
    assert!(!with(
        json!({"field": "method", "method": "form", "filter": within(json!(["F3"]))})
    ));
    assert!(!with(json!({"field": "method", "method": "api"})));
    assert!(with(
        json!({"field": "subscribe_method", "method": "form", "filter": equals("F1")})
    ));
}

#[test]
fn suppression_filters_and_other_channels() {
    let suppressed =
        |filter: Value| consent_matches(bounced(), email(false, "subscribed", json!([filter])));
    let is_set = json!({"type": "existence", "operator": "is-set"});
    let last =
        |q: u32| json!({"type": "date", "operator": "in-the-last", "quantity": q, "unit": "day"});
    assert!(suppressed(
        json!({"field": "bounce_date", "filter": is_set.clone()})
    ));
    assert!(suppressed(
        json!({"field": "bounce_date", "filter": last(7)})
    ));
    assert!(!suppressed(
        json!({"field": "bounce_date", "filter": last(3)})
    ));
    assert!(!suppressed(
        json!({"field": "manual_suppression_date", "filter": is_set})
    ));

    // SMS defaults to "never subscribed, cannot receive".
    let sms = |can_receive: bool, subscription: &str| {
        json!({"channel": "sms", "can_receive_marketing": can_receive,
               "consent_status": {"subscription": subscription}})
    };
    assert!(!consent_matches(subscribed(), sms(true, "subscribed")));
    assert!(consent_matches(
        subscribed(),
        sms(false, "never_subscribed")
    ));
}

// ---- groups, explanations ----------------------------------------------------------------

#[test]
fn groups_are_anded_and_conditions_ored_and_explained() {
    let plan = |v: &str| {
        json!({"type": "profile-property", "property": "properties['Plan']",
               "filter": {"type": "string", "operator": "equals", "value": v}})
    };
    let facts = person();
    let ctx = EvalContext::default();
    let both = def(json!({"condition_groups": [
        {"conditions": [plan("free"), plan("pro")]},
        {"conditions": [{"type": "profile-group-membership", "is_member": false, "group_ids": ["L9"]}]},
    ]}));
    assert!(both.matches(&facts, now(), &ctx));
    let one_group_fails = def(json!({"condition_groups": [
        {"conditions": [plan("free"), plan("pro")]},
        {"conditions": [plan("team")]},
    ]}));
    assert!(!one_group_fails.matches(&facts, now(), &ctx));

    let explained: Vec<String> = both
        .explain(&facts, now(), &ctx)
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(
        explained,
        [
            "/condition_groups/0/conditions/0 did not match: value \"pro\"",
            "/condition_groups/0/conditions/1 matched: value \"pro\"",
            "/condition_groups/1/conditions/0 matched: member of none",
        ]
    );

    let metric = def(single(metric_condition(
        "count",
        json!({"type": "date", "operator": "in-the-last", "quantity": 30, "unit": "day"}),
        Value::Null,
    )));
    let explained = metric.explain(&orders(), now(), &ctx);
    assert_eq!(
        explained[0].to_string(),
        "/condition_groups/0/conditions/0 matched: count = 2 over \
         (2024-05-16T12:00:00Z, 2024-06-15T12:00:00Z]"
    );
}
