//! End-to-end tests: the built `signalbox` binary, driven as a process, with real Segment
//! client libraries and the CLI.

mod cli;
mod clients;
mod harness;
