//! The PostgreSQL backend of engage: the derived state in tables beside the other components'
//! in one database (`schema.rs`).

pub(crate) mod queries;
pub(crate) mod reader;
#[allow(dead_code)]
pub(crate) mod schema;
