//! The applier's storage ([`ApplyStore`], [`ApplyTx`]) over `engage.db`: the writer's
//! connection, and one `IMMEDIATE` transaction per batch. Statements are cached on the
//! connection (`prepare_cached`), so a batch prepares each once.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use signalbox_store::sqlite::Checkpointer;

use super::rows::held_ids;
use crate::apply::holds::HeldIds;
use crate::apply::profile::ProfileRow;
use crate::apply::store::{
    ApplyStore, ApplyTx, AuditLine, HeldCall, NewEvent, NewHeldCall, NewMember, NewOutboxRow,
    ProfileWrite, QuarantineRow,
};
use crate::apply::{OriginRow, OriginRows};
use crate::error::EngageResult;
use crate::lists::{self, EmailConsent, ListId, MemberStatus, OptInProcess};

/// The writer of `engage.db`.
pub(crate) struct SqliteWriter {
    conn: Connection,
    /// Copies committed WAL frames into `engage.db` beside the applier, so that its commits
    /// rarely do.
    checkpointer: Option<Checkpointer>,
}

impl SqliteWriter {
    /// Opens (creating and migrating) the file for writing, with the default page cache.
    #[cfg(test)]
    pub(crate) fn open(path: &Path) -> EngageResult<SqliteWriter> {
        SqliteWriter::open_with_cache(path, crate::DEFAULT_ENGAGE_CACHE_BYTES)
    }

    /// Opens (creating and migrating) the file for writing, with a page cache of
    /// `cache_bytes`.
    pub(crate) fn open_with_cache(path: &Path, cache_bytes: u64) -> EngageResult<SqliteWriter> {
        let conn = super::open_writer(path, cache_bytes)?;
        conn.set_prepared_statement_cache_capacity(64);
        let checkpointer =
            match Checkpointer::start(path, "engage-checkpoint", std::time::Duration::ZERO) {
                Ok(checkpointer) => Some(checkpointer),
                Err(err) => {
                    tracing::warn!(error = %err, "no background checkpoints for engage.db");
                    None
                }
            };
        Ok(SqliteWriter { conn, checkpointer })
    }
}

/// The checkpoint as stored (0 when none is).
pub(crate) fn read_applied_seq(conn: &Connection) -> EngageResult<i64> {
    Ok(conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'applied_seq'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

fn earliest_hold_expiry(conn: &Connection) -> EngageResult<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT MIN(expires_us) FROM held_calls WHERE status = 'held'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .flatten())
}

impl ApplyStore for SqliteWriter {
    type Tx<'a> = SqliteTx<'a>;

    fn begin(&mut self) -> EngageResult<SqliteTx<'_>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        Ok(SqliteTx {
            tx,
            checkpointer: self.checkpointer.as_ref(),
        })
    }

    fn applied_seq(&self) -> EngageResult<i64> {
        read_applied_seq(&self.conn)
    }

    fn earliest_hold_expiry(&self) -> EngageResult<Option<i64>> {
        earliest_hold_expiry(&self.conn)
    }

    fn held_after(&self, seq: i64) -> EngageResult<Vec<(i64, HeldIds)>> {
        let mut stmt = self.conn.prepare(
            // By key range (not the index of open holds): usually the range is empty.
            "SELECT seq, user_id, anonymous_id, alias_of FROM held_calls NOT INDEXED
             WHERE seq > ?1 AND status = 'held' ORDER BY seq",
        )?;
        let rows = stmt.query_map([seq], |r| Ok((r.get(0)?, held_ids(r, 1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn is_quarantined(&self, seq: i64) -> EngageResult<bool> {
        let found: Option<i64> = self
            .conn
            .query_row("SELECT seq FROM quarantine WHERE seq = ?1", [seq], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(found.is_some())
    }

    fn note_failed_retry(&self, seq: i64, error: &str) -> EngageResult<()> {
        self.conn.execute(
            "UPDATE quarantine SET tries = tries + 1, error = ?2 WHERE seq = ?1",
            params![seq, error],
        )?;
        Ok(())
    }

    fn checkpoint(&mut self) -> EngageResult<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

/// One batch's transaction on `engage.db`.
pub(crate) struct SqliteTx<'a> {
    tx: Transaction<'a>,
    checkpointer: Option<&'a Checkpointer>,
}

impl ApplyTx for SqliteTx<'_> {
    fn commit(self) -> EngageResult<()> {
        self.tx.commit()?;
        if let Some(checkpointer) = self.checkpointer {
            checkpointer.nudge();
        }
        Ok(())
    }

    fn set_applied_seq(&self, seq: i64) -> EngageResult<()> {
        self.tx.execute(
            "INSERT INTO meta (key, value) VALUES ('applied_seq', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [seq],
        )?;
        Ok(())
    }

    fn add_counters(&self, counters: &mut HashMap<Cow<'static, str>, i64>) -> EngageResult<()> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO counters (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
        )?;
        for (name, value) in counters.drain() {
            stmt.execute(params![name.as_ref(), value])?;
        }
        Ok(())
    }

    fn load_profile(&self, pk: i64) -> EngageResult<Option<ProfileRow>> {
        super::rows::load_profile(&self.tx, pk)
    }

    fn save_profile(
        &self,
        row: &ProfileRow,
        write: ProfileWrite<'_>,
        changed_seq: i64,
    ) -> EngageResult<()> {
        match write {
            ProfileWrite::Full { data } => {
                let mut stmt = self.tx.prepare_cached(
                    "INSERT INTO profiles (pk, id, email, phone_number, external_id, anonymous_id,
                                           created_us, updated_us, data, changed_seq,
                                           from_segment, segment_user_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                     ON CONFLICT (pk) DO UPDATE SET email = excluded.email,
                         phone_number = excluded.phone_number, external_id = excluded.external_id,
                         anonymous_id = excluded.anonymous_id, created_us = excluded.created_us,
                         updated_us = excluded.updated_us, data = excluded.data,
                         changed_seq = excluded.changed_seq, from_segment = excluded.from_segment,
                         segment_user_id = excluded.segment_user_id",
                )?;
                stmt.execute(params![
                    row.pk,
                    row.id,
                    row.email,
                    row.phone_number,
                    row.external_id,
                    row.anonymous_id,
                    row.created_us,
                    row.updated_us,
                    data,
                    changed_seq,
                    row.from_segment,
                    row.segment_user_id
                ])?;
            }
            ProfileWrite::Columns => {
                let mut stmt = self.tx.prepare_cached(
                    "UPDATE profiles SET email = ?2, phone_number = ?3, external_id = ?4,
                         anonymous_id = ?5, created_us = ?6, updated_us = ?7, changed_seq = ?8,
                         from_segment = ?9, segment_user_id = ?10
                     WHERE pk = ?1",
                )?;
                stmt.execute(params![
                    row.pk,
                    row.email,
                    row.phone_number,
                    row.external_id,
                    row.anonymous_id,
                    row.created_us,
                    row.updated_us,
                    changed_seq,
                    row.from_segment,
                    row.segment_user_id
                ])?;
            }
        }
        Ok(())
    }

    fn delete_profile(&self, pk: i64) -> EngageResult<()> {
        self.tx
            .prepare_cached("DELETE FROM profiles WHERE pk = ?1")?
            .execute([pk])?;
        Ok(())
    }

    fn redirect(&self, from_pk: i64) -> EngageResult<Option<i64>> {
        Ok(self
            .tx
            .prepare_cached("SELECT to_pk FROM redirects WHERE from_pk = ?1")?
            .query_row([from_pk], |r| r.get(0))
            .optional()?)
    }

    fn load_origin(
        &self,
        pk: i64,
        integration: &str,
        source: &str,
    ) -> EngageResult<Option<OriginRow>> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT external_id, anonymous_id, first_seq, last_seq
                 FROM profile_origins
                 WHERE profile_pk = ?1 AND integration = ?2 AND source = ?3",
            )?
            .query_row(params![pk, integration, source], |r| {
                Ok(OriginRow {
                    external_id: r.get(0)?,
                    anonymous_id: r.get(1)?,
                    first_seq: r.get(2)?,
                    last_seq: r.get(3)?,
                    dirty: false,
                })
            })
            .optional()?)
    }

    fn save_origins(&self, touched: &[i64], origins: &mut OriginRows) -> EngageResult<()> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO profile_origins
             (profile_pk, integration, source, external_id, anonymous_id, first_seq, last_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (profile_pk, integration, source) DO UPDATE SET
                 external_id = excluded.external_id, anonymous_id = excluded.anonymous_id,
                 last_seq = excluded.last_seq",
        )?;
        for pk in touched {
            let Some(rows) = origins.get_mut(pk) else {
                continue;
            };
            for (integration, source, row) in rows.iter_mut() {
                if row.dirty {
                    stmt.execute(params![
                        pk,
                        &*integration,
                        &*source,
                        row.external_id,
                        row.anonymous_id,
                        row.first_seq,
                        row.last_seq
                    ])?;
                    row.dirty = false;
                }
            }
        }
        Ok(())
    }

    fn find_identifier(&self, kind: &str, value: &str) -> EngageResult<Option<i64>> {
        Ok(self
            .tx
            .prepare_cached("SELECT profile_pk FROM identifiers WHERE kind = ?1 AND value = ?2")?
            .query_row(params![kind, value], |r| r.get(0))
            .optional()?)
    }

    fn link_identifier(&self, kind: &str, value: &str, pk: i64) -> EngageResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO identifiers (kind, value, profile_pk) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![kind, value, pk])?;
        Ok(())
    }

    fn unlink_identifier(&self, kind: &str, value: &str, pk: i64) -> EngageResult<bool> {
        let removed = self
            .tx
            .prepare_cached(
                "DELETE FROM identifiers WHERE kind = ?1 AND value = ?2 AND profile_pk = ?3",
            )?
            .execute(params![kind, value, pk])?;
        Ok(removed > 0)
    }

    fn merge_profiles(&self, survivor: i64, loser: i64, seq: i64) -> EngageResult<u64> {
        let tx = &self.tx;
        // The loser's events that the survivor has already (same metric and unique id) go.
        let duplicates = tx
            .prepare_cached(
                "DELETE FROM events WHERE profile_pk = ?2 AND EXISTS (
                     SELECT 1 FROM events s WHERE s.profile_pk = ?1
                     AND s.metric_pk = events.metric_pk AND s.unique_hash = events.unique_hash)",
            )?
            .execute([survivor, loser])?;
        tx.prepare_cached("UPDATE events SET profile_pk = ?1 WHERE profile_pk = ?2")?
            .execute([survivor, loser])?;
        tx.prepare_cached("UPDATE identifiers SET profile_pk = ?1 WHERE profile_pk = ?2")?
            .execute([survivor, loser])?;
        tx.prepare_cached(
            "UPDATE OR IGNORE profile_origins SET profile_pk = ?1 WHERE profile_pk = ?2",
        )?
        .execute([survivor, loser])?;
        tx.prepare_cached("DELETE FROM profile_origins WHERE profile_pk = ?1")?
            .execute([loser])?;
        tx.prepare_cached(
            "UPDATE OR IGNORE list_members SET profile_pk = ?1 WHERE profile_pk = ?2",
        )?
        .execute([survivor, loser])?;
        tx.prepare_cached("DELETE FROM list_members WHERE profile_pk = ?1")?
            .execute([loser])?;
        // The survivor keeps its own consent; it takes the loser's when it has none.
        tx.prepare_cached(
            "UPDATE OR IGNORE email_consent SET profile_pk = ?1 WHERE profile_pk = ?2",
        )?
        .execute([survivor, loser])?;
        tx.prepare_cached("DELETE FROM email_consent WHERE profile_pk = ?1")?
            .execute([loser])?;
        tx.prepare_cached("UPDATE problems SET profile_pk = ?1 WHERE profile_pk = ?2")?
            .execute([survivor, loser])?;
        tx.prepare_cached("UPDATE profile_links SET profile_pk = ?1 WHERE profile_pk = ?2")?
            .execute([survivor, loser])?;
        tx.prepare_cached("UPDATE redirects SET to_pk = ?1 WHERE to_pk = ?2")?
            .execute([survivor, loser])?;
        tx.prepare_cached("INSERT INTO redirects (from_pk, to_pk, seq) VALUES (?1, ?2, ?3)")?
            .execute(params![loser, survivor, seq])?;
        Ok(duplicates as u64)
    }

    fn find_metric(&self, integration: &str, name: &str) -> EngageResult<Option<i64>> {
        Ok(self
            .tx
            .prepare_cached("SELECT pk FROM metrics WHERE integration = ?1 AND name = ?2")?
            .query_row(params![integration, name], |r| r.get(0))
            .optional()?)
    }

    fn metric_id_taken(&self, id: &str) -> EngageResult<bool> {
        let taken: Option<i64> = self
            .tx
            .query_row("SELECT 1 FROM metrics WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        Ok(taken.is_some())
    }

    fn insert_metric(
        &self,
        id: &str,
        name: &str,
        integration: &str,
        category: &str,
        at_us: i64,
    ) -> EngageResult<i64> {
        self.tx.execute(
            "INSERT INTO metrics (id, name, integration, category, created_us, updated_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![id, name, integration, category, at_us],
        )?;
        Ok(self.tx.last_insert_rowid())
    }

    fn event_exists(
        &self,
        profile_pk: i64,
        metric_pk: i64,
        unique_hash: i64,
    ) -> EngageResult<bool> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT 1 FROM events
                 WHERE profile_pk = ?1 AND metric_pk = ?2 AND unique_hash = ?3 LIMIT 1",
            )?
            .exists(params![profile_pk, metric_pk, unique_hash])?)
    }

    fn insert_event(&self, event: &NewEvent<'_>) -> EngageResult<bool> {
        let inserted = self
            .tx
            .prepare_cached(
                "INSERT OR IGNORE INTO events (pk, metric_pk, profile_pk, time_us, value,
                     currency, unique_id, unique_hash, properties)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                event.pk,
                event.metric_pk,
                event.profile_pk,
                event.time_us,
                event.value,
                event.currency,
                event.unique_id,
                event.unique_hash,
                event.properties
            ])?;
        Ok(inserted > 0)
    }

    fn event_properties(
        &self,
        profile_pk: i64,
        metric_pk: i64,
        unique_hash: i64,
    ) -> EngageResult<Option<String>> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT properties FROM events
                 WHERE profile_pk = ?1 AND metric_pk = ?2 AND unique_hash = ?3 LIMIT 1",
            )?
            .query_row(params![profile_pk, metric_pk, unique_hash], |r| r.get(0))
            .optional()?)
    }

    fn audit(&self, line: &AuditLine<'_>) -> EngageResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO profile_links (profile_pk, seq, n, action, kind, value, detail, at_us)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                line.profile_pk,
                line.seq,
                line.n,
                line.action,
                line.kind,
                line.value,
                line.detail,
                line.at_us
            ])?;
        Ok(())
    }

    fn problem(
        &self,
        seq: i64,
        n: i64,
        profile_pk: Option<i64>,
        message: &str,
    ) -> EngageResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO problems (seq, n, profile_pk, message) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![seq, n, profile_pk, message])?;
        Ok(())
    }

    fn record_api_result(&self, seq: i64, result: &str) -> EngageResult<()> {
        self.tx
            .prepare_cached("INSERT OR REPLACE INTO api_results (seq, result) VALUES (?1, ?2)")?
            .execute(params![seq, result])?;
        Ok(())
    }

    fn hold(&self, call: &NewHeldCall<'_>) -> EngageResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO held_calls (seq, source_id, kind, received_us, expires_us, reason,
                                         status, user_id, anonymous_id, alias_of, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'held', ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                call.seq,
                call.source_id,
                call.kind,
                call.received_us,
                call.expires_us,
                call.reason,
                call.ids.external_id,
                call.ids.anonymous_id,
                call.ids.alias_of,
                call.payload
            ])?;
        Ok(())
    }

    fn held_call(&self, seq: i64) -> EngageResult<Option<HeldCall>> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT source_id, kind, received_us, payload, user_id, anonymous_id, alias_of
                 FROM held_calls WHERE seq = ?1 AND status = 'held'",
            )?
            .query_row([seq], |r| {
                Ok(HeldCall {
                    source_id: r.get(0)?,
                    kind: r.get(1)?,
                    received_us: r.get(2)?,
                    payload: r.get(3)?,
                    ids: held_ids(r, 4)?,
                })
            })
            .optional()?)
    }

    fn release_held(&self, seq: i64, settled_by: i64) -> EngageResult<()> {
        self.tx
            .prepare_cached(
                "UPDATE held_calls SET status = 'released', settled_seq = ?2, payload = NULL
                 WHERE seq = ?1",
            )?
            .execute([seq, settled_by])?;
        Ok(())
    }

    fn held_waiting_for(&self, kind: &str, value: &str) -> EngageResult<Vec<i64>> {
        // The applier asks `engage.db.held/` instead (`apply/held_index.rs`); this scan of
        // the held rows answers alike.
        let column = match kind {
            "external_id" => "user_id",
            "anonymous_id" => "anonymous_id",
            _ => return Ok(Vec::new()),
        };
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT seq FROM held_calls
             WHERE status = 'held' AND ({column} = ?1 OR alias_of = ?1) ORDER BY seq"
        ))?;
        let rows = stmt.query_map([value], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn due_holds(&self, now_us: i64) -> EngageResult<Vec<(i64, HeldIds)>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT seq, user_id, anonymous_id, alias_of FROM held_calls
             WHERE status = 'held' AND expires_us <= ?1",
        )?;
        let rows = stmt.query_map([now_us], |r| Ok((r.get(0)?, held_ids(r, 1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn expire_holds(&self, now_us: i64) -> EngageResult<u64> {
        let expired = self.tx.execute(
            "UPDATE held_calls SET status = 'expired' WHERE status = 'held' AND expires_us <= ?1",
            [now_us],
        )? as i64;
        if expired > 0 {
            self.tx.execute(
                "INSERT INTO counters (name, value) VALUES ('held.expired', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                [expired],
            )?;
        }
        Ok(expired as u64)
    }

    fn earliest_hold_expiry(&self) -> EngageResult<Option<i64>> {
        earliest_hold_expiry(&self.tx)
    }

    fn list_info(&self, id: &ListId) -> EngageResult<Option<(String, OptInProcess)>> {
        let row: Option<(String, String)> = self
            .tx
            .prepare_cached("SELECT name, opt_in FROM lists WHERE id = ?1")?
            .query_row([&id.0], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(row.map(|(name, opt_in)| (name, OptInProcess::parse(&opt_in).unwrap_or_default())))
    }

    fn list_id_taken(&self, id: &str) -> EngageResult<bool> {
        Ok(self
            .tx
            .prepare_cached("SELECT 1 FROM lists WHERE id = ?1")?
            .exists([id])?)
    }

    fn insert_list(
        &self,
        id: &str,
        name: &str,
        opt_in: OptInProcess,
        at_us: i64,
    ) -> EngageResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO lists (id, name, opt_in, created_us, updated_us)
                 VALUES (?1, ?2, ?3, ?4, ?4)",
            )?
            .execute(params![id, name, opt_in.as_str(), at_us])?;
        Ok(())
    }

    fn update_list(
        &self,
        id: &ListId,
        name: Option<&str>,
        opt_in: Option<OptInProcess>,
        at_us: i64,
    ) -> EngageResult<()> {
        self.tx
            .prepare_cached(
                "UPDATE lists SET name = COALESCE(?2, name), opt_in = COALESCE(?3, opt_in),
                     updated_us = ?4
                 WHERE id = ?1",
            )?
            .execute(params![id.0, name, opt_in.map(OptInProcess::as_str), at_us])?;
        Ok(())
    }

    fn delete_list(&self, id: &ListId) -> EngageResult<()> {
        self.tx
            .prepare_cached("DELETE FROM lists WHERE id = ?1")?
            .execute([&id.0])?;
        Ok(())
    }

    fn list_profiles(&self, id: &ListId, pending: bool) -> EngageResult<Vec<i64>> {
        let sql = if pending {
            "SELECT profile_pk FROM list_members WHERE list_id = ?1 ORDER BY profile_pk"
        } else {
            "SELECT profile_pk FROM list_members
             WHERE list_id = ?1 AND status = 'member' ORDER BY profile_pk"
        };
        Ok(self
            .tx
            .prepare_cached(sql)?
            .query_map([&id.0], |r| r.get(0))?
            .collect::<Result<_, _>>()?)
    }

    fn member_status(&self, list: &ListId, pk: i64) -> EngageResult<Option<MemberStatus>> {
        let status: Option<String> = self
            .tx
            .prepare_cached(
                "SELECT status FROM list_members WHERE list_id = ?1 AND profile_pk = ?2",
            )?
            .query_row(params![list.0, pk], |r| r.get(0))
            .optional()?;
        Ok(status.map(|s| {
            if s == "pending" {
                MemberStatus::Pending
            } else {
                MemberStatus::Member
            }
        }))
    }

    fn insert_member(&self, member: &NewMember<'_>) -> EngageResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO list_members
                     (list_id, profile_pk, confirm_optin, seq, status, joined_us)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                member.list.0,
                member.profile_pk,
                member.confirm_optin,
                member.seq,
                member.status.as_str(),
                member.joined_us
            ])?;
        Ok(())
    }

    fn confirm_member(&self, list: &ListId, pk: i64, joined_us: i64, seq: i64) -> EngageResult<()> {
        self.tx
            .prepare_cached(
                "UPDATE list_members SET status = 'member', joined_us = ?3, seq = ?4
                 WHERE list_id = ?1 AND profile_pk = ?2",
            )?
            .execute(params![list.0, pk, joined_us, seq])?;
        Ok(())
    }

    fn remove_member(&self, list: &ListId, pk: i64) -> EngageResult<bool> {
        let removed = self
            .tx
            .prepare_cached("DELETE FROM list_members WHERE list_id = ?1 AND profile_pk = ?2")?
            .execute(params![list.0, pk])?;
        Ok(removed > 0)
    }

    fn list_change(
        &self,
        seq: i64,
        list: &ListId,
        pk: i64,
        change: &str,
        at_us: i64,
    ) -> EngageResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO list_changes (seq, list_id, profile_pk, change, at_us)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![seq, list.0, pk, change, at_us])?;
        Ok(())
    }

    fn consent(&self, pk: i64) -> EngageResult<EmailConsent> {
        super::lists::consent_by_key(&self.tx, pk)
    }

    fn store_consent(&self, pk: i64, consent: &EmailConsent, status_us: i64) -> EngageResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO email_consent (profile_pk, status, status_us, method, method_detail,
                     custom_source, double_opt_in, suppressions)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (profile_pk) DO UPDATE SET status = excluded.status,
                     status_us = excluded.status_us, method = excluded.method,
                     method_detail = excluded.method_detail,
                     custom_source = excluded.custom_source,
                     double_opt_in = excluded.double_opt_in,
                     suppressions = excluded.suppressions",
            )?
            .execute(params![
                pk,
                consent.consent.as_str(),
                status_us,
                consent.method,
                consent.method_detail,
                consent.custom_source,
                consent.double_optin,
                lists::suppressions_json(&consent.suppressions)
            ])?;
        Ok(())
    }

    fn next_outbox_n(&self, seq: i64) -> EngageResult<u32> {
        Ok(self
            .tx
            .prepare_cached("SELECT COALESCE(MAX(n) + 1, 0) FROM outbox WHERE seq = ?1")?
            .query_row([seq], |r| r.get(0))?)
    }

    fn insert_outbox(&self, row: &NewOutboxRow<'_>) -> EngageResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO outbox (seq, n, at_us, profile_id, email, user_id, anonymous_id,
                                     from_segment, change)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                row.seq,
                row.n,
                row.at_us,
                row.profile_id,
                row.email,
                row.user_id,
                row.anonymous_id,
                row.from_segment,
                row.change
            ])?;
        Ok(())
    }

    fn quarantine(&self, row: &QuarantineRow<'_>) -> EngageResult<()> {
        self.tx.execute(
            "INSERT OR REPLACE INTO quarantine (seq, kind, source_id, received_us, error, tries)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                row.seq,
                row.kind,
                row.source_id,
                row.received_us,
                row.error,
                row.tries
            ],
        )?;
        self.tx.execute(
            "INSERT OR REPLACE INTO problems (seq, n, profile_pk, message) VALUES (?1, 0, NULL, ?2)",
            params![row.seq, row.problem],
        )?;
        self.tx.execute(
            "INSERT INTO counters (name, value) VALUES ('quarantined', 1)
             ON CONFLICT (name) DO UPDATE SET value = value + 1",
            [],
        )?;
        Ok(())
    }

    fn unquarantine(&self, seq: i64) -> EngageResult<()> {
        self.tx
            .execute("DELETE FROM quarantine WHERE seq = ?1", [seq])?;
        self.tx
            .execute("DELETE FROM problems WHERE seq = ?1", [seq])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The backend-neutral checks of `apply/store_checks.rs`, on a fresh `engage.db`.

    use super::SqliteWriter;
    use crate::apply::store_checks as checks;

    fn check(run: fn(&mut SqliteWriter)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteWriter::open(&dir.path().join("engage.db")).unwrap();
        run(&mut store);
    }

    #[test]
    fn checkpoint_commits_with_the_batch() {
        check(checks::checkpoint_commits_with_the_batch);
    }

    #[test]
    fn profiles_and_identifiers() {
        check(checks::profiles_and_identifiers);
    }

    #[test]
    fn merge_moves_rows_to_the_survivor() {
        check(checks::merge_moves_rows_to_the_survivor);
    }

    #[test]
    fn held_calls_release_and_expire() {
        check(checks::held_calls_release_and_expire);
    }

    #[test]
    fn lists_and_members() {
        check(checks::lists_and_members);
    }

    #[test]
    fn outbox_and_quarantine() {
        check(checks::outbox_and_quarantine);
    }
}
