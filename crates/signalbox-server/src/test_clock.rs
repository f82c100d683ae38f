//! A clock end-to-end tests can move: the system's time plus an offset that only grows.
//! `serve --test-clock` (hidden) installs it for the whole process (ingest receipt times,
//! engage, flows), and `POST /admin/v1/test-clock {"advance_seconds": N}` moves it forward, so
//! a 4-hour flow delay passes in one request rather than four hours. Without the flag the
//! route answers 404 and the server runs on the system clock.
//!
//! Time still flows at its normal rate between advances; only jumps are added. Nothing moves
//! it backwards, so receipt times in the log stay in order.

use std::sync::atomic::{AtomicI64, Ordering};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};
use signalbox_core::Clock;

use crate::admin::extract::JsonObject;
use crate::admin::{AdminError, AdminKey};
use crate::app::AppState;

/// Longest single jump: a year.
const MAX_ADVANCE_SECONDS: i64 = 366 * 24 * 3600;

/// The system clock shifted forward by an adjustable offset.
#[derive(Debug, Default)]
pub struct ShiftedClock {
    offset_us: AtomicI64,
}

impl ShiftedClock {
    pub fn new() -> ShiftedClock {
        ShiftedClock::default()
    }

    /// Moves the clock forward by `by` (negative durations are refused by the caller).
    pub fn advance(&self, by: SignedDuration) {
        self.offset_us
            .fetch_add(by.as_micros() as i64, Ordering::SeqCst);
    }

    pub fn offset(&self) -> SignedDuration {
        SignedDuration::from_micros(self.offset_us.load(Ordering::SeqCst))
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
            .checked_add(self.offset())
            .unwrap_or(Timestamp::MAX)
    }
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/v1/test-clock", get(show).post(advance))
}

async fn show(_key: AdminKey, State(app): State<AppState>) -> Result<Json<Value>, AdminError> {
    let clock = installed(&app)?;
    Ok(Json(describe(clock)))
}

/// `{"advance_seconds": N}` with `0 < N ≤ 1 year`; answers the new time and total offset.
async fn advance(
    key: AdminKey,
    State(app): State<AppState>,
    body: JsonObject,
) -> Result<Json<Value>, AdminError> {
    let clock = installed(&app)?;
    let body = body.into_map();
    let seconds = body
        .get("advance_seconds")
        .and_then(Value::as_i64)
        .filter(|s| (1..=MAX_ADVANCE_SECONDS).contains(s))
        .ok_or_else(|| {
            AdminError::invalid(
                "advance_seconds",
                format!("must be a whole number of seconds from 1 to {MAX_ADVANCE_SECONDS}"),
            )
        })?;
    clock.advance(SignedDuration::from_secs(seconds));
    tracing::info!(key = key.name(), seconds, "test clock advanced");
    if let Some(engine) = app.engine() {
        engine.engage.notify();
        engine.flows.wake();
    }
    if let Some(sync) = &app.sync {
        sync.notify();
    }
    Ok(Json(describe(clock)))
}

fn installed(app: &AppState) -> Result<&ShiftedClock, AdminError> {
    app.test_clock.as_deref().ok_or(AdminError::NotFound {
        what: "route (serve runs on the system clock)".into(),
        field: None,
    })
}

fn describe(clock: &ShiftedClock) -> Value {
    json!({
        "now": clock.now().to_string(),
        "offset_seconds": clock.offset().as_secs(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_only_forward_from_the_system_time() {
        let clock = ShiftedClock::new();
        let before = Timestamp::now();
        assert!(clock.now() >= before);
        clock.advance(SignedDuration::from_hours(4));
        assert!(clock.now() >= before + SignedDuration::from_hours(4));
        assert_eq!(clock.offset(), SignedDuration::from_hours(4));
    }
}
