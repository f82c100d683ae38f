//! A flow's live figures: the runs `active` now (kept on the flow, action `''`), the runs
//! `waiting` at each delay (kept on the delay's action) and the messages `pending` review (kept
//! on the message's action). They go up and down as runs and held messages change, so both
//! stores keep them in the counters table (`stats`, `flows_stats`) next to the counters that
//! only grow, and a flow's figures are read with its counters in one query, never counted.
//!
//! A write transaction adds what each statement changed to its [`FigureDeltas`] (the store
//! knows a row's state before the change from the run it claimed, from the statement's
//! `RETURNING`, or from a read of the row) and writes the sums once, just before it commits:
//! one `value = value + …` per changed figure, not one per changed row.
//!
//! **Invariant:** every statement that inserts a run or a held message, or changes a run's
//! `status` or `armed` or a held message's `status`, tells the transaction's
//! [`FigureDeltas`]; the stores' schemas recount the figures once when they first keep them.

use std::collections::HashMap;

use crate::model::FlowStats;

/// The figure of a flow's active runs (action `''`).
pub(crate) const ACTIVE: &str = "active";
/// The figure of the active runs armed at a delay (per delay action).
pub(crate) const WAITING: &str = "waiting";
/// The figure of the messages pending review (per message action).
pub(crate) const PENDING: &str = "pending";

/// How a run counts in its flow's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunFigure {
    pub flow_id: String,
    /// Its status is `active`.
    pub active: bool,
    /// The delay whose wake-up is set.
    pub armed: Option<String>,
}

/// The figures, in the order of [`FigureDeltas`]' values.
const NAMES: [&str; 3] = [ACTIVE, WAITING, PENDING];

/// The changes of the live figures in one transaction, by flow, action and figure, undone
/// with a savepoint rolled back.
///
/// Each (flow, action) met gets a slot the first time, so that adding to it later allocates
/// nothing; a change made inside a savepoint is also written to a journal, which a rollback
/// plays backwards.
#[derive(Debug, Default)]
pub(crate) struct FigureDeltas {
    /// The slot of each (flow, action).
    slots: HashMap<String, HashMap<String, usize>>,
    /// Per slot: its flow and action, and the changes of `active`, `waiting`, `pending`.
    values: Vec<(String, String, [i64; 3])>,
    /// The changes since the outermost open savepoint: (slot, figure, by).
    journal: Vec<(usize, usize, i64)>,
    /// Where each open savepoint starts in `journal`, the innermost last.
    marks: Vec<usize>,
}

impl FigureDeltas {
    fn slot(&mut self, flow_id: &str, action_id: &str) -> usize {
        if let Some(slot) = self
            .slots
            .get(flow_id)
            .and_then(|actions| actions.get(action_id))
        {
            return *slot;
        }
        let slot = self.values.len();
        self.values
            .push((flow_id.to_owned(), action_id.to_owned(), [0; 3]));
        self.slots
            .entry(flow_id.to_owned())
            .or_default()
            .insert(action_id.to_owned(), slot);
        slot
    }

    /// Adds `by` to figure `figure` (an index of [`NAMES`]).
    fn add(&mut self, flow_id: &str, action_id: &str, figure: usize, by: i64) {
        if by == 0 {
            return;
        }
        let slot = self.slot(flow_id, action_id);
        self.values[slot].2[figure] += by;
        if !self.marks.is_empty() {
            self.journal.push((slot, figure, by));
        }
    }

    /// `by` runs more (or, negative, fewer) counted as `active`, `armed` at a delay.
    pub(crate) fn run(&mut self, flow_id: &str, active: bool, armed: Option<&str>, by: i64) {
        if !active {
            return;
        }
        self.add(flow_id, "", 0, by);
        if let Some(armed) = armed {
            self.add(flow_id, armed, 1, by);
        }
    }

    /// A run that was `old` and is now active as `active` says, armed at `armed`.
    pub(crate) fn run_changed(&mut self, old: &RunFigure, active: bool, armed: Option<&str>) {
        if old.active == active && old.armed.as_deref() == armed {
            return;
        }
        self.run(&old.flow_id, old.active, old.armed.as_deref(), -1);
        self.run(&old.flow_id, active, armed, 1);
    }

    /// `by` messages of the action more (or, negative, fewer) pending review.
    pub(crate) fn pending(&mut self, flow_id: &str, action_id: &str, by: i64) {
        self.add(flow_id, action_id, 2, by);
    }

    /// A held message whose status changed from `was_pending` to `is_pending`.
    pub(crate) fn held_changed(
        &mut self,
        flow_id: &str,
        action_id: &str,
        was_pending: bool,
        is_pending: bool,
    ) {
        self.pending(
            flow_id,
            action_id,
            i64::from(is_pending) - i64::from(was_pending),
        );
    }

    /// A savepoint opened: the changes after it can be undone apart.
    pub(crate) fn savepoint(&mut self) {
        self.marks.push(self.journal.len());
    }

    /// The last savepoint kept: its changes join the level around it.
    pub(crate) fn release_savepoint(&mut self) {
        self.marks.pop();
        if self.marks.is_empty() {
            self.journal.clear();
        }
    }

    /// The last savepoint rolled back: its changes are undone.
    pub(crate) fn rollback_to_savepoint(&mut self) {
        let Some(mark) = self.marks.pop() else {
            return;
        };
        for (slot, figure, by) in self.journal.drain(mark..) {
            self.values[slot].2[figure] -= by;
        }
    }

    /// Every change not zero, as `(flow, action, figure, by)`, in key order (writers that
    /// update the same rows in the same order cannot deadlock), and none left.
    pub(crate) fn take(&mut self) -> Vec<(String, String, &'static str, i64)> {
        let values = std::mem::take(self).values;
        let mut out = Vec::new();
        for (flow_id, action_id, changes) in values {
            for (name, by) in NAMES.into_iter().zip(changes) {
                if by != 0 {
                    out.push((flow_id.clone(), action_id.clone(), name, by));
                }
            }
        }
        out.sort_unstable();
        out
    }
}

/// Whether `name` is a live figure rather than a counter that only grows.
fn is_figure(name: &str) -> bool {
    NAMES.contains(&name)
}

/// Adds one row of the counters table to `stats`: a counter, or a live figure (an action's
/// figure shows when not zero, and adds to the flow's).
pub(crate) fn add_row(
    stats: &mut FlowStats,
    action: String,
    name: String,
    value: i64,
    amount: f64,
) {
    if is_figure(&name) && !action.is_empty() {
        if value == 0 {
            return;
        }
        *stats.flow.counts.entry(name.clone()).or_default() += value;
    }
    let counters = if action.is_empty() {
        &mut stats.flow
    } else {
        stats.actions.entry(action).or_default()
    };
    if name == "converted" {
        counters.revenue += amount;
    }
    *counters.counts.entry(name).or_default() += value;
}

/// Sets the flow's live figures none of its rows gave (zero).
pub(crate) fn finish(stats: &mut FlowStats) {
    for name in NAMES {
        stats.flow.counts.entry(name.to_owned()).or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rolled_back_savepoint_takes_its_changes_and_a_released_one_keeps_them() {
        let mut deltas = FigureDeltas::default();
        deltas.run("F", true, Some("d1"), 1);
        deltas.savepoint();
        deltas.pending("F", "m1", 1);
        deltas.rollback_to_savepoint();
        deltas.savepoint();
        deltas.run_changed(
            &RunFigure {
                flow_id: "F".into(),
                active: true,
                armed: Some("d1".into()),
            },
            true,
            Some("d2"),
        );
        deltas.release_savepoint();
        assert_eq!(
            deltas.take(),
            [
                ("F".to_owned(), String::new(), ACTIVE, 1),
                ("F".to_owned(), "d2".to_owned(), WAITING, 1),
            ]
        );
        assert!(deltas.take().is_empty());
    }

    #[test]
    fn nested_savepoints_undo_their_own_changes() {
        let mut deltas = FigureDeltas::default();
        deltas.savepoint();
        deltas.pending("F", "m1", 1);
        deltas.savepoint();
        deltas.pending("F", "m1", 1);
        deltas.pending("F", "m2", 1);
        deltas.rollback_to_savepoint();
        deltas.release_savepoint();
        // Kept by the outer savepoint's release; a later savepoint released inside one
        // rolled back goes with it.
        deltas.savepoint();
        deltas.savepoint();
        deltas.run("F", true, None, 1);
        deltas.release_savepoint();
        deltas.rollback_to_savepoint();
        assert_eq!(
            deltas.take(),
            [("F".to_owned(), "m1".to_owned(), PENDING, 1)]
        );
    }

    #[test]
    fn an_action_figure_shows_when_not_zero_and_adds_to_the_flow() {
        let mut stats = FlowStats::default();
        add_row(&mut stats, "d1".into(), WAITING.into(), 2, 0.0);
        add_row(&mut stats, "d2".into(), WAITING.into(), 0, 0.0);
        add_row(&mut stats, "m1".into(), PENDING.into(), 1, 0.0);
        add_row(&mut stats, String::new(), ACTIVE.into(), 3, 0.0);
        add_row(&mut stats, "e1".into(), "converted".into(), 1, 9.5);
        finish(&mut stats);
        assert_eq!(stats.flow.get(ACTIVE), 3);
        assert_eq!(stats.flow.get(WAITING), 2);
        assert_eq!(stats.flow.get(PENDING), 1);
        assert_eq!(stats.action("d1").counts.get(WAITING), Some(&2));
        assert!(!stats.actions.contains_key("d2"));
        assert_eq!(stats.action("e1").revenue, 9.5);
    }
}
