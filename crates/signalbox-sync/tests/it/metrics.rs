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

#[tokio::test(flavor = "current_thread")]
async fn calls_with_nothing_to_send_are_counted_as_skipped() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let h = Harness::new().await;
    let receiver = Receiver::start().await;
    let sync = h.start();
    sync.create(signalbox_sync::NewDestination {
        name: "klaviyo".into(),
        config: signalbox_sync::DestinationConfig::Klaviyo {
            api_key: signalbox_sync::Secret::new("pk_key"),
            endpoint: receiver.url(""),
            sources: vec!["web".into()],
        },
        rate: None,
    })
    .await
    .unwrap();
    h.append(
        signalbox_core::CallKind::Track,
        serde_json::json!({"type":"track","messageId":"off","userId":"u","event":"E",
            "integrations":{"Klaviyo":false}}),
    )
    .await;
    h.append_tracks(0, 2, Timestamp::now()).await;
    sync.notify();
    receiver.wait_for(0, WAIT).await;
    assert!(sync.wait_idle(WAIT).await);
    sync.shutdown(Duration::from_secs(5)).await;
    let text = handle.render();
    assert!(
        text.contains("signalbox_destination_skipped_total{destination=\"klaviyo\"} 1"),
        "{text}"
    );
    assert!(text.contains("signalbox_destination_delivered_total{destination=\"klaviyo\"} 2"));
}
