//! Where the flows engine keeps its state: [`FlowStore`], spoken in the engine's terms, so a
//! backend other than the embedded `flows.db` ([`crate::SqliteFlowStore`]) can slot in.
//!
//! Methods block (the engine calls them on blocking threads). Errors are [`FlowsError`]; a
//! backend folds its own errors into [`FlowsError::Internal`].
//!
//! [`FlowsError`]: crate::FlowsError
//! [`FlowsError::Internal`]: crate::FlowsError::Internal

use jiff::Timestamp;

use crate::definition::FlowDefinition;
use crate::error::FlowsResult;
use crate::model::{FlowInfo, FlowPage, FlowStatus};

/// A new flow, its definition already checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFlow<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub status: FlowStatus,
    pub now: Timestamp,
}

/// The flows engine's storage, callable from any thread.
pub trait FlowStore: Send + Sync {
    /// Saves a new flow at version 1. In the same transaction, the definition's temporary
    /// action ids become real ones: decimal numbers from a counter, unique across flows.
    /// Returns the definition as saved.
    fn create_flow(
        &self,
        flow: &NewFlow<'_>,
        definition: FlowDefinition,
    ) -> FlowsResult<FlowDefinition>;

    /// The flow at its current version.
    fn flow(&self, id: &str) -> FlowsResult<Option<FlowInfo>>;

    /// Every flow, oldest first.
    fn flows(&self) -> FlowsResult<Vec<FlowInfo>>;

    /// At most `limit` (at least one) flows, the most recently changed first, after the flow
    /// changed at `after.0` with id `after.1`. `next` (`<updated_us>.<id>`) is set when more
    /// follow.
    fn flows_page(&self, after: Option<(i64, &str)>, limit: usize) -> FlowsResult<FlowPage>;
}
