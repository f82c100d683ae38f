//! Double opt-in confirmation emails: when a profile becomes `pending` on a double opt-in
//! list, it gets one email with its signed confirmation link (`/c/{token}`, served by
//! [`crate::consent`]) and an unsubscribe link.
//!
//! A task follows engage's change feed (`list_changes` rows `pending`) and keeps, in its own
//! small SQLite file, its position and each change it emailed for. The change is recorded
//! before the SMTP hand-off and marked sent after, in the same way as flow sends: a crash in
//! between re-sends with the same Message-ID (derived from the change), never twice
//! otherwise, and never drops one. On first start it begins at the feed's head: people who
//! became pending before a mailer was configured are listed, with their links, by
//! `GET /admin/v1/lists/{id}/pending`.
//!
//! Engage's state is read through its [`signalbox_engage::EngageReader`] only; this file
//! holds nothing of engage's.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use signalbox_engage::feed::ListChange;
use signalbox_engage::{Engage, ListId};
use signalbox_mail::{LinkKind, ListUnsubscribe, MailError, OutgoingEmail};
use tokio::task::JoinHandle;

use crate::mail::Mail;

/// List changes read per step at most.
const BATCH: usize = 200;
/// Wait after a failure before trying again.
const RETRY: Duration = Duration::from_secs(30);

/// Why the confirmation mailer could not start or step.
#[derive(Debug, thiserror::Error)]
pub enum ConfirmationError {
    #[error("confirmations store: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("engage: {0}")]
    Engage(#[from] signalbox_engage::EngageError),
    #[error("mail: {0}")]
    Mail(#[from] MailError),
    #[error("{0}")]
    Internal(String),
}

/// Starts the task; it runs until the runtime stops. Without a mailer it does nothing.
pub fn spawn(
    engage: Engage,
    mail: Arc<Mail>,
    path: PathBuf,
) -> Result<Option<JoinHandle<()>>, ConfirmationError> {
    if mail.mailer().is_none() {
        return Ok(None);
    }
    let Some(mut applied) = engage.subscribe_applied() else {
        return Ok(None);
    };
    let store =
        ConfirmationStore::open(&path, || Ok(engage.reader()?.end_cursor()?.list_change_pk))?;
    Ok(Some(tokio::spawn(async move {
        let mut store = store;
        loop {
            match step(&engage, &mail, &mut store).await {
                Ok(true) => continue,
                Ok(false) => {
                    if applied.changed().await.is_err() {
                        return;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "sending double opt-in confirmations failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    })))
}

/// Handles the pending changes after the cursor; `true` when there may be more.
async fn step(
    engage: &Engage,
    mail: &Mail,
    store: &mut ConfirmationStore,
) -> Result<bool, ConfirmationError> {
    let upto = engage.applied_seq();
    let after = store.cursor()?;
    let reader = engage.clone();
    let changes =
        tokio::task::spawn_blocking(move || reader.reader()?.list_changes(after, upto, BATCH))
            .await
            .map_err(|e| ConfirmationError::Internal(e.to_string()))??;
    for change in changes.iter().filter(|c| c.change == "pending") {
        if store.sent(change.pk)? {
            continue;
        }
        store.intend(change.pk)?;
        send(engage, mail, change).await?;
        store.done(change.pk)?;
    }
    if let Some(last) = changes.last() {
        store.save_cursor(last.pk)?;
    }
    Ok(changes.len() >= BATCH)
}

async fn send(engage: &Engage, mail: &Mail, change: &ListChange) -> Result<(), ConfirmationError> {
    let Some(mailer) = mail.mailer() else {
        return Ok(());
    };
    let reader = engage.clone();
    let key = change.profile_pk;
    let profile_id = tokio::task::spawn_blocking(move || reader.reader()?.profile_id(key))
        .await
        .map_err(|e| ConfirmationError::Internal(e.to_string()))??;
    let Some(profile_id) = profile_id else {
        return Ok(()); // merged away since; the survivor has its own change
    };
    let profile = engage.get_profile(&profile_id).await?;
    let Some(email) = profile.email.clone() else {
        return Ok(());
    };
    let list = engage.get_list(&ListId(change.list_id.clone())).await?;
    let links = mail.composer().links();
    let confirm = links.url(LinkKind::Confirm, &profile_id.0, &change.list_id, None);
    let unsubscribe = links.url(LinkKind::Unsubscribe, &profile_id.0, &change.list_id, None);
    let name = escape(&list.name);
    let greeting = profile
        .first_name
        .as_deref()
        .map(|n| format!("Hi {},", escape(n)))
        .unwrap_or_else(|| "Hi,".to_owned());
    let html = format!(
        "<p>{greeting}</p><p>Please confirm that you want to receive email from {name}.</p>\
         <p><a href=\"{confirm}\">Yes, subscribe me</a></p>\
         <p>If you did not ask for this, ignore this email or \
         <a href=\"{unsubscribe}\">unsubscribe</a>.</p>"
    );
    let text = format!(
        "{greeting}\n\nPlease confirm that you want to receive email from {}:\n{confirm}\n\n\
         If you did not ask for this, ignore this email or unsubscribe: {unsubscribe}\n",
        list.name
    );
    let email = OutgoingEmail {
        from: None,
        reply_to: None,
        to: email,
        subject: format!("Please confirm your subscription to {}", list.name),
        html,
        text,
        list_unsubscribe: Some(ListUnsubscribe {
            url: unsubscribe,
            mailto: None,
        }),
        headers: vec![("X-Signalbox-Kind".into(), "double-opt-in".into())],
        idempotency_key: format!("confirm/{}", change.pk),
    };
    match mailer.send(email).await {
        Ok(_) => Ok(()),
        // A refused address will not start working: record it sent and move on.
        Err(err) if err.is_permanent() => {
            tracing::warn!(error = %err, list = %change.list_id, "a confirmation email was refused");
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The task's position in the feed and the changes it emailed for.
struct ConfirmationStore {
    conn: Connection,
}

impl ConfirmationStore {
    /// Opens (creating) the file; a new one starts after `head()`, the last list change now.
    fn open(
        path: &Path,
        head: impl FnOnce() -> Result<i64, ConfirmationError>,
    ) -> Result<ConfirmationStore, ConfirmationError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS cursor (id INTEGER PRIMARY KEY CHECK (id = 1),
                                                value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS sends (change_pk INTEGER PRIMARY KEY,
                                               sent INTEGER NOT NULL);",
        )?;
        let store = ConfirmationStore { conn };
        let has_cursor: Option<i64> = store
            .conn
            .query_row("SELECT 1 FROM cursor", [], |r| r.get(0))
            .optional()?;
        if has_cursor.is_none() {
            // First start: from the feed's head.
            store.save_cursor(head()?)?;
        }
        Ok(store)
    }

    /// The last list change handled.
    fn cursor(&self) -> Result<i64, ConfirmationError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM cursor WHERE id = 1", [], |r| r.get(0))?)
    }

    fn save_cursor(&self, list_change_pk: i64) -> Result<(), ConfirmationError> {
        self.conn.execute(
            "INSERT INTO cursor (id, value) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET value = excluded.value",
            [list_change_pk],
        )?;
        Ok(())
    }

    fn sent(&self, change_pk: i64) -> Result<bool, ConfirmationError> {
        Ok(self
            .conn
            .query_row(
                "SELECT sent FROM sends WHERE change_pk = ?1",
                [change_pk],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            == Some(1))
    }

    fn intend(&self, change_pk: i64) -> Result<(), ConfirmationError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO sends (change_pk, sent) VALUES (?1, 0)",
            params![change_pk],
        )?;
        Ok(())
    }

    fn done(&self, change_pk: i64) -> Result<(), ConfirmationError> {
        self.conn.execute(
            "UPDATE sends SET sent = 1 WHERE change_pk = ?1",
            params![change_pk],
        )?;
        Ok(())
    }
}
