//! A full, ordered dump of the derived state: what the rebuild test compares.

use rusqlite::types::ValueRef;
use rusqlite::Connection;
use serde_json::Value;

use crate::error::EngageResult;

/// Every table and the order that makes its dump stable. `profiles.changed_seq` is left
/// out: it is the checkpoint of the batch that changed the row, and batches depend on timing.
const TABLES: &[(&str, &str)] = &[
    ("meta", "key"),
    ("counters", "name"),
    ("profiles", "pk"),
    ("lists", "pk"),
    ("list_changes", "pk"),
    ("email_consent", "profile_pk"),
    ("identifiers", "kind, value"),
    ("redirects", "from_pk"),
    ("profile_links", "profile_pk, seq, n"),
    ("profile_origins", "profile_pk, integration, source"),
    ("list_members", "list_id, profile_pk"),
    ("metrics", "pk"),
    ("events", "pk"),
    ("held_calls", "seq"),
    ("problems", "seq, n"),
    ("api_results", "seq"),
    ("quarantine", "seq"),
    ("outbox", "seq, n"),
];

/// One line per row, `table [col, …]`, tables in a fixed order.
pub(crate) fn dump(conn: &Connection) -> EngageResult<String> {
    let mut out = String::new();
    for (table, order) in TABLES {
        let columns = match *table {
            "profiles" => {
                "pk, id, email, phone_number, external_id, anonymous_id, created_us, \
                           updated_us, data, from_segment, segment_user_id"
            }
            _ => "*",
        };
        let mut stmt = conn.prepare(&format!("SELECT {columns} FROM {table} ORDER BY {order}"))?;
        let n = stmt.column_count();
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(n);
            for i in 0..n {
                values.push(match row.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::from(v),
                    ValueRef::Real(v) => Value::from(v),
                    ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::String(format!("{b:?}")),
                });
            }
            out.push_str(table);
            out.push(' ');
            out.push_str(&Value::Array(values).to_string());
            out.push('\n');
        }
    }
    Ok(out)
}
