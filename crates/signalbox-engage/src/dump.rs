//! A full, ordered dump of the derived state: what the rebuild test compares.

use rusqlite::types::ValueRef;
use rusqlite::Connection;
use serde_json::Value;

use crate::error::EngageResult;

/// Every table and the order that makes its dump stable.
const TABLES: &[(&str, &str)] = &[
    ("meta", "key"),
    ("counters", "name"),
    ("profiles", "pk"),
    ("identifiers", "kind, value"),
    ("redirects", "from_pk"),
    ("profile_links", "profile_pk, seq, n"),
    ("profile_origins", "profile_pk, integration, source"),
    ("list_members", "list_id, profile_pk"),
    ("metrics", "pk"),
    ("events", "pk"),
    ("held_calls", "seq"),
    ("held_ids", "kind, value, seq"),
    ("problems", "seq, n"),
    ("api_results", "seq"),
];

/// One line per row, `table [col, …]`, tables in a fixed order.
pub(crate) fn dump(conn: &Connection) -> EngageResult<String> {
    let mut out = String::new();
    for (table, order) in TABLES {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))?;
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
