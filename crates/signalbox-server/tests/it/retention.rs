//! Retention of the call log with a one-day window on a test clock: the engage pipeline and
//! destinations running over a temporary data folder. Old entries every follower passed go;
//! a held call, a paused destination and a failing one keep what they still need; the space
//! trimmed entries leave is used again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use jiff::{SignedDuration, Timestamp};
use signalbox_core::{CallKind, Clock, FakeClock, NewCall, SourceId};
use signalbox_engage::{Engage, EngageConfig};
use signalbox_outbound::{OutboundClient, OutboundConfig};
use signalbox_server::retention::{BackupLock, HoldKind, LogFloor, Retention, RetentionConfig};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{CallQuery, SqliteStore, Store};
use signalbox_sync::{
    DestinationConfig, DestinationPatch, DestinationState, Feeds, NewDestination, SqliteSyncStore,
    Sync, SyncConfig, SyncDeps,
};
use tempfile::TempDir;

const DAY: SignedDuration = SignedDuration::from_hours(24);

struct Harness {
    dir: TempDir,
    store: Arc<dyn Store>,
    engage: Engage,
    sync: Sync,
    clock: FakeClock,
    retention: Retention,
    source: SourceId,
    sent: u64,
}

/// A receiver that answers every batch with `status`.
async fn receiver(status: StatusCode) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = Router::new().route("/hook", post(move || async move { (status, "") }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}/hook")
}

impl Harness {
    async fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default()).unwrap(),
        );
        let source = store.create_source("web").await.unwrap().0.id;
        let clock = FakeClock::new(Timestamp::now());
        let mut engage_config = EngageConfig::new(dir.path().join("engage.db"));
        engage_config.poll_interval = Duration::from_millis(5);
        engage_config.hold_window = 30 * DAY;
        let engage = Engage::start(Arc::clone(&store), Arc::new(clock.clone()), engage_config)
            .await
            .unwrap();
        let deps = SyncDeps {
            store: Arc::new(SqliteSyncStore::open(&dir.path().join("sync.db")).unwrap()),
            calls: Arc::clone(&store),
            engage: Some(engage.clone()),
            outbound: OutboundClient::new(OutboundConfig {
                allow_private_destinations: true,
                ..OutboundConfig::default()
            })
            .unwrap(),
            clock: Arc::new(clock.clone()),
        };
        let feeds = Feeds::of(&deps);
        let config = SyncConfig {
            poll_interval: Duration::from_millis(20),
            reload_interval: Duration::from_millis(50),
            linger: Duration::from_millis(5),
            idle_commit_interval: Duration::from_millis(20),
            ..SyncConfig::default()
        };
        let sync = Sync::start_with(deps, config, feeds);
        let retention = Retention::new(
            Arc::clone(&store),
            Some(engage.clone()),
            Some(sync.clone()),
            Arc::new(clock.clone()),
            RetentionConfig {
                window: Some(DAY),
                chunk: 50,
                ..RetentionConfig::default()
            },
        );
        Harness {
            dir,
            store,
            engage,
            sync,
            clock,
            retention,
            source,
            sent: 0,
        }
    }

    fn call(&mut self, kind: CallKind, body: serde_json::Value) -> NewCall {
        self.sent += 1;
        let id = format!("m-{}", self.sent);
        let mut body = body;
        body["messageId"] = id.clone().into();
        body["type"] = kind.as_str().into();
        // Eight kilobytes of padding, so the log spans many pages.
        body["properties"] = serde_json::json!({"pad": "p".repeat(8000)});
        NewCall {
            kind,
            message_id: id,
            received_at: self.clock.now(),
            payload: body.to_string(),
        }
    }

    /// Appends and waits until engage applied it; returns the last seq.
    async fn append(&mut self, calls: Vec<NewCall>) -> i64 {
        let outcome = self.store.append(self.source, calls, vec![]).await.unwrap();
        self.engage.notify();
        self.sync.notify();
        self.engage
            .wait_applied(outcome.last_seq, Duration::from_secs(20))
            .await
            .unwrap();
        outcome.last_seq
    }

    /// `n` tracks of the user the first identify made: applied at once.
    async fn tracks(&mut self, n: usize) -> i64 {
        let calls = (0..n)
            .map(|_| {
                self.call(
                    CallKind::Track,
                    serde_json::json!({"userId": "u1", "event": "Viewed"}),
                )
            })
            .collect();
        self.append(calls).await
    }

    async fn wait_delivered(&self, name: &str, seq: i64) {
        let started = Instant::now();
        loop {
            let status = self.sync.status(name).await.unwrap();
            if status.cursor.seq >= seq {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{name} is stuck at {:?}",
                status.cursor
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn oldest(&self) -> (i64, Timestamp) {
        let first = self
            .store
            .read_calls(CallQuery {
                limit: 1,
                ..CallQuery::default()
            })
            .await
            .unwrap();
        (first[0].seq, first[0].received_at)
    }

    /// The kinds (and names) of what keeps the oldest entry.
    async fn held_by(&self) -> Vec<(HoldKind, Option<String>)> {
        let floor: LogFloor = self.retention.floor().await.unwrap();
        let (seq, received) = self.oldest().await;
        floor
            .holding(seq, received)
            .into_iter()
            .map(|hold| (hold.kind, hold.name))
            .collect()
    }

    fn pages(&self) -> i64 {
        let conn = rusqlite::Connection::open(self.dir.path().join("signalbox.db")).unwrap();
        conn.query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap()
    }

    fn page_size(&self) -> i64 {
        let conn = rusqlite::Connection::open(self.dir.path().join("signalbox.db")).unwrap();
        conn.query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap()
    }

    /// Bytes of the log's payloads after `seq`.
    fn payload_bytes_after(&self, seq: i64) -> i64 {
        let conn = rusqlite::Connection::open(self.dir.path().join("signalbox.db")).unwrap();
        conn.query_row(
            "SELECT SUM(length(payload)) FROM events WHERE seq > ?1",
            [seq],
            |r| r.get(0),
        )
        .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_entries_go_once_passed_and_followers_that_are_behind_keep_theirs() {
    let mut h = Harness::start().await;
    let live = NewDestination {
        name: "live".into(),
        config: DestinationConfig::Webhook {
            url: receiver(StatusCode::OK).await,
            secret: None,
            sources: vec!["web".into()],
        },
        rate: None,
    };
    h.sync.create(live).await.unwrap();

    // Day 0: a user with an email, 150 calls, one of them held (an anonymous visitor, no
    // email yet).
    let identify = h.call(
        CallKind::Identify,
        serde_json::json!({"userId": "u1", "traits": {"email": "u1@example.com"}}),
    );
    h.append(vec![identify]).await;
    h.tracks(100).await;
    let anonymous = h.call(
        CallKind::Track,
        serde_json::json!({"anonymousId": "a1", "event": "Viewed"}),
    );
    let held = h.append(vec![anonymous]).await;
    let day0_last = h.tracks(49).await;
    h.wait_delivered("live", day0_last).await;
    let full = h.pages();
    assert_eq!(
        h.retention.run_once().await.unwrap().calls,
        0,
        "nothing is older than the window yet"
    );

    // Day 2: the window (a day) has passed; the held call keeps its entry and those after it.
    h.clock.advance(2 * DAY);
    let day2_first = h.tracks(5).await - 4;
    h.wait_delivered("live", day2_first + 4).await;
    let trimmed = h.retention.run_once().await.unwrap();
    assert_eq!(
        trimmed.calls as i64,
        held - 1,
        "the calls before the held one went"
    );
    assert_eq!(h.oldest().await.0, held);
    assert_eq!(h.held_by().await, [(HoldKind::HeldCalls, None)]);

    // Once an identify links the visitor to an email, its call is applied and lets go.
    let identify = h.call(
        CallKind::Identify,
        serde_json::json!({"anonymousId": "a1", "userId": "u2",
            "traits": {"email": "a1@example.com"}}),
    );
    let released_by = h.append(vec![identify]).await;
    h.wait_delivered("live", released_by).await;
    assert_eq!(h.engage.log_needs().await.unwrap().oldest_held_seq, None);
    assert_eq!(h.retention.run_once().await.unwrap().calls, 50);
    assert_eq!(h.oldest().await.0, day2_first);
    assert_eq!(h.held_by().await, [(HoldKind::Window, None)]);

    // A paused destination and a failing one, made now, keep everything after their cursor.
    let hook = |name: &str, url: String| NewDestination {
        name: name.into(),
        config: DestinationConfig::Webhook {
            url,
            secret: None,
            sources: vec!["web".into()],
        },
        rate: None,
    };
    h.sync
        .create_paused(hook("paused", receiver(StatusCode::OK).await))
        .await
        .unwrap();
    h.sync
        .create(hook(
            "failing",
            receiver(StatusCode::SERVICE_UNAVAILABLE).await,
        ))
        .await
        .unwrap();
    let behind_from = h.tracks(100).await - 99;
    h.clock.advance(2 * DAY);
    let day4_last = h.tracks(1).await;
    h.wait_delivered("live", day4_last).await;
    assert_eq!(
        h.retention.run_once().await.unwrap().calls,
        6,
        "only what came before the paused and the failing destination's cursors"
    );
    assert_eq!(h.oldest().await.0, behind_from);
    let mut holding = h.held_by().await;
    holding.sort();
    assert_eq!(
        holding,
        [
            (HoldKind::Destination, Some("failing".to_owned())),
            (HoldKind::Destination, Some("paused".to_owned())),
        ]
    );
    let started = Instant::now();
    while h.sync.status("failing").await.unwrap().failed == 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "never tried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(h.sync.status("failing").await.unwrap().cursor.seq < behind_from);

    // Resumed, the paused one delivers and lets go; the failing one still holds on.
    h.sync
        .patch(
            "paused",
            DestinationPatch {
                state: Some(DestinationState::Active),
                ..DestinationPatch::default()
            },
        )
        .await
        .unwrap();
    h.wait_delivered("paused", day4_last).await;
    assert_eq!(h.retention.run_once().await.unwrap().calls, 0);
    assert_eq!(
        h.held_by().await,
        [(HoldKind::Destination, Some("failing".to_owned()))]
    );
    // Without it, all but the newest (and young) call goes.
    h.sync.delete("failing").await.unwrap();
    assert_eq!(h.retention.run_once().await.unwrap().calls, 100);
    assert_eq!(h.oldest().await.0, day4_last);

    // The pages the trims freed take the next day's calls: the file grows by a small part
    // of what they take (a few pages of the B-tree's edges), not by all of it.
    h.clock.advance(DAY);
    let last = h.tracks(150).await;
    h.wait_delivered("live", last).await;
    let grown = (h.pages() - full) * h.page_size();
    let added = h.payload_bytes_after(day4_last);
    assert!(
        grown * 10 < added,
        "the log grew from {full} to {} pages ({grown} bytes) for {added} bytes of calls",
        h.pages()
    );
    // Profiles and events derived from trimmed entries stay.
    let profile = h.engage.dump().await.unwrap();
    assert!(profile.contains("u1@example.com"));
    assert!(profile.contains("a1@example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_backup_holds_every_entry_until_it_ends() {
    let mut h = Harness::start().await;
    let lock = BackupLock::in_data_dir(h.dir.path());
    let retention = h.retention.clone().with_backup_lock(lock.clone());
    let identify = h.call(
        CallKind::Identify,
        serde_json::json!({"userId": "u1", "traits": {"email": "u1@example.com"}}),
    );
    h.append(vec![identify]).await;
    h.tracks(20).await;
    h.clock.advance(2 * DAY);
    let last = h.tracks(1).await;

    // A backup holds the lock (as `signalbox backup` does, from another process): nothing
    // goes, and the status names it.
    let backup = lock.hold().unwrap();
    assert_eq!(retention.run_once().await.unwrap().calls, 0);
    let floor = retention.floor().await.unwrap();
    let (seq, received) = h.oldest().await;
    assert_eq!(seq, 1, "the first entry is still there");
    assert!(
        floor
            .holding(seq, received)
            .iter()
            .any(|hold| hold.kind == HoldKind::Backup),
        "{floor:?}"
    );

    // Once it ends, the next trim takes what the window and the followers let go.
    drop(backup);
    assert_eq!(retention.run_once().await.unwrap().calls as i64, last - 1);
    assert_eq!(h.oldest().await.0, last);
}
