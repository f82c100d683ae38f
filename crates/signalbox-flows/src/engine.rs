//! [`Flows`]: the handle. Stores flows, and runs the worker that follows engage's change
//! feed, starts runs, wakes them when due and carries out their actions.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hmac::{Hmac, Mac};
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use sha2::Sha256;
use signalbox_core::Clock;
use signalbox_engage::{Engage, EngageReader};
use signalbox_mail::{Composer, Mailer, TemplateCache};
use signalbox_outbound::{OutboundClient, OutboundConfig};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::definition::{ActionKind, FlowDefinition, MessageStatus, Trigger};
use crate::deps::{BuiltinEvents, FactsLoader, ListActions, MembershipFeed, TemplateSource};
use crate::error::{FlowsError, FlowsResult};
use crate::flow_store::{FlowChange, FlowStore, NewFlow};
use crate::model::*;
use crate::store::Db;

/// The longest a webhook's connection may take to set up (the whole request's timeout, when
/// shorter).
const WEBHOOK_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Webhook responses larger than this are refused: the body is not used, only the status.
pub const WEBHOOK_MAX_RESPONSE: usize = 1024 * 1024;

/// How long a message held for review waits before it ages out, unless configured.
pub const DEFAULT_MANUAL_REVIEW_EXPIRY: SignedDuration = SignedDuration::from_hours(24 * 7);

/// Email sending: the SMTP mailer and the composer that adds signed links.
#[derive(Clone, Debug)]
pub struct FlowMail {
    pub mailer: Mailer,
    pub composer: Composer,
}

/// How [`Flows::start`] runs.
#[derive(Clone)]
pub struct FlowsConfig {
    /// The engine's own file (`DATA_DIR/flows.db`).
    pub path: PathBuf,
    /// `None`: send-email actions are skipped with reason `no_mailer`.
    pub mail: Option<FlowMail>,
    /// The account's timezone (IANA name) for delays and date triggers of profiles without
    /// one. Default `UTC`.
    pub account_timezone: String,
    /// The key webhook signing secrets are derived from when an action has none of its own
    /// (see [`Flows::webhook_secret`]). Keep it secret and stable (e.g. the link secret).
    pub webhook_key: Vec<u8>,
    /// Each webhook request's timeout.
    pub webhook_timeout: Duration,
    /// Lets webhooks reach loopback, private, link-local and other non-public addresses
    /// (see [`signalbox_outbound`]): for tests and receivers on the same network. Off by
    /// default.
    pub allow_private_destinations: bool,
    /// Attempts before a webhook delivery is dead-lettered.
    pub webhook_max_attempts: u32,
    /// The first retry's delay; doubled each time.
    pub webhook_backoff: SignedDuration,
    /// Delay before a transient SMTP failure is retried (doubled each time, 8 attempts).
    pub mail_retry: SignedDuration,
    /// Runs (and feed rows) handled per transaction at most.
    pub batch_size: usize,
    /// Side effects (emails, webhooks, profile updates) in flight at once.
    pub concurrency: usize,
    /// How often the worker looks for work when nothing woke it.
    pub poll_interval: Duration,
    /// How long a message held for review (a `manual` action or flow) waits to be approved or
    /// skipped before it ages out as `skipped:expired` and its run moves on. Default 7 days.
    pub manual_review_expiry: SignedDuration,
    /// Fault injection for crash tests: the worker stops as if the process died.
    #[doc(hidden)]
    pub fault: Option<Fault>,
}

/// Where a simulated crash happens.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// After the intents of a batch are committed, before any side effect starts.
    AfterIntent,
    /// After the side effects of a batch ran, before their outcome is committed.
    BeforeDone,
}

impl std::fmt::Debug for FlowsConfig {
    /// The webhook key is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowsConfig")
            .field("path", &self.path)
            .field("mail", &self.mail.as_ref().map(|m| m.mailer.server()))
            .field("account_timezone", &self.account_timezone)
            .field("webhook_key", &"[redacted]")
            .field("webhook_timeout", &self.webhook_timeout)
            .field(
                "allow_private_destinations",
                &self.allow_private_destinations,
            )
            .field("webhook_max_attempts", &self.webhook_max_attempts)
            .field("webhook_backoff", &self.webhook_backoff)
            .field("mail_retry", &self.mail_retry)
            .field("batch_size", &self.batch_size)
            .field("concurrency", &self.concurrency)
            .field("poll_interval", &self.poll_interval)
            .field("manual_review_expiry", &self.manual_review_expiry)
            .finish_non_exhaustive()
    }
}

impl FlowsConfig {
    pub fn new(path: impl Into<PathBuf>) -> FlowsConfig {
        FlowsConfig {
            path: path.into(),
            mail: None,
            account_timezone: "UTC".into(),
            webhook_key: Vec::new(),
            webhook_timeout: Duration::from_secs(10),
            allow_private_destinations: false,
            webhook_max_attempts: 6,
            webhook_backoff: SignedDuration::from_secs(30),
            mail_retry: SignedDuration::from_secs(60),
            batch_size: 1_000,
            concurrency: 64,
            poll_interval: Duration::from_millis(500),
            manual_review_expiry: DEFAULT_MANUAL_REVIEW_EXPIRY,
            fault: None,
        }
    }
}

/// What the engine reads from and writes to elsewhere in Signalbox.
#[derive(Clone)]
pub struct FlowsDeps {
    pub facts: Arc<dyn FactsLoader>,
    pub membership: Option<Arc<dyn MembershipFeed>>,
    pub events: Option<Arc<dyn BuiltinEvents>>,
    pub templates: Option<Arc<dyn TemplateSource>>,
    pub lists: Option<Arc<dyn ListActions>>,
}

impl FlowsDeps {
    pub fn new(facts: Arc<dyn FactsLoader>) -> FlowsDeps {
        FlowsDeps {
            facts,
            membership: None,
            events: None,
            templates: None,
            lists: None,
        }
    }
}

/// A flow as the worker uses it.
pub(crate) struct CachedFlow {
    pub id: String,
    /// The flow's name, recorded with its email events (`$flow_name`).
    pub name: String,
    pub status: FlowStatus,
    pub definition: FlowDefinition,
}

impl CachedFlow {
    /// The status a message action runs with: a manual flow holds every message for review.
    pub(crate) fn message_status(&self, action: MessageStatus) -> MessageStatus {
        match self.status {
            FlowStatus::Manual if action == MessageStatus::Live => MessageStatus::Manual,
            _ => action,
        }
    }
}

/// The flows in memory, with indexes from trigger to flows.
#[derive(Default)]
pub(crate) struct FlowCache {
    pub flows: HashMap<String, Arc<CachedFlow>>,
    pub by_metric: HashMap<String, Vec<Arc<CachedFlow>>>,
    pub by_list: HashMap<String, Vec<Arc<CachedFlow>>>,
    pub by_segment: HashMap<String, Vec<Arc<CachedFlow>>>,
    pub date_flows: Vec<Arc<CachedFlow>>,
}

pub(crate) struct Inner {
    pub db: Arc<dyn FlowStore>,
    pub engage: Engage,
    pub clock: Arc<dyn Clock>,
    pub config: FlowsConfig,
    pub deps: FlowsDeps,
    pub templates: TemplateCache,
    /// Webhooks go out through the guarded client.
    pub outbound: OutboundClient,
    pub cache: RwLock<Arc<FlowCache>>,
    pub reader: Mutex<Option<Box<dyn EngageReader>>>,
    pub wake: Notify,
    pub stopped: AtomicBool,
    pub syncs: mpsc::UnboundedSender<oneshot::Sender<FlowsResult<()>>>,
    /// On a store shared with other engines, when the flows were last read from it: another
    /// engine may have changed them, so the worker reads them again every poll interval.
    pub shared_since: Option<Mutex<std::time::Instant>>,
}

/// The flows engine. Cheap to clone; the worker stops when the last clone is dropped or on
/// [`Flows::shutdown`].
#[derive(Clone)]
pub struct Flows {
    inner: Arc<Inner>,
    _guard: Arc<WorkerGuard>,
}

struct WorkerGuard {
    inner: Arc<Inner>,
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
    }
}

impl Flows {
    /// Opens (creating) `flows.db` and starts the worker on the current runtime. Intents left
    /// by a crash are carried out first (see [`crate`]'s exactly-once notes). One engine per
    /// file: the worker holds an exclusive lock on `flows.db.lock`.
    pub async fn start(
        engage: Engage,
        clock: Arc<dyn Clock>,
        config: FlowsConfig,
        deps: FlowsDeps,
    ) -> FlowsResult<Flows> {
        let lock = take_lock(&config.path).await?;
        let path = config.path.clone();
        let db: Arc<dyn FlowStore> = Arc::new(
            tokio::task::spawn_blocking(move || Db::open(&path))
                .await
                .map_err(|e| FlowsError::Internal(e.to_string()))??,
        );
        Flows::start_inner(engage, clock, config, deps, db, Some(lock)).await
    }

    /// Starts the engine on `store` (e.g. [`crate::PgFlowStore`]); `config.path` is not used.
    /// Several engines may share one store: each moves due runs (claimed row by row), and only
    /// the one that holds the store's ingestion lead ([`FlowStore::lead_ingestion`]) turns the
    /// change feed, segment entries and dates into runs.
    pub async fn start_with_store(
        engage: Engage,
        clock: Arc<dyn Clock>,
        config: FlowsConfig,
        deps: FlowsDeps,
        store: Arc<dyn FlowStore>,
    ) -> FlowsResult<Flows> {
        Flows::start_inner(engage, clock, config, deps, store, None).await
    }

    async fn start_inner(
        engage: Engage,
        clock: Arc<dyn Clock>,
        config: FlowsConfig,
        deps: FlowsDeps,
        db: Arc<dyn FlowStore>,
        lock: Option<std::fs::File>,
    ) -> FlowsResult<Flows> {
        if jiff::tz::TimeZone::get(&config.account_timezone).is_err() {
            return Err(FlowsError::invalid(
                "account_timezone",
                format!("unknown timezone {:?}", config.account_timezone),
            ));
        }
        {
            // A new engine starts at the feed's head: history does not trigger flows.
            let db = Arc::clone(&db);
            let engage = engage.clone();
            tokio::task::spawn_blocking(move || {
                if db.feed_cursor()?.is_none() {
                    db.start_feed_at(&engage.reader()?.end_cursor()?)?;
                }
                FlowsResult::Ok(())
            })
            .await
            .map_err(|e| FlowsError::Internal(e.to_string()))??;
        }
        let outbound = OutboundClient::new(OutboundConfig {
            connect_timeout: config.webhook_timeout.min(WEBHOOK_CONNECT_TIMEOUT),
            timeout: config.webhook_timeout,
            max_response_bytes: WEBHOOK_MAX_RESPONSE,
            allow_private_destinations: config.allow_private_destinations,
        })
        .map_err(|e| FlowsError::Internal(e.to_string()))?;
        let (syncs, sync_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            db,
            engage,
            clock,
            config,
            deps,
            templates: TemplateCache::default(),
            outbound,
            cache: RwLock::new(Arc::new(FlowCache::default())),
            reader: Mutex::new(None),
            wake: Notify::new(),
            stopped: AtomicBool::new(false),
            syncs,
            shared_since: lock
                .is_none()
                .then(|| Mutex::new(std::time::Instant::now())),
        });
        reload_cache(&inner).await?;
        tokio::spawn(crate::worker::run(Arc::clone(&inner), sync_rx, lock));
        Ok(Flows {
            _guard: Arc::new(WorkerGuard {
                inner: Arc::clone(&inner),
            }),
            inner,
        })
    }

    /// Stops the worker after the batch in progress.
    pub async fn shutdown(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
        // Let the worker notice; it holds no lock across awaits longer than one batch.
        for _ in 0..200 {
            if self.inner.syncs.is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether the worker stopped (shut down, or an injected fault).
    pub fn is_stopped(&self) -> bool {
        self.inner.syncs.is_closed()
    }

    /// Tells the worker to look for work now (it also polls, and wakes on engage's
    /// checkpoint).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Waits until the worker has read engage's change feed up to the checkpoint of now and
    /// carried out everything due at the clock's current time. Tests drive time with a
    /// `FakeClock` and call this after each step.
    pub async fn sync(&self) -> FlowsResult<()> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .syncs
            .send(tx)
            .map_err(|_| FlowsError::Unavailable)?;
        self.inner.wake.notify_one();
        rx.await.map_err(|_| FlowsError::Unavailable)?
    }

    // Flows.

    /// Creates a flow from Klaviyo's definition JSON (pointers in errors start at
    /// `/data/attributes/definition`). New flows are `draft` unless `status` says otherwise.
    pub async fn create_flow(
        &self,
        name: &str,
        definition: &Value,
        status: Option<FlowStatus>,
    ) -> FlowsResult<FlowInfo> {
        if name.trim().is_empty() {
            return Err(FlowsError::invalid(
                "/data/attributes/name",
                "must not be empty",
            ));
        }
        let definition =
            FlowDefinition::parse(definition).map_err(FlowsError::InvalidDefinition)?;
        let flow_id = new_flow_id();
        let now = self.inner.clock.now();
        let status = status.unwrap_or(FlowStatus::Draft);
        let name = name.trim().to_owned();
        let id = flow_id.clone();
        on_store(&self.inner, move |store| {
            let flow = NewFlow {
                id: &id,
                name: &name,
                status,
                now,
            };
            store.create_flow(&flow, definition)
        })
        .await?;
        reload_cache(&self.inner).await?;
        self.inner.wake.notify_one();
        self.get_flow(&flow_id).await
    }

    pub async fn get_flow(&self, id: &str) -> FlowsResult<FlowInfo> {
        let id = id.to_owned();
        on_store(&self.inner, move |store| {
            store
                .flow(&id)?
                .ok_or_else(|| FlowsError::not_found(format!("flow {id}")))
        })
        .await
    }

    /// Every flow, oldest first.
    pub async fn list_flows(&self) -> FlowsResult<Vec<FlowInfo>> {
        on_store(&self.inner, |store| store.flows()).await
    }

    /// A page of at most `limit` flows, the most recently changed first, after the flow
    /// `after` names (a [`FlowPage::next`] of an earlier page). Reads only that page's rows.
    pub async fn list_flows_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> FlowsResult<FlowPage> {
        let after = match after {
            None => None,
            Some(cursor) => Some(parse_flow_cursor(cursor)?),
        };
        let limit = limit.clamp(1, 1_000);
        on_store(&self.inner, move |store| {
            store.flows_page(after.as_ref().map(|(u, id)| (*u, id.as_str())), limit)
        })
        .await
    }

    /// Creates a draft flow from a ready template ([`crate::templates`]) with the values picked
    /// for its parameters (by parameter key); `name` empty: the template's name.
    pub async fn create_from_template(
        &self,
        template: &str,
        name: &str,
        values: &HashMap<String, String>,
    ) -> FlowsResult<FlowInfo> {
        let template = crate::templates::find(template)
            .ok_or_else(|| FlowsError::not_found(format!("flow template {template}")))?;
        let definition = template.definition(values)?;
        let name = if name.trim().is_empty() {
            template.name
        } else {
            name
        };
        self.create_flow(name, &definition, Some(FlowStatus::Draft))
            .await
    }

    /// Changes a flow's name, status, archived flag or definition.
    pub async fn update_flow(&self, id: &str, update: FlowUpdate) -> FlowsResult<FlowInfo> {
        let parsed = match &update.definition {
            Some(def) => Some(FlowDefinition::parse(def).map_err(FlowsError::InvalidDefinition)?),
            None => None,
        };
        if let Some(name) = &update.name {
            if name.trim().is_empty() {
                return Err(FlowsError::invalid(
                    "/data/attributes/name",
                    "must not be empty",
                ));
            }
        }
        let now = self.inner.clock.now();
        let flow_id = id.to_owned();
        let running = on_store(&self.inner, move |store| {
            let mut parsed = parsed;
            let mut change = |current: &FlowInfo| -> FlowsResult<FlowChange> {
                let mut definition = match parsed.take() {
                    Some(mut def) => {
                        // Ids that are not temporary must name actions of the flow.
                        for (i, action) in def.actions.iter().enumerate() {
                            if !action.temporary && current.definition.action(&action.id).is_none()
                            {
                                return Err(FlowsError::InvalidDefinition(vec![
                                    crate::definition::DefinitionProblem {
                                        pointer: format!(
                                            "{}/actions/{i}/id",
                                            crate::definition::DEFINITION_POINTER
                                        ),
                                        detail: format!(
                                            "the flow has no action `{}`; new actions use \
                                             `temporary_id`",
                                            action.id
                                        ),
                                    },
                                ]));
                            }
                        }
                        // A webhook keeps its secret when the new definition does not give one
                        // (reads never show it).
                        for action in &mut def.actions {
                            if let ActionKind::SendWebhook(w) = &mut action.kind {
                                if w.secret.is_none() && !action.temporary {
                                    if let Some(ActionKind::SendWebhook(old)) =
                                        current.definition.action(&action.id).map(|a| &a.kind)
                                    {
                                        w.secret = old.secret.clone();
                                    }
                                }
                            }
                        }
                        Some(def)
                    }
                    None => None,
                };
                if let Some(status) = update.status {
                    let message_status = match status {
                        FlowStatus::Live => Some(MessageStatus::Live),
                        FlowStatus::Manual => Some(MessageStatus::Manual),
                        FlowStatus::Draft => Some(MessageStatus::Draft),
                        FlowStatus::Paused => None,
                    };
                    if let Some(message_status) = message_status {
                        let def = definition.get_or_insert_with(|| current.definition.clone());
                        def.set_message_status(message_status);
                    }
                }
                Ok(FlowChange {
                    name: update.name.as_ref().map(|name| name.trim().to_owned()),
                    status: update.status,
                    archived: update.archived,
                    definition,
                })
            };
            store.update_flow(&flow_id, now, &mut change)
        })
        .await?;
        reload_cache(&self.inner).await?;
        if running {
            // Only once the worker sees the flow running, or it would park them again.
            let flow_id = id.to_owned();
            on_store(&self.inner, move |store| store.unpark_runs(&flow_id, now)).await?;
        }
        self.inner.wake.notify_one();
        self.get_flow(id).await
    }

    /// Deletes a flow; its active runs end as `cancelled`. Statistics and send records stay.
    pub async fn delete_flow(&self, id: &str) -> FlowsResult<()> {
        let flow_id = id.to_owned();
        let now = self.inner.clock.now();
        on_store(&self.inner, move |store| store.delete_flow(&flow_id, now)).await?;
        reload_cache(&self.inner).await
    }

    // Reads of what the flows did.

    /// Counters of the flow and of each action (see [`Counters`]).
    pub async fn stats(&self, flow_id: &str) -> FlowsResult<FlowStats> {
        let flow_id = flow_id.to_owned();
        on_store(&self.inner, move |store| store.stats(&flow_id)).await
    }

    /// The flow's runs, newest first, at most `limit`.
    pub async fn runs(&self, flow_id: &str, limit: usize) -> FlowsResult<Vec<RunInfo>> {
        let flow_id = flow_id.to_owned();
        on_store(&self.inner, move |store| store.runs(&flow_id, limit)).await
    }

    /// The emails the flow decided to send, oldest first.
    pub async fn sends(&self, flow_id: &str) -> FlowsResult<Vec<SendInfo>> {
        let flow_id = flow_id.to_owned();
        on_store(&self.inner, move |store| store.sends(&flow_id)).await
    }

    /// Webhook deliveries given up on, oldest first.
    pub async fn dead_letters(&self, flow_id: &str) -> FlowsResult<Vec<DeadLetter>> {
        let flow_id = flow_id.to_owned();
        on_store(&self.inner, move |store| store.dead_letters(&flow_id)).await
    }

    // Messages held for review.

    /// The flow's messages held for review that are still pending, oldest first: at most
    /// `limit` after the id `after` (a [`HeldPage::next`] of an earlier page).
    pub async fn pending_messages(
        &self,
        flow_id: &str,
        after: Option<i64>,
        limit: usize,
    ) -> FlowsResult<HeldPage> {
        self.messages(flow_id, Some(HeldStatus::Pending), after, limit)
            .await
    }

    /// The flow's held messages with `status` (all when `None`), oldest first, a page at a
    /// time as [`Flows::pending_messages`].
    pub async fn messages(
        &self,
        flow_id: &str,
        status: Option<HeldStatus>,
        after: Option<i64>,
        limit: usize,
    ) -> FlowsResult<HeldPage> {
        let limit = limit.clamp(1, 1_000);
        let flow_id = flow_id.to_owned();
        on_store(&self.inner, move |store| {
            if store.flow(&flow_id)?.is_none() {
                return Err(FlowsError::not_found(format!("flow {flow_id}")));
            }
            let mut messages =
                store.held_messages(&flow_id, status, after.unwrap_or(0), limit + 1)?;
            let next = if messages.len() > limit {
                messages.truncate(limit);
                messages.last().map(|m| m.id)
            } else {
                None
            };
            Ok(HeldPage { messages, next })
        })
        .await
    }

    /// One held message of the flow.
    pub async fn message(&self, flow_id: &str, id: i64) -> FlowsResult<HeldMessage> {
        let flow_id = flow_id.to_owned();
        on_store(&self.inner, move |store| {
            store
                .held_message(id)?
                .filter(|held| held.flow_id == flow_id)
                .ok_or_else(|| FlowsError::not_found(format!("message {id} of flow {flow_id}")))
        })
        .await
    }

    /// Releases a pending message: the worker sends it as it sends a live one (the same
    /// checks of consent and suppressions, the same exactly-once step) and its run moves on.
    /// Approving an approved message changes nothing; one that was skipped, expired or
    /// cancelled is a [`FlowsError::Conflict`].
    pub async fn approve_message(&self, flow_id: &str, id: i64) -> FlowsResult<HeldMessage> {
        self.decide_message(flow_id, id, HeldStatus::Approved).await
    }

    /// Skips a pending message (`skipped:manual`): it is never sent and its run moves on.
    /// Skipping a skipped message changes nothing; one that was approved, expired or cancelled
    /// is a [`FlowsError::Conflict`].
    pub async fn skip_message(&self, flow_id: &str, id: i64) -> FlowsResult<HeldMessage> {
        self.decide_message(flow_id, id, HeldStatus::Skipped).await
    }

    async fn decide_message(
        &self,
        flow_id: &str,
        id: i64,
        to: HeldStatus,
    ) -> FlowsResult<HeldMessage> {
        let flow_id = flow_id.to_owned();
        let now = self.inner.clock.now();
        let held = on_store(&self.inner, move |store| {
            store.decide_held(&flow_id, id, to, now)
        })
        .await?;
        self.inner.wake.notify_one();
        Ok(held)
    }

    /// The secret a `send-webhook` action signs with: its own `secret` if the definition gives
    /// one, else `hex(HMAC-SHA256(webhook_key, "flow:{flow_id}:action:{action_id}"))`.
    pub async fn webhook_secret(&self, flow_id: &str, action_id: &str) -> FlowsResult<String> {
        let flow = self.get_flow(flow_id).await?;
        match flow.definition.action(action_id).map(|a| &a.kind) {
            Some(ActionKind::SendWebhook(w)) => Ok(w.secret.clone().unwrap_or_else(|| {
                derived_secret(&self.inner.config.webhook_key, flow_id, action_id)
            })),
            _ => Err(FlowsError::not_found(format!(
                "send-webhook action {action_id} of flow {flow_id}"
            ))),
        }
    }
}

/// One engine per file: an exclusive lock on `flows.db.lock`, held by the worker. A worker
/// that just stopped may take a moment to let go, so this waits up to two seconds.
async fn take_lock(db: &std::path::Path) -> FlowsResult<std::fs::File> {
    let mut path = db.as_os_str().to_owned();
    path.push(".lock");
    let path = PathBuf::from(path);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            FlowsError::Internal(format!("cannot create {}: {e}", parent.display()))
        })?;
    }
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| FlowsError::Internal(format!("cannot open {}: {e}", path.display())))?;
    for _ in 0..100 {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(FlowsError::Internal(format!(
                    "cannot lock {}: {e}",
                    path.display()
                )))
            }
        }
    }
    Err(FlowsError::Conflict {
        reason: format!(
            "another process runs flows on {} (is the server running?)",
            db.display()
        ),
    })
}

pub(crate) fn derived_secret(key: &[u8], flow_id: &str, action_id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(format!("flow:{flow_id}:action:{action_id}").as_bytes());
    to_hex(&mac.finalize().into_bytes())
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn ts(us: i64) -> Timestamp {
    Timestamp::from_microsecond(us).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A flow id: 6 characters, like Klaviyo's.
fn new_flow_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..6]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// `<updated_us>.<id>`, as [`Flows::list_flows_page`] writes it.
fn parse_flow_cursor(cursor: &str) -> FlowsResult<(i64, String)> {
    cursor
        .split_once('.')
        .and_then(|(updated, id)| Some((updated.parse().ok()?, id.to_owned())))
        .filter(|(_, id)| !id.is_empty())
        .ok_or_else(|| FlowsError::invalid("after", "not a cursor of this listing"))
}

/// Runs `f` on the store on the blocking pool.
pub(crate) async fn on_store<T, F>(inner: &Arc<Inner>, f: F) -> FlowsResult<T>
where
    T: Send + 'static,
    F: FnOnce(&dyn FlowStore) -> FlowsResult<T> + Send + 'static,
{
    let store = Arc::clone(&inner.db);
    tokio::task::spawn_blocking(move || f(&*store))
        .await
        .map_err(|e| FlowsError::Internal(e.to_string()))?
}

/// Rebuilds the in-memory flows and trigger indexes from the database.
pub(crate) async fn reload_cache(inner: &Arc<Inner>) -> FlowsResult<()> {
    let flows = on_store(inner, |store| store.flows()).await?;
    let mut cache = FlowCache::default();
    for flow in flows {
        let cached = Arc::new(CachedFlow {
            id: flow.id.clone(),
            name: flow.name.clone(),
            status: if flow.archived {
                FlowStatus::Paused
            } else {
                flow.status
            },
            definition: flow.definition,
        });
        match &cached.definition.trigger {
            Trigger::Metric { metric_id, .. } => cache
                .by_metric
                .entry(metric_id.clone())
                .or_default()
                .push(Arc::clone(&cached)),
            Trigger::List { list_id } => cache
                .by_list
                .entry(list_id.clone())
                .or_default()
                .push(Arc::clone(&cached)),
            Trigger::Segment { segment_id } => cache
                .by_segment
                .entry(segment_id.clone())
                .or_default()
                .push(Arc::clone(&cached)),
            Trigger::Date(_) => cache.date_flows.push(Arc::clone(&cached)),
        }
        cache.flows.insert(flow.id, cached);
    }
    *inner.cache.write().expect("cache lock") = Arc::new(cache);
    Ok(())
}
