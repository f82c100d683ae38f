//! Who is signed in. The console asks an [`Authenticator`] (accounts and sessions live behind
//! it) about the session cookie of each request; the [`SignedIn`] extractor sends anyone
//! without a valid session to the sign-in page.

use async_trait::async_trait;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::{ConsoleError, ConsoleResult};
use crate::Console;

/// The cookie that carries a console session.
pub const SESSION_COOKIE: &str = "signalbox_session";

/// The name of the hidden form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";

/// Sessions and accounts, behind a trait so the console does not care where they live.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The session a cookie value names, if it is valid and not expired.
    async fn authenticate(&self, session: &str) -> Option<SignedIn>;
}

/// An authenticator that lets nobody in.
pub struct DenyAll;

#[async_trait]
impl Authenticator for DenyAll {
    async fn authenticate(&self, _session: &str) -> Option<SignedIn> {
        None
    }
}

/// A signed-in person: the account's email and the session's CSRF token, which every form
/// carries in its [`CSRF_FIELD`] field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SignedIn {
    pub email: String,
    pub csrf: String,
}

impl SignedIn {
    /// Refuses a form whose token is not this session's (compared in constant time).
    pub fn check_csrf(&self, token: &str) -> ConsoleResult<()> {
        use subtle::ConstantTimeEq;
        let ok: bool = self.csrf.as_bytes().ct_eq(token.as_bytes()).into();
        if ok && !token.is_empty() {
            Ok(())
        } else {
            Err(ConsoleError::Csrf)
        }
    }
}

/// The value of the session cookie in a request's `Cookie` headers.
pub fn session_cookie(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// What a request without a valid session gets: a page load goes to the sign-in page (and
/// comes back after), anything else is a 401.
pub struct NotSignedIn {
    next: Option<String>,
}

impl IntoResponse for NotSignedIn {
    fn into_response(self) -> Response {
        match self.next {
            Some(next) => {
                let encoded: String = form_urlencoded_component(&next);
                Redirect::to(&format!("/sign-in?next={encoded}")).into_response()
            }
            None => (StatusCode::UNAUTHORIZED, "sign in first").into_response(),
        }
    }
}

fn form_urlencoded_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

impl FromRequestParts<Console> for SignedIn {
    type Rejection = NotSignedIn;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Console,
    ) -> Result<Self, Self::Rejection> {
        if let Some(cookie) = session_cookie(parts) {
            if let Some(signed_in) = console.inner.deps.auth.authenticate(&cookie).await {
                return Ok(signed_in);
            }
        }
        let next = (parts.method == Method::GET).then(|| {
            parts
                .uri
                .path_and_query()
                .map_or("/".to_owned(), |p| p.as_str().to_owned())
        });
        Err(NotSignedIn { next })
    }
}
