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
    pub name: String,
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
