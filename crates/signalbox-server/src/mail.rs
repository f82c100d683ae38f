//! The server's mail pieces in one place: the SMTP [`Mailer`] (when `--smtp-url` is given),
//! the [`Composer`] that renders and signs an email's links, the compiled-template cache, and
//! the template context of a profile and an event.
//!
//! Sending is off without an SMTP URL: [`Mail::mailer`] is `None` and senders must skip (and
//! say so), never pretend. The SMTP password lives only inside the [`SmtpUrl`] and the
//! mailer; [`Mail::summary`] and every `Debug` print it redacted.

use serde_json::{json, Map, Value};
use signalbox_engage::{Event, Profile};
use signalbox_mail::{
    Composer, EmailTemplateSource, MailError, Mailer, MailerConfig, Preview, RenderContext,
    SmtpUrl, TemplateCache, TemplateError, TrackingLinks,
};

/// What `serve` resolves the mail flags to.
#[derive(Debug, Clone, Default)]
pub struct MailSettings {
    /// `--smtp-url`; `None`: sending is off.
    pub smtp_url: Option<SmtpUrl>,
    /// `--mail-from`: the default sender (`Shop <shop@example.com>`); required with an SMTP URL.
    pub from: Option<String>,
    /// An address that unsubscribes by mail, added to `List-Unsubscribe`.
    pub unsubscribe_mailto: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MailSetupError {
    #[error("--mail-from (SIGNALBOX_MAIL_FROM) is required with --smtp-url")]
    MissingFrom,
    #[error("mail: {0}")]
    Mailer(#[from] MailError),
}

/// Mailer, composer and template cache for one server. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Mail {
    mailer: Option<Mailer>,
    composer: Composer,
    templates: TemplateCache,
    from: Option<String>,
}

impl Mail {
    /// Builds the mailer (no connection is opened yet) and a composer signing with `links`.
    pub fn new(settings: &MailSettings, links: TrackingLinks) -> Result<Mail, MailSetupError> {
        let mailer = match &settings.smtp_url {
            None => None,
            Some(url) => {
                let from = settings.from.clone().ok_or(MailSetupError::MissingFrom)?;
                Some(Mailer::new(MailerConfig::new(url.clone(), from))?)
            }
        };
        Ok(Mail {
            mailer,
            composer: Composer::new(links, settings.unsubscribe_mailto.clone()),
            templates: TemplateCache::default(),
            from: settings.from.clone(),
        })
    }

    /// Sending off; templates still render (previews).
    pub fn disabled(links: TrackingLinks) -> Mail {
        Mail {
            mailer: None,
            composer: Composer::new(links, None),
            templates: TemplateCache::default(),
            from: None,
        }
    }

    /// The SMTP mailer; `None` when sending is off.
    pub fn mailer(&self) -> Option<&Mailer> {
        self.mailer.as_ref()
    }

    pub fn composer(&self) -> &Composer {
        &self.composer
    }

    pub fn templates(&self) -> &TemplateCache {
        &self.templates
    }

    /// One line for the startup banner and logs, password redacted:
    /// `smtp://user:[redacted]@host:587?tls=starttls, from Shop <shop@example.com>`.
    pub fn summary(&self) -> String {
        match &self.mailer {
            Some(mailer) => format!(
                "{}, from {}",
                mailer.server(),
                self.from.as_deref().unwrap_or("")
            ),
            None => "off (no --smtp-url): emails are not sent".to_owned(),
        }
    }

    /// Renders `source` for a preview (links are placeholders, nothing is signed) and lists
    /// the variables the context lacked.
    pub fn preview(
        &self,
        source: &EmailTemplateSource,
        mut context: RenderContext,
    ) -> Result<Preview, TemplateError> {
        let template = self.templates.get_or_compile(source)?;
        if context.unsubscribe_url.is_empty() {
            context.unsubscribe_url = "#unsubscribe".into();
        }
        if context.manage_preferences_url.is_empty() {
            context.manage_preferences_url = "#manage-preferences".into();
        }
        Ok(template.preview(&context))
    }
}

/// A profile's fields as a template sees them: `email`, `first_name`, …, `location`, then
/// custom properties (`person|lookup:'Loyalty Points'`) and the profile's `id`.
pub fn person_context(profile: &Profile) -> Map<String, Value> {
    let mut person = Map::new();
    for (key, value) in &profile.properties {
        person.insert(key.clone(), value.clone());
    }
    let fields = [
        ("email", &profile.email),
        ("phone_number", &profile.phone_number),
        ("external_id", &profile.external_id),
        ("first_name", &profile.first_name),
        ("last_name", &profile.last_name),
        ("organization", &profile.organization),
        ("title", &profile.title),
        ("image", &profile.image),
        ("locale", &profile.locale),
    ];
    for (key, value) in fields {
        if let Some(value) = value {
            person.insert(key.into(), Value::String(value.clone()));
        }
    }
    let location = &profile.location;
    person.insert(
        "location".into(),
        json!({
            "address1": location.address1, "address2": location.address2,
            "city": location.city, "country": location.country, "region": location.region,
            "zip": location.zip, "timezone": location.timezone,
        }),
    );
    person.insert("id".into(), Value::String(profile.id.to_string()));
    person
}

/// An event's properties as a template sees them (`event.Items`, `event|lookup:'$value'`).
pub fn event_context(event: &Event) -> Value {
    let mut properties = event.properties.clone();
    if let Some(value) = event.value {
        properties.entry("$value").or_insert(json!(value));
    }
    Value::Object(properties)
}

#[cfg(test)]
mod tests {
    use signalbox_mail::LinkSigner;

    use super::*;

    fn links() -> TrackingLinks {
        TrackingLinks::new(
            LinkSigner::new(b"0123456789abcdef0123").unwrap(),
            "http://localhost:8080",
        )
        .unwrap()
    }

    #[test]
    fn the_summary_never_shows_the_password() {
        let settings = MailSettings {
            smtp_url: Some(
                "smtp://mailer:s3cr3t-pw@smtp.example.com:587?tls=starttls"
                    .parse()
                    .unwrap(),
            ),
            from: Some("Shop <shop@example.com>".into()),
            unsubscribe_mailto: None,
        };
        let mail = Mail::new(&settings, links()).unwrap();
        let summary = mail.summary();
        assert!(!summary.contains("s3cr3t"), "{summary}");
        assert_eq!(
            summary,
            "smtp://mailer:[redacted]@smtp.example.com:587?tls=starttls, from Shop <shop@example.com>"
        );
        assert!(!format!("{mail:?}").contains("s3cr3t"));
        assert!(!format!("{settings:?}").contains("s3cr3t"));
    }

    #[test]
    fn sending_is_off_without_a_url_and_needs_a_sender_with_one() {
        let mail = Mail::new(&MailSettings::default(), links()).unwrap();
        assert!(mail.mailer().is_none());
        assert!(mail.summary().starts_with("off"));
        let err = Mail::new(
            &MailSettings {
                smtp_url: Some("smtp://127.0.0.1:2525".parse().unwrap()),
                ..MailSettings::default()
            },
            links(),
        )
        .unwrap_err();
        assert!(matches!(err, MailSetupError::MissingFrom));
    }
}
