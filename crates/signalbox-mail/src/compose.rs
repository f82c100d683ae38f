//! One email for one recipient: template rendered with the recipient's signed links, links
//! rewritten for tracking, headers set. The step between a flow's send action and the
//! [`Mailer`](crate::Mailer).

use lettre::message::Mailbox;
use lettre::Address;

use crate::links::{LinkError, TrackingLinks};
use crate::mailer::{ListUnsubscribe, OutgoingEmail};
use crate::template::{EmailTemplate, RenderContext, TemplateError};

/// Who an email goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The profile's id; signed into every link.
    pub profile_id: String,
    pub email: String,
    /// Shown in the `To` header when present.
    pub name: Option<String>,
}

/// Turns templates into ready-to-send emails for one Signalbox deployment.
#[derive(Debug, Clone)]
pub struct Composer {
    links: TrackingLinks,
    unsubscribe_mailto: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComposeError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Links(#[from] LinkError),
    #[error("invalid recipient address {0:?}")]
    InvalidRecipient(String),
}

impl Composer {
    /// `unsubscribe_mailto`: an address that unsubscribes by mail, added to
    /// `List-Unsubscribe` beside the one-click URL.
    pub fn new(links: TrackingLinks, unsubscribe_mailto: Option<String>) -> Composer {
        Composer {
            links,
            unsubscribe_mailto,
        }
    }

    pub fn links(&self) -> &TrackingLinks {
        &self.links
    }

    /// Renders `template` for `recipient` and wraps it as an [`OutgoingEmail`].
    ///
    /// `message_id` names this send (unique per recipient and message, stable across
    /// retries); it is signed into the links and is the idempotency key of the email.
    /// `context.unsubscribe_url` and `context.manage_preferences_url` are set here.
    /// `from` is the flow's sender, `None` for the mailer's default.
    pub fn compose(
        &self,
        template: &EmailTemplate,
        recipient: &Recipient,
        message_id: &str,
        mut context: RenderContext,
        from: Option<String>,
    ) -> Result<OutgoingEmail, ComposeError> {
        let address: Address = recipient
            .email
            .trim()
            .parse()
            .map_err(|_| ComposeError::InvalidRecipient(recipient.email.clone()))?;
        let to = Mailbox::new(
            recipient
                .name
                .clone()
                .filter(|name| !name.trim().is_empty()),
            address,
        );
        let links = self.links.for_message(&recipient.profile_id, message_id);
        context.unsubscribe_url = links.unsubscribe_url.clone();
        context.manage_preferences_url = links.manage_preferences_url;
        let rendered = template.render(&context)?;
        let html = self
            .links
            .rewrite_html(&rendered.html, &recipient.profile_id, message_id)?;
        Ok(OutgoingEmail {
            from,
            reply_to: None,
            to: to.to_string(),
            subject: rendered.subject,
            html,
            text: rendered.text,
            list_unsubscribe: Some(ListUnsubscribe {
                url: links.unsubscribe_url,
                mailto: self.unsubscribe_mailto.clone(),
            }),
            headers: Vec::new(),
            idempotency_key: message_id.to_owned(),
        })
    }
}
