//! Engage on PostgreSQL, written by the same applier: started on a database, it answers as
//! `engage.db` rebuilt from the same log does; a rebuild from the log yields, table by table,
//! the rows the pipeline wrote into `engage.db`. Skipped without a test server.

use std::sync::Arc;

use signalbox_engage::{rebuild, rebuild_postgres, Engage, EngageError};
use signalbox_store::postgres::testing::TestDatabase;

use crate::helpers::TestApp;
use crate::pipeline::{first_difference, mixed_workload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engage_started_on_postgres_holds_what_engage_db_rebuilt_from_its_log_holds() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let url = db.url().clone();
    let mut app = TestApp::start_with(|config| config.database = Some(url)).await;
    mixed_workload(&mut app, 40).await;
    app.settle().await;
    let on_postgres = app.engage.dump().await.unwrap();
    assert!(
        on_postgres
            .lines()
            .filter(|l| l.starts_with("events "))
            .count()
            > 100
    );
    // A second pipeline on the same database is refused while the first applies.
    let second = Engage::start(
        Arc::clone(&app.store),
        Arc::new(app.clock.clone()),
        app.config.clone(),
    )
    .await;
    assert!(matches!(second, Err(EngageError::Conflict { .. })));
    app.engage.shutdown().await;

    rebuild(
        Arc::clone(&app.store),
        &app.config.path,
        app.config.hold_window,
        app.clock_now(),
        |_| {},
    )
    .await
    .unwrap();
    let on_sqlite = Engage::open_readonly(&app.config.path)
        .await
        .unwrap()
        .dump()
        .await
        .unwrap();
    assert_eq!(first_difference(&on_sqlite, &on_postgres), None);

    // A restart on the database goes on from its checkpoint.
    app.restart().await;
    app.identify(serde_json::json!({"userId": "late", "traits": {"email": "late@example.com"}}))
        .await;
    app.settle().await;
    assert_eq!(
        app.by_email("late@example.com")
            .await
            .external_id
            .as_deref(),
        Some("late")
    );
    let readonly = Engage::open_readonly_postgres(db.url()).await.unwrap();
    // Read-only, the checkpoint is read from the database: off the runtime's threads.
    let applied = tokio::task::spawn_blocking(move || readonly.applied_seq())
        .await
        .unwrap();
    assert_eq!(applied, app.store.last_seq().await.unwrap());
}

/// Every table of the derived state, and the columns compared (a `REAL` compared in millionths).
/// `profiles.changed_seq` is left out: it is the checkpoint of the batch that changed the row,
/// and the pipeline's batches depend on timing.
const TABLES: &[(&str, &[&str])] = &[
    ("meta", &["key", "value"]),
    ("counters", &["name", "value"]),
    (
        "profiles",
        &[
            "pk",
            "id",
            "email",
            "phone_number",
            "external_id",
            "anonymous_id",
            "created_us",
            "updated_us",
            "data",
            "from_segment",
            "segment_user_id",
        ],
    ),
    ("identifiers", &["kind", "value", "profile_pk"]),
    ("redirects", &["from_pk", "to_pk", "seq"]),
    (
        "profile_links",
        &[
            "profile_pk",
            "seq",
            "n",
            "action",
            "kind",
            "value",
            "detail",
            "at_us",
        ],
    ),
    (
        "profile_origins",
        &[
            "profile_pk",
            "integration",
            "source",
            "external_id",
            "anonymous_id",
            "first_seq",
            "last_seq",
        ],
    ),
    (
        "list_members",
        &[
            "list_id",
            "profile_pk",
            "confirm_optin",
            "seq",
            "status",
            "joined_us",
        ],
    ),
    (
        "metrics",
        &[
            "pk",
            "id",
            "name",
            "integration",
            "category",
            "created_us",
            "updated_us",
        ],
    ),
    (
        "events",
        &[
            "pk",
            "metric_pk",
            "profile_pk",
            "time_us",
            "value",
            "currency",
            "unique_id",
            "unique_hash",
            "properties",
        ],
    ),
    (
        "held_calls",
        &[
            "seq",
            "source_id",
            "kind",
            "received_us",
            "expires_us",
            "reason",
            "status",
            "user_id",
            "anonymous_id",
            "settled_seq",
            "payload",
            "alias_of",
        ],
    ),
    ("problems", &["seq", "n", "profile_pk", "message"]),
    ("api_results", &["seq", "result"]),
    (
        "outbox",
        &[
            "seq",
            "n",
            "at_us",
            "profile_id",
            "email",
            "user_id",
            "anonymous_id",
            "from_segment",
            "change",
        ],
    ),
    (
        "email_consent",
        &[
            "profile_pk",
            "status",
            "status_us",
            "method",
            "method_detail",
            "custom_source",
            "double_opt_in",
            "suppressions",
        ],
    ),
];

/// A table's rows as sorted lines, in SQL that reads alike on both backends.
fn select(table: &str, columns: &[&str], postgres: bool) -> String {
    let rendered: Vec<String> = columns
        .iter()
        .map(|column| match (*column, postgres) {
            ("value", true) if table == "events" => {
                "COALESCE(ROUND(value * 1000000)::BIGINT::TEXT, '~')".to_owned()
            }
            ("value", false) if table == "events" => {
                "COALESCE(CAST(CAST(ROUND(value * 1000000) AS INTEGER) AS TEXT), '~')".to_owned()
            }
            (column, true) => format!("COALESCE({column}::TEXT, '~')"),
            (column, false) => format!("COALESCE(CAST({column} AS TEXT), '~')"),
        })
        .collect();
    format!("SELECT {} FROM {table}", rendered.join(", "))
}

fn sqlite_rows(conn: &rusqlite::Connection, table: &str, columns: &[&str]) -> Vec<String> {
    let mut stmt = conn.prepare(&select(table, columns, false)).unwrap();
    let mut rows: Vec<String> = stmt
        .query_map([], |r| {
            (0..columns.len())
                .map(|i| r.get::<_, String>(i))
                .collect::<Result<Vec<_>, _>>()
                .map(|cells| cells.join("|"))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.sort();
    rows
}

async fn postgres_rows(
    client: &tokio_postgres::Client,
    table: &str,
    columns: &[&str],
) -> Vec<String> {
    let mut rows: Vec<String> = client
        .query(&select(table, columns, true), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (0..columns.len())
                .map(|i| r.get::<_, String>(i))
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_on_postgres_writes_the_rows_the_pipeline_wrote_into_engage_db() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let mut app = TestApp::start().await;
    mixed_workload(&mut app, 40).await;
    app.settle().await;
    app.engage.shutdown().await;
    let now = app.clock_now();

    // Twice: the second rebuild starts from the first one's state and clears it.
    for _ in 0..2 {
        let done = rebuild_postgres(
            Arc::clone(&app.store),
            db.url(),
            app.config.hold_window,
            now,
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(done.applied_seq, app.store.last_seq().await.unwrap());
    }

    let sqlite = rusqlite::Connection::open(&app.config.path).unwrap();
    let (client, connection) = tokio_postgres::connect(db.url().expose(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut compared = 0;
    for (table, columns) in TABLES {
        let expected = sqlite_rows(&sqlite, table, columns);
        let found = postgres_rows(&client, table, columns).await;
        let first_difference = expected
            .iter()
            .zip(&found)
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("\n  engage.db:  {a}\n  PostgreSQL: {b}"));
        assert!(
            expected.len() == found.len() && first_difference.is_none(),
            "{table}: {} rows in engage.db, {} on PostgreSQL{}",
            expected.len(),
            found.len(),
            first_difference.unwrap_or_default()
        );
        compared += expected.len();
    }
    assert!(compared > 300, "the workload wrote {compared} rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_on_postgres_refuses_while_another_applies() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let mut app = TestApp::start().await;
    mixed_workload(&mut app, 2).await;
    let url = db.url().clone();
    let store = Arc::clone(&app.store);
    let hold_window = app.config.hold_window;
    let now = app.clock_now();
    // The first rebuild holds the applier's lock while it runs; a second one waits for
    // nothing and is refused.
    let (first_started, started) = tokio::sync::oneshot::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let mut first_started = Some(first_started);
    let first = tokio::spawn({
        let url = url.clone();
        let store = Arc::clone(&store);
        async move {
            rebuild_postgres(store, &url, hold_window, now, move |_| {
                if let Some(started) = first_started.take() {
                    let _ = started.send(());
                    let _ = released.recv();
                }
            })
            .await
        }
    });
    started.await.unwrap();
    let err = rebuild_postgres(store, &url, hold_window, now, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, EngageError::Conflict { .. }), "{err:?}");
    release.send(()).unwrap();
    first.await.unwrap().unwrap();
}
