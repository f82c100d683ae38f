//! A full, ordered dump of the derived state (as `db/dump.rs`): what the rebuild test
//! compares.

use deadpool_postgres::GenericClient;
use serde_json::Value;
use tokio_postgres::types::Type;
use tokio_postgres::Row;

use super::{pg, rows};
use crate::error::{EngageError, EngageResult};

/// Every table and the order that makes its dump stable (text in bytewise order, as SQLite's).
/// `profiles.changed_seq` is left out: it is the checkpoint of the batch that changed the
/// row, and batches depend on timing.
const TABLES: &[(&str, &str)] = &[
    ("meta", r#"key COLLATE "C""#),
    ("counters", r#"name COLLATE "C""#),
    ("profiles", "pk"),
    ("lists", "pk"),
    ("list_changes", "pk"),
    ("email_consent", "profile_pk"),
    ("identifiers", r#"kind COLLATE "C", value COLLATE "C""#),
    ("redirects", "from_pk"),
    ("profile_links", "profile_pk, seq, n"),
    (
        "profile_origins",
        r#"profile_pk, integration COLLATE "C", source COLLATE "C""#,
    ),
    ("list_members", r#"list_id COLLATE "C", profile_pk"#),
    ("metrics", "pk"),
    ("events", "pk"),
    ("held_calls", "seq"),
    ("problems", "seq, n"),
    ("api_results", "seq"),
    ("quarantine", "seq"),
    ("outbox", "seq, n"),
];

/// One line per row, `table [col, …]`, tables in a fixed order.
pub(crate) async fn dump(c: &impl GenericClient) -> EngageResult<String> {
    let mut out = String::new();
    for (table, order) in TABLES {
        let columns = match *table {
            "profiles" => {
                "pk, id, email, phone_number, external_id, anonymous_id, created_us, \
                 updated_us, data, from_segment, segment_user_id"
            }
            _ => "*",
        };
        let sql = format!("SELECT {columns} FROM {table} ORDER BY {order}");
        for row in rows(c, &sql, &[]).await? {
            let values = (0..row.len())
                .map(|i| value(&row, i))
                .collect::<EngageResult<Vec<Value>>>()?;
            out.push_str(table);
            out.push(' ');
            out.push_str(&Value::Array(values).to_string());
            out.push('\n');
        }
    }
    Ok(out)
}

/// A column's value as JSON (bytes as their debug text, as the SQLite dump shows them).
fn value(row: &Row, i: usize) -> EngageResult<Value> {
    let ty = row.columns()[i].type_();
    let value = if *ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(i).map(|v| v.map(Value::from))
    } else if *ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(i).map(|v| v.map(Value::from))
    } else if *ty == Type::FLOAT8 {
        row.try_get::<_, Option<f64>>(i).map(|v| v.map(Value::from))
    } else if *ty == Type::TEXT {
        row.try_get::<_, Option<String>>(i)
            .map(|v| v.map(Value::from))
    } else if *ty == Type::BYTEA {
        row.try_get::<_, Option<Vec<u8>>>(i)
            .map(|v| v.map(|b| Value::String(format!("{:?}", b.as_slice()))))
    } else {
        return Err(EngageError::Internal(format!(
            "cannot dump a column of type {ty}"
        )));
    };
    Ok(value.map_err(pg)?.unwrap_or(Value::Null))
}
