//! `signalbox bench pipeline`: how fast the engage pipeline turns accepted calls into
//! profiles and events, measured through the real server.
//!
//! Two phases, each against a fresh `serve` child:
//! - **throughput**: a closed loop posts `/v1/batch` requests for `--duration`, then the
//!   pipeline drains what is left. Reports the ingest rate, the rate at which the pipeline
//!   applied events while ingest ran, and its rate alone while draining the backlog (the
//!   pipeline's own ceiling), with a sparkline of applied events per second.
//! - **latency**: an open loop at `--rate` events/s while a probe sends one `track` every
//!   50 ms and watches the probe profile's activity feed (`/api/events`, newest first):
//!   the time from the probe's 200 to its event being readable there. Meanwhile a reader
//!   gets one profile by id (`/api/profiles/{id}`, with an API key) every 10 ms: the
//!   latency of the Klaviyo-compatible reads under load.
//!
//! `--backends embedded,postgres` runs both phases once for each store (PostgreSQL on a
//! fresh database for each server) and prints them side by side.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use reqwest::header::{ACCEPT, AUTHORIZATION};
use serde_json::{json, Value};
use tokio::time::Instant;

use signalbox_core::PostgresUrl;

use super::load::{self, new_histogram, thousands, PhaseSpec, Target};
use super::payload::BodyFactory;
use super::report::{backend_name, sparkline};
use super::server::ServerStores;
use super::{choose_backends, warm_up, Settings};
use crate::cli::{BenchBackend, GlobalArgs, PipelineBenchArgs};

/// How often the probe sends a tracked call during the latency phase.
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// How often the probe reads the feed.
const POLL_EVERY: Duration = Duration::from_millis(2);
/// How often a profile is read during the latency phase.
const PROFILE_READ_EVERY: Duration = Duration::from_millis(10);
/// How often the drain is checked (`/metrics`): often enough for a figure within 1 % of a
/// drain of 10 s or more, rarely enough not to load the server it measures.
const DRAIN_POLL: Duration = Duration::from_millis(100);
/// How long the pipeline may take to drain before the run gives up.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);

pub async fn run(global: &GlobalArgs, args: PipelineBenchArgs) -> anyhow::Result<()> {
    let settings = Settings::parse(
        &args.duration,
        &args.warmup,
        args.connections,
        args.rate,
        args.batch_size,
    )?;
    let (backends, postgres) = choose_backends(global, &args.backends)?;
    let factory = Arc::new(BodyFactory::new(
        args.batch_size,
        super::IdStyle::Sequential,
        rand::random(),
    ));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let names: Vec<&str> = backends.iter().map(|b| backend_name(Some(*b))).collect();
    println!(
        "signalbox bench pipeline on {}: {cores} cores, {} calls per request, {} connections, {} s per phase",
        names.join(", "),
        args.batch_size,
        settings.connections,
        settings.duration.as_secs_f64()
    );
    let mut runs = Vec::new();
    for backend in backends {
        println!();
        println!("backend: {}", backend_name(Some(backend)));
        let throughput = throughput(&settings, &factory, backend, postgres.as_ref()).await?;
        throughput.print();
        let latency = latency(&settings, &factory, backend, postgres.as_ref()).await?;
        latency.print(args.rate);
        runs.push(PipelineRun {
            backend,
            throughput,
            latency,
        });
    }
    if runs.len() > 1 {
        print_side_by_side(&runs, args.rate);
    }
    if let Some(path) = &args.json {
        // One backend's figures as they are; several as a list.
        let text = match runs.as_slice() {
            [run] => serde_json::to_string_pretty(run)?,
            runs => serde_json::to_string_pretty(runs)?,
        };
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("figures written to {}", path.display());
    }
    Ok(())
}

/// One backend's figures.
#[derive(Debug, serde::Serialize)]
struct PipelineRun {
    backend: BenchBackend,
    throughput: Throughput,
    latency: LatencyFigures,
}

/// One line per backend of the same run.
fn print_side_by_side(runs: &[PipelineRun], rate: u64) {
    println!();
    println!(
        "side by side (one run; feed and profile reads at {} events/s)",
        thousands(rate)
    );
    println!(
        "{:<10} {:>15} {:>17} {:>17} {:>20} {:>26}",
        "backend",
        "ingest events/s",
        "applied w/ ingest",
        "drain entries/s",
        "feed p50/p99 ms",
        "profile read p50/p99/max"
    );
    for run in runs {
        let (t, l) = (&run.throughput, &run.latency);
        println!(
            "{:<10} {:>15} {:>17} {:>17} {:>20} {:>26}",
            backend_name(Some(run.backend)),
            thousands(t.ingest_events_per_sec as u64),
            thousands(t.applied_while_ingesting_per_sec as u64),
            thousands(t.drain_events_per_sec as u64),
            format!("{:.1} / {:.1}", l.p50_ms, l.p99_ms),
            format!(
                "{:.1} / {:.1} / {:.1} ms",
                l.profile_reads.p50_ms, l.profile_reads.p99_ms, l.profile_reads.max_ms
            ),
        );
    }
}

#[derive(Debug, serde::Serialize)]
struct Throughput {
    ingest_events_per_sec: f64,
    /// Events the pipeline applied while ingest ran, per second.
    applied_while_ingesting_per_sec: f64,
    /// Events applied per second while draining the backlog alone.
    drain_events_per_sec: f64,
    drain_seconds: f64,
    entries: i64,
    /// Entries applied per second, each second from the start of the load to the end of
    /// the drain.
    applied_timeline: Vec<u64>,
}

impl Throughput {
    fn print(&self) {
        println!();
        println!("throughput");
        println!(
            "  ingest (durable, 200s)       {:>10} events/s",
            thousands(self.ingest_events_per_sec as u64)
        );
        println!(
            "  applied during ingest        {:>10} events/s   (sharing the cores with ingest)",
            thousands(self.applied_while_ingesting_per_sec as u64)
        );
        println!(
            "  applied alone (backlog)      {:>10} events/s   ({} entries drained in {:.1} s)",
            thousands(self.drain_events_per_sec as u64),
            thousands(self.entries.max(0) as u64),
            self.drain_seconds
        );
        println!(
            "  applied per second           {}",
            sparkline(&self.applied_timeline, 60)
        );
    }
}

#[derive(Debug, serde::Serialize)]
struct LatencyFigures {
    ingest_events_per_sec: f64,
    probes: u64,
    /// From the probe's 200 to its event in the activity feed, in milliseconds.
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Whether the pipeline had applied everything when the load stopped, and how long the
    /// rest took.
    backlog_at_end: i64,
    drain_seconds: f64,
    /// Reads of one profile by id through the Klaviyo-compatible API while the load ran.
    profile_reads: ProfileReadFigures,
}

#[derive(Debug, serde::Serialize)]
struct ProfileReadFigures {
    reads: u64,
    errors: u64,
    per_sec: f64,
    /// From sending `GET /api/profiles/{id}` to its whole answer, in milliseconds.
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl LatencyFigures {
    fn print(&self, rate: u64) {
        println!();
        println!("latency at {} events/s", thousands(rate));
        println!(
            "  ingest achieved              {:>10} events/s",
            thousands(self.ingest_events_per_sec as u64)
        );
        println!(
            "  200 -> in the activity feed  p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms   ({} probes)",
            self.p50_ms, self.p99_ms, self.max_ms, self.probes
        );
        let reads = &self.profile_reads;
        println!(
            "  GET /api/profiles/{{id}}       p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms   ({} reads at {:.0}/s, {} errors)",
            reads.p50_ms, reads.p99_ms, reads.max_ms, reads.reads, reads.per_sec, reads.errors
        );
        println!(
            "  backlog when the load ended  {} entries, applied {:.1} s later",
            thousands(self.backlog_at_end.max(0) as u64),
            self.drain_seconds
        );
    }
}

async fn throughput(
    settings: &Settings,
    factory: &Arc<BodyFactory>,
    backend: BenchBackend,
    postgres: Option<&PostgresUrl>,
) -> anyhow::Result<Throughput> {
    let stores = ServerStores::create(backend, postgres).await?;
    let child = stores.start(false).await?;
    let observer = Observer::new(&child.base_url)?;
    let target = Arc::new(Target::new(&child.base_url, &child.write_key)?);
    warm_up(settings, factory, &target).await;
    observer.wait_applied(observer.last_seq().await?).await?;
    let base = observer.applied_seq().await?;
    let sampler = Sampler::start(observer.clone());
    let started = Instant::now();
    let stats = load::closed_loop(
        &target,
        factory,
        settings.connections,
        PhaseSpec {
            label: "throughput",
            duration: settings.duration,
            watch: true,
            server_pid: Some(child.pid()),
        },
    )
    .await;
    let ingest_secs = started.elapsed().as_secs_f64();
    let applied_at_end = observer.applied_seq().await?;
    let last = observer.last_seq().await?;
    let draining = Instant::now();
    observer.wait_applied(last).await?;
    let drain_seconds = draining.elapsed().as_secs_f64();
    let timeline = sampler.stop().await;
    child.stop().await?;
    stores.remove().await?;
    let drained = (last - applied_at_end).max(0) as f64;
    // Each entry of the generated batches is one event.
    Ok(Throughput {
        ingest_events_per_sec: stats.events as f64 / stats.elapsed.as_secs_f64(),
        applied_while_ingesting_per_sec: (applied_at_end - base) as f64 / ingest_secs,
        drain_events_per_sec: if drain_seconds > 0.0 {
            drained / drain_seconds
        } else {
            0.0
        },
        drain_seconds,
        entries: last - base,
        applied_timeline: timeline,
    })
}

async fn latency(
    settings: &Settings,
    factory: &Arc<BodyFactory>,
    backend: BenchBackend,
    postgres: Option<&PostgresUrl>,
) -> anyhow::Result<LatencyFigures> {
    let stores = ServerStores::create(backend, postgres).await?;
    let child = stores.start(false).await?;
    let api_key = create_api_key(&stores).await?;
    let observer = Observer::new(&child.base_url)?;
    let probe = Arc::new(Probe::new(&child.base_url, &child.write_key, &api_key).await?);
    let target = Arc::new(Target::new(&child.base_url, &child.write_key)?);
    warm_up(settings, factory, &target).await;
    observer.wait_applied(observer.last_seq().await?).await?;
    let profile_ids = probe.profile_ids().await?;

    let reads = ProfileReads::start(&probe, profile_ids)?;
    let running = Arc::clone(&probe).start();
    let stats = load::open_loop(
        &target,
        factory,
        settings.batches_per_sec,
        128,
        PhaseSpec {
            label: "latency",
            duration: settings.duration,
            watch: true,
            server_pid: Some(child.pid()),
        },
    )
    .await;
    let last = observer.last_seq().await?;
    let backlog = last - observer.applied_seq().await?;
    let draining = Instant::now();
    observer.wait_applied(last).await?;
    let drain_seconds = draining.elapsed().as_secs_f64();
    let histogram = running.stop().await?;
    let profile_reads = reads.stop().await;
    child.stop().await?;
    stores.remove().await?;
    if histogram.is_empty() {
        bail!("no probe reached the activity feed");
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(LatencyFigures {
        ingest_events_per_sec: stats.events as f64 / stats.elapsed.as_secs_f64(),
        probes: histogram.len(),
        p50_ms: ms(histogram.value_at_quantile(0.5)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        max_ms: ms(histogram.max()),
        backlog_at_end: backlog,
        drain_seconds,
        profile_reads,
    })
}

/// A private API key for the Klaviyo-compatible API, made with this binary's CLI on the
/// server's stores.
async fn create_api_key(stores: &ServerStores) -> anyhow::Result<String> {
    let out = stores
        .run_command(&[
            "api-key",
            "create",
            "bench",
            "--scope",
            "profiles:read,events:read",
        ])
        .await?;
    Ok(out.trim().to_owned())
}

/// Reads the server's log and pipeline positions from `/metrics` and `/healthz`.
#[derive(Clone)]
pub(super) struct Observer {
    client: reqwest::Client,
    base: String,
}

impl Observer {
    pub(super) fn new(base: &str) -> anyhow::Result<Observer> {
        Ok(Observer {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    pub(super) async fn last_seq(&self) -> anyhow::Result<i64> {
        let health: Value = self
            .client
            .get(format!("{}/healthz", self.base))
            .send()
            .await?
            .json()
            .await?;
        health["last_seq"]
            .as_i64()
            .context("/healthz has no last_seq")
    }

    pub(super) async fn applied_seq(&self) -> anyhow::Result<i64> {
        self.gauge("signalbox_engage_applied_seq").await
    }

    /// A gauge of `/metrics` (0 before the server first set it).
    pub(super) async fn gauge(&self, name: &str) -> anyhow::Result<i64> {
        Ok(self.gauges(&[name]).await?[0])
    }

    /// Gauges of `/metrics`, read in one scrape, in the order asked (0 for one the server
    /// has not set yet).
    pub(super) async fn gauges<const N: usize>(
        &self,
        names: &[&str; N],
    ) -> anyhow::Result<[i64; N]> {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        Ok(names.map(|name| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map_or(0, |v| v as i64)
        }))
    }

    pub(super) async fn wait_applied(&self, seq: i64) -> anyhow::Result<()> {
        let deadline = Instant::now() + DRAIN_LIMIT;
        while self.applied_seq().await? < seq {
            if Instant::now() > deadline {
                bail!("the pipeline did not reach entry {seq} within {DRAIN_LIMIT:?}");
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
        Ok(())
    }
}

/// Samples the applied position every second.
struct Sampler {
    task: tokio::task::JoinHandle<Vec<u64>>,
    stop: Arc<tokio::sync::Notify>,
}

impl Sampler {
    fn start(observer: Observer) -> Sampler {
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut out = Vec::new();
            let mut last = observer.applied_seq().await.unwrap_or(0);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let now = observer.applied_seq().await.unwrap_or(last);
                        out.push((now - last).max(0) as u64);
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

/// One profile whose tracked calls are timed from their 200 to their activity feed.
struct Probe {
    client: reqwest::Client,
    base: String,
    write_key: String,
    api_key: String,
    profile_id: String,
}

struct RunningProbe {
    stop: Arc<tokio::sync::Notify>,
    /// Set once the sender has stopped: the watcher then ends when every probe was seen.
    done: Arc<AtomicBool>,
    sender: tokio::task::JoinHandle<()>,
    watcher: tokio::task::JoinHandle<anyhow::Result<Histogram<u64>>>,
}

impl Probe {
    async fn new(base: &str, write_key: &str, api_key: &str) -> anyhow::Result<Probe> {
        let base = base.trim_end_matches('/').to_owned();
        let mut probe = Probe {
            client: Probe::client()?,
            base,
            write_key: write_key.to_owned(),
            api_key: api_key.to_owned(),
            profile_id: String::new(),
        };
        probe
            .segment(
                "identify",
                json!({"userId": "bench-probe", "traits": {"email": "probe@bench.signalbox"}}),
            )
            .await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found: Value = probe
                .api("/api/profiles?filter=equals(email,\"probe@bench.signalbox\")")
                .await?;
            if let Some(id) = found["data"][0]["id"].as_str() {
                probe.profile_id = id.to_owned();
                return Ok(probe);
            }
            if Instant::now() > deadline {
                bail!("the probe profile did not appear within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The HTTP client probes and readers use.
    fn client() -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()?)
    }

    async fn segment(&self, kind: &str, body: Value) -> anyhow::Result<()> {
        let response = self
            .client
            .post(format!("{}/v1/{kind}", self.base))
            .basic_auth(&self.write_key, Some(""))
            .json(&body)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("probe {kind}: HTTP {}", response.status());
        }
        Ok(())
    }

    async fn api(&self, path_and_query: &str) -> anyhow::Result<Value> {
        let response = self
            .client
            .get(format!("{}{path_and_query}", self.base))
            .header(AUTHORIZATION, format!("Klaviyo-API-Key {}", self.api_key))
            .header(ACCEPT, "application/vnd.api+json")
            .header("revision", signalbox_core::KLAVIYO_REVISION)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("probe read: HTTP {}", response.status());
        }
        Ok(response.json().await?)
    }

    /// Ids of profiles to read (a page of them, the probe's among them).
    async fn profile_ids(&self) -> anyhow::Result<Vec<String>> {
        let page = self.api("/api/profiles?page[size]=100").await?;
        let mut ids: Vec<String> = page["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|profile| profile["id"].as_str().map(str::to_owned))
            .collect();
        if !ids.contains(&self.profile_id) {
            ids.push(self.profile_id.clone());
        }
        Ok(ids)
    }

    /// Sends a probe every [`PROBE_EVERY`] and watches the feed until stopped.
    fn start(self: Arc<Self>) -> RunningProbe {
        let probe = self;
        let acked: Arc<Mutex<BTreeMap<u64, Instant>>> = Arc::default();
        let stop = Arc::new(tokio::sync::Notify::new());
        let sender = {
            let probe = Arc::clone(&probe);
            let acked = Arc::clone(&acked);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PROBE_EVERY);
                for n in 1u64.. {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.notified() => return,
                    }
                    let body = json!({"userId": "bench-probe", "event": "Bench Probe",
                                      "properties": {"n": n}});
                    if probe.segment("track", body).await.is_ok() {
                        acked.lock().expect("acked lock").insert(n, Instant::now());
                    }
                }
            })
        };
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let probe = Arc::clone(&probe);
            let acked = Arc::clone(&acked);
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let mut histogram = new_histogram();
                let path = format!(
                    "/api/events?filter=equals(profile_id,\"{}\")&sort=-datetime&page[size]=1",
                    probe.profile_id
                );
                let mut seen = 0u64;
                loop {
                    let sender_done = done.load(Ordering::SeqCst);
                    let page = probe.api(&path).await?;
                    let newest = page["data"][0]["attributes"]["event_properties"]["n"]
                        .as_u64()
                        .unwrap_or(0);
                    let now = Instant::now();
                    if newest > seen {
                        let mut acked = acked.lock().expect("acked lock");
                        let visible: Vec<u64> = acked.range(..=newest).map(|(n, _)| *n).collect();
                        for n in visible {
                            if let Some(at) = acked.remove(&n) {
                                histogram
                                    .saturating_record(now.duration_since(at).as_micros() as u64);
                            }
                        }
                        seen = newest;
                    }
                    // Finished: the sender stopped and every acknowledged probe was seen.
                    if sender_done && acked.lock().expect("acked lock").is_empty() {
                        return Ok(histogram);
                    }
                    tokio::time::sleep(POLL_EVERY).await;
                }
            })
        };
        RunningProbe {
            stop,
            done,
            sender,
            watcher,
        }
    }
}

/// Reads profiles by id at a fixed rate (one every [`PROFILE_READ_EVERY`], each read on its
/// own task so a slow answer does not delay the next), timing each answer.
///
/// The reader runs on a thread and runtime of its own, with its own connections: on the
/// bench's runtime a read would wait behind the load generator's tasks, and the figure would
/// time the generator rather than the server.
struct ProfileReads {
    stop: Arc<tokio::sync::Notify>,
    done: tokio::sync::oneshot::Receiver<ProfileReadFigures>,
}

impl ProfileReads {
    fn start(probe: &Probe, ids: Vec<String>) -> anyhow::Result<ProfileReads> {
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = Arc::clone(&stop);
        let (sender, done) = tokio::sync::oneshot::channel();
        let reader = Probe {
            client: Probe::client()?,
            base: probe.base.clone(),
            write_key: probe.write_key.clone(),
            api_key: probe.api_key.clone(),
            profile_id: probe.profile_id.clone(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the profile reader's runtime")?;
        std::thread::Builder::new()
            .name("bench-profile-reads".into())
            .spawn(move || {
                let figures = runtime.block_on(read_profiles(Arc::new(reader), ids, stopped));
                let _ = sender.send(figures);
            })
            .context("cannot start the profile reader's thread")?;
        Ok(ProfileReads { stop, done })
    }

    async fn stop(self) -> ProfileReadFigures {
        self.stop.notify_one();
        self.done.await.unwrap_or(ProfileReadFigures {
            reads: 0,
            errors: 0,
            per_sec: 0.0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            max_ms: 0.0,
        })
    }
}

/// The profile reader's loop: one read per tick until `stop`, then the figures.
async fn read_profiles(
    probe: Arc<Probe>,
    ids: Vec<String>,
    stop: Arc<tokio::sync::Notify>,
) -> ProfileReadFigures {
    let histogram = Arc::new(Mutex::new(new_histogram()));
    let errors = Arc::new(AtomicU64::new(0));
    let mut reads = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(PROFILE_READ_EVERY);
    let started = Instant::now();
    for id in ids.iter().cycle() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.notified() => break,
        }
        let (probe, histogram, errors) = (
            Arc::clone(&probe),
            Arc::clone(&histogram),
            Arc::clone(&errors),
        );
        let path = format!("/api/profiles/{id}");
        reads.spawn(async move {
            let sent = Instant::now();
            match probe.api(&path).await {
                Ok(_) => histogram
                    .lock()
                    .expect("histogram lock")
                    .saturating_record(sent.elapsed().as_micros() as u64),
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let seconds = started.elapsed().as_secs_f64();
    while reads.join_next().await.is_some() {}
    let histogram = histogram.lock().expect("histogram lock");
    let ms = |us: u64| us as f64 / 1000.0;
    ProfileReadFigures {
        reads: histogram.len(),
        errors: errors.load(Ordering::Relaxed),
        per_sec: histogram.len() as f64 / seconds.max(1e-9),
        p50_ms: ms(histogram.value_at_quantile(0.5)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        max_ms: ms(histogram.max()),
    }
}

impl RunningProbe {
    async fn stop(self) -> anyhow::Result<Histogram<u64>> {
        self.stop.notify_one();
        let _ = self.sender.await;
        self.done.store(true, Ordering::SeqCst);
        match tokio::time::timeout(DRAIN_LIMIT, self.watcher).await {
            Ok(Ok(result)) => result,
            Ok(Err(err)) => bail!("the probe watcher failed: {err}"),
            Err(_) => bail!("probes did not reach the feed within {DRAIN_LIMIT:?}"),
        }
    }
}
