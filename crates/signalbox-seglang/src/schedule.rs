//! When will time alone change a profile's membership?
//!
//! A result can change without any new data only through relative dates: an event ageing out
//! of `in-the-last`, a future-dated event arriving in its window, a date property crossing a
//! relative boundary, an anniversary starting or ending, a join or consent date ageing.
//! [`Definition::next_change_after`] lists every instant where one condition's answer can flip
//! (from the instants it reads through [`ProfileFacts`]), then re-evaluates the whole definition
//! at those instants in order and returns the first where the result differs from now.
//!
//! Input it reads:
//! - per `profile-metric` condition with a relative timeframe: the times of the matching events
//!   from [`ProfileFacts::metric_event_times`], narrowed to those whose ageing is still ahead;
//! - per `profile-property` condition with a relative or anniversary date filter: the property;
//! - per membership condition with a relative join timeframe: [`ProfileFacts::joined_at`];
//! - per consent condition with relative date filters: the consent view's dates.
//!
//! It assumes no new events or profile changes arrive in between (those trigger their own
//! re-evaluation), and membership of other segments is taken as fixed: when a segment this one
//! depends on changes, the engine re-evaluates dependents.

use std::collections::BTreeSet;
use std::ops::Bound;

use jiff::Timestamp;

use crate::ast::{Condition, ConsentFilter, DateFilter, Definition, SuppressionCheck, ValueFilter};
use crate::eval::consent_view;
use crate::facts::{EvalContext, ProfileFacts, TimeWindow};
use crate::time::{change_points, instant_of, is_periodic, shift, utc};

/// Re-evaluations one call may spend before it hands back an earlier instant to resume from.
pub const MAX_PROBES: usize = 4_096;

/// How far ahead yearly (anniversary) changes are enumerated.
const PERIODIC_YEARS: i16 = 10;

/// Yearly changes are enumerated for this many years past the last one-off change, enough
/// for every combination of anniversaries (leap years repeat every four).
const PERIODIC_SLACK_YEARS: i16 = 5;

impl Definition {
    /// The earliest instant after `now` at which the result of [`Definition::matches`] will
    /// differ from its result at `now`, if nothing but time changes; `None` if it never will.
    ///
    /// The answer is never later than the true change. It may be earlier when the search is
    /// cut short (after [`MAX_PROBES`] re-evaluations, or yearly changes beyond ten years);
    /// re-evaluating at that instant and asking again is then always correct.
    pub fn next_change_after(
        &self,
        facts: &dyn ProfileFacts,
        now: Timestamp,
        ctx: &EvalContext,
    ) -> Option<Timestamp> {
        let sources = self.date_sources(facts, now, ctx);
        if sources.is_empty() {
            return None;
        }
        let this_year = utc(now).year();
        let mut raw = Vec::new();
        for (filter, date) in sources.iter().filter(|(f, _)| !is_periodic(f)) {
            change_points(filter, *date, ctx, this_year..=this_year, &mut raw);
        }
        let mut points: BTreeSet<Timestamp> = raw.drain(..).filter(|p| *p > now).collect();

        let mut limit = None;
        if sources.iter().any(|(f, _)| is_periodic(f)) {
            let last_one_off = points.last().copied().unwrap_or(now);
            let wanted = utc(last_one_off)
                .year()
                .saturating_add(PERIODIC_SLACK_YEARS);
            let cap = this_year.saturating_add(PERIODIC_YEARS);
            let end_year = wanted.min(cap);
            if wanted > cap {
                // Enumerated yearly changes stop here; past it the list would be incomplete.
                limit = jiff::civil::Date::new(cap.saturating_add(1), 1, 1)
                    .ok()
                    .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
                    .map(|z| z.timestamp())
                    .or(Some(Timestamp::MAX));
            }
            let years = this_year.saturating_sub(1)..=end_year;
            for (filter, date) in sources.iter().filter(|(f, _)| is_periodic(f)) {
                change_points(filter, *date, ctx, years.clone(), &mut raw);
            }
            points.extend(raw.into_iter().filter(|p| *p > now));
        }
        if let Some(limit) = limit {
            points.retain(|p| *p < limit);
        }

        let current = self.matches(facts, now, ctx);
        for (probes, point) in points.into_iter().enumerate() {
            if probes >= MAX_PROBES || self.matches(facts, point, ctx) != current {
                return Some(point);
            }
        }
        limit
    }

    /// Every (filter, instant) pair whose answer can change with time.
    fn date_sources(
        &self,
        facts: &dyn ProfileFacts,
        now: Timestamp,
        ctx: &EvalContext,
    ) -> Vec<(&DateFilter, Timestamp)> {
        let mut sources = Vec::new();
        for (_, condition) in self.conditions() {
            match condition {
                Condition::Metric(metric) if metric.timeframe.is_relative() => {
                    let Some(window) = pending_events(&metric.timeframe, now, ctx) else {
                        continue;
                    };
                    let times =
                        facts.metric_event_times(&metric.metric_id, window, &metric.metric_filters);
                    sources.extend(times.into_iter().map(|t| (&metric.timeframe, t)));
                }
                Condition::Property(property) => {
                    if let ValueFilter::Date(filter) = &property.filter {
                        let date = facts.property(&property.property).and_then(instant_of);
                        if let (true, Some(date)) = (filter.is_relative(), date) {
                            sources.push((filter, date));
                        }
                    }
                }
                Condition::Membership(membership) if membership.is_member => {
                    let Some(filter) = membership.timeframe.as_ref().filter(|f| f.is_relative())
                    else {
                        continue;
                    };
                    for id in &membership.group_ids {
                        if let Some(joined) = facts.joined_at(id) {
                            sources.push((filter, joined));
                        }
                    }
                }
                Condition::Consent(consent) => {
                    let view = consent_view(facts, consent.channel);
                    for filter in &consent.filters {
                        match filter {
                            ConsentFilter::StatusDate(date) if date.is_relative() => {
                                sources.extend(view.status_date.map(|d| (date, d)));
                            }
                            ConsentFilter::Suppression {
                                field,
                                check: SuppressionCheck::Date(date),
                            } if date.is_relative() => {
                                sources.extend(
                                    view.suppressions
                                        .iter()
                                        .filter(|s| s.reason == field.reason())
                                        .map(|s| (date, s.timestamp)),
                                );
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        sources
    }
}

/// Events whose entering or leaving the timeframe is still ahead of `now`.
fn pending_events(filter: &DateFilter, now: Timestamp, ctx: &EvalContext) -> Option<TimeWindow> {
    let from = |start| {
        Some(TimeWindow {
            start: Bound::Excluded(start),
            end: Bound::Unbounded,
        })
    };
    match *filter {
        // An event leaves at t + N, so only events after now − N still change anything.
        DateFilter::InTheLast(span) | DateFilter::AtLeast(span) => {
            from(shift(now, -i64::from(span.quantity) * span.unit.seconds()))
        }
        DateFilter::BetweenRelative { start, end, unit } => {
            from(shift(now, -i64::from(start.max(end)) * unit.seconds()))
        }
        // Events enter (or leave) when now reaches them.
        DateFilter::InTheNext(_) => from(now),
        DateFilter::FlowStart if ctx.flow_start.is_some() => from(now),
        _ => None,
    }
}
