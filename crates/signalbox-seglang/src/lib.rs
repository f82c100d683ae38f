//! Segment conditions: Klaviyo's segment definition language, parsed, evaluated and scheduled.
//!
//! A definition (`{"condition_groups":[{"conditions":[…]}]}`, the `definition` of a segment and
//! the `profile_filter` of a flow) is parsed into a typed [`Definition`]; groups are ANDed and
//! the conditions inside a group ORed. The same tree answers four questions: is this profile in
//! ([`Definition::matches`], with reasons from [`Definition::explain`]), which changes can move
//! it ([`Definition::dependencies`]), when will time alone move it
//! ([`Definition::next_change_after`]), and which segments include each other in a loop
//! ([`find_cycles`]).
//!
//! ```
//! use serde_json::json;
//!
//! let definition = signalbox_seglang::parse(&json!({"condition_groups": [{"conditions": [
//!     {"type": "profile-metric", "metric_id": "PLACED_ORDER", "measurement": "count",
//!      "measurement_filter": {"type": "numeric", "operator": "greater-than", "value": 0},
//!      "timeframe_filter": {"type": "date", "operator": "in-the-last", "quantity": 30, "unit": "day"}}
//! ]}]}))
//! .expect("a valid definition");
//! let reads = definition.dependencies();
//! assert!(reads.metrics.contains("PLACED_ORDER") && reads.time_dependent);
//! ```
//!
//! # Layout
//! - [`ast`]: the tree. Closed enums; wire names beside the types.
//! - `parse/`: JSON → tree, every problem reported as a [`DefinitionError`] with a JSON pointer
//!   (`mod.rs` definition, groups, metric, property and membership conditions; `filters.rs`
//!   value and date filters; `consent.rs` marketing consent).
//! - `serialize.rs`: tree → JSON, the inverse of parsing.
//! - `facts.rs`: [`ProfileFacts`], the abstract view of one profile evaluation reads, and the
//!   types it returns ([`TimeWindow`], [`ConsentView`]).
//! - `eval.rs`: matching and explanations; value filters (also for event properties, via
//!   [`event_matches`]).
//! - `time.rs`: date filters against instants, anniversaries, change instants (all UTC).
//! - `schedule.rs`: the next instant at which time alone changes a result.
//! - `deps.rs`: what a definition reads.
//! - `cycles.rs`: membership cycles between segments.
//! - `examples/eval_timing.rs`: rough per-call costs (`cargo run --release --example …`).
//!
//! **Invariant:** no IO, no clock, no async: `now` is always an argument, and every answer is
//! a function of the definition, the facts and `now`.
//! **Invariant:** parsing never panics; a [`Definition`] exists only if it parsed, so
//! evaluation meets no unknown condition, operator or unit.

pub mod ast;
mod cycles;
mod deps;
mod error;
mod eval;
mod facts;
mod parse;
mod schedule;
mod serialize;
mod time;

pub use ast::{Condition, ConditionGroup, ConditionRef, Definition, EventFilter, PropertyPath};
pub use cycles::{find_cycles, Cycle, Hop};
pub use deps::Dependencies;
pub use error::{DefinitionError, ErrorCode};
pub use eval::{event_matches, ConditionResult, Observed};
pub use facts::{
    ConsentStatus, ConsentView, EvalContext, ProfileFacts, Suppression, SuppressionReason,
    TimeWindow,
};
pub use parse::{parse, parse_with, ParseOptions};
pub use schedule::MAX_PROBES;
