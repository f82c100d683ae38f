//! The audience engine against a real log, engage pipeline and `engage.db`.

mod conditions;
mod helpers;
mod incremental;
mod live;
mod store_conformance;
