//! A log in a temp dir with engage running on it (on the backend of `backend.rs`), and
//! helpers to send Segment calls the way the ingest path appends them.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Map, Value};
use signalbox_core::{CallKind, FakeClock, NewCall, SourceId};
use signalbox_engage::{
    DestinationSettings, Engage, EngageConfig, Event, EventQuery, HeldCall, HeldFilter, Metric,
    MetricQuery, Profile, ProfileField, ProfileQuery,
};
use signalbox_store::Store;
use tempfile::TempDir;

pub const SOURCE: &str = "web";

pub struct TestApp {
    pub _dir: TempDir,
    pub store: Arc<dyn Store>,
    pub engage: Engage,
    pub clock: FakeClock,
    pub source: SourceId,
    /// Receipt time of the next call; each call moves it on by a millisecond.
    pub now: Timestamp,
    pub config: EngageConfig,
}

pub fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

impl TestApp {
    pub async fn start() -> TestApp {
        TestApp::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut EngageConfig)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::backend::log_store(dir.path());
        let (source, _) = store.create_source(SOURCE).await.unwrap();
        let clock = FakeClock::new(at("2026-03-01T00:00:00Z"));
        let mut config = crate::backend::engage_config(dir.path());
        config.poll_interval = Duration::from_millis(5);
        tune(&mut config);
        let engage = Engage::start(Arc::clone(&store), Arc::new(clock.clone()), config.clone())
            .await
            .unwrap();
        TestApp {
            _dir: dir,
            store,
            engage,
            clock,
            source: source.id,
            now: at("2026-03-01T00:00:00Z"),
            config,
        }
    }

    /// Stops the pipeline and starts a new one on the same files (a restart).
    pub async fn restart(&mut self) {
        self.engage.shutdown().await;
        self.engage = Engage::start(
            Arc::clone(&self.store),
            Arc::new(self.clock.clone()),
            self.config.clone(),
        )
        .await
        .unwrap();
    }

    pub async fn settings(&self, edit: impl FnOnce(&mut DestinationSettings)) {
        let mut settings =
            DestinationSettings::from_json(&self.store.source_settings(SOURCE).await.unwrap());
        edit(&mut settings);
        self.store
            .set_source_settings(SOURCE, settings.to_json())
            .await
            .unwrap();
        // The pipeline re-reads settings every second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }

    /// Moves the receipt time of the next calls on.
    pub fn advance(&mut self, by: SignedDuration) {
        self.now = self.now.checked_add(by).unwrap();
    }

    /// Builds a call as ingest normalises it.
    pub fn call(&mut self, kind: CallKind, message: Value) -> NewCall {
        let mut message: Map<String, Value> = message.as_object().unwrap().clone();
        self.now = self
            .now
            .checked_add(SignedDuration::from_millis(1))
            .unwrap();
        let received = self.now;
        let message_id = message
            .get("messageId")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        message.insert("type".into(), json!(kind.as_str()));
        message.insert("messageId".into(), json!(message_id));
        if !message.contains_key("timestamp") {
            message.insert("timestamp".into(), json!(received.to_string()));
        }
        message.insert("receivedAt".into(), json!(received.to_string()));
        NewCall {
            kind,
            message_id,
            received_at: received,
            payload: Value::Object(message).to_string(),
        }
    }

    /// Appends calls in one request, as ingest does, and tells the pipeline.
    pub async fn send_all(&mut self, calls: Vec<(CallKind, Value)>) -> i64 {
        let calls: Vec<NewCall> = calls.into_iter().map(|(k, m)| self.call(k, m)).collect();
        let outcome = self
            .store
            .append(self.source, calls, Vec::new())
            .await
            .unwrap();
        self.engage.notify();
        outcome.last_seq
    }

    pub async fn send(&mut self, kind: CallKind, message: Value) -> i64 {
        self.send_all(vec![(kind, message)]).await
    }

    pub async fn identify(&mut self, message: Value) -> i64 {
        self.send(CallKind::Identify, message).await
    }

    pub async fn track(&mut self, message: Value) -> i64 {
        self.send(CallKind::Track, message).await
    }

    /// Waits until the pipeline applied everything in the log.
    pub async fn settle(&self) {
        self.engage
            .catch_up(Duration::from_secs(20))
            .await
            .expect("the pipeline catches up");
    }

    pub async fn profiles(&self) -> Vec<Profile> {
        self.engage
            .list_profiles(ProfileQuery {
                page_size: 1000,
                ..ProfileQuery::default()
            })
            .await
            .unwrap()
            .items
    }

    pub async fn profile_by(&self, field: ProfileField, value: &str) -> Option<Profile> {
        let mut page = self
            .engage
            .list_profiles(ProfileQuery {
                any_of: vec![(field, vec![value.to_owned()])],
                ..ProfileQuery::default()
            })
            .await
            .unwrap();
        assert!(page.items.len() <= 1);
        page.items.pop()
    }

    pub async fn by_email(&self, email: &str) -> Profile {
        self.profile_by(ProfileField::Email, email)
            .await
            .unwrap_or_else(|| panic!("no profile with email {email}"))
    }

    pub async fn metric(&self, name: &str) -> Metric {
        let metrics = self
            .engage
            .list_metrics(MetricQuery::default())
            .await
            .unwrap()
            .items;
        metrics
            .into_iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    pub async fn metric_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .engage
            .list_metrics(MetricQuery::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|m| m.name)
            .collect();
        names.sort();
        names
    }

    /// The first hundred held calls with `filter`'s status, in log order.
    pub async fn held(&self, filter: HeldFilter) -> Vec<HeldCall> {
        self.engage.held_calls(filter, 0, 100).await.unwrap()
    }

    /// A profile's whole feed, newest first.
    pub async fn feed_of(&self, profile: &Profile) -> Vec<Event> {
        self.engage
            .list_events(EventQuery {
                profile_id: Some(profile.id.clone()),
                newest_first: true,
                page_size: 1000,
                ..EventQuery::default()
            })
            .await
            .unwrap()
            .items
    }

    pub async fn counter(&self, name: &str) -> i64 {
        self.engage
            .counters()
            .await
            .unwrap()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .unwrap_or(0)
    }
}
