//! `signalbox bench ingest`: a load generator for the Tracking API; `signalbox bench
//! pipeline` (`pipeline.rs`): the engage pipeline's throughput and latency through it;
//! `signalbox bench segments`: live segments over generated ecommerce data (`segments.rs`,
//! data from `ecommerce.rs`); `signalbox bench flows` (`flows.rs`); `signalbox bench
//! destinations`: the delivery engine's throughput, lag and cost to ingest (`destinations.rs`);
//! `signalbox bench console`: the console's page times over the segments data set (`console.rs`).
//!
//! # Layout
//! - `payload`: realistic `/v1/batch` bodies with unique message ids, made without JSON work.
//! - `server`: the server under test, this binary run as `serve` in a child process.
//! - `load`: the closed loop (throughput) and the open loop (latency at a fixed rate).
//! - `report`: the final table, sparklines and the `--json` file.
//!
//! Phases: **durable** (closed loop against a normal server), **ceiling** (the same against
//! `serve --discard`, which parses and validates but stores nothing) and **latency** (an open
//! loop at `--rate` against the durable server). After the durable server stopped, its log is
//! read back and must hold exactly the events it acknowledged.

mod console;
mod destinations;
mod ecommerce;
mod flows;
mod load;
mod payload;
mod pipeline;
mod report;
mod segments;
mod server;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};

use super::parse_duration;
use crate::cli::{BenchCommand, BenchPhase, IngestBenchArgs};
use load::{PhaseSpec, Target};
use payload::BodyFactory;
pub use payload::IdStyle;
use report::{LogCheck, PhaseReport, Report, ServerMemory};
use server::ServerChild;

/// Requests the latency phase lets be outstanding at once.
const OPEN_LOOP_MAX_IN_FLIGHT: usize = 128;

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Ingest(args) => ingest(args).await,
        BenchCommand::Pipeline(args) => pipeline::run(args).await,
        BenchCommand::Flows(args) => flows::run(args).await,
        BenchCommand::Segments(args) => segments::run(args).await,
        BenchCommand::Destinations(args) => destinations::run(args).await,
        BenchCommand::Console(args) => console::run(args).await,
    }
}

struct Settings {
    duration: Duration,
    warmup: Duration,
    connections: usize,
    batches_per_sec: f64,
}

impl Settings {
    /// The load flags every load benchmark shares, checked.
    fn parse(
        duration: &str,
        warmup: &str,
        connections: usize,
        rate: u64,
        batch_size: usize,
    ) -> anyhow::Result<Settings> {
        let settings = Settings {
            duration: std_duration(duration, "--duration")?,
            warmup: std_duration(warmup, "--warmup")?,
            connections: connections.max(1),
            batches_per_sec: rate as f64 / batch_size.max(1) as f64,
        };
        if settings.duration.is_zero() {
            bail!("--duration must be more than zero");
        }
        if batch_size == 0 || batch_size > 2_500 {
            bail!("--batch-size must be between 1 and 2500 (Segment's limit per batch)");
        }
        Ok(settings)
    }
}

async fn ingest(args: IngestBenchArgs) -> anyhow::Result<()> {
    let settings = Settings::parse(
        &args.duration,
        &args.warmup,
        args.connections,
        args.rate,
        args.batch_size,
    )?;
    if args.target.is_some() != args.write_key.is_some() {
        bail!("--target and --write-key go together");
    }
    let factory = Arc::new(BodyFactory::new(
        args.batch_size,
        args.message_ids,
        rand::random(),
    ));
    let mut report = Report::new(&args, factory.mean_body_bytes());
    report.print_header();

    let wants = |phase| args.phases.contains(&phase);
    if wants(BenchPhase::Durable) || wants(BenchPhase::Latency) {
        match (&args.target, &args.write_key) {
            (Some(url), Some(key)) => {
                let target = Arc::new(Target::new(url, key)?);
                run_durable_phases(&args, &settings, &factory, &target, None, &mut report).await;
                report.log_check = Some(LogCheck::skipped("the server is not a child of this run"));
            }
            _ => {
                let dir = bench_dir()?;
                let child = ServerChild::start(dir.path(), false).await?;
                let pid = child.pid();
                let mut memory = ServerMemory::start("durable", server::rss_kib(pid));
                let target = Arc::new(Target::new(&child.base_url, &child.write_key)?);
                let acknowledged =
                    run_durable_phases(&args, &settings, &factory, &target, Some(pid), &mut report)
                        .await;
                memory.end(server::rss_kib(pid));
                child.stop().await?;
                report.log_check = Some(check_log(dir.path(), acknowledged).await?);
                report.memory.push(memory);
            }
        }
    }
    if wants(BenchPhase::Ceiling) {
        if args.target.is_some() {
            report.notes.push(
                "ceiling skipped: it needs a `serve --discard` child, not --target".to_owned(),
            );
        } else {
            let dir = bench_dir()?;
            let child = ServerChild::start(dir.path(), true).await?;
            let pid = child.pid();
            let mut memory = ServerMemory::start("ceiling", server::rss_kib(pid));
            let target = Arc::new(Target::new(&child.base_url, &child.write_key)?);
            warm_up(&settings, &factory, &target).await;
            let stats = load::closed_loop(
                &target,
                &factory,
                settings.connections,
                PhaseSpec {
                    label: "ceiling",
                    duration: settings.duration,
                    watch: true,
                    server_pid: Some(pid),
                },
            )
            .await;
            report.ceiling = Some(PhaseReport::new("ceiling", &stats, settings.connections));
            memory.end(server::rss_kib(pid));
            report.memory.push(memory);
            child.stop().await?;
        }
    }

    report.print();
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("figures written to {}", path.display());
    }
    Ok(())
}

/// The durable and latency phases against one server; returns the events it acknowledged,
/// warm-up included.
async fn run_durable_phases(
    args: &IngestBenchArgs,
    settings: &Settings,
    factory: &Arc<BodyFactory>,
    target: &Arc<Target>,
    pid: Option<u32>,
    report: &mut Report,
) -> u64 {
    let mut acknowledged = warm_up(settings, factory, target).await;
    if args.phases.contains(&BenchPhase::Durable) {
        let stats = load::closed_loop(
            target,
            factory,
            settings.connections,
            PhaseSpec {
                label: "durable",
                duration: settings.duration,
                watch: true,
                server_pid: pid,
            },
        )
        .await;
        acknowledged += stats.events;
        report.durable = Some(PhaseReport::new("durable", &stats, settings.connections));
    }
    if args.phases.contains(&BenchPhase::Latency) {
        let stats = load::open_loop(
            target,
            factory,
            settings.batches_per_sec,
            OPEN_LOOP_MAX_IN_FLIGHT,
            PhaseSpec {
                label: "latency",
                duration: settings.duration,
                watch: true,
                server_pid: pid,
            },
        )
        .await;
        acknowledged += stats.events;
        let mut phase = PhaseReport::new("latency", &stats, 0);
        phase.target_events_per_sec = Some(args.rate);
        report.latency = Some(phase);
    }
    acknowledged
}

/// A short closed loop whose figures are thrown away; returns the events acknowledged.
async fn warm_up(settings: &Settings, factory: &Arc<BodyFactory>, target: &Arc<Target>) -> u64 {
    if settings.warmup.is_zero() {
        return 0;
    }
    let stats = load::closed_loop(
        target,
        factory,
        settings.connections,
        PhaseSpec {
            label: "warm-up",
            duration: settings.warmup,
            watch: false,
            server_pid: None,
        },
    )
    .await;
    stats.events
}

/// Reads the stopped server's log back: a fresh log numbers its calls 1, 2, 3… with no gaps,
/// so its last sequence number is its count.
async fn check_log(dir: &std::path::Path, acknowledged: u64) -> anyhow::Result<LogCheck> {
    let store = SqliteStore::open(
        dir.join("signalbox.db"),
        SqliteOptions {
            writer: false,
            ..SqliteOptions::default()
        },
    )
    .context("cannot open the benchmark's store")?;
    let stored = store.last_seq().await? as u64;
    Ok(LogCheck::counted(acknowledged, stored))
}

fn bench_dir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("signalbox-bench-")
        .tempdir()
        .context("cannot create a folder for the benchmark's store")
}

fn std_duration(text: &str, what: &str) -> anyhow::Result<Duration> {
    let duration = parse_duration(text, what)?;
    Duration::try_from(duration).with_context(|| format!("{what}: out of range"))
}
