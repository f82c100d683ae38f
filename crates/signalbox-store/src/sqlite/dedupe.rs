//! The dedupe index: which message ids were stored, and when.
//!
//! The SQLite log stays the truth; this index is a log-structured store in a folder beside the
//! database file, owned by the writer thread. Inserting random ids into a B-tree dirties a
//! random page per id, which is what made random (UUIDv4) ids slow; an LSM tree turns them
//! into sequential writes, and its bloom filters make the common "never seen" lookup cheap.
//!
//! Ids live in time buckets (one keyspace each, a quarter of the window wide, named by their
//! width and index), so expiry drops whole keyspaces instead of deleting ids one by one. A
//! marker records the last log `seq` whose id is indexed; it is written in the same batch as
//! the ids, so after a crash the writer re-indexes the log past the marker before it accepts
//! appends.

use std::path::Path;
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use jiff::SignedDuration;
use signalbox_core::SourceId;

const MARKER: &[u8] = b"indexed_seq";
/// How keys are spelt: absent in an index of bare message ids (before dedupe was per source),
/// [`KEY_FORMAT`] since.
const FORMAT: &[u8] = b"key_format";
/// Keys are [`key`]: the source and the message id.
const KEY_FORMAT: u8 = 2;
const META: &str = "meta";
const BUCKET_PREFIX: &str = "ids-";
/// Narrowest bucket, so that tiny windows do not create a keyspace per request.
const MIN_BUCKET_US: i64 = 1_000_000;
/// The smallest block cache and memtable the index is given, whatever the budget.
const MIN_BUFFER_BYTES: u64 = 1 << 20;
/// Tables the first level collects before they are merged into the next.
const L0_TABLES: u8 = 8;
/// Journal kept before memtables are forced out.
const JOURNAL_BYTES: u64 = 256 << 20;

pub(crate) type IndexResult<T> = Result<T, fjall::Error>;

/// The memory the index keeps: a block cache shared by every bucket (filter and index
/// partitions, data blocks), and the memtable a bucket fills before it is flushed. Ids arrive
/// in time order, so only the newest bucket's memtable fills; a full one waits for its flush
/// beside the next, and in memory a memtable takes about two and a half times its nominal
/// size (the skip list's nodes and the keys' own allocations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexMemory {
    pub(crate) cache_bytes: u64,
    pub(crate) memtable_bytes: u64,
}

impl IndexMemory {
    /// The index's share of the log's memory budget: half its block cache, half its memtable.
    pub(crate) fn from_budget(bytes: u64) -> IndexMemory {
        IndexMemory {
            cache_bytes: (bytes / 2).max(MIN_BUFFER_BYTES),
            memtable_bytes: (bytes / 2).max(MIN_BUFFER_BYTES),
        }
    }
}

/// The key of one stored call: the source's id and the message id. Segment deduplicates per
/// source, so one source's ids never make another's calls repeats. The source id is decimal
/// digits and the separator is not one, so no two (source, id) pairs share a key.
pub(crate) fn key(source: SourceId, message_id: &str) -> String {
    format!("{}:{message_id}", source.0)
}

struct Bucket {
    /// First microsecond of `received_at` this bucket holds.
    start: i64,
    /// One past its last microsecond.
    end: i64,
    keyspace: Keyspace,
}

pub(crate) struct DedupeIndex {
    db: Database,
    meta: Keyspace,
    /// Sorted by `start`.
    buckets: Vec<Bucket>,
    width_us: i64,
    window_us: i64,
    memtable_bytes: u64,
}

impl DedupeIndex {
    pub(crate) fn open(
        dir: &Path,
        window: SignedDuration,
        memory: IndexMemory,
    ) -> IndexResult<DedupeIndex> {
        let window_us = i64::try_from(window.as_micros()).unwrap_or(i64::MAX).max(0);
        let width_us = (window_us / 4).max(MIN_BUCKET_US);
        // The journal is left in the process's buffer rather than written out per batch: the
        // log is the truth, and whatever tail a crash loses is re-indexed from it on open.
        // Opened on a thread behind the writer, so that the index's flush and compaction
        // threads, which inherit its priority, do too: a flush of a full memtable took half a
        // core for a second and, at the request handlers' priority, held `/v1/batch` p99 over
        // 50 ms for that second (`bench chain`, every 12 s at 25,000 events/s).
        let db = std::thread::scope(|scope| {
            let opening = scope.spawn(|| {
                super::behind_the_writer();
                super::open_or_remake(dir, "dedupe", || {
                    Database::builder(dir)
                        .manual_journal_persist(true)
                        .cache_size(memory.cache_bytes)
                        .max_journaling_size(JOURNAL_BYTES)
                        .open()
                })
            });
            opening
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })?;
        let meta = db.keyspace(META, KeyspaceCreateOptions::default)?;
        let mut buckets = Vec::new();
        for name in db.list_keyspace_names() {
            let name: &str = &name;
            let Some((width, index)) = parse_bucket_name(name) else {
                continue;
            };
            let keyspace = db.keyspace(name, || bucket_options(memory.memtable_bytes))?;
            buckets.push(Bucket {
                start: index.saturating_mul(width),
                end: index.saturating_add(1).saturating_mul(width),
                keyspace,
            });
        }
        buckets.sort_by_key(|b| b.start);
        let format = meta.get(FORMAT)?.and_then(|v| v.first().copied());
        if format != Some(KEY_FORMAT) {
            // An index of bare message ids, or a new one: start it empty in the current
            // format, and the writer re-indexes the log's last window from the start.
            for bucket in buckets.drain(..) {
                db.delete_keyspace(bucket.keyspace)?;
            }
            let mut batch = db.batch();
            batch.remove(&meta, MARKER);
            batch.insert(&meta, FORMAT, [KEY_FORMAT]);
            batch.commit()?;
        }
        Ok(DedupeIndex {
            db,
            meta,
            buckets,
            width_us,
            window_us,
            memtable_bytes: memory.memtable_bytes,
        })
    }

    /// The last log `seq` whose message id is in the index (0 when none is).
    pub(crate) fn indexed_seq(&self) -> IndexResult<i64> {
        Ok(self
            .meta
            .get(MARKER)?
            .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
            .map(i64::from_be_bytes)
            .unwrap_or(0))
    }

    /// Whether `id` was stored at most one window before `at` (microseconds).
    pub(crate) fn seen(&self, id: &str, at: i64) -> IndexResult<bool> {
        let cutoff = at.saturating_sub(self.window_us);
        for bucket in self.buckets.iter().rev() {
            if bucket.end <= cutoff {
                break;
            }
            if let Some(value) = bucket.keyspace.get(id)? {
                if let Ok(bytes) = <[u8; 8]>::try_from(&value[..]) {
                    if i64::from_be_bytes(bytes) >= cutoff {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }

    /// Records stored ids (with their `received_at`) and moves the marker to `seq`, in one
    /// atomic batch. Not synced: the log is the truth, and a lost tail is re-indexed on open.
    pub(crate) fn record<'a>(
        &mut self,
        ids: impl IntoIterator<Item = (&'a str, i64)>,
        seq: i64,
    ) -> IndexResult<()> {
        self.batch(ids, seq)?.commit()
    }

    /// The batch [`DedupeIndex::record`] commits, for committing elsewhere (another thread:
    /// see `index_thread.rs`).
    pub(crate) fn batch<'a>(
        &mut self,
        ids: impl IntoIterator<Item = (&'a str, i64)>,
        seq: i64,
    ) -> IndexResult<fjall::OwnedWriteBatch> {
        // What the index holds in memtables (the active one and those waiting to be flushed),
        // and its flushes waiting: nothing in fjall bounds either.
        metrics::gauge!("signalbox_dedupe_index_write_buffer_bytes")
            .set(self.db.write_buffer_size() as f64);
        metrics::gauge!("signalbox_dedupe_index_pending_flushes")
            .set(self.db.outstanding_flushes() as f64);
        let mut batch = self.db.batch();
        for (id, at) in ids {
            let keyspace = self.bucket_for(at)?;
            batch.insert(&keyspace, id, at.to_be_bytes());
        }
        batch.insert(&self.meta, MARKER, seq.to_be_bytes());
        Ok(batch)
    }

    /// Drops the buckets that hold nothing received within one window before `now`.
    pub(crate) fn expire(&mut self, now: i64) -> IndexResult<usize> {
        let cutoff = now.saturating_sub(self.window_us);
        let mut dropped = 0;
        while self.buckets.first().is_some_and(|b| b.end <= cutoff) {
            let bucket = self.buckets.remove(0);
            self.db.delete_keyspace(bucket.keyspace)?;
            dropped += 1;
        }
        Ok(dropped)
    }

    fn bucket_for(&mut self, at: i64) -> IndexResult<Keyspace> {
        let index = at.div_euclid(self.width_us);
        let start = index.saturating_mul(self.width_us);
        // The newest bucket is the usual answer.
        if let Some(b) = self
            .buckets
            .iter()
            .rev()
            .find(|b| b.start <= at && at < b.end)
        {
            return Ok(b.keyspace.clone());
        }
        let name = format!("{BUCKET_PREFIX}{}-{index}", self.width_us);
        let memtable_bytes = self.memtable_bytes;
        let keyspace = self.db.keyspace(&name, || bucket_options(memtable_bytes))?;
        let pos = self.buckets.partition_point(|b| b.start <= start);
        self.buckets.insert(
            pos,
            Bucket {
                start,
                end: start.saturating_add(self.width_us),
                keyspace: keyspace.clone(),
            },
        );
        Ok(keyspace)
    }
}

/// Buckets hold random ids that are written once and only looked up: no compression (it
/// finds nothing to squeeze in random hex), and compaction starts later than the default so
/// that a burst is not rewritten level by level while it is still arriving.
///
/// Filters and block indexes are partitioned on every level, so only their small top-level
/// indexes stay in memory and the partitions go through the bounded block cache. Left whole,
/// each table's filter and index stay loaded for as long as the table lives (ids flushed in
/// time order are moved down the levels as they are, never rewritten): about 2.8 bytes of
/// memory per id in the window, which grew the heap for as long as the window filled. Whole
/// filters on levels that are not pinned were worse for random ids: a lookup read a table's
/// whole filter through the cache.
fn bucket_options(memtable_bytes: u64) -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
        .max_memtable_size(memtable_bytes)
        .data_block_compression_policy(fjall::config::CompressionPolicy::disabled())
        .filter_block_partitioning_policy(fjall::config::PinningPolicy::all(true))
        .index_block_partitioning_policy(fjall::config::PinningPolicy::all(true))
        .compaction_strategy(Arc::new(
            fjall::compaction::Leveled::default().with_l0_threshold(L0_TABLES),
        ))
}

fn parse_bucket_name(name: &str) -> Option<(i64, i64)> {
    let rest = name.strip_prefix(BUCKET_PREFIX)?;
    let (width, index) = rest.split_once('-')?;
    let width: i64 = width.parse().ok()?;
    let index: i64 = index.parse().ok()?;
    (width > 0).then_some((width, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_US: i64 = 3_600_000_000;
    const TEST_MEMORY: IndexMemory = IndexMemory {
        cache_bytes: 1 << 20,
        memtable_bytes: 1 << 20,
    };

    #[test]
    fn ids_are_seen_inside_the_window_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let window = SignedDuration::from_hours(1);
        {
            let mut index = DedupeIndex::open(dir.path(), window, TEST_MEMORY).unwrap();
            assert_eq!(index.indexed_seq().unwrap(), 0);
            index
                .record([("a", HOUR_US), ("b", HOUR_US + 5)], 2)
                .unwrap();
            assert!(index.seen("a", HOUR_US + 10).unwrap());
            assert!(!index.seen("c", HOUR_US + 10).unwrap());
        }
        let mut index = DedupeIndex::open(dir.path(), window, TEST_MEMORY).unwrap();
        assert_eq!(index.indexed_seq().unwrap(), 2);
        assert!(index.seen("b", 2 * HOUR_US).unwrap());
        assert!(!index.seen("a", 2 * HOUR_US + 1).unwrap());
        assert_eq!(index.expire(3 * HOUR_US).unwrap(), 1);
        assert!(!index.seen("b", 2 * HOUR_US).unwrap());
    }

    /// The nice value of each of this process's threads named `name` (Linux).
    #[cfg(target_os = "linux")]
    fn nice_of_threads(name: &str) -> Vec<i64> {
        let mut nices = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let path = task.path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if comm.trim() != name {
                continue;
            }
            let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
            // Fields after the command's closing parenthesis start at the third (state); the
            // nice value is the nineteenth.
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            if let Some(nice) = after.split_whitespace().nth(16) {
                nices.push(nice.parse().unwrap());
            }
        }
        nices
    }

    /// The index's flush and compaction threads run behind the writer, whatever the priority
    /// of the thread that opens the index.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_index_threads_run_behind_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let _index =
            DedupeIndex::open(dir.path(), SignedDuration::from_hours(1), TEST_MEMORY).unwrap();
        let nices = nice_of_threads("fjall:worker");
        assert!(!nices.is_empty());
        assert!(nices.iter().all(|&nice| nice >= 9), "{nices:?}");
    }
}
