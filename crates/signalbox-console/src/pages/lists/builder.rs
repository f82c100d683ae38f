//! The segment builder: a definition as form fields and back.
//!
//! A definition's groups (all required) hold alternative conditions; in the form each
//! condition is a row of fields named `g{group}.c{condition}.{field}` (`g0.c1.kind`,
//! `g0.c1.value`, …). A row has a kind (profile property, metric, list or segment membership,
//! marketing consent) and the fields of that kind; a condition the fields cannot say exactly
//! (metric filters on event properties, consent filters, dates between instants …) is a
//! `json` row holding the condition's JSON, so every definition renders into the form and saves
//! back unchanged. Converting a row is checked both ways: a condition becomes a typed row only
//! if that row gives back the same JSON.
//!
//! Errors are keyed by field name (`g0.c1.count`), from the row conversion or from the
//! definition parser's JSON pointers.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Map, Number, Value};
use signalbox_seglang::ast::{BuiltIn, NumericOperator, StringOperator, MAX_CONDITIONS};
use signalbox_seglang::DefinitionError;

/// Errors by field name (`name`, `definition`, `g0.c1.value`).
pub(crate) type FieldErrors = BTreeMap<String, String>;

/// The kinds of condition a row may be.
pub(crate) const KINDS: &[(&str, &str)] = &[
    ("property", "Profile property"),
    ("metric", "What someone has done (metric)"),
    ("membership", "In a list or segment"),
    ("consent", "Marketing consent"),
    ("json", "Condition as JSON"),
];

/// Property comparisons, `type:operator` with its label.
pub(crate) fn property_ops() -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for op in StringOperator::ALL {
        let label = format!("text {}", op.as_str().replace('-', " "));
        ops.push((format!("string:{}", op.as_str()), label));
    }
    for op in NumericOperator::ALL {
        let label = format!("number {}", op.as_str().replace('-', " "));
        ops.push((format!("numeric:{}", op.as_str()), label));
    }
    ops.push(("boolean:equals".into(), "is true or false".into()));
    ops.push(("existence:is-set".into(), "is set".into()));
    ops.push(("existence:not-set".into(), "is not set".into()));
    for (op, label) in DATE_SPANS {
        ops.push((format!("date:{op}"), format!("date {label}")));
    }
    ops
}

/// Numeric comparisons for a metric's count or sum.
pub(crate) fn count_ops() -> Vec<(&'static str, String)> {
    NumericOperator::ALL
        .into_iter()
        .map(|op| (op.as_str(), op.as_str().replace('-', " ")))
        .collect()
}

/// Relative date operators that take a quantity and a unit.
const DATE_SPANS: [(&str, &str); 3] = [
    ("in-the-last", "in the last"),
    ("at-least", "at least … ago"),
    ("in-the-next", "in the next"),
];

/// A metric's timeframes the row offers.
pub(crate) const TIMEFRAMES: &[(&str, &str)] = &[
    ("alltime", "over all time"),
    ("in-the-last", "in the last"),
    ("at-least", "at least … ago"),
];

pub(crate) const UNITS: &[&str] = &["hour", "day", "week"];
pub(crate) const CHANNELS: &[&str] = &["email", "sms", "push"];
pub(crate) const SUBSCRIPTIONS: &[(&str, &str)] = &[
    ("any", "any"),
    ("subscribed", "subscribed"),
    ("unsubscribed", "unsubscribed"),
    ("never_subscribed", "never subscribed"),
];

/// One condition as form fields. Fields another kind uses are kept (and sent back as they
/// were), so changing a row's kind back and forth loses nothing typed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Row {
    pub kind: String,
    pub property: String,
    pub op: String,
    pub value: String,
    pub metric: String,
    pub measurement: String,
    pub count_op: String,
    pub count: String,
    pub time: String,
    pub quantity: String,
    pub unit: String,
    pub member: String,
    pub groups: Vec<String>,
    pub channel: String,
    pub can_receive: String,
    pub subscription: String,
    pub json: String,
    /// The kind the row had when the form was drawn (a hidden field).
    pub was: String,
}

impl Default for Row {
    fn default() -> Row {
        Row {
            kind: "property".into(),
            property: String::new(),
            op: "string:equals".into(),
            value: String::new(),
            metric: String::new(),
            measurement: "count".into(),
            count_op: "greater-than".into(),
            count: "0".into(),
            time: "alltime".into(),
            quantity: "30".into(),
            unit: "day".into(),
            member: "true".into(),
            groups: Vec::new(),
            channel: "email".into(),
            can_receive: "true".into(),
            subscription: "subscribed".into(),
            json: String::new(),
            was: "property".into(),
        }
    }
}

/// Groups of rows: the whole builder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Builder {
    pub groups: Vec<Vec<Row>>,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            groups: vec![vec![Row::default()]],
        }
    }
}

/// What a builder button asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edit {
    AddGroup,
    AddCondition(usize),
    Remove(usize, usize),
    /// Re-render (a row's kind changed).
    Refresh,
}

impl Edit {
    /// `add-group`, `add-condition:G`, `remove:G.C`, `refresh`.
    pub fn parse(op: &str) -> Option<Edit> {
        if op == "add-group" {
            return Some(Edit::AddGroup);
        }
        if op == "refresh" {
            return Some(Edit::Refresh);
        }
        if let Some(group) = op.strip_prefix("add-condition:") {
            return group.parse().ok().map(Edit::AddCondition);
        }
        let (group, condition) = op.strip_prefix("remove:")?.split_once('.')?;
        Some(Edit::Remove(group.parse().ok()?, condition.parse().ok()?))
    }
}

impl Builder {
    /// The rows of a submitted form (`g0.c1.kind` …); other fields are ignored. Indexes only
    /// order the rows; gaps close up.
    pub fn from_form(pairs: &[(String, String)]) -> Builder {
        let mut rows: BTreeMap<(usize, usize), Row> = BTreeMap::new();
        for (key, value) in pairs {
            let Some((group, condition, field)) = row_field(key) else {
                continue;
            };
            // One row past the limit is kept, so the definition's check names the limit; a
            // form with thousands of rows costs no more than that.
            if rows.len() > MAX_CONDITIONS && !rows.contains_key(&(group, condition)) {
                continue;
            }
            let row = rows.entry((group, condition)).or_default();
            let value = value.clone();
            match field {
                "kind" => row.kind = value,
                "property" => row.property = value,
                "op" => row.op = value,
                "value" => row.value = value,
                "metric" => row.metric = value,
                "measurement" => row.measurement = value,
                "count_op" => row.count_op = value,
                "count" => row.count = value,
                "time" => row.time = value,
                "quantity" => row.quantity = value,
                "unit" => row.unit = value,
                "member" => row.member = value,
                "group" if !value.is_empty() => row.groups.push(value),
                "channel" => row.channel = value,
                "can_receive" => row.can_receive = value,
                "subscription" => row.subscription = value,
                "json" => row.json = value,
                "was" => row.was = value,
                _ => {}
            }
        }
        // A row just switched to JSON starts from what its fields said.
        for row in rows.values_mut() {
            if row.kind == "json" && row.json.trim().is_empty() && row.was != "json" {
                let typed = Row {
                    kind: row.was.clone(),
                    ..row.clone()
                };
                if let Ok(condition) = condition_of(&typed) {
                    row.json = serde_json::to_string_pretty(&condition).unwrap_or_default();
                }
            }
            row.was = row.kind.clone();
        }
        let mut groups: BTreeMap<usize, Vec<Row>> = BTreeMap::new();
        for ((group, _), row) in rows {
            groups.entry(group).or_default().push(row);
        }
        let groups: Vec<Vec<Row>> = groups.into_values().collect();
        if groups.is_empty() {
            return Builder::default();
        }
        Builder { groups }
    }

    /// A definition as rows (each condition typed when its row says it exactly, else JSON).
    /// Anything not shaped like a definition becomes one JSON row holding it whole.
    pub fn from_definition(definition: &Value) -> Builder {
        let groups = definition
            .get("condition_groups")
            .and_then(Value::as_array)
            .map(|groups| {
                groups
                    .iter()
                    .map(|group| {
                        group
                            .get("conditions")
                            .and_then(Value::as_array)
                            .map(|conditions| conditions.iter().map(row_of).collect())
                            .unwrap_or_default()
                    })
                    .filter(|rows: &Vec<Row>| !rows.is_empty())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if groups.is_empty() {
            return Builder::default();
        }
        Builder { groups }
    }

    pub fn apply(&mut self, edit: Edit) {
        match edit {
            Edit::AddGroup => self.groups.push(vec![Row::default()]),
            Edit::AddCondition(group) => {
                if let Some(rows) = self.groups.get_mut(group) {
                    rows.push(Row::default());
                }
            }
            Edit::Remove(group, condition) => {
                if let Some(rows) = self.groups.get_mut(group) {
                    if condition < rows.len() {
                        rows.remove(condition);
                    }
                    if rows.is_empty() {
                        self.groups.remove(group);
                    }
                }
                if self.groups.is_empty() {
                    *self = Builder::default();
                }
            }
            Edit::Refresh => {}
        }
    }

    /// The definition the rows say, checked by the definition parser; errors by field.
    pub fn to_definition(&self) -> Result<Value, FieldErrors> {
        let mut errors = FieldErrors::new();
        let count: usize = self.groups.iter().map(Vec::len).sum();
        if count > MAX_CONDITIONS {
            errors.insert(
                "definition".into(),
                format!("at most {MAX_CONDITIONS} conditions in all"),
            );
            return Err(errors);
        }
        let mut groups = Vec::new();
        for (g, rows) in self.groups.iter().enumerate() {
            let mut conditions = Vec::new();
            for (c, row) in rows.iter().enumerate() {
                match condition_of(row) {
                    Ok(condition) => conditions.push(condition),
                    Err((field, message)) => {
                        errors.insert(format!("g{g}.c{c}.{field}"), message);
                    }
                }
            }
            groups.push(json!({ "conditions": conditions }));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let definition = json!({ "condition_groups": groups });
        match signalbox_seglang::parse(&definition) {
            Ok(_) => Ok(definition),
            Err(problems) => Err(self.field_errors(&problems)),
        }
    }

    /// The parser's errors, each at the field its pointer names.
    pub fn field_errors(&self, problems: &[DefinitionError]) -> FieldErrors {
        let mut errors = FieldErrors::new();
        for problem in problems {
            let field = self.field_of(&problem.pointer);
            errors
                .entry(field)
                .and_modify(|existing: &mut String| {
                    existing.push_str("; ");
                    existing.push_str(&problem.detail);
                })
                .or_insert_with(|| problem.detail.clone());
        }
        errors
    }

    fn field_of(&self, pointer: &str) -> String {
        // The parser's pointers may start with where the API carries a definition.
        let Some(at) = pointer.find("/condition_groups") else {
            return "definition".into();
        };
        let parts: Vec<&str> = pointer[at..].split('/').collect();
        // ["", "condition_groups", g, "conditions", c, rest…]
        let (Some(g), Some(c)) = (
            parts.get(2).and_then(|g| g.parse::<usize>().ok()),
            parts.get(4).and_then(|c| c.parse::<usize>().ok()),
        ) else {
            return "definition".into();
        };
        let Some(row) = self.groups.get(g).and_then(|rows| rows.get(c)) else {
            return "definition".into();
        };
        let rest = parts.get(5..).unwrap_or_default().join("/");
        let field = if row.kind == "json" {
            "json"
        } else {
            match rest.as_str() {
                "" | "type" => "kind",
                "metric_id" => "metric",
                "measurement" => "measurement",
                "measurement_filter/operator" => "count_op",
                r if r.starts_with("measurement_filter") => "count",
                r if r.starts_with("timeframe_filter/quantity") => "quantity",
                r if r.starts_with("timeframe_filter/unit") => "unit",
                r if r.starts_with("timeframe_filter") => "time",
                "property" => "property",
                r if r.starts_with("filter/quantity") => "quantity",
                r if r.starts_with("filter/unit") => "unit",
                r if r.starts_with("filter/value") => "value",
                r if r.starts_with("filter") => "op",
                r if r.starts_with("group_ids") => "group",
                "is_member" => "member",
                "consent/channel" => "channel",
                "consent/can_receive_marketing" => "can_receive",
                r if r.starts_with("consent") => "subscription",
                _ => "kind",
            }
        };
        format!("g{g}.c{c}.{field}")
    }
}

/// `g0.c12.kind` → (0, 12, "kind"); indexes beyond the condition limit are not rows.
fn row_field(key: &str) -> Option<(usize, usize, &str)> {
    let mut parts = key.splitn(3, '.');
    let group = parts.next()?.strip_prefix('g')?.parse::<usize>().ok()?;
    let condition = parts.next()?.strip_prefix('c')?.parse::<usize>().ok()?;
    let field = parts.next()?;
    (group < MAX_CONDITIONS && condition < MAX_CONDITIONS).then_some((group, condition, field))
}

/// A condition as a row: typed when the row gives back exactly this JSON, else a JSON row.
fn row_of(condition: &Value) -> Row {
    if let Some(row) = typed_row(condition) {
        if condition_of(&row).as_ref() == Ok(condition) {
            return row;
        }
    }
    Row {
        kind: "json".into(),
        json: serde_json::to_string_pretty(condition).unwrap_or_default(),
        was: "json".into(),
        ..Row::default()
    }
}

fn typed_row(condition: &Value) -> Option<Row> {
    let object = condition.as_object()?;
    let mut row = Row::default();
    match object.get("type")?.as_str()? {
        "profile-property" => {
            row.kind = "property".into();
            row.property = property_text(object.get("property")?.as_str()?);
            let filter = object.get("filter")?.as_object()?;
            let kind = filter.get("type")?.as_str()?;
            let operator = filter.get("operator")?.as_str()?;
            row.op = format!("{kind}:{operator}");
            match kind {
                "string" => row.value = filter.get("value")?.as_str()?.to_owned(),
                "numeric" => row.value = filter.get("value")?.as_number()?.to_string(),
                "boolean" => row.value = filter.get("value")?.as_bool()?.to_string(),
                "existence" => {}
                "date" => span_into(filter, &mut row)?,
                _ => return None,
            }
        }
        "profile-metric" => {
            row.kind = "metric".into();
            row.metric = object.get("metric_id")?.as_str()?.to_owned();
            row.measurement = object.get("measurement")?.as_str()?.to_owned();
            let filter = object.get("measurement_filter")?.as_object()?;
            row.count_op = filter.get("operator")?.as_str()?.to_owned();
            row.count = filter.get("value")?.as_number()?.to_string();
            let timeframe = object.get("timeframe_filter")?.as_object()?;
            row.time = timeframe.get("operator")?.as_str()?.to_owned();
            if row.time != "alltime" {
                span_into(timeframe, &mut row)?;
            }
        }
        "profile-group-membership" => {
            row.kind = "membership".into();
            row.member = object.get("is_member")?.as_bool()?.to_string();
            row.groups = object
                .get("group_ids")?
                .as_array()?
                .iter()
                .map(|id| id.as_str().map(str::to_owned))
                .collect::<Option<_>>()?;
        }
        "profile-marketing-consent" => {
            row.kind = "consent".into();
            let consent = object.get("consent")?.as_object()?;
            row.channel = consent.get("channel")?.as_str()?.to_owned();
            row.can_receive = consent.get("can_receive_marketing")?.as_bool()?.to_string();
            row.subscription = consent
                .get("consent_status")?
                .get("subscription")?
                .as_str()?
                .to_owned();
        }
        _ => return None,
    }
    row.was = row.kind.clone();
    Some(row)
}

fn span_into(filter: &Map<String, Value>, row: &mut Row) -> Option<()> {
    row.quantity = filter.get("quantity")?.as_u64()?.to_string();
    row.unit = filter.get("unit")?.as_str()?.to_owned();
    Some(())
}

/// How the property field shows a property path: a custom property by its bare name unless
/// that name could be read as something else.
fn property_text(wire: &str) -> String {
    if let Some(name) = wire
        .strip_prefix("properties['")
        .and_then(|rest| rest.strip_suffix("']"))
    {
        if !name.is_empty() && property_wire(name) == wire {
            return name.to_owned();
        }
    }
    wire.to_owned()
}

/// The property field as a path: a built-in field (`email`), `location['city']`,
/// `properties['Name']`, or else the name of a custom property.
fn property_wire(text: &str) -> String {
    let text = text.trim();
    let built_in = BuiltIn::ALL.iter().any(|field| field.as_str() == text);
    if built_in || text.starts_with("location['") || text.starts_with("properties['") {
        text.to_owned()
    } else {
        format!("properties['{text}']")
    }
}

type RowError = (&'static str, String);

fn required<'a>(text: &'a str, field: &'static str) -> Result<&'a str, RowError> {
    let text = text.trim();
    if text.is_empty() {
        return Err((field, "is required".into()));
    }
    Ok(text)
}

fn number(text: &str, field: &'static str) -> Result<Number, RowError> {
    let text = required(text, field)?;
    if let Ok(n) = text.parse::<i64>() {
        return Ok(Number::from(n));
    }
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .ok_or((field, format!("'{text}' is not a number")))
}

fn quantity(row: &Row) -> Result<Value, RowError> {
    let text = required(&row.quantity, "quantity")?;
    let n: u32 = text
        .parse()
        .map_err(|_| ("quantity", format!("'{text}' is not a whole number")))?;
    if !UNITS.contains(&row.unit.as_str()) {
        return Err(("unit", "choose hour, day or week".into()));
    }
    Ok(json!(n))
}

fn boolean(text: &str, field: &'static str) -> Result<bool, RowError> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err((field, format!("'{other}' is not true or false"))),
    }
}

/// The condition a row says.
fn condition_of(row: &Row) -> Result<Value, RowError> {
    match row.kind.as_str() {
        "property" => {
            let property = property_wire(required(&row.property, "property")?);
            let (kind, operator) = row
                .op
                .split_once(':')
                .ok_or(("op", "choose a comparison".to_owned()))?;
            let filter = match kind {
                "string" => json!({"type": "string", "operator": operator, "value": row.value}),
                "numeric" => json!({
                    "type": "numeric",
                    "operator": operator,
                    "value": number(&row.value, "value")?,
                }),
                "boolean" => json!({
                    "type": "boolean",
                    "operator": operator,
                    "value": boolean(row.value.trim(), "value")?,
                }),
                "existence" => json!({"type": "existence", "operator": operator}),
                "date" => json!({
                    "type": "date",
                    "operator": operator,
                    "quantity": quantity(row)?,
                    "unit": row.unit,
                }),
                _ => return Err(("op", "choose a comparison".into())),
            };
            Ok(json!({"type": "profile-property", "property": property, "filter": filter}))
        }
        "metric" => {
            let metric = required(&row.metric, "metric")?;
            let timeframe = match row.time.as_str() {
                "alltime" => json!({"type": "date", "operator": "alltime"}),
                operator => json!({
                    "type": "date",
                    "operator": operator,
                    "quantity": quantity(row)?,
                    "unit": row.unit,
                }),
            };
            Ok(json!({
                "type": "profile-metric",
                "metric_id": metric,
                "measurement": row.measurement,
                "measurement_filter": {
                    "type": "numeric",
                    "operator": row.count_op,
                    "value": number(&row.count, "count")?,
                },
                "timeframe_filter": timeframe,
            }))
        }
        "membership" => {
            if row.groups.is_empty() {
                return Err(("group", "choose at least one list or segment".into()));
            }
            Ok(json!({
                "type": "profile-group-membership",
                "is_member": boolean(&row.member, "member")?,
                "group_ids": row.groups,
            }))
        }
        "consent" => Ok(json!({
            "type": "profile-marketing-consent",
            "consent": {
                "channel": row.channel,
                "can_receive_marketing": boolean(&row.can_receive, "can_receive")?,
                "consent_status": {"subscription": row.subscription},
            },
        })),
        "json" => {
            let text = required(&row.json, "json")?;
            serde_json::from_str(text).map_err(|err| ("json", format!("not JSON: {err}")))
        }
        other => Err(("kind", format!("'{other}' is not a kind of condition"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn form_rows_become_groups_of_alternatives() {
        let builder = Builder::from_form(&pairs(&[
            ("csrf", "x"),
            ("g0.c0.kind", "property"),
            ("g0.c0.property", "Plan"),
            ("g0.c0.op", "string:equals"),
            ("g0.c0.value", "pro"),
            ("g0.c1.kind", "property"),
            ("g0.c1.property", "email"),
            ("g0.c1.op", "existence:is-set"),
            ("g1.c0.kind", "metric"),
            ("g1.c0.metric", "M1"),
            ("g1.c0.measurement", "count"),
            ("g1.c0.count_op", "greater-than"),
            ("g1.c0.count", "2"),
            ("g1.c0.time", "in-the-last"),
            ("g1.c0.quantity", "30"),
            ("g1.c0.unit", "day"),
        ]));
        let definition = builder.to_definition().expect("valid");
        assert_eq!(
            definition,
            json!({"condition_groups": [
                {"conditions": [
                    {"type": "profile-property", "property": "properties['Plan']",
                     "filter": {"type": "string", "operator": "equals", "value": "pro"}},
                    {"type": "profile-property", "property": "email",
                     "filter": {"type": "existence", "operator": "is-set"}},
                ]},
                {"conditions": [
                    {"type": "profile-metric", "metric_id": "M1", "measurement": "count",
                     "measurement_filter": {"type": "numeric", "operator": "greater-than", "value": 2},
                     "timeframe_filter": {"type": "date", "operator": "in-the-last", "quantity": 30, "unit": "day"}},
                ]},
            ]})
        );
        assert_eq!(Builder::from_definition(&definition), builder);
    }

    #[test]
    fn a_condition_the_fields_cannot_say_stays_json_and_round_trips() {
        let definition = json!({"condition_groups": [{"conditions": [
            {"type": "profile-metric", "metric_id": "M1", "measurement": "count",
             "measurement_filter": {"type": "numeric", "operator": "greater-than", "value": 0},
             "timeframe_filter": {"type": "date", "operator": "alltime"},
             "metric_filters": [{"property": "Color", "filter": {"type": "string", "operator": "equals", "value": "red"}}]},
            {"type": "profile-group-membership", "is_member": false, "group_ids": ["L1", "L2"]},
            {"type": "profile-marketing-consent", "consent": {"channel": "email",
             "can_receive_marketing": true, "consent_status": {"subscription": "subscribed"}}},
            {"type": "profile-property", "property": "properties['email']",
             "filter": {"type": "numeric", "operator": "less-than", "value": 2.5}},
        ]}]});
        let builder = Builder::from_definition(&definition);
        let kinds: Vec<&str> = builder.groups[0].iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["json", "membership", "consent", "property"]);
        assert_eq!(builder.groups[0][3].property, "properties['email']");
        assert_eq!(builder.to_definition().expect("valid"), definition);
    }

    #[test]
    fn errors_are_named_at_the_field() {
        let builder = Builder::from_form(&pairs(&[
            ("g0.c0.kind", "metric"),
            ("g0.c0.metric", "M1"),
            ("g0.c0.count", "many"),
            ("g0.c1.kind", "property"),
            ("g0.c1.property", ""),
        ]));
        let errors = builder.to_definition().expect_err("invalid");
        assert!(errors["g0.c0.count"].contains("not a number"));
        assert_eq!(errors["g0.c1.property"], "is required");

        let builder = Builder::from_form(&pairs(&[
            ("g0.c0.kind", "metric"),
            ("g0.c0.metric", "M1"),
            ("g0.c0.count_op", "about"),
            ("g0.c0.count", "1"),
        ]));
        let errors = builder.to_definition().expect_err("bad operator");
        assert!(errors.contains_key("g0.c0.count_op"), "{errors:?}");
    }

    #[test]
    fn a_form_holds_at_most_one_row_past_the_limit() {
        let mut fields = Vec::new();
        for g in 0..MAX_CONDITIONS {
            for c in 0..10 {
                fields.push((format!("g{g}.c{c}.kind"), "property".to_owned()));
            }
        }
        let builder = Builder::from_form(&fields);
        let rows: usize = builder.groups.iter().map(Vec::len).sum();
        assert_eq!(rows, MAX_CONDITIONS + 1);
        let errors = builder.to_definition().expect_err("too many");
        assert!(errors["definition"].contains("at most 100"), "{errors:?}");
    }

    #[test]
    fn a_row_switched_to_json_starts_from_its_fields() {
        let builder = Builder::from_form(&pairs(&[
            ("g0.c0.kind", "json"),
            ("g0.c0.was", "property"),
            ("g0.c0.property", "Plan"),
            ("g0.c0.op", "existence:is-set"),
        ]));
        let row = &builder.groups[0][0];
        assert_eq!(row.was, "json");
        let condition: Value = serde_json::from_str(&row.json).expect("json");
        assert_eq!(
            condition,
            json!({"type": "profile-property", "property": "properties['Plan']",
                "filter": {"type": "existence", "operator": "is-set"}})
        );
    }

    #[test]
    fn buttons_add_and_remove_rows() {
        let mut builder = Builder::default();
        builder.apply(Edit::parse("add-condition:0").unwrap());
        builder.apply(Edit::parse("add-group").unwrap());
        assert_eq!(builder.groups.len(), 2);
        assert_eq!(builder.groups[0].len(), 2);
        builder.apply(Edit::parse("remove:1.0").unwrap());
        assert_eq!(builder.groups.len(), 1);
        builder.apply(Edit::Remove(0, 0));
        builder.apply(Edit::Remove(0, 0));
        assert_eq!(builder, Builder::default());
        assert_eq!(Edit::parse("remove:x"), None);
    }
}
