//! `signalbox migrate --from DIR --to postgres://…`: a stopped embedded installation copied
//! into an empty PostgreSQL database, store by store. Each crate copies its own file; this
//! only checks the two ends, calls them in order and reports the rows per table.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use signalbox_core::PostgresUrl;
use signalbox_engage::WriterLock;
use signalbox_store::postgres::copy::Target;

use super::output::print_line;
use crate::cli::MigrateArgs;

/// What `migrate --json` prints (docs/cli-json.md): the rows copied per PostgreSQL table.
#[derive(Debug, serde::Serialize)]
pub struct MigrateSummary {
    pub tables: BTreeMap<String, u64>,
    pub total: u64,
}

impl MigrateSummary {
    pub fn of(counts: &[(String, u64)]) -> MigrateSummary {
        MigrateSummary {
            tables: counts.iter().cloned().collect(),
            total: counts.iter().map(|(_, rows)| rows).sum(),
        }
    }
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let to = PostgresUrl::parse(args.to.trim()).map_err(|err| anyhow::anyhow!("--to: {err}"))?;
    let dir = args.from.as_path();
    let log = dir.join("signalbox.db");
    if !log.is_file() {
        bail!(
            "there is no signalbox.db in {}: --from names the data folder of an embedded installation",
            dir.display()
        );
    }
    // A running server holds engage's writer lock: the copy would miss what it writes.
    let lock = signalbox_engage::lock_writer(&dir.join("engage.db"))
        .with_context(|| format!("cannot migrate {}: stop its server first", dir.display()))?;
    let target = Target::connect(&to)
        .await
        .with_context(|| format!("cannot reach {to}"))?;
    target
        .ensure_empty()
        .await
        .with_context(|| format!("cannot migrate into {to}"))?;

    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .expect("progress template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let progress_bar = bar.clone();
    let progress = move |table: &str, rows: u64| {
        progress_bar.set_message(format!("{table}: {rows} rows"));
    };
    let counts = copy_all(dir, &lock, &to, &progress).await;
    bar.finish_and_clear();
    let counts = counts?;

    if args.json {
        print_line(&MigrateSummary::of(&counts))?;
    } else {
        write!(std::io::stdout().lock(), "{}", table(&counts))?;
        eprintln!(
            "copied {} into {to}: start `signalbox serve --database-url …` on it",
            dir.display()
        );
    }
    Ok(())
}

/// Every store of the installation at `dir`, in order; the rows copied per table.
async fn copy_all(
    dir: &Path,
    lock: &WriterLock,
    to: &PostgresUrl,
    progress: &dyn Fn(&str, u64),
) -> anyhow::Result<Vec<(String, u64)>> {
    let mut counts = Vec::new();
    counts.extend(
        signalbox_store::sqlite::migrate_to_postgres(&dir.join("signalbox.db"), to, progress)
            .await
            .context("cannot copy the call log")?,
    );
    counts.extend(
        signalbox_engage::migrate_to_postgres(&dir.join("engage.db"), lock, to, progress)
            .await
            .context("cannot copy the engage state")?,
    );
    counts.extend(
        signalbox_audience::migrate_to_postgres(&dir.join("audience.db"), to, progress)
            .await
            .context("cannot copy the segments")?,
    );
    counts.extend(
        signalbox_flows::migrate_to_postgres(&dir.join("flows.db"), to, progress)
            .await
            .context("cannot copy the flows")?,
    );
    counts.extend(
        signalbox_sync::migrate_to_postgres(&dir.join("sync.db"), to, progress)
            .await
            .context("cannot copy the destinations")?,
    );
    counts.extend(
        signalbox_console::accounts::migrate_to_postgres(&dir.join("console.db"), to, progress)
            .await
            .context("cannot copy the console's accounts")?,
    );
    counts.extend(
        signalbox_server::to_postgres::migrate_to_postgres(
            &dir.join("templates.db"),
            &dir.join("confirmations.db"),
            to,
            progress,
        )
        .await
        .context("cannot copy the templates and the double opt-in ledger")?,
    );
    counts.push(("signalbox_secrets".to_owned(), link_secret(dir, to).await?));
    Ok(counts)
}

/// The link-signing secret (`link.key`), so links in emails sent before keep working.
async fn link_secret(dir: &Path, to: &PostgresUrl) -> anyhow::Result<u64> {
    let path = dir.join("link.key");
    let secret = match std::fs::read(&path) {
        Ok(secret) => secret,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    let stored = signalbox_store::postgres::shared_secret(to, "link", &secret)
        .await
        .context("cannot store the link secret")?;
    if stored != secret {
        bail!("the database already holds another link secret");
    }
    Ok(1)
}

/// The counts as a table: one line per table, then the total.
fn table(counts: &[(String, u64)]) -> String {
    let width = counts
        .iter()
        .map(|(table, _)| table.len())
        .max()
        .unwrap_or(0)
        .max("table".len());
    let mut out = format!("{:<width$}  {:>10}\n", "table", "rows");
    for (name, rows) in counts {
        out.push_str(&format!("{name:<width$}  {rows:>10}\n"));
    }
    let total: u64 = counts.iter().map(|(_, rows)| rows).sum();
    out.push_str(&format!("{:<width$}  {total:>10}\n", "total"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_print_as_an_aligned_table_with_a_total() {
        let counts = [("sources".to_owned(), 2), ("calls".to_owned(), 1_234)];
        assert_eq!(
            table(&counts),
            "table          rows\n\
             sources           2\n\
             calls          1234\n\
             total          1236\n"
        );
    }
}
