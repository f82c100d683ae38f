//! `signalbox storage status`: sizes per store (the files in the data folder, or each
//! component's tables on PostgreSQL), the oldest call the log keeps and what keeps it, read
//! from the stores themselves (the server may run or not).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use signalbox_audience::PgAudienceStore;
use signalbox_console::PgAccountStore;
use signalbox_core::{PostgresUrl, SystemClock};
use signalbox_engage::Engage;
use signalbox_flows::PgFlowStore;
use signalbox_server::confirmations::PgConfirmations;
use signalbox_server::retention::{BackupLock, Hold, HoldKind, Retention, RetentionConfig};
use signalbox_server::templates::PgTemplates;
use signalbox_store::postgres::{schema, PgStore};
use signalbox_store::CallQuery;
use signalbox_sync::PgSyncStore;

use super::output::{print_line, StorageStatus, StoreSize};
use super::stores::Backend;
use super::{destination, open_store_readonly, parse_retain_log};
use crate::cli::{GlobalArgs, StorageCommand};

pub async fn run(global: &GlobalArgs, cmd: StorageCommand) -> anyhow::Result<()> {
    match cmd {
        StorageCommand::Status { json, retain_log } => {
            let backend = Backend::choose(global)?;
            let status = status(global, &backend, &retain_log).await?;
            if json {
                print_line(&status)
            } else {
                print_status(&status, &backend)?;
                Ok(())
            }
        }
    }
}

async fn status(
    global: &GlobalArgs,
    backend: &Backend,
    retain_log: &str,
) -> anyhow::Result<StorageStatus> {
    let window = parse_retain_log(retain_log)?;
    let store = open_store_readonly(global).await?;
    let engage = if backend.has_engage() {
        Some(backend.open_engage_readonly().await?)
    } else {
        None
    };
    let sync = destination::open(global, false).await?;
    let mut retention = Retention::new(
        Arc::clone(&store),
        engage,
        Some(sync),
        Arc::new(SystemClock),
        RetentionConfig {
            window,
            ..RetentionConfig::default()
        },
    );
    if let Some(dir) = backend.data_dir() {
        retention = retention.with_backup_lock(BackupLock::in_data_dir(dir));
    }
    let floor = retention.floor().await?;
    let oldest = store
        .read_calls(CallQuery {
            limit: 1,
            ..CallQuery::default()
        })
        .await?
        .into_iter()
        .next();
    let newest_seq = store.last_seq().await?;
    let calls = store.totals().await?.iter().map(|t| t.calls).sum();
    let held_back_by = match &oldest {
        Some(call) => {
            let mut holding = floor.holding(call.seq, call.received_at);
            if holding.is_empty() && call.seq == newest_seq {
                holding.push(Hold {
                    kind: HoldKind::Newest,
                    name: None,
                    state: None,
                    from_seq: Some(newest_seq),
                    since: None,
                });
            }
            holding
        }
        None => Vec::new(),
    };
    let (data_dir, stores) = match backend {
        Backend::Embedded { .. } => {
            let dir = backend.data_dir().unwrap_or(Path::new("."));
            (dir.display().to_string(), store_sizes(dir)?)
        }
        Backend::Postgres(url) => (url.to_string(), table_sizes(url).await?),
    };
    Ok(StorageStatus {
        data_dir,
        total_bytes: stores.iter().map(|s| s.bytes).sum(),
        stores,
        retain_log: window.map(|_| retain_log.trim().to_owned()),
        calls,
        oldest_seq: oldest.as_ref().map(|c| c.seq),
        oldest_received: oldest.as_ref().map(|c| c.received_at),
        newest_seq,
        held_back_by,
        holds: floor.holds,
    })
}

/// The folder's files by the store they belong to: a database file and what sits beside it
/// under its name (`signalbox.db-wal`, `signalbox.db-dedupe/`, `engage.db.held/`).
fn store_sizes(dir: &Path) -> anyhow::Result<Vec<StoreSize>> {
    let mut by_store: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let store = match name.find(".db") {
            Some(end) => name[..end + 3].to_owned(),
            None => "other".to_owned(),
        };
        let (bytes, files) = size_of(&entry.path())?;
        let total = by_store.entry(store).or_default();
        total.0 += bytes;
        total.1 += files;
    }
    let mut stores: Vec<StoreSize> = by_store
        .into_iter()
        .map(|(store, (bytes, files))| StoreSize {
            store,
            bytes,
            files,
        })
        .collect();
    stores.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.store.cmp(&b.store)));
    Ok(stores)
}

/// The database's tables by the store they belong to, each store named as in
/// `signalbox_schema` (`store` for the call log, `engage`, …; `other` for tables of none):
/// `bytes` its tables' rows, indexes and TOAST, `files` its tables.
async fn table_sizes(url: &PostgresUrl) -> anyhow::Result<Vec<StoreSize>> {
    let owners = [
        ("store", PgStore::tables()),
        ("engage", Engage::postgres_tables()),
        ("audience", PgAudienceStore::tables()),
        ("flows", PgFlowStore::tables()),
        ("sync", PgSyncStore::tables()),
        ("console", PgAccountStore::tables()),
        ("templates", PgTemplates::tables()),
        ("confirmations", PgConfirmations::tables()),
    ];
    let sizes = schema::table_sizes(url)
        .await
        .with_context(|| format!("cannot read the tables' sizes at {url}"))?;
    let mut by_store: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (table, bytes) in sizes {
        let store = owners
            .iter()
            .find(|(_, tables)| tables.contains(&table))
            .map_or("other", |(store, _)| store);
        let total = by_store.entry(store).or_default();
        total.0 += bytes;
        total.1 += 1;
    }
    let mut stores: Vec<StoreSize> = by_store
        .into_iter()
        .map(|(store, (bytes, files))| StoreSize {
            store: store.to_owned(),
            bytes,
            files,
        })
        .collect();
    stores.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.store.cmp(&b.store)));
    Ok(stores)
}

/// Bytes and files under `path` (itself, when a file).
/// Bytes and files under `path` (a file or a folder, walked whole).
pub(crate) fn size_of(path: &Path) -> anyhow::Result<(u64, u64)> {
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_dir() {
        return Ok((meta.len(), 1));
    }
    let mut total = (0, 0);
    for entry in
        std::fs::read_dir(path).with_context(|| format!("cannot read {}", path.display()))?
    {
        let (bytes, files) = size_of(&entry?.path())?;
        total.0 += bytes;
        total.1 += files;
    }
    Ok(total)
}

fn print_status(status: &StorageStatus, backend: &Backend) -> std::io::Result<()> {
    let (place, parts) = match backend {
        Backend::Embedded { .. } => ("Data folder", "FILES"),
        Backend::Postgres(_) => ("Database   ", "TABLES"),
    };
    outln!("{place}   {}", status.data_dir)?;
    outln!("{:<24} {:>14} {:>6}", "STORE", "BYTES", parts)?;
    for store in &status.stores {
        outln!("{:<24} {:>14} {:>6}", store.store, store.bytes, store.files)?;
    }
    outln!("{:<24} {:>14}", "total", status.total_bytes)?;
    outln!()?;
    match &status.retain_log {
        Some(window) => {
            outln!("Retention     calls kept {window} once every follower passed them")?
        }
        None => outln!("Retention     off: the log keeps every call")?,
    }
    match (status.oldest_seq, status.oldest_received) {
        (Some(seq), Some(received)) => outln!(
            "Call log      {} calls, oldest kept seq {seq} (received {received}), newest seq {}",
            status.calls,
            status.newest_seq
        )?,
        _ => outln!("Call log      empty")?,
    }
    let reasons: Vec<String> = status.held_back_by.iter().map(describe).collect();
    if reasons.is_empty() {
        outln!("Held back by  nothing: the next trim may take it")?;
    } else {
        outln!("Held back by  {}", reasons.join("; "))?;
    }
    outln!("Holds")?;
    for hold in &status.holds {
        outln!("  {}", describe(hold))?;
    }
    Ok(())
}

fn describe(hold: &Hold) -> String {
    let what = match (hold.kind, &hold.name) {
        (HoldKind::Window, _) => "the window".to_owned(),
        (HoldKind::Pipeline, _) => "the engage pipeline".to_owned(),
        (HoldKind::HeldCalls, _) => "calls held for a profile".to_owned(),
        (HoldKind::Quarantine, _) => "calls in engage's quarantine".to_owned(),
        (HoldKind::Destination, Some(name)) => format!("destination {name:?}"),
        (HoldKind::Replay, Some(name)) => format!("a replay of destination {name:?}"),
        (HoldKind::Destination | HoldKind::Replay, None) => "a destination".to_owned(),
        (HoldKind::Newest, _) => "the newest call (it always stays)".to_owned(),
        (HoldKind::Backup, _) => "a backup that is running".to_owned(),
    };
    let state = hold
        .state
        .map(|state| format!(", {}", state.as_str()))
        .unwrap_or_default();
    match (hold.from_seq, hold.since) {
        (Some(seq), _) => format!("{what}: from seq {seq}{state}"),
        (None, Some(since)) => format!("{what}: received since {since}{state}"),
        (None, None) => what,
    }
}
