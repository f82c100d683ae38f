//! What a template sees, and the tracking view a preview renders with to list the variables
//! it asked for and did not find.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use minijinja::value::{Enumerator, Object, ObjectRepr};
use minijinja::Value;
use serde_json::{Map, Value as Json};

/// The variables of one rendering.
///
/// The profile's fields are at the top level as in Klaviyo (`{{ first_name }}`,
/// `{{ email }}`, custom properties through `{{ person|lookup:'Loyalty Points' }}`) and also
/// under `person`; the names below win over a profile field of the same name.
#[derive(Debug, Clone, Default)]
pub struct RenderContext {
    /// Profile fields and custom properties, flat: `email`, `first_name`, `last_name`,
    /// `phone_number`, `organization`, `title`, …, `Loyalty Points`.
    pub person: Map<String, Json>,
    /// The trigger event's properties (`event.Items`, `event|lookup:'$value'`); `None` for
    /// messages without a trigger event (campaigns), where `event.*` renders empty.
    pub event: Option<Json>,
    /// The sending account: `name`, `url`, `address`, … (`{{ organization.name }}`).
    pub organization: Map<String, Json>,
    /// The signed one-click unsubscribe page for this recipient and message.
    pub unsubscribe_url: String,
    /// The signed preferences page for this recipient and message.
    pub manage_preferences_url: String,
    /// The rendering time, for `{% now %}` (RFC 3339); empty when not given.
    pub now: Option<jiff::Timestamp>,
}

/// Top-level names the context defines itself.
const RESERVED: [&str; 6] = [
    "person",
    "event",
    "organization",
    "unsubscribe_url",
    "manage_preferences_url",
    "now",
];

/// minijinja's global functions, which a template reaches through the context first.
const GLOBALS: [&str; 5] = ["range", "dict", "namespace", "debug", "loop"];

impl RenderContext {
    /// The context as one JSON object: profile fields, then the reserved names.
    pub fn to_json(&self) -> Json {
        let mut root = Map::with_capacity(self.person.len() + RESERVED.len());
        for (key, value) in &self.person {
            if !RESERVED.contains(&key.as_str()) {
                root.insert(key.clone(), value.clone());
            }
        }
        root.insert("person".into(), Json::Object(self.person.clone()));
        root.insert(
            "event".into(),
            self.event.clone().unwrap_or(Json::Object(Map::new())),
        );
        root.insert(
            "organization".into(),
            Json::Object(self.organization.clone()),
        );
        root.insert(
            "unsubscribe_url".into(),
            Json::String(self.unsubscribe_url.clone()),
        );
        root.insert(
            "manage_preferences_url".into(),
            Json::String(self.manage_preferences_url.clone()),
        );
        if let Some(now) = self.now {
            root.insert("now".into(), Json::String(now.to_string()));
        }
        Json::Object(root)
    }

    pub(crate) fn to_value(&self) -> Value {
        Value::from_serialize(self.to_json())
    }

    /// The context as a tracking view; `misses` collects every path looked up and not found.
    pub(crate) fn to_tracked_value(&self, misses: &Misses) -> Value {
        Tracked::wrap(Arc::new(self.to_json()), Path::root(), misses.clone())
    }
}

/// The variables a rendering asked for and did not find, as paths
/// (`first_name`, `event.Items[0].ImageURL`, `person['Loyalty Points']`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Misses(Arc<Mutex<BTreeSet<String>>>);

impl Misses {
    fn record(&self, path: String) {
        if let Ok(mut misses) = self.0.lock() {
            misses.insert(path);
        }
    }

    pub(crate) fn take(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut misses| std::mem::take(&mut *misses).into_iter().collect())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
struct Path(String);

impl Path {
    fn root() -> Path {
        Path(String::new())
    }

    fn key(&self, key: &str) -> Path {
        let simple = key
            .chars()
            .next()
            .is_some_and(|c| c == '_' || c.is_alphabetic())
            && key.chars().all(|c| c == '_' || c.is_alphanumeric());
        Path(match (self.0.is_empty(), simple) {
            (true, _) => key.to_owned(),
            (false, true) => format!("{}.{key}", self.0),
            (false, false) => format!("{}[{key:?}]", self.0).replace('"', "'"),
        })
    }

    fn index(&self, index: usize) -> Path {
        Path(format!("{}[{index}]", self.0))
    }
}

/// A JSON object or array seen through minijinja's object protocol, recording misses.
#[derive(Debug)]
struct Tracked {
    json: Arc<Json>,
    /// Pointer from `json` (the shared root) to this value.
    pointer: String,
    path: Path,
    misses: Misses,
}

impl Tracked {
    fn wrap(root: Arc<Json>, path: Path, misses: Misses) -> Value {
        Tracked::child(root, String::new(), path, misses)
    }

    fn child(root: Arc<Json>, pointer: String, path: Path, misses: Misses) -> Value {
        match root.pointer(&pointer) {
            Some(Json::Object(_) | Json::Array(_)) => Value::from_object(Tracked {
                json: root,
                pointer,
                path,
                misses,
            }),
            Some(scalar) => Value::from_serialize(scalar),
            None => Value::UNDEFINED,
        }
    }

    fn this(&self) -> &Json {
        self.json.pointer(&self.pointer).unwrap_or(&Json::Null)
    }
}

fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

impl Object for Tracked {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        match self.this() {
            Json::Array(_) => ObjectRepr::Seq,
            _ => ObjectRepr::Map,
        }
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match self.this() {
            Json::Object(map) => {
                let name = key.as_str()?;
                if map.contains_key(name) {
                    let pointer = format!("{}/{}", self.pointer, escape_pointer(name));
                    Some(Tracked::child(
                        self.json.clone(),
                        pointer,
                        self.path.key(name),
                        self.misses.clone(),
                    ))
                } else {
                    let is_global = self.path.0.is_empty() && GLOBALS.contains(&name);
                    if !is_global {
                        self.misses.record(self.path.key(name).0);
                    }
                    None
                }
            }
            Json::Array(items) => {
                let index = key.as_i64()?;
                let index = if index < 0 {
                    items.len() as i64 + index
                } else {
                    index
                };
                if index >= 0 && (index as usize) < items.len() {
                    let pointer = format!("{}/{index}", self.pointer);
                    Some(Tracked::child(
                        self.json.clone(),
                        pointer,
                        self.path.index(index as usize),
                        self.misses.clone(),
                    ))
                } else {
                    self.misses.record(self.path.index(index.max(0) as usize).0);
                    None
                }
            }
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.this() {
            Json::Object(map) => {
                Enumerator::Values(map.keys().map(|key| Value::from(key.as_str())).collect())
            }
            Json::Array(items) => Enumerator::Seq(items.len()),
            _ => Enumerator::Empty,
        }
    }
}
