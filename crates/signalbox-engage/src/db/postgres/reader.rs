//! [`EngageReader`] over the PostgreSQL tables (as `db/reader.rs`, `db/feed.rs` and
//! `db/facts.rs`): a pooled connection per call.
//!
//! The change feed's parts are read in one `REPEATABLE READ` read-only transaction, so the
//! events, profiles, list changes and merges of a page are of one committed state.

use deadpool_postgres::{GenericClient, Object, Transaction};
use signalbox_seglang::EventFilter;
use tokio_postgres::{IsolationLevel, Row};

use super::queries::lists::{consent_row, CONSENT_COLUMNS};
use super::queries::{limit_of, pg, row_one, row_opt, rows, PgDb};
use crate::error::EngageResult;
use crate::facts::{
    push_matching, EventsByProfile, ProfileEvents, ProfileRecord, RawProfile, RecordBatch,
};
use crate::feed::{
    self, feed_event_id, Changes, FeedCursor, FeedEvent, FeedParts, ListChange, Merge,
};
use crate::model::{MetricId, ProfileId, ProfileKey};
use crate::reader::EngageReader;

pub(crate) struct PgReader {
    db: PgDb,
}

impl PgReader {
    pub(crate) fn new(db: PgDb) -> PgReader {
        PgReader { db }
    }
}

/// The feed's parts inside one transaction.
struct Parts<'a> {
    db: &'a PgDb,
    tx: &'a Transaction<'a>,
}

const LIST_CHANGES: &str = "SELECT pk, seq, list_id, profile_pk, change, at_us FROM list_changes
     WHERE pk > $1 AND seq <= $2 ORDER BY pk LIMIT $3";

fn list_change(r: &Row) -> ListChange {
    ListChange {
        pk: r.get(0),
        seq: r.get(1),
        list_id: r.get(2),
        profile_pk: ProfileKey(r.get(3)),
        change: r.get(4),
        at_us: r.get(5),
    }
}

impl FeedParts for Parts<'_> {
    fn events(
        &mut self,
        after_pk: i64,
        before_pk: i64,
        limit: i64,
    ) -> EngageResult<Vec<FeedEvent>> {
        let rows = self.db.wait(rows(
            self.tx,
            "SELECT e.pk, e.profile_pk, e.metric_pk, m.id, m.name, m.integration, e.time_us,
                    e.value, e.properties
             FROM events e JOIN metrics m ON m.pk = e.metric_pk
             WHERE e.pk > $1 AND e.pk < $2 ORDER BY e.pk LIMIT $3",
            &[&after_pk, &before_pk, &limit],
        ))?;
        Ok(rows
            .iter()
            .map(|r| {
                let (pk, time_us) = (r.get(0), r.get(6));
                FeedEvent {
                    pk,
                    id: feed_event_id(time_us, pk),
                    profile_pk: ProfileKey(r.get(1)),
                    metric_pk: r.get(2),
                    metric_id: MetricId(r.get(3)),
                    metric_name: r.get(4),
                    integration: r.get(5),
                    time_us,
                    value: r.get(7),
                    properties: r.get(8),
                }
            })
            .collect())
    }

    fn changed_profiles(
        &mut self,
        after_seq: i64,
        upto_seq: i64,
        limit: i64,
    ) -> EngageResult<Vec<(i64, i64)>> {
        let rows = self.db.wait(rows(
            self.tx,
            "SELECT pk, changed_seq FROM profiles
             WHERE changed_seq > $1 AND changed_seq <= $2 ORDER BY changed_seq LIMIT $3",
            &[&after_seq, &upto_seq, &limit],
        ))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn profiles_changed_at(&mut self, seq: i64) -> EngageResult<Vec<ProfileKey>> {
        let rows = self.db.wait(rows(
            self.tx,
            "SELECT pk FROM profiles WHERE changed_seq = $1 ORDER BY pk",
            &[&seq],
        ))?;
        Ok(rows.iter().map(|r| ProfileKey(r.get(0))).collect())
    }

    fn list_changes(
        &mut self,
        after_pk: i64,
        upto_seq: i64,
        limit: i64,
    ) -> EngageResult<Vec<ListChange>> {
        let rows = self
            .db
            .wait(rows(self.tx, LIST_CHANGES, &[&after_pk, &upto_seq, &limit]))?;
        Ok(rows.iter().map(list_change).collect())
    }

    fn merges(&mut self, after_seq: i64, upto_seq: i64) -> EngageResult<Vec<Merge>> {
        let rows = self.db.wait(rows(
            self.tx,
            "SELECT from_pk, to_pk, seq FROM redirects
             WHERE seq > $1 AND seq <= $2 ORDER BY seq",
            &[&after_seq, &upto_seq],
        ))?;
        Ok(rows
            .iter()
            .map(|r| Merge {
                from_pk: ProfileKey(r.get(0)),
                to_pk: ProfileKey(r.get(1)),
                seq: r.get(2),
            })
            .collect())
    }
}

/// A read-only transaction whose reads all see the state committed when its first began.
fn snapshot<'c>(db: &PgDb, client: &'c mut Object) -> EngageResult<Transaction<'c>> {
    db.wait(
        client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start(),
    )
    .map_err(pg)
}

/// How the profile columns are selected (the last event time only when asked: it costs a
/// look at the profile's events).
fn profile_select(with_last_event: bool) -> String {
    let last = if with_last_event {
        "(SELECT MAX(time_us) FROM events WHERE events.profile_pk = profiles.pk)"
    } else {
        "NULL::BIGINT"
    };
    format!(
        "SELECT pk, id, email, phone_number, external_id, created_us, updated_us, {last}, data
         FROM profiles"
    )
}

fn raw_profile(r: &Row) -> RawProfile {
    (
        r.get(0),
        r.get(1),
        r.get(2),
        r.get(3),
        r.get(4),
        r.get(5),
        r.get(6),
        r.get(7),
        r.get(8),
    )
}

async fn profile_record(
    c: &impl GenericClient,
    pk: ProfileKey,
    with_last_event: bool,
) -> EngageResult<Option<ProfileRecord>> {
    let sql = format!("{} WHERE pk = $1", profile_select(with_last_event));
    let Some(raw) = row_opt(c, &sql, &[&pk.0]).await? else {
        return Ok(None);
    };
    let mut record = ProfileRecord::from_raw(raw_profile(&raw));
    let lists = rows(
        c,
        "SELECT list_id, joined_us FROM list_members WHERE profile_pk = $1 AND status = 'member'",
        &[&pk.0],
    )
    .await?;
    for r in lists {
        record.lists.insert(r.get(0), r.get(1));
    }
    let consent = row_opt(
        c,
        &format!("SELECT {CONSENT_COLUMNS} FROM email_consent WHERE profile_pk = $1"),
        &[&pk.0],
    )
    .await?;
    if let Some(r) = consent {
        record.consent = consent_row(&r, 0).view();
    }
    Ok(Some(record))
}

/// Profiles with keys after `after`, in key order, at most `limit`: three queries whatever
/// the count.
async fn profile_records(
    c: &impl GenericClient,
    after: ProfileKey,
    limit: usize,
    with_last_event: bool,
) -> EngageResult<Vec<ProfileRecord>> {
    let sql = format!(
        "{} WHERE pk > $1 ORDER BY pk LIMIT $2",
        profile_select(with_last_event)
    );
    let records = rows(c, &sql, &[&after.0, &limit_of(limit)])
        .await?
        .iter()
        .map(|r| ProfileRecord::from_raw(raw_profile(r)))
        .collect();
    let mut batch = RecordBatch::new(records);
    let Some((lo, hi)) = batch.key_range() else {
        return Ok(batch.into_records());
    };
    let lists = rows(
        c,
        "SELECT profile_pk, list_id, joined_us FROM list_members
         WHERE status = 'member' AND profile_pk BETWEEN $1 AND $2",
        &[&lo, &hi],
    )
    .await?;
    for r in lists {
        batch.add_list(r.get(0), r.get(1), r.get(2));
    }
    let consents = rows(
        c,
        &format!(
            "SELECT profile_pk, {CONSENT_COLUMNS} FROM email_consent
             WHERE profile_pk BETWEEN $1 AND $2"
        ),
        &[&lo, &hi],
    )
    .await?;
    for r in consents {
        batch.set_consent(r.get(0), consent_row(&r, 1).view());
    }
    Ok(batch.into_records())
}

async fn metric_pk(c: &impl GenericClient, metric_id: &str) -> EngageResult<Option<i64>> {
    let row = row_opt(c, "SELECT pk FROM metrics WHERE id = $1", &[&metric_id]).await?;
    Ok(row.map(|r| r.get(0)))
}

/// Every event of one metric that passes `filters`, grouped by profile (properties are read
/// only when there are filters).
async fn metric_events(
    c: &impl GenericClient,
    metric_id: &str,
    filters: &[EventFilter],
) -> EngageResult<EventsByProfile> {
    let mut out = EventsByProfile::new();
    let Some(metric) = metric_pk(c, metric_id).await? else {
        return Ok(out);
    };
    let properties = if filters.is_empty() {
        "NULL::TEXT"
    } else {
        "properties"
    };
    let sql =
        format!("SELECT profile_pk, time_us, value, {properties} FROM events WHERE metric_pk = $1");
    for r in rows(c, &sql, &[&metric]).await? {
        let properties: Option<&str> = r.get(3);
        let mut matched = Vec::new();
        push_matching(&mut matched, filters, properties, r.get(1), r.get(2));
        if !matched.is_empty() {
            out.entry(ProfileKey(r.get(0)))
                .or_default()
                .append(&mut matched);
        }
    }
    Ok(out)
}

/// Every event of one metric and profile that passes `filters`, and the largest key among
/// all of them.
async fn profile_metric_events(
    c: &impl GenericClient,
    key: ProfileKey,
    metric_id: &str,
    filters: &[EventFilter],
) -> EngageResult<ProfileEvents> {
    let Some(metric) = metric_pk(c, metric_id).await? else {
        return Ok(ProfileEvents::default());
    };
    let properties = if filters.is_empty() {
        "NULL::TEXT"
    } else {
        "properties"
    };
    let sql = format!(
        "SELECT time_us, value, {properties}, pk FROM events
         WHERE profile_pk = $1 AND metric_pk = $2"
    );
    let mut out = ProfileEvents::default();
    for r in rows(c, &sql, &[&key.0, &metric]).await? {
        out.last_pk = out.last_pk.max(r.get(3));
        push_matching(&mut out.events, filters, r.get(2), r.get(0), r.get(1));
    }
    Ok(out)
}

impl EngageReader for PgReader {
    fn changes(&self, after: &FeedCursor, upto_seq: i64, limit: usize) -> EngageResult<Changes> {
        let mut client = self.db.connection()?;
        let tx = snapshot(&self.db, &mut client)?;
        let changes = feed::read_changes(
            &mut Parts {
                db: &self.db,
                tx: &tx,
            },
            after,
            upto_seq,
            limit,
        )?;
        self.db.wait(tx.commit()).map_err(pg)?;
        Ok(changes)
    }

    fn list_changes(
        &self,
        after_pk: i64,
        upto_seq: i64,
        limit: usize,
    ) -> EngageResult<Vec<ListChange>> {
        self.db.run(|c| async move {
            let rows = rows(
                &c,
                LIST_CHANGES,
                &[&after_pk, &upto_seq, &limit_of(limit.max(1))],
            )
            .await?;
            Ok(rows.iter().map(list_change).collect())
        })
    }

    fn end_cursor(&self) -> EngageResult<FeedCursor> {
        self.db.run(|c| async move {
            let r = row_one(
                &c,
                "SELECT (SELECT MAX(pk) FROM events), (SELECT MAX(changed_seq) FROM profiles),
                        (SELECT MAX(pk) FROM list_changes), (SELECT MAX(seq) FROM redirects)",
                &[],
            )
            .await?;
            let max = |i: usize| r.get::<_, Option<i64>>(i).unwrap_or(0);
            Ok(FeedCursor {
                event_pk: max(0),
                profile_seq: max(1),
                list_change_pk: max(2),
                merge_seq: max(3),
            })
        })
    }

    fn profile_id(&self, key: ProfileKey) -> EngageResult<Option<ProfileId>> {
        self.db.run(|c| async move {
            let row = row_opt(&c, "SELECT id FROM profiles WHERE pk = $1", &[&key.0]).await?;
            Ok(row.map(|r| ProfileId(r.get(0))))
        })
    }

    fn profile_key(&self, id: &ProfileId) -> EngageResult<Option<ProfileKey>> {
        self.db.run(|c| async move {
            let row = row_opt(&c, "SELECT pk FROM profiles WHERE id = $1", &[&id.0]).await?;
            Ok(row.map(|r| ProfileKey(r.get(0))))
        })
    }

    fn profile_count(&self) -> EngageResult<u64> {
        self.db.run(|c| async move {
            let n: i64 = row_one(&c, "SELECT COUNT(*) FROM profiles", &[])
                .await?
                .get(0);
            Ok(n.max(0) as u64)
        })
    }

    fn profile_keys(&self, after: ProfileKey, limit: usize) -> EngageResult<Vec<ProfileKey>> {
        self.db.run(|c| async move {
            let rows = rows(
                &c,
                "SELECT pk FROM profiles WHERE pk > $1 ORDER BY pk LIMIT $2",
                &[&after.0, &limit_of(limit)],
            )
            .await?;
            Ok(rows.iter().map(|r| ProfileKey(r.get(0))).collect())
        })
    }

    fn profile_record(
        &self,
        key: ProfileKey,
        with_last_event: bool,
    ) -> EngageResult<Option<ProfileRecord>> {
        self.db
            .run(|c| async move { profile_record(&c, key, with_last_event).await })
    }

    fn profile_records(
        &self,
        after: ProfileKey,
        limit: usize,
        with_last_event: bool,
    ) -> EngageResult<Vec<ProfileRecord>> {
        self.db
            .run(|c| async move { profile_records(&c, after, limit, with_last_event).await })
    }

    fn metric_events(
        &self,
        metric_id: &str,
        filters: &[EventFilter],
    ) -> EngageResult<EventsByProfile> {
        self.db
            .run(|c| async move { metric_events(&c, metric_id, filters).await })
    }

    fn profile_metric_events(
        &self,
        key: ProfileKey,
        metric_id: &str,
        filters: &[EventFilter],
    ) -> EngageResult<ProfileEvents> {
        self.db
            .run(|c| async move { profile_metric_events(&c, key, metric_id, filters).await })
    }
}

#[cfg(test)]
mod tests {
    use signalbox_store::postgres::testing::TestDatabase;
    use signalbox_store::postgres::Planning;

    use super::*;
    use crate::db::postgres::apply::connect;

    /// A feed read's parts see one committed state: rows committed after its first read are
    /// not in its later ones, whatever checkpoint they carry.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_feed_parts_read_one_snapshot() {
        let Some(test_db) = TestDatabase::create().await else {
            return;
        };
        let pool = connect(test_db.url(), 2, Planning::PerCall).await.unwrap();
        let db = PgDb::new(pool, tokio::runtime::Handle::current());
        tokio::task::spawn_blocking(move || {
            let mut client = db.connection().unwrap();
            let tx = snapshot(&db, &mut client).unwrap();
            let mut parts = Parts { db: &db, tx: &tx };
            assert_eq!(parts.changed_profiles(0, 100, 10).unwrap(), []);
            let other = db.connection().unwrap();
            db.wait(other.batch_execute(
                "INSERT INTO profiles (pk, id, created_us, updated_us, data, changed_seq)
                 VALUES (7, 'p7', 0, 0, '{}', 5);
                 INSERT INTO redirects (from_pk, to_pk, seq) VALUES (8, 7, 5);",
            ))
            .unwrap();
            drop(other);
            assert_eq!(parts.changed_profiles(0, 100, 10).unwrap(), []);
            assert_eq!(parts.merges(0, 100).unwrap(), []);
            db.wait(tx.commit()).unwrap();
            drop(client);
            let reader = PgReader::new(db.clone());
            let changes = reader.changes(&FeedCursor::default(), 100, 10).unwrap();
            assert_eq!(changes.profiles, [ProfileKey(7)]);
            assert_eq!(changes.merges.len(), 1);
        })
        .await
        .unwrap();
    }
}
