//! One destination's delivery task: read after the cursor → encode → rate limit → send
//! through the [`OutboundClient`] → classify → commit.
//!
//! - 2xx: delivered. The cursor, counters and the request's record commit in one
//!   transaction, so a restart (or `kill -9`) resumes after the last delivered request; a
//!   request in flight at a crash is sent again, with the same ids.
//! - 408, 429, 5xx, timeouts, connection errors, and 401/403/3xx (the receiver or our
//!   credentials, not the calls, are at fault): the same request again after a backoff
//!   (exponential, full jitter, `Retry-After` honoured).
//! - Any other 4xx: the batch is split in halves until the refused call is alone; it is
//!   dead-lettered with the reason and the start of the response, the rest is delivered.
//! - A refused address ([`signalbox_outbound::OutboundError::is_refused`]): recorded as the
//!   destination's error, backed off like a failure; the calls wait.
//!
//! **Invariant:** one request in flight per destination, in log order; a slow destination
//! holds only its own task.
//! **Invariant:** memory is one page of what it follows (bounded by [`SyncConfig::page_items`])
//! plus the request being built.
//! **Invariant:** secrets appear only in the request's headers: records keep redacted
//! headers, and response bodies and errors are scrubbed of the secret before they are kept.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use jiff::Timestamp;
use signalbox_core::{Clock, SourceId};
use signalbox_engage::DestinationSettings;
use signalbox_outbound::{OutboundClient, OutboundRequest};
use tokio::sync::watch;

use crate::engine::SyncConfig;
use crate::feed::{CallFeed, OutboxFeed};
use crate::kinds::{self, klaviyo, segment, webhook, Endpoint, Op, Req, Unit, UnitBody};
use crate::limits::{backoff, parse_retry_after, Breaker, TokenBucket};
use crate::model::{
    Circuit, DeliveryOutcome, DeliveryRecord, Destination, DestinationConfig, Position, Replay,
};
use crate::store::{Commit, NewDeadLetter, SyncStore};

/// Request and response bodies are kept in delivery records up to this many bytes.
const RECORD_BODY_BYTES: usize = 16 * 1024;
/// The start of a refusing response kept with a dead letter.
const DEAD_LETTER_RESPONSE_BYTES: usize = 2 * 1024;

/// What the engine's tasks share.
pub(crate) struct Shared {
    pub store: Arc<dyn SyncStore>,
    pub calls: Arc<dyn CallFeed>,
    pub outbox: Option<Arc<dyn OutboxFeed>>,
    pub outbound: OutboundClient,
    pub clock: Arc<dyn Clock>,
    pub config: SyncConfig,
    pub wake: watch::Receiver<u64>,
}

/// A running destination's state that `status` shows and `wait_idle` looks at.
#[derive(Debug)]
pub(crate) struct Live {
    pub retrying: bool,
    pub circuit: Circuit,
    /// Items delivered, by when (the last minute's).
    pub delivered: VecDeque<(Instant, u64)>,
    pub lag_seconds: f64,
    /// When the last read that found nothing to do started.
    pub idle_since: Option<Instant>,
    /// The supervisor saw a change: look for replay requests.
    pub check_replay: bool,
}

impl Live {
    pub fn new() -> Live {
        Live {
            retrying: false,
            circuit: Circuit::Closed,
            delivered: VecDeque::new(),
            lag_seconds: 0.0,
            idle_since: None,
            check_replay: true,
        }
    }

    pub fn throughput(&self, now: Instant) -> f64 {
        let total: u64 = self
            .delivered
            .iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) <= Duration::from_secs(60))
            .map(|(_, n)| n)
            .sum();
        total as f64 / 60.0
    }

    fn count(&mut self, now: Instant, n: u64) {
        self.delivered.push_back((now, n));
        while let Some((at, _)) = self.delivered.front() {
            if now.saturating_duration_since(*at) > Duration::from_secs(60) {
                self.delivered.pop_front();
            } else {
                break;
            }
        }
    }
}

/// How a request went.
enum Outcome {
    Delivered {
        body: Vec<u8>,
    },
    /// Try the same request again.
    Retry {
        reason: String,
        status: Option<u16>,
        body: Option<Vec<u8>>,
        retry_after: Option<Duration>,
    },
    /// The receiver refused what the request carried, for good.
    Refused {
        status: u16,
        body: Vec<u8>,
    },
}

/// Why the task stops early.
struct Stopped;

pub(crate) struct Worker {
    shared: Arc<Shared>,
    dest: Destination,
    live: Arc<Mutex<Live>>,
    stop: watch::Receiver<bool>,
    kick: Arc<tokio::sync::Notify>,
    wake: watch::Receiver<u64>,
    applied: Option<watch::Receiver<i64>>,
    queue: VecDeque<Unit>,
    /// Where the next read starts.
    read_pos: Position,
    cursor: Position,
    /// The furthest `done` position passed but not committed (skipped units).
    pending_done: Option<Position>,
    /// The sources followed (log kinds), resolved from their names.
    sources: Option<HashSet<SourceId>>,
    settings: HashMap<SourceId, DestinationSettings>,
    settings_read: Option<Instant>,
    buckets: HashMap<Endpoint, TokenBucket>,
    rate_bucket: Option<TokenBucket>,
    breaker: Breaker,
    /// After a refusal of a batch: the next requests carry at most this many units.
    split_limit: Option<usize>,
    /// The last position of the batch that was refused: past it, batches are whole again.
    split_until: Option<Position>,
    /// When the last read started, and whether it found less than a full page.
    last_fill: Option<Instant>,
    trickle: bool,
    last_pass_commit: Option<Instant>,
    attempt: u32,
    /// Strings scrubbed from anything kept (the secret and its encodings).
    secrets: Vec<String>,
    replaying: bool,
    labels: [(&'static str, String); 1],
}

impl Worker {
    pub fn new(
        shared: Arc<Shared>,
        dest: Destination,
        live: Arc<Mutex<Live>>,
        stop: watch::Receiver<bool>,
        kick: Arc<tokio::sync::Notify>,
    ) -> Worker {
        let now = Instant::now();
        let mut buckets = HashMap::new();
        // The destination's own rate counts items over every endpoint; without one, the
        // klaviyo kind keeps to Klaviyo's published per-endpoint limits (requests).
        let rate_bucket = dest.rate.map(|rate| TokenBucket::new(rate, rate, now));
        if rate_bucket.is_none() && matches!(dest.config, DestinationConfig::Klaviyo { .. }) {
            buckets.insert(
                Endpoint::ProfileImport,
                TokenBucket::klaviyo(75.0, 700.0, now),
            );
            buckets.insert(Endpoint::EventBulk, TokenBucket::klaviyo(10.0, 150.0, now));
            buckets.insert(
                Endpoint::ListRelationships,
                TokenBucket::klaviyo(10.0, 150.0, now),
            );
        }
        let mut secrets = Vec::new();
        match &dest.config {
            DestinationConfig::Segment { write_key, .. } => {
                secrets.push(write_key.expose().to_owned());
                let basic = segment::basic_auth(write_key);
                if let Some(token) = basic.strip_prefix("Basic ") {
                    secrets.push(token.to_owned());
                }
                secrets.push(base64::engine::general_purpose::STANDARD.encode(write_key.expose()));
            }
            DestinationConfig::Klaviyo { api_key, .. } => secrets.push(api_key.expose().to_owned()),
            DestinationConfig::Webhook { secret, .. } => {
                if let Some(secret) = secret {
                    secrets.push(secret.expose().to_owned());
                }
            }
        }
        secrets.retain(|s| !s.is_empty());
        let applied = match dest.config {
            DestinationConfig::Segment { .. } => shared.outbox.as_ref().and_then(|o| o.subscribe()),
            _ => None,
        };
        let config = &shared.config;
        let breaker = Breaker::new(config.breaker_threshold, config.breaker_open);
        let labels = [("destination", dest.name.clone())];
        Worker {
            wake: shared.wake.clone(),
            shared,
            dest,
            live,
            stop,
            kick,
            applied,
            queue: VecDeque::new(),
            read_pos: Position::default(),
            cursor: Position::default(),
            pending_done: None,
            sources: None,
            settings: HashMap::new(),
            settings_read: None,
            buckets,
            rate_bucket,
            breaker,
            split_limit: None,
            split_until: None,
            last_fill: None,
            trickle: false,
            last_pass_commit: None,
            attempt: 0,
            secrets,
            replaying: false,
            labels,
        }
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Runs until stopped.
    pub async fn run(mut self) {
        tracing::info!(destination = %self.dest.name, kind = self.dest.config.kind().as_str(), "delivery started");
        let _ = self.main().await;
        tracing::info!(destination = %self.dest.name, "delivery stopped");
    }

    async fn main(&mut self) -> Result<(), Stopped> {
        loop {
            match self.shared.store.progress(&self.dest.id).await {
                Ok(progress) => {
                    self.cursor = progress.cursor;
                    self.read_pos = progress.cursor;
                    break;
                }
                Err(err) => {
                    tracing::warn!(destination = %self.dest.name, error = %err, "cannot read the cursor");
                    self.sleep(self.shared.config.poll_interval.max(Duration::from_secs(1)))
                        .await?;
                }
            }
        }
        loop {
            if self.stopped() {
                return Err(Stopped);
            }
            let check = {
                let mut live = self.live.lock().expect("live lock");
                std::mem::take(&mut live.check_replay)
            };
            if check {
                self.replays().await?;
            }
            if self.queue.is_empty() {
                // Trickling in: let a few more arrive so that a busy log is sent in batches
                // rather than a request (and a commit) per append.
                if let Some(last) = self.last_fill.filter(|_| self.trickle) {
                    let linger = self.shared.config.linger;
                    if last.elapsed() < linger {
                        self.sleep(linger - last.elapsed()).await?;
                    }
                }
                let started = Instant::now();
                self.last_fill = Some(started);
                match self.fill().await {
                    Ok(true) => {}
                    Ok(false) => {
                        self.commit_passed().await;
                        self.set_lag(None);
                        {
                            let mut live = self.live.lock().expect("live lock");
                            if !live.check_replay && self.pending_done.is_none() {
                                live.idle_since = Some(started);
                            }
                        }
                        self.wait_for_more().await?;
                        continue;
                    }
                    Err(err) => {
                        self.record_error(format!("reading what to deliver: {err}"))
                            .await;
                        self.sleep(Duration::from_secs(1)).await?;
                        continue;
                    }
                }
            }
            self.live.lock().expect("live lock").idle_since = None;
            self.step().await?;
        }
    }

    /// Waits for a wake-up: an append, an applied batch, the poll interval, a kick or stop.
    async fn wait_for_more(&mut self) -> Result<(), Stopped> {
        let poll = self.shared.config.poll_interval;
        let applied = async {
            match self.applied.as_mut() {
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = self.wake.changed() => {}
            _ = applied => {}
            _ = self.kick.notified() => {}
            _ = self.stop.changed() => {}
        }
        if self.stopped() {
            Err(Stopped)
        } else {
            Ok(())
        }
    }

    /// Sleeps (updating the lag gauge every second), until stopped.
    async fn sleep(&mut self, duration: Duration) -> Result<(), Stopped> {
        let until = Instant::now() + duration;
        loop {
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            let slice = (until - now).min(Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(slice) => {}
                _ = self.stop.changed() => {}
            }
            if self.stopped() {
                return Err(Stopped);
            }
            let oldest = self.queue.front().map(|u| u.at);
            self.set_lag(oldest);
        }
    }

    fn set_lag(&self, oldest: Option<Timestamp>) {
        let lag = oldest
            .map(|at| {
                let age = self.shared.clock.now().duration_since(at).as_secs_f64();
                age.max(0.0)
            })
            .unwrap_or(0.0);
        self.live.lock().expect("live lock").lag_seconds = lag;
        metrics::gauge!("signalbox_destination_lag_seconds", &self.labels).set(lag);
    }

    /// Reads the next page after `read_pos` into the queue; false when there was nothing.
    async fn fill(&mut self) -> crate::SyncResult<bool> {
        let page = self.shared.config.page_items.max(1);
        match self.dest.config.clone() {
            DestinationConfig::Segment {
                only_segment_profiles,
                ..
            } => {
                let Some(outbox) = self.shared.outbox.clone() else {
                    return Ok(false);
                };
                let entries = outbox.outbox_after(self.read_pos, page).await?;
                self.trickle = entries.len() < page as usize;
                let Some(last) = entries.last() else {
                    return Ok(false);
                };
                self.read_pos = Position {
                    seq: last.seq,
                    n: last.n,
                };
                for entry in &entries {
                    self.queue.push_back(segment::unit(
                        &self.dest.id,
                        only_segment_profiles,
                        entry,
                    ));
                }
                Ok(true)
            }
            DestinationConfig::Klaviyo { sources, .. }
            | DestinationConfig::Webhook { sources, .. } => {
                let ids = self.resolve_sources(&sources).await?;
                let single = (ids.len() == 1).then(|| *ids.iter().next().expect("one"));
                let head = if single.is_some() {
                    Some(self.shared.calls.head().await?)
                } else {
                    None
                };
                let calls = self
                    .shared
                    .calls
                    .calls_after(self.read_pos.seq, single, page)
                    .await?;
                self.trickle = calls.len() < page as usize;
                let Some(last) = calls.last() else {
                    // Nothing of ours up to the head: pass the others' calls.
                    if let Some(head) = head {
                        if head > self.read_pos.seq {
                            self.read_pos = Position { seq: head, n: 0 };
                            self.pending_done = Some(self.read_pos);
                        }
                    }
                    return Ok(false);
                };
                self.read_pos = Position {
                    seq: last.seq,
                    n: 0,
                };
                let is_klaviyo = matches!(self.dest.config, DestinationConfig::Klaviyo { .. });
                if is_klaviyo {
                    self.refresh_settings().await?;
                }
                for call in calls {
                    let position = Position {
                        seq: call.seq,
                        n: 0,
                    };
                    if !ids.contains(&call.source_id) || !call.kind.is_segment() {
                        self.queue.push_back(Unit::skip(
                            position,
                            call.received_at,
                            kinds::NOT_FOLLOWED,
                        ));
                    } else if is_klaviyo {
                        let settings = self
                            .settings
                            .get(&call.source_id)
                            .cloned()
                            .unwrap_or_default();
                        self.queue
                            .extend(klaviyo::units(&self.dest.id, &call, &settings));
                    } else {
                        self.queue.push_back(webhook::unit(call));
                    }
                }
                Ok(true)
            }
        }
    }

    async fn resolve_sources(&mut self, names: &[String]) -> crate::SyncResult<HashSet<SourceId>> {
        if let Some(ids) = &self.sources {
            return Ok(ids.clone());
        }
        let mut ids = HashSet::new();
        for name in names {
            match self.shared.calls.source_id(name).await? {
                Some(id) => {
                    ids.insert(id);
                }
                None => {
                    return Err(crate::SyncError::Feed(format!("no source named {name:?}")));
                }
            }
        }
        self.sources = Some(ids.clone());
        Ok(ids)
    }

    async fn refresh_settings(&mut self) -> crate::SyncResult<()> {
        let fresh = self
            .settings_read
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1));
        if fresh {
            return Ok(());
        }
        let all = self.shared.calls.source_settings().await?;
        self.settings = all
            .into_iter()
            .map(|s| (s.source_id, DestinationSettings::from_json(&s.settings)))
            .collect();
        self.settings_read = Some(Instant::now());
        Ok(())
    }

    /// Commits the cursor past skipped units, when there are any and nothing else to send.
    ///
    /// At most once per [`SyncConfig::idle_commit_interval`]: passing other sources' calls
    /// must not cost a transaction per wake-up (re-reading them after a restart is harmless).
    async fn commit_passed(&mut self) {
        if self.replaying {
            return;
        }
        let recent = self
            .last_pass_commit
            .is_some_and(|at| at.elapsed() < self.shared.config.idle_commit_interval);
        if recent {
            return;
        }
        if let Some(done) = self.pending_done.take() {
            self.last_pass_commit = Some(Instant::now());
            if done > self.cursor {
                let commit = Commit {
                    cursor: Some(done),
                    at: Some(self.shared.clock.now()),
                    ..Commit::default()
                };
                match self.shared.store.commit(&self.dest.id, commit).await {
                    Ok(()) => self.cursor = done,
                    Err(err) => {
                        tracing::warn!(destination = %self.dest.name, error = %err, "cannot commit the cursor");
                        self.pending_done = Some(done);
                    }
                }
            }
        }
    }

    /// Handles the front of the queue: skips, a refusal, or one request.
    async fn step(&mut self) -> Result<(), Stopped> {
        while let Some(UnitBody::Skip { .. }) = self.queue.front().map(|u| &u.body) {
            let unit = self.queue.pop_front().expect("front");
            self.count_skipped(std::slice::from_ref(&unit));
            if let Some(done) = unit.done {
                self.pending_done = Some(self.pending_done.map_or(done, |p| p.max(done)));
            }
        }
        let Some(front) = self.queue.front() else {
            self.commit_passed().await;
            return Ok(());
        };
        if let UnitBody::Refuse { reason, .. } = &front.body {
            let reason = reason.clone();
            let unit = self.queue.pop_front().expect("front");
            self.dead_letter(unit, reason, None, None, None).await;
            return Ok(());
        }
        self.deliver().await
    }

    /// Counts what the destination follows but had nothing to send for (no identity, not a
    /// Segment-updated profile, Klaviyo turned off, a call type the receiver has no use for);
    /// the others' calls passed over are not counted.
    fn count_skipped(&self, units: &[Unit]) {
        let skipped = units
            .iter()
            .filter(
                |u| matches!(u.body, UnitBody::Skip { reason } if reason != kinds::NOT_FOLLOWED),
            )
            .count();
        if skipped > 0 {
            metrics::counter!("signalbox_destination_skipped_total", &self.labels)
                .increment(skipped as u64);
        }
    }

    fn max_units(&self) -> usize {
        let by_rate = self
            .dest
            .rate
            .map(|rate| rate.ceil().max(1.0) as usize)
            .unwrap_or(usize::MAX);
        by_rate
            .min(self.split_limit.unwrap_or(usize::MAX))
            .min(self.shared.config.max_batch_items.max(1))
    }

    fn run_len(&mut self) -> usize {
        let max = self.max_units();
        let units = self.queue.make_contiguous();
        match self.dest.config {
            DestinationConfig::Klaviyo { .. } => klaviyo::run(units, max),
            _ => kinds::batch_run(units, max, kinds::MAX_BATCH_BYTES),
        }
    }

    fn build(&self, units: &[Unit]) -> Req {
        let now = self.shared.clock.now();
        match &self.dest.config {
            DestinationConfig::Segment {
                write_key,
                endpoint,
                ..
            } => segment::request(endpoint, write_key, units, now),
            DestinationConfig::Klaviyo {
                api_key, endpoint, ..
            } => klaviyo::request(endpoint, api_key, units),
            DestinationConfig::Webhook { url, secret, .. } => {
                webhook::request(&self.dest.id, url, secret.as_ref(), units, now)
            }
        }
    }

    fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "••••");
            }
        }
        text
    }

    /// Sends the run at the front of the queue until it is delivered or refused.
    async fn deliver(&mut self) -> Result<(), Stopped> {
        let n = self.run_len().min(self.queue.len());
        loop {
            if self.stopped() {
                return Err(Stopped);
            }
            let wait = self.breaker.wait(Instant::now());
            self.update_circuit();
            if !wait.is_zero() {
                self.sleep(wait).await?;
                self.update_circuit();
            }
            let units: Vec<Unit> = self.queue.iter().take(n).cloned().collect();
            let req = self.build(&units);
            let items = units
                .iter()
                .filter(|u| matches!(u.body, UnitBody::Send { .. }))
                .count();
            let mut wait = Duration::ZERO;
            if let Some(bucket) = self.rate_bucket.as_mut() {
                wait = wait.max(bucket.take(items as f64, Instant::now()));
            }
            if let Some(bucket) = self.buckets.get_mut(&req.endpoint) {
                wait = wait.max(bucket.take(1.0, Instant::now()));
            }
            if !wait.is_zero() {
                self.sleep(wait).await?;
            }
            let at = self.shared.clock.now();
            let started = Instant::now();
            let mut request = OutboundRequest::post(req.url.clone()).body(req.body.clone());
            for (name, value) in &req.headers {
                request = request.header(name, value);
            }
            let result = {
                // The lag gauge keeps moving while a request is in flight.
                let send = self.shared.outbound.send(request);
                tokio::pin!(send);
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.tick().await;
                loop {
                    tokio::select! {
                        result = &mut send => break result,
                        _ = tick.tick() => self.set_lag(units.first().map(|u| u.at)),
                    }
                }
            };
            let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            let mut record = DeliveryRecord {
                id: 0,
                destination: self.dest.name.clone(),
                at,
                method: "POST".into(),
                url: without_credentials(&req.url),
                request_headers: kinds::redacted_headers(&req.headers),
                request_body: self.scrub(&kinds::cut(
                    &String::from_utf8_lossy(&req.body),
                    RECORD_BODY_BYTES,
                )),
                status: None,
                response_body: None,
                error: None,
                duration_ms,
                items: items as u32,
                outcome: DeliveryOutcome::Retry,
            };
            let outcome = match result {
                Ok(response) => {
                    let status = response.status;
                    record.status = Some(status);
                    record.response_body = Some(self.scrub(&kinds::cut(
                        &String::from_utf8_lossy(&response.body),
                        RECORD_BODY_BYTES,
                    )));
                    let retry_after = response
                        .headers
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, self.shared.clock.now()));
                    classify(status, response.body.to_vec(), retry_after)
                }
                Err(err) => {
                    let text = self.scrub(&err.to_string());
                    record.error = Some(text.clone());
                    let reason = if err.is_refused() {
                        format!("request refused before sending: {text}")
                    } else {
                        text
                    };
                    Outcome::Retry {
                        reason,
                        status: None,
                        body: None,
                        retry_after: None,
                    }
                }
            };
            match outcome {
                Outcome::Delivered { body } => {
                    self.breaker.success();
                    self.attempt = 0;
                    self.live.lock().expect("live lock").retrying = false;
                    self.update_circuit();
                    record.outcome = DeliveryOutcome::Delivered;
                    self.delivered(n, &body, record).await;
                    return Ok(());
                }
                Outcome::Retry {
                    reason,
                    status,
                    body,
                    retry_after,
                } => {
                    self.breaker.failure(Instant::now());
                    self.attempt = self.attempt.saturating_add(1);
                    self.live.lock().expect("live lock").retrying = true;
                    self.update_circuit();
                    record.outcome = DeliveryOutcome::Retry;
                    let reason = match (status, body) {
                        (Some(_), Some(body)) if !body.is_empty() => format!(
                            "{reason}: {}",
                            self.scrub(&kinds::cut(&String::from_utf8_lossy(&body), 200))
                        ),
                        _ => reason,
                    };
                    tracing::warn!(destination = %self.dest.name, attempt = self.attempt, error = %reason, "delivery failed; trying again");
                    metrics::counter!("signalbox_destination_retried_total", &self.labels)
                        .increment(1);
                    let commit = Commit {
                        retried: 1,
                        failed: 1,
                        record: Some(record),
                        error: Some(Some(reason)),
                        at: Some(self.shared.clock.now()),
                        ..Commit::default()
                    };
                    if let Err(err) = self.shared.store.commit(&self.dest.id, commit).await {
                        tracing::warn!(destination = %self.dest.name, error = %err, "cannot record a failed attempt");
                    }
                    let config = &self.shared.config;
                    let wait = backoff(
                        self.attempt,
                        config.backoff_base,
                        config.backoff_cap,
                        retry_after,
                        config.retry_after_cap,
                    )
                    .max(self.breaker.wait(Instant::now()));
                    self.sleep(wait).await?;
                }
                Outcome::Refused { status, body } => {
                    // An answer: the receiver is up.
                    self.breaker.success();
                    self.attempt = 0;
                    self.live.lock().expect("live lock").retrying = false;
                    self.update_circuit();
                    let response = self.scrub(&kinds::cut(
                        &String::from_utf8_lossy(&body),
                        DEAD_LETTER_RESPONSE_BYTES,
                    ));
                    if n > 1 {
                        record.outcome = DeliveryOutcome::Split;
                        self.split_limit = Some(n / 2);
                        let last = self.queue.get(n - 1).map(|u| u.position);
                        if self.split_until.is_none() {
                            self.split_until = last;
                        }
                        let commit = Commit {
                            failed: 1,
                            record: Some(record),
                            at: Some(self.shared.clock.now()),
                            ..Commit::default()
                        };
                        if let Err(err) = self.shared.store.commit(&self.dest.id, commit).await {
                            tracing::warn!(destination = %self.dest.name, error = %err, "cannot record a refused batch");
                        }
                        return Ok(());
                    }
                    record.outcome = DeliveryOutcome::DeadLettered;
                    let unit = self.queue.pop_front().expect("front");
                    let reason = format!("the receiver refused it with status {status}");
                    self.dead_letter(unit, reason, Some(status), Some(response), Some(record))
                        .await;
                    return Ok(());
                }
            }
        }
    }

    fn update_circuit(&self) {
        let state = self.breaker.state(Instant::now());
        self.live.lock().expect("live lock").circuit = state;
    }

    /// The first `n` units were delivered: commit, and queue a follow-up (a list add after
    /// a profile import).
    async fn delivered(&mut self, n: usize, response: &[u8], record: DeliveryRecord) {
        let units: Vec<Unit> = self.queue.drain(..n).collect();
        self.count_skipped(&units);
        let mut follow_up = None;
        if let Some(first) = units.first() {
            if matches!(first.op(), Some(Op::ProfileImport { .. })) {
                follow_up = klaviyo::list_add_unit(first, response);
            }
        }
        let mut cursor = self.pending_done.take();
        let mut delivered = 0u64;
        let mut replayed = Vec::new();
        for unit in &units {
            if follow_up.is_some() {
                break;
            }
            if let Some(done) = unit.done {
                cursor = Some(cursor.map_or(done, |c| c.max(done)));
                if !matches!(unit.body, UnitBody::Skip { .. }) {
                    delivered += 1;
                }
            }
            if let Some(id) = unit.replay_of {
                replayed.push(id);
                delivered += 1;
            }
        }
        if let (Some(until), Some(last)) = (self.split_until, units.last()) {
            if last.position >= until {
                self.split_limit = None;
                self.split_until = None;
            }
        }
        if let Some(unit) = follow_up {
            self.queue.push_front(unit);
        }
        let cursor = if self.replaying {
            None
        } else {
            cursor.filter(|c| *c > self.cursor)
        };
        let commit = Commit {
            cursor,
            delivered,
            replayed,
            record: Some(record),
            at: Some(self.shared.clock.now()),
            ..Commit::default()
        };
        self.commit_until_done(commit).await;
        if let Some(cursor) = cursor {
            self.cursor = cursor;
        }
        if delivered > 0 {
            metrics::counter!("signalbox_destination_delivered_total", &self.labels)
                .increment(delivered);
            self.live
                .lock()
                .expect("live lock")
                .count(Instant::now(), delivered);
        }
        let oldest = self.queue.front().map(|u| u.at);
        self.set_lag(oldest);
    }

    /// A commit after a delivery must land, or a restart would resend more than one
    /// request: it is tried until it does (the store is local; errors are rare and short).
    async fn commit_until_done(&mut self, commit: Commit) {
        let mut wait = Duration::from_millis(100);
        loop {
            match self
                .shared
                .store
                .commit(&self.dest.id, commit.clone())
                .await
            {
                Ok(()) => return,
                Err(err) => {
                    tracing::error!(destination = %self.dest.name, error = %err, "cannot commit a delivery; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn dead_letter(
        &mut self,
        unit: Unit,
        reason: String,
        status: Option<u16>,
        response: Option<String>,
        record: Option<DeliveryRecord>,
    ) {
        if self.split_until.is_none_or(|until| unit.position >= until) {
            self.split_limit = None;
            self.split_until = None;
        }
        let reason = self.scrub(&reason);
        tracing::warn!(destination = %self.dest.name, message_id = %unit.message_id, reason = %reason, "dead-lettered");
        if unit.replay_of.is_some() {
            // Refused again: it stays a pending dead letter.
            let commit = Commit {
                failed: 1,
                record,
                error: Some(Some(format!("replay of {}: {reason}", unit.message_id))),
                at: Some(self.shared.clock.now()),
                ..Commit::default()
            };
            self.commit_until_done(commit).await;
            return;
        }
        let mut cursor = self.pending_done.take();
        if let Some(done) = unit.done {
            cursor = Some(cursor.map_or(done, |c| c.max(done)));
        }
        let cursor = cursor.filter(|c| *c > self.cursor);
        let letter = NewDeadLetter {
            position: unit.position,
            message_id: unit.message_id.clone(),
            reason: reason.clone(),
            status,
            response,
            payload: unit.dead_letter_payload(),
        };
        let commit = Commit {
            cursor,
            failed: u64::from(record.is_some()),
            dead_letters: vec![letter],
            record,
            error: Some(Some(format!("{}: {reason}", unit.message_id))),
            at: Some(self.shared.clock.now()),
            ..Commit::default()
        };
        self.commit_until_done(commit).await;
        if let Some(cursor) = cursor {
            self.cursor = cursor;
        }
        metrics::counter!("signalbox_destination_dead_lettered_total", &self.labels).increment(1);
    }

    async fn record_error(&mut self, error: String) {
        let error = self.scrub(&error);
        tracing::warn!(destination = %self.dest.name, error = %error, "delivery stalled");
        let commit = Commit {
            error: Some(Some(error)),
            at: Some(self.shared.clock.now()),
            ..Commit::default()
        };
        if let Err(err) = self.shared.store.commit(&self.dest.id, commit).await {
            tracing::warn!(destination = %self.dest.name, error = %err, "cannot record an error");
        }
        // A source named by the destination may be created later.
        self.sources = None;
    }

    /// Carries out the replay requests waiting for this destination.
    async fn replays(&mut self) -> Result<(), Stopped> {
        loop {
            let replay = match self.shared.store.take_replay(&self.dest.id).await {
                Ok(Some(replay)) => replay,
                Ok(None) => return Ok(()),
                Err(err) => {
                    tracing::warn!(destination = %self.dest.name, error = %err, "cannot read replay requests");
                    return Ok(());
                }
            };
            match replay {
                Replay::DeadLetters => self.replay_dead_letters().await?,
                Replay::Since(since) => self.replay_since(since).await,
            }
        }
    }

    async fn replay_dead_letters(&mut self) -> Result<(), Stopped> {
        let letters = match self
            .shared
            .store
            .dead_letters(&self.dest.name, true, u32::MAX)
            .await
        {
            Ok(letters) => letters,
            Err(err) => {
                tracing::warn!(destination = %self.dest.name, error = %err, "cannot read dead letters");
                return Ok(());
            }
        };
        if letters.is_empty() {
            return Ok(());
        }
        tracing::info!(destination = %self.dest.name, count = letters.len(), "replaying dead letters");
        let ops = matches!(self.dest.config, DestinationConfig::Klaviyo { .. });
        let saved = std::mem::take(&mut self.queue);
        let saved_pending = self.pending_done.take();
        let saved_split = (self.split_limit.take(), self.split_until.take());
        self.queue = letters
            .iter()
            .map(|l| Unit::from_dead_letter(l, ops))
            .collect();
        self.replaying = true;
        let mut result = Ok(());
        while !self.queue.is_empty() {
            if let Err(stopped) = self.step().await {
                result = Err(stopped);
                break;
            }
        }
        self.replaying = false;
        self.queue = saved;
        self.pending_done = saved_pending;
        (self.split_limit, self.split_until) = saved_split;
        result
    }

    async fn replay_since(&mut self, since: Timestamp) {
        let target = match &self.dest.config {
            DestinationConfig::Segment { .. } => match &self.shared.outbox {
                Some(outbox) => outbox.outbox_position_before(since).await.map(Some),
                None => Ok(None),
            },
            _ => self
                .shared
                .calls
                .first_since(since)
                .await
                .map(|first| first.map(|seq| Position { seq: seq - 1, n: 0 })),
        };
        match target {
            Ok(Some(position)) if position < self.cursor || position < self.read_pos => {
                if let Err(err) = self.shared.store.rewind(&self.dest.id, position).await {
                    tracing::warn!(destination = %self.dest.name, error = %err, "cannot rewind");
                    return;
                }
                tracing::info!(destination = %self.dest.name, seq = position.seq, "replaying since {since}");
                self.cursor = self.cursor.min(position);
                self.read_pos = position;
                self.queue.clear();
                self.pending_done = None;
                self.split_limit = None;
                self.split_until = None;
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(destination = %self.dest.name, error = %err, "cannot find where to replay from")
            }
        }
    }
}

/// A URL as a record keeps it: without a user name or password in it.
fn without_credentials(url: &str) -> String {
    match signalbox_outbound::check_url_syntax(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        Err(_) => url.to_owned(),
    }
}

/// 2xx delivered; 408, 429, 5xx and the answers that blame the receiver or the credentials
/// rather than the calls (1xx, 3xx, 401, 403) again; any other 4xx refused for good.
fn classify(status: u16, body: Vec<u8>, retry_after: Option<Duration>) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered { body },
        400..=499 if !matches!(status, 401 | 403 | 408 | 429) => Outcome::Refused { status, body },
        _ => Outcome::Retry {
            reason: format!("the receiver answered {status}"),
            status: Some(status),
            body: Some(body),
            retry_after,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_rules() {
        assert!(matches!(
            classify(200, vec![], None),
            Outcome::Delivered { .. }
        ));
        assert!(matches!(
            classify(202, vec![], None),
            Outcome::Delivered { .. }
        ));
        for status in [408, 429, 500, 502, 503, 401, 403, 301] {
            assert!(
                matches!(classify(status, vec![], None), Outcome::Retry { .. }),
                "{status}"
            );
        }
        for status in [400, 404, 409, 413, 422] {
            assert!(
                matches!(classify(status, vec![], None), Outcome::Refused { .. }),
                "{status}"
            );
        }
    }
}
