//! `signalbox source …` and `signalbox api-key …`: they edit the store directly, so they work
//! whether the server runs or not (a running server picks changes up within a second).

use anyhow::Context;
use signalbox_core::{Scope, Scopes, SourceStatus};
use signalbox_engage::DestinationSettings;

use super::output::print_line;
use super::{open_store_readonly, parse_duration};
use crate::cli::{ApiKeyCommand, GlobalArgs, SourceCommand};

pub async fn run_source(global: &GlobalArgs, cmd: SourceCommand) -> anyhow::Result<()> {
    let store = open_store_readonly(global).await?;
    match cmd {
        SourceCommand::Create { name } => {
            let (_, key) = store
                .create_source(&name)
                .await
                .context("cannot create the source")?;
            outln!("{}", key.expose())?;
        }
        SourceCommand::List { json } => {
            let sources = store.list_sources().await?;
            if json {
                for source in sources {
                    print_line(&source)?;
                }
            } else {
                outln!(
                    "{:<24} {:<9} {:<10} {:<8} {:<23} DISPLAY NAME",
                    "NAME",
                    "STATUS",
                    "KEY",
                    "IN GRACE",
                    "CREATED"
                )?;
                for s in sources {
                    outln!(
                        "{:<24} {:<9} {:<10} {:<8} {:<23} {}",
                        s.name,
                        s.status.as_str(),
                        s.write_key,
                        s.keys_in_grace,
                        s.created_at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
                        s.display_name
                    )?;
                }
            }
        }
        SourceCommand::RotateKey { name, grace } => {
            let grace = parse_duration(&grace, "--grace")?;
            let key = store
                .rotate_write_key(&name, grace)
                .await
                .context("cannot rotate the key")?;
            outln!("{}", key.expose())?;
        }
        SourceCommand::Disable { name } => {
            store
                .set_source_status(&name, SourceStatus::Disabled)
                .await?;
            eprintln!("source '{name}' disabled");
        }
        SourceCommand::Enable { name } => {
            store
                .set_source_status(&name, SourceStatus::Enabled)
                .await?;
            eprintln!("source '{name}' enabled");
        }
        SourceCommand::Delete { name } => {
            store.delete_source(&name).await?;
            eprintln!("source '{name}' deleted");
        }
        SourceCommand::Settings { name, set } => {
            let stored = store.source_settings(&name).await?;
            let mut settings = DestinationSettings::from_json(&stored);
            for assignment in &set {
                let (key, value) = assignment
                    .split_once('=')
                    .with_context(|| format!("--set {assignment:?}: expected KEY=VALUE"))?;
                settings
                    .set_text(key.trim(), value.trim())
                    .map_err(|reason| anyhow::anyhow!("--set {assignment:?}: {reason}"))?;
            }
            if !set.is_empty() {
                store
                    .set_source_settings(&name, settings.merged_into(stored))
                    .await?;
                eprintln!(
                    "source '{name}' settings saved; a running server applies them within a second"
                );
            }
            outln!("{}", serde_json::to_string_pretty(&settings.to_json())?)?;
        }
    }
    Ok(())
}

pub async fn run_api_key(global: &GlobalArgs, cmd: ApiKeyCommand) -> anyhow::Result<()> {
    let store = open_store_readonly(global).await?;
    match cmd {
        ApiKeyCommand::Create {
            name,
            scopes,
            full_access,
        } => {
            let scopes = api_key_scopes(&scopes, full_access)?;
            let (_, key) = store
                .create_api_key(&name, &scopes)
                .await
                .context("cannot create the API key")?;
            outln!("{}", key.expose())?;
        }
        ApiKeyCommand::List => {
            outln!("{:<24} {:<12} {:<23} SCOPES", "NAME", "KEY", "CREATED")?;
            for k in store.list_api_keys().await? {
                outln!(
                    "{:<24} {:<12} {:<23} {}",
                    k.name,
                    k.prefix,
                    k.created_at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
                    k.scopes
                )?;
            }
        }
        ApiKeyCommand::Delete { name } => {
            store.delete_api_key(&name).await?;
            eprintln!("API key '{name}' deleted");
        }
    }
    Ok(())
}

/// The scopes of a new key: those named (`--scope`, comma-separated or repeated), `full` with
/// `--full-access`, or `full` alone when nothing was named.
fn api_key_scopes(names: &[String], full_access: bool) -> anyhow::Result<Scopes> {
    let mut scopes = Scopes::parse(names.iter().map(String::as_str))?;
    if full_access {
        scopes = scopes.iter().chain([Scope::Full]).collect();
    }
    if scopes.is_empty() {
        if !names.is_empty() {
            anyhow::bail!(
                "--scope names no scope; valid scopes are: {}",
                Scope::valid_names()
            );
        }
        scopes = Scopes::default_for_new_key();
    }
    Ok(scopes)
}
