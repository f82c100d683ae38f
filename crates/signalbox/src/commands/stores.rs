//! Where every store lives, chosen once: the embedded files in the data folder (today's
//! default) or one PostgreSQL database shared by every node (`--database-url postgres://…`).
//!
//! [`Backend::choose`] reads the flags; [`Stores::open`] opens the stores a server needs, and
//! the `start_*` methods start the engines over them. On PostgreSQL nothing a node needs to
//! share stays local: the link-signing secret is kept in the database too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use signalbox_audience::{Audience, PgAudienceStore};
use signalbox_console::accounts::AccountStore;
use signalbox_console::{Accounts, PgAccountStore, SqliteAccountStore};
use signalbox_core::{Clock, PostgresUrl};
use signalbox_engage::{Engage, EngageConfig};
use signalbox_flows::{Flows, FlowsConfig, FlowsDeps, PgFlowStore};
use signalbox_server::confirmations::{ConfirmationLedger, PgConfirmations, SqliteConfirmations};
use signalbox_server::templates::{PgTemplates, TemplateStore};
use signalbox_store::postgres::{PgOptions, PgStore};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};
use signalbox_sync::{PgSyncStore, SqliteSyncStore, SyncStore};

use super::database_path;
use crate::cli::GlobalArgs;

/// Connections each PostgreSQL-backed engine keeps at most.
const PG_POOL_SIZE: usize = 8;

/// Where the stores live.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Files beside the call log (`DATA_DIR/signalbox.db`, `engage.db`, …).
    Embedded { log: PathBuf },
    /// Every store in one PostgreSQL database.
    Postgres(PostgresUrl),
}

impl Backend {
    /// `--database-url postgres://…` or else the embedded files (`--data-dir`, `sqlite:PATH`).
    pub fn choose(global: &GlobalArgs) -> anyhow::Result<Backend> {
        match global.database_url.as_deref().map(str::trim) {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let url = PostgresUrl::parse(url)
                    .map_err(|err| anyhow::anyhow!("--database-url: {err}"))?;
                Ok(Backend::Postgres(url))
            }
            _ => Ok(Backend::Embedded {
                log: database_path(global)?,
            }),
        }
    }

    /// A file beside the call log (embedded only).
    fn file(log: &Path, name: &str) -> PathBuf {
        log.with_file_name(name)
    }

    /// The call log. `writer`: whether this process appends (the server does).
    pub async fn open_log(&self, options: SqliteOptions) -> anyhow::Result<Arc<dyn Store>> {
        Ok(match self {
            Backend::Embedded { log } => Arc::new(
                SqliteStore::open(log, options)
                    .with_context(|| format!("cannot open the store at {}", log.display()))?,
            ),
            Backend::Postgres(url) => Arc::new(
                PgStore::connect(
                    url,
                    PgOptions {
                        dedupe_window: options.dedupe_window,
                        queue_capacity: options.queue_capacity,
                        writer: options.writer,
                        ..PgOptions::default()
                    },
                )
                .await
                .with_context(|| format!("cannot open the store at {url}"))?,
            ),
        })
    }

    /// Engage's configuration: `engage.db` beside the log, or the database.
    pub fn engage_config(&self) -> EngageConfig {
        match self {
            Backend::Embedded { log } => EngageConfig::new(Backend::file(log, "engage.db")),
            Backend::Postgres(url) => {
                let mut config = EngageConfig::new(PathBuf::from("engage.db"));
                config.database = Some(url.clone());
                config
            }
        }
    }

    /// Engage's derived state for reading only, with no pipeline: what the CLI's commands read
    /// beside a running server or without one (`engage.db` is created when missing).
    pub async fn open_engage_readonly(&self) -> anyhow::Result<Engage> {
        match self {
            Backend::Embedded { log } => {
                let path = Backend::file(log, "engage.db");
                Engage::open_readonly(&path)
                    .await
                    .with_context(|| format!("cannot open {}", path.display()))
            }
            Backend::Postgres(url) => Engage::open_readonly_postgres(url)
                .await
                .with_context(|| format!("cannot open engage's tables at {url}")),
        }
    }

    /// Whether engage keeps state here yet: `engage.db` exists (a server ran here), or on
    /// PostgreSQL always (its tables are made when first opened).
    pub fn has_engage(&self) -> bool {
        match self {
            Backend::Embedded { log } => Backend::file(log, "engage.db").exists(),
            Backend::Postgres(_) => true,
        }
    }

    /// Where engage's state is, for messages: the file, or the tables in the database.
    pub fn engage_location(&self) -> String {
        match self {
            Backend::Embedded { log } => Backend::file(log, "engage.db").display().to_string(),
            Backend::Postgres(url) => format!("engage's tables at {url}"),
        }
    }

    /// Destinations, their progress and dead letters.
    pub async fn open_sync(&self) -> anyhow::Result<Arc<dyn SyncStore>> {
        Ok(match self {
            Backend::Embedded { log } => {
                let path = Backend::file(log, "sync.db");
                Arc::new(
                    SqliteSyncStore::open(&path)
                        .with_context(|| format!("cannot open {}", path.display()))?,
                )
            }
            Backend::Postgres(url) => Arc::new(
                PgSyncStore::connect(url)
                    .await
                    .with_context(|| format!("cannot open the destinations' tables at {url}"))?,
            ),
        })
    }

    /// The console's accounts and sessions.
    pub async fn open_accounts(&self, clock: Arc<dyn Clock>) -> anyhow::Result<Accounts> {
        let store: Arc<dyn AccountStore> = match self {
            Backend::Embedded { log } => {
                let path = Backend::file(log, "console.db");
                Arc::new(
                    SqliteAccountStore::open(&path)
                        .with_context(|| format!("cannot open {}", path.display()))?,
                )
            }
            Backend::Postgres(url) => Arc::new(
                PgAccountStore::connect(url)
                    .await
                    .with_context(|| format!("cannot open the console's tables at {url}"))?,
            ),
        };
        Ok(Accounts::new(store, clock))
    }

    /// Email templates.
    pub async fn open_templates(&self) -> anyhow::Result<TemplateStore> {
        Ok(match self {
            Backend::Embedded { log } => {
                let path = Backend::file(log, "templates.db");
                TemplateStore::open(&path)
                    .with_context(|| format!("cannot open {}", path.display()))?
            }
            Backend::Postgres(url) => TemplateStore::new(Arc::new(
                PgTemplates::connect(url)
                    .await
                    .context("cannot open the templates' table")?,
            )),
        })
    }

    /// The double opt-in ledger.
    pub async fn open_confirmations(&self) -> anyhow::Result<Arc<dyn ConfirmationLedger>> {
        Ok(match self {
            Backend::Embedded { log } => Arc::new(
                SqliteConfirmations::open(&Backend::file(log, "confirmations.db"))
                    .context("cannot open the double opt-in ledger")?,
            ),
            Backend::Postgres(url) => Arc::new(
                PgConfirmations::connect(url)
                    .await
                    .context("cannot open the double opt-in ledger")?,
            ),
        })
    }

    /// The segment engine, following `engage`.
    pub async fn start_audience(
        &self,
        engage: &Engage,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Audience> {
        let audience = match self {
            Backend::Embedded { log } => {
                Audience::start(engage.clone(), clock, Backend::file(log, "audience.db")).await
            }
            Backend::Postgres(url) => {
                let store = PgAudienceStore::connect(url, PG_POOL_SIZE)
                    .await
                    .context("cannot open the segments' tables")?;
                Audience::start_with_store(engage.clone(), clock, Arc::new(store)).await
            }
        };
        audience.context("cannot start the segment engine")
    }

    /// The flows configuration's file (embedded: `flows.db`; PostgreSQL does not use it).
    pub fn flows_config(&self) -> FlowsConfig {
        match self {
            Backend::Embedded { log } => FlowsConfig::new(Backend::file(log, "flows.db")),
            Backend::Postgres(_) => FlowsConfig::new(PathBuf::from("flows.db")),
        }
    }

    /// The flows engine, following `engage`.
    pub async fn start_flows(
        &self,
        engage: &Engage,
        clock: Arc<dyn Clock>,
        config: FlowsConfig,
        deps: FlowsDeps,
    ) -> anyhow::Result<Flows> {
        let flows = match self {
            Backend::Embedded { .. } => Flows::start(engage.clone(), clock, config, deps).await,
            Backend::Postgres(url) => {
                let store = PgFlowStore::connect(url, PG_POOL_SIZE)
                    .await
                    .context("cannot open the flows' tables")?;
                Flows::start_with_store(engage.clone(), clock, config, deps, Arc::new(store)).await
            }
        };
        flows.context("cannot start the flows engine")
    }

    /// The secret that signs links in emails and consent pages, made on first start so links
    /// keep working across restarts: `link.key` beside the log (owner-only), or on PostgreSQL
    /// a row every node reads.
    pub async fn link_secret(&self) -> anyhow::Result<Vec<u8>> {
        match self {
            Backend::Embedded { log } => link_secret_file(&Backend::file(log, "link.key")),
            Backend::Postgres(url) => {
                let candidate: [u8; 32] = rand::random();
                signalbox_store::postgres::shared_secret(url, "link", &candidate)
                    .await
                    .context("cannot read the link secret from the database")
            }
        }
    }

    /// The folder whose free space `--min-free-disk` watches (embedded only).
    pub fn data_dir(&self) -> Option<&Path> {
        match self {
            Backend::Embedded { log } => Some(log.parent().unwrap_or(Path::new("."))),
            Backend::Postgres(_) => None,
        }
    }
}

fn link_secret_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(secret) => Ok(secret),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let secret: [u8; 32] = rand::random();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            std::io::Write::write_all(&mut file, &secret)
                .with_context(|| format!("cannot write {}", path.display()))?;
            file.sync_all()?;
            Ok(secret.to_vec())
        }
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}
