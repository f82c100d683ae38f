//! A log, engage and audience on temp files, a fake clock, and Segment calls as ingest
//! appends them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Map, Value};
use signalbox_audience::{Audience, Segment, SegmentInput};
use signalbox_core::{CallKind, Clock, FakeClock, NewCall, SourceId};
use signalbox_engage::{Engage, EngageConfig, MetricQuery, ProfileField, ProfileQuery};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};
use tempfile::TempDir;

pub struct TestApp {
    pub dir: TempDir,
    pub store: Arc<dyn Store>,
    pub engage: Engage,
    pub audience: Audience,
    pub clock: FakeClock,
    pub source: SourceId,
    /// Receipt time of the next call; each call moves it on by a millisecond.
    pub received: Timestamp,
}

pub fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

pub const START: &str = "2026-03-01T00:00:00Z";

impl TestApp {
    /// A started app where ann (ann@example.com) has viewed once, applied; with the id of
    /// the `Viewed` metric.
    pub async fn with_ann_viewed_once() -> (TestApp, String) {
        let mut app = TestApp::start().await;
        app.identify(json!({"userId": "ann", "traits": {"email": "ann@example.com"}}))
            .await;
        app.track(json!({"userId": "ann", "event": "Viewed"})).await;
        app.settle().await;
        let viewed = app.metric_id("Viewed").await;
        (app, viewed)
    }

    pub async fn start() -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default()).unwrap(),
        );
        let (source, _) = store.create_source("web").await.unwrap();
        let clock = FakeClock::new(at(START));
        let mut config = EngageConfig::new(dir.path().join("engage.db"));
        config.poll_interval = Duration::from_millis(5);
        let engage = Engage::start(Arc::clone(&store), Arc::new(clock.clone()), config)
            .await
            .unwrap();
        let audience = Audience::start(
            engage.clone(),
            Arc::new(clock.clone()),
            dir.path().join("audience.db"),
        )
        .await
        .unwrap();
        TestApp {
            dir,
            store,
            engage,
            audience,
            clock,
            source: source.id,
            received: at(START),
        }
    }

    /// Stops the audience worker and starts a new one on the same file.
    pub async fn restart_audience(&mut self) {
        self.audience.shutdown().await;
        self.audience = Audience::start(
            self.engage.clone(),
            Arc::new(self.clock.clone()),
            self.dir.path().join("audience.db"),
        )
        .await
        .unwrap();
    }

    pub fn advance(&mut self, by: SignedDuration) {
        self.clock.advance(by);
    }

    pub fn call(&mut self, kind: CallKind, message: Value) -> NewCall {
        let mut message: Map<String, Value> = message.as_object().unwrap().clone();
        self.received = self.received.max(self.clock.now());
        self.received = self
            .received
            .checked_add(SignedDuration::from_millis(1))
            .unwrap();
        let received = self.received;
        let message_id = uuid::Uuid::new_v4().to_string();
        message.insert("type".into(), json!(kind.as_str()));
        message.insert("messageId".into(), json!(message_id));
        if !message.contains_key("timestamp") {
            message.insert("timestamp".into(), json!(self.clock.now().to_string()));
        }
        message.insert("receivedAt".into(), json!(received.to_string()));
        NewCall {
            kind,
            message_id,
            received_at: received,
            payload: Value::Object(message).to_string(),
        }
    }

    pub async fn send(&mut self, kind: CallKind, message: Value) {
        let call = self.call(kind, message);
        self.store
            .append(self.source, vec![call], Vec::new())
            .await
            .unwrap();
        self.engage.notify();
    }

    pub async fn identify(&mut self, message: Value) {
        self.send(CallKind::Identify, message).await
    }

    pub async fn track(&mut self, message: Value) {
        self.send(CallKind::Track, message).await
    }

    /// Waits until engage applied the log and the audience followed.
    pub async fn settle(&self) {
        self.engage
            .catch_up(Duration::from_secs(20))
            .await
            .expect("the pipeline catches up");
        self.audience
            .sync_timeout(Duration::from_secs(30))
            .await
            .expect("the audience catches up");
    }

    pub async fn segment(&self, name: &str, definition: Value) -> Segment {
        let segment = self
            .audience
            .create_segment(SegmentInput {
                name: name.into(),
                definition,
                is_starred: false,
            })
            .await
            .unwrap();
        self.settle().await;
        segment
    }

    /// Members' emails.
    pub async fn emails(&self, segment: &Segment) -> BTreeSet<String> {
        let page = self
            .audience
            .members(&segment.id, None, 100_000)
            .await
            .unwrap();
        let mut out = BTreeSet::new();
        for member in page.members {
            let profile = self
                .engage
                .get_profile(&signalbox_engage::ProfileId(member.profile_id))
                .await
                .unwrap();
            out.insert(profile.email.unwrap_or_default());
        }
        out
    }

    pub async fn metric_id(&self, name: &str) -> String {
        self.engage
            .list_metrics(MetricQuery::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no metric {name}"))
            .id
            .to_string()
    }

    pub async fn profile_id(&self, email: &str) -> signalbox_engage::ProfileId {
        self.engage
            .list_profiles(ProfileQuery {
                any_of: vec![(ProfileField::Email, vec![email.to_owned()])],
                ..ProfileQuery::default()
            })
            .await
            .unwrap()
            .items
            .pop()
            .unwrap_or_else(|| panic!("no profile {email}"))
            .id
    }
}

pub fn set(emails: &[&str]) -> BTreeSet<String> {
    emails.iter().map(|e| (*e).to_owned()).collect()
}

/// `{"condition_groups": [{"conditions": [condition]}]}`.
pub fn one(condition: Value) -> Value {
    json!({"condition_groups": [{"conditions": [condition]}]})
}

pub fn metric(metric_id: &str, operator: &str, value: f64, timeframe: Value) -> Value {
    json!({
        "type": "profile-metric", "metric_id": metric_id, "measurement": "count",
        "measurement_filter": {"type": "numeric", "operator": operator, "value": value},
        "timeframe_filter": timeframe,
    })
}

pub fn last_days(n: u32) -> Value {
    json!({"type": "date", "operator": "in-the-last", "quantity": n, "unit": "day"})
}

pub fn alltime() -> Value {
    json!({"type": "date", "operator": "alltime"})
}
