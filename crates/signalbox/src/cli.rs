//! Command-line arguments: what the user typed, before it is resolved into settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{ArgGroup, Args, CommandFactory, Parser, Subcommand, ValueEnum};
use signalbox_core::Email;

use crate::commands::bench::IdStyle;

#[derive(Debug, Parser)]
#[command(
    name = "signalbox",
    version,
    about = "Self-hosted customer data and marketing automation"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Folder of the embedded store.
    #[arg(
        long,
        global = true,
        env = "SIGNALBOX_DATA_DIR",
        default_value = "signalbox-data"
    )]
    pub data_dir: PathBuf,
    /// Address the server listens on.
    #[arg(
        long,
        global = true,
        env = "SIGNALBOX_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// Store URL; `sqlite:PATH` (default: the file in --data-dir) or
    /// `postgres://user:password@host:port/db` (every store in that database).
    #[arg(long, global = true, env = "SIGNALBOX_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Log format on stderr.
    #[arg(long, global = true, env = "SIGNALBOX_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

/// A value that may hold a secret (an SMTP URL with its password), as typed. `Debug` never
/// shows it.
#[derive(Clone)]
pub struct SecretArg(pub String);

impl std::str::FromStr for SecretArg {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<SecretArg, Self::Err> {
        Ok(SecretArg(text.to_owned()))
    }
}

impl std::fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretArg([redacted])")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Manage sources and their write keys.
    #[command(subcommand)]
    Source(SourceCommand),
    /// Manage private API keys (`pk_…`).
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    /// Look at what arrived.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Re-derive profiles, events, metrics and aggregates from the call log (stop the server
    /// first). The result is the same state, ids included.
    Rebuild(RebuildArgs),
    /// Look at profiles and at calls waiting for one.
    #[command(subcommand)]
    Profiles(ProfilesCommand),
    /// The engage pipeline: log entries it set aside because applying them kept failing.
    #[command(subcommand)]
    Engage(EngageCommand),
    /// Manage lists on a running server (through its API; needs a private key).
    List(ListArgs),
    /// Manage flows on a running server (over its Klaviyo-compatible API).
    Flow(FlowArgs),
    /// Define segments and list their members, through a running server's API.
    Segment(SegmentArgs),
    /// Send what Signalbox receives and does to other systems: the reverse sync to a Segment
    /// source, forwarding to a Klaviyo-compatible API, signed webhooks. Works whether the
    /// server runs or not; a running server picks changes up within a second.
    #[command(subcommand)]
    Destination(DestinationCommand),
    /// Measure the server.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Manage the console's accounts (`console.db` in the data folder). Works whether the
    /// server runs or not.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// What the data folder holds: sizes per store, the oldest call the log keeps and what
    /// keeps it (`serve --retain-log`). Works whether the server runs or not.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Copy a stopped embedded installation (its data folder: the call log, keys, profiles,
    /// lists, segments, flows, destinations, templates, console accounts, the link secret)
    /// into an empty PostgreSQL database, for `serve --database-url postgres://…`.
    Migrate(MigrateArgs),
    /// Take a consistent copy of every store of the data folder into one file, while the
    /// server runs: every call acknowledged before it began is in it. On PostgreSQL use
    /// `pg_dump` instead.
    Backup(BackupArgs),
    /// Bring a backup back into a new or empty data folder (`--data-dir`), for `serve`.
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The file to write (a compressed archive); it must not exist.
    #[arg(long)]
    pub to: PathBuf,
    /// Print what was copied as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A file `signalbox backup` wrote.
    #[arg(long)]
    pub from: PathBuf,
    /// Print what was restored as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The data folder of the installation to copy; its server must be stopped.
    #[arg(long)]
    pub from: PathBuf,
    /// The PostgreSQL database to copy into (`postgres://…`); it must hold no Signalbox data.
    #[arg(long, env = "SIGNALBOX_MIGRATE_TO")]
    pub to: String,
    /// Print the rows copied as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Sizes per store, the oldest call kept and what holds it back: the window, the engage
    /// pipeline, held or quarantined calls, a destination that is behind, a pending replay.
    Status {
        /// One JSON object.
        #[arg(long)]
        json: bool,
        /// The window the server keeps calls for (as `serve --retain-log`).
        #[arg(long, env = "SIGNALBOX_RETAIN_LOG", default_value = "30d")]
        retain_log: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a console account. The password is read from standard input (its first line,
    /// the line break dropped), at least 12 characters:
    /// `printf '%s\n' "$PASSWORD" | signalbox admin create EMAIL --password-stdin`.
    Create {
        /// The account's email (kept trimmed and lowercase).
        email: Email,
        /// Read the password from standard input (the only way to give it: never on the
        /// command line, where other users could see it).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// List console accounts (email, created).
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Delete a console account; its sessions end.
    Delete { email: Email },
    /// Set a new password, read from standard input like `create`; the account's sessions end.
    ResetPassword {
        email: Email,
        /// Read the password from standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DestinationCommand {
    /// Create a destination; prints its id. Secrets are stored, never printed back.
    Create(DestinationCreateArgs),
    /// List destinations with their kind, state, rate, target and sources (secrets redacted).
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// What a destination has done: delivered, queued, retrying, failed, dead-lettered, lag
    /// (age of the oldest undelivered item), last error, throughput, circuit breaker.
    Status {
        name: String,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Calls the receiver refused for good, with the reason and its response.
    DeadLetters {
        name: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Send again the dead letters, or everything received since a time. Each call keeps
    /// its id (`messageId`, `unique_id`), so the receiver stores nothing twice.
    Replay(DestinationReplayArgs),
    /// Stop delivering; what arrives meanwhile waits and is delivered after `resume`.
    Pause { name: String },
    /// Deliver again after `pause`, from where it stopped.
    Resume { name: String },
    /// Delete the destination with its progress, dead letters and delivery records.
    Delete { name: String },
}

/// The kinds of destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DestinationKindArg {
    /// The reverse sync: profile changes made in Signalbox and email events, as Segment
    /// `identify` and `track` calls to a Segment source (or another Signalbox's `/v1`).
    Segment,
    /// Forward the named sources' calls to a Klaviyo-compatible API (profiles, events, lists).
    Klaviyo,
    /// Forward the named sources' calls as Segment-spec JSON batches to a URL, signed with
    /// HMAC-SHA256 when a secret is given.
    Webhook,
}

impl DestinationKindArg {
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKindArg::Segment => "segment",
            DestinationKindArg::Klaviyo => "klaviyo",
            DestinationKindArg::Webhook => "webhook",
        }
    }
}

#[derive(Debug, Args)]
pub struct DestinationCreateArgs {
    /// A unique name: letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// What the destination sends and where.
    #[arg(long, value_enum)]
    pub kind: DestinationKindArg,
    /// segment: the write key of the Segment source to send to (HTTP Basic user name).
    #[arg(long, value_name = "KEY", required_if_eq("kind", "segment"))]
    pub write_key: Option<SecretArg>,
    /// klaviyo: a private API key of the receiving account (`Klaviyo-API-Key`).
    #[arg(long, value_name = "KEY", required_if_eq("kind", "klaviyo"))]
    pub api_key: Option<SecretArg>,
    /// webhook: where batches are posted.
    #[arg(long, required_if_eq("kind", "webhook"))]
    pub url: Option<String>,
    /// webhook: the key of the HMAC-SHA256 signature of each body. Without it, unsigned.
    #[arg(long, value_name = "SECRET")]
    pub secret: Option<SecretArg>,
    /// segment, klaviyo: the API host. Default: Segment's US host (https://api.segment.io;
    /// EU: https://events.eu1.segmentapis.com) or Klaviyo's (https://a.klaviyo.com). Another
    /// Signalbox works too.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// segment: only sync profiles created or updated through a Segment source ("Do not sync
    /// profiles that are not updated by the Klaviyo Destination").
    #[arg(long)]
    pub only_segment_profiles: bool,
    /// klaviyo, webhook: a source whose calls are forwarded; repeat for more.
    #[arg(
        long = "source",
        value_name = "NAME",
        num_args = 1..,
        required_if_eq_any([("kind", "klaviyo"), ("kind", "webhook")])
    )]
    pub sources: Vec<String>,
    /// Calls per second at most (`100/s` or `100`). Default: Klaviyo's published limits for
    /// `klaviyo`, unlimited otherwise.
    #[arg(long, value_name = "N/s", value_parser = parse_rate_arg)]
    pub rate: Option<f64>,
}

fn parse_rate_arg(text: &str) -> Result<f64, String> {
    signalbox_server::admin::destinations::parse_rate(text)
}

impl DestinationCreateArgs {
    /// Refuses a flag of another kind (`--write-key` with `--kind webhook`) as clap refuses
    /// conflicting flags: the same message format and exit status.
    pub fn check_kind(&self) -> Result<(), clap::Error> {
        use DestinationKindArg::{Klaviyo, Segment, Webhook};
        let flags: [(&str, bool, &[DestinationKindArg]); 7] = [
            ("--write-key", self.write_key.is_some(), &[Segment]),
            (
                "--only-segment-profiles",
                self.only_segment_profiles,
                &[Segment],
            ),
            ("--api-key", self.api_key.is_some(), &[Klaviyo]),
            ("--endpoint", self.endpoint.is_some(), &[Segment, Klaviyo]),
            ("--url", self.url.is_some(), &[Webhook]),
            ("--secret", self.secret.is_some(), &[Webhook]),
            ("--source", !self.sources.is_empty(), &[Klaviyo, Webhook]),
        ];
        for (flag, given, kinds) in flags {
            if given && !kinds.contains(&self.kind) {
                let fits: Vec<String> = kinds
                    .iter()
                    .map(|kind| format!("--kind {}", kind.as_str()))
                    .collect();
                let mut cli = Cli::command();
                cli.build();
                let create = cli
                    .find_subcommand_mut("destination")
                    .and_then(|destination| destination.find_subcommand_mut("create"))
                    .expect("destination create is a command");
                return Err(create.error(
                    ErrorKind::ArgumentConflict,
                    format!(
                        "the argument '{flag}' cannot be used with '--kind {}' (it is for {})",
                        self.kind.as_str(),
                        fits.join(" or ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("what").required(true).args(["dead_letters", "since"])))]
pub struct DestinationReplayArgs {
    pub name: String,
    /// Send the dead letters not yet replayed.
    #[arg(long)]
    pub dead_letters: bool,
    /// Send everything received at or after this time (e.g. `2024-05-01T12:00:00Z`).
    #[arg(long, value_name = "RFC3339")]
    pub since: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EngageCommand {
    /// List quarantined log entries (seq, kind, source, received, tries, error): entries
    /// the pipeline set aside after three failed tries so that the rest could go on. `retry
    /// SEQ` applies one again.
    Quarantine(QuarantineArgs),
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct QuarantineArgs {
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<QuarantineCommand>,
}

#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// Apply a quarantined entry again, after fixing its cause, through the running server
    /// (its pipeline is the only writer of engage.db). Once applied it leaves the quarantine;
    /// while it still fails, the error is printed and the command fails.
    Retry {
        /// The entry's sequence number in the log (see `signalbox engage quarantine`).
        seq: i64,
        /// A private API key (`pk_…`) of the running server.
        #[arg(long, env = "SIGNALBOX_API_KEY", hide_env_values = true)]
        api_key: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Where the running server is, for the commands that go through its API.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The running server's base URL (default: `http://` and the --listen address).
    #[arg(long, env = "SIGNALBOX_URL", alias = "server", value_name = "URL")]
    pub url: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// A private API key (`pk_…`) of the running server, with the lists and profiles scopes
    /// and `admin` (imports and pending confirmations are admin API), e.g. one made with
    /// `signalbox api-key create NAME --scope full,admin`.
    #[arg(long, env = "SIGNALBOX_API_KEY", hide_env_values = true)]
    pub api_key: String,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: ListCommand,
}

#[derive(Debug, Subcommand)]
pub enum ListCommand {
    /// Create a list; prints its id.
    Create {
        name: String,
        /// People join only after confirming through a signed link.
        #[arg(long)]
        double_opt_in: bool,
    },
    /// List the lists with their member counts.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Add the people of a file to a list (by id or name): a CSV with an `email` column
    /// (`first_name`/`last_name` optional) or JSON lines with `email`. Consent is unchanged.
    Import { list: String, file: PathBuf },
    /// Print a list's members (by id or name).
    Members {
        list: String,
        /// Those waiting to confirm a double opt-in, with their confirmation links.
        #[arg(long)]
        pending: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct FlowArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// A private API key with `flows:write` (`signalbox api-key create NAME --scope
    /// flows:write`); `messages`, `approve` and `skip` also need `admin` (they are admin API):
    /// `--scope flows:write,admin`.
    #[arg(long, env = "SIGNALBOX_API_KEY", hide_env_values = true)]
    pub api_key: String,
    #[command(subcommand)]
    pub command: FlowCommand,
}

#[derive(Debug, Subcommand)]
pub enum FlowCommand {
    /// Create a flow from a JSON file (`{"name", "definition", "status"?}` or Klaviyo's
    /// create body), or update the flow of that name.
    Apply { file: PathBuf },
    /// List flows: id, status, trigger, name.
    List {
        #[arg(long)]
        json: bool,
    },
    /// A flow (by name or id) with its counters and each action's.
    Status {
        name_or_id: String,
        #[arg(long)]
        json: bool,
    },
    /// The messages a flow (by name or id) held for review (a `manual` flow or message):
    /// id, status, action, recipient, subject, when it ages out.
    Messages {
        flow: String,
        /// Only those waiting for review.
        #[arg(long)]
        pending: bool,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
    },
    /// Send a message held for review (consent and suppressions are checked again); the
    /// profile's run then moves on. Approving it twice sends it once.
    Approve {
        flow: String,
        /// The message's id, as `signalbox flow messages` shows it.
        #[arg(long = "message", value_name = "ID")]
        message: i64,
    },
    /// Skip a message held for review (`skipped:manual`): it is never sent, and the
    /// profile's run moves on.
    Skip {
        flow: String,
        /// The message's id, as `signalbox flow messages` shows it.
        #[arg(long = "message", value_name = "ID")]
        message: i64,
    },
}

#[derive(Debug, Clone, Args)]
pub struct SegmentArgs {
    /// A private API key of the server with `segments:write` and `profiles:read`
    /// (`signalbox api-key create NAME --scope segments:write,profiles:read`).
    #[arg(long, env = "SIGNALBOX_API_KEY", hide_env_values = true)]
    pub api_key: String,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: SegmentCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum SegmentCommand {
    /// Create or update (by name) the segment a JSON file describes:
    /// `{"name": …, "definition": {"condition_groups": […]}}`; shows the backfill's progress.
    Apply { file: PathBuf },
    /// Print the members of the segment with this name: id, email, joined at.
    Members { name: String },
}

#[derive(Debug, Clone, Args)]
pub struct RebuildArgs {
    /// How long a call without a known profile is held (as for `serve`).
    #[arg(long, env = "SIGNALBOX_HOLD_WINDOW", default_value = "7d")]
    pub hold_window: String,
    /// The URL people reach this server at, for links in emails and consent pages
    /// (unsubscribe, confirm, open and click tracking). Default: the listening address.
    #[arg(long, env = "SIGNALBOX_PUBLIC_URL")]
    pub public_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ProfilesCommand {
    /// Calls held until their ids are linked to a profile, and holds that expired.
    Held {
        /// List expired holds (with their reason) instead of waiting ones.
        #[arg(long, conflicts_with_all = ["released", "all"])]
        expired: bool,
        /// List holds that were released onto a profile.
        #[arg(long, conflicts_with = "all")]
        released: bool,
        /// List every hold, whatever its status.
        #[arg(long)]
        all: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// A profile (by id or email) with its audit trail and provenance, as JSON.
    Show { id_or_email: String },
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Parse and validate but store nothing (the ceiling the ingest benchmark compares with).
    #[arg(long, env = "SIGNALBOX_DISCARD")]
    pub discard: bool,
    /// Tracking API requests processed at once; past this the server answers 429.
    #[arg(long, env = "SIGNALBOX_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: usize,
    /// Requests that may wait for the event log writer; past this the server answers 503.
    #[arg(long, env = "SIGNALBOX_QUEUE_CAPACITY", default_value_t = 512)]
    pub queue_capacity: usize,
    /// A repeated messageId inside this window is stored once (e.g. `24h`, `90m`).
    #[arg(long, env = "SIGNALBOX_DEDUPE_WINDOW", default_value = "24h")]
    pub dedupe_window: String,
    /// How long a call whose ids name no profile yet (e.g. no email while enforceEmail is on)
    /// is held before it expires (e.g. `7d`, `36h`).
    #[arg(long, env = "SIGNALBOX_HOLD_WINDOW", default_value = "7d")]
    pub hold_window: String,
    /// How long the call log keeps an entry (e.g. `30d`, `36h`), or `off` to keep every one.
    /// An older entry goes once the engage pipeline and every destination have passed it;
    /// what a held call, a quarantined entry, a destination that is behind (paused or
    /// failing) or a pending replay still needs stays. Profiles, events and aggregates stay.
    /// `signalbox storage status` shows what is kept and why.
    #[arg(long, env = "SIGNALBOX_RETAIN_LOG", default_value = "30d")]
    pub retain_log: String,
    /// How long a flow message held for review (a `manual` flow or message) waits to be
    /// approved or skipped (`signalbox flow approve|skip`) before it ages out as
    /// `skipped:expired` and its run moves on (e.g. `7d`, `48h`).
    #[arg(long, env = "SIGNALBOX_MANUAL_REVIEW_EXPIRY", default_value = "7d")]
    pub manual_review_expiry: String,
    /// The URL people and browsers reach this server at (`https://track.example.com`): the
    /// base of links in emails and consent pages (unsubscribe, confirm, open and click
    /// tracking) and the Tracking API host analytics.js is told (`apiHost`, `protocol`).
    /// Default: `http://` and the listening address. A request's `Host` header is never used.
    #[arg(long, env = "SIGNALBOX_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// A new connection must send its first request's headers within this; else it is closed
    /// (silent and slow-header clients).
    #[arg(long, env = "SIGNALBOX_HEADER_TIMEOUT", default_value = "10s")]
    pub header_timeout: String,
    /// A request body must arrive whole within this of its headers; else 408.
    #[arg(long, env = "SIGNALBOX_BODY_TIMEOUT", default_value = "30s")]
    pub body_timeout: String,
    /// A connection with no request in flight for this long is closed.
    #[arg(long, env = "SIGNALBOX_IDLE_TIMEOUT", default_value = "60s")]
    pub idle_timeout: String,
    /// Connections served at once (capped below the open-files limit, which is raised to its
    /// hard limit at start); past it a new connection is answered 503 with `Retry-After`
    /// (`/healthz` still answers) and closed.
    #[arg(long, env = "SIGNALBOX_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Request body bytes being read at once, over all requests (each request reserves its
    /// Content-Length, or its route's limit, before its body is read); past it, 503 with
    /// `Retry-After`. E.g. `64MiB`, `500MB`.
    #[arg(
        long,
        env = "SIGNALBOX_MAX_BODY_BYTES_IN_FLIGHT",
        default_value = "64MiB"
    )]
    pub max_body_bytes_in_flight: String,
    /// Memory the embedded stores keep for page caches and write buffers (e.g. `160MiB`,
    /// `1GiB`): a quarter goes to the call log (its writer's page cache and its dedupe
    /// index), the rest to engage's applier. More keeps more of a large store's indexes in
    /// memory; the segment and flow stores keep 16 MiB each beside it.
    #[arg(long, env = "SIGNALBOX_CACHE_SIZE", default_value = "160MiB")]
    pub cache_size: String,
    /// Concurrent streams on one HTTP/2 connection.
    #[arg(long, env = "SIGNALBOX_HTTP2_MAX_STREAMS", default_value_t = 100)]
    pub http2_max_streams: u32,
    /// Free space the data folder's disk keeps: below it the Tracking API and the Klaviyo
    /// write API answer 503 with Retry-After (nothing is acknowledged that might not be kept),
    /// reads go on, and writes resume by themselves once space is back. 0 turns it off.
    #[arg(long, env = "SIGNALBOX_MIN_FREE_DISK", default_value = "1GiB")]
    pub min_free_disk: String,
    /// On SIGTERM or Ctrl-C, how long in-flight requests may take to finish before their
    /// connections are closed; the store is closed cleanly either way.
    #[arg(long, env = "SIGNALBOX_SHUTDOWN_TIMEOUT", default_value = "10s")]
    pub shutdown_timeout: String,
    /// Source debugger streams (the console's live view of arriving calls) open at once over
    /// the whole server; past it a new one is answered 429 with `Retry-After`. Each session
    /// may have at most 4 open, and a stream ends after 30 minutes (the browser reconnects).
    #[arg(long, env = "SIGNALBOX_CONSOLE_MAX_STREAMS", default_value_t = 16)]
    pub console_max_streams: usize,
    /// The SMTP server emails are sent through: `smtp://user:pass@host:587?tls=starttls`,
    /// `smtps://user:pass@host:465`, `smtp://127.0.0.1:2525` (plaintext, local sinks only).
    /// Without it sending is off. The password is never printed or logged.
    #[arg(long, env = "SIGNALBOX_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<SecretArg>,
    /// The default sender, e.g. `Shop <shop@example.com>`; required with --smtp-url. A flow's
    /// `from_email` overrides it.
    #[arg(long, env = "SIGNALBOX_MAIL_FROM")]
    pub mail_from: Option<String>,
    /// Let flow webhooks and destinations reach loopback, private (RFC 1918), carrier-grade
    /// NAT, link-local, cloud metadata and other non-public addresses. Off by default: a URL
    /// that is or resolves to such an address is refused (a flow webhook's is dead-lettered).
    /// For tests and receivers on the same network.
    #[arg(long, env = "SIGNALBOX_ALLOW_PRIVATE_DESTINATIONS")]
    pub allow_private_destinations: bool,
    /// For end-to-end tests of time-based behaviour: the server's clock can be moved forward
    /// with `POST /admin/v1/test-clock` (private key). Never for production.
    #[arg(long, hide = true)]
    pub test_clock: bool,
    /// For end-to-end tests of quarantine: log entries whose payload contains this text fail
    /// to apply. Never for production.
    #[arg(long, hide = true, value_name = "TEXT")]
    pub test_fail_entries_containing: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Create a source; prints its write key and nothing else.
    Create {
        /// Its name: any text people know it by ("test website"); its slug for URLs and
        /// commands (`test-website`) is made from it. The commands below take either.
        name: String,
    },
    /// List sources (keys redacted).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Issue a new write key; the old one keeps working for the grace period.
    RotateKey {
        name: String,
        /// How long the old key keeps working (e.g. `24h`, `0s`).
        #[arg(long, default_value = "24h")]
        grace: String,
    },
    /// Refuse the source's calls (401) until enabled again.
    Disable { name: String },
    /// Accept the source's calls again.
    Enable { name: String },
    /// Delete the source and its keys (its calls stay in the log).
    Delete { name: String },
    /// Show the source's engage destination settings, or change them with `--set`.
    Settings {
        name: String,
        /// `KEY=VALUE`: enabled, enforceEmail, listId, confirmOptin, sendAnonymous,
        /// useSegmentSpec (e.g. `--set enforceEmail=false --set listId=L1`; `listId=` clears).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a private API key; prints it and nothing else. It cannot be shown again.
    Create {
        name: String,
        /// What the key may do; repeat the flag or separate names with commas. Klaviyo's
        /// scope names (`profiles:read`, `events:write`, `lists:write`, `metrics:read`, …; a
        /// `:write` scope includes the `:read` of its resource), `full` for every Klaviyo
        /// scope, `admin` for the admin API (keys, sources and write keys, settings, the raw
        /// call log, rejections, imports). Default: `full`, without `admin`.
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Every Klaviyo scope (the same as `--scope full`); add `--scope admin` for the admin
        /// API.
        #[arg(long)]
        full_access: bool,
    },
    /// List private API keys (prefixes only) and their scopes.
    List,
    /// Delete a private API key.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Follow the log live, one JSON line per call.
    Tail {
        #[arg(long)]
        source: Option<String>,
        /// Start from the beginning of the log instead of its end.
        #[arg(long)]
        from_start: bool,
    },
    /// Write stored calls as JSON lines.
    Export {
        #[arg(long)]
        source: Option<String>,
        /// Only calls received at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
    },
    /// List rejected calls with their reason, one JSON line each.
    Rejected {
        #[arg(long)]
        source: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Load the Tracking API with realistic `/v1/batch` requests: durable throughput, the
    /// parse-and-validate ceiling (`serve --discard`), and latency at a fixed rate.
    Ingest(IngestBenchArgs),
    /// The engage pipeline through the real server: events applied per second, and the time
    /// from a call's 200 to its event in the activity feed at a steady rate.
    Pipeline(PipelineBenchArgs),
    /// The flows engine in process: event → run started latency, waiting runs resuming when
    /// due, emails per second to `--smtp-url`.
    Flows(FlowsBenchArgs),
    /// Live segments over generated ecommerce data: backfill time, pipeline throughput with
    /// live segments versus none, event → membership change latency.
    Segments(SegmentsBenchArgs),
    /// The whole chain through the real server at a fixed rate, with live segments and live
    /// flows: per stage, the time from a call's 200 to its effect (activity feed, segment
    /// entered, flow run started) and the backlog over time, then a check that every call
    /// is in the log once and every segment equals a fresh evaluation.
    Chain(ChainBenchArgs),
    /// Destinations through the real server and a receiver in this process: calls delivered
    /// per second by one destination, the time from a call's 200 to the receiver's 200 at a
    /// steady rate, and ingest with three destinations running versus none.
    Destinations(DestinationsBenchArgs),
    /// The console's page times through the real server over the segments benchmark's data
    /// set (posted to `/v1/batch` and applied first): p50, p99 and max per page, signed in as
    /// a browser is, against the 100 ms target.
    Console(ConsoleBenchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ConsoleBenchArgs {
    /// Profiles of the data set (one identify each).
    #[arg(long, default_value_t = 100_000)]
    pub profiles: usize,
    /// Events of the data set, over the last 90 days.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Timed fetches of each page.
    #[arg(long, default_value_t = 20)]
    pub iterations: usize,
    /// Unmeasured fetches of each page before the timed ones.
    #[arg(long, default_value_t = 2)]
    pub warmups: usize,
    /// Also write every figure to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct DestinationsBenchArgs {
    /// Connections of the closed-loop phases.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Length of each measured phase (e.g. `10s`).
    #[arg(long, default_value = "10s")]
    pub duration: String,
    /// Unmeasured load before each phase.
    #[arg(long, default_value = "2s")]
    pub warmup: String,
    /// Events per second of the lag phase.
    #[arg(long, default_value_t = 25_000)]
    pub rate: u64,
    /// Calls per `/v1/batch` request.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Also write every figure to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct SegmentsBenchArgs {
    #[arg(long, default_value_t = 100_000)]
    pub profiles: usize,
    /// Events generated over the last 90 days before the segments are defined.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// New events applied for each throughput figure (no segments, then live segments).
    #[arg(long, default_value_t = 100_000)]
    pub extra_events: usize,
    /// Segments live during the second throughput run (the typical one included).
    #[arg(long, default_value_t = 100)]
    pub live_segments: usize,
    /// Events of the latency run, each making one profile enter a segment.
    #[arg(long, default_value_t = 2_000)]
    pub probes: usize,
    /// Probe events per second.
    #[arg(long, default_value_t = 100)]
    pub probe_rate: u64,
}

#[derive(Debug, Clone, Args)]
pub struct FlowsBenchArgs {
    /// Trigger events sent for the start-latency part.
    #[arg(long, default_value_t = 2_000)]
    pub events: usize,
    /// Their rate, per second.
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// Runs waiting on a delay that all become due at once.
    #[arg(long, default_value_t = 10_000)]
    pub waiting_runs: usize,
    /// Emails sent for the emails-per-second part.
    #[arg(long, default_value_t = 5_000)]
    pub emails: usize,
    /// The SMTP server for the email part (e.g. `smtp://127.0.0.1:2525`, the test sink run
    /// with `--discard`); without it that part is skipped.
    #[arg(long)]
    pub smtp_url: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ChainBenchArgs {
    /// Events per second of ecommerce traffic (open loop, paced).
    #[arg(long, default_value_t = 25_000)]
    pub rate: u64,
    /// Length of the measured phase (e.g. `60s`, `10m`).
    #[arg(long, default_value = "60s")]
    pub duration: String,
    /// Traffic before the segments and flows are made, so the metrics exist.
    #[arg(long, default_value = "5s")]
    pub warmup: String,
    /// Live segments, the probe segment included.
    #[arg(long, default_value_t = 100)]
    pub segments: usize,
    /// Live flows, the probe flow included.
    #[arg(long, default_value_t = 20)]
    pub flows: usize,
    /// Calls per `/v1/batch` request.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Also write every figure to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct PipelineBenchArgs {
    /// Connections of the throughput phase's closed loop.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Length of each measured phase (e.g. `15s`).
    #[arg(long, default_value = "15s")]
    pub duration: String,
    /// Unmeasured load before each phase.
    #[arg(long, default_value = "2s")]
    pub warmup: String,
    /// Events per second of the latency phase (half the Collect target by default).
    #[arg(long, default_value_t = 50_000)]
    pub rate: u64,
    /// Calls per `/v1/batch` request.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Stores of the servers to measure, comma-separated, each run in turn and reported side
    /// by side (default: `postgres` with `--database-url postgres://…`, else `embedded`).
    /// `postgres` runs each server on a fresh database made on the server of
    /// `--database-url` (which may then name any database there), dropped afterwards.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub backends: Vec<BenchBackend>,
    /// Also write every figure to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct IngestBenchArgs {
    /// Connections of the closed-loop phases, each posting as soon as its last request was
    /// answered.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Length of each measured phase (e.g. `15s`, `10m`).
    #[arg(long, default_value = "15s")]
    pub duration: String,
    /// Unmeasured load before each server's first phase.
    #[arg(long, default_value = "3s")]
    pub warmup: String,
    /// Events per second of the latency phase (open loop, paced).
    #[arg(long, default_value_t = 50_000)]
    pub rate: u64,
    /// Calls per `/v1/batch` request.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Phases to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "durable,ceiling,latency"
    )]
    pub phases: Vec<BenchPhase>,
    /// How message ids are spread: increasing (time-ordered, like UUIDv7 or ULID) or
    /// scattered like random v4 UUIDs, which cost the dedupe index one page write per event.
    #[arg(long, value_enum, default_value_t = IdStyle::Sequential)]
    pub message_ids: IdStyle,
    /// Stores of the servers to measure, comma-separated, each run in turn and reported side
    /// by side (default: `postgres` with `--database-url postgres://…`, else `embedded`).
    /// `postgres` runs each server on a fresh database made on the server of
    /// `--database-url` (which may then name any database there), dropped afterwards.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub backends: Vec<BenchBackend>,
    /// Load a running server at this base URL (e.g. `http://127.0.0.1:8080`) instead of
    /// starting one; the ceiling phase and the log check are then skipped.
    #[arg(long, requires = "write_key")]
    pub target: Option<String>,
    /// Write key for --target.
    #[arg(long, requires = "target")]
    pub write_key: Option<String>,
    /// Also write every figure to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Where a benchmark's server keeps its stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchBackend {
    /// The files in a fresh data folder (SQLite and the dedupe index).
    Embedded,
    /// A fresh database on the PostgreSQL server of `--database-url`.
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchPhase {
    /// Closed loop against a server that stores every call durably.
    Durable,
    /// Closed loop against `serve --discard` (parses and validates, stores nothing).
    Ceiling,
    /// Open loop at --rate against the durable server; latency from each scheduled send.
    Latency,
}
