//! The ledger's behaviour, run against each backend: the embedded file and PostgreSQL.

use std::any::Any;
use std::sync::Arc;

use super::*;

type Guard = Box<dyn Any + Send + Sync>;

async fn sqlite_ledger() -> Option<(
    Guard,
    Arc<dyn ConfirmationLedger>,
    Arc<dyn ConfirmationLedger>,
)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("confirmations.db");
    let first = SqliteConfirmations::open(&path).unwrap();
    let second = SqliteConfirmations::open(&path).unwrap();
    Some((Box::new(dir), Arc::new(first), Arc::new(second)))
}

async fn postgres_ledger() -> Option<(
    Guard,
    Arc<dyn ConfirmationLedger>,
    Arc<dyn ConfirmationLedger>,
)> {
    let db = signalbox_store::postgres::testing::TestDatabase::create().await?;
    let first = PgConfirmations::connect(db.url()).await.unwrap();
    let second = PgConfirmations::connect(db.url()).await.unwrap();
    Some((Box::new(db), Arc::new(first), Arc::new(second)))
}

macro_rules! ledger_tests {
    ($make:path) => {
        #[tokio::test]
        async fn the_cursor_is_absent_until_saved_then_kept() {
            let Some((_guard, ledger, again)) = $make().await else {
                return;
            };
            assert_eq!(ledger.cursor().await.unwrap(), None);
            ledger.save_cursor(41).await.unwrap();
            ledger.save_cursor(42).await.unwrap();
            assert_eq!(ledger.cursor().await.unwrap(), Some(42));
            assert_eq!(again.cursor().await.unwrap(), Some(42), "a second handle");
        }

        #[tokio::test]
        async fn a_change_is_sent_only_once_done_and_intending_twice_keeps_it() {
            let Some((_guard, ledger, again)) = $make().await else {
                return;
            };
            assert!(!ledger.sent(7).await.unwrap());
            ledger.intend(7).await.unwrap();
            assert!(!ledger.sent(7).await.unwrap(), "intended is not sent");
            ledger.done(7).await.unwrap();
            assert!(again.sent(7).await.unwrap());
            ledger.intend(7).await.unwrap();
            assert!(
                ledger.sent(7).await.unwrap(),
                "a second intent keeps it sent"
            );
            assert!(!ledger.sent(8).await.unwrap());
        }
    };
}

mod sqlite {
    ledger_tests!(super::sqlite_ledger);
}

mod postgres {
    ledger_tests!(super::postgres_ledger);
}
