//! The engine's benchmark, in three parts, each on a fresh log, engage and flows in a temp
//! directory:
//!
//! 1. **Event accepted → run started.** Events are appended through
//!    [`signalbox_engage::Engage::create_events`] at a steady rate (accepted = the append is
//!    durable and returned); a reader polls `flows.db` every millisecond for the runs they
//!    started. Latency per event = first seen − accepted.
//! 2. **Waiting runs resume.** N runs wait on a one-minute delay, all due at the same instant
//!    (started while the clock was held still). The clock then moves on to that instant and
//!    the worker is woken, as its timer would; measured: wall time until every run moved past
//!    its delay, and each run's lateness (finished − due, by the clock, which runs in real
//!    time from then on).
//! 3. **Emails per second.** As 2, but after the delay each run sends an email to the SMTP
//!    server given; measured from the instant they are due until every send is recorded
//!    `sent`.
//!
//! Measured on a 2-core machine (release build, the aiosmtpd sink with `--discard`):
//! p50 2.5 ms and p99 23–25 ms from accepted to started at 500–1,000 events/s; 10,000 due
//! runs all moved on 123–143 ms after due; 1,196–1,492 emails/s.
//!
//! The profile facts come from a minimal reader of engage's profiles (email only); flows
//! here have no profile filter.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Map, Value};
use signalbox_core::Clock;
use signalbox_engage::{
    ApiEventInput, Engage, EngageConfig, EngageReader, MetricQuery, ProfileInput, ProfileKey,
};
use signalbox_seglang::ast::BuiltIn;
use signalbox_seglang::{ConsentView, EventFilter, ProfileFacts, PropertyPath, TimeWindow};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};

use crate::deps::{DepError, DepResult, FactsLoader};
use crate::engine::{FlowMail, Flows, FlowsConfig, FlowsDeps};
use crate::model::FlowStatus;
use crate::store::Probe;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Part 1: events sent.
    pub events: usize,
    /// Part 1: events per second.
    pub event_rate: u32,
    /// Part 2: runs waiting on a delay.
    pub waiting_runs: usize,
    /// Part 3: emails; `mail` must be set.
    pub emails: usize,
    /// The SMTP server for part 3 (e.g. a local aiosmtpd started with `--discard`).
    pub mail: Option<FlowMail>,
}

impl Default for BenchConfig {
    fn default() -> BenchConfig {
        BenchConfig {
            events: 2_000,
            event_rate: 500,
            waiting_runs: 10_000,
            emails: 5_000,
            mail: None,
        }
    }
}

/// The figures.
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    pub events: usize,
    pub event_rate: u32,
    pub start_p50: Duration,
    pub start_p99: Duration,
    pub start_max: Duration,
    pub waiting_runs: usize,
    /// Wall time from "due" until the last run moved past its delay.
    pub resume_all: Duration,
    /// The largest lateness of one run (finished − due, by the clock).
    pub resume_max_lateness: Duration,
    pub emails: usize,
    pub email_seconds: f64,
    pub emails_per_second: f64,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "event accepted → run started ({} events at {}/s): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.events,
            self.event_rate,
            ms(self.start_p50),
            ms(self.start_p99),
            ms(self.start_max)
        )?;
        writeln!(
            f,
            "{} runs waiting on a delay: all resumed {:.0} ms after due (largest lateness {:.0} ms)",
            self.waiting_runs,
            ms(self.resume_all),
            ms(self.resume_max_lateness)
        )?;
        if self.emails > 0 {
            write!(
                f,
                "{} emails handed to SMTP in {:.2} s: {:.0} emails/s",
                self.emails, self.email_seconds, self.emails_per_second
            )?;
        }
        Ok(())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
#[error("flows benchmark: {0}")]
pub struct BenchError(String);

fn err(e: impl std::fmt::Display) -> BenchError {
    BenchError(e.to_string())
}

/// Runs the three parts and returns the figures.
pub async fn run(config: BenchConfig) -> Result<BenchReport, BenchError> {
    let mut report = BenchReport {
        events: config.events,
        event_rate: config.event_rate,
        waiting_runs: config.waiting_runs,
        ..BenchReport::default()
    };
    if config.events > 0 {
        let (p50, p99, max) = start_latency(config.events, config.event_rate.max(1)).await?;
        report.start_p50 = p50;
        report.start_p99 = p99;
        report.start_max = max;
    }
    if config.waiting_runs > 0 {
        let (all, lateness) = resume(config.waiting_runs, None).await?;
        report.resume_all = all;
        report.resume_max_lateness = lateness;
    }
    if let (Some(mail), true) = (config.mail.clone(), config.emails > 0) {
        let (all, _) = resume(config.emails, Some(mail)).await?;
        report.emails = config.emails;
        report.email_seconds = all.as_secs_f64();
        report.emails_per_second = config.emails as f64 / all.as_secs_f64().max(1e-9);
    }
    Ok(report)
}

/// A clock that runs in real time, or is held still.
struct BenchClock(Mutex<ClockState>);

enum ClockState {
    Held(Timestamp),
    Running(SignedDuration),
}

impl Clock for BenchClock {
    fn now(&self) -> Timestamp {
        match &*self.0.lock().expect("clock lock") {
            ClockState::Held(t) => *t,
            ClockState::Running(offset) => Timestamp::now()
                .checked_add(*offset)
                .unwrap_or_else(|_| Timestamp::now()),
        }
    }
}

impl BenchClock {
    fn hold(&self, at: Timestamp) {
        *self.0.lock().expect("clock lock") = ClockState::Held(at);
    }
    /// Runs on in real time from `at`, now.
    fn run_from(&self, at: Timestamp) {
        let offset = at.duration_since(Timestamp::now());
        *self.0.lock().expect("clock lock") = ClockState::Running(offset);
    }
}

/// Minimal facts: the profile's email; consent as "never subscribed, not suppressed".
struct EmailFacts {
    engage: Engage,
    readers: Mutex<Vec<Box<dyn EngageReader>>>,
}

struct Facts(Option<Value>);

impl ProfileFacts for Facts {
    fn metric_count(&self, _: &str, _: TimeWindow, _: &[EventFilter]) -> u64 {
        0
    }
    fn metric_sum(&self, _: &str, _: TimeWindow, _: &[EventFilter]) -> f64 {
        0.0
    }
    fn metric_event_times(&self, _: &str, _: TimeWindow, _: &[EventFilter]) -> Vec<Timestamp> {
        Vec::new()
    }
    fn property(&self, path: &PropertyPath) -> Option<&Value> {
        (path.to_wire() == "email")
            .then_some(self.0.as_ref())
            .flatten()
    }
    fn is_member(&self, _: &str) -> bool {
        false
    }
    fn email_consent(&self) -> ConsentView {
        ConsentView {
            can_receive_marketing: true,
            ..ConsentView::default()
        }
    }
}

impl FactsLoader for EmailFacts {
    fn load(
        &self,
        profile_pk: ProfileKey,
        _now: Timestamp,
    ) -> DepResult<Box<dyn ProfileFacts + Send>> {
        let reader = self.readers.lock().expect("lock").pop();
        let reader = match reader {
            Some(reader) => reader,
            None => self.engage.reader().map_err(|e| DepError(e.to_string()))?,
        };
        let email = reader
            .profile_record(profile_pk, false)
            .map_err(|e| DepError(e.to_string()))?
            .and_then(|record| {
                record
                    .property(&PropertyPath::BuiltIn(BuiltIn::Email))
                    .cloned()
            });
        self.readers.lock().expect("lock").push(reader);
        Ok(Box::new(Facts(email)))
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    engage: Engage,
    flows: Flows,
    clock: Arc<BenchClock>,
    flows_path: std::path::PathBuf,
}

async fn setup(mail: Option<FlowMail>) -> Result<Setup, BenchError> {
    let dir = tempfile::tempdir().map_err(err)?;
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default())
            .map_err(err)?,
    );
    let clock = Arc::new(BenchClock(Mutex::new(ClockState::Running(
        SignedDuration::ZERO,
    ))));
    let mut engage_config = EngageConfig::new(dir.path().join("engage.db"));
    engage_config.poll_interval = Duration::from_millis(5);
    let engage = Engage::start(store, clock.clone(), engage_config)
        .await
        .map_err(err)?;
    let facts = Arc::new(EmailFacts {
        engage: engage.clone(),
        readers: Mutex::new(Vec::new()),
    });
    let flows_path = dir.path().join("flows.db");
    let mut config = FlowsConfig::new(&flows_path);
    config.mail = mail;
    let flows = Flows::start(engage.clone(), clock.clone(), config, FlowsDeps::new(facts))
        .await
        .map_err(err)?;
    Ok(Setup {
        _dir: dir,
        engage,
        flows,
        clock,
        flows_path,
    })
}

fn event(n: usize, metric: &str) -> ApiEventInput {
    let mut properties = Map::new();
    properties.insert("n".into(), json!(n));
    ApiEventInput {
        metric_name: metric.into(),
        profile: ProfileInput {
            email: Some(format!("p{n}@bench.example.com")),
            ..ProfileInput::default()
        },
        properties,
        ..ApiEventInput::default()
    }
}

async fn metric_id(s: &Setup, name: &str) -> Result<String, BenchError> {
    s.engage
        .create_events(vec![event(usize::MAX, name)])
        .await
        .map_err(err)?;
    s.engage
        .catch_up(Duration::from_secs(30))
        .await
        .map_err(err)?;
    s.flows.sync().await.map_err(err)?;
    let page = s
        .engage
        .list_metrics(MetricQuery::default())
        .await
        .map_err(err)?;
    page.items
        .into_iter()
        .find(|m| m.name == name)
        .map(|m| m.id.to_string())
        .ok_or_else(|| BenchError(format!("metric {name} missing")))
}

fn reader(path: &Path) -> Result<Probe, BenchError> {
    Probe::open(path).map_err(err)
}

async fn start_latency(
    events: usize,
    rate: u32,
) -> Result<(Duration, Duration, Duration), BenchError> {
    let s = setup(None).await?;
    let metric = metric_id(&s, "Bench Started").await?;
    s.flows
        .create_flow(
            "bench latency",
            &json!({"triggers": [{"type": "metric", "id": metric}], "entry_action_id": "d",
                "actions": [{"temporary_id": "d", "type": "time-delay",
                    "data": {"unit": "days", "value": 1}, "links": {"next": null}}]}),
            Some(FlowStatus::Live),
        )
        .await
        .map_err(err)?;
    let accepted: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; events]));
    let seen: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; events]));
    // The observer: new runs, every millisecond.
    let observer = {
        let seen = Arc::clone(&seen);
        let path = s.flows_path.clone();
        std::thread::spawn(move || -> Result<(), BenchError> {
            let conn = reader(&path)?;
            let mut last_id = 0i64;
            let mut found = 0;
            let deadline = Instant::now() + Duration::from_secs(120);
            while found < events && Instant::now() < deadline {
                let rows = conn.runs_after(last_id).map_err(err)?;
                let now = Instant::now();
                for (id, props) in rows {
                    last_id = id;
                    let n = props.get("n").and_then(Value::as_u64).map(|n| n as usize);
                    if let Some(n) = n.filter(|n| *n < events) {
                        seen.lock().expect("lock")[n] = Some(now);
                        found += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        })
    };
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let begin = Instant::now();
    for n in 0..events {
        let due = begin + interval * n as u32;
        let now = Instant::now();
        if due > now {
            tokio::time::sleep(due - now).await;
        }
        s.engage
            .create_events(vec![event(n, "Bench Started")])
            .await
            .map_err(err)?;
        accepted.lock().expect("lock")[n] = Some(Instant::now());
    }
    tokio::task::spawn_blocking(move || observer.join())
        .await
        .map_err(err)?
        .map_err(|_| BenchError("observer panicked".into()))??;
    let accepted = accepted.lock().expect("lock").clone();
    let seen = seen.lock().expect("lock").clone();
    let mut latencies: Vec<Duration> = accepted
        .iter()
        .zip(&seen)
        .filter_map(|(a, s)| Some(s.as_ref()?.saturating_duration_since(*a.as_ref()?)))
        .collect();
    if latencies.len() < events {
        return Err(BenchError(format!(
            "only {} of {events} events started a run",
            latencies.len()
        )));
    }
    latencies.sort();
    let pick = |q: f64| {
        latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    let result = (
        pick(0.50),
        pick(0.99),
        *latencies.last().expect("non-empty"),
    );
    s.flows.shutdown().await;
    s.engage.shutdown().await;
    Ok(result)
}

/// `count` runs wait one minute, all due at one instant; the clock then runs on from it.
/// With `mail`, each run then sends an email. Returns (all done after due, largest lateness).
async fn resume(count: usize, mail: Option<FlowMail>) -> Result<(Duration, Duration), BenchError> {
    let with_mail = mail.is_some();
    let s = setup(mail).await?;
    let metric = metric_id(&s, "Bench Waiting").await?;
    let next = if with_mail { json!("e") } else { Value::Null };
    let mut actions = vec![json!({"temporary_id": "d", "type": "time-delay",
        "data": {"unit": "minutes", "value": 1}, "links": {"next": next}})];
    if with_mail {
        actions.push(json!({"temporary_id": "e", "type": "send-email", "data": {"status": "live",
            "message": {"subject_line": "Hello {{ email }}", "html": "<p>Item {{ event.n }}</p><a href=\"https://example.com/x\">x</a>",
                "smart_sending_enabled": false}}, "links": {"next": null}}));
    }
    let flow = s
        .flows
        .create_flow(
            "bench waiting",
            &json!({"triggers": [{"type": "metric", "id": metric}], "entry_action_id": "d",
                "actions": actions}),
            Some(FlowStatus::Live),
        )
        .await
        .map_err(err)?;
    let start = Timestamp::now();
    s.clock.hold(start);
    for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
        s.engage
            .create_events(chunk.iter().map(|n| event(*n, "Bench Waiting")).collect())
            .await
            .map_err(err)?;
    }
    s.engage
        .catch_up(Duration::from_secs(120))
        .await
        .map_err(err)?;
    s.flows.sync().await.map_err(err)?;
    let waiting = s
        .flows
        .stats(&flow.id)
        .await
        .map_err(err)?
        .flow
        .get("waiting");
    if waiting as usize != count {
        return Err(BenchError(format!("{waiting} of {count} runs are waiting")));
    }
    let due = start + SignedDuration::from_mins(1);
    let began = Instant::now();
    s.clock.run_from(due);
    s.flows.wake();
    let path = s.flows_path.clone();
    let flow_id = flow.id.clone();
    let done_after = tokio::task::spawn_blocking(move || -> Result<Duration, BenchError> {
        let conn = reader(&path)?;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let n = if with_mail {
                conn.sent_count(&flow_id)
            } else {
                conn.completed_count(&flow_id)
            }
            .map_err(err)?;
            if n as usize >= count {
                return Ok(began.elapsed());
            }
            if Instant::now() > deadline {
                return Err(BenchError(format!("only {n} of {count} finished in 300 s")));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    })
    .await
    .map_err(err)??;
    let path = s.flows_path.clone();
    let flow_id = flow.id.clone();
    let lateness = tokio::task::spawn_blocking(move || -> Result<Duration, BenchError> {
        let conn = reader(&path)?;
        let last = conn.last_ended_us(&flow_id).map_err(err)?;
        let last = last.unwrap_or(due.as_microsecond());
        Ok(Duration::from_micros(
            (last - due.as_microsecond()).max(0) as u64
        ))
    })
    .await
    .map_err(err)??;
    s.flows.shutdown().await;
    s.engage.shutdown().await;
    Ok((done_after, lateness))
}
