//! `signalbox bench pipeline` end to end, briefly: it starts its own servers, drains what the
//! closed loop sent, and sees every probe in its activity feed.

mod common;

#[test]
fn a_short_run_drains_the_backlog_and_sees_every_probe_in_the_feed() {
    let (stdout, report) = common::run_bench("pipeline");
    assert!(stdout.contains("200 -> in the activity feed"), "{stdout}");
    assert_eq!(report["backend"], "embedded");

    let throughput = &report["throughput"];
    assert!(throughput["entries"].as_i64().unwrap() > 0, "{throughput}");
    assert!(throughput["ingest_events_per_sec"].as_f64().unwrap() > 0.0);
    // The pipeline applied what ingest sent: while it ran, or after as a backlog (on a busy
    // machine a short run may leave no backlog, and then nothing is drained alone).
    let while_ingesting = throughput["applied_while_ingesting_per_sec"]
        .as_f64()
        .unwrap();
    let drain = throughput["drain_events_per_sec"].as_f64().unwrap();
    assert!(
        drain >= 0.0 && while_ingesting + drain > 0.0,
        "{throughput}"
    );
    let latency = &report["latency"];
    // A probe every 50 ms for a second, each seen in the feed.
    assert!(latency["probes"].as_u64().unwrap() >= 10, "{latency}");
    let p50 = latency["p50_ms"].as_f64().unwrap();
    let p99 = latency["p99_ms"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99, "{latency}");
    assert!(latency["max_ms"].as_f64().unwrap() >= p99);
    check_profile_reads(&latency["profile_reads"]);
}

/// A profile read every 10 ms for a second, each answered.
fn check_profile_reads(reads: &serde_json::Value) {
    assert!(reads["reads"].as_u64().unwrap() >= 50, "{reads}");
    assert_eq!(reads["errors"], 0, "{reads}");
    let p50 = reads["p50_ms"].as_f64().unwrap();
    let p99 = reads["p99_ms"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99, "{reads}");
    assert!(reads["max_ms"].as_f64().unwrap() >= p99);
}

/// With a PostgreSQL test server (`SIGNALBOX_TEST_DATABASE_URL`), both backends in one run,
/// each draining its backlog and answering profile reads.
#[test]
fn both_backends_drain_and_answer_profile_reads_side_by_side() {
    let Ok(server) = std::env::var("SIGNALBOX_TEST_DATABASE_URL") else {
        eprintln!("SIGNALBOX_TEST_DATABASE_URL is not set: the PostgreSQL run is skipped");
        return;
    };
    let (stdout, report) = common::run_bench_with(
        "pipeline",
        &["--backends", "embedded,postgres", "--database-url", &server],
    );
    assert!(stdout.contains("side by side"), "{stdout}");
    let runs = report.as_array().unwrap();
    let backends: Vec<&str> = runs
        .iter()
        .map(|r| r["backend"].as_str().unwrap())
        .collect();
    assert_eq!(backends, ["embedded", "postgres"]);
    for run in runs {
        assert!(run["throughput"]["entries"].as_i64().unwrap() > 0, "{run}");
        assert!(run["latency"]["probes"].as_u64().unwrap() >= 10, "{run}");
        check_profile_reads(&run["latency"]["profile_reads"]);
    }
}
