//! `signalbox rebuild`, `signalbox profiles …` and `signalbox engage …`: the engage state,
//! from the command line.

use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use signalbox_core::Email;
use signalbox_engage::{HeldFilter, ProfileField, ProfileId, ProfileQuery};

use super::api::ServerClient;
use super::output::{print_line, QuarantineLine};
use super::stores::Backend;
use super::{open_store_readonly, parse_duration};
use crate::cli::{EngageCommand, GlobalArgs, ProfilesCommand, QuarantineCommand, RebuildArgs};

pub async fn rebuild(global: &GlobalArgs, args: RebuildArgs) -> anyhow::Result<()> {
    let hold_window = parse_duration(&args.hold_window, "--hold-window")?;
    let backend = Backend::choose(global)?;
    let store = open_store_readonly(global).await?;
    let location = backend.engage_location();
    // A log that retention trimmed no longer holds what made the state: a rebuild from it
    // would lose those profiles, events and aggregates.
    let first = store
        .read_calls(signalbox_store::CallQuery {
            limit: 1,
            ..signalbox_store::CallQuery::default()
        })
        .await?;
    if let Some(first) = first.first().filter(|call| call.seq > 1) {
        anyhow::bail!(
            "the call log was trimmed (`serve --retain-log`; its oldest call is seq {}): a rebuild would lose the profiles, events and aggregates made by the calls no longer in it, so {} is left as it is",
            first.seq,
            match backend {
                Backend::Embedded { .. } => "engage.db",
                Backend::Postgres(_) => "engage's tables",
            }
        );
    }
    let last = store.last_seq().await?;
    let bar = ProgressBar::new(last.max(0) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} log entries ({per_sec}, eta {eta}) {msg}",
        )
        .expect("progress template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let progress_bar = bar.clone();
    let started = std::time::Instant::now();
    let progress = move |p: signalbox_engage::RebuildProgress| {
        progress_bar.set_length(p.last_seq.max(0) as u64);
        progress_bar.set_position(p.applied_seq.max(0) as u64);
        progress_bar.set_message(format!("{} events", p.events));
    };
    let now = jiff::Timestamp::now();
    let config = backend.engage_config();
    let done = match &config.database {
        None => signalbox_engage::rebuild(store, &config.path, hold_window, now, progress).await,
        Some(url) => {
            signalbox_engage::rebuild_postgres(store, url, hold_window, now, progress).await
        }
    }
    .with_context(|| format!("cannot rebuild {location}"))?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(0.001);
    eprintln!(
        "rebuilt {location} from {} log entries ({} events) in {:.1} s ({:.0} entries/s)",
        done.entries,
        done.events,
        secs,
        done.entries as f64 / secs
    );
    Ok(())
}

pub async fn profiles(global: &GlobalArgs, cmd: ProfilesCommand) -> anyhow::Result<()> {
    let engage = Backend::choose(global)?.open_engage_readonly().await?;
    match cmd {
        ProfilesCommand::Held {
            expired,
            released,
            all,
            json,
        } => {
            let filter = match (expired, released, all) {
                (true, _, _) => HeldFilter::Expired,
                (_, true, _) => HeldFilter::Released,
                (_, _, true) => HeldFilter::All,
                _ => HeldFilter::Held,
            };
            if !json {
                outln!(
                    "{:<10} {:<9} {:<9} {:<20} {:<24} {:<24} REASON",
                    "SEQ",
                    "KIND",
                    "STATUS",
                    "RECEIVED",
                    "USER ID",
                    "ANONYMOUS ID"
                )?;
            }
            let mut after = 0;
            loop {
                let page = engage.held_calls(filter, after, 1000).await?;
                for held in &page {
                    if json {
                        print_line(held)?;
                    } else {
                        outln!(
                            "{:<10} {:<9} {:<9} {:<20} {:<24} {:<24} {}",
                            held.seq,
                            held.kind,
                            held.status,
                            held.received.strftime("%Y-%m-%d %H:%M:%S"),
                            held.user_id.as_deref().unwrap_or("-"),
                            held.anonymous_id.as_deref().unwrap_or("-"),
                            held.reason
                        )?;
                    }
                }
                match page.last() {
                    Some(last) => after = last.seq,
                    None => break,
                }
            }
            if !json {
                let counters = engage.counters().await?;
                let count = |name: &str| {
                    counters
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| *v)
                        .unwrap_or(0)
                };
                let held = count("held");
                let released = count("held.released");
                let expired = count("held.expired");
                eprintln!(
                    "held {held} in all: {released} released, {expired} expired, {} waiting",
                    held - released - expired
                );
            }
        }
        ProfilesCommand::Show { id_or_email } => {
            let id = if id_or_email.contains('@') {
                let email = Email::parse(&id_or_email).with_context(|| {
                    format!("{id_or_email:?} is neither a profile id nor an email")
                })?;
                let page = engage
                    .list_profiles(ProfileQuery {
                        any_of: vec![(ProfileField::Email, vec![email.into_string()])],
                        ..ProfileQuery::default()
                    })
                    .await?;
                page.items
                    .into_iter()
                    .next()
                    .with_context(|| format!("no profile has the email {id_or_email}"))?
                    .id
            } else {
                ProfileId(id_or_email)
            };
            let history = engage.profile_history(&id).await?;
            outln!("{}", serde_json::to_string_pretty(&history)?)?;
        }
    }
    Ok(())
}

pub async fn run(global: &GlobalArgs, cmd: EngageCommand) -> anyhow::Result<()> {
    match cmd {
        EngageCommand::Quarantine(args) => match args.command {
            None => list_quarantine(global, args.json).await,
            Some(QuarantineCommand::Retry {
                seq,
                api_key,
                server,
            }) => {
                let client = ServerClient::new(global, &server, &api_key)?;
                retry_quarantined(&client, seq).await
            }
        },
    }
}

/// Reads engage's state directly (as `profiles held` does): it works beside a running server
/// and without one.
async fn list_quarantine(global: &GlobalArgs, json: bool) -> anyhow::Result<()> {
    let store = open_store_readonly(global).await?;
    let engage = Backend::choose(global)?.open_engage_readonly().await?;
    let names: std::collections::HashMap<i64, String> = store
        .list_sources()
        .await?
        .into_iter()
        .map(|source| (source.id.0, source.name))
        .collect();
    if !json {
        outln!(
            "{:<10} {:<12} {:<16} {:<20} {:<6} ERROR",
            "SEQ",
            "KIND",
            "SOURCE",
            "RECEIVED",
            "TRIES"
        )?;
    }
    let mut after = 0;
    let mut count = 0;
    loop {
        let page = engage.quarantined(after, 1000).await?;
        for entry in &page {
            let source = names.get(&entry.source_id).cloned();
            if json {
                print_line(&QuarantineLine::new(entry, source))?;
            } else {
                outln!(
                    "{:<10} {:<12} {:<16} {:<20} {:<6} {}",
                    entry.seq,
                    entry.kind,
                    source.unwrap_or_else(|| format!("#{}", entry.source_id)),
                    entry.received.strftime("%Y-%m-%d %H:%M:%S"),
                    entry.tries,
                    entry.error
                )?;
            }
        }
        count += page.len();
        match page.last() {
            Some(last) => after = last.seq,
            None => break,
        }
    }
    if !json {
        eprintln!("{count} quarantined; `signalbox engage quarantine retry SEQ` applies one again");
    }
    Ok(())
}

/// Through the running server's admin API: its pipeline is the only writer of engage's state.
async fn retry_quarantined(client: &ServerClient, seq: i64) -> anyhow::Result<()> {
    let path = format!("/admin/v1/engage/quarantine/{seq}/retry");
    let body = client
        .ok(reqwest::Method::POST, &path, None)
        .await
        .with_context(|| format!("cannot retry log entry {seq}"))?;
    if body["applied"] == serde_json::json!(true) {
        outln!("log entry {seq} applied; it left the quarantine")?;
        return Ok(());
    }
    anyhow::bail!(
        "log entry {seq} still fails (tries: {}): {}",
        body["tries"],
        body["error"].as_str().unwrap_or("unknown error")
    )
}
