//! The segments the worker evaluates, parsed, in an order where every segment comes after the
//! segments its conditions read, with indexes from what changed to what to re-evaluate.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use signalbox_engage::facts::SegmentMembership;
use signalbox_engage::ProfileKey;
use signalbox_seglang::{Definition, Dependencies};

use crate::error::AudienceResult;
use crate::store::{SegmentKey, StoredSegment};

pub(crate) struct Compiled {
    pub pk: i64,
    pub id: String,
    pub version: i64,
    pub definition: Definition,
    pub deps: Dependencies,
}

#[derive(Default)]
pub(crate) struct Catalog {
    /// Topological order: a segment's dependencies have smaller indexes.
    pub segs: Vec<Compiled>,
    pub by_id: HashMap<String, usize>,
    pub by_pk: HashMap<i64, usize>,
    /// Segment keys by id, as membership lookups want them.
    pub pks: HashMap<String, i64>,
    /// Segments whose conditions name segment `i`.
    pub dependents: Vec<Vec<usize>>,
    pub by_metric: HashMap<String, Vec<usize>>,
    pub by_group: HashMap<String, Vec<usize>>,
    /// Segments a profile change (fields, properties, consent, lists) can move.
    pub profile_readers: Vec<usize>,
    /// Segments reading `last_event_date`, which any event moves.
    pub any_event: Vec<usize>,
    /// Segments time alone can move (a profile's schedule entry is for these).
    pub time_dependent: Vec<usize>,
    pub with_last_event: bool,
}

impl Catalog {
    pub(crate) fn build(rows: Vec<StoredSegment>) -> Catalog {
        let mut parsed = Vec::new();
        for StoredSegment {
            key: pk,
            id,
            version,
            definition,
        } in rows
        {
            match signalbox_seglang::parse(&definition) {
                Ok(definition) => {
                    let deps = definition.dependencies();
                    parsed.push(Compiled {
                        pk,
                        id,
                        version,
                        definition,
                        deps,
                    });
                }
                Err(errors) => {
                    tracing::error!(segment = %id, ?errors, "stored definition no longer parses; skipped")
                }
            }
        }
        // Kahn's algorithm over "reads" edges; whatever is left (a cycle, which saving
        // refuses) goes last.
        let ids: HashMap<String, usize> = parsed
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.clone(), i))
            .collect();
        let reads: Vec<Vec<usize>> = parsed
            .iter()
            .map(|c| {
                c.deps
                    .groups
                    .iter()
                    .filter_map(|g| ids.get(g).copied())
                    .collect()
            })
            .collect();
        let mut indegree: Vec<usize> = reads.iter().map(Vec::len).collect();
        let mut readers: Vec<Vec<usize>> = vec![Vec::new(); parsed.len()];
        for (i, deps) in reads.iter().enumerate() {
            for &d in deps {
                readers[d].push(i);
            }
        }
        let mut order = Vec::new();
        let mut ready: std::collections::BTreeSet<usize> =
            (0..parsed.len()).filter(|i| indegree[*i] == 0).collect();
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &r in &readers[i] {
                indegree[r] -= 1;
                if indegree[r] == 0 {
                    ready.insert(r);
                }
            }
        }
        for i in 0..parsed.len() {
            if !order.contains(&i) {
                order.push(i);
            }
        }
        let mut slots: Vec<Option<Compiled>> = parsed.into_iter().map(Some).collect();
        let segs: Vec<Compiled> = order
            .iter()
            .map(|&i| slots[i].take().expect("each once"))
            .collect();

        let mut catalog = Catalog {
            dependents: vec![Vec::new(); segs.len()],
            ..Catalog::default()
        };
        for (i, seg) in segs.iter().enumerate() {
            catalog.by_id.insert(seg.id.clone(), i);
            catalog.by_pk.insert(seg.pk, i);
            catalog.pks.insert(seg.id.clone(), seg.pk);
        }
        for (i, seg) in segs.iter().enumerate() {
            for metric in &seg.deps.metrics {
                catalog.by_metric.entry(metric.clone()).or_default().push(i);
            }
            let mut reads_lists = false;
            for group in &seg.deps.groups {
                catalog.by_group.entry(group.clone()).or_default().push(i);
                match catalog.by_id.get(group) {
                    Some(&j) => catalog.dependents[j].push(i),
                    None => reads_lists = true,
                }
            }
            if !seg.deps.properties.is_empty() || seg.deps.consent || reads_lists {
                catalog.profile_readers.push(i);
            }
            if seg.deps.time_dependent {
                catalog.time_dependent.push(i);
            }
            if seg.deps.properties.contains("last_event_date") {
                catalog.any_event.push(i);
                catalog.with_last_event = true;
            }
        }
        catalog.segs = segs;
        catalog
    }

    /// Definitions by segment id, for cycle checks.
    pub(crate) fn definitions(&self) -> BTreeMap<String, Definition> {
        self.segs
            .iter()
            .map(|s| (s.id.clone(), s.definition.clone()))
            .collect()
    }
}

/// Stored membership, as [`signalbox_engage::facts::EngageFacts`] asks for it: `ids` maps
/// segment ids to their keys, `joined` reads a membership.
pub(crate) fn lookup_member(
    joined: &dyn Fn(SegmentKey, ProfileKey) -> AudienceResult<Option<Timestamp>>,
    ids: &HashMap<String, SegmentKey>,
    group_id: &str,
    profile_pk: ProfileKey,
) -> SegmentMembership {
    let Some(&segment_pk) = ids.get(group_id) else {
        return SegmentMembership::NotASegment;
    };
    match joined(segment_pk, profile_pk) {
        Ok(Some(joined)) => SegmentMembership::Member { joined },
        Ok(None) => SegmentMembership::NotMember,
        Err(err) => {
            tracing::error!(error = %err, "reading segment membership failed");
            SegmentMembership::NotMember
        }
    }
}
