//! Request bodies, bounded: a global budget of body bytes being read at once, reserved before
//! a byte of the body is read, and a deadline for each body.
//!
//! [`guard_bodies`] runs before any handler. A request that has a body reserves its declared
//! `Content-Length` (or its route's limit when the length is unknown, capped at that limit)
//! from [`BodyGuard`]'s budget; when the budget is spent it is refused at once with a 503 and
//! `Retry-After`, without reading. The reservation is released as soon as the body has been
//! read to its end, failed, or was dropped unread (a handler that refused the request before
//! reading). A body that does not arrive whole within the body timeout fails, and the request
//! is answered 408.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body::{Body as HttpBody, Frame, SizeHint};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::app::AppState;
use crate::error::SegmentError;
use crate::ingest::IngestError;
use crate::segment::decode::Limits;
use crate::{consent, klaviyo};

/// The budget counts in units of this many bytes (a semaphore counts permits in `u32`).
const UNIT: usize = 1024;

/// Bytes a compressed body may carry beyond the route's limit (its framing); the Tracking API
/// reads this much past the limit before it refuses the body.
pub const COMPRESSED_SLACK: usize = 1024;

/// What a body of a route other than the Tracking API, the Klaviyo API and the one-click
/// unsubscribe may hold (axum's default limit, which those routes' extractors apply).
const DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The error a body gives when its deadline passed before it arrived whole.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// The shared budget of body bytes being read, and the deadline of each body.
#[derive(Debug)]
pub struct BodyGuard {
    budget: Arc<Semaphore>,
    total_units: usize,
    timeout: Duration,
    limits: Limits,
}

impl BodyGuard {
    /// `budget_bytes` of bodies may be read at once (at least one unit of 1 KiB); each body
    /// must arrive within `timeout` of its request's headers.
    pub fn new(budget_bytes: usize, timeout: Duration, limits: Limits) -> BodyGuard {
        let total_units = budget_bytes.div_ceil(UNIT).clamp(1, u32::MAX as usize);
        BodyGuard {
            budget: Arc::new(Semaphore::new(total_units)),
            total_units,
            timeout,
            limits,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Bytes of the budget not reserved now (in whole KiB).
    pub fn available_bytes(&self) -> usize {
        self.budget.available_permits() * UNIT
    }

    /// Reserves `bytes` of the budget, or refuses at once when they are not free.
    pub fn try_reserve(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let units = bytes.div_ceil(UNIT).clamp(1, self.total_units);
        Arc::clone(&self.budget)
            .try_acquire_many_owned(u32::try_from(units).unwrap_or(u32::MAX))
            .ok()
    }

    /// The most a body of the route at `path` may hold, as its handler reads it.
    fn route_limit(&self, path: &str) -> usize {
        if path.starts_with("/v1/") {
            self.limits.max_batch_bytes + COMPRESSED_SLACK
        } else if path.starts_with("/u/") {
            consent::UNSUBSCRIBE_BODY_LIMIT
        } else if path.starts_with("/api/") {
            klaviyo::MAX_BODY_BYTES
        } else {
            DEFAULT_BODY_LIMIT
        }
    }
}

/// Middleware: reserves the body's bytes from the budget before the handler runs, and gives the
/// body its deadline. See the module documentation.
pub async fn guard_bodies(State(app): State<AppState>, request: Request, next: Next) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let guard = &app.bodies;
    let tracking = request.uri().path().starts_with("/v1/");
    let limit = guard.route_limit(request.uri().path());
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let reserve = declared.map_or(limit, |n| {
        usize::try_from(n).unwrap_or(usize::MAX).min(limit)
    });
    let http1 = request.version() <= Version::HTTP_11;
    let Some(permit) = guard.try_reserve(reserve) else {
        return close_after(refusal(tracking, Refusal::Busy), http1);
    };
    let timed_out = Arc::new(AtomicBool::new(false));
    let request = request.map(|inner| {
        Body::new(GuardedBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(guard.timeout)),
            timeout: guard.timeout,
            permit: Some(permit),
            timed_out: Arc::clone(&timed_out),
        })
    });
    let response = next.run(request).await;
    if timed_out.load(Ordering::Acquire) {
        return close_after(refusal(tracking, Refusal::TimedOut(guard.timeout)), http1);
    }
    response
}

enum Refusal {
    Busy,
    TimedOut(Duration),
}

/// The refusal in the route's error shape: the Tracking API's `{"success":false,…}`, else
/// `{"code","message"}`.
fn refusal(tracking: bool, refusal: Refusal) -> Response {
    let err = match refusal {
        Refusal::Busy => IngestError::BodiesBusy,
        Refusal::TimedOut(timeout) => IngestError::BodyTimedOut(timeout),
    };
    if tracking {
        return SegmentError(err).into_response();
    }
    let (status, code) = match err {
        IngestError::BodiesBusy => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        _ => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
    };
    crate::telemetry::request_refused(status.as_u16(), code);
    let mut response = (
        status,
        Json(json!({"code": code, "message": err.to_string()})),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(1));
    }
    response
}

/// An HTTP/1 connection whose request body was not read cannot carry another request.
fn close_after(mut response: Response, http1: bool) -> Response {
    if http1 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body holding its reservation until it ends, and failing at its deadline.
struct GuardedBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    permit: Option<OwnedSemaphorePermit>,
    timed_out: Arc<AtomicBool>,
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.timed_out.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut(this.timeout)))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(other) => {
                // The end of the body, or its failure: nothing more will be buffered.
                this.permit = None;
                Poll::Ready(other)
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    this.permit = None;
                    this.timed_out.store(true, Ordering::Release);
                    return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut(this.timeout)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The body timeout, when a body read failed because its deadline passed.
pub fn timed_out(err: &(dyn std::error::Error + 'static)) -> Option<Duration> {
    let mut source = Some(err);
    while let Some(current) = source {
        if let Some(BodyTimedOut(timeout)) = current.downcast_ref::<BodyTimedOut>() {
            return Some(*timeout);
        }
        source = current.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_by_the_budget() {
        let guard = BodyGuard::new(10 * UNIT, Duration::from_secs(1), Limits::default());
        let a = guard.try_reserve(6 * UNIT).expect("free");
        assert!(guard.try_reserve(5 * UNIT).is_none());
        let b = guard.try_reserve(4 * UNIT).expect("what is left");
        assert_eq!(guard.available_bytes(), 0);
        drop(a);
        assert_eq!(guard.available_bytes(), 6 * UNIT);
        drop(b);
        // A reservation larger than the whole budget takes the whole budget.
        let all = guard.try_reserve(usize::MAX).expect("the whole budget");
        assert!(guard.try_reserve(1).is_none());
        drop(all);
    }

    #[tokio::test]
    async fn a_body_that_stalls_fails_at_its_deadline_and_frees_its_reservation() {
        let guard = BodyGuard::new(100 * UNIT, Duration::from_millis(200), Limits::default());
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        tx.try_send(Ok(Bytes::from_static(b"abc"))).expect("room");
        let flag = Arc::new(AtomicBool::new(false));
        let body = Body::new(GuardedBody {
            inner: Body::from_stream(rx),
            deadline: Box::pin(tokio::time::sleep(guard.timeout)),
            timeout: guard.timeout,
            permit: guard.try_reserve(50 * UNIT),
            timed_out: Arc::clone(&flag),
        });
        assert_eq!(guard.available_bytes(), 50 * UNIT);
        let err = axum::body::to_bytes(body, usize::MAX).await.unwrap_err();
        assert_eq!(timed_out(&err), Some(Duration::from_millis(200)), "{err}");
        assert!(flag.load(Ordering::Relaxed));
        assert_eq!(guard.available_bytes(), 100 * UNIT);
        drop(tx);
    }
}
