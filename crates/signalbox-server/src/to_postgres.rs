//! `signalbox migrate`'s part for the server's own stores: email templates (`templates.db`)
//! and the double opt-in ledger (`confirmations.db`) copied into PostgreSQL.

use std::path::Path;

use signalbox_core::PostgresUrl;
use signalbox_store::postgres::copy::{copy_file, nothing_copied, CopyError, TableMap};
use signalbox_store::StoreError;

use crate::confirmations::PgConfirmations;
use crate::templates::PgTemplates;

/// Templates; times are microseconds there, instants on PostgreSQL.
const TEMPLATES: &[TableMap] = &[TableMap {
    from: "templates",
    to: "templates",
    exprs: &[("created", "created_us"), ("updated", "updated_us")],
}];

/// The confirmation mailer's cursor and the changes it mailed.
const CONFIRMATIONS: &[TableMap] = &[
    TableMap::renamed("cursor", "confirmation_cursor"),
    TableMap::renamed("sends", "confirmation_sends"),
];

/// Copies the templates at `templates` and the ledger at `confirmations` (a stopped
/// installation's `templates.db` and `confirmations.db`, opened read-only; an absent file has
/// nothing to copy) into the empty database at `to`. Returns the rows copied per table.
pub async fn migrate_to_postgres(
    templates: &Path,
    confirmations: &Path,
    to: &PostgresUrl,
    progress: &dyn Fn(&str, u64),
) -> Result<Vec<(String, u64)>, CopyError> {
    drop(PgTemplates::connect(to).await.map_err(internal)?);
    drop(PgConfirmations::connect(to).await.map_err(internal)?);
    let mut counts = Vec::new();
    for (path, tables) in [(templates, TEMPLATES), (confirmations, CONFIRMATIONS)] {
        if path.exists() {
            counts.extend(copy_file(path, to, tables, progress).await?);
        } else {
            counts.extend(nothing_copied(tables));
        }
    }
    Ok(counts)
}

fn internal(err: impl std::fmt::Display) -> CopyError {
    CopyError::Store(StoreError::Internal(err.to_string()))
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use signalbox_store::postgres::testing::TestDatabase;

    use super::*;
    use crate::confirmations::{ConfirmationLedger, SqliteConfirmations};
    use crate::templates::{
        SqliteTemplates, Template, TemplateFilter, TemplateRecords, TemplateSort,
    };

    fn template(id: &str, created: &str) -> Template {
        let at: Timestamp = created.parse().unwrap();
        Template {
            id: id.to_owned(),
            name: format!("Welcome {id}"),
            editor_type: "CODE".to_owned(),
            html: "<p>Hi</p>".to_owned(),
            text: None,
            created: at,
            updated: at,
        }
    }

    #[tokio::test]
    async fn templates_keep_their_times_and_order_and_the_ledger_its_cursor() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let (templates, confirmations) = (
            dir.path().join("templates.db"),
            dir.path().join("confirmations.db"),
        );
        let sqlite = SqliteTemplates::open(&templates).unwrap();
        let first = template("AAAAAA", "2026-01-02T03:04:05.678901Z");
        let second = template("BBBBBB", "2026-01-02T03:04:05.678901Z");
        assert!(sqlite.insert(&first).await.unwrap());
        assert!(sqlite.insert(&second).await.unwrap());
        let ledger = SqliteConfirmations::open(&confirmations).unwrap();
        ledger.save_cursor(42).await.unwrap();
        ledger.intend(7).await.unwrap();
        ledger.done(7).await.unwrap();
        drop((sqlite, ledger));

        let counts = migrate_to_postgres(&templates, &confirmations, db.url(), &|_, _| {})
            .await
            .unwrap();
        assert_eq!(
            counts,
            [
                ("templates".to_owned(), 2),
                ("confirmation_cursor".to_owned(), 1),
                ("confirmation_sends".to_owned(), 1),
            ]
        );
        let pg = PgTemplates::connect(db.url()).await.unwrap();
        assert_eq!(pg.get("AAAAAA").await.unwrap(), Some(first.clone()));
        // Ties in creation time keep their order, and a new template comes after them.
        let third = template("CCCCCC", "2026-01-02T03:04:05.678901Z");
        assert!(pg.insert(&third).await.unwrap());
        let (page, _) = pg
            .page(&TemplateFilter::default(), TemplateSort::Created, 0, 10)
            .await
            .unwrap();
        let ids: Vec<&str> = page.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["AAAAAA", "BBBBBB", "CCCCCC"]);
        let ledger = PgConfirmations::connect(db.url()).await.unwrap();
        assert_eq!(ledger.cursor().await.unwrap(), Some(42));
        assert!(ledger.sent(7).await.unwrap());
        assert!(!ledger.sent(8).await.unwrap());
    }
}
