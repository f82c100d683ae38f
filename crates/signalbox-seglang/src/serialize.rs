//! [`Definition`] → Klaviyo definition JSON, the inverse of [`crate::parse`].
//!
//! `parse(&d.to_json())` gives back `d`. Optional empty parts (`metric_filters: []`, consent
//! `filters: []`) are left out; instants are written in RFC 3339 UTC.

use serde::de::Error as _;
use serde_json::{json, Map, Value};

use crate::ast::{
    Condition, ConsentCondition, ConsentFilter, DateFilter, Definition, EventFilter, ListItem,
    MembershipCondition, MethodDetail, MetricCondition, NumericFilter, PropertyCondition,
    RelativeSpan, StringOperator, SuppressionCheck, ValueFilter,
};

impl Definition {
    /// The definition object, `{"condition_groups":[…]}`.
    pub fn to_json(&self) -> Value {
        let groups: Vec<Value> = self
            .condition_groups
            .iter()
            .map(|group| {
                let conditions: Vec<Value> = group.conditions.iter().map(condition).collect();
                json!({ "conditions": conditions })
            })
            .collect();
        json!({ "condition_groups": groups })
    }
}

impl serde::Serialize for Definition {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

/// Parses like [`crate::parse_with`] with no pointer prefix and `flow-start` allowed (so stored
/// segment definitions and flow filters both read back); the error lists every problem.
impl<'de> serde::Deserialize<'de> for Definition {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Definition, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let options = crate::ParseOptions {
            pointer_prefix: String::new(),
            allow_flow_start: true,
        };
        crate::parse_with(&value, &options).map_err(|errors| {
            let details: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            D::Error::custom(format!("invalid definition: {}", details.join("; ")))
        })
    }
}

fn condition(condition: &Condition) -> Value {
    match condition {
        Condition::Metric(m) => metric(m),
        Condition::Property(p) => property(p),
        Condition::Membership(m) => membership(m),
        Condition::Consent(c) => consent(c),
    }
}

fn metric(m: &MetricCondition) -> Value {
    let mut out = json!({
        "type": "profile-metric",
        "metric_id": m.metric_id,
        "measurement": m.measurement.as_str(),
        "measurement_filter": numeric(&m.measurement_filter),
        "timeframe_filter": date(&m.timeframe),
    });
    if !m.metric_filters.is_empty() {
        let filters: Vec<Value> = m.metric_filters.iter().map(event_filter).collect();
        out["metric_filters"] = Value::Array(filters);
    }
    out
}

fn event_filter(f: &EventFilter) -> Value {
    json!({ "property": f.property, "filter": value_filter(&f.filter) })
}

fn property(p: &PropertyCondition) -> Value {
    json!({
        "type": "profile-property",
        "property": p.property.to_wire(),
        "filter": value_filter(&p.filter),
    })
}

fn membership(m: &MembershipCondition) -> Value {
    let mut out = json!({
        "type": "profile-group-membership",
        "is_member": m.is_member,
        "group_ids": m.group_ids,
    });
    if let Some(timeframe) = &m.timeframe {
        out["timeframe_filter"] = date(timeframe);
    }
    out
}

fn consent(c: &ConsentCondition) -> Value {
    let mut status = json!({ "subscription": c.subscription.as_str() });
    if !c.filters.is_empty() {
        let filters: Vec<Value> = c.filters.iter().map(consent_filter).collect();
        status["filters"] = Value::Array(filters);
    }
    json!({
        "type": "profile-marketing-consent",
        "consent": {
            "channel": c.channel.as_str(),
            "can_receive_marketing": c.can_receive_marketing,
            "consent_status": status,
        },
    })
}

fn consent_filter(f: &ConsentFilter) -> Value {
    match f {
        ConsentFilter::DoubleOptIn(b) => json!({
            "field": "is_double_opt_in",
            "filter": value_filter(&ValueFilter::Boolean(*b)),
        }),
        ConsentFilter::StatusDate(d) => json!({ "field": "status_date", "filter": date(d) }),
        ConsentFilter::CustomSource(s) => json!({
            "field": "custom_source",
            "filter": value_filter(&ValueFilter::String {
                operator: StringOperator::Equals,
                value: s.clone(),
            }),
        }),
        ConsentFilter::Method {
            field,
            method,
            detail,
        } => {
            let mut out = json!({ "field": field.as_str(), "method": method });
            if let Some(detail) = detail {
                out["filter"] = match detail {
                    MethodDetail::In(values) => value_filter(&ValueFilter::StringIn {
                        negated: false,
                        values: values.clone(),
                    }),
                    MethodDetail::Equals(value) => value_filter(&ValueFilter::String {
                        operator: StringOperator::Equals,
                        value: value.clone(),
                    }),
                };
            }
            out
        }
        ConsentFilter::Suppression { field, check } => {
            let filter = match check {
                SuppressionCheck::IsSet => value_filter(&ValueFilter::Existence { is_set: true }),
                SuppressionCheck::Date(d) => date(d),
            };
            json!({ "field": field.as_str(), "filter": filter })
        }
    }
}

fn numeric(f: &NumericFilter) -> Value {
    json!({ "type": "numeric", "operator": f.operator.as_str(), "value": f.value })
}

fn value_filter(f: &ValueFilter) -> Value {
    let head =
        |value: Value| json!({ "type": f.type_name(), "operator": f.operator(), "value": value });
    match f {
        ValueFilter::String { value, .. } | ValueFilter::ListSubstring { value, .. } => {
            head(json!(value))
        }
        ValueFilter::StringIn { values, .. } | ValueFilter::ListSet { values, .. } => {
            head(json!(values))
        }
        ValueFilter::Numeric(n) => numeric(n),
        ValueFilter::Boolean(b) => head(json!(b)),
        ValueFilter::Date(d) => date(d),
        ValueFilter::Existence { .. } => json!({ "type": "existence", "operator": f.operator() }),
        ValueFilter::ListContains { value, .. } => head(match value {
            ListItem::String(s) => json!(s),
            ListItem::Integer(n) => json!(n),
            ListItem::Null => Value::Null,
        }),
        ValueFilter::ListLength { value, .. } => head(json!(value)),
    }
}

fn date(d: &DateFilter) -> Value {
    let mut out = Map::new();
    out.insert("type".into(), json!("date"));
    out.insert("operator".into(), json!(d.operator()));
    let span = |out: &mut Map<String, Value>, span: &RelativeSpan| {
        out.insert("quantity".into(), json!(span.quantity));
        out.insert("unit".into(), json!(span.unit.as_str()));
    };
    match d {
        DateFilter::AllTime
        | DateFilter::Anniversary
        | DateFilter::AnniversaryMonth
        | DateFilter::FlowStart => {}
        DateFilter::Before(t) | DateFilter::After(t) => {
            out.insert("date".into(), json!(t.to_string()));
        }
        DateFilter::BetweenStatic { start, end } => {
            out.insert("start".into(), json!(start.to_string()));
            out.insert("end".into(), json!(end.to_string()));
        }
        DateFilter::InTheLast(s)
        | DateFilter::AtLeast(s)
        | DateFilter::InTheNext(s)
        | DateFilter::AnniversaryLast(s)
        | DateFilter::AnniversaryNext(s) => span(&mut out, s),
        DateFilter::BetweenRelative { start, end, unit } => {
            out.insert("start".into(), json!(start));
            out.insert("end".into(), json!(end));
            out.insert("unit".into(), json!(unit.as_str()));
        }
        DateFilter::CalendarMonth(m) => {
            out.insert("value".into(), json!(m));
        }
    }
    Value::Object(out)
}
