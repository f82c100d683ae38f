//! The single writer: drains the append queue in group commits.
//!
//! Every request handler enqueues one [`AppendJob`] and waits for its reply; the writer takes
//! whatever is queued (up to [`MAX_GROUP`] jobs), applies them in one `IMMEDIATE` transaction
//! and commits once, so one fsync covers many requests. A reply is sent only after the commit
//! returned, which is what makes "200 means durable" true.

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use rusqlite::{params, Connection, TransactionBehavior};
use signalbox_core::{NewCall, Rejection, SourceId};
use tokio::sync::{mpsc, oneshot};

use crate::{AppendOutcome, StoreError, StoreResult};

/// Jobs applied in one transaction at most.
const MAX_GROUP: usize = 256;
/// Message ids pruned from the dedupe index per pass.
const PRUNE_CHUNK: i64 = 20_000;
/// How often the writer looks for expired dedupe entries when idle or between groups.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

pub(crate) struct AppendJob {
    pub source: SourceId,
    pub calls: Vec<NewCall>,
    pub rejections: Vec<Rejection>,
    pub reply: oneshot::Sender<StoreResult<AppendOutcome>>,
}

pub(crate) struct Writer {
    conn: Connection,
    dedupe_window: SignedDuration,
    last_prune: Instant,
}

impl Writer {
    pub(crate) fn new(conn: Connection, dedupe_window: SignedDuration) -> Writer {
        Writer {
            conn,
            dedupe_window,
            last_prune: Instant::now(),
        }
    }

    /// Runs until every sender is dropped, then returns after the last commit.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<AppendJob>) {
        let mut jobs = Vec::with_capacity(MAX_GROUP);
        while let Some(first) = rx.blocking_recv() {
            jobs.push(first);
            while jobs.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            self.commit_group(&mut jobs);
            if self.last_prune.elapsed() >= PRUNE_EVERY {
                self.prune_dedupe();
            }
        }
        tracing::debug!("writer drained and stopped");
    }

    fn commit_group(&mut self, jobs: &mut Vec<AppendJob>) {
        let started = Instant::now();
        let n_calls: usize = jobs.iter().map(|j| j.calls.len()).sum();
        let result = self.apply(jobs);
        let elapsed = started.elapsed();
        metrics::histogram!("signalbox_commit_seconds").record(elapsed.as_secs_f64());
        metrics::histogram!("signalbox_commit_group_requests").record(jobs.len() as f64);
        match result {
            Ok(outcomes) => {
                for (job, outcome) in jobs.drain(..).zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(err) => {
                tracing::error!(error = %err, calls = n_calls, "group commit failed");
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(StoreError::Internal(err.to_string())));
                }
            }
        }
    }

    fn apply(&mut self, jobs: &[AppendJob]) -> rusqlite::Result<Vec<AppendOutcome>> {
        let window_us = self.dedupe_window.as_micros() as i64;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut outcomes = Vec::with_capacity(jobs.len());
        {
            // A message id counts as new when absent, or when its entry is older than the
            // dedupe window (then the entry is refreshed).
            let mut claim = tx.prepare_cached(
                "INSERT INTO message_ids (message_id, received_at) VALUES (?1, ?2)
                 ON CONFLICT (message_id) DO UPDATE SET received_at = excluded.received_at
                 WHERE message_ids.received_at < excluded.received_at - ?3",
            )?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (source_id, kind, message_id, received_at, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut reject = tx.prepare_cached(
                "INSERT INTO rejections (source_id, code, message, received_at, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for job in jobs {
                let mut outcome = AppendOutcome::default();
                for call in &job.calls {
                    let received = call.received_at.as_microsecond();
                    if claim.execute(params![call.message_id, received, window_us])? == 0 {
                        outcome.duplicates += 1;
                        continue;
                    }
                    insert.execute(params![
                        job.source.0,
                        call.kind.as_str(),
                        call.message_id,
                        received,
                        call.payload
                    ])?;
                    outcome.appended += 1;
                    outcome.last_seq = tx.last_insert_rowid();
                }
                for rejection in &job.rejections {
                    reject.execute(params![
                        job.source.0,
                        rejection.code.as_str(),
                        rejection.message,
                        rejection.received_at.as_microsecond(),
                        rejection.payload
                    ])?;
                    outcome.rejected += 1;
                }
                outcomes.push(outcome);
            }
        }
        tx.commit()?;
        Ok(outcomes)
    }

    /// Removes dedupe entries older than the window, walking the log in sequence order from
    /// where the last pass stopped, so that no index on time is needed. The walk stops at the
    /// first call still inside the window: the log is appended in receipt order, so what
    /// follows is (nearly) all newer, and each pass reads at most [`PRUNE_CHUNK`] rows rather
    /// than the whole log.
    fn prune_dedupe(&mut self) {
        self.last_prune = Instant::now();
        let cutoff = Timestamp::now()
            .checked_sub(self.dedupe_window)
            .map(|t| t.as_microsecond())
            .unwrap_or(i64::MIN);
        let result = (|| -> rusqlite::Result<usize> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let from: i64 = tx
                .query_row(
                    "SELECT value FROM meta WHERE key = 'dedupe_pruned_seq'",
                    [],
                    |r| r.get(0),
                )
                .unwrap_or(0);
            let mut upto = from;
            {
                let mut walk = tx.prepare_cached(
                    "SELECT seq, received_at FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )?;
                let mut rows = walk.query(params![from, PRUNE_CHUNK])?;
                while let Some(row) = rows.next()? {
                    let received_at: i64 = row.get(1)?;
                    if received_at >= cutoff {
                        break;
                    }
                    upto = row.get(0)?;
                }
            }
            if upto == from {
                return Ok(0);
            }
            let removed = tx.execute(
                "DELETE FROM message_ids WHERE message_id IN (
                     SELECT message_id FROM events WHERE seq > ?1 AND seq <= ?2)
                 AND received_at < ?3",
                params![from, upto, cutoff],
            )?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('dedupe_pruned_seq', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![upto],
            )?;
            tx.commit()?;
            Ok(removed)
        })();
        match result {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "pruned expired message ids"),
            Err(err) => tracing::warn!(error = %err, "pruning message ids failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use signalbox_core::CallKind;

    use super::*;

    fn writer(window: SignedDuration) -> Writer {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        Writer::new(conn, window)
    }

    fn call(id: &str, received_at: Timestamp) -> NewCall {
        NewCall {
            kind: CallKind::Track,
            message_id: id.into(),
            received_at,
            payload: "{}".into(),
        }
    }

    fn append(writer: &mut Writer, calls: Vec<NewCall>) -> AppendOutcome {
        let (reply, _wait) = oneshot::channel();
        let job = AppendJob {
            source: SourceId(1),
            calls,
            rejections: Vec::new(),
            reply,
        };
        writer.apply(&[job]).unwrap()[0]
    }

    fn count(writer: &Writer, sql: &str) -> i64 {
        writer.conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn prune_forgets_expired_ids_and_stops_at_the_first_call_in_the_window() {
        let mut writer = writer(SignedDuration::from_hours(1));
        let now = Timestamp::now();
        let old = now - SignedDuration::from_hours(2);
        append(
            &mut writer,
            vec![
                call("a", old),
                call("b", old),
                call("c", now),
                call("d", old),
            ],
        );
        writer.prune_dedupe();
        // "d" is expired too, but it comes after "c", which is not: the walk stops at "c".
        assert_eq!(count(&writer, "SELECT COUNT(*) FROM message_ids"), 2);
        assert_eq!(
            count(
                &writer,
                "SELECT value FROM meta WHERE key = 'dedupe_pruned_seq'"
            ),
            2
        );
        // Nothing more to do while "c" is inside the window.
        writer.prune_dedupe();
        assert_eq!(count(&writer, "SELECT COUNT(*) FROM message_ids"), 2);
        let again = append(&mut writer, vec![call("c", now), call("a", now)]);
        assert_eq!((again.appended, again.duplicates), (1, 1));
    }

    #[test]
    fn append_reports_the_seq_of_its_last_call() {
        let mut writer = writer(SignedDuration::from_hours(1));
        let now = Timestamp::now();
        let first = append(&mut writer, vec![call("a", now), call("b", now)]);
        assert_eq!((first.appended, first.last_seq), (2, 2));
        let second = append(&mut writer, vec![call("c", now), call("a", now)]);
        assert_eq!(
            (second.appended, second.duplicates, second.last_seq),
            (1, 1, 3)
        );
    }
}
