//! Pieces shared by the listings: pages with a cursor, payloads as JSON, source names.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::value::RawValue;
use signalbox_core::SourceId;
use signalbox_store::Store;

use super::error::AdminError;

/// One page of a listing, oldest first. `next` is the `after` value of the following page,
/// present when the page is full (more may follow), `null` when the listing is exhausted.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next: Option<i64>,
}

impl<T> Page<T> {
    pub fn new(data: Vec<T>, limit: u32, cursor: impl Fn(&T) -> i64) -> Page<T> {
        let next = (data.len() >= limit as usize)
            .then(|| data.last().map(cursor))
            .flatten();
        Page { data, next }
    }
}

/// A list without paging: `{"data":[…]}`.
#[derive(Debug, Serialize)]
pub struct List<T> {
    pub data: Vec<T>,
}

/// A stored payload, sent as the JSON it is; a rejected payload that is not JSON (or was
/// truncated) goes as a string.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Payload {
    Json(Box<RawValue>),
    Text(String),
}

impl Payload {
    pub fn new(text: String) -> Payload {
        match serde_json::from_str::<Box<RawValue>>(&text) {
            Ok(raw) => Payload::Json(raw),
            Err(_) => Payload::Text(text),
        }
    }
}

/// Source names by id, to show names beside the ids the log stores. A deleted source's
/// calls stay in the log; their name is `null`.
#[derive(Debug, Default)]
pub struct SourceNames(HashMap<SourceId, String>);

impl SourceNames {
    pub async fn load(store: &dyn Store) -> Result<SourceNames, AdminError> {
        let sources = store.list_sources().await?;
        Ok(SourceNames(
            sources.into_iter().map(|s| (s.id, s.name)).collect(),
        ))
    }

    pub fn get(&self, id: SourceId) -> Option<String> {
        self.0.get(&id).cloned()
    }

    pub fn contains(&self, id: SourceId) -> bool {
        self.0.contains_key(&id)
    }
}

/// The id of the source a `?source=NAME` filter names; 404 naming the parameter when none.
pub async fn source_filter(
    store: &dyn Store,
    name: Option<&str>,
) -> Result<Option<SourceId>, AdminError> {
    let Some(name) = name else { return Ok(None) };
    match store.source_by_name(name).await {
        Ok(source) => Ok(Some(source.id)),
        Err(signalbox_store::StoreError::NotFound { what }) => Err(AdminError::NotFound {
            what,
            field: Some("source"),
        }),
        Err(err) => Err(err.into()),
    }
}
