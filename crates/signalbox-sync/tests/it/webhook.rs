//! The engine with webhook destinations: batching, faults, dead letters, replay, restarts,
//! isolation.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use signalbox_sync::kinds::webhook::sign;
use signalbox_sync::{Circuit, DeliveryOutcome, Replay};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_calls_go_in_few_signed_batches_in_order() {
    let h = Harness::new().await;
    let receiver = Receiver::start().await;
    let sync = h.start();
    let dest = create(
        &sync,
        webhook("hook", &receiver.url("/in"), Some("whsec-batching-key")),
    )
    .await;
    let ids = h.append_tracks(0, 3000, Timestamp::now()).await;
    sync.notify();
    let delivered = receiver.wait_for(3000, WAIT).await;
    assert_all_in_order(&delivered, &ids);
    assert!(sync.wait_idle(WAIT).await);
    let requests = receiver.requests();
    assert!(
        requests.len() <= 20,
        "{} requests for 3,000 calls",
        requests.len()
    );
    for request in &requests {
        assert!(request.body.len() <= 500 * 1024);
        assert_eq!(
            request.header("content-type").as_deref(),
            Some("application/json")
        );
        let key = request.header("idempotency-key").unwrap();
        assert!(key.starts_with(&format!("{}-", dest.id)), "{key}");
        let signature = request.header("signalbox-signature").unwrap();
        let t: i64 = signature
            .strip_prefix("t=")
            .and_then(|rest| rest.split(',').next())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(signature, sign("whsec-batching-key", t, &request.body));
        assert!(request.json()["sentAt"].is_string());
    }
    let status = sync.status("hook").await.unwrap();
    assert_eq!(status.delivered, 3000);
    assert_eq!(status.queued, 0);
    assert_eq!(status.lag_seconds, 0.0);
    assert!(status.throughput > 0.0);
    let records = sync.deliveries("hook", 100).await.unwrap();
    assert_eq!(records.len(), requests.len());
    assert!(records
        .iter()
        .all(|r| r.outcome == DeliveryOutcome::Delivered && r.status == Some(200)));
    sync.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_until_the_receiver_recovers() {
    let h = Harness::new().await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500), Reply::Status(502), Reply::Status(503)]);
    let sync = h.start();
    create(&sync, webhook("hook", &receiver.url("/in"), None)).await;
    let ids = h.append_tracks(0, 50, Timestamp::now()).await;
    sync.notify();
    let delivered = receiver.wait_for(50, WAIT).await;
    assert_all_in_order(&delivered, &ids);
    assert!(sync.wait_idle(WAIT).await);
    let status = sync.status("hook").await.unwrap();
    assert_eq!(status.delivered, 50);
    assert!(status.retried >= 3 && status.failed >= 3, "{status:?}");
    assert!(!status.retrying);
    assert!(status.last_error.unwrap().contains("503"));
    let records = sync.deliveries("hook", 100).await.unwrap();
    assert!(
        records
            .iter()
            .filter(|r| r.outcome == DeliveryOutcome::Retry)
            .count()
            >= 3
    );
    sync.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let h = Harness::new().await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::TooMany {
        retry_after: "2".into(),
    }]);
    let sync = h.start();
    create(&sync, webhook("hook", &receiver.url("/in"), None)).await;
    let ids = h.append_tracks(0, 10, Timestamp::now()).await;
    sync.notify();
    let delivered = receiver.wait_for(10, WAIT).await;
    assert_all_in_order(&delivered, &ids);
    let requests = receiver.requests();
    assert_eq!(requests[0].status, 429);
    let gap = requests[1].at.duration_since(requests[0].at);
    assert!(gap >= Duration::from_millis(1900), "retried after {gap:?}");
    sync.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_hangs_times_out_and_is_retried() {
    let h = Harness::with_timeout(Duration::from_millis(500)).await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::Hang(Duration::from_secs(3))]);
    let sync = h.start();
    create(&sync, webhook("hook", &receiver.url("/in"), None)).await;
    let ids = h.append_tracks(0, 20, Timestamp::now()).await;
    sync.notify();
    let delivered = receiver.wait_for(20, WAIT).await;
    assert_all_in_order(&delivered, &ids);
    assert!(sync.wait_idle(WAIT).await);
    let status = sync.status("hook").await.unwrap();
    assert!(status.retried >= 1);
    let records = sync.deliveries("hook", 100).await.unwrap();
    assert!(records.iter().any(|r| r.outcome == DeliveryOutcome::Retry
        && r.error.as_deref().unwrap_or("").contains("timed out")));
    sync.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_gets_everything_once_it_is_up() {
    let h = Harness::new().await;
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let sync = h.start();
    let url = format!("http://127.0.0.1:{port}/in");
    create(&sync, webhook("hook", &url, None)).await;
    let ids = h.append_tracks(0, 100, Timestamp::now()).await;
    sync.notify();
    // Down: connection refused, attempts fail until the breaker opens.
    let deadline = Instant::now() + WAIT;
    loop {
        let status = sync.status("hook").await.unwrap();
        if status.failed >= 5 && status.circuit != Circuit::Closed {
            assert!(status.retrying);
            assert!(status.queued >= 100);
            assert!(status.last_error.unwrap().contains("connect"));
            break;
        }
        assert!(Instant::now() < deadline, "{status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let receiver = Receiver::serve(listener).await;
    let delivered = receiver.wait_for(100, WAIT).await;
    assert_all_in_order(&delivered, &ids);
    assert!(sync.wait_idle(WAIT).await);
    let status = sync.status("hook").await.unwrap();
    assert_eq!(status.delivered, 100);
    assert_eq!(status.circuit, Circuit::Closed);
    sync.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_call_is_dead_lettered_and_replayed_once_fixed() {
    let h = Harness::new().await;
    let receiver = Receiver::start().await;
    receiver.state.poison.lock().unwrap().insert("m-37".into());
    let sync = h.start();
    create(&sync, webhook("hook", &receiver.url("/in"), None)).await;
    let ids = h.append_tracks(0, 100, Timestamp::now()).await;
    sync.notify();
    let delivered = receiver.wait_for(99, WAIT).await;
    assert!(sync.wait_idle(WAIT).await);
    let others: Vec<String> = ids.iter().filter(|id| *id != "m-37").cloned().collect();
    assert_all_in_order(&delivered, &others);

    let letters = sync.dead_letters("hook").await.unwrap();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.message_id, "m-37");
    assert_eq!(letter.status, Some(400));
    assert!(letter.reason.contains("400"));
    assert!(letter
        .response
        .as_deref()
        .unwrap()
        .contains("cannot take m-37"));
    assert_eq!(letter.payload["messageId"], "m-37");
    assert_eq!(letter.replayed_at, None);
    let status = sync.status("hook").await.unwrap();
    assert_eq!((status.delivered, status.dead_lettered), (99, 1));
    assert_eq!(status.queued, 0);

    receiver.state.poison.lock().unwrap().clear();
    sync.replay("hook", Replay::DeadLetters).await.unwrap();
    let delivered = receiver.wait_for(100, WAIT).await;
    assert_eq!(delivered.last().unwrap(), "m-37");
    assert!(sync.wait_idle(WAIT).await);
    let letters = sync.dead_letters("hook").await.unwrap();
    assert!(letters[0].replayed_at.is_some());
    assert_eq!(sync.status("hook").await.unwrap().delivered, 100);
    sync.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_at_the_cursor_without_gaps() {
    let h = Harness::new().await;
    let receiver = Receiver::start().await;
    let base = Timestamp::now();
    let mut expected;
    {
        let sync = h.start();
        create(&sync, webhook("hook", &receiver.url("/in"), None)).await;
        // Stop while delivery is under way (the receiver is slow).
        receiver.script((0..3).map(|_| Reply::Status(503)));
        expected = h.append_tracks(0, 500, base).await;
        sync.notify();
        receiver.wait_for(1, WAIT).await;
        drop(sync);
    }
    expected.extend(h.append_tracks(500, 1000, base).await);
    let sync = h.start();
    let delivered = receiver.wait_for(1000, WAIT).await;
    assert_all_in_order(&delivered, &expected);
    assert!(sync.wait_idle(WAIT).await);
    let status = sync.status("hook").await.unwrap();
    assert_eq!(status.queued, 0);
    // Repeats only of delivered ids (a request in flight at the stop), never new ones.
    let unique: HashSet<&String> = delivered.iter().collect();
    assert_eq!(unique.len(), 1000);
    sync.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_destination_does_not_delay_a_healthy_one() {
    let h = Harness::with_timeout(Duration::from_secs(20)).await;
    let hung = Receiver::start().await;
    hung.script((0..5).map(|_| Reply::Hang(Duration::from_secs(25))));
    let healthy = Receiver::start().await;
    let sync = h.start();
    create(&sync, webhook("hung", &hung.url("/in"), None)).await;
    create(&sync, webhook("healthy", &healthy.url("/in"), None)).await;
    let ids = h.append_tracks(0, 200, Timestamp::now()).await;
    sync.notify();
    let delivered = healthy.wait_for(200, Duration::from_secs(15)).await;
    assert_all_in_order(&delivered, &ids);
    assert!(hung.delivered_ids().is_empty(), "the hung one still waits");
    let status = sync.status("hung").await.unwrap();
    assert_eq!(status.delivered, 0);
    assert!(status.queued >= 200);
    sync.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_since_a_time_sends_again_with_the_same_ids() {
    let h = Harness::new().await;
    let receiver = Receiver::start().await;
    let sync = h.start();
    create(&sync, webhook("hook", &receiver.url("/in"), None)).await;
    let base: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let ids = h.append_tracks(0, 20, base).await;
    sync.notify();
    receiver.wait_for(20, WAIT).await;
    assert!(sync.wait_idle(WAIT).await);
    let before = receiver.delivered_ids().len();
    assert_eq!(before, 20);

    let since = base + jiff::SignedDuration::from_secs(12);
    sync.replay("hook", Replay::Since(since)).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while receiver.delivered_ids().len() < 28 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sync.wait_idle(WAIT).await);
    let again = receiver.delivered_ids()[before..].to_vec();
    assert_eq!(again, ids[12..].to_vec());
    sync.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_paces_requests() {
    let h = Harness::new().await;
    let receiver = Receiver::start().await;
    let sync = h.start();
    let mut new = webhook("slow", &receiver.url("/in"), None);
    new.rate = Some(20.0);
    create(&sync, new).await;
    let ids = h.append_tracks(0, 60, Timestamp::now()).await;
    sync.notify();
    let started = Instant::now();
    let delivered = receiver.wait_for(60, WAIT).await;
    assert_all_in_order(&delivered, &ids);
    // A burst of 20, then 40 more at 20 a second: at least ~2 s.
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert!(receiver
        .requests()
        .iter()
        .all(|r| r.json()["batch"].as_array().unwrap().len() <= 20));
    sync.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_address_is_the_destination_s_error_and_does_not_spin() {
    let mut h = Harness::new().await;
    // A client that keeps to public addresses, as production's does.
    h.outbound = signalbox_outbound::OutboundClient::new(Default::default()).unwrap();
    let receiver = Receiver::start().await;
    let sync = h.start();
    create(&sync, webhook("hook", &receiver.url("/in"), None)).await;
    h.append_tracks(0, 10, Timestamp::now()).await;
    sync.notify();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = sync.status("hook").await.unwrap();
    let error = status.last_error.clone().unwrap_or_default();
    assert!(error.contains("refused"), "{status:?}");
    assert!(status.retrying);
    assert!(
        status.failed >= 1 && status.failed < 40,
        "backs off: {status:?}"
    );
    assert_eq!(status.delivered, 0);
    assert!(
        sync.dead_letters("hook").await.unwrap().is_empty(),
        "the calls wait"
    );
    assert!(receiver.requests().is_empty());
    sync.shutdown(Duration::from_secs(5)).await;
}
