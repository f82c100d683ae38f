//! One module per command group; each takes resolved arguments and does one thing.

/// `println!` for what a command prints, as an `io::Result`: a stdout closed early
/// (`signalbox storage status | head -3`) fails the command with `BrokenPipe`, which `main`
/// ends quietly, where `println!` would panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod admin;
mod api;
pub(crate) mod backup;
pub mod bench;
mod destination;
mod engage;
mod events;
mod flow;
mod list;
mod migrate;
mod output;
pub mod private;
mod segment;
mod serve;
mod source;
mod storage;
pub mod stores;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use jiff::SignedDuration;
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::Store;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, GlobalArgs, LogFormat};

/// Whether `err` comes of writing to a stdout whose reader has gone (see `outln!`).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if reads_only_local_data(&cli.command)
        && cli.global.database_url.as_deref().unwrap_or("").is_empty()
        && !cli.global.data_dir.exists()
    {
        bail!(
            "there is no data folder at {}: pass the --data-dir (or SIGNALBOX_DATA_DIR) the server uses, or start one there with `signalbox serve`",
            cli.global.data_dir.display()
        );
    }
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
        Command::Destination(cmd) => destination::run(&cli.global, cmd).await,
        Command::Bench(cmd) => bench::run(&cli.global, cmd).await,
        Command::Admin(cmd) => admin::run(&cli.global, cmd).await,
        Command::Storage(cmd) => storage::run(&cli.global, cmd).await,
        Command::Migrate(args) => migrate::run(args).await,
        Command::Backup(args) => backup::backup(&cli.global, args).await,
        Command::Restore(args) => backup::restore(&cli.global, args).await,
    }
}

/// Whether the command only looks at the data folder: then a folder that is not there is a
/// mistake to name (a wrong `--data-dir`), not one to create empty. The commands that create
/// something there (`serve`, `… create`) make the folder; those that
/// go through a running server's API or measure in a folder of their own do not need it.
fn reads_only_local_data(command: &Command) -> bool {
    use crate::cli::{
        AdminCommand, ApiKeyCommand, DestinationCommand, EngageCommand, SourceCommand,
    };
    match command {
        Command::Serve(_)
        | Command::List(_)
        | Command::Flow(_)
        | Command::Segment(_)
        | Command::Bench(_)
        | Command::Migrate(_)
        | Command::Restore(_) => false,
        Command::Engage(EngageCommand::Quarantine(args)) => args.command.is_none(),
        Command::Source(cmd) => !matches!(cmd, SourceCommand::Create { .. }),
        Command::ApiKey(cmd) => !matches!(cmd, ApiKeyCommand::Create { .. }),
        Command::Destination(cmd) => !matches!(cmd, DestinationCommand::Create(_)),
        Command::Admin(cmd) => !matches!(cmd, AdminCommand::Create { .. }),
        Command::Events(_)
        | Command::Rebuild(_)
        | Command::Profiles(_)
        | Command::Storage(_)
        | Command::Backup(_) => true,
    }
}

/// What is logged when neither `SIGNALBOX_LOG` nor `RUST_LOG` says otherwise: Signalbox's own
/// INFO lines; the embedded storage engines' (fjall, lsm-tree: "Creating database at …",
/// "Finished ingestion writer") only from WARN up, since the banner already names each store;
/// PostgreSQL's notices (`relation "signalbox_schema" already exists, skipping` at every
/// connect) likewise.
const DEFAULT_LOG_FILTER: &str = "info,fjall=warn,lsm_tree=warn,tokio_postgres=warn";

/// Added to every filter, `SIGNALBOX_LOG=debug` included: the PostgreSQL client logs each
/// statement's parameters (write keys, key hashes, email addresses) at DEBUG.
const NEVER_LOGGED: &str = "tokio_postgres=warn";

/// The filter `asked` for (`SIGNALBOX_LOG`, else `RUST_LOG`), or [`DEFAULT_LOG_FILTER`] when
/// it is missing or invalid; never below [`NEVER_LOGGED`].
fn log_filter(asked: Option<&str>) -> EnvFilter {
    asked
        .and_then(|text| EnvFilter::try_new(text).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_LOG_FILTER))
        .add_directive(NEVER_LOGGED.parse().expect("a valid directive"))
}

/// Logs go to stderr (stdout is for what a command prints: keys, JSON lines).
pub fn init_tracing(global: &GlobalArgs) {
    let asked = std::env::var("SIGNALBOX_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok();
    let filter = log_filter(asked.as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match global.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// Where the embedded call log is: `--database-url sqlite:PATH`, else `DATA_DIR/signalbox.db`
/// (a `postgres://` URL is [`stores::Backend::choose`]'s and never comes here).
///
/// The data folder is created for its owner only (0700), and a folder or files that an older
/// version left readable by others are made private (see [`private`]); where that fails, a
/// warning says so.
fn database_path(global: &GlobalArgs) -> anyhow::Result<PathBuf> {
    match global.database_url.as_deref() {
        None | Some("") => {
            std::fs::create_dir_all(&global.data_dir).with_context(|| {
                format!(
                    "cannot create the data folder {}",
                    global.data_dir.display()
                )
            })?;
            // A folder this user may read but not change (a read-only mount) still serves
            // the commands that only read: the failure is logged, not fatal.
            if let Err(err) = private::make_private(&global.data_dir) {
                tracing::warn!(
                    folder = %global.data_dir.display(),
                    error = %err,
                    "cannot make the data folder private (0700, its files 0600)"
                );
            }
            Ok(global.data_dir.join("signalbox.db"))
        }
        Some(url) => {
            let path = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .with_context(|| {
                    format!("unsupported --database-url scheme in {url:?}; expected sqlite:PATH or postgres://…")
                })?;
            let path = PathBuf::from(path);
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            if let Err(err) = private::make_files_private(&path) {
                tracing::warn!(
                    log = %path.display(),
                    error = %err,
                    "cannot make the store's files private (0600)"
                );
            }
            Ok(path)
        }
    }
}

/// Opens the call log for a command that does not append (no writer thread), on the backend
/// the flags choose (the embedded file or PostgreSQL).
pub async fn open_store_readonly(global: &GlobalArgs) -> anyhow::Result<Arc<dyn Store>> {
    stores::Backend::choose(global)?
        .open_log(SqliteOptions {
            writer: false,
            ..SqliteOptions::default()
        })
        .await
}

/// `--retain-log`: a duration, or `off` (`None`: the log keeps every entry).
pub fn parse_retain_log(text: &str) -> anyhow::Result<Option<SignedDuration>> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    parse_duration(text, "--retain-log").map(Some)
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

/// A positive duration as a `std` one (`10s`, `500ms`, `2m`).
pub fn parse_timeout(text: &str, what: &str) -> anyhow::Result<std::time::Duration> {
    let duration = parse_duration(text, what)?;
    if duration.is_zero() {
        bail!("{what}: must be more than zero");
    }
    Ok(duration.unsigned_abs())
}

/// A size in bytes: a number with an optional unit, `KB`/`MB`/`GB` (powers of 1000) or
/// `KiB`/`MiB`/`GiB` (powers of 1024), e.g. `64MiB`, `500KB`, `1048576`.
pub fn parse_size(text: &str, what: &str) -> anyhow::Result<usize> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => bail!("{what}: cannot read {text:?} as a size (e.g. 64MiB, 500KB, 1048576)"),
    };
    let bytes = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .and_then(|n| usize::try_from(n).ok())
        .with_context(|| format!("{what}: cannot read {text:?} as a size (e.g. 64MiB, 500KB)"))?;
    if bytes == 0 {
        bail!("{what}: must be more than zero");
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `check` (a `tracing::enabled!`) answers under `filter`.
    fn enabled_under(filter: EnvFilter, check: impl FnOnce() -> bool) -> bool {
        use tracing_subscriber::layer::SubscriberExt;
        tracing::subscriber::with_default(tracing_subscriber::registry().with(filter), check)
    }

    #[test]
    fn debug_logging_never_shows_the_postgres_client_statements_parameters() {
        use tracing::Level;
        for asked in [
            None,
            Some("debug"),
            Some("trace"),
            Some("tokio_postgres=trace"),
        ] {
            let debug = enabled_under(
                log_filter(asked),
                || tracing::enabled!(target: "tokio_postgres::query", Level::DEBUG),
            );
            assert!(!debug, "{asked:?}");
            let warn = enabled_under(
                log_filter(asked),
                || tracing::enabled!(target: "tokio_postgres::query", Level::WARN),
            );
            assert!(warn, "{asked:?}");
        }
        let own_debug = || tracing::enabled!(target: "signalbox::commands", Level::DEBUG);
        assert!(enabled_under(log_filter(Some("debug")), own_debug));
        assert!(!enabled_under(log_filter(None), own_debug));
    }

    #[test]
    fn sizes_and_timeouts() {
        assert_eq!(parse_size("64MiB", "s").unwrap(), 64 << 20);
        assert_eq!(parse_size("500KB", "s").unwrap(), 500_000);
        assert_eq!(parse_size("1048576", "s").unwrap(), 1 << 20);
        assert_eq!(parse_size(" 2 gib ", "s").unwrap(), 2 << 30);
        for bad in ["", "0", "MiB", "12 parsecs", "-1"] {
            assert!(parse_size(bad, "s").is_err(), "{bad}");
        }
        assert_eq!(
            parse_timeout("500ms", "t").unwrap(),
            std::time::Duration::from_millis(500)
        );
        assert!(parse_timeout("0s", "t").is_err());
    }

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
