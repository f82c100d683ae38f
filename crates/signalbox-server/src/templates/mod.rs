//! Email templates: checked when saved, kept behind [`TemplateRecords`] (`templates.db` in the
//! data directory by default, [`PgTemplates`] in PostgreSQL), and looked up by id by whoever
//! sends (flows).
//!
//! Templates are configuration, not derived state: they are not in the call log and a
//! `rebuild` leaves them alone. A small file of their own keeps them apart from the log's and
//! engage's writers.
//!
//! **Invariant:** a stored template compiles: [`TemplateStore::create`] and
//! [`TemplateStore::update`] refuse one that does not, naming the part and line.

mod postgres;
mod sqlite;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;
use serde_json::{Map, Value};
use signalbox_engage::{Engage, EngageError, EventId, ProfileId};
use signalbox_mail::{
    EmailTemplate, EmailTemplateSource, Part, Preview, RenderContext, TemplateError,
};

use crate::mail::{event_context, person_context, Mail};

pub use postgres::PgTemplates;
pub use sqlite::SqliteTemplates;

/// The one editor type Signalbox stores: hand-written HTML with Klaviyo's template tags.
pub const EDITOR_CODE: &str = "CODE";

/// Templates per page of a listing (Klaviyo's page size for templates).
pub const PAGE_SIZE: usize = 10;

/// A stored template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Six letters and digits, like Klaviyo's.
    pub id: String,
    pub name: String,
    pub editor_type: String,
    pub html: String,
    /// The plain-text part; derived from the HTML at send time when absent.
    pub text: Option<String>,
    pub created: Timestamp,
    pub updated: Timestamp,
}

impl Template {
    /// The template as the mailer compiles it, with the subject the sender gives (Klaviyo
    /// keeps subjects on the message, not the template).
    pub fn email_source(&self, subject: &str) -> EmailTemplateSource {
        EmailTemplateSource {
            subject: subject.to_owned(),
            html: self.html.clone(),
            text: self.text.clone(),
        }
    }
}

/// A new template, or the fields of an update (`None`: unchanged; `text: Some(None)` clears).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateChange {
    pub name: Option<String>,
    pub html: Option<String>,
    pub text: Option<Option<String>>,
}

/// How a listing is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TemplateSort {
    #[default]
    Created,
    CreatedDesc,
    Name,
    NameDesc,
    Updated,
    UpdatedDesc,
}

/// What a listing returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateFilter {
    pub ids: Option<Vec<String>>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateStoreError {
    #[error("template {0} not found")]
    NotFound(String),
    /// A field is wrong; `field` is its attribute name (`name`, `html`, `text`).
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("template store: {0}")]
    Internal(String),
}

/// Where templates are kept: records only; [`TemplateStore`] holds the rules.
#[async_trait]
pub trait TemplateRecords: Send + Sync + 'static {
    /// Stores a new template; `false` when its id is taken.
    async fn insert(&self, template: &Template) -> Result<bool, TemplateStoreError>;
    async fn get(&self, id: &str) -> Result<Option<Template>, TemplateStoreError>;
    /// Replaces the name, HTML, text and update time of the template with this id; `false`
    /// when there is none.
    async fn replace(&self, template: &Template) -> Result<bool, TemplateStoreError>;
    /// `false` when there was none.
    async fn delete(&self, id: &str) -> Result<bool, TemplateStoreError>;
    /// The templates `filter` matches, in `sort` order (ties in order of creation), the first
    /// `offset` skipped, at most `limit`; and whether more follow.
    async fn page(
        &self,
        filter: &TemplateFilter,
        sort: TemplateSort,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Template>, bool), TemplateStoreError>;
}

/// The template store: validation and ids over [`TemplateRecords`]. Cheap to clone.
#[derive(Clone)]
pub struct TemplateStore {
    records: Arc<dyn TemplateRecords>,
}

impl std::fmt::Debug for TemplateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateStore").finish_non_exhaustive()
    }
}

impl TemplateStore {
    pub fn new(records: Arc<dyn TemplateRecords>) -> TemplateStore {
        TemplateStore { records }
    }

    /// The embedded store at `path` (`templates.db`), created when missing.
    pub fn open(path: impl AsRef<Path>) -> Result<TemplateStore, TemplateStoreError> {
        Ok(TemplateStore::new(Arc::new(SqliteTemplates::open(
            path.as_ref(),
        )?)))
    }

    /// Stores a new `CODE` template; `name` and `html` are required and it must compile.
    pub async fn create(
        &self,
        change: TemplateChange,
        now: Timestamp,
    ) -> Result<Template, TemplateStoreError> {
        let name = change
            .name
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .ok_or(TemplateStoreError::Invalid {
                field: "name",
                reason: "is required".into(),
            })?;
        let html = change.html.ok_or(TemplateStoreError::Invalid {
            field: "html",
            reason: "is required for CODE templates".into(),
        })?;
        let text = change.text.flatten();
        check_compiles(&html, text.as_deref())?;
        let mut template = Template {
            id: new_id(),
            name,
            editor_type: EDITOR_CODE.into(),
            html,
            text,
            created: kept(now),
            updated: kept(now),
        };
        // 62^6 ids: a clash is rare, and a new id is drawn until one is free.
        while !self.records.insert(&template).await? {
            template.id = new_id();
        }
        Ok(template)
    }

    pub async fn get(&self, id: &str) -> Result<Template, TemplateStoreError> {
        self.records
            .get(id)
            .await?
            .ok_or_else(|| TemplateStoreError::NotFound(id.to_owned()))
    }

    /// Changes the given fields; the result must still compile.
    pub async fn update(
        &self,
        id: &str,
        change: TemplateChange,
        now: Timestamp,
    ) -> Result<Template, TemplateStoreError> {
        let mut template = self.get(id).await?;
        if let Some(name) = change.name {
            let name = name.trim().to_owned();
            if name.is_empty() {
                return Err(TemplateStoreError::Invalid {
                    field: "name",
                    reason: "must not be empty".into(),
                });
            }
            template.name = name;
        }
        if let Some(html) = change.html {
            template.html = html;
        }
        if let Some(text) = change.text {
            template.text = text;
        }
        check_compiles(&template.html, template.text.as_deref())?;
        template.updated = kept(now);
        if !self.records.replace(&template).await? {
            return Err(TemplateStoreError::NotFound(id.to_owned()));
        }
        Ok(template)
    }

    pub async fn delete(&self, id: &str) -> Result<(), TemplateStoreError> {
        if !self.records.delete(id).await? {
            return Err(TemplateStoreError::NotFound(id.to_owned()));
        }
        Ok(())
    }

    /// One page of templates after `cursor` (an offset, opaque to clients); the next cursor
    /// when there is more.
    pub async fn list(
        &self,
        filter: &TemplateFilter,
        sort: TemplateSort,
        cursor: Option<&str>,
    ) -> Result<(Vec<Template>, Option<String>), TemplateStoreError> {
        let offset: usize = match cursor {
            None => 0,
            Some(text) => text.parse().map_err(|_| TemplateStoreError::Invalid {
                field: "page[cursor]",
                reason: "is not a cursor this server issued".into(),
            })?,
        };
        let (page, more) = self.records.page(filter, sort, offset, PAGE_SIZE).await?;
        // A cursor is any number a client sends: past the end is an empty page, not an overflow.
        let next = more.then(|| offset.saturating_add(PAGE_SIZE).to_string());
        Ok((page, next))
    }

    /// The template `id` with `subject`, ready to compile; `None` when there is none.
    pub async fn email_source(
        &self,
        id: &str,
        subject: &str,
    ) -> Result<Option<EmailTemplateSource>, TemplateStoreError> {
        Ok(self
            .records
            .get(id)
            .await?
            .map(|template| template.email_source(subject)))
    }
}

/// A time as every backend keeps it: to the microsecond.
fn kept(at: Timestamp) -> Timestamp {
    Timestamp::from_microsecond(at.as_microsecond()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// What `POST /api/template-render` renders with: Klaviyo's flat `context`, plus (a
/// Signalbox extension) a real profile and event to take the `person` and `event` variables
/// from. Keys of `context` win over the profile's and event's values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PreviewRequest {
    pub profile_id: Option<ProfileId>,
    pub event_id: Option<EventId>,
    /// Top-level variables (`first_name`), `event`, `person` and `organization` objects.
    pub context: Map<String, Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("no profile {0}")]
    ProfileNotFound(ProfileId),
    #[error("no event {0}")]
    EventNotFound(EventId),
    #[error("profile and event previews need the engine")]
    NoEngine,
    #[error(transparent)]
    Engage(#[from] EngageError),
    #[error(transparent)]
    Template(#[from] TemplateError),
}

/// Renders `template` for a preview: the context's variables over the named profile's and
/// event's, undefined variables listed.
pub async fn preview(
    engage: Option<&Engage>,
    mail: &Mail,
    template: &Template,
    request: PreviewRequest,
) -> Result<Preview, PreviewError> {
    let mut context = RenderContext::default();
    if let Some(id) = &request.profile_id {
        let engage = engage.ok_or(PreviewError::NoEngine)?;
        let profile = match engage.get_profile(id).await {
            Ok(profile) => profile,
            Err(EngageError::NotFound { .. }) => {
                return Err(PreviewError::ProfileNotFound(id.clone()))
            }
            Err(err) => return Err(err.into()),
        };
        context.person = person_context(&profile);
    }
    if let Some(id) = &request.event_id {
        let engage = engage.ok_or(PreviewError::NoEngine)?;
        let event = match engage.get_event(id).await {
            Ok(event) => event,
            Err(EngageError::NotFound { .. }) => {
                return Err(PreviewError::EventNotFound(id.clone()))
            }
            Err(err) => return Err(err.into()),
        };
        context.event = Some(event_context(&event));
    }
    for (key, value) in request.context {
        match (key.as_str(), value) {
            ("event", Value::Object(given)) => {
                let mut event = match context.event.take() {
                    Some(Value::Object(map)) => map,
                    _ => Map::new(),
                };
                event.extend(given);
                context.event = Some(Value::Object(event));
            }
            ("person", Value::Object(given)) => context.person.extend(given),
            ("organization", Value::Object(given)) => context.organization.extend(given),
            (_, value) => {
                context.person.insert(key, value);
            }
        }
    }
    Ok(mail.preview(&template.email_source(""), context)?)
}

/// Refuses a template that does not compile, naming its part (`html` or `text`).
fn check_compiles(html: &str, text: Option<&str>) -> Result<(), TemplateStoreError> {
    let source = EmailTemplateSource {
        subject: String::new(),
        html: html.to_owned(),
        text: text.map(str::to_owned),
    };
    EmailTemplate::compile(&source).map(drop).map_err(|err| {
        let field = match err.part() {
            Part::Text => "text",
            _ => "html",
        };
        TemplateStoreError::Invalid {
            field,
            reason: describe(&err),
        }
    })
}

fn describe(err: &TemplateError) -> String {
    format!("does not compile: {err}")
}

/// Six random letters and digits.
fn new_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..6)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}
