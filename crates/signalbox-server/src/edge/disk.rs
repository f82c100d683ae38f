//! The free-space floor: below `--min-free-disk` on the data folder's file system, what writes
//! (the Tracking API and the Klaviyo-compatible write API) answers 503 with `Retry-After`
//! rather than acknowledge what it may not be able to keep. Reads go on. The free space is
//! read with one `statvfs` a second, so a request only loads an atomic; when space comes back
//! the next reading lifts the floor, with no restart.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::app::AppState;
use crate::klaviyo::error::ApiError;
use crate::telemetry;

/// Seconds a client is told to wait when the floor refuses a write.
pub const RETRY_AFTER_SECS: u32 = 30;

/// The floor and the last reading of the free space. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DiskFloor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Bytes that must stay free; 0: no floor.
    floor: u64,
    path: PathBuf,
    free: AtomicU64,
    low: AtomicBool,
}

impl DiskFloor {
    /// No floor: every write goes through.
    pub fn off() -> DiskFloor {
        DiskFloor::new(PathBuf::new(), 0)
    }

    fn new(path: PathBuf, floor: u64) -> DiskFloor {
        DiskFloor {
            inner: Arc::new(Inner {
                floor,
                path,
                free: AtomicU64::new(u64::MAX),
                low: AtomicBool::new(false),
            }),
        }
    }

    /// A floor of `floor` bytes on the file system holding `path`, read now and then every
    /// `every` on a task of the current runtime, for as long as a clone lives.
    pub fn watch(path: &Path, floor: u64, every: Duration) -> DiskFloor {
        let disk = DiskFloor::new(path.to_path_buf(), floor);
        if floor == 0 {
            return disk;
        }
        disk.read();
        let weak = Arc::downgrade(&disk.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                DiskFloor { inner }.read();
            }
        });
        disk
    }

    /// Reads the free space now and returns it.
    pub fn read(&self) -> u64 {
        let free = match rustix::fs::statvfs(&self.inner.path) {
            Ok(stat) => stat.f_bavail.saturating_mul(stat.f_frsize),
            Err(err) => {
                // Unknown is not low: a failing statvfs must not stop ingest by itself.
                tracing::warn!(error = %err, "cannot read the data folder's free space");
                u64::MAX
            }
        };
        let low = free < self.inner.floor;
        let was = self.inner.low.swap(low, Ordering::Relaxed);
        self.inner.free.store(free, Ordering::Relaxed);
        if low != was {
            if low {
                tracing::warn!(
                    free_bytes = free,
                    floor_bytes = self.inner.floor,
                    "free disk space is below --min-free-disk: refusing writes with 503 until it \
                     comes back"
                );
            } else {
                tracing::info!(
                    free_bytes = free,
                    "free disk space is back: taking writes again"
                );
            }
        }
        metrics::gauge!("signalbox_disk_free_bytes").set(free.min(1 << 53) as f64);
        metrics::gauge!("signalbox_disk_low").set(if low { 1.0 } else { 0.0 });
        free
    }

    /// Whether the last reading was below the floor.
    pub fn is_low(&self) -> bool {
        self.inner.low.load(Ordering::Relaxed)
    }

    /// What `/healthz` shows; `None` without a floor.
    pub fn status(&self) -> Option<serde_json::Value> {
        if self.inner.floor == 0 {
            return None;
        }
        Some(json!({
            "free_bytes": self.inner.free.load(Ordering::Relaxed),
            "min_free_bytes": self.inner.floor,
            "low": self.is_low(),
        }))
    }

    fn message(&self) -> String {
        format!(
            "the server's disk has {} bytes free, below its floor of {} (--min-free-disk); \
             nothing was stored: retry later",
            self.inner.free.load(Ordering::Relaxed),
            self.inner.floor
        )
    }
}

/// Whether a request writes: a call to the Tracking API, or a write of the Klaviyo API.
fn writes(method: &Method, path: &str) -> bool {
    if path.starts_with("/v1/") {
        return method == Method::POST;
    }
    path.starts_with("/api/")
        && matches!(
            *method,
            Method::POST | Method::PATCH | Method::PUT | Method::DELETE
        )
}

/// Refuses writes with 503 while the disk is below its floor, in each API's own error shape.
pub async fn guard_disk(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let disk = &app.disk;
    if !disk.is_low() || !writes(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    if request.uri().path().starts_with("/api/") {
        return ApiError::unavailable(disk.message()).into_response();
    }
    telemetry::request_refused(503, "insufficient_storage");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())],
        Json(json!({
            "success": false,
            "code": "insufficient_storage",
            "message": disk.message(),
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tracking_calls_and_klaviyo_writes_are_writes() {
        assert!(writes(&Method::POST, "/v1/batch"));
        assert!(writes(&Method::POST, "/v1/track"));
        assert!(!writes(&Method::GET, "/v1/projects/key/settings"));
        assert!(writes(&Method::POST, "/api/profiles"));
        assert!(writes(&Method::PATCH, "/api/profiles/01H"));
        assert!(writes(&Method::DELETE, "/api/templates/abc"));
        assert!(!writes(&Method::GET, "/api/profiles"));
        assert!(!writes(&Method::POST, "/admin/v1/sources"));
        assert!(!writes(&Method::GET, "/healthz"));
    }

    #[tokio::test]
    async fn a_floor_above_the_free_space_is_low_and_none_is_never() {
        let dir = tempfile::tempdir().unwrap();
        let high = DiskFloor::watch(dir.path(), u64::MAX, Duration::from_secs(1));
        assert!(high.is_low());
        assert_eq!(high.status().unwrap()["low"], true);
        assert!(high.message().contains("--min-free-disk"));
        let none = DiskFloor::watch(dir.path(), 0, Duration::from_secs(1));
        assert!(!none.is_low());
        assert!(none.status().is_none());
        let low = DiskFloor::watch(dir.path(), 1, Duration::from_secs(1));
        assert!(!low.is_low());
        assert!(low.read() > 0);
    }
}
