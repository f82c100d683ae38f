//! The server under test: this same binary started as `serve` in a child process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `signalbox serve` child. Killed if dropped without [`ServerChild::stop`].
pub struct ServerChild {
    child: Child,
    pid: u32,
    pub base_url: String,
    pub write_key: String,
    log_path: PathBuf,
}

impl ServerChild {
    /// Starts `serve` on a free loopback port with its store in `data_dir`, and waits for the
    /// lines naming its address and write key.
    pub async fn start(data_dir: &Path, discard: bool) -> anyhow::Result<ServerChild> {
        let exe = std::env::current_exe().context("cannot find this program's path")?;
        let log_path = data_dir.join("server.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env_remove("SIGNALBOX_DATABASE_URL")
            .env("SIGNALBOX_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        if discard {
            command.arg("--discard");
        }
        let mut child = command.spawn().context("cannot start the server")?;
        let pid = child.id().context("the server exited at once")?;
        let stdout = child.stdout.take().context("no stdout from the server")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut base_url = None;
        let mut write_key = None;
        let read_banner = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix("Signalbox is listening on ") {
                    base_url = Some(rest.trim().to_owned());
                } else if let Some(rest) = line.trim_start().strip_prefix("Write key") {
                    write_key = rest.split_whitespace().next().map(str::to_owned);
                }
                if base_url.is_some() && write_key.is_some() {
                    return Ok::<_, std::io::Error>(true);
                }
            }
            Ok(false)
        };
        let complete = tokio::time::timeout(Duration::from_secs(60), read_banner)
            .await
            .context("the server did not announce itself within 60 s")??;
        if !complete {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("the server stopped before announcing its address:\n{log}");
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(ServerChild {
            child,
            pid,
            base_url: base_url.expect("checked above"),
            write_key: write_key.expect("checked above"),
            log_path,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Asks the server to drain and stop (SIGTERM), and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let signalled = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if signalled {
            if let Ok(status) =
                tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await
            {
                let status = status.context("waiting for the server")?;
                if !status.success() {
                    let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
                    bail!("the server exited with {status}:\n{log}");
                }
                return Ok(());
            }
        }
        self.child.kill().await.context("cannot stop the server")?;
        bail!("the server did not stop within 60 s of SIGTERM and was killed")
    }
}

/// Resident memory of a process, in KiB.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss: u64,
    /// Anonymous pages (the heap); the rest of `rss` is mapped files and shared memory.
    pub anon: u64,
}

/// Reads `/proc/PID/status`.
pub fn memory_kib(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    Some(Memory {
        rss: field("VmRSS:")?,
        anon: field("RssAnon:")?,
    })
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    memory_kib(pid).map(|m| m.rss)
}

/// Bytes a process caused to be written to storage, from `/proc/PID/io`.
pub fn disk_write_bytes(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|n| n.trim().parse().ok())
}
