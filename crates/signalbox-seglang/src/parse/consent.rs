//! `profile-marketing-consent` conditions.

use serde_json::{Map, Value};

use super::filters::{DateUse, FilterUse};
use super::{join, optional, Parser};
use crate::ast::{
    Channel, ConsentCondition, ConsentFilter, MethodDetail, MethodField, StringOperator,
    SubscriptionFilter, SuppressionCheck, SuppressionField, ValueFilter, KNOWN_METHODS,
};

impl Parser<'_> {
    pub(crate) fn consent(
        &mut self,
        object: &Map<String, Value>,
        at: &str,
    ) -> Option<ConsentCondition> {
        self.known_fields(object, at, &["type", "consent"]);
        let consent_at = join(at, "consent");
        let consent = self.required(object, at, "consent")?;
        let consent = self.object(consent, &consent_at)?;
        self.known_fields(
            consent,
            &consent_at,
            &["channel", "can_receive_marketing", "consent_status"],
        );
        let channel = self
            .required(consent, &consent_at, "channel")
            .and_then(|v| {
                self.keyword(
                    v,
                    &join(&consent_at, "channel"),
                    "channel",
                    &[
                        ("email", Channel::Email),
                        ("sms", Channel::Sms),
                        ("push", Channel::Push),
                    ],
                )
            });
        let can_receive = self
            .required(consent, &consent_at, "can_receive_marketing")
            .and_then(|v| self.bool(v, &join(&consent_at, "can_receive_marketing")));
        let status_at = join(&consent_at, "consent_status");
        let status = self
            .required(consent, &consent_at, "consent_status")
            .and_then(|v| self.consent_status(v, &status_at, can_receive));
        let (subscription, filters) = status?;
        Some(ConsentCondition {
            channel: channel?,
            can_receive_marketing: can_receive?,
            subscription,
            filters,
        })
    }

    fn consent_status(
        &mut self,
        value: &Value,
        at: &str,
        can_receive: Option<bool>,
    ) -> Option<(SubscriptionFilter, Vec<ConsentFilter>)> {
        let object = self.object(value, at)?;
        self.known_fields(object, at, &["subscription", "filters"]);
        let subscription_at = join(at, "subscription");
        let subscription = self.required(object, at, "subscription").and_then(|v| {
            self.keyword(
                v,
                &subscription_at,
                "subscription",
                &[
                    ("any", SubscriptionFilter::Any),
                    ("subscribed", SubscriptionFilter::Subscribed),
                    ("unsubscribed", SubscriptionFilter::Unsubscribed),
                    ("never_subscribed", SubscriptionFilter::NeverSubscribed),
                ],
            )
        });
        if can_receive == Some(true) && subscription == Some(SubscriptionFilter::Unsubscribed) {
            self.invalid(
                &subscription_at,
                "an unsubscribed profile cannot receive marketing; set can_receive_marketing to false",
            );
        }
        let filters = match optional(object, "filters") {
            None => Some(Vec::new()),
            Some(filters) => {
                let filters_at = join(at, "filters");
                self.array(filters, &filters_at).and_then(|items| {
                    let mut out = Vec::with_capacity(items.len());
                    let mut ok = true;
                    for (index, item) in items.iter().enumerate() {
                        match self.consent_filter(item, &join(&filters_at, index), can_receive) {
                            Some(filter) => out.push(filter),
                            None => ok = false,
                        }
                    }
                    ok.then_some(out)
                })
            }
        };
        if can_receive == Some(true) && subscription == Some(SubscriptionFilter::Unsubscribed) {
            return None;
        }
        Some((subscription?, filters?))
    }

    fn consent_filter(
        &mut self,
        value: &Value,
        at: &str,
        can_receive: Option<bool>,
    ) -> Option<ConsentFilter> {
        let object = self.object(value, at)?;
        let field_at = join(at, "field");
        let filter_at = join(at, "filter");
        let field = self.required(object, at, "field")?;
        let field = self.string(field, &field_at)?;
        match field {
            "is_double_opt_in" => {
                self.known_fields(object, at, &["field", "filter"]);
                let filter = self.required(object, at, "filter")?;
                match self.value_filter(filter, &filter_at, FilterUse::Profile)? {
                    ValueFilter::Boolean(b) => Some(ConsentFilter::DoubleOptIn(b)),
                    _ => {
                        self.invalid(&filter_at, "expected a boolean filter");
                        None
                    }
                }
            }
            "status_date" => {
                self.known_fields(object, at, &["field", "filter"]);
                let filter = self.required(object, at, "filter")?;
                self.date_filter(filter, &filter_at, DateUse::Consent)
                    .map(ConsentFilter::StatusDate)
            }
            "custom_source" => {
                self.known_fields(object, at, &["field", "filter"]);
                let filter = self.required(object, at, "filter")?;
                match self.value_filter(filter, &filter_at, FilterUse::Profile)? {
                    ValueFilter::String {
                        operator: StringOperator::Equals,
                        value,
                    } => Some(ConsentFilter::CustomSource(value)),
                    _ => {
                        self.invalid(&filter_at, "expected a string `equals` filter");
                        None
                    }
                }
            }
            "method" | "subscribe_method" => {
                self.known_fields(object, at, &["field", "method", "filter"]);
                let method_at = join(at, "method");
                let method = self
                    .required(object, at, "method")
                    .and_then(|v| self.string(v, &method_at))
                    .and_then(|method| {
                        if KNOWN_METHODS.contains(&method) {
                            Some(method.to_owned())
                        } else {
                            self.invalid(&method_at, format!("unknown method `{method}`"));
                            None
                        }
                    });
                let detail = match optional(object, "filter") {
                    None => Some(None),
                    Some(filter) => {
                        match self.value_filter(filter, &filter_at, FilterUse::Profile) {
                            Some(ValueFilter::StringIn {
                                negated: false,
                                values,
                            }) => Some(Some(MethodDetail::In(values))),
                            Some(ValueFilter::String {
                                operator: StringOperator::Equals,
                                value,
                            }) => Some(Some(MethodDetail::Equals(value))),
                            Some(_) => {
                                self.invalid(
                                    &filter_at,
                                    "expected a string `in` or `equals` filter",
                                );
                                None
                            }
                            None => None,
                        }
                    }
                };
                Some(ConsentFilter::Method {
                    field: if field == "method" {
                        MethodField::Method
                    } else {
                        MethodField::SubscribeMethod
                    },
                    method: method?,
                    detail: detail?,
                })
            }
            "bounce_date" | "manual_suppression_date" | "invalid_email_date" => {
                self.known_fields(object, at, &["field", "filter"]);
                let field = match field {
                    "bounce_date" => SuppressionField::BounceDate,
                    "manual_suppression_date" => SuppressionField::ManualSuppressionDate,
                    _ => SuppressionField::InvalidEmailDate,
                };
                if can_receive == Some(true) {
                    self.invalid(
                        &field_at,
                        format!(
                            "`{}` filters need can_receive_marketing false",
                            field.as_str()
                        ),
                    );
                    return None;
                }
                let filter = self.required(object, at, "filter")?;
                let is_existence = filter
                    .get("type")
                    .is_some_and(|t| t.as_str() == Some("existence"));
                let check = if is_existence {
                    match self.value_filter(filter, &filter_at, FilterUse::Profile)? {
                        ValueFilter::Existence { is_set: true } => SuppressionCheck::IsSet,
                        _ => {
                            self.invalid(
                                &join(&filter_at, "operator"),
                                "only `is-set` is allowed here",
                            );
                            return None;
                        }
                    }
                } else {
                    SuppressionCheck::Date(self.date_filter(
                        filter,
                        &filter_at,
                        DateUse::Consent,
                    )?)
                };
                Some(ConsentFilter::Suppression { field, check })
            }
            "is_rcs_capable" => {
                self.unsupported(&field_at, "RCS capability filters are not supported");
                None
            }
            other => {
                self.invalid(
                    &field_at,
                    format!(
                        "unknown consent filter field `{other}`; expected one of \
                         is_double_opt_in, status_date, custom_source, method, \
                         subscribe_method, bounce_date, manual_suppression_date, \
                         invalid_email_date"
                    ),
                );
                None
            }
        }
    }
}
