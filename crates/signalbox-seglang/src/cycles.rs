//! Segments that (directly or through others) require membership of themselves.

use std::collections::BTreeMap;

use crate::ast::{Condition, Definition};
use crate::error::DefinitionError;
use crate::parse::join;

/// A chain of segments each naming the next in a membership condition, the last naming the
/// first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    pub hops: Vec<Hop>,
}

/// One segment of a cycle and where its definition names the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub segment_id: String,
    /// Relative to the definition object, e.g. `/condition_groups/0/conditions/2/group_ids/0`.
    pub pointer: String,
}

impl Cycle {
    pub fn segment_ids(&self) -> Vec<&str> {
        self.hops.iter().map(|h| h.segment_id.as_str()).collect()
    }

    /// The cycle as an error in `segment_id`'s definition (the segment being saved), pointing at
    /// its membership condition; `None` if the segment is not on the cycle.
    pub fn to_error(&self, segment_id: &str, pointer_prefix: &str) -> Option<DefinitionError> {
        let start = self.hops.iter().position(|h| h.segment_id == segment_id)?;
        let mut path: Vec<&str> = self.hops[start..]
            .iter()
            .chain(&self.hops[..start])
            .map(|h| h.segment_id.as_str())
            .collect();
        path.push(segment_id);
        Some(DefinitionError::invalid(
            format!("{pointer_prefix}{}", self.hops[start].pointer),
            format!("segment membership forms a cycle: {}", path.join(" -> ")),
        ))
    }
}

/// Finds membership cycles among segment definitions (ids that are not keys of the map are
/// lists or unknown segments and end a chain). Every cyclic set of segments yields at least
/// one cycle; a segment naming itself is a cycle of one hop. Deterministic order.
pub fn find_cycles(definitions: &BTreeMap<String, Definition>) -> Vec<Cycle> {
    let ids: Vec<&String> = definitions.keys().collect();
    let index_of = |id: &str| ids.binary_search_by(|k| k.as_str().cmp(id)).ok();
    // Edges: (target index, pointer of the group id naming it).
    let edges: Vec<Vec<(usize, String)>> = definitions
        .values()
        .map(|definition| {
            let mut out = Vec::new();
            for (at, condition) in definition.conditions() {
                let Condition::Membership(membership) = condition else {
                    continue;
                };
                for (k, id) in membership.group_ids.iter().enumerate() {
                    if let Some(target) = index_of(id) {
                        out.push((target, join(&join(&at.pointer(), "group_ids"), k)));
                    }
                }
            }
            out
        })
        .collect();

    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        New,
        OnPath,
        Done,
    }
    let mut color = vec![Color::New; ids.len()];
    let mut cycles = Vec::new();
    for root in 0..ids.len() {
        if color[root] != Color::New {
            continue;
        }
        // Depth-first, without recursion: (node, index of the next edge to follow).
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        color[root] = Color::OnPath;
        while let Some(top) = path.last_mut() {
            let (node, next) = *top;
            let Some((target, _)) = edges[node].get(next) else {
                color[node] = Color::Done;
                path.pop();
                continue;
            };
            top.1 += 1;
            match color[*target] {
                Color::New => {
                    color[*target] = Color::OnPath;
                    path.push((*target, 0));
                }
                Color::OnPath => {
                    let from = path.iter().position(|(n, _)| n == target).unwrap_or(0);
                    let hops = path[from..]
                        .iter()
                        .map(|(n, taken)| Hop {
                            segment_id: ids[*n].clone(),
                            // The edge each node is following is the one before `taken`.
                            pointer: edges[*n][taken - 1].1.clone(),
                        })
                        .collect();
                    cycles.push(Cycle { hops });
                }
                Color::Done => {}
            }
        }
    }
    cycles
}
