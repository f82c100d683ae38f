//! Lists end to end: the CLI creates and imports through the running server, an identify
//! with `listId` leaves a profile pending on a double opt-in list, and a real HTTP client
//! follows the signed confirmation link and presses its button. Forged and replayed tokens
//! change nothing.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::cli_json::assert_documented;
use crate::harness::{json_lines, Server, TestEnv};

struct Lists<'a> {
    env: &'a TestEnv,
    server: &'a Server,
    key: String,
}

impl Lists<'_> {
    fn cli(&self, args: &[&str]) -> String {
        let mut full = vec![
            "list",
            "--url",
            &self.server.base_url,
            "--api-key",
            &self.key,
        ];
        full.extend_from_slice(args);
        self.env.cli_ok(&full)
    }

    /// Pending members with their links, once `n` are there.
    fn pending(&self, list: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let rows = json_lines(&self.cli(&["members", list, "--pending", "--json"]));
            for row in &rows {
                assert_documented("list members LIST --pending --json", row);
            }
            if rows.len() >= n || Instant::now() > deadline {
                return rows;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    async fn consent(&self, list: &str, email: &str) -> Value {
        let answer: Value = reqwest::Client::new()
            .get(format!(
                "{}/api/lists/{list}/profiles?additional-fields%5Bprofile%5D=subscriptions&filter=equals(email,%22{email}%22)",
                self.server.base_url
            ))
            .header("Authorization", format!("Klaviyo-API-Key {}", self.key))
            .header("revision", "2026-07-15")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["data"][0]["attributes"]["subscriptions"]["email"]["marketing"].clone()
    }
}

/// A token made of one token's claims and another's tag.
fn spliced(claims_of: &str, tag_of: &str) -> String {
    let token = |url: &str| {
        URL_SAFE_NO_PAD
            .decode(url.rsplit('/').next().unwrap())
            .unwrap()
    };
    let (a, b) = (token(claims_of), token(tag_of));
    let mut out = a[..a.len() - 16].to_vec();
    out.extend_from_slice(&b[b.len() - 16..]);
    URL_SAFE_NO_PAD.encode(out)
}

#[tokio::test]
async fn double_opt_in_through_the_signed_link_with_a_real_client() {
    let env = TestEnv::new();
    let key = env
        .cli_ok(&[
            "api-key", "create", "lists", "--scope", "full", "--scope", "admin",
        ])
        .trim()
        .to_owned();
    let server = env.serve();
    let lists = Lists {
        env: &env,
        server: &server,
        key,
    };
    let list = lists
        .cli(&["create", "Weekly news", "--double-opt-in"])
        .trim()
        .to_owned();
    assert_eq!(list.len(), 6, "{list}");

    for (user, email) in [("u1", "ann@example.com"), ("u2", "bob@example.com")] {
        let (status, body) = server
            .post(
                "/v1/identify",
                &server.write_key,
                &json!({"userId": user, "traits": {"email": email},
                    "integrations": {"Klaviyo": {"listId": list}}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let pending = lists.pending(&list, 2);
    assert_eq!(pending.len(), 2, "{pending:?}");
    let link = |email: &str, field: &str| {
        pending
            .iter()
            .find(|p| p["email"] == email)
            .unwrap_or_else(|| panic!("{email} is not pending: {pending:?}"))[field]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let ann_confirm = link("ann@example.com", "confirmUrl");
    let bob_confirm = link("bob@example.com", "confirmUrl");
    let ann_unsubscribe = link("ann@example.com", "unsubscribeUrl");
    assert!(ann_confirm.starts_with(&format!("{}/c/", server.base_url)));
    // Nobody is a member yet.
    assert!(lists.cli(&["members", &list, "--json"]).trim().is_empty());

    let http = reqwest::Client::new();
    let base = &server.base_url;
    // Forged: a character changed. Replayed: Bob's claims under Ann's tag.
    let mut forged = ann_confirm.clone().into_bytes();
    let at = forged.len() - 5;
    forged[at] = if forged[at] == b'x' { b'y' } else { b'x' };
    let forged = String::from_utf8(forged).unwrap();
    let replayed = format!("{base}/c/{}", spliced(&bob_confirm, &ann_confirm));
    for url in [forged.as_str(), replayed.as_str()] {
        let answer = http.get(url).send().await.unwrap();
        assert_eq!(answer.status(), 400, "{url}");
    }
    let answer = http
        .get(format!("{base}/c/not-a-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    assert!(lists.cli(&["members", &list, "--json"]).trim().is_empty());

    // Ann follows her link: a page with a button; fetching it (or a HEAD) confirms nothing.
    let answer = http.get(&ann_confirm).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let page = answer.text().await.unwrap();
    assert!(page.contains("Weekly news"), "{page}");
    assert!(
        page.contains(&format!(
            "<form method=\"post\" action=\"{ann_confirm}\"><button type=\"submit\">\
             Confirm subscription</button></form>"
        )),
        "{page}"
    );
    assert_eq!(http.head(&ann_confirm).send().await.unwrap().status(), 200);
    assert!(lists.cli(&["members", &list, "--json"]).trim().is_empty());
    // She presses the button.
    let answer = http.post(&ann_confirm).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let page = answer.text().await.unwrap();
    assert!(page.contains("Subscription confirmed"), "{page}");
    assert!(page.contains("Weekly news"), "{page}");
    let members = json_lines(&lists.cli(&["members", &list, "--json"]));
    assert_eq!(members.len(), 1);
    assert_documented("list members LIST --json", &members[0]);
    assert_eq!(members[0]["email"], "ann@example.com");
    let consent = lists.consent(&list, "ann@example.com").await;
    assert_eq!(consent["consent"], "SUBSCRIBED", "{consent}");
    assert_eq!(consent["double_optin"], true);
    // Bob is still pending.
    let pending = lists.pending(&list, 1);
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["email"], "bob@example.com");

    // Ann unsubscribes with RFC 8058 one-click.
    let answer = http.get(&ann_unsubscribe).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        lists.consent(&list, "ann@example.com").await["consent"],
        "SUBSCRIBED"
    );
    let answer = http
        .post(&ann_unsubscribe)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let consent = lists.consent(&list, "ann@example.com").await;
    assert_eq!(consent["consent"], "UNSUBSCRIBED", "{consent}");
    assert_eq!(consent["can_receive_email_marketing"], false);
}

#[tokio::test]
async fn list_import_and_ls_through_the_running_server() {
    let env = TestEnv::new();
    let key = env
        .cli_ok(&[
            "api-key", "create", "lists", "--scope", "full", "--scope", "admin",
        ])
        .trim()
        .to_owned();
    let server = env.serve();
    let lists = Lists {
        env: &env,
        server: &server,
        key,
    };
    let list = lists.cli(&["create", "Customers"]).trim().to_owned();
    let csv = env.root().join("people.csv");
    let mut text = String::from("First Name,Email,last_name\n");
    for n in 0..1200 {
        text.push_str(&format!("\"P, {n}\",person{n}@example.com,L{n}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let out = env.cli(&[
        "list",
        "--url",
        &server.base_url,
        "--api-key",
        &lists.key,
        "import",
        "Customers",
        csv.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", out.describe());
    assert!(out.stderr.contains("1200 added"), "{}", out.stderr);
    let jsonl = env.root().join("more.jsonl");
    std::fs::write(
        &jsonl,
        "{\"email\": \"person0@example.com\"}\n{\"email\": \"new@example.com\", \"first_name\": \"N\"}\n",
    )
    .unwrap();
    let out = env.cli(&[
        "list",
        "--url",
        &server.base_url,
        "--api-key",
        &lists.key,
        "import",
        &list,
        jsonl.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", out.describe());
    assert!(out.stderr.contains("1 added"), "{}", out.stderr);
    let ls = json_lines(&lists.cli(&["ls", "--json"]));
    assert_eq!(ls.len(), 1);
    assert_documented("list ls --json", &ls[0]);
    assert_eq!(ls[0]["profileCount"], 1201);
    assert_eq!(ls[0]["name"], "Customers");
    let members = json_lines(&lists.cli(&["members", &list, "--json"]));
    assert_eq!(members.len(), 1201);

    // A bad file and a wrong key fail with a message.
    let bad = env.root().join("bad.csv");
    std::fs::write(&bad, "name\nx\n").unwrap();
    let out = env.cli(&[
        "list",
        "--url",
        &server.base_url,
        "--api-key",
        &lists.key,
        "import",
        &list,
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("email column"), "{}", out.stderr);
    let out = env.cli(&[
        "list",
        "--url",
        &server.base_url,
        "--api-key",
        "pk_wrong",
        "ls",
    ]);
    assert!(!out.status.success());
}
