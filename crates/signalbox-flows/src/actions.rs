//! The side effects of actions: emails, webhooks, profile updates, list changes.
//!
//! # Exactly once
//! Every side effect has an idempotency key, `r{run}-a{action}` (a run passes an action at
//! most once: definitions have no loops). The worker commits the key as an **intent** before
//! the effect starts and marks it **done** (or failed) after, in the transaction that moves the
//! run on. After a crash, intents that are not done are carried out again with the same key:
//!
//! - **Email**: the Message-ID is derived from the key (`signalbox_mail::mailer::message_id`),
//!   and so is every signed link in it. A crash after "decided" and before the SMTP server's
//!   250 resends the message once: nothing is dropped. A crash in the short window after the
//!   250 and before "done" is committed sends it a second time, with the same Message-ID, so a
//!   receiving system that dedupes by Message-ID shows it once; SMTP offers no way to ask the
//!   server whether it took a message, so this window cannot be closed, only kept small
//!   (one transaction commit).
//! - **Webhook**: the same `Idempotency-Key` header on every attempt; the receiver dedupes.
//! - **Profile update** and **list update**: idempotent by nature (set a value, add a member).
//!
//! A step that is done is never carried out again, whatever happens to the run afterwards.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use signalbox_engage::{Profile, ProfileId, ProfileInput};
use signalbox_mail::{EmailTemplateSource, Recipient, RenderContext};
use signalbox_outbound::{OutboundError, OutboundRequest};
use tokio::sync::Semaphore;

use crate::definition::{
    Action, ActionKind, ListUpdate, ProfileOperation, SendEmail, SendWebhook, UpdateProfile,
};
use crate::engine::{derived_secret, to_hex, Inner};

/// The header carrying a webhook's signature: `t=<unix seconds>,v1=<hex HMAC-SHA256 of
/// "<t>.<body>">` with the action's secret.
pub const SIGNATURE_HEADER: &str = "X-Signalbox-Signature";
/// The header carrying the step's idempotency key, the same on every attempt.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// Transient SMTP failures are retried this many times before the send fails.
const MAIL_ATTEMPTS: i64 = 8;

/// A side effect to carry out.
#[derive(Debug, Clone)]
pub(crate) struct Effect {
    pub key: String,
    pub run_id: i64,
    pub flow_id: String,
    pub flow_name: String,
    pub action: Action,
    pub profile_id: String,
    pub trigger_event_id: Option<String>,
    pub trigger_properties: Map<String, Value>,
    /// The address decided on (send-email).
    pub email: Option<String>,
    /// Attempts made before this one.
    pub attempts: i64,
}

#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Done {
        stat: &'static str,
        detail: Option<String>,
        message_id: Option<String>,
        subject: Option<String>,
    },
    Failed {
        stat: &'static str,
        reason: String,
        dead_letter_body: Option<String>,
        http_status: Option<u16>,
    },
    Retry {
        at: Timestamp,
        reason: String,
        http_status: Option<u16>,
    },
}

pub(crate) fn step_key(run_id: i64, action_id: &str) -> String {
    format!("r{run_id}-a{action_id}")
}

/// Carries out a batch of effects, at most `concurrency` at once.
pub(crate) async fn execute_all(
    inner: &Arc<Inner>,
    effects: Vec<Effect>,
    now: Timestamp,
) -> Vec<(Effect, Outcome)> {
    let semaphore = Arc::new(Semaphore::new(inner.config.concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for (i, effect) in effects.into_iter().enumerate() {
        let inner = Arc::clone(inner);
        let semaphore = Arc::clone(&semaphore);
        set.spawn(async move {
            let _permit = semaphore.acquire_owned().await.expect("semaphore open");
            let outcome = execute(&inner, &effect, now).await;
            (i, effect, outcome)
        });
    }
    let mut out = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(item) => out.push(item),
            Err(error) => tracing::error!(%error, "flow action task failed"),
        }
    }
    out.sort_by_key(|(i, _, _)| *i);
    out.into_iter().map(|(_, e, o)| (e, o)).collect()
}

async fn execute(inner: &Arc<Inner>, effect: &Effect, now: Timestamp) -> Outcome {
    match &effect.action.kind {
        ActionKind::SendEmail(email) => send_email(inner, effect, email, now).await,
        ActionKind::SendWebhook(webhook) => send_webhook(inner, effect, webhook, now).await,
        ActionKind::UpdateProfile(update) => update_profile(inner, effect, update, now).await,
        ActionKind::ListUpdate(list) => list_update(inner, effect, list, now).await,
        _ => Outcome::Failed {
            stat: "failed",
            reason: "not a side effect".into(),
            dead_letter_body: None,
            http_status: None,
        },
    }
}

fn failed(stat: &'static str, reason: impl Into<String>) -> Outcome {
    Outcome::Failed {
        stat,
        reason: reason.into(),
        dead_letter_body: None,
        http_status: None,
    }
}

/// The profile's fields and custom properties, flat, as templates see them.
pub(crate) fn person(profile: &Profile) -> Map<String, Value> {
    let mut person = Map::new();
    let mut put = |key: &str, value: &Option<String>| {
        if let Some(v) = value {
            person.insert(key.to_owned(), json!(v));
        }
    };
    put("email", &profile.email);
    put("phone_number", &profile.phone_number);
    put("external_id", &profile.external_id);
    put("first_name", &profile.first_name);
    put("last_name", &profile.last_name);
    put("organization", &profile.organization);
    put("title", &profile.title);
    put("image", &profile.image);
    put("locale", &profile.locale);
    let location = &profile.location;
    put("city", &location.city);
    put("region", &location.region);
    put("country", &location.country);
    put("zip", &location.zip);
    put("timezone", &location.timezone);
    person.insert("id".into(), json!(profile.id.as_str()));
    for (key, value) in &profile.properties {
        person.entry(key.clone()).or_insert_with(|| value.clone());
    }
    person
}

fn context(profile: &Profile, effect: &Effect, now: Timestamp) -> RenderContext {
    RenderContext {
        person: person(profile),
        event: Some(Value::Object(effect.trigger_properties.clone())),
        now: Some(now),
        ..RenderContext::default()
    }
}

async fn record_builtin(
    inner: &Arc<Inner>,
    metric: &'static str,
    effect: &Effect,
    properties: Value,
    time: Timestamp,
) {
    let Some(events) = inner.deps.events.clone() else {
        return;
    };
    let profile_id = ProfileId(effect.profile_id.clone());
    let unique_id = format!("{}:{}", metric, effect.key);
    let result = tokio::task::spawn_blocking(move || {
        events.record(metric, &profile_id, properties, unique_id, time)
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, metric, "recording a built-in event failed"),
        Err(error) => tracing::warn!(%error, metric, "recording a built-in event failed"),
    }
}

async fn send_email(
    inner: &Arc<Inner>,
    effect: &Effect,
    email: &SendEmail,
    now: Timestamp,
) -> Outcome {
    let Some(mail) = &inner.config.mail else {
        return failed("failed", "mail is not configured");
    };
    let source = match &email.template_id {
        Some(id) => {
            let stored = match &inner.deps.templates {
                Some(templates) => templates.get(id).await,
                None => None,
            };
            match stored {
                Some(t) => EmailTemplateSource {
                    subject: email.subject.clone(),
                    html: t.html,
                    text: t.text,
                },
                None => return failed("failed", format!("template {id} not found")),
            }
        }
        None => EmailTemplateSource {
            subject: email.subject.clone(),
            html: email.html.clone().unwrap_or_default(),
            text: email.text.clone(),
        },
    };
    let template = match inner.templates.get_or_compile(&source) {
        Ok(t) => t,
        Err(error) => return failed("failed", format!("template: {error}")),
    };
    let profile = match inner
        .engage
        .get_profile(&ProfileId(effect.profile_id.clone()))
        .await
    {
        Ok(p) => p,
        Err(signalbox_engage::EngageError::NotFound { .. }) => {
            return failed("failed", "the profile no longer exists")
        }
        Err(error) => return retry_mail(inner, effect, now, error.to_string()),
    };
    let address = effect
        .email
        .clone()
        .filter(|e| !e.is_empty())
        .or_else(|| profile.email.clone());
    let Some(address) = address else {
        return failed("failed", "the profile has no email address");
    };
    let name = [profile.first_name.as_deref(), profile.last_name.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let recipient = Recipient {
        profile_id: effect.profile_id.clone(),
        email: address.clone(),
        name: (!name.is_empty()).then_some(name),
    };
    let from = match (&email.from_email, &email.from_label) {
        (Some(addr), Some(label)) => Some(format!("{} <{addr}>", quote_label(label))),
        (Some(addr), None) => Some(addr.clone()),
        (None, _) => None,
    };
    let mut outgoing = match mail.composer.compose(
        &template,
        &recipient,
        &effect.key,
        context(&profile, effect, now),
        from,
    ) {
        Ok(o) => o,
        Err(error) => return failed("failed", error.to_string()),
    };
    outgoing
        .headers
        .push(("X-Signalbox-Flow".into(), effect.flow_id.clone()));
    let subject = outgoing.subject.clone();
    match mail.mailer.send(outgoing).await {
        Ok(receipt) => {
            let props = json!({
                "Subject": subject,
                "$flow": effect.flow_id,
                "$flow_name": effect.flow_name,
                "$message": effect.action.id,
                "$message_id": effect.key,
                "Message-ID": receipt.message_id,
                "Email": address,
                "$trigger_event_id": effect.trigger_event_id,
            });
            record_builtin(inner, "Received Email", effect, props, now).await;
            Outcome::Done {
                stat: "sent",
                detail: Some(receipt.response),
                message_id: Some(receipt.message_id),
                subject: Some(subject),
            }
        }
        Err(error) if error.is_bounce() => {
            let props = json!({
                "Subject": subject,
                "$flow": effect.flow_id,
                "$flow_name": effect.flow_name,
                "$message": effect.action.id,
                "$message_id": effect.key,
                "Email": address,
                "Reason": error.to_string(),
            });
            record_builtin(inner, "Bounced Email", effect, props, now).await;
            failed("bounced", error.to_string())
        }
        Err(error) if error.is_permanent() => failed("failed", error.to_string()),
        Err(error) => retry_mail(inner, effect, now, error.to_string()),
    }
}

fn quote_label(label: &str) -> String {
    if label.chars().all(|c| c.is_alphanumeric() || c == ' ') {
        label.to_owned()
    } else {
        format!("\"{}\"", label.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

fn retry_mail(inner: &Inner, effect: &Effect, now: Timestamp, reason: String) -> Outcome {
    if effect.attempts + 1 >= MAIL_ATTEMPTS {
        return failed(
            "failed",
            format!("gave up after {MAIL_ATTEMPTS} attempts: {reason}"),
        );
    }
    Outcome::Retry {
        at: backoff(now, inner.config.mail_retry, effect.attempts),
        reason,
        http_status: None,
    }
}

fn backoff(now: Timestamp, base: SignedDuration, attempts: i64) -> Timestamp {
    let factor = 1i32 << attempts.clamp(0, 16);
    now.saturating_add(base * factor).unwrap_or(now)
}

/// Renders the webhook body: a string is a template (text, not HTML-escaped); in a JSON body
/// every string is rendered on its own, so values cannot break the JSON.
fn render_body(inner: &Inner, body: &Value, ctx: &RenderContext) -> Result<(String, bool), String> {
    fn render_str(inner: &Inner, text: &str, ctx: &RenderContext) -> Result<String, String> {
        if !text.contains("{{") && !text.contains("{%") {
            return Ok(text.to_owned());
        }
        let source = EmailTemplateSource {
            subject: String::new(),
            html: String::new(),
            text: Some(text.to_owned()),
        };
        let template = inner
            .templates
            .get_or_compile(&source)
            .map_err(|e| e.to_string())?;
        Ok(template.render(ctx).map_err(|e| e.to_string())?.text)
    }
    fn walk(inner: &Inner, value: &Value, ctx: &RenderContext) -> Result<Value, String> {
        Ok(match value {
            Value::String(s) => Value::String(render_str(inner, s, ctx)?),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| walk(inner, v, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), walk(inner, v, ctx)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }
    match body {
        Value::Null => {
            // No body given: the profile and the triggering event.
            Ok((
                json!({"profile": Value::Object(ctx.person.clone()), "event": ctx.event})
                    .to_string(),
                true,
            ))
        }
        Value::String(text) => {
            let rendered = render_str(inner, text, ctx)?;
            let is_json = serde_json::from_str::<Value>(&rendered).is_ok();
            Ok((rendered, is_json))
        }
        other => Ok((walk(inner, other, ctx)?.to_string(), true)),
    }
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn sign_webhook(secret: &str, unix_seconds: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={unix_seconds},v1={}",
        to_hex(&mac.finalize().into_bytes())
    )
}

async fn send_webhook(
    inner: &Arc<Inner>,
    effect: &Effect,
    webhook: &SendWebhook,
    now: Timestamp,
) -> Outcome {
    let profile = match inner
        .engage
        .get_profile(&ProfileId(effect.profile_id.clone()))
        .await
    {
        Ok(p) => p,
        Err(error) => return failed("failed", format!("profile: {error}")),
    };
    let ctx = context(&profile, effect, now);
    let (body, is_json) = match render_body(inner, &webhook.body, &ctx) {
        Ok(b) => b,
        Err(error) => return failed("dead_lettered", format!("body template: {error}")),
    };
    let secret = webhook.secret.clone().unwrap_or_else(|| {
        derived_secret(
            &inner.config.webhook_key,
            &effect.flow_id,
            &effect.action.id,
        )
    });
    let signature = sign_webhook(&secret, now.as_second(), body.as_bytes());
    let mut request = OutboundRequest::post(&webhook.url)
        .header(SIGNATURE_HEADER, signature)
        .header(IDEMPOTENCY_HEADER, &effect.key)
        .header("User-Agent", "Signalbox-Flows");
    if is_json {
        request = request.header("Content-Type", "application/json");
    }
    for (name, value) in &webhook.headers {
        request = request.header(name, value);
    }
    let attempt = effect.attempts + 1;
    let max = inner.config.webhook_max_attempts.max(1) as i64;
    let give_up = |reason: String, status: Option<u16>| Outcome::Failed {
        stat: "dead_lettered",
        reason,
        dead_letter_body: Some(body.clone()),
        http_status: status,
    };
    let retry = |reason: String, status: Option<u16>| {
        if attempt >= max {
            give_up(
                format!("gave up after {attempt} attempts: {reason}"),
                status,
            )
        } else {
            Outcome::Retry {
                at: backoff(now, inner.config.webhook_backoff, effect.attempts),
                reason,
                http_status: status,
            }
        }
    };
    match inner.outbound.send(request.body(body.clone())).await {
        Ok(response) => {
            let code = response.status;
            if response.is_success() {
                Outcome::Done {
                    stat: "delivered",
                    detail: Some(code.to_string()),
                    message_id: None,
                    subject: None,
                }
            } else if (500..600).contains(&code) || code == 429 || code == 408 {
                retry(format!("HTTP {code}"), Some(code))
            } else {
                give_up(format!("HTTP {code} (not retried)"), Some(code))
            }
        }
        Err(OutboundError::Timeout(_)) => retry("timeout".into(), None),
        Err(error) if error.is_transient() => retry(error.to_string(), None),
        // Refused destinations and headers, and oversized answers, would fail the same way
        // again.
        Err(error) => {
            tracing::warn!(flow = %effect.flow_id, action = %effect.action.id, %error, "webhook not delivered");
            give_up(format!("{error} (not retried)"), None)
        }
    }
}

async fn update_profile(
    inner: &Arc<Inner>,
    effect: &Effect,
    update: &UpdateProfile,
    now: Timestamp,
) -> Outcome {
    let mut input = ProfileInput::default();
    for op in &update.operations {
        match op {
            ProfileOperation::Set { key, value } => {
                let text = value.as_str().map(str::to_owned);
                match (key.as_str(), text) {
                    ("first_name", Some(v)) => input.first_name = Some(v),
                    ("last_name", Some(v)) => input.last_name = Some(v),
                    ("organization", Some(v)) => input.organization = Some(v),
                    ("title", Some(v)) => input.title = Some(v),
                    ("image", Some(v)) => input.image = Some(v),
                    ("locale", Some(v)) => input.locale = Some(v),
                    ("phone_number", Some(v)) => input.phone_number = Some(v),
                    ("external_id", Some(v)) => input.external_id = Some(v),
                    (key, _) => {
                        let name = key
                            .strip_prefix("properties['")
                            .and_then(|k| k.strip_suffix("']"))
                            .unwrap_or(key);
                        input.properties.insert(name.to_owned(), value.clone());
                    }
                }
            }
            ProfileOperation::Unset { key } => {
                let name = key
                    .strip_prefix("properties['")
                    .and_then(|k| k.strip_suffix("']"))
                    .unwrap_or(key);
                input.unset.push(name.to_owned());
            }
        }
    }
    match inner
        .engage
        .update_profile(&ProfileId(effect.profile_id.clone()), input)
        .await
    {
        Ok(_) => Outcome::Done {
            stat: "updated",
            detail: None,
            message_id: None,
            subject: None,
        },
        Err(
            error @ (signalbox_engage::EngageError::Invalid { .. }
            | signalbox_engage::EngageError::NotFound { .. }
            | signalbox_engage::EngageError::DuplicateProfile { .. }
            | signalbox_engage::EngageError::Conflict { .. }),
        ) => failed("failed", error.to_string()),
        Err(error) => {
            if effect.attempts + 1 >= MAIL_ATTEMPTS {
                return failed("failed", error.to_string());
            }
            Outcome::Retry {
                at: backoff(now, SignedDuration::from_secs(5), effect.attempts),
                reason: error.to_string(),
                http_status: None,
            }
        }
    }
}

async fn list_update(
    inner: &Arc<Inner>,
    effect: &Effect,
    list: &ListUpdate,
    now: Timestamp,
) -> Outcome {
    let Some(lists) = inner.deps.lists.clone() else {
        return failed("failed", "list updates are not available");
    };
    let list = list.clone();
    let profile_id = ProfileId(effect.profile_id.clone());
    let result = tokio::task::spawn_blocking(move || {
        if list.add {
            lists.add(&list.list_id, &profile_id)
        } else {
            lists.remove(&list.list_id, &profile_id)
        }
    })
    .await;
    match result {
        Ok(Ok(())) => Outcome::Done {
            stat: if effect_is_add(effect) {
                "list_added"
            } else {
                "list_removed"
            },
            detail: None,
            message_id: None,
            subject: None,
        },
        Ok(Err(error)) if effect.attempts + 1 < MAIL_ATTEMPTS => Outcome::Retry {
            at: backoff(now, SignedDuration::from_secs(5), effect.attempts),
            reason: error.to_string(),
            http_status: None,
        },
        Ok(Err(error)) => failed("failed", error.to_string()),
        Err(error) => failed("failed", error.to_string()),
    }
}

fn effect_is_add(effect: &Effect) -> bool {
    matches!(&effect.action.kind, ActionKind::ListUpdate(l) if l.add)
}
