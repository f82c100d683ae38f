//! Metrics (Prometheus) and the notable moments of the ingest path.
//!
//! Each moment is a function here so that its metric name and its log line are written once.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use signalbox_core::RejectCode;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn prometheus() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                    &[
                        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full(
                            "signalbox_batch_messages".into(),
                        ),
                        &[
                            1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
                        ],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full(
                            "signalbox_commit_group_requests".into(),
                        ),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
                    )
                })
                .expect("valid buckets");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            spawn_upkeep(handle.clone());
            // Another recorder may already be installed (several apps in one test process);
            // then this handle still renders what this recorder saw, which is nothing.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

/// Help texts of the metrics recorded outside this crate (the exporter prints them as
/// `# HELP` once a metric has a value).
fn describe() {
    metrics::describe_counter!(
        "signalbox_destination_delivered_total",
        metrics::Unit::Count,
        "Items a destination delivered (its receiver answered 2xx), by destination"
    );
    metrics::describe_counter!(
        "signalbox_destination_retried_total",
        metrics::Unit::Count,
        "Requests a destination sent again after a failure, by destination"
    );
    metrics::describe_counter!(
        "signalbox_destination_dead_lettered_total",
        metrics::Unit::Count,
        "Items a receiver refused for good, kept as dead letters, by destination"
    );
    metrics::describe_counter!(
        "signalbox_destination_skipped_total",
        metrics::Unit::Count,
        "Items a destination followed but had nothing to send for (no identity, turned off by the call's integrations), by destination"
    );
    metrics::describe_gauge!(
        "signalbox_segments_followed_seq",
        metrics::Unit::Count,
        "Log entry up to which every change engage applied is reflected in segment membership"
    );
    metrics::describe_gauge!(
        "signalbox_flows_followed_seq",
        metrics::Unit::Count,
        "Log entry up to which every change engage applied has been through the flows' triggers"
    );
    metrics::describe_gauge!(
        "signalbox_destination_lag_seconds",
        metrics::Unit::Seconds,
        "Age of a destination's oldest undelivered item (0 when nothing waits), by destination"
    );
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds recorded histogram samples into their buckets now and then. The recorder keeps each
/// sample until then (or until `/metrics` is read): without this, a server nobody scrapes
/// would hold every sample it ever recorded.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("signalbox-metrics".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        });
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "cannot start the metrics upkeep thread");
    }
}

/// Calls written to the log.
pub fn events_accepted(source: &str, count: u32) {
    metrics::counter!("signalbox_events_accepted_total").increment(count.into());
    tracing::debug!(source, count, "events accepted");
}

/// Calls answered 200 but not written again: their messageId was already in the log.
pub fn events_deduplicated(source: &str, count: u32) {
    if count > 0 {
        metrics::counter!("signalbox_events_deduplicated_total").increment(count.into());
        tracing::debug!(source, count, "duplicate events skipped");
    }
}

/// Messages refused, by reason.
pub fn events_rejected(code: RejectCode, count: u32) {
    metrics::counter!("signalbox_events_rejected_total", "code" => code.as_str())
        .increment(count.into());
    tracing::debug!(code = code.as_str(), count, "events rejected");
}

/// A whole request refused (auth, limits, overload).
pub fn request_refused(status: u16, code: &'static str) {
    metrics::counter!("signalbox_requests_refused_total", "code" => code, "status" => status.to_string())
        .increment(1);
}

/// Messages in one accepted request.
pub fn batch_size(count: usize) {
    metrics::histogram!("signalbox_batch_messages").record(count as f64);
}

/// An open-pixel or click-link hit (`kind`: `open`, `click`), by outcome: `recorded`,
/// `refused` (forged or altered token), `not_recorded` (the log refused the event).
pub fn tracking_hit(kind: &'static str, outcome: &'static str) {
    metrics::counter!("signalbox_tracking_hits_total", "kind" => kind, "outcome" => outcome)
        .increment(1);
}
