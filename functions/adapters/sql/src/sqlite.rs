//! SQLite: one database file per function, WAL mode, one connection,
//! driven in place on the caller's thread (see `raw.rs` for why).

mod raw;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jetsaga_core::{StoreError, async_trait};

use crate::driver::{Cell, Column, Driver, Refused};
use crate::plan::{Bind, Check, Params, Refusal, Step};
use crate::store::{SqlStore, Statements};

/// How long a commit waits for another connection's write lock (another
/// process on the same file) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest pause between two tries while another connection holds the lock.
const BUSY_PAUSE: Duration = Duration::from_millis(20);

/// Pages of write-ahead log past which it is checkpointed in the
/// background (SQLite's own threshold).
const CHECKPOINT_PAGES: u32 = 1000;

/// Pages past which the writer checkpoints itself after its commit, should
/// the background checkpoints fail: the log must not grow without bound.
const CHECKPOINT_NOW_PAGES: u32 = 16 * CHECKPOINT_PAGES;

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

/// The SQLite side of a [`SqliteStore`]: one connection, owned, used in place.
///
/// Not a pool: SQLite has one writer anyway, and a connection's page cache
/// is dropped whenever another connection has written (so several would
/// re-read pages on every transaction). Not on a thread of its own: each
/// round trip to it was two thread wake-ups, which cost more than the
/// statements. A read or a whole commit is one call, made with the
/// connection's lock held; nothing awaits while it is held, so a commit
/// cannot be cancelled halfway. It never sleeps in SQLite on another
/// process's lock either (`busy_timeout` is 0): a busy database is tried
/// again after an asynchronous pause, for [`BUSY_TIMEOUT`] at most. Under
/// [`Durability::Full`] a write's fsync runs with the thread marked as
/// blocking, so the runtime moves its other tasks elsewhere meanwhile.
/// Checkpoints (copying the write-ahead log into the database file and
/// syncing it, which SQLite would do inside a commit every 1,000 pages)
/// run on a blocking thread of their own, on a second connection.
#[derive(Debug)]
pub struct SqliteDriver {
    /// `None` once closed (the next use opens it again).
    connection: Mutex<Option<raw::Connection>>,
    /// Pages in the write-ahead log, as of the last commit.
    wal_pages: Arc<AtomicU32>,
    checkpointer: Arc<Checkpointer>,
    durability: Durability,
    path: PathBuf,
}

/// Checkpoints a store's write-ahead log on a connection of its own.
#[derive(Debug)]
struct Checkpointer {
    connection: Mutex<Option<raw::Connection>>,
    /// A checkpoint is under way (at most one at a time).
    running: AtomicBool,
    durability: Durability,
    path: PathBuf,
}

impl Checkpointer {
    /// Copies the log into the database in two passes: `PASSIVE` copies
    /// what is there without holding up the writer, which goes on
    /// committing; `FULL` then holds the write lock while it copies the few
    /// pages committed meanwhile, so that the next commit starts the log
    /// over (commits wait for it asynchronously, see [`SqliteDriver::run`]).
    fn checkpoint(&self) {
        let mut connection = self.connection.lock().unwrap_or_else(PoisonError::into_inner);
        let done = match connection.as_mut() {
            Some(connection) => Ok(connection),
            None => connect(&self.path, self.durability)
                .and_then(|mut opened| {
                    // Waits for the writer's transaction in progress, if any.
                    opened.execute_batch("PRAGMA busy_timeout = 1000")?;
                    Ok(opened)
                })
                .map(|opened| connection.insert(opened)),
        }
        .and_then(|connection| connection.execute_batch("PRAGMA wal_checkpoint(PASSIVE); PRAGMA wal_checkpoint(FULL)"));
        if let Err(e) = done
            && !e.is_busy()
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot checkpoint the write-ahead log; tried again after later commits");
        }
        self.running.store(false, Ordering::Release);
    }
}

/// Opens a connection to the store's file, set up as every use needs.
fn connect(path: &Path, durability: Durability) -> Result<raw::Connection, raw::Error> {
    let mut connection = raw::Connection::open(path)?;
    let synchronous = match durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    // Switching to WAL needs the lock for a moment: waited for here, once.
    connection.execute_batch(&format!(
        "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
         PRAGMA busy_timeout = 0;",
        BUSY_TIMEOUT.as_millis()
    ))?;
    connection.execute_batch(REFUSALS)?;
    Ok(connection)
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
        let checkpointer = Arc::new(Checkpointer {
            connection: Mutex::default(),
            running: AtomicBool::new(false),
            durability,
            path: path.to_path_buf(),
        });
        let driver = SqliteDriver {
            connection: Mutex::default(),
            wal_pages: Arc::default(),
            checkpointer,
            durability,
            path: path.to_path_buf(),
        };
        driver.run(|_| Ok(())).await.map_err(|e| driver.open_error("cannot open", e))?;
        driver
            .run(|connection| connection.execute_batch(SQLITE_SCHEMA))
            .await
            .map_err(|e| driver.open_error("cannot create tables in", e))?;
        // Stores created before inbox records kept receipts get the column.
        let columns: Arc<str> = "SELECT name FROM pragma_table_info('inbox')".into();
        driver
            .run(|connection| {
                let mut has_receipts = false;
                connection.run(&columns, &[], false, |row| {
                    has_receipts |= row.text(0)? == "receipt";
                    Ok(())
                })?;
                if !has_receipts {
                    connection.execute_batch("ALTER TABLE inbox ADD COLUMN receipt TEXT")?;
                }
                Ok(())
            })
            .await
            .map_err(|e| driver.open_error("cannot upgrade", e))?;
        Ok(Self::new(driver, Statements::new("", Params::Json)))
    }

    /// Closes the connection.
    pub async fn close(&self) {
        let connection = self.driver.connection.lock().unwrap_or_else(PoisonError::into_inner).take();
        drop(connection);
        let checkpointer = self.driver.checkpointer.connection.lock().unwrap_or_else(PoisonError::into_inner).take();
        drop(checkpointer);
    }
}

impl SqliteDriver {
    fn open_error(&self, what: &str, e: raw::Error) -> StoreError {
        StoreError::new("sqlite", format!("{what} {}: {e}", self.path.display()))
    }

    fn connect(&self) -> Result<raw::Connection, raw::Error> {
        let mut connection = connect(&self.path, self.durability)?;
        connection.count_wal_pages(self.wal_pages.clone());
        Ok(connection)
    }

    /// After a write: checkpoints the log once it is long, in the
    /// background, or in place once it is far too long (see [`CHECKPOINT_NOW_PAGES`]).
    fn checkpoint_when_due(&self, connection: &mut raw::Connection) -> Result<(), raw::Error> {
        let pages = self.wal_pages.load(Ordering::Relaxed);
        if pages >= CHECKPOINT_NOW_PAGES {
            return blocking(|| connection.execute_batch("PRAGMA wal_checkpoint(PASSIVE)"));
        }
        if pages >= CHECKPOINT_PAGES && !self.checkpointer.running.swap(true, Ordering::AcqRel) {
            let checkpointer = self.checkpointer.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(move || checkpointer.checkpoint())),
                Err(_) => checkpointer.checkpoint(),
            }
        }
        Ok(())
    }

    /// Runs `work` on the connection, alone, opening it if it is closed.
    /// A transaction left open (by a panic halfway through a script) is
    /// rolled back first.
    fn with<T>(&self, work: &mut impl FnMut(&mut raw::Connection) -> Result<T, raw::Error>) -> Result<T, raw::Error> {
        let mut connection = self.connection.lock().unwrap_or_else(PoisonError::into_inner);
        if connection.is_none() {
            *connection = Some(self.connect()?);
        }
        let connection = connection.as_mut().expect("opened above");
        if connection.in_transaction() {
            connection.execute_batch("ROLLBACK")?;
        }
        work(connection)
    }

    /// Runs `work` (see [`SqliteDriver::with`]), again after a pause while
    /// another connection holds the database's lock.
    async fn run<T>(
        &self,
        mut work: impl FnMut(&mut raw::Connection) -> Result<T, raw::Error>,
    ) -> Result<T, raw::Error> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match self.with(&mut work) {
                Err(e) if e.is_busy() && started.elapsed() < BUSY_TIMEOUT => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(BUSY_PAUSE);
                }
                done => return done,
            }
        }
    }

    /// Runs a write: with the thread marked as blocking when it fsyncs;
    /// then checkpoints if the log is due.
    async fn write<T>(
        &self,
        mut work: impl FnMut(&mut raw::Connection) -> Result<T, raw::Error>,
    ) -> Result<T, raw::Error> {
        let fsyncs = self.durability == Durability::Full;
        self.run(|connection| {
            let done = if fsyncs { blocking(|| work(connection))? } else { work(connection)? };
            self.checkpoint_when_due(connection)?;
            Ok(done)
        })
        .await
    }
}

/// Runs `work`, which may wait on the disk, telling a multi-threaded tokio
/// runtime so, so that it moves this thread's other tasks elsewhere meanwhile.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread) {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// Which check a commit script's error is, if it is one (see [`REFUSALS`]).
fn refusal_of(e: &raw::Error) -> Option<Refusal> {
    if e.code != libsqlite3_sys::SQLITE_CONSTRAINT_CHECK {
        None
    } else if e.message.contains("jetsaga_duplicate") {
        Some(Refusal::Duplicate)
    } else if e.message.contains("jetsaga_conflict") {
        Some(Refusal::Conflict)
    } else {
        None
    }
}

/// Reads `columns` from a row.
fn cells(row: &raw::Row<'_>, columns: &[Column]) -> Result<Vec<Cell>, raw::Error> {
    columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            Ok(match column {
                Column::Text => Cell::Text(row.text(i)?),
                Column::MaybeText => Cell::MaybeText(row.maybe_text(i)?),
                Column::Blob => Cell::Blob(row.blob(i)?),
                Column::Int => Cell::Int(row.int(i)?),
            })
        })
        .collect()
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
        let rows = self
            .run(|connection| {
                let mut rows = Vec::new();
                connection.run(&sql, binds, cached, |row| {
                    rows.push(cells(row, columns)?);
                    Ok(())
                })?;
                Ok(rows)
            })
            .await?;
        Ok(rows)
    }

    async fn execute(&self, sql: Arc<str>, binds: &[Bind<'_>], cached: bool) -> Result<u64, sqlx::Error> {
        Ok(self.write(|connection| connection.run(&sql, binds, cached, |_| Ok(()))).await?)
    }

    /// Runs a commit as one script. `BEGIN IMMEDIATE` takes the write lock
    /// up front, so two writers (two processes on one file) queue for it
    /// instead of failing on lock upgrade. A failed check stops the
    /// script; the transaction is then rolled back.
    async fn transact(&self, steps: &[Step<'_>], cached: bool) -> Result<Option<Refused>, sqlx::Error> {
        let (script, binds) = commit_script(steps);
        let script: Arc<str> = script.into();
        let refused = self
            .write(|connection| match connection.run(&script, &binds, cached, |_| Ok(())) {
                Ok(_) => Ok(None),
                Err(e) => {
                    if connection.in_transaction() {
                        connection.execute_batch("ROLLBACK")?;
                    }
                    match refusal_of(&e) {
                        Some(refusal) => Ok(Some(Refused { refusal, key: None })),
                        None => Err(e),
                    }
                }
            })
            .await?;
        Ok(refused)
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
