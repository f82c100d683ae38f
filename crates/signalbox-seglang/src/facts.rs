//! What evaluation needs to know about one profile, and nothing more.
//!
//! The engine implements [`ProfileFacts`] over its own profile and event storage; this crate
//! never sees a database. Tests implement it over a few vectors.

use std::ops::Bound;

use jiff::Timestamp;
use serde_json::Value;

use crate::ast::{EventFilter, PropertyPath};

/// One profile as segment conditions see it.
///
/// Metric methods receive the window and the event filters of one condition; an implementation
/// counts the profile's events of that metric whose time lies in `window` and whose properties
/// pass every filter ([`crate::event_matches`] applies the filters to a property map).
pub trait ProfileFacts {
    /// Number of matching events.
    fn metric_count(&self, metric_id: &str, window: TimeWindow, filters: &[EventFilter]) -> u64;

    /// Sum of the matching events' `value` (0 when there are none).
    fn metric_sum(&self, metric_id: &str, window: TimeWindow, filters: &[EventFilter]) -> f64;

    /// Times of the matching events, in any order.
    ///
    /// Only [`crate::Definition::next_change_after`] calls this, and only for conditions with a
    /// relative timeframe; the window it passes is narrowed to the events whose ageing can still
    /// change the answer (for `in-the-last 30 days`: events younger than 30 days, and future
    /// ones), so the answer stays small.
    fn metric_event_times(
        &self,
        metric_id: &str,
        window: TimeWindow,
        filters: &[EventFilter],
    ) -> Vec<Timestamp>;

    /// The value of a built-in field (`email`, `location['city']` …) or a custom property.
    /// `None` when unset; `Some(Value::Null)` is treated as unset too.
    fn property(&self, path: &PropertyPath) -> Option<&Value>;

    /// Whether the profile is in the list or segment.
    fn is_member(&self, group_id: &str) -> bool;

    /// When the profile joined the list or segment, if known. Conditions with a join timeframe
    /// never match a membership whose time is unknown.
    fn joined_at(&self, _group_id: &str) -> Option<Timestamp> {
        None
    }

    fn email_consent(&self) -> ConsentView;

    /// Defaults to "never subscribed, cannot receive" for engines without SMS.
    fn sms_consent(&self) -> ConsentView {
        ConsentView::default()
    }

    /// Defaults to "never subscribed, cannot receive" for engines without push.
    fn push_consent(&self) -> ConsentView {
        ConsentView::default()
    }
}

/// An interval of event times, each end open, closed or unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    pub start: Bound<Timestamp>,
    pub end: Bound<Timestamp>,
}

impl TimeWindow {
    /// Every instant.
    pub const ALL: TimeWindow = TimeWindow {
        start: Bound::Unbounded,
        end: Bound::Unbounded,
    };

    pub fn contains(&self, time: Timestamp) -> bool {
        let after_start = match self.start {
            Bound::Included(start) => time >= start,
            Bound::Excluded(start) => time > start,
            Bound::Unbounded => true,
        };
        let before_end = match self.end {
            Bound::Included(end) => time <= end,
            Bound::Excluded(end) => time < end,
            Bound::Unbounded => true,
        };
        after_start && before_end
    }
}

impl std::fmt::Display for TimeWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.start {
            Bound::Included(start) => write!(f, "[{start}")?,
            Bound::Excluded(start) => write!(f, "({start}")?,
            Bound::Unbounded => write!(f, "(-inf")?,
        }
        match self.end {
            Bound::Included(end) => write!(f, ", {end}]"),
            Bound::Excluded(end) => write!(f, ", {end})"),
            Bound::Unbounded => write!(f, ", +inf)"),
        }
    }
}

/// What evaluation takes besides the profile and the instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvalContext {
    /// When the flow started for this profile; needed by `flow-start` timeframes, which count
    /// no events without it.
    pub flow_start: Option<Timestamp>,
}

impl EvalContext {
    pub fn flow(flow_start: Timestamp) -> EvalContext {
        EvalContext {
            flow_start: Some(flow_start),
        }
    }
}

/// Marketing consent on one channel, as the profile store knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentView {
    pub status: ConsentStatus,
    /// False when globally suppressed (and, for SMS and push, when not subscribed).
    pub can_receive_marketing: bool,
    /// When the status last changed.
    pub status_date: Option<Timestamp>,
    /// How the status was set, in Klaviyo's lowercase spelling (`form`, `api`, `manual_import` …).
    pub method: Option<String>,
    /// The method's detail: form id, API key suffix, preference page URL, integration name …
    pub method_detail: Option<String>,
    pub custom_source: Option<String>,
    pub double_opt_in: Option<bool>,
    pub suppressions: Vec<Suppression>,
}

impl Default for ConsentView {
    fn default() -> ConsentView {
        ConsentView {
            status: ConsentStatus::NeverSubscribed,
            can_receive_marketing: false,
            status_date: None,
            method: None,
            method_detail: None,
            custom_source: None,
            double_opt_in: None,
            suppressions: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentStatus {
    Subscribed,
    Unsubscribed,
    NeverSubscribed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suppression {
    pub reason: SuppressionReason,
    pub timestamp: Timestamp,
}

/// Klaviyo's global suppression reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuppressionReason {
    HardBounce,
    InvalidEmail,
    SpamComplaint,
    Unsubscribe,
    UserSuppressed,
}
