//! `signalbox backup --to FILE` and `signalbox restore --from FILE --data-dir DIR`: every
//! store of an embedded installation in one file, taken while its server runs, and brought
//! back into a new data folder. On PostgreSQL, `pg_dump` and `pg_restore` do this job.
//!
//! A backup is a zstd-compressed tar archive (with zstd's checksum): one consistent copy of
//! each store file (SQLite's `VACUUM INTO`, one read transaction each), then `MANIFEST.json`
//! naming what it holds. The stores are copied one at a time, each deleted from the staging
//! folder once archived, so a backup needs free space for its largest store only.
//!
//! **Why the copies agree.** The stores are copied downstream first: every store that
//! derives its state from another (flows and destinations from engage's feed, segments from
//! engage, engage from the call log) is copied before what it reads, and the call log last.
//! A restored node therefore finds each store at or behind its source, and its pipelines
//! carry on from their own cursors: nothing is lost, nothing applied twice. The log's copy
//! begins after the command started, so it holds every call acknowledged before the backup
//! began. The indexes beside the stores (dedupe, held calls) are not copied: a node rebuilds
//! them from the stores at start.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use signalbox_server::retention::BackupLock;
use signalbox_store::sqlite::SqliteFile;

use super::output::print_line;
use super::stores::Backend;
use crate::cli::{BackupArgs, GlobalArgs, RestoreArgs};

/// The archive format this build writes and the newest it reads.
const FORMAT: u32 = 1;
/// The archive's last entry: what it holds.
const MANIFEST: &str = "MANIFEST.json";
/// zstd's level: fast enough to keep up with the copies on a busy machine.
const ZSTD_LEVEL: i32 = 3;

/// How a file of the data folder is copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A SQLite database: a consistent copy while its server writes.
    Database,
    /// A small file written once (the link secret): copied as it is.
    Plain,
}

/// The data folder's files in the order they are copied (see the module's note): what
/// derives from another store comes before it, the call log last.
const FILES: &[(&str, Kind)] = &[
    ("flows.db", Kind::Database),
    ("sync.db", Kind::Database),
    ("audience.db", Kind::Database),
    ("confirmations.db", Kind::Database),
    ("templates.db", Kind::Database),
    ("console.db", Kind::Database),
    ("engage.db", Kind::Database),
    ("link.key", Kind::Plain),
    ("signalbox.db", Kind::Database),
];

/// The call log: a backup without it is no backup.
const LOG: &str = "signalbox.db";

/// `MANIFEST.json`, and what `backup --json` / `restore --json` print (docs/cli-json.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The Signalbox version that wrote it.
    pub version: String,
    /// When the backup began: every call acknowledged before is in it.
    pub began_at: Timestamp,
    pub finished_at: Timestamp,
    /// The stores, in the order they were copied.
    pub files: Vec<ArchivedFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedFile {
    pub name: String,
    pub bytes: u64,
}

/// What `backup --json` prints.
#[derive(Debug, Serialize)]
pub(crate) struct BackupSummary<'a> {
    pub(crate) file: String,
    pub(crate) archive_bytes: u64,
    #[serde(flatten)]
    pub(crate) manifest: &'a Manifest,
}

/// What `restore --json` prints.
#[derive(Debug, Serialize)]
pub(crate) struct RestoreSummary<'a> {
    pub(crate) data_dir: String,
    #[serde(flatten)]
    pub(crate) manifest: &'a Manifest,
}

pub async fn backup(global: &GlobalArgs, args: BackupArgs) -> anyhow::Result<()> {
    let dir = embedded_dir(global, "backed up with `pg_dump --format=custom`")?;
    ensure!(
        dir.join(LOG).is_file(),
        "there is no {LOG} in {}: --data-dir names the data folder of an installation",
        dir.display()
    );
    let to = args.to.clone();
    let (manifest, archive_bytes) =
        tokio::task::spawn_blocking(move || write_backup(&dir, &to)).await??;
    if args.json {
        print_line(&BackupSummary {
            file: args.to.display().to_string(),
            archive_bytes,
            manifest: &manifest,
        })
    } else {
        outln!("{}", files_table(&manifest.files))?;
        eprintln!(
            "backed up into {} ({}): bring it back with `signalbox restore --from {} --data-dir DIR`",
            args.to.display(),
            HumanBytes(archive_bytes),
            args.to.display()
        );
        Ok(())
    }
}

pub async fn restore(global: &GlobalArgs, args: RestoreArgs) -> anyhow::Result<()> {
    let dir = embedded_dir(global, "restored with `pg_restore` into an empty database")?;
    let from = args.from.clone();
    let into = dir.clone();
    let manifest = tokio::task::spawn_blocking(move || read_backup(&from, &into)).await??;
    if args.json {
        print_line(&RestoreSummary {
            data_dir: dir.display().to_string(),
            manifest: &manifest,
        })
    } else {
        outln!("{}", files_table(&manifest.files))?;
        eprintln!(
            "restored the backup of {} into {}: start it with `signalbox serve --data-dir {}`",
            manifest.began_at,
            dir.display(),
            dir.display()
        );
        Ok(())
    }
}

/// The embedded data folder, or a refusal that names PostgreSQL's own tool.
fn embedded_dir(global: &GlobalArgs, postgres_way: &str) -> anyhow::Result<PathBuf> {
    match Backend::choose(global)? {
        Backend::Postgres(url) => bail!(
            "{url} is a PostgreSQL database: it is {postgres_way} (README, Operations); \
             `backup` and `restore` handle the embedded store"
        ),
        backend => Ok(backend
            .data_dir()
            .expect("an embedded store has a folder")
            .to_owned()),
    }
}

/// Copies every store of `dir` into the archive `to`; the manifest and the archive's size.
fn write_backup(dir: &Path, to: &Path) -> anyhow::Result<(Manifest, u64)> {
    let began_at = Timestamp::now();
    let parent = match to.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    ensure!(
        !to.exists(),
        "{} exists already: name a new file (a backup never overwrites one)",
        to.display()
    );
    // Staged beside the archive, so that the copies land on the archive's disk and not in the
    // data folder whose free space the server watches.
    let staging = tempfile::Builder::new()
        .prefix(".signalbox-backup-")
        .tempdir_in(parent)
        .with_context(|| format!("cannot make a staging folder in {}", parent.display()))?;
    let partial = staging.path().join("archive.partial");
    let file = File::create_new(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut encoder = zstd::stream::Encoder::new(BufWriter::new(file), ZSTD_LEVEL)?;
    encoder.include_checksum(true)?;
    let mut archive = tar::Builder::new(encoder);

    let bar = progress();
    // No log entry is trimmed until the last copy is taken: engage is copied before the log,
    // and the restored log must still hold what the restored engage has yet to apply.
    bar.set_message("waiting for a log trim in progress to end");
    let lock = BackupLock::in_data_dir(dir);
    let _held = lock
        .hold()
        .context("cannot take the data folder's backup lock")?;
    let mut files = Vec::new();
    for &(name, kind) in FILES {
        let source = dir.join(name);
        if !source.exists() {
            continue;
        }
        let staged = staging.path().join(name);
        match kind {
            Kind::Database => {
                let watch = Watch::start(&bar, name, &staged);
                let copied = SqliteFile::new(&source).snapshot_into(&staged);
                watch.stop();
                copied.map_err(anyhow::Error::msg)?;
            }
            Kind::Plain => {
                std::fs::copy(&source, &staged)
                    .with_context(|| format!("cannot copy {}", source.display()))?;
            }
        }
        bar.set_message(format!("archiving {name}"));
        let mut copy =
            File::open(&staged).with_context(|| format!("cannot read {}", staged.display()))?;
        let bytes = copy.metadata()?.len();
        archive
            .append_file(name, &mut copy)
            .with_context(|| format!("cannot archive {name}"))?;
        drop(copy);
        std::fs::remove_file(&staged)?;
        files.push(ArchivedFile {
            name: name.to_owned(),
            bytes,
        });
    }
    bar.finish_and_clear();

    let manifest = Manifest {
        format: FORMAT,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        began_at,
        finished_at: Timestamp::now(),
        files,
    };
    let text = serde_json::to_vec_pretty(&manifest)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(manifest.finished_at.as_second().max(0) as u64);
    header.set_cksum();
    archive.append_data(&mut header, MANIFEST, text.as_slice())?;
    let file = archive
        .into_inner()?
        .finish()?
        .into_inner()
        .map_err(|err| err.into_error())?;
    file.sync_all()
        .with_context(|| format!("cannot write {}", to.display()))?;
    let archive_bytes = file.metadata()?.len();
    drop(file);
    // The archive appears under its name only once whole.
    std::fs::hard_link(&partial, to).with_context(|| format!("cannot create {}", to.display()))?;
    sync_dir(parent)?;
    Ok((manifest, archive_bytes))
}

/// Unpacks the archive `from` into the new or empty folder `dir`; its manifest.
fn read_backup(from: &Path, dir: &Path) -> anyhow::Result<Manifest> {
    let file = File::open(from).with_context(|| format!("cannot open {}", from.display()))?;
    if dir.exists() {
        let mut entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        ensure!(
            entries.next().is_none(),
            "{} is not empty: restore into a new or empty folder (nothing there is ever \
             overwritten)",
            dir.display()
        );
    }
    create_private_dir(dir)?;
    let staging = tempfile::Builder::new()
        .prefix(".signalbox-restore-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot make a staging folder in {}", dir.display()))?;

    let damaged = || format!("{} is not a whole Signalbox backup", from.display());
    let decoder = zstd::stream::Decoder::new(BufReader::new(file)).with_context(damaged)?;
    let mut archive = tar::Archive::new(decoder);
    let bar = progress();
    let mut unpacked: Vec<ArchivedFile> = Vec::new();
    let mut manifest: Option<Manifest> = None;
    for entry in archive.entries().with_context(damaged)? {
        let mut entry = entry.with_context(damaged)?;
        let name = entry_name(&entry.path().with_context(damaged)?)?;
        ensure!(
            manifest.is_none(),
            "{}: {name} follows the manifest",
            damaged()
        );
        if name == MANIFEST {
            let mut text = Vec::new();
            entry.read_to_end(&mut text).with_context(damaged)?;
            manifest = Some(serde_json::from_slice(&text).with_context(damaged)?);
            continue;
        }
        ensure!(
            FILES.iter().any(|(known, _)| *known == name),
            "{}: it holds {name}, which no Signalbox store is",
            damaged()
        );
        ensure!(
            !unpacked.iter().any(|file| file.name == name),
            "{}: it holds {name} twice",
            damaged()
        );
        bar.set_message(format!("unpacking {name}"));
        let path = staging.path().join(&name);
        let mut out = private_file(&path)?;
        let bytes = std::io::copy(&mut entry, &mut out).with_context(damaged)?;
        out.sync_all()?;
        unpacked.push(ArchivedFile { name, bytes });
    }
    bar.finish_and_clear();
    let manifest = manifest.with_context(|| format!("{}: it has no manifest", damaged()))?;
    ensure!(
        manifest.format <= FORMAT,
        "{} was written by a newer Signalbox ({}, format {}): restore it with that version",
        from.display(),
        manifest.version,
        manifest.format
    );
    ensure!(
        manifest.files == unpacked,
        "{}: it holds {:?}, its manifest names {:?}",
        damaged(),
        unpacked,
        manifest.files
    );
    ensure!(
        unpacked.iter().any(|file| file.name == LOG),
        "{}: it holds no call log",
        damaged()
    );
    for file in &unpacked {
        std::fs::rename(staging.path().join(&file.name), dir.join(&file.name))
            .with_context(|| format!("cannot move {} into {}", file.name, dir.display()))?;
    }
    sync_dir(dir)?;
    Ok(manifest)
}

/// An archive entry's name: one plain file name, never a path out of the folder.
fn entry_name(path: &Path) -> anyhow::Result<String> {
    let mut components = path.components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(name)), None) => name
            .to_str()
            .map(str::to_owned)
            .with_context(|| format!("the backup holds a file named {path:?}")),
        _ => bail!(
            "the backup holds {}, which is not a file name of a data folder",
            path.display()
        ),
    }
}

/// `dir` and its parents, the folder itself owner-only like every data folder.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// A new owner-only file.
fn private_file(path: &Path) -> anyhow::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// Makes the names just written in `dir` durable.
fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

/// A spinner on stderr (hidden when stderr is not a terminal).
fn progress() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .expect("progress template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Shows how far a store's copy has got (its size so far) while `VACUUM INTO` writes it.
struct Watch {
    done: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Watch {
    fn start(bar: &ProgressBar, name: &'static str, copy: &Path) -> Watch {
        let (done, stop) = std::sync::mpsc::channel();
        let bar = bar.clone();
        let copy = copy.to_owned();
        let started = Instant::now();
        let thread = std::thread::spawn(move || loop {
            let bytes = std::fs::metadata(&copy).map(|m| m.len()).unwrap_or(0);
            bar.set_message(format!(
                "copying {name}: {} in {:.0?}",
                HumanBytes(bytes),
                started.elapsed()
            ));
            if stop.recv_timeout(Duration::from_millis(250)).is_ok() {
                return;
            }
        });
        Watch { done, thread }
    }

    fn stop(self) {
        let _ = self.done.send(());
        let _ = self.thread.join();
    }
}

/// The stores as a table: name and size, then the total.
fn files_table(files: &[ArchivedFile]) -> String {
    let width = files
        .iter()
        .map(|file| file.name.len())
        .max()
        .unwrap_or(0)
        .max("store".len());
    let mut out = format!("{:<width$}  {:>14}", "store", "bytes");
    for file in files {
        out.push_str(&format!("\n{:<width$}  {:>14}", file.name, file.bytes));
    }
    let total: u64 = files.iter().map(|file| file.bytes).sum();
    out.push_str(&format!("\n{:<width$}  {total:>14}", "total"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_one_plain_file_name() {
        assert_eq!(entry_name(Path::new("engage.db")).unwrap(), "engage.db");
        for bad in ["../engage.db", "/etc/passwd", "a/b.db", "./x/../y", ""] {
            assert!(entry_name(Path::new(bad)).is_err(), "{bad:?} was taken");
        }
    }

    #[test]
    fn every_store_is_copied_before_the_call_log() {
        assert_eq!(FILES.last().map(|(name, _)| *name), Some(LOG));
        let at = |name: &str| FILES.iter().position(|(n, _)| *n == name).unwrap();
        // Each store before the one it derives from.
        assert!(at("flows.db") < at("audience.db"));
        assert!(at("audience.db") < at("engage.db"));
        assert!(at("sync.db") < at("engage.db"));
        assert!(at("engage.db") < at(LOG));
    }
}
