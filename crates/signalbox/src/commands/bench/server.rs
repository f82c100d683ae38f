//! The server under test: this same binary started as `serve` in a child process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use signalbox_core::PostgresUrl;
use signalbox_store::postgres::{connect_pool, PgOptions};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{PgStore, SqliteStore, Store};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::cli::BenchBackend;

/// Where one server child keeps its stores: a fresh folder, and on PostgreSQL a fresh
/// database too. [`ServerStores::remove`] drops the database; the folder goes when dropped.
pub struct ServerStores {
    dir: tempfile::TempDir,
    database: Option<BenchDatabase>,
}

impl ServerStores {
    /// Fresh stores on `backend`; `postgres` is the server to make a database on.
    pub async fn create(
        backend: BenchBackend,
        postgres: Option<&PostgresUrl>,
    ) -> anyhow::Result<ServerStores> {
        let dir = super::bench_dir()?;
        let database = match backend {
            BenchBackend::Embedded => None,
            BenchBackend::Postgres => {
                let server = postgres.context("--backends postgres needs --database-url")?;
                Some(BenchDatabase::create(server).await?)
            }
        };
        Ok(ServerStores { dir, database })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The database's URL, on PostgreSQL.
    pub fn database_url(&self) -> Option<&PostgresUrl> {
        self.database.as_ref().map(|d| &d.url)
    }

    /// Starts `serve` on these stores.
    pub async fn start(&self, discard: bool) -> anyhow::Result<ServerChild> {
        ServerChild::start_on(self.dir(), self.database_url(), discard, &[]).await
    }

    /// Runs this binary with `args` on these stores (a CLI command beside the server), and
    /// returns its standard output.
    pub async fn run_command(&self, args: &[&str]) -> anyhow::Result<String> {
        let exe = std::env::current_exe().context("cannot find this program's path")?;
        let mut command = tokio::process::Command::new(exe);
        command.arg("--data-dir").arg(self.dir()).args(args);
        set_database(&mut command, self.database_url());
        let output = command
            .output()
            .await
            .with_context(|| format!("cannot run {}", args.join(" ")))?;
        if !output.status.success() {
            bail!(
                "{} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    /// The last sequence number of the call log, read back after the server stopped.
    pub async fn last_seq(&self) -> anyhow::Result<i64> {
        match self.database_url() {
            None => {
                let store = SqliteStore::open(
                    self.dir().join("signalbox.db"),
                    SqliteOptions {
                        writer: false,
                        ..SqliteOptions::default()
                    },
                )
                .context("cannot open the benchmark's store")?;
                Ok(store.last_seq().await?)
            }
            Some(url) => {
                let store = PgStore::connect(
                    url,
                    PgOptions {
                        writer: false,
                        pool_size: 1,
                        ..PgOptions::default()
                    },
                )
                .await
                .context("cannot open the benchmark's store")?;
                let last = store.last_seq().await;
                store.shutdown();
                Ok(last?)
            }
        }
    }

    /// Drops the database (on PostgreSQL) and the folder.
    pub async fn remove(self) -> anyhow::Result<()> {
        if let Some(database) = self.database {
            database.drop_database().await?;
        }
        Ok(())
    }
}

/// A database of its own for one server child, on the PostgreSQL server of `--database-url`.
struct BenchDatabase {
    server: PostgresUrl,
    url: PostgresUrl,
}

impl BenchDatabase {
    async fn create(server: &PostgresUrl) -> anyhow::Result<BenchDatabase> {
        let name = format!("signalbox_bench_{}", uuid::Uuid::new_v4().simple());
        let pool = connect_pool(server, 1)?;
        let client = pool
            .get()
            .await
            .with_context(|| format!("cannot reach {server}"))?;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("cannot create database {name} on {server}"))?;
        Ok(BenchDatabase {
            server: server.clone(),
            url: server.with_database(&name),
        })
    }

    async fn drop_database(self) -> anyhow::Result<()> {
        let name = self.url.database();
        let pool = connect_pool(&self.server, 1)?;
        let client = pool
            .get()
            .await
            .with_context(|| format!("cannot reach {}", self.server))?;
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .with_context(|| format!("cannot drop database {name}"))?;
        Ok(())
    }
}

/// Runs `command` on `database` (PostgreSQL) or else on the files of its `--data-dir`,
/// whatever the environment names. The URL goes in the environment, not the arguments, so
/// its password is not on the process list.
fn set_database(command: &mut Command, database: Option<&PostgresUrl>) {
    command.env_remove("SIGNALBOX_DATABASE_URL");
    if let Some(url) = database {
        command.env("SIGNALBOX_DATABASE_URL", url.expose());
    }
}

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
        ServerChild::start_with(data_dir, discard, &[]).await
    }

    /// [`ServerChild::start`] with more arguments for `serve`.
    pub async fn start_with(
        data_dir: &Path,
        discard: bool,
        extra: &[&str],
    ) -> anyhow::Result<ServerChild> {
        ServerChild::start_on(data_dir, None, discard, extra).await
    }

    /// [`ServerChild::start_with`] with every store in `database` (PostgreSQL) when given.
    pub async fn start_on(
        data_dir: &Path,
        database: Option<&PostgresUrl>,
        discard: bool,
        extra: &[&str],
    ) -> anyhow::Result<ServerChild> {
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
            .env("SIGNALBOX_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        set_database(&mut command, database);
        if discard {
            command.arg("--discard");
        }
        command.args(extra);
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

/// Bytes a process caused to be written to storage so far, in all and by thread name.
#[derive(Debug, Clone, Default)]
pub struct DiskWrites {
    pub total: u64,
    /// By the name of the thread that dirtied the pages (`/proc/PID/task/TID/comm`), summed
    /// over threads of one name. A thread that ended took its count with it: the total keeps it.
    pub by_thread: BTreeMap<String, u64>,
}

impl DiskWrites {
    /// From `/proc/PID/io` and `/proc/PID/task/*/io`.
    pub fn now(pid: u32) -> Option<DiskWrites> {
        let total = write_bytes(&format!("/proc/{pid}"))?;
        let mut by_thread = BTreeMap::new();
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let dir = task.path();
                let name = std::fs::read_to_string(dir.join("comm"));
                let (Ok(name), Some(bytes)) = (name, write_bytes(&dir.to_string_lossy())) else {
                    continue;
                };
                *by_thread.entry(name.trim().to_owned()).or_default() += bytes;
            }
        }
        Some(DiskWrites { total, by_thread })
    }

    /// What was written since `start`. A thread name missing from `start` began meanwhile.
    pub fn since(&self, start: &DiskWrites) -> DiskWrites {
        let by_thread = self
            .by_thread
            .iter()
            .map(|(name, end)| {
                let before = start.by_thread.get(name).copied().unwrap_or(0);
                (name.clone(), end.saturating_sub(before))
            })
            .filter(|(_, bytes)| *bytes > 0)
            .collect();
        DiskWrites {
            total: self.total.saturating_sub(start.total),
            by_thread,
        }
    }
}

/// `write_bytes` of a `/proc` process or task folder.
fn write_bytes(dir: &str) -> Option<u64> {
    let io = std::fs::read_to_string(format!("{dir}/io")).ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Clock ticks per second of `/proc` CPU times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU time spent so far, in ticks: by the whole machine (all cores, busy only), by the
/// server child and by this process.
#[derive(Debug, Clone, Copy)]
pub struct CpuTicks {
    machine: u64,
    server: u64,
    generator: u64,
}

/// Cores used on average over an interval.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct CpuUse {
    pub server: f64,
    pub generator: f64,
    /// Everything else on the machine: other programs, and kernel threads (including the
    /// writeback of the server's own writes).
    pub other: f64,
}

impl CpuTicks {
    pub fn now(server_pid: Option<u32>) -> Option<CpuTicks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|n| n.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal ...
        let busy = fields.iter().take(8).sum::<u64>() - fields.get(3)? - fields.get(4)?;
        Some(CpuTicks {
            machine: busy,
            server: server_pid
                .and_then(|pid| process_ticks(&pid.to_string()))
                .unwrap_or(0),
            generator: process_ticks("self")?,
        })
    }

    pub fn since(self, start: CpuTicks, seconds: f64) -> CpuUse {
        let cores = |ticks: u64| ticks as f64 / TICKS_PER_SEC / seconds.max(1e-9);
        let server = self.server.saturating_sub(start.server);
        let generator = self.generator.saturating_sub(start.generator);
        let machine = self.machine.saturating_sub(start.machine);
        CpuUse {
            server: cores(server),
            generator: cores(generator),
            other: cores(machine.saturating_sub(server + generator)),
        }
    }
}

/// utime + stime of a process, from `/proc/PID/stat`.
fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields after it are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod disk_writes_tests {
    use super::*;

    #[test]
    fn writes_are_counted_by_thread_name_and_differenced() {
        let (ready, wait) = std::sync::mpsc::channel();
        let (done, finish) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-probe".into())
            .spawn(move || {
                ready.send(()).unwrap();
                let _ = finish.recv();
            })
            .unwrap();
        wait.recv().unwrap();
        let now = DiskWrites::now(std::process::id()).expect("/proc/PID/io is readable");
        assert!(
            now.by_thread.contains_key("bench-probe"),
            "{:?}",
            now.by_thread
        );
        drop(done);
        thread.join().unwrap();

        let start = DiskWrites {
            total: 100,
            by_thread: [("writer".to_owned(), 60), ("gone".to_owned(), 40)].into(),
        };
        let end = DiskWrites {
            total: 400,
            by_thread: [("writer".to_owned(), 260), ("new".to_owned(), 50)].into(),
        };
        let since = end.since(&start);
        assert_eq!(since.total, 300);
        assert_eq!(
            since.by_thread,
            BTreeMap::from([("new".to_owned(), 50), ("writer".to_owned(), 200)])
        );
    }
}
