//! Invalid definitions: every error, its code and the pointer naming the value at fault.

use serde_json::{json, Value};
use signalbox_seglang::{parse, parse_with, ParseOptions};

use crate::single;

/// Errors rendered one per line as `code pointer: detail`.
fn errors_with(json: &Value, options: &ParseOptions) -> String {
    match parse_with(json, options) {
        Ok(definition) => panic!("expected errors, parsed {definition:?}"),
        Err(errors) => errors
            .iter()
            .map(|e| format!("{} {}: {}", e.code.as_str(), e.pointer, e.detail))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[track_caller]
fn check(json: Value, expected: &str) {
    let got = errors_with(&json, &ParseOptions::default());
    assert_eq!(got, expected.trim(), "\n--- got ---\n{got}\n");
}

fn metric(measurement_filter: Value, timeframe: Value) -> Value {
    json!({
        "type": "profile-metric", "metric_id": "PO", "measurement": "count",
        "measurement_filter": measurement_filter, "timeframe_filter": timeframe,
    })
}

fn gt0() -> Value {
    json!({"type": "numeric", "operator": "greater-than", "value": 0})
}

fn alltime() -> Value {
    json!({"type": "date", "operator": "alltime"})
}

#[test]
fn not_a_definition() {
    check(
        json!([]),
        "invalid /data/attributes/definition: expected an object, found an array",
    );
    check(
        json!({}),
        "invalid /data/attributes/definition/condition_groups: `condition_groups` is required",
    );
    check(
        json!({"condition_groups": []}),
        "invalid /data/attributes/definition/condition_groups: at least one condition group is required",
    );
    check(
        json!({"condition_groups": [{"conditions": []}], "name": "x"}),
        r#"
invalid /data/attributes/definition/name: unknown field `name`
invalid /data/attributes/definition/condition_groups/0/conditions: a condition group needs at least one condition
"#,
    );
}

#[test]
fn unknown_and_unsupported_condition_types() {
    check(
        json!({"condition_groups": [{"conditions": [
            {"type": "profile-metric", "metric_id": "PO", "measurement": "count",
             "measurement_filter": gt0(), "timeframe_filter": alltime()},
            {"type": "profile-magic"},
            {"type": "profile-region", "region": "european_union", "in_region": true},
            {"metric_id": "PO"},
        ]}]}),
        r#"
invalid /data/attributes/definition/condition_groups/0/conditions/1/type: unknown condition type `profile-magic`; expected one of profile-metric, profile-property, profile-group-membership, profile-marketing-consent
unsupported /data/attributes/definition/condition_groups/0/conditions/2/type: condition type `profile-region` is not supported
invalid /data/attributes/definition/condition_groups/0/conditions/3/type: `type` is required
"#,
    );
}

#[test]
fn measurement_filter_operator_is_named_by_its_pointer() {
    let bad = json!({"type": "numeric", "operator": "more-than", "value": 0});
    check(
        json!({"condition_groups": [{"conditions": [metric(gt0(), alltime()), metric(bad, alltime())]}]}),
        "invalid /data/attributes/definition/condition_groups/0/conditions/1/measurement_filter/operator: \
         unknown numeric operator `more-than`; expected one of equals, not-equals, greater-than, \
         greater-than-or-equal, less-than, less-than-or-equal",
    );
}

#[test]
fn every_problem_of_one_condition_is_reported() {
    check(
        single(json!({
            "type": "profile-metric", "measurement": "avg",
            "measurement_filter": {"type": "numeric", "operator": "equals", "value": "5"},
            "timeframe_filter": {"type": "date", "operator": "in-the-last", "quantity": "30", "unit": "month"},
            "timeframe": {"type": "date", "operator": "alltime"},
        })),
        r#"
invalid /data/attributes/definition/condition_groups/0/conditions/0/timeframe: unknown field `timeframe`
invalid /data/attributes/definition/condition_groups/0/conditions/0/metric_id: `metric_id` is required
invalid /data/attributes/definition/condition_groups/0/conditions/0/measurement: unknown measurement `avg`; expected one of count, sum
invalid /data/attributes/definition/condition_groups/0/conditions/0/measurement_filter/value: expected a number, found a string
invalid /data/attributes/definition/condition_groups/0/conditions/0/timeframe_filter/quantity: expected an integer, found a string
invalid /data/attributes/definition/condition_groups/0/conditions/0/timeframe_filter/unit: unknown unit `month`; expected one of hour, day, week
"#,
    );
}

#[test]
fn timeframe_values_out_of_range() {
    let tf = |tf: Value| single(metric(gt0(), tf));
    check(
        tf(json!({"type": "date", "operator": "in-the-last", "quantity": 0, "unit": "day"})),
        "invalid /data/attributes/definition/condition_groups/0/conditions/0/timeframe_filter/quantity: \
         expected an integer from 1 to 100000, found 0",
    );
    check(
        tf(json!({"type": "date", "operator": "between-static",
                  "start": "2024-02-01T00:00:00Z", "end": "2024-01-01T00:00:00Z"})),
        "invalid /data/attributes/definition/condition_groups/0/conditions/0/timeframe_filter/end: \
         `end` must not be before `start`",
    );
    check(
        tf(json!({"type": "date", "operator": "before", "date": "last tuesday"})),
        "invalid /data/attributes/definition/condition_groups/0/conditions/0/timeframe_filter/date: \
         `last tuesday` is not an ISO 8601 date-time such as 2024-01-31T00:00:00+00:00",
    );
    check(
        tf(json!({"type": "date", "operator": "anniversary-last", "quantity": 3, "unit": "day"})),
        "unsupported /data/attributes/definition/condition_groups/0/conditions/0/timeframe_filter/operator: \
         anniversary timeframes on metric conditions are not supported",
    );
    check(
        tf(json!({"type": "date", "operator": "calendar-month", "value": 3})),
        "invalid /data/attributes/definition/condition_groups/0/conditions/0/timeframe_filter/operator: \
         date operator `calendar-month` is not allowed in a metric timeframe",
    );
}

#[test]
fn flow_start_only_in_flow_filters() {
    let json = single(metric(
        gt0(),
        json!({"type": "date", "operator": "flow-start"}),
    ));
    check(
        json.clone(),
        "invalid /data/attributes/definition/condition_groups/0/conditions/0/timeframe_filter/operator: \
         date operator `flow-start` is not allowed outside flow filters",
    );
    assert!(parse_with(&json, &ParseOptions::flow_profile_filter()).is_ok());
}

#[test]
fn property_paths_and_filters() {
    let property = |path: &str, filter: Value| json!({"type": "profile-property", "property": path, "filter": filter});
    check(
        json!({"condition_groups": [{"conditions": [
            property("favorite_color", json!({"type": "existence", "operator": "is-set"})),
            property("properties['']", json!({"type": "existence", "operator": "is-set"})),
            property("location['planet']", json!({"type": "existence", "operator": "is-set"})),
            property("email", json!({"type": "string", "operator": "regex", "value": ".*"})),
            property("properties['Tags']", json!({"type": "list", "operator": "contains-all", "value": ["a"]})),
            property("properties['Age']", json!({"type": "numeric", "operator": "between", "start": 1, "end": 2})),
            property("properties['VIP']", json!({"type": "boolean", "operator": "equals", "value": "true"})),
            property("properties['X']", json!({"type": "fuzzy", "operator": "equals"})),
            property("properties['X']", json!({"type": "calendar-month", "operator": "equals"})),
        ]}]}),
        r#"
invalid /data/attributes/definition/condition_groups/0/conditions/0/property: unknown property `favorite_color`; use a built-in field such as `email` or `location['city']`, or `properties['name']` for a custom property
invalid /data/attributes/definition/condition_groups/0/conditions/1/property: unknown property `properties['']`; use a built-in field such as `email` or `location['city']`, or `properties['name']` for a custom property
invalid /data/attributes/definition/condition_groups/0/conditions/2/property: unknown property `location['planet']`; use a built-in field such as `email` or `location['city']`, or `properties['name']` for a custom property
unsupported /data/attributes/definition/condition_groups/0/conditions/3/filter/operator: regular expression filters are not supported
invalid /data/attributes/definition/condition_groups/0/conditions/4/filter/operator: list operator `contains-all` is not allowed on profile properties
invalid /data/attributes/definition/condition_groups/0/conditions/5/filter/end: unknown field `end`
invalid /data/attributes/definition/condition_groups/0/conditions/5/filter/start: unknown field `start`
invalid /data/attributes/definition/condition_groups/0/conditions/5/filter/operator: unknown numeric operator `between`; expected one of equals, not-equals, greater-than, greater-than-or-equal, less-than, less-than-or-equal
invalid /data/attributes/definition/condition_groups/0/conditions/5/filter/value: `value` is required
invalid /data/attributes/definition/condition_groups/0/conditions/6/filter/value: expected a boolean, found a string
invalid /data/attributes/definition/condition_groups/0/conditions/7/filter/type: unknown filter type `fuzzy`; expected one of string, numeric, boolean, date, existence, list
invalid /data/attributes/definition/condition_groups/0/conditions/8/filter/type: unknown filter type `calendar-month`; expected one of string, numeric, boolean, date, existence, list
"#,
    );
}

#[test]
fn metric_filters_on_events() {
    let with_filters = |filters: Value| {
        single(json!({
            "type": "profile-metric", "metric_id": "PO", "measurement": "count",
            "measurement_filter": gt0(), "timeframe_filter": alltime(), "metric_filters": filters,
        }))
    };
    check(
        with_filters(json!([
            {"property": "Brand", "filter": {"type": "string", "operator": "equals", "value": "Acme"}},
            {"property": "When", "filter": {"type": "date", "operator": "alltime"}},
            {"property": "Items", "filter": {"type": "list", "operator": "contains", "value": "Tee"}},
            {"property": "", "filter": {"type": "existence", "operator": "is-set"}},
            {"filter": null},
        ])),
        r#"
invalid /data/attributes/definition/condition_groups/0/conditions/0/metric_filters/1/filter/type: date filters are not allowed on event properties
invalid /data/attributes/definition/condition_groups/0/conditions/0/metric_filters/2/filter/operator: list operator `contains` is not allowed on event properties; use contains-any
invalid /data/attributes/definition/condition_groups/0/conditions/0/metric_filters/3/property: must not be empty
invalid /data/attributes/definition/condition_groups/0/conditions/0/metric_filters/4/property: `property` is required
invalid /data/attributes/definition/condition_groups/0/conditions/0/metric_filters/4/filter: `filter` must not be null
"#,
    );
    check(
        with_filters(json!({"Brand": "Acme"})),
        "invalid /data/attributes/definition/condition_groups/0/conditions/0/metric_filters: \
         expected an array, found an object",
    );
}

#[test]
fn group_membership_problems() {
    check(
        json!({"condition_groups": [{"conditions": [
            {"type": "profile-group-membership", "is_member": true, "group_ids": []},
            {"type": "profile-group-membership", "is_member": false, "group_ids": ["L1"],
             "timeframe_filter": {"type": "date", "operator": "in-the-last", "quantity": 1, "unit": "day"}},
            {"type": "profile-group-membership", "is_member": "yes", "group_ids": ["L1", 7, ""]},
        ]}]}),
        r#"
invalid /data/attributes/definition/condition_groups/0/conditions/0/group_ids: at least one list or segment id is required
invalid /data/attributes/definition/condition_groups/0/conditions/1/timeframe_filter: timeframe_filter is only allowed when is_member is true
invalid /data/attributes/definition/condition_groups/0/conditions/2/is_member: expected a boolean, found a string
invalid /data/attributes/definition/condition_groups/0/conditions/2/group_ids/1: expected a string, found a number
invalid /data/attributes/definition/condition_groups/0/conditions/2/group_ids/2: must not be empty
"#,
    );
}

#[test]
fn consent_problems() {
    let consent = |consent: Value| json!({"type": "profile-marketing-consent", "consent": consent});
    check(
        json!({"condition_groups": [{"conditions": [
            consent(json!({"channel": "email", "can_receive_marketing": true,
                           "consent_status": {"subscription": "unsubscribed"}})),
            consent(json!({"channel": "fax", "can_receive_marketing": false,
                           "consent_status": {"subscription": "any"}})),
            consent(json!({"channel": "email", "can_receive_marketing": true,
                           "consent_status": {"subscription": "subscribed", "filters": [
                               {"field": "method", "method": "carrier_pigeon"},
                               {"field": "bounce_date", "filter": {"type": "existence", "operator": "is-set"}},
                               {"field": "mood"},
                           ]}})),
        ]}]}),
        r#"
invalid /data/attributes/definition/condition_groups/0/conditions/0/consent/consent_status/subscription: an unsubscribed profile cannot receive marketing; set can_receive_marketing to false
invalid /data/attributes/definition/condition_groups/0/conditions/1/consent/channel: unknown channel `fax`; expected one of email, sms, push
invalid /data/attributes/definition/condition_groups/0/conditions/2/consent/consent_status/filters/0/method: unknown method `carrier_pigeon`
invalid /data/attributes/definition/condition_groups/0/conditions/2/consent/consent_status/filters/1/field: `bounce_date` filters need can_receive_marketing false
invalid /data/attributes/definition/condition_groups/0/conditions/2/consent/consent_status/filters/2/field: unknown consent filter field `mood`; expected one of is_double_opt_in, status_date, custom_source, method, subscribe_method, bounce_date, manual_suppression_date, invalid_email_date
"#,
    );
}

#[test]
fn at_most_one_hundred_conditions() {
    let condition =
        json!({"type": "profile-group-membership", "is_member": true, "group_ids": ["L1"]});
    let groups: Vec<Value> = (0..3)
        .map(|_| json!({"conditions": vec![condition.clone(); 34]}))
        .collect();
    check(
        json!({"condition_groups": groups}),
        "invalid /data/attributes/definition/condition_groups: \
         a definition may hold at most 100 conditions, found 102",
    );
    let groups: Vec<Value> = (0..2)
        .map(|_| json!({"conditions": vec![condition.clone(); 50]}))
        .collect();
    assert!(parse(&json!({"condition_groups": groups})).is_ok());
}

#[test]
fn pointer_prefix_is_configurable_and_escaped() {
    let json = json!({"condition_groups": [{"conditions": [{"type": 3}]}], "a/b~c": 1});
    let options = ParseOptions {
        pointer_prefix: String::new(),
        allow_flow_start: false,
    };
    assert_eq!(
        errors_with(&json, &options),
        "invalid /a~1b~0c: unknown field `a/b~c`\n\
         invalid /condition_groups/0/conditions/0/type: expected a string, found a number"
    );
    assert_eq!(
        errors_with(&json!(null), &ParseOptions::flow_profile_filter()),
        "invalid /data/attributes/definition/profile_filter: expected an object, found null"
    );
}

#[test]
fn errors_render_as_klaviyo_json_api_objects() {
    let errors = parse(&single(json!({"type": "profile-region"}))).unwrap_err();
    assert_eq!(
        errors[0].to_json_api(),
        json!({
            "status": 400,
            "code": "unsupported",
            "title": "Unsupported input.",
            "detail": "condition type `profile-region` is not supported",
            "source": {"pointer": "/data/attributes/definition/condition_groups/0/conditions/0/type"},
        })
    );
    let errors = parse(&json!({})).unwrap_err();
    assert_eq!(errors[0].to_json_api()["code"], "invalid");
    assert_eq!(errors[0].to_json_api()["title"], "Invalid input.");
}

#[test]
fn details_quote_the_input_but_stay_short() {
    let long = "x".repeat(5_000);
    let errors = parse(&single(json!({"type": long}))).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].detail.chars().count(), 401);
    assert!(errors[0].detail.starts_with("unknown condition type `xxx"));
    assert!(errors[0].detail.ends_with('…'));

    check(
        single(
            json!({"type": "profile-property", "property": "properties['Tags']",
            "filter": {"type": "list", "operator": "contains", "value": {"deep": [1, 2, 3]}}}),
        ),
        "invalid /data/attributes/definition/condition_groups/0/conditions/0/filter/value: \
         expected a string, an integer or null, found an object",
    );
}
