//! PostgreSQL: one schema per function in a shared database.

use std::sync::Arc;
use std::time::Duration;

use jetsaga_core::{StoreError, async_trait};
pub use sqlx::postgres::PgPool;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Row};

use crate::driver::{Cell, Column, Driver, Refused, bind_all, cells};
use crate::plan::{Bind, Check, Params, Step};
use crate::store::{SqlStore, Statements};

/// A function's store in its own schema of a PostgreSQL database.
pub type PostgresStore = SqlStore<PostgresDriver>;

/// The PostgreSQL side of a [`PostgresStore`].
#[derive(Debug)]
pub struct PostgresDriver {
    pool: PgPool,
    schema: String,
}

/// Connects a pool to `url` for [`PostgresStore::open`].
pub async fn connect_postgres(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    let options: sqlx::postgres::PgConnectOptions =
        url.parse().map_err(|e| StoreError::new("postgres", format!("invalid database URL {}: {e}", redact(url))))?;
    // Every statement text a store uses, kept prepared: each kind of change
    // comes in a few sizes (see `plan.rs`), about a hundred texts in all.
    let options = options.statement_cache_capacity(256);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        // No ping before each checkout (a round trip per statement): a
        // connection that broke fails its next statement, which the worker
        // retries, and the pool replaces it.
        .test_before_acquire(false)
        .connect_with(options)
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

impl SqlStore<PostgresDriver> {
    /// Opens (creating if needed) the store in `schema`.
    pub async fn open(pool: PgPool, schema: &str) -> Result<Self, StoreError> {
        validate_schema_name(schema)?;
        let ddl = format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
             CREATE TABLE IF NOT EXISTS \"{schema}\".kv (key TEXT COLLATE \"C\" PRIMARY KEY, value BYTEA NOT NULL, version BIGINT NOT NULL);
             ALTER TABLE \"{schema}\".kv ADD COLUMN IF NOT EXISTS expires_at BIGINT;
             CREATE INDEX IF NOT EXISTS kv_expires_at ON \"{schema}\".kv (expires_at) WHERE expires_at IS NOT NULL;
             CREATE TABLE IF NOT EXISTS \"{schema}\".inbox (event_id TEXT PRIMARY KEY, processed_at_ms BIGINT NOT NULL, receipt TEXT);
             ALTER TABLE \"{schema}\".inbox ADD COLUMN IF NOT EXISTS receipt TEXT;
             CREATE TABLE IF NOT EXISTS \"{schema}\".outbox (
                 seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 id TEXT NOT NULL UNIQUE,
                 event_id TEXT NOT NULL,
                 subject TEXT NOT NULL,
                 payload BYTEA NOT NULL,
                 traceparent TEXT,
                 schedule TEXT,
                 schedule_at_ms BIGINT
             );
             ALTER TABLE \"{schema}\".outbox ADD COLUMN IF NOT EXISTS schedule TEXT;
             ALTER TABLE \"{schema}\".outbox ADD COLUMN IF NOT EXISTS schedule_at_ms BIGINT;
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
        let driver = PostgresDriver { pool, schema: schema.to_string() };
        Ok(Self::new(driver, Statements::new(&prefix, Params::Numbered)))
    }

    /// The schema this store lives in.
    pub fn schema(&self) -> &str {
        &self.driver.schema
    }

    /// Drops the schema and everything in it (test clean-up).
    pub async fn drop_schema(&self) -> Result<(), StoreError> {
        sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.driver.schema)))
            .execute(&self.driver.pool)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::new("postgres", e.to_string()))
    }
}

#[async_trait]
impl Driver for PostgresDriver {
    const BACKEND: &'static str = "postgres";

    async fn fetch(
        &self,
        sql: Arc<str>,
        binds: &[Bind<'_>],
        columns: &[Column],
    ) -> Result<Vec<Vec<Cell>>, sqlx::Error> {
        let query = bind_all(sqlx::query(AssertSqlSafe(sql)), binds);
        query.fetch_all(&self.pool).await?.iter().map(|row| cells(row, columns)).collect()
    }

    async fn execute(&self, sql: Arc<str>, binds: &[Bind<'_>]) -> Result<u64, sqlx::Error> {
        let query = bind_all(sqlx::query(AssertSqlSafe(sql)), binds);
        Ok(query.execute(&self.pool).await?.rows_affected())
    }

    /// Runs a commit's statements one by one (PostgreSQL prepares one
    /// statement at a time), stopping at the first check that fails.
    async fn transact(&self, steps: &[Step<'_>]) -> Result<Option<Refused>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut refused = None;
        for step in steps {
            let query = bind_all(sqlx::query(AssertSqlSafe(step.sql.clone())), &step.binds);
            match step.check {
                Check::NoRows => {
                    if let Some(row) = query.fetch_optional(&mut *tx).await? {
                        refused = Some(Refused { refusal: crate::plan::Refusal::Conflict, key: Some(row.try_get(0)?) });
                    }
                }
                Check::Affects(n, refusal) => {
                    if query.execute(&mut *tx).await?.rows_affected() != n {
                        refused = Some(Refused { refusal, key: None });
                    }
                }
                Check::Nothing => {
                    query.execute(&mut *tx).await?;
                }
            }
            if refused.is_some() {
                break;
            }
        }
        match refused {
            None => tx.commit().await?,
            Some(_) => tx.rollback().await?,
        }
        Ok(refused)
    }
}

impl crate::driver::RowColumns for sqlx::postgres::PgRow {
    type Error = sqlx::Error;

    fn text(&self, column: usize) -> Result<String, sqlx::Error> {
        self.try_get(column)
    }

    fn maybe_text(&self, column: usize) -> Result<Option<String>, sqlx::Error> {
        self.try_get(column)
    }

    fn blob(&self, column: usize) -> Result<Vec<u8>, sqlx::Error> {
        self.try_get(column)
    }

    fn int(&self, column: usize) -> Result<i64, sqlx::Error> {
        self.try_get(column)
    }

    fn maybe_int(&self, column: usize) -> Result<Option<i64>, sqlx::Error> {
        self.try_get(column)
    }
}

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
