//! Quarantine: a log entry that cannot be applied is set aside rather than stalling every
//! entry after it.
//!
//! When a batch fails, it is narrowed down: the entries before the one at fault are applied
//! in one transaction, then that entry is tried on its own, [`QUARANTINE_TRIES`] times in
//! all, a little apart. If it still fails, one transaction records it in `quarantine` (with
//! its last error and tries), notes a problem, and moves the checkpoint past it; the entries
//! after it go on in batches. A failure that no entry can be blamed for (the batch's flush or
//! commit) makes the rest of the batch go one entry at a time.
//!
//! **Invariant:** the quarantine row commits in the transaction that moves the checkpoint
//! past its entry: an entry is applied or quarantined, exactly once.
//! **Invariant:** quarantining is a function of the log: a rebuild that meets the same
//! failing entry sets it aside the same way (same row, same problem). Only a retry, an
//! operator's act, changes a quarantined entry afterwards.
//!
//! A quarantine that cannot commit (the database itself failing) is not recorded: the batch
//! fails as before and the pipeline reads again from the checkpoint, so entries are never set
//! aside because the disk was full.

use std::time::Duration;

use signalbox_core::StoredCall;

use super::store::{ApplyStore, ApplyTx, QuarantineRow};
use super::{Applier, BatchReport, Mode, Prepared, Sources};
use crate::error::{EngageError, EngageResult};

/// How many times an entry is tried on its own before it is quarantined.
pub(crate) const QUARANTINE_TRIES: i64 = 3;
/// The pause before the second try on its own; the third waits twice as long.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

impl<S: ApplyStore> Applier<S> {
    /// Applies `entries` in as few transactions as their failures allow (see the module's
    /// notes). Fails only when quarantining itself fails.
    pub(super) fn apply_isolating(
        &mut self,
        entries: &[StoredCall],
        prepared: &mut [Option<Prepared>],
        sources: &Sources,
    ) -> EngageResult<BatchReport> {
        let mut report = BatchReport {
            applied_seq: self.applied_seq,
            ..BatchReport::default()
        };
        // Where the entry last blamed for a failure is, and whether to go one by one.
        let mut suspect: Option<usize> = None;
        let mut one_by_one = false;
        let mut start = 0;
        while start < entries.len() {
            let end = match suspect {
                Some(at) if at > start => at,
                Some(_) => start + 1,
                None if one_by_one => start + 1,
                None => entries.len(),
            };
            let ready: &mut [Option<Prepared>] = if prepared.len() >= end {
                &mut prepared[start..end]
            } else {
                &mut []
            };
            match self.try_apply(&entries[start..end], ready, sources, Mode::Forward) {
                Ok(done) => {
                    add(&mut report, done);
                    start = end;
                }
                Err(failure) if end - start == 1 => {
                    let entry = &entries[start];
                    tracing::warn!(seq = entry.seq, error = %failure.error, "log entry failed on its own; trying again");
                    let done = self.again_or_quarantine(entry, sources, failure.error)?;
                    add(&mut report, done);
                    start = end;
                    suspect = None;
                }
                Err(failure) => {
                    tracing::warn!(
                        first_seq = entries[start].seq,
                        entries = end - start,
                        error = %failure.error,
                        "engage batch failed; narrowing it down"
                    );
                    match failure.entry {
                        Some(idx) => suspect = Some(start + idx),
                        None => {
                            suspect = None;
                            one_by_one = true;
                        }
                    }
                }
            }
        }
        Ok(report)
    }

    /// Tries an entry that failed on its own the remaining times, then quarantines it.
    fn again_or_quarantine(
        &mut self,
        entry: &StoredCall,
        sources: &Sources,
        mut error: EngageError,
    ) -> EngageResult<BatchReport> {
        for attempt in 2..=QUARANTINE_TRIES {
            std::thread::sleep(RETRY_PAUSE * (attempt as u32 - 1));
            match self.try_apply(std::slice::from_ref(entry), &mut [], sources, Mode::Forward) {
                Ok(done) => return Ok(done),
                Err(failure) => error = failure.error,
            }
        }
        self.quarantine(entry, &error)
    }

    /// Records the entry in `quarantine` with a problem, and moves the checkpoint past it,
    /// in one transaction.
    fn quarantine(&mut self, entry: &StoredCall, error: &EngageError) -> EngageResult<BatchReport> {
        let message = error.to_string();
        let problem = format!(
            "log entry set aside after {QUARANTINE_TRIES} failed tries \
             (signalbox engage quarantine): {message}"
        );
        let tx = self.store.begin()?;
        tx.quarantine(&QuarantineRow {
            seq: entry.seq,
            kind: entry.kind.as_str(),
            source_id: entry.source_id.0,
            received_us: entry.received_at.as_microsecond(),
            error: &message,
            tries: QUARANTINE_TRIES,
            problem: &problem,
        })?;
        tx.set_applied_seq(entry.seq)?;
        tx.commit()?;
        self.held.commit(entry.seq)?;
        self.applied_seq = entry.seq;
        metrics::counter!("signalbox_engage_entries_quarantined_total").increment(1);
        tracing::error!(
            seq = entry.seq,
            kind = entry.kind.as_str(),
            tries = QUARANTINE_TRIES,
            error = %message,
            "log entry quarantined; the pipeline goes on without it"
        );
        Ok(BatchReport {
            entries: 0,
            events: 0,
            applied_seq: entry.seq,
        })
    }

    /// Applies a quarantined entry again (after a fix), behind the checkpoint; on success it
    /// leaves the quarantine in the same transaction. On failure the entry stays, with one
    /// more try and this error.
    pub(crate) fn retry_quarantined(
        &mut self,
        entry: &StoredCall,
        sources: &Sources,
    ) -> EngageResult<BatchReport> {
        let quarantined = self.store.is_quarantined(entry.seq)?;
        if !quarantined {
            return Err(EngageError::not_found(format!(
                "quarantined log entry {}",
                entry.seq
            )));
        }
        match self.try_apply(std::slice::from_ref(entry), &mut [], sources, Mode::Retry) {
            Ok(done) => {
                tracing::info!(seq = entry.seq, "quarantined log entry applied");
                Ok(done)
            }
            Err(failure) => {
                self.store
                    .note_failed_retry(entry.seq, &failure.error.to_string())?;
                Err(failure.error)
            }
        }
    }
}

fn add(report: &mut BatchReport, done: BatchReport) {
    report.entries += done.entries;
    report.events += done.events;
    report.applied_seq = report.applied_seq.max(done.applied_seq);
}
