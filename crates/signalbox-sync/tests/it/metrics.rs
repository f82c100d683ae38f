//! The per-destination metrics `/metrics` exports.

use std::time::Duration;

use jiff::Timestamp;
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::helpers::*;

// One thread: the engine's tasks record into the recorder installed here.
#[tokio::test(flavor = "current_thread")]
async fn delivered_retried_dead_lettered_and_lag_are_exported() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let h = Harness::new().await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500)]);
    receiver.state.poison.lock().unwrap().insert("m-4".into());
    let sync = h.start();
    create(&sync, webhook("hook", &receiver.url("/in"), None)).await;
    h.append_tracks(0, 10, Timestamp::now()).await;
    sync.notify();
    receiver.wait_for(9, WAIT).await;
    assert!(sync.wait_idle(WAIT).await);
    sync.shutdown(Duration::from_secs(5)).await;

    let text = handle.render();
    let value = |name: &str| -> f64 {
        let prefix = format!("{name}{{destination=\"hook\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{name} missing in:\n{text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("signalbox_destination_delivered_total"), 9.0);
    assert!(value("signalbox_destination_retried_total") >= 1.0);
    assert_eq!(value("signalbox_destination_dead_lettered_total"), 1.0);
    assert_eq!(value("signalbox_destination_lag_seconds"), 0.0);
}
