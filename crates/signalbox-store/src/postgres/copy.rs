//! Copying an embedded installation's rows into PostgreSQL (`signalbox migrate`), the part that
//! knows no component: each crate that owns a store reads its own SQLite file into [`Cell`]s
//! and hands them to a [`TableCopy`], which converts every cell to the type of its target
//! column (read from `information_schema`), inserts them in multi-row statements and, at the
//! end, moves the table's identity and serial sequences past the largest copied value.
//!
//! Conversions: an integer into a `BOOLEAN` is 0 or 1; an integer into a `TIMESTAMPTZ` is
//! microseconds since the Unix epoch, text an RFC 3339 instant; text into `JSONB` must be
//! JSON; text into `BYTEA` is its UTF-8 bytes. A value that does not fit its column is an
//! error naming the table and column, never a silent change.

use deadpool_postgres::{GenericClient, Pool};
use jiff::Timestamp;
use signalbox_core::PostgresUrl;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use crate::postgres::{connect_pool, pg_error, pool_error};
use crate::StoreError;

/// One value as an embedded store holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// Why a copy stopped.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The target already holds Signalbox data: nothing was written.
    #[error(
        "the target database is not empty ({what}): migrate copies into an empty database \
         only (after a copy that stopped halfway, drop the database and create it again)"
    )]
    NotEmpty { what: String },
    /// A value does not fit the column it goes to.
    #[error("cannot copy {table}.{column}: {reason}")]
    Convert {
        table: String,
        column: String,
        reason: String,
    },
    /// The target table is not there (its component's schema was not created).
    #[error("the target database has no table {0}")]
    NoTable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A column of a target table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `information_schema.columns.data_type`, e.g. `bigint`, `jsonb`.
    pub data_type: String,
}

/// One table to copy: its name in the embedded file, its name on PostgreSQL, and SQL
/// expressions over the embedded row for target columns whose value is not a column of the
/// same name (a renamed column, another unit). A target column with neither keeps its default.
#[derive(Debug, Clone, Copy)]
pub struct TableMap {
    pub from: &'static str,
    pub to: &'static str,
    pub exprs: &'static [(&'static str, &'static str)],
}

impl TableMap {
    /// A table of the same shape under another name.
    pub const fn renamed(from: &'static str, to: &'static str) -> TableMap {
        TableMap {
            from,
            to,
            exprs: &[],
        }
    }
}

/// Rows read from an embedded file, a chunk at a time, or why reading stopped.
pub type RowChunks = tokio::sync::mpsc::Receiver<Result<Vec<Vec<Cell>>, String>>;

/// The embedded side of a copy: each component reads its own file.
pub trait EmbeddedTables {
    /// The columns of `table` in the embedded file (none when the file has no such table).
    fn columns(&self, table: &str) -> Result<Vec<String>, String>;
    /// The rows `select` answers, each with `width` cells, read on a thread of its own.
    fn rows(&self, select: String, width: usize) -> RowChunks;
}

/// What a component copies when its embedded file is not there: each table, with no rows.
pub fn nothing_copied(tables: &[TableMap]) -> Vec<(String, u64)> {
    tables.iter().map(|t| (t.to.to_owned(), 0)).collect()
}

/// Copies `tables` of the embedded SQLite file at `from` (opened read-only) into the database
/// at `to`, where the component has made its schema: [`copy_tables`] over a [`SqliteFile`].
///
/// [`SqliteFile`]: crate::sqlite::SqliteFile
pub async fn copy_file(
    from: &std::path::Path,
    to: &PostgresUrl,
    tables: &[TableMap],
    progress: &dyn Fn(&str, u64),
) -> Result<Vec<(String, u64)>, CopyError> {
    let target = Target::connect(to).await?;
    copy_tables(
        &crate::sqlite::SqliteFile::new(from),
        &target,
        tables,
        progress,
    )
    .await
}

/// Copies `tables` from `source` into `target`, table by table, telling `progress` the rows
/// copied so far of each (by its PostgreSQL name); returns the rows copied per table. The
/// target's tables exist (the component migrated them) and hold no rows.
pub async fn copy_tables(
    source: &dyn EmbeddedTables,
    target: &Target,
    tables: &[TableMap],
    progress: &dyn Fn(&str, u64),
) -> Result<Vec<(String, u64)>, CopyError> {
    let mut counts = Vec::with_capacity(tables.len());
    for map in tables {
        let embedded = source
            .columns(map.from)
            .map_err(|reason| CopyError::Convert {
                table: map.from.to_owned(),
                column: "*".into(),
                reason,
            })?;
        let mut columns = Vec::new();
        let mut select = Vec::new();
        for column in target.columns(map.to).await? {
            let expr = match map.exprs.iter().find(|(name, _)| *name == column.name) {
                Some((_, expr)) => (*expr).to_owned(),
                None if embedded.contains(&column.name) => quote(&column.name),
                None => continue,
            };
            select.push(expr);
            columns.push(column);
        }
        progress(map.to, 0);
        if embedded.is_empty() || columns.is_empty() {
            counts.push((map.to.to_owned(), 0));
            continue;
        }
        let sql = format!("SELECT {} FROM {}", select.join(", "), quote(map.from));
        let mut rows = source.rows(sql, columns.len());
        let mut copy = target.table(map.to, columns);
        while let Some(chunk) = rows.recv().await {
            let chunk = chunk.map_err(|reason| CopyError::Convert {
                table: map.from.to_owned(),
                column: "*".into(),
                reason,
            })?;
            copy.push(chunk).await?;
            progress(map.to, copy.copied());
        }
        let copied = copy.finish().await?;
        progress(map.to, copied);
        counts.push((map.to.to_owned(), copied));
    }
    Ok(counts)
}

/// Rows a statement carries at most (PostgreSQL allows 65,535 parameters a statement).
const CHUNK_ROWS: usize = 1_000;
const MAX_PARAMS: usize = 65_535;

/// A connection to the database rows are copied into.
pub struct Target {
    pool: Pool,
}

impl Target {
    /// Connects to `url`.
    pub async fn connect(url: &PostgresUrl) -> Result<Target, CopyError> {
        Ok(Target {
            pool: connect_pool(url, 2)?,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, CopyError> {
        Ok(self.pool.get().await.map_err(pool_error)?)
    }

    /// Refuses a database that holds anything of Signalbox's: a recorded schema version, or
    /// any table of the current schema with a row in it. Reads only.
    pub async fn ensure_empty(&self) -> Result<(), CopyError> {
        let client = self.client().await?;
        let tables = client
            .query(
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
                 ORDER BY table_name",
                &[],
            )
            .await
            .map_err(pg_error)?;
        for row in tables {
            let table: String = row.get(0);
            let holds_rows: bool = client
                .query_one(
                    &format!("SELECT EXISTS (SELECT 1 FROM {})", quote(&table)),
                    &[],
                )
                .await
                .map_err(pg_error)?
                .get(0);
            if holds_rows {
                let what = if table == "signalbox_schema" {
                    "a schema version is recorded in signalbox_schema".to_owned()
                } else {
                    format!("table {table} holds rows")
                };
                return Err(CopyError::NotEmpty { what });
            }
        }
        Ok(())
    }

    /// The columns of `table` a copy writes: every column but generated ones, in order.
    pub async fn columns(&self, table: &str) -> Result<Vec<Column>, CopyError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1
                   AND is_generated = 'NEVER'
                 ORDER BY ordinal_position",
                &[&table],
            )
            .await
            .map_err(pg_error)?;
        if rows.is_empty() {
            return Err(CopyError::NoTable(table.to_owned()));
        }
        Ok(rows
            .into_iter()
            .map(|row| Column {
                name: row.get(0),
                data_type: row.get(1),
            })
            .collect())
    }

    /// Empties `table` (a row the component's migration wrote, such as a head or version
    /// row, which the copy then brings over from the embedded store).
    pub async fn clear(&self, table: &str) -> Result<(), CopyError> {
        let client = self.client().await?;
        client
            .execute(&format!("DELETE FROM {}", quote(table)), &[])
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// Runs one statement of a component's own (rebuilding what PostgreSQL keeps beside the
    /// copied rows), returning the rows it touched.
    pub async fn execute(&self, sql: &str) -> Result<u64, CopyError> {
        let client = self.client().await?;
        Ok(client.execute(sql, &[]).await.map_err(pg_error)?)
    }

    /// Starts copying into `table`, writing `columns` (a subset of [`Target::columns`], in the
    /// order each row's cells come).
    pub fn table(&self, table: &str, columns: Vec<Column>) -> TableCopy<'_> {
        let per_statement = (MAX_PARAMS / columns.len().max(1)).clamp(1, CHUNK_ROWS);
        TableCopy {
            target: self,
            table: table.to_owned(),
            columns,
            per_statement,
            pending: Vec::new(),
            copied: 0,
        }
    }
}

/// The rows of one table on their way in. Rows are sent in statements of many rows; call
/// [`TableCopy::finish`] to send the rest and move the table's sequences.
pub struct TableCopy<'a> {
    target: &'a Target,
    table: String,
    columns: Vec<Column>,
    per_statement: usize,
    pending: Vec<Vec<Value>>,
    copied: u64,
}

impl TableCopy<'_> {
    /// The columns rows are written to, in order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Rows written so far.
    pub fn copied(&self) -> u64 {
        self.copied
    }

    /// Adds rows (each with one cell per column), sending full statements as they fill.
    pub async fn push(&mut self, rows: Vec<Vec<Cell>>) -> Result<(), CopyError> {
        for row in rows {
            if row.len() != self.columns.len() {
                return Err(CopyError::Convert {
                    table: self.table.clone(),
                    column: "*".into(),
                    reason: format!(
                        "a row of {} values for {} columns",
                        row.len(),
                        self.columns.len()
                    ),
                });
            }
            let values = row
                .into_iter()
                .zip(&self.columns)
                .map(|(cell, column)| {
                    convert(cell, &column.data_type).map_err(|reason| CopyError::Convert {
                        table: self.table.clone(),
                        column: column.name.clone(),
                        reason,
                    })
                })
                .collect::<Result<Vec<Value>, CopyError>>()?;
            self.pending.push(values);
            if self.pending.len() >= self.per_statement {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), CopyError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.pending);
        let names: Vec<String> = self.columns.iter().map(|c| quote(&c.name)).collect();
        let mut sql = format!(
            "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE VALUES ",
            quote(&self.table),
            names.join(", ")
        );
        let mut n = 0;
        for (i, _) in rows.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for (j, column) in self.columns.iter().enumerate() {
                if j > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                sql.push_str(&format!("${n}{}", placeholder_cast(&column.data_type)));
            }
            sql.push(')');
        }
        let params: Vec<&(dyn ToSql + Sync)> = rows
            .iter()
            .flatten()
            .map(|v| v as &(dyn ToSql + Sync))
            .collect();
        let client = self.target.client().await?;
        let written = client
            .execute(&sql, &params)
            .await
            .map_err(|err| statement_error(&self.table, err))?;
        self.copied += written;
        Ok(())
    }

    /// Sends the rows still pending and moves every identity or serial sequence of the table
    /// past the largest value copied, so rows made later get new ids. Returns the rows copied.
    pub async fn finish(mut self) -> Result<u64, CopyError> {
        self.flush().await?;
        let client = self.target.client().await?;
        let table = quote(&self.table);
        for column in &self.columns {
            let sequence: Option<String> = client
                .query_one(
                    "SELECT pg_get_serial_sequence($1, $2)",
                    &[&table, &column.name],
                )
                .await
                .map_err(pg_error)?
                .get(0);
            let Some(sequence) = sequence else { continue };
            client
                .execute(
                    &format!(
                        "SELECT setval($1::text::regclass, m) FROM (SELECT MAX({}) AS m FROM {table}) t
                         WHERE m IS NOT NULL",
                        quote(&column.name)
                    ),
                    &[&sequence],
                )
                .await
                .map_err(pg_error)?;
        }
        Ok(self.copied)
    }
}

/// A failed insert: a value the server refused names the table (the database's own message
/// names the column); a lost connection stays "retry later".
fn statement_error(table: &str, err: tokio_postgres::Error) -> CopyError {
    if err.is_closed() {
        return CopyError::Store(pg_error(err));
    }
    let reason = match err.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => err.to_string(),
    };
    CopyError::Convert {
        table: table.to_owned(),
        column: "*".into(),
        reason,
    }
}

/// `name` as a quoted identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The cast on a parameter, naming the type the value is sent as.
fn placeholder_cast(data_type: &str) -> &'static str {
    match data_type {
        "boolean" => "::boolean",
        "smallint" => "::smallint",
        "integer" => "::integer",
        "bigint" => "::bigint",
        "real" => "::real",
        "double precision" => "::double precision",
        "bytea" => "::bytea",
        "timestamp with time zone" => "::timestamptz",
        "jsonb" => "::text::jsonb",
        "json" => "::text::json",
        _ => "::text",
    }
}

/// A value converted for its column, sent as the type [`placeholder_cast`] names.
#[derive(Debug)]
enum Value {
    Null,
    Bool(bool),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Text(String),
    Bytes(Vec<u8>),
    Time(Timestamp),
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Bool(v) => v.to_sql(ty, out),
            Value::I16(v) => v.to_sql(ty, out),
            Value::I32(v) => v.to_sql(ty, out),
            Value::I64(v) => v.to_sql(ty, out),
            Value::F32(v) => v.to_sql(ty, out),
            Value::F64(v) => v.to_sql(ty, out),
            Value::Text(v) => v.to_sql(ty, out),
            Value::Bytes(v) => v.to_sql(ty, out),
            Value::Time(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn convert(cell: Cell, data_type: &str) -> Result<Value, String> {
    if cell == Cell::Null {
        return Ok(Value::Null);
    }
    let kind = match &cell {
        Cell::Null => "null",
        Cell::Int(_) => "an integer",
        Cell::Real(_) => "a real",
        Cell::Text(_) => "text",
        Cell::Blob(_) => "a blob",
    };
    let mismatch = || format!("{kind} does not fit a {data_type} column");
    Ok(match data_type {
        "boolean" => match cell {
            Cell::Int(0) => Value::Bool(false),
            Cell::Int(1) => Value::Bool(true),
            Cell::Text(t) if t == "true" || t == "false" => Value::Bool(t == "true"),
            _ => return Err(mismatch()),
        },
        "smallint" | "integer" | "bigint" => {
            let v = match cell {
                Cell::Int(v) => v,
                Cell::Real(r) if r.fract() == 0.0 && r.abs() < 9.0e15 => r as i64,
                Cell::Text(t) => t.trim().parse::<i64>().map_err(|_| mismatch())?,
                _ => return Err(mismatch()),
            };
            match data_type {
                "smallint" => Value::I16(i16::try_from(v).map_err(|_| mismatch())?),
                "integer" => Value::I32(i32::try_from(v).map_err(|_| mismatch())?),
                _ => Value::I64(v),
            }
        }
        "real" | "double precision" => {
            let v = match cell {
                Cell::Int(v) => v as f64,
                Cell::Real(r) => r,
                Cell::Text(t) => t.trim().parse::<f64>().map_err(|_| mismatch())?,
                _ => return Err(mismatch()),
            };
            if data_type == "real" {
                Value::F32(v as f32)
            } else {
                Value::F64(v)
            }
        }
        "bytea" => match cell {
            Cell::Blob(b) => Value::Bytes(b),
            Cell::Text(t) => Value::Bytes(t.into_bytes()),
            _ => return Err(mismatch()),
        },
        "timestamp with time zone" => match cell {
            Cell::Int(us) => {
                Value::Time(Timestamp::from_microsecond(us).map_err(|e| e.to_string())?)
            }
            Cell::Text(t) => Value::Time(
                t.parse::<Timestamp>()
                    .map_err(|e| format!("{t:?} is no instant: {e}"))?,
            ),
            _ => return Err(mismatch()),
        },
        "jsonb" | "json" => match cell {
            Cell::Text(t) => {
                serde_json::from_str::<&serde_json::value::RawValue>(&t)
                    .map_err(|e| format!("not JSON: {e}"))?;
                Value::Text(t)
            }
            _ => return Err(mismatch()),
        },
        _ => match cell {
            Cell::Text(t) => Value::Text(t),
            Cell::Int(v) => Value::Text(v.to_string()),
            Cell::Real(r) => Value::Text(r.to_string()),
            Cell::Blob(b) => Value::Text(String::from_utf8(b).map_err(|_| mismatch())?),
            Cell::Null => Value::Null,
        },
    })
}

#[cfg(test)]
mod tests;
