//! Sending through a real SMTP server process (aiosmtpd) and reading back what it received.

use std::path::Path;
use std::time::Duration;

use mail_parser::{HeaderValue, MessageParser};
use signalbox_mail::{MailError, Mailer, MailerConfig, OutgoingEmail, SmtpUrl};

use super::checkout::{checkout_email, BASE};
use super::sink::{SinkOptions, SmtpSink};

const DEFAULT_FROM: &str = "Tea & Co <shop@tea.test>";

fn mailer_for(url: &str) -> Mailer {
    mailer_with(url, Vec::new())
}

fn mailer_with(url: &str, roots: Vec<Vec<u8>>) -> Mailer {
    let mut config = MailerConfig::new(url.parse::<SmtpUrl>().expect("an smtp url"), DEFAULT_FROM);
    config.timeout = Duration::from_secs(10);
    config.root_certificates_pem = roots;
    config.hello_name = Some("signalbox.test".into());
    Mailer::new(config).expect("a mailer")
}

fn simple_email(to: &str, key: &str) -> OutgoingEmail {
    OutgoingEmail {
        from: None,
        reply_to: None,
        to: to.to_owned(),
        subject: format!("Hello {key}"),
        html: format!("<p>Hello {key}</p>"),
        text: format!("Hello {key}\n"),
        list_unsubscribe: None,
        headers: Vec::new(),
        idempotency_key: key.to_owned(),
    }
}

fn header_text(message: &mail_parser::Message<'_>, name: &str) -> String {
    match message.header(name) {
        Some(HeaderValue::Text(text)) => text.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[tokio::test]
async fn the_checkout_email_arrives_with_both_parts_headers_and_links() {
    let sink = SmtpSink::plain();
    let mailer = mailer_for(&sink.url());
    let email = checkout_email("flow-7/run-42/action-2");
    let unsubscribe_url = email.list_unsubscribe.as_ref().expect("set").url.clone();
    let receipt = mailer.send(email.clone()).await.expect("accepted");
    assert_eq!(receipt.code, 250);
    assert!(receipt.response.contains("queued as"), "{receipt:?}");
    assert_eq!(receipt.from, "shop@tea.test");

    let captured = sink.wait_for(1);
    assert_eq!(captured.len(), 1);
    let captured = &captured[0];
    assert_eq!(captured.mail_from, "shop@tea.test");
    assert_eq!(captured.rcpt_tos, vec!["ada@example.com"]);

    let message = MessageParser::default()
        .parse(&captured.raw)
        .expect("a parsable message");
    assert_eq!(
        message.subject(),
        Some("Ada, your Cast Iron Teapot is waiting")
    );
    let to = message.to().and_then(|to| to.first()).expect("a To");
    assert_eq!(to.address(), Some("ada@example.com"));
    assert_eq!(to.name(), Some("Ada Lovelace"));
    let from = message
        .from()
        .and_then(|from| from.first())
        .expect("a From");
    assert_eq!(
        (from.name(), from.address()),
        (Some("Tea & Co"), Some("shop@tea.test"))
    );
    assert_eq!(
        message.message_id().map(|id| format!("<{id}>")),
        Some(receipt.message_id.clone())
    );
    assert!(receipt.message_id.ends_with("@tea.test>"));

    // RFC 2369 / RFC 8058 headers.
    let unfolded = |name: &str| {
        message
            .header_raw(name)
            .map(|raw| raw.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(
        unfolded("List-Unsubscribe"),
        format!("<{unsubscribe_url}>, <mailto:unsubscribe@tea.test>")
    );
    assert_eq!(
        unfolded("List-Unsubscribe-Post"),
        "List-Unsubscribe=One-Click"
    );
    assert!(unsubscribe_url.starts_with(&format!("{BASE}/u/")));

    // Both parts, decoded, equal to what was sent.
    assert_eq!(message.text_body_count(), 1);
    assert_eq!(message.html_body_count(), 1);
    // On the wire lines end in CRLF.
    let text = message
        .body_text(0)
        .expect("a text part")
        .replace("\r\n", "\n");
    let html = message
        .body_html(0)
        .expect("an html part")
        .replace("\r\n", "\n");
    assert_eq!(text.trim_end(), email.text.trim_end());
    assert_eq!(html.trim_end(), email.html.trim_end());
    assert!(text.contains("4 × €8.50 = €34.00"));
    assert!(html.contains("<img src=\"https://cdn.tea.test/img/sencha.jpg\""));
    assert!(html.contains(&format!("href=\"{BASE}/t/c/")));
    assert!(html.contains(&format!("<img src=\"{BASE}/t/o/")));
    assert!(html.contains(&format!("href=\"{unsubscribe_url}\"")));
}

#[tokio::test]
async fn the_same_idempotency_key_gives_the_same_message_id() {
    let sink = SmtpSink::plain();
    let mailer = mailer_for(&sink.url());
    let first = mailer
        .send(simple_email("a@example.com", "k1"))
        .await
        .expect("sent");
    let again = mailer
        .send(simple_email("a@example.com", "k1"))
        .await
        .expect("sent");
    let other = mailer
        .send(simple_email("a@example.com", "k2"))
        .await
        .expect("sent");
    assert_eq!(first.message_id, again.message_id);
    assert_ne!(first.message_id, other.message_id);
    assert_eq!(sink.wait_for(3).len(), 3);
}

#[tokio::test]
async fn a_flows_from_email_overrides_the_default_sender() {
    let sink = SmtpSink::plain();
    let mailer = mailer_for(&sink.url());
    let mut email = simple_email("Bob <bob@example.com>", "from-override");
    email.from = Some("Flows Team <flows@tea.test>".into());
    email.reply_to = Some("help@tea.test".into());
    email.subject = "Grüße, Bob — 20 % off €".into();
    email.text = "Grüße — ünïcödé\n".into();
    email
        .headers
        .push(("X-Signalbox-Flow".into(), "welcome".into()));
    let receipt = mailer.send(email).await.expect("sent");
    assert_eq!(receipt.from, "flows@tea.test");
    assert!(receipt.message_id.ends_with("@tea.test>"));
    let captured = sink.wait_for(1);
    assert_eq!(captured[0].mail_from, "flows@tea.test");
    assert_eq!(captured[0].rcpt_tos, vec!["bob@example.com"]);
    let message = MessageParser::default()
        .parse(&captured[0].raw)
        .expect("parsable");
    let from = message
        .from()
        .and_then(|from| from.first())
        .expect("a From");
    assert_eq!(from.address(), Some("flows@tea.test"));
    let reply_to = message
        .reply_to()
        .and_then(|to| to.first())
        .expect("a Reply-To");
    assert_eq!(reply_to.address(), Some("help@tea.test"));
    assert_eq!(header_text(&message, "X-Signalbox-Flow"), "welcome");
    assert_eq!(message.subject(), Some("Grüße, Bob — 20 % off €"));
    assert_eq!(
        message.body_text(0).as_deref().map(str::trim_end),
        Some("Grüße — ünïcödé")
    );
}

#[tokio::test]
async fn a_rejected_recipient_is_a_permanent_bounce() {
    let sink = SmtpSink::start(SinkOptions {
        reject_prefixes: vec!["bounce".into()],
        ..SinkOptions::default()
    })
    .expect("sink");
    let mailer = mailer_for(&sink.url());
    let error = mailer
        .send(simple_email("bounce-me@example.com", "b1"))
        .await
        .expect_err("rejected");
    match &error {
        MailError::Rejected { code, message } => {
            assert_eq!(*code, 550);
            assert!(message.contains("mailbox unavailable"), "{message}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(error.is_bounce() && error.is_permanent());
    // The connection pool recovers: the next message goes through.
    mailer
        .send(simple_email("fine@example.com", "b2"))
        .await
        .expect("the next message is accepted");
    let captured = sink.wait_for(1);
    assert_eq!(captured.len(), 1);
    assert_eq!(captured[0].rcpt_tos, vec!["fine@example.com"]);
}

#[tokio::test]
async fn a_deferred_recipient_is_transient() {
    let sink = SmtpSink::start(SinkOptions {
        defer_prefixes: vec!["later".into()],
        ..SinkOptions::default()
    })
    .expect("sink");
    let error = mailer_for(&sink.url())
        .send(simple_email("later@example.com", "d1"))
        .await
        .expect_err("deferred");
    assert!(
        matches!(
            error,
            MailError::Transient {
                code: Some(451),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.is_permanent() && !error.is_bounce());
}

#[tokio::test]
async fn an_unreachable_server_is_transient() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let error = mailer_for(&format!("smtp://127.0.0.1:{port}"))
        .send(simple_email("a@example.com", "u1"))
        .await
        .expect_err("nobody listens");
    assert!(
        matches!(error, MailError::Transient { code: None, .. }),
        "{error:?}"
    );
    assert!(!error.is_permanent());
}

#[tokio::test]
async fn bad_addresses_are_refused_before_connecting() {
    let mailer = mailer_for("smtp://127.0.0.1:9");
    let error = mailer
        .send(simple_email("not an address", "x"))
        .await
        .expect_err("invalid");
    assert!(
        matches!(error, MailError::InvalidAddress { field: "to", .. }),
        "{error:?}"
    );
    assert!(error.is_permanent() && !error.is_bounce());
    let mut email = simple_email("a@example.com", "x");
    email.headers.push(("Bad Header".into(), "x".into()));
    assert!(matches!(
        mailer.send(email).await,
        Err(MailError::InvalidMessage(_))
    ));
}

#[tokio::test]
async fn credentials_in_the_url_log_in_and_wrong_ones_are_reported() {
    let sink = SmtpSink::start(SinkOptions {
        auth: Some(("mailer@tea.test".into(), "p@ss:word".into())),
        ..SinkOptions::default()
    })
    .expect("sink");
    let good = format!("smtp://mailer%40tea.test:p%40ss%3Aword@{}", sink.addr);
    let mailer = mailer_for(&good);
    assert!(!format!("{mailer:?}").contains("p@ss"), "{mailer:?}");
    assert!(mailer.server().contains("[redacted]"));
    mailer.check_connection().await.expect("the login works");
    mailer
        .send(simple_email("a@example.com", "auth"))
        .await
        .expect("accepted after login");
    assert_eq!(sink.wait_for(1).len(), 1);

    let wrong = format!("smtp://mailer%40tea.test:nope@{}", sink.addr);
    let error = mailer_for(&wrong)
        .send(simple_email("a@example.com", "auth2"))
        .await
        .expect_err("refused");
    assert!(
        matches!(error, MailError::Authentication { code: 535, .. }),
        "{error:?}"
    );
    assert!(!error.is_bounce() && !error.is_permanent());
    assert!(!error.to_string().contains("nope"));
}

/// A private certificate authority and a certificate for 127.0.0.1 signed by it, as PEM
/// files in `dir`; returns (CA PEM, certificate path, key path).
fn private_ca(dir: &Path) -> (Vec<u8>, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Signalbox test CA");
    let ca = ca_params.self_signed(&ca_key).expect("a CA");

    let leaf_key = KeyPair::generate().expect("key");
    let leaf_params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("params");
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("a certificate");

    let cert_path = dir.join("server.pem");
    let key_path = dir.join("server.key");
    std::fs::write(&cert_path, leaf.pem()).expect("write");
    std::fs::write(&key_path, leaf_key.serialize_pem()).expect("write");
    (ca.pem().into_bytes(), cert_path, key_path)
}

#[tokio::test]
async fn starttls_with_login_and_implicit_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = private_ca(dir.path());

    let starttls = SmtpSink::start(SinkOptions {
        auth: Some(("user".into(), "secret".into())),
        tls: Some((cert.clone(), key.clone(), false)),
        ..SinkOptions::default()
    })
    .expect("sink");
    let url = format!(
        "smtp://user:secret@127.0.0.1:{}?tls=starttls",
        starttls.port()
    );
    mailer_with(&url, vec![ca.clone()])
        .send(simple_email("a@example.com", "starttls"))
        .await
        .expect("sent over STARTTLS");
    assert_eq!(starttls.wait_for(1).len(), 1);
    // Without the private CA, the certificate is not trusted: a TLS failure, retryable.
    let error = mailer_for(&url)
        .send(simple_email("a@example.com", "untrusted"))
        .await
        .expect_err("untrusted certificate");
    assert!(matches!(error, MailError::Transient { .. }), "{error:?}");

    let implicit = SmtpSink::start(SinkOptions {
        tls: Some((cert, key, true)),
        ..SinkOptions::default()
    })
    .expect("sink");
    let url = format!("smtps://127.0.0.1:{}", implicit.port());
    mailer_with(&url, vec![ca])
        .send(simple_email("a@example.com", "smtps"))
        .await
        .expect("sent over implicit TLS");
    let captured = implicit.wait_for(1);
    assert_eq!(captured.len(), 1);
    let message = MessageParser::default()
        .parse(&captured[0].raw)
        .expect("parsable");
    assert_eq!(message.subject(), Some("Hello smtps"));
}

#[tokio::test]
async fn concurrent_sends_share_the_pool() {
    let sink = SmtpSink::plain();
    let mailer = mailer_for(&sink.url());
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..40 {
        let mailer = mailer.clone();
        tasks.spawn(async move {
            mailer
                .send(simple_email(
                    &format!("user{n}@example.com"),
                    &format!("c{n}"),
                ))
                .await
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("task").expect("sent");
    }
    let captured = sink.wait_for(40);
    let mut recipients: Vec<String> = captured.iter().flat_map(|m| m.rcpt_tos.clone()).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), 40);
}

/// Regression: with Nagle's algorithm on, each message waited for the server's delayed
/// acknowledgement of its body before the closing `.` went out (about 40 ms a message, 25 a
/// second per connection). One connection now carries messages back to back.
#[tokio::test]
async fn one_connection_sends_without_delayed_ack_stalls() {
    let sink = SmtpSink::start(SinkOptions {
        discard: true,
        ..SinkOptions::default()
    })
    .expect("sink");
    let mut config = MailerConfig::new(sink.url().parse::<SmtpUrl>().expect("url"), DEFAULT_FROM);
    config.pool_size = 1;
    let mailer = Mailer::new(config).expect("mailer");
    let started = std::time::Instant::now();
    for n in 0..200 {
        let mut email = simple_email("a@example.com", &format!("n{n}"));
        email.html = "<p>padding</p>".repeat(200);
        mailer.send(email).await.expect("sent");
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(4),
        "200 messages took {elapsed:?}"
    );
}
