//! The `FlowStore` conformance suite on the SQLite backend (`flows.db`) and on PostgreSQL, and
//! what only PostgreSQL does: refusing a newer schema, and two nodes on one database claiming
//! due runs side by side.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde_json::json;
use signalbox_flows::flow_store::NewRun;
use signalbox_flows::{
    FlowDefinition, FlowStatus, FlowStore, FlowsError, NewFlow, PgFlowStore, SqliteFlowStore,
};
use signalbox_store::postgres::testing::TestDatabase;
use tempfile::TempDir;
use tokio::runtime::Runtime;

fn sqlite_backend() -> (Arc<dyn FlowStore>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteFlowStore::open(&dir.path().join("flows.db")).unwrap();
    (Arc::new(store), dir)
}

mod sqlite {
    signalbox_flows::flow_store_conformance!(crate::store_conformance::sqlite_backend());
}

/// What keeps a PostgreSQL backend alive: its database and the runtime its pool runs on.
struct PgGuard {
    _db: TestDatabase,
    _runtime: Runtime,
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A store on a new database, or `None` when no test server is configured.
fn pg_backend() -> Option<(Arc<dyn FlowStore>, PgGuard)> {
    let runtime = runtime();
    let (db, store) = runtime.block_on(async {
        let db = TestDatabase::create().await?;
        let store = PgFlowStore::connect(db.url(), 4).await.unwrap();
        Some((db, store))
    })?;
    Some((
        Arc::new(store),
        PgGuard {
            _db: db,
            _runtime: runtime,
        },
    ))
}

mod postgres {
    signalbox_flows::flow_store_conformance!(match crate::store_conformance::pg_backend() {
        Some(backend) => backend,
        None => return,
    });
}

#[tokio::test]
async fn a_newer_schema_on_postgres_is_refused() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    drop(PgFlowStore::connect(db.url(), 1).await.unwrap());
    // Connecting again to the current schema is fine.
    drop(PgFlowStore::connect(db.url(), 1).await.unwrap());
    let (client, connection) = tokio_postgres::connect(db.url().expose(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    client
        .execute(
            "UPDATE signalbox_schema SET version = 99 WHERE component = 'flows'",
            &[],
        )
        .await
        .unwrap();
    drop(client);
    let _ = driver.await;
    let Err(err) = PgFlowStore::connect(db.url(), 1).await else {
        panic!("a newer schema was accepted")
    };
    assert_eq!(
        err,
        FlowsError::Internal(
            "flows database schema version 99 is newer than this build knows (2)".into()
        )
    );
}

#[test]
fn two_nodes_on_one_database_claim_each_due_run_once() {
    const RUNS: i64 = 120;
    let runtime = runtime();
    let Some(db) = runtime.block_on(TestDatabase::create()) else {
        return;
    };
    let nodes: Vec<Arc<dyn FlowStore>> = (0..2)
        .map(|_| {
            let store = runtime.block_on(PgFlowStore::connect(db.url(), 2)).unwrap();
            Arc::new(store) as Arc<dyn FlowStore>
        })
        .collect();
    let definition = FlowDefinition::parse(&json!({
        "triggers": [{"type": "metric", "id": "M1"}],
        "entry_action_id": "wait",
        "actions": [{"temporary_id": "wait", "type": "time-delay",
                     "data": {"unit": "hours", "value": 4}, "links": {"next": null}}]
    }))
    .unwrap();
    let now = jiff::Timestamp::from_second(1_790_000_000).unwrap();
    nodes[0]
        .create_flow(
            &NewFlow {
                id: "F1",
                name: "Flow",
                status: FlowStatus::Live,
                now,
            },
            definition,
        )
        .unwrap();
    let due_us = now.as_microsecond();
    nodes[0]
        .transaction(&mut |tx| {
            for profile in 0..RUNS {
                tx.insert_run(&NewRun {
                    flow_id: "F1",
                    profile_pk: profile,
                    profile_id: &format!("p{profile}"),
                    origin: format!("event:e{profile}"),
                    trigger_event_id: None,
                    trigger_properties: "{}",
                    started_us: due_us,
                    entry_action: "wait",
                    wake_us: due_us,
                    entered_us: due_us,
                })?;
            }
            Ok(())
        })
        .unwrap();

    // Each node claims a few due runs at a time and moves them on, holding its batch a
    // moment so that the two overlap, until it finds none left to claim.
    let start = Arc::new(Barrier::new(nodes.len()));
    let workers: Vec<_> = nodes
        .iter()
        .map(|node| {
            let node = Arc::clone(node);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                let mut claimed = Vec::new();
                loop {
                    let mut batch = Vec::new();
                    node.transaction(&mut |tx| {
                        batch = tx.claim_due(due_us, 4)?.into_iter().map(|r| r.id).collect();
                        for &id in &batch {
                            tx.move_run(id, Some("done"), None, None)?;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                        Ok(())
                    })
                    .unwrap();
                    if batch.is_empty() {
                        return claimed;
                    }
                    claimed.extend(batch);
                }
            })
        })
        .collect();
    let claimed: Vec<Vec<i64>> = workers.into_iter().map(|w| w.join().unwrap()).collect();

    assert!(
        claimed.iter().all(|ids| !ids.is_empty()),
        "both nodes took part: {claimed:?}"
    );
    let all: Vec<i64> = claimed.concat();
    let distinct: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), distinct.len(), "a run was claimed twice");
    assert_eq!(distinct.len() as i64, RUNS, "every due run was claimed");
    assert_eq!(nodes[1].next_wake().unwrap(), None);
    drop(nodes);
    drop(db);
}
