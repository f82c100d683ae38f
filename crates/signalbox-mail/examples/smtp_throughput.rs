//! Emails per second: the abandoned-checkout email composed (render, links, pixel) and sent
//! to a local aiosmtpd sink that only counts.
//!
//! `cargo run --release -p signalbox-mail --example smtp_throughput -- [COUNT] [CONCURRENCY]`
//! (defaults 5000 and 32; needs `pip install -r tests/smtp/requirements.txt`).

#[path = "../tests/it/sink.rs"]
#[allow(dead_code)]
mod sink;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use signalbox_mail::{
    Composer, EmailTemplate, EmailTemplateSource, LinkSigner, Mailer, MailerConfig, Recipient,
    RenderContext, TrackingLinks,
};

fn context() -> RenderContext {
    let mut context = RenderContext::default();
    context.person.insert("first_name".into(), json!("Ada"));
    context.person.insert("Loyalty Points".into(), json!(320));
    context
        .organization
        .insert("name".into(), json!("Tea & Co"));
    let items: Vec<_> = (1..=3)
        .map(|n| {
            json!({"ProductName": format!("Product {n}"), "Quantity": n, "ItemPrice": 9.5 * n as f64,
                   "RowTotal": 9.5 * (n * n) as f64, "ProductURL": format!("https://tea.test/p/{n}"),
                   "ImageURL": format!("https://cdn.tea.test/{n}.jpg"),
                   "Description": "A fine product, described at some length for realism."})
        })
        .collect();
    context.event = Some(json!({"$value": 133.0, "Currency": "EUR", "Items": items,
        "ItemNames": ["Product 1", "Product 2", "Product 3"],
        "CheckoutURL": "https://tea.test/checkout/abc"}));
    context
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(5000);
    let concurrency: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(32);

    let template = EmailTemplate::compile(&EmailTemplateSource {
        subject: "{{ first_name|default:'Hey' }}, your {{ event.ItemNames|first }} is waiting"
            .into(),
        html: include_str!("../tests/fixtures/abandoned_checkout.html").into(),
        text: None,
    })?;
    let links = TrackingLinks::new(
        LinkSigner::new(b"benchmark secret, long enough")?,
        "https://sb.test",
    )?;
    let composer = Composer::new(links, Some("unsubscribe@tea.test".into()));
    let recipient = |n: usize| Recipient {
        profile_id: format!("prof_{n}"),
        email: format!("user{n}@example.com"),
        name: None,
    };

    // Composition alone.
    let started = Instant::now();
    let mut bytes = 0;
    for n in 0..count {
        let email =
            composer.compose(&template, &recipient(n), &format!("m{n}"), context(), None)?;
        bytes += email.html.len() + email.text.len();
    }
    let compose_rate = count as f64 / started.elapsed().as_secs_f64();
    println!(
        "compose: {count} emails in {:.2?} = {compose_rate:.0}/s ({} bytes of body each)",
        started.elapsed(),
        bytes / count
    );

    // Composed and sent.
    let sink = sink::SmtpSink::start(sink::SinkOptions {
        discard: true,
        ..Default::default()
    })?;
    let mut config = MailerConfig::new(sink.url().parse()?, "Tea & Co <shop@tea.test>");
    config.pool_size = concurrency as u32;
    config.timeout = Duration::from_secs(30);
    let mailer = Mailer::new(config)?;
    let shared = Arc::new((composer, template));
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (mailer, shared, next) = (mailer.clone(), shared.clone(), next.clone());
        workers.spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= count {
                    return Ok::<_, anyhow::Error>(());
                }
                let (composer, template) = &*shared;
                let email =
                    composer.compose(template, &recipient(n), &format!("m{n}"), context(), None)?;
                mailer.send(email).await?;
            }
        });
    }
    while let Some(result) = workers.join_next().await {
        result??;
    }
    let elapsed = started.elapsed();
    println!(
        "compose + send over SMTP: {count} emails in {elapsed:.2?} = {:.0}/s ({concurrency} connections)",
        count as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
