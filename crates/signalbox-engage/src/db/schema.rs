//! The derived state's schema (`engage.db`), migrations recorded in `PRAGMA user_version`.
//!
//! Row keys (`pk`) of profiles and events are derived from log sequence numbers (see
//! `ids.rs`), so the same log always yields the same keys and ids.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    r#"
    -- The checkpoint (`applied_seq`) and other single values.
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    -- Counters of what the pipeline did (`applied.track`, `skipped.…`, `held.expired`, …).
    CREATE TABLE counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    CREATE TABLE profiles (
        pk INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        email TEXT UNIQUE,
        phone_number TEXT,
        external_id TEXT,
        anonymous_id TEXT,
        created_us INTEGER NOT NULL,
        updated_us INTEGER NOT NULL,
        -- Names, location, custom properties and provenance, as JSON. (The last event's
        -- time is read from `events`, so that an event never rewrites its profile.)
        data TEXT NOT NULL
    );
    CREATE UNIQUE INDEX profiles_id ON profiles(id);
    CREATE INDEX profiles_phone ON profiles(phone_number);
    CREATE INDEX profiles_external ON profiles(external_id);
    CREATE INDEX profiles_created ON profiles(created_us, pk);
    CREATE INDEX profiles_updated ON profiles(updated_us, pk);
    -- Every identifier that names a profile: kind is email, phone_number, external_id or
    -- anonymous_id. One identifier names one profile.
    CREATE TABLE identifiers (
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        profile_pk INTEGER NOT NULL,
        PRIMARY KEY (kind, value)
    ) WITHOUT ROWID;
    CREATE INDEX identifiers_profile ON identifiers(profile_pk);
    -- A merged profile's key points at the survivor.
    CREATE TABLE redirects (
        from_pk INTEGER PRIMARY KEY,
        to_pk INTEGER NOT NULL,
        seq INTEGER NOT NULL
    );
    CREATE INDEX redirects_to ON redirects(to_pk);
    -- Audit trail: which log entry linked (or could not link) which identifier, and merges.
    CREATE TABLE profile_links (
        profile_pk INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        n INTEGER NOT NULL,
        action TEXT NOT NULL,
        kind TEXT,
        value TEXT,
        detail TEXT,
        at_us INTEGER NOT NULL,
        PRIMARY KEY (profile_pk, seq, n)
    ) WITHOUT ROWID;
    -- Provenance: per profile, each (integration, source) that touched it and the ids it used.
    CREATE TABLE profile_origins (
        profile_pk INTEGER NOT NULL,
        integration TEXT NOT NULL,
        source TEXT NOT NULL,
        external_id TEXT,
        anonymous_id TEXT,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        PRIMARY KEY (profile_pk, integration, source)
    ) WITHOUT ROWID;
    CREATE TABLE list_members (
        list_id TEXT NOT NULL,
        profile_pk INTEGER NOT NULL,
        confirm_optin INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (list_id, profile_pk)
    ) WITHOUT ROWID;
    CREATE INDEX list_members_profile ON list_members(profile_pk);
    CREATE TABLE metrics (
        pk INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        integration TEXT NOT NULL,
        category TEXT NOT NULL,
        created_us INTEGER NOT NULL,
        updated_us INTEGER NOT NULL,
        UNIQUE (integration, name)
    );
    -- An event's id is not stored: it is made from its time and key (`ids.rs`).
    CREATE TABLE events (
        pk INTEGER PRIMARY KEY,
        metric_pk INTEGER NOT NULL,
        profile_pk INTEGER NOT NULL,
        time_us INTEGER NOT NULL,
        value REAL,
        currency TEXT,
        unique_id TEXT NOT NULL,
        -- 64 bits of SHA-256 of unique_id: the dedupe key, smaller than the text.
        unique_hash INTEGER NOT NULL,
        properties TEXT NOT NULL
    );
    -- One index per profile serves dedupe (an event is a duplicate when its profile, metric
    -- and unique_hash are there already: checked before the insert) and the profile's
    -- activity feed (sorted by the time it carries). A second index by profile would double
    -- the random page writes that dominate the cost of applying an event.
    CREATE INDEX events_profile ON events(profile_pk, metric_pk, unique_hash, time_us);
    CREATE INDEX events_metric_time ON events(metric_pk, time_us, profile_pk, value);
    CREATE INDEX events_time ON events(time_us);
    -- Calls that could not be attached to a profile yet.
    CREATE TABLE held_calls (
        seq INTEGER PRIMARY KEY,
        source_id INTEGER NOT NULL,
        kind TEXT NOT NULL,
        received_us INTEGER NOT NULL,
        expires_us INTEGER NOT NULL,
        reason TEXT NOT NULL,
        -- held, released or expired
        status TEXT NOT NULL,
        user_id TEXT,
        anonymous_id TEXT,
        settled_seq INTEGER,
        payload TEXT
    );
    CREATE INDEX held_calls_open ON held_calls(status, expires_us);
    CREATE TABLE held_ids (
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (kind, value, seq)
    ) WITHOUT ROWID;
    -- Things kept but not understood (e.g. a phone number that cannot be normalised).
    CREATE TABLE problems (
        seq INTEGER NOT NULL,
        n INTEGER NOT NULL,
        profile_pk INTEGER,
        message TEXT NOT NULL,
        PRIMARY KEY (seq, n)
    ) WITHOUT ROWID;
    -- The outcome of each synchronous API write, read by the caller waiting for it.
    CREATE TABLE api_results (
        seq INTEGER PRIMARY KEY,
        result TEXT NOT NULL
    );
    "#,
    r#"
    -- The change feed that audiences and flows follow (see `feed.rs`): every saved profile
    -- row records the last log entry of the batch that changed it.
    ALTER TABLE profiles ADD COLUMN changed_seq INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX profiles_changed ON profiles(changed_seq);
    CREATE INDEX redirects_seq ON redirects(seq);
    -- Lists. `opt_in` is `single_opt_in` or `double_opt_in`.
    CREATE TABLE lists (
        pk INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        opt_in TEXT NOT NULL,
        created_us INTEGER NOT NULL,
        updated_us INTEGER NOT NULL
    );
    -- A member is `member`, or `pending` until it confirms a double opt-in.
    ALTER TABLE list_members ADD COLUMN status TEXT NOT NULL DEFAULT 'member';
    ALTER TABLE list_members ADD COLUMN joined_us INTEGER NOT NULL DEFAULT 0;
    -- Every change of list membership, in log order: `added`, `pending`, `confirmed`,
    -- `removed`. Followed by the feed (list triggers, segment conditions on lists).
    CREATE TABLE list_changes (
        pk INTEGER PRIMARY KEY,
        seq INTEGER NOT NULL,
        list_id TEXT NOT NULL,
        profile_pk INTEGER NOT NULL,
        change TEXT NOT NULL,
        at_us INTEGER NOT NULL
    );
    -- Email marketing consent, as Klaviyo models it. No row: never subscribed.
    -- `status`: SUBSCRIBED, UNSUBSCRIBED or NEVER_SUBSCRIBED; `suppressions`: JSON array of
    -- {"reason": "HARD_BOUNCE" | "INVALID_EMAIL" | "SPAM_COMPLAINT" | "UNSUBSCRIBE" |
    -- "USER_SUPPRESSED", "at_us": …}. Changing it marks the profile changed (`changed_seq`).
    CREATE TABLE email_consent (
        profile_pk INTEGER PRIMARY KEY,
        status TEXT NOT NULL,
        status_us INTEGER NOT NULL,
        method TEXT,
        method_detail TEXT,
        custom_source TEXT,
        double_opt_in INTEGER,
        suppressions TEXT NOT NULL DEFAULT '[]'
    );
    "#,
    r#"
    -- Which held calls wait for which identifier is kept in memory, rebuilt from the rows
    -- still held (`apply/holds.rs`): `held_ids` goes. A held alias records its `previousId`
    -- (see `backfill_alias_of`).
    ALTER TABLE held_calls ADD COLUMN alias_of TEXT;
    -- Only calls still held, by expiry: settled ones leave the index.
    DROP INDEX held_calls_open;
    CREATE INDEX held_open ON held_calls(expires_us) WHERE status = 'held';
    "#,
    r#"
    -- Log entries set aside because applying them kept failing (`apply/quarantine.rs`): the
    -- checkpoint moved past them. `error` is the last try's, `tries` counts every try on
    -- its own (retries included).
    CREATE TABLE quarantine (
        seq INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        source_id INTEGER NOT NULL,
        received_us INTEGER NOT NULL,
        error TEXT NOT NULL,
        tries INTEGER NOT NULL
    );
    "#,
    r#"
    -- What Signalbox itself did to profiles, in log order, for the reverse sync (`outbox.rs`):
    -- one row per change, keyed by the log entry that made it and the change's index in it.
    -- `at_us` is the entry's receipt time (a built-in event's own time); `email`, `user_id`,
    -- `anonymous_id` and `from_segment` are the profile's as of the change; `change` is the
    -- `OutboxChange` as JSON. Never written for calls from Segment sources, nor for API
    -- writes forwarded from one.
    CREATE TABLE outbox (
        seq INTEGER NOT NULL,
        n INTEGER NOT NULL,
        at_us INTEGER NOT NULL,
        profile_id TEXT NOT NULL,
        email TEXT,
        user_id TEXT,
        anonymous_id TEXT,
        from_segment INTEGER NOT NULL,
        change TEXT NOT NULL,
        PRIMARY KEY (seq, n)
    ) WITHOUT ROWID;
    CREATE INDEX outbox_at ON outbox(at_us, seq, n);
    -- Set once a call from a Segment source (or an API write forwarded from one) touched the
    -- profile; `segment_user_id` is the `userId` a Segment source last gave it.
    ALTER TABLE profiles ADD COLUMN from_segment INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE profiles ADD COLUMN segment_user_id TEXT;
    "#,
    r#"
    -- A list's members in the order its pages list them (`lists.rs`: one status, by time
    -- joined, then profile), so a page reads its rows in order instead of sorting the list.
    CREATE INDEX list_members_by_status ON list_members(list_id, status, joined_us, profile_pk);
    "#,
    r#"
    -- Each list's members (status `member`) counted as they join, confirm and leave, in the
    -- transaction that changes them: a list's figure is one row, not a count of its members.
    ALTER TABLE lists ADD COLUMN member_count INTEGER NOT NULL DEFAULT 0;
    UPDATE lists SET member_count = (
        SELECT COUNT(*) FROM list_members m WHERE m.list_id = lists.id AND m.status = 'member');
    CREATE TRIGGER list_members_counted_in AFTER INSERT ON list_members
    WHEN NEW.status = 'member'
    BEGIN
        UPDATE lists SET member_count = member_count + 1 WHERE id = NEW.list_id;
    END;
    CREATE TRIGGER list_members_counted_out AFTER DELETE ON list_members
    WHEN OLD.status = 'member'
    BEGIN
        UPDATE lists SET member_count = member_count - 1 WHERE id = OLD.list_id;
    END;
    CREATE TRIGGER list_members_recounted AFTER UPDATE OF status, list_id ON list_members
    WHEN (OLD.status = 'member') <> (NEW.status = 'member') OR OLD.list_id <> NEW.list_id
    BEGIN
        UPDATE lists SET member_count = member_count - 1
        WHERE id = OLD.list_id AND OLD.status = 'member';
        UPDATE lists SET member_count = member_count + 1
        WHERE id = NEW.list_id AND NEW.status = 'member';
    END;
    "#,
];

/// Rust steps that follow the SQL of a migration (by its index in [`MIGRATIONS`]).
fn after_migration(idx: usize, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    if idx == 2 {
        backfill_alias_of(tx)?;
    }
    if idx == 4 {
        backfill_from_segment(tx)?;
    }
    Ok(())
}

/// Before `alias_of` existed, a held alias waited in `held_ids` under its `previousId` (the
/// id that is neither its user id nor its anonymous id): recorded on its row, then
/// `held_ids` is dropped.
fn backfill_alias_of(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "UPDATE held_calls SET alias_of = (
             SELECT h.value FROM held_ids h
             WHERE h.seq = held_calls.seq
               AND h.value IS NOT held_calls.user_id
               AND h.value IS NOT held_calls.anonymous_id
             LIMIT 1)
         WHERE kind = 'alias' AND status = 'held';
         DROP TABLE held_ids;",
    )
}

/// Profiles that a Segment source touched before the flag existed: their provenance says so,
/// and the user id is the one the latest such source gave.
fn backfill_from_segment(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "UPDATE profiles SET from_segment = 1, segment_user_id = (
             SELECT o.external_id FROM profile_origins o
             WHERE o.profile_pk = profiles.pk AND o.integration = 'Segment'
               AND o.external_id IS NOT NULL
             ORDER BY o.last_seq DESC LIMIT 1)
         WHERE pk IN (SELECT profile_pk FROM profile_origins WHERE integration = 'Segment');",
    )
}

pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (idx, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now: usize = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now > idx {
            continue;
        }
        tx.execute_batch(sql)?;
        after_migration(idx, &tx)?;
        tx.pragma_update(None, "user_version", idx + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_from_segment_are_marked_on_migration_with_their_latest_user_id() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..4] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 4).unwrap();
        conn.execute_batch(
            "INSERT INTO profiles (pk, id, created_us, updated_us, data) VALUES
                 (1, 'p1', 0, 0, '{}'), (2, 'p2', 0, 0, '{}'), (3, 'p3', 0, 0, '{}');
             INSERT INTO profile_origins (profile_pk, integration, source, external_id,
                                          anonymous_id, first_seq, last_seq) VALUES
                 (1, 'Segment', 'web', 'old', NULL, 1, 2),
                 (1, 'Segment', 'app', 'new', NULL, 3, 9),
                 (1, 'API', '', 'crm', NULL, 4, 10),
                 (2, 'API', '', 'x', NULL, 5, 5),
                 (3, 'Segment', 'web', NULL, 'a3', 6, 6);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let rows: Vec<(i64, bool, Option<String>)> = conn
            .prepare("SELECT pk, from_segment, segment_user_id FROM profiles ORDER BY pk")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (1, true, Some("new".to_owned())),
                (2, false, None),
                (3, true, None)
            ]
        );
    }

    #[test]
    fn held_ids_migrate_to_alias_of_on_the_held_row() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute_batch(
            "INSERT INTO held_calls (seq, source_id, kind, received_us, expires_us, reason,
                                     status, user_id, anonymous_id, payload)
             VALUES (5, 1, 'alias', 0, 10, 'r', 'held', 'u2', NULL, '{}'),
                    (6, 1, 'track', 0, 10, 'r', 'held', NULL, 'a1', '{}');
             INSERT INTO held_ids (kind, value, seq) VALUES
                 ('external_id', 'u2', 5), ('anonymous_id', 'a2', 5), ('external_id', 'a2', 5),
                 ('anonymous_id', 'a1', 6);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let alias: Vec<(i64, Option<String>)> = conn
            .prepare("SELECT seq, alias_of FROM held_calls ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(alias, vec![(5, Some("a2".to_owned())), (6, None)]);
        let gone: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'held_ids'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(gone, 0);
        let version: usize = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len());
    }
}
