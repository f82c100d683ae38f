//! Email templates in Klaviyo's Django-style syntax, translated to minijinja once and
//! rendered many times.
//!
//! An [`EmailTemplate`] holds the three parts of an email (subject, HTML body, optional text
//! body) compiled into one minijinja environment: the HTML part auto-escapes, the subject and
//! text parts do not. A missing text part is derived from the rendered HTML.
//! [`EmailTemplate::render`] is the sending path; [`EmailTemplate::preview`] renders the same
//! way and also lists the variables the template asked for and the context lacked (they
//! render empty, as in Klaviyo).

mod context;
mod dates;
mod filters;
mod translate;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use sha2::{Digest, Sha256};

pub use context::RenderContext;

use crate::text::html_to_text;

/// Instructions one rendering of one part may run before it is stopped (a runaway loop in a
/// template must not stall a sender).
const FUEL: u64 = 5_000_000;

/// The most one rendered part may hold. Fuel bounds the steps, not what each step writes:
/// a loop printing a long property would otherwise grow without bound. A stored template is
/// at most a few megabytes, so this is far above any real email.
pub const MAX_RENDERED_BYTES: usize = 16 << 20;

/// The parts of an email template, as the author wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct EmailTemplateSource {
    pub subject: String,
    pub html: String,
    /// The plain-text part; `None` derives it from the rendered HTML.
    pub text: Option<String>,
}

/// A part of an email.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    Subject,
    Html,
    Text,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Subject => "subject",
            Part::Html => "html",
            Part::Text => "text",
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a template did not compile or render. Lines count from 1 in the part's source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template is not valid; `construct` is the tag, filter or expression at fault
    /// (`{% endfor %}`, `|nosuch`).
    #[error("{part} line {line}: {construct}: {message}")]
    Syntax {
        part: Part,
        line: usize,
        construct: String,
        message: String,
    },
    /// The template is valid but failed on this data (a filter applied to a value it cannot
    /// take, a loop over too much).
    #[error("{part}{}: {message}", line.map(|line| format!(" line {line}")).unwrap_or_default())]
    Render {
        part: Part,
        line: Option<usize>,
        message: String,
    },
}

impl TemplateError {
    pub fn part(&self) -> Part {
        match self {
            TemplateError::Syntax { part, .. } | TemplateError::Render { part, .. } => *part,
        }
    }
}

/// A rendered email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    /// One line: newlines and runs of whitespace collapse to a space.
    pub subject: String,
    pub html: String,
    pub text: String,
}

/// What [`EmailTemplate::preview`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    pub result: Result<RenderedEmail, TemplateError>,
    /// Variables the template looked up and the context lacked, in order, as paths:
    /// `first_name`, `event.Items[1].ImageURL`, `person['Loyalty Points']`. They rendered
    /// empty (or as their `default`).
    pub undefined: Vec<String>,
}

/// A compiled email template. Cloning is cheap; it is `Send + Sync`.
#[derive(Clone)]
pub struct EmailTemplate {
    env: Arc<Environment<'static>>,
    has_text: bool,
}

impl fmt::Debug for EmailTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailTemplate")
            .field("has_text", &self.has_text)
            .finish_non_exhaustive()
    }
}

impl EmailTemplate {
    /// Translates and compiles every part; reports the first error.
    pub fn compile(source: &EmailTemplateSource) -> Result<EmailTemplate, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_auto_escape_callback(|name| {
            if name == Part::Html.name() {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.set_keep_trailing_newline(true);
        env.set_fuel(Some(FUEL));
        env.set_formatter(format_value);
        filters::register(&mut env);
        let mut parts = vec![(Part::Subject, &source.subject), (Part::Html, &source.html)];
        if let Some(text) = &source.text {
            parts.push((Part::Text, text));
        }
        for (part, text) in parts {
            let translated = translate::translate(text, part)?;
            env.add_template_owned(part.name(), translated.source.clone())
                .map_err(|error| syntax_error(part, &translated.source, &error))?;
        }
        Ok(EmailTemplate {
            env: Arc::new(env),
            has_text: source.text.is_some(),
        })
    }

    /// Renders every part with `context`. Undefined variables render empty.
    pub fn render(&self, context: &RenderContext) -> Result<RenderedEmail, TemplateError> {
        self.render_value(&context.to_value())
    }

    /// Renders like [`EmailTemplate::render`] and lists the undefined variables it met.
    pub fn preview(&self, context: &RenderContext) -> Preview {
        let misses = context::Misses::default();
        let result = self.render_value(&context.to_tracked_value(&misses));
        Preview {
            result,
            undefined: misses.take(),
        }
    }

    fn render_value(&self, value: &minijinja::Value) -> Result<RenderedEmail, TemplateError> {
        let subject = self.render_part(Part::Subject, value)?;
        let html = self.render_part(Part::Html, value)?;
        let text = if self.has_text {
            self.render_part(Part::Text, value)?
        } else {
            html_to_text(&html)
        };
        Ok(RenderedEmail {
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            html,
            text,
        })
    }

    fn render_part(&self, part: Part, value: &minijinja::Value) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template(part.name())
            .map_err(|error| render_error(part, &error))?;
        let mut out = CappedOutput {
            bytes: Vec::new(),
            over: false,
        };
        let rendered = template.render_captured_to(value, &mut out);
        if out.over {
            return Err(TemplateError::Render {
                part,
                line: None,
                message: format!(
                    "the rendered {part} is over the limit of {MAX_RENDERED_BYTES} bytes"
                ),
            });
        }
        rendered.map_err(|error| render_error(part, &error))?;
        // minijinja writes whole strings, so the bytes are UTF-8.
        String::from_utf8(out.bytes).map_err(|_| TemplateError::Render {
            part,
            line: None,
            message: "the rendered text is not UTF-8".into(),
        })
    }
}

/// Collects a rendering, refusing to grow past [`MAX_RENDERED_BYTES`].
struct CappedOutput {
    bytes: Vec<u8>,
    over: bool,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_RENDERED_BYTES {
            self.over = true;
            return Err(std::io::Error::other("rendered output over its limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Prints a value: none and undefined as nothing (a JSON `null` property renders empty);
/// in the HTML part, `& < > " '` escaped (unlike minijinja's default, `/` stays as it is, so
/// URLs stay readable).
fn format_value(
    out: &mut minijinja::Output,
    state: &minijinja::State<'_, '_>,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    if value.is_undefined() || value.is_none() {
        return Ok(());
    }
    if !matches!(state.auto_escape(), AutoEscape::Html) || value.is_safe() {
        return minijinja::escape_formatter(out, state, value);
    }
    let owned;
    let text = match value.as_str() {
        Some(text) => text,
        None => {
            owned = value.to_string();
            &owned
        }
    };
    let mut rest = text;
    while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
        out.write_str(&rest[..at]).map_err(write_error)?;
        let escaped = match rest.as_bytes()[at] {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            _ => "&#39;",
        };
        out.write_str(escaped).map_err(write_error)?;
        rest = &rest[at + 1..];
    }
    out.write_str(rest).map_err(write_error)
}

fn write_error(_: std::fmt::Error) -> minijinja::Error {
    minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "could not write output")
}

fn syntax_error(part: Part, translated: &str, error: &minijinja::Error) -> TemplateError {
    let construct = error
        .range()
        .and_then(|range| translated.get(range))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            error
                .line()
                .and_then(|line| translated.lines().nth(line.saturating_sub(1)))
                .map(|text| text.trim().chars().take(80).collect())
                .unwrap_or_default()
        });
    TemplateError::Syntax {
        part,
        line: error.line().unwrap_or(1),
        construct,
        message: error
            .detail()
            .map(str::to_owned)
            .unwrap_or_else(|| error.kind().to_string()),
    }
}

fn render_error(part: Part, error: &minijinja::Error) -> TemplateError {
    let mut message = match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    TemplateError::Render {
        part,
        line: error.line(),
        message,
    }
}

/// Compiled templates by content, so a template used by many sends compiles once.
///
/// Bounded: when full, it starts over (templates are few; this only guards against growth).
#[derive(Debug)]
pub struct TemplateCache {
    entries: Mutex<HashMap<[u8; 32], EmailTemplate>>,
    capacity: usize,
}

impl Default for TemplateCache {
    fn default() -> Self {
        TemplateCache::new(1024)
    }
}

impl TemplateCache {
    pub fn new(capacity: usize) -> TemplateCache {
        TemplateCache {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The compiled template for `source`, compiling it on first use.
    pub fn get_or_compile(
        &self,
        source: &EmailTemplateSource,
    ) -> Result<EmailTemplate, TemplateError> {
        let key = fingerprint(source);
        if let Some(template) = self.lock().get(&key) {
            return Ok(template.clone());
        }
        let template = EmailTemplate::compile(source)?;
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(key, template.clone());
        Ok(template)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], EmailTemplate>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn fingerprint(source: &EmailTemplateSource) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in [
        Some(source.subject.as_str()),
        Some(source.html.as_str()),
        source.text.as_deref(),
    ] {
        match part {
            Some(text) => {
                hasher.update([1]);
                hasher.update((text.len() as u64).to_le_bytes());
                hasher.update(text.as_bytes());
            }
            None => hasher.update([0]),
        }
    }
    hasher.finalize().into()
}
