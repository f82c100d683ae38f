//! Who is calling the Klaviyo API: `Authorization: Klaviyo-API-Key pk_…`, checked against the
//! store's private keys (by digest, compared in constant time), plus the `revision` header
//! every request must carry, and the scopes the route requires ([`super::scopes`]).
//!
//! The key is never logged: it lives in an [`ApiKey`], whose `Debug` is redacted, and only
//! the key's name travels on.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use std::marker::PhantomData;
use std::sync::Arc;

use signalbox_core::{ApiKey, Clock};
use signalbox_engage::Engage;

use super::error::ApiError;
use super::scopes::Requires;
use crate::app::AppState;

/// The authentication scheme of private keys.
const SCHEME: &str = "Klaviyo-API-Key";

/// An authenticated Klaviyo API request whose key holds the scopes `R` names, and what its
/// handler needs. A key without them is refused with 403 before the handler runs.
pub struct Caller<R> {
    pub engage: Engage,
    pub clock: Arc<dyn Clock>,
    /// The name of the private key used.
    pub key_name: String,
    /// The `revision` header, e.g. `2026-07-15` or `2026-07-15.pre`.
    pub revision: String,
    requires: PhantomData<fn() -> R>,
}

impl<R: Requires> FromRequestParts<AppState> for Caller<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let key = private_key(&parts.headers).ok_or_else(ApiError::not_authenticated)?;
        let info = app
            .private_keys
            .authenticate(&key)
            .await
            .map_err(|err| {
                tracing::warn!(error = %err, "private keys are unavailable");
                ApiError::unavailable("private keys are unavailable; retry shortly")
            })?
            .ok_or_else(ApiError::authentication_failed)?;
        let missing = info.scopes.missing(R::SCOPES);
        if !missing.is_empty() {
            return Err(ApiError::permission_denied(&missing));
        }
        let revision = revision(&parts.headers)?;
        let engage = super::engine(app)?.engage.clone();
        Ok(Caller {
            engage,
            clock: Arc::clone(&app.clock),
            key_name: info.name,
            revision,
            requires: PhantomData,
        })
    }
}

/// The private key in `Authorization: Klaviyo-API-Key pk_…` (scheme case-insensitive).
pub fn private_key(headers: &HeaderMap) -> Option<ApiKey> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case(SCHEME) && !key.is_empty()).then(|| ApiKey::new(key))
}

/// The `revision` header: required, `YYYY-MM-DD` with an optional `.suffix` (`.pre`).
pub fn revision(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = headers
        .get("revision")
        .ok_or_else(|| {
            ApiError::invalid_parameter(
                "revision",
                "the 'revision' header is required, e.g. 'revision: 2026-07-15'",
            )
        })?
        .to_str()
        .map_err(|_| ApiError::invalid_parameter("revision", "the 'revision' header is not text"))?
        .trim();
    let (date, suffix) = value.split_once('.').unwrap_or((value, ""));
    let date_ok = date.len() == 10 && date.parse::<jiff::civil::Date>().is_ok();
    let suffix_ok = suffix.chars().all(|c| c.is_ascii_alphanumeric());
    if !date_ok || !suffix_ok || value.ends_with('.') {
        return Err(ApiError::invalid_parameter(
            "revision",
            format!("'{value}' is not a valid revision; use a date such as 2026-07-15"),
        ));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn reads_the_private_key() {
        let h = headers(&[("authorization", "Klaviyo-API-Key pk_abc")]);
        assert_eq!(private_key(&h).unwrap().expose(), "pk_abc");
        let h = headers(&[("authorization", "klaviyo-api-key   pk_abc ")]);
        assert_eq!(private_key(&h).unwrap().expose(), "pk_abc");
        for bad in [
            "Bearer pk_abc",
            "pk_abc",
            "Klaviyo-API-Key ",
            "Basic cGtfYWJj",
        ] {
            let mut h = HeaderMap::new();
            h.insert("authorization", HeaderValue::from_str(bad).unwrap());
            assert!(private_key(&h).is_none(), "{bad}");
        }
    }

    #[test]
    fn revisions() {
        for good in ["2026-07-15", "2024-02-15.pre", " 2026-10-15 "] {
            let mut h = HeaderMap::new();
            h.insert("revision", HeaderValue::from_str(good).unwrap());
            assert_eq!(revision(&h).unwrap(), good.trim());
        }
        for bad in [
            "",
            "2026-13-01",
            "2026-07-15.",
            "latest",
            "2026-7-15",
            "2026-07-15.p-re",
        ] {
            let mut h = HeaderMap::new();
            h.insert("revision", HeaderValue::from_str(bad).unwrap());
            assert!(revision(&h).is_err(), "{bad}");
        }
        assert!(revision(&HeaderMap::new()).is_err());
    }
}
