//! Membership cycles between segments.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use signalbox_seglang::{find_cycles, Definition};

use crate::def;

fn in_groups(groups: &[&[&str]]) -> Definition {
    let conditions: Vec<Value> = groups
        .iter()
        .map(|ids| json!({"type": "profile-group-membership", "is_member": true, "group_ids": ids}))
        .collect();
    def(json!({"condition_groups": [
        {"conditions": [{"type": "profile-property", "property": "email",
                         "filter": {"type": "existence", "operator": "is-set"}}]},
        {"conditions": conditions},
    ]}))
}

#[test]
fn cycles_are_found_with_the_conditions_that_close_them() {
    let mut segments = BTreeMap::new();
    segments.insert("A".to_owned(), in_groups(&[&["LIST1", "B"]]));
    segments.insert("B".to_owned(), in_groups(&[&["C"]]));
    segments.insert("C".to_owned(), in_groups(&[&["X"], &["A"]]));
    segments.insert("D".to_owned(), in_groups(&[&["D"]]));
    segments.insert("E".to_owned(), in_groups(&[&["LIST1"]]));
    segments.insert("F".to_owned(), in_groups(&[&["A", "E"]]));

    let cycles = find_cycles(&segments);
    let found: Vec<Vec<(&str, &str)>> = cycles
        .iter()
        .map(|c| {
            c.hops
                .iter()
                .map(|h| (h.segment_id.as_str(), h.pointer.as_str()))
                .collect()
        })
        .collect();
    assert_eq!(
        found,
        [
            vec![
                ("A", "/condition_groups/1/conditions/0/group_ids/1"),
                ("B", "/condition_groups/1/conditions/0/group_ids/0"),
                ("C", "/condition_groups/1/conditions/1/group_ids/0"),
            ],
            vec![("D", "/condition_groups/1/conditions/0/group_ids/0")],
        ]
    );
    assert_eq!(cycles[0].segment_ids(), ["A", "B", "C"]);

    let error = cycles[0]
        .to_error("B", "/data/attributes/definition")
        .unwrap();
    assert_eq!(
        error.pointer,
        "/data/attributes/definition/condition_groups/1/conditions/0/group_ids/0"
    );
    assert_eq!(
        error.detail,
        "segment membership forms a cycle: B -> C -> A -> B"
    );
    assert!(cycles[0].to_error("F", "").is_none());
    assert_eq!(
        cycles[1].to_error("D", "").unwrap().detail,
        "segment membership forms a cycle: D -> D"
    );
}

#[test]
fn negative_membership_also_closes_a_cycle_and_acyclic_sets_are_clean() {
    let not_in = |id: &str| {
        def(json!({"condition_groups": [{"conditions": [
            {"type": "profile-group-membership", "is_member": false, "group_ids": [id]}]}]}))
    };
    let mut segments = BTreeMap::new();
    segments.insert("P".to_owned(), not_in("Q"));
    segments.insert("Q".to_owned(), not_in("P"));
    assert_eq!(find_cycles(&segments).len(), 1);

    let mut chain = BTreeMap::new();
    for i in 0..2_000 {
        chain.insert(format!("s{i:05}"), not_in(&format!("s{:05}", i + 1)));
    }
    assert!(
        find_cycles(&chain).is_empty(),
        "a long chain is not a cycle"
    );
    chain.insert("s02000".to_owned(), not_in("s00000"));
    assert_eq!(find_cycles(&chain)[0].hops.len(), 2_001);
}
