//! Double opt-in confirmation emails: when a profile becomes `pending` on a double opt-in
//! list, it gets one email with its signed confirmation link (`/c/{token}`, served by
//! [`crate::consent`]) and an unsubscribe link.
//!
//! A task follows engage's change feed (`list_changes` rows `pending`) and keeps, in a
//! [`ConfirmationLedger`] (`confirmations.db` by default, or PostgreSQL), its position and each
//! change it emailed for. The change is recorded
//! before the SMTP hand-off and marked sent after, in the same way as flow sends: a crash in
//! between re-sends with the same Message-ID (derived from the change), never twice
//! otherwise, and never drops one. On first start it begins at the feed's head: people who
//! became pending before a mailer was configured are listed, with their links, by
//! `GET /admin/v1/lists/{id}/pending`.
//!
//! Engage's state is read through its [`signalbox_engage::EngageReader`] only; this file
//! holds nothing of engage's.

mod postgres;
mod sqlite;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use signalbox_engage::feed::ListChange;
use signalbox_engage::{Engage, ListId};
use signalbox_mail::{LinkKind, ListUnsubscribe, MailError, OutgoingEmail};
use tokio::task::JoinHandle;

use crate::mail::Mail;

pub use postgres::PgConfirmations;
pub use sqlite::SqliteConfirmations;

/// List changes read per step at most.
const BATCH: usize = 200;
/// Wait after a failure before trying again.
const RETRY: Duration = Duration::from_secs(30);

/// Why the confirmation mailer could not start or step.
#[derive(Debug, thiserror::Error)]
pub enum ConfirmationError {
    #[error("confirmations store: {0}")]
    Store(String),
    #[error("engage: {0}")]
    Engage(#[from] signalbox_engage::EngageError),
    #[error("mail: {0}")]
    Mail(#[from] MailError),
    #[error("{0}")]
    Internal(String),
}

/// Where the mailer keeps its position in the feed and the changes it emailed for.
#[async_trait]
pub trait ConfirmationLedger: Send + Sync + 'static {
    /// The last list change handled; `None` before the first start.
    async fn cursor(&self) -> Result<Option<i64>, ConfirmationError>;
    async fn save_cursor(&self, list_change_pk: i64) -> Result<(), ConfirmationError>;
    /// Whether the email for this change was handed to the mail server.
    async fn sent(&self, change_pk: i64) -> Result<bool, ConfirmationError>;
    /// Records that the email for this change is about to go (kept when already recorded).
    async fn intend(&self, change_pk: i64) -> Result<(), ConfirmationError>;
    /// Records that it went.
    async fn done(&self, change_pk: i64) -> Result<(), ConfirmationError>;
}

/// Starts the task; it runs until the runtime stops. Without a mailer it does nothing. On the
/// first start (`ledger` has no cursor) it begins at the feed's head.
pub async fn spawn(
    engage: Engage,
    mail: Arc<Mail>,
    ledger: Arc<dyn ConfirmationLedger>,
) -> Result<Option<JoinHandle<()>>, ConfirmationError> {
    if mail.mailer().is_none() {
        return Ok(None);
    }
    let Some(mut applied) = engage.subscribe_applied() else {
        return Ok(None);
    };
    if ledger.cursor().await?.is_none() {
        let reader = engage.clone();
        let head = tokio::task::spawn_blocking(move || {
            Ok::<_, ConfirmationError>(reader.reader()?.end_cursor()?.list_change_pk)
        })
        .await
        .map_err(|e| ConfirmationError::Internal(e.to_string()))??;
        ledger.save_cursor(head).await?;
    }
    Ok(Some(tokio::spawn(async move {
        loop {
            match step(&engage, &mail, &*ledger).await {
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
    store: &dyn ConfirmationLedger,
) -> Result<bool, ConfirmationError> {
    let upto = engage.applied_seq();
    let after = store.cursor().await?.unwrap_or(0);
    let reader = engage.clone();
    let changes =
        tokio::task::spawn_blocking(move || reader.reader()?.list_changes(after, upto, BATCH))
            .await
            .map_err(|e| ConfirmationError::Internal(e.to_string()))??;
    for change in changes.iter().filter(|c| c.change == "pending") {
        if store.sent(change.pk).await? {
            continue;
        }
        store.intend(change.pk).await?;
        send(engage, mail, change).await?;
        store.done(change.pk).await?;
    }
    if let Some(last) = changes.last() {
        store.save_cursor(last.pk).await?;
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
