//! `signalbox bench segments`: live segments over generated ecommerce data (`ecommerce.rs`).
//!
//! 1. A log of `--profiles` identifies and `--events` tracks over the last 90 days, applied
//!    by engage from a cold start.
//! 2. Backfill of the typical segment: Checkout Started at least once in the last 30 days and
//!    Placed Order zero times in the last 30 days.
//! 3. Pipeline throughput: `--extra-events` new events applied by engage with no segment
//!    engine running, then as many again with `--live-segments` segments live (the segment
//!    engine following on the same machine), and how long the engine takes to catch up.
//! 4. Event → membership change latency: `--probes` events at `--probe-rate` per second, each
//!    making one profile enter a segment, timed from the append to the recorded change.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use jiff::Timestamp;
use serde_json::{json, Value};
use signalbox_audience::{Audience, SegmentInput};
use signalbox_core::{CallKind, SourceId, SystemClock};
use signalbox_engage::{Engage, EngageConfig, MetricQuery, ProfileField, ProfileQuery};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};

use super::ecommerce::{self, last_days, metric_count, CATEGORIES, METRICS, PLANS};
use crate::cli::SegmentsBenchArgs;

const WAIT: Duration = Duration::from_secs(3_600);

struct Rig {
    store: Arc<dyn Store>,
    source: SourceId,
    engage: Engage,
    config: EngageConfig,
}

impl Rig {
    async fn restart_engage(&mut self) -> anyhow::Result<()> {
        self.engage.shutdown().await;
        self.engage = Engage::start(
            Arc::clone(&self.store),
            Arc::new(SystemClock),
            self.config.clone(),
        )
        .await?;
        Ok(())
    }
}

async fn start_audience(engage: &Engage, dir: &Path) -> anyhow::Result<Audience> {
    Ok(Audience::start(
        engage.clone(),
        Arc::new(SystemClock),
        dir.join("audience.db"),
    )
    .await?)
}

/// The `k`th of the generated live segments: metric counts and sums over various windows,
/// event filters, properties, and segments on segments.
fn live_definition(k: usize, metrics: &[String], placed: &str, base_segment: &str) -> Value {
    let m = &metrics[k % metrics.len()];
    match k % 5 {
        0 => json!({"condition_groups": [{"conditions": [
            metric_count(m, "greater-than-or-equal", (k % 3 + 1) as f64, last_days(k % 60 + 1))]}]}),
        1 => json!({"condition_groups": [{"conditions": [{
            "type": "profile-metric", "metric_id": placed, "measurement": "sum",
            "measurement_filter": {"type": "numeric", "operator": "greater-than", "value": (k * 5) as f64},
            "timeframe_filter": {"type": "date", "operator": "alltime"}}]}]}),
        2 => {
            let mut condition = metric_count(m, "greater-than", 0.0, last_days(30));
            condition["metric_filters"] = json!([{"property": "category",
                "filter": {"type": "string", "operator": "equals", "value": CATEGORIES[k % CATEGORIES.len()]}}]);
            json!({"condition_groups": [{"conditions": [condition]}]})
        }
        3 => json!({"condition_groups": [
            {"conditions": [{"type": "profile-property", "property": "properties['plan']",
                "filter": {"type": "string", "operator": "equals", "value": PLANS[k % PLANS.len()]}}]},
            {"conditions": [metric_count(m, "greater-than", 0.0, last_days(14))]}]}),
        _ => json!({"condition_groups": [
            {"conditions": [{"type": "profile-group-membership", "is_member": true, "group_ids": [base_segment]}]},
            {"conditions": [metric_count(m, "greater-than", 0.0, last_days(7))]}]}),
    }
}

async fn wait_backfills(audience: &Audience) -> anyhow::Result<()> {
    tokio::time::timeout(WAIT, audience.sync())
        .await
        .context("the segment engine did not catch up")??;
    Ok(())
}

pub async fn run(args: SegmentsBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(
        dir.path().join("signalbox.db"),
        SqliteOptions::default(),
    )?);
    let (source, _) = store.create_source("bench").await?;
    let source = source.id;
    let now = Timestamp::now();

    println!(
        "generating {} profiles and {} events over 90 days …",
        args.profiles, args.events
    );
    let generating = Instant::now();
    ecommerce::append_profiles(&store, source, args.profiles).await;
    ecommerce::append_events(&store, source, args.events, args.profiles, now, 90, 1).await;
    println!("  appended in {:.1} s", generating.elapsed().as_secs_f64());

    let config = EngageConfig::new(dir.path().join("engage.db"));
    let applying = Instant::now();
    let engage = Engage::start(Arc::clone(&store), Arc::new(SystemClock), config.clone()).await?;
    engage.catch_up(WAIT).await?;
    let secs = applying.elapsed().as_secs_f64();
    println!(
        "engage applied {} calls in {secs:.1} s ({:.0}/s)",
        args.profiles + args.events,
        (args.profiles + args.events) as f64 / secs
    );
    let mut rig = Rig {
        store,
        source,
        engage,
        config,
    };
    let metric_ids: HashMap<String, String> = rig
        .engage
        .list_metrics(MetricQuery::default())
        .await?
        .items
        .into_iter()
        .map(|m| (m.name, m.id.to_string()))
        .collect();
    let id_of = |name: &str| metric_ids.get(name).cloned().unwrap_or_default();
    let (started, placed) = (id_of("Checkout Started"), id_of("Placed Order"));

    // Backfill of the typical segment.
    let audience = start_audience(&rig.engage, dir.path()).await?;
    let typical = json!({"condition_groups": [
        {"conditions": [metric_count(&started, "greater-than-or-equal", 1.0, last_days(30))]},
        {"conditions": [metric_count(&placed, "equals", 0.0, last_days(30))]},
    ]});
    let backfilling = Instant::now();
    let segment = audience
        .create_segment(SegmentInput {
            name: "Abandoned checkout".into(),
            definition: typical.clone(),
            is_starred: false,
        })
        .await?;
    wait_backfills(&audience).await?;
    let backfill_secs = backfilling.elapsed().as_secs_f64();
    let count = audience.profile_count(&segment.id).await?;
    let preview = audience.preview(&typical).await?;
    println!(
        "backfill of \"Checkout Started >= 1 in 30 d and Placed Order = 0 in 30 d\": {backfill_secs:.2} s \
         over {} profiles, {count} members (preview agrees: {})",
        args.profiles,
        preview.profile_count == count
    );

    // Throughput without a segment engine.
    audience.shutdown().await;
    drop(audience);
    rig.engage.shutdown().await;
    let t0 = Timestamp::now();
    ecommerce::append_events(
        &rig.store,
        rig.source,
        args.extra_events,
        args.profiles,
        t0,
        0,
        2,
    )
    .await;
    let timing = Instant::now();
    rig.restart_engage().await?;
    rig.engage.catch_up(WAIT).await?;
    let none_secs = timing.elapsed().as_secs_f64();
    let none_rate = args.extra_events as f64 / none_secs;
    println!(
        "pipeline, no segments: {} events in {none_secs:.2} s = {none_rate:.0} events/s",
        args.extra_events
    );

    // Define the live segments.
    let audience = start_audience(&rig.engage, dir.path()).await?;
    let metrics: Vec<String> = METRICS.iter().map(|(name, _)| id_of(name)).collect();
    let defining = Instant::now();
    for k in 1..args.live_segments {
        audience
            .create_segment(SegmentInput {
                name: format!("live {k}"),
                definition: live_definition(k, &metrics, &placed, &segment.id),
                is_starred: false,
            })
            .await?;
    }
    wait_backfills(&audience).await?;
    println!(
        "{} more segments defined and backfilled in {:.1} s",
        args.live_segments.saturating_sub(1),
        defining.elapsed().as_secs_f64()
    );

    // Throughput with the live segments followed.
    audience.shutdown().await;
    drop(audience);
    rig.engage.shutdown().await;
    let t1 = Timestamp::now();
    ecommerce::append_events(
        &rig.store,
        rig.source,
        args.extra_events,
        args.profiles,
        t1,
        0,
        3,
    )
    .await;
    let timing = Instant::now();
    rig.restart_engage().await?;
    let audience = start_audience(&rig.engage, dir.path()).await?;
    rig.engage.catch_up(WAIT).await?;
    let live_secs = timing.elapsed().as_secs_f64();
    wait_backfills(&audience).await?;
    let follow_secs = timing.elapsed().as_secs_f64();
    let live_rate = args.extra_events as f64 / live_secs;
    println!(
        "pipeline, {} live segments: {} events in {live_secs:.2} s = {live_rate:.0} events/s \
         ({:+.1} % vs none); memberships caught up after {follow_secs:.2} s ({:.0} events/s)",
        args.live_segments,
        args.extra_events,
        (live_rate / none_rate - 1.0) * 100.0,
        args.extra_events as f64 / follow_secs
    );

    // Latency: probe events, each making one profile enter the probe segment.
    let probe_metric_event = "Probe";
    ecommerce::append(
        &rig.store,
        rig.source,
        vec![ecommerce::call(
            CallKind::Track,
            Timestamp::now(),
            json!({"userId": ecommerce::user(0), "event": probe_metric_event}),
        )],
    )
    .await;
    rig.engage.catch_up(WAIT).await?;
    let probe_metric = rig
        .engage
        .list_metrics(MetricQuery::default())
        .await?
        .items
        .into_iter()
        .find(|m| m.name == probe_metric_event)
        .context("the probe metric")?
        .id
        .to_string();
    let probe_segment = audience
        .create_segment(SegmentInput {
            name: "probe".into(),
            definition: json!({"condition_groups": [{"conditions": [
                metric_count(&probe_metric, "greater-than", 0.0, last_days(1))]}]}),
            is_starred: false,
        })
        .await?;
    wait_backfills(&audience).await?;
    let probes = args.probes.min(args.profiles.saturating_sub(1));
    let mut profile_ids = HashMap::new();
    for i in 1..=probes {
        let found = rig
            .engage
            .list_profiles(ProfileQuery {
                any_of: vec![(ProfileField::Email, vec![format!("user{i}@example.com")])],
                ..ProfileQuery::default()
            })
            .await?;
        if let Some(profile) = found.items.into_iter().next() {
            profile_ids.insert(profile.id.to_string(), i);
        }
    }
    let mut cursor = audience
        .changes_after(0, usize::MAX >> 1)
        .await?
        .last()
        .map_or(0, |c| c.cursor);
    let sent: Arc<std::sync::Mutex<HashMap<usize, Instant>>> = Arc::default();
    let sender = {
        let store = Arc::clone(&rig.store);
        let engage = rig.engage.clone();
        let sent = Arc::clone(&sent);
        let interval = Duration::from_secs_f64(1.0 / args.probe_rate.max(1) as f64);
        let source = rig.source;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            for i in 1..=probes {
                tick.tick().await;
                let call = ecommerce::call(
                    CallKind::Track,
                    Timestamp::now(),
                    json!({"userId": ecommerce::user(i), "event": "Probe"}),
                );
                let at = Instant::now();
                ecommerce::append(&store, source, vec![call]).await;
                sent.lock().expect("sent lock").insert(i, at);
                engage.notify();
            }
        })
    };
    let mut latencies = Vec::new();
    let deadline = Instant::now()
        + Duration::from_secs(120)
        + Duration::from_secs_f64(probes as f64 / args.probe_rate.max(1) as f64);
    while latencies.len() < profile_ids.len() && Instant::now() < deadline {
        for change in audience.changes_after(cursor, 1_000).await? {
            cursor = change.cursor;
            if change.segment_id != probe_segment.id || !change.entered {
                continue;
            }
            let seen = Instant::now();
            if let Some(i) = profile_ids.get(&change.profile_id) {
                if let Some(at) = sent.lock().expect("sent lock").get(i) {
                    latencies.push(seen.duration_since(*at));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    sender.await?;
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1_000.0)
    };
    println!(
        "event -> membership change ({} probes at {}/s, {} live segments): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        args.probe_rate,
        args.live_segments + 1,
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    audience.shutdown().await;
    rig.engage.shutdown().await;
    Ok(())
}
