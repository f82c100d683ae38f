//! Filters: numeric, string, boolean, existence, list and date, on properties and on events.

use jiff::Timestamp;
use serde_json::{Map, Value};

use super::{join, kind, Parser, MAX_QUANTITY};
use crate::ast::{
    DateFilter, EventFilter, LengthOperator, ListItem, ListSetOperator, NumericFilter,
    NumericOperator, RelativeSpan, StringOperator, TimeUnit, ValueFilter,
};
use crate::time::parse_instant;

/// What a value filter applies to; Klaviyo allows different filters on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FilterUse {
    Profile,
    Event,
}

/// Where a date filter sits; each place allows different operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DateUse {
    /// A metric condition's `timeframe_filter`.
    Metric,
    /// A date property.
    Property,
    /// A group membership's join `timeframe_filter`.
    Membership,
    /// A consent status or suppression date.
    Consent,
}

const DATE_OPERATORS: &[&str] = &[
    "alltime",
    "before",
    "after",
    "between-static",
    "in-the-last",
    "at-least",
    "in-the-next",
    "between",
    "anniversary-last",
    "anniversary-next",
    "anniversary",
    "anniversary-month",
    "calendar-month",
    "flow-start",
];

enum Allowed {
    Yes,
    No,
    Unsupported(&'static str),
}

fn date_operator_allowed(usage: DateUse, operator: &str, flow_start: bool) -> Allowed {
    let static_and_relative = matches!(
        operator,
        "before"
            | "after"
            | "between-static"
            | "in-the-last"
            | "at-least"
            | "in-the-next"
            | "between"
    );
    match usage {
        DateUse::Metric => match operator {
            "alltime" => Allowed::Yes,
            "flow-start" if flow_start => Allowed::Yes,
            "anniversary-last" | "anniversary-next" => Allowed::Unsupported(
                "anniversary timeframes on metric conditions are not supported",
            ),
            _ if static_and_relative => Allowed::Yes,
            _ => Allowed::No,
        },
        DateUse::Membership => {
            if static_and_relative {
                Allowed::Yes
            } else {
                Allowed::No
            }
        }
        DateUse::Property | DateUse::Consent => match operator {
            "alltime" | "flow-start" => Allowed::No,
            _ => Allowed::Yes,
        },
    }
}

impl Parser<'_> {
    /// `{"type":"numeric",…}` and nothing else.
    pub(crate) fn numeric_filter(&mut self, value: &Value, at: &str) -> Option<NumericFilter> {
        let object = self.object(value, at)?;
        let kind = self.filter_type(object, at)?;
        if kind != "numeric" {
            self.invalid(
                &join(at, "type"),
                format!("expected a numeric filter, found type `{kind}`"),
            );
            return None;
        }
        self.known_fields(object, at, &["type", "operator", "value"]);
        self.numeric_body(object, at)
    }

    fn numeric_body(&mut self, object: &Map<String, Value>, at: &str) -> Option<NumericFilter> {
        let operator = self.required(object, at, "operator").and_then(|v| {
            self.keyword(
                v,
                &join(at, "operator"),
                "numeric operator",
                &NumericOperator::ALL.map(|o| (o.as_str(), o)),
            )
        });
        let value = self
            .required(object, at, "value")
            .and_then(|v| self.number(v, &join(at, "value")));
        Some(NumericFilter {
            operator: operator?,
            value: value?,
        })
    }

    fn filter_type<'v>(&mut self, object: &'v Map<String, Value>, at: &str) -> Option<&'v str> {
        let kind = self.required(object, at, "type")?;
        self.string(kind, &join(at, "type"))
    }

    fn operator<'v>(&mut self, object: &'v Map<String, Value>, at: &str) -> Option<&'v str> {
        let operator = self.required(object, at, "operator")?;
        self.string(operator, &join(at, "operator"))
    }

    /// `metric_filters`: an array of `{property, filter}`.
    pub(crate) fn event_filters(&mut self, value: &Value, at: &str) -> Option<Vec<EventFilter>> {
        let items = self.array(value, at)?;
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (index, item) in items.iter().enumerate() {
            let item_at = join(at, index);
            let parsed = self.object(item, &item_at).and_then(|object| {
                self.known_fields(object, &item_at, &["property", "filter"]);
                let property = self
                    .required(object, &item_at, "property")
                    .and_then(|v| self.nonempty_string(v, &join(&item_at, "property")));
                let filter = self.required(object, &item_at, "filter").and_then(|v| {
                    self.value_filter(v, &join(&item_at, "filter"), FilterUse::Event)
                });
                Some(EventFilter {
                    property: property?.to_owned(),
                    filter: filter?,
                })
            });
            match parsed {
                Some(filter) => out.push(filter),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    pub(crate) fn value_filter(
        &mut self,
        value: &Value,
        at: &str,
        usage: FilterUse,
    ) -> Option<ValueFilter> {
        let object = self.object(value, at)?;
        let kind = self.filter_type(object, at)?;
        match kind {
            "string" => self.string_filter(object, at),
            "numeric" => {
                self.known_fields(object, at, &["type", "operator", "value"]);
                self.numeric_body(object, at).map(ValueFilter::Numeric)
            }
            "boolean" => {
                self.known_fields(object, at, &["type", "operator", "value"]);
                let operator = self.required(object, at, "operator").and_then(|v| {
                    self.keyword(
                        v,
                        &join(at, "operator"),
                        "boolean operator",
                        &[("equals", ())],
                    )
                });
                let value = self
                    .required(object, at, "value")
                    .and_then(|v| self.bool(v, &join(at, "value")));
                operator?;
                value.map(ValueFilter::Boolean)
            }
            "date" if usage == FilterUse::Event => {
                self.invalid(
                    &join(at, "type"),
                    "date filters are not allowed on event properties",
                );
                None
            }
            "date" => self
                .date_body(object, at, DateUse::Property)
                .map(ValueFilter::Date),
            "existence" => {
                self.known_fields(object, at, &["type", "operator"]);
                let operator = self.required(object, at, "operator")?;
                self.keyword(
                    operator,
                    &join(at, "operator"),
                    "existence operator",
                    &[("is-set", true), ("not-set", false)],
                )
                .map(|is_set| ValueFilter::Existence { is_set })
            }
            "list" => self.list_filter(object, at, usage),
            other => {
                self.invalid(
                    &join(at, "type"),
                    format!(
                        "unknown filter type `{other}`; expected one of string, numeric, \
                         boolean, date, existence, list"
                    ),
                );
                None
            }
        }
    }

    fn string_filter(&mut self, object: &Map<String, Value>, at: &str) -> Option<ValueFilter> {
        self.known_fields(object, at, &["type", "operator", "value"]);
        let operator_at = join(at, "operator");
        let value_at = join(at, "value");
        let operator = self.operator(object, at)?;
        if let Some(op) = StringOperator::ALL
            .into_iter()
            .find(|o| o.as_str() == operator)
        {
            let value = self.required(object, at, "value")?;
            let value = self.string(value, &value_at)?;
            return Some(ValueFilter::String {
                operator: op,
                value: value.to_owned(),
            });
        }
        match operator {
            "in" | "not-in" => {
                let value = self.required(object, at, "value")?;
                let values = self.string_list(value, &value_at, false)?;
                Some(ValueFilter::StringIn {
                    negated: operator == "not-in",
                    values,
                })
            }
            "regex" | "nregex" => {
                self.unsupported(&operator_at, "regular expression filters are not supported");
                None
            }
            "phone-country-code-in" | "phone-country-code-not-in" => {
                self.unsupported(&operator_at, "phone country code filters are not supported");
                None
            }
            other => {
                let mut names: Vec<&str> = StringOperator::ALL.iter().map(|o| o.as_str()).collect();
                names.extend(["in", "not-in"]);
                self.invalid(
                    &operator_at,
                    format!(
                        "unknown string operator `{other}`; expected one of {}",
                        names.join(", ")
                    ),
                );
                None
            }
        }
    }

    fn list_filter(
        &mut self,
        object: &Map<String, Value>,
        at: &str,
        usage: FilterUse,
    ) -> Option<ValueFilter> {
        self.known_fields(object, at, &["type", "operator", "value"]);
        let operator_at = join(at, "operator");
        let value_at = join(at, "value");
        let operator = self.operator(object, at)?;
        let set_operator = ListSetOperator::ALL
            .into_iter()
            .find(|o| o.as_str() == operator);
        let length_operator = LengthOperator::ALL
            .into_iter()
            .find(|o| o.as_str() == operator);
        let substring = matches!(operator, "contains-substring" | "not-contains-substring");
        let contains = matches!(operator, "contains" | "not-contains");
        let known = set_operator.is_some() || length_operator.is_some() || substring || contains;
        if !known {
            let mut names = vec!["contains", "not-contains"];
            names.extend(LengthOperator::ALL.iter().map(|o| o.as_str()));
            names.extend(ListSetOperator::ALL.iter().map(|o| o.as_str()));
            names.extend(["contains-substring", "not-contains-substring"]);
            self.invalid(
                &operator_at,
                format!(
                    "unknown list operator `{operator}`; expected one of {}",
                    names.join(", ")
                ),
            );
            return None;
        }
        if contains && usage == FilterUse::Event {
            self.invalid(
                &operator_at,
                format!("list operator `{operator}` is not allowed on event properties; use contains-any"),
            );
            return None;
        }
        if (set_operator.is_some() || substring) && usage == FilterUse::Profile {
            self.invalid(
                &operator_at,
                format!("list operator `{operator}` is not allowed on profile properties"),
            );
            return None;
        }
        if let Some(operator) = length_operator {
            let value = self.required(object, at, "value")?;
            let value = self.integer(value, &value_at, 0, i64::MAX)?;
            return Some(ValueFilter::ListLength {
                operator,
                value: value.unsigned_abs(),
            });
        }
        if let Some(operator) = set_operator {
            let value = self.required(object, at, "value")?;
            let values = self.string_list(value, &value_at, false)?;
            return Some(ValueFilter::ListSet { operator, values });
        }
        if substring {
            let value = self.required(object, at, "value")?;
            let value = self.string(value, &value_at)?;
            return Some(ValueFilter::ListSubstring {
                negated: operator == "not-contains-substring",
                value: value.to_owned(),
            });
        }
        // `contains` / `not-contains`: the value is a string, an integer or null, and must be
        // present.
        let item = match object.get("value") {
            None => {
                self.invalid(&value_at, "`value` is required");
                return None;
            }
            Some(Value::Null) => ListItem::Null,
            Some(Value::String(s)) => ListItem::String(s.clone()),
            Some(Value::Number(n)) if n.as_i64().is_some() => {
                ListItem::Integer(n.as_i64().unwrap_or_default())
            }
            Some(other) => {
                self.invalid(
                    &value_at,
                    format!(
                        "expected a string, an integer or null, found {}",
                        kind(other)
                    ),
                );
                return None;
            }
        };
        Some(ValueFilter::ListContains {
            negated: operator == "not-contains",
            value: item,
        })
    }

    /// `{"type":"date",…}`.
    pub(crate) fn date_filter(
        &mut self,
        value: &Value,
        at: &str,
        usage: DateUse,
    ) -> Option<DateFilter> {
        let object = self.object(value, at)?;
        let kind = self.filter_type(object, at)?;
        if kind != "date" {
            self.invalid(
                &join(at, "type"),
                format!("expected a date filter, found type `{kind}`"),
            );
            return None;
        }
        self.date_body(object, at, usage)
    }

    fn date_body(
        &mut self,
        object: &Map<String, Value>,
        at: &str,
        usage: DateUse,
    ) -> Option<DateFilter> {
        let operator_at = join(at, "operator");
        let Some(operator) = self.operator(object, at) else {
            self.known_fields(object, at, &["type", "operator"]);
            return None;
        };
        let flow_start = self.allow_flow_start();
        if !DATE_OPERATORS.contains(&operator) {
            let allowed: Vec<&str> = DATE_OPERATORS
                .iter()
                .copied()
                .filter(|op| matches!(date_operator_allowed(usage, op, flow_start), Allowed::Yes))
                .collect();
            self.invalid(
                &operator_at,
                format!(
                    "unknown date operator `{operator}`; expected one of {}",
                    allowed.join(", ")
                ),
            );
            return None;
        }
        match date_operator_allowed(usage, operator, flow_start) {
            Allowed::Yes => {}
            Allowed::Unsupported(detail) => {
                self.unsupported(&operator_at, detail);
                return None;
            }
            Allowed::No => {
                let place = match usage {
                    DateUse::Metric if operator == "flow-start" => {
                        "outside flow filters".to_owned()
                    }
                    DateUse::Metric => "in a metric timeframe".to_owned(),
                    DateUse::Property => "on a profile property".to_owned(),
                    DateUse::Membership => "in a membership timeframe".to_owned(),
                    DateUse::Consent => "on a consent date".to_owned(),
                };
                self.invalid(
                    &operator_at,
                    format!("date operator `{operator}` is not allowed {place}"),
                );
                return None;
            }
        }
        match operator {
            "alltime" | "flow-start" | "anniversary" | "anniversary-month" => {
                self.known_fields(object, at, &["type", "operator"]);
                Some(match operator {
                    "alltime" => DateFilter::AllTime,
                    "flow-start" => DateFilter::FlowStart,
                    "anniversary" => DateFilter::Anniversary,
                    _ => DateFilter::AnniversaryMonth,
                })
            }
            "before" | "after" => {
                self.known_fields(object, at, &["type", "operator", "date"]);
                let date = self.instant_field(object, at, "date")?;
                Some(if operator == "before" {
                    DateFilter::Before(date)
                } else {
                    DateFilter::After(date)
                })
            }
            "between-static" => {
                self.known_fields(object, at, &["type", "operator", "start", "end"]);
                let start = self.instant_field(object, at, "start");
                let end = self.instant_field(object, at, "end");
                let (start, end) = (start?, end?);
                if end < start {
                    self.invalid(&join(at, "end"), "`end` must not be before `start`");
                    return None;
                }
                Some(DateFilter::BetweenStatic { start, end })
            }
            "between" => {
                self.known_fields(object, at, &["type", "operator", "start", "end", "unit"]);
                let start = self.quantity(object, at, "start", 0);
                let end = self.quantity(object, at, "end", 0);
                let unit = self.unit(object, at);
                Some(DateFilter::BetweenRelative {
                    start: start?,
                    end: end?,
                    unit: unit?,
                })
            }
            "calendar-month" => {
                self.known_fields(object, at, &["type", "operator", "value"]);
                let value = self.required(object, at, "value")?;
                let month = self.integer(value, &join(at, "value"), 1, 12)?;
                Some(DateFilter::CalendarMonth(u8::try_from(month).ok()?))
            }
            _ => {
                // in-the-last, at-least, in-the-next, anniversary-last, anniversary-next
                self.known_fields(object, at, &["type", "operator", "quantity", "unit"]);
                let min = if operator == "at-least" { 0 } else { 1 };
                let quantity = self.quantity(object, at, "quantity", min);
                let unit = self.unit(object, at);
                let span = RelativeSpan {
                    quantity: quantity?,
                    unit: unit?,
                };
                Some(match operator {
                    "in-the-last" => DateFilter::InTheLast(span),
                    "at-least" => DateFilter::AtLeast(span),
                    "in-the-next" => DateFilter::InTheNext(span),
                    "anniversary-last" => DateFilter::AnniversaryLast(span),
                    _ => DateFilter::AnniversaryNext(span),
                })
            }
        }
    }

    fn instant_field(
        &mut self,
        object: &Map<String, Value>,
        at: &str,
        key: &str,
    ) -> Option<Timestamp> {
        let field_at = join(at, key);
        let value = self.required(object, at, key)?;
        let text = self.string(value, &field_at)?;
        match parse_instant(text) {
            Some(instant) => Some(instant),
            None => {
                self.invalid(
                    &field_at,
                    format!(
                        "`{text}` is not an ISO 8601 date-time such as 2024-01-31T00:00:00+00:00"
                    ),
                );
                None
            }
        }
    }

    fn quantity(
        &mut self,
        object: &Map<String, Value>,
        at: &str,
        key: &str,
        min: i64,
    ) -> Option<u32> {
        let value = self.required(object, at, key)?;
        let n = self.integer(value, &join(at, key), min, MAX_QUANTITY)?;
        u32::try_from(n).ok()
    }

    fn unit(&mut self, object: &Map<String, Value>, at: &str) -> Option<TimeUnit> {
        let value = self.required(object, at, "unit")?;
        self.keyword(
            value,
            &join(at, "unit"),
            "unit",
            &[
                ("hour", TimeUnit::Hour),
                ("day", TimeUnit::Day),
                ("week", TimeUnit::Week),
            ],
        )
    }
}
