//! SQLite: one database file per function, WAL mode, one connection,
//! driven in place on the caller's thread (see `sqlite/connection.rs` for why).

mod connection;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use jetsaga_core::{StoreError, async_trait};

use crate::driver::{Cell, Column, Driver, Refused, RowColumns, cells};
use crate::plan::{Bind, Check, Params, Refusal, Step};
use crate::store::{SqlStore, Statements};

use self::connection::Connection;

/// How long a commit waits for another connection's write lock (another
/// process on the same file) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest pause between two tries while another connection holds the lock.
const BUSY_PAUSE: Duration = Duration::from_millis(20);

/// Pages of write-ahead log past which it is checkpointed in the
/// background (SQLite's own threshold).
const CHECKPOINT_PAGES: u32 = 1000;

/// Pages of write-ahead log past which a write waits for the checkpoint
/// under way: a writer faster than the disk (a slow fsync of the database
/// file, a shared CI disk) would otherwise grow the log without bound, as
/// the checkpoint never catches up. SQLite itself checkpoints inside the
/// commit; this keeps commits off the disk's path until the log is 3× past
/// the threshold (about 12 MiB), then falls back to that throttle.
const BACKLOG_PAGES: u32 = 3 * CHECKPOINT_PAGES;

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

/// The connection, to use alone; `None` once closed (the next use opens it again).
type Shared = Arc<tokio::sync::Mutex<Option<Connection>>>;

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
///
/// Checkpoints (copying the write-ahead log into the database file and
/// syncing it), which SQLite would run inside the commit that takes the
/// log past 1,000 pages, run on a blocking thread instead (see [`Checkpointer`]).
#[derive(Debug)]
pub struct SqliteDriver {
    connection: Shared,
    /// Pages in the write-ahead log, as of the last commit.
    wal_pages: Arc<AtomicU32>,
    checkpointer: Arc<Checkpointer>,
    durability: Durability,
    path: PathBuf,
}

/// Checkpoints a store's write-ahead log, off the commit path.
///
/// First on a connection of its own, `PASSIVE`: it copies what the log
/// holds while the writer goes on committing. That never lets the log
/// start over under a steady load (there are always newer pages behind
/// it), so it then takes the writer's connection for a moment (commits
/// wait for it asynchronously) and checkpoints the few pages committed
/// meanwhile on it, with no commit in progress: the log is then wholly
/// copied, and the next commit starts it over.
#[derive(Debug)]
struct Checkpointer {
    own: std::sync::Mutex<Option<Connection>>,
    writer: Shared,
    /// A checkpoint is under way (at most one at a time).
    running: AtomicBool,
    /// Wakes the writes waiting for a checkpoint to end (see [`BACKLOG_PAGES`]).
    ended: tokio::sync::Notify,
    durability: Durability,
    path: PathBuf,
}

impl Checkpointer {
    /// Runs on a blocking thread (it waits for the disk and for the writer's lock).
    fn checkpoint(&self) {
        const CHECKPOINT: &str = "PRAGMA wal_checkpoint(PASSIVE)";
        let bulk = {
            let mut own = self.own.lock().unwrap_or_else(PoisonError::into_inner);
            match own.as_mut() {
                Some(connection) => connection.execute_batch(CHECKPOINT),
                None => {
                    connect(&self.path, self.durability).and_then(|opened| own.insert(opened).execute_batch(CHECKPOINT))
                }
            }
        };
        let tail = bulk.and_then(|()| match self.writer.blocking_lock().as_mut() {
            Some(writer) => writer.execute_batch(CHECKPOINT),
            None => Ok(()),
        });
        if let Err(e) = tail {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot checkpoint the write-ahead log; tried again after later commits");
        }
        self.running.store(false, Ordering::Release);
        self.ended.notify_waiters();
    }

    /// Waits for the checkpoint under way, if any, to end.
    async fn wait(&self) {
        let ended = self.ended.notified();
        tokio::pin!(ended);
        // Registered before `running` is read, so an end in between is not missed.
        ended.as_mut().enable();
        if self.running.load(Ordering::Acquire) {
            ended.await;
        }
    }
}

/// Opens a connection to the store's file, set up as every use needs.
fn connect(path: &Path, durability: Durability) -> Result<Connection, connection::Error> {
    let mut connection = Connection::open(path)?;
    let synchronous = match durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    // Switching to WAL needs the lock for a moment: waited for here, once.
    // `temp_store = MEMORY` keeps statement journals (a multi-row statement's
    // undo inside a commit) in memory; they spilled to a temporary file.
    connection.execute_batch(&format!(
        "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
         PRAGMA temp_store = MEMORY; PRAGMA busy_timeout = 0;",
        BUSY_TIMEOUT.as_millis()
    ))?;
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
///
/// The outbox has no index on `event_id`: it only served a redelivery's
/// lookup of its input's events and the inbox sweep, while every commit
/// and every removal paid a page of it (without it: less CPU per saga in
/// six same-session pairs of seven, see bench/results/README.md). The
/// outbox holds the few milliseconds of events not yet removed, or a
/// backlog while NATS is away, so those lookups scan it; the sweep reads
/// it once (`NOT IN`). Files that have the index lose it when opened.
const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL, expires_at INTEGER);
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
    traceparent TEXT,
    schedule TEXT,
    schedule_at_ms INTEGER
);
DROP INDEX IF EXISTS outbox_event_id;
CREATE INDEX IF NOT EXISTS inbox_processed_at ON inbox (processed_at_ms);
";

/// The sweep of expired keys reads only keys that expire.
const EXPIRY_INDEX: &str = "CREATE INDEX IF NOT EXISTS kv_expires_at ON kv (expires_at) WHERE expires_at IS NOT NULL;";

impl SqlStore<SqliteDriver> {
    /// Opens (creating if needed) the store file at `path`.
    pub async fn open(path: impl AsRef<Path>, durability: Durability) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::new("sqlite", format!("cannot create directory {}: {e}", dir.display())))?;
        }
        let connection = Shared::default();
        let checkpointer = Arc::new(Checkpointer {
            own: std::sync::Mutex::default(),
            writer: connection.clone(),
            running: AtomicBool::new(false),
            ended: tokio::sync::Notify::new(),
            durability,
            path: path.to_path_buf(),
        });
        let driver =
            SqliteDriver { connection, wal_pages: Arc::default(), checkpointer, durability, path: path.to_path_buf() };
        driver.run(|_| Ok(())).await.map_err(|e| driver.open_error("cannot open", e))?;
        driver
            .run(|connection| connection.execute_batch(SQLITE_SCHEMA))
            .await
            .map_err(|e| driver.open_error("cannot create tables in", e))?;
        // Stores created before inbox records kept receipts, before keys
        // could expire, or before outbox records had a schedule of their own
        // (it was written into the subject: such records are read as before,
        // see `OutboxRecord::from_stored`), get the column.
        let columns = "SELECT 'inbox.' || name FROM pragma_table_info('inbox') \
                       UNION ALL SELECT 'kv.' || name FROM pragma_table_info('kv') \
                       UNION ALL SELECT 'outbox.' || name FROM pragma_table_info('outbox')";
        let added = [
            ("inbox.receipt", "ALTER TABLE inbox ADD COLUMN receipt TEXT"),
            ("kv.expires_at", "ALTER TABLE kv ADD COLUMN expires_at INTEGER"),
            ("outbox.schedule", "ALTER TABLE outbox ADD COLUMN schedule TEXT"),
            ("outbox.schedule_at_ms", "ALTER TABLE outbox ADD COLUMN schedule_at_ms INTEGER"),
        ];
        driver
            .run(|connection| {
                let mut present = Vec::new();
                connection.run(columns, &[], false, |row| {
                    present.push(row.text(0)?);
                    Ok(())
                })?;
                for (column, alter) in added {
                    if !present.iter().any(|p| p == column) {
                        connection.execute_batch(alter)?;
                    }
                }
                connection.execute_batch(EXPIRY_INDEX)
            })
            .await
            .map_err(|e| driver.open_error("cannot upgrade", e))?;
        Ok(Self::new(driver, Statements::new("", Params::Positional)))
    }

    /// Closes the connection, once published outbox records are removed.
    pub async fn close(&self) {
        if let Err(e) = self.remove_published_now().await {
            tracing::warn!(error = %e, "closing with published outbox records left: they are published again at the next start");
        }
        let connection = self.driver.connection.lock().await.take();
        drop(connection);
        let checkpointer = self.driver.checkpointer.own.lock().unwrap_or_else(PoisonError::into_inner).take();
        drop(checkpointer);
    }
}

impl SqliteDriver {
    fn open_error(&self, what: &str, e: connection::Error) -> StoreError {
        StoreError::new("sqlite", format!("{what} {}: {e}", self.path.display()))
    }

    fn connect(&self) -> Result<Connection, connection::Error> {
        let mut connection = connect(&self.path, self.durability)?;
        connection.count_wal_pages(self.wal_pages.clone());
        Ok(connection)
    }

    /// After a write: has the log checkpointed once it is long.
    fn checkpoint_when_due(&self) {
        if self.wal_pages.load(Ordering::Relaxed) >= CHECKPOINT_PAGES
            && !self.checkpointer.running.swap(true, Ordering::AcqRel)
        {
            let checkpointer = self.checkpointer.clone();
            drop(tokio::task::spawn_blocking(move || checkpointer.checkpoint()));
        }
    }

    /// Runs `work` on the connection, alone, opening it if it is closed.
    /// A transaction left open (by a panic halfway through a script) is
    /// rolled back first.
    async fn with<T>(
        &self,
        work: &mut impl FnMut(&mut Connection) -> Result<T, connection::Error>,
    ) -> Result<T, connection::Error> {
        let mut connection = self.connection.lock().await;
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
        mut work: impl FnMut(&mut Connection) -> Result<T, connection::Error>,
    ) -> Result<T, connection::Error> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match self.with(&mut work).await {
                Err(e) if e.is_busy() && started.elapsed() < BUSY_TIMEOUT => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(BUSY_PAUSE);
                }
                done => return done,
            }
        }
    }

    /// Runs a write: with the thread marked as blocking when it fsyncs;
    /// then has the log checkpointed if it is due. A write first waits for
    /// the checkpoint under way when the log is [`BACKLOG_PAGES`] long.
    async fn write<T>(
        &self,
        mut work: impl FnMut(&mut Connection) -> Result<T, connection::Error>,
    ) -> Result<T, connection::Error> {
        if self.wal_pages.load(Ordering::Relaxed) >= BACKLOG_PAGES {
            self.checkpointer.wait().await;
        }
        let fsyncs = self.durability == Durability::Full;
        let done = self.run(|connection| if fsyncs { blocking(|| work(connection)) } else { work(connection) }).await;
        self.checkpoint_when_due();
        done
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

/// Runs a commit's statements in the transaction open on `connection`,
/// checking each as it runs; stops at the first check that fails.
fn run_steps(connection: &mut Connection, steps: &[Step<'_>]) -> Result<Option<Refused>, connection::Error> {
    for step in steps {
        let mut found = None;
        let changed = connection.run(&step.sql, &step.binds, true, |row| {
            if found.is_none() {
                found = Some(row.text(0)?);
            }
            Ok(())
        })?;
        let refused = match step.check {
            // A key the query finds refuses the commit, and is its culprit.
            Check::NoRows => found.map(|key| Refused { refusal: Refusal::Conflict, key: Some(key) }),
            Check::Affects(n, refusal) => (changed != n).then_some(Refused { refusal, key: None }),
            Check::Nothing => None,
        };
        if refused.is_some() {
            return Ok(refused);
        }
    }
    Ok(None)
}

#[async_trait]
impl Driver for SqliteDriver {
    const BACKEND: &'static str = "sqlite";

    async fn fetch(
        &self,
        sql: Arc<str>,
        binds: &[Bind<'_>],
        columns: &[Column],
    ) -> Result<Vec<Vec<Cell>>, sqlx::Error> {
        let rows = self
            .run(|connection| {
                let mut rows = Vec::new();
                connection.run(&sql, binds, true, |row| {
                    rows.push(cells(row, columns)?);
                    Ok(())
                })?;
                Ok(rows)
            })
            .await?;
        Ok(rows)
    }

    async fn execute(&self, sql: Arc<str>, binds: &[Bind<'_>]) -> Result<u64, sqlx::Error> {
        Ok(self.write(|connection| connection.run(&sql, binds, true, |_| Ok(()))).await?)
    }

    /// Runs a commit's statements in one transaction. `BEGIN IMMEDIATE`
    /// takes the write lock up front, so two writers (two processes on one
    /// file) queue for it instead of failing on lock upgrade. A check that
    /// fails, or an error, rolls the transaction back.
    async fn transact(&self, steps: &[Step<'_>]) -> Result<Option<Refused>, sqlx::Error> {
        let refused = self
            .write(|connection| {
                connection.run("BEGIN IMMEDIATE", &[], true, |_| Ok(()))?;
                let refused = run_steps(connection, steps).and_then(|refused| {
                    if refused.is_none() {
                        connection.run("COMMIT", &[], true, |_| Ok(()))?;
                    }
                    Ok(refused)
                });
                if connection.in_transaction() {
                    connection.run("ROLLBACK", &[], true, |_| Ok(()))?;
                }
                refused
            })
            .await?;
        Ok(refused)
    }
}

#[cfg(test)]
mod tests {
    use jetsaga_core::{Commit, Expect, Store, Write};

    use super::*;

    /// A file written before keys could expire (no `expires_at` column)
    /// opens with its values intact and takes retentions from then on.
    #[tokio::test]
    async fn a_store_from_before_retentions_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let mut old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL);
             INSERT INTO kv VALUES ('order/1', X'7B7D', 3);",
        )
        .unwrap();
        drop(old);
        let store = SqliteStore::open(&path, Durability::Normal).await.unwrap();
        assert_eq!(store.get("order/1").await.unwrap().unwrap().version, 3);
        let mut ended = Write::new("order/1", Some(b"{}".to_vec()), Expect::Version(3));
        ended.expires_at = Some(0);
        store.commit(&[Commit { event_id: "e".into(), writes: vec![ended], ..Commit::default() }]).await.unwrap();
        assert_eq!(store.sweep_expired(1).await.unwrap(), 1);
        assert_eq!(store.get("order/1").await.unwrap(), None);
    }
}
