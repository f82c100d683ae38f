//! The real `signalbox serve` against hostile clients: thousands of stalled request bodies
//! (memory stays bounded, other clients keep being answered), SIGTERM with a half-sent request
//! (the process exits within its deadline, having kept what it acknowledged), and links and
//! the Tracking API host taken from `--public-url`, never from a forged `Host`.
//! `SIGNALBOX_TEST_BACKEND=postgres` runs them on PostgreSQL (`common/backend.rs`).

#[path = "common/backend.rs"]
mod backend;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use backend::Backend;

const BIN: &str = env!("CARGO_BIN_EXE_signalbox");
/// How long a server may take to print its banner.
const STARTUP: Duration = Duration::from_secs(30);
/// How long a call that must be answered at once may take on a busy machine.
const PROMPT: Duration = Duration::from_secs(1);
/// The bound on the server's resident memory while it holds the stalled bodies. An idle
/// server is around 150-200 MB (page caches and indexes of its stores); before bodies were
/// budgeted, 1,200 stalled bodies took it to 1.45 GB.
const RSS_LIMIT_KB: u64 = 300 * 1024;

/// `signalbox serve` on a temporary data folder and a random port.
struct Server {
    child: Child,
    addr: SocketAddr,
    write_key: String,
    log: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    async fn start(data_dir: &Path, backend: &Backend, args: &[&str]) -> anyhow::Result<Server> {
        let log = data_dir.with_extension(format!("{}.log", uuid::Uuid::new_v4().simple()));
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(backend.args())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("SIGNALBOX_LOG", "info")
            .env_remove("SIGNALBOX_DATABASE_URL")
            .env_remove("SIGNALBOX_PUBLIC_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start signalbox serve")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let (addr, write_key) = tokio::time::timeout(STARTUP, async {
            let mut addr = None;
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix("Signalbox is listening on http://") {
                    addr = Some(rest.trim().parse::<SocketAddr>()?);
                }
                if line.trim_start().starts_with("Write key") {
                    let key = line.split_whitespace().nth(2).context("key")?.to_owned();
                    return Ok::<_, anyhow::Error>((addr.context("address first")?, key));
                }
            }
            bail!("stdout closed before the banner")
        })
        .await
        .context("no banner in time")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server {
            child,
            addr,
            write_key,
            log,
            _dir: None,
        })
    }

    fn url(&self, route: &str) -> String {
        format!("http://{}{route}", self.addr)
    }

    fn basic_auth(&self) -> String {
        let user = format!("{}:", self.write_key);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user)
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server's resident memory, from `/proc/<pid>/status`.
    fn rss_kb(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS")
    }

    async fn track(&self, client: &reqwest::Client, id: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let answer = client
            .post(self.url("/v1/track"))
            .header("authorization", self.basic_auth())
            .json(&json!({"userId": "u1", "event": "Edge Checked", "messageId": id}))
            .timeout(Duration::from_secs(10))
            .send()
            .await?;
        let status = answer.status();
        let text = answer.text().await?;
        ensure!(status == 200, "track {id}: {status} {text}");
        Ok(started.elapsed())
    }

    async fn sigterm(&mut self) -> anyhow::Result<()> {
        let pid = self.child.id().context("already exited")?;
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        ensure!(sent.success(), "kill -TERM failed");
        Ok(())
    }
}

fn raise_open_files() {
    // This process holds thousands of client sockets.
    signalbox_server::edge::raise_open_files_limit();
}

async fn export_ids(data_dir: &Path, backend: &Backend) -> anyhow::Result<Vec<String>> {
    let output = Command::new(BIN)
        .args(["events", "export", "--data-dir"])
        .arg(data_dir)
        .args(backend.args())
        .env_remove("SIGNALBOX_DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .await?;
    ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)?
        .lines()
        .map(|line| {
            let call: Value = serde_json::from_str(line)?;
            call["messageId"]
                .as_str()
                .map(str::to_owned)
                .context("a messageId")
        })
        .collect()
}

/// 2,000 silent connections (connected, nothing sent), then 2,000 connections that each
/// declare a 500 kB batch, send its first 16 KiB, then nothing. The body budget (64 MiB) lets
/// 134 of them be read at once and refuses the rest at once; all the while a normal client
/// keeps getting 200s within a second, and the server's RSS stays under 300 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_stalled_bodies_neither_starve_clients_nor_grow_memory() {
    raise_open_files();
    let backend = Backend::new();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &backend,
        &["--body-timeout", "20s"],
    )
    .await
    .unwrap();
    let client = reqwest::Client::new();
    server.track(&client, "warm-up").await.unwrap();
    let idle_rss = server.rss_kb().unwrap();

    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\
         Content-Type: application/json\r\nContent-Length: 500000\r\n\r\n{{\"batch\":[",
        server.basic_auth()
    );
    let start_of_body = format!("{head}{}", " ".repeat(16 * 1024));
    let mut stalled = Vec::new();
    let mut refused = 0;
    let mut max_rss = idle_rss;
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    let mut silent = Vec::new();
    for i in 0..2_000 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
        if i % 500 == 499 {
            slowest = slowest.max(server.track(&client, &format!("silent-{i}")).await.unwrap());
            max_rss = max_rss.max(server.rss_kb().unwrap());
        }
    }
    for i in 0..2_000 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        // A refused connection may be closed before all of it is written.
        let _ = stream.write_all(start_of_body.as_bytes()).await;
        stalled.push(stream);
        if i % 250 == 249 {
            slowest = slowest.max(server.track(&client, &format!("during-{i}")).await.unwrap());
            max_rss = max_rss.max(server.rss_kb().unwrap());
        }
    }
    // Every connection is open or was refused; keep probing while they stall.
    for i in 0..10 {
        slowest = slowest.max(
            server
                .track(&client, &format!("stalled-{i}"))
                .await
                .unwrap(),
        );
        max_rss = max_rss.max(server.rss_kb().unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Each connection was answered 503 (and closed), or is still being read.
    let mut still_open = 0;
    for stream in &mut stalled {
        let mut first = [0u8; 12];
        match tokio::time::timeout(Duration::from_millis(5), stream.read(&mut first)).await {
            Err(_) => still_open += 1,
            Ok(Ok(n)) if n > 0 && !b"HTTP/1.1 503".starts_with(&first[..n]) => {
                panic!(
                    "unexpected answer {:?}",
                    String::from_utf8_lossy(&first[..n])
                )
            }
            // The 503, or the reset of a connection closed with its body unread.
            Ok(_) => refused += 1,
        }
    }
    drop(silent);
    println!(
        "2,000 silent connections and 2,000 stalled bodies in {:?}: {refused} refused at once, {still_open} read, slowest track {slowest:?}, \
         RSS {} MB idle, {} MB at most",
        started.elapsed(),
        idle_rss / 1024,
        max_rss / 1024
    );
    assert!(slowest < PROMPT, "a track call took {slowest:?}");
    assert!(
        max_rss < RSS_LIMIT_KB,
        "RSS reached {} MB\n{}",
        max_rss / 1024,
        server.log()
    );
    // 64 MiB of budget holds 134 bodies of 500 kB.
    assert!(still_open <= 140, "{still_open} bodies are being read");
    assert!(refused >= 1_850, "only {refused} refused");
}

/// SIGTERM while a request's body is half sent: the server stops accepting, waits for it up to
/// `--shutdown-timeout`, then closes it and exits 0; what it acknowledged is in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_half_sent_request_exits_within_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backend = Backend::new();
    let mut server = Server::start(
        &data,
        &backend,
        &["--shutdown-timeout", "2s", "--body-timeout", "60s"],
    )
    .await
    .unwrap();
    let client = reqwest::Client::new();
    server.track(&client, "acknowledged-1").await.unwrap();
    server.track(&client, "acknowledged-2").await.unwrap();
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(
        format!(
            "POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\
             Content-Length: 5000\r\n\r\n{{\"batch\":[",
            server.basic_auth()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    server.sigterm().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), server.child.wait())
        .await
        .expect("exited within 10 s")
        .unwrap();
    let took = signalled.elapsed();
    assert!(status.success(), "exit {status}\n{}", server.log());
    assert!(took >= Duration::from_millis(1_500), "{took:?}");
    assert!(
        took < Duration::from_secs(2 + 5),
        "{took:?}\n{}",
        server.log()
    );
    let log = server.log();
    assert!(log.contains("shutdown deadline passed"), "{log}");
    assert_eq!(
        export_ids(&data, &backend).await.unwrap(),
        ["acknowledged-1", "acknowledged-2"]
    );
}

/// With `--public-url`, the settings analytics.js loads and the links in emails (a double
/// opt-in's confirmation and unsubscribe links) name that URL, whatever `Host` a request
/// carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_and_the_api_host_come_from_the_public_url_not_the_host_header() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backend = Backend::new();
    let api_key = std::process::Command::new(BIN)
        .args(backend.args())
        .args([
            "api-key",
            "create",
            "edge",
            "--scope",
            "full,admin",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(api_key.status.success());
    let api_key = String::from_utf8(api_key.stdout).unwrap().trim().to_owned();
    let server = Server::start(
        &data,
        &backend,
        &["--public-url", "https://track.example.com"],
    )
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let forged = "evil.example";

    let settings: Value = client
        .get(server.url(&format!("/v1/projects/{}/settings", server.write_key)))
        .header("host", forged)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let segment = &settings["integrations"]["Segment.io"];
    assert_eq!(segment["apiHost"], "track.example.com/v1");
    assert_eq!(segment["protocol"], "https");

    let admin = |method: reqwest::Method, route: &str| {
        client
            .request(method, server.url(route))
            .header("host", forged)
            .header("authorization", format!("Bearer {api_key}"))
    };
    let created: Value = client
        .post(server.url("/api/lists"))
        .header("host", forged)
        .header("authorization", format!("Klaviyo-API-Key {api_key}"))
        .header("revision", "2026-07-15")
        .json(&json!({"data": {"type": "list", "attributes": {"name": "News", "opt_in_process": "double_opt_in"}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = created["data"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"));
    let identify = json!({"userId": "u1", "traits": {"email": "ann@example.com"},
        "integrations": {"Klaviyo": {"listId": list}}});
    let answer = client
        .post(server.url("/v1/identify"))
        .header("authorization", server.basic_auth())
        .json(&identify)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    let deadline = Instant::now() + Duration::from_secs(20);
    let pending = loop {
        let page: Value = admin(
            reqwest::Method::GET,
            &format!("/admin/v1/lists/{list}/pending"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        if page["data"].as_array().is_some_and(|d| !d.is_empty()) || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let member = &pending["data"][0];
    for field in ["confirmUrl", "unsubscribeUrl"] {
        let url = member[field]
            .as_str()
            .unwrap_or_else(|| panic!("{pending}"));
        assert!(
            url.starts_with("https://track.example.com/"),
            "{field}: {url}"
        );
    }
}
