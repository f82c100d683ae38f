//! The delivery engine against real parts: the SQLite call log, `sync.db`, the guarded
//! outbound client, and local receivers on loopback that record what they get and can be
//! told to fail.

mod helpers;
mod kinds;
mod manage;
mod metrics;
mod secrets;
mod webhook;
