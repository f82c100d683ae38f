//! Email templates: stored in `templates.db` (SQLite) in the data directory, checked when
//! saved, and looked up by id by whoever sends (flows).
//!
//! Templates are configuration, not derived state: they are not in the call log and a
//! `rebuild` leaves them alone. A small file of their own keeps them apart from the log's and
//! engage's writers.
//!
//! **Invariant:** a stored template compiles: [`TemplateStore::create`] and
//! [`TemplateStore::update`] refuse one that does not, naming the part and line.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{Map, Value};
use signalbox_engage::{Engage, EngageError, EventId, ProfileId};
use signalbox_mail::{
    EmailTemplate, EmailTemplateSource, Part, Preview, RenderContext, TemplateError,
};

use crate::mail::{event_context, person_context, Mail};

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
    #[error("templates.db: {0}")]
    Internal(String),
}

impl From<rusqlite::Error> for TemplateStoreError {
    fn from(err: rusqlite::Error) -> Self {
        TemplateStoreError::Internal(err.to_string())
    }
}

/// Looks up templates by id, for senders: the seam the flows engine reads templates through.
pub trait TemplateLookup: Send + Sync {
    /// The template `id` with `subject`, ready to compile; `None` when there is none.
    fn email_source(
        &self,
        id: &str,
        subject: &str,
    ) -> Result<Option<EmailTemplateSource>, TemplateStoreError>;
}

/// The template store. Cheap to clone; calls block briefly on SQLite (use from
/// `spawn_blocking` or through the async wrappers).
#[derive(Clone)]
pub struct TemplateStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for TemplateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS templates (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    editor_type TEXT NOT NULL,
    html TEXT NOT NULL,
    text TEXT,
    created_us INTEGER NOT NULL,
    updated_us INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS templates_name ON templates (name);
";

impl TemplateStore {
    /// Opens (creating) the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<TemplateStore, TemplateStoreError> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(TemplateStore {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores a new `CODE` template; `name` and `html` are required and it must compile.
    pub fn create(
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
        let conn = self.lock();
        let seq: i64 =
            conn.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM templates", [], |r| {
                r.get(0)
            })?;
        let id = loop {
            let id = new_id();
            let taken = conn
                .query_row("SELECT 1 FROM templates WHERE id = ?1", [&id], |_| Ok(()))
                .optional()?
                .is_some();
            if !taken {
                break id;
            }
        };
        let at = now.as_microsecond();
        conn.execute(
            "INSERT INTO templates (id, name, editor_type, html, text, created_us, updated_us, seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
            params![id, name, EDITOR_CODE, html, text, at, seq],
        )?;
        Ok(Template {
            id,
            name,
            editor_type: EDITOR_CODE.into(),
            html,
            text,
            created: now,
            updated: now,
        })
    }

    pub fn get(&self, id: &str) -> Result<Template, TemplateStoreError> {
        let conn = self.lock();
        read_one(&conn, id)?.ok_or_else(|| TemplateStoreError::NotFound(id.to_owned()))
    }

    /// Changes the given fields; the result must still compile.
    pub fn update(
        &self,
        id: &str,
        change: TemplateChange,
        now: Timestamp,
    ) -> Result<Template, TemplateStoreError> {
        let conn = self.lock();
        let mut template =
            read_one(&conn, id)?.ok_or_else(|| TemplateStoreError::NotFound(id.to_owned()))?;
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
        template.updated = now;
        conn.execute(
            "UPDATE templates SET name = ?2, html = ?3, text = ?4, updated_us = ?5 WHERE id = ?1",
            params![
                template.id,
                template.name,
                template.html,
                template.text,
                now.as_microsecond()
            ],
        )?;
        Ok(template)
    }

    pub fn delete(&self, id: &str) -> Result<(), TemplateStoreError> {
        let deleted = self
            .lock()
            .execute("DELETE FROM templates WHERE id = ?1", [id])?;
        if deleted == 0 {
            return Err(TemplateStoreError::NotFound(id.to_owned()));
        }
        Ok(())
    }

    /// One page of templates after `cursor` (an offset, opaque to clients); the next cursor
    /// when there is more.
    pub fn list(
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
        let order = match sort {
            TemplateSort::Created => "created_us, seq",
            TemplateSort::CreatedDesc => "created_us DESC, seq DESC",
            TemplateSort::Name => "name, seq",
            TemplateSort::NameDesc => "name DESC, seq DESC",
            TemplateSort::Updated => "updated_us, seq",
            TemplateSort::UpdatedDesc => "updated_us DESC, seq DESC",
        };
        let conn = self.lock();
        let mut statement = conn.prepare(&format!(
            "SELECT id, name, editor_type, html, text, created_us, updated_us
             FROM templates ORDER BY {order}"
        ))?;
        let rows = statement.query_map([], row_to_template)?;
        let mut matching = Vec::new();
        for row in rows {
            let template = row?;
            if filter
                .ids
                .as_ref()
                .is_some_and(|ids| !ids.contains(&template.id))
            {
                continue;
            }
            if filter
                .name
                .as_ref()
                .is_some_and(|name| *name != template.name)
            {
                continue;
            }
            matching.push(template);
        }
        let page: Vec<Template> = matching
            .iter()
            .skip(offset)
            .take(PAGE_SIZE)
            .cloned()
            .collect();
        // A cursor is any number a client sends: past the end is an empty page, not an overflow.
        let end = offset.saturating_add(PAGE_SIZE);
        let next = (end < matching.len()).then(|| end.to_string());
        Ok((page, next))
    }

    pub async fn create_async(
        &self,
        change: TemplateChange,
        now: Timestamp,
    ) -> Result<Template, TemplateStoreError> {
        let store = self.clone();
        blocking(move || store.create(change, now)).await
    }

    pub async fn get_async(&self, id: String) -> Result<Template, TemplateStoreError> {
        let store = self.clone();
        blocking(move || store.get(&id)).await
    }

    pub async fn update_async(
        &self,
        id: String,
        change: TemplateChange,
        now: Timestamp,
    ) -> Result<Template, TemplateStoreError> {
        let store = self.clone();
        blocking(move || store.update(&id, change, now)).await
    }

    pub async fn delete_async(&self, id: String) -> Result<(), TemplateStoreError> {
        let store = self.clone();
        blocking(move || store.delete(&id)).await
    }

    pub async fn list_async(
        &self,
        filter: TemplateFilter,
        sort: TemplateSort,
        cursor: Option<String>,
    ) -> Result<(Vec<Template>, Option<String>), TemplateStoreError> {
        let store = self.clone();
        blocking(move || store.list(&filter, sort, cursor.as_deref())).await
    }
}

impl TemplateLookup for TemplateStore {
    fn email_source(
        &self,
        id: &str,
        subject: &str,
    ) -> Result<Option<EmailTemplateSource>, TemplateStoreError> {
        match self.get(id) {
            Ok(template) => Ok(Some(template.email_source(subject))),
            Err(TemplateStoreError::NotFound(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }
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

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, TemplateStoreError> + Send + 'static,
) -> Result<T, TemplateStoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| TemplateStoreError::Internal(e.to_string()))?
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

fn read_one(conn: &Connection, id: &str) -> Result<Option<Template>, TemplateStoreError> {
    Ok(conn
        .query_row(
            "SELECT id, name, editor_type, html, text, created_us, updated_us
             FROM templates WHERE id = ?1",
            [id],
            row_to_template,
        )
        .optional()?)
}

fn row_to_template(row: &rusqlite::Row<'_>) -> rusqlite::Result<Template> {
    let instant = |us: i64| Timestamp::from_microsecond(us).unwrap_or(Timestamp::UNIX_EPOCH);
    Ok(Template {
        id: row.get(0)?,
        name: row.get(1)?,
        editor_type: row.get(2)?,
        html: row.get(3)?,
        text: row.get(4)?,
        created: instant(row.get(5)?),
        updated: instant(row.get(6)?),
    })
}

/// Six random letters and digits.
fn new_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..6)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, TemplateStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = TemplateStore::open(dir.path().join("templates.db")).unwrap();
        (dir, store)
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn create_update_list_delete_and_reopen() {
        let (dir, store) = store();
        let created = store
            .create(
                TemplateChange {
                    name: Some("Cart".into()),
                    html: Some("<p>Hi {{ first_name|default:\"there\" }}</p>".into()),
                    text: None,
                },
                at("2026-03-01T00:00:00Z"),
            )
            .unwrap();
        assert_eq!(created.id.len(), 6);
        assert_eq!(created.editor_type, "CODE");
        let updated = store
            .update(
                &created.id,
                TemplateChange {
                    text: Some(Some("Hi {{ first_name }}".into())),
                    ..TemplateChange::default()
                },
                at("2026-03-02T00:00:00Z"),
            )
            .unwrap();
        assert_eq!(updated.name, "Cart");
        assert_eq!(updated.text.as_deref(), Some("Hi {{ first_name }}"));
        assert_eq!(updated.updated, at("2026-03-02T00:00:00Z"));
        drop(store);
        let store = TemplateStore::open(dir.path().join("templates.db")).unwrap();
        assert_eq!(store.get(&created.id).unwrap(), updated);
        let source = store.email_source(&created.id, "Subject").unwrap().unwrap();
        assert_eq!(source.subject, "Subject");
        assert!(store.email_source("nosuch", "s").unwrap().is_none());
        store.delete(&created.id).unwrap();
        assert!(matches!(
            store.delete(&created.id),
            Err(TemplateStoreError::NotFound(_))
        ));
    }

    #[test]
    fn refuses_templates_that_do_not_compile() {
        let (_dir, store) = store();
        let err = store
            .create(
                TemplateChange {
                    name: Some("Broken".into()),
                    html: Some("{% for item in event.Items %}".into()),
                    text: None,
                },
                at("2026-03-01T00:00:00Z"),
            )
            .unwrap_err();
        assert!(
            matches!(&err, TemplateStoreError::Invalid { field: "html", .. }),
            "{err}"
        );
        let err = store
            .create(
                TemplateChange {
                    name: Some("Broken text".into()),
                    html: Some("<p>ok</p>".into()),
                    text: Some(Some("{{ x|nosuchfilter }}".into())),
                },
                at("2026-03-01T00:00:00Z"),
            )
            .unwrap_err();
        assert!(
            matches!(&err, TemplateStoreError::Invalid { field: "text", .. }),
            "{err}"
        );
        let err = store
            .create(TemplateChange::default(), at("2026-03-01T00:00:00Z"))
            .unwrap_err();
        assert!(matches!(
            &err,
            TemplateStoreError::Invalid { field: "name", .. }
        ));
    }

    #[test]
    fn a_cursor_past_the_end_is_an_empty_page() {
        // Found by fuzzing: `offset + PAGE_SIZE` overflowed (a panic in debug builds).
        let (_dir, store) = store();
        store
            .create(
                TemplateChange {
                    name: Some("t".into()),
                    html: Some("<p>x</p>".into()),
                    text: None,
                },
                at("2026-03-01T00:00:00Z"),
            )
            .unwrap();
        for cursor in [u64::MAX.to_string(), (usize::MAX - 5).to_string()] {
            let (page, next) = store
                .list(
                    &TemplateFilter::default(),
                    TemplateSort::Name,
                    Some(&cursor),
                )
                .unwrap();
            assert!(page.is_empty());
            assert_eq!(next, None);
        }
    }

    #[test]
    fn lists_in_pages_of_ten() {
        let (_dir, store) = store();
        for i in 0..12 {
            store
                .create(
                    TemplateChange {
                        name: Some(format!("t{i:02}")),
                        html: Some("<p>x</p>".into()),
                        text: None,
                    },
                    at("2026-03-01T00:00:00Z"),
                )
                .unwrap();
        }
        let (first, next) = store
            .list(&TemplateFilter::default(), TemplateSort::Name, None)
            .unwrap();
        assert_eq!(first.len(), 10);
        assert_eq!(first[0].name, "t00");
        let (second, next) = store
            .list(
                &TemplateFilter::default(),
                TemplateSort::Name,
                next.as_deref(),
            )
            .unwrap();
        assert_eq!(second.len(), 2);
        assert_eq!(next, None);
        let (named, _) = store
            .list(
                &TemplateFilter {
                    name: Some("t03".into()),
                    ids: None,
                },
                TemplateSort::Created,
                None,
            )
            .unwrap();
        assert_eq!(named.len(), 1);
    }
}
