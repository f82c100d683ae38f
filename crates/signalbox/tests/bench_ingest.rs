//! `signalbox bench ingest` end to end, briefly: it starts its own servers, runs every phase
//! and finds exactly the acknowledged events in the durable log.

mod common;

#[test]
fn a_short_run_measures_every_phase_and_the_log_holds_what_was_acknowledged() {
    let (stdout, report) = common::run_bench("ingest");
    assert!(stdout.contains("durable / ceiling"), "{stdout}");

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
