//! SQLite and PostgreSQL implementations of the jetsaga [`Store`] port.
//!
//! Both keep three tables per function: `kv` (key, value, version),
//! `inbox` (ids of processed input events) and `outbox` (events waiting to
//! be published). A [`Commit`] batch is one transaction; conditions are
//! checked with `UPDATE ... WHERE version = $n` / `INSERT ... ON CONFLICT
//! DO NOTHING` and the affected row count, so concurrent writers on the
//! same key have exactly one winner.
//!
//! - [`SqliteStore`]: one database file per function, WAL mode; the
//!   embedded default.
//! - [`PostgresStore`]: one schema per function in a shared database
//!   (`DATABASE_URL`).
//!
//! The statement logic is written once (the `sql_store!` macro) and
//! instantiated for both drivers; only DDL and transaction start differ.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jetsaga_core::{Commit, CommitError, Expect, Item, OutboxRecord, Store, StoreError, async_trait};
pub use sqlx::postgres::PgPool;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Row};

/// The statements of one store, with table names resolved.
#[derive(Debug)]
struct Statements {
    /// Table names, for statements built per batch.
    inbox_table: String,
    outbox_table: String,
    get: Arc<str>,
    scan: Arc<str>,
    insert: Arc<str>,
    update: Arc<str>,
    upsert: Arc<str>,
    delete: Arc<str>,
    delete_any: Arc<str>,
    exists: Arc<str>,
    inbox_get: Arc<str>,
    outbox_for_event: Arc<str>,
    outbox_pending: Arc<str>,
    outbox_delete: Arc<str>,
}

impl Statements {
    /// `prefix` qualifies table names (`"schema".` for PostgreSQL, empty for SQLite).
    fn new(prefix: &str) -> Self {
        let s = |sql: String| -> Arc<str> { sql.into() };
        Self {
            inbox_table: format!("{prefix}inbox"),
            outbox_table: format!("{prefix}outbox"),
            get: s(format!("SELECT value, version FROM {prefix}kv WHERE key = $1")),
            scan: s(format!("SELECT key, value, version FROM {prefix}kv WHERE key >= $1 AND key < $2 ORDER BY key")),
            insert: s(format!(
                "INSERT INTO {prefix}kv (key, value, version) VALUES ($1, $2, 1) ON CONFLICT (key) DO NOTHING"
            )),
            update: s(format!(
                "UPDATE {prefix}kv SET value = $1, version = version + 1 WHERE key = $2 AND version = $3"
            )),
            upsert: s(format!(
                "INSERT INTO {prefix}kv (key, value, version) VALUES ($1, $2, 1) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = {prefix}kv.version + 1"
            )),
            delete: s(format!("DELETE FROM {prefix}kv WHERE key = $1 AND version = $2")),
            delete_any: s(format!("DELETE FROM {prefix}kv WHERE key = $1")),
            exists: s(format!("SELECT version FROM {prefix}kv WHERE key = $1")),
            inbox_get: s(format!("SELECT 1 FROM {prefix}inbox WHERE event_id = $1")),
            outbox_for_event: s(format!(
                "SELECT id, subject, payload, traceparent FROM {prefix}outbox WHERE event_id = $1 ORDER BY seq"
            )),
            outbox_pending: s(format!(
                "SELECT id, subject, payload, traceparent FROM {prefix}outbox ORDER BY seq LIMIT $1"
            )),
            outbox_delete: s(format!("DELETE FROM {prefix}outbox WHERE id = $1")),
        }
    }
}

/// `($1, $2), ($3, $4), …`: `rows` tuples of `width` numbered placeholders.
fn placeholders(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|r| format!("({})", (1..=width).map(|c| format!("${}", r * width + c)).collect::<Vec<_>>().join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows per multi-row insert, well under both drivers' parameter limits.
const ROWS_PER_INSERT: usize = 200;

fn q(sql: &Arc<str>) -> AssertSqlSafe<Arc<str>> {
    AssertSqlSafe(sql.clone())
}

/// Exclusive upper bound of the keys starting with `prefix`.
fn prefix_end(prefix: &str) -> String {
    format!("{prefix}{}", char::MAX)
}

fn to_version(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

macro_rules! sql_store {
    ($store:ident, $backend:literal, $pool:ty) => {
        impl $store {
            fn error(e: sqlx::Error) -> StoreError {
                StoreError::new($backend, e.to_string())
            }

            fn outbox_rows(rows: Vec<<$pool as PoolRow>::Row>) -> Result<Vec<OutboxRecord>, StoreError> {
                rows.into_iter()
                    .map(|row| {
                        Ok(OutboxRecord {
                            id: row.try_get(0).map_err(Self::error)?,
                            subject: row.try_get(1).map_err(Self::error)?,
                            payload: row.try_get(2).map_err(Self::error)?,
                            traceparent: row.try_get(3).map_err(Self::error)?,
                        })
                    })
                    .collect()
            }
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn get(&self, key: &str) -> Result<Option<Item>, StoreError> {
                let row =
                    sqlx::query(q(&self.sql.get)).bind(key).fetch_optional(&self.pool).await.map_err(Self::error)?;
                row.map(|row| {
                    let version: i64 = row.try_get(1).map_err(Self::error)?;
                    Ok(Item { value: row.try_get(0).map_err(Self::error)?, version: version as u64 })
                })
                .transpose()
            }

            async fn scan(&self, prefix: &str) -> Result<Vec<(String, Item)>, StoreError> {
                let rows = sqlx::query(q(&self.sql.scan))
                    .bind(prefix)
                    .bind(prefix_end(prefix))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Self::error)?;
                rows.into_iter()
                    .map(|row| {
                        let version: i64 = row.try_get(2).map_err(Self::error)?;
                        let item = Item { value: row.try_get(1).map_err(Self::error)?, version: version as u64 };
                        Ok((row.try_get(0).map_err(Self::error)?, item))
                    })
                    .collect()
            }

            async fn commit(&self, commits: &[Commit]) -> Result<(), CommitError> {
                let mut tx = self.pool.begin_with(self.begin).await.map_err(Self::error)?;
                let at = now_ms();
                // Every statement is a round trip to the driver: the inbox and
                // outbox rows of the whole batch go in a few multi-row inserts.
                let mut recorded = std::collections::HashSet::new();
                for chunk in commits.chunks(ROWS_PER_INSERT) {
                    let sql = format!(
                        "INSERT INTO {} (event_id, processed_at_ms) VALUES {} ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                        self.sql.inbox_table,
                        placeholders(chunk.len(), 2)
                    );
                    // Its text varies with the batch size: not worth a cached statement.
                    let mut insert = sqlx::query(AssertSqlSafe(sql)).persistent(false);
                    for commit in chunk {
                        insert = insert.bind(&commit.event_id).bind(at);
                    }
                    for row in insert.fetch_all(&mut *tx).await.map_err(Self::error)? {
                        recorded.insert(row.try_get::<String, _>(0).map_err(Self::error)?);
                    }
                }
                if recorded.len() < commits.len() {
                    // Already processed, or twice in this batch.
                    let mut seen = std::collections::HashSet::new();
                    let duplicate = commits
                        .iter()
                        .find(|c| !recorded.contains(&c.event_id) || !seen.insert(c.event_id.as_str()))
                        .expect("a shortfall has a culprit");
                    return Err(CommitError::Duplicate { event_id: duplicate.event_id.clone() });
                }
                for commit in commits {
                    for write in &commit.writes {
                        let applied = match (&write.value, write.expect) {
                            (Some(value), Expect::Absent) => {
                                sqlx::query(q(&self.sql.insert)).bind(&write.key).bind(value).execute(&mut *tx).await
                            }
                            (Some(value), Expect::Version(v)) => {
                                sqlx::query(q(&self.sql.update))
                                    .bind(value)
                                    .bind(&write.key)
                                    .bind(to_version(v))
                                    .execute(&mut *tx)
                                    .await
                            }
                            (Some(value), Expect::Any) => {
                                sqlx::query(q(&self.sql.upsert)).bind(&write.key).bind(value).execute(&mut *tx).await
                            }
                            (None, Expect::Version(v)) => {
                                sqlx::query(q(&self.sql.delete))
                                    .bind(&write.key)
                                    .bind(to_version(v))
                                    .execute(&mut *tx)
                                    .await
                            }
                            (None, Expect::Any) => {
                                sqlx::query(q(&self.sql.delete_any)).bind(&write.key).execute(&mut *tx).await
                            }
                            (None, Expect::Absent) => {
                                let found = sqlx::query(q(&self.sql.exists))
                                    .bind(&write.key)
                                    .fetch_optional(&mut *tx)
                                    .await
                                    .map_err(Self::error)?;
                                if found.is_some() {
                                    return Err(CommitError::Conflict { key: write.key.clone() });
                                }
                                continue;
                            }
                        }
                        .map_err(Self::error)?;
                        let must_apply = !matches!((&write.value, write.expect), (None, Expect::Any));
                        if must_apply && applied.rows_affected() != 1 {
                            return Err(CommitError::Conflict { key: write.key.clone() });
                        }
                    }
                }
                let outbox: Vec<(&str, &OutboxRecord)> =
                    commits.iter().flat_map(|c| c.outbox.iter().map(move |r| (c.event_id.as_str(), r))).collect();
                for chunk in outbox.chunks(ROWS_PER_INSERT) {
                    let sql = format!(
                        "INSERT INTO {} (id, event_id, subject, payload, traceparent) VALUES {}",
                        self.sql.outbox_table,
                        placeholders(chunk.len(), 5)
                    );
                    let mut insert = sqlx::query(AssertSqlSafe(sql)).persistent(false);
                    for (event_id, record) in chunk {
                        insert = insert
                            .bind(&record.id)
                            .bind(*event_id)
                            .bind(&record.subject)
                            .bind(&record.payload)
                            .bind(&record.traceparent);
                    }
                    insert.execute(&mut *tx).await.map_err(Self::error)?;
                }
                tx.commit().await.map_err(Self::error)?;
                Ok(())
            }

            async fn processed(&self, event_id: &str) -> Result<Option<Vec<OutboxRecord>>, StoreError> {
                let seen = sqlx::query(q(&self.sql.inbox_get))
                    .bind(event_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Self::error)?;
                if seen.is_none() {
                    return Ok(None);
                }
                let rows = sqlx::query(q(&self.sql.outbox_for_event))
                    .bind(event_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Self::error)?;
                Self::outbox_rows(rows).map(Some)
            }

            async fn unpublished(&self, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
                let rows = sqlx::query(q(&self.sql.outbox_pending))
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Self::error)?;
                Self::outbox_rows(rows)
            }

            async fn mark_published(&self, ids: &[String]) -> Result<(), StoreError> {
                if ids.is_empty() {
                    return Ok(());
                }
                let mut tx = self.pool.begin_with(self.begin).await.map_err(Self::error)?;
                for id in ids {
                    sqlx::query(q(&self.sql.outbox_delete)).bind(id).execute(&mut *tx).await.map_err(Self::error)?;
                }
                tx.commit().await.map_err(Self::error)
            }
        }
    };
}

/// Names the row type of a pool, so the macro can stay driver-neutral.
trait PoolRow {
    type Row;
}
impl PoolRow for SqlitePool {
    type Row = sqlx::sqlite::SqliteRow;
}
impl PoolRow for PgPool {
    type Row = sqlx::postgres::PgRow;
}

/// How durable SQLite commits are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=NORMAL` in WAL mode: survives a process crash; the last
    /// commits may be lost on power failure. The default.
    #[default]
    Normal,
    /// `synchronous=FULL`: fsync on every commit; survives power loss.
    Full,
}

/// A function's store in its own SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    sql: Arc<Statements>,
    begin: &'static str,
}

const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS inbox (event_id TEXT PRIMARY KEY, processed_at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    event_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    payload BLOB NOT NULL,
    traceparent TEXT
);
CREATE INDEX IF NOT EXISTS outbox_event_id ON outbox (event_id);
";

impl SqliteStore {
    /// Opens (creating if needed) the store file at `path`.
    pub async fn open(path: impl AsRef<Path>, durability: Durability) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::new("sqlite", format!("cannot create directory {}: {e}", dir.display())))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match durability {
                Durability::Normal => SqliteSynchronous::Normal,
                Durability::Full => SqliteSynchronous::Full,
            })
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::new("sqlite", format!("cannot open {}: {e}", path.display())))?;
        sqlx::raw_sql(SQLITE_SCHEMA)
            .execute(&pool)
            .await
            .map_err(|e| StoreError::new("sqlite", format!("cannot create tables in {}: {e}", path.display())))?;
        // BEGIN IMMEDIATE takes the write lock up front, so two writers
        // queue on busy_timeout instead of failing on lock upgrade.
        Ok(Self { pool, sql: Arc::new(Statements::new("")), begin: "BEGIN IMMEDIATE" })
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

sql_store!(SqliteStore, "sqlite", SqlitePool);

/// A function's store in its own schema of a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    sql: Arc<Statements>,
    begin: &'static str,
    schema: String,
}

/// Connects a pool to `url` for [`PostgresStore::open`].
pub async fn connect_postgres(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(|e| StoreError::new("postgres", format!("cannot connect to {}: {e}", redact(url))))
}

/// Hides the password of a connection URL in messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Checks a schema name: lower-case letters, digits and `_`, starting with a letter, at most 63 bytes.
pub fn validate_schema_name(schema: &str) -> Result<(), StoreError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase())
        && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::new(
            "postgres",
            format!(
                "invalid schema name {schema:?}: use lower-case letters, digits and _, starting with a letter, at most 63 characters"
            ),
        ))
    }
}

impl PostgresStore {
    /// Opens (creating if needed) the store in `schema`.
    pub async fn open(pool: PgPool, schema: &str) -> Result<Self, StoreError> {
        validate_schema_name(schema)?;
        let ddl = format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
             CREATE TABLE IF NOT EXISTS \"{schema}\".kv (key TEXT COLLATE \"C\" PRIMARY KEY, value BYTEA NOT NULL, version BIGINT NOT NULL);
             CREATE TABLE IF NOT EXISTS \"{schema}\".inbox (event_id TEXT PRIMARY KEY, processed_at_ms BIGINT NOT NULL);
             CREATE TABLE IF NOT EXISTS \"{schema}\".outbox (
                 seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 id TEXT NOT NULL UNIQUE,
                 event_id TEXT NOT NULL,
                 subject TEXT NOT NULL,
                 payload BYTEA NOT NULL,
                 traceparent TEXT
             );
             CREATE INDEX IF NOT EXISTS outbox_event_id ON \"{schema}\".outbox (event_id);"
        );
        // Two processes opening the same schema at once would race on
        // CREATE ... IF NOT EXISTS; an advisory lock serialises them.
        let mut tx = pool.begin().await.map_err(|e| StoreError::new("postgres", e.to_string()))?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(schema)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::new("postgres", e.to_string()))?;
        sqlx::raw_sql(AssertSqlSafe(ddl))
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::new("postgres", format!("cannot create schema {schema}: {e}")))?;
        tx.commit().await.map_err(|e| StoreError::new("postgres", e.to_string()))?;
        let prefix = format!("\"{schema}\".");
        Ok(Self { pool, sql: Arc::new(Statements::new(&prefix)), begin: "BEGIN", schema: schema.to_string() })
    }

    /// The schema this store lives in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Drops the schema and everything in it (test clean-up).
    pub async fn drop_schema(&self) -> Result<(), StoreError> {
        sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema)))
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::new("postgres", e.to_string()))
    }
}

sql_store!(PostgresStore, "postgres", PgPool);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }

    #[test]
    fn schema_names_are_checked() {
        assert!(validate_schema_name("jetsaga_inventory").is_ok());
        let err = validate_schema_name("Robert'); DROP").unwrap_err();
        assert!(err.message.contains("invalid schema name"), "{err}");
    }
}
