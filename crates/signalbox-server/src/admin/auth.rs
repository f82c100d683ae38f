//! [`AdminKey`]: who is calling the admin API, checked before any handler runs. Either a
//! private API key holding the `admin` scope (the admin API manages keys, sources and their
//! write keys, and reads the raw call log, none of which an SDK's key should reach), or a
//! console session: its `signalbox_session` cookie, and for anything but GET and HEAD the
//! session's CSRF token in an `X-CSRF-Token` header. Nothing else gets in.

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, Method};
use signalbox_core::{ApiKey, ApiKeyInfo, Scope};

use super::error::AdminError;
use crate::app::AppState;

/// Schemes under which a private key may be sent, compared without regard to case.
const SCHEMES: [&str; 2] = ["bearer", "klaviyo-api-key"];

/// The header a console session sends its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Proof that the request carries a valid private API key holding the `admin` scope, or a
/// valid console session (with its CSRF token when it changes something). Every admin handler
/// takes one, so none can forget to check; the key itself is dropped once checked and never
/// logged.
#[derive(Debug, Clone)]
pub struct AdminKey(Caller);

#[derive(Debug, Clone)]
enum Caller {
    Key(ApiKeyInfo),
    /// A console session; the name is `console:` and the account's email.
    Console(String),
}

impl AdminKey {
    /// The name the key was created under, or `console:` and the signed-in email (safe to
    /// log).
    pub fn name(&self) -> &str {
        match &self.0 {
            Caller::Key(info) => &info.name,
            Caller::Console(name) => name,
        }
    }

    /// The key's record, when the caller used a key.
    pub fn info(&self) -> Option<&ApiKeyInfo> {
        match &self.0 {
            Caller::Key(info) => Some(info),
            Caller::Console(_) => None,
        }
    }
}

impl FromRequestParts<AppState> for AdminKey {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<AdminKey, AdminError> {
        let Some(header) = parts.headers.get(header::AUTHORIZATION) else {
            return console_session(parts, app).await;
        };
        let key = header
            .to_str()
            .ok()
            .and_then(api_key_from)
            .ok_or(AdminError::InvalidApiKey)?;
        let info = app
            .private_keys
            .authenticate(&key)
            .await?
            .ok_or(AdminError::InvalidApiKey)?;
        if !info.scopes.allows(Scope::Admin) {
            return Err(AdminError::PermissionDenied);
        }
        Ok(AdminKey(Caller::Key(info)))
    }
}

/// A request without an `Authorization` header: a console session, or refused.
async fn console_session(parts: &Parts, app: &AppState) -> Result<AdminKey, AdminError> {
    let cookie = signalbox_console::auth::session_cookie(parts).ok_or(AdminError::MissingApiKey)?;
    let signed_in = app
        .console_auth
        .authenticate(&cookie)
        .await
        .ok_or(AdminError::InvalidSession)?;
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let token = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        signed_in
            .check_csrf(token)
            .map_err(|_| AdminError::MissingCsrfToken)?;
    }
    Ok(AdminKey(Caller::Console(format!(
        "console:{}",
        signed_in.email
    ))))
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
