//! `serve --allow-private-destinations`: flow webhooks to a receiver on loopback are
//! delivered with it, and refused (dead-lettered, no connection) without it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{Server, TestEnv};

/// A minimal HTTP receiver on loopback that answers 200 to every request and counts them.
fn receiver() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, count)
}

async fn api(server: &Server, key: &str, method: reqwest::Method, path: &str) -> Value {
    reqwest::Client::new()
        .request(method, format!("{}{path}", server.base_url))
        .header("Authorization", format!("Klaviyo-API-Key {key}"))
        .header("revision", "2026-07-15")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn ship(server: &Server, user: &str) {
    let (status, body) = server
        .post(
            "/v1/batch",
            &server.write_key,
            &json!({"batch": [
                {"type": "identify", "userId": user, "traits": {"email": format!("{user}@example.com")}},
                {"type": "track", "userId": user, "event": "Order Shipped"},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Waits until the flow's counter `name` reaches `n`; the counts.
async fn wait_count(server: &Server, key: &str, flow: &str, name: &str, n: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = api(
            server,
            key,
            reqwest::Method::GET,
            &format!("/api/flows/{flow}?additional-fields[flow]=statistics"),
        )
        .await;
        let counts = body["data"]["attributes"]["statistics"]["flow"]["counts"].clone();
        if counts[name].as_i64().unwrap_or(0) >= n {
            return counts;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not reach {n}: {counts}\n--- log ---\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn webhooks_reach_a_local_receiver_only_with_allow_private_destinations() {
    let env = TestEnv::new();
    let key = env.cli_ok(&["api-key", "create", "ops"]).trim().to_owned();
    let (url, received) = receiver();
    let mut cmd = env.command();
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--allow-private-destinations",
    ]);
    let server = Server::spawn(cmd, env.root().join("server-allowed.log"));
    assert!(
        server
            .banner
            .iter()
            .any(|l| l.contains("private destinations allowed")),
        "{:?}",
        server.banner
    );
    ship(&server, "seed").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let metric = loop {
        let metrics = api(&server, &key, reqwest::Method::GET, "/api/metrics").await;
        let found = metrics["data"].as_array().and_then(|all| {
            all.iter()
                .find(|m| m["attributes"]["name"] == "Order Shipped")
                .and_then(|m| m["id"].as_str().map(str::to_owned))
        });
        if let Some(id) = found {
            break id;
        }
        assert!(Instant::now() < deadline, "no metric\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let file = env.root().join("flow.json");
    std::fs::write(
        &file,
        json!({"name": "Shipping hook", "status": "live", "definition": {
            "triggers": [{"type": "metric", "id": metric}],
            "entry_action_id": "w",
            "actions": [{"temporary_id": "w", "type": "send-webhook",
                "data": {"status": "live", "url": url}, "links": {"next": null}}]}})
        .to_string(),
    )
    .unwrap();
    let out = env.cli_ok(&[
        "flow",
        "--url",
        &server.base_url,
        "--api-key",
        &key,
        "apply",
        file.to_str().unwrap(),
    ]);
    let flow = out
        .strip_prefix("created flow ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected `flow apply` output {out:?}"))
        .to_owned();
    ship(&server, "hal").await;
    wait_count(&server, &key, &flow, "delivered", 1).await;
    assert_eq!(received.load(Ordering::SeqCst), 1);
    server.stop();

    // The default: the same webhook is refused before any connection and dead-lettered.
    let server = env.serve();
    ship(&server, "ivy").await;
    let counts = wait_count(&server, &key, &flow, "dead_lettered", 1).await;
    assert_eq!(counts["delivered"], json!(1), "{counts}");
    assert_eq!(received.load(Ordering::SeqCst), 1, "no request reached it");
    server.stop();
}
