//! The behaviour every [`AudienceStore`] backend shows, written once and run against each
//! backend so they cannot drift. Each case takes a new, empty store;
//! [`audience_store_conformance!`](crate::audience_store_conformance) makes one test per case.

use std::sync::Arc;

use jiff::Timestamp;
use serde_json::{json, Value};
use signalbox_engage::facts::SegmentMembership;
use signalbox_engage::feed::FeedCursor;
use signalbox_engage::ProfileKey;

use crate::error::AudienceError;
use crate::model::Progress;
use crate::store::{AudienceStore, AudienceWriter, NewChange, NewSegment, SegmentKey};

/// Makes one `#[test]` per conformance case. `$make` is an expression that evaluates to
/// `(Arc<dyn AudienceStore>, G)`: a new empty store and a guard that keeps its files or
/// database alive.
#[macro_export]
macro_rules! audience_store_conformance {
    ($make:expr) => {
        $crate::audience_store_conformance!(@cases $make;
            segments_are_saved_listed_and_found,
            segments_are_paged_oldest_first,
            segments_are_renamed_starred_and_versioned,
            changes_move_membership_and_are_recorded_in_order,
            membership_is_read_by_range_and_by_profile,
            the_schedule_hands_out_due_entries_once,
            profiles_leave_the_schedule_and_it_is_read_whole,
            backfills_record_their_progress,
            the_feed_cursor_is_kept,
            a_rolled_back_transaction_leaves_nothing,
            the_writer_reads_its_own_uncommitted_writes,
            a_deleted_segment_loses_membership_but_keeps_history,
            member_counts_are_kept_as_members_move
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

fn definition(n: i64) -> Value {
    json!({"condition_groups": [{"conditions": [{"type": "profile-property", "n": n}]}]})
}

fn insert(writer: &dyn AudienceWriter, id: &str, name: &str, second: i64) -> SegmentKey {
    writer
        .insert_segment(&NewSegment {
            id,
            name,
            definition: &definition(second),
            is_starred: false,
            now: at(second),
        })
        .unwrap()
}

fn change(
    writer: &dyn AudienceWriter,
    segment: SegmentKey,
    segment_id: &str,
    profile: i64,
    entered: bool,
    second: i64,
) {
    writer
        .record_change(&NewChange {
            segment,
            segment_id,
            version: 1,
            profile: ProfileKey(profile),
            profile_id: &format!("p{profile}"),
            entered,
            at: at(second),
            cause: &json!({"trigger": "event", "conditions": []}),
        })
        .unwrap();
}

pub fn segments_are_saved_listed_and_found(store: Arc<dyn AudienceStore>) {
    let writer = store.writer().unwrap();
    let a = insert(writer.as_ref(), "AAAAAA", "Buyers", 1);
    let b = insert(writer.as_ref(), "BBBBBB", "Buyers", 2);
    assert!(a < b, "keys increase");

    let stored = store.stored_segments().unwrap();
    assert_eq!(stored, writer.stored_segments().unwrap());
    assert_eq!(
        stored
            .iter()
            .map(|s| (s.key, s.id.as_str(), s.version))
            .collect::<Vec<_>>(),
        [(a, "AAAAAA", 1), (b, "BBBBBB", 1)]
    );
    assert_eq!(stored[0].definition, definition(1));

    let segment = store.segment("AAAAAA").unwrap().unwrap();
    assert_eq!(segment.name, "Buyers");
    assert_eq!(segment.definition, definition(1));
    assert_eq!(segment.version, 1);
    assert!(!segment.is_starred);
    assert_eq!((segment.created, segment.updated), (at(1), at(1)));
    assert_eq!(segment.backfill, None);
    assert_eq!(store.segment("nope").unwrap(), None);

    let all = store.segments().unwrap();
    assert_eq!(
        all.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["AAAAAA", "BBBBBB"]
    );
    assert_eq!(
        store.segment_by_name("Buyers").unwrap().unwrap().id,
        "BBBBBB"
    );
    assert_eq!(store.segment_by_name("Nobody").unwrap(), None);
    assert_eq!(store.segment_key("BBBBBB").unwrap(), Some(b));
    assert_eq!(store.segment_key("nope").unwrap(), None);
}

pub fn segments_are_paged_oldest_first(store: Arc<dyn AudienceStore>) {
    let writer = store.writer().unwrap();
    for (i, id) in ["S1AAAA", "S2AAAA", "S3AAAA"].iter().enumerate() {
        insert(writer.as_ref(), id, id, i as i64);
    }
    let first = store.segments_page(None, 2).unwrap();
    assert_eq!(
        first
            .segments
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        ["S1AAAA", "S2AAAA"]
    );
    assert_eq!(first.next.as_deref(), Some("S2AAAA"));
    let second = store.segments_page(first.next.as_deref(), 2).unwrap();
    assert_eq!(
        second
            .segments
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        ["S3AAAA"]
    );
    assert_eq!(second.next, None);
    assert_eq!(store.segments_page(None, 0).unwrap().segments.len(), 1);
    assert!(matches!(
        store.segments_page(Some("nope"), 2),
        Err(AudienceError::NotFound { .. })
    ));
}

pub fn segments_are_renamed_starred_and_versioned(store: Arc<dyn AudienceStore>) {
    let writer = store.writer().unwrap();
    let key = insert(writer.as_ref(), "AAAAAA", "Buyers", 1);
    writer.rename_segment(key, "Big buyers", at(2)).unwrap();
    writer.star_segment(key, true, at(3)).unwrap();
    let segment = store.segment("AAAAAA").unwrap().unwrap();
    assert_eq!(segment.name, "Big buyers");
    assert!(segment.is_starred);
    assert_eq!((segment.created, segment.updated), (at(1), at(3)));

    assert!(!writer.set_definition(key, &definition(1), at(4)).unwrap());
    assert_eq!(store.segment("AAAAAA").unwrap().unwrap().version, 1);
    assert!(writer.set_definition(key, &definition(9), at(5)).unwrap());
    let segment = store.segment("AAAAAA").unwrap().unwrap();
    assert_eq!(segment.version, 2);
    assert_eq!(segment.definition, definition(9));
    assert_eq!(segment.updated, at(5));
    assert_eq!(store.stored_segments().unwrap()[0].version, 2);
}

pub fn changes_move_membership_and_are_recorded_in_order(store: Arc<dyn AudienceStore>) {
    let writer = store.writer().unwrap();
    let key = insert(writer.as_ref(), "AAAAAA", "Buyers", 1);
    change(writer.as_ref(), key, "AAAAAA", 7, true, 10);
    change(writer.as_ref(), key, "AAAAAA", 8, true, 11);
    change(writer.as_ref(), key, "AAAAAA", 7, false, 12);

    assert_eq!(store.joined(key, ProfileKey(8)).unwrap(), Some(at(11)));
    assert_eq!(store.joined(key, ProfileKey(7)).unwrap(), None);
    assert_eq!(writer.joined(key, ProfileKey(8)).unwrap(), Some(at(11)));
    assert_eq!(store.member_count(key).unwrap(), 1);
    assert_eq!(
        store.membership("AAAAAA", ProfileKey(8)).unwrap(),
        SegmentMembership::Member { joined: at(11) }
    );
    assert_eq!(
        store.membership("AAAAAA", ProfileKey(7)).unwrap(),
        SegmentMembership::NotMember
    );
    assert_eq!(
        store.membership("a-list", ProfileKey(8)).unwrap(),
        SegmentMembership::NotASegment
    );

    let changes = store.changes_after(0, 10).unwrap();
    assert_eq!(
        changes
            .iter()
            .map(|c| (
                c.segment_id.as_str(),
                c.profile_pk.0,
                c.profile_id.as_str(),
                c.entered,
                c.at
            ))
            .collect::<Vec<_>>(),
        [
            ("AAAAAA", 7, "p7", true, at(10)),
            ("AAAAAA", 8, "p8", true, at(11)),
            ("AAAAAA", 7, "p7", false, at(12)),
        ]
    );
    assert!(changes.windows(2).all(|w| w[0].cursor < w[1].cursor));
    let after_first = store.changes_after(changes[0].cursor, 1).unwrap();
    assert_eq!(after_first, changes[1..2]);

    let last = store.last_change(key, ProfileKey(7)).unwrap().unwrap();
    assert_eq!(last.cursor, changes[2].cursor);
    assert!(!last.entered);
    assert_eq!(last.at, at(12));
    assert_eq!(last.cause, json!({"trigger": "event", "conditions": []}));
    assert_eq!(store.last_change(key, ProfileKey(9)).unwrap(), None);
    assert_eq!(
        writer.last_profile_id(ProfileKey(8)).unwrap().as_deref(),
        Some("p8")
    );
    assert_eq!(writer.last_profile_id(ProfileKey(9)).unwrap(), None);
}

pub fn membership_is_read_by_range_and_by_profile(store: Arc<dyn AudienceStore>) {
    let writer = store.writer().unwrap();
    let a = insert(writer.as_ref(), "AAAAAA", "A", 1);
    let b = insert(writer.as_ref(), "BBBBBB", "B", 2);
    for profile in 1..=5 {
        change(writer.as_ref(), a, "AAAAAA", profile, true, profile);
    }
    change(writer.as_ref(), b, "BBBBBB", 3, true, 20);

    let page = store.members(a, None, 2).unwrap();
    assert_eq!(page, [(ProfileKey(1), at(1)), (ProfileKey(2), at(2))]);
    let page = store.members(a, Some(ProfileKey(2)), 10).unwrap();
    assert_eq!(page.iter().map(|(p, _)| p.0).collect::<Vec<_>>(), [3, 4, 5]);
    let range = writer
        .members_between(a, ProfileKey(2), ProfileKey(4))
        .unwrap();
    assert_eq!(range.len(), 3);
    assert_eq!(range[&ProfileKey(4)], at(4));

    let ids: Vec<String> = store
        .segments_of(ProfileKey(3))
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, ["AAAAAA", "BBBBBB"]);
    let mut keys = writer.segments_of(ProfileKey(3)).unwrap();
    keys.sort_unstable();
    assert_eq!(keys, [a, b]);
    assert!(writer.segments_of(ProfileKey(99)).unwrap().is_empty());
}

pub fn the_schedule_hands_out_due_entries_once(store: Arc<dyn AudienceStore>) {
    let writer = store.writer().unwrap();
    assert_eq!(writer.next_due().unwrap(), None);
    writer.schedule(ProfileKey(1), at(30)).unwrap();
    writer.schedule(ProfileKey(2), at(10)).unwrap();
    writer.schedule(ProfileKey(3), at(20)).unwrap();
    writer.schedule(ProfileKey(4), at(99)).unwrap();
    // Scheduling again moves the profile's one entry.
    writer.schedule(ProfileKey(4), at(40)).unwrap();
    assert_eq!(writer.next_due().unwrap(), Some(at(10)));
    assert_eq!(writer.scheduled().unwrap().len(), 4);

    assert_eq!(
        writer.take_due(at(30), 2).unwrap(),
        [ProfileKey(2), ProfileKey(3)]
    );
    assert_eq!(writer.take_due(at(30), 10).unwrap(), [ProfileKey(1)]);
    assert!(writer.take_due(at(30), 10).unwrap().is_empty());
    assert_eq!(writer.next_due().unwrap(), Some(at(40)));
    assert_eq!(writer.take_due(at(40), 10).unwrap(), [ProfileKey(4)]);
    assert_eq!(writer.next_due().unwrap(), None);
}

pub fn profiles_leave_the_schedule_and_it_is_read_whole(store: Arc<dyn AudienceStore>) {
    let writer = store.writer().unwrap();
    for profile in 1..=5 {
        writer.schedule(ProfileKey(profile), at(profile)).unwrap();
    }
    writer.unschedule(ProfileKey(1)).unwrap();
    writer.unschedule(ProfileKey(5)).unwrap();
    writer.unschedule(ProfileKey(99)).unwrap();
    let scheduled = writer.scheduled().unwrap();
    let mut left: Vec<_> = scheduled.into_iter().collect();
    left.sort_unstable();
    assert_eq!(
        left,
        [
            (ProfileKey(2), at(2)),
            (ProfileKey(3), at(3)),
            (ProfileKey(4), at(4)),
        ]
    );
    assert_eq!(
        writer.take_due(at(1_000), 100).unwrap(),
        [ProfileKey(2), ProfileKey(3), ProfileKey(4)]
    );
}

pub fn backfills_record_their_progress(store: Arc<dyn AudienceStore>) {
    let writer = store.writer().unwrap();
    let a = insert(writer.as_ref(), "AAAAAA", "A", 1);
    let b = insert(writer.as_ref(), "BBBBBB", "B", 2);
    assert!(writer.running_backfills().unwrap().is_empty());
    writer.start_backfill(a, 100).unwrap();
    writer.start_backfill(b, 5).unwrap();
    let running = writer.running_backfills().unwrap();
    assert_eq!(
        running
            .iter()
            .map(|s| (s.segment, s.after, s.done))
            .collect::<Vec<_>>(),
        [(a, ProfileKey(0), 0), (b, ProfileKey(0), 0)]
    );
    assert_eq!(
        store.segment("AAAAAA").unwrap().unwrap().backfill,
        Some(Progress {
            done: 0,
            total: 100
        })
    );

    writer
        .backfill_progress(a, Some(ProfileKey(40)), 40)
        .unwrap();
    // More profiles than counted at the start: the total grows with what is done.
    writer.backfill_progress(b, Some(ProfileKey(9)), 9).unwrap();
    let running = writer.running_backfills().unwrap();
    assert_eq!((running[0].after, running[0].done), (ProfileKey(40), 40));
    assert_eq!(
        store.segment("BBBBBB").unwrap().unwrap().backfill,
        Some(Progress { done: 9, total: 9 })
    );

    writer.backfill_progress(a, None, 95).unwrap();
    let segment = store.segment("AAAAAA").unwrap().unwrap();
    assert_eq!(segment.backfill, None);
    assert!(!segment.is_processing());
    assert_eq!(
        writer
            .running_backfills()
            .unwrap()
            .iter()
            .map(|s| s.segment)
            .collect::<Vec<_>>(),
        [b]
    );
    // A restart begins again from the first profile.
    writer.start_backfill(a, 3).unwrap();
    assert_eq!(writer.running_backfills().unwrap()[0].after, ProfileKey(0));
}

pub fn the_feed_cursor_is_kept(store: Arc<dyn AudienceStore>) {
    let writer = store.writer().unwrap();
    assert_eq!(writer.feed_cursor().unwrap(), None);
    let cursor = FeedCursor {
        event_pk: 12,
        profile_seq: 34,
        ..FeedCursor::default()
    };
    writer.save_feed_cursor(&cursor).unwrap();
    writer.save_feed_cursor(&cursor).unwrap();
    assert_eq!(writer.feed_cursor().unwrap(), Some(cursor));
    drop(writer);
    assert_eq!(store.writer().unwrap().feed_cursor().unwrap(), Some(cursor));
}

pub fn a_rolled_back_transaction_leaves_nothing(store: Arc<dyn AudienceStore>) {
    let writer = store.writer().unwrap();
    writer.rollback().unwrap();
    writer.begin().unwrap();
    let a = insert(writer.as_ref(), "AAAAAA", "A", 1);
    change(writer.as_ref(), a, "AAAAAA", 1, true, 2);
    writer.save_feed_cursor(&FeedCursor::default()).unwrap();
    writer.rollback().unwrap();
    assert!(store.segments().unwrap().is_empty());
    assert!(store.changes_after(0, 10).unwrap().is_empty());
    assert_eq!(writer.feed_cursor().unwrap(), None);

    writer.begin().unwrap();
    insert(writer.as_ref(), "BBBBBB", "B", 1);
    writer.commit().unwrap();
    assert_eq!(store.segments().unwrap().len(), 1);
}

pub fn the_writer_reads_its_own_uncommitted_writes(store: Arc<dyn AudienceStore>) {
    let writer = store.writer().unwrap();
    let a = insert(writer.as_ref(), "AAAAAA", "A", 1);
    writer.begin().unwrap();
    change(writer.as_ref(), a, "AAAAAA", 1, true, 2);
    assert_eq!(writer.joined(a, ProfileKey(1)).unwrap(), Some(at(2)));
    assert_eq!(writer.segments_of(ProfileKey(1)).unwrap(), [a]);
    // Readers see only what is committed.
    assert_eq!(store.joined(a, ProfileKey(1)).unwrap(), None);
    writer.commit().unwrap();
    assert_eq!(store.joined(a, ProfileKey(1)).unwrap(), Some(at(2)));
}

pub fn a_deleted_segment_loses_membership_but_keeps_history(store: Arc<dyn AudienceStore>) {
    let writer = store.writer().unwrap();
    let a = insert(writer.as_ref(), "AAAAAA", "A", 1);
    let b = insert(writer.as_ref(), "BBBBBB", "B", 2);
    change(writer.as_ref(), a, "AAAAAA", 1, true, 3);
    change(writer.as_ref(), b, "BBBBBB", 1, true, 4);

    writer.delete_segment(a).unwrap();
    assert_eq!(store.segment("AAAAAA").unwrap(), None);
    assert_eq!(store.segment_key("AAAAAA").unwrap(), None);
    assert_eq!(store.joined(a, ProfileKey(1)).unwrap(), None);
    assert_eq!(writer.segments_of(ProfileKey(1)).unwrap(), [b]);
    assert_eq!(store.changes_after(0, 10).unwrap().len(), 2);
    assert_eq!(store.member_count(b).unwrap(), 1);
}

/// A segment's size is kept as members enter and leave (the figure the API and the console
/// show, read without counting the members): per segment, within a transaction, and not
/// moved by one rolled back.
pub fn member_counts_are_kept_as_members_move(store: Arc<dyn AudienceStore>) {
    let writer = store.writer().unwrap();
    let a = insert(writer.as_ref(), "AAAAAA", "A", 1);
    let b = insert(writer.as_ref(), "BBBBBB", "B", 1);
    writer.begin().unwrap();
    for profile in 1..=50 {
        change(writer.as_ref(), a, "AAAAAA", profile, true, 2);
        if profile % 2 == 0 {
            change(writer.as_ref(), b, "BBBBBB", profile, true, 2);
        }
    }
    for profile in 1..=10 {
        change(writer.as_ref(), a, "AAAAAA", profile, false, 3);
    }
    writer.commit().unwrap();
    assert_eq!(store.member_count(a).unwrap(), 40);
    assert_eq!(store.member_count(b).unwrap(), 25);

    writer.begin().unwrap();
    for profile in 11..=20 {
        change(writer.as_ref(), a, "AAAAAA", profile, false, 4);
    }
    writer.rollback().unwrap();
    assert_eq!(store.member_count(a).unwrap(), 40);

    writer.delete_segment(b).unwrap();
    assert_eq!(store.member_count(a).unwrap(), 40);
    assert_eq!(store.member_count(b).unwrap(), 0);
}
