//! Ready flows to start from: a catalogue of common automations (welcome series, abandoned
//! cart, browse abandonment, post-purchase thank-you, win-back), each a flow definition in
//! Klaviyo's JSON with real email content, filled in with the lists, segments and metrics a
//! person picks.
//!
//! [`Flows::create_from_template`](crate::Flows::create_from_template) builds the definition
//! and creates the flow as a draft through [`Flows::create_flow`](crate::Flows::create_flow),
//! the call behind `POST /api/flows`.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::error::{FlowsError, FlowsResult};

/// What a template parameter names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A list id.
    List,
    /// A segment id.
    Segment,
    /// A metric id.
    Metric,
}

impl ParamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamKind::List => "list",
            ParamKind::Segment => "segment",
            ParamKind::Metric => "metric",
        }
    }
}

/// One value a template needs before it becomes a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateParam {
    /// The field name (`list`, `trigger_metric`, …).
    pub key: &'static str,
    /// What a form shows next to it.
    pub label: &'static str,
    pub help: &'static str,
    pub kind: ParamKind,
    /// For metrics: the usual names of the metric, most common first (`Placed Order`,
    /// `Order Completed`), for a form to preselect.
    pub suggested: &'static [&'static str],
}

/// A ready flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowTemplate {
    /// Stable identifier (`welcome-series`).
    pub key: &'static str,
    /// The name a new flow gets unless given another.
    pub name: &'static str,
    pub description: &'static str,
    /// The trigger and the steps, one line each, in order.
    pub steps: &'static [&'static str],
    pub params: &'static [TemplateParam],
}

const ORDER_NAMES: &[&str] = &["Placed Order", "Order Completed"];
const CHECKOUT_NAMES: &[&str] = &["Checkout Started", "Started Checkout"];
const VIEWED_NAMES: &[&str] = &["Viewed Product", "Product Viewed"];

const ORDER_PARAM: TemplateParam = TemplateParam {
    key: "order_metric",
    label: "Order metric",
    help: "The metric recorded when a person places an order.",
    kind: ParamKind::Metric,
    suggested: ORDER_NAMES,
};

static CATALOGUE: &[FlowTemplate] = &[
    FlowTemplate {
        key: "welcome-series",
        name: "Welcome series",
        description: "Greets a new subscriber as they join a list, then follows up two days \
                      later.",
        steps: &[
            "Trigger: added to the list",
            "Email: Welcome",
            "Wait 2 days",
            "Email: Here is what comes next",
        ],
        params: &[TemplateParam {
            key: "list",
            label: "List",
            help: "People added to this list enter the flow.",
            kind: ParamKind::List,
            suggested: &[],
        }],
    },
    FlowTemplate {
        key: "abandoned-cart",
        name: "Abandoned cart",
        description: "Reminds a person of the cart they left at checkout, unless they ordered \
                      in the meantime.",
        steps: &[
            "Trigger: Checkout Started",
            "Filter: has not placed an order since starting this flow",
            "Wait 4 hours",
            "Email: You left something in your cart",
        ],
        params: &[
            TemplateParam {
                key: "trigger_metric",
                label: "Checkout metric",
                help: "The metric recorded when a person starts a checkout.",
                kind: ParamKind::Metric,
                suggested: CHECKOUT_NAMES,
            },
            ORDER_PARAM,
        ],
    },
    FlowTemplate {
        key: "browse-abandonment",
        name: "Browse abandonment",
        description: "Follows up on a product a person looked at, unless they went on to \
                      check out.",
        steps: &[
            "Trigger: Viewed Product",
            "Filter: has not started a checkout since starting this flow",
            "Wait 2 hours",
            "Email: Still thinking it over?",
        ],
        params: &[
            TemplateParam {
                key: "trigger_metric",
                label: "Product view metric",
                help: "The metric recorded when a person views a product.",
                kind: ParamKind::Metric,
                suggested: VIEWED_NAMES,
            },
            TemplateParam {
                key: "checkout_metric",
                label: "Checkout metric",
                help: "People who start a checkout after viewing leave the flow.",
                kind: ParamKind::Metric,
                suggested: CHECKOUT_NAMES,
            },
        ],
    },
    FlowTemplate {
        key: "post-purchase",
        name: "Post-purchase thank-you",
        description: "Thanks a customer the day after each order.",
        steps: &[
            "Trigger: Placed Order",
            "Wait 1 day",
            "Email: Thank you for your order",
        ],
        params: &[TemplateParam {
            key: "trigger_metric",
            ..ORDER_PARAM
        }],
    },
    FlowTemplate {
        key: "win-back",
        name: "Win-back",
        description: "Reaches out to customers who stopped buying (people entering a segment \
                      such as \"ordered before, but not in the last 90 days\"), with a second \
                      email and an offer a week later if they have not ordered again.",
        steps: &[
            "Trigger: added to the segment of lapsed customers",
            "Email: We miss you",
            "Wait 7 days",
            "Split: placed an order since starting this flow?",
            "No: Email: A little something to welcome you back",
        ],
        params: &[
            TemplateParam {
                key: "segment",
                label: "Lapsed customers segment",
                help: "For example: Placed Order at least once over all time, and zero times \
                       in the last 90 days.",
                kind: ParamKind::Segment,
                suggested: &[],
            },
            ORDER_PARAM,
        ],
    },
];

/// Every ready flow, in the order a gallery shows them.
pub fn catalogue() -> &'static [FlowTemplate] {
    CATALOGUE
}

/// The ready flow with this key.
pub fn find(key: &str) -> Option<&'static FlowTemplate> {
    CATALOGUE.iter().find(|t| t.key == key)
}

const FOOTER: &str = "<p style=\"font-size:12px;color:#666\">You receive this email because \
                      you signed up with us. <a href=\"{{ unsubscribe_url }}\">Unsubscribe</a>\
                      </p>";

fn email(subject: &str, html_body: &str, text: &str, next: Option<&str>) -> Value {
    json!({
        "type": "send-email",
        "data": {"status": "draft", "message": {
            "subject_line": subject,
            "html": format!("{html_body}{FOOTER}"),
            "text": format!("{text}\n\nUnsubscribe: {{{{ unsubscribe_url }}}}"),
        }},
        "links": {"next": next},
    })
}

fn delay(unit: &str, value: i64, next: &str) -> Value {
    json!({"type": "time-delay", "data": {"unit": unit, "value": value}, "links": {"next": next}})
}

/// `metric` counted zero times since the run started: the profile filter of abandonment
/// flows and the condition of the win-back split.
fn none_since_start(metric_id: &str) -> Value {
    json!({"condition_groups": [{"conditions": [{
        "type": "profile-metric", "metric_id": metric_id, "measurement": "count",
        "measurement_filter": {"type": "numeric", "operator": "equals", "value": 0},
        "timeframe_filter": {"type": "date", "operator": "flow-start"}}]}]})
}

/// Gives each action its `temporary_id` (the keys of `actions`, in order).
fn actions(list: Vec<(&str, Value)>) -> Value {
    Value::Array(
        list.into_iter()
            .map(|(id, mut action)| {
                action["temporary_id"] = json!(id);
                action
            })
            .collect(),
    )
}

impl FlowTemplate {
    /// The flow definition with the picked values; a missing value is an
    /// [`FlowsError::Invalid`] naming the parameter's key.
    pub fn definition(&self, values: &HashMap<String, String>) -> FlowsResult<Value> {
        let mut missing = None;
        let mut get = |key: &str| -> String {
            let value = values.get(key).map(|v| v.trim()).unwrap_or("");
            if value.is_empty() && missing.is_none() {
                missing = Some(key.to_owned());
            }
            value.to_owned()
        };
        let definition = match self.key {
            "welcome-series" => {
                let list = get("list");
                json!({
                    "triggers": [{"type": "list", "id": list}],
                    "entry_action_id": "welcome",
                    "actions": actions(vec![
                        ("welcome", email(
                            "Welcome, {{ first_name|default:\"friend\" }}!",
                            "<h1>Welcome aboard</h1><p>Hi {{ first_name|default:\"there\" }}, \
                             thank you for signing up. We will keep you posted on new arrivals \
                             and offers, never more than we would want ourselves.</p>",
                            "Hi {{ first_name|default:\"there\" }}, thank you for signing up. \
                             We will keep you posted on new arrivals and offers.",
                            Some("wait"),
                        )),
                        ("wait", delay("days", 2, "next-steps")),
                        ("next-steps", email(
                            "Here is what comes next",
                            "<p>Hi {{ first_name|default:\"there\" }}, here is how to make the \
                             most of your subscription: browse our best sellers, reply to this \
                             email with any question, and watch your inbox for members-only \
                             offers.</p>",
                            "Hi {{ first_name|default:\"there\" }}, browse our best sellers, \
                             reply to this email with any question, and watch your inbox for \
                             members-only offers.",
                            None,
                        )),
                    ]),
                    "reentry_criteria": {"duration": 1, "unit": "alltime"},
                })
            }
            "abandoned-cart" => {
                let checkout = get("trigger_metric");
                let order = get("order_metric");
                json!({
                    "triggers": [{"type": "metric", "id": checkout}],
                    "profile_filter": none_since_start(&order),
                    "entry_action_id": "wait",
                    "actions": actions(vec![
                        ("wait", delay("hours", 4, "reminder")),
                        ("reminder", email(
                            "You left something in your cart",
                            "<p>Hi {{ first_name|default:\"there\" }}, you left these in your \
                             cart:</p><ul>{% for item in event.Items %}<li>{{ item.ProductName }}\
                             </li>{% endfor %}</ul><p>They are still waiting for you.</p>",
                            "Hi {{ first_name|default:\"there\" }}, you left something in your \
                             cart. It is still waiting for you.",
                            None,
                        )),
                    ]),
                    "reentry_criteria": {"duration": 1, "unit": "day"},
                })
            }
            "browse-abandonment" => {
                let viewed = get("trigger_metric");
                let checkout = get("checkout_metric");
                json!({
                    "triggers": [{"type": "metric", "id": viewed}],
                    "profile_filter": none_since_start(&checkout),
                    "entry_action_id": "wait",
                    "actions": actions(vec![
                        ("wait", delay("hours", 2, "follow-up")),
                        ("follow-up", email(
                            "Still thinking it over?",
                            "<p>Hi {{ first_name|default:\"there\" }}, you were looking at \
                             {{ event.ProductName|default:\"one of our products\" }}. Take \
                             another look before it is gone.</p>",
                            "Hi {{ first_name|default:\"there\" }}, you were looking at \
                             {{ event.ProductName|default:\"one of our products\" }}. Take \
                             another look before it is gone.",
                            None,
                        )),
                    ]),
                    "reentry_criteria": {"duration": 7, "unit": "day"},
                })
            }
            "post-purchase" => {
                let order = get("trigger_metric");
                json!({
                    "triggers": [{"type": "metric", "id": order}],
                    "entry_action_id": "wait",
                    "actions": actions(vec![
                        ("wait", delay("days", 1, "thanks")),
                        ("thanks", email(
                            "Thank you for your order",
                            "<p>Hi {{ first_name|default:\"there\" }}, thank you for your \
                             order. We hope you love it; reply to this email if anything is \
                             not right.</p>",
                            "Hi {{ first_name|default:\"there\" }}, thank you for your order. \
                             Reply to this email if anything is not right.",
                            None,
                        )),
                    ]),
                    "reentry_criteria": {"duration": 0, "unit": "alltime"},
                })
            }
            "win-back" => {
                let segment = get("segment");
                let order = get("order_metric");
                json!({
                    "triggers": [{"type": "segment", "id": segment}],
                    "entry_action_id": "miss-you",
                    "actions": actions(vec![
                        ("miss-you", email(
                            "We miss you, {{ first_name|default:\"friend\" }}",
                            "<p>Hi {{ first_name|default:\"there\" }}, it has been a while. \
                             Here is what is new since your last order.</p>",
                            "Hi {{ first_name|default:\"there\" }}, it has been a while. Come \
                             and see what is new since your last order.",
                            Some("wait"),
                        )),
                        ("wait", delay("days", 7, "ordered")),
                        ("ordered", json!({
                            "type": "conditional-split",
                            "data": {"profile_filter": none_since_start(&order)},
                            "links": {"next_if_true": "offer", "next_if_false": null},
                        })),
                        ("offer", email(
                            "A little something to welcome you back",
                            "<p>Hi {{ first_name|default:\"there\" }}, here is 15% off your \
                             next order with the code <strong>WELCOMEBACK</strong>.</p>",
                            "Hi {{ first_name|default:\"there\" }}, here is 15% off your next \
                             order with the code WELCOMEBACK.",
                            None,
                        )),
                    ]),
                    "reentry_criteria": {"duration": 90, "unit": "day"},
                })
            }
            other => {
                return Err(FlowsError::NotFound {
                    what: format!("flow template {other}"),
                })
            }
        };
        if let Some(key) = missing {
            let label = self
                .params
                .iter()
                .find(|p| p.key == key)
                .map_or("a value", |p| p.label);
            return Err(FlowsError::Invalid {
                reason: format!("pick the {}", label.to_lowercase()),
                field: key,
            });
        }
        Ok(definition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{ActionKind, FlowDefinition, Trigger};

    fn values(template: &FlowTemplate) -> HashMap<String, String> {
        template
            .params
            .iter()
            .map(|p| (p.key.to_owned(), format!("{}-id", p.key)))
            .collect()
    }

    #[test]
    fn every_template_is_a_valid_definition_with_its_values() {
        for template in catalogue() {
            let definition = template.definition(&values(template)).expect("built");
            let parsed = FlowDefinition::parse(&definition)
                .unwrap_or_else(|p| panic!("{}: {p:?}", template.key));
            let emails = parsed
                .actions
                .iter()
                .filter(|a| matches!(a.kind, ActionKind::SendEmail(_)))
                .count();
            assert!(emails >= 1, "{} sends an email", template.key);
            let trigger_id = match &parsed.trigger {
                Trigger::Metric { metric_id, .. } => metric_id.clone(),
                Trigger::List { list_id } => list_id.clone(),
                Trigger::Segment { segment_id } => segment_id.clone(),
                Trigger::Date(_) => String::new(),
            };
            assert!(
                trigger_id.ends_with("-id"),
                "{}: the trigger is the picked value, got {trigger_id}",
                template.key
            );
            assert_eq!(find(template.key), Some(template));
        }
        assert!(catalogue().len() >= 5);
    }

    #[test]
    fn a_missing_value_names_its_parameter() {
        let template = find("abandoned-cart").expect("abandoned cart");
        let mut picked = values(template);
        picked.insert("order_metric".into(), "  ".into());
        assert_eq!(
            template.definition(&picked),
            Err(FlowsError::Invalid {
                field: "order_metric".into(),
                reason: "pick the order metric".into(),
            })
        );
    }
}
