//! Extractors for bodies, paths and queries that refuse bad input in the admin error format,
//! naming the field at fault, and the parsers shared by the listing endpoints.

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value};

use super::error::AdminError;

/// A path parameter (`{name}`).
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AdminError))]
pub struct AdminPath<T>(pub T);

/// Query parameters. Query types keep every parameter an `Option<String>` so that parsing
/// (and the error naming the parameter) happens in the handler's helpers below.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AdminError))]
pub struct AdminQuery<T>(pub T);

impl From<PathRejection> for AdminError {
    fn from(rejection: PathRejection) -> Self {
        AdminError::invalid("path", rejection.body_text())
    }
}

impl From<QueryRejection> for AdminError {
    fn from(rejection: QueryRejection) -> Self {
        AdminError::invalid("query", rejection.body_text())
    }
}

/// A JSON object body, read field by field. An empty body counts as `{}`, and the
/// `Content-Type` is not checked, so `curl -d '{"name":"web"}'` works as typed.
pub struct JsonObject(Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = AdminError;

    async fn from_request(req: Request, state: &S) -> Result<JsonObject, AdminError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| AdminError::InvalidBody(rejection.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonObject(Map::new()));
        }
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(map)) => Ok(JsonObject(map)),
            Ok(_) => Err(AdminError::InvalidBody(
                "the body must be a JSON object".into(),
            )),
            Err(err) => Err(AdminError::InvalidBody(format!(
                "the body is not valid JSON: {err}"
            ))),
        }
    }
}

impl JsonObject {
    /// Takes an optional string field; `null` counts as absent.
    pub fn string(&mut self, field: &'static str) -> Result<Option<String>, AdminError> {
        match self.0.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(AdminError::invalid(field, "must be a string")),
        }
    }

    /// Takes an optional array of strings; `null` counts as absent.
    pub fn strings(&mut self, field: &'static str) -> Result<Option<Vec<String>>, AdminError> {
        let not_strings = || AdminError::invalid(field, "must be an array of strings");
        match self.0.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s),
                    _ => Err(not_strings()),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(not_strings()),
        }
    }

    /// Takes an optional boolean field; `null` counts as absent.
    pub fn bool(&mut self, field: &'static str) -> Result<Option<bool>, AdminError> {
        match self.0.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(AdminError::invalid(field, "must be true or false")),
        }
    }

    /// Takes a field as it is, `null` included (for fields where `null` means "clear").
    pub fn value(&mut self, field: &'static str) -> Option<Value> {
        self.0.remove(field)
    }

    /// Whether the body has this field (`null` included).
    pub fn has(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }

    pub fn required_string(&mut self, field: &'static str) -> Result<String, AdminError> {
        self.string(field)?
            .ok_or_else(|| AdminError::invalid(field, "is required"))
    }

    /// The whole object, for bodies whose keys are data (settings).
    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }

    /// Refuses fields nobody took, so that a misspelt option is an error, not a default.
    pub fn finish(self) -> Result<(), AdminError> {
        match self.0.into_iter().next() {
            None => Ok(()),
            Some((field, _)) => Err(AdminError::invalid(field, "unknown field")),
        }
    }
}

/// Page size of the listings: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
pub fn parse_limit(text: Option<&str>) -> Result<u32, AdminError> {
    match text {
        None => Ok(DEFAULT_LIMIT),
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                AdminError::invalid("limit", format!("must be a number from 1 to {MAX_LIMIT}"))
            }),
    }
}

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

/// A cursor (`after`): a sequence number or id, 0 when absent.
pub fn parse_cursor(field: &'static str, text: Option<&str>) -> Result<i64, AdminError> {
    match text {
        None => Ok(0),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| AdminError::invalid(field, "must be a non-negative integer")),
    }
}

/// An RFC 3339 time such as `2024-05-01T12:00:00Z`.
pub fn parse_time(
    field: &'static str,
    text: Option<&str>,
) -> Result<Option<Timestamp>, AdminError> {
    text.map(|text| {
        text.parse::<Timestamp>().map_err(|_| {
            AdminError::invalid(
                field,
                format!("{text:?} is not an RFC 3339 time (e.g. 2024-05-01T12:00:00Z)"),
            )
        })
    })
    .transpose()
}

/// A non-negative duration: `24h`, `90m`, `1h 30m`, `0s` or ISO 8601 `PT24H`.
pub fn parse_duration(field: &'static str, text: &str) -> Result<SignedDuration, AdminError> {
    let duration: SignedDuration = text.parse().map_err(|_| {
        AdminError::invalid(
            field,
            format!("{text:?} is not a duration (e.g. 24h, 90m, 30s)"),
        )
    })?;
    if duration.is_negative() {
        return Err(AdminError::invalid(field, "must not be negative"));
    }
    Ok(duration)
}
