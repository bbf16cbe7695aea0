//! SQLite: one database file per function, WAL mode, one connection.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use jetsaga_core::{StoreError, async_trait};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Either, Executor, Row};

use crate::driver::{Cell, Column, Driver, Refused, bind_all, cells};
use crate::plan::{Bind, Check, Params, Refusal, Step};
use crate::store::{SqlStore, Statements};

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
pub type SqliteStore = SqlStore<SqliteDriver>;

/// The SQLite side of a [`SqliteStore`].
#[derive(Debug)]
pub struct SqliteDriver {
    pool: SqlitePool,
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

impl SqlStore<SqliteDriver> {
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
        Ok(Self::new(SqliteDriver { pool }, Statements::new("", Params::Json)))
    }

    /// Closes the connection.
    pub async fn close(&self) {
        self.driver.pool.close().await;
    }
}

#[async_trait]
impl Driver for SqliteDriver {
    const BACKEND: &'static str = "sqlite";

    async fn fetch(
        &self,
        sql: Arc<str>,
        binds: &[Bind<'_>],
        columns: &[Column],
        cached: bool,
    ) -> Result<Vec<Vec<Cell>>, sqlx::Error> {
        let query = bind_all(sqlx::query(AssertSqlSafe(sql)).persistent(cached), binds);
        query.fetch_all(&self.pool).await?.iter().map(|row| cells(row, columns)).collect()
    }

    async fn execute(&self, sql: Arc<str>, binds: &[Bind<'_>], cached: bool) -> Result<u64, sqlx::Error> {
        let query = bind_all(sqlx::query(AssertSqlSafe(sql)).persistent(cached), binds);
        Ok(query.execute(&self.pool).await?.rows_affected())
    }

    /// Runs a commit's statements as one script: one round trip to the
    /// connection's worker thread (SQLite numbers `?` across the script).
    /// `BEGIN IMMEDIATE` takes the write lock up front, so two writers
    /// queue on `busy_timeout` instead of failing on lock upgrade.
    async fn transact(&self, steps: &[Step<'_>], cached: bool) -> Result<Option<Refused>, sqlx::Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let script = steps.iter().map(|s| s.sql.as_str()).collect::<Vec<_>>().join(";\n");
        let query =
            bind_all(sqlx::query(AssertSqlSafe(script)).persistent(cached), steps.iter().flat_map(|s| &s.binds));
        let mut refused = None;
        {
            let connection: &mut sqlx::SqliteConnection = &mut tx;
            let mut results = connection.fetch_many(query);
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
        }
        match refused {
            None => tx.commit().await?,
            Some(_) => tx.rollback().await?,
        }
        Ok(refused)
    }
}
