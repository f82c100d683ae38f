//! The Source debugger (`/debugger`): the calls as they arrive, pretty-printed and filterable
//! by type, and the calls refused with their reason.
//!
//! The page renders the newest calls from the log on load (so it works without JavaScript);
//! the script then follows the log through `/debugger/stream`, a Server-Sent Events stream of
//! the calls stored after the page's newest one. One stream per page; it ends when the client
//! goes away (or after [`STREAM_LIFETIME`], when the browser's `EventSource` reconnects from its
//! `Last-Event-ID`).
//!
//! Reads: `Store::last_seq` and `Store::read_calls` (a bounded window at the end of the log),
//! `Store::read_rejections` (the last ones, found by id without a count), `Store::list_sources`
//! (names).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Html;
use axum::routing::get;
use futures::Stream;
use serde::{Deserialize, Serialize};
use signalbox_core::{CallKind, SourceId, StoredCall};
use signalbox_store::{CallQuery, RejectionQuery, Store};
use tokio::time::Instant;

use crate::auth::SignedIn;
use crate::error::{ConsoleError, ConsoleResult};
use crate::pages::Page;
use crate::Console;

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
/// Calls the stream reads at once.
const STREAM_PAGE: u32 = 200;
/// A stream ends after this long; `EventSource` reconnects where it left off.
const STREAM_LIFETIME: Duration = Duration::from_secs(300);
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

/// `GET /debugger/stream?type=&after=SEQ`: one `event: call` (its `id` the call's seq, its
/// data the call as JSON) per call stored after `after`, or after the `Last-Event-ID` a
/// reconnecting `EventSource` sends, or after the log's current end.
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
    let names = source_names(store.as_ref()).await?;
    let tail = Tail {
        store,
        kind,
        after,
        names,
        pending: VecDeque::new(),
        wait: None,
        ends: Instant::now() + STREAM_LIFETIME,
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
    ends: Instant,
}

impl Tail {
    /// Events until the client goes away (the stream is dropped) or the lifetime is over.
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures::stream::unfold(self, |mut tail| async move {
            let ends = tail.ends;
            let event = tokio::select! {
                event = tail.next_event() => event,
                () = tokio::time::sleep_until(ends) => return None,
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
    fn payloads_are_pretty_printed_and_cut() {
        assert_eq!(pretty("{\"a\":1}"), "{\n  \"a\": 1\n}");
        assert_eq!(pretty("not json"), "not json");
        let long = format!("\"{}\"", "é".repeat(MAX_PAYLOAD));
        let shown = pretty(&long);
        assert!(shown.len() < MAX_PAYLOAD + 64);
        assert!(shown.ends_with("bytes in all)"));
    }
}
