//! `signalbox bench ingest` end to end, briefly: it starts its own servers, runs every phase
//! and finds exactly the acknowledged events in the durable log.

mod common;

#[test]
fn a_short_run_measures_every_phase_and_the_log_holds_what_was_acknowledged() {
    let (stdout, report) = common::run_bench("ingest");
    assert!(stdout.contains("durable / ceiling"), "{stdout}");
    assert!(stdout.contains("backend: embedded"), "{stdout}");
    assert_eq!(report["backend"], "embedded");

    for phase in ["durable", "ceiling", "latency"] {
        let phase = &report[phase];
        assert!(phase["events"].as_u64().unwrap() > 0, "{phase}");
        assert_eq!(phase["events"].as_u64().unwrap() % 20, 0);
        assert!(phase["errors"].as_object().unwrap().is_empty(), "{phase}");
        assert!(phase["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(report["latency"]["target_events_per_sec"], 2000);
    let check = &report["log_check"];
    assert_eq!(check["exact"], true, "{check}");
    assert!(check["stored"].as_u64().unwrap() >= report["durable"]["events"].as_u64().unwrap());
    assert_eq!(report["memory"].as_array().unwrap().len(), 2);
}

/// With a PostgreSQL test server (`SIGNALBOX_TEST_DATABASE_URL`), both backends in one run:
/// each durable server's log holds what it acknowledged, beside the one ceiling.
#[test]
fn both_backends_run_side_by_side_beside_the_same_ceiling() {
    let Ok(server) = std::env::var("SIGNALBOX_TEST_DATABASE_URL") else {
        eprintln!("SIGNALBOX_TEST_DATABASE_URL is not set: the PostgreSQL run is skipped");
        return;
    };
    let (stdout, report) = common::run_bench_with(
        "ingest",
        &["--backends", "embedded,postgres", "--database-url", &server],
    );
    assert!(stdout.contains("side by side"), "{stdout}");
    let reports = report.as_array().unwrap();
    let backends: Vec<&str> = reports
        .iter()
        .map(|r| r["backend"].as_str().unwrap())
        .collect();
    assert_eq!(backends, ["embedded", "postgres"]);
    for report in reports {
        assert_eq!(report["log_check"]["exact"], true, "{report}");
        assert!(report["durable"]["events"].as_u64().unwrap() > 0);
        assert!(report["durable"]["errors"].as_object().unwrap().is_empty());
    }
    assert_eq!(reports[0]["ceiling"], reports[1]["ceiling"]);
}
