//! The engage destination's settings, per source, as Segment's classic Klaviyo destination
//! names them, and the per-message overrides in `integrations.Klaviyo`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Settings of one source's engage destination. Stored in the source's settings as a JSON
/// object with these camelCase keys; a missing key takes its default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DestinationSettings {
    /// Whether the source's calls reach engage at all.
    pub enabled: bool,
    /// "Enforce Email as Primary Identifier": a profile needs an email. Calls without one are
    /// attached to the profile their ids already resolve to, or held until they do.
    pub enforce_email: bool,
    /// The list an identify with an email subscribes the profile to.
    pub list_id: Option<String>,
    /// Double opt-in for that list, when the list asks for it. The operator's choice: a
    /// message's `integrations.Klaviyo.confirmOptin` can turn it on but never off.
    pub confirm_optin: bool,
    /// "Fallback on Anonymous ID": with `enforce_email` off, an anonymous id alone may create
    /// a profile.
    pub send_anonymous: bool,
    /// "Send Placed Order events as Order Completed".
    pub use_segment_spec: bool,
}

impl Default for DestinationSettings {
    fn default() -> Self {
        DestinationSettings {
            enabled: true,
            enforce_email: true,
            list_id: None,
            confirm_optin: true,
            send_anonymous: false,
            use_segment_spec: true,
        }
    }
}

/// The keys `set` understands.
pub const SETTING_KEYS: [&str; 6] = [
    "enabled",
    "enforceEmail",
    "listId",
    "confirmOptin",
    "sendAnonymous",
    "useSegmentSpec",
];

impl DestinationSettings {
    /// Reads a source's settings object; unknown keys are ignored, bad values fall back to
    /// defaults key by key.
    pub fn from_json(value: &Value) -> DestinationSettings {
        let mut settings = DestinationSettings::default();
        if let Value::Object(map) = value {
            for (key, value) in map {
                let _ = settings.apply(key, value);
            }
        }
        settings
    }

    /// The object stored for these settings.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("settings serialise")
    }

    /// Applies a JSON object of settings (`{"enforceEmail": false, "listId": null}`);
    /// on a bad key or value, returns that key and the reason.
    pub fn patch(&mut self, patch: &Map<String, Value>) -> Result<(), (String, String)> {
        for (key, value) in patch {
            self.apply(key, value)
                .map_err(|reason| (key.clone(), reason))?;
        }
        Ok(())
    }

    /// The stored settings object with these settings written over it; keys this version does
    /// not know are kept.
    pub fn merged_into(&self, stored: Value) -> Value {
        let mut merged = match stored {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        if let Value::Object(ours) = self.to_json() {
            merged.extend(ours);
        }
        Value::Object(merged)
    }

    /// Sets one key from text as typed on a command line (`enforceEmail=false`,
    /// `listId=L1`, `listId=` to clear).
    pub fn set_text(&mut self, key: &str, text: &str) -> Result<(), String> {
        if !SETTING_KEYS.contains(&key) {
            return Err(format!(
                "unknown setting {key:?}; known: {}",
                SETTING_KEYS.join(", ")
            ));
        }
        let value = match key {
            "listId" if text.is_empty() || text == "null" => Value::Null,
            "listId" => Value::String(text.to_owned()),
            _ => match text.to_ascii_lowercase().as_str() {
                "true" | "on" | "yes" | "1" => Value::Bool(true),
                "false" | "off" | "no" | "0" => Value::Bool(false),
                _ => return Err(format!("{key} takes true or false, not {text:?}")),
            },
        };
        self.apply(key, &value)
    }

    fn apply(&mut self, key: &str, value: &Value) -> Result<(), String> {
        let flag = |value: &Value| {
            value
                .as_bool()
                .ok_or_else(|| format!("{key} takes true or false"))
        };
        match key {
            "enabled" => self.enabled = flag(value)?,
            "enforceEmail" => self.enforce_email = flag(value)?,
            "confirmOptin" => self.confirm_optin = flag(value)?,
            "sendAnonymous" => self.send_anonymous = flag(value)?,
            "useSegmentSpec" => self.use_segment_spec = flag(value)?,
            "listId" => {
                self.list_id = match value {
                    Value::Null => None,
                    Value::String(s) if s.is_empty() => None,
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => return Err("listId takes a string".into()),
                }
            }
            _ => {
                return Err(format!(
                    "unknown setting {key:?}; known: {}",
                    SETTING_KEYS.join(", ")
                ))
            }
        }
        Ok(())
    }
}

/// What one message's `integrations` object says about the destination.
///
/// A message comes in under a write key, which is public (it ships in every browser), so a
/// message may name a list but cannot skip a double opt-in: `confirmOptin: false` in a message
/// is ignored, and reported through `confirm_optin_ignored`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSettings {
    /// `integrations.Klaviyo: false`, or `All: false` without `Klaviyo` turned on.
    pub enabled: bool,
    pub list_id: Option<String>,
    /// The source's `confirmOptin`, or `true` when the message asks for it.
    pub confirm_optin: bool,
    /// The message asked for `confirmOptin: false` where the source's setting is `true`.
    pub confirm_optin_ignored: bool,
}

/// The destination names a message may address this destination by.
const DESTINATION_NAMES: [&str; 2] = ["Klaviyo", "Klaviyo (Actions)"];

/// Applies a message's `integrations` to the source's settings.
pub fn message_settings(
    settings: &DestinationSettings,
    integrations: Option<&Map<String, Value>>,
) -> MessageSettings {
    let mut out = MessageSettings {
        enabled: true,
        list_id: settings.list_id.clone(),
        confirm_optin: settings.confirm_optin,
        confirm_optin_ignored: false,
    };
    let Some(integrations) = integrations else {
        return out;
    };
    let own = DESTINATION_NAMES
        .iter()
        .find_map(|name| integrations.get(*name));
    let all = integrations
        .get("All")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    match own {
        Some(Value::Bool(on)) => out.enabled = *on,
        Some(Value::Object(options)) => {
            if let Some(list) = options.get("listId") {
                match list {
                    Value::String(s) if !s.is_empty() => out.list_id = Some(s.clone()),
                    Value::Number(n) => out.list_id = Some(n.to_string()),
                    _ => {}
                }
            }
            match options.get("confirmOptin").and_then(Value::as_bool) {
                Some(true) => out.confirm_optin = true,
                Some(false) => out.confirm_optin_ignored = out.confirm_optin,
                None => {}
            }
        }
        _ => out.enabled = all,
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_segment_s() {
        let s = DestinationSettings::from_json(&json!({}));
        assert!(s.enforce_email && s.confirm_optin && s.use_segment_spec && s.enabled);
        assert!(!s.send_anonymous);
        assert_eq!(s.list_id, None);
    }

    #[test]
    fn set_and_round_trip() {
        let mut s = DestinationSettings::default();
        s.set_text("enforceEmail", "false").unwrap();
        s.set_text("listId", "L1").unwrap();
        assert!(s.set_text("enforceEmail", "maybe").is_err());
        assert!(s.set_text("colour", "red").unwrap_err().contains("unknown"));
        let back = DestinationSettings::from_json(&s.to_json());
        assert_eq!(back, s);
        assert_eq!(s.to_json()["enforceEmail"], false);
        assert_eq!(s.to_json()["listId"], "L1");
        s.set_text("listId", "").unwrap();
        assert_eq!(s.list_id, None);
    }

    #[test]
    fn integrations_override_per_message() {
        let s = DestinationSettings {
            list_id: Some("L1".into()),
            ..DestinationSettings::default()
        };
        let check = |integrations: Value| message_settings(&s, integrations.as_object());
        let m = check(json!({}));
        assert!(m.enabled && m.confirm_optin);
        assert_eq!(m.list_id.as_deref(), Some("L1"));
        assert!(!check(json!({"Klaviyo": false})).enabled);
        assert!(!check(json!({"All": false})).enabled);
        assert!(check(json!({"All": false, "Klaviyo": true})).enabled);
        let m = check(json!({"Klaviyo": {"listId": "L2", "confirmOptin": false}}));
        assert!(m.enabled && m.confirm_optin && m.confirm_optin_ignored);
        assert_eq!(m.list_id.as_deref(), Some("L2"));
        assert!(check(json!({"All": false, "Klaviyo (Actions)": {"listId": "L3"}})).enabled);
    }

    #[test]
    fn a_message_may_ask_for_double_opt_in_but_never_skip_it() {
        let trusting = DestinationSettings {
            confirm_optin: false,
            ..DestinationSettings::default()
        };
        let check = |settings: &DestinationSettings, integrations: Value| {
            message_settings(settings, integrations.as_object())
        };
        let strict = DestinationSettings::default();
        let m = check(&strict, json!({"Klaviyo": {"confirmOptin": false}}));
        assert!(m.confirm_optin && m.confirm_optin_ignored);
        let m = check(&strict, json!({"Klaviyo": {"confirmOptin": true}}));
        assert!(m.confirm_optin && !m.confirm_optin_ignored);
        // The operator turned double opt-in off for the source: a message may turn it on.
        let m = check(&trusting, json!({"Klaviyo": {"confirmOptin": false}}));
        assert!(!m.confirm_optin && !m.confirm_optin_ignored);
        let m = check(&trusting, json!({"Klaviyo": {"confirmOptin": true}}));
        assert!(m.confirm_optin && !m.confirm_optin_ignored);
        assert!(!check(&trusting, json!({})).confirm_optin);
    }
}
