//! Klaviyo's flow definition JSON: parsed, validated and written back.
//!
//! ```json
//! {"triggers": [{"type": "metric", "id": "METRIC_ID", "trigger_filter": {…}}],
//!  "profile_filter": {"condition_groups": […]},
//!  "entry_action_id": "a1",
//!  "actions": [{"temporary_id": "a1", "type": "time-delay", "data": {"unit": "hours", "value": 4},
//!               "links": {"next": "a2"}}, …],
//!  "reentry_criteria": {"duration": 1, "unit": "day"}}
//! ```
//!
//! New actions carry `temporary_id`, existing ones `id`; [`FlowDefinition::assign_ids`] gives
//! every temporary action a real id and rewrites the links, and [`FlowDefinition::to_json`]
//! writes the definition back with real ids. Every problem is reported with the JSON pointer
//! of the value at fault (`/data/attributes/definition/actions/2/data/unit`).

use std::collections::HashMap;

use jiff::civil::{Time, Weekday};
use jiff::SignedDuration;
use serde_json::{json, Map, Value};
use signalbox_outbound::OutboundError;
use signalbox_seglang::{Definition, EventFilter, ParseOptions};

/// Where a definition sits in a Flows API request body.
pub const DEFINITION_POINTER: &str = "/data/attributes/definition";

/// One problem in a flow definition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pointer}: {detail}")]
pub struct DefinitionProblem {
    /// JSON pointer (RFC 6901) of the offending value in the request body.
    pub pointer: String,
    /// Lowercase, no trailing period.
    pub detail: String,
}

/// A flow as Klaviyo defines it: one trigger, a profile filter, actions linked from an entry
/// action, and when a profile may enter again.
#[derive(Debug, Clone)]
pub struct FlowDefinition {
    pub trigger: Trigger,
    pub profile_filter: Option<ProfileFilter>,
    pub entry_action_id: String,
    pub actions: Vec<Action>,
    pub reentry: Reentry,
}

/// What starts a run.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// An event of the metric, whose properties pass the trigger filter (checked once, at entry).
    Metric {
        metric_id: String,
        filter: Option<TriggerFilter>,
    },
    /// Added to the list (single opt-in) or confirmed (double opt-in).
    List { list_id: String },
    /// Newly entered the segment.
    Segment { segment_id: String },
    /// A date property of the profile, `before` units ahead of it, repeating or not.
    Date(DateTrigger),
}

impl Trigger {
    /// Klaviyo's `trigger_type` attribute.
    pub fn type_name(&self) -> &'static str {
        match self {
            Trigger::Metric { .. } => "Metric",
            Trigger::List { .. } => "Added to List",
            Trigger::Segment { .. } => "Added to Segment",
            Trigger::Date(_) => "Date Based",
        }
    }
}

/// `{"type": "date", "date_field_type": "profile-property", "date_profile_property": "Birthday",
/// "timedelta_unit_before_date": "days", "timedelta_value_before_date": 3,
/// "recurrence_frequency": "annually", "timezone": "profile"}`. A negative value means after
/// the date. The run starts at 09:00 local time of the trigger day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateTrigger {
    /// A custom property name (`Birthday`) or `properties['Birthday']`.
    pub property: String,
    pub unit: DateUnit,
    pub before: i64,
    pub recurrence: Recurrence,
    /// `profile` or an IANA name.
    pub timezone: TimezoneChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateUnit {
    Days,
    Weeks,
    Months,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recurrence {
    Never,
    Weekly,
    Monthly,
    Annually,
}

/// Whose timezone a delay or a date trigger reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimezoneChoice {
    /// The profile's `location.timezone`, else the account's.
    Profile,
    /// The account's (`FlowsConfig::account_timezone`).
    Account,
    /// A named IANA zone.
    Named(String),
}

/// A trigger filter: `metric-property` conditions on the triggering event's properties; groups
/// ANDed, conditions inside a group ORed.
#[derive(Debug, Clone)]
pub struct TriggerFilter {
    pub groups: Vec<Vec<EventFilter>>,
    raw: Value,
}

impl TriggerFilter {
    pub fn matches(&self, properties: &Map<String, Value>) -> bool {
        self.groups
            .iter()
            .all(|group| group.iter().any(|f| f.matches(properties)))
    }

    pub fn to_json(&self) -> Value {
        self.raw.clone()
    }
}

/// The flow's profile filter: segment conditions (with `flow-start` timeframes) plus the
/// flow-only `profile-not-in-flow` condition, each in a group of its own.
#[derive(Debug, Clone)]
pub struct ProfileFilter {
    /// `None` when every group was a flow-only condition.
    pub conditions: Option<Definition>,
    /// `profile-not-in-flow`: skip profiles that entered this flow within the duration
    /// (`None` inside: ever).
    pub not_in_flow: Option<Option<SignedDuration>>,
    raw: Value,
}

impl ProfileFilter {
    pub fn to_json(&self) -> Value {
        self.raw.clone()
    }
}

/// `reentry_criteria`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reentry {
    /// `alltime` + 0: every trigger starts a run.
    Always,
    /// `alltime` + 1: once per profile, ever.
    Once,
    /// Again once this long passed since the last entry.
    After(SignedDuration),
}

impl Reentry {
    pub fn to_json(self) -> Value {
        match self {
            Reentry::Always => json!({"duration": 0, "unit": "alltime"}),
            Reentry::Once => json!({"duration": 1, "unit": "alltime"}),
            Reentry::After(d) => {
                let hours = d.as_secs() / 3600;
                if hours % (24 * 7) == 0 {
                    json!({"duration": hours / (24 * 7), "unit": "week"})
                } else if hours % 24 == 0 {
                    json!({"duration": hours / 24, "unit": "day"})
                } else {
                    json!({"duration": hours, "unit": "hour"})
                }
            }
        }
    }
}

/// One step of a flow.
#[derive(Debug, Clone)]
pub struct Action {
    /// The real id, or the `temporary_id` until [`FlowDefinition::assign_ids`].
    pub id: String,
    /// Whether `id` is still a temporary id.
    pub temporary: bool,
    pub kind: ActionKind,
    /// `links.next` (`next_if_true`/`next_if_false` for splits live in the kind).
    pub next: Option<String>,
}

#[derive(Debug, Clone)]
pub enum ActionKind {
    TimeDelay(TimeDelay),
    ConditionalSplit {
        filter: ProfileFilter,
        next_if_true: Option<String>,
        next_if_false: Option<String>,
    },
    TriggerSplit {
        filter: TriggerFilter,
        next_if_true: Option<String>,
        next_if_false: Option<String>,
    },
    SendEmail(SendEmail),
    SendWebhook(SendWebhook),
    UpdateProfile(UpdateProfile),
    ListUpdate(ListUpdate),
}

impl ActionKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            ActionKind::TimeDelay(_) => "time-delay",
            ActionKind::ConditionalSplit { .. } => "conditional-split",
            ActionKind::TriggerSplit { .. } => "trigger-split",
            ActionKind::SendEmail(_) => "send-email",
            ActionKind::SendWebhook(_) => "send-webhook",
            ActionKind::UpdateProfile(_) => "update-profile",
            ActionKind::ListUpdate(_) => "list-update",
        }
    }
}

/// `time-delay`: wait `value` `unit`s, then (optionally) until a time of day and an allowed
/// weekday in the profile's or the account's timezone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeDelay {
    pub unit: DelayUnit,
    pub value: i64,
    pub until_time: Option<Time>,
    /// Empty: any day.
    pub until_weekdays: Vec<Weekday>,
    pub timezone: TimezoneChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelayUnit {
    Minutes,
    Hours,
    Days,
}

impl DelayUnit {
    fn as_str(self) -> &'static str {
        match self {
            DelayUnit::Minutes => "minutes",
            DelayUnit::Hours => "hours",
            DelayUnit::Days => "days",
        }
    }
}

impl TimeDelay {
    pub fn duration(&self) -> SignedDuration {
        match self.unit {
            DelayUnit::Minutes => SignedDuration::from_mins(self.value),
            DelayUnit::Hours => SignedDuration::from_hours(self.value),
            DelayUnit::Days => SignedDuration::from_hours(24 * self.value),
        }
    }
}

/// A message action's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageStatus {
    /// Nothing is sent; runs pass on (skip reason `draft`).
    Draft,
    /// Queued for review instead of sent (skip reason `manual`).
    Manual,
    Live,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Draft => "draft",
            MessageStatus::Manual => "manual",
            MessageStatus::Live => "live",
        }
    }

    pub fn parse(s: &str) -> Option<MessageStatus> {
        match s {
            "draft" => Some(MessageStatus::Draft),
            "manual" => Some(MessageStatus::Manual),
            "live" => Some(MessageStatus::Live),
            _ => None,
        }
    }
}

/// Smart Sending's default window for email: 16 hours.
pub const DEFAULT_SMART_SENDING_WINDOW: SignedDuration = SignedDuration::from_hours(16);

/// `send-email`.
#[derive(Debug, Clone, PartialEq)]
pub struct SendEmail {
    pub status: MessageStatus,
    pub from_email: Option<String>,
    pub from_label: Option<String>,
    pub subject: String,
    pub template_id: Option<String>,
    pub html: Option<String>,
    pub text: Option<String>,
    pub smart_sending: bool,
    /// `smart_sending_window_hours`, default 16.
    pub smart_sending_window: SignedDuration,
    /// Transactional messages skip Smart Sending and marketing consent (not suppression).
    pub transactional: bool,
}

/// `send-webhook`: POST `body` (a template; a JSON body has its strings rendered) to `url`.
#[derive(Debug, Clone, PartialEq)]
pub struct SendWebhook {
    pub status: MessageStatus,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    /// The HMAC secret; `None` derives one per flow and action from the configured key.
    pub secret: Option<String>,
}

/// `update-profile`: `profile_operations`, each `{"operation": "update"|"unset", "key",
/// "value"}` on a custom property or a standard field.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateProfile {
    pub operations: Vec<ProfileOperation>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProfileOperation {
    Set { key: String, value: Value },
    Unset { key: String },
}

/// `list-update`: add to or remove from a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListUpdate {
    pub list_id: String,
    pub add: bool,
}

impl FlowDefinition {
    /// Parses a definition whose pointers start at [`DEFINITION_POINTER`].
    pub fn parse(value: &Value) -> Result<FlowDefinition, Vec<DefinitionProblem>> {
        FlowDefinition::parse_at(value, DEFINITION_POINTER)
    }

    /// Parses a definition sitting at `prefix` in the request body.
    pub fn parse_at(value: &Value, prefix: &str) -> Result<FlowDefinition, Vec<DefinitionProblem>> {
        let mut p = Parser {
            problems: Vec::new(),
        };
        let parsed = p.definition(value, prefix);
        match parsed {
            Some(def) if p.problems.is_empty() => Ok(def),
            _ => {
                if p.problems.is_empty() {
                    p.problems.push(DefinitionProblem {
                        pointer: prefix.to_owned(),
                        detail: "invalid definition".into(),
                    });
                }
                Err(p.problems)
            }
        }
    }

    pub fn action(&self, id: &str) -> Option<&Action> {
        self.actions.iter().find(|a| a.id == id)
    }

    /// Gives every action with a temporary id a real one from `next_id`, and rewrites links
    /// and `entry_action_id`. Returns the mapping temporary → real.
    pub fn assign_ids(&mut self, mut next_id: impl FnMut() -> String) -> HashMap<String, String> {
        let mut map = HashMap::new();
        for action in &mut self.actions {
            if action.temporary {
                let id = next_id();
                map.insert(action.id.clone(), id.clone());
                action.id = id;
                action.temporary = false;
            }
        }
        let fix = |link: &mut Option<String>| {
            if let Some(target) = link.as_mut() {
                if let Some(real) = map.get(target) {
                    *target = real.clone();
                }
            }
        };
        for action in &mut self.actions {
            fix(&mut action.next);
            match &mut action.kind {
                ActionKind::ConditionalSplit {
                    next_if_true,
                    next_if_false,
                    ..
                }
                | ActionKind::TriggerSplit {
                    next_if_true,
                    next_if_false,
                    ..
                } => {
                    fix(next_if_true);
                    fix(next_if_false);
                }
                _ => {}
            }
        }
        if let Some(real) = map.get(&self.entry_action_id) {
            self.entry_action_id = real.clone();
        }
        map
    }

    /// The definition in Klaviyo's shape, with real ids (`id`) or temporary ones
    /// (`temporary_id`) for actions not yet given one. Webhook secrets are left out.
    pub fn to_json(&self) -> Value {
        self.to_json_with(false)
    }

    /// [`FlowDefinition::to_json`] with webhook secrets: what `flows.db` keeps.
    pub(crate) fn to_stored_json(&self) -> Value {
        self.to_json_with(true)
    }

    fn to_json_with(&self, secrets: bool) -> Value {
        let trigger = match &self.trigger {
            Trigger::Metric { metric_id, filter } => {
                let mut t = json!({"type": "metric", "id": metric_id});
                if let Some(filter) = filter {
                    t["trigger_filter"] = filter.to_json();
                }
                t
            }
            Trigger::List { list_id } => json!({"type": "list", "id": list_id}),
            Trigger::Segment { segment_id } => json!({"type": "segment", "id": segment_id}),
            Trigger::Date(d) => json!({
                "type": "date",
                "date_field_type": "profile-property",
                "date_profile_property": d.property,
                "timedelta_unit_before_date": match d.unit {
                    DateUnit::Days => "days",
                    DateUnit::Weeks => "weeks",
                    DateUnit::Months => "months",
                },
                "timedelta_value_before_date": d.before,
                "recurrence_frequency": match d.recurrence {
                    Recurrence::Never => "never",
                    Recurrence::Weekly => "weekly",
                    Recurrence::Monthly => "monthly",
                    Recurrence::Annually => "annually",
                },
                "timezone": timezone_json(&d.timezone),
            }),
        };
        json!({
            "triggers": [trigger],
            "profile_filter": self.profile_filter.as_ref().map(ProfileFilter::to_json),
            "entry_action_id": self.entry_action_id,
            "actions": self.actions.iter().map(|a| a.to_json_with(secrets)).collect::<Vec<_>>(),
            "reentry_criteria": self.reentry.to_json(),
        })
    }

    /// Sets the status of every message action (PATCH of a flow's status).
    pub fn set_message_status(&mut self, status: MessageStatus) {
        for action in &mut self.actions {
            match &mut action.kind {
                ActionKind::SendEmail(e) => e.status = status,
                ActionKind::SendWebhook(w) => w.status = status,
                _ => {}
            }
        }
    }
}

fn timezone_json(tz: &TimezoneChoice) -> Value {
    match tz {
        TimezoneChoice::Profile => json!("profile"),
        TimezoneChoice::Account => json!("account"),
        TimezoneChoice::Named(name) => json!(name),
    }
}

fn weekday_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Monday => "monday",
        Weekday::Tuesday => "tuesday",
        Weekday::Wednesday => "wednesday",
        Weekday::Thursday => "thursday",
        Weekday::Friday => "friday",
        Weekday::Saturday => "saturday",
        Weekday::Sunday => "sunday",
    }
}

impl Action {
    /// The action in Klaviyo's shape, without a webhook secret.
    pub fn to_json(&self) -> Value {
        self.to_json_with(false)
    }

    fn to_json_with(&self, secrets: bool) -> Value {
        let id_key = if self.temporary { "temporary_id" } else { "id" };
        let (data, links) = match &self.kind {
            ActionKind::TimeDelay(d) => (
                json!({
                    "unit": d.unit.as_str(),
                    "value": d.value,
                    "delay_until_time": d.until_time.map(|t| t.strftime("%H:%M").to_string()),
                    "delay_until_weekdays": if d.until_weekdays.is_empty() {
                        Value::Null
                    } else {
                        d.until_weekdays.iter().map(|w| weekday_name(*w)).collect::<Vec<_>>().into()
                    },
                    "timezone": timezone_json(&d.timezone),
                }),
                json!({"next": self.next}),
            ),
            ActionKind::ConditionalSplit {
                filter,
                next_if_true,
                next_if_false,
            } => (
                json!({"profile_filter": filter.to_json()}),
                json!({"next_if_true": next_if_true, "next_if_false": next_if_false}),
            ),
            ActionKind::TriggerSplit {
                filter,
                next_if_true,
                next_if_false,
            } => (
                json!({"trigger_filter": filter.to_json()}),
                json!({"next_if_true": next_if_true, "next_if_false": next_if_false}),
            ),
            ActionKind::SendEmail(e) => {
                let mut message = json!({
                    "from_email": e.from_email,
                    "from_label": e.from_label,
                    "subject_line": e.subject,
                    "smart_sending_enabled": e.smart_sending,
                    "smart_sending_window_hours": e.smart_sending_window.as_secs() / 3600,
                    "transactional": e.transactional,
                });
                if let Some(id) = &e.template_id {
                    message["template_id"] = json!(id);
                }
                if let Some(html) = &e.html {
                    message["html"] = json!(html);
                }
                if let Some(text) = &e.text {
                    message["text"] = json!(text);
                }
                (
                    json!({"status": e.status.as_str(), "message": message}),
                    json!({"next": self.next}),
                )
            }
            ActionKind::SendWebhook(w) => {
                let headers: Map<String, Value> = w
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect();
                let mut data = json!({
                    "status": w.status.as_str(),
                    "url": w.url,
                    "headers": headers,
                    "body": w.body,
                });
                if let (true, Some(secret)) = (secrets, &w.secret) {
                    data["secret"] = json!(secret);
                }
                (data, json!({"next": self.next}))
            }
            ActionKind::UpdateProfile(u) => (
                json!({"profile_operations": u.operations.iter().map(|op| match op {
                    ProfileOperation::Set { key, value } =>
                        json!({"operation": "update", "key": key, "value": value}),
                    ProfileOperation::Unset { key } => json!({"operation": "unset", "key": key}),
                }).collect::<Vec<_>>()}),
                json!({"next": self.next}),
            ),
            ActionKind::ListUpdate(l) => (
                json!({"list_id": l.list_id, "action": if l.add { "add" } else { "remove" }}),
                json!({"next": self.next}),
            ),
        };
        json!({
            id_key: self.id,
            "type": self.kind.type_name(),
            "data": data,
            "links": links,
        })
    }

    /// The actions this one may lead to.
    pub fn successors(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.next.iter().map(String::as_str).collect();
        if let ActionKind::ConditionalSplit {
            next_if_true,
            next_if_false,
            ..
        }
        | ActionKind::TriggerSplit {
            next_if_true,
            next_if_false,
            ..
        } = &self.kind
        {
            out.extend(next_if_true.iter().map(String::as_str));
            out.extend(next_if_false.iter().map(String::as_str));
        }
        out
    }
}

// Parsing.

struct Parser {
    problems: Vec<DefinitionProblem>,
}

fn join(at: &str, token: impl std::fmt::Display) -> String {
    let token = token.to_string().replace('~', "~0").replace('/', "~1");
    format!("{at}/{token}")
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A field that may be absent or null.
fn opt<'v>(object: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    object.get(key).filter(|v| !v.is_null())
}

impl Parser {
    fn problem(&mut self, pointer: String, detail: impl Into<String>) {
        self.problems.push(DefinitionProblem {
            pointer,
            detail: detail.into(),
        });
    }

    fn object<'v>(&mut self, value: &'v Value, at: &str) -> Option<&'v Map<String, Value>> {
        match value {
            Value::Object(o) => Some(o),
            other => {
                self.problem(
                    at.to_owned(),
                    format!("expected an object, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// Flags fields this engine does not know. A `null` is let through: SDKs send every
    /// optional field of Klaviyo's model, `null` when unset.
    fn known(&mut self, object: &Map<String, Value>, at: &str, allowed: &[&str]) {
        for (key, value) in object {
            if !allowed.contains(&key.as_str()) && !value.is_null() {
                self.problem(join(at, key), format!("unknown field `{key}`"));
            }
        }
    }

    fn required<'v>(
        &mut self,
        object: &'v Map<String, Value>,
        at: &str,
        key: &str,
    ) -> Option<&'v Value> {
        match opt(object, key) {
            Some(v) => Some(v),
            None => {
                self.problem(join(at, key), format!("`{key}` is required"));
                None
            }
        }
    }

    fn string(&mut self, value: &Value, at: &str) -> Option<String> {
        match value {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::String(_) => {
                self.problem(at.to_owned(), "must not be empty");
                None
            }
            other => {
                self.problem(
                    at.to_owned(),
                    format!("expected a string, found {}", kind(other)),
                );
                None
            }
        }
    }

    fn opt_string(&mut self, object: &Map<String, Value>, at: &str, key: &str) -> Option<String> {
        opt(object, key).and_then(|v| self.string(v, &join(at, key)))
    }

    fn bool(&mut self, value: &Value, at: &str) -> Option<bool> {
        match value {
            Value::Bool(b) => Some(*b),
            other => {
                self.problem(
                    at.to_owned(),
                    format!("expected a boolean, found {}", kind(other)),
                );
                None
            }
        }
    }

    fn integer(&mut self, value: &Value, at: &str, min: i64, max: i64) -> Option<i64> {
        match value.as_i64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(_) => {
                self.problem(at.to_owned(), format!("must be between {min} and {max}"));
                None
            }
            None => {
                self.problem(
                    at.to_owned(),
                    format!("expected an integer, found {}", kind(value)),
                );
                None
            }
        }
    }

    fn definition(&mut self, value: &Value, at: &str) -> Option<FlowDefinition> {
        let object = self.object(value, at)?;
        self.known(
            object,
            at,
            &[
                "triggers",
                "profile_filter",
                "entry_action_id",
                "actions",
                "reentry_criteria",
            ],
        );
        let trigger = self.required(object, at, "triggers").and_then(|v| {
            let at = join(at, "triggers");
            match v {
                Value::Array(items) if items.len() == 1 => self.trigger(&items[0], &join(&at, 0)),
                Value::Array(_) => {
                    self.problem(at, "a flow has exactly one trigger");
                    None
                }
                other => {
                    self.problem(at, format!("expected an array, found {}", kind(other)));
                    None
                }
            }
        });
        let profile_filter = opt(object, "profile_filter")
            .map(|v| self.profile_filter(v, &join(at, "profile_filter")));
        let entry = self
            .required(object, at, "entry_action_id")
            .and_then(|v| self.string(v, &join(at, "entry_action_id")));
        let actions_at = join(at, "actions");
        let actions = self.required(object, at, "actions").and_then(|v| match v {
            Value::Array(items) if !items.is_empty() => {
                let mut out = Vec::new();
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match self.action(item, &join(&actions_at, i)) {
                        Some(a) => out.push(a),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
            Value::Array(_) => {
                self.problem(actions_at.clone(), "a flow needs at least one action");
                None
            }
            other => {
                self.problem(
                    actions_at.clone(),
                    format!("expected an array, found {}", kind(other)),
                );
                None
            }
        });
        let trigger_is_metric = matches!(trigger, Some(Trigger::Metric { .. }));
        let reentry = match opt(object, "reentry_criteria") {
            Some(v) => self.reentry(v, &join(at, "reentry_criteria")),
            // Klaviyo's historical defaults: metric flows re-enter on every event, list,
            // segment and date flows once.
            None if trigger_is_metric => Some(Reentry::Always),
            None => Some(Reentry::Once),
        };
        let (trigger, entry, actions, reentry) = (trigger?, entry?, actions?, reentry?);
        let profile_filter = match profile_filter {
            Some(Some(f)) => Some(f),
            Some(None) => return None,
            None => None,
        };
        self.links(&actions, &entry, at);
        Some(FlowDefinition {
            trigger,
            profile_filter,
            entry_action_id: entry,
            actions,
            reentry,
        })
    }

    /// Ids unique, links resolve, no loops, a trigger split only under a metric trigger.
    fn links(&mut self, actions: &[Action], entry: &str, at: &str) {
        let actions_at = join(at, "actions");
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, action) in actions.iter().enumerate() {
            if index.insert(action.id.as_str(), i).is_some() {
                let key = if action.temporary {
                    "temporary_id"
                } else {
                    "id"
                };
                self.problem(
                    join(&join(&actions_at, i), key),
                    format!("duplicate action id `{}`", action.id),
                );
            }
        }
        if !index.contains_key(entry) {
            self.problem(
                join(at, "entry_action_id"),
                format!("no action has the id `{entry}`"),
            );
        }
        for (i, action) in actions.iter().enumerate() {
            let links_at = join(&join(&actions_at, i), "links");
            let check = |name: &str, link: &Option<String>, problems: &mut Vec<_>| {
                if let Some(target) = link {
                    if !index.contains_key(target.as_str()) {
                        problems.push(DefinitionProblem {
                            pointer: join(&links_at, name),
                            detail: format!("no action has the id `{target}`"),
                        });
                    } else if target == &action.id {
                        problems.push(DefinitionProblem {
                            pointer: join(&links_at, name),
                            detail: "an action cannot link to itself".into(),
                        });
                    }
                }
            };
            check("next", &action.next, &mut self.problems);
            if let ActionKind::ConditionalSplit {
                next_if_true,
                next_if_false,
                ..
            }
            | ActionKind::TriggerSplit {
                next_if_true,
                next_if_false,
                ..
            } = &action.kind
            {
                check("next_if_true", next_if_true, &mut self.problems);
                check("next_if_false", next_if_false, &mut self.problems);
            }
        }
        if !self.problems.is_empty() {
            return;
        }
        // Loops: depth-first search with colours, on a stack of its own: a chain of many
        // thousand actions must not exhaust the thread's stack.
        let mut state = vec![0u8; actions.len()];
        for root in 0..actions.len() {
            if state[root] != 0 {
                continue;
            }
            state[root] = 1;
            // (action, how many of its successors were followed)
            let mut path = vec![(root, 0usize)];
            while let Some(&(i, followed)) = path.last() {
                let Some(next) = actions[i].successors().get(followed).copied() else {
                    state[i] = 2;
                    path.pop();
                    continue;
                };
                if let Some(top) = path.last_mut() {
                    top.1 += 1;
                }
                let j = index[next];
                if state[j] == 1 {
                    self.problem(
                        join(&join(&actions_at, i), "links"),
                        "the links form a loop",
                    );
                    return;
                }
                if state[j] == 0 {
                    state[j] = 1;
                    path.push((j, 0));
                }
            }
        }
    }

    fn trigger(&mut self, value: &Value, at: &str) -> Option<Trigger> {
        let object = self.object(value, at)?;
        let kind_value = self.required(object, at, "type")?;
        let kind = self.string(kind_value, &join(at, "type"))?;
        match kind.as_str() {
            "metric" => {
                self.known(object, at, &["type", "id", "trigger_filter"]);
                let id = self
                    .required(object, at, "id")
                    .and_then(|v| self.string(v, &join(at, "id")));
                let filter = opt(object, "trigger_filter")
                    .map(|v| self.trigger_filter(v, &join(at, "trigger_filter")));
                let filter = match filter {
                    Some(None) => return None,
                    Some(Some(f)) => Some(f),
                    None => None,
                };
                Some(Trigger::Metric {
                    metric_id: id?,
                    filter,
                })
            }
            "list" => {
                self.known(object, at, &["type", "id"]);
                let id = self.required(object, at, "id")?;
                Some(Trigger::List {
                    list_id: self.string(id, &join(at, "id"))?,
                })
            }
            "segment" => {
                self.known(object, at, &["type", "id"]);
                let id = self.required(object, at, "id")?;
                Some(Trigger::Segment {
                    segment_id: self.string(id, &join(at, "id"))?,
                })
            }
            "date" => self.date_trigger(object, at).map(Trigger::Date),
            "price-drop" | "low-inventory" | "back-in-stock" => {
                self.problem(
                    join(at, "type"),
                    format!("trigger type `{kind}` is not supported"),
                );
                None
            }
            other => {
                self.problem(
                    join(at, "type"),
                    format!(
                        "unknown trigger type `{other}`; expected metric, list, segment or date"
                    ),
                );
                None
            }
        }
    }

    fn date_trigger(&mut self, object: &Map<String, Value>, at: &str) -> Option<DateTrigger> {
        self.known(
            object,
            at,
            &[
                "type",
                "date_field_type",
                "date_profile_property",
                "timedelta_unit_before_date",
                "timedelta_value_before_date",
                "recurrence_frequency",
                "timezone",
            ],
        );
        if let Some(v) = opt(object, "date_field_type") {
            if v != "profile-property" {
                self.problem(
                    join(at, "date_field_type"),
                    "only `profile-property` date triggers are supported",
                );
            }
        }
        let property = self
            .required(object, at, "date_profile_property")
            .and_then(|v| self.string(v, &join(at, "date_profile_property")));
        let unit = match opt(object, "timedelta_unit_before_date") {
            None => Some(DateUnit::Days),
            Some(v) => match v.as_str() {
                Some("days") => Some(DateUnit::Days),
                Some("weeks") => Some(DateUnit::Weeks),
                Some("months") => Some(DateUnit::Months),
                _ => {
                    self.problem(
                        join(at, "timedelta_unit_before_date"),
                        "expected days, weeks or months",
                    );
                    None
                }
            },
        };
        let before = match opt(object, "timedelta_value_before_date") {
            None => Some(0),
            Some(v) => self.integer(v, &join(at, "timedelta_value_before_date"), -366, 366),
        };
        let recurrence = match opt(object, "recurrence_frequency") {
            None => Some(Recurrence::Annually),
            Some(v) => match v.as_str() {
                Some("never") => Some(Recurrence::Never),
                Some("weekly") => Some(Recurrence::Weekly),
                Some("monthly") => Some(Recurrence::Monthly),
                Some("annually") => Some(Recurrence::Annually),
                _ => {
                    self.problem(
                        join(at, "recurrence_frequency"),
                        "expected never, weekly, monthly or annually",
                    );
                    None
                }
            },
        };
        let timezone = self.timezone(object, at)?;
        Some(DateTrigger {
            property: property?,
            unit: unit?,
            before: before?,
            recurrence: recurrence?,
            timezone,
        })
    }

    fn timezone(&mut self, object: &Map<String, Value>, at: &str) -> Option<TimezoneChoice> {
        match opt(object, "timezone") {
            None => Some(TimezoneChoice::Profile),
            Some(v) => match v.as_str() {
                Some("profile") => Some(TimezoneChoice::Profile),
                Some("account") => Some(TimezoneChoice::Account),
                Some(name) if jiff::tz::TimeZone::get(name).is_ok() => {
                    Some(TimezoneChoice::Named(name.to_owned()))
                }
                _ => {
                    self.problem(
                        join(at, "timezone"),
                        "expected `profile`, `account` or an IANA timezone name",
                    );
                    None
                }
            },
        }
    }

    /// `metric-property` conditions, parsed by seglang as the `metric_filters` of a metric
    /// condition; its pointers are mapped back onto the trigger filter's.
    fn trigger_filter(&mut self, value: &Value, at: &str) -> Option<TriggerFilter> {
        let object = self.object(value, at)?;
        self.known(object, at, &["condition_groups"]);
        let groups_at = join(at, "condition_groups");
        let groups = match self.required(object, at, "condition_groups")? {
            Value::Array(groups) => groups,
            other => {
                self.problem(
                    groups_at,
                    format!("expected an array, found {}", kind(other)),
                );
                return None;
            }
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (g, group) in groups.iter().enumerate() {
            let group_at = join(&groups_at, g);
            let Some(group) = self.object(group, &group_at) else {
                ok = false;
                continue;
            };
            self.known(group, &group_at, &["conditions"]);
            let conditions_at = join(&group_at, "conditions");
            let conditions = match self.required(group, &group_at, "conditions") {
                Some(Value::Array(c)) if !c.is_empty() => c,
                Some(_) => {
                    self.problem(conditions_at, "expected a non-empty array");
                    ok = false;
                    continue;
                }
                None => {
                    ok = false;
                    continue;
                }
            };
            let mut filters = Vec::new();
            for (c, condition) in conditions.iter().enumerate() {
                let condition_at = join(&conditions_at, c);
                match self.metric_property(condition, &condition_at) {
                    Some(f) => filters.push(f),
                    None => ok = false,
                }
            }
            out.push(filters);
        }
        ok.then(|| TriggerFilter {
            groups: out,
            raw: value.clone(),
        })
    }

    fn metric_property(&mut self, value: &Value, at: &str) -> Option<EventFilter> {
        let object = self.object(value, at)?;
        self.known(object, at, &["type", "metric_id", "field", "filter"]);
        let kind = self.required(object, at, "type")?;
        if kind != "metric-property" {
            self.problem(join(at, "type"), "expected `metric-property`");
            return None;
        }
        let field = self.required(object, at, "field")?;
        let field = self.string(field, &join(at, "field"))?;
        let filter = self.required(object, at, "filter")?.clone();
        let wrapped = json!({"condition_groups": [{"conditions": [{
            "type": "profile-metric", "metric_id": "trigger", "measurement": "count",
            "measurement_filter": {"type": "numeric", "operator": "greater-than", "value": 0},
            "timeframe_filter": {"type": "date", "operator": "alltime"},
            "metric_filters": [{"property": field, "filter": filter}],
        }]}]});
        let inner = "/condition_groups/0/conditions/0/metric_filters/0/filter";
        match signalbox_seglang::parse_with(
            &wrapped,
            &ParseOptions {
                pointer_prefix: String::new(),
                allow_flow_start: false,
            },
        ) {
            Ok(def) => {
                let condition = def.condition_groups().first()?.conditions.first()?;
                match condition {
                    signalbox_seglang::Condition::Metric(m) => m.metric_filters.first().cloned(),
                    _ => None,
                }
            }
            Err(errors) => {
                for e in errors {
                    let rest = e.pointer.strip_prefix(inner).unwrap_or("");
                    self.problem(format!("{}{rest}", join(at, "filter")), e.detail);
                }
                None
            }
        }
    }

    fn profile_filter(&mut self, value: &Value, at: &str) -> Option<ProfileFilter> {
        let object = self.object(value, at)?;
        // Take out the flow-only `profile-not-in-flow` groups; the rest is seglang's.
        let mut not_in_flow = None;
        let mut rest = object.clone();
        if let Some(Value::Array(groups)) = object.get("condition_groups") {
            let mut kept = Vec::new();
            for (g, group) in groups.iter().enumerate() {
                let conditions = group.get("conditions").and_then(Value::as_array);
                let flow_only = conditions.is_some_and(|c| {
                    c.iter()
                        .any(|c| c.get("type") == Some(&json!("profile-not-in-flow")))
                });
                if !flow_only {
                    kept.push(group.clone());
                    continue;
                }
                let conditions = conditions.expect("checked");
                let group_at = join(&join(at, "condition_groups"), g);
                if conditions.len() != 1 {
                    self.problem(
                        join(&group_at, "conditions"),
                        "`profile-not-in-flow` must be the only condition of its group",
                    );
                    return None;
                }
                not_in_flow = Some(
                    self.not_in_flow(&conditions[0], &join(&join(&group_at, "conditions"), 0))?,
                );
            }
            rest.insert("condition_groups".into(), Value::Array(kept));
        }
        let conditions = match rest.get("condition_groups") {
            Some(Value::Array(groups)) if groups.is_empty() && not_in_flow.is_some() => None,
            _ => {
                let options = ParseOptions {
                    pointer_prefix: at.to_owned(),
                    allow_flow_start: true,
                };
                match signalbox_seglang::parse_with(&Value::Object(rest), &options) {
                    Ok(def) => Some(def),
                    Err(errors) => {
                        for e in errors {
                            self.problem(e.pointer, e.detail);
                        }
                        return None;
                    }
                }
            }
        };
        Some(ProfileFilter {
            conditions,
            not_in_flow,
            raw: value.clone(),
        })
    }

    /// `{"type": "profile-not-in-flow", "timeframe_filter": {"type": "date", "operator":
    /// "in-the-last", "quantity": 30, "unit": "day"}}`; without a timeframe: ever.
    fn not_in_flow(&mut self, value: &Value, at: &str) -> Option<Option<SignedDuration>> {
        let object = self.object(value, at)?;
        self.known(object, at, &["type", "timeframe_filter"]);
        let Some(tf) = opt(object, "timeframe_filter") else {
            return Some(None);
        };
        let tf_at = join(at, "timeframe_filter");
        let tf = self.object(tf, &tf_at)?;
        match tf.get("operator").and_then(Value::as_str) {
            Some("alltime") => Some(None),
            Some("in-the-last") => {
                let quantity = self.integer(
                    tf.get("quantity").unwrap_or(&Value::Null),
                    &join(&tf_at, "quantity"),
                    1,
                    100_000,
                )?;
                let hours = match tf.get("unit").and_then(Value::as_str) {
                    Some("hour") => 1,
                    Some("day") => 24,
                    Some("week") => 24 * 7,
                    _ => {
                        self.problem(join(&tf_at, "unit"), "expected hour, day or week");
                        return None;
                    }
                };
                Some(Some(SignedDuration::from_hours(quantity * hours)))
            }
            _ => {
                self.problem(join(&tf_at, "operator"), "expected in-the-last or alltime");
                None
            }
        }
    }

    fn reentry(&mut self, value: &Value, at: &str) -> Option<Reentry> {
        let object = self.object(value, at)?;
        self.known(object, at, &["duration", "unit"]);
        let duration = self
            .required(object, at, "duration")
            .and_then(|v| self.integer(v, &join(at, "duration"), 0, 100_000));
        let unit = self
            .required(object, at, "unit")
            .and_then(|v| self.string(v, &join(at, "unit")));
        let (duration, unit) = (duration?, unit?);
        let hours = match unit.as_str() {
            "alltime" => {
                return Some(if duration == 0 {
                    Reentry::Always
                } else {
                    Reentry::Once
                })
            }
            "hour" => 1,
            "day" => 24,
            "week" => 24 * 7,
            _ => {
                self.problem(join(at, "unit"), "expected hour, day, week or alltime");
                return None;
            }
        };
        Some(if duration == 0 {
            Reentry::Always
        } else {
            Reentry::After(SignedDuration::from_hours(duration * hours))
        })
    }

    fn action(&mut self, value: &Value, at: &str) -> Option<Action> {
        let object = self.object(value, at)?;
        self.known(object, at, &["id", "temporary_id", "type", "data", "links"]);
        let (id, temporary) = match (opt(object, "id"), opt(object, "temporary_id")) {
            (Some(id), _) => (self.id_string(id, &join(at, "id"))?, false),
            (None, Some(id)) => (self.id_string(id, &join(at, "temporary_id"))?, true),
            (None, None) => {
                self.problem(
                    join(at, "temporary_id"),
                    "an action needs an `id` or a `temporary_id`",
                );
                return None;
            }
        };
        let kind_value = self.required(object, at, "type")?;
        let kind = self.string(kind_value, &join(at, "type"))?;
        let empty = Map::new();
        let data_at = join(at, "data");
        let data = match opt(object, "data") {
            Some(v) => self.object(v, &data_at)?,
            None => &empty,
        };
        let links_at = join(at, "links");
        let links = match opt(object, "links") {
            Some(v) => self.object(v, &links_at)?,
            None => &empty,
        };
        let split = matches!(kind.as_str(), "conditional-split" | "trigger-split");
        if split {
            self.known(links, &links_at, &["next_if_true", "next_if_false"]);
        } else {
            self.known(links, &links_at, &["next"]);
        }
        let link = |p: &mut Parser, name: &str| {
            opt(links, name).and_then(|v| p.id_string(v, &join(&links_at, name)))
        };
        let next = if split { None } else { link(self, "next") };
        let kind = match kind.as_str() {
            "time-delay" => ActionKind::TimeDelay(self.time_delay(data, &data_at)?),
            "conditional-split" => {
                self.known(data, &data_at, &["profile_filter"]);
                let filter = self.required(data, &data_at, "profile_filter")?;
                let filter = self.profile_filter(filter, &join(&data_at, "profile_filter"))?;
                ActionKind::ConditionalSplit {
                    filter,
                    next_if_true: link(self, "next_if_true"),
                    next_if_false: link(self, "next_if_false"),
                }
            }
            "trigger-split" => {
                self.known(data, &data_at, &["trigger_filter"]);
                let filter = self.required(data, &data_at, "trigger_filter")?;
                let filter = self.trigger_filter(filter, &join(&data_at, "trigger_filter"))?;
                ActionKind::TriggerSplit {
                    filter,
                    next_if_true: link(self, "next_if_true"),
                    next_if_false: link(self, "next_if_false"),
                }
            }
            "send-email" => ActionKind::SendEmail(self.send_email(data, &data_at)?),
            "send-webhook" => ActionKind::SendWebhook(self.send_webhook(data, &data_at)?),
            "update-profile" => ActionKind::UpdateProfile(self.update_profile(data, &data_at)?),
            "list-update" => {
                self.known(data, &data_at, &["list_id", "action"]);
                let list_id = self
                    .required(data, &data_at, "list_id")
                    .and_then(|v| self.string(v, &join(&data_at, "list_id")));
                let add = match opt(data, "action").and_then(Value::as_str) {
                    None | Some("add") => Some(true),
                    Some("remove") => Some(false),
                    Some(_) => {
                        self.problem(join(&data_at, "action"), "expected add or remove");
                        None
                    }
                };
                ActionKind::ListUpdate(ListUpdate {
                    list_id: list_id?,
                    add: add?,
                })
            }
            "send-sms" | "send-mobile-push" | "send-whatsapp" | "multi-branch-split"
            | "ab-test" | "code" | "internal-alert" | "target-date" => {
                self.problem(
                    join(at, "type"),
                    format!("action type `{kind}` is not supported"),
                );
                return None;
            }
            other => {
                self.problem(
                    join(at, "type"),
                    format!(
                        "unknown action type `{other}`; expected time-delay, conditional-split, \
                         trigger-split, send-email, send-webhook, update-profile or list-update"
                    ),
                );
                return None;
            }
        };
        Some(Action {
            id,
            temporary,
            kind,
            next,
        })
    }

    /// Ids are strings; numbers are accepted and kept as their decimal text.
    fn id_string(&mut self, value: &Value, at: &str) -> Option<String> {
        match value {
            Value::Number(n) => Some(n.to_string()),
            other => self.string(other, at),
        }
    }

    fn status(&mut self, data: &Map<String, Value>, at: &str) -> Option<MessageStatus> {
        match opt(data, "status") {
            None => Some(MessageStatus::Draft),
            Some(v) => match v.as_str().and_then(MessageStatus::parse) {
                Some(s) => Some(s),
                None => {
                    self.problem(join(at, "status"), "expected draft, manual or live");
                    None
                }
            },
        }
    }

    fn time_delay(&mut self, data: &Map<String, Value>, at: &str) -> Option<TimeDelay> {
        self.known(
            data,
            at,
            &[
                "unit",
                "value",
                "delay_until_time",
                "delay_until_weekdays",
                "timezone",
            ],
        );
        let unit = self
            .required(data, at, "unit")
            .and_then(|v| match v.as_str() {
                Some("minutes") => Some(DelayUnit::Minutes),
                Some("hours") => Some(DelayUnit::Hours),
                Some("days") => Some(DelayUnit::Days),
                _ => {
                    self.problem(join(at, "unit"), "expected minutes, hours or days");
                    None
                }
            });
        let max = match unit {
            Some(DelayUnit::Minutes) => 60 * 24 * 366,
            Some(DelayUnit::Hours) => 24 * 366,
            _ => 366,
        };
        let value = self
            .required(data, at, "value")
            .and_then(|v| self.integer(v, &join(at, "value"), 0, max));
        let until_time = match opt(data, "delay_until_time") {
            None => Some(None),
            Some(v) => match v.as_str().and_then(|s| s.parse::<Time>().ok()) {
                Some(t) => Some(Some(t)),
                None => {
                    self.problem(
                        join(at, "delay_until_time"),
                        "expected a time of day such as `09:00`",
                    );
                    None
                }
            },
        };
        let weekdays = match opt(data, "delay_until_weekdays") {
            None => Some(Vec::new()),
            Some(Value::Array(days)) => {
                let mut out = Vec::new();
                let mut ok = true;
                for (i, day) in days.iter().enumerate() {
                    let parsed = match day.as_str().map(str::to_ascii_lowercase).as_deref() {
                        Some("monday") => Some(Weekday::Monday),
                        Some("tuesday") => Some(Weekday::Tuesday),
                        Some("wednesday") => Some(Weekday::Wednesday),
                        Some("thursday") => Some(Weekday::Thursday),
                        Some("friday") => Some(Weekday::Friday),
                        Some("saturday") => Some(Weekday::Saturday),
                        Some("sunday") => Some(Weekday::Sunday),
                        _ => None,
                    };
                    match parsed {
                        Some(d) if !out.contains(&d) => out.push(d),
                        Some(_) => {}
                        None => {
                            self.problem(
                                join(&join(at, "delay_until_weekdays"), i),
                                "expected a weekday name such as `monday`",
                            );
                            ok = false;
                        }
                    }
                }
                ok.then_some(out)
            }
            Some(other) => {
                self.problem(
                    join(at, "delay_until_weekdays"),
                    format!("expected an array, found {}", kind(other)),
                );
                None
            }
        };
        let timezone = self.timezone(data, at);
        Some(TimeDelay {
            unit: unit?,
            value: value?,
            until_time: until_time?,
            until_weekdays: weekdays?,
            timezone: timezone?,
        })
    }

    fn send_email(&mut self, data: &Map<String, Value>, at: &str) -> Option<SendEmail> {
        self.known(data, at, &["status", "message"]);
        let status = self.status(data, at);
        let message_at = join(at, "message");
        let message = self.required(data, at, "message")?;
        let message = self.object(message, &message_at)?;
        self.known(
            message,
            &message_at,
            &[
                "from_email",
                "from_label",
                "reply_to_email",
                "subject_line",
                "preview_text",
                "template_id",
                "html",
                "text",
                "smart_sending_enabled",
                "smart_sending_window_hours",
                "transactional",
                "name",
            ],
        );
        let subject = self
            .required(message, &message_at, "subject_line")
            .and_then(|v| self.string(v, &join(&message_at, "subject_line")));
        let from_email = self.opt_string(message, &message_at, "from_email");
        if let Some(from) = &from_email {
            if !from.contains('@') {
                self.problem(join(&message_at, "from_email"), "not an email address");
            }
        }
        let from_label = self.opt_string(message, &message_at, "from_label");
        let template_id = self.opt_string(message, &message_at, "template_id");
        let html = self.opt_string(message, &message_at, "html");
        let text = self.opt_string(message, &message_at, "text");
        if template_id.is_none() && html.is_none() && text.is_none() {
            self.problem(
                join(&message_at, "template_id"),
                "a send-email action needs a `template_id` or inline `html`/`text`",
            );
        }
        if template_id.is_some() && (html.is_some() || text.is_some()) {
            self.problem(
                join(&message_at, "html"),
                "give either a `template_id` or inline `html`/`text`, not both",
            );
        }
        let smart_sending = match opt(message, "smart_sending_enabled") {
            None => Some(true),
            Some(v) => self.bool(v, &join(&message_at, "smart_sending_enabled")),
        };
        let window = match opt(message, "smart_sending_window_hours") {
            None => Some(DEFAULT_SMART_SENDING_WINDOW),
            Some(v) => self
                .integer(
                    v,
                    &join(&message_at, "smart_sending_window_hours"),
                    1,
                    24 * 30,
                )
                .map(SignedDuration::from_hours),
        };
        let transactional = match opt(message, "transactional") {
            None => Some(false),
            Some(v) => self.bool(v, &join(&message_at, "transactional")),
        };
        // Templates are compiled when the flow is saved, so a syntax error is refused here.
        if let Some(subject) = &subject {
            let source = signalbox_mail::EmailTemplateSource {
                subject: subject.clone(),
                html: html.clone().unwrap_or_default(),
                text: text.clone(),
            };
            if let Err(error) = signalbox_mail::EmailTemplate::compile(&source) {
                let field = match error.part() {
                    signalbox_mail::Part::Subject => "subject_line",
                    signalbox_mail::Part::Html => "html",
                    signalbox_mail::Part::Text => "text",
                };
                self.problem(join(&message_at, field), error.to_string());
            }
        }
        Some(SendEmail {
            status: status?,
            from_email,
            from_label,
            subject: subject?,
            template_id,
            html,
            text,
            smart_sending: smart_sending?,
            smart_sending_window: window?,
            transactional: transactional?,
        })
    }

    fn send_webhook(&mut self, data: &Map<String, Value>, at: &str) -> Option<SendWebhook> {
        self.known(data, at, &["status", "url", "headers", "body", "secret"]);
        let status = self.status(data, at);
        let url = self
            .required(data, at, "url")
            .and_then(|v| self.string(v, &join(at, "url")));
        if let Some(url) = &url {
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => self.problem(join(at, "url"), "expected an http or https URL"),
            }
        }
        let mut headers = Vec::new();
        if let Some(h) = opt(data, "headers") {
            let h_at = join(at, "headers");
            if let Some(h) = self.object(h, &h_at) {
                for (name, value) in h {
                    // Refused here as they would be at send time: `Host`, hop-by-hop and
                    // framing headers, and values HTTP cannot carry.
                    let checked = value
                        .as_str()
                        .map(|v| (v, signalbox_outbound::check_header(name, v)));
                    match checked {
                        Some((v, Ok(_))) => headers.push((name.clone(), v.to_owned())),
                        Some((_, Err(error @ OutboundError::ForbiddenHeader { .. }))) => {
                            self.problem(join(&h_at, name), error.to_string())
                        }
                        _ => self.problem(
                            join(&h_at, name),
                            "expected a header name with a string value",
                        ),
                    }
                }
            }
        }
        let body = opt(data, "body").cloned().unwrap_or(Value::Null);
        let secret = self.opt_string(data, at, "secret");
        Some(SendWebhook {
            status: status?,
            url: url?,
            headers,
            body,
            secret,
        })
    }

    fn update_profile(&mut self, data: &Map<String, Value>, at: &str) -> Option<UpdateProfile> {
        self.known(data, at, &["profile_operations"]);
        let ops_at = join(at, "profile_operations");
        let ops = match self.required(data, at, "profile_operations")? {
            Value::Array(ops) if !ops.is_empty() => ops,
            _ => {
                self.problem(ops_at, "expected a non-empty array");
                return None;
            }
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, op) in ops.iter().enumerate() {
            let op_at = join(&ops_at, i);
            let Some(object) = self.object(op, &op_at) else {
                ok = false;
                continue;
            };
            self.known(object, &op_at, &["operation", "key", "value"]);
            let key = self
                .required(object, &op_at, "key")
                .and_then(|v| self.string(v, &join(&op_at, "key")));
            let operation = opt(object, "operation")
                .and_then(Value::as_str)
                .unwrap_or("update");
            match (operation, key) {
                ("update", Some(key)) => match opt(object, "value") {
                    Some(value) => out.push(ProfileOperation::Set {
                        key,
                        value: value.clone(),
                    }),
                    None => {
                        self.problem(join(&op_at, "value"), "`value` is required");
                        ok = false;
                    }
                },
                ("unset", Some(key)) => out.push(ProfileOperation::Unset { key }),
                (_, Some(_)) => {
                    self.problem(join(&op_at, "operation"), "expected update or unset");
                    ok = false;
                }
                (_, None) => ok = false,
            }
        }
        ok.then_some(UpdateProfile { operations: out })
    }
}
