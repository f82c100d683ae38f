//! What a definition reads, so a change to a profile re-evaluates only the segments it can move.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::ast::{Condition, ConsentFilter, Definition, SuppressionCheck, ValueFilter};

/// Everything evaluation of one definition can read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dependencies {
    /// Metric ids of `profile-metric` conditions: an event of any other metric cannot change
    /// the result.
    pub metrics: BTreeSet<String>,
    /// Property paths as Klaviyo spells them: `email`, `location['city']`,
    /// `properties['Plan']`.
    pub properties: BTreeSet<String>,
    /// Lists and segments named by membership conditions.
    pub groups: BTreeSet<String>,
    /// Whether a consent change can change the result.
    pub consent: bool,
    /// Whether the mere passing of time can change the result (relative windows, relative or
    /// anniversary dates, `flow-start`); see [`Definition::next_change_after`].
    pub time_dependent: bool,
}

impl Definition {
    pub fn dependencies(&self) -> Dependencies {
        let mut deps = Dependencies::default();
        for (_, condition) in self.conditions() {
            match condition {
                Condition::Metric(metric) => {
                    deps.metrics.insert(metric.metric_id.clone());
                    deps.time_dependent |= metric.timeframe.is_relative();
                }
                Condition::Property(property) => {
                    deps.properties.insert(property.property.to_wire());
                    if let ValueFilter::Date(date) = &property.filter {
                        deps.time_dependent |= date.is_relative();
                    }
                }
                Condition::Membership(membership) => {
                    deps.groups.extend(membership.group_ids.iter().cloned());
                    if let Some(timeframe) = &membership.timeframe {
                        deps.time_dependent |= timeframe.is_relative();
                    }
                }
                Condition::Consent(consent) => {
                    deps.consent = true;
                    for filter in &consent.filters {
                        deps.time_dependent |= match filter {
                            ConsentFilter::StatusDate(date)
                            | ConsentFilter::Suppression {
                                check: SuppressionCheck::Date(date),
                                ..
                            } => date.is_relative(),
                            _ => false,
                        };
                    }
                }
            }
        }
        deps
    }
}
