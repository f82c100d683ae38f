//! SMTP connections: opened with `TCP_NODELAY`, kept open and reused, at most `max_size` at a
//! time.
//!
//! lettre's own pooled transport opens its sockets with Nagle's algorithm on. It writes a
//! message body and the closing `.` in two writes, so the second waits for the server to
//! acknowledge the first, and servers delay that acknowledgement (40 ms on Linux): about 25
//! messages per second per connection. Here lettre speaks SMTP over sockets we open.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
#[allow(deprecated)]
use lettre::transport::smtp::client::AsyncNetworkStream;
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

use super::{MailError, TlsMode};

/// A connection idle this long is checked with NOOP before reuse.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(5);
/// A connection idle this long is closed rather than reused (servers drop idle clients).
const MAX_IDLE: Duration = Duration::from_secs(60);

pub(super) struct ConnectSettings {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) tls: TlsMode,
    pub(super) tls_parameters: Option<TlsParameters>,
    pub(super) credentials: Option<Credentials>,
    pub(super) hello_name: ClientId,
    pub(super) timeout: Duration,
}

pub(super) struct Pool {
    settings: ConnectSettings,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    permits: Semaphore,
}

impl Pool {
    pub(super) fn new(settings: ConnectSettings, max_size: u32) -> Pool {
        Pool {
            settings,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(max_size.max(1) as usize),
        }
    }

    /// Sends one message over a pooled connection; a connection that failed is closed.
    pub(super) async fn send(
        &self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Response, MailError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| MailError::Transient {
                code: None,
                message: "the mailer is shut down".to_owned(),
            })?;
        let mut connection = match self.reusable().await {
            Some(connection) => connection,
            None => self.connect().await?,
        };
        let timeout = self.settings.timeout;
        match tokio::time::timeout(timeout, connection.send(envelope, message)).await {
            Ok(Ok(response)) => {
                self.lock().push((connection, Instant::now()));
                Ok(response)
            }
            // lettre closes a connection on a failed command; it is not reused.
            Ok(Err(error)) => Err(MailError::from_smtp(error)),
            Err(_) => Err(timed_out("sending")),
        }
    }

    /// Opens a connection, greets, logs in, and closes it again.
    pub(super) async fn check(&self) -> Result<(), MailError> {
        let mut connection = self.connect().await?;
        connection.quit().await.map_err(MailError::from_smtp)?;
        Ok(())
    }

    async fn reusable(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let (mut connection, since) = self.lock().pop()?;
            let idle = since.elapsed();
            if connection.has_broken() || idle > MAX_IDLE {
                self.close(connection).await;
                continue;
            }
            if idle > CHECK_AFTER_IDLE {
                let alive =
                    tokio::time::timeout(self.settings.timeout, connection.test_connected()).await;
                if !matches!(alive, Ok(true)) {
                    self.close(connection).await;
                    continue;
                }
            }
            return Some(connection);
        }
    }

    /// Says QUIT (briefly) and drops the connection.
    async fn close(&self, mut connection: AsyncSmtpConnection) {
        let _ = tokio::time::timeout(Duration::from_secs(1), connection.abort()).await;
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, MailError> {
        let settings = &self.settings;
        tokio::time::timeout(settings.timeout, async {
            let tcp = TcpStream::connect((settings.host.as_str(), settings.port))
                .await
                .map_err(|error| MailError::Transient {
                    code: None,
                    message: format!(
                        "connection to {}:{} failed: {error}",
                        settings.host, settings.port
                    ),
                })?;
            tcp.set_nodelay(true)
                .map_err(|error| MailError::Transient {
                    code: None,
                    message: format!("socket setup failed: {error}"),
                })?;
            let stream: Box<dyn AsyncTokioStream> = match (&settings.tls, &settings.tls_parameters)
            {
                (TlsMode::Implicit, Some(parameters)) => {
                    Box::new(ImplicitTls::connect(tcp, parameters.clone()).await?)
                }
                _ => Box::new(tcp),
            };
            let mut connection =
                AsyncSmtpConnection::connect_with_transport(stream, &settings.hello_name)
                    .await
                    .map_err(MailError::from_smtp)?;
            if let (TlsMode::StartTls, Some(parameters)) = (&settings.tls, &settings.tls_parameters)
            {
                connection
                    .starttls(parameters.clone(), &settings.hello_name)
                    .await
                    .map_err(MailError::from_smtp)?;
            }
            if let Some(credentials) = &settings.credentials {
                connection
                    .auth(DEFAULT_MECHANISMS, credentials)
                    .await
                    .map_err(MailError::from_smtp)?;
            }
            Ok(connection)
        })
        .await
        .unwrap_or_else(|_| Err(timed_out("connecting")))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(AsyncSmtpConnection, Instant)>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn timed_out(what: &str) -> MailError {
    MailError::Transient {
        code: None,
        message: format!("timed out {what}"),
    }
}

/// A TLS stream from the first byte (`smtps://`), built with lettre's TLS setup over our
/// socket and seen through Tokio's I/O traits.
#[allow(deprecated)]
struct ImplicitTls {
    stream: Compat<AsyncNetworkStream>,
    peer: SocketAddr,
}

#[allow(deprecated)]
impl ImplicitTls {
    async fn connect(tcp: TcpStream, parameters: TlsParameters) -> Result<ImplicitTls, MailError> {
        let peer = tcp.peer_addr().map_err(|error| MailError::Transient {
            code: None,
            message: format!("socket setup failed: {error}"),
        })?;
        let mut stream = AsyncNetworkStream::use_existing_tokio1(Box::new(tcp));
        stream
            .upgrade_tls(parameters)
            .await
            .map_err(MailError::from_smtp)?;
        Ok(ImplicitTls {
            stream: stream.compat(),
            peer,
        })
    }
}

impl std::fmt::Debug for ImplicitTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImplicitTls")
            .field("peer", &self.peer)
            .finish()
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }
}

impl AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
