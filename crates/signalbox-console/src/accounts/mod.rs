//! Console accounts, sessions and one-time setup tokens.
//!
//! [`Accounts`] holds the rules (email form, password length, Argon2id hashing, session
//! expiry, the sign-in rate limit) over an [`AccountStore`], which only keeps records: the
//! SQLite one ([`SqliteAccountStore`]) lives in `console.db` in the data folder, shared by
//! `serve` and the `signalbox admin` commands; [`PgAccountStore`] keeps them in PostgreSQL.
//! The tests run every case against both.
//!
//! **Invariant:** no password, session token or setup token is stored: passwords as Argon2id
//! PHC strings, tokens as SHA-256 digests of 32 random bytes.
//! **Invariant:** a session is refused once idle for [`SessionLimits::idle`] or older than
//! [`SessionLimits::absolute`], whichever comes first; changing or resetting a password and
//! deleting an account end the account's sessions.

mod limit;
mod password;
mod postgres;
mod sqlite;
mod to_postgres;
mod token;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use signalbox_core::email::normal_form;
use signalbox_core::{Clock, Email};
use thiserror::Error;

use crate::auth::{Authenticator, NewSession, SetupError, SignInAttempt, SignInError, SignedIn};
pub use limit::{RateLimit, ADDRESS_FAILURES, EMAIL_FAILURES, FAILURE_WINDOW};
pub use password::{MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS};
pub use postgres::PgAccountStore;
pub use sqlite::SqliteAccountStore;
pub use to_postgres::migrate_to_postgres;
pub use token::TokenDigest;
pub(crate) use token::{random_token, well_formed as token_well_formed};

/// How long a setup link works.
pub const SETUP_TOKEN_LIFETIME: SignedDuration = SignedDuration::from_hours(24);

/// A session is touched (its idle clock reset) at most this often.
const TOUCH_EVERY: SignedDuration = SignedDuration::from_secs(60);

#[derive(Debug, Error)]
pub enum AccountError {
    /// An input is wrong; names it and the limit.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("an account for {0} exists already")]
    Exists(String),
    #[error("no account for {0}")]
    NotFound(String),
    /// The setup token is unknown, used or expired, or an account exists already.
    #[error("the setup link is not valid")]
    SetupClosed,
    #[error("account store: {0}")]
    Store(String),
}

pub type AccountResult<T> = Result<T, AccountError>;

/// An account as listed (never its password hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Account {
    pub email: String,
    pub created: Timestamp,
}

/// A stored session.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub email: String,
    pub csrf: String,
    pub created: Timestamp,
    pub last_seen: Timestamp,
}

/// How long sessions live.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Without a request for this long, a session ends.
    pub idle: SignedDuration,
    /// A session ends this long after sign-in, however busy.
    pub absolute: SignedDuration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            idle: SignedDuration::from_hours(12),
            absolute: SignedDuration::from_hours(7 * 24),
        }
    }
}

/// Where accounts, sessions and setup tokens are kept. Emails arrive normalised, secrets only
/// as hashes and digests.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Fails with [`AccountError::Exists`] for a taken email.
    async fn create_account(
        &self,
        email: &str,
        password_hash: &str,
        at: Timestamp,
    ) -> AccountResult<Account>;
    /// Every account, by email.
    async fn accounts(&self) -> AccountResult<Vec<Account>>;
    async fn has_accounts(&self) -> AccountResult<bool>;
    async fn password_hash(&self, email: &str) -> AccountResult<Option<String>>;
    /// Replaces an account's password hash and ends its sessions.
    async fn set_password_hash(&self, email: &str, password_hash: &str) -> AccountResult<()>;
    /// Deletes an account and its sessions.
    async fn delete_account(&self, email: &str) -> AccountResult<()>;

    async fn create_session(
        &self,
        digest: &TokenDigest,
        email: &str,
        csrf: &str,
        at: Timestamp,
    ) -> AccountResult<()>;
    async fn session(&self, digest: &TokenDigest) -> AccountResult<Option<SessionRecord>>;
    async fn touch_session(&self, digest: &TokenDigest, at: Timestamp) -> AccountResult<()>;
    async fn delete_session(&self, digest: &TokenDigest) -> AccountResult<()>;
    /// Deletes sessions last seen before `idle_before` or created before `created_before`.
    async fn delete_expired_sessions(
        &self,
        idle_before: Timestamp,
        created_before: Timestamp,
    ) -> AccountResult<u64>;

    async fn create_setup_token(
        &self,
        digest: &TokenDigest,
        expires: Timestamp,
    ) -> AccountResult<()>;
    /// Whether the token is known, unused and unexpired, and no account exists.
    async fn setup_token_open(&self, digest: &TokenDigest, now: Timestamp) -> AccountResult<bool>;
    /// Uses the token and creates the first account, at once: fails with
    /// [`AccountError::SetupClosed`] unless [`AccountStore::setup_token_open`] holds.
    async fn create_first_account(
        &self,
        digest: &TokenDigest,
        email: &str,
        password_hash: &str,
        now: Timestamp,
    ) -> AccountResult<Account>;
}

/// The console's accounts: the [`Authenticator`] `serve` installs, and what the `admin`
/// commands call. Cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn AccountStore>,
    clock: Arc<dyn Clock>,
    sessions: SessionLimits,
    limit: Mutex<RateLimit>,
}

impl Accounts {
    pub fn new(store: Arc<dyn AccountStore>, clock: Arc<dyn Clock>) -> Accounts {
        Accounts::with_limits(store, clock, SessionLimits::default())
    }

    pub fn with_limits(
        store: Arc<dyn AccountStore>,
        clock: Arc<dyn Clock>,
        sessions: SessionLimits,
    ) -> Accounts {
        Accounts {
            inner: Arc::new(Inner {
                store,
                clock,
                sessions,
                limit: Mutex::new(RateLimit::default()),
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn AccountStore> {
        &self.inner.store
    }

    pub fn session_limits(&self) -> SessionLimits {
        self.inner.sessions
    }

    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Creates an account (`signalbox admin create`).
    pub async fn create(&self, email: &Email, password: &str) -> AccountResult<Account> {
        password::check_new(password)?;
        let hash = password::hash(password.to_owned()).await?;
        self.inner
            .store
            .create_account(email.as_str(), &hash, self.now())
            .await
    }

    pub async fn list(&self) -> AccountResult<Vec<Account>> {
        self.inner.store.accounts().await
    }

    pub async fn has_accounts(&self) -> AccountResult<bool> {
        self.inner.store.has_accounts().await
    }

    /// Deletes an account and ends its sessions.
    pub async fn delete(&self, email: &Email) -> AccountResult<()> {
        self.inner.store.delete_account(email.as_str()).await
    }

    /// Sets a new password and ends the account's sessions.
    pub async fn reset_password(&self, email: &Email, password: &str) -> AccountResult<()> {
        password::check_new(password)?;
        let hash = password::hash(password.to_owned()).await?;
        self.inner
            .store
            .set_password_hash(email.as_str(), &hash)
            .await
    }

    /// A one-time link token that lets the first person create their account for
    /// [`SETUP_TOKEN_LIFETIME`]. The token is returned once; only its digest is kept.
    pub async fn create_setup_token(&self) -> AccountResult<String> {
        let token = token::random_token();
        let expires = self.now() + SETUP_TOKEN_LIFETIME;
        self.inner
            .store
            .create_setup_token(&TokenDigest::of(&token), expires)
            .await?;
        Ok(token)
    }

    async fn open_session(&self, email: &str) -> AccountResult<NewSession> {
        let now = self.now();
        let limits = self.inner.sessions;
        // Sessions that ended are dropped as new ones begin, so the table stays small.
        self.inner
            .store
            .delete_expired_sessions(now - limits.idle, now - limits.absolute)
            .await?;
        let token = token::random_token();
        let csrf = token::random_token();
        self.inner
            .store
            .create_session(&TokenDigest::of(&token), email, &csrf, now)
            .await?;
        Ok(NewSession {
            token,
            max_age: limits.absolute.unsigned_abs(),
        })
    }

    async fn check_sign_in(&self, attempt: SignInAttempt<'_>) -> Result<NewSession, SignInError> {
        let now = self.now();
        // The form's text in the form accounts are keyed by; a text that is no address
        // matches no account, as a wrong password would.
        let email = normal_form(attempt.email);
        let keys = limit::keys(&email, attempt.client);
        if let Some(retry_after) = self.limiter().blocked(&keys, now) {
            tracing::warn!(client = ?attempt.client, "console sign-in rate limited");
            return Err(SignInError::RateLimited { retry_after });
        }
        let stored = self
            .inner
            .store
            .password_hash(&email)
            .await
            .map_err(internal)?;
        let matches = password::verify(attempt.password.to_owned(), stored)
            .await
            .map_err(internal)?;
        if !matches {
            self.limiter().record_failure(&keys, now);
            tracing::info!(client = ?attempt.client, "console sign-in refused");
            return Err(SignInError::WrongCredentials);
        }
        self.limiter().clear(&keys);
        let session = self.open_session(&email).await.map_err(internal)?;
        tracing::info!(account = %email, "console sign-in");
        Ok(session)
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, RateLimit> {
        self.inner
            .limit
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn internal(err: AccountError) -> SignInError {
    SignInError::Internal(err.to_string())
}

#[async_trait]
impl Authenticator for Accounts {
    async fn authenticate(&self, session: &str) -> Option<SignedIn> {
        if !token::well_formed(session) {
            return None;
        }
        let digest = TokenDigest::of(session);
        let record = match self.inner.store.session(&digest).await {
            Ok(record) => record?,
            Err(err) => {
                tracing::error!(error = %err, "cannot read a console session");
                return None;
            }
        };
        let now = self.now();
        let limits = self.inner.sessions;
        if now.duration_since(record.last_seen) > limits.idle
            || now.duration_since(record.created) > limits.absolute
        {
            if let Err(err) = self.inner.store.delete_session(&digest).await {
                tracing::warn!(error = %err, "cannot delete an expired console session");
            }
            return None;
        }
        if now.duration_since(record.last_seen) > TOUCH_EVERY {
            if let Err(err) = self.inner.store.touch_session(&digest, now).await {
                tracing::warn!(error = %err, "cannot touch a console session");
            }
        }
        Some(SignedIn {
            email: record.email,
            csrf: record.csrf,
        })
    }

    async fn sign_in(&self, attempt: SignInAttempt<'_>) -> Result<NewSession, SignInError> {
        self.check_sign_in(attempt).await
    }

    async fn sign_out(&self, session: &str) {
        if !token::well_formed(session) {
            return;
        }
        if let Err(err) = self
            .inner
            .store
            .delete_session(&TokenDigest::of(session))
            .await
        {
            tracing::warn!(error = %err, "cannot delete a console session");
        }
    }

    async fn setup_open(&self, token: &str) -> bool {
        if !token::well_formed(token) {
            return false;
        }
        self.inner
            .store
            .setup_token_open(&TokenDigest::of(token), self.now())
            .await
            .unwrap_or_else(|err| {
                tracing::error!(error = %err, "cannot read a setup token");
                false
            })
    }

    async fn set_up(
        &self,
        token: &str,
        email: &Email,
        password: &str,
    ) -> Result<NewSession, SetupError> {
        if !self.setup_open(token).await {
            return Err(SetupError::Closed);
        }
        let setup_error = |err: AccountError| match err {
            AccountError::Invalid { field, message } => SetupError::Invalid { field, message },
            AccountError::SetupClosed => SetupError::Closed,
            other => SetupError::Internal(other.to_string()),
        };
        password::check_new(password).map_err(setup_error)?;
        let hash = password::hash(password.to_owned())
            .await
            .map_err(setup_error)?;
        self.inner
            .store
            .create_first_account(&TokenDigest::of(token), email.as_str(), &hash, self.now())
            .await
            .map_err(setup_error)?;
        tracing::info!(account = %email, "first console account created through the setup link");
        self.open_session(email.as_str()).await.map_err(setup_error)
    }
}

#[cfg(test)]
mod tests;
