//! The Source debugger (`/debugger`): the calls as they arrive, pretty-printed and filterable
//! by type, and the calls refused with their reason.
//!
//! The page renders the newest calls from the log on load (so it works without JavaScript);
//! the script then follows the log through `/debugger/stream`, a Server-Sent Events stream of
//! the calls stored after the page's newest one. One stream per page; it ends when the client
//! goes away, when the server shuts down, or after [`ConsoleConfig::stream_lifetime`] (the
//! browser's `EventSource` then reconnects from its `Last-Event-ID`).
//!
//! Streams are bounded: at most [`ConsoleConfig::max_streams`] open over the whole server and
//! [`ConsoleConfig::max_streams_per_session`] per session (past either, a 429 with
//! `Retry-After`, [`StreamSlots`]). A stream reads the log only as fast as its client takes
//! the events (one page of at most [`STREAM_PAGE`] calls held at a time), and when it falls
//! more than [`ConsoleConfig::stream_backlog`] calls behind the end of the log it drops the
//! oldest of them and sends an `event: skipped` saying how many.
//!
//! Reads: `Store::last_seq` and `Store::read_calls` (a bounded window at the end of the log),
//! `Store::read_rejections` (the last ones, found by id without a count), `Store::list_sources`
//! (names).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Html;
use axum::routing::get;
use futures::Stream;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use signalbox_core::{CallKind, SourceId, StoredCall};
use signalbox_store::{CallQuery, RejectionQuery, Store};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::{cookie_value, SignedIn, SESSION_COOKIE};
use crate::error::{ConsoleError, ConsoleResult};
use crate::pages::Page;
use crate::{Console, ConsoleConfig};

pub(crate) const TEMPLATES: &[(&str, &str)] = &[(
    "debugger/index.html",
    include_str!("../../templates/debugger/index.html"),
)];

/// Calls shown on load.
const SHOWN: usize = 50;
/// How far back from the end of the log a filtered view looks for calls of its type.
const FILTER_WINDOW: i64 = 500;
/// Rejected calls shown.
const REJECTIONS_SHOWN: usize = 20;
/// How far back from the last rejection the page reads.
const REJECTION_WINDOW: i64 = 200;
/// How often the stream asks the log for new calls when it has none.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// How long the stream waits after the store failed before asking again.
const ERROR_BACKOFF: Duration = Duration::from_secs(2);
/// Calls the stream reads at once: the most it holds in memory (each payload cut at
/// [`MAX_PAYLOAD`]).
const STREAM_PAGE: u32 = 100;
/// What a refused stream is told to wait before trying again.
const RETRY_AFTER_SECS: u64 = 30;
/// A comment line after this much silence keeps proxies from closing the connection.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The longest payload shown pretty-printed; longer ones are cut.
const MAX_PAYLOAD: usize = 16 * 1024;

pub(crate) fn routes() -> axum::Router<Console> {
    axum::Router::new()
        .route("/debugger", get(index))
        .route("/debugger/stream", get(stream))
}

#[derive(Deserialize)]
struct Params {
    #[serde(rename = "type")]
    kind: Option<String>,
    after: Option<String>,
}

fn parse_kind(text: Option<&str>) -> ConsoleResult<Option<CallKind>> {
    match text.unwrap_or("") {
        "" | "all" => Ok(None),
        other => CallKind::parse_logged(other)
            .map(Some)
            .ok_or_else(|| ConsoleError::Invalid {
                field: "type".into(),
                message: format!("'{other}' is not a call type"),
            }),
    }
}

/// A call as the page and the stream show it.
#[derive(Serialize)]
struct CallLine {
    seq: i64,
    #[serde(rename = "type")]
    kind: &'static str,
    source: String,
    message_id: String,
    received_at: String,
    /// The payload, pretty-printed.
    payload: String,
}

impl CallLine {
    fn new(call: StoredCall, names: &HashMap<SourceId, String>) -> CallLine {
        CallLine {
            seq: call.seq,
            kind: call.kind.as_str(),
            source: names
                .get(&call.source_id)
                .cloned()
                .unwrap_or_else(|| format!("deleted source {}", call.source_id.0)),
            message_id: call.message_id,
            received_at: call
                .received_at
                .strftime("%Y-%m-%d %H:%M:%S UTC")
                .to_string(),
            payload: pretty(&call.payload),
        }
    }
}

fn pretty(payload: &str) -> String {
    let text = match serde_json::from_str::<serde_json::Value>(payload) {
        Ok(value) => serde_json::to_string_pretty(&value).unwrap_or_else(|_| payload.to_owned()),
        Err(_) => payload.to_owned(),
    };
    if text.len() <= MAX_PAYLOAD {
        return text;
    }
    let mut end = MAX_PAYLOAD;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n… ({} bytes in all)", &text[..end], text.len())
}

#[derive(Serialize)]
struct RejectionLine {
    source: String,
    code: String,
    message: String,
    received_at: String,
    payload: String,
}

#[derive(Serialize)]
struct TypeOption {
    value: &'static str,
    selected: bool,
}

#[derive(Serialize)]
struct DebuggerData {
    kind: Option<&'static str>,
    types: Vec<TypeOption>,
    calls: Vec<CallLine>,
    /// Where the live stream starts: the log's end when the page was drawn.
    after: i64,
    rejections: Vec<RejectionLine>,
}

async fn source_names(store: &dyn Store) -> ConsoleResult<HashMap<SourceId, String>> {
    Ok(store
        .list_sources()
        .await
        .map_err(ConsoleError::internal)?
        .into_iter()
        .map(|s| (s.id, s.name))
        .collect())
}

async fn index(
    State(console): State<Console>,
    signed_in: SignedIn,
    Query(params): Query<Params>,
) -> ConsoleResult<Html<String>> {
    let kind = parse_kind(params.kind.as_deref())?;
    let store = console.deps().store.as_ref();
    let names = source_names(store).await?;
    let last = store.last_seq().await.map_err(ConsoleError::internal)?;
    let window = if kind.is_some() {
        FILTER_WINDOW
    } else {
        SHOWN as i64
    };
    let calls = store
        .read_calls(CallQuery {
            after_seq: (last - window).max(0),
            source_id: None,
            since: None,
            limit: window as u32,
        })
        .await
        .map_err(ConsoleError::internal)?;
    let calls: Vec<CallLine> = calls
        .into_iter()
        .rev()
        .filter(|call| kind.is_none_or(|k| call.kind == k))
        .take(SHOWN)
        .map(|call| CallLine::new(call, &names))
        .collect();
    let rejections = last_rejections(store)
        .await?
        .into_iter()
        .map(|r| RejectionLine {
            source: names
                .get(&r.source_id)
                .cloned()
                .unwrap_or_else(|| format!("source {}", r.source_id.0)),
            code: r.code,
            message: r.message,
            received_at: r.received_at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
            payload: pretty(&r.payload),
        })
        .collect();
    let types = CallKind::ALL
        .into_iter()
        .chain(CallKind::INTERNAL)
        .map(|k| TypeOption {
            value: k.as_str(),
            selected: kind == Some(k),
        })
        .collect();
    let data = DebuggerData {
        kind: kind.map(CallKind::as_str),
        types,
        calls,
        after: last,
        rejections,
    };
    console.inner.templates.render(
        "debugger/index.html",
        Page::new(&signed_in, "debugger", data),
    )
}

/// Whether a rejection with an id above `after` exists, and the first such id.
async fn next_rejection(store: &dyn Store, after: i64) -> ConsoleResult<Option<i64>> {
    Ok(store
        .read_rejections(RejectionQuery {
            after_id: after,
            source_id: None,
            limit: 1,
        })
        .await
        .map_err(ConsoleError::internal)?
        .first()
        .map(|r| r.id))
}

/// The newest rejections, newest first. The store lists rejections by id from a point, so
/// the last id is found by galloping and bisecting over that listing (each probe one indexed
/// read of one row), never by reading or counting them all.
async fn last_rejections(store: &dyn Store) -> ConsoleResult<Vec<signalbox_core::StoredRejection>> {
    let Some(mut lo) = next_rejection(store, 0).await? else {
        return Ok(Vec::new());
    };
    // Invariant: a rejection with id `lo` exists, none above `hi`.
    let mut hi = lo;
    loop {
        hi = hi.saturating_mul(2);
        match next_rejection(store, hi).await? {
            Some(id) => lo = id,
            None => break,
        }
        if hi == i64::MAX {
            break;
        }
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match next_rejection(store, mid).await? {
            Some(id) => lo = id,
            None => hi = mid,
        }
    }
    let mut rows = store
        .read_rejections(RejectionQuery {
            after_id: (lo - REJECTION_WINDOW).max(0),
            source_id: None,
            limit: REJECTION_WINDOW as u32,
        })
        .await
        .map_err(ConsoleError::internal)?;
    rows.reverse();
    rows.truncate(REJECTIONS_SHOWN);
    Ok(rows)
}

/// The Source debugger's open streams, counted over the server and per session.
pub(crate) struct StreamSlots {
    max_total: usize,
    max_per_session: usize,
    open: Mutex<OpenStreams>,
}

#[derive(Default)]
struct OpenStreams {
    total: usize,
    /// By the SHA-256 of the session's cookie (the token itself is not kept).
    per_session: HashMap<[u8; 32], usize>,
}

impl StreamSlots {
    pub(crate) fn new(max_total: usize, max_per_session: usize) -> StreamSlots {
        StreamSlots {
            max_total,
            max_per_session,
            open: Mutex::new(OpenStreams::default()),
        }
    }

    /// A slot for one more stream of `session`, given back when the slot is dropped; a
    /// [`ConsoleError::Busy`] past either cap.
    fn acquire(self: &Arc<Self>, session: [u8; 32]) -> ConsoleResult<StreamSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mine = open.per_session.get(&session).copied().unwrap_or(0);
        if mine >= self.max_per_session {
            return Err(ConsoleError::Busy {
                message: format!(
                    "this session has {mine} Source debugger streams open already, the most \
                     allowed ({}); close a debugger tab, or retry in {RETRY_AFTER_SECS} seconds",
                    self.max_per_session
                ),
                retry_after_secs: RETRY_AFTER_SECS,
            });
        }
        if open.total >= self.max_total {
            return Err(ConsoleError::Busy {
                message: format!(
                    "the server has {} Source debugger streams open already, the most allowed \
                     (--console-max-streams); retry in {RETRY_AFTER_SECS} seconds",
                    open.total
                ),
                retry_after_secs: RETRY_AFTER_SECS,
            });
        }
        open.total += 1;
        *open.per_session.entry(session).or_insert(0) += 1;
        Ok(StreamSlot {
            slots: Arc::clone(self),
            session,
        })
    }
}

/// One open stream's place under the caps.
struct StreamSlot {
    slots: Arc<StreamSlots>,
    session: [u8; 32],
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(mine) = open.per_session.get_mut(&self.session) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                open.per_session.remove(&self.session);
            }
        }
    }
}

/// `GET /debugger/stream?type=&after=SEQ`: one `event: call` (its `id` the call's seq, its
/// data the call as JSON) per call stored after `after`, or after the `Last-Event-ID` a
/// reconnecting `EventSource` sends, or after the log's current end; an `event: skipped`
/// (its data a sentence with the number) when it had to skip calls to keep up.
async fn stream(
    State(console): State<Console>,
    _signed_in: SignedIn,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> ConsoleResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let kind = parse_kind(params.kind.as_deref())?;
    let store = Arc::clone(&console.deps().store);
    let cursor = |field: &str, text: &str| {
        text.trim()
            .parse::<i64>()
            .ok()
            .filter(|seq| *seq >= 0)
            .ok_or_else(|| ConsoleError::Invalid {
                field: field.into(),
                message: "must be a call's sequence number".into(),
            })
    };
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let after = match (last_event_id, params.after.as_deref()) {
        (Some(id), _) => cursor("Last-Event-ID", id)?,
        (None, Some(after)) if !after.is_empty() => cursor("after", after)?,
        _ => store.last_seq().await.map_err(ConsoleError::internal)?,
    };
    // `SignedIn` found the session cookie valid, so it is there.
    let session: [u8; 32] =
        Sha256::digest(cookie_value(&headers, SESSION_COOKIE).unwrap_or_default()).into();
    let slot = console.inner.streams.acquire(session)?;
    let names = source_names(store.as_ref()).await?;
    let config: &ConsoleConfig = &console.deps().config;
    let tail = Tail {
        store,
        kind,
        after,
        names,
        pending: VecDeque::new(),
        wait: None,
        check_lag: true,
        backlog: i64::from(config.stream_backlog.max(1)),
        ends: Instant::now() + config.stream_lifetime,
        shutdown: console.deps().shutdown.clone(),
        _slot: slot,
    };
    Ok(Sse::new(tail.into_stream()).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// The stream's place in the log and the events read but not sent yet.
struct Tail {
    store: Arc<dyn Store>,
    kind: Option<CallKind>,
    after: i64,
    names: HashMap<SourceId, String>,
    pending: VecDeque<Event>,
    wait: Option<Duration>,
    /// Whether the next read first checks how far behind the log's end the stream is (at
    /// the start, and after a full page).
    check_lag: bool,
    /// The most calls the stream may be behind before it skips ahead.
    backlog: i64,
    ends: Instant,
    shutdown: CancellationToken,
    /// Given back when the stream is dropped.
    _slot: StreamSlot,
}

impl Tail {
    /// Events until the client goes away (the stream is dropped), the server shuts down, or
    /// the lifetime is over.
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures::stream::unfold(self, |mut tail| async move {
            let ends = tail.ends;
            let shutdown = tail.shutdown.clone();
            let event = tokio::select! {
                biased;
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep_until(ends) => return None,
                event = tail.next_event() => event,
            };
            Some((Ok(event), tail))
        })
    }

    async fn next_event(&mut self) -> Event {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return event;
            }
            if let Some(wait) = self.wait.take() {
                tokio::time::sleep(wait).await;
            }
            if let Err(err) = self.read_page().await {
                tracing::error!(error = %err, "debugger stream read failed");
                self.pending.push_back(
                    Event::default()
                        .event("error")
                        .data("the call log could not be read; retrying"),
                );
                self.wait = Some(ERROR_BACKOFF);
            }
        }
    }

    async fn read_page(&mut self) -> ConsoleResult<()> {
        if self.check_lag {
            let last = self
                .store
                .last_seq()
                .await
                .map_err(ConsoleError::internal)?;
            let behind = last - self.after;
            if behind > self.backlog {
                let skipped = behind - self.backlog;
                self.after = last - self.backlog;
                self.pending
                    .push_back(Event::default().event("skipped").data(format!(
                        "{skipped} calls skipped: this view fell more than {} calls behind the log",
                        self.backlog
                    )));
            }
        }
        let calls = self
            .store
            .read_calls(CallQuery {
                after_seq: self.after,
                source_id: None,
                since: None,
                limit: STREAM_PAGE,
            })
            .await
            .map_err(ConsoleError::internal)?;
        self.check_lag = calls.len() >= STREAM_PAGE as usize;
        let Some(last) = calls.last() else {
            self.wait = Some(POLL_EVERY);
            return Ok(());
        };
        self.after = last.seq;
        if calls
            .iter()
            .any(|call| !self.names.contains_key(&call.source_id))
        {
            // A source created since the stream opened.
            self.names = source_names(self.store.as_ref()).await?;
        }
        let mut sent = false;
        for call in calls {
            if self.kind.is_some_and(|k| call.kind != k) {
                continue;
            }
            let seq = call.seq;
            let data = serde_json::to_string(&CallLine::new(call, &self.names))
                .map_err(ConsoleError::internal)?;
            self.pending.push_back(
                Event::default()
                    .event("call")
                    .id(seq.to_string())
                    .data(data),
            );
            sent = true;
        }
        if !sent {
            self.wait = Some(POLL_EVERY);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_parse_and_unknown_ones_name_the_field() {
        assert_eq!(parse_kind(None).expect("all"), None);
        assert_eq!(parse_kind(Some("all")).expect("all"), None);
        assert_eq!(
            parse_kind(Some("track")).expect("track"),
            Some(CallKind::Track)
        );
        assert_eq!(
            parse_kind(Some("api_event")).expect("api"),
            Some(CallKind::ApiEvent)
        );
        let err = parse_kind(Some("nope")).expect_err("refused");
        assert!(err.to_string().starts_with("type:"));
    }

    #[tokio::test]
    async fn the_last_rejections_are_found_without_reading_them_all() {
        use signalbox_core::{RejectCode, Rejection};
        use signalbox_store::sqlite::SqliteOptions;
        use signalbox_store::SqliteStore;

        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path().join("log.db"), SqliteOptions::default())
            .expect("open store");
        assert!(last_rejections(&store).await.expect("none").is_empty());
        let (source, _) = store.create_source("web").await.expect("source");
        // 300 rejections: the search gallops past 256 and bisects back.
        for batch in 0..3 {
            let rejections = (0..100)
                .map(|n| Rejection {
                    code: RejectCode::InvalidJson,
                    message: format!("bad {}", batch * 100 + n),
                    received_at: jiff::Timestamp::UNIX_EPOCH,
                    payload: String::new(),
                })
                .collect();
            store
                .append(source.id, Vec::new(), rejections)
                .await
                .expect("append");
        }
        let last = last_rejections(&store).await.expect("rejections");
        assert_eq!(last.len(), REJECTIONS_SHOWN);
        assert_eq!(last[0].message, "bad 299", "newest first");
        assert_eq!(last[REJECTIONS_SHOWN - 1].message, "bad 280");
    }

    #[test]
    fn stream_slots_are_capped_per_session_and_in_all_and_given_back() {
        let slots = Arc::new(StreamSlots::new(3, 2));
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let a1 = slots.acquire(a).expect("a first");
        let _a2 = slots.acquire(a).expect("a second");
        let err = slots.acquire(a).err().expect("a third is refused");
        assert!(
            matches!(&err, ConsoleError::Busy { message, retry_after_secs: 30 }
                if message.contains("this session has 2")),
            "{err}"
        );
        let _b1 = slots.acquire(b).expect("b first");
        let err = slots.acquire(b).err().expect("the server is full");
        assert!(err.to_string().contains("the server has 3"), "{err}");
        assert_eq!(err.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        drop(a1);
        let _b2 = slots.acquire(b).expect("a slot given back is taken again");
        assert_eq!(slots.open.lock().unwrap().total, 3);
    }

    #[test]
    fn payloads_are_pretty_printed_and_cut() {
        assert_eq!(pretty("{\"a\":1}"), "{\n  \"a\": 1\n}");
        assert_eq!(pretty("not json"), "not json");
        let long = format!("\"{}\"", "é".repeat(MAX_PAYLOAD));
        let shown = pretty(&long);
        assert!(shown.len() < MAX_PAYLOAD + 64);
        assert!(shown.ends_with("bytes in all)"));
    }
}
