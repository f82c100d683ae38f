//! The conformance suite of [`EngageReader`]: one body per behaviour, run against every
//! backend, so that segments, flows and confirmations read the same answers whatever store
//! engage runs on.
//!
//! A backend provides a factory that starts an [`Engage`] on a fresh, empty store of its kind
//! and returns it in a [`Backend`]; [`engage_reader_conformance!`](crate::engage_reader_conformance)
//! makes one `#[tokio::test]` per case:
//!
//! ```ignore
//! signalbox_engage::engage_reader_conformance!(sqlite, crate::reader::sqlite_backend);
//! ```
//!
//! The cases write through the [`Engage`] handle (its API writes go through the log like any
//! other), wait until the pipeline applied them, and read through [`Engage::reader`].

use std::any::Any;
use std::time::Duration;

use serde_json::{json, Map, Value};
use signalbox_seglang::ast::{StringOperator, ValueFilter};
use signalbox_seglang::{ConsentStatus, EventFilter, PropertyPath};

use crate::feed::FeedCursor;
use crate::lists::OptInProcess;
use crate::model::{ApiEventInput, Profile, ProfileInput, ProfileKey};
use crate::reader::EngageReader;
use crate::Engage;

/// An engine on a fresh store of the backend under test.
pub struct Backend {
    pub engage: Engage,
    /// Whatever must live as long as the engine (a temporary directory, a database).
    pub guard: Box<dyn Any + Send>,
}

/// Makes one `#[tokio::test]` per case of the suite, in a module named after the backend.
/// `$factory` is an expression (a path from the crate root, or a closure) that, called with
/// no argument, returns a future of a [`Backend`]; it is evaluated in the test's body, so a
/// block that `return`s skips the case (when a backend's server is not configured). The
/// calling crate needs `tokio` (with its `macros` and `rt-multi-thread` features) among its
/// (dev-)dependencies.
#[macro_export]
macro_rules! engage_reader_conformance {
    ($backend:ident, $factory:expr) => {
        mod $backend {
            $crate::engage_reader_conformance!(@cases $factory;
                feed_reports_each_event_and_changed_profile_once,
                feed_pages_by_limit_and_stops_at_the_checkpoint,
                feed_reports_list_changes_and_merges,
                end_cursor_is_after_everything_committed,
                profiles_are_found_by_key_and_by_id,
                profile_records_hold_fields_lists_and_consent,
                metric_events_are_read_per_metric_and_per_profile,
                list_member_counts_follow_joins_leaves_and_merges,
            );
        }
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            // Several workers: the cases call the reader from their task, and a backend that
            // waits on the runtime (PostgreSQL's) steps out of it to do so.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let backend = ($factory)().await;
                $crate::conformance::$case(backend).await;
            }
        )*
    };
}

const WAIT: Duration = Duration::from_secs(20);

fn reader(engage: &Engage) -> Box<dyn EngageReader> {
    engage.reader().expect("a reader opens")
}

async fn settle(engage: &Engage) {
    engage
        .catch_up(WAIT)
        .await
        .expect("the pipeline catches up");
}

async fn profile(engage: &Engage, email: &str, properties: Value) -> Profile {
    let properties: Map<String, Value> = serde_json::from_value(properties).expect("an object");
    engage
        .create_profile(ProfileInput {
            email: Some(email.to_owned()),
            properties,
            ..ProfileInput::default()
        })
        .await
        .expect("the profile is created")
}

async fn event(engage: &Engage, email: &str, metric: &str, value: f64, properties: Value) {
    let properties: Map<String, Value> = serde_json::from_value(properties).expect("an object");
    engage
        .create_events(vec![ApiEventInput {
            metric_name: metric.to_owned(),
            profile: ProfileInput {
                email: Some(email.to_owned()),
                ..ProfileInput::default()
            },
            properties,
            value: Some(value),
            ..ApiEventInput::default()
        }])
        .await
        .expect("the event is accepted");
}

fn key_of(reader: &dyn EngageReader, profile: &Profile) -> ProfileKey {
    reader
        .profile_key(&profile.id)
        .expect("read")
        .expect("the profile has a key")
}

/// `changes`: every event once, a profile once per change of its own (an event alone does not
/// change it), in log order, and nothing after the last cursor.
pub async fn feed_reports_each_event_and_changed_profile_once(backend: Backend) {
    let engage = &backend.engage;
    let ada = profile(engage, "ada@example.com", json!({})).await;
    event(engage, "ada@example.com", "Viewed", 1.0, json!({"n": 1})).await;
    settle(engage).await;
    let reader = reader(engage);
    let first = reader
        .changes(&FeedCursor::default(), engage.applied_seq(), 100)
        .expect("read");
    assert_eq!(first.events.len(), 1, "{first:?}");
    assert_eq!(first.events[0].metric_name, "Viewed");
    assert_eq!(first.events[0].value, Some(1.0));
    assert_eq!(first.events[0].profile_pk, key_of(reader.as_ref(), &ada));
    assert_eq!(first.profiles, [key_of(reader.as_ref(), &ada)]);
    assert!(!first.more);

    event(engage, "ada@example.com", "Viewed", 2.0, json!({"n": 2})).await;
    settle(engage).await;
    let second = reader
        .changes(&first.cursor, engage.applied_seq(), 100)
        .expect("read");
    assert_eq!(second.events.len(), 1);
    assert!(second.events[0].pk > first.events[0].pk);
    assert!(second.profiles.is_empty(), "{second:?}");

    engage
        .update_profile(
            &ada.id,
            ProfileInput {
                first_name: Some("Ada".into()),
                ..ProfileInput::default()
            },
        )
        .await
        .expect("updated");
    settle(engage).await;
    let third = reader
        .changes(&second.cursor, engage.applied_seq(), 100)
        .expect("read");
    assert!(third.events.is_empty());
    assert_eq!(third.profiles, first.profiles);
    let empty = reader
        .changes(&third.cursor, engage.applied_seq(), 100)
        .expect("read");
    assert!(empty.is_empty(), "{empty:?}");
    assert_eq!(empty.cursor, third.cursor);
}

/// `changes`: at most `limit` rows of a part, `more` while there are others, and nothing
/// applied after `upto_seq`.
pub async fn feed_pages_by_limit_and_stops_at_the_checkpoint(backend: Backend) {
    let engage = &backend.engage;
    profile(engage, "ada@example.com", json!({})).await;
    for n in 0..5 {
        event(engage, "ada@example.com", "Viewed", 1.0, json!({ "n": n })).await;
    }
    settle(engage).await;
    let upto = engage.applied_seq();
    event(engage, "ada@example.com", "Later", 1.0, json!({})).await;
    settle(engage).await;
    let reader = reader(engage);
    let mut cursor = FeedCursor::default();
    let mut seen = Vec::new();
    loop {
        let page = reader.changes(&cursor, upto, 2).expect("read");
        assert!(page.events.len() <= 2);
        seen.extend(page.events.iter().map(|e| e.metric_name.clone()));
        cursor = page.cursor;
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, ["Viewed"; 5]);
    let rest = reader
        .changes(&cursor, engage.applied_seq(), 100)
        .expect("read");
    let names: Vec<&str> = rest.events.iter().map(|e| e.metric_name.as_str()).collect();
    assert_eq!(names, ["Later"]);
}

/// `changes` and `list_changes`: list membership changes in order with their profile, and a
/// merge as the key that went and the one that stays.
pub async fn feed_reports_list_changes_and_merges(backend: Backend) {
    let engage = &backend.engage;
    let ada = profile(engage, "ada@example.com", json!({})).await;
    let bob = profile(engage, "bob@example.com", json!({})).await;
    let list = engage
        .create_list("News", OptInProcess::SingleOptIn)
        .await
        .expect("list created");
    settle(engage).await;
    let reader = reader(engage);
    let start = reader.end_cursor().expect("read");
    let seq_before = engage.applied_seq();
    engage
        .add_list_members(&list.id, &[ada.id.clone(), bob.id.clone()])
        .await
        .expect("added");
    settle(engage).await;
    let (ada_key, bob_key) = (key_of(reader.as_ref(), &ada), key_of(reader.as_ref(), &bob));

    let only = reader
        .list_changes(start.list_change_pk, engage.applied_seq(), 100)
        .expect("read");
    let mut members: Vec<ProfileKey> = only.iter().map(|c| c.profile_pk).collect();
    members.sort();
    let mut expected = vec![ada_key, bob_key];
    expected.sort();
    assert_eq!(members, expected);
    assert!(only
        .iter()
        .all(|c| c.list_id == list.id.0 && c.change == "added"));
    assert!(only.windows(2).all(|w| w[0].pk < w[1].pk));
    let first = reader
        .list_changes(start.list_change_pk, engage.applied_seq(), 1)
        .expect("read");
    assert_eq!(first, only[..1]);
    let before = reader
        .list_changes(start.list_change_pk, seq_before, 100)
        .expect("read");
    assert!(before.is_empty(), "{before:?}");

    let changes = reader
        .changes(&start, engage.applied_seq(), 100)
        .expect("read");
    assert_eq!(changes.lists, only);

    engage
        .merge_profiles(&ada.id, std::slice::from_ref(&bob.id))
        .await
        .expect("merged");
    settle(engage).await;
    let merged = reader
        .changes(&changes.cursor, engage.applied_seq(), 100)
        .expect("read");
    assert_eq!(merged.merges.len(), 1, "{merged:?}");
    assert_eq!(merged.merges[0].from_pk, bob_key);
    assert_eq!(merged.merges[0].to_pk, ada_key);
    assert_eq!(reader.profile_id(bob_key).expect("read"), None);
    assert_eq!(reader.profile_id(ada_key).expect("read"), Some(ada.id));
}

/// `end_cursor`: the default on an empty store, and after it nothing until something new.
pub async fn end_cursor_is_after_everything_committed(backend: Backend) {
    let engage = &backend.engage;
    let reader = reader(engage);
    assert_eq!(reader.end_cursor().expect("read"), FeedCursor::default());
    profile(engage, "ada@example.com", json!({})).await;
    event(engage, "ada@example.com", "Viewed", 1.0, json!({})).await;
    settle(engage).await;
    let end = reader.end_cursor().expect("read");
    assert_ne!(end, FeedCursor::default());
    let after = reader
        .changes(&end, engage.applied_seq(), 100)
        .expect("read");
    assert!(after.is_empty(), "{after:?}");
    event(engage, "ada@example.com", "Viewed", 2.0, json!({})).await;
    settle(engage).await;
    let next = reader
        .changes(&end, engage.applied_seq(), 100)
        .expect("read");
    assert_eq!(next.events.len(), 1);
}

/// `profile_id`, `profile_key`, `profile_count`, `profile_keys`.
pub async fn profiles_are_found_by_key_and_by_id(backend: Backend) {
    let engage = &backend.engage;
    let reader = reader(engage);
    assert_eq!(reader.profile_count().expect("read"), 0);
    assert!(reader
        .profile_keys(ProfileKey(0), 10)
        .expect("read")
        .is_empty());
    let mut created = Vec::new();
    for n in 0..3 {
        created.push(profile(engage, &format!("p{n}@example.com"), json!({})).await);
    }
    settle(engage).await;
    assert_eq!(reader.profile_count().expect("read"), 3);
    let keys: Vec<ProfileKey> = created.iter().map(|p| key_of(reader.as_ref(), p)).collect();
    for (profile, key) in created.iter().zip(&keys) {
        assert_eq!(
            reader.profile_id(*key).expect("read").as_ref(),
            Some(&profile.id)
        );
    }
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 3, "keys differ");
    assert_eq!(
        reader.profile_keys(ProfileKey(0), 10).expect("read"),
        sorted
    );
    assert_eq!(
        reader.profile_keys(ProfileKey(0), 2).expect("read"),
        sorted[..2]
    );
    assert_eq!(
        reader.profile_keys(sorted[1], 10).expect("read"),
        sorted[2..]
    );
    let unknown = ProfileKey(sorted[2].0 + 1_000_000);
    assert_eq!(reader.profile_id(unknown).expect("read"), None);
    assert_eq!(
        reader
            .profile_key(&crate::model::ProfileId(
                "01NOSUCHPROFILE00000000000".into()
            ))
            .expect("read"),
        None
    );
}

/// `profile_record` and `profile_records`: fields, custom properties, list membership with
/// its join time, email consent, and the last event's time only when asked.
pub async fn profile_records_hold_fields_lists_and_consent(backend: Backend) {
    let engage = &backend.engage;
    let ada = profile(engage, "ada@example.com", json!({"plan": "pro"})).await;
    let bob = profile(engage, "bob@example.com", json!({})).await;
    let list = engage
        .create_list("News", OptInProcess::SingleOptIn)
        .await
        .expect("list created");
    engage
        .add_list_members(&list.id, std::slice::from_ref(&ada.id))
        .await
        .expect("added");
    engage
        .unsubscribe_profile(&bob.id)
        .await
        .expect("unsubscribed");
    event(engage, "ada@example.com", "Viewed", 1.0, json!({})).await;
    settle(engage).await;
    let reader = reader(engage);
    let ada_key = key_of(reader.as_ref(), &ada);
    let bob_key = key_of(reader.as_ref(), &bob);
    let email = PropertyPath::from_wire("email").expect("a path");
    let plan = PropertyPath::Custom("plan".into());
    let last_event = PropertyPath::from_wire("last_event_date").expect("a path");

    let record = reader
        .profile_record(ada_key, true)
        .expect("read")
        .expect("ada exists");
    assert_eq!(record.pk, ada_key);
    assert_eq!(record.id, ada.id.0);
    assert_eq!(record.property(&email), Some(&json!("ada@example.com")));
    assert_eq!(record.property(&plan), Some(&json!("pro")));
    assert!(record.property(&last_event).is_some());
    assert_eq!(record.lists().collect::<Vec<_>>(), [list.id.0.as_str()]);
    assert_eq!(
        record.email_consent().status,
        ConsentStatus::NeverSubscribed
    );
    assert!(record.email_consent().can_receive_marketing);
    let without = reader
        .profile_record(ada_key, false)
        .expect("read")
        .expect("ada exists");
    assert_eq!(without.property(&last_event), None);

    let bob_record = reader
        .profile_record(bob_key, false)
        .expect("read")
        .expect("bob exists");
    assert_eq!(bob_record.lists().count(), 0);
    assert_eq!(
        bob_record.email_consent().status,
        ConsentStatus::Unsubscribed
    );
    assert!(!bob_record.email_consent().can_receive_marketing);
    assert_eq!(
        reader
            .profile_record(ProfileKey(ada_key.0.max(bob_key.0) + 1_000_000), false)
            .expect("read"),
        None
    );

    let all = reader
        .profile_records(ProfileKey(0), 10, true)
        .expect("read");
    let by_key = |key: ProfileKey| all.iter().find(|r| r.pk == key).cloned();
    assert_eq!(all.len(), 2);
    assert!(all.windows(2).all(|w| w[0].pk < w[1].pk));
    assert_eq!(by_key(ada_key), Some(record));
    assert_eq!(
        by_key(bob_key).map(|r| r.email_consent().clone()),
        Some(bob_record.email_consent().clone())
    );
    let first = all[0].pk;
    let rest = reader.profile_records(first, 10, false).expect("read");
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].pk, all[1].pk);
    assert_eq!(reader.profile_records(first, 0, false).expect("read"), []);
}

/// `metric_events` and `profile_metric_events`: per profile, with and without event filters,
/// and nothing for an unknown metric.
pub async fn metric_events_are_read_per_metric_and_per_profile(backend: Backend) {
    let engage = &backend.engage;
    let ada = profile(engage, "ada@example.com", json!({})).await;
    let bob = profile(engage, "bob@example.com", json!({})).await;
    event(
        engage,
        "ada@example.com",
        "Ordered",
        10.0,
        json!({"plan": "pro"}),
    )
    .await;
    event(
        engage,
        "ada@example.com",
        "Ordered",
        5.0,
        json!({"plan": "free"}),
    )
    .await;
    event(
        engage,
        "bob@example.com",
        "Ordered",
        7.0,
        json!({"plan": "pro"}),
    )
    .await;
    event(engage, "bob@example.com", "Viewed", 1.0, json!({})).await;
    settle(engage).await;
    let reader = reader(engage);
    let ada_key = key_of(reader.as_ref(), &ada);
    let bob_key = key_of(reader.as_ref(), &bob);
    let metric_id = engage
        .list_metrics(Default::default())
        .await
        .expect("metrics")
        .items
        .into_iter()
        .find(|m| m.name == "Ordered")
        .expect("the metric exists")
        .id
        .0;
    let values = |events: &[(i64, f64)]| {
        let mut values: Vec<f64> = events.iter().map(|(_, v)| *v).collect();
        values.sort_by(f64::total_cmp);
        values
    };

    let all = reader.metric_events(&metric_id, &[]).expect("read");
    assert_eq!(all.len(), 2);
    assert_eq!(values(&all[&ada_key]), [5.0, 10.0]);
    assert_eq!(values(&all[&bob_key]), [7.0]);
    assert!(all[&ada_key].iter().all(|(t, _)| *t > 0));

    let pro = [EventFilter {
        property: "plan".into(),
        filter: ValueFilter::String {
            operator: StringOperator::Equals,
            value: "pro".into(),
        },
    }];
    let filtered = reader.metric_events(&metric_id, &pro).expect("read");
    assert_eq!(values(&filtered[&ada_key]), [10.0]);
    assert_eq!(values(&filtered[&bob_key]), [7.0]);
    assert!(reader
        .metric_events("NOSUCH", &[])
        .expect("read")
        .is_empty());

    let ada_events = reader
        .profile_metric_events(ada_key, &metric_id, &[])
        .expect("read")
        .events;
    assert_eq!(values(&ada_events), [5.0, 10.0]);
    let mut times: Vec<i64> = ada_events.iter().map(|(t, _)| *t).collect();
    times.sort();
    let mut expected: Vec<i64> = all[&ada_key].iter().map(|(t, _)| *t).collect();
    expected.sort();
    assert_eq!(times, expected);
    assert_eq!(
        values(
            &reader
                .profile_metric_events(ada_key, &metric_id, &pro)
                .expect("read")
                .events
        ),
        [10.0]
    );
    assert!(reader
        .profile_metric_events(ada_key, "NOSUCH", &[])
        .expect("read")
        .events
        .is_empty());
    // The largest key among the profile's events of the metric, filtered out or not.
    let last = reader
        .profile_metric_events(ada_key, &metric_id, &[])
        .expect("read")
        .last_pk;
    assert!(last > 0);
    assert_eq!(
        reader
            .profile_metric_events(ada_key, &metric_id, &pro)
            .expect("read")
            .last_pk,
        last
    );
    assert_eq!(
        reader
            .profile_metric_events(ada_key, "NOSUCH", &[])
            .expect("read")
            .last_pk,
        0
    );
}

/// A list's member count (what the API's `profile_count` and the console show, kept as
/// members join and leave rather than counted per read) follows additions, removals and a
/// merge of two members into one.
pub async fn list_member_counts_follow_joins_leaves_and_merges(backend: Backend) {
    let engage = &backend.engage;
    let ada = profile(engage, "ada@example.com", json!({})).await;
    let bob = profile(engage, "bob@example.com", json!({})).await;
    let cy = profile(engage, "cy@example.com", json!({})).await;
    let news = engage
        .create_list("News", OptInProcess::SingleOptIn)
        .await
        .expect("list created");
    let deals = engage
        .create_list("Deals", OptInProcess::SingleOptIn)
        .await
        .expect("list created");
    let count = |list: &crate::lists::List| {
        let engage = engage.clone();
        let id = list.id.clone();
        async move {
            settle(&engage).await;
            engage.get_list(&id).await.expect("read").profile_count
        }
    };
    assert_eq!(count(&news).await, 0);
    engage
        .add_list_members(&news.id, &[ada.id.clone(), bob.id.clone(), cy.id.clone()])
        .await
        .expect("added");
    engage
        .add_list_members(&deals.id, std::slice::from_ref(&cy.id))
        .await
        .expect("added");
    // Adding a member again changes nothing.
    engage
        .add_list_members(&news.id, std::slice::from_ref(&ada.id))
        .await
        .expect("added");
    assert_eq!(count(&news).await, 3);
    assert_eq!(count(&deals).await, 1);

    engage
        .remove_list_members(&news.id, std::slice::from_ref(&cy.id))
        .await
        .expect("removed");
    assert_eq!(count(&news).await, 2);
    assert_eq!(count(&deals).await, 1);

    // Two members merged are one member.
    engage
        .merge_profiles(&ada.id, std::slice::from_ref(&bob.id))
        .await
        .expect("merged");
    assert_eq!(count(&news).await, 1);
    let listed = engage
        .list_lists(crate::lists::ListQuery {
            page_size: 10,
            ..Default::default()
        })
        .await
        .expect("read")
        .items;
    let counts: Vec<(String, u64)> = listed
        .iter()
        .map(|list| (list.name.clone(), list.profile_count))
        .collect();
    assert!(counts.contains(&("News".to_owned(), 1)), "{counts:?}");
    assert!(counts.contains(&("Deals".to_owned(), 1)), "{counts:?}");
}
