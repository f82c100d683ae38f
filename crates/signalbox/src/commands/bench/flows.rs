//! `signalbox bench flows`: the flows engine's speed, in process: event accepted → run
//! started, waiting runs resuming when due, and emails handed to an SMTP server.
//!
//! The email part needs a server that accepts quickly, e.g. the test sink:
//! `python3 tests/smtp/sink.py --discard --listen 127.0.0.1:2525`, then
//! `signalbox bench flows --smtp-url smtp://127.0.0.1:2525`. Without `--smtp-url` that part
//! is skipped.

use anyhow::Context;
use signalbox_flows::bench::{self, BenchConfig};
use signalbox_flows::FlowMail;
use signalbox_mail::{Composer, LinkSigner, Mailer, MailerConfig, SmtpUrl, TrackingLinks};

use crate::cli::FlowsBenchArgs;

pub async fn run(args: FlowsBenchArgs) -> anyhow::Result<()> {
    let mut config = BenchConfig {
        events: args.events,
        event_rate: args.rate,
        waiting_runs: args.waiting_runs,
        emails: args.emails,
        mail: None,
    };
    match &args.smtp_url {
        Some(url) => {
            let url: SmtpUrl = url
                .parse()
                .map_err(|_| anyhow::anyhow!("--smtp-url is not an SMTP URL"))?;
            let mut mailer = MailerConfig::new(url, "bench@example.com");
            mailer.hello_name = Some("localhost".into());
            let links = TrackingLinks::new(
                LinkSigner::new(&rand::random::<[u8; 32]>())?,
                "https://mail.example.com",
            )?;
            config.mail = Some(FlowMail {
                mailer: Mailer::new(mailer).context("cannot set up the mailer")?,
                composer: Composer::new(links, None),
            });
        }
        None => {
            config.emails = 0;
            eprintln!("no --smtp-url: the emails-per-second part is skipped");
        }
    }
    println!(
        "signalbox bench flows: {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let report = bench::run(config).await?;
    println!("{report}");
    Ok(())
}
