//! The HTTP edge against hostile clients: silent and slow connections, the connection cap,
//! HTTP/2 streams, keys checked before bodies, the body budget and deadline, the public URL,
//! and the shutdown deadline. Every client here is a raw socket on loopback, bounded in count.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use signalbox_server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{basic, spawn_app_with, TestApp, TestOptions};

/// How long a request that must answer at once may take on a busy machine.
const PROMPT: Duration = Duration::from_secs(1);

fn options(configure: impl Fn(&mut ServerConfig) + Send + Sync + 'static) -> TestOptions {
    // The test process holds both ends of every connection.
    signalbox_server::edge::raise_open_files_limit();
    TestOptions {
        configure: Some(Arc::new(configure)),
        ..TestOptions::default()
    }
}

/// Opens `n` connections that send nothing.
async fn silent_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        streams.push(TcpStream::connect(addr).await.expect("connect"));
    }
    streams
}

/// Resolves when the server closed the connection (EOF or reset), or panics after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut seen = Vec::new();
    let result = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        result.is_ok(),
        "the connection is still open after {within:?}"
    );
    seen
}

/// Sends `head` (a request line and headers, without the blank line) and `body`, and reads
/// the answer until the server closes or `within` passes.
async fn raw_request(addr: SocketAddr, head: &str, body: &[u8], within: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("send the head");
    stream.write_all(body).await.expect("send the body");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(within, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A `/v1/track` call that must be answered 200 within [`PROMPT`].
async fn track_promptly(app: &TestApp, client: &reqwest::Client, id: &str) {
    let started = Instant::now();
    let answer = client
        .post(app.url("/v1/track"))
        .header("authorization", app.basic_auth())
        .json(&json!({"userId": "u1", "event": "E", "messageId": id}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("track answered");
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    assert!(
        started.elapsed() < PROMPT,
        "track took {:?}",
        started.elapsed()
    );
}

async fn health_promptly(app: &TestApp, client: &reqwest::Client) {
    let started = Instant::now();
    let answer = client
        .get(app.url("/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("healthz answered");
    assert_eq!(answer.status(), 200);
    assert!(
        started.elapsed() < PROMPT,
        "healthz took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_connections_are_cut_off_and_the_server_keeps_answering() {
    let app = spawn_app_with(options(|c| c.header_timeout = Duration::from_secs(2))).await;
    let mut silent = silent_connections(app.addr, 3_000).await;
    // A slowloris client: a request head trickling in, a byte every 200 ms.
    let mut slow = TcpStream::connect(app.addr).await.expect("connect");
    slow.write_all(b"POST /v1/track HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        let mut seen = [0u8; 64];
        for byte in b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            .iter()
            .cycle()
        {
            if slow.write_all(&[*byte]).await.is_err() {
                return Some(Instant::now());
            }
            // Anything from the server (an error, or the end of the connection) ends it.
            if tokio::time::timeout(Duration::from_millis(200), slow.read(&mut seen))
                .await
                .is_ok()
            {
                return Some(Instant::now());
            }
        }
        None
    });
    let opened = Instant::now();

    let client = reqwest::Client::new();
    for i in 0..3 {
        health_promptly(&app, &client).await;
        track_promptly(&app, &client, &format!("while-silent-{i}")).await;
    }
    // Every silent connection is closed after the header timeout (2 s), none long after.
    for stream in &mut silent {
        closed_within(stream, Duration::from_secs(8)).await;
    }
    assert!(opened.elapsed() >= Duration::from_millis(1_500));
    let slow_closed = tokio::time::timeout(Duration::from_secs(8), trickle)
        .await
        .expect("the slow client was cut off")
        .unwrap()
        .expect("closed");
    assert!(slow_closed.duration_since(opened) < Duration::from_secs(8));
    // The connection reqwest keeps alive between requests is not silent: it served requests.
    track_promptly(&app, &client, "after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_connection_cap_answers_fast_and_healthz_still_answers() {
    let app = spawn_app_with(options(|c| {
        c.max_connections = 40;
        c.header_timeout = Duration::from_secs(2);
    }))
    .await;
    let _held = silent_connections(app.addr, 40).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let answer = raw_request(
        app.addr,
        "POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Length: 2",
        b"{}",
        Duration::from_secs(5),
    )
    .await;
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(answer.contains("\"too_many_connections\""), "{answer}");

    let started = Instant::now();
    let answer = raw_request(
        app.addr,
        "GET /healthz HTTP/1.1\r\nHost: x",
        b"",
        Duration::from_secs(5),
    )
    .await;
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"last_seq\""), "{answer}");

    // Once the silent connections are cut off, there is room again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    track_promptly(&app, &reqwest::Client::new(), "room-again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_per_connection_are_capped() {
    let app = spawn_app_with(options(|c| c.http2_max_streams = 5)).await;
    let budget = app.bodies.available_bytes();
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();

    // 30 requests whose bodies never finish, on one connection (prior knowledge).
    let auth = app.basic_auth();
    let mut open = Vec::new();
    for _ in 0..30 {
        let request = axum::http::Request::post(app.url("/v1/batch"))
            .header("authorization", &auth)
            .body(())
            .unwrap();
        let (response, mut body) = client.send_request(request, false).unwrap();
        body.send_data(bytes::Bytes::from_static(b"{\"batch\":["), false)
            .unwrap();
        open.push((response, body));
        client = client.ready().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        client.current_max_send_streams(),
        5,
        "the server's SETTINGS"
    );
    // Each body being read reserves the batch limit (no length given): exactly five are.
    let reserved = budget - app.bodies.available_bytes();
    let per_body = (500 << 10) + 1024;
    assert_eq!(reserved, 5 * per_body, "{} bodies", reserved / per_body);
    // Other clients are unaffected.
    track_promptly(&app, &reqwest::Client::new(), "beside-h2").await;
}

#[tokio::test]
async fn a_wrong_key_in_a_header_is_refused_before_the_body_is_read() {
    let app = spawn_app_with(options(|c| c.body_timeout = Duration::from_secs(20))).await;
    let wrong = basic("not-a-key", true);
    // A huge declared body that never comes: the 401 arrives anyway, at once.
    for route in ["/v1/batch", "/v1/track", "/v1/t"] {
        let started = Instant::now();
        let answer = raw_request(
            app.addr,
            &format!(
                "POST {route} HTTP/1.1\r\nHost: x\r\nAuthorization: {wrong}\r\n\
                 Content-Type: application/json\r\nContent-Length: 500000"
            ),
            b"{\"batch\":",
            Duration::from_secs(5),
        )
        .await;
        assert!(
            started.elapsed() < PROMPT,
            "{route}: {:?}",
            started.elapsed()
        );
        assert!(answer.starts_with("HTTP/1.1 401"), "{route}: {answer}");
        assert!(answer.contains("\"unknown_write_key\""), "{answer}");
    }
    // The Klaviyo API and the admin API check their key before the body too.
    for (route, scheme) in [
        ("/api/profiles", "Klaviyo-API-Key"),
        ("/admin/v1/sources", "Bearer"),
    ] {
        let answer = raw_request(
            app.addr,
            &format!(
                "POST {route} HTTP/1.1\r\nHost: x\r\nAuthorization: {scheme} pk_wrong\r\n\
                 revision: 2026-07-15\r\nContent-Type: application/json\r\nContent-Length: 1000000"
            ),
            b"{",
            Duration::from_secs(5),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{route}: {answer}");
    }
    // An unsubscribe link's token is checked before its body.
    let answer = raw_request(
        app.addr,
        "POST /u/forged-token HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000",
        b"List-",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("not valid"), "{answer}");
    assert_eq!(
        app.bodies.available_bytes(),
        64 << 20,
        "every reservation returned"
    );
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_answered_408() {
    let app = spawn_app_with(options(|c| c.body_timeout = Duration::from_secs(1))).await;
    let auth = app.basic_auth();
    let started = Instant::now();
    let answer = raw_request(
        app.addr,
        &format!(
            "POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 400"
        ),
        b"{\"batch\":[",
        Duration::from_secs(10),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(app.bodies.available_bytes(), 64 << 20);
    assert!(app.calls().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_budget_is_reserved_before_reading_and_refuses_fast_when_spent() {
    let app = spawn_app_with(options(|c| c.max_body_bytes_in_flight = 600_000)).await;
    let auth = app.basic_auth();
    // One stalled body takes 500 kB of the 600 kB budget.
    let mut stalled = TcpStream::connect(app.addr).await.unwrap();
    stalled
        .write_all(
            format!(
                "POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\
                 Content-Length: 500000\r\n\r\n{{\"batch\":["
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let answer = raw_request(
        app.addr,
        &format!(
            "POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 200000"
        ),
        b"{",
        Duration::from_secs(5),
    )
    .await;
    assert!(started.elapsed() < PROMPT, "{:?}", started.elapsed());
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["success"], false);
    assert_eq!(body["code"], "overloaded");
    // A small call fits beside it.
    track_promptly(&app, &reqwest::Client::new(), "small").await;
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(app.bodies.available_bytes() >= 600_000);
}

#[tokio::test]
async fn the_settings_name_the_public_url_never_the_host_header() {
    let app = spawn_app_with(options(|c| {
        c.public_url = Some("https://track.example.com:8443/".into())
    }))
    .await;
    let route = format!("/v1/projects/{}/settings", app.write_key.expose());
    let answer = app.get(&route, &[("host", "evil.example")]).await;
    assert_eq!(answer.status, 200);
    let segment = &answer.body["integrations"]["Segment.io"];
    assert_eq!(segment["apiHost"], "track.example.com:8443/v1");
    assert_eq!(segment["protocol"], "https");

    // Without a public URL: the listening address, still not the Host header.
    let app = spawn_app_with(options(|_| {})).await;
    let route = format!("/v1/projects/{}/settings", app.write_key.expose());
    let answer = app.get(&route, &[("host", "evil.example")]).await;
    let segment = &answer.body["integrations"]["Segment.io"];
    assert_eq!(segment["apiHost"], format!("{}/v1", app.addr));
    assert_eq!(segment["protocol"], "http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_half_sent_request_only_until_its_deadline() {
    let mut app = spawn_app_with(options(|c| {
        c.shutdown_timeout = Duration::from_secs(1);
        c.body_timeout = Duration::from_secs(60);
    }))
    .await;
    track_promptly(&app, &reqwest::Client::new(), "before-stop").await;
    let auth = app.basic_auth();
    let mut half = TcpStream::connect(app.addr).await.unwrap();
    half.write_all(
        format!("POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 1000\r\n\r\n{{")
            .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let server = app.begin_stop();
    let stopped = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stopped within its deadline and slack");
    stopped.unwrap().expect("stopped cleanly");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    closed_within(&mut half, Duration::from_secs(2)).await;

    app.serve_again().await;
    let ids: Vec<String> = app
        .export()
        .await
        .iter()
        .map(|c| c["messageId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["before-stop"]);
}

#[tokio::test]
async fn a_keep_alive_connection_is_closed_after_the_idle_timeout_not_before() {
    let app = spawn_app_with(options(|c| {
        c.header_timeout = Duration::from_secs(10);
        c.idle_timeout = Duration::from_secs(2);
    }))
    .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    let answered = Instant::now();
    closed_within(&mut stream, Duration::from_secs(8)).await;
    let idle = answered.elapsed();
    assert!(
        idle >= Duration::from_millis(1_500),
        "closed after {idle:?}"
    );
    assert!(idle < Duration::from_secs(8), "closed after {idle:?}");
}
