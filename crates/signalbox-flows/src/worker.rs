//! The worker: one task that, in a loop, reads engage's change feed (and segment entries, and
//! due date triggers) into new runs, then moves the runs that are due.
//!
//! Moving runs is three steps per batch: **plan** (one transaction: check the profile filter,
//! walk delays and splits, decide each side effect and record its intent), **act** (the
//! side effects, concurrently, outside any transaction) and **record** (one transaction: the
//! outcomes, the statistics, the runs' new positions). A crash between plan and record
//! leaves intents that the next plan picks up again (see `actions.rs` for what that means
//! for each kind of side effect).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value};
use signalbox_engage::feed::{self, Changes};
use signalbox_engage::{EngageReader, ProfileKey};
use signalbox_seglang::{ConsentStatus, EvalContext, ProfileFacts, PropertyPath};
use tokio::sync::{mpsc, oneshot};

use crate::actions::{self, Effect, Outcome};
use crate::definition::{ActionKind, MessageStatus, Reentry, Trigger};
use crate::engine::{CachedFlow, Fault, FlowCache, Inner};
use crate::error::{FlowsError, FlowsResult};
use crate::flow_store::{
    FlowWriter, NewHeld, NewRun, NewSend, NewStep, RunRow, StepState, WebhookState,
};
use crate::model::{HeldStatus, RunExit, RunStatus, SendStatus};
use crate::schedule;

/// The order events that count as conversions: Klaviyo's `Placed Order`, and `Order Completed`
/// as Segment sources name it when the destination follows Segment's spec.
pub const CONVERSION_METRICS: [&str; 2] = ["Placed Order", "Order Completed"];

/// How long conversions are attributed to an email.
pub const CONVERSION_WINDOW: SignedDuration = SignedDuration::from_hours(24 * 5);

enum Pass {
    /// Something was done; look again at once.
    Busy,
    Idle,
    /// An injected fault: stop as if the process died.
    Crashed,
}

pub(crate) async fn run(
    inner: Arc<Inner>,
    mut syncs: mpsc::UnboundedReceiver<oneshot::Sender<FlowsResult<()>>>,
    lock: Option<std::fs::File>,
) {
    let mut applied = inner.engage.subscribe_applied();
    let mut waiting: Vec<oneshot::Sender<FlowsResult<()>>> = Vec::new();
    loop {
        if inner.stopped.load(Ordering::SeqCst) {
            break;
        }
        while let Ok(sync) = syncs.try_recv() {
            waiting.push(sync);
        }
        match pass(&inner).await {
            Ok(Pass::Busy) => continue,
            Ok(Pass::Idle) => {
                for sync in waiting.drain(..) {
                    let _ = sync.send(Ok(()));
                }
            }
            Ok(Pass::Crashed) => {
                tracing::warn!("flows worker stopped by an injected fault");
                break;
            }
            Err(error) => {
                tracing::error!(%error, "flows worker pass failed");
                for sync in waiting.drain(..) {
                    let _ = sync.send(Err(error.clone()));
                }
            }
        }
        let sleep_for = until_next_wake(&inner).await;
        let applied_changed = async {
            match applied.as_mut() {
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = applied_changed => {}
            sync = syncs.recv() => match sync {
                Some(sync) => waiting.push(sync),
                None => break,
            },
            _ = tokio::time::sleep(sleep_for) => {}
        }
    }
    // Let go of the file and the ingestion lead before anyone learns the worker stopped.
    drop(lock);
    let store = Arc::clone(&inner.db);
    if let Err(error) = tokio::task::spawn_blocking(move || store.release_ingestion())
        .await
        .map_err(|e| FlowsError::Internal(e.to_string()))
        .and_then(|released| released)
    {
        tracing::warn!(%error, "cannot release the flows ingestion lead");
    }
    syncs.close();
}

/// How long to sleep: until the next wake-up by the clock, at most the poll interval.
async fn until_next_wake(inner: &Arc<Inner>) -> Duration {
    let poll = inner.config.poll_interval;
    let next = crate::engine::on_store(inner, |store| store.next_wake())
        .await
        .ok()
        .flatten();
    match next {
        Some(us) => {
            let now = inner.clock.now().as_microsecond();
            let wait = Duration::from_micros(us.saturating_sub(now).max(0) as u64);
            wait.min(poll)
        }
        None => poll,
    }
}

async fn pass(inner: &Arc<Inner>) -> FlowsResult<Pass> {
    if let Some(since) = &inner.shared_since {
        let stale = {
            let mut since = since.lock().expect("refresh lock");
            let stale = since.elapsed() >= inner.config.poll_interval;
            if stale {
                *since = std::time::Instant::now();
            }
            stale
        };
        if stale {
            crate::engine::reload_cache(inner).await?;
        }
    }
    let this = Arc::clone(inner);
    let ingested = tokio::task::spawn_blocking(move || {
        // With several engines on one store, one turns the feed into runs; all move due runs.
        if !this.db.lead_ingestion()? {
            return Ok(0);
        }
        let mut n = ingest_feed(&this)?;
        n += ingest_segments(&this)?;
        n += ingest_dates(&this)?;
        Ok::<_, FlowsError>(n)
    })
    .await
    .map_err(|e| FlowsError::Internal(e.to_string()))??;
    let moved = move_due_runs(inner).await?;
    Ok(match moved {
        Moved::Crashed => Pass::Crashed,
        Moved::Count(n) if n + ingested > 0 => Pass::Busy,
        Moved::Count(_) => Pass::Idle,
    })
}

fn cache(inner: &Inner) -> Arc<FlowCache> {
    Arc::clone(&inner.cache.read().expect("cache lock"))
}

// Entries.

/// A profile that may enter a flow.
struct Candidate {
    flow: Arc<CachedFlow>,
    profile_pk: i64,
    origin: String,
    event_id: Option<String>,
    properties: String,
    started_us: i64,
}

/// Checks the profile filter and `profile-not-in-flow` (before the transaction, facts may be
/// slow) and, in `tx`, re-entry; inserts the runs that pass. Returns how many started.
fn admit(
    inner: &Inner,
    reader: &dyn EngageReader,
    tx: &dyn FlowWriter,
    candidates: Vec<Candidate>,
    now: Timestamp,
) -> FlowsResult<usize> {
    let now_us = now.as_microsecond();
    let mut started = 0;
    for c in candidates {
        let flow_id = c.flow.id.as_str();
        let last = tx.last_entry(flow_id, c.profile_pk)?;
        let reentry_ok = match (c.flow.definition.reentry, last) {
            (_, None) | (Reentry::Always, _) => true,
            (Reentry::Once, Some(_)) => false,
            (Reentry::After(d), Some(last)) => now_us - last >= d.as_micros() as i64,
        };
        if !reentry_ok {
            tx.bump(flow_id, "", "skipped_entry:reentry", 1, 0.0)?;
            continue;
        }
        if let Some(filter) = &c.flow.definition.profile_filter {
            if let (Some(Some(window)), Some(last)) = (filter.not_in_flow, last) {
                if now_us - last < window.as_micros() as i64 {
                    tx.bump(flow_id, "", "skipped_entry:not_in_flow", 1, 0.0)?;
                    continue;
                }
            } else if let (Some(None), Some(_)) = (filter.not_in_flow, last) {
                tx.bump(flow_id, "", "skipped_entry:not_in_flow", 1, 0.0)?;
                continue;
            }
            if let Some(conditions) = &filter.conditions {
                let facts = match inner.deps.facts.load(ProfileKey(c.profile_pk), now) {
                    Ok(facts) => facts,
                    Err(error) => {
                        tracing::warn!(%error, flow_id, "profile facts unavailable at entry");
                        tx.bump(flow_id, "", "skipped_entry:error", 1, 0.0)?;
                        continue;
                    }
                };
                let ctx = EvalContext::flow(crate::engine::ts(c.started_us));
                if !conditions.matches(facts.as_ref(), now, &ctx) {
                    tx.bump(flow_id, "", "skipped_entry:filter", 1, 0.0)?;
                    continue;
                }
            }
        }
        let Some(profile_id) = reader.profile_id(ProfileKey(c.profile_pk))? else {
            continue;
        };
        let inserted = tx.insert_run(&NewRun {
            flow_id,
            profile_pk: c.profile_pk,
            profile_id: profile_id.as_str(),
            origin: c.origin,
            trigger_event_id: c.event_id.as_deref(),
            trigger_properties: &c.properties,
            started_us: c.started_us,
            entry_action: &c.flow.definition.entry_action_id,
            wake_us: now_us,
            entered_us: inner.clock.now().as_microsecond(),
        })?;
        if inserted.is_some() {
            tx.bump(flow_id, "", "entered", 1, 0.0)?;
            started += 1;
        }
    }
    Ok(started)
}

fn with_reader<T>(
    inner: &Inner,
    f: impl FnOnce(&dyn EngageReader) -> FlowsResult<T>,
) -> FlowsResult<T> {
    let mut reader = inner.reader.lock().expect("reader lock");
    if reader.is_none() {
        *reader = Some(inner.engage.reader()?);
    }
    f(reader.as_deref().expect("opened"))
}

/// Every change engage applied up to log entry `seq` has been through the flows' triggers
/// (`/metrics`: how far behind engage the flows are).
fn followed(seq: i64) {
    metrics::gauge!("signalbox_flows_followed_seq").set(seq as f64);
}

/// One batch of engage's change feed: metric and list triggers, engagement statistics,
/// merges, date-trigger schedules. The cursor commits with what it caused.
fn ingest_feed(inner: &Inner) -> FlowsResult<usize> {
    let upto = inner.engage.applied_seq();
    let cursor = inner.db.feed_cursor()?.unwrap_or_default();
    let limit = inner.config.batch_size.max(1);
    with_reader(inner, |reader| {
        let changes = reader.changes(&cursor, upto, limit)?;
        if changes.cursor == cursor {
            followed(upto);
            return Ok(0);
        }
        let now = inner.clock.now();
        let cache = cache(inner);
        let candidates = feed_candidates(&cache, &changes);
        let schedules = date_schedules(inner, &cache, &changes.profiles, now)?;
        let rows = changes.events.len() + changes.lists.len() + changes.profiles.len();
        write(inner, |tx| {
            for merge in &changes.merges {
                let to_id = reader.profile_id(merge.to_pk)?;
                tx.apply_merge(
                    merge.from_pk.0,
                    merge.to_pk.0,
                    to_id.as_ref().map(|id| id.as_str()),
                )?;
            }
            for event in &changes.events {
                engagement(tx, event)?;
            }
            for (flow_id, pk, next) in &schedules {
                tx.set_date_schedule(flow_id, *pk, *next)?;
            }
            admit(inner, reader, tx, candidates, now)?;
            tx.set_feed_cursor(&changes.cursor)?;
            Ok(())
        })?;
        if !changes.more {
            followed(upto);
        }
        Ok(rows.max(1))
    })
}

fn feed_candidates(cache: &FlowCache, changes: &Changes) -> Vec<Candidate> {
    let mut out = Vec::new();
    for event in &changes.events {
        let Some(flows) = cache.by_metric.get(event.metric_id.as_str()) else {
            continue;
        };
        let properties: Map<String, Value> =
            serde_json::from_str(&event.properties).unwrap_or_default();
        for flow in flows {
            if !flow.status.is_running() {
                continue;
            }
            if let Trigger::Metric {
                filter: Some(filter),
                ..
            } = &flow.definition.trigger
            {
                if !filter.matches(&properties) {
                    continue;
                }
            }
            out.push(Candidate {
                flow: Arc::clone(flow),
                profile_pk: event.profile_pk.0,
                origin: format!("event:{}", event.id),
                event_id: Some(event.id.to_string()),
                properties: event.properties.clone(),
                started_us: event.time_us,
            });
        }
    }
    for change in &changes.lists {
        if !matches!(change.change.as_str(), "added" | "confirmed") {
            continue;
        }
        let Some(flows) = cache.by_list.get(&change.list_id) else {
            continue;
        };
        for flow in flows.iter().filter(|f| f.status.is_running()) {
            out.push(Candidate {
                flow: Arc::clone(flow),
                profile_pk: change.profile_pk.0,
                origin: format!("list:{}", change.pk),
                event_id: None,
                properties: "{}".into(),
                started_us: change.at_us,
            });
        }
    }
    out
}

/// Opens, clicks and conversions of flow emails.
fn engagement(tx: &dyn FlowWriter, event: &feed::FeedEvent) -> FlowsResult<()> {
    let column = match event.metric_name.as_str() {
        "Opened Email" => "opened",
        "Clicked Email" => "clicked",
        name if CONVERSION_METRICS.contains(&name) => "converted",
        _ => return Ok(()),
    };
    let properties: Map<String, Value> =
        serde_json::from_str(&event.properties).unwrap_or_default();
    let named = ["$message_id", "message_id", "$message", "Message ID"]
        .iter()
        .find_map(|k| properties.get(*k).and_then(Value::as_str));
    let send = match named {
        Some(key) => tx.send_by_key(key)?,
        None => None,
    };
    let send = match send {
        Some(send) => Some(send),
        None => tx.latest_send(
            event.profile_pk.0,
            event.time_us - CONVERSION_WINDOW.as_micros() as i64,
            event.time_us,
        )?,
    };
    let Some(send) = send else {
        return Ok(());
    };
    let already = match column {
        "opened" => send.opened,
        "clicked" => send.clicked,
        _ => send.converted,
    };
    if already {
        return Ok(());
    }
    let revenue = if column == "converted" {
        event
            .value
            .or_else(|| properties.get("$value").and_then(Value::as_f64))
            .unwrap_or(0.0)
    } else {
        0.0
    };
    tx.mark_send(&send.key, column, event.time_us, Some(revenue))?;
    tx.bump(&send.flow_id, &send.action_id, column, 1, revenue)?;
    tx.bump(&send.flow_id, "", column, 1, revenue)?;
    Ok(())
}

/// For each changed profile and date-triggered flow: the next trigger instant (or none).
fn date_schedules(
    inner: &Inner,
    cache: &FlowCache,
    profiles: &[ProfileKey],
    now: Timestamp,
) -> FlowsResult<Vec<(String, i64, Option<i64>)>> {
    let mut out = Vec::new();
    let flows: Vec<_> = cache
        .date_flows
        .iter()
        .filter(|f| f.status.is_running())
        .collect();
    if flows.is_empty() {
        return Ok(out);
    }
    for pk in profiles {
        let Ok(facts) = inner.deps.facts.load(*pk, now) else {
            continue;
        };
        for flow in &flows {
            let next = next_date_for(inner, flow, facts.as_ref(), now);
            out.push((flow.id.clone(), pk.0, next));
        }
    }
    Ok(out)
}

fn next_date_for(
    inner: &Inner,
    flow: &CachedFlow,
    facts: &dyn ProfileFacts,
    after: Timestamp,
) -> Option<i64> {
    let Trigger::Date(trigger) = &flow.definition.trigger else {
        return None;
    };
    let path = PropertyPath::from_wire(&trigger.property)
        .unwrap_or_else(|| PropertyPath::Custom(trigger.property.clone()));
    let date = schedule::date_of(facts.property(&path)?)?;
    let tz = schedule::resolve_timezone(
        &trigger.timezone,
        profile_timezone(facts).as_deref(),
        &inner.config.account_timezone,
    );
    schedule::next_date_trigger(trigger, date, after, &tz).map(|t| t.as_microsecond())
}

pub(crate) fn profile_timezone(facts: &dyn ProfileFacts) -> Option<String> {
    let path = PropertyPath::from_wire("location['timezone']")?;
    facts.property(&path)?.as_str().map(str::to_owned)
}

/// Segment entries for segment-triggered flows, after the cursor kept in `meta`.
fn ingest_segments(inner: &Inner) -> FlowsResult<usize> {
    let Some(membership) = &inner.deps.membership else {
        return Ok(0);
    };
    let cache = cache(inner);
    if cache.by_segment.is_empty() {
        return Ok(0);
    }
    let cursor = inner.db.membership_cursor()?;
    let entries = membership.entered_after(cursor, inner.config.batch_size.max(1))?;
    let Some(last) = entries.last().map(|e| e.cursor) else {
        return Ok(0);
    };
    let now = inner.clock.now();
    let mut candidates = Vec::new();
    for entry in entries.iter().filter(|e| e.entered) {
        let Some(flows) = cache.by_segment.get(&entry.segment_id) else {
            continue;
        };
        for flow in flows.iter().filter(|f| f.status.is_running()) {
            candidates.push(Candidate {
                flow: Arc::clone(flow),
                profile_pk: entry.profile_pk.0,
                origin: format!("segment:{}", entry.cursor),
                event_id: None,
                properties: "{}".into(),
                started_us: entry.at_us,
            });
        }
    }
    with_reader(inner, |reader| {
        write(inner, |tx| {
            admit(inner, reader, tx, candidates, now)?;
            tx.set_meta("membership_cursor", &last.to_string())
        })
    })?;
    Ok(entries.len())
}

/// Profile keys read per page when a new date flow schedules every profile.
const PROFILE_PAGE: usize = 10_000;

/// Date triggers that are due, and the backfill of schedules for date flows not seen yet.
fn ingest_dates(inner: &Inner) -> FlowsResult<usize> {
    let cache = cache(inner);
    if cache.date_flows.is_empty() {
        return Ok(0);
    }
    let now = inner.clock.now();
    let now_us = now.as_microsecond();
    // A new date flow: schedule every profile once.
    for flow in cache.date_flows.iter().filter(|f| f.status.is_running()) {
        let key = format!("date_backfill:{}", flow.id);
        if inner.db.meta(&key)?.is_some() {
            continue;
        }
        let pks: Vec<i64> = with_reader(inner, |reader| {
            let mut pks = Vec::new();
            let mut after = ProfileKey(0);
            loop {
                let page = reader.profile_keys(after, PROFILE_PAGE)?;
                pks.extend(page.iter().map(|key| key.0));
                match page.last() {
                    Some(last) if page.len() == PROFILE_PAGE => after = *last,
                    _ => return Ok(pks),
                }
            }
        })?;
        let mut rows = Vec::new();
        for pk in pks {
            let Ok(facts) = inner.deps.facts.load(ProfileKey(pk), now) else {
                continue;
            };
            if let Some(next) = next_date_for(inner, flow, facts.as_ref(), now) {
                rows.push((pk, next));
            }
        }
        write(inner, |tx| {
            for (pk, next) in &rows {
                tx.set_date_schedule(&flow.id, *pk, Some(*next))?;
            }
            tx.set_meta(&key, "1")
        })?;
    }
    let due = inner.db.due_dates(now_us, inner.config.batch_size)?;
    if due.is_empty() {
        return Ok(0);
    }
    let mut candidates = Vec::new();
    let mut reschedule = Vec::new();
    for (flow_id, pk, at_us) in &due {
        let Some(flow) = cache.flows.get(flow_id) else {
            reschedule.push((flow_id.clone(), *pk, None));
            continue;
        };
        let next = match inner.deps.facts.load(ProfileKey(*pk), now) {
            Ok(facts) => next_date_for(inner, flow, facts.as_ref(), crate::engine::ts(*at_us)),
            Err(_) => None,
        };
        reschedule.push((flow_id.clone(), *pk, next));
        if flow.status.is_running() {
            candidates.push(Candidate {
                flow: Arc::clone(flow),
                profile_pk: *pk,
                origin: format!("date:{pk}:{at_us}"),
                event_id: None,
                properties: "{}".into(),
                started_us: *at_us,
            });
        }
    }
    with_reader(inner, |reader| {
        write(inner, |tx| {
            for (flow_id, pk, next) in &reschedule {
                tx.reschedule_date(flow_id, *pk, *next)?;
            }
            admit(inner, reader, tx, candidates, now)
        })
    })?;
    Ok(due.len())
}

// Moving runs.

enum Moved {
    Count(usize),
    Crashed,
}

async fn move_due_runs(inner: &Arc<Inner>) -> FlowsResult<Moved> {
    let now = inner.clock.now();
    let this = Arc::clone(inner);
    let (count, effects) = tokio::task::spawn_blocking(move || plan(&this, now))
        .await
        .map_err(|e| FlowsError::Internal(e.to_string()))??;
    if count == 0 {
        return Ok(Moved::Count(0));
    }
    if effects.is_empty() {
        return Ok(Moved::Count(count));
    }
    if inner.config.fault == Some(Fault::AfterIntent) {
        return Ok(Moved::Crashed);
    }
    let outcomes = actions::execute_all(inner, effects, now).await;
    if inner.config.fault == Some(Fault::BeforeDone) {
        return Ok(Moved::Crashed);
    }
    let this = Arc::clone(inner);
    let now = inner.clock.now();
    tokio::task::spawn_blocking(move || record(&this, outcomes, now))
        .await
        .map_err(|e| FlowsError::Internal(e.to_string()))??;
    Ok(Moved::Count(count))
}

/// Per run and pass: the profile's facts, loaded on first use.
struct RunFacts<'a> {
    inner: &'a Inner,
    pk: i64,
    now: Timestamp,
    facts: Option<Box<dyn ProfileFacts + Send>>,
}

impl RunFacts<'_> {
    fn get(&mut self) -> FlowsResult<&dyn ProfileFacts> {
        if self.facts.is_none() {
            self.facts = Some(self.inner.deps.facts.load(ProfileKey(self.pk), self.now)?);
        }
        Ok(self.facts.as_deref().expect("loaded"))
    }
}

/// How long a run whose step failed unexpectedly waits before it tries again.
const RUN_RETRY: SignedDuration = SignedDuration::from_secs(30);

/// The longest walk through pure actions (delays that elapsed, splits, skips) in one pass.
const MAX_STEPS_PER_PASS: usize = 256;

fn plan(inner: &Inner, now: Timestamp) -> FlowsResult<(usize, Vec<Effect>)> {
    let now_us = now.as_microsecond();
    // Nothing due: no transaction.
    if inner.db.next_wake()?.is_none_or(|us| us > now_us) {
        return Ok((0, Vec::new()));
    }
    let cache = cache(inner);
    let (count, effects) = write(inner, |tx| {
        let runs = tx.claim_due(now_us, inner.config.batch_size.max(1))?;
        let count = runs.len();
        let mut effects = Vec::new();
        for run in runs {
            // One run's failure (its facts cannot be read …) must not hold up the others:
            // its changes roll back and it tries again later.
            tx.savepoint()?;
            let (run_id, flow_id) = (run.id, run.flow_id.clone());
            match plan_run(inner, tx, &cache, run, now) {
                Ok(effect) => {
                    tx.release_savepoint()?;
                    effects.extend(effect);
                }
                Err(error) => {
                    tx.rollback_to_savepoint()?;
                    tracing::warn!(%error, run_id, flow_id, "a flow run failed; retrying later");
                    let later = now_us + RUN_RETRY.as_micros() as i64;
                    tx.delay_run(run_id, later)?;
                    tx.bump(&flow_id, "", "errors", 1, 0.0)?;
                }
            }
        }
        Ok((count, effects))
    })?;
    Ok((count, effects))
}

fn finish(
    tx: &dyn FlowWriter,
    run: &RunRow,
    status: RunStatus,
    reason: Option<RunExit>,
    now_us: i64,
) -> FlowsResult<()> {
    tx.end_run(run.id, status, reason, now_us)?;
    let name = match (status, reason) {
        (RunStatus::Completed, _) => "completed".to_owned(),
        (_, Some(RunExit::Filter)) => "exited_filter".to_owned(),
        (_, Some(reason)) => format!("exited:{}", reason.as_str()),
        (other, None) => other.as_str().to_owned(),
    };
    tx.bump(&run.flow_id, "", &name, 1, 0.0)
}

fn plan_run(
    inner: &Inner,
    tx: &dyn FlowWriter,
    cache: &FlowCache,
    run: RunRow,
    now: Timestamp,
) -> FlowsResult<Option<Effect>> {
    let now_us = now.as_microsecond();
    let Some(flow) = cache.flows.get(&run.flow_id) else {
        finish(
            tx,
            &run,
            RunStatus::Cancelled,
            Some(RunExit::FlowDeleted),
            now_us,
        )?;
        return Ok(None);
    };
    if !flow.status.is_running() {
        tx.hold_run(run.id)?;
        return Ok(None);
    }
    let mut facts = RunFacts {
        inner,
        pk: run.profile_pk,
        now,
        facts: None,
    };
    let ctx = EvalContext::flow(crate::engine::ts(run.started_us));
    let mut position = run.position.clone();
    let mut armed = run.armed.clone();
    let mut filter_checked = false;
    for _ in 0..MAX_STEPS_PER_PASS {
        let Some(pos) = position.clone() else {
            finish(tx, &run, RunStatus::Completed, None, now_us)?;
            return Ok(None);
        };
        let Some(action) = flow.definition.action(&pos) else {
            finish(
                tx,
                &run,
                RunStatus::Exited,
                Some(RunExit::ActionRemoved),
                now_us,
            )?;
            return Ok(None);
        };
        // The profile filter, before every action (once per pass: facts do not change
        // within one).
        if !filter_checked {
            filter_checked = true;
            if let Some(conditions) = flow
                .definition
                .profile_filter
                .as_ref()
                .and_then(|f| f.conditions.as_ref())
            {
                if !conditions.matches(facts.get()?, now, &ctx) {
                    tx.bump(&run.flow_id, &pos, "exited_filter", 1, 0.0)?;
                    finish(tx, &run, RunStatus::Exited, Some(RunExit::Filter), now_us)?;
                    return Ok(None);
                }
            }
        }
        match &action.kind {
            ActionKind::TimeDelay(delay) => {
                if armed.as_deref() == Some(pos.as_str()) {
                    armed = None;
                    position = action.next.clone();
                    continue;
                }
                let profile_tz = match delay.timezone {
                    crate::definition::TimezoneChoice::Profile => profile_timezone(facts.get()?),
                    _ => None,
                };
                let tz = schedule::resolve_timezone(
                    &delay.timezone,
                    profile_tz.as_deref(),
                    &inner.config.account_timezone,
                );
                let due = schedule::delay_until(now, delay, &tz);
                if due <= now {
                    position = action.next.clone();
                    continue;
                }
                tx.move_run(run.id, Some(&pos), Some(&pos), Some(due.as_microsecond()))?;
                return Ok(None);
            }
            ActionKind::ConditionalSplit {
                filter,
                next_if_true,
                next_if_false,
            } => {
                let mut matched = true;
                if let Some(conditions) = &filter.conditions {
                    matched = conditions.matches(facts.get()?, now, &ctx);
                }
                if let (true, Some(window)) = (matched, filter.not_in_flow) {
                    let last = tx.last_entry(&run.flow_id, run.profile_pk)?;
                    // The run's own entry does not count.
                    matched = match (last, window) {
                        (Some(last), Some(w)) => {
                            last == run.started_us || now_us - last >= w.as_micros() as i64
                        }
                        (Some(last), None) => last == run.started_us,
                        (None, _) => true,
                    };
                }
                let name = if matched { "split_true" } else { "split_false" };
                tx.bump(&run.flow_id, &pos, name, 1, 0.0)?;
                position = if matched {
                    next_if_true.clone()
                } else {
                    next_if_false.clone()
                };
            }
            ActionKind::TriggerSplit {
                filter,
                next_if_true,
                next_if_false,
            } => {
                let matched = filter.matches(&run.trigger_properties);
                let name = if matched { "split_true" } else { "split_false" };
                tx.bump(&run.flow_id, &pos, name, 1, 0.0)?;
                position = if matched {
                    next_if_true.clone()
                } else {
                    next_if_false.clone()
                };
            }
            ActionKind::SendEmail(_)
            | ActionKind::SendWebhook(_)
            | ActionKind::UpdateProfile(_)
            | ActionKind::ListUpdate(_) => {
                let key = actions::step_key(run.id, &pos);
                match tx.step(&key)? {
                    Some(step) if step.state == StepState::Held => {
                        match review(inner, tx, &run, flow, action, &key, &mut facts, now)? {
                            Review::Wait => return Ok(None),
                            Review::MoveOn => {
                                position = action.next.clone();
                                continue;
                            }
                            Review::Send => {
                                tx.release_step(&key)?;
                                return Ok(Some(start_effect(
                                    inner, tx, &run, flow, action, key, &mut facts, now,
                                )?));
                            }
                        }
                    }
                    Some(step) if step.state != StepState::Intent => {
                        position = action.next.clone();
                        continue;
                    }
                    Some(step) => {
                        // An intent left by a crash or a retry: carry it out again.
                        tx.move_run(run.id, Some(&pos), None, Some(now_us))?;
                        return Ok(Some(effect(
                            inner,
                            &run,
                            flow,
                            action,
                            key,
                            step.attempts,
                            tx,
                        )?));
                    }
                    None => {}
                }
                let decision = decide(inner, tx, &run, flow, action, &mut facts, now, false)?;
                if let Decision::Hold = decision {
                    hold(inner, tx, &run, action, &key, &mut facts, now)?;
                    return Ok(None);
                }
                if let Decision::Skip(skip) = decision {
                    tx.insert_step(&NewStep {
                        key: &key,
                        run_id: run.id,
                        flow_id: &run.flow_id,
                        action_id: &pos,
                        kind: action.kind.type_name(),
                        state: StepState::Skipped,
                        detail: Some(skip),
                        now_us,
                    })?;
                    tx.bump(&run.flow_id, &pos, &format!("skipped:{skip}"), 1, 0.0)?;
                    tx.bump(&run.flow_id, "", &format!("skipped:{skip}"), 1, 0.0)?;
                    position = action.next.clone();
                    continue;
                }
                tx.insert_step(&NewStep {
                    key: &key,
                    run_id: run.id,
                    flow_id: &run.flow_id,
                    action_id: &pos,
                    kind: action.kind.type_name(),
                    state: StepState::Intent,
                    detail: None,
                    now_us,
                })?;
                return Ok(Some(start_effect(
                    inner, tx, &run, flow, action, key, &mut facts, now,
                )?));
            }
        }
    }
    // A long walk: continue in the next pass.
    tx.move_run(run.id, position.as_deref(), armed.as_deref(), Some(now_us))?;
    Ok(None)
}

/// Records what an intent sends (the send, the webhook delivery) and points the run at it.
#[allow(clippy::too_many_arguments)]
fn start_effect(
    inner: &Inner,
    tx: &dyn FlowWriter,
    run: &RunRow,
    flow: &CachedFlow,
    action: &crate::definition::Action,
    key: String,
    facts: &mut RunFacts<'_>,
    now: Timestamp,
) -> FlowsResult<Effect> {
    let now_us = now.as_microsecond();
    let pos = action.id.as_str();
    if let ActionKind::SendEmail(_) = &action.kind {
        let email = email_of(facts.get()?).unwrap_or_default();
        tx.insert_send(&NewSend {
            key: &key,
            flow_id: &run.flow_id,
            action_id: pos,
            run_id: run.id,
            profile_pk: run.profile_pk,
            email: &email,
            now_us,
        })?;
    }
    if let ActionKind::SendWebhook(w) = &action.kind {
        tx.upsert_webhook(&key, &run.flow_id, pos, run.id, &w.url, now_us)?;
    }
    tx.move_run(run.id, Some(pos), None, Some(now_us))?;
    effect(inner, run, flow, action, key, 0, tx)
}

/// What a run waiting on a held message does in this pass.
enum Review {
    /// Still pending: wait (until it is released or expires).
    Wait,
    /// Skipped, expired or refused at release: go on to the next action.
    MoveOn,
    /// Approved and still allowed: send it.
    Send,
}

/// Holds a message for review: a `held` step, a pending [`crate::HeldMessage`], and the run
/// waiting on it until its expiry.
fn hold(
    inner: &Inner,
    tx: &dyn FlowWriter,
    run: &RunRow,
    action: &crate::definition::Action,
    key: &str,
    facts: &mut RunFacts<'_>,
    now: Timestamp,
) -> FlowsResult<()> {
    let now_us = now.as_microsecond();
    let expires_us = now_us.saturating_add(
        i64::try_from(inner.config.manual_review_expiry.as_micros()).unwrap_or(i64::MAX),
    );
    let email = email_of(facts.get()?);
    let subject = match &action.kind {
        ActionKind::SendEmail(e) => Some(e.subject.as_str()),
        _ => None,
    };
    tx.insert_step(&NewStep {
        key,
        run_id: run.id,
        flow_id: &run.flow_id,
        action_id: &action.id,
        kind: action.kind.type_name(),
        state: StepState::Held,
        detail: None,
        now_us,
    })?;
    tx.insert_held(&NewHeld {
        key,
        flow_id: &run.flow_id,
        action_id: &action.id,
        kind: action.kind.type_name(),
        run_id: run.id,
        profile_pk: run.profile_pk,
        profile_id: &run.profile_id,
        email: email.as_deref(),
        subject,
        now_us,
        expires_us,
    })?;
    tx.bump(&run.flow_id, &action.id, "held", 1, 0.0)?;
    tx.bump(&run.flow_id, "", "held", 1, 0.0)?;
    tx.move_run(run.id, Some(&action.id), None, Some(expires_us))?;
    Ok(())
}

/// A run at a held message: wait, expire it, or (approved) check it again and send it.
#[allow(clippy::too_many_arguments)]
fn review(
    inner: &Inner,
    tx: &dyn FlowWriter,
    run: &RunRow,
    flow: &CachedFlow,
    action: &crate::definition::Action,
    key: &str,
    facts: &mut RunFacts<'_>,
    now: Timestamp,
) -> FlowsResult<Review> {
    let now_us = now.as_microsecond();
    let Some(held) = tx.held_by_key(key)? else {
        return Err(FlowsError::Internal(format!(
            "step {key} is held but no held message records it"
        )));
    };
    let skip = |reason: &str| -> FlowsResult<()> {
        tx.finish_step(key, StepState::Skipped, Some(reason), now_us)?;
        let stat = format!("skipped:{reason}");
        tx.bump(&run.flow_id, &action.id, &stat, 1, 0.0)?;
        tx.bump(&run.flow_id, "", &stat, 1, 0.0)
    };
    match held.status {
        HeldStatus::Pending if now < held.expires => {
            tx.move_run(
                run.id,
                Some(&action.id),
                None,
                Some(held.expires.as_microsecond()),
            )?;
            Ok(Review::Wait)
        }
        HeldStatus::Pending => {
            tx.set_held_status(held.id, HeldStatus::Expired, now_us)?;
            skip("expired")?;
            Ok(Review::MoveOn)
        }
        HeldStatus::Approved => {
            // Consent, suppressions, smart sending … may have changed while it waited.
            match decide(inner, tx, run, flow, action, facts, now, true)? {
                // A reviewed message is never held again.
                Decision::Send | Decision::Hold => Ok(Review::Send),
                Decision::Skip(reason) => {
                    skip(reason)?;
                    Ok(Review::MoveOn)
                }
            }
        }
        HeldStatus::Skipped | HeldStatus::Expired | HeldStatus::Cancelled => {
            // The step was finished with the status; a stale `held` step only moves on.
            Ok(Review::MoveOn)
        }
    }
}

pub(crate) fn email_of(facts: &dyn ProfileFacts) -> Option<String> {
    let path = PropertyPath::from_wire("email")?;
    facts
        .property(&path)?
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// What happens to a side effect.
enum Decision {
    Send,
    /// Skipped, counted as `skipped:<reason>`.
    Skip(&'static str),
    /// A message of a `manual` action or flow that would be sent: held for review.
    Hold,
}

/// Whether a side effect runs, is skipped (and why) or is held for review. `reviewed`: a
/// person released it, so the manual status no longer holds it.
#[allow(clippy::too_many_arguments)]
fn decide(
    inner: &Inner,
    tx: &dyn FlowWriter,
    run: &RunRow,
    flow: &CachedFlow,
    action: &crate::definition::Action,
    facts: &mut RunFacts<'_>,
    now: Timestamp,
    reviewed: bool,
) -> FlowsResult<Decision> {
    let status = match &action.kind {
        ActionKind::SendEmail(e) => Some(e.status),
        ActionKind::SendWebhook(w) => Some(w.status),
        _ => None,
    };
    let status = status.map(|s| flow.message_status(s));
    if status == Some(MessageStatus::Draft) {
        return Ok(Decision::Skip("draft"));
    }
    // Checked last: a message that would be skipped anyway is not put before a reviewer.
    let held = status == Some(MessageStatus::Manual) && !reviewed;
    let decision = match why_skip(inner, tx, run, flow, action, facts, now)? {
        Some(reason) => Decision::Skip(reason),
        None if held => Decision::Hold,
        None => Decision::Send,
    };
    Ok(decision)
}

/// Why a side effect is skipped, if it is.
fn why_skip(
    inner: &Inner,
    tx: &dyn FlowWriter,
    run: &RunRow,
    flow: &CachedFlow,
    action: &crate::definition::Action,
    facts: &mut RunFacts<'_>,
    now: Timestamp,
) -> FlowsResult<Option<&'static str>> {
    let ActionKind::SendEmail(email) = &action.kind else {
        return Ok(None);
    };
    if inner.config.mail.is_none() {
        return Ok(Some("no_mailer"));
    }
    let facts = facts.get()?;
    if email_of(facts).is_none() {
        return Ok(Some("no_email"));
    }
    let consent = facts.email_consent();
    let hard = consent.suppressions.iter().any(|s| {
        matches!(
            s.reason,
            signalbox_seglang::SuppressionReason::HardBounce
                | signalbox_seglang::SuppressionReason::InvalidEmail
                | signalbox_seglang::SuppressionReason::SpamComplaint
        )
    });
    if hard {
        return Ok(Some("suppressed"));
    }
    if !email.transactional {
        if consent.status == ConsentStatus::Unsubscribed {
            return Ok(Some("consent"));
        }
        if !consent.can_receive_marketing || !consent.suppressions.is_empty() {
            return Ok(Some("suppressed"));
        }
    }
    if let Trigger::Segment { segment_id } = &flow.definition.trigger {
        if let Some(membership) = &inner.deps.membership {
            if !membership.is_member(segment_id, ProfileKey(run.profile_pk))? {
                return Ok(Some("not_in_segment"));
            }
        }
    }
    if email.smart_sending && !email.transactional {
        let since = now.as_microsecond() - email.smart_sending_window.as_micros() as i64;
        if tx.emailed_since(run.profile_pk, since)? {
            return Ok(Some("smart_sending"));
        }
    }
    Ok(None)
}

fn effect(
    _inner: &Inner,
    run: &RunRow,
    flow: &CachedFlow,
    action: &crate::definition::Action,
    key: String,
    attempts: i64,
    tx: &dyn FlowWriter,
) -> FlowsResult<Effect> {
    let email = tx.send_email(&key).ok().flatten();
    Ok(Effect {
        key,
        run_id: run.id,
        flow_id: flow.id.clone(),
        flow_name: flow.name.clone(),
        action: action.clone(),
        profile_id: run.profile_id.clone(),
        trigger_event_id: run.trigger_event_id.clone(),
        trigger_properties: run.trigger_properties.clone(),
        email,
        attempts,
    })
}

/// Commits the outcomes of one batch and moves the runs on.
fn record(inner: &Inner, outcomes: Vec<(Effect, Outcome)>, now: Timestamp) -> FlowsResult<()> {
    let now_us = now.as_microsecond();
    let cache = cache(inner);
    write(inner, |tx| {
        let mut counts: HashMap<(String, String, &'static str), i64> = HashMap::new();
        for (effect, outcome) in outcomes {
            let action_id = effect.action.id.clone();
            match outcome {
                Outcome::Done {
                    stat,
                    detail,
                    message_id,
                    subject,
                } => {
                    tx.finish_step(&effect.key, StepState::Done, detail.as_deref(), now_us)?;
                    if matches!(effect.action.kind, ActionKind::SendEmail(_)) {
                        tx.finish_send(
                            &effect.key,
                            SendStatus::Sent,
                            subject.as_deref(),
                            message_id.as_deref(),
                            None,
                            now_us,
                        )?;
                    }
                    if matches!(effect.action.kind, ActionKind::SendWebhook(_)) {
                        tx.webhook_attempt(
                            &effect.key,
                            WebhookState::Delivered,
                            detail.as_deref().and_then(|d| d.parse().ok()),
                            None,
                            None,
                            now_us,
                        )?;
                    }
                    *counts
                        .entry((effect.flow_id.clone(), action_id, stat))
                        .or_default() += 1;
                }
                Outcome::Failed {
                    stat,
                    reason,
                    dead_letter_body,
                    http_status,
                } => {
                    tx.finish_step(&effect.key, StepState::Failed, Some(&reason), now_us)?;
                    if matches!(effect.action.kind, ActionKind::SendEmail(_)) {
                        let status = if stat == "bounced" {
                            SendStatus::Bounced
                        } else {
                            SendStatus::Failed
                        };
                        tx.finish_send(&effect.key, status, None, None, Some(&reason), now_us)?;
                    }
                    if let ActionKind::SendWebhook(w) = &effect.action.kind {
                        let attempts = tx.webhook_attempt(
                            &effect.key,
                            WebhookState::Dead,
                            http_status,
                            Some(&reason),
                            None,
                            now_us,
                        )?;
                        tx.insert_dead_letter(
                            &effect.key,
                            &effect.flow_id,
                            &action_id,
                            effect.run_id,
                            &w.url,
                            dead_letter_body.as_deref().unwrap_or(""),
                            &reason,
                            attempts,
                            now_us,
                        )?;
                    }
                    *counts
                        .entry((effect.flow_id.clone(), action_id, stat))
                        .or_default() += 1;
                }
                Outcome::Retry {
                    at,
                    reason,
                    http_status,
                } => {
                    tx.retry_step(&effect.key, &reason)?;
                    if matches!(effect.action.kind, ActionKind::SendWebhook(_)) {
                        tx.webhook_attempt(
                            &effect.key,
                            WebhookState::Pending,
                            http_status,
                            Some(&reason),
                            Some(at.as_microsecond()),
                            now_us,
                        )?;
                    }
                    tx.move_run(
                        effect.run_id,
                        Some(&effect.action.id),
                        None,
                        Some(at.as_microsecond()),
                    )?;
                    *counts
                        .entry((effect.flow_id.clone(), action_id, "retried"))
                        .or_default() += 1;
                    continue;
                }
            }
            // Move on to the next action, or finish.
            let next = cache
                .flows
                .get(&effect.flow_id)
                .and_then(|f| f.definition.action(&effect.action.id))
                .and_then(|a| a.next.clone());
            match next {
                Some(next) => tx.move_run(effect.run_id, Some(&next), None, Some(now_us))?,
                None => {
                    tx.end_run(effect.run_id, RunStatus::Completed, None, now_us)?;
                    tx.bump(&effect.flow_id, "", "completed", 1, 0.0)?;
                }
            }
        }
        for ((flow_id, action_id, stat), n) in counts {
            tx.bump(&flow_id, &action_id, stat, n, 0.0)?;
            if matches!(
                stat,
                "sent" | "failed" | "bounced" | "delivered" | "dead_lettered"
            ) {
                tx.bump(&flow_id, "", stat, n, 0.0)?;
            }
        }
        Ok(())
    })
}

/// Runs `f` in one transaction of the store, on this thread.
fn write<T>(inner: &Inner, f: impl FnOnce(&dyn FlowWriter) -> FlowsResult<T>) -> FlowsResult<T> {
    let mut f = Some(f);
    let mut out = None;
    inner.db.transaction(&mut |tx| {
        let f = f.take().expect("a transaction runs its closure once");
        out = Some(f(tx)?);
        Ok(())
    })?;
    Ok(out.expect("a committed transaction ran its closure"))
}
