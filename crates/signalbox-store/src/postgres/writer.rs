//! The log's writer on PostgreSQL: one thread per node that takes the queued appends in
//! groups and commits each group in one transaction, with one multi-row statement per table.
//!
//! Each group first takes the row lock of `log_head`, so groups of all nodes commit one after
//! another and hand out sequence numbers in commit order (a reader following `seq` never
//! passes a call that becomes visible later). A failed group answers every request in it with
//! the error and changes nothing; the next group takes a fresh connection, so a database
//! restart costs the requests in flight, which the clients retry, and never an acknowledged
//! call.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use deadpool_postgres::Pool;
use signalbox_core::{NewCall, Rejection, SourceId};
use tokio::sync::{mpsc, oneshot};

use crate::postgres::{pg_error, pool_error};
use crate::{AppendOutcome, GroupCounter, StoreResult};

/// Requests committed together at most.
const MAX_GROUP: usize = 256;

pub(crate) struct AppendJob {
    pub source: SourceId,
    pub calls: Vec<NewCall>,
    pub rejections: Vec<Rejection>,
    pub reply: oneshot::Sender<StoreResult<AppendOutcome>>,
}

pub(crate) struct Writer {
    pub pool: Pool,
    pub window_us: i64,
    pub groups: Arc<GroupCounter>,
}

impl Writer {
    pub(crate) async fn run(self, mut rx: mpsc::Receiver<AppendJob>) {
        let mut jobs = Vec::with_capacity(MAX_GROUP);
        while let Some(first) = rx.recv().await {
            jobs.push(first);
            while jobs.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            let n_calls: usize = jobs.iter().map(|j| j.calls.len()).sum();
            let result = self.commit_group(&jobs).await;
            let elapsed = started.elapsed();
            metrics::histogram!("signalbox_commit_seconds").record(elapsed.as_secs_f64());
            metrics::histogram!("signalbox_commit_group_requests").record(jobs.len() as f64);
            self.groups.add(n_calls, elapsed);
            match result {
                Ok(outcomes) => {
                    for (job, outcome) in jobs.drain(..).zip(outcomes) {
                        let _ = job.reply.send(Ok(outcome));
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, calls = n_calls, "group commit failed");
                    for job in jobs.drain(..) {
                        let _ = job.reply.send(Err(err.clone()));
                    }
                }
            }
        }
        tracing::debug!("writer drained and stopped");
    }

    async fn commit_group(&self, jobs: &[AppendJob]) -> StoreResult<Vec<AppendOutcome>> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let head = tx
            .prepare_cached("SELECT last_seq FROM log_head WHERE id = 1 FOR UPDATE")
            .await
            .map_err(pg_error)?;
        let base: i64 = tx.query_one(&head, &[]).await.map_err(pg_error)?.get(0);

        // The group's distinct (source, messageId) keys, first occurrence first; the database
        // says which of them are new (absent, or stored more than one window before).
        let mut seen = HashSet::new();
        let (mut key_sources, mut key_ids, mut key_times) = (Vec::new(), Vec::new(), Vec::new());
        for job in jobs {
            for call in &job.calls {
                if seen.insert((job.source.0, call.message_id.as_str())) {
                    key_sources.push(job.source.0);
                    key_ids.push(call.message_id.as_str());
                    key_times.push(call.received_at.as_microsecond());
                }
            }
        }
        let mut fresh: HashSet<(i64, String)> = HashSet::new();
        if !key_ids.is_empty() {
            let dedupe = tx
                .prepare_cached(
                    "INSERT INTO message_ids (source_id, message_id, received_at)
                     SELECT * FROM UNNEST($1::int8[], $2::text[], $3::int8[])
                     ON CONFLICT (source_id, message_id) DO UPDATE
                        SET received_at = EXCLUDED.received_at
                        WHERE message_ids.received_at < EXCLUDED.received_at - $4
                     RETURNING source_id, message_id",
                )
                .await
                .map_err(pg_error)?;
            let rows = tx
                .query(
                    &dedupe,
                    &[&key_sources, &key_ids, &key_times, &self.window_us],
                )
                .await
                .map_err(pg_error)?;
            fresh.extend(rows.iter().map(|r| (r.get(0), r.get(1))));
        }

        let mut outcomes = Vec::with_capacity(jobs.len());
        let mut seq = base;
        let mut calls = CallColumns::default();
        let mut rejections = RejectionColumns::default();
        // Per source: calls stored, the last one's seq, rejections.
        let mut totals: BTreeMap<i64, (i64, i64, i64)> = BTreeMap::new();
        let mut taken: HashSet<(i64, &str)> = HashSet::new();
        for job in jobs {
            let mut outcome = AppendOutcome::default();
            for call in &job.calls {
                let key = (job.source.0, call.message_id.clone());
                if !fresh.contains(&key) || !taken.insert((job.source.0, &call.message_id)) {
                    outcome.duplicates += 1;
                    continue;
                }
                seq += 1;
                calls.push(seq, job.source, call);
                outcome.appended += 1;
                outcome.last_seq = seq;
                let total = totals.entry(job.source.0).or_default();
                total.0 += 1;
                total.1 = seq;
            }
            for rejection in &job.rejections {
                rejections.push(job.source, rejection);
                outcome.rejected += 1;
                totals.entry(job.source.0).or_default().2 += 1;
            }
            outcomes.push(outcome);
        }

        if !calls.seq.is_empty() {
            let insert = tx
                .prepare_cached(
                    "INSERT INTO calls (seq, source_id, kind, message_id, received_at, payload)
                     SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::text[],
                                          $5::int8[], $6::text[])",
                )
                .await
                .map_err(pg_error)?;
            tx.execute(
                &insert,
                &[
                    &calls.seq,
                    &calls.source,
                    &calls.kind,
                    &calls.message_id,
                    &calls.received_at,
                    &calls.payload,
                ],
            )
            .await
            .map_err(pg_error)?;
            let advance = tx
                .prepare_cached("UPDATE log_head SET last_seq = $1 WHERE id = 1")
                .await
                .map_err(pg_error)?;
            tx.execute(&advance, &[&seq]).await.map_err(pg_error)?;
        }
        if !rejections.source.is_empty() {
            let insert = tx
                .prepare_cached(
                    "INSERT INTO rejections (source_id, code, message, received_at, payload)
                     SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::int8[],
                                          $5::text[])",
                )
                .await
                .map_err(pg_error)?;
            tx.execute(
                &insert,
                &[
                    &rejections.source,
                    &rejections.code,
                    &rejections.message,
                    &rejections.received_at,
                    &rejections.payload,
                ],
            )
            .await
            .map_err(pg_error)?;
        }
        if !totals.is_empty() {
            let count = tx
                .prepare_cached(
                    "INSERT INTO source_totals (source_id, calls, last_seq, rejections)
                     SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[])
                     ON CONFLICT (source_id) DO UPDATE SET
                        calls = source_totals.calls + EXCLUDED.calls,
                        last_seq = GREATEST(source_totals.last_seq, EXCLUDED.last_seq),
                        rejections = source_totals.rejections + EXCLUDED.rejections",
                )
                .await
                .map_err(pg_error)?;
            let sources: Vec<i64> = totals.keys().copied().collect();
            let n_calls: Vec<i64> = totals.values().map(|t| t.0).collect();
            let last: Vec<i64> = totals.values().map(|t| t.1).collect();
            let n_rejected: Vec<i64> = totals.values().map(|t| t.2).collect();
            tx.execute(&count, &[&sources, &n_calls, &last, &n_rejected])
                .await
                .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(outcomes)
    }
}

/// The calls of a group as columns, for one `UNNEST` insert.
#[derive(Default)]
struct CallColumns<'a> {
    seq: Vec<i64>,
    source: Vec<i64>,
    kind: Vec<&'static str>,
    message_id: Vec<&'a str>,
    received_at: Vec<i64>,
    payload: Vec<&'a str>,
}

impl<'a> CallColumns<'a> {
    fn push(&mut self, seq: i64, source: SourceId, call: &'a NewCall) {
        self.seq.push(seq);
        self.source.push(source.0);
        self.kind.push(call.kind.as_str());
        self.message_id.push(&call.message_id);
        self.received_at.push(call.received_at.as_microsecond());
        self.payload.push(&call.payload);
    }
}

#[derive(Default)]
struct RejectionColumns<'a> {
    source: Vec<i64>,
    code: Vec<&'static str>,
    message: Vec<&'a str>,
    received_at: Vec<i64>,
    payload: Vec<&'a str>,
}

impl<'a> RejectionColumns<'a> {
    fn push(&mut self, source: SourceId, rejection: &'a Rejection) {
        self.source.push(source.0);
        self.code.push(rejection.code.as_str());
        self.message.push(&rejection.message);
        self.received_at
            .push(rejection.received_at.as_microsecond());
        self.payload.push(&rejection.payload);
    }
}
