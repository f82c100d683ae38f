//! The `FlowStore` conformance suite on the SQLite backend (`flows.db`).

use std::sync::Arc;

use signalbox_flows::{FlowStore, SqliteFlowStore};
use tempfile::TempDir;

fn sqlite_backend() -> (Arc<dyn FlowStore>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteFlowStore::open(&dir.path().join("flows.db")).unwrap();
    (Arc::new(store), dir)
}

mod sqlite {
    signalbox_flows::flow_store_conformance!(crate::store_conformance::sqlite_backend());
}
