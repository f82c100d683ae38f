//! Which held calls wait for which identifier: a log-structured index in a folder beside
//! `engage.db` (`engage.db.held/`).
//!
//! Each held call is keyed under every identifier it waits for: 64 bits of SHA-256 of
//! (kind, value), then its log `seq`, so the calls waiting for one identifier are one prefix,
//! in log order. In `engage.db` such an index is a B-tree with a hot page per waiting
//! identifier: under anonymous traffic every commit rewrote thousands of pages, more than
//! everything else the applier writes. Here an insert is an append.
//!
//! `engage.db` stays the truth (`held_calls`, with each call's ids); this index is derived from
//! it and kept up to date beside it:
//! - Keys added by a batch are visible to the batch at once (a call held, then released by an
//!   identify later in the same batch) and written when the batch has committed, with a marker:
//!   the checkpoint they belong to. When the applier opens, the calls still held past the
//!   marker are indexed again, so a crash between the two commits loses nothing.
//! - The writing happens on a thread of its own (`signalbox-held`), one batch behind the
//!   applier: the applier hands a committed batch's keys over and goes on with the next, and
//!   lookups read the keys in flight from memory until they are written.
//! - Keys of settled calls are removed after the commit. A key left behind (a crash, a rolled
//!   back batch, two identifiers with one hash) only costs a release attempt that finds the
//!   call settled, or its ids still unlinked, and leaves it as it is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use sha2::{Digest, Sha256};

use super::holds::HeldIds;
use super::store::ApplyStore;
use crate::error::{EngageError, EngageResult};

const WAITING: &str = "waiting";
const META: &str = "meta";
const MARKER: &[u8] = b"indexed_seq";
/// Block cache of the index.
const CACHE_BYTES: u64 = 8 << 20;
/// Its memtable. Entries are small (16-byte keys, no value), so the skiplist's nodes take
/// several times the bytes counted here: kept small, it flushes every few seconds under
/// anonymous traffic and the heap stays flat.
const MEMTABLE_BYTES: u64 = 4 << 20;
/// Flushed memtables that gather before they are merged into the first level. Keys are
/// hashes, so every flushed table overlaps the whole first level and each merge rewrites it:
/// merging twice as much at a time halves that rewriting (drain 130,000 → 143,000 entries/s).
/// The tables are on disk with only their top-level index in memory.
const L0_TABLES: u8 = 8;
/// Journal kept before memtables are forced out.
const JOURNAL_BYTES: u64 = 128 << 20;

/// The folder of the index of the database at `db`.
pub(crate) fn dir_of(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".held");
    PathBuf::from(name)
}

/// The key of identifier (`kind`, `value`).
pub(super) fn id_key(kind: &str, value: &str) -> [u8; 8] {
    let mut hasher = Sha256::new();
    hasher.update(kind.as_bytes());
    hasher.update([0]);
    hasher.update(value.as_bytes());
    let digest = hasher.finalize();
    digest[..8].try_into().expect("8 bytes")
}

fn entry_key(id: [u8; 8], seq: i64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&id);
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn fjall_error(err: fjall::Error) -> EngageError {
    EngageError::Internal(format!("held-call index: {err}"))
}

/// Keys by identifier key, each list in log order.
type Added = HashMap<[u8; 8], Vec<i64>>;

/// One committed batch's changes, for the writing thread.
struct Job {
    added: Arc<Added>,
    removed: Vec<[u8; 16]>,
    seq: i64,
}

pub(crate) struct HeldIndex {
    /// The SQLite file it is beside.
    db_path: PathBuf,
    /// A write failed: a failed journal flush (a full disk) poisons the index's database for
    /// as long as it is open, so it is opened again (see `held_lookup.rs`).
    broken: bool,
    waiting: Keyspace,
    meta: Keyspace,
    /// Added by the batch in progress: visible to lookups, handed to the writing thread at
    /// [`HeldIndex::commit`].
    added: Added,
    /// Settled by the batch in progress: removed at [`HeldIndex::commit`].
    removed: Vec<[u8; 16]>,
    /// The keys of the batch being written, until the thread has written them.
    in_flight: Option<Arc<Added>>,
    jobs: Option<SyncSender<Job>>,
    written: Receiver<EngageResult<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HeldIndex {
    /// Opens the index of the database `store` (at `db`) and indexes the calls held past its
    /// marker.
    pub(crate) fn open(db: &Path, store: &impl ApplyStore) -> EngageResult<HeldIndex> {
        let dir = dir_of(db);
        let database = signalbox_store::sqlite::open_or_remake(&dir, "held calls", || {
            Database::builder(&dir)
                .manual_journal_persist(true)
                .cache_size(CACHE_BYTES)
                .max_journaling_size(JOURNAL_BYTES)
                .worker_threads(1)
                .open()
        })
        .map_err(fjall_error)?;
        let waiting = database
            .keyspace(WAITING, keyspace_options)
            .map_err(fjall_error)?;
        let meta = database
            .keyspace(META, KeyspaceCreateOptions::default)
            .map_err(fjall_error)?;
        let (jobs, incoming) = sync_channel::<Job>(1);
        let (done, written) = sync_channel(1);
        let writer = Writer {
            db: database,
            waiting: waiting.clone(),
            meta: meta.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("signalbox-held".into())
            .spawn(move || {
                for job in incoming {
                    let result = writer.write(job);
                    if let Err(err) = &result {
                        tracing::error!(error = %err, "writing the held-call index failed");
                    }
                    if done.send(result).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| EngageError::Internal(e.to_string()))?;
        let mut index = HeldIndex {
            db_path: db.to_path_buf(),
            broken: false,
            waiting,
            meta,
            added: HashMap::new(),
            removed: Vec::new(),
            in_flight: None,
            jobs: Some(jobs),
            written,
            thread: Some(thread),
        };
        index.catch_up(store)?;
        Ok(index)
    }

    /// The checkpoint whose keys are all written (0 when none is).
    fn marker(&self) -> EngageResult<i64> {
        Ok(self
            .meta
            .get(MARKER)
            .map_err(fjall_error)?
            .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
            .map(i64::from_be_bytes)
            .unwrap_or(0))
    }

    /// Indexes the calls still held past the marker, and moves it to the checkpoint.
    pub(crate) fn catch_up(&mut self, store: &impl ApplyStore) -> EngageResult<()> {
        // A failed write leaves the marker where it was: what it missed is indexed here.
        let _ = self.settle();
        let marker = self.marker()?;
        let applied = store.applied_seq()?;
        let held = store.held_after(marker)?;
        let indexed = held.len();
        for (seq, ids) in &held {
            self.add(ids, *seq);
        }
        if indexed > 0 {
            tracing::info!(indexed, after_seq = marker, "held calls indexed again");
        }
        self.commit(applied.max(marker))
    }

    /// Records that `seq` waits for `ids` (calls are added in log order).
    pub(super) fn add(&mut self, ids: &HeldIds<impl AsRef<str>>, seq: i64) {
        for (kind, value) in ids.typed() {
            let seqs = self.added.entry(id_key(kind, value)).or_default();
            if seqs.last() != Some(&seq) {
                seqs.push(seq);
            }
        }
    }

    /// Forgets that `seq` waits for `ids`. (A key still in flight may be listed a little
    /// longer: release finds the call settled.)
    pub(super) fn remove(&mut self, ids: &HeldIds<impl AsRef<str>>, seq: i64) {
        for (kind, value) in ids.typed() {
            let id = id_key(kind, value);
            if let Some(seqs) = self.added.get_mut(&id) {
                seqs.retain(|s| *s != seq);
            }
            self.removed.push(entry_key(id, seq));
        }
    }

    /// The calls waiting for (`kind`, `value`), in log order.
    pub(super) fn waiting_for(&self, kind: &str, value: &str) -> EngageResult<Vec<i64>> {
        let id = id_key(kind, value);
        let mut seqs = Vec::new();
        for guard in self.waiting.prefix(id) {
            let key = guard.key().map_err(fjall_error)?;
            if let Ok(seq) = <[u8; 8]>::try_from(&key[8..]) {
                seqs.push(i64::from_be_bytes(seq));
            }
        }
        let in_flight = self.in_flight.as_ref().and_then(|added| added.get(&id));
        for added in in_flight.into_iter().chain(self.added.get(&id)) {
            seqs.extend_from_slice(added);
            seqs.sort_unstable();
            seqs.dedup();
        }
        Ok(seqs)
    }

    /// Hands what the batch that committed checkpoint `seq` added and settled to the writing
    /// thread, after the previous batch's write finished. Returns that write's error, if any.
    pub(crate) fn commit(&mut self, seq: i64) -> EngageResult<()> {
        self.settle()?;
        let added = Arc::new(std::mem::take(&mut self.added));
        let job = Job {
            added: Arc::clone(&added),
            removed: std::mem::take(&mut self.removed),
            seq,
        };
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        if !sent {
            return Err(EngageError::Internal(
                "the held-call index's writer stopped".into(),
            ));
        }
        self.in_flight = Some(added);
        Ok(())
    }

    /// Waits for the batch in flight to be written.
    pub(crate) fn settle(&mut self) -> EngageResult<()> {
        if self.in_flight.take().is_none() {
            return Ok(());
        }
        let written = self.written.recv().unwrap_or_else(|_| {
            Err(EngageError::Internal(
                "the held-call index's writer stopped".into(),
            ))
        });
        if written.is_err() {
            self.broken = true;
        }
        written
    }

    /// Whether a write failed since it was opened.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    /// The SQLite file it is beside.
    pub(crate) fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// Forgets the batch in progress (it rolled back).
    pub(crate) fn abort(&mut self) {
        self.added.clear();
        self.removed.clear();
    }
}

impl Drop for HeldIndex {
    /// Writes what is in flight, then stops the thread.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writing thread's side.
struct Writer {
    db: Database,
    waiting: Keyspace,
    meta: Keyspace,
}

impl Writer {
    fn write(&self, job: Job) -> EngageResult<()> {
        let mut batch = self.db.batch();
        for (id, seqs) in job.added.iter() {
            for seq in seqs {
                batch.insert(&self.waiting, entry_key(*id, *seq), []);
            }
        }
        for key in job.removed {
            batch.remove(&self.waiting, key);
        }
        batch.insert(&self.meta, MARKER, job.seq.to_be_bytes());
        batch.commit().map_err(fjall_error)?;
        // What the index holds in memtables (the active one and those waiting to be flushed),
        // and its flushes waiting: nothing in fjall bounds either.
        metrics::gauge!("signalbox_held_index_write_buffer_bytes")
            .set(self.db.write_buffer_size() as f64);
        metrics::gauge!("signalbox_held_index_pending_flushes")
            .set(self.db.outstanding_flushes() as f64);
        // Into the operating system's buffers: a crash of the process keeps it. What a crash
        // of the machine loses is behind the marker, and indexed again on open.
        self.db.persist(PersistMode::Buffer).map_err(fjall_error)
    }
}

/// Keys are hashes, written once and removed once, and only ever read by prefix: no
/// compression and no bloom filters (a prefix scan cannot use them; building them took a
/// good part of the compaction thread's time), and block indexes partitioned so that memory
/// stays bounded however many calls are held.
fn keyspace_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
        .max_memtable_size(MEMTABLE_BYTES)
        .data_block_compression_policy(fjall::config::CompressionPolicy::disabled())
        .filter_block_partitioning_policy(fjall::config::PinningPolicy::all(true))
        .index_block_partitioning_policy(fjall::config::PinningPolicy::all(true))
        .filter_policy(fjall::config::FilterPolicy::disabled())
        .compaction_strategy(Arc::new(
            fjall::compaction::Leveled::default().with_l0_threshold(L0_TABLES),
        ))
}

#[cfg(test)]
mod tests {
    use super::super::identity::{ANONYMOUS, EXTERNAL};
    use super::super::store::{ApplyTx, NewHeldCall};
    use super::*;
    use crate::db::apply::SqliteWriter;

    fn ids(external: Option<&str>, anonymous: Option<&str>, alias: Option<&str>) -> HeldIds {
        HeldIds {
            external_id: external.map(str::to_owned),
            anonymous_id: anonymous.map(str::to_owned),
            alias_of: alias.map(str::to_owned),
        }
    }

    fn database(dir: &Path) -> (PathBuf, SqliteWriter) {
        let path = dir.join("engage.db");
        let store = SqliteWriter::open(&path).unwrap();
        (path, store)
    }

    #[test]
    fn lists_waiting_calls_in_log_order_before_and_after_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (path, store) = database(dir.path());
        let mut index = HeldIndex::open(&path, &store).unwrap();
        let a = ids(Some("u1"), Some("a1"), None);
        let b = ids(Some("u1"), Some("a2"), None);
        let alias = ids(Some("u3"), None, Some("p1"));
        index.add(&a, 10);
        index.add(&b, 11);
        index.commit(11).unwrap();
        index.add(&a, 12);
        index.add(&alias, 13);
        // Committed and pending keys together.
        assert_eq!(index.waiting_for(EXTERNAL, "u1").unwrap(), vec![10, 11, 12]);
        assert_eq!(index.waiting_for(ANONYMOUS, "a1").unwrap(), vec![10, 12]);
        assert_eq!(index.waiting_for(ANONYMOUS, "a2").unwrap(), vec![11]);
        // Kinds are told apart; an alias's previousId waits as either kind.
        assert!(index.waiting_for(ANONYMOUS, "u1").unwrap().is_empty());
        assert_eq!(index.waiting_for(ANONYMOUS, "p1").unwrap(), vec![13]);
        assert_eq!(index.waiting_for(EXTERNAL, "p1").unwrap(), vec![13]);
        index.commit(13).unwrap();

        index.remove(&a, 10);
        index.commit(14).unwrap();
        // A removal is seen once written.
        index.settle().unwrap();
        assert_eq!(index.waiting_for(EXTERNAL, "u1").unwrap(), vec![11, 12]);
        assert_eq!(index.waiting_for(ANONYMOUS, "a1").unwrap(), vec![12]);

        // A rolled back batch leaves nothing behind.
        index.add(&ids(Some("u9"), None, None), 15);
        index.abort();
        index.commit(14).unwrap();
        assert!(index.waiting_for(EXTERNAL, "u9").unwrap().is_empty());
    }

    #[test]
    fn calls_held_past_the_marker_are_indexed_again_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut store) = database(dir.path());
        let tx = store.begin().unwrap();
        for (seq, user_id, anonymous_id) in [
            (5, Some("u1"), Some("a1")),
            (6, Some("u1"), None),
            (7, None, Some("a2")),
        ] {
            tx.hold(&NewHeldCall {
                seq,
                source_id: 1,
                kind: "track",
                received_us: 0,
                expires_us: 10,
                reason: "r",
                ids: HeldIds {
                    external_id: user_id,
                    anonymous_id,
                    alias_of: None,
                },
                payload: "{}",
            })
            .unwrap();
        }
        tx.release_held(6, 7).unwrap();
        tx.set_applied_seq(7).unwrap();
        tx.commit().unwrap();
        {
            // The index missed them (say, a crash between the two commits).
            let mut index = HeldIndex::open(&path, &store).unwrap();
            assert_eq!(index.waiting_for(EXTERNAL, "u1").unwrap(), vec![5]);
            assert_eq!(index.waiting_for(ANONYMOUS, "a2").unwrap(), vec![7]);
            index.settle().unwrap();
            assert_eq!(index.marker().unwrap(), 7);
        }
        let index = HeldIndex::open(&path, &store).unwrap();
        assert_eq!(index.waiting_for(ANONYMOUS, "a1").unwrap(), vec![5]);
    }
}
