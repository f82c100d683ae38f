//! Secrets (write keys, API keys, webhook secrets) appear in no log line, delivery record,
//! status, error, dead letter or `Debug` output, even when a receiver echoes them back.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use signalbox_sync::{DestinationConfig, NewDestination, Secret};

use crate::helpers::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const WRITE_KEY: &str = "WKsecret-segment-0123456789";
const API_KEY: &str = "pk_secret_klaviyo_0123456789";
const WEBHOOK_SECRET: &str = "whsec_secret_webhook_0123456789";

// One thread: the engine's tasks run where the capturing subscriber is the default.
#[tokio::test(flavor = "current_thread")]
async fn secrets_appear_nowhere() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = Harness::new().await;
    let receiver = Receiver::start().await;
    *receiver.state.echo_auth.lock().unwrap() = true;
    receiver.state.poison.lock().unwrap().insert("m-3".into());
    receiver.script([Reply::Status(500), Reply::Status(401)]);
    let sync = h.start();
    let destinations = [
        NewDestination {
            name: "hook".into(),
            config: DestinationConfig::Webhook {
                url: receiver.url("/in"),
                secret: Some(Secret::new(WEBHOOK_SECRET)),
                sources: vec!["web".into()],
            },
            rate: None,
        },
        NewDestination {
            name: "klaviyo".into(),
            config: DestinationConfig::Klaviyo {
                api_key: Secret::new(API_KEY),
                endpoint: receiver.url(""),
                sources: vec!["web".into()],
            },
            rate: None,
        },
        NewDestination {
            name: "segment".into(),
            config: DestinationConfig::Segment {
                write_key: Secret::new(WRITE_KEY),
                endpoint: receiver.url(""),
                only_segment_profiles: false,
            },
            rate: None,
        },
    ];
    let mut shown = String::new();
    for new in destinations {
        let created = sync.create(new).await.unwrap();
        shown.push_str(&format!("{created:?} {}", created.config.redacted_json()));
    }
    h.append_tracks(0, 10, Timestamp::now()).await;
    sync.notify();
    receiver.wait_for(9, WAIT).await;
    assert!(sync.wait_idle(WAIT).await);

    // The receiver did get the secrets (they were sent)…
    let sent: String = receiver
        .requests()
        .iter()
        .map(|r| format!("{:?}", r.headers))
        .collect();
    assert!(sent.contains(API_KEY));
    // …and echoed them in its error bodies; none is kept or shown.
    for name in ["hook", "klaviyo", "segment"] {
        shown.push_str(&serde_json::to_string(&sync.deliveries(name, 100).await.unwrap()).unwrap());
        shown.push_str(&serde_json::to_string(&sync.status(name).await.unwrap()).unwrap());
        shown.push_str(&serde_json::to_string(&sync.dead_letters(name).await.unwrap()).unwrap());
        shown.push_str(&format!("{:?}", sync.get(name).await.unwrap()));
    }
    assert!(
        shown.contains("dead_lettered"),
        "the poisoned call was recorded"
    );
    assert!(shown.contains("Klaviyo-API-Key ••••"));
    sync.shutdown(Duration::from_secs(5)).await;
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("delivery"), "logs were captured: {logs}");
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{WRITE_KEY}:"),
    );
    for secret in [WRITE_KEY, API_KEY, WEBHOOK_SECRET, basic.as_str()] {
        assert!(!shown.contains(secret), "{secret} shown");
        assert!(!logs.contains(secret), "{secret} logged");
    }
}
