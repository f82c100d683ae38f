//! The behaviour every [`Store`] backend shows, written once and run against each backend
//! (the embedded store and PostgreSQL), so the two cannot drift.
//!
//! Each case takes a new, empty store whose dedupe window is [`WINDOW`].
//! [`store_conformance!`](crate::store_conformance) makes one test per case for a backend.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use signalbox_core::{
    ApiKey, CallKind, NewCall, RejectCode, Rejection, Resource, Scope, Scopes, SourceId,
    SourceStatus,
};

use crate::{CallQuery, RejectionQuery, Store, StoreError, TrimRequest};

/// The dedupe window of the stores the cases get.
pub const WINDOW: SignedDuration = SignedDuration::from_hours(1);

/// Makes one `#[tokio::test]` per conformance case. `$make` is an async expression that
/// evaluates to `Option<(Arc<dyn Store>, G)>`: a new empty store with dedupe window
/// [`WINDOW`] and a guard that keeps its files or database alive; `None` skips the case.
#[macro_export]
macro_rules! store_conformance {
    ($make:expr) => {
        $crate::store_conformance!(@cases $make;
            appended_calls_are_read_back_in_order_with_their_fields,
            a_repeated_message_id_is_stored_once_per_source,
            a_repeat_after_the_window_is_stored_again_counting_from_the_stored_copy,
            repeats_inside_one_append_are_stored_once,
            calls_are_read_by_source_time_and_page,
            rejections_are_recorded_and_read_back,
            totals_count_calls_and_rejections_per_source,
            sources_are_found_by_slug_or_display_name_and_names_are_unique,
            a_rotated_write_key_keeps_working_through_its_grace,
            status_settings_and_deletion_of_a_source,
            api_keys_are_created_authenticated_listed_and_deleted,
            concurrent_appends_lose_nothing_and_get_increasing_seqs,
            the_writer_counts_its_group_commits_and_their_calls,
            a_closed_store_takes_no_appends,
            a_trim_deletes_the_front_of_the_log_up_to_the_window_and_the_floor,
            a_trim_stops_at_the_first_call_that_is_too_young,
            a_trim_in_small_chunks_goes_on_beside_appends,
            dedupe_still_catches_repeats_inside_its_window_after_a_trim
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some((store, guard)) = $make.await else { return };
                $crate::conformance::$case(store).await;
                drop(guard);
            }
        )*
    };
}

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_790_000_000 + second).unwrap()
}

fn call(id: &str, second: i64) -> NewCall {
    NewCall {
        kind: CallKind::Track,
        message_id: id.to_owned(),
        received_at: at(second),
        payload: format!(r#"{{"type":"track","messageId":"{id}","event":"Viewed"}}"#),
    }
}

fn rejection(message: &str, second: i64) -> Rejection {
    Rejection {
        code: RejectCode::InvalidJson,
        message: message.to_owned(),
        received_at: at(second),
        payload: "{".to_owned(),
    }
}

async fn source(store: &dyn Store, name: &str) -> SourceId {
    store.create_source(name).await.unwrap().0.id
}

async fn all_calls(store: &dyn Store) -> Vec<signalbox_core::StoredCall> {
    store
        .read_calls(CallQuery {
            limit: 100_000,
            ..CallQuery::default()
        })
        .await
        .unwrap()
}

pub async fn appended_calls_are_read_back_in_order_with_their_fields(store: Arc<dyn Store>) {
    let web = source(&*store, "web").await;
    assert_eq!(store.last_seq().await.unwrap(), 0);
    let mut identify = call("m-2", 2);
    identify.kind = CallKind::Identify;
    let outcome = store
        .append(web, vec![call("m-1", 1), identify], vec![])
        .await
        .unwrap();
    assert_eq!((outcome.appended, outcome.duplicates), (2, 0));
    let calls = all_calls(&*store).await;
    assert_eq!(calls.len(), 2);
    assert!(calls[0].seq < calls[1].seq);
    assert_eq!(outcome.last_seq, calls[1].seq);
    assert_eq!(store.last_seq().await.unwrap(), calls[1].seq);
    assert_eq!(calls[0].message_id, "m-1");
    assert_eq!(calls[0].source_id, web);
    assert_eq!(calls[0].kind, CallKind::Track);
    assert_eq!(calls[0].received_at, at(1));
    assert_eq!(calls[0].payload, call("m-1", 1).payload);
    assert_eq!(calls[1].kind, CallKind::Identify);

    let outcome = store.append(web, vec![], vec![]).await.unwrap();
    assert_eq!(
        outcome.last_seq, 0,
        "an append that wrote no call reports seq 0"
    );
}

pub async fn a_repeated_message_id_is_stored_once_per_source(store: Arc<dyn Store>) {
    let web = source(&*store, "web").await;
    let app = source(&*store, "app").await;
    store
        .append(web, vec![call("same", 1)], vec![])
        .await
        .unwrap();
    let again = store
        .append(web, vec![call("same", 5)], vec![])
        .await
        .unwrap();
    assert_eq!((again.appended, again.duplicates), (0, 1));
    let other = store
        .append(app, vec![call("same", 6)], vec![])
        .await
        .unwrap();
    assert_eq!(
        (other.appended, other.duplicates),
        (1, 0),
        "message ids are unique per source"
    );
    assert_eq!(all_calls(&*store).await.len(), 2);
}

pub async fn a_repeat_after_the_window_is_stored_again_counting_from_the_stored_copy(
    store: Arc<dyn Store>,
) {
    let web = source(&*store, "web").await;
    let window = WINDOW.as_secs();
    store.append(web, vec![call("m", 0)], vec![]).await.unwrap();
    // Repeats inside the window do not move it: it counts from the stored copy.
    let inside = store
        .append(web, vec![call("m", window - 10)], vec![])
        .await
        .unwrap();
    assert_eq!(inside.duplicates, 1);
    let after = store
        .append(web, vec![call("m", window + 5)], vec![])
        .await
        .unwrap();
    assert_eq!(after.appended, 1, "a repeat after the window is a new call");
    let inside_again = store
        .append(web, vec![call("m", window + 20)], vec![])
        .await
        .unwrap();
    assert_eq!(inside_again.duplicates, 1);
    assert_eq!(all_calls(&*store).await.len(), 2);
}

pub async fn repeats_inside_one_append_are_stored_once(store: Arc<dyn Store>) {
    let web = source(&*store, "web").await;
    let outcome = store
        .append(
            web,
            vec![call("a", 1), call("b", 1), call("a", 2), call("a", 3)],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!((outcome.appended, outcome.duplicates), (2, 2));
    let ids: Vec<_> = all_calls(&*store)
        .await
        .into_iter()
        .map(|c| (c.message_id, c.received_at))
        .collect();
    assert_eq!(ids, vec![("a".into(), at(1)), ("b".into(), at(1))]);
}

pub async fn calls_are_read_by_source_time_and_page(store: Arc<dyn Store>) {
    let web = source(&*store, "web").await;
    let app = source(&*store, "app").await;
    for i in 0..10 {
        let to = if i % 2 == 0 { web } else { app };
        store
            .append(to, vec![call(&format!("m-{i}"), i)], vec![])
            .await
            .unwrap();
    }
    let page = store
        .read_calls(CallQuery {
            limit: 3,
            ..CallQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 3);
    let next = store
        .read_calls(CallQuery {
            after_seq: page[2].seq,
            limit: 100,
            ..CallQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(next.len(), 7);
    assert!(next.iter().all(|c| c.seq > page[2].seq));

    let from_app = store
        .read_calls(CallQuery {
            source_id: Some(app),
            limit: 100,
            ..CallQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(from_app.len(), 5);
    assert!(from_app.iter().all(|c| c.source_id == app));

    let recent = store
        .read_calls(CallQuery {
            since: Some(at(7)),
            limit: 100,
            ..CallQuery::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = recent.iter().map(|c| c.message_id.as_str()).collect();
    assert_eq!(ids, ["m-7", "m-8", "m-9"]);
}

pub async fn rejections_are_recorded_and_read_back(store: Arc<dyn Store>) {
    let web = source(&*store, "web").await;
    let app = source(&*store, "app").await;
    let outcome = store
        .append(
            web,
            vec![call("ok", 1)],
            vec![rejection("bad one", 1), rejection("bad two", 2)],
        )
        .await
        .unwrap();
    assert_eq!((outcome.appended, outcome.rejected), (1, 2));
    store
        .append(app, vec![], vec![rejection("from app", 3)])
        .await
        .unwrap();
    let all = store
        .read_rejections(RejectionQuery {
            limit: 100,
            ..RejectionQuery::default()
        })
        .await
        .unwrap();
    let messages: Vec<_> = all.iter().map(|r| r.message.as_str()).collect();
    assert_eq!(messages, ["bad one", "bad two", "from app"]);
    assert_eq!(all[0].code, RejectCode::InvalidJson.as_str());
    assert_eq!(all[0].payload, "{");
    assert_eq!(all[0].received_at, at(1));
    let after_first = store
        .read_rejections(RejectionQuery {
            after_id: all[0].id,
            source_id: Some(web),
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(after_first.len(), 1);
    assert_eq!(after_first[0].message, "bad two");
}

pub async fn totals_count_calls_and_rejections_per_source(store: Arc<dyn Store>) {
    let web = source(&*store, "web").await;
    let app = source(&*store, "app").await;
    let _quiet = source(&*store, "quiet").await;
    store
        .append(
            web,
            vec![call("a", 1), call("b", 1)],
            vec![rejection("x", 1)],
        )
        .await
        .unwrap();
    store.append(web, vec![call("a", 2)], vec![]).await.unwrap();
    let last = store
        .append(
            app,
            vec![call("a", 3)],
            vec![rejection("y", 3), rejection("z", 3)],
        )
        .await
        .unwrap();
    let totals = store.totals().await.unwrap();
    assert_eq!(
        totals.len(),
        2,
        "sources with nothing are absent: {totals:?}"
    );
    assert_eq!(totals[0].source_id, web);
    assert_eq!((totals[0].calls, totals[0].rejections), (2, 1));
    assert_eq!(totals[1].source_id, app);
    assert_eq!((totals[1].calls, totals[1].rejections), (1, 2));
    assert_eq!(totals[1].last_seq, last.last_seq);
    assert_eq!(totals, crate::totals_by_walking(&*store).await.unwrap());
}

pub async fn sources_are_found_by_slug_or_display_name_and_names_are_unique(store: Arc<dyn Store>) {
    let (made, key) = store.create_source("Test website").await.unwrap();
    assert_eq!(made.name, "test-website");
    assert_eq!(made.display_name, "Test website");
    assert_eq!(made.status, SourceStatus::Enabled);
    assert_eq!(made.write_key, key.redacted());
    for given in ["test-website", "Test website"] {
        let found = store.source_by_name(given).await.unwrap();
        assert_eq!(found.id, made.id, "{given}");
        let current = store.current_write_key(given).await.unwrap();
        assert_eq!(current.expose(), key.expose());
    }
    assert!(matches!(
        store.create_source("test-website").await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store.create_source("Test website").await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store.create_source("").await,
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        store.source_by_name("nope").await,
        Err(StoreError::NotFound { .. })
    ));
    store.create_source("app").await.unwrap();
    let names: Vec<_> = store
        .list_sources()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["test-website", "app"]);

    let record = store.find_write_key(key.digest()).await.unwrap().unwrap();
    assert_eq!(record.source_id, made.id);
    assert_eq!(record.source_name, "test-website");
    assert!(record.usable_at(Timestamp::now()));
    assert!(store.find_write_key([0; 32]).await.unwrap().is_none());
}

pub async fn a_rotated_write_key_keeps_working_through_its_grace(store: Arc<dyn Store>) {
    let (made, old) = store.create_source("web").await.unwrap();
    let new = store
        .rotate_write_key("web", SignedDuration::from_hours(1))
        .await
        .unwrap();
    assert_ne!(old.expose(), new.expose());
    assert_eq!(
        store.current_write_key("web").await.unwrap().expose(),
        new.expose()
    );
    let now = Timestamp::now();
    let old_record = store.find_write_key(old.digest()).await.unwrap().unwrap();
    assert!(old_record.usable_at(now));
    assert!(!old_record.usable_at(now + SignedDuration::from_hours(2)));
    let new_record = store.find_write_key(new.digest()).await.unwrap().unwrap();
    assert_eq!(new_record.expires_at, None);
    assert_eq!(store.source_by_name("web").await.unwrap().keys_in_grace, 1);
    let records = store.write_keys().await.unwrap();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.source_id == made.id));

    // With no grace the old keys stop at once.
    let newest = store
        .rotate_write_key("web", SignedDuration::ZERO)
        .await
        .unwrap();
    let later = Timestamp::now() + SignedDuration::from_secs(1);
    let previous = store.find_write_key(new.digest()).await.unwrap().unwrap();
    assert!(!previous.usable_at(later));
    let current = store
        .find_write_key(newest.digest())
        .await
        .unwrap()
        .unwrap();
    assert!(current.usable_at(later));
}

pub async fn status_settings_and_deletion_of_a_source(store: Arc<dyn Store>) {
    let (_, key) = store.create_source("Web site").await.unwrap();
    store
        .set_source_status("Web site", SourceStatus::Disabled)
        .await
        .unwrap();
    assert_eq!(
        store.source_by_name("web-site").await.unwrap().status,
        SourceStatus::Disabled
    );
    let record = store.find_write_key(key.digest()).await.unwrap().unwrap();
    assert!(
        !record.usable_at(Timestamp::now()),
        "a disabled source's key is refused"
    );

    assert_eq!(
        store.source_settings("web-site").await.unwrap(),
        serde_json::json!({})
    );
    let settings = serde_json::json!({"list_id": "L1", "enforce_email": true});
    store
        .set_source_settings("web-site", settings.clone())
        .await
        .unwrap();
    assert_eq!(store.source_settings("Web site").await.unwrap(), settings);
    assert!(matches!(
        store
            .set_source_settings("web-site", serde_json::json!([1]))
            .await,
        Err(StoreError::Invalid {
            field: "settings",
            ..
        })
    ));
    let all = store.all_source_settings().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].name.as_str(), &all[0].settings),
        ("web-site", &settings)
    );

    store.delete_source("Web site").await.unwrap();
    assert!(store.list_sources().await.unwrap().is_empty());
    assert!(store.find_write_key(key.digest()).await.unwrap().is_none());
    assert!(matches!(
        store.delete_source("web-site").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store
            .set_source_status("web-site", SourceStatus::Enabled)
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

pub async fn api_keys_are_created_authenticated_listed_and_deleted(store: Arc<dyn Store>) {
    let scopes = Scopes::from_iter([Scope::Full, Scope::read(Resource::Profiles)]);
    let (info, key) = store.create_api_key("ops", &scopes).await.unwrap();
    assert_eq!(info.name, "ops");
    assert_eq!(info.scopes, scopes);
    assert_eq!(info.prefix, key.redacted());
    let found = store.authenticate_api_key(&key).await.unwrap().unwrap();
    assert_eq!((found.id, found.name.as_str()), (info.id, "ops"));
    assert_eq!(found.scopes, scopes);
    assert!(store
        .authenticate_api_key(&ApiKey::generate())
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        store.create_api_key("ops", &scopes).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store.create_api_key("none", &Scopes::default()).await,
        Err(StoreError::Invalid {
            field: "scopes",
            ..
        })
    ));
    store.create_api_key("second", &scopes).await.unwrap();
    let names: Vec<_> = store
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(names, ["ops", "second"]);
    store.delete_api_key("ops").await.unwrap();
    assert!(store.authenticate_api_key(&key).await.unwrap().is_none());
    assert!(matches!(
        store.delete_api_key("ops").await,
        Err(StoreError::NotFound { .. })
    ));
}

pub async fn concurrent_appends_lose_nothing_and_get_increasing_seqs(store: Arc<dyn Store>) {
    let web = source(&*store, "web").await;
    let mut tasks = Vec::new();
    for task in 0..16 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for round in 0..25 {
                let calls = (0..4)
                    .map(|i| call(&format!("t{task}-r{round}-{i}"), round))
                    .collect();
                let outcome = store.append(web, calls, vec![]).await.unwrap();
                assert_eq!(outcome.appended, 4);
                seqs.push(outcome.last_seq);
            }
            seqs
        }));
    }
    for task in tasks {
        let seqs = task.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "one task's seqs grow");
    }
    let calls = all_calls(&*store).await;
    assert_eq!(calls.len(), 16 * 25 * 4);
    assert!(calls.windows(2).all(|w| w[0].seq < w[1].seq));
    let mut ids: Vec<_> = calls.iter().map(|c| c.message_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), calls.len(), "each call once");
    assert_eq!(store.totals().await.unwrap()[0].calls, calls.len() as u64);
}

/// What the engage pipeline reads to tell a saturated ingest ([`Store::writer_groups`]).
pub async fn the_writer_counts_its_group_commits_and_their_calls(store: Arc<dyn Store>) {
    let web = source(&*store, "web").await;
    let before = store.writer_groups();
    for round in 0..3 {
        let calls = (0..5).map(|i| call(&format!("g{round}-{i}"), 1)).collect();
        store.append(web, calls, vec![]).await.unwrap();
    }
    let after = store.writer_groups();
    // One after another, each append is a commit of its own.
    assert_eq!(after.groups - before.groups, 3);
    assert_eq!(after.calls - before.calls, 15);
    // Appends that wait for the same commit share it: fewer groups than appends.
    let appends = (0..32).map(|task| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let calls = (0..10).map(|i| call(&format!("c{task}-{i}"), 2)).collect();
            store.append(web, calls, vec![]).await.unwrap();
        })
    });
    for append in appends.collect::<Vec<_>>() {
        append.await.unwrap();
    }
    let last = store.writer_groups();
    assert_eq!(last.calls - after.calls, 320);
    assert!((1..=32).contains(&(last.groups - after.groups)), "{last:?}");
}

pub async fn a_closed_store_takes_no_appends(store: Arc<dyn Store>) {
    let web = source(&*store, "web").await;
    store
        .append(web, vec![call("kept", 1)], vec![])
        .await
        .unwrap();
    store.close();
    assert!(matches!(
        store.append(web, vec![call("late", 2)], vec![]).await,
        Err(StoreError::Unavailable)
    ));
    assert_eq!(
        all_calls(&*store).await.len(),
        1,
        "what was acknowledged stays"
    );
}

/// A trim of what was received before `second` and lies below `below_seq`, now being just
/// after the newest call of the cases.
fn trim_request(below_seq: i64, second: i64) -> TrimRequest {
    TrimRequest {
        below_seq,
        received_before: at(second),
        now: at(10_000),
        chunk: 1000,
    }
}

pub async fn a_trim_deletes_the_front_of_the_log_up_to_the_window_and_the_floor(
    store: Arc<dyn Store>,
) {
    let web = source(&*store, "web").await;
    let calls: Vec<NewCall> = (0..10).map(|i| call(&format!("m-{i}"), i)).collect();
    store
        .append(web, calls, vec![rejection("old", 0), rejection("new", 20)])
        .await
        .unwrap();
    let seqs: Vec<i64> = all_calls(&*store).await.iter().map(|c| c.seq).collect();
    let ids = |calls: Vec<signalbox_core::StoredCall>| -> Vec<String> {
        calls.into_iter().map(|c| c.message_id).collect()
    };

    // The window: calls received before second 5 go, whatever the floor allows past that.
    let outcome = store.trim_log(trim_request(seqs[8], 5)).await.unwrap();
    assert_eq!((outcome.calls, outcome.rejections), (5, 1));
    assert_eq!(
        ids(all_calls(&*store).await),
        ["m-5", "m-6", "m-7", "m-8", "m-9"]
    );
    let rejections = store
        .read_rejections(RejectionQuery {
            limit: 10,
            ..RejectionQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(rejections.len(), 1);
    assert_eq!(rejections[0].message, "new");

    // The floor: a follower that has not passed seqs[7] keeps it, however old.
    let outcome = store.trim_log(trim_request(seqs[7], 100)).await.unwrap();
    assert_eq!(outcome.calls, 2);
    assert_eq!(ids(all_calls(&*store).await), ["m-7", "m-8", "m-9"]);

    // Everything passed and old: all but the newest call go, so seqs keep growing.
    let outcome = store.trim_log(trim_request(i64::MAX, 100)).await.unwrap();
    assert_eq!((outcome.calls, outcome.rejections), (2, 0));
    assert_eq!(ids(all_calls(&*store).await), ["m-9"]);
    assert_eq!(store.last_seq().await.unwrap(), seqs[9]);
    let again = store.trim_log(trim_request(i64::MAX, 100)).await.unwrap();
    assert_eq!(again.calls, 0, "nothing left to trim");

    // Totals count what the log still holds.
    let totals = store.totals().await.unwrap();
    assert_eq!((totals[0].calls, totals[0].rejections), (1, 1));
    let next = store
        .append(web, vec![call("m-10", 30)], vec![])
        .await
        .unwrap();
    assert!(next.last_seq > seqs[9], "sequence numbers are never reused");
    assert_eq!(store.totals().await.unwrap()[0].calls, 2);
}

pub async fn a_trim_stops_at_the_first_call_that_is_too_young(store: Arc<dyn Store>) {
    let web = source(&*store, "web").await;
    // A clock that stepped back: the third call is older than the second.
    let calls = vec![call("a", 0), call("b", 50), call("c", 1), call("d", 60)];
    store.append(web, calls, vec![]).await.unwrap();
    let outcome = store.trim_log(trim_request(i64::MAX, 10)).await.unwrap();
    assert_eq!(outcome.calls, 1);
    let kept: Vec<String> = all_calls(&*store)
        .await
        .into_iter()
        .map(|c| c.message_id)
        .collect();
    assert_eq!(
        kept,
        ["b", "c", "d"],
        "the log loses only a front, never a hole"
    );
}

pub async fn a_trim_in_small_chunks_goes_on_beside_appends(store: Arc<dyn Store>) {
    let web = source(&*store, "web").await;
    for page in 0..4 {
        let calls = (0..25)
            .map(|i| call(&format!("old-{page}-{i}"), page * 25 + i))
            .collect();
        store.append(web, calls, vec![]).await.unwrap();
    }
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for i in 0..50 {
                store
                    .append(web, vec![call(&format!("new-{i}"), 5000 + i)], vec![])
                    .await
                    .unwrap();
            }
        })
    };
    let mut request = trim_request(i64::MAX, 1000);
    request.chunk = 7;
    let outcome = store.trim_log(request).await.unwrap();
    writer.await.unwrap();
    // The trim may have run before the first new call: then the newest old call stayed.
    let calls = all_calls(&*store).await;
    let old_left = calls
        .iter()
        .filter(|c| c.message_id.starts_with("old-"))
        .count() as u64;
    assert_eq!(outcome.calls + old_left, 100);
    assert!(old_left <= 1, "{old_left} old calls left");
    assert_eq!(calls.len() as u64 - old_left, 50, "every new call stays");
    assert!(calls.windows(2).all(|w| w[0].seq < w[1].seq));
}

pub async fn dedupe_still_catches_repeats_inside_its_window_after_a_trim(store: Arc<dyn Store>) {
    let web = source(&*store, "web").await;
    let window = WINDOW.as_secs();
    store
        .append(
            web,
            vec![call("old", 0), call("recent", window + 1800)],
            vec![],
        )
        .await
        .unwrap();
    let now = window + 1900;
    let outcome = store
        .trim_log(TrimRequest {
            now: at(now),
            ..trim_request(i64::MAX, 0)
        })
        .await
        .unwrap();
    assert_eq!(
        outcome.calls, 0,
        "nothing in the log is older than second 0"
    );
    let again = store
        .append(web, vec![call("recent", now), call("old", now)], vec![])
        .await
        .unwrap();
    assert_eq!(
        (again.appended, again.duplicates),
        (1, 1),
        "inside the window a repeat is caught; past it the id is new again"
    );
}

#[cfg(test)]
mod sqlite {
    use super::*;
    use crate::sqlite::{SqliteOptions, SqliteStore};

    async fn make() -> Option<(Arc<dyn Store>, tempfile::TempDir)> {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(
            dir.path().join("signalbox.db"),
            SqliteOptions {
                dedupe_window: WINDOW,
                ..SqliteOptions::default()
            },
        )
        .unwrap();
        Some((Arc::new(store), dir))
    }

    crate::store_conformance!(make());
}

#[cfg(test)]
mod postgres {
    use super::*;
    use crate::postgres::testing::TestDatabase;
    use crate::postgres::{PgOptions, PgStore};

    async fn make() -> Option<(Arc<dyn Store>, TestDatabase)> {
        let db = TestDatabase::create().await?;
        let store = PgStore::connect(
            db.url(),
            PgOptions {
                dedupe_window: WINDOW,
                ..PgOptions::default()
            },
        )
        .await
        .unwrap();
        Some((Arc::new(store), db))
    }

    crate::store_conformance!(make());
}
