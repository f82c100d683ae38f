//! The accounts' behaviour, run against each [`AccountStore`] backend: the embedded store and
//! PostgreSQL.

use std::any::Any;
use std::sync::Arc;

use signalbox_core::FakeClock;

use super::*;

type Guard = Box<dyn Any + Send>;

async fn sqlite_store() -> Option<(Guard, Arc<dyn AccountStore>)> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteAccountStore::open(&dir.path().join("console.db")).unwrap();
    Some((Box::new(dir), Arc::new(store)))
}

async fn postgres_store() -> Option<(Guard, Arc<dyn AccountStore>)> {
    let db = signalbox_store::postgres::testing::TestDatabase::create().await?;
    let store = PgAccountStore::connect(db.url()).await.unwrap();
    Some((Box::new(db), Arc::new(store)))
}

macro_rules! account_tests {
    ($make:path) => {
        use jiff::SignedDuration;

        use super::*;

        const PASSWORD: &str = "correct horse battery";

        async fn accounts() -> Option<(Guard, FakeClock, Accounts)> {
            let (guard, store) = $make().await?;
            let clock = FakeClock::new("2026-01-01T00:00:00Z".parse().unwrap());
            let accounts = Accounts::new(store, Arc::new(clock.clone()));
            Some((guard, clock, accounts))
        }

        fn email(text: &str) -> Email {
            Email::parse(text).unwrap()
        }

        fn attempt<'a>(email: &'a str, password: &'a str) -> SignInAttempt<'a> {
            SignInAttempt {
                email,
                password,
                client: None,
            }
        }

        #[tokio::test]
        async fn emails_are_normalised_and_unique() {
            let Some((_guard, _clock, accounts)) = accounts().await else {
                return;
            };
            let account = accounts
                .create(&email("  Ada@Example.COM "), PASSWORD)
                .await
                .unwrap();
            assert_eq!(account.email, "ada@example.com");
            let err = accounts
                .create(&email("ada@example.com"), PASSWORD)
                .await
                .unwrap_err();
            assert!(matches!(err, AccountError::Exists(_)), "{err}");
            let hash = accounts
                .store()
                .password_hash("ada@example.com")
                .await
                .unwrap()
                .unwrap();
            assert!(hash.starts_with("$argon2id$"), "{hash}");
        }

        #[tokio::test]
        async fn sessions_end_when_idle_or_old() {
            let Some((_guard, clock, accounts)) = accounts().await else {
                return;
            };
            accounts
                .create(&email("ada@example.com"), PASSWORD)
                .await
                .unwrap();
            let session = accounts
                .sign_in(attempt("ADA@example.com", PASSWORD))
                .await
                .unwrap();
            assert_eq!(
                session.max_age,
                std::time::Duration::from_secs(7 * 24 * 3600)
            );
            let signed_in = accounts.authenticate(&session.token).await.unwrap();
            assert_eq!(signed_in.email, "ada@example.com");
            // Busy for almost seven days: each request within the idle limit keeps it.
            for _ in 0..13 {
                clock.advance(SignedDuration::from_hours(11));
                assert!(accounts.authenticate(&session.token).await.is_some());
            }
            clock.advance(SignedDuration::from_hours(25));
            assert!(
                accounts.authenticate(&session.token).await.is_none(),
                "past 7 days"
            );

            let session = accounts
                .sign_in(attempt("ada@example.com", PASSWORD))
                .await
                .unwrap();
            clock.advance(SignedDuration::from_hours(12) + SignedDuration::from_secs(1));
            assert!(
                accounts.authenticate(&session.token).await.is_none(),
                "idle 12 h"
            );
        }

        #[tokio::test]
        async fn reset_and_delete_end_sessions() {
            let Some((_guard, _clock, accounts)) = accounts().await else {
                return;
            };
            accounts
                .create(&email("ada@example.com"), PASSWORD)
                .await
                .unwrap();
            let session = accounts
                .sign_in(attempt("ada@example.com", PASSWORD))
                .await
                .unwrap();
            accounts
                .reset_password(&email("ada@example.com"), "another long password")
                .await
                .unwrap();
            assert!(accounts.authenticate(&session.token).await.is_none());
            assert!(matches!(
                accounts.sign_in(attempt("ada@example.com", PASSWORD)).await,
                Err(SignInError::WrongCredentials)
            ));
            let session = accounts
                .sign_in(attempt("ada@example.com", "another long password"))
                .await
                .unwrap();
            accounts.delete(&email("ada@example.com")).await.unwrap();
            assert!(accounts.authenticate(&session.token).await.is_none());
            assert!(matches!(
                accounts.delete(&email("ada@example.com")).await,
                Err(AccountError::NotFound(_))
            ));
        }

        #[tokio::test]
        async fn a_setup_token_works_once_and_expires() {
            let Some((_guard, clock, accounts)) = accounts().await else {
                return;
            };
            let expiring = accounts.create_setup_token().await.unwrap();
            clock.advance(SETUP_TOKEN_LIFETIME + SignedDuration::from_secs(1));
            assert!(!accounts.setup_open(&expiring).await);
            let token = accounts.create_setup_token().await.unwrap();
            assert!(accounts.setup_open(&token).await);
            let err = accounts
                .set_up(&token, &email("ada@example.com"), "short")
                .await
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    SetupError::Invalid {
                        field: "password",
                        ..
                    }
                ),
                "{err}"
            );
            let session = accounts
                .set_up(&token, &email("ada@example.com"), PASSWORD)
                .await
                .unwrap();
            assert!(accounts.authenticate(&session.token).await.is_some());
            assert!(!accounts.setup_open(&token).await);
            let other = accounts.create_setup_token().await.unwrap();
            assert!(!accounts.setup_open(&other).await, "an account exists");
            assert!(matches!(
                accounts
                    .set_up(&other, &email("eve@example.com"), PASSWORD)
                    .await,
                Err(SetupError::Closed)
            ));
        }

        #[tokio::test]
        async fn sign_in_failures_are_rate_limited() {
            let Some((_guard, clock, accounts)) = accounts().await else {
                return;
            };
            accounts
                .create(&email("ada@example.com"), PASSWORD)
                .await
                .unwrap();
            for _ in 0..EMAIL_FAILURES {
                assert!(matches!(
                    accounts
                        .sign_in(attempt("ada@example.com", "wrong password!"))
                        .await,
                    Err(SignInError::WrongCredentials)
                ));
            }
            // Even the right password waits now.
            match accounts.sign_in(attempt("ada@example.com", PASSWORD)).await {
                Err(SignInError::RateLimited { retry_after }) => {
                    assert_eq!(retry_after, std::time::Duration::from_secs(15 * 60))
                }
                other => panic!("expected a rate limit, got {other:?}"),
            }
            clock.advance(FAILURE_WINDOW);
            assert!(accounts
                .sign_in(attempt("ada@example.com", PASSWORD))
                .await
                .is_ok());
        }
    };
}

mod sqlite {
    account_tests!(super::sqlite_store);
}

mod postgres {
    account_tests!(super::postgres_store);
}
