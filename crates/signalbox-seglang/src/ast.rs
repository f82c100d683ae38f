//! The typed tree a definition parses into.
//!
//! Every enum here is closed: a value outside it is rejected by the parser, so code that matches
//! on these types never meets a condition it does not understand. Wire names (`as_str`) live
//! beside the types so the parser and the serialiser cannot disagree.

use jiff::Timestamp;
use serde_json::Number;

/// The most conditions one definition may hold (Klaviyo's documented limit).
pub const MAX_CONDITIONS: usize = 100;

/// A validated definition: groups are ANDed, the conditions inside a group are ORed.
///
/// Only [`crate::parse`] builds one, so it always has at least one group, every group has at
/// least one condition, and there are at most [`MAX_CONDITIONS`] conditions in all.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub(crate) condition_groups: Vec<ConditionGroup>,
}

impl Definition {
    pub fn condition_groups(&self) -> &[ConditionGroup] {
        &self.condition_groups
    }

    /// Every condition with its position, group by group.
    pub fn conditions(&self) -> impl Iterator<Item = (ConditionRef, &Condition)> {
        self.condition_groups
            .iter()
            .enumerate()
            .flat_map(|(group, g)| {
                g.conditions
                    .iter()
                    .enumerate()
                    .map(move |(condition, c)| (ConditionRef { group, condition }, c))
            })
    }
}

/// Where a condition sits in its definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConditionRef {
    pub group: usize,
    pub condition: usize,
}

impl ConditionRef {
    /// The JSON pointer of the condition, relative to the definition object.
    pub fn pointer(&self) -> String {
        format!(
            "/condition_groups/{}/conditions/{}",
            self.group, self.condition
        )
    }
}

/// Conditions ORed together.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionGroup {
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// `profile-metric`: what someone has done.
    Metric(MetricCondition),
    /// `profile-property`: a built-in field or a custom property.
    Property(PropertyCondition),
    /// `profile-group-membership`: in (or not in) lists or other segments.
    Membership(MembershipCondition),
    /// `profile-marketing-consent`.
    Consent(ConsentCondition),
}

impl Condition {
    pub fn type_name(&self) -> &'static str {
        match self {
            Condition::Metric(_) => "profile-metric",
            Condition::Property(_) => "profile-property",
            Condition::Membership(_) => "profile-group-membership",
            Condition::Consent(_) => "profile-marketing-consent",
        }
    }
}

/// Count or sum of one metric's events in a timeframe, compared with a number.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricCondition {
    pub metric_id: String,
    pub measurement: Measurement,
    pub measurement_filter: NumericFilter,
    /// Never an anniversary or calendar operator (the parser rejects those here).
    pub timeframe: DateFilter,
    /// Conditions on the event's properties, ANDed.
    pub metric_filters: Vec<EventFilter>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measurement {
    /// Number of events.
    Count,
    /// Sum of the events' `value`.
    Sum,
}

impl Measurement {
    pub fn as_str(self) -> &'static str {
        match self {
            Measurement::Count => "count",
            Measurement::Sum => "sum",
        }
    }
}

/// `{"type":"numeric","operator":…,"value":…}`. The value keeps its JSON spelling (integer or
/// float) so a definition reads back as it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct NumericFilter {
    pub operator: NumericOperator,
    pub value: Number,
}

impl NumericFilter {
    pub fn matches(&self, observed: f64) -> bool {
        let Some(expected) = self.value.as_f64() else {
            return false;
        };
        self.operator.compare(observed, expected)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumericOperator {
    Equals,
    NotEquals,
    GreaterThan,
    GreaterThanOrEqual,
    LessThan,
    LessThanOrEqual,
}

impl NumericOperator {
    pub const ALL: [NumericOperator; 6] = [
        NumericOperator::Equals,
        NumericOperator::NotEquals,
        NumericOperator::GreaterThan,
        NumericOperator::GreaterThanOrEqual,
        NumericOperator::LessThan,
        NumericOperator::LessThanOrEqual,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NumericOperator::Equals => "equals",
            NumericOperator::NotEquals => "not-equals",
            NumericOperator::GreaterThan => "greater-than",
            NumericOperator::GreaterThanOrEqual => "greater-than-or-equal",
            NumericOperator::LessThan => "less-than",
            NumericOperator::LessThanOrEqual => "less-than-or-equal",
        }
    }

    /// `observed OP expected`.
    pub fn compare(self, observed: f64, expected: f64) -> bool {
        match self {
            NumericOperator::Equals => observed == expected,
            NumericOperator::NotEquals => observed != expected,
            NumericOperator::GreaterThan => observed > expected,
            NumericOperator::GreaterThanOrEqual => observed >= expected,
            NumericOperator::LessThan => observed < expected,
            NumericOperator::LessThanOrEqual => observed <= expected,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeUnit {
    Hour,
    Day,
    Week,
}

impl TimeUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeUnit::Hour => "hour",
            TimeUnit::Day => "day",
            TimeUnit::Week => "week",
        }
    }

    /// Exact length in seconds: a day is 24 hours, a week 7 days (all time arithmetic is UTC).
    pub fn seconds(self) -> i64 {
        match self {
            TimeUnit::Hour => 3_600,
            TimeUnit::Day => 86_400,
            TimeUnit::Week => 604_800,
        }
    }
}

/// `quantity` `unit`s, e.g. 30 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelativeSpan {
    pub quantity: u32,
    pub unit: TimeUnit,
}

/// A condition on an instant: a metric timeframe, a date property, a join date, a consent date.
///
/// Which operators are allowed depends on where the filter sits; the parser enforces it.
/// Semantics (all UTC, `now` the evaluation instant, `N` the span):
/// `in-the-last` = (now − N, now]; `at-least` = at or before now − N; `in-the-next` =
/// (now, now + N]; relative `between` a and b = (now − max, now − min]; `before`/`after` are
/// strict; `between-static` is inclusive; `flow-start` = [flow start, now]. A day is 24 hours
/// and a week 7 days. `alltime` and the static operators do not depend on `now`, so a
/// future-dated event counts for them at once, and for `in-the-last` only when its time comes.
#[derive(Debug, Clone, PartialEq)]
pub enum DateFilter {
    AllTime,
    Before(Timestamp),
    After(Timestamp),
    BetweenStatic {
        start: Timestamp,
        end: Timestamp,
    },
    InTheLast(RelativeSpan),
    AtLeast(RelativeSpan),
    InTheNext(RelativeSpan),
    BetweenRelative {
        start: u32,
        end: u32,
        unit: TimeUnit,
    },
    /// An anniversary of the date fell in the last span.
    AnniversaryLast(RelativeSpan),
    /// An anniversary of the date falls in the next span.
    AnniversaryNext(RelativeSpan),
    /// Today (UTC) is an anniversary of the date.
    Anniversary,
    /// This month (UTC) is the date's month.
    AnniversaryMonth,
    /// The date is in this calendar month (1–12).
    CalendarMonth(u8),
    /// Since the flow started for this profile (flow filters only).
    FlowStart,
}

impl DateFilter {
    pub fn operator(&self) -> &'static str {
        match self {
            DateFilter::AllTime => "alltime",
            DateFilter::Before(_) => "before",
            DateFilter::After(_) => "after",
            DateFilter::BetweenStatic { .. } => "between-static",
            DateFilter::InTheLast(_) => "in-the-last",
            DateFilter::AtLeast(_) => "at-least",
            DateFilter::InTheNext(_) => "in-the-next",
            DateFilter::BetweenRelative { .. } => "between",
            DateFilter::AnniversaryLast(_) => "anniversary-last",
            DateFilter::AnniversaryNext(_) => "anniversary-next",
            DateFilter::Anniversary => "anniversary",
            DateFilter::AnniversaryMonth => "anniversary-month",
            DateFilter::CalendarMonth(_) => "calendar-month",
            DateFilter::FlowStart => "flow-start",
        }
    }

    /// Whether the filter's answer for a fixed instant can change as time passes.
    pub fn is_relative(&self) -> bool {
        !matches!(
            self,
            DateFilter::AllTime
                | DateFilter::Before(_)
                | DateFilter::After(_)
                | DateFilter::BetweenStatic { .. }
                | DateFilter::CalendarMonth(_)
        )
    }
}

/// `properties['Plan']` or a built-in field such as `email` or `location['city']`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PropertyPath {
    BuiltIn(BuiltIn),
    Location(LocationField),
    /// A custom property, by its exact name.
    Custom(String),
}

impl PropertyPath {
    /// The path as Klaviyo spells it, also the key used in [`crate::Dependencies`].
    pub fn to_wire(&self) -> String {
        match self {
            PropertyPath::BuiltIn(field) => field.as_str().to_owned(),
            PropertyPath::Location(field) => format!("location['{}']", field.as_str()),
            PropertyPath::Custom(name) => format!("properties['{name}']"),
        }
    }

    /// Parses Klaviyo's spelling; `None` for an unknown built-in or a malformed path.
    pub fn from_wire(path: &str) -> Option<PropertyPath> {
        if let Some(name) = path
            .strip_prefix("properties['")
            .and_then(|rest| rest.strip_suffix("']"))
        {
            return (!name.is_empty()).then(|| PropertyPath::Custom(name.to_owned()));
        }
        if let Some(field) = path
            .strip_prefix("location['")
            .and_then(|rest| rest.strip_suffix("']"))
        {
            return LocationField::ALL
                .into_iter()
                .find(|f| f.as_str() == field)
                .map(PropertyPath::Location);
        }
        BuiltIn::ALL
            .into_iter()
            .find(|f| f.as_str() == path)
            .map(PropertyPath::BuiltIn)
    }
}

/// The standard profile attributes a condition may name directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BuiltIn {
    Email,
    PhoneNumber,
    ExternalId,
    FirstName,
    LastName,
    Organization,
    Title,
    Image,
    Locale,
    Created,
    Updated,
    LastEventDate,
}

impl BuiltIn {
    pub const ALL: [BuiltIn; 12] = [
        BuiltIn::Email,
        BuiltIn::PhoneNumber,
        BuiltIn::ExternalId,
        BuiltIn::FirstName,
        BuiltIn::LastName,
        BuiltIn::Organization,
        BuiltIn::Title,
        BuiltIn::Image,
        BuiltIn::Locale,
        BuiltIn::Created,
        BuiltIn::Updated,
        BuiltIn::LastEventDate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BuiltIn::Email => "email",
            BuiltIn::PhoneNumber => "phone_number",
            BuiltIn::ExternalId => "external_id",
            BuiltIn::FirstName => "first_name",
            BuiltIn::LastName => "last_name",
            BuiltIn::Organization => "organization",
            BuiltIn::Title => "title",
            BuiltIn::Image => "image",
            BuiltIn::Locale => "locale",
            BuiltIn::Created => "created",
            BuiltIn::Updated => "updated",
            BuiltIn::LastEventDate => "last_event_date",
        }
    }
}

/// Fields of a profile's `location`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LocationField {
    Address1,
    Address2,
    City,
    Country,
    Region,
    Zip,
    Timezone,
    Ip,
    Latitude,
    Longitude,
}

impl LocationField {
    pub const ALL: [LocationField; 10] = [
        LocationField::Address1,
        LocationField::Address2,
        LocationField::City,
        LocationField::Country,
        LocationField::Region,
        LocationField::Zip,
        LocationField::Timezone,
        LocationField::Ip,
        LocationField::Latitude,
        LocationField::Longitude,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LocationField::Address1 => "address1",
            LocationField::Address2 => "address2",
            LocationField::City => "city",
            LocationField::Country => "country",
            LocationField::Region => "region",
            LocationField::Zip => "zip",
            LocationField::Timezone => "timezone",
            LocationField::Ip => "ip",
            LocationField::Latitude => "latitude",
            LocationField::Longitude => "longitude",
        }
    }
}

/// A profile property compared with a filter.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyCondition {
    pub property: PropertyPath,
    pub filter: ValueFilter,
}

/// A filter on one top-level property of an event (`metric_filters[]`).
#[derive(Debug, Clone, PartialEq)]
pub struct EventFilter {
    pub property: String,
    pub filter: ValueFilter,
}

/// A filter on one JSON value: a profile property or an event property.
///
/// An absent (or `null`) value matches nothing except `not-set` (Klaviyo's rule since 2023:
/// unset properties are excluded from evaluation). Text comparisons ignore case.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueFilter {
    /// `equals`, `contains`, `starts-with` … and their `not-` forms.
    String {
        operator: StringOperator,
        value: String,
    },
    /// `in` / `not-in` a list of strings.
    StringIn {
        negated: bool,
        values: Vec<String>,
    },
    Numeric(NumericFilter),
    /// `{"type":"boolean","operator":"equals","value":…}`.
    Boolean(bool),
    /// Profile properties only.
    Date(DateFilter),
    /// `is-set` / `not-set`.
    Existence {
        is_set: bool,
    },
    /// A list property `contains` / `not-contains` one item (profile properties only).
    ListContains {
        negated: bool,
        value: ListItem,
    },
    /// `contains-all`, `contains-any` and their `not-` forms (event properties only).
    ListSet {
        operator: ListSetOperator,
        values: Vec<String>,
    },
    /// Some item contains the text (event properties only).
    ListSubstring {
        negated: bool,
        value: String,
    },
    /// Compare the list's length.
    ListLength {
        operator: LengthOperator,
        value: u64,
    },
}

impl ValueFilter {
    pub fn type_name(&self) -> &'static str {
        match self {
            ValueFilter::String { .. } | ValueFilter::StringIn { .. } => "string",
            ValueFilter::Numeric(_) => "numeric",
            ValueFilter::Boolean(_) => "boolean",
            ValueFilter::Date(_) => "date",
            ValueFilter::Existence { .. } => "existence",
            ValueFilter::ListContains { .. }
            | ValueFilter::ListSet { .. }
            | ValueFilter::ListSubstring { .. }
            | ValueFilter::ListLength { .. } => "list",
        }
    }

    pub fn operator(&self) -> &'static str {
        match self {
            ValueFilter::String { operator, .. } => operator.as_str(),
            ValueFilter::StringIn { negated, .. } => pick(*negated, "not-in", "in"),
            ValueFilter::Numeric(filter) => filter.operator.as_str(),
            ValueFilter::Boolean(_) => "equals",
            ValueFilter::Date(filter) => filter.operator(),
            ValueFilter::Existence { is_set } => pick(*is_set, "is-set", "not-set"),
            ValueFilter::ListContains { negated, .. } => pick(*negated, "not-contains", "contains"),
            ValueFilter::ListSet { operator, .. } => operator.as_str(),
            ValueFilter::ListSubstring { negated, .. } => {
                pick(*negated, "not-contains-substring", "contains-substring")
            }
            ValueFilter::ListLength { operator, .. } => operator.as_str(),
        }
    }
}

fn pick(first: bool, yes: &'static str, no: &'static str) -> &'static str {
    if first {
        yes
    } else {
        no
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringOperator {
    Equals,
    NotEquals,
    Contains,
    NotContains,
    StartsWith,
    NotStartsWith,
    EndsWith,
    NotEndsWith,
}

impl StringOperator {
    pub const ALL: [StringOperator; 8] = [
        StringOperator::Equals,
        StringOperator::NotEquals,
        StringOperator::Contains,
        StringOperator::NotContains,
        StringOperator::StartsWith,
        StringOperator::NotStartsWith,
        StringOperator::EndsWith,
        StringOperator::NotEndsWith,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StringOperator::Equals => "equals",
            StringOperator::NotEquals => "not-equals",
            StringOperator::Contains => "contains",
            StringOperator::NotContains => "not-contains",
            StringOperator::StartsWith => "starts-with",
            StringOperator::NotStartsWith => "not-starts-with",
            StringOperator::EndsWith => "ends-with",
            StringOperator::NotEndsWith => "not-ends-with",
        }
    }
}

/// One item of a `list` `contains` filter: Klaviyo allows a string, an integer or null.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListItem {
    String(String),
    Integer(i64),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListSetOperator {
    ContainsAll,
    ContainsAny,
    NotContainsAll,
    NotContainsAny,
}

impl ListSetOperator {
    pub const ALL: [ListSetOperator; 4] = [
        ListSetOperator::ContainsAll,
        ListSetOperator::ContainsAny,
        ListSetOperator::NotContainsAll,
        ListSetOperator::NotContainsAny,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ListSetOperator::ContainsAll => "contains-all",
            ListSetOperator::ContainsAny => "contains-any",
            ListSetOperator::NotContainsAll => "not-contains-all",
            ListSetOperator::NotContainsAny => "not-contains-any",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthOperator {
    Equals,
    GreaterThan,
    GreaterThanOrEqual,
    LessThan,
    LessThanOrEqual,
}

impl LengthOperator {
    pub const ALL: [LengthOperator; 5] = [
        LengthOperator::Equals,
        LengthOperator::GreaterThan,
        LengthOperator::GreaterThanOrEqual,
        LengthOperator::LessThan,
        LengthOperator::LessThanOrEqual,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LengthOperator::Equals => "length-equals",
            LengthOperator::GreaterThan => "length-greater-than",
            LengthOperator::GreaterThanOrEqual => "length-greater-than-or-equal",
            LengthOperator::LessThan => "length-less-than",
            LengthOperator::LessThanOrEqual => "length-less-than-or-equal",
        }
    }

    pub fn compare(self, observed: u64, expected: u64) -> bool {
        match self {
            LengthOperator::Equals => observed == expected,
            LengthOperator::GreaterThan => observed > expected,
            LengthOperator::GreaterThanOrEqual => observed >= expected,
            LengthOperator::LessThan => observed < expected,
            LengthOperator::LessThanOrEqual => observed <= expected,
        }
    }
}

/// In any (`is_member: true`) or none (`false`) of the lists and segments.
#[derive(Debug, Clone, PartialEq)]
pub struct MembershipCondition {
    pub is_member: bool,
    /// Never empty.
    pub group_ids: Vec<String>,
    /// When the profile joined; only with `is_member: true`.
    pub timeframe: Option<DateFilter>,
}

/// Marketing consent on one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentCondition {
    pub channel: Channel,
    pub can_receive_marketing: bool,
    pub subscription: SubscriptionFilter,
    /// ANDed.
    pub filters: Vec<ConsentFilter>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    Email,
    Sms,
    Push,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionFilter {
    Any,
    Subscribed,
    Unsubscribed,
    NeverSubscribed,
}

impl SubscriptionFilter {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionFilter::Any => "any",
            SubscriptionFilter::Subscribed => "subscribed",
            SubscriptionFilter::Unsubscribed => "unsubscribed",
            SubscriptionFilter::NeverSubscribed => "never_subscribed",
        }
    }
}

/// One entry of `consent_status.filters`.
#[derive(Debug, Clone, PartialEq)]
pub enum ConsentFilter {
    /// `{"field":"is_double_opt_in","filter":{boolean}}`.
    DoubleOptIn(bool),
    /// `{"field":"status_date","filter":{date}}`: when the consent status last changed.
    StatusDate(DateFilter),
    /// `{"field":"custom_source","filter":{"type":"string","operator":"equals",…}}`.
    CustomSource(String),
    /// `{"field":"method"|"subscribe_method","method":…,"filter":…}`.
    Method {
        field: MethodField,
        method: String,
        detail: Option<MethodDetail>,
    },
    /// `{"field":"bounce_date"|"manual_suppression_date"|"invalid_email_date","filter":…}`.
    Suppression {
        field: SuppressionField,
        check: SuppressionCheck,
    },
}

/// The two spellings Klaviyo uses for a method filter's `field`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodField {
    Method,
    SubscribeMethod,
}

impl MethodField {
    pub fn as_str(self) -> &'static str {
        match self {
            MethodField::Method => "method",
            MethodField::SubscribeMethod => "subscribe_method",
        }
    }
}

/// Narrows a method filter by the method's detail (form id, API key suffix, page URL …).
#[derive(Debug, Clone, PartialEq)]
pub enum MethodDetail {
    In(Vec<String>),
    Equals(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuppressionField {
    BounceDate,
    ManualSuppressionDate,
    InvalidEmailDate,
}

impl SuppressionField {
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionField::BounceDate => "bounce_date",
            SuppressionField::ManualSuppressionDate => "manual_suppression_date",
            SuppressionField::InvalidEmailDate => "invalid_email_date",
        }
    }

    /// The suppression reason this field looks at.
    pub fn reason(self) -> crate::SuppressionReason {
        match self {
            SuppressionField::BounceDate => crate::SuppressionReason::HardBounce,
            SuppressionField::ManualSuppressionDate => crate::SuppressionReason::UserSuppressed,
            SuppressionField::InvalidEmailDate => crate::SuppressionReason::InvalidEmail,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SuppressionCheck {
    IsSet,
    Date(DateFilter),
}

/// Subscription methods Klaviyo's schema names in method filters.
pub const KNOWN_METHODS: &[&str] = &[
    "api",
    "back_in_stock",
    "bigcommerce",
    "bulk_remove",
    "campaign_monitor",
    "carrier_deactivation",
    "checkout",
    "constant_contact",
    "data_warehouse_import",
    "exact_target",
    "facebook",
    "failed_age_gate",
    "form",
    "inbound_message",
    "integration",
    "mad_mimi",
    "magento_two",
    "mailbox_provider",
    "manual_add",
    "manual_import",
    "manual_remove",
    "message_blocked",
    "netsuite",
    "one_click_unsubscribe",
    "preference_page",
    "profile_modification",
    "provided_landline",
    "provided_no_age",
    "sftp",
    "shopify",
    "social_instagram_message",
    "spam_complaint",
    "square",
    "wix",
    "woocommerce",
];
