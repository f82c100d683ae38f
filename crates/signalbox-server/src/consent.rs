//! The consent pages people reach from emails, through links signed with
//! [`AppState::links`](crate::app::AppState):
//!
//! - `GET /c/{token}` shows a page with a **Confirm subscription** button; `POST /c/{token}`
//!   (the button) confirms the double opt-in: the pending member becomes a member and the
//!   profile SUBSCRIBED with `double_optin`. The token names the profile and the list.
//! - `GET /u/{token}` shows a page that asks to confirm the unsubscribe; `POST /u/{token}`
//!   unsubscribes (the page's button, and RFC 8058 one-click: a body of
//!   `List-Unsubscribe=One-Click`).
//!
//! Only a POST changes anything. Mail providers' link scanners and image proxies fetch every
//! link of an email with GET or HEAD before the reader sees it, so a GET only reads and a HEAD
//! only checks the token. The forms carry nothing but the token in their URL: no cookie, no
//! session; the signed token is the authority.
//!
//! A token that is malformed, forged, altered or of another kind is a 400 and changes
//! nothing; a genuine token whose profile or list no longer exists is a 404. Tokens are never
//! logged. Pages escape every value they show, are never stored or indexed, and refuse to be
//! framed (a framed button could be clicked unawares).

use axum::extract::{Path, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use signalbox_engage::{ConfirmOutcome, Engage, EngageError, ListId, MemberStatus, ProfileId};
use signalbox_mail::{LinkClaims, LinkKind};

use crate::app::AppState;

/// The most a `POST /u/{token}` body may hold: the one-click form is 26 bytes.
pub const UNSUBSCRIBE_BODY_LIMIT: usize = 4 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/c/{token}",
            get(confirm_page).head(confirm_head).post(confirm),
        )
        .route(
            "/u/{token}",
            get(unsubscribe_page)
                .head(unsubscribe_head)
                .post(unsubscribe),
        )
}

/// The label of the confirmation page's button.
pub const CONFIRM_BUTTON: &str = "Confirm subscription";

/// A small HTML page.
struct Page {
    status: StatusCode,
    title: &'static str,
    body: String,
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let html = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <meta name=\"robots\" content=\"noindex\">\
             <title>{title}</title></head>\
             <body style=\"font-family:sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem\">\
             <h1>{title}</h1>{body}</body></html>\n",
            title = self.title,
            body = self.body
        );
        (self.status, page_headers(), html).into_response()
    }
}

/// The headers of every consent page (and of the answer to a HEAD).
fn page_headers() -> [(HeaderName, HeaderValue); 7] {
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            HeaderName::from_static("x-robots-tag"),
            HeaderValue::from_static("noindex, nofollow"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; \
                 frame-ancestors 'none'",
            ),
        ),
    ]
}

/// Where a page's form posts: the link it was reached by, under the public base URL.
fn form_action(app: &AppState, kind: LinkKind, token: &str) -> String {
    format!("{}{}{token}", app.links.base_url(), kind.path_prefix())
}

/// The answer to a HEAD: the token is checked, nothing is read or changed.
fn head(app: &AppState, kind: LinkKind, token: &str) -> Response {
    let status = match claims(app, kind, token) {
        Ok(_) => StatusCode::OK,
        Err(page) => page.status,
    };
    (status, page_headers()).into_response()
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn invalid_link() -> Page {
    Page {
        status: StatusCode::BAD_REQUEST,
        title: "This link is not valid",
        body: "<p>The link may have been cut or changed. Please use the link from your email \
               as it was sent.</p>"
            .into(),
    }
}

fn not_found() -> Page {
    Page {
        status: StatusCode::NOT_FOUND,
        title: "Nothing to do here",
        body: "<p>This subscription no longer exists.</p>".into(),
    }
}

fn unavailable() -> Page {
    Page {
        status: StatusCode::SERVICE_UNAVAILABLE,
        title: "Please try again shortly",
        body: "<p>The service is busy. Please try the link again in a minute.</p>".into(),
    }
}

fn engine_error(err: EngageError) -> Page {
    match err {
        EngageError::NotFound { .. } => not_found(),
        EngageError::Invalid { .. } => invalid_link(),
        EngageError::Internal(detail) => {
            tracing::error!(detail, "consent page failed");
            Page {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                title: "Something went wrong",
                body: "<p>Please try the link again later.</p>".into(),
            }
        }
        _ => unavailable(),
    }
}

fn claims(app: &AppState, kind: LinkKind, token: &str) -> Result<LinkClaims, Page> {
    app.links.signer().verify(kind, token).map_err(|err| {
        tracing::info!(error = %err, kind = kind.path_prefix(), "refused a consent link");
        invalid_link()
    })
}

fn engage(app: &AppState) -> Result<Engage, Page> {
    app.engine()
        .map(|engine| engine.engage.clone())
        .ok_or_else(unavailable)
}

/// `GET /c/{token}`: asks before confirming (a link scanner's GET changes nothing).
async fn confirm_page(State(app): State<AppState>, Path(token): Path<String>) -> Page {
    let result = async {
        let claims = claims(&app, LinkKind::Confirm, &token)?;
        let engage = engage(&app)?;
        let list_id = ListId(claims.message_id);
        let profile_id = ProfileId(claims.profile_id);
        let list = engage.get_list(&list_id).await.map_err(engine_error)?;
        let profile = engage
            .get_profile(&profile_id)
            .await
            .map_err(engine_error)?;
        let status = engage
            .member_status(&list_id, &profile_id)
            .await
            .map_err(engine_error)?;
        match status {
            None => Err(not_found()),
            Some(MemberStatus::Member) => {
                Ok(confirmed_page(ConfirmOutcome::AlreadyMember, &list.name))
            }
            Some(MemberStatus::Pending) => Ok(Page {
                status: StatusCode::OK,
                title: "Confirm your subscription",
                body: format!(
                    "<p>Receive email from <strong>{list}</strong> at <strong>{who}</strong>?</p>\
                     <form method=\"post\" action=\"{action}\">\
                     <button type=\"submit\">{CONFIRM_BUTTON}</button></form>\
                     <p>If you did not ask for this, close this page: nothing changes.</p>",
                    list = escape(&list.name),
                    who = escape(&profile.email.unwrap_or_default()),
                    action = escape(&form_action(&app, LinkKind::Confirm, &token)),
                ),
            }),
        }
    }
    .await;
    result.unwrap_or_else(|page| page)
}

/// `HEAD /c/{token}`.
async fn confirm_head(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    head(&app, LinkKind::Confirm, &token)
}

/// `POST /c/{token}`: confirms (the page's button). The body is not read: the token is the
/// authority.
async fn confirm(State(app): State<AppState>, Path(token): Path<String>) -> Page {
    let result = async {
        let claims = claims(&app, LinkKind::Confirm, &token)?;
        let engage = engage(&app)?;
        let list = ListId(claims.message_id);
        let outcome = engage
            .confirm_subscription(&ProfileId(claims.profile_id), &list)
            .await
            .map_err(engine_error)?;
        let name = engage
            .get_list(&list)
            .await
            .map(|l| l.name)
            .unwrap_or_default();
        Ok::<_, Page>(confirmed_page(outcome, &name))
    }
    .await;
    result.unwrap_or_else(|page| page)
}

fn confirmed_page(outcome: ConfirmOutcome, list_name: &str) -> Page {
    Page {
        status: StatusCode::OK,
        title: match outcome {
            ConfirmOutcome::Confirmed => "Subscription confirmed",
            ConfirmOutcome::AlreadyMember => "Already confirmed",
        },
        body: format!(
            "<p>You are subscribed to <strong>{}</strong>. Thank you.</p>",
            escape(list_name)
        ),
    }
}

/// `GET /u/{token}`: asks before unsubscribing (a link scanner's GET changes nothing).
async fn unsubscribe_page(State(app): State<AppState>, Path(token): Path<String>) -> Page {
    let result = async {
        let claims = claims(&app, LinkKind::Unsubscribe, &token)?;
        let engage = engage(&app)?;
        let profile = engage
            .get_profile(&ProfileId(claims.profile_id))
            .await
            .map_err(engine_error)?;
        let who = profile.email.unwrap_or_default();
        Ok::<_, Page>(Page {
            status: StatusCode::OK,
            title: "Unsubscribe",
            body: format!(
                "<p>Stop marketing emails to <strong>{}</strong>?</p>\
                 <form method=\"post\" action=\"{action}\">\
                 <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
                 <button type=\"submit\">Unsubscribe</button></form>",
                escape(&who),
                action = escape(&form_action(&app, LinkKind::Unsubscribe, &token)),
            ),
        })
    }
    .await;
    result.unwrap_or_else(|page| page)
}

/// `HEAD /u/{token}`.
async fn unsubscribe_head(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    head(&app, LinkKind::Unsubscribe, &token)
}

/// `POST /u/{token}`: unsubscribes (the page's button or RFC 8058 one-click). The token is
/// checked before the body is read, and the body is read only up to
/// [`UNSUBSCRIBE_BODY_LIMIT`].
async fn unsubscribe(
    State(app): State<AppState>,
    Path(token): Path<String>,
    body: axum::body::Body,
) -> Page {
    let result = async {
        let claims = claims(&app, LinkKind::Unsubscribe, &token)?;
        let body = axum::body::to_bytes(body, UNSUBSCRIBE_BODY_LIMIT)
            .await
            .map_err(|_| Page {
                status: StatusCode::BAD_REQUEST,
                title: "Unsubscribe",
                body: "<p>The request body must be List-Unsubscribe=One-Click.</p>".into(),
            })?;
        // An empty body is accepted too; any other body must be the one-click form.
        if !body.is_empty() {
            let one_click = form_urlencoded::parse(&body)
                .any(|(k, v)| k == "List-Unsubscribe" && v == "One-Click");
            if !one_click {
                return Err(Page {
                    status: StatusCode::BAD_REQUEST,
                    title: "Unsubscribe",
                    body: "<p>The request body must be List-Unsubscribe=One-Click.</p>".into(),
                });
            }
        }
        let engage = engage(&app)?;
        engage
            .unsubscribe_profile(&ProfileId(claims.profile_id))
            .await
            .map_err(engine_error)?;
        Ok::<_, Page>(Page {
            status: StatusCode::OK,
            title: "You are unsubscribed",
            body: "<p>You will no longer receive marketing emails from us.</p>".into(),
        })
    }
    .await;
    result.unwrap_or_else(|page| page)
}
