//! The PostgreSQL reads answer what the SQLite reads answer over the same rows: engage runs
//! on SQLite over a log of Segment calls and API writes, its tables are copied into
//! PostgreSQL, and every query and reader method is asked the same questions of both.

use std::fmt::{Debug, Display};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rusqlite::types::ValueRef;
use serde_json::{json, Map, Value};
use signalbox_core::{CallKind, FakeClock, NewCall, SourceId, StoredCall};
use signalbox_seglang::ast::{StringOperator, ValueFilter};
use signalbox_seglang::EventFilter;
use signalbox_store::postgres::testing::TestDatabase;
use signalbox_store::postgres::{connect_pool, schema as store_schema};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};
use tempfile::TempDir;
use tokio_postgres::types::{ToSql, Type};

use super::{PgDb, PgQueries};
use crate::apply::EntryFault;
use crate::db::postgres::schema::{COMPONENT, MIGRATIONS};
use crate::db::queries::SqliteQueries;
use crate::email::Email;
use crate::error::EngageResult;
use crate::feed::FeedCursor;
use crate::lists::*;
use crate::model::*;
use crate::outbox::OutboxPosition;
use crate::queries::EngageQueries;
use crate::query::HeldFilter;
use crate::reader::EngageReader;
use crate::{Engage, EngageConfig};

const POISONED: &str = "poisoned@example.com";
const KINDS: [&str; 3] = ["a", "b", "c"];

/// Engage's state written on SQLite and copied into a fresh PostgreSQL database.
struct Fixture {
    _dir: TempDir,
    _db: TestDatabase,
    engage: Engage,
    sqlite: Arc<dyn EngageQueries>,
    pg: Arc<dyn EngageQueries>,
}

/// `None` when no PostgreSQL test server is configured.
async fn fixture() -> Option<Fixture> {
    let db = TestDatabase::create().await?;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default()).unwrap(),
    );
    let (source, _) = store.create_source("web").await.unwrap();
    let mut config = EngageConfig::new(dir.path().join("engage.db"));
    config.poll_interval = Duration::from_millis(5);
    config.fault = Some(EntryFault(Arc::new(|entry: &StoredCall| {
        entry
            .payload
            .contains(POISONED)
            .then(|| "planned failure".to_owned())
    })));
    let clock = FakeClock::new("2026-03-01T00:00:00Z".parse().unwrap());
    let engage = Engage::start(Arc::clone(&store), Arc::new(clock), config)
        .await
        .unwrap();
    write(&engage, store.as_ref(), source.id).await;

    let pool = connect_pool(db.url(), 4).unwrap();
    let mut client = pool.get().await.unwrap();
    store_schema::migrate(&mut client, COMPONENT, MIGRATIONS)
        .await
        .unwrap();
    copy_tables(&dir.path().join("engage.db"), &client).await;
    drop(client);
    let sqlite: Arc<dyn EngageQueries> =
        Arc::new(SqliteQueries::new(&dir.path().join("engage.db")));
    let pg: Arc<dyn EngageQueries> = Arc::new(PgQueries::new(PgDb::new(
        pool,
        tokio::runtime::Handle::current(),
    )));
    Some(Fixture {
        _dir: dir,
        _db: db,
        engage,
        sqlite,
        pg,
    })
}

/// A Segment call as ingest normalises it, received at `at`.
fn call(kind: CallKind, message: Value, at: Timestamp) -> NewCall {
    let mut message: Map<String, Value> = serde_json::from_value(message).unwrap();
    let message_id = uuid::Uuid::new_v4().to_string();
    message.insert("type".into(), json!(kind.as_str()));
    message.insert("messageId".into(), json!(message_id));
    message
        .entry("timestamp")
        .or_insert_with(|| json!(at.to_string()));
    message.insert("receivedAt".into(), json!(at.to_string()));
    NewCall {
        kind,
        message_id,
        received_at: at,
        payload: Value::Object(message).to_string(),
    }
}

fn props(value: Value) -> Map<String, Value> {
    serde_json::from_value(value).unwrap()
}

fn by_email(email: &str) -> ProfileInput {
    ProfileInput {
        email: Some(email.to_owned()),
        ..ProfileInput::default()
    }
}

/// Profiles from Segment and the API, events of several metrics with properties and values,
/// lists with members and pending ones, consent and suppressions, a merge, a held call, a
/// quarantined entry and outbox rows.
async fn write(engage: &Engage, store: &dyn Store, source: SourceId) {
    let start: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
    let mut calls = Vec::new();
    for n in 0..4i64 {
        let at = start + SignedDuration::from_hours(n * 5);
        calls.push(call(
            CallKind::Identify,
            json!({"userId": format!("u{n}"), "traits": {
                "email": format!("seg{n}@example.com"), "firstName": format!("S{n}"),
                "plan": if n % 2 == 0 { "pro" } else { "free" }, "phone": "+14155550100"}}),
            at,
        ));
        for k in 0..3i64 {
            calls.push(call(
                CallKind::Track,
                json!({"userId": format!("u{n}"), "event": if k == 2 { "Viewed Page" } else { "Ordered Product" },
                    "timestamp": (at + SignedDuration::from_hours(k * 7)).to_string(),
                    "properties": {"revenue": 10 * n + k, "color": if k == 0 { json!("red") } else { json!(k) },
                        "plan": if n % 2 == 0 { "pro" } else { "free" }, "sku": "quote\"d"}}),
                at,
            ));
        }
    }
    let later = start + SignedDuration::from_hours(30);
    calls.push(call(
        CallKind::Track,
        json!({"userId": "ghost", "event": "Viewed Page"}),
        later,
    ));
    calls.push(call(
        CallKind::Identify,
        json!({"userId": "bad", "traits": {"email": POISONED}}),
        later,
    ));
    store.append(source, calls, Vec::new()).await.unwrap();
    engage.notify();

    let mut api = Vec::new();
    for (n, email) in ["ada@example.com", "bob@example.com", "cy@example.com"]
        .into_iter()
        .enumerate()
    {
        let profile = engage
            .create_profile(ProfileInput {
                properties: props(json!({"tier": n, "nested": {"a": [1, 2]}})),
                external_id: Some(format!("crm-{n}")),
                first_name: Some(format!("Api{n}")),
                ..by_email(email)
            })
            .await
            .unwrap();
        api.push(profile);
    }
    engage
        .create_events(
            (0..6)
                .map(|n| ApiEventInput {
                    metric_name: if n % 2 == 0 { "Signed Up" } else { "Opened" }.to_owned(),
                    profile: by_email(["ada@example.com", "bob@example.com"][n % 2]),
                    properties: props(json!({"n": n, "kind": KINDS[n % 3]})),
                    time: Some(start + SignedDuration::from_mins(n as i64 * 90)),
                    value: (n != 3).then_some(n as f64 * 1.5),
                    value_currency: (n == 1).then(|| "EUR".to_owned()),
                    ..ApiEventInput::default()
                })
                .collect(),
        )
        .await
        .unwrap();
    let news = engage
        .create_list("News", OptInProcess::SingleOptIn)
        .await
        .unwrap();
    let digest = engage
        .create_list("Digest", OptInProcess::DoubleOptIn)
        .await
        .unwrap();
    engage
        .add_list_members(&news.id, &[api[0].id.clone(), api[1].id.clone()])
        .await
        .unwrap();
    engage
        .subscribe(SubscribeRequest {
            list_id: Some(digest.id.clone()),
            emails: vec![
                Email::parse("cy@example.com").unwrap(),
                Email::parse("seg1@example.com").unwrap(),
            ],
            ..SubscribeRequest::default()
        })
        .await
        .unwrap();
    engage
        .subscribe(SubscribeRequest {
            list_id: Some(news.id.clone()),
            emails: vec![Email::parse("seg0@example.com").unwrap()],
            historical_import: true,
            ..SubscribeRequest::default()
        })
        .await
        .unwrap();
    engage.unsubscribe_profile(&api[1].id).await.unwrap();
    engage
        .suppress(
            SuppressTarget::Emails(vec![Email::parse("seg2@example.com").unwrap()]),
            SuppressionReason::HardBounce,
        )
        .await
        .unwrap();
    engage.catch_up(Duration::from_secs(20)).await.unwrap();
    let seg3 = engage
        .list_profiles(ProfileQuery {
            any_of: vec![(ProfileField::Email, vec!["seg3@example.com".into()])],
            ..ProfileQuery::default()
        })
        .await
        .unwrap()
        .items
        .remove(0);
    engage.merge_profiles(&api[2].id, &[seg3.id]).await.unwrap();
    engage.catch_up(Duration::from_secs(20)).await.unwrap();
}

/// Copies every table of the SQLite file into the PostgreSQL tables of the same names.
async fn copy_tables(path: &Path, client: &deadpool_postgres::Object) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tables.len(), 18, "{tables:?}");
    for table in tables {
        let columns: Vec<String> = conn
            .prepare(&format!("PRAGMA table_info({table})"))
            .unwrap()
            .query_map([], |r| r.get(1))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let marks: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
        let insert = client
            .prepare(&format!(
                "INSERT INTO {table} ({}) VALUES ({})",
                columns.join(", "),
                marks.join(", ")
            ))
            .await
            .unwrap();
        let types = insert.params().to_vec();
        let rows: Vec<Vec<Box<dyn ToSql + Sync + Send>>> = {
            let mut stmt = conn
                .prepare(&format!("SELECT {} FROM {table}", columns.join(", ")))
                .unwrap();
            let mut rows = stmt.query([]).unwrap();
            let mut out = Vec::new();
            while let Some(row) = rows.next().unwrap() {
                out.push(
                    (0..columns.len())
                        .map(|i| pg_value(row.get_ref(i).unwrap(), &types[i]))
                        .collect(),
                );
            }
            out
        };
        for row in &rows {
            let params: Vec<&(dyn ToSql + Sync)> = row
                .iter()
                .map(|v| v.as_ref() as &(dyn ToSql + Sync))
                .collect();
            client.execute(&insert, &params).await.unwrap();
        }
    }
}

/// A SQLite value as a parameter of the PostgreSQL column's type.
fn pg_value(value: ValueRef<'_>, ty: &Type) -> Box<dyn ToSql + Sync + Send> {
    match (value, ty) {
        (ValueRef::Null, t) if *t == Type::INT8 => Box::new(None::<i64>),
        (ValueRef::Null, t) if *t == Type::FLOAT8 => Box::new(None::<f64>),
        (ValueRef::Null, t) if *t == Type::BYTEA => Box::new(None::<Vec<u8>>),
        (ValueRef::Null, _) => Box::new(None::<String>),
        (ValueRef::Integer(v), t) if *t == Type::FLOAT8 => Box::new(v as f64),
        (ValueRef::Integer(v), _) => Box::new(v),
        (ValueRef::Real(v), _) => Box::new(v),
        (ValueRef::Text(t), _) => Box::new(String::from_utf8(t.to_vec()).unwrap()),
        (ValueRef::Blob(b), _) => Box::new(b.to_vec()),
    }
}

/// Both backends, asked the same.
struct Both<'a> {
    sqlite: &'a dyn EngageQueries,
    pg: &'a dyn EngageQueries,
}

impl Both<'_> {
    /// `f` of both, which must agree; SQLite's answer.
    fn same<T: PartialEq + Debug>(
        &self,
        what: impl Display,
        f: impl Fn(&dyn EngageQueries) -> EngageResult<T>,
    ) -> EngageResult<T> {
        let (sqlite, pg) = (f(self.sqlite), f(self.pg));
        assert_eq!(sqlite, pg, "{what}");
        sqlite
    }

    /// Every page of a listing, each page the same on both.
    fn pages<T: PartialEq + Debug>(
        &self,
        what: impl Display,
        f: impl Fn(&dyn EngageQueries, Option<String>) -> EngageResult<Page<T>>,
    ) -> Vec<T> {
        let mut items = Vec::new();
        let mut cursor = None;
        for _ in 0..1000 {
            let page = self
                .same(format!("{what} after {cursor:?}"), |q| f(q, cursor.clone()))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            items.extend(page.items);
            cursor = page.next_cursor;
            if cursor.is_none() {
                return items;
            }
        }
        panic!("{what}: the pages do not end");
    }
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn bound(cmp: Cmp, s: &str) -> TimeBound {
    TimeBound { cmp, at: at(s) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_answer_as_on_sqlite() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let (sqlite, pg) = (Arc::clone(&fixture.sqlite), Arc::clone(&fixture.pg));
    tokio::task::spawn_blocking(move || {
        compare_queries(&Both {
            sqlite: sqlite.as_ref(),
            pg: pg.as_ref(),
        })
    })
    .await
    .unwrap();
    drop(fixture.engage);
}

fn compare_queries(both: &Both<'_>) {
    let applied = both.same("applied_seq", |q| q.applied_seq()).unwrap();
    assert!(applied > 0);
    for seq in 0..=applied + 1 {
        both.same(format_args!("api_result {seq}"), |q| q.api_result(seq))
            .unwrap();
    }

    // Profiles: every sort, a page at a time, and each filter.
    let everyone = both.pages("profiles", |q, cursor| {
        q.list_profiles(&ProfileQuery {
            page_size: 1000,
            cursor,
            ..ProfileQuery::default()
        })
    });
    assert!(everyone.len() >= 6, "{everyone:?}");
    for field in [
        ProfileSortField::Id,
        ProfileSortField::Created,
        ProfileSortField::Updated,
    ] {
        for descending in [false, true] {
            let sorted = both.pages(format_args!("profiles by {field:?}"), |q, cursor| {
                q.list_profiles(&ProfileQuery {
                    sort: ProfileSort { field, descending },
                    page_size: 2,
                    cursor,
                    ..ProfileQuery::default()
                })
            });
            assert_eq!(sorted.len(), everyone.len());
        }
    }
    let ada = everyone
        .iter()
        .find(|p| p.email.as_deref() == Some("ada@example.com"))
        .unwrap();
    let filters = [
        vec![(ProfileField::Id, vec![ada.id.0.clone(), "nope".into()])],
        vec![(
            ProfileField::Email,
            vec!["ADA@example.com".into(), "seg2@example.com".into()],
        )],
        vec![(ProfileField::PhoneNumber, vec!["+14155550100".into()])],
        vec![(ProfileField::ExternalId, vec!["crm-1".into(), "u2".into()])],
        vec![(ProfileField::Id, vec![])],
        vec![(ProfileField::Id, vec!["nope".into()])],
    ];
    for any_of in filters {
        both.same(format_args!("profiles with {any_of:?}"), |q| {
            q.list_profiles(&ProfileQuery {
                any_of: any_of.clone(),
                ..ProfileQuery::default()
            })
        })
        .unwrap();
    }
    let queries = [
        ProfileQuery {
            created: vec![bound(Cmp::Ge, "2026-03-01T00:00:00.004Z")],
            updated: vec![bound(Cmp::Lt, "2027-01-01T00:00:00Z")],
            ..ProfileQuery::default()
        },
        ProfileQuery {
            suppression_reasons: vec![SuppressionReason::HardBounce],
            ..ProfileQuery::default()
        },
        ProfileQuery {
            suppression_reasons: vec![SuppressionReason::Unsubscribe],
            suppressed_at: vec![bound(Cmp::Gt, "2020-01-01T00:00:00Z")],
            ..ProfileQuery::default()
        },
        ProfileQuery {
            suppressed_at: vec![bound(Cmp::Lt, "2020-01-01T00:00:00Z")],
            ..ProfileQuery::default()
        },
        ProfileQuery {
            list_suppressed: true,
            ..ProfileQuery::default()
        },
        ProfileQuery {
            cursor: Some("not a cursor".into()),
            ..ProfileQuery::default()
        },
    ];
    let mut suppressed = 0;
    for query in &queries {
        if let Ok(page) = both.same(format_args!("{query:?}"), |q| q.list_profiles(query)) {
            suppressed += page.items.len();
        }
    }
    assert!(suppressed > 0);
    for profile in &everyone {
        both.same(format_args!("profile {}", profile.id), |q| {
            q.get_profile(&profile.id)
        })
        .unwrap();
        both.same(format_args!("history of {}", profile.id), |q| {
            q.profile_history(&profile.id)
        })
        .unwrap();
        both.same(format_args!("consent of {}", profile.id), |q| {
            q.email_consent(&profile.id)
        })
        .unwrap();
        for limit in [0, 1, 10] {
            both.same(format_args!("lists of {}", profile.id), |q| {
                q.lists_of_profile(&profile.id, limit)
            })
            .unwrap();
        }
    }
    let unknown = ProfileId("01NOSUCHPROFILE00000000000".into());
    both.same("unknown profile", |q| q.get_profile(&unknown))
        .unwrap_err();
    both.same("unknown profile's history", |q| q.profile_history(&unknown))
        .unwrap_err();
    both.same("unknown profile's consent", |q| q.email_consent(&unknown))
        .unwrap_err();

    // Metrics and events.
    let metrics = both.pages("metrics", |q, cursor| {
        q.list_metrics(&MetricQuery {
            page_size: 1,
            cursor,
            ..MetricQuery::default()
        })
    });
    assert!(metrics.len() >= 4, "{metrics:?}");
    for (name, category) in [(Some("API"), None), (None, Some("API")), (Some("x"), None)] {
        both.same(format_args!("metrics of {name:?} {category:?}"), |q| {
            q.list_metrics(&MetricQuery {
                integration_name: name.map(str::to_owned),
                integration_category: category.map(str::to_owned),
                ..MetricQuery::default()
            })
        })
        .unwrap();
    }
    both.same("unknown metric", |q| {
        q.get_metric(&MetricId("NOSUCH".into()))
    })
    .unwrap_err();
    let events = both.pages("events", |q, cursor| {
        q.list_events(&EventQuery {
            page_size: 3,
            cursor,
            ..EventQuery::default()
        })
    });
    assert!(events.len() >= 18, "{}", events.len());
    for event in &events {
        both.same(format_args!("event {}", event.id), |q| {
            q.get_event(&event.id)
        })
        .unwrap();
    }
    both.same("unknown event", |q| q.get_event(&EventId("nope".into())))
        .unwrap_err();
    for metric in &metrics {
        both.same(format_args!("metric {}", metric.id), |q| {
            q.get_metric(&metric.id)
        })
        .unwrap();
        for newest_first in [false, true] {
            both.pages(format_args!("events of {}", metric.id), |q, cursor| {
                q.list_events(&EventQuery {
                    metric_id: Some(metric.id.clone()),
                    time: vec![bound(Cmp::Ge, "2026-03-01T01:00:00Z")],
                    newest_first,
                    page_size: 2,
                    cursor,
                    ..EventQuery::default()
                })
            });
        }
        compare_aggregates(both, metric);
    }
    for profile in &everyone {
        both.pages(format_args!("events of {}", profile.id), |q, cursor| {
            q.list_events(&EventQuery {
                profile_id: Some(profile.id.clone()),
                newest_first: true,
                page_size: 2,
                cursor,
                ..EventQuery::default()
            })
        });
    }

    // Lists and members.
    let lists = both.pages("lists", |q, cursor| {
        q.list_lists(&ListQuery {
            page_size: 1,
            cursor,
            ..ListQuery::default()
        })
    });
    assert_eq!(lists.len(), 2);
    both.same("lists by name", |q| {
        q.list_lists(&ListQuery {
            names: vec!["News".into(), "Nope".into()],
            ..ListQuery::default()
        })
    })
    .unwrap();
    both.same("unknown list", |q| q.get_list(&ListId("nope".into())))
        .unwrap_err();
    let mut members = 0;
    for list in &lists {
        both.same(format_args!("list {}", list.id), |q| q.get_list(&list.id))
            .unwrap();
        both.same(format_args!("list {} by id", list.id), |q| {
            q.list_lists(&ListQuery {
                ids: vec![list.id.clone()],
                ..ListQuery::default()
            })
        })
        .unwrap();
        for status in [None, Some(MemberStatus::Pending)] {
            for newest_first in [false, true] {
                members += both
                    .pages(format_args!("members of {}", list.id), |q, cursor| {
                        q.list_members(&MemberQuery {
                            list_id: list.id.clone(),
                            status,
                            newest_first,
                            page_size: 1,
                            cursor,
                            ..MemberQuery::default()
                        })
                    })
                    .len();
            }
        }
        both.same(format_args!("members of {} by email", list.id), |q| {
            q.list_members(&MemberQuery {
                list_id: list.id.clone(),
                emails: vec!["Ada@Example.com".into()],
                joined: vec![bound(Cmp::Gt, "2000-01-01T00:00:00Z")],
                ..MemberQuery::default()
            })
        })
        .unwrap();
        for profile in &everyone {
            both.same(format_args!("{} on {}", profile.id, list.id), |q| {
                q.member_status(&list.id, &profile.id)
            })
            .unwrap();
        }
    }
    assert!(members >= 8, "{members}");

    // The pipeline's own state and the outbox.
    let mut held = 0;
    for filter in [
        HeldFilter::Held,
        HeldFilter::Expired,
        HeldFilter::Released,
        HeldFilter::All,
    ] {
        held += both
            .same(format_args!("held {filter:?}"), |q| {
                q.held_calls(filter, 0, 100)
            })
            .unwrap()
            .len();
        both.same(format_args!("held {filter:?} after"), |q| {
            q.held_calls(filter, 1, 0)
        })
        .unwrap();
    }
    assert!(held > 0);
    let quarantined = both.same("quarantined", |q| q.quarantined(0, 100)).unwrap();
    assert_eq!(quarantined.len(), 1);
    both.same("counters", |q| q.counters()).unwrap();
    both.same("dump", |q| q.dump()).unwrap();
    let head = both.same("outbox head", |q| q.outbox_head()).unwrap();
    assert!(head > (0, 0));
    let mut after: OutboxPosition = (0, 0);
    let mut outbox = Vec::new();
    loop {
        let page = both
            .same(format_args!("outbox after {after:?}"), |q| {
                q.outbox_after(after, 3)
            })
            .unwrap();
        let Some(last) = page.last() else { break };
        after = (last.seq, last.n);
        outbox.extend(page);
    }
    assert!(outbox.len() > 3);
    for entry in &outbox {
        for since in [entry.at, entry.at + SignedDuration::from_micros(1)] {
            both.same(format_args!("outbox before {since}"), |q| {
                q.outbox_position_before(since)
            })
            .unwrap();
        }
    }
    both.same("outbox before the start", |q| {
        q.outbox_position_before(Timestamp::UNIX_EPOCH)
    })
    .unwrap();
}

/// Aggregates of one metric: totals, splits, filters, distinct profiles, in a few intervals
/// and zones, and refusals.
fn compare_aggregates(both: &Both<'_>, metric: &Metric) {
    let base = AggregateQuery {
        metric_id: metric.id.clone(),
        measurements: Vec::new(),
        interval: Interval::Day,
        start: at("2026-02-27T00:00:00Z"),
        end: at("2026-03-04T00:00:00Z"),
        timezone: String::new(),
        by: Vec::new(),
        property_equals: Vec::new(),
    };
    let all = vec![
        Measurement::Count,
        Measurement::Unique,
        Measurement::SumValue,
    ];
    let queries = [
        base.clone(),
        AggregateQuery {
            measurements: vec![Measurement::SumValue, Measurement::Count],
            interval: Interval::Hour,
            timezone: "Asia/Kolkata".into(),
            ..base.clone()
        },
        AggregateQuery {
            measurements: all.clone(),
            interval: Interval::Week,
            ..base.clone()
        },
        AggregateQuery {
            measurements: all.clone(),
            by: vec!["color".into(), "plan".into()],
            timezone: "America/New_York".into(),
            ..base.clone()
        },
        AggregateQuery {
            measurements: vec![Measurement::Count],
            by: vec!["kind".into()],
            property_equals: vec![("n".into(), json!(2.0))],
            interval: Interval::Month,
            ..base.clone()
        },
        AggregateQuery {
            property_equals: vec![
                ("plan".into(), json!("pro")),
                ("missing".into(), Value::Null),
            ],
            ..base.clone()
        },
        AggregateQuery {
            by: vec!["sku\"".into()],
            ..base.clone()
        },
        AggregateQuery {
            end: base.start,
            ..base.clone()
        },
        AggregateQuery {
            timezone: "Nowhere/Never".into(),
            ..base.clone()
        },
        AggregateQuery {
            metric_id: MetricId("NOSUCH".into()),
            ..base.clone()
        },
    ];
    for query in &queries {
        let _ = both.same(format_args!("{query:?}"), |q| q.aggregate(query));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_answers_as_on_sqlite() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let sqlite = fixture.sqlite.reader().unwrap();
    let pg = fixture.pg.reader().unwrap();
    let applied = fixture.sqlite.applied_seq().unwrap();
    let metrics: Vec<String> = fixture
        .engage
        .list_metrics(MetricQuery::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|m| m.id.0)
        .collect();
    tokio::task::spawn_blocking(move || {
        compare_readers(sqlite.as_ref(), pg.as_ref(), applied, &metrics)
    })
    .await
    .unwrap();
}

fn same<T: PartialEq + Debug>(
    what: impl Display,
    sqlite: &dyn EngageReader,
    pg: &dyn EngageReader,
    f: impl Fn(&dyn EngageReader) -> EngageResult<T>,
) -> T {
    let (a, b) = (f(sqlite), f(pg));
    assert_eq!(a, b, "{what}");
    a.unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn compare_readers(
    sqlite: &dyn EngageReader,
    pg: &dyn EngageReader,
    applied: i64,
    metrics: &[String],
) {
    // The feed, read to the end at every checkpoint and page size.
    for upto in [0, 1, applied / 2, applied] {
        for limit in [1, 2, 1000] {
            let mut cursor = FeedCursor::default();
            let mut rows = 0;
            for _ in 0..10_000 {
                let page = same(
                    format_args!("changes after {cursor:?} up to {upto} by {limit}"),
                    sqlite,
                    pg,
                    |r| r.changes(&cursor, upto, limit),
                );
                rows += page.events.len() + page.profiles.len() + page.lists.len();
                cursor = page.cursor;
                if !page.more {
                    break;
                }
            }
            assert!(upto < applied || rows > 20, "{rows}");
            same(
                format_args!("list changes up to {upto} by {limit}"),
                sqlite,
                pg,
                |r| r.list_changes(0, upto, limit),
            );
        }
    }
    let end = same("end cursor", sqlite, pg, |r| r.end_cursor());
    assert!(end.merge_seq > 0 && end.list_change_pk > 0, "{end:?}");

    // Profiles.
    let count = same("profile count", sqlite, pg, |r| r.profile_count());
    let keys = same("profile keys", sqlite, pg, |r| {
        r.profile_keys(ProfileKey(0), 1000)
    });
    assert_eq!(keys.len() as u64, count);
    for limit in [0, 1, 3] {
        same("some profile keys", sqlite, pg, |r| {
            r.profile_keys(keys[1], limit)
        });
    }
    for key in keys
        .iter()
        .copied()
        .chain([ProfileKey(1), ProfileKey(i64::MAX)])
    {
        let id = same(format_args!("id of {key:?}"), sqlite, pg, |r| {
            r.profile_id(key)
        });
        if let Some(id) = id {
            same(format_args!("key of {id}"), sqlite, pg, |r| {
                r.profile_key(&id)
            });
        }
        for with_last_event in [false, true] {
            same(format_args!("record of {key:?}"), sqlite, pg, |r| {
                r.profile_record(key, with_last_event)
            });
        }
        for metric in metrics {
            for filters in filters() {
                let sorted = |r: &dyn EngageReader| {
                    let mut events = r.profile_metric_events(key, metric, &filters)?.events;
                    events.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
                    Ok(events)
                };
                same(
                    format_args!("events of {key:?} in {metric}"),
                    sqlite,
                    pg,
                    sorted,
                );
            }
        }
    }
    for limit in [1, 2, 1000] {
        let mut after = ProfileKey(0);
        loop {
            let records = same(
                format_args!("records after {after:?} by {limit}"),
                sqlite,
                pg,
                |r| r.profile_records(after, limit, limit != 2),
            );
            let Some(last) = records.last() else { break };
            after = last.pk;
        }
    }

    // Metric events, per profile.
    let mut seen = 0;
    for metric in metrics.iter().map(String::as_str).chain(["NOSUCH"]) {
        for filters in filters() {
            let events = same(format_args!("events of {metric}"), sqlite, pg, |r| {
                let mut events = r.metric_events(metric, &filters)?;
                for list in events.values_mut() {
                    list.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
                }
                Ok(events)
            });
            seen += events.values().map(Vec::len).sum::<usize>();
        }
    }
    assert!(seen > 18, "{seen}");
}

/// No filter, and one on a string property.
fn filters() -> [Vec<EventFilter>; 2] {
    [
        Vec::new(),
        vec![EventFilter {
            property: "plan".into(),
            filter: ValueFilter::String {
                operator: StringOperator::Equals,
                value: "pro".into(),
            },
        }],
    ]
}
