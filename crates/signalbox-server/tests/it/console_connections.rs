//! The console's Connections, Integrations and Deliveries pages on a real server with the sync
//! engine running: the pages and their labels, creating a source, revealing and rotating its
//! write key, the destination catalog, Configure Klaviyo, the Segment integration's setup,
//! dead letters and their replay, and the CSRF check of every form.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::routing::post;
use axum::Router;
use reqwest::StatusCode;
use serde_json::{json, Value};
use signalbox_console::{Authenticator, SignedIn};
use signalbox_core::{Scopes, SourceStatus, SystemClock};
use signalbox_outbound::{OutboundClient, OutboundConfig};
use signalbox_server::{Application, ServerConfig, ServerError};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};
use signalbox_sync::{SqliteSyncStore, SyncDeps, SEGMENT_US_ENDPOINT};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::helpers::{basic, track};

const SESSION: &str = "console-session-7c1f";
const CSRF: &str = "csrf-token-2b9e4d";
/// Long enough that the redacted form shows its last four characters.
const SEGMENT_KEY: &str = "seg-write-key-5d8a1c3f7e9b2046";
const KLAVIYO_KEY: &str = "pk_klaviyo_console_0a1b2c3d4e5f";

/// Lets in the one session the tests send.
struct TestAuth;

#[async_trait]
impl Authenticator for TestAuth {
    async fn authenticate(&self, session: &str) -> Option<SignedIn> {
        (session == SESSION).then(|| SignedIn {
            email: "ops@example.com".into(),
            csrf: CSRF.into(),
        })
    }
}

struct Console {
    address: String,
    /// Does not follow redirects: the tests look at them.
    client: reqwest::Client,
    store: Arc<dyn Store>,
    admin: String,
    write_key: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
    _dir: TempDir,
}

struct Page {
    status: StatusCode,
    location: String,
    cache_control: String,
    text: String,
}

impl Page {
    #[track_caller]
    fn ok(&self) -> &str {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text);
        &self.text
    }

    /// A 303 to `path`.
    #[track_caller]
    fn redirects_to(&self, path: &str) {
        assert_eq!(self.status, StatusCode::SEE_OTHER, "{}", self.text);
        assert_eq!(self.location, path);
    }

    #[track_caller]
    fn has(&self, needles: &[&str]) {
        for needle in needles {
            assert!(
                self.text.contains(needle),
                "{needle:?} is not in the page:\n{}",
                self.text
            );
        }
    }
}

async fn spawn() -> Console {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default()).unwrap(),
    );
    let (_, write_key) = store.create_source("test").await.unwrap();
    let (_, admin) = store
        .create_api_key("admin", &Scopes::parse(["admin"]).unwrap())
        .await
        .unwrap();
    let clock = Arc::new(SystemClock);
    let mut app = Application::build(
        Arc::clone(&store),
        clock.clone(),
        ServerConfig::default(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    let outbound = OutboundClient::new(OutboundConfig {
        allow_private_destinations: true,
        ..OutboundConfig::default()
    })
    .unwrap();
    app.set_sync(signalbox_sync::Sync::start(SyncDeps {
        store: Arc::new(SqliteSyncStore::open(&dir.path().join("sync.db")).unwrap()),
        calls: Arc::clone(&store),
        engage: None,
        outbound,
        clock,
    }));
    app.set_console_auth(Arc::new(TestAuth));
    let address = format!("http://{}", app.local_addr());
    let (shutdown, stop) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run(async {
        let _ = stop.await;
    }));
    Console {
        address,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        store,
        admin: admin.expose().to_owned(),
        write_key: write_key.expose().to_owned(),
        shutdown: Some(shutdown),
        task: Some(task),
        _dir: dir,
    }
}

impl Console {
    async fn read(response: reqwest::Response) -> Page {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let (location, cache_control) = (header("location"), header("cache-control"));
        Page {
            status: response.status(),
            location,
            cache_control,
            text: response.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str) -> Page {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .header("cookie", format!("signalbox_session={SESSION}"))
            .send()
            .await
            .unwrap();
        Console::read(response).await
    }

    /// Posts a form with the session's CSRF token.
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut form = vec![("csrf", CSRF)];
        form.extend_from_slice(fields);
        self.post_raw(path, &form).await
    }

    /// Posts a form as given (no CSRF token added).
    async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let response = self
            .client
            .post(format!("{}{path}", self.address))
            .header("cookie", format!("signalbox_session={SESSION}"))
            .form(fields)
            .send()
            .await
            .unwrap();
        Console::read(response).await
    }

    async fn admin(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().await.unwrap()
    }

    async fn track(&self, message_id: &str) {
        let sent = self
            .client
            .post(format!("{}/v1/batch", self.address))
            .header("authorization", basic(&self.write_key, true))
            .json(&json!({"batch": [track(message_id)]}))
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), StatusCode::OK);
    }

    async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// Text as the templates escape it in HTML.
fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
        .replace('/', "&#x2f;")
}

#[tokio::test]
async fn each_page_renders_with_its_labels() {
    let console = spawn().await;
    let endpoint = html(SEGMENT_US_ENDPOINT);
    let pages: &[(&str, &[&str])] = &[
        (
            "/connections",
            &[
                "<h2 id=\"sources-heading\">Sources</h2>",
                "<h2 id=\"destinations-heading\">Destinations</h2>",
                ">Add Destination</a>",
                "href=\"/sources/test\"",
                "<label for=\"f-name\">Source name</label>",
                "<div class=\"table-wrap\">",
            ],
        ),
        (
            "/sources/test",
            &[">Settings</a>", "aria-current=\"page\">Overview</a>"],
        ),
        (
            "/sources/test/settings",
            &[
                ">API Keys</h2>",
                "<button type=\"submit\">Reveal</button>",
                "Rotate key",
                "<option value=\"24h\">",
                "<option value=\"0s\">",
                ">Configure Klaviyo</a>",
            ],
        ),
        (
            "/destinations/catalog",
            &[
                "<h1>Add Destination</h1>",
                "<label for=\"f-q\">Search destinations</label>",
                ">Klaviyo</a>",
                ">Webhook</a>",
                ">Segment</a>",
                "href=\"/destinations/new/klaviyo\"",
            ],
        ),
        (
            "/destinations/new/klaviyo?source=test",
            &[
                "<h1>Configure Klaviyo</h1>",
                ">List ID</label>",
                ">Confirm Opt-in</label>",
                ">Enforce Email as Primary Identifier</label>",
                ">Fallback on Anonymous ID</label>",
                ">Send Placed Order Events as Order Completed</label>",
                ">Private API key</label>",
                "class=\"help\"",
            ],
        ),
        (
            "/destinations/new/webhook",
            &[
                ">URL</label>",
                ">Secret</label>",
                "<legend>Sources</legend>",
            ],
        ),
        (
            "/destinations/new/segment",
            &[
                ">Write Key</label>",
                ">Endpoint</label>",
                ">Do not sync profiles that are not updated by the Klaviyo Destination</label>",
            ],
        ),
        (
            "/integrations",
            &["Explore apps", "<h3>Segment</h3>", ">Install</a>"],
        ),
        (
            "/integrations/segment/install",
            &[
                ">Write Key</label>",
                ">Endpoint</label>",
                &endpoint,
                "<button type=\"submit\">Connect to Segment</button>",
            ],
        ),
        ("/deliveries", &["<h1>Deliveries</h1>"]),
    ];
    for (path, labels) in pages {
        let page = console.get(path).await;
        page.ok();
        page.has(labels);
        page.has(&["aria-current=\"page\""]);
    }
    // Enforce Email is on by default.
    let klaviyo = console.get("/destinations/new/klaviyo?source=test").await;
    assert!(
        klaviyo
            .text
            .contains("name=\"enforceEmail\" value=\"on\" checked"),
        "{}",
        klaviyo.text
    );
    // Without a session: to the sign-in page.
    let anonymous = console
        .client
        .get(format!("{}/connections", console.address))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        anonymous.headers()["location"],
        "/sign-in?next=/connections"
    );
    console.stop().await;
}

#[tokio::test]
async fn a_source_is_created_in_the_form() {
    let console = spawn().await;
    let created = console.post("/sources", &[("name", "web-app")]).await;
    created.redirects_to("/sources/web-app?done=created");
    let page = console.get("/sources/web-app?done=created").await;
    page.ok();
    page.has(&["<h1>web-app</h1>", "Source created."]);
    assert_eq!(
        console.store.source_by_name("web-app").await.unwrap().name,
        "web-app"
    );
    console.get("/connections").await.has(&["web-app"]);

    // Disable and enable it.
    console
        .post("/sources/web-app/disable", &[])
        .await
        .redirects_to("/sources/web-app?done=disabled");
    let disabled = console.store.source_by_name("web-app").await.unwrap();
    assert_eq!(disabled.status, SourceStatus::Disabled);
    console
        .get("/sources/web-app?done=disabled")
        .await
        .has(&["Source disabled", ">Enable source</button>"]);
    console
        .post("/sources/web-app/enable", &[])
        .await
        .redirects_to("/sources/web-app?done=enabled");
    let enabled = console.store.source_by_name("web-app").await.unwrap();
    assert_eq!(enabled.status, SourceStatus::Enabled);

    // A name as people name sites: its slug is made from it, and both are shown.
    console
        .post("/sources", &[("name", "Test website")])
        .await
        .redirects_to("/sources/test-website?done=created");
    console
        .get("/sources/test-website")
        .await
        .has(&["<h1>Test website</h1>", "<code>test-website</code>"]);
    console
        .get("/connections")
        .await
        .has(&[">Test website</a> <code>test-website</code>"]);

    // A bad name: the error next to the field, the value kept.
    let bad = console.post("/sources", &[("name", "— !")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    bad.has(&[
        "role=\"alert\" id=\"f-name-error\"",
        "value=\"— !\"",
        "aria-invalid=\"true\"",
    ]);
    let taken = console.post("/sources", &[("name", "web-app")]).await;
    assert_eq!(taken.status, StatusCode::BAD_REQUEST);
    taken.has(&["already exists", "role=\"alert\""]);
    console.stop().await;
}

#[tokio::test]
async fn reveal_shows_the_key_only_after_the_post_and_rotate_issues_a_new_one() {
    let console = spawn().await;
    let key = console.write_key.clone();
    for path in ["/sources/test", "/sources/test/settings", "/connections"] {
        let page = console.get(path).await;
        assert!(!page.ok().contains(&key), "{path} shows the write key");
    }
    let settings = console.get("/sources/test/settings").await;
    settings.has(&[&key[..4], "action=\"/sources/test/settings/reveal\""]);

    let revealed = console.post("/sources/test/settings/reveal", &[]).await;
    revealed.ok();
    revealed.has(&[
        &format!("id=\"write-key\" aria-labelledby=\"write-key-label\">{key}</code>"),
        "data-copy=\"write-key\"",
    ]);
    assert_eq!(revealed.cache_control, "no-store");

    // Rotate with the old key ending now.
    console
        .post("/sources/test/settings/rotate", &[("grace", "0s")])
        .await
        .redirects_to("/sources/test/settings?done=rotated-now");
    let current = console.store.current_write_key("test").await.unwrap();
    assert_ne!(current.expose(), key);
    let revealed = console.post("/sources/test/settings/reveal", &[]).await;
    revealed.has(&[current.expose()]);
    assert!(!revealed.text.contains(&key));
    // The default grace keeps the old key for a while.
    console
        .post("/sources/test/settings/rotate", &[("grace", "24h")])
        .await
        .redirects_to("/sources/test/settings?done=rotated");
    assert_eq!(
        console
            .store
            .source_by_name("test")
            .await
            .unwrap()
            .keys_in_grace,
        1
    );
    let bad = console
        .post("/sources/test/settings/rotate", &[("grace", "soon")])
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    bad.has(&["grace"]);
    console.stop().await;
}

#[tokio::test]
async fn the_catalog_search_filters_the_tiles() {
    let console = spawn().await;
    let page = console.get("/destinations/catalog?q=klav").await;
    page.ok();
    page.has(&[">Klaviyo</a>", "value=\"klav\""]);
    assert!(!page.text.contains(">Webhook</a>"));
    assert!(!page.text.contains(">Segment</a>"));
    let page = console.get("/destinations/catalog?q=WEBHOOK").await;
    page.has(&[">Webhook</a>"]);
    assert!(!page.text.contains(">Klaviyo</a>"));
    let none = console.get("/destinations/catalog?q=zzz").await;
    assert!(!none.text.contains("data-terms"));
    none.has(&["No destination matches"]);
    console.stop().await;
}

#[tokio::test]
async fn configure_klaviyo_saves_the_settings_and_creates_the_destination() {
    let console = spawn().await;
    let saved = console
        .post(
            "/destinations/new/klaviyo",
            &[
                ("source", "test"),
                ("listId", "L1"),
                ("confirmOptin", "on"),
                ("sendAnonymous", "on"),
                ("destination", "klaviyo-test"),
                ("endpoint", ""),
                ("api_key", ""),
            ],
        )
        .await;
    saved.redirects_to("/sources/test/settings?done=klaviyo");
    let settings = console.admin("/admin/v1/sources/test/settings").await;
    assert_eq!(settings["listId"], "L1");
    assert_eq!(settings["confirmOptin"], true);
    assert_eq!(settings["enforceEmail"], false);
    assert_eq!(settings["sendAnonymous"], true);
    assert_eq!(settings["useSegmentSpec"], false);
    assert_eq!(settings["enabled"], true);
    // No key: no destination.
    let list = console.admin("/admin/v1/destinations").await;
    assert_eq!(list["data"], json!([]));

    // A bad endpoint: shown at the field, the values kept, the key not echoed; nothing saved.
    let bad = console
        .post(
            "/destinations/new/klaviyo",
            &[
                ("source", "test"),
                ("listId", "L2"),
                ("enforceEmail", "on"),
                ("destination", "klaviyo-test"),
                ("endpoint", "not a url"),
                ("api_key", KLAVIYO_KEY),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    bad.has(&[
        "id=\"f-endpoint-error\"",
        "value=\"L2\"",
        "value=\"not a url\"",
    ]);
    assert!(!bad.text.contains(KLAVIYO_KEY));
    assert_eq!(
        console.admin("/admin/v1/sources/test/settings").await["listId"],
        "L1"
    );

    // With a private key: the klaviyo destination of the source.
    console
        .post(
            "/destinations/new/klaviyo",
            &[
                ("source", "test"),
                ("listId", "L2"),
                ("enforceEmail", "on"),
                ("confirmOptin", "on"),
                ("useSegmentSpec", "on"),
                ("destination", "klaviyo-test"),
                ("endpoint", "http://127.0.0.1:9"),
                ("api_key", KLAVIYO_KEY),
            ],
        )
        .await
        .redirects_to("/sources/test/settings?done=klaviyo");
    let destination = console.admin("/admin/v1/destinations/klaviyo-test").await;
    assert_eq!(destination["kind"], "klaviyo");
    assert_eq!(destination["sources"], json!(["test"]));
    assert_eq!(destination["endpoint"], "http://127.0.0.1:9");
    let settings = console.admin("/admin/v1/sources/test/settings").await;
    assert_eq!(settings["listId"], "L2");
    assert_eq!(settings["enforceEmail"], true);
    let page = console.get("/sources/test/settings?done=klaviyo").await;
    page.has(&["Klaviyo settings saved.", "L2"]);
    console.get("/connections").await.has(&["klaviyo-test"]);
    for path in ["/connections", "/deliveries", "/deliveries/klaviyo-test"] {
        assert!(
            !console.get(path).await.ok().contains(KLAVIYO_KEY),
            "{path}"
        );
    }

    // The name taken: shown at the destination name.
    let taken = console
        .post(
            "/destinations/new/klaviyo",
            &[
                ("source", "test"),
                ("destination", "klaviyo-test"),
                ("api_key", KLAVIYO_KEY),
            ],
        )
        .await;
    assert_eq!(taken.status, StatusCode::BAD_REQUEST);
    taken.has(&["id=\"f-destination-error\""]);
    console.stop().await;
}

#[tokio::test]
async fn webhook_and_segment_destinations_are_created_in_their_forms() {
    let console = spawn().await;
    let missing = console
        .post(
            "/destinations/new/webhook",
            &[("name", "hook"), ("url", "http://127.0.0.1:9/hook")],
        )
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    missing.has(&[
        "id=\"f-sources-error\"",
        &format!("value=\"{}\"", html("http://127.0.0.1:9/hook")),
    ]);
    console
        .post(
            "/destinations/new/webhook",
            &[
                ("name", "hook"),
                ("url", "http://127.0.0.1:9/hook"),
                ("secret", "whsec-console-4e8a0c2b6d1f"),
                ("sources", "test"),
            ],
        )
        .await
        .redirects_to("/deliveries/hook");
    let hook = console.admin("/admin/v1/destinations/hook").await;
    assert_eq!(hook["kind"], "webhook");
    assert_eq!(hook["sources"], json!(["test"]));

    let missing = console
        .post("/destinations/new/segment", &[("name", "back")])
        .await;
    missing.has(&["id=\"f-write_key-error\""]);
    console
        .post(
            "/destinations/new/segment",
            &[
                ("name", "back"),
                ("write_key", SEGMENT_KEY),
                ("endpoint", "http://127.0.0.1:9"),
                ("only_segment_profiles", "on"),
            ],
        )
        .await
        .redirects_to("/deliveries/back");
    let back = console.admin("/admin/v1/destinations/back").await;
    assert_eq!(back["kind"], "segment");
    assert_eq!(back["only_segment_profiles"], true);
    assert!(!console
        .get("/deliveries/back")
        .await
        .ok()
        .contains(SEGMENT_KEY));
    console.stop().await;
}

#[tokio::test]
async fn the_segment_integration_is_installed_in_steps_and_its_key_never_shown() {
    let console = spawn().await;
    let mut seen = Vec::new();
    let missing = console
        .post("/integrations/segment/install", &[("write_key", "")])
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    missing.has(&["id=\"f-write_key-error\""]);

    let connected = console
        .post(
            "/integrations/segment/install",
            &[
                ("write_key", SEGMENT_KEY),
                ("endpoint", "http://127.0.0.1:9"),
            ],
        )
        .await;
    connected.redirects_to("/integrations/segment/segment/setup");
    let destination = console.admin("/admin/v1/destinations/segment").await;
    assert_eq!(destination["kind"], "segment");
    assert_eq!(destination["state"], "paused");
    assert_eq!(destination["only_segment_profiles"], false);

    let setup = console.get("/integrations/segment/segment/setup").await;
    setup.ok();
    setup.has(&[
        ">Do not sync profiles that are not updated by the Klaviyo Destination</label>",
        "<button type=\"submit\">Complete setup</button>",
        &format!("••••{}", &SEGMENT_KEY[SEGMENT_KEY.len() - 4..]),
    ]);
    seen.push(setup.text);

    console
        .post(
            "/integrations/segment/segment/setup",
            &[("only_segment_profiles", "on")],
        )
        .await
        .redirects_to("/integrations");
    let destination = console.admin("/admin/v1/destinations/segment").await;
    assert_eq!(destination["state"], "active");
    assert_eq!(destination["only_segment_profiles"], true);

    let card = console.get("/integrations").await;
    card.ok();
    card.has(&[
        "<h2 id=\"installed-heading\">Installed</h2>",
        "Lag",
        "Recent deliveries",
        "active",
    ]);
    assert!(!card.text.contains(">Install</a>"), "{}", card.text);
    seen.push(card.text);
    // Installing again names the conflict at the key's field.
    let again = console
        .post(
            "/integrations/segment/install",
            &[("write_key", SEGMENT_KEY)],
        )
        .await;
    again.has(&["already installed", "role=\"alert\""]);
    seen.push(again.text);
    for path in [
        "/connections",
        "/deliveries",
        "/deliveries/segment",
        "/integrations/segment/install",
    ] {
        seen.push(console.get(path).await.text);
    }
    for text in seen {
        assert!(!text.contains(SEGMENT_KEY), "the write key is in a page");
    }
    console.stop().await;
}

/// A receiver that refuses every request for good (400) and counts them.
async fn refusing_receiver() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    let app = Router::new().route(
        "/hook",
        post(move || {
            let seen = Arc::clone(&counter);
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                (StatusCode::BAD_REQUEST, "never")
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{address}/hook"), seen)
}

#[tokio::test]
async fn deliveries_show_a_dead_letter_and_replay_sends_it_again() {
    let console = spawn().await;
    let (url, seen) = refusing_receiver().await;
    console
        .post(
            "/destinations/new/webhook",
            &[("name", "hook"), ("url", &url), ("sources", "test")],
        )
        .await
        .redirects_to("/deliveries/hook");
    console.track("poisoned-call-1").await;

    let deadline = Instant::now() + Duration::from_secs(60);
    let page = loop {
        let page = console.get("/deliveries/hook").await;
        // The page reads status, attempts and dead letters one after another: wait until
        // one view holds both the dead letter and the attempt that refused it.
        let whole = page.text.contains("<code>poisoned-call-1</code>")
            && page.text.contains("· dead_lettered ·");
        if whole || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    page.ok();
    page.has(&[
        "<h2 id=\"dead-letters\">Dead letters</h2>",
        "<code>poisoned-call-1</code>",
        "<button type=\"submit\">Replay</button>",
        "Recent deliveries",
        "POST ",
        "never",
    ]);
    let list = console.get("/deliveries").await;
    list.has(&[
        "href=\"/deliveries/hook\"",
        "Dead-lettered",
        "Circuit",
        "Retrying",
    ]);
    let before = seen.load(Ordering::SeqCst);
    assert!(before >= 1);

    console
        .post("/deliveries/hook/replay", &[])
        .await
        .redirects_to("/deliveries/hook?done=replay");
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.load(Ordering::SeqCst) <= before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.load(Ordering::SeqCst) > before,
        "the replay sent nothing"
    );

    console
        .post("/deliveries/hook/pause", &[])
        .await
        .redirects_to("/deliveries/hook?done=paused");
    assert_eq!(
        console.admin("/admin/v1/destinations/hook").await["state"],
        "paused"
    );
    console
        .get("/deliveries/hook?done=paused")
        .await
        .has(&["<button type=\"submit\" class=\"secondary\">Resume</button>"]);
    console
        .post("/deliveries/hook/resume", &[])
        .await
        .redirects_to("/deliveries/hook?done=resumed");
    assert_eq!(
        console.admin("/admin/v1/destinations/hook").await["state"],
        "active"
    );
    console.stop().await;
}

#[tokio::test]
async fn every_form_without_its_csrf_token_is_refused() {
    let console = spawn().await;
    console
        .post(
            "/destinations/new/webhook",
            &[
                ("name", "hook"),
                ("url", "http://127.0.0.1:9/hook"),
                ("sources", "test"),
            ],
        )
        .await
        .redirects_to("/deliveries/hook");
    console
        .post(
            "/integrations/segment/install",
            &[
                ("write_key", SEGMENT_KEY),
                ("endpoint", "http://127.0.0.1:9"),
            ],
        )
        .await
        .redirects_to("/integrations/segment/segment/setup");
    let forms: &[(&str, &[(&str, &str)])] = &[
        ("/sources", &[("name", "sneaky")]),
        ("/sources/test/settings/reveal", &[]),
        ("/sources/test/disable", &[]),
        ("/sources/test/settings/rotate", &[("grace", "0s")]),
        (
            "/destinations/new/klaviyo",
            &[("source", "test"), ("listId", "X")],
        ),
        (
            "/destinations/new/webhook",
            &[
                ("name", "sneaky"),
                ("url", "http://127.0.0.1:9/x"),
                ("sources", "test"),
            ],
        ),
        (
            "/destinations/new/segment",
            &[("name", "sneaky"), ("write_key", SEGMENT_KEY)],
        ),
        (
            "/integrations/segment/install",
            &[("write_key", SEGMENT_KEY)],
        ),
        (
            "/integrations/segment/segment/setup",
            &[("only_segment_profiles", "on")],
        ),
        ("/deliveries/hook/replay", &[]),
        ("/deliveries/hook/pause", &[]),
        ("/deliveries/hook/resume", &[]),
    ];
    let key = console.write_key.clone();
    for (path, fields) in forms {
        let missing = console.post_raw(path, fields).await;
        assert_eq!(missing.status, StatusCode::FORBIDDEN, "{path}");
        assert!(!missing.text.contains(&key), "{path}");
        let mut wrong = vec![("csrf", "not-the-token")];
        wrong.extend_from_slice(fields);
        let wrong = console.post_raw(path, &wrong).await;
        assert_eq!(wrong.status, StatusCode::FORBIDDEN, "{path}");
    }
    // Nothing changed.
    assert_eq!(
        console.store.source_by_name("test").await.unwrap().status,
        SourceStatus::Enabled
    );
    assert!(console.store.source_by_name("sneaky").await.is_err());
    assert_eq!(
        console
            .store
            .current_write_key("test")
            .await
            .unwrap()
            .expose(),
        key
    );
    assert_eq!(
        console.admin("/admin/v1/sources/test/settings").await["listId"],
        Value::Null
    );
    let destinations = console.admin("/admin/v1/destinations").await;
    assert_eq!(destinations["data"].as_array().unwrap().len(), 2);
    let segment = console.admin("/admin/v1/destinations/segment").await;
    assert_eq!(segment["state"], "paused");
    assert_eq!(
        console.admin("/admin/v1/destinations/hook").await["state"],
        "active"
    );
    console.stop().await;
}
