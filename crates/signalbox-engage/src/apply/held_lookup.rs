//! Which held calls wait for an identifier, whatever the backend: [`HeldLookup`].
//!
//! Beside `engage.db` that is the [`HeldIndex`] folder. A backend that answers the lookup from
//! an indexed table of its own ([`ApplyTx::held_waiting_for`], PostgreSQL) gets
//! [`HeldLookup::Table`] instead: an in-memory count of the calls still held per identifier
//! (by its 64-bit key), so that an identifier no held call waits for, the common case, costs
//! no query. The counts are rebuilt from the held rows when the applier opens and after a
//! batch rolled back; a count left too high (two identifiers with one key) only costs a query
//! that finds nothing.

use std::collections::HashMap;
use std::path::PathBuf;

use super::held_index::{id_key, HeldIndex};
use super::holds::HeldIds;
use super::store::{ApplyStore, ApplyTx};
use crate::error::{EngageError, EngageResult};

pub(crate) enum HeldLookup {
    /// The folder beside the SQLite file.
    Index(HeldIndex),
    /// That folder's index after a failed write, closed until it opens again (at the next
    /// [`HeldLookup::reload`]); batches fail meanwhile. Holds the SQLite file's path.
    Closed(PathBuf),
    /// The store's own table, behind counts of held calls by identifier key.
    Table(HashMap<[u8; 8], u32>),
}

impl HeldLookup {
    /// Records that `seq` waits for `ids`.
    pub(super) fn add(&mut self, ids: &HeldIds<impl AsRef<str>>, seq: i64) {
        match self {
            HeldLookup::Index(index) => index.add(ids, seq),
            HeldLookup::Closed(_) => {}
            HeldLookup::Table(counts) => {
                for (kind, value) in ids.typed() {
                    *counts.entry(id_key(kind, value)).or_default() += 1;
                }
            }
        }
    }

    /// Forgets that `seq` waits for `ids`.
    pub(super) fn remove(&mut self, ids: &HeldIds<impl AsRef<str>>, seq: i64) {
        match self {
            HeldLookup::Index(index) => index.remove(ids, seq),
            HeldLookup::Closed(_) => {}
            HeldLookup::Table(counts) => {
                for (kind, value) in ids.typed() {
                    let key = id_key(kind, value);
                    if let Some(count) = counts.get_mut(&key) {
                        *count -= 1;
                        if *count == 0 {
                            counts.remove(&key);
                        }
                    }
                }
            }
        }
    }

    /// The calls waiting for (`kind`, `value`), in log order.
    pub(super) fn waiting_for(
        &self,
        tx: &impl ApplyTx,
        kind: &str,
        value: &str,
    ) -> EngageResult<Vec<i64>> {
        match self {
            HeldLookup::Index(index) => index.waiting_for(kind, value),
            HeldLookup::Closed(_) => Err(closed()),
            HeldLookup::Table(counts) if counts.contains_key(&id_key(kind, value)) => {
                tx.held_waiting_for(kind, value)
            }
            HeldLookup::Table(_) => Ok(Vec::new()),
        }
    }

    /// The batch that moved the checkpoint to `seq` committed.
    pub(crate) fn commit(&mut self, seq: i64) -> EngageResult<()> {
        match self {
            HeldLookup::Index(index) => index.commit(seq),
            HeldLookup::Closed(_) => Err(closed()),
            HeldLookup::Table(_) => Ok(()),
        }
    }

    /// Forgets what a rolled-back batch did and reads what is held again.
    pub(crate) fn reload(&mut self, store: &impl ApplyStore) -> EngageResult<()> {
        match self {
            HeldLookup::Index(index) if !index.is_broken() => {
                index.abort();
                index.catch_up(store)
            }
            HeldLookup::Index(index) => {
                // Its handles go before it is opened again: a database is opened once.
                let path = index.db_path().to_path_buf();
                *self = HeldLookup::Closed(path);
                self.reload(store)
            }
            HeldLookup::Closed(path) => {
                let index = HeldIndex::open(path, store)?;
                tracing::info!("held-call index opened again after a failed write");
                *self = HeldLookup::Index(index);
                Ok(())
            }
            HeldLookup::Table(counts) => {
                counts.clear();
                for (_, ids) in store.held_after(0)? {
                    for (kind, value) in ids.typed() {
                        *counts.entry(id_key(kind, value)).or_default() += 1;
                    }
                }
                Ok(())
            }
        }
    }
}

fn closed() -> EngageError {
    EngageError::Internal("the held-call index is not open again yet after a failed write".into())
}
