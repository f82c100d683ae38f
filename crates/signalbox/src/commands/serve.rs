//! `signalbox serve`: open the store, make sure a source exists, serve until SIGTERM/Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use signalbox_core::{Clock, StoredCall, SystemClock};
use signalbox_engage::{Engage, EntryFault};
use signalbox_flows::FlowMail;
use signalbox_mail::{LinkSigner, SmtpUrl, TrackingLinks};
use signalbox_outbound::{OutboundClient, OutboundConfig};
use signalbox_server::confirmations;
use signalbox_server::edge::disk::DiskFloor;
use signalbox_server::flow_deps::flow_deps;
use signalbox_server::mail::{Mail, MailSettings};
use signalbox_server::retention::{BackupLock, Retention, RetentionConfig};
use signalbox_server::segment::decode::Limits;
use signalbox_server::test_clock::ShiftedClock;
use signalbox_server::{Application, Engine, ServerConfig};
use signalbox_store::discard::DiscardingStore;
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{Store, StoreError};
use signalbox_sync::SyncDeps;

use super::stores::Backend;
use super::{parse_duration, parse_retain_log, parse_size, parse_timeout};
use crate::cli::{GlobalArgs, ServeArgs};

/// The source created on first start.
const DEFAULT_SOURCE: &str = "default";

/// The banner's hint beside the destinations' store.
const DESTINATION_HINT: &str = "signalbox destination create NAME --kind segment|klaviyo|webhook";

pub async fn run(global: &GlobalArgs, args: ServeArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    // Every connection is a descriptor: take all the operating system allows; the server
    // keeps its connection cap safely below it.
    let open_files = signalbox_server::edge::raise_open_files_limit();
    tracing::debug!(?open_files, "open files limit");
    let backend = Backend::choose(global)?;
    let mail_settings = mail_settings(&args)?;
    let retain_log = parse_retain_log(&args.retain_log)?;
    let caches = StoreCaches::split(parse_size(&args.cache_size, "--cache-size")? as u64);
    let options = SqliteOptions {
        dedupe_window: parse_duration(&args.dedupe_window, "--dedupe-window")?,
        queue_capacity: args.queue_capacity.max(1),
        writer: true,
        cache_bytes: caches.log,
        ..SqliteOptions::default()
    };
    let sqlite: Arc<dyn Store> = backend.open_log(options).await?;
    let (write_key, created) = default_write_key(sqlite.as_ref()).await?;
    // One clock for the whole process; `--test-clock` makes it movable by the admin API.
    let test_clock = args.test_clock.then(|| Arc::new(ShiftedClock::new()));
    let clock: Arc<dyn Clock> = match &test_clock {
        Some(clock) => Arc::clone(clock) as Arc<dyn Clock>,
        None => Arc::new(SystemClock),
    };
    // The engage pipeline derives profiles, metrics and events from the log.
    let mut engage_config = backend.engage_config();
    engage_config.hold_window = parse_duration(&args.hold_window, "--hold-window")?;
    engage_config.cache_bytes = caches.engage;
    if let Some(text) = args.test_fail_entries_containing.clone() {
        tracing::warn!("entries containing the test marker fail to apply");
        engage_config.fault = Some(EntryFault(Arc::new(move |entry: &StoredCall| {
            entry
                .payload
                .contains(&text)
                .then(|| "planned failure (--test-fail-entries-containing)".to_owned())
        })));
    }
    let engage = Engage::start(Arc::clone(&sqlite), Arc::clone(&clock), engage_config)
        .await
        .context("cannot start the engage pipeline")?;
    // Live segments follow engage's change feed.
    let audience = backend.start_audience(&engage, Arc::clone(&clock)).await?;
    // Destinations read the call log itself (under --discard too: it holds what came before).
    let calls = Arc::clone(&sqlite);
    let store: Arc<dyn Store> = if args.discard {
        Arc::new(DiscardingStore::new(sqlite))
    } else {
        sqlite
    };
    let config = server_config(&args)?;
    let mut app = Application::build(store, Arc::clone(&clock), config, global.listen).await?;
    if let Some(test_clock) = &test_clock {
        app.set_test_clock(Arc::clone(test_clock));
    }
    let min_free_disk = match args.min_free_disk.trim() {
        "0" => 0,
        text => parse_size(text, "--min-free-disk")? as u64,
    };
    // Only the embedded files fill a local disk; PostgreSQL watches its own.
    if let Some(data_dir) = backend.data_dir() {
        app.set_disk_floor(DiskFloor::watch(
            data_dir,
            min_free_disk,
            Duration::from_secs(1),
        ));
    }
    let addr = app.local_addr();
    let base = format!("http://{addr}");
    let public_url = config_public_url(&args).unwrap_or_else(|| base.clone());
    let secret = backend.link_secret().await?;
    let signer = LinkSigner::new(&secret).context("the link secret is too short")?;
    let links = TrackingLinks::new(signer, &public_url)
        .with_context(|| format!("--public-url {public_url:?} is not a URL"))?;
    app.set_links(links.clone());
    let mail = Mail::new(&mail_settings, links)?;
    let mail_summary = mail.summary();
    let flow_mail = mail.mailer().map(|mailer| FlowMail {
        mailer: mailer.clone(),
        composer: mail.composer().clone(),
    });
    app.set_mail(mail);
    let templates = backend.open_templates().await?;
    // The flows engine follows engage's change feed.
    let mut flows_config = backend.flows_config();
    flows_config.mail = flow_mail;
    flows_config.webhook_key = secret.clone();
    flows_config.allow_private_destinations = args.allow_private_destinations;
    flows_config.manual_review_expiry =
        parse_duration(&args.manual_review_expiry, "--manual-review-expiry")?;
    let deps = flow_deps(
        &engage,
        Some(templates.clone()),
        Some(audience.clone()),
        tokio::runtime::Handle::current(),
    );
    let flows = backend
        .start_flows(&engage, Arc::clone(&clock), flows_config, deps)
        .await?;
    app.set_engine(Engine {
        engage: engage.clone(),
        audience: audience.clone(),
        templates,
        flows: flows.clone(),
    });
    // Destinations: one delivery task each; every request goes through the guarded client,
    // so --allow-private-destinations applies as for flow webhooks.
    let sync_store = backend.open_sync().await?;
    let outbound = OutboundClient::new(OutboundConfig {
        allow_private_destinations: args.allow_private_destinations,
        ..OutboundConfig::default()
    })
    .context("cannot set up the outbound HTTP client")?;
    let sync = signalbox_sync::Sync::start(SyncDeps {
        store: sync_store,
        calls: Arc::clone(&calls),
        engage: Some(engage.clone()),
        outbound,
        clock: Arc::clone(&clock),
    });
    // Retention: the log's followers (engage, destinations) say what they still need, and
    // entries past the window that none needs go, at start and every minute.
    let retention = retain_log.map(|window| {
        let retention = Retention::new(
            calls,
            Some(engage.clone()),
            Some(sync.clone()),
            Arc::clone(&clock),
            RetentionConfig {
                window: Some(window),
                ..RetentionConfig::default()
            },
        );
        // A backup of the data folder holds every entry while it runs.
        match backend.data_dir() {
            Some(dir) => retention.with_backup_lock(BackupLock::in_data_dir(dir)),
            None => retention,
        }
        .spawn()
    });
    // Application::run stops its deliveries after the last request, before the log closes.
    app.set_sync(sync);
    // The console's accounts and sessions; on a first start, a one-time link to create the
    // first account.
    let accounts = backend.open_accounts(Arc::clone(&clock)).await?;
    app.set_console_auth(Arc::new(accounts.clone()));
    let setup_token = if accounts.has_accounts().await? {
        None
    } else {
        Some(
            accounts
                .create_setup_token()
                .await
                .context("cannot create a setup link")?,
        )
    };
    // Double opt-in confirmation emails, when a mailer is configured.
    let ledger = backend.open_confirmations().await?;
    let _confirmations = confirmations::spawn(engage.clone(), app.mail(), ledger)
        .await
        .context("cannot start the double opt-in mailer")?;
    println!("Signalbox is listening on {base}");
    println!("  Tracking API   {base}/v1   (Segment libraries: host=\"{base}\")");
    println!(
        "  Write key      {}   (source \"{DEFAULT_SOURCE}\"{})",
        write_key.expose(),
        if created { ", created now" } else { "" }
    );
    println!(
        "  Klaviyo API    {base}/api   (Klaviyo SDKs: test_host=\"{base}\"; keys: signalbox api-key create NAME)"
    );
    let console = public_url.trim_end_matches('/');
    println!("  Console        {console}/");
    if let Some(token) = &setup_token {
        println!(
            "  Set up         {console}/setup/{token}   (one-time link: create the first account)"
        );
    }
    println!("  Health         {base}/healthz");
    println!("  Metrics        {base}/metrics");
    match &backend {
        Backend::Embedded { log } => {
            let beside = |name: &str| log.with_file_name(name).display().to_string();
            println!("  Store          {}", log.display());
            println!("  Engage         {}", beside("engage.db"));
            println!("  Templates      {}", beside("templates.db"));
            println!("  Flows          {}", beside("flows.db"));
            println!(
                "  Destinations   {}   ({DESTINATION_HINT})",
                beside("sync.db")
            );
            println!("  Segments       {}", beside("audience.db"));
        }
        // Every store, and the link secret, in the one database (no password printed).
        Backend::Postgres(url) => {
            println!("  Store          {url}   (every component's tables)");
            println!("  Destinations   in the store   ({DESTINATION_HINT})");
        }
    }
    println!("  Mail           {mail_summary}");
    match retain_log {
        Some(window) => println!(
            "  Retention      calls kept {window:#} once every follower passed them   (signalbox storage status)"
        ),
        None => println!("  Retention      off: the call log keeps every call"),
    }
    if args.allow_private_destinations {
        println!("  Outbound       private destinations allowed (--allow-private-destinations)");
    }
    if test_clock.is_some() {
        println!("  Clock          test clock: POST {base}/admin/v1/test-clock {{\"advance_seconds\": N}} moves time forward");
    }
    if args.discard {
        println!("  Mode           discard: calls are parsed and validated, then dropped");
    }
    tracing::info!(
        %addr,
        %public_url,
        max_connections = app.connection_limits().max_connections,
        discard = args.discard,
        mail = %mail_summary,
        allow_private_destinations = args.allow_private_destinations,
        "serving"
    );
    app.run(shutdown).await?;
    drop(retention);
    flows.shutdown().await;
    audience.shutdown().await;
    engage.shutdown().await;
    tracing::info!("stopped after draining in-flight requests");
    Ok(())
}

/// The server's settings from the flags, checked.
/// `--cache-size` shared out: a quarter to the call log, the rest to engage's applier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StoreCaches {
    log: u64,
    engage: u64,
}

impl StoreCaches {
    /// The smallest share either store is given, whatever `--cache-size` says.
    const MIN_SHARE: u64 = 4 << 20;

    fn split(bytes: u64) -> StoreCaches {
        StoreCaches {
            log: (bytes / 4).max(Self::MIN_SHARE),
            engage: (bytes - bytes / 4).max(Self::MIN_SHARE),
        }
    }
}

fn server_config(args: &ServeArgs) -> anyhow::Result<ServerConfig> {
    Ok(ServerConfig {
        limits: Limits::default(),
        max_in_flight: args.max_in_flight.max(1),
        header_timeout: parse_timeout(&args.header_timeout, "--header-timeout")?,
        body_timeout: parse_timeout(&args.body_timeout, "--body-timeout")?,
        idle_timeout: parse_timeout(&args.idle_timeout, "--idle-timeout")?,
        max_connections: args.max_connections.max(1),
        max_body_bytes_in_flight: parse_size(
            &args.max_body_bytes_in_flight,
            "--max-body-bytes-in-flight",
        )?,
        http2_max_streams: args.http2_max_streams.max(1),
        shutdown_timeout: parse_timeout(&args.shutdown_timeout, "--shutdown-timeout")?,
        public_url: config_public_url(args),
        console: signalbox_console::ConsoleConfig {
            max_streams: args.console_max_streams.max(1),
            ..signalbox_console::ConsoleConfig::default()
        },
        ..ServerConfig::default()
    })
}

/// `--public-url`, unless empty.
fn config_public_url(args: &ServeArgs) -> Option<String> {
    args.public_url
        .as_deref()
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
}

/// `--smtp-url` and `--mail-from`, checked. The URL's parse error never echoes the URL, so
/// a password in it is never printed.
fn mail_settings(args: &ServeArgs) -> anyhow::Result<MailSettings> {
    let smtp_url = match args.smtp_url.as_ref().map(|url| url.0.trim()) {
        None | Some("") => None,
        Some(text) => Some(
            text.parse::<SmtpUrl>()
                .map_err(|err| anyhow::anyhow!("--smtp-url is not valid: {err}"))?,
        ),
    };
    let from = args
        .mail_from
        .as_deref()
        .map(str::trim)
        .filter(|from| !from.is_empty())
        .map(str::to_owned);
    if smtp_url.is_some() && from.is_none() {
        anyhow::bail!("--mail-from (SIGNALBOX_MAIL_FROM) is required with --smtp-url");
    }
    Ok(MailSettings {
        smtp_url,
        from,
        unsubscribe_mailto: None,
    })
}

/// The `default` source's current key, creating the source on first start.
async fn default_write_key(store: &dyn Store) -> anyhow::Result<(signalbox_core::WriteKey, bool)> {
    match store.current_write_key(DEFAULT_SOURCE).await {
        Ok(key) => Ok((key, false)),
        Err(StoreError::NotFound { .. }) => {
            let sources = store.list_sources().await?;
            if sources.iter().any(|s| s.name == DEFAULT_SOURCE) {
                anyhow::bail!("source '{DEFAULT_SOURCE}' has no current write key; run `signalbox source rotate-key {DEFAULT_SOURCE}`");
            }
            let (_, key) = store.create_source(DEFAULT_SOURCE).await?;
            Ok((key, true))
        }
        Err(err) => Err(err.into()),
    }
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called, not when
/// the future is first polled: a signal that comes while the stores open or before the
/// accept loop first looks at it is kept, and stops the server gracefully instead of killing
/// it.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle Ctrl-C")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = interrupt.recv() => {},
            }
            tracing::info!("shutdown requested; draining");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutdown requested; draining");
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    #[test]
    fn the_default_cache_size_gives_each_store_its_own_default() {
        let cli = Cli::parse_from(["signalbox", "serve"]);
        let crate::cli::Command::Serve(args) = cli.command else {
            panic!("not serve");
        };
        let bytes = parse_size(&args.cache_size, "--cache-size").unwrap() as u64;
        assert_eq!(
            StoreCaches::split(bytes),
            StoreCaches {
                log: signalbox_store::sqlite::DEFAULT_LOG_CACHE_BYTES,
                engage: signalbox_engage::DEFAULT_ENGAGE_CACHE_BYTES,
            }
        );
    }

    #[test]
    fn the_cache_size_is_shared_out_whole_with_a_floor_for_each_store() {
        let split = StoreCaches::split(1 << 30);
        assert_eq!(split.log + split.engage, 1 << 30);
        assert_eq!(split.log, 256 << 20);
        let tiny = StoreCaches::split(1024);
        assert_eq!(tiny.log, StoreCaches::MIN_SHARE);
        assert_eq!(tiny.engage, StoreCaches::MIN_SHARE);
    }
}
