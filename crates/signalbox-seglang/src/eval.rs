//! Evaluating a definition against one profile at one instant.

use std::borrow::Cow;
use std::fmt;

use jiff::Timestamp;
use serde_json::{Map, Value};

use crate::ast::{
    Channel, Condition, ConditionRef, ConsentCondition, ConsentFilter, Definition, EventFilter,
    ListItem, ListSetOperator, Measurement, MembershipCondition, MethodDetail, MetricCondition,
    StringOperator, SubscriptionFilter, SuppressionCheck, ValueFilter,
};
use crate::facts::{ConsentStatus, ConsentView, EvalContext, ProfileFacts, TimeWindow};
use crate::time::{date_matches, instant_of, interval};

/// How one condition fared: the answer to "why is this profile (not) in this segment?".
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionResult {
    pub at: ConditionRef,
    pub matched: bool,
    pub observed: Observed,
}

/// What evaluation looked at for one condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// The count or sum, and the window it was taken over (`None`: no window, e.g. `flow-start`
    /// outside a flow, so nothing was counted).
    Metric {
        measurement: Measurement,
        value: f64,
        window: Option<TimeWindow>,
    },
    /// The property's value, `None` when unset.
    Property(Option<Value>),
    /// Which of the condition's lists and segments the profile is in.
    Membership {
        member_of: Vec<String>,
    },
    Consent(ConsentView),
}

impl fmt::Display for ConditionResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.matched {
            "matched"
        } else {
            "did not match"
        };
        write!(f, "{} {verdict}: {}", self.at.pointer(), self.observed)
    }
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Observed::Metric {
                measurement,
                value,
                window,
            } => {
                write!(f, "{} = {value}", measurement.as_str())?;
                match window {
                    Some(window) => write!(f, " over {window}"),
                    None => write!(f, " (no window)"),
                }
            }
            Observed::Property(Some(value)) => write!(f, "value {value}"),
            Observed::Property(None) => write!(f, "not set"),
            Observed::Membership { member_of } if member_of.is_empty() => {
                write!(f, "member of none")
            }
            Observed::Membership { member_of } => write!(f, "member of {}", member_of.join(", ")),
            Observed::Consent(view) => write!(
                f,
                "consent {:?}, can receive marketing {}",
                view.status, view.can_receive_marketing
            ),
        }
    }
}

impl Definition {
    /// Whether the profile belongs at `now`: every group has a matching condition.
    pub fn matches(&self, facts: &dyn ProfileFacts, now: Timestamp, ctx: &EvalContext) -> bool {
        self.condition_groups.iter().all(|group| {
            group
                .conditions
                .iter()
                .any(|c| condition_matches(c, facts, now, ctx))
        })
    }

    /// Every condition's outcome and what it saw, in document order (no short-circuit).
    pub fn explain(
        &self,
        facts: &dyn ProfileFacts,
        now: Timestamp,
        ctx: &EvalContext,
    ) -> Vec<ConditionResult> {
        self.conditions()
            .map(|(at, condition)| {
                let (matched, observed) = condition_outcome(condition, facts, now, ctx);
                ConditionResult {
                    at,
                    matched,
                    observed,
                }
            })
            .collect()
    }
}

fn condition_matches(
    condition: &Condition,
    facts: &dyn ProfileFacts,
    now: Timestamp,
    ctx: &EvalContext,
) -> bool {
    match condition {
        Condition::Metric(metric) => metric_outcome(metric, facts, now, ctx).0,
        Condition::Property(property) => {
            let value = facts.property(&property.property);
            property.filter.matches_value(value, Some((now, ctx)))
        }
        Condition::Membership(membership) => membership_matches(membership, facts, now, ctx),
        Condition::Consent(consent) => {
            let view = consent_view(facts, consent.channel);
            consent_matches(consent, &view, now, ctx)
        }
    }
}

/// Like [`condition_matches`], and also what the condition looked at.
fn condition_outcome(
    condition: &Condition,
    facts: &dyn ProfileFacts,
    now: Timestamp,
    ctx: &EvalContext,
) -> (bool, Observed) {
    match condition {
        Condition::Metric(metric) => {
            let (matched, value, window) = metric_outcome(metric, facts, now, ctx);
            let observed = Observed::Metric {
                measurement: metric.measurement,
                value,
                window,
            };
            (matched, observed)
        }
        Condition::Property(property) => {
            let value = facts.property(&property.property);
            let matched = property.filter.matches_value(value, Some((now, ctx)));
            (matched, Observed::Property(value.cloned()))
        }
        Condition::Membership(membership) => {
            let matched = membership_matches(membership, facts, now, ctx);
            let member_of = membership
                .group_ids
                .iter()
                .filter(|id| facts.is_member(id))
                .cloned()
                .collect();
            (matched, Observed::Membership { member_of })
        }
        Condition::Consent(consent) => {
            let view = consent_view(facts, consent.channel);
            let matched = consent_matches(consent, &view, now, ctx);
            (matched, Observed::Consent(view))
        }
    }
}

fn metric_outcome(
    metric: &MetricCondition,
    facts: &dyn ProfileFacts,
    now: Timestamp,
    ctx: &EvalContext,
) -> (bool, f64, Option<TimeWindow>) {
    let window = interval(&metric.timeframe, now, ctx);
    let value = match window {
        None => 0.0,
        Some(window) => match metric.measurement {
            // Counts beyond 2^53 lose precision in f64; no profile gets there.
            Measurement::Count => {
                facts.metric_count(&metric.metric_id, window, &metric.metric_filters) as f64
            }
            Measurement::Sum => facts.metric_sum(&metric.metric_id, window, &metric.metric_filters),
        },
    };
    (metric.measurement_filter.matches(value), value, window)
}

fn membership_matches(
    membership: &MembershipCondition,
    facts: &dyn ProfileFacts,
    now: Timestamp,
    ctx: &EvalContext,
) -> bool {
    let in_group = |id: &String| {
        facts.is_member(id)
            && membership.timeframe.as_ref().is_none_or(|timeframe| {
                facts
                    .joined_at(id)
                    .is_some_and(|joined| date_matches(timeframe, joined, now, ctx))
            })
    };
    if membership.is_member {
        membership.group_ids.iter().any(in_group)
    } else {
        !membership.group_ids.iter().any(|id| facts.is_member(id))
    }
}

pub(crate) fn consent_view(facts: &dyn ProfileFacts, channel: Channel) -> ConsentView {
    match channel {
        Channel::Email => facts.email_consent(),
        Channel::Sms => facts.sms_consent(),
        Channel::Push => facts.push_consent(),
    }
}

fn consent_matches(
    consent: &ConsentCondition,
    view: &ConsentView,
    now: Timestamp,
    ctx: &EvalContext,
) -> bool {
    let status_ok = match consent.subscription {
        SubscriptionFilter::Any => true,
        SubscriptionFilter::Subscribed => view.status == ConsentStatus::Subscribed,
        SubscriptionFilter::Unsubscribed => view.status == ConsentStatus::Unsubscribed,
        SubscriptionFilter::NeverSubscribed => view.status == ConsentStatus::NeverSubscribed,
    };
    view.can_receive_marketing == consent.can_receive_marketing
        && status_ok
        && consent
            .filters
            .iter()
            .all(|filter| consent_filter_matches(filter, view, now, ctx))
}

fn consent_filter_matches(
    filter: &ConsentFilter,
    view: &ConsentView,
    now: Timestamp,
    ctx: &EvalContext,
) -> bool {
    match filter {
        ConsentFilter::DoubleOptIn(expected) => view.double_opt_in == Some(*expected),
        ConsentFilter::StatusDate(date) => view
            .status_date
            .is_some_and(|d| date_matches(date, d, now, ctx)),
        ConsentFilter::CustomSource(expected) => view
            .custom_source
            .as_deref()
            .is_some_and(|s| fold(s) == fold(expected)),
        ConsentFilter::Method { method, detail, .. } => {
            let method_ok = view
                .method
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case(method));
            let detail_ok = match detail {
                None => true,
                Some(MethodDetail::In(values)) => view
                    .method_detail
                    .as_deref()
                    .is_some_and(|d| values.iter().any(|v| v == d)),
                Some(MethodDetail::Equals(value)) => view.method_detail.as_deref() == Some(value),
            };
            method_ok && detail_ok
        }
        ConsentFilter::Suppression { field, check } => view
            .suppressions
            .iter()
            .filter(|s| s.reason == field.reason())
            .any(|s| match check {
                SuppressionCheck::IsSet => true,
                SuppressionCheck::Date(date) => date_matches(date, s.timestamp, now, ctx),
            }),
    }
}

/// Whether an event's properties pass every filter (`metric_filters` are ANDed).
pub fn event_matches(filters: &[EventFilter], properties: &Map<String, Value>) -> bool {
    filters.iter().all(|f| f.matches(properties))
}

impl EventFilter {
    /// Applies the filter to the event property it names (a top-level key).
    pub fn matches(&self, properties: &Map<String, Value>) -> bool {
        self.filter
            .matches_value(properties.get(&self.property), None)
    }
}

impl ValueFilter {
    /// Applies the filter to a profile property's value at `now`.
    pub fn matches_property(&self, value: Option<&Value>, now: Timestamp) -> bool {
        self.matches_value(value, Some((now, &EvalContext::default())))
    }

    /// `time` is needed by date filters only; without it they match nothing.
    fn matches_value(
        &self,
        value: Option<&Value>,
        time: Option<(Timestamp, &EvalContext)>,
    ) -> bool {
        match value.filter(|v| !v.is_null()) {
            Some(value) => self.matches_set_value(value, time),
            // Unset values are excluded from every filter but `not-set`, negative ones included.
            None => matches!(self, ValueFilter::Existence { is_set: false }),
        }
    }

    fn matches_set_value(&self, value: &Value, time: Option<(Timestamp, &EvalContext)>) -> bool {
        match self {
            ValueFilter::Existence { is_set } => *is_set,
            ValueFilter::String {
                operator,
                value: expected,
            } => text_of(value).is_some_and(|text| string_matches(*operator, &text, expected)),
            ValueFilter::StringIn { negated, values } => text_of(value).is_some_and(|text| {
                let text = fold(&text);
                values.iter().any(|v| fold(v) == text) != *negated
            }),
            ValueFilter::Numeric(filter) => number_of(value).is_some_and(|n| filter.matches(n)),
            ValueFilter::Boolean(expected) => bool_of(value) == Some(*expected),
            ValueFilter::Date(filter) => match (time, instant_of(value)) {
                (Some((now, ctx)), Some(date)) => date_matches(filter, date, now, ctx),
                _ => false,
            },
            ValueFilter::ListContains {
                negated,
                value: item,
            } => value
                .as_array()
                .is_some_and(|items| items.iter().any(|i| item_equals(i, item)) != *negated),
            ValueFilter::ListSet { operator, values } => value.as_array().is_some_and(|items| {
                let items: Vec<String> =
                    items.iter().filter_map(text_of).map(|t| fold(&t)).collect();
                let has = |v: &String| items.contains(&fold(v));
                match operator {
                    ListSetOperator::ContainsAll => values.iter().all(has),
                    ListSetOperator::ContainsAny => values.iter().any(has),
                    ListSetOperator::NotContainsAll => !values.iter().all(has),
                    ListSetOperator::NotContainsAny => !values.iter().any(has),
                }
            }),
            ValueFilter::ListSubstring {
                negated,
                value: needle,
            } => value.as_array().is_some_and(|items| {
                let needle = fold(needle);
                let found = items
                    .iter()
                    .filter_map(text_of)
                    .any(|t| fold(&t).contains(&needle));
                found != *negated
            }),
            ValueFilter::ListLength {
                operator,
                value: expected,
            } => value
                .as_array()
                .is_some_and(|items| operator.compare(items.len() as u64, *expected)),
        }
    }
}

fn string_matches(operator: StringOperator, text: &str, expected: &str) -> bool {
    let (text, expected) = (fold(text), fold(expected));
    match operator {
        StringOperator::Equals => text == expected,
        StringOperator::NotEquals => text != expected,
        StringOperator::Contains => text.contains(&expected),
        StringOperator::NotContains => !text.contains(&expected),
        StringOperator::StartsWith => text.starts_with(&expected),
        StringOperator::NotStartsWith => !text.starts_with(&expected),
        StringOperator::EndsWith => text.ends_with(&expected),
        StringOperator::NotEndsWith => !text.ends_with(&expected),
    }
}

/// Text comparisons ignore case.
fn fold(text: &str) -> String {
    text.to_lowercase()
}

/// Strings as they are; numbers and booleans in their JSON spelling (zip codes stored as
/// numbers still compare with `"10017"`).
fn text_of(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Owned(b.to_string())),
        _ => None,
    }
}

/// Numbers, and strings that hold one.
fn number_of(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    }
}

/// Booleans, and the strings `true` / `false` in any case.
fn bool_of(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

fn item_equals(item: &Value, expected: &ListItem) -> bool {
    match expected {
        ListItem::Null => item.is_null(),
        ListItem::Integer(n) => match item {
            Value::Number(m) => m.as_f64() == Some(*n as f64),
            other => text_of(other).is_some_and(|t| t == n.to_string()),
        },
        ListItem::String(s) => text_of(item).is_some_and(|t| fold(&t) == fold(s)),
    }
}
