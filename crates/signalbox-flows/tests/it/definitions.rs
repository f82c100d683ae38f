//! Flow definitions: parsing, pointers to the action at fault, ids, and the way back.

use serde_json::{json, Value};
use signalbox_flows::definition::{ActionKind, Reentry, Trigger};
use signalbox_flows::{FlowDefinition, FlowsError};

use crate::helpers::*;

fn problems(definition: Value) -> Vec<(String, String)> {
    match FlowDefinition::parse(&definition) {
        Ok(_) => panic!("accepted {definition}"),
        Err(problems) => problems
            .into_iter()
            .map(|p| (p.pointer, p.detail))
            .collect(),
    }
}

fn base_actions() -> Value {
    json!([
        {"temporary_id": "a1", "type": "time-delay", "data": {"unit": "hours", "value": 4}, "links": {"next": "a2"}},
        {"temporary_id": "a2", "type": "send-email", "data": {"status": "draft", "message": {
            "from_email": "shop@x.com", "subject_line": "Hi", "template_id": "T1"}}, "links": {"next": null}}
    ])
}

#[test]
fn the_documented_example_parses() {
    let definition = json!({
        "triggers": [{"type": "metric", "id": "STARTED", "trigger_filter": {"condition_groups": [{"conditions": [
            {"type": "metric-property", "metric_id": "STARTED", "field": "$value",
             "filter": {"type": "numeric", "operator": "greater-than", "value": 50}}]}]}}],
        "profile_filter": {"condition_groups": [{"conditions": [{"type": "profile-metric", "metric_id": "PLACED",
            "measurement": "count", "measurement_filter": {"type": "numeric", "operator": "equals", "value": 0},
            "timeframe_filter": {"type": "date", "operator": "flow-start"}}]}]},
        "entry_action_id": "a1",
        "actions": base_actions(),
        "reentry_criteria": {"duration": 1, "unit": "day"}
    });
    let parsed = FlowDefinition::parse(&definition).unwrap();
    let Trigger::Metric { metric_id, filter } = &parsed.trigger else {
        panic!("a metric trigger")
    };
    assert_eq!(metric_id, "STARTED");
    let filter = filter.as_ref().unwrap();
    assert!(filter.matches(json!({"$value": 60}).as_object().unwrap()));
    assert!(!filter.matches(json!({"$value": 40}).as_object().unwrap()));
    assert_eq!(
        parsed.reentry,
        Reentry::After(jiff::SignedDuration::from_hours(24))
    );
    assert!(matches!(parsed.actions[1].kind, ActionKind::SendEmail(_)));
}

#[test]
fn problems_point_at_the_action_at_fault() {
    let mut actions = base_actions();
    actions[1]["data"]["message"]["subject_line"] = json!("");
    actions[0]["data"]["unit"] = json!("fortnights");
    let got = problems(
        json!({"triggers": [{"type": "list", "id": "L1"}], "entry_action_id": "a1", "actions": actions}),
    );
    assert!(
        got.contains(&(
            "/data/attributes/definition/actions/0/data/unit".into(),
            "expected minutes, hours or days".into()
        )),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|(p, _)| p == "/data/attributes/definition/actions/1/data/message/subject_line"),
        "{got:?}"
    );
}

#[test]
fn links_must_resolve_and_not_loop() {
    let mut actions = base_actions();
    actions[1]["links"]["next"] = json!("nowhere");
    let got = problems(
        json!({"triggers": [{"type": "list", "id": "L1"}], "entry_action_id": "a1", "actions": actions}),
    );
    assert_eq!(
        got,
        [(
            "/data/attributes/definition/actions/1/links/next".to_owned(),
            "no action has the id `nowhere`".to_owned()
        )]
    );
    let mut actions = base_actions();
    actions[1]["links"]["next"] = json!("a1");
    let got = problems(
        json!({"triggers": [{"type": "list", "id": "L1"}], "entry_action_id": "a1", "actions": actions}),
    );
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].1.contains("loop"), "{got:?}");
    let got = problems(
        json!({"triggers": [{"type": "list", "id": "L1"}], "entry_action_id": "zz", "actions": base_actions()}),
    );
    assert_eq!(got[0].0, "/data/attributes/definition/entry_action_id");
}

#[test]
fn filters_report_seglang_pointers_inside_the_definition() {
    let got = problems(json!({
        "triggers": [{"type": "metric", "id": "M", "trigger_filter": {"condition_groups": [{"conditions": [
            {"type": "metric-property", "field": "Total", "filter": {"type": "numeric", "operator": "bigger", "value": 1}}]}]}}],
        "profile_filter": {"condition_groups": [{"conditions": [{"type": "profile-metric", "metric_id": "P",
            "measurement": "count", "measurement_filter": {"type": "numeric", "operator": "equals", "value": "zero"},
            "timeframe_filter": {"type": "date", "operator": "flow-start"}}]}]},
        "entry_action_id": "a1", "actions": base_actions()}));
    let pointers: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert!(pointers.contains(&"/data/attributes/definition/triggers/0/trigger_filter/condition_groups/0/conditions/0/filter/operator"), "{got:?}");
    assert!(pointers.iter().any(|p| p.starts_with("/data/attributes/definition/profile_filter/condition_groups/0/conditions/0/measurement_filter")), "{got:?}");
}

#[test]
fn unknown_types_and_exactly_one_trigger() {
    let got = problems(json!({"triggers": [], "entry_action_id": "a1", "actions": base_actions()}));
    assert_eq!(got[0].0, "/data/attributes/definition/triggers");
    let mut actions = base_actions();
    actions[0]["type"] = json!("teleport");
    let got = problems(
        json!({"triggers": [{"type": "segment", "id": "S"}], "entry_action_id": "a1", "actions": actions}),
    );
    assert_eq!(got[0].0, "/data/attributes/definition/actions/0/type");
}

#[test]
fn optional_fields_an_sdk_sends_as_null_are_accepted_but_unknown_values_are_not() {
    let mut actions = base_actions();
    actions[1]["data"]["message"]["cc_email"] = Value::Null;
    actions[1]["data"]["message"]["bcc_email"] = Value::Null;
    actions[1]["data"]["message"]["preview_text"] = Value::Null;
    actions[0]["data"]["secondary_value"] = Value::Null;
    let definition = json!({"triggers": [{"type": "list", "id": "L1"}], "entry_action_id": "a1",
        "actions": actions, "profile_filter": null});
    FlowDefinition::parse(&definition).expect("nulls are unset fields");
    let mut actions = base_actions();
    actions[1]["data"]["message"]["cc_email"] = json!("boss@x.com");
    let got = problems(
        json!({"triggers": [{"type": "list", "id": "L1"}], "entry_action_id": "a1", "actions": actions}),
    );
    assert_eq!(
        got[0].0,
        "/data/attributes/definition/actions/1/data/message/cc_email"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_flows_get_real_ids_and_read_back_in_klaviyos_shape() {
    let app = TestApp::start_with(Options {
        mail: false,
        ..Options::default()
    })
    .await;
    let definition = json!({"triggers": [{"type": "list", "id": "L1"}], "entry_action_id": "a1", "actions": base_actions()});
    let flow = app
        .flows
        .create_flow("Welcome", &definition, None)
        .await
        .unwrap();
    assert_eq!(flow.status, signalbox_flows::FlowStatus::Draft);
    assert_eq!(flow.trigger_type, "Added to List");
    let json = flow.definition.to_json();
    let first = json["actions"][0]["id"].as_str().unwrap();
    let second = json["actions"][1]["id"].as_str().unwrap();
    assert_ne!(first, "a1");
    assert!(json["actions"][0].get("temporary_id").is_none());
    assert_eq!(json["entry_action_id"], json!(first));
    assert_eq!(json["actions"][0]["links"]["next"], json!(second));
    assert_eq!(
        json["reentry_criteria"],
        json!({"duration": 1, "unit": "alltime"})
    );
    // The stored definition parses again to the same JSON.
    let again = FlowDefinition::parse(&json).unwrap();
    assert_eq!(again.to_json(), json);
    let listed = app.flows.list_flows().await.unwrap();
    assert_eq!(listed.len(), 1);

    // PATCH: an unknown real id is refused with its pointer; status live sets the messages.
    let mut changed = json.clone();
    changed["actions"][1]["id"] = json!("999");
    changed["actions"][0]["links"]["next"] = json!("999");
    let err = app
        .flows
        .update_flow(
            &flow.id,
            signalbox_flows::FlowUpdate {
                definition: Some(changed),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    let FlowsError::InvalidDefinition(problems) = err else {
        panic!("{err:?}")
    };
    assert_eq!(
        problems[0].pointer,
        "/data/attributes/definition/actions/1/id"
    );
    let live = app
        .flows
        .update_flow(
            &flow.id,
            signalbox_flows::FlowUpdate {
                status: Some(signalbox_flows::FlowStatus::Live),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        live.definition.to_json()["actions"][1]["data"]["status"],
        json!("live")
    );
    assert_eq!(live.version, 2);
    app.flows.delete_flow(&flow.id).await.unwrap();
    assert!(matches!(
        app.flows.get_flow(&flow.id).await,
        Err(FlowsError::NotFound { .. })
    ));
}

#[test]
fn every_action_kind_round_trips_through_klaviyos_shape() {
    let definition = json!({
        "triggers": [{"type": "date", "date_field_type": "profile-property", "date_profile_property": "Birthday",
            "timedelta_unit_before_date": "weeks", "timedelta_value_before_date": 1,
            "recurrence_frequency": "annually", "timezone": "profile"}],
        "profile_filter": {"condition_groups": [{"conditions": [{"type": "profile-not-in-flow"}]}]},
        "entry_action_id": "d",
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
                {"operation": "update", "key": "seen", "value": 1}, {"operation": "unset", "key": "old"}]}, "links": {"next": "6"}},
            {"id": "6", "type": "trigger-split", "data": {"trigger_filter": {"condition_groups": [{"conditions": [
                {"type": "metric-property", "field": "n", "filter": {"type": "numeric", "operator": "equals", "value": 1}}]}]}},
             "links": {"next_if_true": "7", "next_if_false": null}},
            {"id": "7", "type": "send-email", "data": {"status": "manual", "message": {"subject_line": "Hi",
                "html": "<p>x</p>", "text": "x", "smart_sending_enabled": true, "smart_sending_window_hours": 24}},
             "links": {"next": null}}
        ],
        "reentry_criteria": {"duration": 2, "unit": "week"}
    });
    let mut definition = definition;
    definition["entry_action_id"] = json!("1");
    let parsed = FlowDefinition::parse(&definition).unwrap();
    let out = parsed.to_json();
    assert!(
        out["actions"][2]["data"].get("secret").is_none(),
        "secrets are not read back"
    );
    assert_eq!(
        out["reentry_criteria"],
        json!({"duration": 2, "unit": "week"})
    );
    assert_eq!(
        out["actions"][0]["data"]["delay_until_weekdays"],
        json!(["monday", "friday"])
    );
    let again = FlowDefinition::parse(&out).unwrap();
    assert_eq!(again.to_json(), out);
}

/// `count` actions in one chain; the last links back to `back` when given.
fn chain(count: usize, back: Option<usize>) -> Value {
    let actions: Vec<Value> = (0..count)
        .map(|i| {
            let next = if i + 1 < count { Some(i + 1) } else { back };
            json!({"temporary_id": format!("a{i}"), "type": "time-delay",
                   "data": {"unit": "minutes", "value": 1},
                   "links": {"next": next.map(|j| format!("a{j}"))}})
        })
        .collect();
    json!({"triggers": [{"type": "list", "id": "L1"}], "entry_action_id": "a0", "actions": actions})
}

#[test]
fn a_long_chain_of_actions_does_not_exhaust_the_stack() {
    // Found by fuzzing: the loop check recursed once per action, and a chain of a few
    // thousand actions (well inside a request body) overflowed the thread's stack.
    let parsed = FlowDefinition::parse(&chain(30_000, None)).expect("a chain is valid");
    assert_eq!(parsed.actions.len(), 30_000);
    let got = problems(chain(30_000, Some(10)));
    assert_eq!(
        got,
        [(
            "/data/attributes/definition/actions/29999/links".to_owned(),
            "the links form a loop".to_owned()
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_with_a_host_or_hop_by_hop_header_is_refused_when_saved() {
    let mut app = TestApp::start().await;
    let metric = app.metric("Order Shipped").await;
    for header in [
        "Host",
        "transfer-encoding",
        "Proxy-Authorization",
        "Content-Length",
    ] {
        let mut headers = serde_json::Map::new();
        headers.insert("X-Shop".into(), json!("acme"));
        headers.insert(header.into(), json!("secret-value"));
        let definition = json!({
            "triggers": [{"type": "metric", "id": metric}],
            "entry_action_id": "w",
            "actions": [{"temporary_id": "w", "type": "send-webhook", "data": {"status": "live",
                "url": "https://hooks.example.com/x", "headers": headers}, "links": {"next": null}}]
        });
        let err = app
            .flows
            .create_flow(&format!("hook with {header}"), &definition, None)
            .await
            .unwrap_err();
        let FlowsError::InvalidDefinition(problems) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0].pointer,
            format!("/data/attributes/definition/actions/0/data/headers/{header}")
        );
        assert!(
            problems[0]
                .detail
                .starts_with(&format!("header \"{header}\" is not allowed")),
            "{}",
            problems[0].detail
        );
        assert!(!err.to_string().contains("secret-value"), "{err}");
    }
}
