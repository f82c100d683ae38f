//! The behaviour every [`FlowStore`] backend shows, written once and run against each backend
//! so they cannot drift. Each case takes a new, empty store;
//! [`flow_store_conformance!`](crate::flow_store_conformance) makes one test per case.

use std::sync::Arc;

use jiff::Timestamp;
use serde_json::json;
use signalbox_engage::feed::FeedCursor;

use crate::definition::FlowDefinition;
use crate::error::FlowsError;
use crate::flow_store::{FlowChange, FlowStore, NewFlow};
use crate::model::{FlowStatus, HeldStatus};

/// Makes one `#[test]` per conformance case. `$make` is an expression that evaluates to
/// `(Arc<dyn FlowStore>, G)`: a new empty store and a guard that keeps its files or database
/// alive.
#[macro_export]
macro_rules! flow_store_conformance {
    ($make:expr) => {
        $crate::flow_store_conformance!(@cases $make;
            a_created_flow_is_read_back_with_real_action_ids,
            action_ids_are_unique_across_flows,
            an_unknown_flow_is_none,
            flows_are_listed_oldest_first,
            flows_are_paged_newest_change_first,
            a_new_flow_has_no_activity,
            an_unknown_held_message_is_not_found,
            a_flow_is_changed_in_one_step,
            a_refused_change_changes_nothing,
            a_deleted_flow_is_gone,
            the_feed_cursor_is_kept_from_the_first_start
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let (store, guard) = $make;
                $crate::conformance::$case(store);
                drop(guard);
            }
        )*
    };
}

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_790_000_000 + second).unwrap()
}

fn definition() -> FlowDefinition {
    FlowDefinition::parse(&json!({
        "triggers": [{"type": "metric", "id": "M1"}],
        "entry_action_id": "wait",
        "actions": [
            {"temporary_id": "wait", "type": "time-delay",
             "data": {"unit": "hours", "value": 4}, "links": {"next": "later"}},
            {"temporary_id": "later", "type": "time-delay",
             "data": {"unit": "days", "value": 1}, "links": {"next": null}}
        ]
    }))
    .unwrap()
}

fn create(store: &dyn FlowStore, id: &str, second: i64) -> FlowDefinition {
    let flow = NewFlow {
        id,
        name: &format!("Flow {id}"),
        status: FlowStatus::Draft,
        now: at(second),
    };
    store.create_flow(&flow, definition()).unwrap()
}

pub fn a_created_flow_is_read_back_with_real_action_ids(store: Arc<dyn FlowStore>) {
    let saved = create(&*store, "F1", 1);
    assert!(saved.actions.iter().all(|a| !a.temporary));
    assert_eq!(saved.entry_action_id, saved.actions[0].id);
    let flow = store.flow("F1").unwrap().unwrap();
    assert_eq!(flow.id, "F1");
    assert_eq!(flow.name, "Flow F1");
    assert_eq!(flow.status, FlowStatus::Draft);
    assert!(!flow.archived);
    assert_eq!(flow.version, 1);
    assert_eq!(flow.trigger_type, "Metric");
    assert_eq!(flow.created, at(1));
    assert_eq!(flow.updated, at(1));
    assert_eq!(flow.definition.to_stored_json(), saved.to_stored_json());
}

pub fn action_ids_are_unique_across_flows(store: Arc<dyn FlowStore>) {
    let first = create(&*store, "F1", 1);
    let second = create(&*store, "F2", 2);
    for action in &second.actions {
        assert!(first.action(&action.id).is_none(), "{} reused", action.id);
    }
}

pub fn an_unknown_flow_is_none(store: Arc<dyn FlowStore>) {
    assert!(store.flow("nope").unwrap().is_none());
    assert!(store.flows().unwrap().is_empty());
    let page = store.flows_page(None, 10).unwrap();
    assert!(page.flows.is_empty());
    assert_eq!(page.next, None);
}

pub fn flows_are_listed_oldest_first(store: Arc<dyn FlowStore>) {
    create(&*store, "B", 2);
    create(&*store, "A", 3);
    create(&*store, "C", 1);
    let ids: Vec<String> = store.flows().unwrap().into_iter().map(|f| f.id).collect();
    assert_eq!(ids, ["C", "B", "A"]);
}

pub fn flows_are_paged_newest_change_first(store: Arc<dyn FlowStore>) {
    create(&*store, "A", 1);
    create(&*store, "B", 2);
    create(&*store, "C", 2);
    let first = store.flows_page(None, 2).unwrap();
    let ids: Vec<&str> = first.flows.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["C", "B"]);
    let next = first.next.expect("a next page");
    let updated_us = at(2).as_microsecond();
    assert_eq!(next, format!("{updated_us}.B"));
    let second = store.flows_page(Some((updated_us, "B")), 2).unwrap();
    let ids: Vec<&str> = second.flows.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["A"]);
    assert_eq!(second.next, None);
    // A limit of zero still reads one.
    assert_eq!(store.flows_page(None, 0).unwrap().flows.len(), 1);
}

pub fn a_new_flow_has_no_activity(store: Arc<dyn FlowStore>) {
    create(&*store, "F1", 1);
    let stats = store.stats("F1").unwrap();
    assert_eq!(stats.flow.counts.get("active"), Some(&0));
    assert_eq!(stats.flow.counts.get("waiting"), Some(&0));
    assert_eq!(stats.flow.counts.get("pending"), Some(&0));
    assert!(stats.actions.is_empty());
    assert!(store.runs("F1", 10).unwrap().is_empty());
    assert!(store.sends("F1").unwrap().is_empty());
    assert!(store.dead_letters("F1").unwrap().is_empty());
    assert!(store.held_messages("F1", None, 0, 10).unwrap().is_empty());
    let pending = store.held_messages("F1", Some(HeldStatus::Pending), 0, 10);
    assert!(pending.unwrap().is_empty());
}

pub fn an_unknown_held_message_is_not_found(store: Arc<dyn FlowStore>) {
    create(&*store, "F1", 1);
    assert!(store.held_message(1).unwrap().is_none());
    let err = store
        .decide_held("F1", 1, HeldStatus::Approved, at(2))
        .unwrap_err();
    assert!(matches!(err, FlowsError::NotFound { .. }), "{err}");
}

pub fn a_flow_is_changed_in_one_step(store: Arc<dyn FlowStore>) {
    let saved = create(&*store, "F1", 1);
    let mut seen = None;
    let running = store
        .update_flow("F1", at(5), &mut |current| {
            seen = Some(current.version);
            Ok(FlowChange {
                name: Some("Renamed".into()),
                status: Some(FlowStatus::Live),
                archived: None,
                definition: Some(definition()),
            })
        })
        .unwrap();
    assert!(running);
    assert_eq!(seen, Some(1));
    let flow = store.flow("F1").unwrap().unwrap();
    assert_eq!(flow.name, "Renamed");
    assert_eq!(flow.status, FlowStatus::Live);
    assert_eq!(flow.version, 2);
    assert_eq!(flow.created, at(1));
    assert_eq!(flow.updated, at(5));
    // The new version's actions got new real ids.
    assert!(flow.definition.actions.iter().all(|a| !a.temporary));
    for action in &flow.definition.actions {
        assert!(saved.action(&action.id).is_none(), "{} reused", action.id);
    }
    // Archived, the flow no longer runs; nothing else changes.
    let running = store
        .update_flow("F1", at(6), &mut |_| {
            Ok(FlowChange {
                archived: Some(true),
                ..FlowChange::default()
            })
        })
        .unwrap();
    assert!(!running);
    let flow = store.flow("F1").unwrap().unwrap();
    assert!(flow.archived);
    assert_eq!(flow.version, 2);
    assert_eq!(flow.updated, at(6));
    store.unpark_runs("F1", at(7)).unwrap();
    let err = store
        .update_flow("nope", at(6), &mut |_| Ok(FlowChange::default()))
        .unwrap_err();
    assert!(matches!(err, FlowsError::NotFound { .. }), "{err}");
}

pub fn a_refused_change_changes_nothing(store: Arc<dyn FlowStore>) {
    create(&*store, "F1", 1);
    let err = store
        .update_flow("F1", at(5), &mut |_| {
            Err(FlowsError::Invalid {
                field: "name".into(),
                reason: "no".into(),
            })
        })
        .unwrap_err();
    assert!(matches!(err, FlowsError::Invalid { .. }), "{err}");
    let flow = store.flow("F1").unwrap().unwrap();
    assert_eq!(flow.name, "Flow F1");
    assert_eq!(flow.updated, at(1));
}

pub fn a_deleted_flow_is_gone(store: Arc<dyn FlowStore>) {
    create(&*store, "F1", 1);
    create(&*store, "F2", 2);
    store.delete_flow("F1", at(3)).unwrap();
    assert!(store.flow("F1").unwrap().is_none());
    let ids: Vec<String> = store.flows().unwrap().into_iter().map(|f| f.id).collect();
    assert_eq!(ids, ["F2"]);
    let err = store.delete_flow("F1", at(4)).unwrap_err();
    assert!(matches!(err, FlowsError::NotFound { .. }), "{err}");
}

pub fn the_feed_cursor_is_kept_from_the_first_start(store: Arc<dyn FlowStore>) {
    assert_eq!(store.feed_cursor().unwrap(), None);
    let head = FeedCursor {
        event_pk: 7,
        ..FeedCursor::default()
    };
    store.start_feed_at(&head).unwrap();
    assert_eq!(store.feed_cursor().unwrap(), Some(head));
    // A later start keeps the saved place.
    store.start_feed_at(&FeedCursor::default()).unwrap();
    assert_eq!(store.feed_cursor().unwrap(), Some(head));
}
