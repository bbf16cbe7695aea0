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

mod plan;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use jetsaga_core::{Commit, CommitError, Item, OutboxRecord, Store, StoreError, async_trait, net_changes};
use plan::{Bind, Check, Params, Refusal, Step, Tables, commit_steps, first_conflict, list};
pub use sqlx::postgres::PgPool;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Either, Executor, Row};

/// The fixed statements of one store, with table names resolved.
#[derive(Debug)]
struct Statements {
    tables: Tables,
    params: Params,
    get: Arc<str>,
    scan: Arc<str>,
    inbox_get: Arc<str>,
    inbox_receipt: Arc<str>,
    inbox_sweep: Arc<str>,
    outbox_for_event: Arc<str>,
    outbox_pending: Arc<str>,
}

impl Statements {
    /// `prefix` qualifies table names (`"schema".` for PostgreSQL, empty for SQLite).
    fn new(prefix: &str, params: Params) -> Self {
        let s = |sql: String| -> Arc<str> { sql.into() };
        let p = |n: usize| match params {
            Params::Positional => "?".to_string(),
            Params::Numbered => format!("${n}"),
        };
        Self {
            tables: Tables::new(prefix),
            params,
            get: s(format!("SELECT value, version FROM {prefix}kv WHERE key = {}", p(1))),
            scan: s(format!(
                "SELECT key, value, version FROM {prefix}kv WHERE key >= {} AND key < {} ORDER BY key",
                p(1),
                p(2)
            )),
            inbox_get: s(format!("SELECT 1 FROM {prefix}inbox WHERE event_id = {}", p(1))),
            inbox_receipt: s(format!("SELECT receipt FROM {prefix}inbox WHERE event_id = {}", p(1))),
            // An input whose events are still in the outbox keeps its record:
            // a redelivery must find them.
            inbox_sweep: s(format!(
                "DELETE FROM {prefix}inbox WHERE processed_at_ms < {} \
                 AND NOT EXISTS (SELECT 1 FROM {prefix}outbox o WHERE o.event_id = {prefix}inbox.event_id)",
                p(1)
            )),
            outbox_for_event: s(format!(
                "SELECT id, subject, payload, traceparent FROM {prefix}outbox WHERE event_id = {} ORDER BY seq",
                p(1)
            )),
            outbox_pending: s(format!(
                "SELECT id, subject, payload, traceparent FROM {prefix}outbox ORDER BY seq LIMIT {}",
                p(1)
            )),
        }
    }

    /// `SELECT key, value, version … WHERE key IN (…)` for `n` keys.
    fn get_many(&self, n: usize) -> String {
        format!("SELECT key, value, version FROM {} WHERE key IN ({})", self.tables.kv, list(self.params, n))
    }

    /// `DELETE FROM outbox WHERE id IN (…)` for `n` ids.
    fn outbox_delete(&self, n: usize) -> String {
        format!("DELETE FROM {} WHERE id IN ({})", self.tables.outbox, list(self.params, n))
    }
}

/// Keys per `IN (…)` list.
const KEYS_PER_STATEMENT: usize = 500;

/// Statement texts that vary with the batch are cached only for the small
/// batches that recur (a steady trickle of single events); big batches
/// rarely repeat their shape.
const CACHED_UP_TO: usize = 2;

fn q(sql: &Arc<str>) -> AssertSqlSafe<Arc<str>> {
    AssertSqlSafe(sql.clone())
}

/// Exclusive upper bound of the keys starting with `prefix`.
fn prefix_end(prefix: &str) -> String {
    format!("{prefix}{}", char::MAX)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Why a commit's statements did not all hold.
#[derive(Debug)]
struct Refused {
    refusal: Refusal,
    /// The culprit, when the statement named it.
    key: Option<String>,
}

/// Binds a commit step's values; the same for both drivers.
macro_rules! bind_all {
    ($query:expr, $binds:expr) => {{
        let mut query = $query;
        for bind in $binds {
            query = match *bind {
                Bind::Text(v) => query.bind(v),
                Bind::MaybeText(v) => query.bind(v),
                Bind::Blob(v) => query.bind(v),
                Bind::Int(v) => query.bind(v),
            };
        }
        query
    }};
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

            /// Works out, after a refused commit was rolled back, which event or key refused it.
            async fn culprit(&self, commits: &[Commit], refused: Refused) -> CommitError {
                match refused {
                    Refused { refusal: Refusal::Conflict, key: Some(key) } => CommitError::Conflict { key },
                    Refused { refusal: Refusal::Conflict, key: None } => {
                        let changes = net_changes(commits);
                        let keys: Vec<String> = changes.iter().map(|c| c.key.to_string()).collect();
                        match self.get_many(&keys).await {
                            Ok(current) => {
                                let key = first_conflict(&changes, &current).unwrap_or(&keys[0]);
                                CommitError::Conflict { key: key.to_string() }
                            }
                            Err(e) => CommitError::Store(e),
                        }
                    }
                    Refused { refusal: Refusal::Duplicate, .. } => {
                        for commit in commits {
                            match self.processed(&commit.event_id).await {
                                Ok(Some(_)) => return CommitError::Duplicate { event_id: commit.event_id.clone() },
                                Ok(None) => {}
                                Err(e) => return CommitError::Store(e),
                            }
                        }
                        // Inbox rows outlive redeliveries, so this is not expected: name the first event.
                        CommitError::Duplicate { event_id: commits[0].event_id.clone() }
                    }
                }
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

            async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Item>>, StoreError> {
                let mut found: HashMap<String, Item> = HashMap::with_capacity(keys.len());
                for chunk in keys.chunks(KEYS_PER_STATEMENT) {
                    let sql = self.sql.get_many(chunk.len());
                    let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(chunk.len() <= CACHED_UP_TO);
                    for key in chunk {
                        query = query.bind(key);
                    }
                    for row in query.fetch_all(&self.pool).await.map_err(Self::error)? {
                        let version: i64 = row.try_get(2).map_err(Self::error)?;
                        let item = Item { value: row.try_get(1).map_err(Self::error)?, version: version as u64 };
                        found.insert(row.try_get(0).map_err(Self::error)?, item);
                    }
                }
                Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
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
                let mut ids = HashSet::with_capacity(commits.len());
                if let Some(twice) = commits.iter().find(|c| !ids.insert(c.event_id.as_str())) {
                    return Err(CommitError::Duplicate { event_id: twice.event_id.clone() });
                }
                let changes = net_changes(commits);
                let steps = commit_steps(&self.sql.tables, self.sql.params, commits, &changes, now_ms());
                let mut tx = self.pool.begin_with(self.begin).await.map_err(Self::error)?;
                let cached = commits.len() <= CACHED_UP_TO;
                match Self::run_steps(&mut tx, &steps, cached).await.map_err(Self::error)? {
                    None => tx.commit().await.map_err(|e| Self::error(e).into()),
                    Some(refused) => {
                        tx.rollback().await.map_err(Self::error)?;
                        Err(self.culprit(commits, refused).await)
                    }
                }
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

            async fn receipt(&self, event_id: &str) -> Result<Option<String>, StoreError> {
                let row = sqlx::query(q(&self.sql.inbox_receipt))
                    .bind(event_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Self::error)?;
                Ok(row.and_then(|row| row.get::<Option<String>, _>(0)))
            }

            async fn sweep_inbox(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64, StoreError> {
                let done = sqlx::query(q(&self.sql.inbox_sweep))
                    .bind(before.timestamp_millis())
                    .execute(&self.pool)
                    .await
                    .map_err(Self::error)?;
                Ok(done.rows_affected())
            }

            async fn mark_published(&self, ids: &[String]) -> Result<(), StoreError> {
                // Each chunk on its own: removing a published record twice is harmless.
                for chunk in ids.chunks(KEYS_PER_STATEMENT) {
                    let mut query = sqlx::query(AssertSqlSafe(self.sql.outbox_delete(chunk.len())))
                        .persistent(chunk.len() <= CACHED_UP_TO);
                    for id in chunk {
                        query = query.bind(id);
                    }
                    query.execute(&self.pool).await.map_err(Self::error)?;
                }
                Ok(())
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
CREATE TABLE IF NOT EXISTS inbox (event_id TEXT PRIMARY KEY, processed_at_ms INTEGER NOT NULL, receipt TEXT);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    event_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    payload BLOB NOT NULL,
    traceparent TEXT
);
CREATE INDEX IF NOT EXISTS outbox_event_id ON outbox (event_id);
CREATE INDEX IF NOT EXISTS inbox_processed_at ON inbox (processed_at_ms);
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
        // One connection: SQLite has one writer anyway, and a connection's
        // page cache is dropped whenever another connection has written,
        // so a pool of several re-reads pages from disk on every transaction.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::new("sqlite", format!("cannot open {}: {e}", path.display())))?;
        sqlx::raw_sql(SQLITE_SCHEMA)
            .execute(&pool)
            .await
            .map_err(|e| StoreError::new("sqlite", format!("cannot create tables in {}: {e}", path.display())))?;
        // Stores created before inbox records kept receipts get the column.
        let columns = sqlx::query("SELECT name FROM pragma_table_info('inbox')")
            .fetch_all(&pool)
            .await
            .map_err(|e| StoreError::new("sqlite", e.to_string()))?;
        if !columns.iter().any(|row| row.get::<String, _>(0) == "receipt") {
            sqlx::raw_sql("ALTER TABLE inbox ADD COLUMN receipt TEXT")
                .execute(&pool)
                .await
                .map_err(|e| StoreError::new("sqlite", format!("cannot upgrade {}: {e}", path.display())))?;
        }
        // BEGIN IMMEDIATE takes the write lock up front, so two writers
        // queue on busy_timeout instead of failing on lock upgrade.
        Ok(Self { pool, sql: Arc::new(Statements::new("", Params::Positional)), begin: "BEGIN IMMEDIATE" })
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl SqliteStore {
    /// Runs a commit's statements as one script: one round trip to the
    /// connection's worker thread (SQLite numbers `?` across the script).
    async fn run_steps(
        tx: &mut sqlx::SqliteConnection,
        steps: &[Step<'_>],
        cached: bool,
    ) -> Result<Option<Refused>, sqlx::Error> {
        let script = steps.iter().map(|s| s.sql.as_str()).collect::<Vec<_>>().join(";\n");
        let query =
            bind_all!(sqlx::query(AssertSqlSafe(script)).persistent(cached), steps.iter().flat_map(|s| &s.binds));
        let mut results = tx.fetch_many(query);
        let mut refused = None;
        let mut step = 0;
        loop {
            let result = match results.try_next().await {
                Ok(Some(result)) => result,
                Ok(None) => break,
                // The script goes on after a refused check, and a later
                // statement may fail because of what was refused: an input
                // already processed (its inbox row exists) also left its
                // outbox rows, whose ids are derived from it, so inserting
                // them again breaks their uniqueness. The refusal is the
                // answer (the transaction is rolled back either way).
                Err(_) if refused.is_some() => break,
                Err(e) => return Err(e),
            };
            match result {
                // Only a check for absent keys returns rows, each a key that exists.
                Either::Right(row) => {
                    if refused.is_none() {
                        refused = Some(Refused { refusal: Refusal::Conflict, key: Some(row.try_get(0)?) });
                    }
                }
                Either::Left(done) => {
                    if let Some(Check::Affects(n, refusal)) = steps.get(step).map(|s| s.check)
                        && done.rows_affected() != n
                        && refused.is_none()
                    {
                        refused = Some(Refused { refusal, key: None });
                    }
                    step += 1;
                }
            }
        }
        Ok(refused)
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
             CREATE TABLE IF NOT EXISTS \"{schema}\".inbox (event_id TEXT PRIMARY KEY, processed_at_ms BIGINT NOT NULL, receipt TEXT);
             ALTER TABLE \"{schema}\".inbox ADD COLUMN IF NOT EXISTS receipt TEXT;
             CREATE TABLE IF NOT EXISTS \"{schema}\".outbox (
                 seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 id TEXT NOT NULL UNIQUE,
                 event_id TEXT NOT NULL,
                 subject TEXT NOT NULL,
                 payload BYTEA NOT NULL,
                 traceparent TEXT
             );
             CREATE INDEX IF NOT EXISTS outbox_event_id ON \"{schema}\".outbox (event_id);
             CREATE INDEX IF NOT EXISTS inbox_processed_at ON \"{schema}\".inbox (processed_at_ms);"
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
        Ok(Self {
            pool,
            sql: Arc::new(Statements::new(&prefix, Params::Numbered)),
            begin: "BEGIN",
            schema: schema.to_string(),
        })
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

impl PostgresStore {
    /// Runs a commit's statements one by one (PostgreSQL prepares one statement at a time).
    async fn run_steps(
        tx: &mut sqlx::PgConnection,
        steps: &[Step<'_>],
        cached: bool,
    ) -> Result<Option<Refused>, sqlx::Error> {
        for step in steps {
            let query = bind_all!(sqlx::query(AssertSqlSafe(step.sql.clone())).persistent(cached), &step.binds);
            match step.check {
                Check::NoRows => {
                    if let Some(row) = query.fetch_optional(&mut *tx).await? {
                        return Ok(Some(Refused { refusal: Refusal::Conflict, key: Some(row.try_get(0)?) }));
                    }
                }
                Check::Affects(n, refusal) => {
                    if query.execute(&mut *tx).await?.rows_affected() != n {
                        return Ok(Some(Refused { refusal, key: None }));
                    }
                }
                Check::Nothing => {
                    query.execute(&mut *tx).await?;
                }
            }
        }
        Ok(None)
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
