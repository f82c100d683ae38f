//! The behaviour every [`FlowStore`] backend shows, written once and run against each backend
//! so they cannot drift. Each case takes a new, empty store;
//! [`flow_store_conformance!`](crate::flow_store_conformance) makes one test per case.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::json;
use signalbox_engage::feed::FeedCursor;

use crate::definition::FlowDefinition;
use crate::error::FlowsError;
use crate::flow_store::{
    FlowChange, FlowStore, FlowWriter, NewFlow, NewHeld, NewRun, NewSend, NewStep, StepState,
    WebhookState,
};
use crate::model::{FlowStats, FlowStatus, HeldStatus, RunExit, RunStatus, SendStatus};

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
            the_feed_cursor_is_kept_from_the_first_start,
            runs_are_claimed_when_due_and_moved_on,
            a_failed_transaction_leaves_nothing,
            a_rolled_back_savepoint_undoes_only_what_followed_it,
            steps_sends_webhooks_and_counters_are_recorded,
            a_held_message_waits_for_review,
            meta_values_schedules_and_merges,
            the_live_figures_follow_every_change_of_runs_and_messages
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

fn write<T>(store: &dyn FlowStore, f: impl FnOnce(&dyn FlowWriter) -> T) -> T {
    let mut f = Some(f);
    let mut out = None;
    store
        .transaction(&mut |tx| {
            out = Some((f.take().unwrap())(tx));
            Ok(())
        })
        .unwrap();
    out.unwrap()
}

fn us(second: i64) -> i64 {
    at(second).as_microsecond()
}

fn new_run<'a>(flow_id: &'a str, profile_pk: i64, origin: &str, wake: i64) -> NewRun<'a> {
    NewRun {
        flow_id,
        profile_pk,
        profile_id: "p1",
        origin: origin.to_owned(),
        trigger_event_id: Some("e1"),
        trigger_properties: r#"{"Value": 3}"#,
        started_us: us(1),
        entry_action: "a1",
        wake_us: us(wake),
        entered_us: us(1),
    }
}

pub fn runs_are_claimed_when_due_and_moved_on(store: Arc<dyn FlowStore>) {
    create(&*store, "F1", 1);
    let id = write(&*store, |tx| {
        tx.insert_run(&new_run("F1", 7, "event:e1", 10))
    })
    .unwrap()
    .expect("a new run");
    // The same origin does not start the flow twice.
    let again = write(&*store, |tx| {
        tx.insert_run(&new_run("F1", 7, "event:e1", 10))
    });
    assert_eq!(again.unwrap(), None);
    assert_eq!(
        write(&*store, |tx| tx.last_entry("F1", 7)).unwrap(),
        Some(us(1))
    );
    assert_eq!(store.next_wake().unwrap(), Some(us(10)));
    assert!(write(&*store, |tx| tx.claim_due(us(9), 10))
        .unwrap()
        .is_empty());
    let due = write(&*store, |tx| tx.claim_due(us(10), 10)).unwrap();
    assert_eq!(due.len(), 1);
    let run = &due[0];
    assert_eq!(run.id, id);
    assert_eq!(run.flow_id, "F1");
    assert_eq!(run.profile_pk, 7);
    assert_eq!(run.profile_id, "p1");
    assert_eq!(run.trigger_event_id.as_deref(), Some("e1"));
    assert_eq!(run.trigger_properties.get("Value"), Some(&json!(3)));
    assert_eq!(run.position.as_deref(), Some("a1"));
    write(&*store, |tx| {
        tx.move_run(id, Some("a2"), Some("a2"), Some(us(20)))
    })
    .unwrap();
    assert!(write(&*store, |tx| tx.claim_due(us(19), 10))
        .unwrap()
        .is_empty());
    let stats = store.stats("F1").unwrap();
    assert_eq!(stats.flow.counts.get("waiting"), Some(&1));
    assert_eq!(stats.flow.counts.get("active"), Some(&1));
    assert_eq!(stats.action("a2").counts.get("waiting"), Some(&1));
    write(&*store, |tx| tx.delay_run(id, us(30))).unwrap();
    assert_eq!(store.next_wake().unwrap(), Some(us(30)));
    write(&*store, |tx| tx.hold_run(id)).unwrap();
    assert_eq!(store.next_wake().unwrap(), None);
    write(&*store, |tx| {
        tx.end_run(id, RunStatus::Completed, None, us(40))
    })
    .unwrap();
    // The figures kept as runs move follow the run out.
    let stats = store.stats("F1").unwrap();
    assert_eq!(stats.flow.counts.get("waiting"), Some(&0));
    assert_eq!(stats.flow.counts.get("active"), Some(&0));
    assert_eq!(stats.action("a2").counts.get("waiting"), None);
    let runs = store.runs("F1", 10).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Completed);
    assert_eq!(runs[0].position.as_deref(), Some("a2"));
    assert!(write(&*store, |tx| tx.claim_due(us(100), 10))
        .unwrap()
        .is_empty());
}

pub fn a_failed_transaction_leaves_nothing(store: Arc<dyn FlowStore>) {
    create(&*store, "F1", 1);
    let err = store
        .transaction(&mut |tx| {
            tx.insert_run(&new_run("F1", 7, "event:e1", 10))?;
            tx.bump("F1", "", "entered", 1, 0.0)?;
            Err(FlowsError::Unavailable)
        })
        .unwrap_err();
    assert_eq!(err, FlowsError::Unavailable);
    assert!(store.runs("F1", 10).unwrap().is_empty());
    assert_eq!(store.stats("F1").unwrap().flow.counts.get("entered"), None);
}

pub fn a_rolled_back_savepoint_undoes_only_what_followed_it(store: Arc<dyn FlowStore>) {
    create(&*store, "F1", 1);
    write(&*store, |tx| {
        tx.bump("F1", "", "kept", 1, 0.0).unwrap();
        tx.savepoint().unwrap();
        tx.bump("F1", "", "undone", 1, 0.0).unwrap();
        tx.rollback_to_savepoint().unwrap();
        tx.savepoint().unwrap();
        tx.bump("F1", "", "released", 1, 0.0).unwrap();
        tx.release_savepoint().unwrap();
    });
    let counts = store.stats("F1").unwrap().flow.counts;
    assert_eq!(counts.get("kept"), Some(&1));
    assert_eq!(counts.get("undone"), None);
    assert_eq!(counts.get("released"), Some(&1));
}

pub fn steps_sends_webhooks_and_counters_are_recorded(store: Arc<dyn FlowStore>) {
    create(&*store, "F1", 1);
    let run = write(&*store, |tx| {
        tx.insert_run(&new_run("F1", 7, "event:e1", 10))
    })
    .unwrap()
    .unwrap();
    write(&*store, |tx| {
        tx.insert_step(&NewStep {
            key: "s1",
            run_id: run,
            flow_id: "F1",
            action_id: "a1",
            kind: "send-email",
            state: StepState::Intent,
            detail: None,
            now_us: us(2),
        })
    })
    .unwrap();
    let step = write(&*store, |tx| tx.step("s1")).unwrap().unwrap();
    assert_eq!(step.state, StepState::Intent);
    assert_eq!(
        write(&*store, |tx| tx.retry_step("s1", "busy")).unwrap(),
        step.attempts + 1
    );
    write(&*store, |tx| {
        tx.finish_step("s1", StepState::Done, Some("ok"), us(3))
    })
    .unwrap();
    let step = write(&*store, |tx| tx.step("s1")).unwrap().unwrap();
    assert_eq!(step.state, StepState::Done);
    assert!(write(&*store, |tx| tx.step("nope")).unwrap().is_none());

    write(&*store, |tx| {
        tx.insert_send(&NewSend {
            key: "s1",
            flow_id: "F1",
            action_id: "a1",
            run_id: run,
            profile_pk: 7,
            email: "p1@example.com",
            now_us: us(2),
        })
    })
    .unwrap();
    assert!(write(&*store, |tx| tx.emailed_since(7, us(1))).unwrap());
    assert!(!write(&*store, |tx| tx.emailed_since(8, us(1))).unwrap());
    let email = write(&*store, |tx| tx.send_email("s1")).unwrap();
    assert_eq!(email.as_deref(), Some("p1@example.com"));
    write(&*store, |tx| {
        tx.finish_send(
            "s1",
            SendStatus::Sent,
            Some("Hi"),
            Some("<m@x>"),
            None,
            us(3),
        )
    })
    .unwrap();
    let sends = store.sends("F1").unwrap();
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].status, SendStatus::Sent);
    assert_eq!(sends[0].subject.as_deref(), Some("Hi"));
    assert_eq!(sends[0].message_id.as_deref(), Some("<m@x>"));
    let latest = write(&*store, |tx| tx.latest_send(7, us(1), us(5)))
        .unwrap()
        .unwrap();
    assert_eq!(latest.key, "s1");
    assert!(!latest.opened);
    write(&*store, |tx| tx.mark_send("s1", "opened", us(4), None)).unwrap();
    let by_key = write(&*store, |tx| tx.send_by_key("s1")).unwrap().unwrap();
    assert!(by_key.opened);

    write(&*store, |tx| {
        tx.upsert_webhook("w1", "F1", "a2", run, "https://x", us(5))
    })
    .unwrap();
    let attempts = write(&*store, |tx| {
        tx.webhook_attempt(
            "w1",
            WebhookState::Pending,
            Some(500),
            None,
            Some(us(6)),
            us(5),
        )
    })
    .unwrap();
    assert_eq!(attempts, 1);
    write(&*store, |tx| {
        tx.insert_dead_letter(
            "w1",
            "F1",
            "a2",
            run,
            "https://x",
            "{}",
            "http 500",
            1,
            us(7),
        )
    })
    .unwrap();
    let dead = store.dead_letters("F1").unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "http 500");
    assert_eq!(dead[0].attempts, 1);

    write(&*store, |tx| {
        tx.bump("F1", "a1", "converted", 1, 12.5).unwrap();
        tx.bump("F1", "a1", "converted", 1, 2.5).unwrap();
    });
    let stats = store.stats("F1").unwrap();
    let action = &stats.actions["a1"];
    assert_eq!(action.counts.get("converted"), Some(&2));
    assert_eq!(action.revenue, 15.0);
}

pub fn a_held_message_waits_for_review(store: Arc<dyn FlowStore>) {
    create(&*store, "F1", 1);
    let run = write(&*store, |tx| {
        tx.insert_run(&new_run("F1", 7, "event:e1", 10))
    })
    .unwrap()
    .unwrap();
    write(&*store, |tx| {
        tx.insert_step(&NewStep {
            key: "h1",
            run_id: run,
            flow_id: "F1",
            action_id: "a1",
            kind: "send-email",
            state: StepState::Held,
            detail: None,
            now_us: us(2),
        })?;
        tx.insert_held(&NewHeld {
            key: "h1",
            flow_id: "F1",
            action_id: "a1",
            kind: "send-email",
            run_id: run,
            profile_pk: 7,
            profile_id: "p1",
            email: Some("p1@example.com"),
            subject: Some("Hi"),
            now_us: us(2),
            expires_us: us(100),
        })?;
        // The run waits on the message until it expires.
        tx.move_run(run, Some("a1"), None, Some(us(100)))
    })
    .unwrap();
    let held = write(&*store, |tx| tx.held_by_key("h1")).unwrap().unwrap();
    assert_eq!(held.status, HeldStatus::Pending);
    assert_eq!(store.held_message(held.id).unwrap().unwrap().id, held.id);
    let pending = store
        .held_messages("F1", Some(HeldStatus::Pending), 0, 10)
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        store.stats("F1").unwrap().flow.counts.get("pending"),
        Some(&1)
    );
    assert_eq!(store.next_wake().unwrap(), Some(us(100)));
    let decided = store
        .decide_held("F1", held.id, HeldStatus::Approved, at(3))
        .unwrap();
    assert_eq!(decided.status, HeldStatus::Approved);
    assert_eq!(decided.decided, Some(at(3)));
    let stats = store.stats("F1").unwrap();
    assert_eq!(stats.flow.counts.get("pending"), Some(&0));
    assert_eq!(stats.action("a1").counts.get("pending"), None);
    // The run is woken to move on.
    assert_eq!(store.next_wake().unwrap(), Some(us(3)));
    // Approving again changes nothing; skipping now is a conflict.
    let again = store.decide_held("F1", held.id, HeldStatus::Approved, at(4));
    assert_eq!(again.unwrap().status, HeldStatus::Approved);
    let err = store
        .decide_held("F1", held.id, HeldStatus::Skipped, at(4))
        .unwrap_err();
    assert!(matches!(err, FlowsError::Conflict { .. }), "{err}");
    // Another flow's message is not found.
    let err = store
        .decide_held("F2", held.id, HeldStatus::Skipped, at(4))
        .unwrap_err();
    assert!(matches!(err, FlowsError::NotFound { .. }), "{err}");
    let stats = store.stats("F1").unwrap();
    assert_eq!(stats.flow.counts.get("approved"), Some(&1));
    write(&*store, |tx| {
        tx.set_held_status(held.id, HeldStatus::Expired, us(5))
    })
    .unwrap();
    write(&*store, |tx| tx.release_step("h1")).unwrap();
    let held = store.held_message(held.id).unwrap().unwrap();
    assert_eq!(held.status, HeldStatus::Expired);
}

pub fn meta_values_schedules_and_merges(store: Arc<dyn FlowStore>) {
    create(&*store, "F1", 1);
    assert_eq!(store.meta("k").unwrap(), None);
    write(&*store, |tx| tx.set_meta("k", "v")).unwrap();
    assert_eq!(store.meta("k").unwrap().as_deref(), Some("v"));
    assert_eq!(
        write(&*store, |tx| tx.get_meta("k")).unwrap().as_deref(),
        Some("v")
    );
    assert_eq!(store.membership_cursor().unwrap(), 0);
    write(&*store, |tx| tx.set_meta("membership_cursor", "5")).unwrap();
    assert_eq!(store.membership_cursor().unwrap(), 5);
    let cursor = FeedCursor {
        merge_seq: 3,
        ..FeedCursor::default()
    };
    write(&*store, |tx| tx.set_feed_cursor(&cursor)).unwrap();
    assert_eq!(store.feed_cursor().unwrap(), Some(cursor));

    write(&*store, |tx| {
        tx.set_date_schedule("F1", 7, Some(us(10)))?;
        tx.set_date_schedule("F1", 8, Some(us(20)))?;
        tx.set_date_schedule("F1", 8, Some(us(15)))?;
        tx.set_date_schedule("F1", 9, Some(us(5)))?;
        tx.set_date_schedule("F1", 9, None)
    })
    .unwrap();
    let due = store.due_dates(us(15), 10).unwrap();
    assert_eq!(
        due,
        [("F1".to_owned(), 7, us(10)), ("F1".to_owned(), 8, us(15))]
    );
    assert_eq!(store.due_dates(us(15), 1).unwrap().len(), 1);
    write(&*store, |tx| {
        tx.reschedule_date("F1", 7, Some(us(50)))?;
        tx.reschedule_date("F1", 8, None)?;
        // Moving a trigger that is not scheduled adds none.
        tx.reschedule_date("F1", 9, Some(us(1)))
    })
    .unwrap();
    assert!(store.due_dates(us(49), 10).unwrap().is_empty());
    assert_eq!(store.due_dates(us(50), 10).unwrap().len(), 1);

    // A merge moves runs, entries and schedules to the survivor.
    write(&*store, |tx| {
        tx.insert_run(&new_run("F1", 7, "event:e1", 10))
    })
    .unwrap();
    write(&*store, |tx| tx.apply_merge(7, 70, Some("p70"))).unwrap();
    let runs = store.runs("F1", 10).unwrap();
    assert_eq!(runs[0].profile_id, "p70");
    assert_eq!(write(&*store, |tx| tx.last_entry("F1", 7)).unwrap(), None);
    assert_eq!(
        write(&*store, |tx| tx.last_entry("F1", 70)).unwrap(),
        Some(us(1))
    );
    assert!(store.due_dates(us(100), 10).unwrap().is_empty());
}

/// The live figures of `stats`: `(action, figure)` (the flow's with action `""`) → value.
fn live_figures(stats: &FlowStats) -> BTreeMap<(String, String), i64> {
    let mut out = BTreeMap::new();
    let figures = ["active", "waiting", "pending"];
    for (name, value) in &stats.flow.counts {
        if figures.contains(&name.as_str()) {
            out.insert((String::new(), name.clone()), *value);
        }
    }
    for (action, counters) in &stats.actions {
        for (name, value) in &counters.counts {
            if figures.contains(&name.as_str()) {
                out.insert((action.clone(), name.clone()), *value);
            }
        }
    }
    out
}

/// Checks the flow's kept figures against a fresh count and against what the test expects:
/// `active` runs, `waiting` runs per delay and `pending` messages per action (none listed:
/// zero).
fn assert_figures(
    store: &dyn FlowStore,
    flow_id: &str,
    step: &str,
    active: i64,
    waiting: &[(&str, i64)],
    pending: &[(&str, i64)],
) {
    let kept = live_figures(&store.stats(flow_id).unwrap());
    let counted = live_figures(&store.count_figures(flow_id).unwrap());
    assert_eq!(
        kept, counted,
        "{step}: kept figures (left) and a fresh count"
    );
    let mut expected = BTreeMap::new();
    expected.insert((String::new(), "active".to_owned()), active);
    for (name, per_action) in [("waiting", waiting), ("pending", pending)] {
        expected.insert(
            (String::new(), name.to_owned()),
            per_action.iter().map(|(_, n)| n).sum(),
        );
        for (action, n) in per_action {
            expected.insert(((*action).to_owned(), name.to_owned()), *n);
        }
    }
    assert_eq!(kept, expected, "{step}");
}

fn held<'a>(key: &'a str, action_id: &'a str, run_id: i64) -> NewHeld<'a> {
    NewHeld {
        key,
        flow_id: "F1",
        action_id,
        kind: "send-email",
        run_id,
        profile_pk: 7,
        profile_id: "p1",
        email: Some("p1@example.com"),
        subject: Some("Hi"),
        now_us: us(2),
        expires_us: us(1_000),
    }
}

pub fn the_live_figures_follow_every_change_of_runs_and_messages(store: Arc<dyn FlowStore>) {
    let store = &*store;
    create(store, "F1", 1);
    create(store, "F2", 1);
    assert_figures(store, "F1", "a new flow", 0, &[], &[]);

    // Runs start: active, waiting nowhere yet. A repeated origin starts none.
    let ids = write(store, |tx| {
        let mut ids = Vec::new();
        for (n, origin) in ["event:e1", "event:e2", "event:e3", "event:e1"]
            .into_iter()
            .enumerate()
        {
            ids.extend(tx.insert_run(&new_run("F1", 7, origin, 10 + n as i64))?);
        }
        tx.insert_run(&new_run("F2", 8, "event:e1", 500))?;
        Ok::<_, FlowsError>(ids)
    })
    .unwrap();
    let [r1, r2, r3] = ids[..] else {
        panic!("three runs started: {ids:?}")
    };
    assert_figures(store, "F1", "started", 3, &[], &[]);
    assert_figures(store, "F2", "started", 1, &[], &[]);

    // Claimed when due and armed at a delay; one moved without being claimed.
    write(store, |tx| {
        let due = tx.claim_due(us(11), 10)?;
        assert_eq!(due.len(), 2);
        for run in &due {
            tx.move_run(run.id, Some("d1"), Some("d1"), Some(us(100)))?;
        }
        tx.move_run(r3, Some("d2"), Some("d2"), Some(us(200)))
    })
    .unwrap();
    assert_figures(store, "F1", "armed", 3, &[("d1", 2), ("d2", 1)], &[]);

    // Woken: one moves past its delay, one is armed at the next delay, in one transaction
    // that moves each run twice.
    write(store, |tx| {
        let due = tx.claim_due(us(100), 10)?;
        assert_eq!(due.len(), 2);
        tx.move_run(r1, Some("m1"), None, Some(us(100)))?;
        tx.move_run(r1, Some("m1"), None, Some(us(101)))?;
        tx.move_run(r2, Some("d2"), Some("d2"), Some(us(300)))?;
        tx.delay_run(r2, us(301))
    })
    .unwrap();
    assert_figures(store, "F1", "woken", 3, &[("d2", 2)], &[]);

    // A run's change rolled back to a savepoint leaves the figures as they were; what follows
    // the rollback counts, in the same transaction.
    write(store, |tx| {
        let due = tx.claim_due(us(101), 10)?;
        assert_eq!(due.len(), 1);
        tx.savepoint()?;
        tx.move_run(r1, Some("d3"), Some("d3"), Some(us(400)))?;
        tx.end_run(r2, RunStatus::Completed, None, us(101))?;
        tx.insert_run(&new_run("F1", 9, "event:e9", 10))?;
        tx.rollback_to_savepoint()?;
        tx.move_run(r1, Some("m1"), None, Some(us(1_000)))?;
        tx.savepoint()?;
        tx.hold_run(r1)?;
        tx.release_savepoint()
    })
    .unwrap();
    assert_figures(store, "F1", "savepoints", 3, &[("d2", 2)], &[]);
    // A failed transaction changes no figure.
    let err = store.transaction(&mut |tx| {
        tx.end_run(r2, RunStatus::Completed, None, us(102))?;
        tx.insert_held(&held("h9", "m1", r1))?;
        Err(FlowsError::Unavailable)
    });
    assert_eq!(err, Err(FlowsError::Unavailable));
    assert_figures(store, "F1", "a failed transaction", 3, &[("d2", 2)], &[]);

    // Messages held for review: pending; the same key twice holds one.
    write(store, |tx| {
        tx.insert_held(&held("h1", "m1", r1))?;
        tx.insert_held(&held("h1", "m1", r1))?;
        tx.insert_held(&held("h2", "m1", r2))?;
        tx.insert_held(&held("h3", "m2", r3))
    })
    .unwrap();
    assert_figures(
        store,
        "F1",
        "held",
        3,
        &[("d2", 2)],
        &[("m1", 2), ("m2", 1)],
    );

    // Paused and resumed: wake-ups are held back and given back, the figures stay.
    store
        .update_flow("F1", at(3), &mut |_| {
            Ok(FlowChange {
                status: Some(FlowStatus::Paused),
                ..FlowChange::default()
            })
        })
        .unwrap();
    let runs = store.runs("F1", 10).unwrap();
    assert!(runs.iter().all(|run| run.next_wake.is_none()), "parked");
    store
        .update_flow("F1", at(4), &mut |_| {
            Ok(FlowChange {
                status: Some(FlowStatus::Live),
                ..FlowChange::default()
            })
        })
        .unwrap();
    assert_figures(
        store,
        "F1",
        "paused",
        3,
        &[("d2", 2)],
        &[("m1", 2), ("m2", 1)],
    );
    store.unpark_runs("F1", at(5)).unwrap();
    assert_figures(
        store,
        "F1",
        "resumed",
        3,
        &[("d2", 2)],
        &[("m1", 2), ("m2", 1)],
    );

    // Decided: approved through the review, expired by the worker; a message no longer
    // pending changes no figure when its status changes again.
    let h1 = write(store, |tx| tx.held_by_key("h1")).unwrap().unwrap();
    let h2 = write(store, |tx| tx.held_by_key("h2")).unwrap().unwrap();
    store
        .decide_held("F1", h1.id, HeldStatus::Approved, at(6))
        .unwrap();
    write(store, |tx| {
        tx.set_held_status(h2.id, HeldStatus::Expired, us(7))?;
        tx.set_held_status(h1.id, HeldStatus::Cancelled, us(7))
    })
    .unwrap();
    assert_figures(store, "F1", "decided", 3, &[("d2", 2)], &[("m2", 1)]);

    // A merge moves runs and messages to another profile: no figure changes.
    write(store, |tx| tx.apply_merge(7, 70, Some("p70"))).unwrap();
    assert_figures(store, "F1", "merged", 3, &[("d2", 2)], &[("m2", 1)]);

    // A run that ends with a message pending: both leave the figures.
    write(store, |tx| {
        tx.end_run(r3, RunStatus::Cancelled, Some(RunExit::FlowDeleted), us(8))
    })
    .unwrap();
    assert_figures(store, "F1", "cancelled", 2, &[("d2", 1)], &[]);
    write(store, |tx| {
        tx.end_run(r1, RunStatus::Completed, None, us(9))
    })
    .unwrap();
    // Ending it again changes nothing.
    write(store, |tx| tx.end_run(r1, RunStatus::Exited, None, us(10))).unwrap();
    assert_figures(store, "F1", "completed", 1, &[("d2", 1)], &[]);

    // The flow deleted: its runs end and its messages are cancelled at once; the other
    // flow's figures stay.
    write(store, |tx| {
        tx.insert_run(&new_run("F1", 10, "event:e10", 10))?;
        tx.insert_held(&held("h4", "m1", r2))?;
        tx.insert_held(&held("h5", "m2", r2))
    })
    .unwrap();
    assert_figures(
        store,
        "F1",
        "before the delete",
        2,
        &[("d2", 1)],
        &[("m1", 1), ("m2", 1)],
    );
    store.delete_flow("F1", at(11)).unwrap();
    assert_figures(store, "F1", "deleted", 0, &[], &[]);
    assert_figures(store, "F2", "the other flow", 1, &[], &[]);
}
