//! The `klaviyo` and `segment` kinds end to end against local receivers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use jiff::Timestamp;
use serde_json::{json, Map, Value};
use signalbox_core::CallKind;
use signalbox_engage::{BuiltinMetric, EmailEvent, OutboxChange, OutboxEntry, ProfileId};
use signalbox_sync::{
    DestinationConfig, NewDestination, OutboxFeed, Position, Replay, Secret, SyncResult,
};
use tokio::sync::watch;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn klaviyo_gets_imports_list_adds_and_event_jobs_in_log_order() {
    let h = Harness::new().await;
    h.log
        .set_source_settings("web", json!({ "listId": "LIST1" }))
        .await
        .unwrap();
    let receiver = Receiver::start().await;
    h.append(CallKind::Track, json!({"type":"track","messageId":"t1","userId":"u1","event":"Viewed","properties":{"email":"ada@example.com"}})).await;
    h.append(CallKind::Track, json!({"type":"track","messageId":"t2","userId":"u1","event":"Order Completed",
        "properties":{"email":"ada@example.com","orderId":"O9","revenue":12.5,"products":[{"product_id":"P1"}]}})).await;
    h.append(CallKind::Identify, json!({"type":"identify","messageId":"i1","userId":"u1","traits":{"email":"ada@example.com","firstName":"Ada"}})).await;
    h.append(CallKind::Track, json!({"type":"track","messageId":"t3","userId":"u1","event":"Viewed","properties":{"email":"ada@example.com"},
        "integrations":{"Klaviyo":false}})).await;
    h.append(
        CallKind::Page,
        json!({"type":"page","messageId":"p1","userId":"u1"}),
    )
    .await;
    h.append(CallKind::Track, json!({"type":"track","messageId":"t4","userId":"u1","event":"Viewed","properties":{"email":"ada@example.com"}})).await;
    // Everything is in the log before the destination starts: one read sees it all.
    let sync = h.start();
    sync.create(NewDestination {
        name: "klaviyo".into(),
        config: DestinationConfig::Klaviyo {
            api_key: Secret::new("pk_forward_key_123456"),
            endpoint: receiver.url(""),
            sources: vec!["web".into()],
        },
        rate: None,
    })
    .await
    .unwrap();
    // A destination starts at the log's end; a replay from the start sends what came before.
    sync.replay("klaviyo", Replay::Since(Timestamp::UNIX_EPOCH))
        .await
        .unwrap();
    sync.notify();
    assert!(sync.wait_idle(WAIT).await);
    let requests = receiver.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/event-bulk-create-jobs",
            "/api/profile-import",
            "/api/lists/LIST1/relationships/profiles",
            "/api/event-bulk-create-jobs",
        ]
    );
    let first = requests[0].json();
    let entries = first["data"]["attributes"]["events-bulk-create"]["data"]
        .as_array()
        .unwrap();
    let unique_ids: Vec<&str> = entries
        .iter()
        .map(|e| {
            e["attributes"]["events"]["data"][0]["attributes"]["unique_id"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(unique_ids, ["t1", "O9", "O9_P1"]);
    assert_eq!(
        entries[1]["attributes"]["events"]["data"][0]["attributes"]["value"],
        12.5
    );
    assert_eq!(
        requests[1].json()["data"]["attributes"]["first_name"],
        "Ada"
    );
    assert_eq!(
        requests[2].json(),
        json!({"data":[{"type":"profile","id":"P-ada@example.com"}]})
    );
    let last = requests[3].json();
    let only = &last["data"]["attributes"]["events-bulk-create"]["data"];
    assert_eq!(
        only.as_array().unwrap().len(),
        1,
        "t3 (Klaviyo off) and the page skipped"
    );
    for request in &requests {
        assert_eq!(
            request.header("authorization").unwrap(),
            "Klaviyo-API-Key pk_forward_key_123456"
        );
        assert_eq!(request.header("revision").unwrap(), "2026-07-15");
        assert_eq!(
            request.header("content-type").unwrap(),
            "application/vnd.api+json"
        );
        assert_eq!(request.header("signalbox-origin").unwrap(), "segment");
    }
    let status = sync.status("klaviyo").await.unwrap();
    assert_eq!(status.delivered, 4, "t1, t2, i1, t4");
    assert_eq!(status.queued, 0);
    sync.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_klaviyo_event_is_dead_lettered_and_replayed() {
    let h = Harness::new().await;
    let receiver = Receiver::start().await;
    receiver.state.poison.lock().unwrap().insert("t3".into());
    for i in 1..=6 {
        h.append(
            CallKind::Track,
            json!({"type":"track","messageId":format!("t{i}"),"userId":"u1",
            "event":"Viewed","properties":{"email":"ada@example.com","i":i}}),
        )
        .await;
    }
    let sync = h.start();
    sync.create(NewDestination {
        name: "klaviyo".into(),
        config: DestinationConfig::Klaviyo {
            api_key: Secret::new("pk_replay_key"),
            endpoint: receiver.url(""),
            sources: vec!["web".into()],
        },
        rate: None,
    })
    .await
    .unwrap();
    // A destination starts at the log's end; a replay from the start sends what came before.
    sync.replay("klaviyo", Replay::Since(Timestamp::UNIX_EPOCH))
        .await
        .unwrap();
    sync.notify();
    assert!(sync.wait_idle(WAIT).await);
    let unique_ids = |only_ok: bool| -> Vec<String> {
        receiver
            .requests()
            .iter()
            .filter(|r| !only_ok || r.status == 202)
            .flat_map(|r| {
                r.json()["data"]["attributes"]["events-bulk-create"]["data"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|e| {
                e["attributes"]["events"]["data"][0]["attributes"]["unique_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(unique_ids(true), ["t1", "t2", "t4", "t5", "t6"]);
    let letters = sync.dead_letters("klaviyo").await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].message_id, "t3");
    assert_eq!(letters[0].status, Some(400));
    assert_eq!(letters[0].payload["op"], "event");

    receiver.state.poison.lock().unwrap().clear();
    sync.replay("klaviyo", signalbox_sync::Replay::DeadLetters)
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while unique_ids(true).len() < 6 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(unique_ids(true), ["t1", "t2", "t4", "t5", "t6", "t3"]);
    assert!(sync.wait_idle(WAIT).await);
    assert!(sync.dead_letters("klaviyo").await.unwrap()[0]
        .replayed_at
        .is_some());
    let status = sync.status("klaviyo").await.unwrap();
    assert_eq!((status.delivered, status.dead_lettered), (6, 1));
    sync.shutdown(Duration::from_secs(5)).await;
}

/// An outbox driven by the test.
#[derive(Default)]
struct TestOutbox {
    entries: Mutex<Vec<OutboxEntry>>,
}

#[async_trait]
impl OutboxFeed for TestOutbox {
    async fn outbox_after(&self, after: Position, limit: u32) -> SyncResult<Vec<OutboxEntry>> {
        Ok(self
            .entries
            .lock()
            .unwrap()
            .iter()
            .filter(|e| (e.seq, e.n) > (after.seq, after.n))
            .take(limit as usize)
            .cloned()
            .collect())
    }
    async fn outbox_head(&self) -> SyncResult<Position> {
        Ok(self
            .entries
            .lock()
            .unwrap()
            .last()
            .map(|e| Position { seq: e.seq, n: e.n })
            .unwrap_or_default())
    }
    async fn outbox_position_before(&self, since: Timestamp) -> SyncResult<Position> {
        let entries = self.entries.lock().unwrap();
        let mut before = Position::default();
        for e in entries.iter() {
            if e.at >= since {
                break;
            }
            before = Position { seq: e.seq, n: e.n };
        }
        Ok(before)
    }
    fn subscribe(&self) -> Option<watch::Receiver<i64>> {
        None
    }
}

fn entry(seq: i64, n: u32, from_segment: bool, change: OutboxChange) -> OutboxEntry {
    OutboxEntry {
        seq,
        n,
        at: Timestamp::now(),
        profile_id: ProfileId(format!("P{seq}")),
        email: Some(format!("p{seq}@example.com")),
        user_id: (seq % 2 == 0).then(|| format!("user-{seq}")),
        anonymous_id: None,
        from_segment,
        change,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_gets_the_outbox_as_batches_with_basic_auth() {
    let mut h = Harness::new().await;
    let outbox = Arc::new(TestOutbox::default());
    h.outbox = Some(outbox.clone());
    let receiver = Receiver::start().await;
    let sync = h.start();
    let dest = sync
        .create(NewDestination {
            name: "segment".into(),
            config: DestinationConfig::Segment {
                write_key: Secret::new("WK-reverse-sync-0001"),
                endpoint: receiver.url(""),
                only_segment_profiles: true,
            },
            rate: None,
        })
        .await
        .unwrap();
    let mut traits = Map::new();
    traits.insert("firstName".into(), json!("Ada"));
    {
        let mut entries = outbox.entries.lock().unwrap();
        entries.push(entry(2, 0, true, OutboxChange::Traits { traits }));
        entries.push(entry(
            2,
            1,
            false,
            OutboxChange::Traits { traits: Map::new() },
        ));
        entries.push(entry(
            3,
            0,
            true,
            OutboxChange::Email(EmailEvent {
                metric: BuiltinMetric::OpenedEmail,
                message_id: Some("send-1".into()),
                subject: Some("Hi".into()),
                flow_id: Some("F1".into()),
                flow_name: Some("Welcome".into()),
                campaign_id: None,
                campaign_name: None,
                url: None,
                list_id: None,
                properties: Map::new(),
            }),
        ));
        for seq in 4..300 {
            entries.push(entry(
                seq,
                0,
                true,
                OutboxChange::Traits { traits: Map::new() },
            ));
        }
    }
    sync.notify();
    let delivered = receiver.wait_for(298, WAIT).await;
    assert!(sync.wait_idle(WAIT).await);
    let expected: Vec<String> = std::iter::once(format!("sbx-{}-2-0", dest.id))
        .chain((3..300).map(|seq| format!("sbx-{}-{seq}-0", dest.id)))
        .collect();
    assert_all_in_order(&delivered, &expected);
    let requests = receiver.requests();
    assert!(requests.len() < 10);
    let first = &requests[0];
    assert_eq!(first.path, "/v1/batch");
    let auth = first.header("authorization").unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.strip_prefix("Basic ").unwrap())
        .unwrap();
    assert_eq!(decoded, b"WK-reverse-sync-0001:");
    let batch = first.json()["batch"].as_array().unwrap().clone();
    assert_eq!(batch[0]["type"], "identify");
    assert_eq!(batch[0]["userId"], "user-2");
    assert_eq!(batch[0]["traits"]["firstName"], "Ada");
    assert_eq!(batch[0]["integrations"], json!({"Klaviyo": false}));
    assert_eq!(batch[1]["type"], "track");
    assert_eq!(batch[1]["event"], "Email Opened");
    assert_eq!(batch[1]["anonymousId"], "p3@example.com");
    assert_eq!(batch[1]["properties"]["flow_name"], "Welcome");
    assert_eq!(batch[1]["context"]["traits"]["email"], "p3@example.com");

    let status = sync.status("segment").await.unwrap();
    assert_eq!(status.delivered, 298);
    assert_eq!(status.queued, 0);
    assert_eq!(status.cursor, Position { seq: 299, n: 0 });

    // Replay since a time rewinds the outbox cursor.
    let cut = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    {
        let mut entries = outbox.entries.lock().unwrap();
        for seq in 300..305 {
            entries.push(entry(
                seq,
                0,
                true,
                OutboxChange::Traits { traits: Map::new() },
            ));
        }
    }
    sync.notify();
    receiver.wait_for(303, WAIT).await;
    assert!(sync.wait_idle(WAIT).await);
    let before = receiver.delivered_ids().len();
    sync.replay("segment", signalbox_sync::Replay::Since(cut))
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while receiver.delivered_ids().len() < before + 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again: Vec<String> = receiver.delivered_ids()[before..].to_vec();
    let expected: Vec<String> = (300..305)
        .map(|s| format!("sbx-{}-{s}-0", dest.id))
        .collect();
    assert_eq!(again, expected);
    sync.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_outbox_message_is_dead_lettered_without_sending() {
    let mut h = Harness::new().await;
    let outbox = Arc::new(TestOutbox::default());
    h.outbox = Some(outbox.clone());
    let receiver = Receiver::start().await;
    let sync = h.start();
    sync.create(NewDestination {
        name: "segment".into(),
        config: DestinationConfig::Segment {
            write_key: Secret::new("WK-big"),
            endpoint: receiver.url(""),
            only_segment_profiles: false,
        },
        rate: None,
    })
    .await
    .unwrap();
    let mut big = Map::new();
    big.insert("bio".into(), Value::String("x".repeat(40_000)));
    {
        let mut entries = outbox.entries.lock().unwrap();
        entries.push(entry(
            1,
            0,
            false,
            OutboxChange::Traits { traits: Map::new() },
        ));
        entries.push(entry(2, 0, false, OutboxChange::Traits { traits: big }));
        entries.push(entry(
            3,
            0,
            false,
            OutboxChange::Traits { traits: Map::new() },
        ));
    }
    sync.notify();
    receiver.wait_for(2, WAIT).await;
    assert!(sync.wait_idle(WAIT).await);
    assert_eq!(receiver.delivered_ids().len(), 2);
    assert!(receiver.requests().iter().all(|r| r.body.len() < 32 * 1024));
    let letters = sync.dead_letters("segment").await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(letters[0].reason.contains("32768"));
    assert_eq!(letters[0].status, None);
    assert_eq!(letters[0].position, Position { seq: 2, n: 0 });
    sync.shutdown(Duration::from_secs(5)).await;
}
