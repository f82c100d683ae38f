use super::*;
use crate::postgres::testing::TestDatabase;

async fn client(db: &TestDatabase) -> deadpool_postgres::Object {
    connect_pool(db.url(), 1).unwrap().get().await.unwrap()
}

#[tokio::test]
async fn cells_become_the_types_of_their_columns_and_sequences_move_past_them() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    client(&db)
        .await
        .batch_execute(
            "CREATE TABLE t (
                 id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 flag BOOLEAN,
                 small SMALLINT,
                 n INTEGER,
                 x DOUBLE PRECISION,
                 name TEXT,
                 doc JSONB,
                 raw BYTEA,
                 at TIMESTAMPTZ,
                 doubled BIGINT GENERATED ALWAYS AS (n * 2) STORED
             )",
        )
        .await
        .unwrap();
    let target = Target::connect(db.url()).await.unwrap();
    let columns = target.columns("t").await.unwrap();
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["id", "flag", "small", "n", "x", "name", "doc", "raw", "at"],
        "generated columns are not written"
    );
    let mut copy = target.table("t", columns);
    copy.push(vec![
        vec![
            Cell::Int(7),
            Cell::Int(1),
            Cell::Int(-3),
            Cell::Int(21),
            Cell::Int(2),
            Cell::Text("é \"q\"".into()),
            Cell::Text(r#"{"a":[1,2.5,null]}"#.into()),
            Cell::Blob(vec![0, 255, 10]),
            Cell::Int(1_700_000_000_123_456),
        ],
        vec![
            Cell::Int(3),
            Cell::Int(0),
            Cell::Null,
            Cell::Null,
            Cell::Real(0.1),
            Cell::Int(42),
            Cell::Null,
            Cell::Text("ab".into()),
            Cell::Text("2024-05-06T07:08:09.5Z".into()),
        ],
    ])
    .await
    .unwrap();
    assert_eq!(copy.finish().await.unwrap(), 2);

    let client = client(&db).await;
    let rows = client
        .query(
            "SELECT id, flag, small, n, x, name, doc::text, raw, at, doubled FROM t ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let (first, second) = (&rows[1], &rows[0]);
    assert_eq!(first.get::<_, i64>(0), 7);
    assert!(first.get::<_, bool>(1));
    assert_eq!(first.get::<_, i16>(2), -3);
    assert_eq!(first.get::<_, i32>(3), 21);
    assert_eq!(first.get::<_, f64>(4), 2.0);
    assert_eq!(first.get::<_, String>(5), "é \"q\"");
    assert_eq!(first.get::<_, String>(6), r#"{"a": [1, 2.5, null]}"#);
    assert_eq!(first.get::<_, Vec<u8>>(7), [0, 255, 10]);
    assert_eq!(
        first.get::<_, Timestamp>(8),
        Timestamp::from_microsecond(1_700_000_000_123_456).unwrap()
    );
    assert_eq!(first.get::<_, i64>(9), 42);
    assert!(!second.get::<_, bool>(1));
    assert_eq!(second.get::<_, Option<i16>>(2), None);
    assert_eq!(second.get::<_, f64>(4), 0.1);
    assert_eq!(second.get::<_, String>(5), "42");
    assert_eq!(second.get::<_, Option<String>>(6), None);
    assert_eq!(second.get::<_, Vec<u8>>(7), b"ab");
    assert_eq!(
        second.get::<_, Timestamp>(8),
        "2024-05-06T07:08:09.5Z".parse::<Timestamp>().unwrap()
    );

    // The identity continues after the largest copied id.
    let next: i64 = client
        .query_one("INSERT INTO t (n) VALUES (1) RETURNING id", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, 8);
}

#[tokio::test]
async fn many_rows_go_in_several_statements() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    client(&db)
        .await
        .batch_execute("CREATE TABLE big (id BIGSERIAL PRIMARY KEY, v TEXT NOT NULL)")
        .await
        .unwrap();
    let target = Target::connect(db.url()).await.unwrap();
    let columns = target.columns("big").await.unwrap();
    let mut copy = target.table("big", columns);
    let rows: Vec<Vec<Cell>> = (1..=2_500)
        .map(|i| vec![Cell::Int(i), Cell::Text(format!("v{i}"))])
        .collect();
    copy.push(rows).await.unwrap();
    assert_eq!(
        copy.copied(),
        2_000,
        "full statements are sent as they fill"
    );
    assert_eq!(copy.finish().await.unwrap(), 2_500);
    let next: i64 = client(&db)
        .await
        .query_one("INSERT INTO big (v) VALUES ('new') RETURNING id", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, 2_501);
}

#[tokio::test]
async fn a_value_that_does_not_fit_names_its_table_and_column() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    client(&db)
        .await
        .batch_execute("CREATE TABLE t (flag BOOLEAN, doc JSONB, n SMALLINT)")
        .await
        .unwrap();
    let target = Target::connect(db.url()).await.unwrap();
    let columns = target.columns("t").await.unwrap();
    for (row, column) in [
        (vec![Cell::Int(2), Cell::Null, Cell::Null], "flag"),
        (vec![Cell::Null, Cell::Text("{".into()), Cell::Null], "doc"),
        (vec![Cell::Null, Cell::Null, Cell::Int(70_000)], "n"),
    ] {
        let mut copy = target.table("t", columns.clone());
        let err = copy.push(vec![row]).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot copy t.{column}:")),
            "{err}"
        );
    }
    assert!(matches!(
        target.columns("absent").await,
        Err(CopyError::NoTable(_))
    ));
}

#[tokio::test]
async fn a_database_with_rows_or_a_recorded_schema_is_not_empty() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let target = Target::connect(db.url()).await.unwrap();
    target.ensure_empty().await.unwrap();
    let client = client(&db).await;
    client
        .batch_execute("CREATE TABLE sources (id BIGINT)")
        .await
        .unwrap();
    target.ensure_empty().await.unwrap();
    client
        .batch_execute("INSERT INTO sources VALUES (1)")
        .await
        .unwrap();
    let err = target.ensure_empty().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the target database is not empty (table sources holds rows): migrate copies into an \
         empty database only (after a copy that stopped halfway, drop the database and create \
         it again)"
    );
    client.batch_execute("DELETE FROM sources").await.unwrap();
    let mut schema_client = connect_pool(db.url(), 1).unwrap().get().await.unwrap();
    crate::postgres::schema::migrate(&mut schema_client, "empty", &[])
        .await
        .unwrap();
    let err = target.ensure_empty().await.unwrap_err();
    assert!(err.to_string().contains("signalbox_schema"), "{err}");
}
