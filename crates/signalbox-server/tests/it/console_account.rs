//! Getting into the console over real HTTP: no page without a session, sign-in with its
//! cookie flags, CSRF on every form (the sign-in form too), the rate limit, session expiry,
//! the one-time setup link, and the admin API under a console session.

use std::net::SocketAddr;
use std::sync::Arc;

use jiff::SignedDuration;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use signalbox_console::accounts::{AccountStore, EMAIL_FAILURES};
use signalbox_console::{Accounts, SqliteAccountStore};
use signalbox_core::{Clock, Email, FakeClock, SystemClock};
use signalbox_server::{Application, ServerConfig, ServerError};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const EMAIL: &str = "ada@example.com";
const PASSWORD: &str = "correct horse battery";

/// Every console page a person can open (each area's front page).
const PAGES: &[&str] = &[
    "/",
    "/connections",
    "/integrations",
    "/debugger",
    "/analytics/metrics",
    "/profiles",
    "/lists",
    "/flows",
    "/deliveries",
];

struct ConsoleApp {
    address: String,
    client: reqwest::Client,
    accounts: Accounts,
    account_store: Arc<SqliteAccountStore>,
    /// The accounts' clock (sessions, setup tokens, the rate limit).
    clock: FakeClock,
    _dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), ServerError>>>,
}

/// An answer, read whole.
struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The `Set-Cookie` line that sets `name`.
    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }

    /// The value `name` is set to (`name=value; …`).
    fn cookie(&self, name: &str) -> Option<String> {
        let line = self.set_cookie(name)?;
        let pair = line.split(';').next()?;
        Some(pair.split_once('=')?.1.to_owned())
    }

    /// The value of the form's hidden `csrf` field.
    fn csrf_field(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("a csrf field") + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].to_owned()
    }
}

impl ConsoleApp {
    async fn spawn() -> ConsoleApp {
        ConsoleApp::spawn_with(None).await
    }

    async fn spawn_with(public_url: Option<&str>) -> ConsoleApp {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(
            dir.path().join("signalbox.db"),
            SqliteOptions {
                writer: true,
                ..SqliteOptions::default()
            },
        )
        .unwrap();
        let store: Arc<dyn Store> = Arc::new(store);
        let clock = FakeClock::new(jiff::Timestamp::now());
        let account_store =
            Arc::new(SqliteAccountStore::open(&dir.path().join("console.db")).unwrap());
        let accounts = Accounts::new(
            Arc::clone(&account_store) as Arc<dyn AccountStore>,
            Arc::new(clock.clone()),
        );
        let config = ServerConfig {
            public_url: public_url.map(str::to_owned),
            ..ServerConfig::default()
        };
        let system: Arc<dyn Clock> = Arc::new(SystemClock);
        let mut app =
            Application::build(store, system, config, SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .unwrap();
        app.set_console_auth(Arc::new(accounts.clone()));
        let address = format!("http://{}", app.local_addr());
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run(async {
            let _ = stop.await;
        }));
        ConsoleApp {
            address,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            accounts,
            account_store,
            clock,
            _dir: dir,
            shutdown: Some(shutdown),
            server: Some(server),
        }
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        cookies: &[(&str, &str)],
        headers: &[(&str, &str)],
        form: Option<&[(&str, &str)]>,
    ) -> Page {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if !cookies.is_empty() {
            let line: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            request = request.header("cookie", line.join("; "));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(form) = form {
            let body = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish();
            request = request
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body);
        }
        let response = request.send().await.expect("send");
        Page {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str, cookies: &[(&str, &str)]) -> Page {
        self.request(Method::GET, path, cookies, &[], None).await
    }

    /// Loads the sign-in form: its form cookie and CSRF field.
    async fn sign_in_form(&self) -> (String, String) {
        let page = self.get("/sign-in", &[]).await;
        assert_eq!(page.status, StatusCode::OK);
        let cookie = page.cookie("signalbox_signin").expect("a form cookie");
        (cookie, page.csrf_field())
    }

    async fn post_sign_in(&self, email: &str, password: &str, next: &str) -> Page {
        let (cookie, csrf) = self.sign_in_form().await;
        self.request(
            Method::POST,
            "/sign-in",
            &[("signalbox_signin", &cookie)],
            &[],
            Some(&[
                ("csrf", &csrf),
                ("email", email),
                ("password", password),
                ("next", next),
            ]),
        )
        .await
    }

    /// Signs in and returns the session cookie's value.
    async fn session(&self) -> String {
        let page = self.post_sign_in(EMAIL, PASSWORD, "/").await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        page.cookie("signalbox_session").expect("a session cookie")
    }
}

impl Drop for ConsoleApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        drop(self.server.take());
    }
}

#[tokio::test]
async fn every_console_route_is_refused_without_a_session() {
    let app = ConsoleApp::spawn().await;
    app.accounts
        .create(&Email::parse(EMAIL).unwrap(), PASSWORD)
        .await
        .unwrap();
    // The pages this build serves: those a session opens. Every area's page is in the list;
    // one this build does not have answers 404 with a session and is not a way in either.
    let session = app.session().await;
    let mut served = Vec::new();
    for path in PAGES {
        let page = app.get(path, &[("signalbox_session", &session)]).await;
        if page.status != StatusCode::NOT_FOUND {
            // 503: the page exists, but this app runs without the engine it reads.
            assert!(
                page.status == StatusCode::OK || page.status == StatusCode::SERVICE_UNAVAILABLE,
                "{path}: {} {}",
                page.status,
                page.body
            );
            served.push(*path);
        }
    }
    assert!(served.contains(&"/"), "{served:?}");
    let forged = "A".repeat(43);
    for cookies in [vec![], vec![("signalbox_session", forged.as_str())]] {
        for path in PAGES {
            let page = app.get(path, &cookies).await;
            if !served.contains(path) {
                assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}");
                continue;
            }
            assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
            assert_eq!(page.location(), format!("/sign-in?next={path}"), "{path}");
        }
        let page = app
            .request(
                Method::POST,
                "/sign-out",
                &cookies,
                &[],
                Some(&[("csrf", "x")]),
            )
            .await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }
    // The sign-in page itself is open, with the contract's labels.
    let page = app.get("/sign-in?next=/profiles", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("<label for=\"email\">Email</label>"),
        "{}",
        page.body
    );
    assert!(page
        .body
        .contains("<label for=\"password\">Password</label>"));
    assert!(page
        .body
        .contains("<button type=\"submit\">Sign in</button>"));
    // (The template escapes `/` as `&#x2f;`; a browser reads it back as `/`.)
    let body = page.body.replace("&#x2f;", "/");
    assert!(body.contains("name=\"next\" value=\"/profiles\""), "{body}");
}

#[tokio::test]
async fn sign_in_sets_a_flagged_session_cookie_and_returns_to_next() {
    let app = ConsoleApp::spawn().await;
    app.accounts
        .create(&Email::parse(EMAIL).unwrap(), PASSWORD)
        .await
        .unwrap();
    let page = app
        .post_sign_in("  ADA@example.com ", PASSWORD, "/profiles?q=a")
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location(), "/profiles?q=a");
    let line = page
        .set_cookie("signalbox_session")
        .expect("a session cookie");
    for flag in ["Path=/", "Max-Age=604800", "HttpOnly", "SameSite=Lax"] {
        assert!(line.contains(flag), "{flag} in {line}");
    }
    assert!(!line.contains("Secure"), "plain http: {line}");
    let session = page.cookie("signalbox_session").unwrap();
    let home = app.get("/", &[("signalbox_session", &session)]).await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.contains(EMAIL));
    // Signed in, the sign-in page sends on to `next`.
    let page = app
        .get("/sign-in?next=/flows", &[("signalbox_session", &session)])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/flows");

    // `next` never leaves the server.
    let page = app.post_sign_in(EMAIL, PASSWORD, "//evil.example/").await;
    assert_eq!(page.location(), "/");

    // Served over https, the cookies are Secure.
    let app = ConsoleApp::spawn_with(Some("https://console.example.com")).await;
    app.accounts
        .create(&Email::parse(EMAIL).unwrap(), PASSWORD)
        .await
        .unwrap();
    let form = app.get("/sign-in", &[]).await;
    assert!(form
        .set_cookie("signalbox_signin")
        .unwrap()
        .contains("; Secure"));
    let page = app.post_sign_in(EMAIL, PASSWORD, "/").await;
    let line = page.set_cookie("signalbox_session").unwrap();
    assert!(line.contains("; Secure"), "{line}");
}

#[tokio::test]
async fn forms_without_the_right_csrf_token_are_refused() {
    let app = ConsoleApp::spawn().await;
    app.accounts
        .create(&Email::parse(EMAIL).unwrap(), PASSWORD)
        .await
        .unwrap();
    // The sign-in form: no form cookie, or a field that is not the cookie.
    let (cookie, csrf) = app.sign_in_form().await;
    let fields = |csrf: &'static str| -> Vec<(&'static str, &'static str)> {
        vec![("csrf", csrf), ("email", EMAIL), ("password", PASSWORD)]
    };
    let page = app
        .request(
            Method::POST,
            "/sign-in",
            &[],
            &[],
            Some(&[("csrf", &csrf), ("email", EMAIL), ("password", PASSWORD)]),
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "no form cookie");
    let page = app
        .request(
            Method::POST,
            "/sign-in",
            &[("signalbox_signin", &cookie)],
            &[],
            Some(&fields("")),
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "no field");
    let wrong = "B".repeat(43);
    let page = app
        .request(
            Method::POST,
            "/sign-in",
            &[("signalbox_signin", &cookie)],
            &[],
            Some(&[("csrf", &wrong), ("email", EMAIL), ("password", PASSWORD)]),
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "wrong field");
    assert!(page.set_cookie("signalbox_session").is_none());

    // Sign-out: the session's token, not any other.
    let session = app.session().await;
    let cookies = [("signalbox_session", session.as_str())];
    for form in [vec![], vec![("csrf", "")], vec![("csrf", wrong.as_str())]] {
        let page = app
            .request(Method::POST, "/sign-out", &cookies, &[], Some(&form))
            .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{form:?}");
    }
    let home = app.get("/", &cookies).await;
    assert_eq!(home.status, StatusCode::OK);
    let csrf = home.csrf_field();
    let page = app
        .request(
            Method::POST,
            "/sign-out",
            &cookies,
            &[],
            Some(&[("csrf", &csrf)]),
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/sign-in");
    let line = page.set_cookie("signalbox_session").unwrap();
    assert!(
        line.starts_with("signalbox_session=;") && line.contains("Max-Age=0"),
        "{line}"
    );
    // The session is gone on the server, not only in the browser.
    assert_eq!(app.get("/", &cookies).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_then_rate_limited() {
    let app = ConsoleApp::spawn().await;
    app.accounts
        .create(&Email::parse(EMAIL).unwrap(), PASSWORD)
        .await
        .unwrap();
    for _ in 0..EMAIL_FAILURES {
        let page = app.post_sign_in(EMAIL, "not the password", "/").await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
        assert!(page.body.contains("role=\"alert\""), "{}", page.body);
        assert!(page.body.contains("Wrong email or password"));
        assert!(page.set_cookie("signalbox_session").is_none());
    }
    // An unknown email reads the same.
    let page = app
        .post_sign_in("eve@example.com", "not the password", "/")
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("Wrong email or password"));
    // The limit: even the right password waits.
    let page = app.post_sign_in(EMAIL, PASSWORD, "/").await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.body);
    let retry: u64 = page.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    assert!(page.body.contains("role=\"alert\""));
    assert!(
        page.body.contains("Too many failed sign-in attempts"),
        "{}",
        page.body
    );
    assert!(page.set_cookie("signalbox_session").is_none());
    // After the window it works again.
    app.clock.advance(SignedDuration::from_mins(15));
    let page = app.post_sign_in(EMAIL, PASSWORD, "/").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn sessions_expire() {
    let app = ConsoleApp::spawn().await;
    app.accounts
        .create(&Email::parse(EMAIL).unwrap(), PASSWORD)
        .await
        .unwrap();
    let session = app.session().await;
    let cookies = [("signalbox_session", session.as_str())];
    app.clock.advance(SignedDuration::from_hours(11));
    assert_eq!(app.get("/", &cookies).await.status, StatusCode::OK);
    app.clock
        .advance(SignedDuration::from_hours(12) + SignedDuration::from_secs(1));
    let page = app.get("/", &cookies).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "idle past 12 h");
    assert_eq!(page.location(), "/sign-in?next=/");
}

#[tokio::test]
async fn the_setup_link_creates_the_first_account_once() {
    let app = ConsoleApp::spawn().await;
    let token = app.accounts.create_setup_token().await.unwrap();
    let path = format!("/setup/{token}");
    let page = app.get(&path, &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    for label in ["Email", "Password", "Confirm password"] {
        assert!(
            page.body.contains(&format!("\">{label}</label>")),
            "{label}"
        );
    }
    let cookie = page.cookie("signalbox_signin").unwrap();
    let csrf = page.csrf_field();
    let cookies = [("signalbox_signin", cookie.as_str())];
    let app = &app;
    let post = |password: &'static str, confirm: &'static str| {
        let csrf = csrf.clone();
        let path = path.clone();
        async move {
            app.request(
                Method::POST,
                &path,
                &cookies,
                &[],
                Some(&[
                    ("csrf", csrf.as_str()),
                    ("email", EMAIL),
                    ("password", password),
                    ("confirm", confirm),
                ]),
            )
            .await
        }
    };
    let page = post(PASSWORD, "something else entirely").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("role=\"alert\""));
    let page = post("short", "short").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.body.contains("at least 12 characters"),
        "{}",
        page.body
    );
    assert!(!app.accounts.has_accounts().await.unwrap());

    let page = post(PASSWORD, PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location(), "/");
    let session = page.cookie("signalbox_session").unwrap();
    assert_eq!(
        app.get("/", &[("signalbox_session", &session)])
            .await
            .status,
        StatusCode::OK
    );
    // Used: neither the page nor the form works again, nor does a new link.
    assert_eq!(app.get(&path, &[]).await.status, StatusCode::NOT_FOUND);
    assert_eq!(post(PASSWORD, PASSWORD).await.status, StatusCode::NOT_FOUND);
    let another = app.accounts.create_setup_token().await.unwrap();
    let page = app.get(&format!("/setup/{another}"), &[]).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.body.contains("role=\"alert\""));
}

#[tokio::test]
async fn a_setup_link_expires() {
    let app = ConsoleApp::spawn().await;
    let token = app.accounts.create_setup_token().await.unwrap();
    app.clock.advance(SignedDuration::from_hours(24));
    let page = app.get(&format!("/setup/{token}"), &[]).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn passwords_are_stored_as_argon2id_phc_strings() {
    let app = ConsoleApp::spawn().await;
    app.accounts
        .create(&Email::parse(EMAIL).unwrap(), PASSWORD)
        .await
        .unwrap();
    let hash = app
        .account_store
        .password_hash(EMAIL)
        .await
        .unwrap()
        .unwrap();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert!(!hash.contains(PASSWORD));
}

#[tokio::test]
async fn the_admin_api_takes_a_console_session_with_its_csrf_token() {
    let app = ConsoleApp::spawn().await;
    app.accounts
        .create(&Email::parse(EMAIL).unwrap(), PASSWORD)
        .await
        .unwrap();
    let session = app.session().await;
    let cookies = [("signalbox_session", session.as_str())];
    let page = app.get("/admin/v1/sources", &cookies).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);

    let app = &app;
    let create = |headers: Vec<(&'static str, String)>| async move {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut request = app
            .client
            .post(format!("{}/admin/v1/sources", app.address))
            .header("cookie", format!("signalbox_session={}", cookies[0].1))
            .body(r#"{"name":"web"}"#);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.text().await.unwrap())
    };
    let (status, body) = create(vec![]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("csrf_token_required"), "{body}");
    let (status, _) = create(vec![("x-csrf-token", "C".repeat(43))]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let csrf = app.get("/", &cookies).await.csrf_field();
    let (status, body) = create(vec![("x-csrf-token", csrf)]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Nothing else gets in: no cookie, a forged one, an expired one.
    assert_eq!(
        app.get("/admin/v1/sources", &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    let forged = "D".repeat(43);
    let page = app
        .get("/admin/v1/sources", &[("signalbox_session", &forged)])
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("invalid_session"), "{}", page.body);
    app.clock.advance(SignedDuration::from_hours(13));
    assert_eq!(
        app.get("/admin/v1/sources", &cookies).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// Every route the console serves besides sign-in, setup and its assets, with sample ids: a
/// page load without a session goes to the sign-in, anything else is 401, before any id is
/// looked up or any form read.
const EVERY_ROUTE: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/connections"),
    ("POST", "/sources"),
    ("GET", "/sources/web"),
    ("POST", "/sources/web/disable"),
    ("POST", "/sources/web/enable"),
    ("GET", "/sources/web/settings"),
    ("POST", "/sources/web/settings/reveal"),
    ("POST", "/sources/web/settings/rotate"),
    ("GET", "/destinations/catalog"),
    ("GET", "/destinations/new/klaviyo"),
    ("POST", "/destinations/new/klaviyo"),
    ("GET", "/destinations/new/segment"),
    ("POST", "/destinations/new/segment"),
    ("GET", "/destinations/new/webhook"),
    ("POST", "/destinations/new/webhook"),
    ("GET", "/integrations"),
    ("GET", "/integrations/segment/install"),
    ("POST", "/integrations/segment/install"),
    ("GET", "/integrations/segment/seg/setup"),
    ("POST", "/integrations/segment/seg/setup"),
    ("GET", "/debugger"),
    ("GET", "/debugger/stream"),
    ("GET", "/analytics/metrics"),
    ("GET", "/analytics/metrics/M1"),
    ("GET", "/profiles"),
    ("GET", "/profiles/P1"),
    ("GET", "/lists"),
    ("GET", "/lists/new"),
    ("POST", "/lists/new"),
    ("GET", "/lists/L1"),
    ("POST", "/lists/L1/settings"),
    ("GET", "/lists/L1/delete"),
    ("POST", "/lists/L1/delete"),
    ("GET", "/segments"),
    ("GET", "/segments/new"),
    ("POST", "/segments/new"),
    ("POST", "/segments/preview"),
    ("GET", "/segments/S1"),
    ("POST", "/segments/S1/builder"),
    ("POST", "/segments/S1/preview"),
    ("POST", "/segments/S1/definition"),
    ("GET", "/segments/S1/delete"),
    ("POST", "/segments/S1/delete"),
    ("GET", "/flows"),
    ("GET", "/flows/new"),
    ("GET", "/flows/new/scratch"),
    ("POST", "/flows/new/scratch"),
    ("GET", "/flows/new/welcome-series"),
    ("POST", "/flows/new/welcome-series"),
    ("GET", "/flows/F1"),
    ("POST", "/flows/F1/status"),
    ("GET", "/flows/F1/delete"),
    ("POST", "/flows/F1/delete"),
    ("GET", "/deliveries"),
    ("GET", "/deliveries/hook"),
    ("POST", "/deliveries/hook/pause"),
    ("POST", "/deliveries/hook/resume"),
    ("POST", "/deliveries/hook/replay"),
];

#[tokio::test]
async fn every_route_with_ids_and_forms_is_refused_without_a_session() {
    let app = ConsoleApp::spawn().await;
    app.accounts
        .create(&Email::parse(EMAIL).unwrap(), PASSWORD)
        .await
        .unwrap();
    let forged = "A".repeat(43);
    for cookies in [vec![], vec![("signalbox_session", forged.as_str())]] {
        for (method, path) in EVERY_ROUTE {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let form: &[(&str, &str)] = &[("csrf", "x"), ("name", "n")];
            let page = app
                .request(method.clone(), path, &cookies, &[], Some(form))
                .await;
            if method == Method::GET {
                assert_eq!(page.status, StatusCode::SEE_OTHER, "{method} {path}");
                assert!(
                    page.location().starts_with("/sign-in?next="),
                    "{method} {path}: {}",
                    page.location()
                );
            } else {
                assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{method} {path}");
            }
        }
    }
}
