//! Connections, bounded: how many are open, how long one may stay silent or idle, how many
//! HTTP/2 streams one may carry, and how long shutdown may wait for them.
//!
//! Every connection is served by hyper's automatic HTTP/1 + HTTP/2 builder with a timer. A
//! watchdog per connection closes it when it has not completed a request's headers within the
//! header timeout of opening, or when it has had no request in flight for the idle timeout.
//! Past the cap of open connections, a new one is still accepted and answered fast: `/healthz`
//! as usual, anything else 503 with `Retry-After`, then closed; past a small second cap for
//! those, it is closed at once. The listener itself never stalls.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::app::Draining;

/// Connection bounds (what the `serve` flags resolve to).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// A new connection must complete its first request's headers within this.
    pub header_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; past this, the fast refusal.
    pub max_connections: usize,
    /// Connections being refused at once; past this, closed without an answer.
    pub max_refusing: usize,
    /// Concurrent streams on one HTTP/2 connection.
    pub http2_max_streams: u32,
    /// How long shutdown waits for in-flight requests before it closes their connections.
    pub shutdown_timeout: Duration,
}

/// How long an over-the-cap connection may take to send its request.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, starts
/// `draining`, asks every connection to finish its requests and close, and after
/// `shutdown_timeout` closes those still open.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    over_capacity: Router,
    limits: ConnectionLimits,
    draining: Draining,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let builder = Arc::new(connection_builder(&limits));
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let refusing = Arc::new(Semaphore::new(limits.max_refusing.max(1)));
    let closing = CancellationToken::new();
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        accept_failed(err).await;
                        continue;
                    }
                };
                if let Ok(permit) = Arc::clone(&open).try_acquire_owned() {
                    let connection = Connection {
                        builder: Arc::clone(&builder),
                        app: app.clone(),
                        limits: limits.clone(),
                        closing: closing.clone(),
                    };
                    tasks.spawn(async move {
                        connection.serve(stream, remote).await;
                        drop(permit);
                    });
                } else if let Ok(permit) = Arc::clone(&refusing).try_acquire_owned() {
                    crate::telemetry::request_refused(503, "too_many_connections");
                    let over_capacity = over_capacity.clone();
                    tasks.spawn(async move {
                        refuse(stream, remote, over_capacity).await;
                        drop(permit);
                    });
                } else {
                    // Closed at once: the client sees the connection end, not a stall.
                    drop(stream);
                }
            }
        }
    }
    drop(listener);
    draining.start();
    closing.cancel();
    let open_now = tasks.len();
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = tasks.len(),
            of = open_now,
            timeout_secs = limits.shutdown_timeout.as_secs_f64(),
            "shutdown deadline passed; closing the connections still open"
        );
        tasks.shutdown().await;
    }
}

/// A failed `accept` (most often the descriptor limit) must not spin the loop.
async fn accept_failed(err: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    ) {
        return;
    }
    tracing::warn!(error = %err, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn connection_builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper starts this timer when it waits for a request's headers, also between
        // keep-alive requests; the watchdog holds the tighter bounds.
        .header_read_timeout(limits.header_timeout.max(limits.idle_timeout))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams)
        .keep_alive_interval(limits.idle_timeout)
        .keep_alive_timeout(limits.header_timeout);
    builder
}

struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: Router,
    limits: ConnectionLimits,
    closing: CancellationToken,
}

impl Connection {
    async fn serve(self, stream: TcpStream, remote: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let (activity, mut watched) = watch::channel(Activity::opened());
        let activity = Arc::new(activity);
        let app = self.app;
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let busy = Busy::begin(&activity);
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(remote));
            let response = app.clone().oneshot(request);
            async move {
                let response = match response.await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(
                    response.map(|inner| Body::new(TrackedBody { inner, _busy: busy })),
                )
            }
        });
        let connection = self.builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        // Once asked to close, the connection finishes what it has in flight (until the
        // shutdown deadline drops it).
        let mut closing = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                    return;
                }
                () = self.closing.cancelled(), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                quiet = expired(&mut watched, &self.limits), if !closing => {
                    tracing::debug!(%remote, ?quiet, "closing a quiet connection");
                    // Nothing is in flight: dropping the connection closes the socket.
                    return;
                }
            }
        }
    }
}

/// Why the watchdog closed a connection.
#[derive(Debug)]
enum Quiet {
    /// No request's headers arrived within the header timeout of opening.
    NoRequest,
    /// No request in flight for the idle timeout.
    Idle,
}

/// What the watchdog knows of a connection.
#[derive(Debug, Clone, Copy)]
struct Activity {
    /// Requests whose response has not been sent whole.
    in_flight: usize,
    /// Whether any request's headers arrived yet.
    served: bool,
    /// When the connection opened or its last request finished.
    quiet_since: Instant,
}

impl Activity {
    fn opened() -> Activity {
        Activity {
            in_flight: 0,
            served: false,
            quiet_since: Instant::now(),
        }
    }
}

/// Resolves when the connection has been quiet for longer than it may be.
async fn expired(watched: &mut watch::Receiver<Activity>, limits: &ConnectionLimits) -> Quiet {
    loop {
        let now = *watched.borrow_and_update();
        if now.in_flight > 0 {
            if watched.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            continue;
        }
        let (quiet, limit) = if now.served {
            (Quiet::Idle, limits.idle_timeout)
        } else {
            (Quiet::NoRequest, limits.header_timeout)
        };
        tokio::select! {
            () = tokio::time::sleep_until(now.quiet_since + limit) => return quiet,
            changed = watched.changed() => {
                if changed.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

/// One request in flight on a connection, from its headers to the end of its response.
struct Busy(Arc<watch::Sender<Activity>>);

impl Busy {
    fn begin(activity: &Arc<watch::Sender<Activity>>) -> Busy {
        activity.send_modify(|a| {
            a.in_flight += 1;
            a.served = true;
        });
        Busy(Arc::clone(activity))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.send_modify(|a| {
            a.in_flight -= 1;
            if a.in_flight == 0 {
                a.quiet_since = Instant::now();
            }
        });
    }
}

/// A response body that keeps its request counted as in flight until it is sent (or dropped):
/// a streamed response (the admin event tail) is not idle.
struct TrackedBody {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<bytes::Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Answers one request of a connection over the cap (HTTP/1, no keep-alive), then closes it.
async fn refuse(stream: TcpStream, remote: SocketAddr, over_capacity: Router) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(remote));
        over_capacity.clone().oneshot(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(REFUSAL_TIMEOUT)
        .keep_alive(false);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    // Bounded whatever the client does: it gets a few seconds for its request and the answer.
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT * 2, connection).await;
}
