//! `signalbox bench destinations`: how fast the delivery engine moves accepted calls to a
//! receiver, measured through the real server and a receiver in this process.
//!
//! Three phases, each against a fresh `serve --allow-private-destinations` child whose
//! `webhook` destinations point at the receiver (made with `destination create` before the
//! server starts, so they run from its first second):
//! - **delivery**: a closed loop fills the log while the destination is paused; then it is
//!   resumed and the receiver counts how fast the backlog arrives (one destination, batched).
//! - **lag**: an open loop at `--rate` events/s with the destination running, while a probe
//!   sends one `track` every 20 ms with a known `messageId`: the time from the probe's 200 on
//!   `/v1/track` to the receiver's 200 for the batch that carried it.
//! - **overhead**: the same closed loop against a server without destinations, one with three
//!   running, and `serve --discard` (the ceiling): what delivery costs ingest.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use axum::extract::{Path as UrlPath, State};
use axum::routing::post;
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::time::Instant;

use super::load::{self, new_histogram, thousands, PhaseSpec, Target};
use super::payload::BodyFactory;
use super::report::sparkline;
use super::server::ServerChild;
use super::{bench_dir, warm_up, Settings};
use crate::cli::DestinationsBenchArgs;

/// How often the probe sends a tracked call during the lag phase.
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// How long delivery may take to catch up before the run gives up.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);
/// Destinations of the overhead phase.
const OVERHEAD_DESTINATIONS: usize = 3;
/// The prefix of the probes' message ids, found in the receiver's bodies.
const PROBE_PREFIX: &[u8] = b"bench-probe-";

pub async fn run(args: DestinationsBenchArgs) -> anyhow::Result<()> {
    let settings = Settings::parse(
        &args.duration,
        &args.warmup,
        args.connections,
        args.rate,
        args.batch_size,
    )?;
    let factory = Arc::new(BodyFactory::new(
        args.batch_size,
        super::IdStyle::Sequential,
        rand::random(),
    ));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "signalbox bench destinations: {cores} cores, {} calls per request, {} connections, {} s per phase",
        args.batch_size,
        settings.connections,
        settings.duration.as_secs_f64()
    );
    let receiver = Receiver::start().await?;
    let mut figures = serde_json::Map::new();

    let delivery = delivery(&settings, &factory, &receiver).await?;
    delivery.print();
    figures.insert("delivery".into(), serde_json::to_value(&delivery)?);

    let lag = lag(&settings, &factory, &receiver).await?;
    lag.print(args.rate);
    figures.insert("lag".into(), serde_json::to_value(&lag)?);

    let overhead = overhead(&settings, &factory, &receiver).await?;
    overhead.print();
    figures.insert("overhead".into(), serde_json::to_value(&overhead)?);

    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&figures)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("figures written to {}", path.display());
    }
    Ok(())
}

#[derive(Debug, serde::Serialize)]
struct Delivery {
    /// Events acknowledged while the destination was paused.
    backlog: u64,
    ingest_events_per_sec: f64,
    /// Events delivered per second from the resume to the last one.
    delivered_events_per_sec: f64,
    drain_seconds: f64,
    requests: u64,
    /// Delivered per second, each second of the drain.
    delivered_timeline: Vec<u64>,
}

impl Delivery {
    fn print(&self) {
        println!();
        println!("delivery (one webhook destination, a backlog in the log)");
        println!(
            "  backlog                      {:>10} events   (ingested at {} events/s, destination paused)",
            thousands(self.backlog),
            thousands(self.ingest_events_per_sec as u64)
        );
        println!(
            "  delivered                    {:>10} events/s   ({:.1} s, {} requests, {} calls each)",
            thousands(self.delivered_events_per_sec as u64),
            self.drain_seconds,
            thousands(self.requests),
            self.backlog / self.requests.max(1)
        );
        println!(
            "  delivered per second         {}",
            sparkline(&self.delivered_timeline, 60)
        );
    }
}

#[derive(Debug, serde::Serialize)]
struct Lag {
    ingest_events_per_sec: f64,
    probes: u64,
    /// From the probe's 200 on `/v1/track` to the receiver's 200, in milliseconds.
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Events acknowledged but not yet delivered when the load ended.
    behind_at_end: u64,
    delivered_timeline: Vec<u64>,
}

impl Lag {
    fn print(&self, rate: u64) {
        println!();
        println!(
            "lag at {} events/s (one webhook destination)",
            thousands(rate)
        );
        println!(
            "  ingest achieved              {:>10} events/s",
            thousands(self.ingest_events_per_sec as u64)
        );
        println!(
            "  200 -> receiver's 200        p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms   ({} probes)",
            self.p50_ms, self.p99_ms, self.max_ms, self.probes
        );
        println!(
            "  behind when the load ended   {} events",
            thousands(self.behind_at_end)
        );
        println!(
            "  delivered per second         {}",
            sparkline(&self.delivered_timeline, 60)
        );
    }
}

#[derive(Debug, serde::Serialize)]
struct Overhead {
    without_destinations_events_per_sec: f64,
    with_destinations_events_per_sec: f64,
    destinations: usize,
    /// How much lower ingest was with the destinations running, in percent.
    drop_percent: f64,
    /// Events each destination had delivered when the load ended, over the events acknowledged.
    delivered_during_load: Vec<u64>,
    acknowledged: u64,
    /// The same closed loop against `serve --discard`.
    ceiling_events_per_sec: f64,
}

impl Overhead {
    fn print(&self) {
        println!();
        println!("ingest with and without destinations (closed loop)");
        println!(
            "  no destinations              {:>10} events/s",
            thousands(self.without_destinations_events_per_sec as u64)
        );
        println!(
            "  {} webhook destinations       {:>10} events/s   ({:+.1} %)",
            self.destinations,
            thousands(self.with_destinations_events_per_sec as u64),
            -self.drop_percent
        );
        let delivered: Vec<String> = self
            .delivered_during_load
            .iter()
            .map(|n| thousands(*n))
            .collect();
        println!(
            "  delivered during the load    {} of {} events",
            delivered.join(" / "),
            thousands(self.acknowledged)
        );
        println!(
            "  ceiling (serve --discard)    {:>10} events/s",
            thousands(self.ceiling_events_per_sec as u64)
        );
    }
}

async fn delivery(
    settings: &Settings,
    factory: &Arc<BodyFactory>,
    receiver: &Receiver,
) -> anyhow::Result<Delivery> {
    let dir = bench_dir()?;
    let hook = receiver.reset();
    create_destination(dir.path(), "bench-0", &receiver.url(hook)).await?;
    signalbox(dir.path(), &["destination", "pause", "bench-0"]).await?;
    let child = start_server(dir.path()).await?;
    let target = Arc::new(Target::new(&child.base_url, &child.write_key)?);
    let warmed = warm_up(settings, factory, &target).await;
    let stats = load::closed_loop(
        &target,
        factory,
        settings.connections,
        PhaseSpec {
            label: "filling the log",
            duration: settings.duration,
            watch: true,
            server_pid: Some(child.pid()),
        },
    )
    .await;
    let backlog = warmed + stats.events;
    if receiver.messages(hook) != 0 {
        bail!("the paused destination delivered");
    }
    let requests_before = receiver.requests();
    let sampler = Sampler::start(receiver.clone(), hook);
    let started = Instant::now();
    signalbox(dir.path(), &["destination", "resume", "bench-0"]).await?;
    let done = receiver.wait_for(hook, backlog, DRAIN_LIMIT).await;
    let drain_seconds = started.elapsed().as_secs_f64();
    let timeline = sampler.stop().await;
    child.stop().await?;
    if !done {
        bail!(
            "only {} of {backlog} events arrived within {DRAIN_LIMIT:?}",
            receiver.messages(hook)
        );
    }
    Ok(Delivery {
        backlog,
        ingest_events_per_sec: stats.events as f64 / stats.elapsed.as_secs_f64(),
        delivered_events_per_sec: backlog as f64 / drain_seconds,
        drain_seconds,
        requests: receiver.requests() - requests_before,
        delivered_timeline: timeline,
    })
}

async fn lag(
    settings: &Settings,
    factory: &Arc<BodyFactory>,
    receiver: &Receiver,
) -> anyhow::Result<Lag> {
    let dir = bench_dir()?;
    let hook = receiver.reset();
    create_destination(dir.path(), "bench-0", &receiver.url(hook)).await?;
    let child = start_server(dir.path()).await?;
    let target = Arc::new(Target::new(&child.base_url, &child.write_key)?);
    let warmed = warm_up(settings, factory, &target).await;
    receiver.wait_for(hook, warmed, DRAIN_LIMIT).await;

    let probe = Probe::start(&child.base_url, &child.write_key, receiver.clone())?;
    let sampler = Sampler::start(receiver.clone(), hook);
    let stats = load::open_loop(
        &target,
        factory,
        settings.batches_per_sec,
        128,
        PhaseSpec {
            label: "lag",
            duration: settings.duration,
            watch: true,
            server_pid: Some(child.pid()),
        },
    )
    .await;
    let (histogram, probes) = probe.stop().await?;
    let acknowledged = warmed + stats.events + probes;
    let behind_at_end = acknowledged.saturating_sub(receiver.messages(hook));
    receiver.wait_for(hook, acknowledged, DRAIN_LIMIT).await;
    let timeline = sampler.stop().await;
    child.stop().await?;
    if histogram.is_empty() {
        bail!("no probe reached the receiver");
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(Lag {
        ingest_events_per_sec: stats.events as f64 / stats.elapsed.as_secs_f64(),
        probes: histogram.len(),
        p50_ms: ms(histogram.value_at_quantile(0.5)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        max_ms: ms(histogram.max()),
        behind_at_end,
        delivered_timeline: timeline,
    })
}

async fn overhead(
    settings: &Settings,
    factory: &Arc<BodyFactory>,
    receiver: &Receiver,
) -> anyhow::Result<Overhead> {
    let closed = |label| PhaseSpec {
        label,
        duration: settings.duration,
        watch: true,
        server_pid: None,
    };

    let without = {
        let dir = bench_dir()?;
        let child = start_server(dir.path()).await?;
        let target = Arc::new(Target::new(&child.base_url, &child.write_key)?);
        warm_up(settings, factory, &target).await;
        let stats = load::closed_loop(
            &target,
            factory,
            settings.connections,
            PhaseSpec {
                server_pid: Some(child.pid()),
                ..closed("no destinations")
            },
        )
        .await;
        child.stop().await?;
        stats.events as f64 / stats.elapsed.as_secs_f64()
    };

    let dir = bench_dir()?;
    let mut hooks = Vec::new();
    for n in 0..OVERHEAD_DESTINATIONS {
        let hook = receiver.reset_one(n);
        create_destination(dir.path(), &format!("bench-{n}"), &receiver.url(hook)).await?;
        hooks.push(hook);
    }
    let child = start_server(dir.path()).await?;
    let target = Arc::new(Target::new(&child.base_url, &child.write_key)?);
    let warmed = warm_up(settings, factory, &target).await;
    let stats = load::closed_loop(
        &target,
        factory,
        settings.connections,
        PhaseSpec {
            server_pid: Some(child.pid()),
            ..closed("three destinations")
        },
    )
    .await;
    let with = stats.events as f64 / stats.elapsed.as_secs_f64();
    let delivered_during_load: Vec<u64> = hooks
        .iter()
        .map(|hook| receiver.messages(*hook).saturating_sub(warmed))
        .collect();
    child.stop().await?;

    let ceiling = {
        let dir = bench_dir()?;
        let child = ServerChild::start(dir.path(), true).await?;
        let target = Arc::new(Target::new(&child.base_url, &child.write_key)?);
        warm_up(settings, factory, &target).await;
        let stats = load::closed_loop(
            &target,
            factory,
            settings.connections,
            PhaseSpec {
                server_pid: Some(child.pid()),
                ..closed("ceiling")
            },
        )
        .await;
        child.stop().await?;
        stats.events as f64 / stats.elapsed.as_secs_f64()
    };

    Ok(Overhead {
        without_destinations_events_per_sec: without,
        with_destinations_events_per_sec: with,
        destinations: OVERHEAD_DESTINATIONS,
        drop_percent: (1.0 - with / without.max(1.0)) * 100.0,
        delivered_during_load,
        acknowledged: stats.events,
        ceiling_events_per_sec: ceiling,
    })
}

async fn start_server(dir: &std::path::Path) -> anyhow::Result<ServerChild> {
    ServerChild::start_with(dir, false, &["--allow-private-destinations"]).await
}

/// `signalbox destination create NAME --kind webhook` for the default source.
async fn create_destination(dir: &std::path::Path, name: &str, url: &str) -> anyhow::Result<()> {
    // The default source exists once a server started; make it now through `source create`
    // when the folder is new, as `serve` would.
    ensure_default_source(dir).await?;
    signalbox(
        dir,
        &[
            "destination",
            "create",
            name,
            "--kind",
            "webhook",
            "--url",
            url,
            "--source",
            "default",
        ],
    )
    .await
}

async fn ensure_default_source(dir: &std::path::Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let output = tokio::process::Command::new(exe)
        .arg("--data-dir")
        .arg(dir)
        .args(["source", "create", "default"])
        .env_remove("SIGNALBOX_DATABASE_URL")
        .output()
        .await
        .context("cannot run source create")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() || stderr.contains("already exists") {
        return Ok(());
    }
    bail!("source create failed: {stderr}")
}

/// Runs this binary's CLI on the benchmark's data folder.
async fn signalbox(dir: &std::path::Path, args: &[&str]) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let output = tokio::process::Command::new(exe)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("SIGNALBOX_DATABASE_URL")
        .output()
        .await
        .with_context(|| format!("cannot run signalbox {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "signalbox {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Hooks (URL paths) of the receiver: one per destination of a phase.
const HOOKS: usize = 8;

/// A webhook receiver in this process: counts the calls each hook gets (by their
/// `messageId`s) and the arrival of each probe.
#[derive(Clone)]
struct Receiver {
    base: String,
    state: Arc<ReceiverState>,
}

struct ReceiverState {
    messages: [AtomicU64; HOOKS],
    requests: AtomicU64,
    /// Probe number → when the batch that carried it arrived.
    probes: Mutex<std::collections::HashMap<u64, Instant>>,
    changed: tokio::sync::Notify,
}

impl Receiver {
    async fn start() -> anyhow::Result<Receiver> {
        let state = Arc::new(ReceiverState {
            messages: Default::default(),
            requests: AtomicU64::new(0),
            probes: Mutex::default(),
            changed: tokio::sync::Notify::new(),
        });
        let app = axum::Router::new()
            .route("/hook/{n}", post(receive))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the receiver")?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver { base, state })
    }

    fn url(&self, hook: usize) -> String {
        format!("{}/hook/{hook}", self.base)
    }

    /// Clears every counter; returns hook 0.
    fn reset(&self) -> usize {
        for n in 0..HOOKS {
            self.reset_one(n);
        }
        self.state.probes.lock().expect("probes lock").clear();
        0
    }

    fn reset_one(&self, hook: usize) -> usize {
        self.state.messages[hook].store(0, Ordering::SeqCst);
        hook
    }

    fn messages(&self, hook: usize) -> u64 {
        self.state.messages[hook].load(Ordering::SeqCst)
    }

    fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    fn probe_arrival(&self, n: u64) -> Option<Instant> {
        self.state
            .probes
            .lock()
            .expect("probes lock")
            .get(&n)
            .copied()
    }

    /// Waits until `hook` has `count` calls; false at the timeout.
    async fn wait_for(&self, hook: usize, count: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let changed = self.state.changed.notified();
            if self.messages(hook) >= count {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.messages(hook) >= count;
            }
        }
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    UrlPath(hook): UrlPath<usize>,
    body: Bytes,
) -> axum::http::StatusCode {
    let arrived = Instant::now();
    if hook >= HOOKS {
        return axum::http::StatusCode::NOT_FOUND;
    }
    let calls = memchr::memmem::find_iter(&body, b"\"messageId\"").count() as u64;
    let mut probes = Vec::new();
    for at in memchr::memmem::find_iter(&body, PROBE_PREFIX) {
        let digits = body[at + PROBE_PREFIX.len()..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let text = &body[at + PROBE_PREFIX.len()..at + PROBE_PREFIX.len() + digits];
        if let Some(n) = std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
        {
            probes.push(n);
        }
    }
    if !probes.is_empty() {
        let mut seen = state.probes.lock().expect("probes lock");
        for n in probes {
            seen.entry(n).or_insert(arrived);
        }
    }
    state.messages[hook].fetch_add(calls, Ordering::SeqCst);
    state.requests.fetch_add(1, Ordering::SeqCst);
    state.changed.notify_waiters();
    axum::http::StatusCode::OK
}

/// Samples a hook's count every second.
struct Sampler {
    task: tokio::task::JoinHandle<Vec<u64>>,
    stop: Arc<tokio::sync::Notify>,
}

impl Sampler {
    fn start(receiver: Receiver, hook: usize) -> Sampler {
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut out = Vec::new();
            let mut last = receiver.messages(hook);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let now = receiver.messages(hook);
                        out.push(now.saturating_sub(last));
                        last = now;
                    }
                    _ = stopped.notified() => return out,
                }
            }
        });
        Sampler { task, stop }
    }

    async fn stop(self) -> Vec<u64> {
        self.stop.notify_one();
        self.task.await.unwrap_or_default()
    }
}

/// Sends a `track` with a known `messageId` every [`PROBE_EVERY`] and remembers its 200.
struct Probe {
    stop: Arc<tokio::sync::Notify>,
    sender: tokio::task::JoinHandle<Vec<(u64, Instant)>>,
    receiver: Receiver,
}

impl Probe {
    fn start(base: &str, write_key: &str, receiver: Receiver) -> anyhow::Result<Probe> {
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()?;
        let url = format!("{}/v1/track", base.trim_end_matches('/'));
        let write_key = write_key.to_owned();
        let stop = Arc::new(tokio::sync::Notify::new());
        let sender = {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut tick = tokio::time::interval(PROBE_EVERY);
                for n in 1u64.. {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.notified() => break,
                    }
                    let body = json!({
                        "userId": "bench-probe",
                        "event": "Bench Probe",
                        "messageId": format!("bench-probe-{n}"),
                        "properties": {"n": n},
                    });
                    let sent = client
                        .post(&url)
                        .basic_auth(&write_key, Some(""))
                        .json(&body)
                        .send()
                        .await;
                    if matches!(&sent, Ok(response) if response.status().is_success()) {
                        acked.push((n, Instant::now()));
                    }
                }
                acked
            })
        };
        Ok(Probe {
            stop,
            sender,
            receiver,
        })
    }

    /// Stops sending, waits for every acknowledged probe to arrive; returns the lags (µs)
    /// and how many probes were acknowledged.
    async fn stop(self) -> anyhow::Result<(Histogram<u64>, u64)> {
        self.stop.notify_one();
        let acked = self.sender.await.context("the probe sender failed")?;
        let deadline = Instant::now() + DRAIN_LIMIT;
        let mut histogram = new_histogram();
        for (n, at) in &acked {
            let arrived = loop {
                if let Some(arrived) = self.receiver.probe_arrival(*n) {
                    break arrived;
                }
                if Instant::now() > deadline {
                    bail!("probe {n} did not reach the receiver within {DRAIN_LIMIT:?}");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            histogram.saturating_record(arrived.saturating_duration_since(*at).as_micros() as u64);
        }
        Ok((histogram, acked.len() as u64))
    }
}
