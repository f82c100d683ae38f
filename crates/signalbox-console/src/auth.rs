//! Who is signed in. The console asks an [`Authenticator`] (accounts and sessions live behind
//! it) about the session cookie of each request; the [`SignedIn`] extractor sends anyone
//! without a valid session to the sign-in page.

use async_trait::async_trait;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use signalbox_core::Email;

use crate::error::{ConsoleError, ConsoleResult};
use crate::Console;

/// The cookie that carries a console session.
pub const SESSION_COOKIE: &str = "signalbox_session";

/// The name of the hidden form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";

/// The cookie that ties the sign-in and setup forms to the browser that loaded them (login
/// CSRF): its value must come back in the form's [`CSRF_FIELD`].
pub const FORM_COOKIE: &str = "signalbox_signin";

/// Sessions and accounts, behind a trait so the console does not care where they live. Only
/// [`Authenticator::authenticate`] is required; an authenticator that keeps the other methods'
/// defaults lets nobody sign in or set up an account.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The session a cookie value names, if it is valid and not expired.
    async fn authenticate(&self, session: &str) -> Option<SignedIn>;

    /// Checks an email and password and opens a session.
    async fn sign_in(&self, _attempt: SignInAttempt<'_>) -> Result<NewSession, SignInError> {
        Err(SignInError::Unavailable)
    }

    /// Ends the session a cookie value names (nothing happens for an unknown one).
    async fn sign_out(&self, _session: &str) {}

    /// Whether a one-time setup token may still create the first account.
    async fn setup_open(&self, _token: &str) -> bool {
        false
    }

    /// Uses a one-time setup token to create the first account, and signs it in.
    async fn set_up(
        &self,
        _token: &str,
        _email: &Email,
        _password: &str,
    ) -> Result<NewSession, SetupError> {
        Err(SetupError::Closed)
    }
}

/// One sign-in attempt: what the person typed and where the request came from (for the rate
/// limit).
#[derive(Clone, Copy)]
pub struct SignInAttempt<'a> {
    pub email: &'a str,
    pub password: &'a str,
    pub client: Option<std::net::IpAddr>,
}

impl std::fmt::Debug for SignInAttempt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInAttempt")
            .field("email", &self.email)
            .field("password", &"[redacted]")
            .field("client", &self.client)
            .finish()
    }
}

/// A session just opened: the cookie value (shown to the browser once, stored only as a
/// digest) and how long the cookie may live.
pub struct NewSession {
    pub token: String,
    pub max_age: std::time::Duration,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession")
            .field("token", &"[redacted]")
            .field("max_age", &self.max_age)
            .finish()
    }
}

/// Why a sign-in failed.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The email has no account or the password is not its password (the two are not told
    /// apart).
    #[error("wrong email or password")]
    WrongCredentials,
    /// Too many failures lately for this email or from this address.
    #[error("too many failed sign-in attempts; try again in {} seconds", retry_after.as_secs())]
    RateLimited { retry_after: std::time::Duration },
    #[error("signing in is not available on this server")]
    Unavailable,
    #[error("{0}")]
    Internal(String),
}

/// Why a first-account setup failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The token is unknown, used or expired, or an account exists already.
    #[error("this setup link is not valid: it was used or has expired, or an account exists already (create accounts with `signalbox admin create`)")]
    Closed,
    /// A field is wrong; names it.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    Internal(String),
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
    cookie_value(&parts.headers, SESSION_COOKIE)
}

/// The value of the cookie `name` in a request's `Cookie` headers.
pub fn cookie_value(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
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
