//! One module per command group; each takes resolved arguments and does one thing.

pub mod bench;
mod engage;
mod events;
mod flow;
mod list;
mod segment;
mod serve;
mod source;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use jiff::SignedDuration;
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, GlobalArgs, LogFormat};

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(&cli.global, args).await,
        Command::Source(cmd) => source::run_source(&cli.global, cmd).await,
        Command::ApiKey(cmd) => source::run_api_key(&cli.global, cmd).await,
        Command::Events(cmd) => events::run(&cli.global, cmd).await,
        Command::Rebuild(args) => engage::rebuild(&cli.global, args).await,
        Command::Profiles(cmd) => engage::profiles(&cli.global, cmd).await,
        Command::Engage(cmd) => engage::run(&cli.global, cmd).await,
        Command::List(args) => list::run(&cli.global, args).await,
        Command::Flow(args) => flow::run(&cli.global, args).await,
        Command::Segment(args) => segment::run(&cli.global, args).await,
        Command::Bench(cmd) => bench::run(cmd).await,
    }
}

/// Logs go to stderr (stdout is for what a command prints: keys, JSON lines).
pub fn init_tracing(global: &GlobalArgs) {
    let filter = EnvFilter::try_from_env("SIGNALBOX_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match global.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// Where the SQLite file is: `--database-url sqlite:PATH`, else `DATA_DIR/signalbox.db`.
pub fn database_path(global: &GlobalArgs) -> anyhow::Result<PathBuf> {
    match global.database_url.as_deref() {
        None | Some("") => {
            std::fs::create_dir_all(&global.data_dir).with_context(|| {
                format!(
                    "cannot create the data folder {}",
                    global.data_dir.display()
                )
            })?;
            Ok(global.data_dir.join("signalbox.db"))
        }
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            bail!("PostgreSQL is not supported by this version of Signalbox; use the embedded store (omit --database-url)")
        }
        Some(url) => {
            let path = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .with_context(|| {
                    format!("unsupported --database-url scheme in {url:?}; expected sqlite:PATH")
                })?;
            let path = PathBuf::from(path);
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            Ok(path)
        }
    }
}

/// Where the engage state lives: `engage.db` beside the call log (`DATA_DIR/engage.db`).
pub fn engage_path(global: &GlobalArgs) -> anyhow::Result<PathBuf> {
    let log = database_path(global)?;
    Ok(log
        .parent()
        .map(|dir| dir.join("engage.db"))
        .unwrap_or_else(|| PathBuf::from("engage.db")))
}

/// Opens the store for a command that does not append (no writer thread).
pub fn open_store_readonly(global: &GlobalArgs) -> anyhow::Result<Arc<dyn Store>> {
    let path = database_path(global)?;
    let store = SqliteStore::open(
        &path,
        SqliteOptions {
            writer: false,
            ..SqliteOptions::default()
        },
    )
    .with_context(|| format!("cannot open the store at {}", path.display()))?;
    Ok(Arc::new(store))
}

/// Parses `24h`, `90m`, `30s`, `7d`, `1h 30m` or ISO 8601 (`PT24H`, `P7D`); a day is 24 hours.
pub fn parse_duration(text: &str, what: &str) -> anyhow::Result<SignedDuration> {
    let duration = match text.parse::<SignedDuration>() {
        Ok(duration) => duration,
        Err(_) => text
            .parse::<jiff::Span>()
            .and_then(|span| span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()))
            .with_context(|| {
                format!("{what}: cannot read {text:?} as a duration (e.g. 7d, 24h, 90m, 30s)")
            })?,
    };
    if duration.is_negative() {
        bail!("{what}: must not be negative");
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit() {
        let check = |text: &str, secs: i64| {
            assert_eq!(
                parse_duration(text, "t").unwrap(),
                SignedDuration::from_secs(secs),
                "{text}"
            )
        };
        check("24h", 86_400);
        check("7d", 7 * 86_400);
        check("90m", 5_400);
        check("0s", 0);
        check("1h 30m", 5_400);
        check("PT24H", 86_400);
        check("P7D", 7 * 86_400);
        assert!(parse_duration("soon", "t").is_err());
        assert!(parse_duration("-1h", "t").is_err());
    }

    #[test]
    fn windows_in_days_weeks_and_hours() {
        let hours = SignedDuration::from_hours;
        assert_eq!(parse_duration("7d", "w").unwrap(), hours(168));
        assert_eq!(parse_duration("1w", "w").unwrap(), hours(168));
        assert_eq!(parse_duration("36h", "w").unwrap(), hours(36));
        assert_eq!(parse_duration("1d 12h", "w").unwrap(), hours(36));
        assert!(parse_duration("1 month", "w").is_err());
        assert!(parse_duration("soon", "w").is_err());
    }
}
