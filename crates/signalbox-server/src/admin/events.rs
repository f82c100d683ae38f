//! `/admin/v1/events`: the stored calls, as pages and as a live Server-Sent Events tail.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::{Extension, Json};
use futures::Stream;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;
use signalbox_core::{CallKind, SourceId, StoredCall};
use signalbox_store::{CallQuery, Store};

use super::auth::AdminKey;
use super::error::AdminError;
use super::extract::{parse_cursor, parse_limit, parse_time, AdminQuery};
use super::view::{source_filter, Page, Payload, SourceNames};
use crate::app::{AppState, Draining};

/// How often the live tail asks the store for new calls when it has none.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// How long the live tail waits after the store failed before asking again.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);
/// Calls the live tail reads at once.
const STREAM_PAGE: u32 = 500;
/// A comment line is sent after this much silence, so proxies keep the connection open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A stored call as the admin API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallView {
    pub seq: i64,
    /// The source's name; `null` once the source is deleted.
    pub source: Option<String>,
    pub source_id: SourceId,
    #[serde(rename = "type")]
    pub kind: CallKind,
    pub message_id: String,
    pub received_at: Timestamp,
    pub payload: Payload,
}

impl CallView {
    fn new(call: StoredCall, names: &SourceNames) -> CallView {
        CallView {
            seq: call.seq,
            source: names.get(call.source_id),
            source_id: call.source_id,
            kind: call.kind,
            message_id: call.message_id,
            received_at: call.received_at,
            payload: Payload::new(call.payload),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    source: Option<String>,
    since: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /admin/v1/events?source=NAME&since=RFC3339&after=SEQ&limit=N`
pub async fn list(
    _key: AdminKey,
    State(app): State<AppState>,
    AdminQuery(params): AdminQuery<ListParams>,
) -> Result<Json<Page<CallView>>, AdminError> {
    let after_seq = parse_cursor("after", params.after.as_deref())?;
    let since = parse_time("since", params.since.as_deref())?;
    let limit = parse_limit(params.limit.as_deref())?;
    let source_id = source_filter(app.store.as_ref(), params.source.as_deref()).await?;
    let calls = app
        .store
        .read_calls(CallQuery {
            after_seq,
            source_id,
            since,
            limit,
        })
        .await?;
    let names = SourceNames::load(app.store.as_ref()).await?;
    let views = calls
        .into_iter()
        .map(|call| CallView::new(call, &names))
        .collect();
    Ok(Json(Page::new(views, limit, |call| call.seq)))
}

#[derive(Debug, Deserialize)]
pub struct StreamParams {
    source: Option<String>,
    after: Option<String>,
}

/// `GET /admin/v1/events/stream?source=NAME[&after=SEQ]`: one `event: call` (its `id` the
/// call's seq) per call stored after the stream opened, or after `after`, or after the
/// `Last-Event-ID` a reconnecting `EventSource` sends. A failed read is reported as
/// `event: error` and retried.
pub async fn stream(
    _key: AdminKey,
    State(app): State<AppState>,
    AdminQuery(params): AdminQuery<StreamParams>,
    headers: HeaderMap,
    draining: Option<Extension<Draining>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AdminError> {
    let source_id = source_filter(app.store.as_ref(), params.source.as_deref()).await?;
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or_default());
    let after = match (params.after.as_deref(), last_event_id) {
        (Some(after), _) => parse_cursor("after", Some(after))?,
        (None, Some(id)) => parse_cursor("Last-Event-ID", Some(id))?,
        (None, None) => app.store.last_seq().await?,
    };
    let names = SourceNames::load(app.store.as_ref()).await?;
    let tail = Tail {
        store: app.store,
        source_id,
        after,
        names,
        pending: VecDeque::new(),
        wait: None,
    };
    let draining = draining.map(|Extension(draining)| draining);
    Ok(Sse::new(tail.into_stream(draining)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// The live tail's position in the log and the events read but not yet sent.
struct Tail {
    store: Arc<dyn Store>,
    source_id: Option<SourceId>,
    after: i64,
    names: SourceNames,
    pending: VecDeque<Event>,
    /// Set when the next read should wait (nothing new, or the store failed).
    wait: Option<Duration>,
}

impl Tail {
    /// Events until the client goes away (the stream is dropped) or shutdown begins.
    fn into_stream(
        self,
        draining: Option<Draining>,
    ) -> impl Stream<Item = Result<Event, Infallible>> {
        futures::stream::unfold((self, draining), |(mut tail, draining)| async move {
            let event = match &draining {
                Some(draining) => tokio::select! {
                    biased;
                    () = draining.started() => None,
                    event = tail.next_event() => Some(event),
                },
                None => Some(tail.next_event().await),
            }?;
            Some((Ok(event), (tail, draining)))
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
                self.pending.push_back(error_event(&err));
                self.wait = Some(ERROR_BACKOFF);
            }
        }
    }

    async fn read_page(&mut self) -> Result<(), AdminError> {
        let calls = self
            .store
            .read_calls(CallQuery {
                after_seq: self.after,
                source_id: self.source_id,
                since: None,
                limit: STREAM_PAGE,
            })
            .await?;
        let Some(last) = calls.last() else {
            self.wait = Some(POLL_EVERY);
            return Ok(());
        };
        self.after = last.seq;
        if calls
            .iter()
            .any(|call| !self.names.contains(call.source_id))
        {
            // A source created since the stream opened.
            self.names = SourceNames::load(self.store.as_ref()).await?;
        }
        for call in calls {
            let seq = call.seq;
            let event = match serde_json::to_string(&CallView::new(call, &self.names)) {
                Ok(data) => Event::default()
                    .event("call")
                    .id(seq.to_string())
                    .data(data),
                Err(err) => error_event(&AdminError::Internal(err.to_string())),
            };
            self.pending.push_back(event);
        }
        Ok(())
    }
}

fn error_event(err: &AdminError) -> Event {
    if let AdminError::Internal(detail) = err {
        tracing::error!(detail, "event stream read failed");
    }
    Event::default()
        .event("error")
        .data(json!({"code": err.code(), "message": err.public_message()}).to_string())
}
