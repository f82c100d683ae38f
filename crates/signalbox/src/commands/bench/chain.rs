//! `signalbox bench chain`: the whole chain at a fixed rate, through the real server. A call
//! is only useful once it has reached the activity feed, the segments and the flows; this
//! measures each stage from the call's 200 to its effect, and how far each stage falls behind.
//!
//! 1. A fresh `serve` child, an API key, and `--warmup` of ecommerce traffic (the load
//!    generator's `/v1/batch` bodies: product views, carts, checkouts, orders, identifies),
//!    so the metrics exist.
//! 2. `--segments` live segments (counts over windows, sums, event filters, profile
//!    properties, list membership, segments on segments; one of them the probe segment) and
//!    `--flows` live flows (metric triggers, a day's delay, an email; one of them the probe
//!    flow). The run waits for every backfill.
//! 3. An open loop at `--rate` for `--duration`. Meanwhile a probe posts, every 50 ms, a
//!    new profile with one `Chain Probe` event, and three watchers time, from that 200:
//!    the event in the activity feed, the profile entering the probe segment, and the probe
//!    flow's run starting. Every second the backlog of each stage (log entries it has still
//!    to reflect) is sampled.
//! 4. Afterwards everything settles, then the run checks itself: every acknowledged call is
//!    in the log once, every probe event was applied once, and every segment's membership
//!    equals a from-scratch evaluation of its definition (`/api/segment-previews`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use reqwest::header::{ACCEPT, AUTHORIZATION};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::ecommerce::{last_days, metric_count};
use super::load::{self, new_histogram, thousands, PhaseSpec, Target};
use super::payload::BodyFactory;
use super::pipeline::Observer;
use super::report::{backend_name, sparkline};
use super::server::{CpuUse, ServerStores};
use super::{choose_backends, Settings, OPEN_LOOP_MAX_IN_FLIGHT};
use crate::cli::{ChainBenchArgs, GlobalArgs};

/// How often the probe posts a new profile with its event.
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// How often each watcher looks: fine enough for targets of 100 and 500 ms, coarse enough
/// that three watchers stay a small part of the server's load.
const POLL_EVERY: Duration = Duration::from_millis(10);
/// The gauges of how far each stage has followed the log.
const FOLLOWED: [&str; 3] = [
    "signalbox_engage_applied_seq",
    "signalbox_segments_followed_seq",
    "signalbox_flows_followed_seq",
];
/// How long the stages may take to settle after the load before the run gives up.
const SETTLE_LIMIT: Duration = Duration::from_secs(1_800);
/// The probe's event.
const PROBE_EVENT: &str = "Chain Probe";
/// Width of the printed sparklines.
const WIDTH: usize = 60;

pub async fn run(global: &GlobalArgs, args: ChainBenchArgs) -> anyhow::Result<()> {
    let settings = Settings::parse(&args.duration, &args.warmup, 1, args.rate, args.batch_size)?;
    if args.segments == 0 || args.flows == 0 {
        bail!("--segments and --flows must be at least 1 (the probe's own)");
    }
    let (backends, postgres) = choose_backends(global, &[])?;
    let backend = backends[0];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "signalbox bench chain on {}: {cores} cores, {} events/s for {} s, {} live segments, {} live flows",
        backend_name(Some(backend)),
        thousands(args.rate),
        settings.duration.as_secs(),
        args.segments,
        args.flows,
    );
    let stores = ServerStores::create(backend, postgres.as_ref()).await?;
    let child = stores.start(false).await?;
    let result = measure(
        &args,
        &settings,
        &stores,
        &child.base_url,
        &child.write_key,
        child.pid(),
    )
    .await;
    child.stop().await?;
    stores.remove().await?;
    let figures = result?;
    figures.print(args.rate);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&figures)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("figures written to {}", path.display());
    }
    if !figures.checks.passed() {
        bail!(
            "the run's own check failed: {}",
            figures.checks.problems.join("; ")
        );
    }
    Ok(())
}

async fn measure(
    args: &ChainBenchArgs,
    settings: &Settings,
    stores: &ServerStores,
    base: &str,
    write_key: &str,
    pid: u32,
) -> anyhow::Result<ChainFigures> {
    let api_key = stores
        .run_command(&["api-key", "create", "bench-chain", "--scope", "full"])
        .await?
        .trim()
        .to_owned();
    let api = Api::new(base, write_key, &api_key)?;
    let observer = Observer::new(base)?;
    let factory = Arc::new(BodyFactory::new(
        args.batch_size,
        super::IdStyle::Sequential,
        rand::random(),
    ));
    let target = Arc::new(Target::new(base, write_key)?);

    // Traffic first; one known shopper makes sure every metric exists, the probe's first
    // profile makes its metric.
    eprintln!("warm-up: {} s of traffic", settings.warmup.as_secs_f64());
    api.post_seed().await?;
    api.post_probe(0).await?;
    let warm = load::open_loop(
        &target,
        &factory,
        settings.batches_per_sec,
        OPEN_LOOP_MAX_IN_FLIGHT,
        PhaseSpec {
            label: "warm-up",
            duration: settings.warmup.max(Duration::from_secs(1)),
            watch: false,
            server_pid: None,
        },
    )
    .await;
    observer.wait_applied(observer.last_seq().await?).await?;
    let mut metrics = api.metric_ids().await?;
    // The order metric is "Order Completed" where the source keeps Segment's event names.
    if let Some(id) = metrics.get("Order Completed").cloned() {
        metrics.entry("Placed Order".into()).or_insert(id);
    }
    for name in [
        "Product Viewed",
        "Product Added",
        "Checkout Started",
        "Placed Order",
        PROBE_EVENT,
    ] {
        if !metrics.contains_key(name) {
            bail!(
                "metric {name:?} did not appear during the warm-up (known: {:?})",
                metrics.keys()
            );
        }
    }

    let setup = Instant::now();
    let list = api
        .create(
            "lists",
            json!({"type": "list", "attributes": {"name": "Chain VIP"}}),
        )
        .await?;
    let mut segments = Vec::new();
    let typical = segment_definition(0, &metrics, &list, None);
    let base_segment = api.create_segment("chain typical", &typical).await?;
    segments.push((base_segment.clone(), typical));
    for k in 1..args.segments.saturating_sub(1) {
        let definition = segment_definition(k, &metrics, &list, Some(&base_segment));
        let id = api
            .create_segment(&format!("chain {k}"), &definition)
            .await?;
        segments.push((id, definition));
    }
    let probe_definition = json!({"condition_groups": [{"conditions": [
        metric_count(&metrics[PROBE_EVENT], "greater-than-or-equal", 1.0, last_days(1))]}]});
    let probe_segment = api.create_segment("chain probe", &probe_definition).await?;
    segments.push((probe_segment.clone(), probe_definition));
    let template = api
        .create(
            "templates",
            json!({"type": "template", "attributes": {
            "name": "Chain reminder", "editor_type": "CODE",
            "html": "<p>Hello {{ first_name|default:'there' }}</p>", "text": "Hello"}}),
        )
        .await?;
    const TRIGGERS: [&str; 4] = [
        "Checkout Started",
        "Placed Order",
        "Product Added",
        "Product Viewed",
    ];
    for k in 0..args.flows - 1 {
        let trigger = &metrics[TRIGGERS[k % TRIGGERS.len()]];
        api.create_flow(&format!("chain {k}"), trigger, &template)
            .await?;
    }
    let probe_flow = api
        .create_flow("chain probe", &metrics[PROBE_EVENT], &template)
        .await?;
    api.wait_backfills(&segments).await?;
    eprintln!(
        "{} segments and {} flows live and backfilled in {:.1} s",
        segments.len(),
        args.flows,
        setup.elapsed().as_secs_f64()
    );

    // The measured phase.
    let base_seq = observer.last_seq().await?;
    let probes = Probes::new(
        api.clone(),
        metrics[PROBE_EVENT].clone(),
        probe_segment.clone(),
        probe_flow.clone(),
    )
    .await?;
    let started = Instant::now();
    let mut running = probes.start(started);
    let backlog = Backlog::start(observer.clone());
    let stats = load::open_loop(
        &target,
        &factory,
        settings.batches_per_sec,
        OPEN_LOOP_MAX_IN_FLIGHT,
        PhaseSpec {
            label: "chain",
            duration: settings.duration,
            watch: true,
            server_pid: Some(pid),
        },
    )
    .await;
    let load_secs = started.elapsed().as_secs_f64();
    running.stop_sending().await;

    // Everything settles.
    let last = observer.last_seq().await?;
    let settling = Instant::now();
    let mut told = Instant::now();
    loop {
        let [applied, segs, flows] = observer.gauges(&FOLLOWED).await?;
        if applied >= last && segs >= last && flows >= last {
            break;
        }
        if settling.elapsed() > SETTLE_LIMIT {
            bail!("the chain did not settle within {SETTLE_LIMIT:?}");
        }
        if told.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "settling {:.0} s: engage {} behind, segments {} behind, flows {} behind",
                settling.elapsed().as_secs_f64(),
                thousands((last - applied).max(0) as u64),
                thousands((last - segs).max(0) as u64),
                thousands((last - flows).max(0) as u64),
            );
            told = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settle_secs = settling.elapsed().as_secs_f64();
    let stages = running.finish().await?;
    let backlog = backlog.stop().await;

    // The run's own check.
    let mut checks = Checks::default();
    let probe_calls = 2 * stages.sent;
    let logged = (last - base_seq).max(0) as u64;
    let acknowledged = stats.events + probe_calls;
    if logged != acknowledged {
        checks.problems.push(format!(
            "the log holds {logged} entries of the run, {acknowledged} calls were acknowledged"
        ));
    }
    let probe_events = api.count_events(&metrics[PROBE_EVENT]).await?;
    // The warm-up's probe event is one of them.
    if probe_events != stages.sent + 1 {
        checks.problems.push(format!(
            "{probe_events} probe events in the feed for {} probes acknowledged",
            stages.sent + 1
        ));
    }
    for (id, definition) in &segments {
        let live = api.segment_count(id).await?;
        let fresh = api.preview_count(definition).await?;
        checks.segments_compared += 1;
        if live != fresh {
            checks.problems.push(format!(
                "segment {id}: {live} members, a fresh evaluation finds {fresh}"
            ));
        }
    }
    checks.log_entries = logged;
    checks.acknowledged = acknowledged;
    checks.probe_events = probe_events;

    let per_second: Vec<f64> = stats.timeline.iter().map(|s| s.p99_ms).collect();
    Ok(ChainFigures {
        rate: args.rate,
        segments: segments.len(),
        flows: args.flows,
        ingest: IngestFigures {
            events_per_sec: stats.events as f64 / load_secs,
            warmup_events: warm.events,
            p99_ms: stats.latency.value_at_quantile(0.99) as f64 / 1000.0,
            seconds_over_50_ms: per_second.iter().filter(|&&p| p > 50.0).count(),
            cores: stats.cpu,
            p99_ms_per_second: per_second,
            errors: stats.errors.values().sum(),
        },
        feed: stages.feed,
        segment: stages.segment,
        flow: stages.flow,
        backlog,
        settle_secs,
        checks,
    })
}

/// The `k`th live segment: a realistic mix over the ecommerce metrics. `k = 0` is the typical
/// one (checkout started in the last 30 days, no order since), which later ones build on.
fn segment_definition(
    k: usize,
    metrics: &BTreeMap<String, String>,
    list: &str,
    base_segment: Option<&str>,
) -> Value {
    const METRICS: [&str; 4] = [
        "Product Viewed",
        "Product Added",
        "Checkout Started",
        "Placed Order",
    ];
    const CATEGORIES: [&str; 5] = ["Shoes", "Socks", "Outerwear", "Kitchen", "Accessories"];
    const PLANS: [&str; 3] = ["free", "plus", "pro"];
    let m = &metrics[METRICS[k % METRICS.len()]];
    let placed = &metrics["Placed Order"];
    let group = |conditions: Vec<Value>| json!({"conditions": conditions});
    let groups = match (k, base_segment) {
        (0, _) | (_, None) => vec![
            group(vec![metric_count(
                &metrics["Checkout Started"],
                "greater-than-or-equal",
                1.0,
                last_days(30),
            )]),
            group(vec![metric_count(placed, "equals", 0.0, last_days(30))]),
        ],
        (k, Some(base)) => match k % 6 {
            0 => vec![group(vec![metric_count(
                m,
                "greater-than-or-equal",
                (k % 3 + 1) as f64,
                last_days(k % 60 + 1),
            )])],
            1 => vec![group(vec![json!({
                "type": "profile-metric", "metric_id": placed, "measurement": "sum",
                "measurement_filter": {"type": "numeric", "operator": "greater-than",
                                       "value": (k * 5) as f64},
                "timeframe_filter": {"type": "date", "operator": "alltime"}})])],
            2 => {
                let mut condition = metric_count(m, "greater-than", 0.0, last_days(30));
                condition["metric_filters"] = json!([{"property": "category", "filter": {
                    "type": "string", "operator": "equals",
                    "value": CATEGORIES[k % CATEGORIES.len()]}}]);
                vec![group(vec![condition])]
            }
            3 => vec![
                group(vec![
                    json!({"type": "profile-property", "property": "properties['plan']",
                    "filter": {"type": "string", "operator": "equals",
                               "value": PLANS[k % PLANS.len()]}}),
                ]),
                group(vec![metric_count(m, "greater-than", 0.0, last_days(14))]),
            ],
            4 => vec![
                group(vec![
                    json!({"type": "profile-group-membership", "is_member": true,
                                  "group_ids": [base]}),
                ]),
                group(vec![metric_count(m, "greater-than", 0.0, last_days(7))]),
            ],
            _ => vec![group(vec![
                json!({"type": "profile-group-membership", "is_member": true, "group_ids": [list]}),
                metric_count(m, "greater-than-or-equal", 2.0, last_days(3)),
            ])],
        },
    };
    json!({ "condition_groups": groups })
}

/// The Klaviyo-compatible API and the Tracking API of the server under test.
#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    base: String,
    write_key: String,
    api_key: String,
}

impl Api {
    fn new(base: &str, write_key: &str, api_key: &str) -> anyhow::Result<Api> {
        Ok(Api {
            client: reqwest::Client::builder()
                .tcp_nodelay(true)
                .timeout(Duration::from_secs(60))
                .build()?,
            base: base.trim_end_matches('/').to_owned(),
            write_key: write_key.to_owned(),
            api_key: api_key.to_owned(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .header(AUTHORIZATION, format!("Klaviyo-API-Key {}", self.api_key))
            .header(ACCEPT, "application/vnd.api+json")
            .header("revision", signalbox_core::KLAVIYO_REVISION)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self.request(reqwest::Method::GET, path).send().await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("GET {path}: HTTP {status}: {body}");
        }
        Ok(body)
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let response = self
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/vnd.api+json")
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST {path}: HTTP {status}: {answer}");
        }
        Ok(answer)
    }

    /// Creates a resource (`data` as given); its id.
    async fn create(&self, collection: &str, data: Value) -> anyhow::Result<String> {
        let answer = self
            .post(&format!("/api/{collection}"), json!({"data": data}))
            .await?;
        answer["data"]["id"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("creating a {collection} answered no id: {answer}"))
    }

    async fn create_segment(&self, name: &str, definition: &Value) -> anyhow::Result<String> {
        self.create(
            "segments",
            json!({"type": "segment", "attributes": {"name": name, "definition": definition}}),
        )
        .await
    }

    async fn create_flow(
        &self,
        name: &str,
        metric: &str,
        template: &str,
    ) -> anyhow::Result<String> {
        self.create(
            "flows",
            json!({"type": "flow", "attributes": {
            "name": name, "status": "live", "definition": {
                "triggers": [{"type": "metric", "id": metric}],
                "entry_action_id": "wait",
                "actions": [
                    {"temporary_id": "wait", "type": "time-delay",
                     "data": {"unit": "days", "value": 1}, "links": {"next": "email"}},
                    {"temporary_id": "email", "type": "send-email", "data": {"status": "live",
                     "message": {"from_email": "shop@bench.signalbox", "from_label": "Shop",
                                 "subject_line": "Still thinking about it?",
                                 "template_id": template}},
                     "links": {"next": null}}
                ]}}}),
        )
        .await
    }

    /// Metric ids by name.
    async fn metric_ids(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let page = self.get("/api/metrics").await?;
        Ok(page["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| {
                Some((
                    m["attributes"]["name"].as_str()?.to_owned(),
                    m["id"].as_str()?.to_owned(),
                ))
            })
            .collect())
    }

    /// One identified shopper who views, adds, checks out and orders: every metric the
    /// segments and flows name exists from then on.
    async fn post_seed(&self) -> anyhow::Result<()> {
        let product = json!({"product_id": "P-1000", "name": "Trail Runner 2",
                             "category": "Shoes", "price": 89.99, "quantity": 1});
        let track = |event: &str, properties: Value| {
            json!({"type": "track", "userId": "chain-seed", "event": event,
                   "properties": properties})
        };
        self.post_batch(json!([
            {"type": "identify", "userId": "chain-seed",
             "traits": {"email": "chain-seed@bench.signalbox", "plan": "pro"}},
            track("Product Viewed", product.clone()),
            track("Product Added", product.clone()),
            track("Checkout Started", json!({"order_id": "seed", "value": 89.99,
                                             "products": [product.clone()]})),
            track("Order Completed", json!({"order_id": "seed", "revenue": 89.99,
                                            "products": [product]})),
        ]))
        .await
    }

    async fn post_batch(&self, batch: Value) -> anyhow::Result<()> {
        let response = self
            .client
            .post(format!("{}/v1/batch", self.base))
            .basic_auth(&self.write_key, Some(""))
            .json(&json!({ "batch": batch }))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("/v1/batch: HTTP {}", response.status());
        }
        Ok(())
    }

    /// Posts the `n`th probe: a new profile and its one probe event, in one batch.
    async fn post_probe(&self, n: u64) -> anyhow::Result<()> {
        let user = format!("chain-probe-{n}");
        self.post_batch(json!([
            {"type": "identify", "userId": user,
             "traits": {"email": format!("chain-probe-{n}@bench.signalbox")}},
            {"type": "track", "userId": user, "event": PROBE_EVENT, "properties": {"n": n}},
        ]))
        .await
        .with_context(|| format!("probe {n}"))
    }

    async fn segment_count(&self, id: &str) -> anyhow::Result<u64> {
        let segment = self
            .get(&format!(
                "/api/segments/{id}?additional-fields[segment]=profile_count"
            ))
            .await?;
        segment["data"]["attributes"]["profile_count"]
            .as_u64()
            .with_context(|| format!("segment {id} has no profile_count"))
    }

    async fn preview_count(&self, definition: &Value) -> anyhow::Result<u64> {
        let answer = self
            .post(
                "/api/segment-previews",
                json!({"data": {"type": "segment-preview",
                                "attributes": {"definition": definition}}}),
            )
            .await?;
        answer["data"]["attributes"]["profile_count"]
            .as_u64()
            .context("the preview has no profile_count")
    }

    async fn flow_entered(&self, id: &str) -> anyhow::Result<u64> {
        let flow = self
            .get(&format!(
                "/api/flows/{id}?additional-fields[flow]=statistics"
            ))
            .await?;
        Ok(
            flow["data"]["attributes"]["statistics"]["flow"]["counts"]["entered"]
                .as_u64()
                .unwrap_or(0),
        )
    }

    /// The `n` of the newest probe event in the activity feed.
    async fn newest_probe(&self, metric: &str) -> anyhow::Result<u64> {
        let page = self
            .get(&format!(
                "/api/events?filter=equals(metric_id,\"{metric}\")&sort=-datetime&page[size]=1"
            ))
            .await?;
        Ok(page["data"][0]["attributes"]["event_properties"]["n"]
            .as_u64()
            .unwrap_or(0))
    }

    /// Events of a metric in the feed, every page counted.
    async fn count_events(&self, metric: &str) -> anyhow::Result<u64> {
        let mut path = format!("/api/events?filter=equals(metric_id,\"{metric}\")&page[size]=100");
        let mut count = 0;
        loop {
            let page = self.get(&path).await?;
            count += page["data"].as_array().map_or(0, Vec::len) as u64;
            match page["links"]["next"].as_str() {
                Some(next) => {
                    let at = next.find("/api/").context("odd next link")?;
                    path = next[at..].to_owned();
                }
                None => return Ok(count),
            }
        }
    }

    /// Waits until no segment's backfill runs.
    async fn wait_backfills(&self, segments: &[(String, Value)]) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let mut processing = 0;
            for (id, _) in segments {
                let segment = self.get(&format!("/api/segments/{id}")).await?;
                if segment["data"]["attributes"]["is_processing"].as_bool() == Some(true) {
                    processing += 1;
                }
            }
            if processing == 0 {
                return Ok(());
            }
            if started.elapsed() > SETTLE_LIMIT {
                bail!("{processing} segments still backfilling after {SETTLE_LIMIT:?}");
            }
            eprintln!("backfilling: {processing} segments to go");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

/// One stage's latency, from a probe's 200 to its effect.
#[derive(Debug, Default, serde::Serialize)]
struct StageFigures {
    probes: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Per second of the run (by when the probe was acknowledged): p50, p99 and max.
    per_second: Vec<[f64; 3]>,
}

impl StageFigures {
    fn from(all: &Histogram<u64>, per_second: &BTreeMap<u64, Histogram<u64>>) -> StageFigures {
        let ms = |us: u64| us as f64 / 1000.0;
        let figures = |h: &Histogram<u64>| {
            [
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max()),
            ]
        };
        let last = per_second.keys().next_back().copied().unwrap_or(0);
        StageFigures {
            probes: all.len(),
            p50_ms: ms(all.value_at_quantile(0.5)),
            p99_ms: ms(all.value_at_quantile(0.99)),
            max_ms: ms(all.max()),
            per_second: (0..=last)
                .map(|s| per_second.get(&s).map_or([0.0; 3], figures))
                .collect(),
        }
    }
}

/// The three stages' figures and how many probes were sent.
struct StageResults {
    sent: u64,
    feed: StageFigures,
    segment: StageFigures,
    flow: StageFigures,
}

/// The probe and its three watchers.
struct Probes {
    api: Api,
    metric: String,
    segment: String,
    flow: String,
    /// What the segment and the flow counted before the run (the warm-up's probe).
    segment_base: u64,
    flow_base: u64,
}

struct RunningProbes {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    /// `None` once it has stopped.
    sender: Option<tokio::task::JoinHandle<()>>,
    watchers: Vec<tokio::task::JoinHandle<anyhow::Result<StageFigures>>>,
}

/// When each probe was acknowledged, by number.
type Acked = Arc<Mutex<BTreeMap<u64, Instant>>>;

impl Probes {
    async fn new(
        api: Api,
        metric: String,
        segment: String,
        flow: String,
    ) -> anyhow::Result<Probes> {
        let segment_base = api.segment_count(&segment).await?;
        let flow_base = api.flow_entered(&flow).await?;
        Ok(Probes {
            api,
            metric,
            segment,
            flow,
            segment_base,
            flow_base,
        })
    }

    fn start(self, started: Instant) -> RunningProbes {
        let acked: Acked = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let sender = {
            let (api, acked, stop, sent) = (
                self.api.clone(),
                Arc::clone(&acked),
                Arc::clone(&stop),
                Arc::clone(&sent),
            );
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PROBE_EVERY);
                for n in 1u64.. {
                    tick.tick().await;
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if api.post_probe(n).await.is_ok() {
                        acked.lock().expect("acked lock").insert(n, Instant::now());
                        sent.store(n, Ordering::SeqCst);
                    }
                }
            })
        };
        let probes = Arc::new(self);
        let watch = |stage: Stage| {
            let (probes, acked, stop, sent) = (
                Arc::clone(&probes),
                Arc::clone(&acked),
                Arc::clone(&stop),
                Arc::clone(&sent),
            );
            tokio::spawn(async move { probes.watch(stage, started, acked, stop, sent).await })
        };
        let watchers = vec![
            watch(Stage::Feed),
            watch(Stage::Segment),
            watch(Stage::Flow),
        ];
        RunningProbes {
            stop,
            sent,
            sender: Some(sender),
            watchers,
        }
    }

    /// The highest probe number the stage shows.
    async fn visible(&self, stage: Stage) -> anyhow::Result<u64> {
        Ok(match stage {
            Stage::Feed => self.api.newest_probe(&self.metric).await?,
            Stage::Segment => self
                .api
                .segment_count(&self.segment)
                .await?
                .saturating_sub(self.segment_base),
            Stage::Flow => self
                .api
                .flow_entered(&self.flow)
                .await?
                .saturating_sub(self.flow_base),
        })
    }

    async fn watch(
        &self,
        stage: Stage,
        started: Instant,
        acked: Acked,
        stop: Arc<AtomicBool>,
        sent: Arc<AtomicU64>,
    ) -> anyhow::Result<StageFigures> {
        let mut all = new_histogram();
        let mut per_second: BTreeMap<u64, Histogram<u64>> = BTreeMap::new();
        let mut seen = 0u64;
        let begun = Instant::now();
        loop {
            let stopped = stop.load(Ordering::SeqCst);
            let last_sent = sent.load(Ordering::SeqCst);
            let newest = self.visible(stage).await?;
            let now = Instant::now();
            if newest > seen {
                let acked = acked.lock().expect("acked lock");
                for (_, at) in acked.range(seen + 1..=newest) {
                    let us = now.duration_since(*at).as_micros() as u64;
                    all.saturating_record(us);
                    per_second
                        .entry(at.duration_since(started).as_secs())
                        .or_insert_with(new_histogram)
                        .saturating_record(us);
                }
                seen = newest;
            }
            if stopped && seen >= last_sent {
                return Ok(StageFigures::from(&all, &per_second));
            }
            if begun.elapsed() > SETTLE_LIMIT * 2 {
                bail!(
                    "{stage:?}: probe {} of {last_sent} never appeared",
                    seen + 1
                );
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Stage {
    Feed,
    Segment,
    Flow,
}

impl RunningProbes {
    /// Stops the probes and returns once the last one sent is acknowledged (or failed), so
    /// that the log's end read after this includes it.
    async fn stop_sending(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(sender) = self.sender.take() {
            sender.await.ok();
        }
    }

    async fn finish(mut self) -> anyhow::Result<StageResults> {
        self.stop_sending().await;
        let mut figures = Vec::new();
        for watcher in self.watchers {
            figures.push(watcher.await.context("a probe watcher panicked")??);
        }
        let flow = figures.pop().expect("three watchers");
        let segment = figures.pop().expect("three watchers");
        let feed = figures.pop().expect("three watchers");
        Ok(StageResults {
            sent: self.sent.load(Ordering::SeqCst),
            feed,
            segment,
            flow,
        })
    }
}

/// Each stage's backlog once a second: log entries it has still to reflect.
#[derive(Debug, Default, serde::Serialize)]
struct BacklogFigures {
    engage: Vec<u64>,
    segments: Vec<u64>,
    flows: Vec<u64>,
}

struct Backlog {
    task: tokio::task::JoinHandle<BacklogFigures>,
    stop: Arc<tokio::sync::Notify>,
}

impl Backlog {
    fn start(observer: Observer) -> Backlog {
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut out = BacklogFigures::default();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let last = observer.last_seq().await.unwrap_or(0);
                        let followed = observer.gauges(&FOLLOWED).await.unwrap_or([last; 3]);
                        let [engage, segments, flows] = followed.map(|seq| (last - seq).max(0) as u64);
                        out.engage.push(engage);
                        out.segments.push(segments);
                        out.flows.push(flows);
                    }
                    _ = stopped.notified() => return out,
                }
            }
        });
        Backlog { task, stop }
    }

    async fn stop(self) -> BacklogFigures {
        self.stop.notify_one();
        self.task.await.unwrap_or_default()
    }
}

#[derive(Debug, Default, serde::Serialize)]
struct IngestFigures {
    events_per_sec: f64,
    warmup_events: u64,
    p99_ms: f64,
    p99_ms_per_second: Vec<f64>,
    seconds_over_50_ms: usize,
    errors: u64,
    /// Who used the machine's cores during the run: the same-run ceiling is all of them.
    cores: Option<CpuUse>,
}

#[derive(Debug, Default, serde::Serialize)]
struct Checks {
    log_entries: u64,
    acknowledged: u64,
    probe_events: u64,
    segments_compared: usize,
    problems: Vec<String>,
}

impl Checks {
    fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Debug, serde::Serialize)]
struct ChainFigures {
    rate: u64,
    segments: usize,
    flows: usize,
    ingest: IngestFigures,
    feed: StageFigures,
    segment: StageFigures,
    flow: StageFigures,
    backlog: BacklogFigures,
    settle_secs: f64,
    checks: Checks,
}

impl ChainFigures {
    fn print(&self, rate: u64) {
        let ms_line = |values: &[f64]| {
            let us: Vec<u64> = values.iter().map(|v| (v * 1000.0) as u64).collect();
            let top = values.iter().copied().fold(0.0, f64::max);
            format!("{}  (max {top:.1} ms)", sparkline(&us, WIDTH))
        };
        println!();
        println!("chain at {} events/s", thousands(rate));
        println!(
            "  /v1/batch                 {} events/s   p99 {:.1} ms   {} of {} seconds with p99 over 50 ms   {} errors",
            thousands(self.ingest.events_per_sec as u64),
            self.ingest.p99_ms,
            self.ingest.seconds_over_50_ms,
            self.ingest.p99_ms_per_second.len(),
            self.ingest.errors
        );
        println!(
            "    p99 per second          {}",
            ms_line(&self.ingest.p99_ms_per_second)
        );
        if let Some(cpu) = self.ingest.cores {
            println!(
                "  cores in use              server {:.2}, load generator and probes {:.2}, other {:.2}",
                cpu.server, cpu.generator, cpu.other
            );
        }
        for (name, stage) in [
            ("200 -> activity feed", &self.feed),
            ("200 -> segment entered", &self.segment),
            ("200 -> flow run started", &self.flow),
        ] {
            println!(
                "  {name:<25} p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms   ({} probes)",
                stage.p50_ms, stage.p99_ms, stage.max_ms, stage.probes
            );
            let p99: Vec<f64> = stage.per_second.iter().map(|s| s[1]).collect();
            println!("    p99 per second          {}", ms_line(&p99));
        }
        for (name, values) in [
            ("engage", &self.backlog.engage),
            ("segments", &self.backlog.segments),
            ("flows", &self.backlog.flows),
        ] {
            let top = values.iter().copied().max().unwrap_or(0);
            println!(
                "  backlog {name:<17} {}  (max {} entries)",
                sparkline(values, WIDTH),
                thousands(top)
            );
        }
        println!("  settled {:.1} s after the load ended", self.settle_secs);
        println!(
            "  check: {} calls acknowledged, {} in the log; {} probe events; {} segments against a fresh evaluation: {}",
            thousands(self.checks.acknowledged),
            thousands(self.checks.log_entries),
            self.checks.probe_events,
            self.checks.segments_compared,
            if self.checks.passed() { "all equal" } else { "MISMATCH" }
        );
        for problem in &self.checks.problems {
            println!("    {problem}");
        }
        if rate == 25_000 {
            let verdict = |ok: bool| if ok { "met" } else { "not met" };
            println!("  targets at 25,000 events/s:");
            println!(
                "    feed p99 < 100 ms            {}",
                verdict(self.feed.p99_ms < 100.0)
            );
            println!(
                "    segment p99 < 500 ms         {}",
                verdict(self.segment.p99_ms < 500.0)
            );
            println!(
                "    flow run p99 < 500 ms        {}",
                verdict(self.flow.p99_ms < 500.0)
            );
            println!(
                "    /v1/batch p99 < 25 ms, no second over 50 ms   {}",
                verdict(self.ingest.p99_ms < 25.0 && self.ingest.seconds_over_50_ms == 0)
            );
        }
    }
}
