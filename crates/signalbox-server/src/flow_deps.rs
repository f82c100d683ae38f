//! The flows engine's dependencies, implemented over what this server holds: profile facts
//! as segments read them (engage's [`signalbox_engage::facts`], with segment membership from
//! [`Audience::segment_lookup`]), built-in metrics through
//! [`signalbox_engage::Engage::record_builtin_event`], templates from [`TemplateStore`].
//! List updates go through [`Engage::add_list_members`]/[`Engage::remove_list_members`];
//! segment triggers follow the segment engine's membership history ([`Audience::changes_after`]).
//!
//! The engine calls these on blocking threads; async work is waited on with the runtime's
//! `Handle::block_on`.

use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use serde_json::Value;
use signalbox_audience::Audience;
use signalbox_engage::facts::{no_segments, FactsReader, SegmentMembership, SharedSegmentLookup};
use signalbox_engage::{BuiltinEventInput, BuiltinMetric, Engage, ListId, ProfileId, ProfileKey};
use signalbox_flows::{
    BuiltinEvents, DepError, DepResult, FactsLoader, FlowsDeps, ListActions, MembershipFeed,
    SegmentEntry, TemplateSource,
};
use signalbox_mail::EmailTemplateSource;
use signalbox_seglang::ProfileFacts;
use tokio::runtime::Handle;

use crate::templates::TemplateStore;

/// Everything this server can give the engine now.
pub fn flow_deps(
    engage: &Engage,
    templates: Option<TemplateStore>,
    audience: Option<Audience>,
    runtime: Handle,
) -> FlowsDeps {
    let mut deps = FlowsDeps::new(Arc::new(ProfileFactsLoader::new(
        engage.clone(),
        audience.clone(),
    )));
    deps.events = Some(Arc::new(EngageBuiltinEvents {
        engage: engage.clone(),
        runtime: runtime.clone(),
    }));
    deps.templates =
        templates.map(|store| Arc::new(StoredTemplates(store)) as Arc<dyn TemplateSource>);
    deps.membership = audience.map(|audience| {
        Arc::new(SegmentEntries {
            audience,
            runtime: runtime.clone(),
            lookup: Mutex::new(None),
        }) as Arc<dyn MembershipFeed>
    });
    deps.lists = Some(Arc::new(EngageLists {
        engage: engage.clone(),
        runtime,
    }));
    deps
}

/// Segment entries for segment-triggered flows: the segment engine's membership history,
/// and its membership now (checked again before an email goes out).
pub struct SegmentEntries {
    audience: Audience,
    runtime: Handle,
    lookup: Mutex<Option<SharedSegmentLookup>>,
}

impl MembershipFeed for SegmentEntries {
    fn entered_after(&self, cursor: i64, limit: usize) -> DepResult<Vec<SegmentEntry>> {
        let changes = self
            .runtime
            .block_on(self.audience.changes_after(cursor, limit))
            .map_err(|err| DepError(err.to_string()))?;
        Ok(changes
            .into_iter()
            .map(|change| SegmentEntry {
                cursor: change.cursor,
                segment_id: change.segment_id,
                profile_pk: change.profile_pk,
                at_us: change.at.as_microsecond(),
                entered: change.entered,
            })
            .collect())
    }

    fn is_member(&self, segment_id: &str, profile_pk: ProfileKey) -> DepResult<bool> {
        let lookup = {
            let mut lookup = self
                .lookup
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match lookup.as_ref() {
                Some(open) => Arc::clone(open),
                None => {
                    let open = self
                        .audience
                        .segment_lookup()
                        .map_err(|err| DepError(err.to_string()))?;
                    *lookup = Some(Arc::clone(&open));
                    open
                }
            }
        };
        Ok(matches!(
            lookup(segment_id, profile_pk),
            SegmentMembership::Member { .. }
        ))
    }
}

/// A flow's `list-update` action: members added or removed through engage's list writes.
pub struct EngageLists {
    engage: Engage,
    runtime: Handle,
}

impl ListActions for EngageLists {
    fn add(&self, list_id: &str, profile_id: &ProfileId) -> DepResult<()> {
        let list = ListId(list_id.to_owned());
        self.runtime
            .block_on(
                self.engage
                    .add_list_members(&list, std::slice::from_ref(profile_id)),
            )
            .map(drop)
            .map_err(|err| DepError(err.to_string()))
    }

    fn remove(&self, list_id: &str, profile_id: &ProfileId) -> DepResult<()> {
        let list = ListId(list_id.to_owned());
        self.runtime
            .block_on(
                self.engage
                    .remove_list_members(&list, std::slice::from_ref(profile_id)),
            )
            .map(drop)
            .map_err(|err| DepError(err.to_string()))
    }
}

/// A profile's facts for filters and splits: the facts segments read, through one reader of
/// engage's and one of the segment engine's, opened on first use.
pub struct ProfileFactsLoader {
    engage: Engage,
    audience: Option<Audience>,
    readers: Mutex<Option<(FactsReader, SharedSegmentLookup)>>,
}

impl ProfileFactsLoader {
    pub fn new(engage: Engage, audience: Option<Audience>) -> ProfileFactsLoader {
        ProfileFactsLoader {
            engage,
            audience,
            readers: Mutex::new(None),
        }
    }

    fn readers(&self) -> DepResult<(FactsReader, SharedSegmentLookup)> {
        let mut readers = self
            .readers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(open) = readers.as_ref() {
            return Ok(open.clone());
        }
        let facts = self
            .engage
            .facts_reader()
            .map_err(|err| DepError(err.to_string()))?;
        let segments: SharedSegmentLookup = match &self.audience {
            Some(audience) => audience
                .segment_lookup()
                .map_err(|err| DepError(err.to_string()))?,
            None => Arc::new(no_segments),
        };
        *readers = Some((facts, segments));
        Ok(readers.clone().expect("just opened"))
    }
}

impl FactsLoader for ProfileFactsLoader {
    fn load(
        &self,
        profile_pk: ProfileKey,
        _now: Timestamp,
    ) -> DepResult<Box<dyn ProfileFacts + Send>> {
        let (facts, segments) = self.readers()?;
        let loaded = facts
            .load(profile_pk, segments)
            .map_err(|err| DepError(err.to_string()))?
            .ok_or_else(|| DepError(format!("no profile with key {profile_pk}")))?;
        Ok(Box::new(loaded))
    }
}

/// `Received Email`, `Bounced Email`, … as built-in events through the log.
pub struct EngageBuiltinEvents {
    engage: Engage,
    runtime: Handle,
}

impl BuiltinEvents for EngageBuiltinEvents {
    fn record(
        &self,
        metric: &str,
        profile_id: &ProfileId,
        properties: Value,
        unique_id: String,
        time: Timestamp,
    ) -> DepResult<()> {
        let metric = BuiltinMetric::ALL
            .into_iter()
            .find(|m| m.name() == metric)
            .ok_or_else(|| DepError(format!("{metric:?} is not a built-in metric")))?;
        let properties = match properties {
            Value::Object(map) => map,
            Value::Null => serde_json::Map::new(),
            other => {
                return Err(DepError(format!(
                    "properties must be an object, not {other}"
                )))
            }
        };
        let event = BuiltinEventInput {
            metric,
            profile_id: profile_id.clone(),
            properties,
            time: Some(time),
            unique_id: Some(unique_id),
        };
        self.runtime
            .block_on(self.engage.record_builtin_event(event))
            .map(drop)
            .map_err(|err| DepError(err.to_string()))
    }
}

/// Templates of `/api/templates`, by id. The subject comes from the send action.
pub struct StoredTemplates(pub TemplateStore);

#[async_trait::async_trait]
impl TemplateSource for StoredTemplates {
    async fn get(&self, id: &str) -> Option<EmailTemplateSource> {
        match self.0.email_source(id, "").await {
            Ok(source) => source,
            Err(err) => {
                tracing::warn!(template = id, error = %err, "template lookup failed");
                None
            }
        }
    }
}
