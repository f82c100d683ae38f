//! [`AdminKey`]: the private API key a request carries, checked before any handler runs. The
//! key must hold the `admin` scope: the admin API manages keys, sources and their write keys,
//! and reads the raw call log, none of which an SDK's key should reach.

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};
use signalbox_core::{ApiKey, ApiKeyInfo, Scope};

use super::error::AdminError;
use crate::app::AppState;

/// Schemes under which a private key may be sent, compared without regard to case.
const SCHEMES: [&str; 2] = ["bearer", "klaviyo-api-key"];

/// Proof that the request carries a valid private API key holding the `admin` scope. Every
/// admin handler takes one, so none can forget to check; the key itself is dropped once
/// checked and never logged.
#[derive(Debug, Clone)]
pub struct AdminKey(ApiKeyInfo);

impl AdminKey {
    /// The name the key was created under (safe to log).
    pub fn name(&self) -> &str {
        &self.0.name
    }

    pub fn info(&self) -> &ApiKeyInfo {
        &self.0
    }
}

impl FromRequestParts<AppState> for AdminKey {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<AdminKey, AdminError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(AdminError::MissingApiKey)?;
        let key = header
            .to_str()
            .ok()
            .and_then(api_key_from)
            .ok_or(AdminError::InvalidApiKey)?;
        let info = app
            .store
            .authenticate_api_key(&key)
            .await?
            .ok_or(AdminError::InvalidApiKey)?;
        if !info.scopes.allows(Scope::Admin) {
            return Err(AdminError::PermissionDenied);
        }
        Ok(AdminKey(info))
    }
}

/// The key of `Bearer pk_…` or `Klaviyo-API-Key pk_…`.
fn api_key_from(header: &str) -> Option<ApiKey> {
    let (scheme, token) = header.trim().split_once(' ')?;
    if !SCHEMES.iter().any(|s| scheme.eq_ignore_ascii_case(s)) {
        return None;
    }
    let token = token.trim();
    (token.starts_with(ApiKey::PREFIX) && token.len() > ApiKey::PREFIX.len())
        .then(|| ApiKey::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_schemes_any_case() {
        for header in [
            "Bearer pk_abc",
            "bearer pk_abc",
            "Klaviyo-API-Key pk_abc",
            "klaviyo-api-key   pk_abc ",
        ] {
            assert_eq!(api_key_from(header).unwrap().expose(), "pk_abc", "{header}");
        }
    }

    #[test]
    fn other_forms_are_refused() {
        for header in [
            "Basic cGtfYWJjOg==",
            "Bearer abc",
            "Bearer pk_",
            "pk_abc",
            "Bearer",
        ] {
            assert!(api_key_from(header).is_none(), "{header}");
        }
    }
}
