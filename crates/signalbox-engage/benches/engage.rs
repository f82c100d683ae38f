//! Engage's speed: how fast the pipeline applies the log, how long a call takes from receipt to
//! its activity feed under load, and aggregates over a million events.
//!
//! `cargo bench -p signalbox-engage --bench engage` (set `ENGAGE_BENCH_EVENTS` for another
//! size, `ENGAGE_BENCH_RATE` and `ENGAGE_BENCH_SECS` for the latency run). Pipeline figures
//! are printed; aggregate timings are criterion's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use signalbox_core::{CallKind, NewCall, SourceId, SystemClock};
use signalbox_engage::{
    AggregateQuery, Engage, EngageConfig, EventQuery, Interval, Measurement, MetricQuery,
};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store, StoreError};

const PROFILES: usize = 20_000;
const CATEGORIES: [&str; 8] = [
    "Shirts", "Hats", "Shoes", "Bags", "Socks", "Coats", "Belts", "Scarves",
];

fn config(path: std::path::PathBuf) -> EngageConfig {
    let mut config = EngageConfig::new(path);
    config.batch_size = env_number("ENGAGE_BENCH_BATCH", config.batch_size);
    config
}

/// Bytes this process caused to be written to storage so far (Linux; 0 elsewhere).
fn disk_write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|line| line.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn call(kind: CallKind, received: Timestamp, mut message: serde_json::Value) -> NewCall {
    let message_id = uuid::Uuid::new_v4().to_string();
    message["type"] = json!(kind.as_str());
    message["messageId"] = json!(message_id);
    message["receivedAt"] = json!(received.to_string());
    if message.get("timestamp").is_none() {
        message["timestamp"] = json!(received.to_string());
    }
    NewCall {
        kind,
        message_id,
        received_at: received,
        payload: message.to_string(),
    }
}

fn track(i: usize, received: Timestamp, time: Timestamp) -> NewCall {
    call(
        CallKind::Track,
        received,
        json!({
            "userId": format!("user-{}", i % PROFILES),
            "event": "Viewed Product",
            "timestamp": time.to_string(),
            "properties": {
                "category": CATEGORIES[i % CATEGORIES.len()],
                "product_id": format!("P{}", i % 500),
                "revenue": (i % 50) as f64 + 0.99,
                "url": "https://shop.example.com/p",
            },
            "context": {"library": {"name": "analytics-python", "version": "2.3.4"}}
        }),
    )
}

async fn append(store: &Arc<dyn Store>, source: SourceId, calls: Vec<NewCall>) -> i64 {
    loop {
        match store.append(source, calls.clone(), Vec::new()).await {
            Ok(outcome) => return outcome.last_seq,
            Err(StoreError::Overloaded) => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(err) => panic!("append: {err}"),
        }
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    engage: Engage,
    metric: signalbox_engage::MetricId,
    start: Timestamp,
    end: Timestamp,
}

/// Appends identifies for every profile and `n` tracks spread over 90 days, then times the
/// pipeline applying them from a cold start.
async fn build(n: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default()).unwrap(),
    );
    let (source, _) = store.create_source("bench").await.unwrap();
    let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let span_us = SignedDuration::from_hours(24 * 90).as_micros() as i64;
    let now = Timestamp::now();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..PROFILES {
        batch.push(call(
            CallKind::Identify,
            now,
            json!({"userId": format!("user-{i}"),
                   "traits": {"email": format!("user{i}@example.com"), "plan": "pro"}}),
        ));
        if batch.len() == 1000 {
            append(&store, source.id, std::mem::take(&mut batch)).await;
        }
    }
    let appending = Instant::now();
    for i in 0..n {
        // Events arrive roughly in time order (a little out of order, as clients batch).
        let jitter = (i as i64 * 7919) % 60_000_000;
        let offset = ((i as i64 * (span_us / n as i64)) + jitter).min(span_us - 1);
        let time = start
            .checked_add(SignedDuration::from_micros(offset))
            .unwrap();
        batch.push(track(i, now, time));
        if batch.len() == 1000 {
            append(&store, source.id, std::mem::take(&mut batch)).await;
        }
    }
    if !batch.is_empty() {
        append(&store, source.id, batch).await;
    }
    eprintln!(
        "log: {} calls appended in {:.1} s",
        n + PROFILES,
        appending.elapsed().as_secs_f64()
    );

    let written_before = disk_write_bytes();
    let applying = Instant::now();
    let engage = Engage::start(
        Arc::clone(&store),
        Arc::new(SystemClock),
        config(dir.path().join("engage.db")),
    )
    .await
    .unwrap();
    engage.catch_up(Duration::from_secs(3600)).await.unwrap();
    let secs = applying.elapsed().as_secs_f64();
    let stats = engage.stats();
    let written = disk_write_bytes().saturating_sub(written_before);
    eprintln!(
        "pipeline (cold, from the log): {} entries, {} events in {:.1} s = {:.0} entries/s, {:.0} events/s; {:.0} bytes written to disk per event",
        stats.entries,
        stats.events,
        secs,
        stats.entries as f64 / secs,
        stats.events as f64 / secs,
        written as f64 / stats.events.max(1) as f64
    );
    let metric = engage
        .list_metrics(MetricQuery::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|m| m.name == "Viewed Product")
        .unwrap()
        .id;
    Fixture {
        _dir: dir,
        engage,
        metric,
        start,
        end: start
            .checked_add(SignedDuration::from_hours(24 * 90))
            .unwrap(),
    }
}

/// Appends at `rate` calls per second for `secs` seconds, as ingest would, and reports how
/// long calls took from receipt to being applied (readable in their feed).
async fn latency(rate: usize, secs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default()).unwrap(),
    );
    let (source, _) = store.create_source("bench").await.unwrap();
    let engage = Engage::start(
        Arc::clone(&store),
        Arc::new(SystemClock),
        config(dir.path().join("engage.db")),
    )
    .await
    .unwrap();
    let mut identifies = Vec::new();
    for i in 0..PROFILES {
        identifies.push(call(
            CallKind::Identify,
            Timestamp::now(),
            json!({"userId": format!("user-{i}"),
                   "traits": {"email": format!("user{i}@example.com")}}),
        ));
    }
    for chunk in identifies.chunks(1000) {
        append(&store, source.id, chunk.to_vec()).await;
    }
    engage.catch_up(Duration::from_secs(600)).await.unwrap();
    let before = engage.stats();

    // Requests of 100 calls (as SDKs batch), paced every `tick`.
    let per_request = 100;
    let tick = Duration::from_secs_f64(per_request as f64 / rate as f64);
    let started = Instant::now();
    let mut sent = 0usize;
    let mut tasks = Vec::new();
    let mut next = Instant::now();
    while started.elapsed() < Duration::from_secs(secs as u64) {
        let now = Timestamp::now();
        let calls: Vec<NewCall> = (0..per_request)
            .map(|k| track(sent + k, now, now))
            .collect();
        sent += per_request;
        let store = Arc::clone(&store);
        let engage = engage.clone();
        tasks.push(tokio::spawn(async move {
            append(&store, source.id, calls).await;
            engage.notify();
        }));
        next += tick;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
    let offered = sent as f64 / started.elapsed().as_secs_f64();
    for task in tasks {
        task.await.unwrap();
    }
    engage.catch_up(Duration::from_secs(600)).await.unwrap();
    let stats = engage.stats();
    // The feed answers right after.
    let feed = engage
        .list_events(EventQuery {
            newest_first: true,
            page_size: 10,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(feed.items.len(), 10);
    eprintln!(
        "latency at {offered:.0} calls/s for {secs} s ({} calls): receipt -> applied p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (all {} entries incl. {} warm-up); {} batches, reading {:.1} s, applying {:.1} s",
        stats.entries - before.entries,
        stats.latency.p50_ms,
        stats.latency.p99_ms,
        stats.latency.max_ms,
        stats.latency.entries,
        before.entries,
        stats.batches - before.batches,
        stats.read_seconds - before.read_seconds,
        stats.apply_seconds - before.apply_seconds,
    );
    engage.shutdown().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut criterion = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();

    let rate = env_number("ENGAGE_BENCH_RATE", 50_000);
    let secs = env_number("ENGAGE_BENCH_SECS", 10);
    runtime.block_on(latency(rate, secs));

    let n = env_number("ENGAGE_BENCH_EVENTS", 1_000_000);
    let fixture = runtime.block_on(build(n));
    let query = |interval, by: Vec<String>, measurements: Vec<Measurement>| AggregateQuery {
        metric_id: fixture.metric.clone(),
        measurements,
        interval,
        start: fixture.start,
        end: fixture.end,
        timezone: "America/New_York".into(),
        by,
        property_equals: Vec::new(),
    };
    let all = vec![
        Measurement::Count,
        Measurement::Unique,
        Measurement::SumValue,
    ];
    let mut group = criterion.benchmark_group(format!("aggregate_{n}_events"));
    for (name, q) in [
        (
            "count_sum_day",
            query(
                Interval::Day,
                vec![],
                vec![Measurement::Count, Measurement::SumValue],
            ),
        ),
        (
            "count_unique_sum_week",
            query(Interval::Week, vec![], all.clone()),
        ),
        (
            "count_unique_sum_hour",
            query(Interval::Hour, vec![], all.clone()),
        ),
        (
            "count_by_category_month",
            query(
                Interval::Month,
                vec!["category".into()],
                vec![Measurement::Count],
            ),
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime
                    .block_on(fixture.engage.aggregate(q.clone()))
                    .unwrap()
            })
        });
    }
    group.finish();
    criterion.final_summary();
}
