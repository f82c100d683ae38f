//! Sending over SMTP: the server from a URL, pooled connections, typed failures.
//!
//! URL forms ([`SmtpUrl`]): `smtp://host:port` (plain, for a local relay or sink),
//! `smtp://user:pass@host:587?tls=starttls` (STARTTLS required), `smtps://user:pass@host:465`
//! (TLS from the first byte). User and password are percent-decoded from the userinfo; they
//! never appear in `Debug`/`Display` output or logs.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::Message;
use sha2::{Digest, Sha256};

mod pool;

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plaintext (`smtp://` without `tls`): local relays and test sinks only.
    None,
    /// Plaintext greeting, then STARTTLS, required (`smtp://…?tls=starttls`).
    StartTls,
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

/// An SMTP server address with credentials. `Display` and `Debug` redact the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub username: Option<String>,
    password: Option<String>,
}

impl SmtpUrl {
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
}

impl FromStr for SmtpUrl {
    type Err = MailError;

    fn from_str(text: &str) -> Result<SmtpUrl, MailError> {
        let invalid = |reason: &str| MailError::InvalidUrl(reason.to_owned());
        let url = url::Url::parse(text.trim()).map_err(|error| {
            // The url crate's message never echoes the input, so no secret leaks here.
            MailError::InvalidUrl(error.to_string())
        })?;
        let tls_param = url
            .query_pairs()
            .find(|(key, _)| key == "tls")
            .map(|(_, value)| value.to_ascii_lowercase());
        let (tls, default_port) = match (url.scheme(), tls_param.as_deref()) {
            ("smtp", None | Some("none" | "off" | "false")) => (TlsMode::None, 25),
            ("smtp", Some("starttls" | "required")) => (TlsMode::StartTls, 587),
            ("smtps", None | Some("implicit" | "on" | "true")) => (TlsMode::Implicit, 465),
            ("smtp" | "smtps", Some(_)) => {
                return Err(invalid("tls must be `starttls` (smtp://) or absent"));
            }
            _ => return Err(invalid("the scheme must be smtp:// or smtps://")),
        };
        let host = url
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| invalid("the host is missing"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let decode = |part: &str| {
            percent_encoding::percent_decode_str(part)
                .decode_utf8()
                .map(|text| text.into_owned())
                .map_err(|_| invalid("the userinfo is not valid utf-8"))
        };
        let username = match url.username() {
            "" => None,
            user => Some(decode(user)?),
        };
        let password = url.password().map(decode).transpose()?;
        if password.is_some() && username.is_none() {
            return Err(invalid("a password needs a user name"));
        }
        Ok(SmtpUrl {
            host,
            port: url.port().unwrap_or(default_port),
            tls,
            username,
            password,
        })
    }
}

impl fmt::Display for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls == TlsMode::Implicit {
            "smtps"
        } else {
            "smtp"
        };
        write!(f, "{scheme}://")?;
        if let Some(user) = &self.username {
            let user = percent_encoding::utf8_percent_encode(user, USERINFO);
            write!(f, "{user}")?;
            if self.password.is_some() {
                f.write_str(":[redacted]")?;
            }
            f.write_str("@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        if self.tls == TlsMode::StartTls {
            f.write_str("?tls=starttls")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SmtpUrl({self})")
    }
}

const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What a [`Mailer`] is built from.
#[derive(Debug, Clone)]
pub struct MailerConfig {
    /// `--smtp-url` / `SIGNALBOX_SMTP_URL`.
    pub smtp_url: SmtpUrl,
    /// `--mail-from` / `SIGNALBOX_MAIL_FROM`: `shop@example.com` or `Shop <shop@example.com>`;
    /// used when an email names no sender of its own.
    pub default_from: String,
    /// Most connections open at once (each carries one message at a time).
    pub pool_size: u32,
    /// Timeout of each SMTP command.
    pub timeout: Duration,
    /// Extra trust anchors (PEM) for a relay with a private certificate authority.
    pub root_certificates_pem: Vec<Vec<u8>>,
    /// The name announced in EHLO; `None` uses the machine's host name.
    pub hello_name: Option<String>,
}

impl MailerConfig {
    pub fn new(smtp_url: SmtpUrl, default_from: impl Into<String>) -> MailerConfig {
        MailerConfig {
            smtp_url,
            default_from: default_from.into(),
            pool_size: 16,
            timeout: Duration::from_secs(30),
            root_certificates_pem: Vec::new(),
            hello_name: None,
        }
    }
}

/// The `List-Unsubscribe` target(s) of an email (RFC 2369, one-click per RFC 8058).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListUnsubscribe {
    /// The signed one-click URL (`https://…/u/{token}`); also sets
    /// `List-Unsubscribe-Post: List-Unsubscribe=One-Click`.
    pub url: String,
    /// An address that unsubscribes by mail (`unsubscribe@example.com`), if configured.
    pub mailto: Option<String>,
}

impl ListUnsubscribe {
    fn header_value(&self) -> String {
        match &self.mailto {
            Some(mailto) => {
                let mailto = mailto.trim();
                let mailto = mailto.strip_prefix("mailto:").unwrap_or(mailto);
                format!("<{}>, <mailto:{mailto}>", self.url)
            }
            None => format!("<{}>", self.url),
        }
    }
}

/// One email to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEmail {
    /// The sender (a flow's `from_email`); `None` uses the configured default.
    pub from: Option<String>,
    pub reply_to: Option<String>,
    /// `ada@example.com` or `Ada Lovelace <ada@example.com>`.
    pub to: String,
    pub subject: String,
    pub html: String,
    pub text: String,
    pub list_unsubscribe: Option<ListUnsubscribe>,
    /// Further headers, e.g. `X-Signalbox-Flow`. Names must be printable ASCII.
    pub headers: Vec<(String, String)>,
    /// Stable across retries of the same send (e.g. flow run + action); the Message-ID is
    /// derived from it, so a retried message is recognisably the same message.
    pub idempotency_key: String,
}

/// A message the SMTP server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentReceipt {
    /// The Message-ID header, with angle brackets.
    pub message_id: String,
    /// The envelope sender used.
    pub from: String,
    /// The server's final reply code (250).
    pub code: u16,
    /// The server's reply text (often a queue id).
    pub response: String,
}

/// Why an email was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// The SMTP URL is unusable (never contains the password).
    #[error("invalid smtp url: {0}")]
    InvalidUrl(String),
    /// A sender or recipient address is not an address.
    #[error("invalid {field} address {address:?}: {reason}")]
    InvalidAddress {
        field: &'static str,
        address: String,
        reason: String,
    },
    /// The message could not be built (a header name that is not a header name …).
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// TLS settings could not be built (a bad PEM certificate …).
    #[error("invalid tls configuration: {0}")]
    Tls(String),
    /// The server refused the message for good (5xx): the recipient does not exist, the
    /// sender is not allowed, the content was refused. Not retried; a rejected recipient
    /// becomes a `Bounced Email` event.
    #[error("rejected by the smtp server: {code} {message}")]
    Rejected { code: u16, message: String },
    /// The server refused our login (530, 534, 535, 538): wrong credentials in the SMTP URL.
    /// Not a bounce, and retryable: every send fails the same way until the operator fixes
    /// the configuration, and none of them should be dropped meanwhile.
    #[error("the smtp server refused the login: {code} {message}")]
    Authentication { code: u16, message: String },
    /// Worth retrying later: a 4xx reply, a connection, TLS or timeout failure, a server
    /// lacking a required extension (STARTTLS, a login mechanism).
    #[error("temporary smtp failure: {message}")]
    Transient { code: Option<u16>, message: String },
}

impl MailError {
    /// Retrying the same message will not help.
    pub fn is_permanent(&self) -> bool {
        !matches!(
            self,
            MailError::Transient { .. } | MailError::Authentication { .. }
        )
    }

    /// The server refused the message (5xx): a bounce.
    pub fn is_bounce(&self) -> bool {
        matches!(self, MailError::Rejected { .. })
    }

    fn from_smtp(error: lettre::transport::smtp::Error) -> MailError {
        let code = error.status().map(u16::from);
        let message = match std::error::Error::source(&error) {
            Some(source) => source.to_string(),
            None => error.to_string(),
        };
        match code {
            Some(code @ (530 | 534 | 535 | 538)) => MailError::Authentication { code, message },
            Some(code) if error.is_permanent() => MailError::Rejected { code, message },
            _ => MailError::Transient {
                code,
                message: if code.is_some() {
                    message
                } else {
                    error.to_string()
                },
            },
        }
    }
}

/// Sends emails through one SMTP server over a pool of connections (opened on demand, kept
/// open, at most [`MailerConfig::pool_size`]). Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct Mailer {
    pool: std::sync::Arc<pool::Pool>,
    default_from: Mailbox,
    server: String,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .field("default_from", &self.default_from.to_string())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    pub fn new(config: MailerConfig) -> Result<Mailer, MailError> {
        let default_from = parse_mailbox("from", &config.default_from)?;
        let url = &config.smtp_url;
        let tls_parameters = if url.tls == TlsMode::None {
            None
        } else {
            let mut parameters = TlsParameters::builder(url.host.clone());
            for pem in &config.root_certificates_pem {
                let certificate = Certificate::from_pem(pem)
                    .map_err(|error| MailError::Tls(error.to_string()))?;
                parameters = parameters.add_root_certificate(certificate);
            }
            Some(
                parameters
                    .build_rustls()
                    .map_err(|error| MailError::Tls(error.to_string()))?,
            )
        };
        let credentials = match (&url.username, url.password()) {
            (Some(user), Some(password)) => {
                Some(Credentials::new(user.clone(), password.to_owned()))
            }
            _ => None,
        };
        let settings = pool::ConnectSettings {
            host: url.host.clone(),
            port: url.port,
            tls: url.tls,
            tls_parameters,
            credentials,
            hello_name: config
                .hello_name
                .clone()
                .map(ClientId::Domain)
                .unwrap_or_default(),
            timeout: config.timeout,
        };
        Ok(Mailer {
            pool: std::sync::Arc::new(pool::Pool::new(settings, config.pool_size)),
            default_from,
            server: url.to_string(),
        })
    }

    /// The server, password redacted (for logs and startup lines).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Connects, greets, logs in and quits: is the server there and does it accept us?
    pub async fn check_connection(&self) -> Result<(), MailError> {
        self.pool.check().await
    }

    /// Sends one email and waits for the server's verdict.
    #[tracing::instrument(name = "mail.send", skip_all, fields(message_id))]
    pub async fn send(&self, email: OutgoingEmail) -> Result<SentReceipt, MailError> {
        let message = self.build(&email)?;
        let message_id = message
            .headers()
            .get_raw("Message-ID")
            .unwrap_or_default()
            .to_owned();
        tracing::Span::current().record("message_id", message_id.as_str());
        let from = message
            .envelope()
            .from()
            .map(ToString::to_string)
            .unwrap_or_default();
        let formatted = message.formatted();
        match self.pool.send(message.envelope(), &formatted).await {
            Ok(response) => {
                let receipt = SentReceipt {
                    message_id,
                    from,
                    code: u16::from(response.code()),
                    response: response.message().collect::<Vec<_>>().join(" "),
                };
                tracing::debug!(code = receipt.code, "smtp server accepted the message");
                Ok(receipt)
            }
            Err(error) => {
                tracing::debug!(%error, permanent = error.is_permanent(), "smtp send failed");
                Err(error)
            }
        }
    }

    /// The message `send` would transmit, formatted (RFC 5322 bytes).
    pub fn format(&self, email: &OutgoingEmail) -> Result<Vec<u8>, MailError> {
        Ok(self.build(email)?.formatted())
    }

    fn build(&self, email: &OutgoingEmail) -> Result<Message, MailError> {
        let from = match &email.from {
            Some(from) => parse_mailbox("from", from)?,
            None => self.default_from.clone(),
        };
        let to = parse_mailbox("to", &email.to)?;
        let domain = from.email.domain().to_owned();
        let mut builder = Message::builder()
            .from(from)
            .to(to)
            .subject(email.subject.clone())
            .message_id(Some(message_id(&email.idempotency_key, &domain)))
            .date_now();
        if let Some(reply_to) = &email.reply_to {
            builder = builder.reply_to(parse_mailbox("reply-to", reply_to)?);
        }
        if let Some(list_unsubscribe) = &email.list_unsubscribe {
            builder = builder
                .raw_header(raw_header(
                    "List-Unsubscribe",
                    list_unsubscribe.header_value(),
                )?)
                .raw_header(raw_header(
                    "List-Unsubscribe-Post",
                    "List-Unsubscribe=One-Click".to_owned(),
                )?);
        }
        for (name, value) in &email.headers {
            builder = builder.raw_header(raw_header(name, value.clone())?);
        }
        builder
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(email.text.clone()),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(email.html.clone()),
                    ),
            )
            .map_err(|error| MailError::InvalidMessage(error.to_string()))
    }
}

fn parse_mailbox(field: &'static str, text: &str) -> Result<Mailbox, MailError> {
    text.trim()
        .parse::<Mailbox>()
        .map_err(|error| MailError::InvalidAddress {
            field,
            address: text.to_owned(),
            reason: error.to_string(),
        })
}

fn raw_header(name: &str, value: String) -> Result<HeaderValue, MailError> {
    let valid_name = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    if !valid_name {
        return Err(MailError::InvalidMessage(format!(
            "invalid header name {name:?}"
        )));
    }
    if value.contains(['\r', '\n']) {
        return Err(MailError::InvalidMessage(format!(
            "header {name} has a line break in its value"
        )));
    }
    let name = HeaderName::new_from_ascii(name.to_owned())
        .map_err(|_| MailError::InvalidMessage(format!("invalid header name {name:?}")))?;
    Ok(HeaderValue::new(name, value))
}

/// `<{32 hex digits of SHA-256(key)}@{domain}>`: the same key always gives the same id.
pub fn message_id(idempotency_key: &str, domain: &str) -> String {
    let digest = Sha256::digest(idempotency_key.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("<{hex}@{domain}>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        let url: SmtpUrl = "smtp://127.0.0.1:2525".parse().unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.tls),
            ("127.0.0.1", 2525, TlsMode::None)
        );
        let url: SmtpUrl = "smtp://us%40er:p%3Ass@mail.test:587?tls=starttls"
            .parse()
            .unwrap();
        assert_eq!(url.tls, TlsMode::StartTls);
        assert_eq!(url.username.as_deref(), Some("us@er"));
        assert_eq!(url.password(), Some("p:ss"));
        let url: SmtpUrl = "smtps://u:secret@mail.test".parse().unwrap();
        assert_eq!((url.port, url.tls), (465, TlsMode::Implicit));
        assert!("http://mail.test".parse::<SmtpUrl>().is_err());
        assert!("smtp://mail.test?tls=maybe".parse::<SmtpUrl>().is_err());
    }

    #[test]
    fn secrets_are_redacted() {
        let url: SmtpUrl = "smtp://user:hunter2@mail.test:587?tls=starttls"
            .parse()
            .unwrap();
        assert_eq!(
            url.to_string(),
            "smtp://user:[redacted]@mail.test:587?tls=starttls"
        );
        assert!(!format!("{url:?}").contains("hunter2"));
        let config = MailerConfig::new(url, "a@b.test");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn message_ids_follow_the_key() {
        assert_eq!(message_id("k", "x.test"), message_id("k", "x.test"));
        assert_ne!(message_id("k", "x.test"), message_id("k2", "x.test"));
        assert!(message_id("k", "x.test").ends_with("@x.test>"));
    }
}
