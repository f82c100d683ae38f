//! Call payloads packed with a zstd dictionary trained on the log's own calls.
//!
//! A call's JSON is a few hundred bytes, mostly the keys and values of the calls before it
//! (`"context":{"library":…`, the same event names, the same property names). zstd alone
//! gains little on so short an input; with a dictionary made from earlier calls it packs one
//! to a fifth or a seventh, and every byte it saves is written twice (the WAL, then the
//! checkpoint).
//!
//! - **Stored form.** `events.payload` is TEXT (the JSON as received) or a BLOB: [`TAG`], the
//!   dictionary's id (4 bytes, little-endian), a zstd frame. Calls written before a
//!   dictionary existed, and calls that would not get smaller, stay TEXT.
//! - **Dictionaries** live in `payload_dictionaries` and are never deleted: a packed row
//!   names its own. A dictionary becomes current only after the writer committed it, so a row
//!   never names one that is not stored.
//! - **Packing** happens in the request's task (`SqliteStore::append`), before the job reaches
//!   the single writer; unpacking in whoever reads the log.
//! - **Training.** Every call is sampled until [`PackingPolicy::first_after`] are in hand,
//!   then one in [`PackingPolicy::stride`], into a ring of recent samples. The first
//!   dictionary is trained once the ring is full; a new one when the packed size over a
//!   window of calls has grown [`PackingPolicy::retrain_when_worse`] times past what the
//!   current dictionary did on its first window (the traffic changed), at most once per
//!   [`PackingPolicy::retrain_after`]. Training runs on a thread of its own behind the
//!   writer; when zstd cannot train on the samples, the newest samples themselves are the
//!   dictionary (zstd takes any bytes as one).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rusqlite::functions::FunctionFlags;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};
use signalbox_core::NewCall;
use zstd::zstd_safe::{self, CCtx, CDict, DCtx, DDict};

/// The first byte of a packed payload: the format of what follows.
const TAG: u8 = 1;
/// Bytes before the zstd frame: the tag and the dictionary's id.
const HEADER: usize = 5;
/// The size of a trained dictionary at most.
const DICTIONARY_BYTES: usize = 16 << 10;
/// zstd's level: on inputs this short, higher levels pack little better and slower.
const LEVEL: i32 = 1;
/// A packed payload that claims to unpack to more than this is refused as corrupt (a call is
/// far smaller; the server's own limit on a batch is well under it).
const MAX_UNPACKED: u64 = 64 << 20;

/// When dictionaries are trained (see the module's documentation).
#[derive(Debug, Clone, Copy)]
pub struct PackingPolicy {
    /// Calls sampled (every one) before the first dictionary is trained; also the ring's size.
    pub first_after: usize,
    /// After the first dictionary, one call in this many is sampled.
    pub stride: u64,
    /// Calls over which the packed size is compared with the dictionary's first window.
    pub window: u64,
    /// A new dictionary is trained when a window packs this many times worse than the current
    /// dictionary's first window.
    pub retrain_when_worse: f64,
    /// A new dictionary is trained at most this often.
    pub retrain_after: Duration,
}

impl Default for PackingPolicy {
    fn default() -> Self {
        PackingPolicy {
            first_after: 2_048,
            stride: 32,
            window: 65_536,
            retrain_when_worse: 1.5,
            retrain_after: Duration::from_secs(3_600),
        }
    }
}

/// Why a stored payload could not be read back.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UnpackError {
    #[error("packed payload: {0}")]
    Corrupt(String),
    #[error("packed payload names dictionary {0}, which the log does not hold")]
    MissingDictionary(u32),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// A dictionary ready to pack and unpack with.
struct Dictionary {
    id: u32,
    cdict: CDict<'static>,
    ddict: DDict<'static>,
}

/// A trained dictionary the writer has not stored yet.
pub(crate) struct Trained {
    pub(crate) bytes: Vec<u8>,
    cdict: CDict<'static>,
    ddict: DDict<'static>,
}

impl Trained {
    fn new(bytes: Vec<u8>) -> Trained {
        Trained {
            cdict: CDict::create(&bytes, LEVEL),
            ddict: DDict::create(&bytes),
            bytes,
        }
    }

    /// The dictionary, stored as `id`.
    fn into_dictionary(self, id: u32) -> Dictionary {
        Dictionary {
            id,
            cdict: self.cdict,
            ddict: self.ddict,
        }
    }
}

/// The log's packing: the current dictionary, every dictionary read so far, the samples.
/// Cheap to clone; the store, its writer and its readers share one.
#[derive(Clone)]
pub(crate) struct Packing {
    shared: Arc<Shared>,
}

struct Shared {
    policy: PackingPolicy,
    /// What new calls are packed with: the newest stored dictionary.
    current: RwLock<Option<Arc<Dictionary>>>,
    /// Every dictionary read or made since the store opened, by id.
    known: RwLock<HashMap<u32, Arc<Dictionary>>>,
    sampler: Mutex<Sampler>,
    /// A dictionary the training thread finished, for the writer to store.
    trained: Mutex<Option<Trained>>,
}

/// Samples of recent calls, and how well the current dictionary packs.
struct Sampler {
    ring: Vec<String>,
    next: usize,
    /// Calls seen since the last sample.
    skipped: u64,
    /// A training thread is at work, or its dictionary waits to be stored.
    training: bool,
    /// When the current dictionary was made (none yet: the first one is still to come).
    trained_at: Option<Instant>,
    /// The current window: calls, their bytes as received and as stored.
    window_calls: u64,
    window_plain: u64,
    window_stored: u64,
    /// Bytes stored per byte received over the current dictionary's first window.
    baseline: Option<f64>,
}

thread_local! {
    static CCTX: RefCell<CCtx<'static>> = RefCell::new(CCtx::create());
    static DCTX: RefCell<DCtx<'static>> = RefCell::new(DCtx::create());
}

impl Packing {
    /// The packing of the log `conn` opens: its newest dictionary is current.
    pub(crate) fn open(conn: &Connection, policy: PackingPolicy) -> rusqlite::Result<Packing> {
        let newest: Option<(i64, Vec<u8>)> = conn
            .query_row(
                "SELECT id, bytes FROM payload_dictionaries ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let packing = Packing::empty(policy);
        if let Some((id, bytes)) = newest {
            let id = dictionary_id(id)?;
            packing.make_current(id, Trained::new(bytes));
            // Counted from now: a restart is not a reason to train again at once.
            packing.sampler().trained_at = Some(Instant::now());
        }
        Ok(packing)
    }

    /// No dictionary yet, none read.
    fn empty(policy: PackingPolicy) -> Packing {
        Packing {
            shared: Arc::new(Shared {
                policy,
                current: RwLock::new(None),
                known: RwLock::new(HashMap::new()),
                sampler: Mutex::new(Sampler::new()),
                trained: Mutex::new(None),
            }),
        }
    }

    fn sampler(&self) -> std::sync::MutexGuard<'_, Sampler> {
        self.shared.sampler.lock().expect("sampler lock")
    }

    /// The stored form of each call's payload: `Some` packed bytes, or `None` to store the
    /// JSON as it is. Samples the calls for training, and starts it when it is due.
    pub(crate) fn pack(&self, calls: &[NewCall]) -> Vec<Option<Vec<u8>>> {
        let current = self.shared.current.read().expect("dictionary lock").clone();
        let mut stored_bytes = 0u64;
        let mut plain_bytes = 0u64;
        let packed: Vec<Option<Vec<u8>>> = match &current {
            None => vec![None; calls.len()],
            Some(dictionary) => CCTX.with(|cctx| {
                let mut cctx = cctx.borrow_mut();
                calls
                    .iter()
                    .map(|call| {
                        let plain = call.payload.as_bytes();
                        let packed = pack_one(&mut cctx, dictionary, plain);
                        plain_bytes += plain.len() as u64;
                        stored_bytes += packed.as_ref().map_or(plain.len(), Vec::len) as u64;
                        packed
                    })
                    .collect()
            }),
        };
        self.observe(calls, current.is_some(), plain_bytes, stored_bytes);
        packed
    }

    /// Takes samples of `calls` and the packed sizes, and starts training when it is due.
    fn observe(&self, calls: &[NewCall], packing: bool, plain: u64, stored: u64) {
        let policy = self.shared.policy;
        let mut sampler = self.sampler();
        let first = sampler.trained_at.is_none();
        for call in calls {
            sampler.skipped += 1;
            if first || sampler.skipped >= policy.stride {
                sampler.skipped = 0;
                sampler.sample(&call.payload, policy.first_after);
            }
        }
        let due = if first {
            sampler.ring.len() >= policy.first_after
        } else if packing {
            sampler.window_calls += calls.len() as u64;
            sampler.window_plain += plain;
            sampler.window_stored += stored;
            sampler.window_worse(&policy)
        } else {
            false
        };
        if due && !sampler.training && sampler.ring.len() >= policy.first_after.min(8) {
            sampler.training = true;
            let samples = sampler.ring.clone();
            drop(sampler);
            self.train_in_background(samples);
        }
    }

    /// Trains a dictionary from `samples` on a thread of its own and leaves it for the writer.
    fn train_in_background(&self, samples: Vec<String>) {
        let packing = self.clone();
        let started = std::thread::Builder::new()
            .name("signalbox-log-dictionary".into())
            .spawn(move || {
                super::behind_the_writer();
                let bytes = train(&samples);
                tracing::debug!(
                    samples = samples.len(),
                    bytes = bytes.len(),
                    "trained a dictionary for the call log"
                );
                *packing.shared.trained.lock().expect("trained lock") = Some(Trained::new(bytes));
            });
        if let Err(err) = started {
            tracing::warn!(error = %err, "cannot start the call log's dictionary training");
            self.sampler().training = false;
        }
    }

    /// A trained dictionary for the writer to store, if one is waiting.
    pub(crate) fn take_trained(&self) -> Option<Trained> {
        self.shared.trained.lock().expect("trained lock").take()
    }

    /// The writer stored `trained` as dictionary `id`: new calls are packed with it.
    pub(crate) fn stored(&self, id: i64, trained: Trained) {
        match dictionary_id(id) {
            Ok(id) => self.make_current(id, trained),
            Err(err) => tracing::warn!(error = %err, "a dictionary id out of range"),
        }
        let mut sampler = self.sampler();
        sampler.training = false;
        sampler.trained_at = Some(Instant::now());
        sampler.baseline = None;
        sampler.reset_window();
    }

    /// The writer could not store a trained dictionary: training may start again.
    pub(crate) fn not_stored(&self) {
        self.sampler().training = false;
    }

    fn make_current(&self, id: u32, trained: Trained) {
        let dictionary = self.remember(id, trained);
        *self.shared.current.write().expect("dictionary lock") = Some(dictionary);
    }

    /// Keeps `trained` as dictionary `id`, for unpacking.
    fn remember(&self, id: u32, trained: Trained) -> Arc<Dictionary> {
        let dictionary = Arc::new(trained.into_dictionary(id));
        self.shared
            .known
            .write()
            .expect("dictionary lock")
            .insert(id, Arc::clone(&dictionary));
        dictionary
    }

    /// The JSON of a stored payload (`value`, the `payload` column), reading the dictionary
    /// it names from `conn` the first time (without one, only the dictionaries already read).
    pub(crate) fn unpack(
        &self,
        conn: Option<&Connection>,
        value: ValueRef<'_>,
    ) -> Result<String, UnpackError> {
        match value {
            ValueRef::Text(text) => String::from_utf8(text.to_vec())
                .map_err(|_| UnpackError::Corrupt("text is not UTF-8".into())),
            ValueRef::Blob(blob) => {
                let id = packed_dictionary(blob)?;
                let dictionary = match (self.known(id), conn) {
                    (Some(dictionary), _) => dictionary,
                    (None, Some(conn)) => self.load(conn, id)?,
                    (None, None) => return Err(UnpackError::MissingDictionary(id)),
                };
                unpack_with(&dictionary, blob)
            }
            other => Err(UnpackError::Corrupt(format!(
                "a payload of type {}",
                other.data_type()
            ))),
        }
    }

    fn known(&self, id: u32) -> Option<Arc<Dictionary>> {
        self.shared
            .known
            .read()
            .expect("dictionary lock")
            .get(&id)
            .cloned()
    }

    /// Reads dictionary `id` from `conn` and keeps it.
    fn load(&self, conn: &Connection, id: u32) -> Result<Arc<Dictionary>, UnpackError> {
        let bytes: Vec<u8> = conn
            .query_row(
                "SELECT bytes FROM payload_dictionaries WHERE id = ?1",
                params![i64::from(id)],
                |r| r.get(0),
            )
            .optional()?
            .ok_or(UnpackError::MissingDictionary(id))?;
        Ok(self.remember(id, Trained::new(bytes)))
    }
}

/// Registers `signalbox_unpack(payload)` on `conn` (a read-only copy source): the JSON of a
/// stored payload, for a statement that copies the log elsewhere. Reads every dictionary of
/// the file first; a file from before dictionaries has none, and only text payloads.
pub(crate) fn register_unpack(conn: &Connection) -> rusqlite::Result<()> {
    let packing = Packing::empty(PackingPolicy::default());
    let has_dictionaries: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'payload_dictionaries')",
        [],
        |r| r.get(0),
    )?;
    if has_dictionaries {
        let ids: Vec<i64> = conn
            .prepare("SELECT id FROM payload_dictionaries")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for id in ids {
            packing
                .load(conn, dictionary_id(id)?)
                .map_err(|err| rusqlite::Error::UserFunctionError(Box::new(err)))?;
        }
    }
    conn.create_scalar_function(
        "signalbox_unpack",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        move |ctx| {
            packing
                .unpack(None, ctx.get_raw(0))
                .map_err(|err| rusqlite::Error::UserFunctionError(Box::new(err)))
        },
    )
}

impl Sampler {
    fn new() -> Sampler {
        Sampler {
            ring: Vec::new(),
            next: 0,
            skipped: 0,
            training: false,
            trained_at: None,
            window_calls: 0,
            window_plain: 0,
            window_stored: 0,
            baseline: None,
        }
    }

    fn sample(&mut self, payload: &str, capacity: usize) {
        if self.ring.len() < capacity {
            self.ring.push(payload.to_owned());
        } else if capacity > 0 {
            let slot = self.next % capacity;
            payload.clone_into(&mut self.ring[slot]);
            self.next = (slot + 1) % capacity;
        }
    }

    fn reset_window(&mut self) {
        self.window_calls = 0;
        self.window_plain = 0;
        self.window_stored = 0;
    }

    /// Closes the window when it is full; true when it packed worse than the first window by
    /// the policy's factor and the current dictionary is old enough to replace.
    fn window_worse(&mut self, policy: &PackingPolicy) -> bool {
        if self.window_calls < policy.window || self.window_plain == 0 {
            return false;
        }
        let ratio = self.window_stored as f64 / self.window_plain as f64;
        self.reset_window();
        let Some(baseline) = self.baseline else {
            self.baseline = Some(ratio);
            return false;
        };
        let old_enough = self
            .trained_at
            .is_none_or(|at| at.elapsed() >= policy.retrain_after);
        old_enough && ratio > baseline * policy.retrain_when_worse
    }
}

fn dictionary_id(id: i64) -> rusqlite::Result<u32> {
    u32::try_from(id).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, id))
}

/// `plain` packed with `dictionary`, or `None` when that would not make it smaller.
fn pack_one(cctx: &mut CCtx<'static>, dictionary: &Dictionary, plain: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0u8; HEADER + zstd_safe::compress_bound(plain.len())];
    out[0] = TAG;
    out[1..HEADER].copy_from_slice(&dictionary.id.to_le_bytes());
    let written = cctx
        .compress_using_cdict(&mut out[HEADER..], plain, &dictionary.cdict)
        .ok()?;
    if HEADER + written >= plain.len() {
        return None;
    }
    out.truncate(HEADER + written);
    Some(out)
}

/// The id of the dictionary a packed payload names.
fn packed_dictionary(blob: &[u8]) -> Result<u32, UnpackError> {
    match blob {
        [TAG, a, b, c, d, ..] => Ok(u32::from_le_bytes([*a, *b, *c, *d])),
        [tag, ..] => Err(UnpackError::Corrupt(format!("unknown format {tag}"))),
        [] => Err(UnpackError::Corrupt("empty".into())),
    }
}

fn unpack_with(dictionary: &Dictionary, blob: &[u8]) -> Result<String, UnpackError> {
    let frame = &blob[HEADER..];
    let size = zstd_safe::get_frame_content_size(frame)
        .map_err(|_| UnpackError::Corrupt("not a zstd frame".into()))?
        .ok_or_else(|| UnpackError::Corrupt("the frame does not say its size".into()))?;
    if size > MAX_UNPACKED {
        return Err(UnpackError::Corrupt(format!(
            "claims {size} bytes, over the limit of {MAX_UNPACKED}"
        )));
    }
    let mut out = Vec::with_capacity(size as usize);
    DCTX.with(|dctx| {
        dctx.borrow_mut()
            .decompress_using_ddict(&mut out, frame, &dictionary.ddict)
    })
    .map_err(|code| UnpackError::Corrupt(zstd_safe::get_error_name(code).to_owned()))?;
    String::from_utf8(out).map_err(|_| UnpackError::Corrupt("not UTF-8".into()))
}

/// A dictionary from `samples`: zstd's trainer, or the newest samples themselves when it
/// cannot train on them (too few, too alike).
fn train(samples: &[String]) -> Vec<u8> {
    let total: usize = samples.iter().map(String::len).sum();
    // zstd wants a dictionary well under the samples' size.
    let capacity = DICTIONARY_BYTES.min(total / 4).max(256);
    match zstd::dict::from_samples(samples, capacity) {
        Ok(bytes) if !bytes.is_empty() => bytes,
        _ => raw_dictionary(samples),
    }
}

/// The newest samples, up to [`DICTIONARY_BYTES`], as a raw-content dictionary.
fn raw_dictionary(samples: &[String]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(DICTIONARY_BYTES);
    for sample in samples.iter().rev() {
        if bytes.len() + sample.len() > DICTIONARY_BYTES {
            break;
        }
        bytes.extend_from_slice(sample.as_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(i: usize) -> String {
        format!(
            r#"{{"anonymousId":"anon-{i:08x}","context":{{"library":{{"name":"analytics-python","version":"2.3.3"}}}},"event":"Product Viewed","messageId":"m-{i}","properties":{{"product_id":"P-{}","price":{}.5}},"type":"track","userId":"user-{}"}}"#,
            i % 97,
            i % 13,
            i % 1000
        )
    }

    #[test]
    fn a_trained_dictionary_packs_calls_to_a_fraction_and_back_exactly() {
        let samples: Vec<String> = (0..2_048).map(payload).collect();
        let dictionary = Trained::new(train(&samples)).into_dictionary(7);
        let mut cctx = CCtx::create();
        let (mut plain, mut stored) = (0, 0);
        for i in 5_000..6_000 {
            let json = payload(i);
            let packed = pack_one(&mut cctx, &dictionary, json.as_bytes()).expect("smaller");
            assert_eq!(packed_dictionary(&packed).unwrap(), 7);
            assert_eq!(unpack_with(&dictionary, &packed).unwrap(), json);
            plain += json.len();
            stored += packed.len();
        }
        assert!(stored * 3 < plain, "{stored} bytes stored for {plain}");
    }

    #[test]
    fn too_few_samples_still_make_a_dictionary() {
        let samples: Vec<String> = (0..3).map(payload).collect();
        let bytes = train(&samples);
        assert!(!bytes.is_empty());
        let dictionary = Trained::new(bytes).into_dictionary(1);
        let json = payload(10);
        let packed = pack_one(&mut CCtx::create(), &dictionary, json.as_bytes()).unwrap();
        assert_eq!(unpack_with(&dictionary, &packed).unwrap(), json);
    }

    #[test]
    fn what_does_not_shrink_stays_text_and_bad_blobs_are_refused() {
        let dictionary = Trained::new(raw_dictionary(&[payload(1)])).into_dictionary(1);
        assert!(pack_one(&mut CCtx::create(), &dictionary, b"{}").is_none());
        assert!(matches!(
            packed_dictionary(&[9, 0, 0, 0, 0]),
            Err(UnpackError::Corrupt(_))
        ));
        assert!(matches!(
            unpack_with(&dictionary, &[TAG, 1, 0, 0, 0, 1, 2, 3]),
            Err(UnpackError::Corrupt(_))
        ));
    }

    #[test]
    fn a_window_that_packs_worse_asks_for_a_new_dictionary_once_the_old_is_old_enough() {
        let policy = PackingPolicy {
            window: 10,
            retrain_after: Duration::ZERO,
            ..PackingPolicy::default()
        };
        let mut sampler = Sampler {
            trained_at: Some(Instant::now()),
            window_calls: 10,
            window_plain: 1_000,
            window_stored: 200,
            ..Sampler::new()
        };
        // The first full window sets the baseline.
        assert!(!sampler.window_worse(&policy));
        assert_eq!(sampler.baseline, Some(0.2));
        (
            sampler.window_calls,
            sampler.window_plain,
            sampler.window_stored,
        ) = (10, 1_000, 250);
        assert!(!sampler.window_worse(&policy), "1.25 times worse is kept");
        (
            sampler.window_calls,
            sampler.window_plain,
            sampler.window_stored,
        ) = (10, 1_000, 400);
        assert!(sampler.window_worse(&policy), "twice as bad asks for one");
        let patient = PackingPolicy {
            retrain_after: Duration::from_secs(3_600),
            ..policy
        };
        (
            sampler.window_calls,
            sampler.window_plain,
            sampler.window_stored,
        ) = (10, 1_000, 400);
        assert!(
            !sampler.window_worse(&patient),
            "not before the old one is old enough"
        );
    }
}

/// A log whose calls are packed, for the tests of what reads it.
#[cfg(test)]
pub(crate) mod testing {
    use jiff::Timestamp;
    use signalbox_core::{CallKind, NewCall, SourceId};

    use super::PackingPolicy;
    use crate::sqlite::{SqliteOptions, SqliteStore};
    use crate::{CallQuery, Store};

    /// Options whose first dictionary comes after 32 calls.
    pub(crate) fn quick_options() -> SqliteOptions {
        SqliteOptions {
            packing: PackingPolicy {
                first_after: 32,
                ..PackingPolicy::default()
            },
            ..SqliteOptions::default()
        }
    }

    pub(crate) fn call(i: usize) -> NewCall {
        NewCall {
            kind: CallKind::Track,
            message_id: format!("m-{i}"),
            received_at: Timestamp::now(),
            payload: format!(
                r#"{{"type":"track","event":"Order Completed","messageId":"m-{i}","userId":"u-{}","properties":{{"order_id":"o-{i}","total":{}.99,"currency":"EUR"}},"context":{{"library":{{"name":"analytics-node","version":"2.1.0"}}}}}}"#,
                i % 50,
                i % 300
            ),
        }
    }

    /// Appends calls to `store` from `source`, 32 a request, until some are stored packed
    /// (the dictionary trains in the background); returns every payload sent, in order.
    pub(crate) async fn append_until_packed(store: &SqliteStore, source: SourceId) -> Vec<String> {
        let mut sent = Vec::new();
        for round in 0..500 {
            let calls: Vec<NewCall> = (0..32).map(|i| call(round * 32 + i)).collect();
            sent.extend(calls.iter().map(|c| c.payload.clone()));
            store.append(source, calls, Vec::new()).await.unwrap();
            if packed_rows(store) > 0 {
                return sent;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("no call was packed after {} calls", sent.len());
    }

    /// Rows of the log stored packed.
    pub(crate) fn packed_rows(store: &SqliteStore) -> i64 {
        let conn = rusqlite::Connection::open(store.path()).unwrap();
        conn.query_row(
            "SELECT COUNT(*) FROM events WHERE typeof(payload) = 'blob'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    /// Every payload of the log, in order.
    pub(crate) async fn payloads(store: &dyn Store) -> Vec<String> {
        store
            .read_calls(CallQuery {
                limit: 1_000_000,
                ..CallQuery::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.payload)
            .collect()
    }
}
