//! A log and engage on a fake clock, the flows engine on them, in-memory stand-ins for the
//! dependencies owned elsewhere, and engage's own facts for filters.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};
use signalbox_core::{Clock, FakeClock};
use signalbox_engage::facts::no_segments;
use signalbox_engage::{
    ApiEventInput, Engage, EngageConfig, MetricQuery, Profile, ProfileId, ProfileInput,
};
use signalbox_flows::{
    BuiltinEvents, DepResult, FactsLoader, FlowMail, FlowStore, Flows, FlowsConfig, FlowsDeps,
    ListActions, MembershipFeed, SegmentEntry, TemplateSource,
};
use signalbox_mail::{
    Composer, EmailTemplateSource, LinkSigner, Mailer, MailerConfig, TrackingLinks,
};
use signalbox_seglang::ProfileFacts;
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};
use tempfile::TempDir;

use crate::sink::SmtpSink;

pub fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Built-in events recorded by the engine.
#[derive(Default)]
pub struct MemoryEvents(pub Mutex<Vec<(String, String, Value, String)>>);

impl BuiltinEvents for MemoryEvents {
    fn record(
        &self,
        metric: &str,
        profile_id: &ProfileId,
        properties: Value,
        unique_id: String,
        _time: Timestamp,
    ) -> DepResult<()> {
        self.0.lock().unwrap().push((
            metric.to_owned(),
            profile_id.to_string(),
            properties,
            unique_id,
        ));
        Ok(())
    }
}

impl MemoryEvents {
    pub fn named(&self, metric: &str) -> Vec<(String, Value, String)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.0 == metric)
            .map(|e| (e.1.clone(), e.2.clone(), e.3.clone()))
            .collect()
    }
}

#[derive(Default)]
pub struct MemoryTemplates(pub Mutex<HashMap<String, EmailTemplateSource>>);

#[async_trait::async_trait]
impl TemplateSource for MemoryTemplates {
    async fn get(&self, id: &str) -> Option<EmailTemplateSource> {
        self.0.lock().unwrap().get(id).cloned()
    }
}

#[derive(Default)]
pub struct MemoryLists(pub Mutex<Vec<(String, String, String)>>);

impl ListActions for MemoryLists {
    fn add(&self, list_id: &str, profile_id: &ProfileId) -> DepResult<()> {
        self.0
            .lock()
            .unwrap()
            .push(("add".into(), list_id.into(), profile_id.to_string()));
        Ok(())
    }
    fn remove(&self, list_id: &str, profile_id: &ProfileId) -> DepResult<()> {
        self.0
            .lock()
            .unwrap()
            .push(("remove".into(), list_id.into(), profile_id.to_string()));
        Ok(())
    }
}

#[derive(Default)]
pub struct MemoryMembership(pub Mutex<Vec<SegmentEntry>>);

impl MembershipFeed for MemoryMembership {
    fn entered_after(&self, cursor: i64, limit: usize) -> DepResult<Vec<SegmentEntry>> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.cursor > cursor)
            .take(limit)
            .cloned()
            .collect())
    }
}

/// Facts as the server gives them to flows: engage's (no segment engine here), with profiles
/// whose facts fail to load on demand (a broken dependency).
pub struct EngageFacts {
    pub engage: Engage,
    /// Profile ids whose facts fail to load.
    pub failing: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl FactsLoader for EngageFacts {
    fn load(
        &self,
        profile_pk: signalbox_engage::ProfileKey,
        _now: Timestamp,
    ) -> DepResult<Box<dyn ProfileFacts + Send>> {
        let err = |e: &dyn std::fmt::Display| signalbox_flows::DepError(e.to_string());
        let reader = self.engage.facts_reader().map_err(|e| err(&e))?;
        let facts = reader
            .load(profile_pk, Arc::new(no_segments))
            .map_err(|e| err(&e))?
            .ok_or_else(|| signalbox_flows::DepError("no such profile".into()))?;
        if self.failing.lock().unwrap().contains(&facts.record().id) {
            return Err(signalbox_flows::DepError("facts unavailable".into()));
        }
        Ok(Box::new(facts))
    }
}

pub struct Options {
    pub mail: bool,
    pub tune: Box<dyn FnOnce(&mut FlowsConfig) + Send>,
    /// Where the engine keeps its state; `None`: `flows.db` in the test's folder.
    pub flow_store: Option<Arc<dyn FlowStore>>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            mail: true,
            tune: Box::new(|_| {}),
            flow_store: None,
        }
    }
}

pub struct TestApp {
    pub dir: TempDir,
    pub store: Arc<dyn Store>,
    pub engage: Engage,
    pub clock: FakeClock,
    pub flows: Flows,
    pub config: FlowsConfig,
    pub sink: Option<SmtpSink>,
    pub events: Arc<MemoryEvents>,
    pub templates: Arc<MemoryTemplates>,
    pub lists: Arc<MemoryLists>,
    pub membership: Arc<MemoryMembership>,
    pub failing: Arc<Mutex<std::collections::HashSet<String>>>,
    pub flow_store: Option<Arc<dyn FlowStore>>,
    metrics: BTreeMap<String, String>,
}

pub const START: &str = "2026-03-02T10:00:00Z";

impl TestApp {
    pub async fn start() -> TestApp {
        TestApp::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default()).unwrap(),
        );
        let clock = FakeClock::new(at(START));
        let mut engage_config = EngageConfig::new(dir.path().join("engage.db"));
        engage_config.poll_interval = Duration::from_millis(5);
        let engage = Engage::start(Arc::clone(&store), Arc::new(clock.clone()), engage_config)
            .await
            .unwrap();
        let sink = options.mail.then(SmtpSink::plain);
        let mut config = FlowsConfig::new(dir.path().join("flows.db"));
        config.webhook_key = b"a test webhook key of some length".to_vec();
        config.poll_interval = Duration::from_millis(20);
        if let Some(sink) = &sink {
            config.mail = Some(mail_for(&sink.url()));
        }
        (options.tune)(&mut config);
        let events = Arc::new(MemoryEvents::default());
        let templates = Arc::new(MemoryTemplates::default());
        let lists = Arc::new(MemoryLists::default());
        let membership = Arc::new(MemoryMembership::default());
        let failing: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
        let flows = start_flows(
            &engage,
            &clock,
            &config,
            &events,
            &templates,
            &lists,
            &membership,
            &failing,
            options.flow_store.as_ref(),
        )
        .await;
        TestApp {
            dir,
            store,
            engage,
            clock,
            flows,
            config,
            sink,
            events,
            templates,
            lists,
            membership,
            failing,
            flow_store: options.flow_store,
            metrics: BTreeMap::new(),
        }
    }

    /// Stops the engine and starts it again on the same files.
    pub async fn restart(&mut self, tune: impl FnOnce(&mut FlowsConfig)) {
        self.flows.shutdown().await;
        tune(&mut self.config);
        self.flows = start_flows(
            &self.engage,
            &self.clock,
            &self.config,
            &self.events,
            &self.templates,
            &self.lists,
            &self.membership,
            &self.failing,
            self.flow_store.as_ref(),
        )
        .await;
    }

    pub fn flows_path(&self) -> PathBuf {
        self.dir.path().join("flows.db")
    }

    /// Engage applied everything, and the flows engine did everything due now.
    pub async fn settle(&self) {
        self.engage.catch_up(Duration::from_secs(10)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.flows.sync())
            .await
            .expect("flows settle in time")
            .unwrap();
    }

    /// Moves the clock on and lets everything due run.
    pub async fn advance(&self, by: SignedDuration) {
        self.clock.advance(by);
        self.settle().await;
    }

    pub async fn profile(&self, email: &str, first_name: &str) -> Profile {
        self.engage
            .import_profile(ProfileInput {
                email: Some(email.into()),
                first_name: Some(first_name.into()),
                ..ProfileInput::default()
            })
            .await
            .unwrap()
            .0
    }

    pub async fn profile_with(&self, input: ProfileInput) -> Profile {
        self.engage.import_profile(input).await.unwrap().0
    }

    pub async fn track(&self, email: &str, metric: &str, properties: Value) {
        self.track_value(email, metric, properties, None).await;
    }

    pub async fn track_value(
        &self,
        email: &str,
        metric: &str,
        properties: Value,
        value: Option<f64>,
    ) {
        self.engage
            .create_events(vec![ApiEventInput {
                metric_name: metric.into(),
                profile: ProfileInput {
                    email: Some(email.into()),
                    ..ProfileInput::default()
                },
                properties: properties.as_object().cloned().unwrap_or_default(),
                time: Some(self.clock.now()),
                value,
                ..ApiEventInput::default()
            }])
            .await
            .unwrap();
    }

    /// The id of a metric, creating it with an event of a throwaway profile.
    pub async fn metric(&mut self, name: &str) -> String {
        if let Some(id) = self.metrics.get(name) {
            return id.clone();
        }
        self.track("seed@example.org", name, json!({})).await;
        self.settle().await;
        let page = self
            .engage
            .list_metrics(MetricQuery::default())
            .await
            .unwrap();
        let id = page
            .items
            .into_iter()
            .find(|m| m.name == name)
            .unwrap()
            .id
            .to_string();
        self.metrics.insert(name.into(), id.clone());
        id
    }

    pub fn sink(&self) -> &SmtpSink {
        self.sink.as_ref().expect("a sink")
    }

    /// Creates a live flow; panics with the problems if refused.
    pub async fn live_flow(&self, definition: Value) -> signalbox_flows::FlowInfo {
        self.flows
            .create_flow(
                "Test flow",
                &definition,
                Some(signalbox_flows::FlowStatus::Live),
            )
            .await
            .unwrap()
    }
}

pub fn mail_for(url: &str) -> FlowMail {
    let mut config = MailerConfig::new(url.parse().unwrap(), "Shop <shop@example.com>");
    config.hello_name = Some("localhost".into());
    let links = TrackingLinks::new(
        LinkSigner::new(b"a long random link secret for tests").unwrap(),
        "https://mail.example.com",
    )
    .unwrap();
    FlowMail {
        mailer: Mailer::new(config).unwrap(),
        composer: Composer::new(links, None),
    }
}

#[allow(clippy::too_many_arguments)]
async fn start_flows(
    engage: &Engage,
    clock: &FakeClock,
    config: &FlowsConfig,
    events: &Arc<MemoryEvents>,
    templates: &Arc<MemoryTemplates>,
    lists: &Arc<MemoryLists>,
    membership: &Arc<MemoryMembership>,
    failing: &Arc<Mutex<std::collections::HashSet<String>>>,
    flow_store: Option<&Arc<dyn FlowStore>>,
) -> Flows {
    let facts = Arc::new(EngageFacts {
        engage: engage.clone(),
        failing: Arc::clone(failing),
    });
    let mut deps = FlowsDeps::new(facts);
    deps.events = Some(Arc::clone(events) as Arc<dyn BuiltinEvents>);
    deps.templates = Some(Arc::clone(templates) as Arc<dyn TemplateSource>);
    deps.lists = Some(Arc::clone(lists) as Arc<dyn ListActions>);
    deps.membership = Some(Arc::clone(membership) as Arc<dyn MembershipFeed>);
    match flow_store {
        Some(store) => Flows::start_with_store(
            engage.clone(),
            Arc::new(clock.clone()),
            config.clone(),
            deps,
            Arc::clone(store),
        )
        .await
        .unwrap(),
        None => Flows::start(
            engage.clone(),
            Arc::new(clock.clone()),
            config.clone(),
            deps,
        )
        .await
        .unwrap(),
    }
}

/// A parsed message from the sink.
pub struct Mail {
    pub to: Vec<String>,
    pub subject: String,
    pub html: String,
    pub text: String,
    pub message_id: String,
    pub raw: String,
}

pub fn parse_mail(captured: &crate::sink::Captured) -> Mail {
    let message = mail_parser::MessageParser::default()
        .parse(&captured.raw)
        .unwrap();
    Mail {
        to: captured.rcpt_tos.clone(),
        subject: message.subject().unwrap_or_default().to_owned(),
        html: message
            .body_html(0)
            .map(|s| s.into_owned())
            .unwrap_or_default(),
        text: message
            .body_text(0)
            .map(|s| s.into_owned())
            .unwrap_or_default(),
        message_id: message.message_id().unwrap_or_default().to_owned(),
        raw: String::from_utf8_lossy(&captured.raw).into_owned(),
    }
}

/// The abandoned-checkout definition of the issue: wait 4 h, Placed Order zero times since the
/// flow started, email listing the cart.
pub fn abandoned_checkout(checkout: &str, placed_order: &str) -> Value {
    json!({
        "triggers": [{"type": "metric", "id": checkout}],
        "profile_filter": {"condition_groups": [{"conditions": [{
            "type": "profile-metric", "metric_id": placed_order, "measurement": "count",
            "measurement_filter": {"type": "numeric", "operator": "equals", "value": 0},
            "timeframe_filter": {"type": "date", "operator": "flow-start"}}]}]},
        "entry_action_id": "wait",
        "actions": [
            {"temporary_id": "wait", "type": "time-delay", "data": {"unit": "hours", "value": 4},
             "links": {"next": "email"}},
            {"temporary_id": "email", "type": "send-email", "data": {"status": "live", "message": {
                "from_email": "shop@example.com", "from_label": "Shop",
                "subject_line": "You left something, {{ first_name|default:\"there\" }}",
                "html": "<p>Your cart:</p><ul>{% for item in event.Items %}<li>{{ item.ProductName }} ({{ item.ItemPrice }})</li>{% endfor %}</ul><a href=\"https://shop.example.com/cart\">Back to cart</a>",
                "smart_sending_enabled": false}},
             "links": {"next": null}}
        ],
        "reentry_criteria": {"duration": 0, "unit": "alltime"}
    })
}
