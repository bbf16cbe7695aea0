//! SQLite: one database file per function, WAL mode, one connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jetsaga_core::{StoreError, async_trait};
use sqlx::error::ErrorKind;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Connection, Row};
use tokio::sync::{Mutex, MutexGuard};

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

/// The SQLite side of a [`SqliteStore`]: one connection, owned.
///
/// Not a pool: SQLite has one writer anyway, a connection's page cache is
/// dropped whenever another connection has written (so several would
/// re-read pages on every transaction), and sqlx's pool pings a connection
/// on every checkout and again on every return, each a round trip to the
/// connection's worker thread. Owned, a read is one round trip and a whole
/// commit is one too.
#[derive(Debug)]
pub struct SqliteDriver {
    session: Mutex<Session>,
    options: SqliteConnectOptions,
    path: PathBuf,
}

#[derive(Debug, Default)]
struct Session {
    /// `None` once closed, or after the connection's worker died (the next
    /// use connects again).
    connection: Option<SqliteConnection>,
    /// A commit script was started and not seen to end: its caller was
    /// cancelled while the script ran, which may have left its transaction
    /// open. The next user rolls it back first.
    unfinished: bool,
}

/// Every b-tree a commit touches is a page more written to the WAL, so:
/// the inbox (small rows, only ever inserted) is keyed by its event id
/// itself, not by a rowid plus an index on the id; the outbox's `seq` is
/// the rowid without `AUTOINCREMENT`, whose counter is one more page per
/// commit (a new row still gets a larger `seq` than every row left, which
/// is all "oldest first" needs). `kv` keeps its rowid: its values are big,
/// and updates, most of its writes, leave the key's index alone. Files
/// created with the earlier schema keep it; the statements suit both.
const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS inbox (
    event_id TEXT PRIMARY KEY,
    processed_at_ms INTEGER NOT NULL,
    receipt TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    event_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    payload BLOB NOT NULL,
    traceparent TEXT
);
CREATE INDEX IF NOT EXISTS outbox_event_id ON outbox (event_id);
CREATE INDEX IF NOT EXISTS inbox_processed_at ON inbox (processed_at_ms);
";

/// A connection's own table (never stored in the file) that no row can
/// enter: a commit script inserts into it where a check fails, and the
/// named constraint that refuses the row stops the script and says which
/// check it was. SQLite cannot roll back on a condition by itself, and
/// without this each check would be a round trip of its own.
const REFUSALS: &str = "
CREATE TEMP TABLE IF NOT EXISTS jetsaga_refused (
    duplicate INTEGER CONSTRAINT jetsaga_duplicate CHECK (duplicate IS NULL),
    conflict INTEGER CONSTRAINT jetsaga_conflict CHECK (conflict IS NULL)
)";

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
        let driver = SqliteDriver { session: Mutex::default(), options, path: path.to_path_buf() };
        {
            let mut session = driver.session().await.map_err(|e| driver.open_error("cannot open", e))?;
            let connection = session.connection.as_mut().expect("just connected");
            sqlx::raw_sql(SQLITE_SCHEMA)
                .execute(&mut *connection)
                .await
                .map_err(|e| driver.open_error("cannot create tables in", e))?;
            // Stores created before inbox records kept receipts get the column.
            let columns = sqlx::query("SELECT name FROM pragma_table_info('inbox')")
                .fetch_all(&mut *connection)
                .await
                .map_err(|e| StoreError::new("sqlite", e.to_string()))?;
            if !columns.iter().any(|row| row.get::<String, _>(0) == "receipt") {
                sqlx::raw_sql("ALTER TABLE inbox ADD COLUMN receipt TEXT")
                    .execute(&mut *connection)
                    .await
                    .map_err(|e| driver.open_error("cannot upgrade", e))?;
            }
        }
        Ok(Self::new(driver, Statements::new("", Params::Json)))
    }

    /// Closes the connection.
    pub async fn close(&self) {
        let connection = self.driver.session.lock().await.connection.take();
        if let Some(connection) = connection {
            connection.close().await.ok();
        }
    }
}

impl SqliteDriver {
    fn open_error(&self, what: &str, e: sqlx::Error) -> StoreError {
        StoreError::new("sqlite", format!("{what} {}: {e}", self.path.display()))
    }

    /// The connection, to use alone: connected if it is not, with what a
    /// cancelled commit may have left open rolled back.
    async fn session(&self) -> Result<MutexGuard<'_, Session>, sqlx::Error> {
        let mut session = self.session.lock().await;
        if session.connection.is_none() {
            let mut connection = SqliteConnection::connect_with(&self.options).await?;
            sqlx::raw_sql(REFUSALS).execute(&mut connection).await?;
            *session = Session { connection: Some(connection), unfinished: false };
        }
        if session.unfinished {
            let connection = session.connection.as_mut().expect("connected above");
            if let Err(e) = sqlx::raw_sql("ROLLBACK").execute(connection).await
                && !no_transaction(&e)
            {
                return Err(session.failed(e));
            }
            session.unfinished = false;
        }
        Ok(session)
    }
}

impl Session {
    fn connection(&mut self) -> &mut SqliteConnection {
        self.connection.as_mut().expect("SqliteDriver::session connects")
    }

    /// Passes `e` on; if the connection's worker thread is gone, the next use connects again.
    fn failed(&mut self, e: sqlx::Error) -> sqlx::Error {
        if matches!(e, sqlx::Error::WorkerCrashed) {
            self.connection = None;
        }
        e
    }
}

/// SQLite's answer to a `ROLLBACK` with no transaction open (the script had
/// ended it, or never began it).
fn no_transaction(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|e| e.message().contains("no transaction is active"))
}

/// Which check a commit script's error is, if it is one (see [`REFUSALS`]).
fn refusal_of(e: &sqlx::Error) -> Option<Refusal> {
    let e = e.as_database_error().filter(|e| e.kind() == ErrorKind::CheckViolation)?;
    let message = e.message();
    if message.contains("jetsaga_duplicate") {
        Some(Refusal::Duplicate)
    } else if message.contains("jetsaga_conflict") {
        Some(Refusal::Conflict)
    } else {
        None
    }
}

/// A commit's steps as one script, from `BEGIN IMMEDIATE` to `COMMIT`,
/// each check right after its statement (SQLite numbers `?` across the
/// script). Its text depends only on which steps there are.
fn commit_script<'s>(steps: &'s [Step<'s>]) -> (String, Vec<Bind<'s>>) {
    let mut script = String::from("BEGIN IMMEDIATE;\n");
    let mut binds = Vec::new();
    for step in steps {
        binds.extend(step.binds.iter().cloned());
        match step.check {
            // The step's query becomes the condition: a key it finds refuses.
            Check::NoRows => script.push_str(&format!(
                "INSERT INTO temp.jetsaga_refused (conflict) SELECT 1 FROM ({}) LIMIT 1;\n",
                step.sql
            )),
            Check::Affects(n, refusal) => {
                // `changes()` is the last completed statement's: the step's.
                let column = match refusal {
                    Refusal::Duplicate => "duplicate",
                    Refusal::Conflict => "conflict",
                };
                script.push_str(&format!(
                    "{};\nINSERT INTO temp.jetsaga_refused ({column}) SELECT 1 WHERE changes() <> ?;\n",
                    step.sql
                ));
                binds.push(Bind::Int(i64::try_from(n).unwrap_or(i64::MAX)));
            }
            Check::Nothing => script.push_str(&format!("{};\n", step.sql)),
        }
    }
    script.push_str("COMMIT");
    (script, binds)
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
        let mut session = self.session().await?;
        let query = bind_all(sqlx::query(AssertSqlSafe(sql)).persistent(cached), binds);
        let rows = query.fetch_all(session.connection()).await.map_err(|e| session.failed(e))?;
        rows.iter().map(|row| cells(row, columns)).collect()
    }

    async fn execute(&self, sql: Arc<str>, binds: &[Bind<'_>], cached: bool) -> Result<u64, sqlx::Error> {
        let mut session = self.session().await?;
        let query = bind_all(sqlx::query(AssertSqlSafe(sql)).persistent(cached), binds);
        Ok(query.execute(session.connection()).await.map_err(|e| session.failed(e))?.rows_affected())
    }

    /// Runs a commit as one script: one round trip to the connection's
    /// worker thread when every check holds. `BEGIN IMMEDIATE` takes the
    /// write lock up front, so two writers (two processes on one file)
    /// queue on `busy_timeout` instead of failing on lock upgrade. A failed
    /// check stops the script; the transaction is then rolled back.
    async fn transact(&self, steps: &[Step<'_>], cached: bool) -> Result<Option<Refused>, sqlx::Error> {
        let (script, binds) = commit_script(steps);
        let mut session = self.session().await?;
        session.unfinished = true;
        let query = bind_all(sqlx::query(AssertSqlSafe(script)).persistent(cached), &binds);
        let error = match query.execute(session.connection()).await {
            Ok(_) => {
                session.unfinished = false;
                return Ok(None);
            }
            Err(e) => e,
        };
        if let Err(e) = sqlx::raw_sql("ROLLBACK").execute(session.connection()).await
            && !no_transaction(&e)
        {
            return Err(session.failed(e));
        }
        session.unfinished = false;
        match refusal_of(&error) {
            Some(refusal) => Ok(Some(Refused { refusal, key: None })),
            None => Err(session.failed(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_script_checks_each_statement_where_it_runs() {
        let steps = [
            Step {
                sql: "INSERT INTO inbox …".into(),
                binds: vec![Bind::Int(1)],
                check: Check::Affects(3, Refusal::Duplicate),
            },
            Step { sql: "SELECT key FROM kv …".into(), binds: vec![Bind::Int(2)], check: Check::NoRows },
            Step { sql: "INSERT INTO outbox …".into(), binds: vec![Bind::Int(4)], check: Check::Nothing },
        ];
        let (script, binds) = commit_script(&steps);
        assert_eq!(
            script,
            "BEGIN IMMEDIATE;\n\
             INSERT INTO inbox …;\n\
             INSERT INTO temp.jetsaga_refused (duplicate) SELECT 1 WHERE changes() <> ?;\n\
             INSERT INTO temp.jetsaga_refused (conflict) SELECT 1 FROM (SELECT key FROM kv …) LIMIT 1;\n\
             INSERT INTO outbox …;\n\
             COMMIT"
        );
        let ints: Vec<i64> = binds.iter().map(|b| if let Bind::Int(i) = b { *i } else { panic!("{b:?}") }).collect();
        assert_eq!(ints, [1, 3, 2, 4], "each check's count right after its statement's values");
    }
}
