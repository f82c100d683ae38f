//! The ready templates: each creates a draft flow with the values picked; the abandoned cart
//! made from one, set live, emails a cart after four hours and leaves alone who ordered; the
//! listing a page at a time.

use std::collections::HashMap;

use jiff::SignedDuration;
use serde_json::json;
use signalbox_flows::templates::{self, ParamKind};
use signalbox_flows::{FlowStatus, FlowUpdate, FlowsError};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_template_creates_a_draft_flow_with_the_picked_values() {
    let app = TestApp::start().await;
    for template in templates::catalogue() {
        let values: HashMap<String, String> = template
            .params
            .iter()
            .map(|p| {
                let id = match p.kind {
                    ParamKind::List => "LIST1",
                    ParamKind::Segment => "SEG1",
                    ParamKind::Metric => "METRIC1",
                };
                (p.key.to_owned(), id.to_owned())
            })
            .collect();
        let flow = app
            .flows
            .create_from_template(template.key, "", &values)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", template.key));
        assert_eq!(flow.name, template.name, "the template's name by default");
        assert_eq!(flow.status, FlowStatus::Draft);
        let json = flow.definition.to_json();
        let trigger = &json["triggers"][0]["id"];
        assert!(
            ["LIST1", "SEG1", "METRIC1"].contains(&trigger.as_str().unwrap_or("")),
            "{}: {json}",
            template.key
        );
        for action in json["actions"].as_array().expect("actions") {
            if action["type"] == "send-email" {
                assert_eq!(action["data"]["status"], "draft", "{json}");
            }
        }
    }
    let missing = app
        .flows
        .create_from_template("welcome-series", "Welcome", &HashMap::new())
        .await;
    assert_eq!(
        missing.unwrap_err(),
        FlowsError::Invalid {
            field: "list".into(),
            reason: "pick the list".into()
        }
    );
    assert!(matches!(
        app.flows
            .create_from_template("no-such", "x", &HashMap::new())
            .await,
        Err(FlowsError::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_abandoned_cart_template_set_live_emails_the_cart_unless_an_order_came() {
    let mut app = TestApp::start().await;
    let checkout = app.metric("Checkout Started").await;
    let placed = app.metric("Placed Order").await;
    let values = HashMap::from([
        ("trigger_metric".to_owned(), checkout),
        ("order_metric".to_owned(), placed),
    ]);
    let flow = app
        .flows
        .create_from_template("abandoned-cart", "Cart", &values)
        .await
        .expect("created");
    app.flows
        .update_flow(
            &flow.id,
            FlowUpdate {
                status: Some(FlowStatus::Live),
                ..FlowUpdate::default()
            },
        )
        .await
        .expect("live");
    app.profile("ada@example.com", "Ada").await;
    app.profile("bob@example.com", "Bob").await;
    app.settle().await;
    app.clock.advance(SignedDuration::from_mins(1));
    for who in ["ada@example.com", "bob@example.com"] {
        app.track(
            who,
            "Checkout Started",
            json!({"Items": [{"ProductName": "Teapot"}]}),
        )
        .await;
    }
    app.settle().await;
    app.advance(SignedDuration::from_hours(1)).await;
    app.track("bob@example.com", "Placed Order", json!({}))
        .await;
    app.settle().await;
    app.advance(SignedDuration::from_hours(3)).await;
    let messages = app.sink().wait_for(1);
    assert_eq!(messages.len(), 1);
    let mail = parse_mail(&messages[0]);
    assert_eq!(mail.to, ["ada@example.com"]);
    assert_eq!(mail.subject, "You left something in your cart");
    assert!(mail.html.contains("<li>Teapot</li>"), "{}", mail.html);
    let stats = app.flows.stats(&flow.id).await.expect("stats");
    assert_eq!(stats.flow.get("entered"), 2, "{stats:?}");
    assert_eq!(stats.flow.get("exited_filter"), 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_are_listed_a_page_at_a_time_newest_change_first() {
    let app = TestApp::start().await;
    let list = HashMap::from([("list".to_owned(), "L1".to_owned())]);
    let mut ids = Vec::new();
    for i in 0..5 {
        app.clock.advance(SignedDuration::from_secs(1));
        let flow = app
            .flows
            .create_from_template("welcome-series", &format!("Flow {i}"), &list)
            .await
            .expect("created");
        ids.push(flow.id);
    }
    // A change moves a flow to the front.
    app.clock.advance(SignedDuration::from_secs(1));
    app.flows
        .update_flow(
            &ids[0],
            FlowUpdate {
                name: Some("Renamed".into()),
                ..FlowUpdate::default()
            },
        )
        .await
        .expect("renamed");
    let first = app.flows.list_flows_page(None, 2).await.expect("a page");
    let names: Vec<&str> = first.flows.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["Renamed", "Flow 4"]);
    let second = app
        .flows
        .list_flows_page(first.next.as_deref(), 2)
        .await
        .expect("a page");
    let names: Vec<&str> = second.flows.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["Flow 3", "Flow 2"]);
    let last = app
        .flows
        .list_flows_page(second.next.as_deref(), 2)
        .await
        .expect("a page");
    let names: Vec<&str> = last.flows.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["Flow 1"]);
    assert!(last.next.is_none());
    assert!(matches!(
        app.flows.list_flows_page(Some("nonsense"), 2).await,
        Err(FlowsError::Invalid { .. })
    ));
}
