//! Klaviyo definition JSON → [`Definition`], collecting every problem with its JSON pointer.
//!
//! The parser is strict: unknown fields, unknown names, wrong JSON types and out-of-range
//! numbers are all errors. `null` is accepted wherever a field is optional and means "absent".
//! It never panics, whatever the input.

mod consent;
mod filters;

use serde_json::{Map, Number, Value};

use crate::ast::{
    Condition, ConditionGroup, Definition, Measurement, MembershipCondition, MetricCondition,
    PropertyCondition, PropertyPath, MAX_CONDITIONS,
};
use crate::error::{escape_token, DefinitionError};

/// Where the definition sits in the request and what it may contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseOptions {
    /// JSON pointer of the definition object in the request body; error pointers start with it.
    pub pointer_prefix: String,
    /// Accept `flow-start` timeframes (flow profile filters only).
    pub allow_flow_start: bool,
}

impl Default for ParseOptions {
    /// A segment's definition in a Segments API request body.
    fn default() -> ParseOptions {
        ParseOptions {
            pointer_prefix: "/data/attributes/definition".to_owned(),
            allow_flow_start: false,
        }
    }
}

impl ParseOptions {
    /// A flow's `profile_filter` in a Flows API request body.
    pub fn flow_profile_filter() -> ParseOptions {
        ParseOptions {
            pointer_prefix: "/data/attributes/definition/profile_filter".to_owned(),
            allow_flow_start: true,
        }
    }
}

/// Parses a segment definition (`{"condition_groups":[…]}`) with [`ParseOptions::default`].
pub fn parse(definition: &Value) -> Result<Definition, Vec<DefinitionError>> {
    parse_with(definition, &ParseOptions::default())
}

pub fn parse_with(
    definition: &Value,
    options: &ParseOptions,
) -> Result<Definition, Vec<DefinitionError>> {
    let mut parser = Parser {
        options,
        errors: Vec::new(),
    };
    let parsed = parser.definition(definition);
    match parsed {
        Some(definition) if parser.errors.is_empty() => Ok(definition),
        _ => {
            debug_assert!(!parser.errors.is_empty(), "a failed parse reports why");
            Err(parser.errors)
        }
    }
}

/// Upper bound for `quantity`, `start` and `end` of relative dates (about 1,900 years in weeks,
/// far inside the range of a timestamp).
pub(crate) const MAX_QUANTITY: i64 = 100_000;

pub(crate) struct Parser<'o> {
    options: &'o ParseOptions,
    errors: Vec<DefinitionError>,
}

/// Joins a relative pointer and one key or index.
pub(crate) fn join(at: &str, token: impl std::fmt::Display) -> String {
    format!("{at}/{}", escape_token(&token.to_string()))
}

impl Parser<'_> {
    fn definition(&mut self, value: &Value) -> Option<Definition> {
        let at = "";
        let object = self.object(value, at)?;
        self.known_fields(object, at, &["condition_groups"]);
        let groups_at = join(at, "condition_groups");
        let groups = self.required(object, at, "condition_groups")?;
        let groups = self.array(groups, &groups_at)?;
        if groups.is_empty() {
            self.invalid(&groups_at, "at least one condition group is required");
            return None;
        }
        let mut condition_groups = Vec::with_capacity(groups.len());
        let mut total = 0;
        for (index, group) in groups.iter().enumerate() {
            let group_at = join(&groups_at, index);
            if let Some(group) = self.group(group, &group_at, &mut total) {
                condition_groups.push(group);
            }
        }
        if total > MAX_CONDITIONS {
            self.invalid(
                &groups_at,
                format!("a definition may hold at most {MAX_CONDITIONS} conditions, found {total}"),
            );
        }
        (condition_groups.len() == groups.len()).then_some(Definition { condition_groups })
    }

    fn group(&mut self, value: &Value, at: &str, total: &mut usize) -> Option<ConditionGroup> {
        let object = self.object(value, at)?;
        self.known_fields(object, at, &["conditions"]);
        let conditions_at = join(at, "conditions");
        let conditions = self.required(object, at, "conditions")?;
        let conditions = self.array(conditions, &conditions_at)?;
        if conditions.is_empty() {
            self.invalid(
                &conditions_at,
                "a condition group needs at least one condition",
            );
            return None;
        }
        *total += conditions.len();
        let parsed: Vec<Condition> = conditions
            .iter()
            .enumerate()
            .filter_map(|(index, c)| self.condition(c, &join(&conditions_at, index)))
            .collect();
        (parsed.len() == conditions.len()).then_some(ConditionGroup { conditions: parsed })
    }

    fn condition(&mut self, value: &Value, at: &str) -> Option<Condition> {
        let object = self.object(value, at)?;
        let type_at = join(at, "type");
        let kind = self.required(object, at, "type")?;
        let kind = self.string(kind, &type_at)?;
        match kind {
            "profile-metric" => self.metric(object, at).map(Condition::Metric),
            "profile-property" => self.property(object, at).map(Condition::Property),
            "profile-group-membership" => self.membership(object, at).map(Condition::Membership),
            "profile-marketing-consent" => self.consent(object, at).map(Condition::Consent),
            "profile-metric-funnel"
            | "profile-postal-code-distance"
            | "profile-region"
            | "profile-predictive-analytics"
            | "profile-has-custom-object"
            | "profile-permissions"
            | "profile-sample"
            | "profile-not-sent-email"
            | "profile-not-sent-sms"
            | "profile-not-sent-push"
            | "profile-not-in-flow" => {
                self.unsupported(
                    &type_at,
                    format!("condition type `{kind}` is not supported"),
                );
                None
            }
            other => {
                self.invalid(
                    &type_at,
                    format!(
                        "unknown condition type `{other}`; expected one of profile-metric, \
                         profile-property, profile-group-membership, profile-marketing-consent"
                    ),
                );
                None
            }
        }
    }

    fn metric(&mut self, object: &Map<String, Value>, at: &str) -> Option<MetricCondition> {
        self.known_fields(
            object,
            at,
            &[
                "type",
                "metric_id",
                "measurement",
                "measurement_filter",
                "timeframe_filter",
                "metric_filters",
            ],
        );
        let metric_id = self
            .required(object, at, "metric_id")
            .and_then(|v| self.nonempty_string(v, &join(at, "metric_id")));
        let measurement = self.required(object, at, "measurement").and_then(|v| {
            self.keyword(
                v,
                &join(at, "measurement"),
                "measurement",
                &[("count", Measurement::Count), ("sum", Measurement::Sum)],
            )
        });
        let measurement_filter = self
            .required(object, at, "measurement_filter")
            .and_then(|v| self.numeric_filter(v, &join(at, "measurement_filter")));
        let timeframe = self.required(object, at, "timeframe_filter").and_then(|v| {
            self.date_filter(v, &join(at, "timeframe_filter"), filters::DateUse::Metric)
        });
        let metric_filters = match optional(object, "metric_filters") {
            None => Some(Vec::new()),
            Some(v) => self.event_filters(v, &join(at, "metric_filters")),
        };
        Some(MetricCondition {
            metric_id: metric_id?.to_owned(),
            measurement: measurement?,
            measurement_filter: measurement_filter?,
            timeframe: timeframe?,
            metric_filters: metric_filters?,
        })
    }

    fn property(&mut self, object: &Map<String, Value>, at: &str) -> Option<PropertyCondition> {
        self.known_fields(object, at, &["type", "property", "filter"]);
        let property_at = join(at, "property");
        let property = self
            .required(object, at, "property")
            .and_then(|v| self.string(v, &property_at))
            .and_then(|path| match PropertyPath::from_wire(path) {
                Some(path) => Some(path),
                None => {
                    self.invalid(
                        &property_at,
                        format!(
                            "unknown property `{path}`; use a built-in field such as `email` or \
                             `location['city']`, or `properties['name']` for a custom property"
                        ),
                    );
                    None
                }
            });
        let filter = self
            .required(object, at, "filter")
            .and_then(|v| self.value_filter(v, &join(at, "filter"), filters::FilterUse::Profile));
        Some(PropertyCondition {
            property: property?,
            filter: filter?,
        })
    }

    fn membership(&mut self, object: &Map<String, Value>, at: &str) -> Option<MembershipCondition> {
        self.known_fields(
            object,
            at,
            &["type", "is_member", "group_ids", "timeframe_filter"],
        );
        let is_member = self
            .required(object, at, "is_member")
            .and_then(|v| self.bool(v, &join(at, "is_member")));
        let group_ids_at = join(at, "group_ids");
        let group_ids = self
            .required(object, at, "group_ids")
            .and_then(|v| self.string_list(v, &group_ids_at, true))
            .and_then(|ids| {
                if ids.is_empty() {
                    self.invalid(&group_ids_at, "at least one list or segment id is required");
                    return None;
                }
                Some(ids)
            });
        let timeframe_at = join(at, "timeframe_filter");
        let timeframe = match optional(object, "timeframe_filter") {
            None => Some(None),
            Some(_) if is_member == Some(false) => {
                self.invalid(
                    &timeframe_at,
                    "timeframe_filter is only allowed when is_member is true",
                );
                None
            }
            Some(v) => self
                .date_filter(v, &timeframe_at, filters::DateUse::Membership)
                .map(Some),
        };
        Some(MembershipCondition {
            is_member: is_member?,
            group_ids: group_ids?,
            timeframe: timeframe?,
        })
    }

    // ---- building blocks ------------------------------------------------------------------

    fn pointer(&self, at: &str) -> String {
        format!("{}{at}", self.options.pointer_prefix)
    }

    pub(crate) fn invalid(&mut self, at: &str, detail: impl Into<String>) {
        let error = DefinitionError::invalid(self.pointer(at), capped(detail.into()));
        self.errors.push(error);
    }

    pub(crate) fn unsupported(&mut self, at: &str, detail: impl Into<String>) {
        let error = DefinitionError::unsupported(self.pointer(at), capped(detail.into()));
        self.errors.push(error);
    }

    pub(crate) fn object<'v>(
        &mut self,
        value: &'v Value,
        at: &str,
    ) -> Option<&'v Map<String, Value>> {
        match value {
            Value::Object(object) => Some(object),
            other => {
                self.invalid(at, format!("expected an object, found {}", kind(other)));
                None
            }
        }
    }

    pub(crate) fn array<'v>(&mut self, value: &'v Value, at: &str) -> Option<&'v [Value]> {
        match value {
            Value::Array(items) => Some(items),
            other => {
                self.invalid(at, format!("expected an array, found {}", kind(other)));
                None
            }
        }
    }

    /// Reports every field not in `allowed`.
    pub(crate) fn known_fields(&mut self, object: &Map<String, Value>, at: &str, allowed: &[&str]) {
        for key in object.keys() {
            if !allowed.contains(&key.as_str()) {
                self.invalid(&join(at, key), format!("unknown field `{key}`"));
            }
        }
    }

    /// The field's value; missing or `null` is an error.
    pub(crate) fn required<'v>(
        &mut self,
        object: &'v Map<String, Value>,
        at: &str,
        key: &str,
    ) -> Option<&'v Value> {
        match object.get(key) {
            Some(Value::Null) => {
                self.invalid(&join(at, key), format!("`{key}` must not be null"));
                None
            }
            Some(value) => Some(value),
            None => {
                self.invalid(&join(at, key), format!("`{key}` is required"));
                None
            }
        }
    }

    pub(crate) fn string<'v>(&mut self, value: &'v Value, at: &str) -> Option<&'v str> {
        match value {
            Value::String(s) => Some(s),
            other => {
                self.invalid(at, format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    pub(crate) fn nonempty_string<'v>(&mut self, value: &'v Value, at: &str) -> Option<&'v str> {
        let s = self.string(value, at)?;
        if s.is_empty() {
            self.invalid(at, "must not be empty");
            return None;
        }
        Some(s)
    }

    pub(crate) fn bool(&mut self, value: &Value, at: &str) -> Option<bool> {
        match value {
            Value::Bool(b) => Some(*b),
            other => {
                self.invalid(at, format!("expected a boolean, found {}", kind(other)));
                None
            }
        }
    }

    pub(crate) fn number(&mut self, value: &Value, at: &str) -> Option<Number> {
        match value {
            Value::Number(n) => Some(n.clone()),
            other => {
                self.invalid(at, format!("expected a number, found {}", kind(other)));
                None
            }
        }
    }

    /// An integer in `min..=max`.
    pub(crate) fn integer(&mut self, value: &Value, at: &str, min: i64, max: i64) -> Option<i64> {
        let n = match value {
            Value::Number(n) => n.as_i64(),
            other => {
                self.invalid(at, format!("expected an integer, found {}", kind(other)));
                return None;
            }
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.invalid(
                    at,
                    format!("expected an integer from {min} to {max}, found {value}"),
                );
                None
            }
        }
    }

    /// An array of strings; each must be non-empty when `nonempty_items`.
    pub(crate) fn string_list(
        &mut self,
        value: &Value,
        at: &str,
        nonempty_items: bool,
    ) -> Option<Vec<String>> {
        let items = self.array(value, at)?;
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (index, item) in items.iter().enumerate() {
            let item_at = join(at, index);
            let parsed = if nonempty_items {
                self.nonempty_string(item, &item_at)
            } else {
                self.string(item, &item_at)
            };
            match parsed {
                Some(s) => out.push(s.to_owned()),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// One of a closed set of names.
    pub(crate) fn keyword<T: Copy>(
        &mut self,
        value: &Value,
        at: &str,
        what: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let name = self.string(value, at)?;
        if let Some((_, found)) = choices.iter().find(|(n, _)| *n == name) {
            return Some(*found);
        }
        let expected: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        self.invalid(
            at,
            format!(
                "unknown {what} `{name}`; expected one of {}",
                expected.join(", ")
            ),
        );
        None
    }

    pub(crate) fn allow_flow_start(&self) -> bool {
        self.options.allow_flow_start
    }
}

/// The field's value, with `null` meaning absent.
pub(crate) fn optional<'v>(object: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    object.get(key).filter(|v| !v.is_null())
}

/// Details echo names from the input; a huge one must not make a huge error.
fn capped(detail: String) -> String {
    const MAX_CHARS: usize = 400;
    match detail.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &detail[..cut]),
        None => detail,
    }
}

pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
