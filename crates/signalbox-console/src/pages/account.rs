//! Getting in: `/sign-in`, `/sign-out` and the first account's `/setup/{token}`.
//!
//! Sessions travel in the `signalbox_session` cookie: HttpOnly, SameSite=Lax, Path=/, Secure
//! when the public URL is https, Max-Age the session's absolute lifetime.
//!
//! Login CSRF: the sign-in and setup forms are tied to the browser that loaded them by a
//! double-submitted token. Loading the form sets a random `signalbox_signin` cookie
//! (HttpOnly, SameSite=Lax) and puts the same value in the form's `csrf` field; a post whose
//! field does not equal its cookie is refused (403). Another site can neither read nor set
//! that cookie, so it cannot post a sign-in of its own choosing. Sign-out, like every form
//! of a signed-in page, carries the session's CSRF token.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Form;
use serde::{Deserialize, Serialize};
use signalbox_core::Email;

use crate::accounts::{random_token, token_well_formed, MIN_PASSWORD_CHARS};
use crate::auth::{
    cookie_value, NewSession, SetupError, SignInAttempt, SignInError, SignedIn, FORM_COOKIE,
    SESSION_COOKIE,
};
use crate::error::{ConsoleError, ConsoleResult};
use crate::Console;

pub(crate) const TEMPLATES: &[(&str, &str)] = &[
    (
        "account/sign_in.html",
        include_str!("../../templates/account/sign_in.html"),
    ),
    (
        "account/setup.html",
        include_str!("../../templates/account/setup.html"),
    ),
    (
        "account/setup_closed.html",
        include_str!("../../templates/account/setup_closed.html"),
    ),
];

/// How long a loaded sign-in or setup form may be posted.
const FORM_COOKIE_SECS: u64 = 3600;

/// What a refused sign-in shows (the same for an unknown email and a wrong password).
pub(crate) const WRONG_CREDENTIALS: &str = "Wrong email or password";

pub(crate) fn routes() -> axum::Router<Console> {
    axum::Router::new()
        .route("/sign-in", get(sign_in_page).post(sign_in))
        .route("/sign-out", post(sign_out))
        .route("/setup/{token}", get(setup_page).post(set_up))
}

/// The peer address of the connection, for the sign-in rate limit. Forwarding headers are
/// not trusted: behind a proxy every attempt shares the proxy's address, and the per-email
/// limit still holds.
pub(crate) struct ClientAddress(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(ClientAddress(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip()),
        ))
    }
}

#[derive(Deserialize)]
struct NextQuery {
    #[serde(default)]
    next: String,
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: String,
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize)]
struct SetupForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    csrf: String,
}

#[derive(Serialize)]
struct SignInView<'a> {
    csrf: &'a str,
    next: &'a str,
    email: &'a str,
    error: Option<String>,
}

#[derive(Serialize)]
struct SetupView<'a> {
    csrf: &'a str,
    token: &'a str,
    email: &'a str,
    error: Option<String>,
    min_password: usize,
}

async fn sign_in_page(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(query): Query<NextQuery>,
) -> ConsoleResult<Response> {
    // Someone already signed in goes on to where they were headed.
    if let Some(session) = cookie_value(&headers, SESSION_COOKIE) {
        if console.deps().auth.authenticate(&session).await.is_some() {
            return Ok(Redirect::to(&local_path(&query.next)).into_response());
        }
    }
    let csrf = form_token(&headers);
    let view = SignInView {
        csrf: &csrf,
        next: &local_path(&query.next),
        email: "",
        error: None,
    };
    page(
        &console,
        "account/sign_in.html",
        StatusCode::OK,
        &csrf,
        view,
    )
}

async fn sign_in(
    State(console): State<Console>,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> ConsoleResult<Response> {
    let csrf = check_form_token(&headers, &form.csrf)?;
    let next = local_path(&form.next);
    let attempt = SignInAttempt {
        email: &form.email,
        password: &form.password,
        client,
    };
    let refused = |status: StatusCode, error: String| {
        let view = SignInView {
            csrf: &csrf,
            next: &next,
            email: form.email.trim(),
            error: Some(error),
        };
        page(&console, "account/sign_in.html", status, &csrf, view)
    };
    match console.deps().auth.sign_in(attempt).await {
        Ok(session) => Ok(signed_in(&console, session, &next)),
        Err(SignInError::WrongCredentials) => {
            refused(StatusCode::UNAUTHORIZED, WRONG_CREDENTIALS.to_owned())
        }
        Err(SignInError::RateLimited { retry_after }) => {
            let minutes = retry_after.as_secs().div_ceil(60).max(1);
            let unit = if minutes == 1 { "minute" } else { "minutes" };
            let message =
                format!("Too many failed sign-in attempts. Try again in {minutes} {unit}.");
            let mut response = refused(StatusCode::TOO_MANY_REQUESTS, message)?;
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs().max(1)),
            );
            Ok(response)
        }
        Err(SignInError::Unavailable) => Err(ConsoleError::Unavailable("signing in")),
        Err(SignInError::Internal(message)) => Err(ConsoleError::Internal(message)),
    }
}

async fn sign_out(
    State(console): State<Console>,
    signed_in: SignedIn,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> ConsoleResult<Response> {
    signed_in.check_csrf(&form.csrf)?;
    if let Some(session) = cookie_value(&headers, SESSION_COOKIE) {
        console.deps().auth.sign_out(&session).await;
    }
    tracing::info!(account = %signed_in.email, "console sign-out");
    let secure = secure(&console);
    Ok((
        AppendHeaders([(header::SET_COOKIE, cookie(SESSION_COOKIE, "", 0, secure))]),
        Redirect::to("/sign-in"),
    )
        .into_response())
}

async fn setup_page(
    State(console): State<Console>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> ConsoleResult<Response> {
    if !console.deps().auth.setup_open(&token).await {
        return setup_closed(&console);
    }
    let csrf = form_token(&headers);
    let view = SetupView {
        csrf: &csrf,
        token: &token,
        email: "",
        error: None,
        min_password: MIN_PASSWORD_CHARS,
    };
    page(&console, "account/setup.html", StatusCode::OK, &csrf, view)
}

async fn set_up(
    State(console): State<Console>,
    Path(token): Path<String>,
    headers: HeaderMap,
    Form(form): Form<SetupForm>,
) -> ConsoleResult<Response> {
    let csrf = check_form_token(&headers, &form.csrf)?;
    let invalid = |error: String| {
        let view = SetupView {
            csrf: &csrf,
            token: &token,
            email: form.email.trim(),
            error: Some(error),
            min_password: MIN_PASSWORD_CHARS,
        };
        page(
            &console,
            "account/setup.html",
            StatusCode::BAD_REQUEST,
            &csrf,
            view,
        )
    };
    if form.password != form.confirm {
        return invalid("Confirm password: the two passwords are not the same".to_owned());
    }
    let email = match Email::parse(&form.email) {
        Ok(email) => email,
        Err(err) => return invalid(format!("Email: {err}")),
    };
    let auth = &console.deps().auth;
    match auth.set_up(&token, &email, &form.password).await {
        Ok(session) => Ok(signed_in(&console, session, "/")),
        Err(SetupError::Closed) => setup_closed(&console),
        Err(SetupError::Invalid { field, message }) => invalid(format!(
            "{}: {message}",
            if field == "email" {
                "Email"
            } else {
                "Password"
            }
        )),
        Err(SetupError::Internal(message)) => Err(ConsoleError::Internal(message)),
    }
}

fn setup_closed(console: &Console) -> ConsoleResult<Response> {
    let html = console
        .inner
        .templates
        .render("account/setup_closed.html", serde_json::json!({}))?;
    Ok((StatusCode::NOT_FOUND, html).into_response())
}

/// A session was opened: its cookie, the form cookie cleared, and on to `next`.
fn signed_in(console: &Console, session: NewSession, next: &str) -> Response {
    let secure = secure(console);
    (
        AppendHeaders([
            (
                header::SET_COOKIE,
                cookie(
                    SESSION_COOKIE,
                    &session.token,
                    session.max_age.as_secs(),
                    secure,
                ),
            ),
            (header::SET_COOKIE, cookie(FORM_COOKIE, "", 0, secure)),
        ]),
        Redirect::to(next),
    )
        .into_response()
}

/// Renders a form page and (re)sets its form cookie.
fn page(
    console: &Console,
    template: &str,
    status: StatusCode,
    csrf: &str,
    view: impl Serialize,
) -> ConsoleResult<Response> {
    let html = console.inner.templates.render(template, view)?;
    let form_cookie = cookie(FORM_COOKIE, csrf, FORM_COOKIE_SECS, secure(console));
    Ok((
        status,
        AppendHeaders([
            (header::SET_COOKIE, form_cookie),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ]),
        html,
    )
        .into_response())
}

/// The form token of this browser: its form cookie when it has one (so that two open tabs
/// both work), else a new one.
fn form_token(headers: &HeaderMap) -> String {
    cookie_value(headers, FORM_COOKIE)
        .filter(|token| token_well_formed(token))
        .unwrap_or_else(random_token)
}

/// Refuses a form whose `csrf` field is not the browser's form cookie (constant time).
fn check_form_token(headers: &HeaderMap, field: &str) -> ConsoleResult<String> {
    use subtle::ConstantTimeEq;
    let cookie = cookie_value(headers, FORM_COOKIE)
        .filter(|token| token_well_formed(token))
        .ok_or(ConsoleError::Csrf)?;
    if bool::from(cookie.as_bytes().ct_eq(field.as_bytes())) {
        Ok(cookie)
    } else {
        Err(ConsoleError::Csrf)
    }
}

/// `next` when it is a path on this server (`/profiles?q=a`), else `/`: never another site
/// (`//evil.example`, `https://…`), never back to signing in or out.
fn local_path(next: &str) -> String {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && next.len() <= 2048
        && next.bytes().all(|b| b.is_ascii_graphic())
        && !next.starts_with("/sign-in")
        && !next.starts_with("/sign-out");
    if ok {
        next.to_owned()
    } else {
        "/".to_owned()
    }
}

fn secure(console: &Console) -> bool {
    console
        .deps()
        .public_url
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// A `Set-Cookie` value; `max_age` 0 removes the cookie.
fn cookie(name: &str, value: &str, max_age: u64, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_server() {
        assert_eq!(local_path("/profiles?q=a%40b"), "/profiles?q=a%40b");
        for bad in [
            "",
            "profiles",
            "//evil.example/x",
            "/\\evil.example",
            "https://evil.example/",
            "/sign-in?next=/",
            "/a b",
        ] {
            assert_eq!(local_path(bad), "/", "{bad}");
        }
    }

    #[test]
    fn cookies_carry_their_flags() {
        assert_eq!(
            cookie(SESSION_COOKIE, "abc", 60, true),
            "signalbox_session=abc; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
        assert!(!cookie(SESSION_COOKIE, "abc", 60, false).contains("Secure"));
    }
}
