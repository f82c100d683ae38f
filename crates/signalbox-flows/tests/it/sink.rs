//! The SMTP sink (tests/smtp/sink.py, aiosmtpd) as a child process, and the messages it saved.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Options of one sink.
#[derive(Debug, Default)]
pub struct SinkOptions {
    pub reject_prefixes: Vec<String>,
    pub defer_prefixes: Vec<String>,
    pub auth: Option<(String, String)>,
    /// (certificate PEM path, key PEM path, implicit TLS?)
    pub tls: Option<(PathBuf, PathBuf, bool)>,
    pub discard: bool,
}

pub struct SmtpSink {
    child: Child,
    /// Held open: the sink exits when it closes.
    _stdin: Option<ChildStdin>,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// A message as the sink received it.
#[derive(Debug)]
pub struct Captured {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub raw: Vec<u8>,
}

fn sink_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/smtp/sink.py")
}

impl SmtpSink {
    pub fn start(options: SinkOptions) -> anyhow::Result<SmtpSink> {
        let dir = tempfile::tempdir()?;
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
        let mut command = Command::new(&python);
        command
            .arg(sink_script())
            .arg("--dir")
            .arg(dir.path().join("mail"))
            .arg("--listen")
            .arg("127.0.0.1:0");
        for prefix in &options.reject_prefixes {
            command.arg("--reject-prefix").arg(prefix);
        }
        for prefix in &options.defer_prefixes {
            command.arg("--defer-prefix").arg(prefix);
        }
        if let Some((user, password)) = &options.auth {
            command.arg("--auth").arg(format!("{user}:{password}"));
        }
        if let Some((cert, key, implicit)) = &options.tls {
            command
                .arg("--tls-cert")
                .arg(cert)
                .arg("--tls-key")
                .arg(key);
            if *implicit {
                command.arg("--implicit-tls");
            }
        }
        if options.discard {
            command.arg("--discard");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {python} tests/smtp/sink.py"))?;
        let stdout = child.stdout.take().context("sink stdout")?;
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = sender.send(line);
            }
            // Keep draining so the sink never blocks on a full pipe.
            for _ in lines {}
        });
        let stdin = child.stdin.take();
        let line = match receiver.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the SMTP sink did not start; is aiosmtpd installed? \
                     (pip install -r tests/smtp/requirements.txt)"
                );
            }
        };
        let addr = line
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected sink output {line:?}"))?
            .parse()
            .with_context(|| format!("unexpected sink address in {line:?}"))?;
        Ok(SmtpSink {
            child,
            _stdin: stdin,
            addr,
            dir,
        })
    }

    pub fn plain() -> SmtpSink {
        SmtpSink::start(SinkOptions::default()).expect("the SMTP sink starts")
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// The messages saved so far, in arrival order.
    pub fn messages(&self) -> Vec<Captured> {
        let folder = self.dir.path().join("mail");
        let mut stems: Vec<PathBuf> = std::fs::read_dir(&folder)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        stems.sort();
        stems
            .into_iter()
            .filter_map(|eml| {
                let envelope: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(eml.with_extension("json")).ok()?)
                        .ok()?;
                Some(Captured {
                    mail_from: envelope["mail_from"].as_str()?.to_owned(),
                    rcpt_tos: envelope["rcpt_tos"]
                        .as_array()?
                        .iter()
                        .filter_map(|to| to.as_str().map(str::to_owned))
                        .collect(),
                    raw: std::fs::read(&eml).ok()?,
                })
            })
            .collect()
    }

    /// Waits until at least `count` messages were saved.
    pub fn wait_for(&self, count: usize) -> Vec<Captured> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let messages = self.messages();
            if messages.len() >= count || Instant::now() > deadline {
                return messages;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
