//! Lists, subscription and suppression jobs, the pending confirmations and the consent pages.

use axum::body::Body as HttpBody;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{assert_error, spawn, TestApi};

async fn create_list(api: &TestApi, name: &str, opt_in: &str) -> String {
    let reply = api
        .write(
            Method::POST,
            "/api/lists",
            json!({"data": {"type": "list", "attributes": {"name": name, "opt_in_process": opt_in}}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    reply.body["data"]["id"].as_str().unwrap().to_owned()
}

fn subscribe_job(emails: &[&str], list: Option<&str>) -> Value {
    let profiles: Vec<Value> = emails
        .iter()
        .map(|e| {
            json!({"type": "profile", "attributes": {"email": e,
                "subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED"}}}}})
        })
        .collect();
    let mut body = json!({"data": {"type": "profile-subscription-bulk-create-job",
        "attributes": {"custom_source": "tests", "profiles": {"data": profiles}}}});
    if let Some(list) = list {
        body["data"]["relationships"] = json!({"list": {"data": {"type": "list", "id": list}}});
    }
    body
}

/// A raw request (HTML pages, admin JSON).
async fn raw(api: &TestApi, method: Method, uri: &str, body: &str) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        // A forged Host: links name the public URL all the same.
        .header(header::HOST, "forged.example")
        .header(header::AUTHORIZATION, format!("Bearer {}", api.key))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(HttpBody::from(body.to_owned()))
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn path_of(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    format!("/{}", rest.split_once('/').unwrap().1)
}

#[tokio::test]
async fn lists_crud_in_klaviyo_shapes() {
    let api = spawn().await;
    let id = create_list(&api, "Newsletter", "double_opt_in").await;
    assert_eq!(id.len(), 6);
    let reply = api
        .get(&format!(
            "/api/lists/{id}?additional-fields%5Blist%5D=profile_count"
        ))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let data = &reply.body["data"];
    assert_eq!(data["type"], "list");
    assert_eq!(data["attributes"]["name"], "Newsletter");
    assert_eq!(data["attributes"]["opt_in_process"], "double_opt_in");
    assert_eq!(data["attributes"]["profile_count"], 0);
    assert!(data["links"]["self"]
        .as_str()
        .unwrap()
        .starts_with("https://"));

    let reply = api
        .write(
            Method::PATCH,
            &format!("/api/lists/{id}"),
            json!({"data": {"type": "list", "id": id, "attributes": {"name": "Weekly"}}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["data"]["attributes"]["name"], "Weekly");

    let reply = api.get("/api/lists?filter=equals(name,%22Weekly%22)").await;
    assert_eq!(reply.body["data"].as_array().unwrap().len(), 1);
    let reply = api.get("/api/lists?filter=equals(name,%22Nope%22)").await;
    assert_eq!(reply.body["data"].as_array().unwrap().len(), 0);

    let reply = api
        .send(
            api.request(Method::DELETE, &format!("/api/lists/{id}"))
                .body(HttpBody::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_error(
        &api.get(&format!("/api/lists/{id}")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn bad_list_bodies_are_400_with_a_pointer() {
    let api = spawn().await;
    for (body, pointer) in [
        (
            json!({"data": {"type": "list", "attributes": {}}}),
            "/data/attributes/name",
        ),
        (
            json!({"data": {"type": "list", "attributes": {"name": "  "}}}),
            "/data/attributes/name",
        ),
        (
            json!({"data": {"type": "list", "attributes": {"name": "x", "opt_in_process": "maybe"}}}),
            "/data/attributes/opt_in_process",
        ),
        (
            json!({"data": {"type": "list", "attributes": {"name": "x", "colour": "red"}}}),
            "/data/attributes/colour",
        ),
    ] {
        let error = assert_error(
            &api.write(Method::POST, "/api/lists", body).await,
            StatusCode::BAD_REQUEST,
            "invalid",
        );
        assert_eq!(error["source"]["pointer"], pointer);
    }
    let id = create_list(&api, "L", "single_opt_in").await;
    let error = assert_error(
        &api.write(
            Method::POST,
            &format!("/api/lists/{id}/relationships/profiles"),
            json!({"data": [{"type": "profile"}]}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid",
    );
    assert_eq!(error["source"]["pointer"], "/data/0/id");
    let error = assert_error(
        &api.write(
            Method::POST,
            "/api/profile-subscription-bulk-create-jobs",
            subscribe_job(&["not-an-email"], Some(&id)),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid",
    );
    assert_eq!(
        error["source"]["pointer"],
        "/data/attributes/profiles/data/0/attributes/email"
    );
    let mut wrong_consent = subscribe_job(&["a@example.com"], None);
    wrong_consent["data"]["attributes"]["profiles"]["data"][0]["attributes"]["subscriptions"]
        ["email"]["marketing"]["consent"] = json!("UNSUBSCRIBED");
    let error = assert_error(
        &api.write(
            Method::POST,
            "/api/profile-subscription-bulk-create-jobs",
            wrong_consent,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid",
    );
    assert_eq!(
        error["source"]["pointer"],
        "/data/attributes/profiles/data/0/attributes/subscriptions/email/marketing/consent"
    );
    assert_error(
        &api.write(
            Method::POST,
            "/api/profile-subscription-bulk-create-jobs",
            subscribe_job(&["a@example.com"], Some("NOPE00")),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let error = assert_error(
        &api.write(
            Method::POST,
            "/api/profile-suppression-bulk-create-jobs",
            json!({"data": {"type": "profile-suppression-bulk-create-job", "attributes": {}}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid",
    );
    assert_eq!(error["source"]["pointer"], "/data/attributes/profiles");
}

#[tokio::test]
async fn members_are_added_paged_and_removed() {
    let api = spawn().await;
    let id = create_list(&api, "L", "single_opt_in").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let reply = api
            .write(
                Method::POST,
                "/api/profiles",
                json!({"data": {"type": "profile", "attributes": {"email": format!("m{n}@example.com")}}}),
            )
            .await;
        ids.push(reply.body["data"]["id"].as_str().unwrap().to_owned());
    }
    let linkages: Vec<Value> = ids
        .iter()
        .map(|id| json!({"type": "profile", "id": id}))
        .collect();
    let reply = api
        .write(
            Method::POST,
            &format!("/api/lists/{id}/relationships/profiles"),
            json!({ "data": linkages }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let first = api
        .get(&format!(
            "/api/lists/{id}/profiles?page%5Bsize%5D=2&additional-fields%5Bprofile%5D=subscriptions"
        ))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let data = first.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["type"], "profile");
    assert!(data[0]["attributes"]["joined_group_at"].is_string());
    assert_eq!(
        data[0]["attributes"]["subscriptions"]["email"]["marketing"]["consent"],
        "NEVER_SUBSCRIBED"
    );
    let next = first.body["links"]["next"].as_str().unwrap();
    let second = api.get(&path_of(next)).await;
    assert_eq!(second.body["data"].as_array().unwrap().len(), 1);
    assert!(second.body["links"]["next"].is_null());

    let reply = api
        .write(
            Method::DELETE,
            &format!("/api/lists/{id}/relationships/profiles"),
            json!({"data": [{"type": "profile", "id": ids[0]}]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let all = api.get(&format!("/api/lists/{id}/profiles")).await;
    assert_eq!(all.body["data"].as_array().unwrap().len(), 2);
    let filtered = api
        .get(&format!(
            "/api/lists/{id}/profiles?filter=equals(email,%22m2@example.com%22)"
        ))
        .await;
    assert_eq!(filtered.body["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn double_opt_in_through_the_pending_link_and_unsubscribe_through_its_link() {
    let api = spawn().await;
    let id = create_list(&api, "DOI", "double_opt_in").await;
    let reply = api
        .write(
            Method::POST,
            "/api/profile-subscription-bulk-create-jobs",
            subscribe_job(&["p@example.com"], Some(&id)),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    // Not a member until confirmed.
    let members = api.get(&format!("/api/lists/{id}/profiles")).await;
    assert_eq!(members.body["data"].as_array().unwrap().len(), 0);

    let (status, text) = raw(
        &api,
        Method::GET,
        &format!("/admin/v1/lists/{id}/pending"),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let pending: Value = serde_json::from_str(&text).unwrap();
    let entry = &pending["data"][0];
    assert_eq!(entry["email"], "p@example.com");
    let confirm = path_of(entry["confirmUrl"].as_str().unwrap());
    let unsubscribe = path_of(entry["unsubscribeUrl"].as_str().unwrap());
    assert!(confirm.starts_with("/c/"));

    // A forged token: one character changed.
    let mut forged = confirm.clone().into_bytes();
    let last = forged.len() - 3;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let (status, _) = raw(&api, Method::GET, std::str::from_utf8(&forged).unwrap(), "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // An unsubscribe token used to confirm.
    let (status, _) = raw(
        &api,
        Method::GET,
        &unsubscribe.replacen("/u/", "/c/", 1),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let members = api.get(&format!("/api/lists/{id}/profiles")).await;
    assert_eq!(members.body["data"].as_array().unwrap().len(), 0);

    // GET shows the button and HEAD checks the link: neither confirms (link scanners).
    let (status, html) = raw(&api, Method::GET, &confirm, "").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains(&format!(
            "<button type=\"submit\">{}</button>",
            crate::consent::CONFIRM_BUTTON
        )) && html.contains("DOI")
            && html.contains("p@example.com"),
        "{html}"
    );
    let action = html
        .split("<form method=\"post\" action=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a form that posts");
    assert_eq!(path_of(action), confirm);
    let (status, body) = raw(&api, Method::HEAD, &confirm, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    let (status, _) = raw(
        &api,
        Method::HEAD,
        std::str::from_utf8(&forged).unwrap(),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let members = api.get(&format!("/api/lists/{id}/profiles")).await;
    assert_eq!(members.body["data"].as_array().unwrap().len(), 0);
    let (status, _) = raw(
        &api,
        Method::POST,
        std::str::from_utf8(&forged).unwrap(),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The button confirms.
    let (status, html) = raw(&api, Method::POST, &confirm, "").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("Subscription confirmed") && html.contains("DOI"),
        "{html}"
    );
    let members = api
        .get(&format!(
            "/api/lists/{id}/profiles?additional-fields%5Bprofile%5D=subscriptions"
        ))
        .await;
    let marketing = &members.body["data"][0]["attributes"]["subscriptions"]["email"]["marketing"];
    assert_eq!(marketing["consent"], "SUBSCRIBED");
    assert_eq!(marketing["double_optin"], true);
    let (status, html) = raw(&api, Method::GET, &confirm, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Already confirmed") && !html.contains("<form"));
    let (status, html) = raw(&api, Method::POST, &confirm, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Already confirmed"));

    // The unsubscribe page changes nothing on GET or HEAD; a bad body is refused; one-click
    // works.
    let (status, html) = raw(&api, Method::GET, &unsubscribe, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("p@example.com") && html.contains("<form"));
    let (status, body) = raw(&api, Method::HEAD, &unsubscribe, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    let members = api
        .get(&format!(
            "/api/lists/{id}/profiles?additional-fields%5Bprofile%5D=subscriptions"
        ))
        .await;
    let marketing = &members.body["data"][0]["attributes"]["subscriptions"]["email"]["marketing"];
    assert_eq!(marketing["consent"], "SUBSCRIBED");
    let (status, _) = raw(&api, Method::POST, &unsubscribe, "please=yes").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, html) = raw(
        &api,
        Method::POST,
        &unsubscribe,
        "List-Unsubscribe=One-Click",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let members = api
        .get(&format!(
            "/api/lists/{id}/profiles?additional-fields%5Bprofile%5D=subscriptions"
        ))
        .await;
    let marketing = &members.body["data"][0]["attributes"]["subscriptions"]["email"]["marketing"];
    assert_eq!(marketing["consent"], "UNSUBSCRIBED");
    assert_eq!(marketing["can_receive_email_marketing"], false);
    assert_eq!(marketing["suppression"][0]["reason"], "UNSUBSCRIBE");
}

#[tokio::test]
async fn suppression_jobs_suppress_and_lift() {
    let api = spawn().await;
    let body = |kind: &str| {
        json!({"data": {"type": kind, "attributes": {"profiles": {"data": [
            {"type": "profile", "attributes": {"email": "s@example.com"}}]}}}})
    };
    let id = create_list(&api, "S", "single_opt_in").await;
    let reply = api
        .write(
            Method::POST,
            "/api/profile-subscription-bulk-create-jobs",
            subscribe_job(&["s@example.com"], Some(&id)),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let consent = || async {
        let members = api
            .get(&format!(
                "/api/lists/{id}/profiles?additional-fields%5Bprofile%5D=subscriptions"
            ))
            .await;
        members.body["data"][0]["attributes"]["subscriptions"]["email"]["marketing"].clone()
    };
    assert_eq!(consent().await["can_receive_email_marketing"], true);
    // Profile reads carry the consent when asked for it, and only then.
    let profiles = api
        .get("/api/profiles?additional-fields%5Bprofile%5D=subscriptions")
        .await;
    assert_eq!(profiles.status, StatusCode::OK, "{}", profiles.body);
    let profile = &profiles.body["data"][0];
    let marketing = &profile["attributes"]["subscriptions"]["email"]["marketing"];
    assert_eq!(marketing["consent"], "SUBSCRIBED");
    assert_eq!(marketing["custom_method_detail"], "tests");
    let one = api
        .get(&format!(
            "/api/profiles/{}?additional-fields%5Bprofile%5D=subscriptions",
            profile["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        one.body["data"]["attributes"]["subscriptions"]["email"]["marketing"]["consent"],
        "SUBSCRIBED"
    );
    let plain = api.get("/api/profiles").await;
    assert!(plain.body["data"][0]["attributes"]["subscriptions"].is_null());
    let reply = api
        .write(
            Method::POST,
            "/api/profile-suppression-bulk-create-jobs",
            body("profile-suppression-bulk-create-job"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let marketing = consent().await;
    assert_eq!(marketing["can_receive_email_marketing"], false);
    assert_eq!(marketing["suppression"][0]["reason"], "USER_SUPPRESSED");
    let reply = api
        .write(
            Method::POST,
            "/api/profile-suppression-bulk-delete-jobs",
            body("profile-suppression-bulk-delete-job"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(consent().await["can_receive_email_marketing"], true);
    let reply = api
        .write(
            Method::POST,
            "/api/profile-subscription-bulk-delete-jobs",
            json!({"data": {"type": "profile-subscription-bulk-delete-job", "attributes": {"profiles": {"data": [
                {"type": "profile", "attributes": {"email": "s@example.com",
                    "subscriptions": {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}}}}]}},
                "relationships": {"list": {"data": {"type": "list", "id": id}}}}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let members = api.get(&format!("/api/lists/{id}/profiles")).await;
    assert_eq!(members.body["data"].as_array().unwrap().len(), 0);
}

/// An email is normalised once where it comes in: however it is written (spaces around it,
/// capitals), the profile API, the import and a subscription job reach the same profile; a
/// text that is no address is refused with the reason, pointing at it.
#[tokio::test]
async fn one_address_however_it_is_written_is_one_profile() {
    let api = spawn().await;
    let profile =
        |email: &str| json!({"data": {"type": "profile", "attributes": {"email": email}}});
    let created = api
        .write(Method::POST, "/api/profiles", profile(" Ann@Example.COM "))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(
        created.body["data"]["attributes"]["email"],
        "ann@example.com"
    );
    let id = created.body["data"]["id"].as_str().unwrap().to_owned();

    let imported = api
        .write(
            Method::POST,
            "/api/profile-import",
            profile("ann@example.com"),
        )
        .await;
    assert_eq!(imported.status, StatusCode::OK, "{}", imported.body);
    assert_eq!(imported.body["data"]["id"], id.as_str());

    let list = create_list(&api, "News", "single_opt_in").await;
    let reply = api
        .write(
            Method::POST,
            "/api/profile-subscription-bulk-create-jobs",
            subscribe_job(&["  ANN@example.com", "ann@EXAMPLE.com"], Some(&list)),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let members = api.get(&format!("/api/lists/{list}/profiles")).await;
    let members = members.body["data"].as_array().unwrap().clone();
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0]["id"], id.as_str());

    let refused = api
        .write(Method::POST, "/api/profiles", profile("ann@example"))
        .await;
    let error = assert_error(&refused, StatusCode::BAD_REQUEST, "invalid");
    assert_eq!(error["source"]["pointer"], "/data/attributes/email");
    assert!(
        error["detail"]
            .as_str()
            .unwrap()
            .contains("is not an email address"),
        "{error}"
    );
    let refused = api
        .write(
            Method::POST,
            "/api/profile-subscription-bulk-create-jobs",
            subscribe_job(&["ann\u{7}@example.com"], None),
        )
        .await;
    let error = assert_error(&refused, StatusCode::BAD_REQUEST, "invalid");
    assert!(
        error["detail"]
            .as_str()
            .unwrap()
            .contains("contains a control character"),
        "{error}"
    );
}
