//! `signalbox bench chain` end to end, briefly: it starts its own server with live segments
//! and flows, times every probe through the activity feed, a segment and a flow, and checks
//! itself (the log holds every acknowledged call once, every segment equals a fresh
//! evaluation).

mod common;

#[test]
fn a_short_run_times_every_stage_and_passes_its_own_check() {
    let (stdout, report) = common::run_for_figures(&[
        "bench",
        "chain",
        "--duration",
        "2s",
        "--warmup",
        "1s",
        "--rate",
        "2000",
        "--batch-size",
        "20",
        "--segments",
        "12",
        "--flows",
        "3",
    ]);
    for line in [
        "200 -> activity feed",
        "200 -> segment entered",
        "200 -> flow run started",
        "backlog segments",
    ] {
        assert!(stdout.contains(line), "{line:?} missing: {stdout}");
    }
    let checks = &report["checks"];
    assert_eq!(checks["problems"], serde_json::json!([]), "{checks}");
    assert_eq!(checks["segments_compared"], 12, "{checks}");
    assert_eq!(checks["acknowledged"], checks["log_entries"], "{checks}");
    assert!(checks["acknowledged"].as_u64().unwrap() > 0, "{checks}");

    // A probe every 50 ms for two seconds, each seen by every stage.
    let probes = report["feed"]["probes"].as_u64().unwrap();
    assert!(probes >= 20, "{report}");
    for stage in ["feed", "segment", "flow"] {
        let figures = &report[stage];
        assert_eq!(figures["probes"].as_u64().unwrap(), probes, "{figures}");
        let p50 = figures["p50_ms"].as_f64().unwrap();
        let p99 = figures["p99_ms"].as_f64().unwrap();
        assert!(p50 > 0.0 && p50 <= p99, "{figures}");
        assert!(figures["max_ms"].as_f64().unwrap() >= p99, "{figures}");
        assert!(!figures["per_second"].as_array().unwrap().is_empty());
    }
    for stage in ["engage", "segments", "flows"] {
        assert!(
            !report["backlog"][stage].as_array().unwrap().is_empty(),
            "{report}"
        );
    }
    assert!(report["ingest"]["events_per_sec"].as_f64().unwrap() > 0.0);
}
