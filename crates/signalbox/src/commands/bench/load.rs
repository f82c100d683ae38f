//! The load itself: a closed loop (N connections, each sending as soon as its last request
//! was answered) and an open loop (requests started on a fixed schedule, latency measured
//! from the scheduled time so a slow server cannot hide its queueing).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::payload::BodyFactory;
use super::server::{memory_kib, CpuTicks, CpuUse, DiskWrites};

/// Where requests go.
pub struct Target {
    client: reqwest::Client,
    batch_url: String,
    authorization: HeaderValue,
}

impl Target {
    pub fn new(base_url: &str, write_key: &str) -> anyhow::Result<Target> {
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"));
        let mut authorization = HeaderValue::from_str(&format!("Basic {basic}"))?;
        authorization.set_sensitive(true);
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1024)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Target {
            client,
            batch_url: format!("{}/v1/batch", base_url.trim_end_matches('/')),
            authorization,
        })
    }

    /// Posts one body; `Err` names what went wrong in a few words.
    async fn send(&self, body: Bytes) -> Result<(), String> {
        let response = self
            .client
            .post(&self.batch_url)
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(describe)?;
        let status = response.status();
        response.bytes().await.map_err(describe)?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", status.as_u16()))
        }
    }
}

fn describe(err: reqwest::Error) -> String {
    if err.is_timeout() {
        "timeout".into()
    } else if err.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

/// What a phase measured.
pub struct PhaseStats {
    pub elapsed: Duration,
    pub requests: u64,
    pub events: u64,
    pub errors: BTreeMap<String, u64>,
    /// Microseconds.
    pub latency: Histogram<u64>,
    pub timeline: Vec<Sample>,
    /// Bytes the server wrote to storage during the phase, when it is a child of this command.
    pub disk_writes: Option<DiskWrites>,
    /// Who used the machine's cores during the phase.
    pub cpu: Option<CpuUse>,
}

/// One second of a phase.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sample {
    pub second: u64,
    pub events_per_sec: u64,
    /// 99th percentile latency of the requests answered in this second.
    pub p99_ms: f64,
    /// Resident memory of the server, when it is a child of this command.
    pub server_rss_kib: Option<u64>,
    /// Of which anonymous (heap) memory; the rest is mapped files and shared memory.
    pub server_rss_anon_kib: Option<u64>,
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

struct Counters {
    requests: AtomicU64,
    events: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Latencies (µs) of the current second, for the timeline.
    this_second: Mutex<Histogram<u64>>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            requests: AtomicU64::new(0),
            events: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            this_second: Mutex::new(new_histogram()),
        }
    }
}

impl Counters {
    fn ok(&self, events: u64, micros: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(events, Ordering::Relaxed);
        self.this_second
            .lock()
            .expect("latency lock")
            .saturating_record(micros);
    }

    /// The 99th percentile of the second just ended, in ms; starts the next second.
    fn second_p99_ms(&self) -> f64 {
        let mut window = self.this_second.lock().expect("latency lock");
        let p99 = if window.is_empty() {
            0.0
        } else {
            window.value_at_quantile(0.99) as f64 / 1000.0
        };
        window.reset();
        p99
    }

    fn error(&self, what: String) {
        *self
            .errors
            .lock()
            .expect("errors lock")
            .entry(what)
            .or_default() += 1;
    }

    fn n_errors(&self) -> u64 {
        self.errors.lock().expect("errors lock").values().sum()
    }
}

/// How a phase runs.
pub struct PhaseSpec<'a> {
    pub label: &'a str,
    pub duration: Duration,
    /// Show progress and sample the timeline (off for warm-ups).
    pub watch: bool,
    pub server_pid: Option<u32>,
}

/// `connections` loops, each posting the next body as soon as the last one was answered.
pub async fn closed_loop(
    target: &Arc<Target>,
    factory: &Arc<BodyFactory>,
    connections: usize,
    spec: PhaseSpec<'_>,
) -> PhaseStats {
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let deadline = started + spec.duration;
    let monitor = Monitor::start(&spec, Arc::clone(&counters));
    let events_per_body = factory.batch_size() as u64;
    let loops: Vec<_> = (0..connections)
        .map(|_| {
            let target = Arc::clone(target);
            let factory = Arc::clone(factory);
            let counters = Arc::clone(&counters);
            tokio::spawn(async move {
                let mut latency = new_histogram();
                while Instant::now() < deadline {
                    let body = factory.next_body();
                    let sent = Instant::now();
                    match target.send(body).await {
                        Ok(()) => {
                            let micros = sent.elapsed().as_micros() as u64;
                            latency.saturating_record(micros);
                            counters.ok(events_per_body, micros);
                        }
                        Err(what) => {
                            counters.error(what);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
                latency
            })
        })
        .collect();
    let mut latency = new_histogram();
    for handle in loops {
        if let Ok(part) = handle.await {
            latency.add(&part).expect("same bounds");
        }
    }
    finish(started, counters, latency, monitor).await
}

/// Starts one request every `1 / batches_per_sec` seconds, with at most `max_in_flight`
/// outstanding; a request that had to wait for a slot still counts its latency from its
/// scheduled start.
pub async fn open_loop(
    target: &Arc<Target>,
    factory: &Arc<BodyFactory>,
    batches_per_sec: f64,
    max_in_flight: usize,
    spec: PhaseSpec<'_>,
) -> PhaseStats {
    let counters = Arc::new(Counters::default());
    let latency = Arc::new(Mutex::new(new_histogram()));
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let started = Instant::now();
    let monitor = Monitor::start(&spec, Arc::clone(&counters));
    let events_per_body = factory.batch_size() as u64;
    for idx in 0u64.. {
        let offset = Duration::from_secs_f64(idx as f64 / batches_per_sec);
        if offset >= spec.duration {
            break;
        }
        let scheduled = started + offset;
        tokio::time::sleep_until(scheduled).await;
        let permit = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("semaphore stays open");
        let body = factory.next_body();
        let target = Arc::clone(target);
        let counters = Arc::clone(&counters);
        let latency = Arc::clone(&latency);
        tokio::spawn(async move {
            let result = target.send(body).await;
            let micros = scheduled.elapsed().as_micros() as u64;
            match result {
                Ok(()) => {
                    latency
                        .lock()
                        .expect("latency lock")
                        .saturating_record(micros);
                    counters.ok(events_per_body, micros);
                }
                Err(what) => counters.error(what),
            }
            drop(permit);
        });
    }
    let _all = slots
        .acquire_many(max_in_flight as u32)
        .await
        .expect("semaphore stays open");
    let latency = latency.lock().expect("latency lock").clone();
    finish(started, counters, latency, monitor).await
}

async fn finish(
    started: Instant,
    counters: Arc<Counters>,
    latency: Histogram<u64>,
    monitor: Monitor,
) -> PhaseStats {
    let elapsed = started.elapsed();
    let (timeline, disk_writes, cpu) = monitor.stop().await;
    let errors = counters.errors.lock().expect("errors lock").clone();
    PhaseStats {
        elapsed,
        requests: counters.requests.load(Ordering::Relaxed),
        events: counters.events.load(Ordering::Relaxed),
        errors,
        latency,
        timeline,
        disk_writes,
        cpu,
    }
}

/// Samples throughput and server memory every second and draws the progress line.
struct Monitor {
    task: Option<tokio::task::JoinHandle<Vec<Sample>>>,
    stop: Arc<tokio::sync::Notify>,
    pid: Option<u32>,
    written_at_start: Option<DiskWrites>,
    cpu_at_start: Option<CpuTicks>,
    started: Instant,
}

impl Monitor {
    fn start(spec: &PhaseSpec<'_>, counters: Arc<Counters>) -> Monitor {
        let pid = spec.server_pid;
        let written_at_start = pid.and_then(DiskWrites::now);
        let cpu_at_start = CpuTicks::now(pid);
        if !spec.watch {
            return Monitor {
                task: None,
                stop: Arc::new(tokio::sync::Notify::new()),
                pid,
                written_at_start,
                cpu_at_start,
                started: Instant::now(),
            };
        }
        let stop = Arc::new(tokio::sync::Notify::new());
        let bar = progress_bar(spec.label, spec.duration);
        let plain = bar.is_hidden();
        let label = spec.label.to_owned();
        let stopped = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut last_events = 0;
            let mut next_line = 10;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.notified() => break,
                }
                let events = counters.events.load(Ordering::Relaxed);
                let second = samples.len() as u64 + 1;
                let memory = pid.and_then(memory_kib);
                let sample = Sample {
                    second,
                    events_per_sec: events - last_events,
                    p99_ms: counters.second_p99_ms(),
                    server_rss_kib: memory.map(|m| m.rss),
                    server_rss_anon_kib: memory.map(|m| m.anon),
                };
                last_events = events;
                samples.push(sample);
                let overall = events as f64 / started.elapsed().as_secs_f64();
                let rss = sample
                    .server_rss_kib
                    .map(|k| format!(" · server RSS {} MiB", k / 1024))
                    .unwrap_or_default();
                let message = format!(
                    "{} events/s now, {} overall · p99 {:.1} ms · {} errors{rss}",
                    thousands(sample.events_per_sec),
                    thousands(overall as u64),
                    sample.p99_ms,
                    counters.n_errors()
                );
                bar.set_position(second);
                bar.set_message(message.clone());
                if plain && second >= next_line {
                    next_line += 10;
                    eprintln!("{label} {second}s: {message}");
                }
            }
            bar.finish_and_clear();
            samples
        });
        Monitor {
            task: Some(task),
            stop,
            pid,
            written_at_start,
            cpu_at_start,
            started: Instant::now(),
        }
    }

    /// The samples, the bytes the server wrote meanwhile, and who used the CPU.
    async fn stop(mut self) -> (Vec<Sample>, Option<DiskWrites>, Option<CpuUse>) {
        self.stop.notify_one();
        let seconds = self.started.elapsed().as_secs_f64();
        let cpu = CpuTicks::now(self.pid)
            .zip(self.cpu_at_start)
            .map(|(end, start)| end.since(start, seconds));
        let written = self
            .pid
            .and_then(DiskWrites::now)
            .zip(self.written_at_start.as_ref())
            .map(|(end, start)| end.since(start));
        let samples = match self.task.take() {
            Some(task) => task.await.unwrap_or_default(),
            None => Vec::new(),
        };
        (samples, written, cpu)
    }
}

fn progress_bar(label: &str, duration: Duration) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(duration.as_secs().max(1)), target);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>16} [{bar:24}] {pos:>4}/{len}s  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).expect("ascii digits"))
        .collect();
    groups.join(",")
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
