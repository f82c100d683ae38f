//! Sources (where calls come from) and private API keys.

use std::fmt;

use jiff::Timestamp;
use serde::Serialize;

use crate::scope::Scopes;

/// A source's numeric id in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SourceId(pub i64);

impl SourceId {
    /// The reserved source of writes made through the Klaviyo-compatible API. No row in the
    /// sources table has it (store ids start at 1), so no write key can append under it.
    pub const API: SourceId = SourceId(0);
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceStatus {
    Enabled,
    Disabled,
}

impl SourceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceStatus::Enabled => "enabled",
            SourceStatus::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<SourceStatus> {
        match s {
            "enabled" => Some(SourceStatus::Enabled),
            "disabled" => Some(SourceStatus::Disabled),
            _ => None,
        }
    }
}

/// A source as listed: its keys are shown redacted.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    pub id: SourceId,
    /// The slug machines use (URLs, the CLI, destinations): letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// The name a person gave it ("Test website"); the slug when none was given.
    pub display_name: String,
    pub status: SourceStatus,
    pub created_at: Timestamp,
    /// Current write key, redacted.
    pub write_key: String,
    /// Number of older keys still inside their grace period.
    pub keys_in_grace: u32,
}

/// A private API key as listed (the key itself is never stored).
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyInfo {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    pub created_at: Timestamp,
    /// What the key may do.
    pub scopes: Scopes,
}

/// A valid source name: 1–64 characters of letters, digits, `-`, `_` and `.`.
pub fn validate_source_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("name must be 1 to 64 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("name may contain only letters, digits, '-', '_' and '.'".into());
    }
    Ok(())
}

/// The longest display name a source may have, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 100;

/// A new source's slug and display name from what a person typed: a valid slug is both; any
/// other text of 1–100 characters (no control characters) is the display name, and its slug is
/// made of its letters and digits, lowercased, with `-` between words ("Test website" →
/// `test-website`).
pub fn source_names(given: &str) -> Result<(String, String), String> {
    let given = given.trim();
    if validate_source_name(given).is_ok() {
        return Ok((given.to_owned(), given.to_owned()));
    }
    let chars = given.chars().count();
    if chars == 0 || chars > MAX_DISPLAY_NAME_CHARS {
        return Err(format!(
            "name must be 1 to {MAX_DISPLAY_NAME_CHARS} characters"
        ));
    }
    if given.chars().any(char::is_control) {
        return Err("name may not contain control characters".into());
    }
    let mut slug = String::new();
    for c in given.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '.') {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    let slug: String = slug.chars().take(64).collect();
    let slug = slug.trim_end_matches('-').to_owned();
    if slug.is_empty() {
        return Err(
            "name needs at least one letter or digit (a-z, 0-9) to make the source's slug from"
                .into(),
        );
    }
    Ok((slug, given.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slug_is_made_from_the_words_of_a_display_name() {
        let names = |s: &str| source_names(s).unwrap();
        assert_eq!(names("web"), ("web".into(), "web".into()));
        assert_eq!(
            names("ios_app.v2"),
            ("ios_app.v2".into(), "ios_app.v2".into())
        );
        assert_eq!(
            names("test website"),
            ("test-website".into(), "test website".into())
        );
        assert_eq!(
            names("  Shop — Checkout (EU) "),
            ("shop-checkout-eu".into(), "Shop — Checkout (EU)".into())
        );
        assert_eq!(names("Café Crème").0, "caf-cr-me");
        assert_eq!(names(&"Long name ".repeat(9)).0.len(), 64);
        assert!(source_names("").is_err());
        assert!(source_names("——").is_err());
        assert!(source_names("tab\there").is_err());
        assert!(source_names(&"x ".repeat(60)).is_err());
    }
}
