//! `signalbox bench ingest`: a load generator for the Tracking API; `signalbox bench
//! pipeline` (`pipeline.rs`): the engage pipeline's throughput and latency through it;
//! `signalbox bench segments`: live segments over generated ecommerce data (`segments.rs`,
//! data from `ecommerce.rs`); `signalbox bench flows` (`flows.rs`); `signalbox bench
//! destinations`: the delivery engine's throughput, lag and cost to ingest (`destinations.rs`);
//! `signalbox bench console`: the console's page times over the segments data set (`console.rs`);
//! `signalbox bench chain`: the whole chain (feed, segments, flows) at a fixed rate (`chain.rs`).
//!
//! # Layout
//! - `payload`: realistic `/v1/batch` bodies with unique message ids, made without JSON work.
//! - `server`: the server under test, this binary run as `serve` in a child process.
//! - `load`: the closed loop (throughput) and the open loop (latency at a fixed rate).
//! - `report`: the final table, sparklines and the `--json` file.
//!
//! Phases: **ceiling** (a closed loop against `serve --discard`, which parses and validates
//! but stores nothing), **durable** (the same against a normal server) and **latency** (an
//! open loop at `--rate` against the durable server). After the durable server stopped, its
//! log is read back and must hold exactly the events it acknowledged.
//!
//! `--backends embedded,postgres` runs the durable and latency phases once for each store
//! (PostgreSQL on a fresh database each time) and prints them side by side, beside the one
//! ceiling of the run.

mod chain;
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
use signalbox_core::PostgresUrl;

use super::parse_duration;
use crate::cli::{BenchBackend, BenchCommand, BenchPhase, GlobalArgs, IngestBenchArgs};
use load::{PhaseSpec, Target};
use payload::BodyFactory;
pub use payload::IdStyle;
use report::{LogCheck, PhaseReport, Report, ServerMemory};
use server::ServerStores;

/// Requests the latency phase lets be outstanding at once.
const OPEN_LOOP_MAX_IN_FLIGHT: usize = 128;

pub async fn run(global: &GlobalArgs, cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Ingest(args) => ingest(global, args).await,
        BenchCommand::Pipeline(args) => pipeline::run(global, args).await,
        BenchCommand::Flows(args) => flows::run(args).await,
        BenchCommand::Segments(args) => segments::run(args).await,
        BenchCommand::Chain(args) => chain::run(global, args).await,
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

async fn ingest(global: &GlobalArgs, args: IngestBenchArgs) -> anyhow::Result<()> {
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
    let (backends, postgres) = choose_backends(global, &args.backends)?;
    let factory = Arc::new(BodyFactory::new(
        args.batch_size,
        args.message_ids,
        rand::random(),
    ));
    let header = Report::new(&args, factory.mean_body_bytes(), None);
    header.print_header(&backends);

    let wants = |phase| args.phases.contains(&phase);
    let mut notes = Vec::new();
    // The ceiling stores nothing, so one serves every backend's comparison; it runs first.
    let mut ceiling = None;
    if wants(BenchPhase::Ceiling) {
        if args.target.is_some() {
            notes.push(
                "ceiling skipped: it needs a `serve --discard` child, not --target".to_owned(),
            );
        } else {
            ceiling = Some(run_ceiling(&settings, &factory).await?);
        }
    }
    let mut reports = Vec::new();
    if let (Some(url), Some(key)) = (&args.target, &args.write_key) {
        let mut report = Report::new(&args, factory.mean_body_bytes(), None);
        if wants(BenchPhase::Durable) || wants(BenchPhase::Latency) {
            let target = Arc::new(Target::new(url, key)?);
            run_durable_phases(&args, &settings, &factory, &target, None, &mut report).await;
            report.log_check = Some(LogCheck::skipped("the server is not a child of this run"));
        }
        reports.push(report);
    } else {
        for backend in backends {
            let mut report = Report::new(&args, factory.mean_body_bytes(), Some(backend));
            if wants(BenchPhase::Durable) || wants(BenchPhase::Latency) {
                let stores = ServerStores::create(backend, postgres.as_ref()).await?;
                let child = stores.start(false).await?;
                let pid = child.pid();
                let mut memory = ServerMemory::start("durable", server::rss_kib(pid));
                let target = Arc::new(Target::new(&child.base_url, &child.write_key)?);
                let acknowledged =
                    run_durable_phases(&args, &settings, &factory, &target, Some(pid), &mut report)
                        .await;
                memory.end(server::rss_kib(pid));
                child.stop().await?;
                if backend == BenchBackend::Embedded {
                    report.data_dir_bytes = super::storage::size_of(stores.dir())
                        .ok()
                        .map(|(bytes, _)| bytes);
                }
                let stored = stores.last_seq().await? as u64;
                stores.remove().await?;
                report.log_check = Some(LogCheck::counted(acknowledged, stored));
                report.memory.push(memory);
            }
            reports.push(report);
        }
    }
    for report in &mut reports {
        if let Some((phase, memory)) = &ceiling {
            report.ceiling = Some(phase.clone());
            report.memory.push(memory.clone());
        }
        report.notes.extend(notes.iter().cloned());
        report.print();
    }
    if reports.len() > 1 {
        report::print_side_by_side(&reports);
    }
    if let Some(path) = &args.json {
        // One report as it is; several (one a backend) as a list.
        let text = match reports.as_slice() {
            [report] => serde_json::to_string_pretty(report)?,
            reports => serde_json::to_string_pretty(reports)?,
        };
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("figures written to {}", path.display());
    }
    Ok(())
}

/// The backends to measure (`--backends`, else the one `--database-url` names) and the
/// PostgreSQL server of `--database-url`, if any.
fn choose_backends(
    global: &GlobalArgs,
    asked: &[BenchBackend],
) -> anyhow::Result<(Vec<BenchBackend>, Option<PostgresUrl>)> {
    let postgres = match global.database_url.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Some(PostgresUrl::parse(url).map_err(|err| anyhow::anyhow!("--database-url: {err}"))?)
        }
        Some(_) => bail!(
            "benchmarks run their servers on fresh stores: --database-url takes only a \
             postgres:// URL here, naming the server to make databases on"
        ),
    };
    let mut backends: Vec<BenchBackend> = Vec::new();
    for backend in asked {
        if !backends.contains(backend) {
            backends.push(*backend);
        }
    }
    if backends.is_empty() {
        backends.push(if postgres.is_some() {
            BenchBackend::Postgres
        } else {
            BenchBackend::Embedded
        });
    }
    if backends.contains(&BenchBackend::Postgres) && postgres.is_none() {
        bail!(
            "--backends postgres needs --database-url postgres://… (a server to make databases on)"
        );
    }
    Ok((backends, postgres))
}

/// The closed loop against `serve --discard`: the ceiling of parsing and validating alone.
async fn run_ceiling(
    settings: &Settings,
    factory: &Arc<BodyFactory>,
) -> anyhow::Result<(PhaseReport, ServerMemory)> {
    let stores = ServerStores::create(BenchBackend::Embedded, None).await?;
    let child = stores.start(true).await?;
    let pid = child.pid();
    let mut memory = ServerMemory::start("ceiling", server::rss_kib(pid));
    let target = Arc::new(Target::new(&child.base_url, &child.write_key)?);
    warm_up(settings, factory, &target).await;
    let stats = load::closed_loop(
        &target,
        factory,
        settings.connections,
        PhaseSpec {
            label: "ceiling",
            duration: settings.duration,
            watch: true,
            server_pid: Some(pid),
        },
    )
    .await;
    memory.end(server::rss_kib(pid));
    child.stop().await?;
    stores.remove().await?;
    Ok((
        PhaseReport::new("ceiling", &stats, settings.connections),
        memory,
    ))
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
