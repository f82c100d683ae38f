//! An in-memory profile: the reference implementation of `ProfileFacts` for tests.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{Map, Value};
use signalbox_seglang::{
    event_matches, ConsentView, EventFilter, ProfileFacts, PropertyPath, TimeWindow,
};

use crate::ts;

#[derive(Debug, Clone)]
pub struct Event {
    pub metric: String,
    pub time: Timestamp,
    pub value: f64,
    pub properties: Map<String, Value>,
}

#[derive(Debug, Clone, Default)]
pub struct MemoryFacts {
    pub events: Vec<Event>,
    pub properties: BTreeMap<PropertyPath, Value>,
    /// Group id → join time (if known).
    pub groups: BTreeMap<String, Option<Timestamp>>,
    pub email: ConsentView,
    pub sms: ConsentView,
}

impl MemoryFacts {
    pub fn new() -> MemoryFacts {
        MemoryFacts::default()
    }

    pub fn event(mut self, metric: &str, time: &str, value: f64, properties: Value) -> MemoryFacts {
        self.events.push(Event {
            metric: metric.to_owned(),
            time: ts(time),
            value,
            properties: properties.as_object().cloned().unwrap_or_default(),
        });
        self
    }

    pub fn event_at(mut self, metric: &str, time: Timestamp, value: f64) -> MemoryFacts {
        self.events.push(Event {
            metric: metric.to_owned(),
            time,
            value,
            properties: Map::new(),
        });
        self
    }

    /// `path` as Klaviyo spells it: `email`, `location['city']`, `properties['Plan']`.
    pub fn prop(mut self, path: &str, value: Value) -> MemoryFacts {
        let path = PropertyPath::from_wire(path).unwrap_or_else(|| panic!("bad path {path}"));
        self.properties.insert(path, value);
        self
    }

    pub fn member(mut self, group_id: &str, joined: Option<&str>) -> MemoryFacts {
        self.groups.insert(group_id.to_owned(), joined.map(ts));
        self
    }

    fn matching<'a>(
        &'a self,
        metric_id: &'a str,
        window: TimeWindow,
        filters: &'a [EventFilter],
    ) -> impl Iterator<Item = &'a Event> + 'a {
        self.events.iter().filter(move |e| {
            e.metric == metric_id
                && window.contains(e.time)
                && event_matches(filters, &e.properties)
        })
    }
}

impl ProfileFacts for MemoryFacts {
    fn metric_count(&self, metric_id: &str, window: TimeWindow, filters: &[EventFilter]) -> u64 {
        self.matching(metric_id, window, filters).count() as u64
    }

    fn metric_sum(&self, metric_id: &str, window: TimeWindow, filters: &[EventFilter]) -> f64 {
        self.matching(metric_id, window, filters)
            .map(|e| e.value)
            .sum()
    }

    fn metric_event_times(
        &self,
        metric_id: &str,
        window: TimeWindow,
        filters: &[EventFilter],
    ) -> Vec<Timestamp> {
        self.matching(metric_id, window, filters)
            .map(|e| e.time)
            .collect()
    }

    fn property(&self, path: &PropertyPath) -> Option<&Value> {
        self.properties.get(path)
    }

    fn is_member(&self, group_id: &str) -> bool {
        self.groups.contains_key(group_id)
    }

    fn joined_at(&self, group_id: &str) -> Option<Timestamp> {
        self.groups.get(group_id).copied().flatten()
    }

    fn email_consent(&self) -> ConsentView {
        self.email.clone()
    }

    fn sms_consent(&self) -> ConsentView {
        self.sms.clone()
    }
}
