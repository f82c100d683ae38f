//! Integration tests for signalbox-seglang: one binary, one module per area.

mod conditions;
mod cycles;
mod dependencies;
mod facts;
mod fuzz_seglang;
mod generators;
mod parse_errors;
mod roundtrip;
mod schedule;

use jiff::Timestamp;
use serde_json::Value;
use signalbox_seglang::{parse, parse_with, Definition, ParseOptions};

pub fn ts(text: &str) -> Timestamp {
    text.parse()
        .unwrap_or_else(|e| panic!("bad test timestamp {text}: {e}"))
}

/// Parses a definition that must be valid.
pub fn def(json: Value) -> Definition {
    parse(&json).unwrap_or_else(|errors| panic!("expected a valid definition, got {errors:#?}"))
}

/// Parses a flow profile filter that must be valid.
pub fn flow_def(json: Value) -> Definition {
    parse_with(&json, &ParseOptions::flow_profile_filter())
        .unwrap_or_else(|errors| panic!("expected a valid definition, got {errors:#?}"))
}

/// A definition of one group holding one condition.
pub fn single(condition: Value) -> Value {
    serde_json::json!({ "condition_groups": [{ "conditions": [condition] }] })
}
