//! What a definition reads.

use serde_json::json;
use signalbox_seglang::Dependencies;

use crate::{def, flow_def, single};

#[test]
fn dependencies_name_metrics_properties_groups_and_consent() {
    let definition = def(json!({"condition_groups": [
        {"conditions": [
            {"type": "profile-metric", "metric_id": "PO", "measurement": "sum",
             "measurement_filter": {"type": "numeric", "operator": "greater-than", "value": 100},
             "timeframe_filter": {"type": "date", "operator": "alltime"},
             "metric_filters": [{"property": "Brand",
                                 "filter": {"type": "string", "operator": "equals", "value": "Acme"}}]},
            {"type": "profile-property", "property": "location['city']",
             "filter": {"type": "string", "operator": "equals", "value": "Boston"}},
        ]},
        {"conditions": [
            {"type": "profile-property", "property": "properties['Plan']",
             "filter": {"type": "existence", "operator": "is-set"}},
            {"type": "profile-group-membership", "is_member": false, "group_ids": ["L1", "S2"]},
            {"type": "profile-marketing-consent", "consent": {"channel": "email",
             "can_receive_marketing": true, "consent_status": {"subscription": "any"}}},
        ]},
    ]}));
    assert_eq!(
        definition.dependencies(),
        Dependencies {
            metrics: ["PO".to_owned()].into(),
            properties: [
                "location['city']".to_owned(),
                "properties['Plan']".to_owned()
            ]
            .into(),
            groups: ["L1".to_owned(), "S2".to_owned()].into(),
            consent: true,
            time_dependent: false,
        }
    );
}

#[test]
fn relative_dates_make_a_definition_time_dependent() {
    let relative = [
        json!({"type": "profile-metric", "metric_id": "PO", "measurement": "count",
               "measurement_filter": {"type": "numeric", "operator": "equals", "value": 0},
               "timeframe_filter": {"type": "date", "operator": "in-the-last", "quantity": 1, "unit": "week"}}),
        json!({"type": "profile-property", "property": "properties['Birthday']",
               "filter": {"type": "date", "operator": "anniversary"}}),
        json!({"type": "profile-group-membership", "is_member": true, "group_ids": ["L1"],
               "timeframe_filter": {"type": "date", "operator": "at-least", "quantity": 0, "unit": "day"}}),
        json!({"type": "profile-marketing-consent", "consent": {"channel": "email",
               "can_receive_marketing": false, "consent_status": {"subscription": "any", "filters": [
                   {"field": "bounce_date", "filter": {"type": "date", "operator": "in-the-next",
                                                       "quantity": 1, "unit": "hour"}}]}}}),
    ];
    for condition in relative {
        assert!(
            def(single(condition.clone())).dependencies().time_dependent,
            "{condition}"
        );
    }
    let flow = flow_def(single(json!({"type": "profile-metric", "metric_id": "PO",
        "measurement": "count", "measurement_filter": {"type": "numeric", "operator": "equals", "value": 0},
        "timeframe_filter": {"type": "date", "operator": "flow-start"}})));
    assert!(flow.dependencies().time_dependent);
    let calendar = def(single(
        json!({"type": "profile-property", "property": "created",
        "filter": {"type": "date", "operator": "calendar-month", "value": 3}}),
    ));
    assert!(!calendar.dependencies().time_dependent);
}
