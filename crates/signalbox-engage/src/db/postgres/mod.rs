//! The PostgreSQL backend of engage: the derived state in tables beside the other components'
//! in one database (`schema.rs`), written by the applier through `apply.rs`.

pub(crate) mod apply;
pub(crate) mod queries;
pub(crate) mod reader;
pub(crate) mod schema;
