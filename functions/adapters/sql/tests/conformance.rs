//! SQLite and PostgreSQL pass the shared store conformance suite.
//!
//! PostgreSQL is real: `DATABASE_URL`, or 127.0.0.1:5432 (database `test`)
//! by default. Each test gets its own schema, dropped afterwards.

use std::sync::Arc;

use jetsaga_core::Store;
use jetsaga_sql::{Durability, PostgresStore, SqliteStore};

mod sqlite {
    use super::*;

    async fn make() -> Arc<dyn Store> {
        // The directory must outlive the store; leak it for the test's lifetime.
        let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
        Arc::new(SqliteStore::open(dir.path().join("fn.db"), Durability::Normal).await.unwrap())
    }

    jetsaga_core::store_conformance_tests!(make());
}

mod postgres {
    use super::*;

    pub fn database_url() -> String {
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    async fn make() -> Arc<dyn Store> {
        let url = database_url();
        let pool = jetsaga_sql::connect_postgres(&url, 10).await.unwrap_or_else(|e| {
            panic!("{e}\nThese tests need PostgreSQL: start it (scripts/setup does) or set DATABASE_URL.")
        });
        let schema = format!("conformance_{}", uuid::Uuid::new_v4().simple());
        Arc::new(PostgresStore::open(pool, &schema).await.unwrap())
    }

    jetsaga_core::store_conformance_tests!(make());
}

#[tokio::test]
async fn sqlite_state_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/fn.db");
    let store = SqliteStore::open(&path, Durability::Full).await.unwrap();
    let write = jetsaga_core::Write::new("k", Some(b"1".to_vec()), jetsaga_core::Expect::Absent);
    store
        .commit(&[jetsaga_core::Commit { event_id: "e".into(), writes: vec![write], ..Default::default() }])
        .await
        .unwrap();
    store.close().await;
    let reopened = SqliteStore::open(&path, Durability::Normal).await.unwrap();
    assert_eq!(reopened.get("k").await.unwrap().unwrap().version, 1);
    assert_eq!(reopened.processed("e").await.unwrap(), Some(vec![]));
}

#[tokio::test]
async fn postgres_schemas_keep_functions_apart() {
    let pool = jetsaga_sql::connect_postgres(&postgres::database_url(), 4).await.unwrap();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let a = PostgresStore::open(pool.clone(), &format!("iso_a_{tag}")).await.unwrap();
    let b = PostgresStore::open(pool.clone(), &format!("iso_b_{tag}")).await.unwrap();
    let write = jetsaga_core::Write::new("k", Some(b"1".to_vec()), jetsaga_core::Expect::Absent);
    a.commit(&[jetsaga_core::Commit { event_id: "e".into(), writes: vec![write], ..Default::default() }])
        .await
        .unwrap();
    assert!(a.get("k").await.unwrap().is_some());
    assert!(b.get("k").await.unwrap().is_none());
    assert_eq!(b.processed("e").await.unwrap(), None);
    // Opening again is idempotent.
    PostgresStore::open(pool, a.schema()).await.unwrap();
    a.drop_schema().await.unwrap();
    b.drop_schema().await.unwrap();
}

/// SQLite would checkpoint its write-ahead log inside the commit that makes
/// it long; the store does it on another connection instead, and the log
/// must still start over rather than grow with every commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_the_write_ahead_log_is_checkpointed_and_stays_short() {
    use jetsaga_core::{Commit, Expect, Write};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fn.db");
    let store = SqliteStore::open(&path, Durability::Normal).await.unwrap();
    let commits = 3000;
    for i in 0..commits {
        let commit = Commit {
            event_id: format!("e{i}"),
            writes: (0..2).map(|k| Write::new(format!("k{i}/{k}"), Some(vec![7; 4096]), Expect::Absent)).collect(),
            outbox: Vec::new(),
            receipt: None,
        };
        store.commit(&[commit]).await.unwrap();
    }
    let wal = std::fs::metadata(dir.path().join("fn.db-wal")).unwrap().len();
    let database = std::fs::metadata(&path).unwrap().len();
    // Never checkpointed, the log would hold every page written: more than the 24 MiB of values.
    assert!(wal < 16 << 20, "the log is {} MiB after {commits} commits", wal >> 20);
    assert!(database > 24 << 20, "the values reached the database file: {} MiB", database >> 20);
    for i in [0, commits / 2, commits - 1] {
        assert_eq!(store.get(&format!("k{i}/1")).await.unwrap().map(|v| v.value.len()), Some(4096));
    }
}

/// A caller that gives up on a commit (a shutdown, a timeout) must never
/// leave it halfway: the store then holds it whole or not at all, and the
/// next commit goes through. SQLite commits run in place, so a commit is
/// done within the poll that starts it and no caller can stop one midway
/// (with a connection on a thread of its own, a dropped caller could leave
/// the transaction open: this test caught that).
#[tokio::test]
async fn sqlite_a_cancelled_commit_leaves_nothing_half_done() {
    use futures::FutureExt;
    use jetsaga_core::{Commit, Expect, OutboxRecord, Write};

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("fn.db"), Durability::Normal).await.unwrap();
    let commit = |i: usize| Commit {
        event_id: format!("e{i}"),
        writes: (0..50).map(|k| Write::new(format!("k{i}/{k}"), Some(vec![7; 512]), Expect::Absent)).collect(),
        outbox: vec![OutboxRecord {
            id: format!("o{i}"),
            subject: "s".into(),
            payload: b"{}".to_vec(),
            traceparent: None,
            schedule: None,
        }],
        receipt: None,
    };
    for i in 0..20 {
        let first = [commit(i)];
        // Polled once, then its caller is gone.
        let polled = store.commit(&first).now_or_never();
        assert!(matches!(polled, Some(Ok(_))), "commit {i} was not done in the poll that started it: {polled:?}");
        let next = [commit(1000 + i)];
        store.commit(&next).await.unwrap();
        let done = store.processed(&format!("e{i}")).await.unwrap().is_some();
        let written = store.get(&format!("k{i}/49")).await.unwrap().is_some();
        assert_eq!(done, written, "commit {i}: its inbox row and its last write go together");
        let keys: Vec<String> = (0..50).map(|k| format!("k{i}/{k}")).collect();
        let found = store.get_many(&keys).await.unwrap().iter().filter(|v| v.is_some()).count();
        assert!(found == 0 || found == 50, "commit {i}: {found} of its 50 writes");
        assert!(store.get(&format!("k{}/49", 1000 + i)).await.unwrap().is_some());
    }
}

/// Published outbox records leave the table itself, not just the store's
/// answers: with the next commit's transaction, or by themselves when no
/// commit comes. A second store on the same data (as after a restart) must
/// not find them, and must find what is still unpublished.
async fn published_records_leave_the_table(first: Arc<dyn Store>, reopen: impl AsyncFn() -> Arc<dyn Store>) {
    use jetsaga_core::{Commit, OutboxRecord};

    let record = |id: &str| OutboxRecord {
        id: id.into(),
        subject: "orders.evt.created".into(),
        payload: b"{}".to_vec(),
        traceparent: None,
        schedule: None,
    };
    let commit = |event: &str, records: &[&str]| Commit {
        event_id: event.into(),
        outbox: records.iter().map(|id| record(id)).collect(),
        ..Default::default()
    };
    let ids = |records: Vec<OutboxRecord>| records.into_iter().map(|r| r.id).collect::<Vec<_>>();

    // Removed with the next commit.
    first.commit(&[commit("e1", &["a1", "a2"])]).await.unwrap();
    first.mark_published(&["a1".into(), "a2".into()]).await.unwrap();
    first.commit(&[commit("e2", &["b1"])]).await.unwrap();
    assert_eq!(ids(reopen().await.unpublished(10).await.unwrap()), ["b1"], "the commit after removed a1 and a2");

    // Removed by themselves when no commit follows.
    first.mark_published(&["b1".into()]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(reopen().await.unpublished(10).await.unwrap().is_empty(), "b1 was removed without a commit");
}

#[tokio::test]
async fn sqlite_published_records_leave_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fn.db");
    let first: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, Durability::Normal).await.unwrap());
    published_records_leave_the_table(first, async || -> Arc<dyn Store> {
        let reopened: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, Durability::Normal).await.unwrap());
        reopened
    })
    .await;
}

#[tokio::test]
async fn postgres_published_records_leave_the_table() {
    let pool = jetsaga_sql::connect_postgres(&postgres::database_url(), 4).await.unwrap();
    let schema = format!("published_{}", uuid::Uuid::new_v4().simple());
    let first = Arc::new(PostgresStore::open(pool.clone(), &schema).await.unwrap());
    published_records_leave_the_table(first.clone(), async || -> Arc<dyn Store> {
        let reopened: Arc<dyn Store> = Arc::new(PostgresStore::open(pool.clone(), &schema).await.unwrap());
        reopened
    })
    .await;
    first.drop_schema().await.unwrap();
}

/// A store file made when the outbox had an index on `event_id` loses the
/// index when it is opened (every commit paid a page of it), and keeps
/// its records: a redelivery still finds its events, the relay the rest.
#[tokio::test]
async fn sqlite_an_older_file_loses_the_outbox_event_index() {
    use jetsaga_core::{Commit, OutboxRecord};
    use sqlx::Connection;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fn.db");
    let store = SqliteStore::open(&path, Durability::Normal).await.unwrap();
    let record = OutboxRecord {
        id: "o1".into(),
        subject: "s".into(),
        payload: b"{}".to_vec(),
        traceparent: None,
        schedule: None,
    };
    store
        .commit(&[Commit { event_id: "e1".into(), outbox: vec![record.clone()], ..Default::default() }])
        .await
        .unwrap();
    store.close().await;

    let url = format!("sqlite://{}", path.display());
    let index_count = async || -> i64 {
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let n =
            sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'outbox_event_id'")
                .fetch_one(&mut db)
                .await
                .unwrap();
        db.close().await.unwrap();
        n
    };
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("CREATE INDEX outbox_event_id ON outbox (event_id)").execute(&mut db).await.unwrap();
    db.close().await.unwrap();
    assert_eq!(index_count().await, 1, "the older schema, made by hand");

    let reopened = SqliteStore::open(&path, Durability::Normal).await.unwrap();
    assert_eq!(index_count().await, 0, "opening dropped the index");
    assert_eq!(reopened.processed("e1").await.unwrap(), Some(vec![record.clone()]));
    assert_eq!(reopened.unpublished(10).await.unwrap(), vec![record]);
}

/// A SQLite file from before schedules were a field of their own gets the
/// columns when opened, and its pending records read as new ones.
#[tokio::test]
async fn sqlite_an_older_file_with_pending_schedules_is_upgraded_in_place() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fn.db");
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display())).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE inbox (event_id TEXT PRIMARY KEY, processed_at_ms INTEGER NOT NULL, receipt TEXT) WITHOUT ROWID;
         CREATE TABLE outbox (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, event_id TEXT NOT NULL,
                              subject TEXT NOT NULL, payload BLOB NOT NULL, traceparent TEXT);
         INSERT INTO inbox VALUES ('e1', 0, NULL);",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let (stored, expected) = jetsaga_core::conformance::old_form_outbox();
    for (id, subject) in &stored {
        sqlx::query("INSERT INTO outbox (id, event_id, subject, payload) VALUES (?, 'e1', ?, X'7B7D')")
            .bind(id)
            .bind(subject)
            .execute(&mut db)
            .await
            .unwrap();
    }
    db.close().await.unwrap();
    let store = SqliteStore::open(&path, Durability::Normal).await.unwrap();
    assert_eq!(store.unpublished(10).await.unwrap(), expected);
    assert_eq!(store.processed("e1").await.unwrap(), Some(expected));
}

/// The same for a PostgreSQL schema made by an older jetsaga.
#[tokio::test]
async fn postgres_an_older_schema_with_pending_schedules_is_upgraded_in_place() {
    let pool = jetsaga_sql::connect_postgres(&postgres::database_url(), 4).await.unwrap();
    let schema = format!("old_{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA \"{schema}\";
         CREATE TABLE \"{schema}\".inbox (event_id TEXT PRIMARY KEY, processed_at_ms BIGINT NOT NULL, receipt TEXT);
         CREATE TABLE \"{schema}\".outbox (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             id TEXT NOT NULL UNIQUE, event_id TEXT NOT NULL, subject TEXT NOT NULL, payload BYTEA NOT NULL,
             traceparent TEXT);
         INSERT INTO \"{schema}\".inbox VALUES ('e1', 0, NULL);"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let (stored, expected) = jetsaga_core::conformance::old_form_outbox();
    for (id, subject) in &stored {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO \"{schema}\".outbox (id, event_id, subject, payload) VALUES ($1, 'e1', $2, '\\x7b7d')"
        )))
        .bind(id)
        .bind(subject)
        .execute(&pool)
        .await
        .unwrap();
    }
    let store = PostgresStore::open(pool, &schema).await.unwrap();
    assert_eq!(store.unpublished(10).await.unwrap(), expected);
    assert_eq!(store.processed("e1").await.unwrap(), Some(expected));
    store.drop_schema().await.unwrap();
}
