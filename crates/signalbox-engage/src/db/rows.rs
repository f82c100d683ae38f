//! How rows of `engage.db` read into the crate's types, shared by the writer and the readers.

use rusqlite::{Connection, OptionalExtension, Row};

use crate::apply::holds::HeldIds;
use crate::apply::profile::{ProfileRow, StoredProfile};
use crate::error::EngageResult;

/// The columns of `profiles` a [`ProfileRow`] reads (see [`profile_row`]).
pub(crate) const PROFILE_COLUMNS: &str =
    "pk, id, email, phone_number, external_id, anonymous_id, created_us, updated_us,
     (SELECT MAX(time_us) FROM events WHERE events.profile_pk = profiles.pk), data,
     from_segment, segment_user_id";

/// How many columns [`PROFILE_COLUMNS`] selects (a query's own columns follow them).
pub(crate) const PROFILE_COLUMN_COUNT: usize = 12;

/// A profile row from the columns of [`PROFILE_COLUMNS`].
pub(crate) fn profile_row(r: &Row<'_>) -> rusqlite::Result<ProfileRow> {
    Ok(ProfileRow::stored(StoredProfile {
        pk: r.get(0)?,
        id: r.get(1)?,
        email: r.get(2)?,
        phone_number: r.get(3)?,
        external_id: r.get(4)?,
        anonymous_id: r.get(5)?,
        created_us: r.get(6)?,
        updated_us: r.get(7)?,
        last_event_us: r.get(8)?,
        data: r.get(9)?,
        from_segment: r.get(10)?,
        segment_user_id: r.get(11)?,
    }))
}

/// The profile row with this key.
pub(crate) fn load_profile(conn: &Connection, pk: i64) -> EngageResult<Option<ProfileRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {PROFILE_COLUMNS} FROM profiles WHERE pk = ?1"
    ))?;
    Ok(stmt.query_row([pk], profile_row).optional()?)
}

/// Reads `user_id, anonymous_id, alias_of` of `held_calls`, starting at column `first`.
pub(crate) fn held_ids(row: &Row<'_>, first: usize) -> rusqlite::Result<HeldIds> {
    Ok(HeldIds {
        external_id: row.get(first)?,
        anonymous_id: row.get(first + 1)?,
        alias_of: row.get(first + 2)?,
    })
}
