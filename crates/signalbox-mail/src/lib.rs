//! Email for flows: Klaviyo-style templates, signed tracking links and an SMTP mailer.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use signalbox_mail::*;
//!
//! // Once, at startup.
//! let mailer = Mailer::new(MailerConfig::new(
//!     "smtp://user:pass@smtp.example.com:587?tls=starttls".parse()?,
//!     "Shop <shop@example.com>",
//! ))?;
//! let links = TrackingLinks::new(LinkSigner::new(b"a long random secret")?, "https://mail.example.com")?;
//! let composer = Composer::new(links, Some("unsubscribe@example.com".into()));
//! let templates = TemplateCache::default();
//!
//! // Per send.
//! let template = templates.get_or_compile(&EmailTemplateSource {
//!     subject: "You left something, {{ first_name|default:\"there\" }}".into(),
//!     html: "<p>{% for item in event.Items %}{{ item.ProductName }}{% endfor %}</p>".into(),
//!     text: None,
//! })?;
//! let mut context = RenderContext::default();
//! context.person.insert("first_name".into(), "Ada".into());
//! context.event = Some(serde_json::json!({"Items": [{"ProductName": "Teapot"}]}));
//! let recipient = Recipient { profile_id: "01J…".into(), email: "ada@example.com".into(), name: None };
//! let email = composer.compose(&template, &recipient, "run-42/action-7", context, None)?;
//! match mailer.send(email).await {
//!     Ok(receipt) => println!("sent {}", receipt.message_id),
//!     Err(error) if error.is_bounce() => { /* record Bounced Email */ }
//!     Err(error) if error.is_permanent() => { /* give up: bad address, configuration */ }
//!     Err(_) => { /* retry later */ }
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`template`]: Klaviyo's Django-style syntax translated to minijinja (`translate.rs`),
//!   Django/Klaviyo filters (`filters.rs`, `dates.rs`), the render context and the preview's
//!   undefined-variable tracking (`context.rs`); [`TemplateCache`] compiles each template once.
//! - [`links`]: HMAC-signed tokens for unsubscribe (`/u/`), preferences (`/p/`), open pixel
//!   (`/t/o/`) and click (`/t/c/`) URLs; HTML rewriting (lol_html) that tracks links and adds
//!   the pixel.
//! - [`text`]: the plain-text part derived from HTML when a template has none.
//! - [`compose`]: template + recipient + context → [`OutgoingEmail`].
//! - [`mailer`]: [`SmtpUrl`] (`smtp://`, `?tls=starttls`, `smtps://`), [`Mailer`] building
//!   the MIME message (text + HTML alternatives, `List-Unsubscribe`, Message-ID from the
//!   idempotency key), [`MailError`] telling bounces (5xx) from retryable failures.
//!   `mailer/pool.rs`: lettre speaks SMTP over connections we open (`TCP_NODELAY`), keep and
//!   reuse; lettre's own transport stalls ~40 ms a message on delayed ACKs.
//! - `tests/it/`: template constructs, the abandoned-checkout email, links, and sends to a
//!   real SMTP server (`tests/smtp/sink.py`, aiosmtpd, at the repository root).
//!   `examples/smtp_throughput.rs`: emails per second to that server.
//!
//! **Invariant:** templates are checked when compiled: an unknown tag or filter, an unclosed
//! block, never a surprise at send time; a variable missing from the data renders empty.
//! **Invariant:** SMTP passwords and the link secret never appear in `Debug`, `Display` or
//! logs.
//! **Invariant:** no clock: `{% now %}` reads [`RenderContext::now`]; the `Date` header is the
//! only wall-clock read, in [`Mailer`].

pub mod compose;
pub mod links;
pub mod mailer;
pub mod template;
pub mod text;

pub use compose::{ComposeError, Composer, Recipient};
pub use links::{LinkClaims, LinkError, LinkKind, LinkSigner, MessageLinks, TrackingLinks};
pub use mailer::{
    ListUnsubscribe, MailError, Mailer, MailerConfig, OutgoingEmail, SentReceipt, SmtpUrl, TlsMode,
};
pub use template::{
    EmailTemplate, EmailTemplateSource, Part, Preview, RenderContext, RenderedEmail, TemplateCache,
    TemplateError,
};
