//! The flows benchmark against a local SMTP sink (tests/smtp/sink.py with `--discard`):
//!
//! ```text
//! cargo run --release -p signalbox-flows --example flows_bench [EVENTS RATE WAITING EMAILS]
//! ```

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use signalbox_flows::bench::{self, BenchConfig};
use signalbox_flows::FlowMail;
use signalbox_mail::{Composer, LinkSigner, Mailer, MailerConfig, TrackingLinks};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let mut config = BenchConfig::default();
    if let [events, rate, waiting, emails] = args[..] {
        config.events = events;
        config.event_rate = rate as u32;
        config.waiting_runs = waiting;
        config.emails = emails;
    }
    let dir = tempfile::tempdir()?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/smtp/sink.py");
    let mut sink = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(script)
        .arg("--dir")
        .arg(dir.path())
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--discard")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(sink.stdout.take().expect("stdout")).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| anyhow::anyhow!("unexpected sink output {line:?}"))?
        .to_owned();
    let mut mailer = MailerConfig::new(format!("smtp://{addr}").parse()?, "bench@example.com");
    mailer.hello_name = Some("localhost".into());
    let links = TrackingLinks::new(
        LinkSigner::new(b"a benchmark link secret, long enough")?,
        "https://mail.example.com",
    )?;
    config.mail = Some(FlowMail {
        mailer: Mailer::new(mailer)?,
        composer: Composer::new(links, None),
    });
    let report = bench::run(config).await;
    let _ = sink.kill();
    let _ = sink.wait();
    println!("{}", report?);
    Ok(())
}
