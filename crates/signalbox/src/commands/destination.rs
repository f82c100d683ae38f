//! `signalbox destination …`: they edit the sync engine's store directly (`sync.db` in the
//! data folder, or its tables on PostgreSQL), so they work
//! whether the server runs or not (a running server picks changes up within a second).
//! Secrets are stored, never printed back: listings show them redacted.

use std::sync::Arc;

use anyhow::Context;
use jiff::Timestamp;
use signalbox_core::SystemClock;
use signalbox_outbound::{OutboundClient, OutboundConfig};
use signalbox_sync::{
    Destination, DestinationConfig, DestinationPatch, DestinationState, DestinationStatus,
    NewDestination, Replay, Secret, Sync, SyncDeps, KLAVIYO_ENDPOINT, SEGMENT_US_ENDPOINT,
};

use super::open_store_readonly;
use super::output::{print_line, DestinationLine};
use super::stores::Backend;
use crate::cli::{DestinationCommand, DestinationCreateArgs, DestinationKindArg, GlobalArgs};

pub async fn run(global: &GlobalArgs, cmd: DestinationCommand) -> anyhow::Result<()> {
    if let DestinationCommand::Create(args) = &cmd {
        if let Err(err) = args.check_kind() {
            err.exit();
        }
    }
    let with_engage = matches!(&cmd, DestinationCommand::Status { .. });
    let sync = open(global, with_engage).await?;
    match cmd {
        DestinationCommand::Create(args) => {
            let new = new_destination(args)?;
            let destination = sync
                .create(new)
                .await
                .context("cannot create the destination")?;
            outln!("{}", destination.id)?;
            eprintln!(
                "destination '{}' created ({} to {}); a running server starts delivering within a second",
                destination.name,
                destination.config.kind().as_str(),
                destination.config.target()
            );
        }
        DestinationCommand::List { json } => {
            let destinations = sync.list().await.context("cannot list the destinations")?;
            if json {
                for destination in &destinations {
                    print_line(&DestinationLine::from(destination))?;
                }
            } else {
                print_table(&destinations)?;
            }
        }
        DestinationCommand::Status { name, json } => {
            let status = sync
                .status(&name)
                .await
                .with_context(|| format!("cannot read the status of destination '{name}'"))?;
            if json {
                print_line(&status)?;
            } else {
                let destination = sync.get(&name).await?;
                print_status(&destination, &status)?;
            }
        }
        DestinationCommand::DeadLetters { name, json } => {
            // An unknown name is an error, not an empty listing.
            sync.get(&name).await?;
            let letters = sync.dead_letters(&name).await?;
            if json {
                for letter in &letters {
                    print_line(letter)?;
                }
            } else {
                outln!(
                    "{:<8} {:<20} {:<6} {:<36} {:<20} REASON",
                    "ID",
                    "AT",
                    "STATUS",
                    "MESSAGE ID",
                    "REPLAYED"
                )?;
                for letter in &letters {
                    outln!(
                        "{:<8} {:<20} {:<6} {:<36} {:<20} {}",
                        letter.id,
                        letter.at.strftime("%Y-%m-%d %H:%M:%S"),
                        letter
                            .status
                            .map(|status| status.to_string())
                            .unwrap_or_else(|| "-".into()),
                        letter.message_id,
                        letter
                            .replayed_at
                            .map(|at| at.strftime("%Y-%m-%d %H:%M:%S").to_string())
                            .unwrap_or_else(|| "-".into()),
                        letter.reason
                    )?;
                }
                let pending = letters.iter().filter(|l| l.replayed_at.is_none()).count();
                eprintln!(
                    "{} dead letters, {pending} not replayed (`signalbox destination replay {name} --dead-letters` sends them again)",
                    letters.len()
                );
            }
        }
        DestinationCommand::Replay(args) => {
            let replay = match args.since.as_deref() {
                Some(text) => Replay::Since(text.trim().parse::<Timestamp>().map_err(|_| {
                    anyhow::anyhow!(
                        "--since: {text:?} is not an RFC 3339 time (e.g. 2024-05-01T12:00:00Z)"
                    )
                })?),
                None => Replay::DeadLetters,
            };
            sync.replay(&args.name, replay.clone())
                .await
                .context("cannot ask for the replay")?;
            let what = match replay {
                Replay::DeadLetters => "its dead letters".to_owned(),
                Replay::Since(since) => format!("everything received since {since}"),
            };
            eprintln!(
                "destination '{}' will send {what} again; a running server starts within a second",
                args.name
            );
        }
        DestinationCommand::Pause { name } => {
            set_state(&sync, &name, DestinationState::Paused).await?;
            eprintln!("destination '{name}' paused");
        }
        DestinationCommand::Resume { name } => {
            set_state(&sync, &name, DestinationState::Active).await?;
            eprintln!("destination '{name}' resumed");
        }
        DestinationCommand::Delete { name } => {
            sync.delete(&name).await?;
            eprintln!("destination '{name}' deleted");
        }
    }
    Ok(())
}

/// The sync handle over the destinations' store, the call log and (for `status`) engage,
/// read-only; it runs no delivery (its outbound client sends nothing; the server's checks the
/// addresses).
pub(super) async fn open(global: &GlobalArgs, with_engage: bool) -> anyhow::Result<Sync> {
    let backend = Backend::choose(global)?;
    let calls = open_store_readonly(global).await?;
    let store = backend.open_sync().await?;
    // Engage tells how much the reverse sync has queued; without it (a server never started
    // here) the status says 0.
    let engage = if with_engage && backend.has_engage() {
        match backend.open_engage_readonly().await {
            Ok(engage) => Some(engage),
            Err(err) => {
                let error = format!("{err:#}");
                tracing::warn!(%error, "cannot open engage; the reverse sync's queue reads as 0");
                None
            }
        }
    } else {
        None
    };
    let outbound = OutboundClient::new(OutboundConfig::default())
        .context("cannot set up the outbound HTTP client")?;
    Ok(Sync::new(SyncDeps {
        store,
        calls,
        engage,
        outbound,
        clock: Arc::new(SystemClock),
    }))
}

fn new_destination(args: DestinationCreateArgs) -> anyhow::Result<NewDestination> {
    // Clap requires the kind's secret; an empty one is refused here, naming the flag.
    let secret = |arg: Option<crate::cli::SecretArg>, flag: &str| match arg {
        Some(arg) if arg.0.is_empty() => Err(anyhow::anyhow!("{flag}: must not be empty")),
        Some(arg) => Ok(Some(Secret::new(arg.0))),
        None => Ok(None),
    };
    let required = |arg: Option<crate::cli::SecretArg>, flag: &str| {
        secret(arg, flag)?.ok_or_else(|| anyhow::anyhow!("{flag} is required"))
    };
    let config = match args.kind {
        DestinationKindArg::Segment => DestinationConfig::Segment {
            write_key: required(args.write_key, "--write-key")?,
            endpoint: args
                .endpoint
                .unwrap_or_else(|| SEGMENT_US_ENDPOINT.to_owned()),
            only_segment_profiles: args.only_segment_profiles,
        },
        DestinationKindArg::Klaviyo => DestinationConfig::Klaviyo {
            api_key: required(args.api_key, "--api-key")?,
            endpoint: args.endpoint.unwrap_or_else(|| KLAVIYO_ENDPOINT.to_owned()),
            sources: args.sources,
        },
        DestinationKindArg::Webhook => DestinationConfig::Webhook {
            url: args.url.unwrap_or_default(),
            secret: secret(args.secret, "--secret")?,
            sources: args.sources,
        },
    };
    Ok(NewDestination {
        name: args.name,
        config,
        rate: args.rate,
    })
}

async fn set_state(sync: &Sync, name: &str, state: DestinationState) -> anyhow::Result<()> {
    sync.patch(
        name,
        DestinationPatch {
            state: Some(state),
            ..DestinationPatch::default()
        },
    )
    .await?;
    Ok(())
}

/// The destination's secret as listings show it (`-` when it has none).
fn redacted_secret(config: &DestinationConfig) -> String {
    match config {
        DestinationConfig::Segment { write_key, .. } => write_key.redacted(),
        DestinationConfig::Klaviyo { api_key, .. } => api_key.redacted(),
        DestinationConfig::Webhook { secret, .. } => secret
            .as_ref()
            .map(Secret::redacted)
            .unwrap_or_else(|| "-".into()),
    }
}

fn rate_text(rate: Option<f64>) -> String {
    match rate {
        Some(rate) => format!("{rate}/s"),
        None => "default".into(),
    }
}

fn state_text(state: DestinationState) -> &'static str {
    match state {
        DestinationState::Active => "active",
        DestinationState::Paused => "paused",
    }
}

fn print_table(destinations: &[Destination]) -> std::io::Result<()> {
    outln!(
        "{:<24} {:<8} {:<7} {:<9} {:<9} {:<20} TARGET",
        "NAME",
        "KIND",
        "STATE",
        "RATE",
        "SECRET",
        "SOURCES"
    )?;
    for d in destinations {
        let sources = match &d.config {
            DestinationConfig::Segment {
                only_segment_profiles: true,
                ..
            } => "(segment profiles)".to_owned(),
            DestinationConfig::Segment { .. } => "-".to_owned(),
            other => other.sources().join(","),
        };
        outln!(
            "{:<24} {:<8} {:<7} {:<9} {:<9} {:<20} {}",
            d.name,
            d.config.kind().as_str(),
            state_text(d.state),
            rate_text(d.rate),
            redacted_secret(&d.config),
            sources,
            d.config.target()
        )?;
    }
    Ok(())
}

fn print_status(destination: &Destination, status: &DestinationStatus) -> std::io::Result<()> {
    let time = |at: Option<Timestamp>| {
        at.map(|at| at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "-".into())
    };
    let rows: Vec<(&str, String)> = vec![
        ("name", status.name.clone()),
        ("kind", status.kind.as_str().to_owned()),
        ("state", state_text(status.state).to_owned()),
        ("target", status.target.clone()),
        ("secret", redacted_secret(&destination.config)),
        ("rate", rate_text(destination.rate)),
        ("delivered", status.delivered.to_string()),
        ("queued", status.queued.to_string()),
        (
            "retrying",
            if status.retrying { "yes" } else { "no" }.to_owned(),
        ),
        ("retried", status.retried.to_string()),
        ("failed", status.failed.to_string()),
        ("dead-lettered", status.dead_lettered.to_string()),
        ("lag", format!("{:.1} s", status.lag_seconds)),
        ("throughput", format!("{:.1}/s", status.throughput)),
        (
            "circuit",
            serde_json::to_value(status.circuit)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        ),
        (
            "last error",
            status.last_error.clone().unwrap_or_else(|| "-".into()),
        ),
        ("last error at", time(status.last_error_at)),
        ("last delivery", time(status.last_delivery_at)),
    ];
    for (label, value) in rows {
        outln!("{:<14} {value}", format!("{label}:"))?;
    }
    Ok(())
}
