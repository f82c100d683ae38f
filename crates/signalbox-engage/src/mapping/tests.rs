use serde_json::json;

use super::*;

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn map(kind: CallKind, message: Value) -> Result<Mapped, Skip> {
    map_with(kind, message, &DestinationSettings::default())
}

fn map_with(
    kind: CallKind,
    message: Value,
    settings: &DestinationSettings,
) -> Result<Mapped, Skip> {
    map_segment(
        kind,
        message.as_object().unwrap().clone(),
        settings,
        at("2026-03-01T12:00:00Z"),
    )
}

fn props(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

#[test]
fn identify_maps_standard_traits_and_keeps_the_rest() {
    let m = map(
        CallKind::Identify,
        json!({
            "userId": "u1", "anonymousId": "a1", "messageId": "m1",
            "traits": {
                "email": " Ann@Example.COM ", "firstName": "Ann", "lastName": "Lee",
                "phone": "+1 415 555 2671", "title": "CTO", "organization": "Acme",
                "avatar": "https://img/ann.png",
                "address": {"street": "1 Main St", "city": "Springfield", "state": "IL",
                            "country": "US", "postalCode": "62701"},
                "plan": "pro", "loginCount": 3, "favorite_color": "blue", "nothing": null,
                "id": "u1"
            },
            "context": {"timezone": "America/Chicago", "ip": "203.0.113.9", "locale": "en-US"}
        }),
    )
    .unwrap();
    let p = &m.profile;
    assert_eq!(p.email.as_deref(), Some("ann@example.com"));
    assert_eq!(p.external_id.as_deref(), Some("u1"));
    assert_eq!(p.anonymous_id.as_deref(), Some("a1"));
    assert_eq!(p.first_name.as_deref(), Some("Ann"));
    assert_eq!(p.last_name.as_deref(), Some("Lee"));
    assert_eq!(p.phone_number.as_deref(), Some("+14155552671"));
    assert_eq!(p.title.as_deref(), Some("CTO"));
    assert_eq!(p.organization.as_deref(), Some("Acme"));
    assert_eq!(p.image.as_deref(), Some("https://img/ann.png"));
    assert_eq!(p.locale.as_deref(), Some("en-US"));
    assert_eq!(
        p.location,
        Location {
            address1: Some("1 Main St".into()),
            city: Some("Springfield".into()),
            region: Some("IL".into()),
            country: Some("US".into()),
            zip: Some("62701".into()),
            timezone: Some("America/Chicago".into()),
            ip: Some("203.0.113.9".into()),
            ..Location::default()
        }
    );
    assert_eq!(
        p.properties,
        props(json!({"plan": "pro", "loginCount": 3, "favorite_color": "blue"}))
    );
    assert!(m.events.is_empty());
    assert!(m.problems.is_empty());
}

#[test]
fn identify_snake_case_spellings() {
    let m = map(
        CallKind::Identify,
        json!({"userId": "u1", "traits": {
            "email": "b@example.com", "first_name": "Bo", "last_name": "Ek",
            "phone_number": "070-123 45 67",
            "address": {"city": "Stockholm", "region": "AB", "country": "Sweden",
                        "postal_code": "111 22"},
            "company": {"name": "Ek AB", "plan": "x"}, "created_at": "2020-01-01"
        }}),
    )
    .unwrap();
    let p = &m.profile;
    assert_eq!(p.first_name.as_deref(), Some("Bo"));
    assert_eq!(p.last_name.as_deref(), Some("Ek"));
    assert_eq!(p.organization.as_deref(), Some("Ek AB"));
    assert_eq!(p.phone_number.as_deref(), Some("+46701234567"));
    assert_eq!(p.location.zip.as_deref(), Some("111 22"));
    assert_eq!(p.location.region.as_deref(), Some("AB"));
    assert_eq!(
        p.properties,
        props(json!({"company": {"name": "Ek AB", "plan": "x"}, "created_at": "2020-01-01"}))
    );
}

#[test]
fn legacy_dollar_keys_map_too() {
    let m = map(
        CallKind::Identify,
        json!({"userId": "u", "traits": {"$email": "c@example.com", "$first_name": "Cy",
               "$city": "Oslo", "$zip": "0150", "$id": "legacy"}}),
    )
    .unwrap();
    assert_eq!(m.profile.email.as_deref(), Some("c@example.com"));
    assert_eq!(m.profile.first_name.as_deref(), Some("Cy"));
    assert_eq!(m.profile.location.city.as_deref(), Some("Oslo"));
    assert_eq!(m.profile.location.zip.as_deref(), Some("0150"));
    assert!(m.profile.properties.is_empty());
}

#[test]
fn phone_without_a_country_is_kept_and_reported() {
    let m = map(
        CallKind::Identify,
        json!({"userId": "u", "traits": {"email": "d@example.com", "phone": "(415) 555-2671"}}),
    )
    .unwrap();
    assert_eq!(m.profile.phone_number, None);
    assert_eq!(m.profile.properties["phone"], "(415) 555-2671");
    assert_eq!(m.problems.len(), 1);
    assert!(
        m.problems[0].contains("no known country"),
        "{:?}",
        m.problems
    );

    // The locale says where the number is.
    let m = map(
        CallKind::Identify,
        json!({"userId": "u", "traits": {"phone": "(415) 555-2671"},
               "context": {"locale": "en-US"}}),
    )
    .unwrap();
    assert_eq!(m.profile.phone_number.as_deref(), Some("+14155552671"));
}

#[test]
fn email_like_user_id_is_the_email_and_bad_emails_are_kept() {
    let m = map(CallKind::Identify, json!({"userId": "Eve@Example.com"})).unwrap();
    assert_eq!(m.profile.email.as_deref(), Some("eve@example.com"));
    let m = map(
        CallKind::Identify,
        json!({"userId": "u", "traits": {"email": "not-an-email"}}),
    )
    .unwrap();
    assert_eq!(m.profile.email, None);
    assert_eq!(m.profile.properties["email"], "not-an-email");
    assert_eq!(m.problems.len(), 1);
}

#[test]
fn identify_subscribes_to_the_list_with_overrides() {
    let settings = DestinationSettings {
        list_id: Some("L1".into()),
        ..DestinationSettings::default()
    };
    let m = map_with(
        CallKind::Identify,
        json!({"userId": "u", "traits": {"email": "e@example.com"}}),
        &settings,
    )
    .unwrap();
    assert_eq!(
        m.list,
        Some(ListSubscription {
            list_id: "L1".into(),
            confirm_optin: true,
            confirm_optin_ignored: false
        })
    );
    let m = map_with(
        CallKind::Identify,
        json!({"userId": "u", "traits": {"email": "e@example.com"},
               "integrations": {"Klaviyo": {"listId": "L2", "confirmOptin": false}}}),
        &settings,
    )
    .unwrap();
    assert_eq!(
        m.list,
        Some(ListSubscription {
            list_id: "L2".into(),
            confirm_optin: true,
            confirm_optin_ignored: true
        })
    );
    // No email, no list.
    let m = map_with(CallKind::Identify, json!({"userId": "u"}), &settings).unwrap();
    assert_eq!(m.list, None);
}

#[test]
fn track_maps_revenue_message_id_and_context_traits() {
    let m = map(
        CallKind::Track,
        json!({"userId": "u1", "event": "Signed Up", "messageId": "m-1",
               "timestamp": "2026-02-03T04:05:06.789Z",
               "properties": {"plan": "pro", "revenue": "19.5", "currency": "EUR"},
               "context": {"traits": {"email": "f@example.com", "firstName": "Flo", "tier": 2}}}),
    )
    .unwrap();
    assert_eq!(m.profile.email.as_deref(), Some("f@example.com"));
    assert_eq!(m.profile.first_name.as_deref(), Some("Flo"));
    assert!(
        m.profile.properties.is_empty(),
        "context traits fill standard fields only"
    );
    assert_eq!(m.events.len(), 1);
    let e = &m.events[0];
    assert_eq!(e.metric_name, "Signed Up");
    assert_eq!(e.time, at("2026-02-03T04:05:06.789Z"));
    assert_eq!(e.value, Some(19.5));
    assert_eq!(e.value_currency.as_deref(), Some("EUR"));
    assert_eq!(e.unique_id.as_deref(), Some("m-1"));
    assert_eq!(
        e.properties,
        props(json!({"plan": "pro", "revenue": "19.5", "currency": "EUR",
                     "$event_id": "m-1", "$value": 19.5}))
    );
}

#[test]
fn track_email_from_properties_and_time_fallback() {
    let m = map(
        CallKind::Track,
        json!({"anonymousId": "a", "event": "Viewed", "properties": {"email": "G@example.com"}}),
    )
    .unwrap();
    assert_eq!(m.profile.email.as_deref(), Some("g@example.com"));
    assert_eq!(m.events[0].time, at("2026-03-01T12:00:00Z"));
    assert_eq!(m.events[0].unique_id, None);
}

fn order_message() -> Value {
    json!({
        "userId": "u1", "event": "Order Completed", "messageId": "m-order",
        "timestamp": "2026-02-03T04:05:06Z",
        "properties": {
            "order_id": "O-1", "revenue": 30.0, "total": 33.0, "currency": "USD",
            "coupon": "WINTER",
            "products": [
                {"product_id": "P1", "sku": "S1", "name": "Tee", "price": 10, "quantity": 2,
                 "category": "Shirts", "url": "https://shop/p1", "image_url": "https://img/p1",
                 "description": "A soft tee", "brand": "B"},
                {"product_id": "P2", "sku": "S2", "name": "Cap", "price": 10, "quantity": 1,
                 "category": "Hats"}
            ]
        }
    })
}

#[test]
fn order_completed_fans_out_with_segment_spec() {
    let m = map(CallKind::Track, order_message()).unwrap();
    assert_eq!(m.events.len(), 3);
    let order = &m.events[0];
    assert_eq!(order.metric_name, "Order Completed");
    assert_eq!(order.unique_id.as_deref(), Some("O-1"));
    assert_eq!(order.value, Some(30.0));
    assert_eq!(
        order.properties,
        props(json!({
            "currency": "USD", "coupon": "WINTER", "OrderId": "O-1",
            "$event_id": "O-1", "$value": 30.0,
            "Categories": ["Shirts", "Hats"], "Item Names": ["Tee", "Cap"],
            "Items": [
                {"ProductID": "P1", "SKU": "S1", "Name": "Tee", "Quantity": 2.0,
                 "Item Price": 10.0, "Row Total": 20.0, "Categories": ["Shirts"],
                 "Product URL": "https://shop/p1", "Image URL": "https://img/p1",
                 "product_id": "P1", "sku": "S1", "name": "Tee", "price": 10, "quantity": 2,
                 "category": "Shirts", "url": "https://shop/p1", "image_url": "https://img/p1",
                 "description": "A soft tee", "brand": "B"},
                {"ProductID": "P2", "SKU": "S2", "Name": "Cap", "Quantity": 1.0,
                 "Item Price": 10.0, "Row Total": 10.0, "Categories": ["Hats"],
                 "product_id": "P2", "sku": "S2", "name": "Cap", "price": 10, "quantity": 1,
                 "category": "Hats"}
            ]
        }))
    );
    let tee = &m.events[1];
    assert_eq!(tee.metric_name, "Ordered Product");
    assert_eq!(tee.unique_id.as_deref(), Some("O-1_P1"));
    assert_eq!(tee.value, Some(10.0));
    assert_eq!(tee.time, order.time);
    assert_eq!(
        tee.properties,
        props(json!({
            "ProductID": "P1", "SKU": "S1", "Name": "Tee", "Quantity": 2.0,
            "Product URL": "https://shop/p1", "Image URL": "https://img/p1",
            "product_id": "P1", "sku": "S1", "name": "Tee", "price": 10, "quantity": 2,
            "category": "Shirts", "url": "https://shop/p1", "image_url": "https://img/p1",
            "description": "A soft tee", "brand": "B", "Product Categories": ["Shirts"],
            "OrderId": "O-1", "$event_id": "O-1_P1", "$value": 10.0
        }))
    );
    assert_eq!(m.events[2].unique_id.as_deref(), Some("O-1_P2"));
}

#[test]
fn order_completed_as_placed_order_without_segment_spec() {
    let settings = DestinationSettings {
        use_segment_spec: false,
        ..DestinationSettings::default()
    };
    let m = map_with(CallKind::Track, order_message(), &settings).unwrap();
    let names: Vec<_> = m.events.iter().map(|e| e.metric_name.as_str()).collect();
    assert_eq!(
        names,
        ["Placed Order", "Ordered Product", "Ordered Product"]
    );
    assert_eq!(m.events[0].unique_id.as_deref(), Some("O-1"));
}

/// A product keeps every key it was sent with, under its own name and with its own type, so
/// a template loop or a segment filter on `product_id` finds it; the standard names are added
/// beside it.
#[test]
fn order_items_keep_their_own_keys_and_values() {
    let m = map(
        CallKind::Track,
        json!({"userId": "u", "event": "Order Completed", "messageId": "m8",
               "properties": {"order_id": 7, "products": [
                   {"product_id": 123, "sku": 45, "name": "Mug", "price": 4.5,
                    "variant": {"colour": "blue"}}]}}),
    )
    .unwrap();
    let items = m.events[0].properties["Items"].as_array().unwrap();
    assert_eq!(items[0]["product_id"], json!(123));
    assert_eq!(items[0]["sku"], json!(45));
    assert_eq!(items[0]["variant"], json!({"colour": "blue"}));
    assert_eq!(items[0]["ProductID"], json!("123"));
    let product = &m.events[1];
    assert_eq!(product.metric_name, "Ordered Product");
    assert_eq!(product.properties["product_id"], json!(123));
    assert_eq!(product.properties["name"], json!("Mug"));
    assert_eq!(product.properties["ProductID"], json!("123"));
    assert_eq!(product.unique_id.as_deref(), Some("7_123"));
}

#[test]
fn order_without_ids_falls_back_to_message_id_and_line_numbers() {
    let m = map(
        CallKind::Track,
        json!({"userId": "u", "event": "Order Completed", "messageId": "m9",
               "properties": {"total": 5, "products": [{"name": "A"}, {"sku": "K"}]}}),
    )
    .unwrap();
    assert_eq!(m.events[0].unique_id.as_deref(), Some("m9"));
    assert_eq!(m.events[0].value, Some(5.0));
    assert_eq!(m.events[1].unique_id.as_deref(), Some("m9_0"));
    assert_eq!(m.events[2].unique_id.as_deref(), Some("m9_K"));
}

#[test]
fn alias_joins_previous_id() {
    let m = map(
        CallKind::Alias,
        json!({"userId": "u2", "previousId": "anon-9", "anonymousId": "x"}),
    )
    .unwrap();
    assert_eq!(m.alias_of.as_deref(), Some("anon-9"));
    assert_eq!(m.profile.external_id.as_deref(), Some("u2"));
    assert_eq!(m.profile.anonymous_id, None);
}

#[test]
fn skips_say_why() {
    assert_eq!(
        map(CallKind::Page, json!({"userId": "u"})).unwrap_err(),
        Skip::Kind(CallKind::Page)
    );
    assert_eq!(
        map(
            CallKind::Track,
            json!({"userId": "u", "event": "E", "integrations": {"Klaviyo": false}})
        )
        .unwrap_err(),
        Skip::Integrations
    );
    let off = DestinationSettings {
        enabled: false,
        ..DestinationSettings::default()
    };
    assert_eq!(
        map_with(CallKind::Track, json!({"userId": "u", "event": "E"}), &off).unwrap_err(),
        Skip::Disabled
    );
}

#[test]
fn api_input_normalisation() {
    let input = ProfileInput {
        email: Some("A@B.co".into()),
        phone_number: Some("020 7946 0958".into()),
        location: Location {
            country: Some("United Kingdom".into()),
            ..Location::default()
        },
        ..ProfileInput::default()
    };
    let out = normalize_input(input).unwrap();
    assert_eq!(out.email.as_deref(), Some("a@b.co"));
    assert_eq!(out.phone_number.as_deref(), Some("+442079460958"));
    let bad = ProfileInput {
        phone_number: Some("12".into()),
        ..ProfileInput::default()
    };
    assert_eq!(normalize_input(bad).unwrap_err().0, "phone_number");
}
