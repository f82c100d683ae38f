//! JSON:API on the wire: documents and resource objects, links, the query parameters every
//! list endpoint shares (`filter`, `sort`, `include`, `fields[...]`, `page[...]`), and a
//! reader for request bodies that reports problems as JSON pointers.

use std::collections::BTreeMap;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::filter::{self, Condition, FieldRule};
use crate::app::AppState;

pub const JSONAPI_MEDIA_TYPE: &str = "application/vnd.api+json";

/// Characters left as they are in query strings we emit: RFC 3986 unreserved.
const QUERY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A JSON:API response.
pub struct JsonApi(pub StatusCode, pub Value);

impl IntoResponse for JsonApi {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.1).unwrap_or_default();
        let mut response = (self.0, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(JSONAPI_MEDIA_TYPE),
        );
        response
    }
}

/// An instant as Klaviyo writes it: `2026-01-02T03:04:05+00:00`.
pub fn datetime(ts: Timestamp) -> String {
    ts.to_zoned(TimeZone::UTC)
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// The absolute `https://host` links are built on, from the request's `Host` header.
///
/// Links are `https://` whatever the public URL's scheme, as Klaviyo emits them: the SDK
/// extracts `page[cursor]` only from links that contain `https://`. Host, port and path come
/// from the server's public URL (`serve --public-url`), never from the request's `Host`
/// header, so a forged header cannot point a client's next page elsewhere.
#[derive(Debug, Clone)]
pub struct BaseUrl(pub String);

impl FromRequestParts<AppState> for BaseUrl {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(_: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        Ok(BaseUrl::from_public_url(app.links.base_url()))
    }
}

impl BaseUrl {
    /// `https://` and the public URL's host, port and path.
    pub fn from_public_url(public_url: &str) -> BaseUrl {
        let rest = public_url
            .split_once("://")
            .map_or(public_url, |(_, rest)| rest)
            .trim_end_matches('/');
        BaseUrl(format!("https://{rest}"))
    }

    /// `https://host/api/<path>/`.
    pub fn link(&self, path: &str) -> String {
        format!("{}/api/{path}/", self.0)
    }
}

/// The decoded query string, pairs in order.
#[derive(Debug, Clone, Default)]
pub struct RawQuery(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for RawQuery {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let pairs = parts
            .uri
            .query()
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(RawQuery(pairs))
    }
}

/// What an endpoint accepts in its query string.
#[derive(Debug, Clone, Copy)]
pub struct QuerySpec {
    pub filters: &'static [FieldRule],
    pub sorts: &'static [&'static str],
    pub includes: &'static [&'static str],
    /// Resource types that take `fields[type]`, with the field names each allows.
    pub fieldsets: &'static [(&'static str, &'static [&'static str])],
    /// `(default, max)` of `page[size]`, or `None` if the endpoint does not take it.
    pub page_size: Option<(u32, u32)>,
    /// Whether `page[cursor]` is accepted.
    pub paged: bool,
}

impl QuerySpec {
    /// A single-resource GET: only `include` and `fields[...]`.
    pub const fn single(
        includes: &'static [&'static str],
        fieldsets: &'static [(&'static str, &'static [&'static str])],
    ) -> QuerySpec {
        QuerySpec {
            filters: &[],
            sorts: &[],
            includes,
            fieldsets,
            page_size: None,
            paged: false,
        }
    }
}

/// Query parameters, validated against a [`QuerySpec`].
#[derive(Debug, Clone, Default)]
pub struct Params {
    pub filter: Vec<Condition>,
    pub sort: Option<&'static str>,
    pub include: Vec<&'static str>,
    /// `fields[type]` → the attribute paths to keep.
    pub fields: BTreeMap<&'static str, Vec<String>>,
    pub page_size: u32,
    pub cursor: Option<String>,
    /// The pairs as given, to build `links`.
    raw: Vec<(String, String)>,
}

impl Params {
    pub fn parse(query: RawQuery, spec: &QuerySpec) -> Result<Params, ApiError> {
        let mut params = Params {
            page_size: spec.page_size.map_or(0, |(default, _)| default),
            ..Params::default()
        };
        let mut seen = Vec::new();
        for (key, value) in &query.0 {
            if seen.contains(&key) {
                return Err(ApiError::invalid_parameter(
                    key.clone(),
                    format!("'{key}' is given more than once"),
                ));
            }
            seen.push(key);
            match key.as_str() {
                "filter" if !spec.filters.is_empty() => {
                    let conditions = filter::parse(value)?;
                    filter::check(&conditions, spec.filters)?;
                    params.filter = conditions;
                }
                "sort" if !spec.sorts.is_empty() => {
                    params.sort = Some(
                        spec.sorts
                            .iter()
                            .copied()
                            .find(|s| *s == value)
                            .ok_or_else(|| {
                                ApiError::invalid_parameter(
                                    "sort",
                                    format!(
                                        "'{value}' is not a valid sort; allowed: {}",
                                        spec.sorts.join(", ")
                                    ),
                                )
                            })?,
                    );
                }
                "include" => {
                    for name in value.split(',').map(str::trim) {
                        let found = spec.includes.iter().copied().find(|i| *i == name);
                        let Some(found) = found else {
                            return Err(ApiError::invalid_parameter(
                                "include",
                                if spec.includes.is_empty() {
                                    format!("'{name}' is not a valid include; this endpoint includes nothing")
                                } else {
                                    format!(
                                        "'{name}' is not a valid include; allowed: {}",
                                        spec.includes.join(", ")
                                    )
                                },
                            ));
                        };
                        if !params.include.contains(&found) {
                            params.include.push(found);
                        }
                    }
                }
                "page[size]" if spec.page_size.is_some() => {
                    let (_, max) = spec.page_size.unwrap_or_default();
                    params.page_size = value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=max).contains(n))
                        .ok_or_else(|| {
                            ApiError::invalid_parameter(
                                "page[size]",
                                format!("page[size] must be an integer from 1 to {max}"),
                            )
                        })?;
                }
                "page[cursor]" if spec.paged => {
                    params.cursor = cursor_from(value);
                }
                other => {
                    if let Some(kind) = other
                        .strip_prefix("fields[")
                        .and_then(|k| k.strip_suffix(']'))
                    {
                        let (kind, allowed) = spec
                            .fieldsets
                            .iter()
                            .copied()
                            .find(|(k, _)| *k == kind)
                            .ok_or_else(|| {
                                ApiError::invalid_parameter(
                                    other.to_owned(),
                                    format!("'{kind}' resources cannot be sparse here"),
                                )
                            })?;
                        let mut names = Vec::new();
                        for name in value.split(',').map(str::trim) {
                            if !allowed.contains(&name) {
                                return Err(ApiError::invalid_parameter(
                                    other.to_owned(),
                                    format!(
                                        "'{name}' is not a valid field for '{kind}'; allowed: {}",
                                        allowed.join(", ")
                                    ),
                                ));
                            }
                            names.push(name.to_owned());
                        }
                        params.fields.insert(kind, names);
                    } else {
                        return Err(ApiError::invalid_parameter(
                            other.to_owned(),
                            format!("'{other}' is not a supported query parameter here"),
                        ));
                    }
                }
            }
        }
        params.raw = query.0;
        Ok(params)
    }

    pub fn includes(&self, name: &str) -> bool {
        self.include.contains(&name)
    }

    /// The sparse fieldset for a resource type, if one was asked for.
    pub fn fields_for(&self, kind: &str) -> Option<&[String]> {
        self.fields.get(kind).map(Vec::as_slice)
    }

    /// `links` of a collection: `self` as requested, `next` with the next cursor.
    pub fn collection_links(&self, base: &BaseUrl, path: &str, next_cursor: Option<&str>) -> Value {
        let without_cursor: Vec<&(String, String)> = self
            .raw
            .iter()
            .filter(|(k, _)| k != "page[cursor]")
            .collect();
        let self_link = with_query(base.link(path), self.raw.iter());
        let next = next_cursor.map(|cursor| {
            let cursor_pair = ("page[cursor]".to_owned(), cursor.to_owned());
            with_query(
                base.link(path),
                without_cursor
                    .into_iter()
                    .chain(std::iter::once(&cursor_pair)),
            )
        });
        json!({ "self": self_link, "next": next, "prev": null })
    }

    /// A resource's JSON, with this request's sparse fieldset for its type.
    pub fn render(&self, resource: &Resource) -> Value {
        resource.to_json(self.fields_for(resource.kind))
    }

    /// The document of one resource: `data` and `links.self` (the resource's own link).
    pub fn document(&self, status: StatusCode, resource: &Resource) -> JsonApi {
        JsonApi(status, self.document_json(resource))
    }

    /// [`Params::document`]'s body, for a handler that adds `included` or `meta`.
    pub fn document_json(&self, resource: &Resource) -> Value {
        json!({ "data": self.render(resource), "links": { "self": resource.self_link } })
    }

    /// The document of one page of the collection at `path`: `data` (rendered resources)
    /// and the paging `links`.
    pub fn collection(
        &self,
        base: &BaseUrl,
        path: &str,
        data: impl IntoIterator<Item = Value>,
        next_cursor: Option<&str>,
    ) -> Value {
        let data: Vec<Value> = data.into_iter().collect();
        json!({ "data": data, "links": self.collection_links(base, path, next_cursor) })
    }
}

fn with_query<'a>(mut url: String, pairs: impl Iterator<Item = &'a (String, String)>) -> String {
    let mut first = true;
    for (key, value) in pairs {
        url.push(if first { '?' } else { '&' });
        first = false;
        url.extend(utf8_percent_encode(key, QUERY_ENCODE));
        url.push('=');
        url.extend(utf8_percent_encode(value, QUERY_ENCODE));
    }
    url
}

/// The cursor in a `page[cursor]` value, which may be a bare cursor, a whole next link (as
/// the SDK sends an `http://` link verbatim), or a cursor with a stray leading `=` (as the SDK
/// leaves after cutting a cursor out of a link).
pub fn cursor_from(value: &str) -> Option<String> {
    let value = value.trim();
    let cursor = match value.split_once('?') {
        Some((_, query)) if value.contains("://") || value.starts_with('/') => {
            form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "page[cursor]")
                .map(|(_, v)| v.into_owned())?
        }
        _ => value.strip_prefix('=').unwrap_or(value).to_owned(),
    };
    (!cursor.is_empty()).then_some(cursor)
}

/// One resource object.
pub struct Resource {
    pub kind: &'static str,
    pub id: String,
    pub attributes: Map<String, Value>,
    pub relationships: Option<Map<String, Value>>,
    pub self_link: String,
}

impl Resource {
    /// The JSON, keeping only `fields` of the attributes when a sparse fieldset is given.
    pub fn to_json(&self, fields: Option<&[String]>) -> Value {
        let attributes = match fields {
            Some(fields) => sparse(&self.attributes, fields),
            None => self.attributes.clone(),
        };
        let mut object = json!({
            "type": self.kind,
            "id": self.id,
            "attributes": attributes,
            "links": { "self": self.self_link },
        });
        if let Some(relationships) = &self.relationships {
            object["relationships"] = Value::Object(relationships.clone());
        }
        object
    }
}

/// Keeps the attribute paths named in a sparse fieldset (`email`, `location.city`).
pub fn sparse(attributes: &Map<String, Value>, fields: &[String]) -> Map<String, Value> {
    let mut out = Map::new();
    for field in fields {
        let path: Vec<&str> = field.split('.').collect();
        copy_path(attributes, &mut out, &path);
    }
    out
}

fn copy_path(from: &Map<String, Value>, to: &mut Map<String, Value>, path: &[&str]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(value) = from.get(*first) else {
        return;
    };
    if rest.is_empty() {
        to.insert((*first).to_owned(), value.clone());
        return;
    }
    let Value::Object(inner) = value else {
        return;
    };
    let slot = to
        .entry((*first).to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(target) = slot {
        copy_path(inner, target, rest);
    }
}

/// The answer of an operation endpoint (`metric-aggregates`, a bulk job): `data` is the
/// resource the operation made, `links.self` the endpoint itself.
pub fn operation_document(status: StatusCode, resource: &Resource, endpoint: String) -> JsonApi {
    JsonApi(
        status,
        json!({ "data": resource.to_json(None), "links": { "self": endpoint } }),
    )
}

/// A to-many relationship given by its links: `self` (the relationship) and `related` (the
/// members), e.g. `lists/{id}/relationships/profiles` and `lists/{id}/profiles`.
pub fn relationship_links(base: &BaseUrl, owner: &str, name: &str) -> Value {
    json!({"links": {
        "self": base.link(&format!("{owner}/relationships/{name}")),
        "related": base.link(&format!("{owner}/{name}")),
    }})
}

/// A `{"type": ..., "id": ...}` linkage.
pub fn linkage(kind: &str, id: &str) -> Value {
    json!({ "data": { "type": kind, "id": id } })
}

/// A JSON object in a request body, with the pointer it sits at.
#[derive(Clone)]
pub struct Obj<'a> {
    pub map: &'a Map<String, Value>,
    pointer: String,
}

/// A field that may be absent, `null` (clear it) or set.
#[derive(Debug, Clone, PartialEq)]
pub enum Patch<T> {
    Absent,
    Null,
    Set(T),
}

impl<T> Patch<T> {
    pub fn into_option(self) -> Option<T> {
        match self {
            Patch::Set(v) => Some(v),
            Patch::Absent | Patch::Null => None,
        }
    }
}

impl<'a> Obj<'a> {
    pub fn root(value: &'a Value) -> Result<Obj<'a>, ApiError> {
        match value {
            Value::Object(map) => Ok(Obj {
                map,
                pointer: String::new(),
            }),
            _ => Err(ApiError::invalid_at("/", "the body must be a JSON object")),
        }
    }

    pub fn pointer(&self, key: &str) -> String {
        format!(
            "{}/{}",
            self.pointer,
            key.replace('~', "~0").replace('/', "~1")
        )
    }

    /// Refuses keys this resource does not know, so a typo is never silently ignored.
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.map.keys().find(|k| !known.contains(&k.as_str())) {
            Some(key) => Err(ApiError::invalid_at(
                self.pointer(key),
                format!(
                    "'{key}' is not a valid field here; allowed: {}",
                    known.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    pub fn object(&self, key: &str) -> Result<Option<Obj<'a>>, ApiError> {
        let pointer = self.pointer(key);
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Obj { map, pointer })),
            Some(_) => Err(ApiError::invalid_at(
                pointer,
                format!("'{key}' must be an object"),
            )),
        }
    }

    pub fn required_object(&self, key: &str) -> Result<Obj<'a>, ApiError> {
        self.object(key)?
            .ok_or_else(|| ApiError::invalid_at(self.pointer(key), format!("'{key}' is required")))
    }

    /// An element of an array read with [`Obj::array`], which must be an object.
    pub fn element(&self, key: &str, index: usize, value: &'a Value) -> Result<Obj<'a>, ApiError> {
        let pointer = format!("{}/{index}", self.pointer(key));
        match value {
            Value::Object(map) => Ok(Obj { map, pointer }),
            _ => Err(ApiError::invalid_at(pointer, "must be an object")),
        }
    }

    pub fn array(&self, key: &str) -> Result<Option<&'a Vec<Value>>, ApiError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(_) => Err(ApiError::invalid_at(
                self.pointer(key),
                format!("'{key}' must be an array"),
            )),
        }
    }

    pub fn string(&self, key: &str) -> Result<Patch<String>, ApiError> {
        match self.map.get(key) {
            None => Ok(Patch::Absent),
            Some(Value::Null) => Ok(Patch::Null),
            Some(Value::String(s)) => Ok(Patch::Set(s.clone())),
            Some(_) => Err(ApiError::invalid_at(
                self.pointer(key),
                format!("'{key}' must be a string"),
            )),
        }
    }

    pub fn required_string(&self, key: &str) -> Result<String, ApiError> {
        match self.string(key)? {
            Patch::Set(s) => Ok(s),
            _ => Err(ApiError::invalid_at(
                self.pointer(key),
                format!("'{key}' is required"),
            )),
        }
    }

    pub fn number(&self, key: &str) -> Result<Patch<f64>, ApiError> {
        match self.map.get(key) {
            None => Ok(Patch::Absent),
            Some(Value::Null) => Ok(Patch::Null),
            Some(Value::Number(n)) => n.as_f64().map(Patch::Set).ok_or_else(|| {
                ApiError::invalid_at(self.pointer(key), format!("'{key}' is out of range"))
            }),
            Some(_) => Err(ApiError::invalid_at(
                self.pointer(key),
                format!("'{key}' must be a number"),
            )),
        }
    }

    pub fn boolean(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::invalid_at(
                self.pointer(key),
                format!("'{key}' must be true or false"),
            )),
        }
    }

    /// Checks `type` is the one the endpoint expects.
    pub fn expect_type(&self, wanted: &str) -> Result<(), ApiError> {
        let given = self.required_string("type")?;
        if given != wanted {
            return Err(ApiError::conflict(format!(
                "resource type '{given}' does not match this endpoint's '{wanted}'"
            )));
        }
        Ok(())
    }

    /// An ISO 8601 datetime; one without an offset is read as UTC.
    pub fn datetime(&self, key: &str) -> Result<Option<Timestamp>, ApiError> {
        let Patch::Set(text) = self.string(key)? else {
            return Ok(None);
        };
        match signalbox_core::time::parse(&text) {
            Ok(ts) => Ok(Some(ts)),
            Err(signalbox_core::time::TimeError::Unparseable) => Err(ApiError::invalid_at(
                self.pointer(key),
                format!("'{key}' must be an ISO 8601 datetime such as 2026-01-02T03:04:05Z"),
            )),
            Err(err) => Err(ApiError::invalid_at(
                self.pointer(key),
                format!("'{key}' {err}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_forms() {
        assert_eq!(cursor_from("abc").as_deref(), Some("abc"));
        assert_eq!(cursor_from("=abc==").as_deref(), Some("abc=="));
        assert_eq!(
            cursor_from("http://127.0.0.1:8/api/profiles/?page%5Bsize%5D=2&page%5Bcursor%5D=a%2Bb")
                .as_deref(),
            Some("a+b")
        );
        assert_eq!(
            cursor_from("https://h/api/events/?page[cursor]=xyz&sort=-datetime").as_deref(),
            Some("xyz")
        );
        assert_eq!(cursor_from(""), None);
        assert_eq!(cursor_from("https://h/api/events/?sort=x"), None);
    }

    #[test]
    fn next_link_replaces_the_cursor_and_encodes() {
        let query = RawQuery(vec![
            ("filter".into(), r#"equals(email,"a+b@c.com")"#.into()),
            ("page[cursor]".into(), "old".into()),
        ]);
        let spec = QuerySpec {
            filters: &[FieldRule {
                field: "email",
                ops: &[filter::Op::Equals],
            }],
            sorts: &[],
            includes: &[],
            fieldsets: &[],
            page_size: Some((20, 100)),
            paged: true,
        };
        let params = Params::parse(query, &spec).unwrap();
        assert_eq!(params.cursor.as_deref(), Some("old"));
        assert_eq!(params.page_size, 20);
        let links =
            params.collection_links(&BaseUrl("https://h:1".into()), "profiles", Some("n=="));
        assert_eq!(
            links["next"],
            "https://h:1/api/profiles/?filter=equals%28email%2C%22a%2Bb%40c.com%22%29&page%5Bcursor%5D=n%3D%3D"
        );
        assert_eq!(
            links["self"],
            "https://h:1/api/profiles/?filter=equals%28email%2C%22a%2Bb%40c.com%22%29&page%5Bcursor%5D=old"
        );
        assert_eq!(links["prev"], Value::Null);
        // What the SDK does with such a link.
        let next = links["next"].as_str().unwrap();
        let cut = next.split("page%5Bcursor%5D").last().unwrap();
        let decoded = percent_encoding::percent_decode_str(cut)
            .decode_utf8()
            .unwrap();
        assert_eq!(cursor_from(&decoded).as_deref(), Some("n=="));
    }

    #[test]
    fn links_take_the_public_url_as_https() {
        for (public, base) in [
            ("http://127.0.0.1:8080", "https://127.0.0.1:8080"),
            ("https://crm.example.com/", "https://crm.example.com"),
            (
                "https://example.com/signalbox",
                "https://example.com/signalbox",
            ),
        ] {
            assert_eq!(BaseUrl::from_public_url(public).0, base);
        }
        assert_eq!(
            BaseUrl::from_public_url("https://example.com/sb/").link("profiles"),
            "https://example.com/sb/api/profiles/"
        );
    }

    #[test]
    fn sparse_keeps_paths() {
        let attributes =
            json!({"email": "a", "first_name": "b", "location": {"city": "c", "zip": "d"}});
        let fields = vec!["email".to_owned(), "location.city".to_owned()];
        assert_eq!(
            Value::Object(sparse(attributes.as_object().unwrap(), &fields)),
            json!({"email": "a", "location": {"city": "c"}})
        );
    }

    #[test]
    fn klaviyo_datetime_format() {
        let ts: Timestamp = "2026-01-02T03:04:05.678Z".parse().unwrap();
        assert_eq!(datetime(ts), "2026-01-02T03:04:05+00:00");
    }
}
