//! Checks of [`ApplyStore`] and [`ApplyTx`] that hold whatever the backend: generic functions
//! over a fresh, empty store. The SQLite backend runs them in `db/apply.rs`; another backend
//! runs the same functions on its own store.

use super::holds::HeldIds;
use super::profile::ProfileRow;
use super::store::{
    ApplyStore, ApplyTx, NewEvent, NewHeldCall, NewMember, NewOutboxRow, QuarantineRow,
};
use crate::lists::{ListId, MemberStatus, OptInProcess};
use crate::model::Origin;

fn origin() -> Origin {
    Origin {
        integration: Origin::API.into(),
        source: None,
    }
}

/// A stored profile row with key `pk` and this email.
fn profile(tx: &impl ApplyTx, pk: i64, email: Option<&str>) {
    let mut row = ProfileRow::new(pk, format!("P{pk}"), 1_000, &origin());
    row.email = email.map(str::to_owned);
    row.save(tx, 1).unwrap();
}

fn event(tx: &impl ApplyTx, pk: i64, metric_pk: i64, profile_pk: i64, hash: i64) -> bool {
    let unique_id = format!("u{hash}");
    tx.insert_event(&NewEvent {
        pk,
        metric_pk,
        profile_pk,
        time_us: 2_000,
        value: Some(1.5),
        currency: None,
        unique_id: &unique_id,
        unique_hash: hash,
        properties: "{}",
    })
    .unwrap()
}

/// The checkpoint moves with a committed batch only: a dropped transaction rolls back.
pub(crate) fn checkpoint_commits_with_the_batch(store: &mut impl ApplyStore) {
    assert_eq!(store.applied_seq().unwrap(), 0);
    {
        let tx = store.begin().unwrap();
        tx.set_applied_seq(5).unwrap();
        profile(&tx, 10, Some("a@example.com"));
    }
    assert_eq!(store.applied_seq().unwrap(), 0);
    let tx = store.begin().unwrap();
    assert!(tx.load_profile(10).unwrap().is_none());
    tx.set_applied_seq(5).unwrap();
    tx.commit().unwrap();
    assert_eq!(store.applied_seq().unwrap(), 5);
}

/// Profile rows and identifiers: saved rows load back; an identifier names one profile.
pub(crate) fn profiles_and_identifiers(store: &mut impl ApplyStore) {
    let tx = store.begin().unwrap();
    profile(&tx, 10, Some("a@example.com"));
    let mut row = tx.load_profile(10).unwrap().expect("saved");
    assert_eq!(row.id, "P10");
    assert_eq!(row.email.as_deref(), Some("a@example.com"));
    row.external_id = Some("user-1".into());
    row.mark_changed();
    row.save(&tx, 2).unwrap();
    let row = tx.load_profile(10).unwrap().expect("saved");
    assert_eq!(row.external_id.as_deref(), Some("user-1"));

    assert_eq!(tx.find_identifier("email", "a@example.com").unwrap(), None);
    tx.link_identifier("email", "a@example.com", 10).unwrap();
    assert_eq!(
        tx.find_identifier("email", "a@example.com").unwrap(),
        Some(10)
    );
    // Kinds are told apart.
    assert_eq!(
        tx.find_identifier("external_id", "a@example.com").unwrap(),
        None
    );
    assert!(!tx.unlink_identifier("email", "a@example.com", 11).unwrap());
    assert!(tx.unlink_identifier("email", "a@example.com", 10).unwrap());
    assert_eq!(tx.find_identifier("email", "a@example.com").unwrap(), None);
    tx.delete_profile(10).unwrap();
    assert!(tx.load_profile(10).unwrap().is_none());
    tx.commit().unwrap();
}

/// A merge moves the loser's events (a duplicate dropped and counted), identifiers and list
/// memberships to the survivor, and redirects the loser.
pub(crate) fn merge_moves_rows_to_the_survivor(store: &mut impl ApplyStore) {
    let tx = store.begin().unwrap();
    profile(&tx, 10, Some("a@example.com"));
    profile(&tx, 20, None);
    tx.link_identifier("anonymous_id", "anon-1", 20).unwrap();
    let metric = tx
        .insert_metric("M1", "Viewed Product", "API", "API", 1_000)
        .unwrap();
    assert_eq!(
        tx.find_metric("API", "Viewed Product").unwrap(),
        Some(metric)
    );
    assert!(tx.metric_id_taken("M1").unwrap());
    assert!(event(&tx, 100, metric, 10, 7));
    // The same key again is not a second event.
    assert!(!event(&tx, 100, metric, 10, 7));
    assert!(event(&tx, 200, metric, 20, 7));
    assert!(event(&tx, 201, metric, 20, 8));
    let list = ListId("L1".into());
    tx.insert_list("L1", "News", OptInProcess::SingleOptIn, 1_000)
        .unwrap();
    tx.insert_member(&NewMember {
        list: &list,
        profile_pk: 20,
        confirm_optin: false,
        seq: 3,
        status: MemberStatus::Member,
        joined_us: 1_000,
    })
    .unwrap();

    assert_eq!(tx.merge_profiles(10, 20, 4).unwrap(), 1);
    assert_eq!(tx.redirect(20).unwrap(), Some(10));
    assert_eq!(
        tx.find_identifier("anonymous_id", "anon-1").unwrap(),
        Some(10)
    );
    assert!(tx.event_exists(10, metric, 8).unwrap());
    assert!(!tx.event_exists(20, metric, 7).unwrap());
    assert_eq!(tx.list_profiles(&list, false).unwrap(), vec![10]);
    tx.commit().unwrap();
}

/// Held calls: held until released or expired, in expiry order.
pub(crate) fn held_calls_release_and_expire(store: &mut impl ApplyStore) {
    let tx = store.begin().unwrap();
    for (seq, expires_us, user_id) in [(5, 100, "u1"), (6, 50, "u2")] {
        tx.hold(&NewHeldCall {
            seq,
            source_id: 1,
            kind: "track",
            received_us: 10,
            expires_us,
            reason: "r",
            ids: HeldIds {
                external_id: Some(user_id),
                anonymous_id: None,
                alias_of: None,
            },
            payload: "{}",
        })
        .unwrap();
    }
    assert_eq!(tx.earliest_hold_expiry().unwrap(), Some(50));
    tx.hold(&NewHeldCall {
        seq: 8,
        source_id: 1,
        kind: "alias",
        received_us: 10,
        expires_us: 200,
        reason: "r",
        ids: HeldIds {
            external_id: Some("u3"),
            anonymous_id: Some("a3"),
            alias_of: Some("u1"),
        },
        payload: "{}",
    })
    .unwrap();
    // A user id waits as an external id; an alias's `previousId` as either kind.
    assert_eq!(
        tx.held_waiting_for("external_id", "u1").unwrap(),
        vec![5, 8]
    );
    assert_eq!(tx.held_waiting_for("anonymous_id", "u1").unwrap(), vec![8]);
    assert_eq!(tx.held_waiting_for("anonymous_id", "a3").unwrap(), vec![8]);
    assert!(tx.held_waiting_for("email", "u1").unwrap().is_empty());
    let held = tx.held_call(5).unwrap().expect("held");
    assert_eq!(held.payload.as_deref(), Some("{}"));
    assert_eq!(held.ids.external_id.as_deref(), Some("u1"));
    tx.release_held(5, 7).unwrap();
    assert!(tx.held_call(5).unwrap().is_none());
    assert_eq!(tx.held_waiting_for("external_id", "u1").unwrap(), vec![8]);
    tx.release_held(8, 7).unwrap();
    let due = tx.due_holds(60).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].0, 6);
    assert_eq!(tx.expire_holds(60).unwrap(), 1);
    assert_eq!(tx.earliest_hold_expiry().unwrap(), None);
    tx.set_applied_seq(7).unwrap();
    tx.commit().unwrap();
    assert_eq!(store.earliest_hold_expiry().unwrap(), None);
    assert!(store.held_after(0).unwrap().is_empty());
}

/// Lists and members: pending until confirmed; removal answers whether it was a member.
pub(crate) fn lists_and_members(store: &mut impl ApplyStore) {
    let tx = store.begin().unwrap();
    let list = ListId("L1".into());
    assert!(tx.list_info(&list).unwrap().is_none());
    tx.insert_list("L1", "News", OptInProcess::DoubleOptIn, 1_000)
        .unwrap();
    assert!(tx.list_id_taken("L1").unwrap());
    tx.update_list(&list, Some("Weekly"), None, 2_000).unwrap();
    assert_eq!(
        tx.list_info(&list).unwrap(),
        Some(("Weekly".to_owned(), OptInProcess::DoubleOptIn))
    );
    tx.insert_member(&NewMember {
        list: &list,
        profile_pk: 10,
        confirm_optin: true,
        seq: 3,
        status: MemberStatus::Pending,
        joined_us: 1_000,
    })
    .unwrap();
    assert_eq!(
        tx.member_status(&list, 10).unwrap(),
        Some(MemberStatus::Pending)
    );
    assert!(tx.list_profiles(&list, false).unwrap().is_empty());
    assert_eq!(tx.list_profiles(&list, true).unwrap(), vec![10]);
    tx.confirm_member(&list, 10, 2_000, 4).unwrap();
    assert_eq!(tx.list_profiles(&list, false).unwrap(), vec![10]);
    assert!(tx.remove_member(&list, 10).unwrap());
    assert!(!tx.remove_member(&list, 10).unwrap());
    tx.delete_list(&list).unwrap();
    assert!(tx.list_info(&list).unwrap().is_none());
    tx.commit().unwrap();
}

/// Outbox positions of an entry follow each other; the quarantine holds what it was given.
pub(crate) fn outbox_and_quarantine(store: &mut impl ApplyStore) {
    let tx = store.begin().unwrap();
    assert_eq!(tx.next_outbox_n(9).unwrap(), 0);
    tx.insert_outbox(&NewOutboxRow {
        seq: 9,
        n: 0,
        at_us: 1_000,
        profile_id: "P10",
        email: None,
        user_id: None,
        anonymous_id: None,
        from_segment: false,
        change: "{}",
    })
    .unwrap();
    assert_eq!(tx.next_outbox_n(9).unwrap(), 1);
    tx.quarantine(&QuarantineRow {
        seq: 12,
        kind: "track",
        source_id: 1,
        received_us: 1_000,
        error: "boom",
        tries: 3,
        problem: "set aside",
    })
    .unwrap();
    tx.set_applied_seq(12).unwrap();
    tx.commit().unwrap();
    assert!(store.is_quarantined(12).unwrap());
    store.note_failed_retry(12, "boom again").unwrap();
    let tx = store.begin().unwrap();
    tx.unquarantine(12).unwrap();
    tx.commit().unwrap();
    assert!(!store.is_quarantined(12).unwrap());
}
