//! Each condition type and operator through the engine: facts read from `engage.db` (fields,
//! custom properties, events with their values, properties and times, lists, consent) and
//! membership as the worker keeps it, against hand-computed expectations.

use jiff::SignedDuration;
use serde_json::{json, Value};
use signalbox_core::Clock;
use signalbox_engage::OptInProcess;

use crate::helpers::{alltime, last_days, metric, one, set, TestApp};

fn days_ago(app: &TestApp, days: i64) -> String {
    app.clock
        .now()
        .checked_sub(SignedDuration::from_hours(24 * days))
        .unwrap()
        .to_string()
}

/// Ann: Plan pro, Age 42, VIP, Boston, list L1; ordered 2 days ago (Acme, 50) and 40 days ago
/// (Other, 20); started a checkout a day ago. Bob: Plan free, Age 17, not VIP, NYC; started a
/// checkout 3 days ago. Cat: no plan, no age; ordered 10 days ago (acme, 100).
async fn people() -> (TestApp, String, String, String) {
    let mut app = TestApp::start().await;
    let l1 = app
        .engage
        .create_list("L1", OptInProcess::SingleOptIn)
        .await
        .unwrap()
        .id
        .0;
    app.identify(json!({"userId": "ann", "traits": {
        "email": "ann@example.com", "firstName": "Ann", "Plan": "pro", "Age": 42, "VIP": true,
        "address": {"city": "Boston"}},
        "integrations": {"Klaviyo": {"listId": l1}}}))
        .await;
    app.identify(json!({"userId": "bob", "traits": {
        "email": "bob@example.com", "firstName": "Bob", "Plan": "free", "Age": 17, "VIP": false,
        "address": {"city": "NYC"}}}))
        .await;
    app.identify(json!({"userId": "cat", "traits": {"email": "cat@example.com"}}))
        .await;
    let order = |user: &str, ago: String, brand: &str, value: f64| {
        json!({"userId": user, "event": "Placed Order", "timestamp": ago,
               "properties": {"Brand": brand, "revenue": value}})
    };
    let (d2, d40, d10, d1, d3) = (
        days_ago(&app, 2),
        days_ago(&app, 40),
        days_ago(&app, 10),
        days_ago(&app, 1),
        days_ago(&app, 3),
    );
    app.track(order("ann", d2, "Acme", 50.0)).await;
    app.track(order("ann", d40, "Other", 20.0)).await;
    app.track(order("cat", d10, "acme", 100.0)).await;
    app.track(json!({"userId": "ann", "event": "Checkout Started", "timestamp": d1}))
        .await;
    app.track(json!({"userId": "bob", "event": "Checkout Started", "timestamp": d3}))
        .await;
    // Profiles were created at the receipt times, just after the clock's instant.
    app.clock.advance(SignedDuration::from_secs(60));
    app.settle().await;
    let placed = app.metric_id("Placed Order").await;
    let started = app.metric_id("Checkout Started").await;
    (app, placed, started, l1)
}

async fn check(app: &TestApp, name: &str, definition: Value, expected: &[&str]) {
    let segment = app.segment(name, definition).await;
    assert_eq!(app.emails(&segment).await, set(expected), "{name}");
    let preview = app.audience.preview(&segment.definition).await.unwrap();
    assert_eq!(
        preview.profile_count as usize,
        expected.len(),
        "preview of {name}"
    );
}

const ANN: &str = "ann@example.com";
const BOB: &str = "bob@example.com";
const CAT: &str = "cat@example.com";

#[tokio::test]
async fn metric_conditions_count_sum_timeframes_and_event_filters() {
    let (app, placed, started, _) = people().await;
    let rel =
        |op: &str, n: u32| json!({"type": "date", "operator": op, "quantity": n, "unit": "day"});
    check(
        &app,
        "ordered 30d",
        one(metric(&placed, "greater-than", 0.0, last_days(30))),
        &[ANN, CAT],
    )
    .await;
    check(
        &app,
        "ordered twice",
        one(metric(&placed, "equals", 2.0, alltime())),
        &[ANN],
    )
    .await;
    check(
        &app,
        "never ordered",
        one(metric(&placed, "less-than", 1.0, alltime())),
        &[BOB],
    )
    .await;
    check(
        &app,
        "not one order",
        one(metric(&placed, "not-equals", 1.0, alltime())),
        &[ANN, BOB],
    )
    .await;
    check(
        &app,
        "ordered >= 1",
        one(metric(&placed, "greater-than-or-equal", 1.0, alltime())),
        &[ANN, CAT],
    )
    .await;
    check(
        &app,
        "at most 1",
        one(metric(&placed, "less-than-or-equal", 1.0, alltime())),
        &[BOB, CAT],
    )
    .await;
    // at-least 30 days: only orders at or before now − 30 d (Ann's of 40 days ago).
    check(
        &app,
        "ordered long ago",
        one(metric(&placed, "greater-than", 0.0, rel("at-least", 30))),
        &[ANN],
    )
    .await;
    // (now − 30 d, now − 5 d]: Cat's order of 10 days ago.
    check(
        &app,
        "ordered 5 to 30 days ago",
        one(metric(
            &placed,
            "greater-than",
            0.0,
            json!({"type": "date", "operator": "between", "start": 5, "end": 30, "unit": "day"}),
        )),
        &[CAT],
    )
    .await;
    let before = days_ago(&app, 20);
    check(
        &app,
        "ordered before",
        one(metric(
            &placed,
            "greater-than",
            0.0,
            json!({"type": "date", "operator": "before", "date": before}),
        )),
        &[ANN],
    )
    .await;
    check(
        &app,
        "ordered after",
        one(metric(
            &placed,
            "greater-than",
            0.0,
            json!({"type": "date", "operator": "after", "date": before}),
        )),
        &[ANN, CAT],
    )
    .await;
    // Sums: Ann 70, Cat 100.
    let sum = |op: &str, v: f64| {
        json!({
        "type": "profile-metric", "metric_id": placed, "measurement": "sum",
        "measurement_filter": {"type": "numeric", "operator": op, "value": v},
        "timeframe_filter": alltime()})
    };
    check(&app, "spent > 75", one(sum("greater-than", 75.0)), &[CAT]).await;
    check(&app, "spent = 70", one(sum("equals", 70.0)), &[ANN]).await;
    // Event property filters (text ignores case).
    let brand = |op: &str, v: &str| {
        let mut c = metric(&placed, "greater-than", 0.0, alltime());
        c["metric_filters"] = json!([{"property": "Brand", "filter": {"type": "string", "operator": op, "value": v}}]);
        c
    };
    check(
        &app,
        "bought acme",
        one(brand("equals", "ACME")),
        &[ANN, CAT],
    )
    .await;
    check(
        &app,
        "bought other brands",
        one(brand("not-equals", "acme")),
        &[ANN],
    )
    .await;
    let mut big = metric(&placed, "greater-than", 0.0, alltime());
    big["metric_filters"] = json!([{"property": "Brand", "filter": {"type": "string", "operator": "in", "value": ["acme", "zeta"]}}]);
    check(&app, "brand in", one(big), &[ANN, CAT]).await;
    // The benchmark's segment: groups are ANDed.
    check(
        &app,
        "abandoned checkout",
        json!({"condition_groups": [
            {"conditions": [metric(&started, "greater-than-or-equal", 1.0, last_days(30))]},
            {"conditions": [metric(&placed, "equals", 0.0, last_days(30))]},
        ]}),
        &[BOB],
    )
    .await;
    // Conditions inside a group are ORed.
    check(
        &app,
        "either",
        json!({"condition_groups": [{"conditions": [
            metric(&started, "greater-than", 0.0, rel("in-the-last", 2)),
            metric(&placed, "greater-than", 0.0, rel("in-the-last", 5)),
        ]}]}),
        &[ANN],
    )
    .await;
}

fn property(path: &str, filter: Value) -> Value {
    one(json!({"type": "profile-property", "property": path, "filter": filter}))
}

#[tokio::test]
async fn property_conditions_on_fields_and_custom_properties() {
    let (app, _, _, _) = people().await;
    let s = |op: &str, v: Value| json!({"type": "string", "operator": op, "value": v});
    let n = |op: &str, v: f64| json!({"type": "numeric", "operator": op, "value": v});
    check(
        &app,
        "pro",
        property("properties['Plan']", s("equals", json!("PRO"))),
        &[ANN],
    )
    .await;
    // Unset properties match no filter, negative ones included.
    check(
        &app,
        "not pro",
        property("properties['Plan']", s("not-equals", json!("pro"))),
        &[BOB],
    )
    .await;
    check(
        &app,
        "plan in",
        property("properties['Plan']", s("in", json!(["free", "team"]))),
        &[BOB],
    )
    .await;
    check(
        &app,
        "adults",
        property("properties['Age']", n("greater-than", 18.0)),
        &[ANN],
    )
    .await;
    check(
        &app,
        "minors",
        property("properties['Age']", n("less-than-or-equal", 17.0)),
        &[BOB],
    )
    .await;
    check(
        &app,
        "vip",
        property(
            "properties['VIP']",
            json!({"type": "boolean", "operator": "equals", "value": true}),
        ),
        &[ANN],
    )
    .await;
    check(
        &app,
        "has plan",
        property(
            "properties['Plan']",
            json!({"type": "existence", "operator": "is-set"}),
        ),
        &[ANN, BOB],
    )
    .await;
    check(
        &app,
        "no plan",
        property(
            "properties['Plan']",
            json!({"type": "existence", "operator": "not-set"}),
        ),
        &[CAT],
    )
    .await;
    check(
        &app,
        "cities",
        property("location['city']", s("in", json!(["boston", "nyc"]))),
        &[ANN, BOB],
    )
    .await;
    check(
        &app,
        "an…",
        property("first_name", s("starts-with", json!("an"))),
        &[ANN],
    )
    .await;
    check(
        &app,
        "example",
        property("email", s("ends-with", json!("@example.com"))),
        &[ANN, BOB, CAT],
    )
    .await;
    check(
        &app,
        "external id",
        property("external_id", s("equals", json!("cat"))),
        &[CAT],
    )
    .await;
    check(
        &app,
        "new",
        property(
            "created",
            json!({"type": "date", "operator": "in-the-last", "quantity": 1, "unit": "day"}),
        ),
        &[ANN, BOB, CAT],
    )
    .await;
    let with_last = property(
        "last_event_date",
        json!({"type": "date", "operator": "in-the-last", "quantity": 36, "unit": "hour"}),
    );
    check(&app, "recently active", with_last, &[ANN]).await;
}

#[tokio::test]
async fn membership_and_consent_conditions() {
    let (app, placed, _, l1) = people().await;
    let member = |is: bool, ids: Value| {
        one(json!({"type": "profile-group-membership", "is_member": is, "group_ids": ids}))
    };
    check(&app, "in L1", member(true, json!([l1])), &[ANN]).await;
    check(&app, "not in L1", member(false, json!([l1])), &[BOB, CAT]).await;
    let buyers = app
        .segment(
            "buyers",
            one(metric(&placed, "greater-than", 0.0, last_days(30))),
        )
        .await;
    check(
        &app,
        "in buyers",
        member(true, json!([buyers.id])),
        &[ANN, CAT],
    )
    .await;
    check(&app, "buyers outside L1", json!({"condition_groups": [
        {"conditions": [{"type": "profile-group-membership", "is_member": true, "group_ids": [buyers.id]}]},
        {"conditions": [{"type": "profile-group-membership", "is_member": false, "group_ids": [l1]}]},
    ]}), &[CAT]).await;
    // Ann joined a single opt-in list: subscribed. No consent row: never subscribed, and may
    // receive (Klaviyo's implicit consent).
    let consent = |can: bool, sub: &str| {
        one(json!({"type": "profile-marketing-consent", "consent": {
        "channel": "email", "can_receive_marketing": can, "consent_status": {"subscription": sub}}}))
    };
    check(
        &app,
        "never subscribed",
        consent(true, "never_subscribed"),
        &[BOB, CAT],
    )
    .await;
    check(&app, "subscribed", consent(true, "subscribed"), &[ANN]).await;
    check(
        &app,
        "cannot receive",
        consent(false, "never_subscribed"),
        &[],
    )
    .await;

    // Why: per condition, and the cause recorded when Cat entered.
    let cat = app.profile_id(CAT).await;
    let why = app.audience.why(&buyers.id, &cat).await.unwrap();
    assert!(why.member && why.matches_now);
    assert_eq!(why.conditions.len(), 1);
    assert!(why.conditions[0].matched);
    assert_eq!(
        why.conditions[0].pointer,
        "/condition_groups/0/conditions/0"
    );
    assert!(
        why.conditions[0].observed.starts_with("count = 1"),
        "{:?}",
        why.conditions[0]
    );
    let cause = why.last_change.unwrap().cause;
    assert_eq!(cause["trigger"], "backfill");
    assert_eq!(cause["conditions"][0]["matched"], true);
    // Segments of a profile.
    let of_cat: Vec<String> = app
        .audience
        .segments_of(&cat)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert!(
        of_cat.contains(&"buyers".to_owned()) && of_cat.contains(&"in buyers".to_owned()),
        "{of_cat:?}"
    );
}
