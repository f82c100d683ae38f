//! What a run measured: the printed table and the `--json` file.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::load::{thousands, PhaseStats, Sample};
use super::payload::IdStyle;
use super::server::CpuUse;
use crate::cli::{BenchBackend, IngestBenchArgs};

/// The targets: durable ingest on the embedded store, and on PostgreSQL.
const TARGET_DURABLE_EVENTS_PER_SEC: f64 = 100_000.0;
const TARGET_POSTGRES_EVENTS_PER_SEC: f64 = 50_000.0;
const TARGET_SHARE_OF_CEILING: f64 = 0.5;
const TARGET_P99_MS: f64 = 50.0;
/// Heap growth from the second tenth of a long run to its last tenth that still counts as
/// flat (the first tenth is warm-up: caches and buffers filling).
const FLAT_HEAP_GROWTH: f64 = 0.10;
/// Runs shorter than this are too short to judge memory by.
const FLAT_HEAP_MIN_SECONDS: usize = 120;
/// The server's RSS in a soak's last minute, against its second minute's: at most this far
/// off, and under [`RSS_CEILING_MIB`].
const FLAT_RSS: f64 = 0.05;
const RSS_CEILING_MIB: f64 = 512.0;
/// Minutes of RSS a run needs before the flat-RSS target is judged.
const FLAT_RSS_MIN_MINUTES: usize = 3;
/// Cores used by other programs past which a phase's figures are flagged.
const BUSY_MACHINE_CORES: f64 = 0.25;

#[derive(Debug, Serialize)]
pub struct Report {
    /// Where the durable server kept its stores (`None`: a server of `--target`).
    pub backend: Option<BenchBackend>,
    pub cores: usize,
    pub connections: usize,
    pub batch_size: usize,
    pub mean_body_bytes: usize,
    pub message_ids: IdStyle,
    pub duration_secs: f64,
    pub durable: Option<PhaseReport>,
    pub ceiling: Option<PhaseReport>,
    pub latency: Option<PhaseReport>,
    /// Durable events/s over ceiling events/s.
    pub durable_share_of_ceiling: Option<f64>,
    pub log_check: Option<LogCheck>,
    pub memory: Vec<ServerMemory>,
    /// Bytes of the durable server's data folder when its load ended (the embedded store).
    pub data_dir_bytes: Option<u64>,
    pub targets: Vec<TargetCheck>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub name: String,
    /// Closed-loop connections; absent for the open loop.
    pub connections: Option<usize>,
    /// The open loop's schedule.
    pub target_events_per_sec: Option<u64>,
    pub seconds: f64,
    pub requests: u64,
    pub events: u64,
    pub events_per_sec: f64,
    pub requests_per_sec: f64,
    pub errors: BTreeMap<String, u64>,
    pub latency_ms: Latency,
    /// Bytes the server wrote to storage per event stored (WAL and checkpoints).
    pub disk_bytes_per_event: Option<f64>,
    /// The same by the name of the server's thread that wrote them (see [`DiskWrites`]).
    pub disk_bytes_per_event_by_thread: BTreeMap<String, f64>,
    /// Cores used on average by the server, the load generator and everything else.
    pub cpu_cores: Option<CpuUse>,
    pub timeline: Vec<Sample>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Debug, Serialize)]
pub struct LogCheck {
    pub acknowledged: Option<u64>,
    pub stored: Option<u64>,
    pub exact: Option<bool>,
    pub note: Option<String>,
}

/// Resident memory of one server child over its life.
#[derive(Debug, Clone, Serialize)]
pub struct ServerMemory {
    pub server: String,
    pub start_kib: Option<u64>,
    pub peak_kib: Option<u64>,
    pub end_kib: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct TargetCheck {
    pub target: String,
    pub met: bool,
    pub measured: String,
}

impl LogCheck {
    pub fn counted(acknowledged: u64, stored: u64) -> LogCheck {
        LogCheck {
            acknowledged: Some(acknowledged),
            stored: Some(stored),
            exact: Some(acknowledged == stored),
            note: None,
        }
    }

    pub fn skipped(why: &str) -> LogCheck {
        LogCheck {
            acknowledged: None,
            stored: None,
            exact: None,
            note: Some(format!("not checked: {why}")),
        }
    }
}

impl ServerMemory {
    pub fn start(server: &str, rss_kib: Option<u64>) -> ServerMemory {
        ServerMemory {
            server: server.to_owned(),
            start_kib: rss_kib,
            peak_kib: rss_kib,
            end_kib: None,
        }
    }

    pub fn end(&mut self, rss_kib: Option<u64>) {
        self.end_kib = rss_kib;
        self.peak_kib = self.peak_kib.max(rss_kib);
    }

    fn include(&mut self, samples: &[Sample]) {
        let peak = samples.iter().filter_map(|s| s.server_rss_kib).max();
        self.peak_kib = self.peak_kib.max(peak);
    }
}

impl PhaseReport {
    pub fn new(name: &str, stats: &PhaseStats, connections: usize) -> PhaseReport {
        let seconds = stats.elapsed.as_secs_f64();
        PhaseReport {
            name: name.to_owned(),
            connections: (connections > 0).then_some(connections),
            target_events_per_sec: None,
            seconds,
            requests: stats.requests,
            events: stats.events,
            events_per_sec: stats.events as f64 / seconds,
            requests_per_sec: stats.requests as f64 / seconds,
            errors: stats.errors.clone(),
            latency_ms: Latency::from_micros(&stats.latency),
            disk_bytes_per_event: stats
                .disk_writes
                .as_ref()
                .filter(|_| stats.events > 0)
                .map(|w| w.total as f64 / stats.events as f64),
            disk_bytes_per_event_by_thread: stats
                .disk_writes
                .iter()
                .filter(|_| stats.events > 0)
                .flat_map(|w| &w.by_thread)
                .map(|(name, bytes)| (name.clone(), *bytes as f64 / stats.events as f64))
                .collect(),
            cpu_cores: stats.cpu,
            timeline: stats.timeline.clone(),
        }
    }

    fn n_errors(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The threads that wrote most, largest first, each with its bytes per event: one line.
fn writes_by_thread(per_event: &BTreeMap<String, f64>) -> Option<String> {
    const SHOWN: usize = 6;
    let mut threads: Vec<(&String, f64)> = per_event
        .iter()
        .map(|(name, bytes)| (name, *bytes))
        .filter(|(_, bytes)| bytes.round() > 0.0)
        .collect();
    if threads.is_empty() {
        return None;
    }
    threads.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let rest: f64 = threads.iter().skip(SHOWN).map(|(_, bytes)| bytes).sum();
    let mut parts: Vec<String> = threads
        .iter()
        .take(SHOWN)
        .map(|(name, bytes)| format!("{name} {}", thousands(bytes.round() as u64)))
        .collect();
    if rest.round() > 0.0 {
        parts.push(format!("others {}", thousands(rest.round() as u64)));
    }
    Some(parts.join(" · "))
}

impl Latency {
    fn from_micros(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Latency {
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
                mean: 0.0,
            };
        }
        Latency {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

impl Report {
    pub fn new(
        args: &IngestBenchArgs,
        mean_body_bytes: usize,
        backend: Option<BenchBackend>,
    ) -> Report {
        Report {
            backend,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            connections: args.connections,
            batch_size: args.batch_size,
            mean_body_bytes,
            message_ids: args.message_ids,
            duration_secs: 0.0,
            durable: None,
            ceiling: None,
            latency: None,
            durable_share_of_ceiling: None,
            log_check: None,
            memory: Vec::new(),
            data_dir_bytes: None,
            targets: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn print_header(&self, backends: &[BenchBackend]) {
        let names: Vec<&str> = backends.iter().map(|b| backend_name(Some(*b))).collect();
        eprintln!(
            "signalbox bench ingest on {}: {} cores shared by load generator and server; \
             POST /v1/batch with {} calls (~{} bytes), {} message ids",
            names.join(", "),
            self.cores,
            self.batch_size,
            thousands(self.mean_body_bytes as u64),
            match self.message_ids {
                IdStyle::Random => "random",
                IdStyle::Sequential => "sequential",
            }
        );
    }

    /// Derives the ratio, memory peaks and target checks from the phases.
    fn finish(&mut self) {
        self.duration_secs = [&self.durable, &self.ceiling, &self.latency]
            .iter()
            .filter_map(|p| p.as_ref().map(|p| p.seconds))
            .fold(0.0, f64::max);
        for memory in &mut self.memory {
            let phases: &[&Option<PhaseReport>] = if memory.server == "ceiling" {
                &[&self.ceiling]
            } else {
                &[&self.durable, &self.latency]
            };
            for phase in phases.iter().filter_map(|p| p.as_ref()) {
                memory.include(&phase.timeline);
            }
        }
        for phase in [&self.durable, &self.ceiling, &self.latency]
            .into_iter()
            .flatten()
        {
            if let Some(cpu) = phase.cpu_cores.filter(|c| c.other > BUSY_MACHINE_CORES) {
                let note = format!(
                    "other programs and kernel threads used {:.2} of {} cores during {}: \
                     its figures are lower than on an otherwise idle machine",
                    cpu.other, self.cores, phase.name
                );
                if !self.notes.contains(&note) {
                    self.notes.push(note);
                }
            }
        }
        self.targets.clear();
        if let Some(durable) = &self.durable {
            let target = match self.backend {
                Some(BenchBackend::Postgres) => TARGET_POSTGRES_EVENTS_PER_SEC,
                _ => TARGET_DURABLE_EVENTS_PER_SEC,
            };
            self.targets.push(TargetCheck {
                target: format!("durable >= {} events/s", thousands(target as u64)),
                met: durable.events_per_sec >= target,
                measured: format!("{} events/s", thousands(durable.events_per_sec as u64)),
            });
            if let Some(ceiling) = &self.ceiling {
                let share = durable.events_per_sec / ceiling.events_per_sec.max(1.0);
                self.durable_share_of_ceiling = Some(share);
                self.targets.push(TargetCheck {
                    target: "durable >= 50 % of ceiling".into(),
                    met: share >= TARGET_SHARE_OF_CEILING,
                    measured: format!("{:.1} %", share * 100.0),
                });
            }
        }
        if let Some(latency) = &self.latency {
            let rate = latency.target_events_per_sec.unwrap_or_default();
            let kept_up = latency.events_per_sec >= 0.98 * rate as f64;
            self.targets.push(TargetCheck {
                target: format!("p99 < 50 ms at {} events/s", thousands(rate)),
                met: latency.latency_ms.p99 < TARGET_P99_MS && kept_up,
                measured: format!(
                    "p99 {:.1} ms at {} events/s; p99 under 50 ms in {} of {} seconds",
                    latency.latency_ms.p99,
                    thousands(latency.events_per_sec as u64),
                    latency
                        .timeline
                        .iter()
                        .filter(|s| s.p99_ms < TARGET_P99_MS)
                        .count(),
                    latency.timeline.len()
                ),
            });
            let heap: Vec<u64> = latency
                .timeline
                .iter()
                .filter_map(|s| s.server_rss_anon_kib)
                .collect();
            let rss: Vec<u64> = latency
                .timeline
                .iter()
                .filter_map(|s| s.server_rss_kib)
                .collect();
            let minutes = per_minute_mib(&rss);
            if let ([_, second, ..], Some(last)) = (minutes.as_slice(), minutes.last()) {
                if minutes.len() >= FLAT_RSS_MIN_MINUTES {
                    let change = last.mean / second.mean.max(1.0) - 1.0;
                    self.targets.push(TargetCheck {
                        target: "RSS flat, under 512 MiB".into(),
                        met: change.abs() <= FLAT_RSS && last.max < RSS_CEILING_MIB,
                        measured: format!(
                            "last minute {:.0} MiB (max {:.0}), {:+.1} % from the second minute",
                            last.mean,
                            last.max,
                            change * 100.0
                        ),
                    });
                }
            }
            if let Some(growth) = heap_growth(&heap) {
                self.targets.push(TargetCheck {
                    target: format!("memory flat over {} s", latency.timeline.len()),
                    met: growth <= FLAT_HEAP_GROWTH,
                    measured: format!(
                        "heap {:+.1} % from the second tenth of the run to the last",
                        growth * 100.0
                    ),
                });
            }
        }
    }

    pub fn print(&mut self) {
        self.finish();
        println!();
        println!("backend: {}", backend_name(self.backend));
        println!(
            "{:<22} {:>11} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7}",
            "phase", "events/s", "req/s", "p50 ms", "p99 ms", "p999 ms", "max ms", "errors"
        );
        for phase in [&self.durable, &self.ceiling, &self.latency]
            .into_iter()
            .flatten()
        {
            let label = match (phase.connections, phase.target_events_per_sec) {
                (Some(n), _) => format!("{} ({n} conn)", phase.name),
                (None, Some(rate)) => format!("{} @ {}/s", phase.name, thousands(rate)),
                (None, None) => phase.name.clone(),
            };
            let l = &phase.latency_ms;
            println!(
                "{:<22} {:>11} {:>10.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>7}",
                label,
                thousands(phase.events_per_sec as u64),
                phase.requests_per_sec,
                l.p50,
                l.p99,
                l.p999,
                l.max,
                phase.n_errors()
            );
            if let Some(cpu) = phase.cpu_cores {
                println!(
                    "{:<22}   cores used: server {:.2}, load generator {:.2}, other programs {:.2}",
                    "", cpu.server, cpu.generator, cpu.other
                );
            }
            if let Some(bytes) = phase.disk_bytes_per_event.filter(|b| *b > 0.0) {
                println!(
                    "{:<22}   server wrote {} bytes to disk per event, for calls of {} bytes",
                    "",
                    thousands(bytes.round() as u64),
                    thousands((self.mean_body_bytes / self.batch_size.max(1)) as u64),
                );
                if let Some(line) = writes_by_thread(&phase.disk_bytes_per_event_by_thread) {
                    println!("{:<22}   by thread: {line}", "");
                }
            }
            for (what, n) in &phase.errors {
                println!("{:<22}   {n} × {what}", "");
            }
        }
        println!();
        if let Some(share) = self.durable_share_of_ceiling {
            println!("durable / ceiling      {:.1} %", share * 100.0);
        }
        if let Some(check) = &self.log_check {
            match (check.acknowledged, check.stored) {
                (Some(ack), Some(stored)) => println!(
                    "log check              {} events acknowledged, {} in the log: {}",
                    thousands(ack),
                    thousands(stored),
                    if ack == stored { "exact" } else { "MISMATCH" }
                ),
                _ => println!(
                    "log check              {}",
                    check.note.as_deref().unwrap_or("")
                ),
            }
        }
        for memory in &self.memory {
            let mib = |k: Option<u64>| {
                k.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                    .unwrap_or_else(|| "?".into())
            };
            println!(
                "server RSS ({:<7})    start {} · peak {} · end {}",
                memory.server,
                mib(memory.start_kib),
                mib(memory.peak_kib),
                mib(memory.end_kib)
            );
        }
        for phase in [&self.durable, &self.ceiling, &self.latency]
            .into_iter()
            .flatten()
        {
            if phase.timeline.is_empty() {
                continue;
            }
            let events: Vec<u64> = phase.timeline.iter().map(|s| s.events_per_sec).collect();
            let rss: Vec<u64> = phase
                .timeline
                .iter()
                .filter_map(|s| s.server_rss_kib)
                .collect();
            let heap: Vec<u64> = phase
                .timeline
                .iter()
                .filter_map(|s| s.server_rss_anon_kib)
                .collect();
            let p99: Vec<u64> = phase
                .timeline
                .iter()
                .map(|s| (s.p99_ms * 1000.0) as u64)
                .collect();
            println!(
                "{:<8} events/s  {}  ({}–{})",
                phase.name,
                sparkline(&events, 60),
                thousands(events.iter().copied().min().unwrap_or(0)),
                thousands(events.iter().copied().max().unwrap_or(0))
            );
            println!(
                "{:<8} p99 ms    {}  ({:.1}–{:.1} ms per second)",
                phase.name,
                sparkline(&p99, 60),
                p99.iter().copied().min().unwrap_or(0) as f64 / 1000.0,
                p99.iter().copied().max().unwrap_or(0) as f64 / 1000.0
            );
            for (what, series) in [("RSS", &rss), ("heap", &heap)] {
                if series.is_empty() {
                    continue;
                }
                println!(
                    "{:<8} {what:<9} {}  ({:.1}–{:.1} MiB)",
                    phase.name,
                    sparkline(series, 60),
                    series.iter().copied().min().unwrap_or(0) as f64 / 1024.0,
                    series.iter().copied().max().unwrap_or(0) as f64 / 1024.0
                );
                let minutes = per_minute_mib(series);
                if minutes.len() >= 2 {
                    let means: Vec<String> =
                        minutes.iter().map(|m| format!("{:.0}", m.mean)).collect();
                    println!(
                        "{:<8} {what:<9} per minute (MiB): {}",
                        phase.name,
                        means.join(" · ")
                    );
                }
            }
        }
        if let Some(bytes) = self.data_dir_bytes {
            let stored = self.log_check.as_ref().and_then(|c| c.stored).unwrap_or(0);
            println!(
                "data folder at the end {:.2} GiB{}",
                bytes as f64 / (1u64 << 30) as f64,
                if stored > 0 {
                    format!(
                        " ({:.0} bytes per call in the log)",
                        bytes as f64 / stored as f64
                    )
                } else {
                    String::new()
                }
            );
        }
        if !self.targets.is_empty() {
            println!();
            for check in &self.targets {
                println!(
                    "{:<34} {:<4} {}",
                    check.target,
                    if check.met { "met" } else { "MISS" },
                    check.measured
                );
            }
        }
        for note in &self.notes {
            println!("note: {note}");
        }
    }
}

/// The name a report gives a backend.
pub fn backend_name(backend: Option<BenchBackend>) -> &'static str {
    match backend {
        Some(BenchBackend::Embedded) => "embedded",
        Some(BenchBackend::Postgres) => "postgres",
        None => "a server of --target",
    }
}

/// One line per backend, beside the ceiling of the same run (the reports are printed, so
/// their ratios are derived).
pub fn print_side_by_side(reports: &[Report]) {
    println!();
    println!("side by side (one run)");
    println!(
        "{:<10} {:>16} {:>16} {:>16} {:>18} {:>12}",
        "backend",
        "durable events/s",
        "ceiling events/s",
        "durable/ceiling",
        "latency p99 ms",
        "log check"
    );
    for report in reports {
        let events = |p: &Option<PhaseReport>| {
            p.as_ref()
                .map_or("-".to_owned(), |p| thousands(p.events_per_sec as u64))
        };
        println!(
            "{:<10} {:>16} {:>16} {:>16} {:>18} {:>12}",
            backend_name(report.backend),
            events(&report.durable),
            events(&report.ceiling),
            report
                .durable_share_of_ceiling
                .map_or("-".to_owned(), |s| format!("{:.1} %", s * 100.0)),
            report.latency.as_ref().map_or("-".to_owned(), |l| format!(
                "{:.1} @ {}/s",
                l.latency_ms.p99,
                thousands(l.target_events_per_sec.unwrap_or_default())
            )),
            match report.log_check.as_ref().and_then(|c| c.exact) {
                Some(true) => "exact",
                Some(false) => "MISMATCH",
                None => "-",
            }
        );
    }
}

/// Values as a row of block characters scaled from zero, averaged down to at most `width`
/// columns (so a flat series looks flat however large it is).
pub fn sparkline(values: &[u64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if values.is_empty() || width == 0 {
        return String::new();
    }
    let per_column = values.len().div_ceil(width);
    let columns: Vec<f64> = values
        .chunks(per_column)
        .map(|c| c.iter().sum::<u64>() as f64 / c.len() as f64)
        .collect();
    let hi = columns.iter().copied().fold(0.0, f64::max);
    columns
        .iter()
        .map(|v| {
            if hi <= 0.0 {
                BARS[0]
            } else {
                BARS[((v / hi) * 7.0).round() as usize]
            }
        })
        .collect()
}

/// One minute of RSS samples (one a second): their mean and maximum, in MiB.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Minute {
    mean: f64,
    max: f64,
}

/// Whole minutes of per-second samples in KiB (a last, partial minute is left out).
fn per_minute_mib(kib: &[u64]) -> Vec<Minute> {
    kib.chunks_exact(60)
        .map(|minute| Minute {
            mean: minute.iter().sum::<u64>() as f64 / 60.0 / 1024.0,
            max: minute.iter().copied().max().unwrap_or(0) as f64 / 1024.0,
        })
        .collect()
}

/// How much the mean heap of a run's last tenth exceeds that of its second tenth (0.05 is
/// 5 %), from one sample per second; `None` for a run shorter than two minutes.
fn heap_growth(heap_kib: &[u64]) -> Option<f64> {
    if heap_kib.len() < FLAT_HEAP_MIN_SECONDS {
        return None;
    }
    let tenth = heap_kib.len() / 10;
    let mean = |s: &[u64]| s.iter().sum::<u64>() as f64 / s.len().max(1) as f64;
    let early = mean(&heap_kib[tenth..2 * tenth]);
    let late = mean(&heap_kib[heap_kib.len() - tenth..]);
    Some(late / early.max(1.0) - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threads_that_wrote_most_come_first_on_one_line() {
        let per_event: BTreeMap<String, f64> = [
            ("tokio-rt-worker", 0.2),
            ("signalbox-writer", 1395.4),
            ("log-checkpoint", 1268.0),
            ("engage-checkpoi", 673.0),
            ("signalbox-engage", 678.0),
            ("fjall:worker", 200.0),
            ("signalbox-index", 68.0),
            ("signalbox-held", 55.0),
        ]
        .into_iter()
        .map(|(name, bytes)| (name.to_owned(), bytes))
        .collect();
        assert_eq!(
            writes_by_thread(&per_event).unwrap(),
            "signalbox-writer 1,395 · log-checkpoint 1,268 · signalbox-engage 678 · \
             engage-checkpoi 673 · fjall:worker 200 · signalbox-index 68 · others 55"
        );
        assert_eq!(writes_by_thread(&BTreeMap::new()), None);
    }

    #[test]
    fn heap_growth_skips_warm_up_and_catches_a_steady_creep() {
        // Warm-up to 600 MiB in the first minute, then flat with noise: flat.
        let flat: Vec<u64> = (0..600u64)
            .map(|s| if s < 60 { 10 * s } else { 600 + s % 7 } * 1024)
            .collect();
        let growth = heap_growth(&flat).unwrap();
        assert!(growth.abs() < 0.02, "{growth}");
        // 660 MiB growing 10 MiB a minute (what the dedupe index's resident filters did).
        let creeping: Vec<u64> = (0..600u64).map(|s| (660 + s / 6) * 1024).collect();
        assert!(heap_growth(&creeping).unwrap() > FLAT_HEAP_GROWTH);
        // Too short to judge.
        assert_eq!(heap_growth(&flat[..60]), None);
    }

    #[test]
    fn rss_is_summed_up_per_whole_minute() {
        // 150 s: two whole minutes, the last half minute left out.
        let samples: Vec<u64> = (0..150u64)
            .map(|s| if s < 60 { 100 } else { 200 + s % 2 } * 1024)
            .collect();
        let minutes = per_minute_mib(&samples);
        assert_eq!(minutes.len(), 2);
        assert_eq!(
            minutes[0],
            Minute {
                mean: 100.0,
                max: 100.0
            }
        );
        assert_eq!(minutes[1].max, 201.0);
        assert!((minutes[1].mean - 200.5).abs() < 1e-9);
    }

    #[test]
    fn sparkline_scales_and_averages() {
        assert_eq!(sparkline(&[0, 7], 10), "▁█");
        assert_eq!(sparkline(&[5, 5, 5], 10), "███");
        assert_eq!(sparkline(&[0, 0], 10), "▁▁");
        assert_eq!(sparkline(&[0, 0, 7, 7], 2), "▁█");
        assert_eq!(sparkline(&[], 5), "");
    }
}
