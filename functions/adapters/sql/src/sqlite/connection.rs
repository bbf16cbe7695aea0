//! One SQLite connection (through `rusqlite`, on the same bundled library
//! sqlx links), used in place on the caller's thread.
//!
//! Why not sqlx's `SqliteConnection`: it runs every statement on a thread
//! of its own, so each round trip is two thread wake-ups (hand the work
//! over, hand the answer back). A commit here takes tens of microseconds
//! of SQLite's time, and on our 2-core VMs those wake-ups cost more than
//! the work: they were the biggest single item of the runner's profile.
//! Run in place, a read or a whole commit is a function call. `rusqlite`
//! is that call without a line of `unsafe` here. It replaced our own
//! bindings to SQLite's C API after same-run benchmark pairs showed no
//! loss of throughput or latency; the runner's CPU per saga at 500/s was
//! about 2% higher (it copies bound values, and moves a cached statement
//! out of its LRU and back on each use): bench/results/README.md, "rusqlite".

use std::cell::Cell;
use std::ffi::c_int;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use rusqlite::ffi;
use rusqlite::hooks::Wal;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{OpenFlags, Statement};

use crate::driver::RowColumns;
use crate::plan::Bind;

/// Statements kept prepared at most (least recently used go first): a
/// store's statement texts are few (see `plan.rs`), a batch's commit
/// shapes recur.
const CACHED_STATEMENTS: usize = 256;

/// An error SQLite reported: its extended result code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Error {
    pub(crate) code: i32,
    pub(crate) message: String,
}

impl Error {
    fn new(code: i32, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// Another connection (another process on the same file) holds the write lock.
    pub(crate) fn is_busy(&self) -> bool {
        self.code & 0xff == ffi::SQLITE_BUSY
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        let code = e.sqlite_error().map_or(ffi::SQLITE_MISUSE, |failure| failure.extended_code);
        match e {
            rusqlite::Error::SqliteFailure(_, Some(message)) => Self::new(code, message),
            other => Self::new(code, other.to_string()),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(code: {}) {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

impl sqlx::error::DatabaseError for Error {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some(self.code.to_string().into())
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        use sqlx::error::ErrorKind;
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => ErrorKind::UniqueViolation,
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

/// A row being read: valid until the next step of its statement.
pub(crate) struct Row<'r>(&'r rusqlite::Row<'r>);

impl Row<'_> {
    fn value(&self, column: usize) -> Result<ValueRef<'_>, Error> {
        Ok(self.0.get_ref(column)?)
    }
}

fn mismatch(column: usize, what: &str) -> Error {
    Error::new(ffi::SQLITE_MISMATCH, format!("column {column} is {what}"))
}

impl RowColumns for Row<'_> {
    type Error = Error;

    /// A text column; `None` if it is NULL.
    fn maybe_text(&self, column: usize) -> Result<Option<String>, Error> {
        match self.value(column)? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
                String::from_utf8(bytes.to_vec()).map(Some).map_err(|_| mismatch(column, "not UTF-8 text"))
            }
            ValueRef::Integer(i) => Ok(Some(i.to_string())),
            ValueRef::Real(r) => Ok(Some(r.to_string())),
        }
    }

    /// A text column that must not be NULL.
    fn text(&self, column: usize) -> Result<String, Error> {
        self.maybe_text(column)?.ok_or_else(|| mismatch(column, "NULL"))
    }

    /// A blob column (a NULL reads as an error).
    fn blob(&self, column: usize) -> Result<Vec<u8>, Error> {
        match self.value(column)? {
            ValueRef::Null => Err(mismatch(column, "NULL")),
            ValueRef::Text(bytes) | ValueRef::Blob(bytes) => Ok(bytes.to_vec()),
            ValueRef::Integer(_) | ValueRef::Real(_) => Err(mismatch(column, "a number, not a blob")),
        }
    }

    /// An integer column (a NULL reads as an error).
    fn int(&self, column: usize) -> Result<i64, Error> {
        self.maybe_int(column)?.ok_or_else(|| mismatch(column, "NULL"))
    }

    /// An integer column that may be NULL.
    fn maybe_int(&self, column: usize) -> Result<Option<i64>, Error> {
        match self.value(column)? {
            ValueRef::Null => Ok(None),
            ValueRef::Integer(i) => Ok(Some(i)),
            ValueRef::Real(_) | ValueRef::Text(_) | ValueRef::Blob(_) => Err(mismatch(column, "not an integer")),
        }
    }
}

thread_local! {
    /// Pages in the write-ahead log after the last commit on this thread,
    /// as SQLite's WAL hook reported it. The hook runs inside the commit,
    /// on the committing thread, and `rusqlite` takes a plain function for
    /// it: the count is handed over here and read back once the statement ran.
    static WAL_PAGES: Cell<Option<u32>> = const { Cell::new(None) };
}

fn note_wal_pages(_wal: &Wal, pages: c_int) -> rusqlite::Result<()> {
    WAL_PAGES.set(Some(u32::try_from(pages).unwrap_or(0)));
    Ok(())
}

/// One SQLite connection, with its prepared statements.
pub(crate) struct Connection {
    db: rusqlite::Connection,
    /// Pages in the write-ahead log after the last commit, once
    /// [`Connection::count_wal_pages`] is on.
    wal_pages: Option<Arc<AtomicU32>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("path", &self.db.path()).finish_non_exhaustive()
    }
}

impl Connection {
    /// Opens (creating if missing) the database file at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        // No mutex: SQLite's multi-thread mode; a `Connection` is used by
        // one thread at a time (`&mut self`, and it is not `Sync`).
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let db = rusqlite::Connection::open_with_flags(path, flags)?;
        db.set_prepared_statement_cache_capacity(CACHED_STATEMENTS);
        Ok(Self { db, wal_pages: None })
    }

    /// Counts the pages in the write-ahead log after each commit instead
    /// of checkpointing it: SQLite checkpoints in the commit that crosses
    /// its threshold, and a checkpoint writes and syncs the database file,
    /// which must not happen on the caller's thread. The caller
    /// checkpoints, on another connection, when the count is high.
    pub(crate) fn count_wal_pages(&mut self, pages: Arc<AtomicU32>) {
        self.db.wal_hook(Some(note_wal_pages));
        self.wal_pages = Some(pages);
    }

    /// Whether a transaction is open (a script stopped before its `COMMIT`).
    pub(crate) fn in_transaction(&self) -> bool {
        !self.db.is_autocommit()
    }

    /// Runs one statement, binding `binds` in order, handing every row it
    /// returns to `row`. Returns how many rows its write changed.
    /// `cached`: keep it prepared for the next run of the same text.
    pub(crate) fn run(
        &mut self,
        sql: &str,
        binds: &[Bind<'_>],
        cached: bool,
        mut row: impl FnMut(&Row<'_>) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        WAL_PAGES.set(None);
        let changed = if cached {
            run_statement(&self.db, &mut *self.db.prepare_cached(sql)?, binds, &mut row)
        } else {
            run_statement(&self.db, &mut self.db.prepare(sql)?, binds, &mut row)
        };
        self.keep_wal_pages();
        changed
    }

    /// Runs SQL without parameters or rows (schema, pragmas, `ROLLBACK`),
    /// several statements separated by `;`, not cached. Stops at the first
    /// that fails, leaving a transaction the script opened open.
    pub(crate) fn execute_batch(&mut self, sql: &str) -> Result<(), Error> {
        WAL_PAGES.set(None);
        let done = self.db.execute_batch(sql);
        self.keep_wal_pages();
        Ok(done?)
    }

    /// Keeps the log's size if the statement just run committed.
    fn keep_wal_pages(&self) {
        if let (Some(pages), Some(seen)) = (&self.wal_pages, WAL_PAGES.take()) {
            pages.store(seen, Ordering::Relaxed);
        }
    }
}

/// Binds `binds` to the statement's parameters, steps it to its end
/// (rows to `row`); returns the rows its write changed.
fn run_statement(
    db: &rusqlite::Connection,
    statement: &mut Statement<'_>,
    binds: &[Bind<'_>],
    row: &mut dyn FnMut(&Row<'_>) -> Result<(), Error>,
) -> Result<u64, Error> {
    let parameters = statement.parameter_count();
    if binds.len() < parameters {
        return Err(Error::new(ffi::SQLITE_RANGE, format!("no value for parameter {}", binds.len() + 1)));
    }
    if binds.len() > parameters {
        let left = binds.len() - parameters;
        return Err(Error::new(ffi::SQLITE_RANGE, format!("{left} more values than the statement has parameters")));
    }
    for (index, bind) in (1..).zip(binds) {
        let value = match bind {
            Bind::Text(v) | Bind::MaybeText(Some(v)) => ValueRef::Text(v.as_bytes()),
            Bind::MaybeText(None) | Bind::MaybeInt(None) => ValueRef::Null,
            Bind::Blob(v) => ValueRef::Blob(v),
            Bind::Int(v) | Bind::MaybeInt(Some(v)) => ValueRef::Integer(*v),
        };
        statement.raw_bind_parameter(index, ToSqlOutput::Borrowed(value))?;
    }
    let readonly = statement.readonly();
    let mut rows = statement.raw_query();
    while let Some(next) = rows.next()? {
        row(&Row(next))?;
    }
    // `changes` is the last write's, so it only counts for a statement that writes.
    Ok(if readonly { 0 } else { db.changes() })
}
#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let connection = Connection::open(&dir.path().join("t.db")).unwrap();
        (dir, connection)
    }

    #[test]
    fn binds_go_in_order_and_rows_come_back_typed() {
        let (_dir, mut db) = open();
        db.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB, n INTEGER, o TEXT)").unwrap();
        let insert = "INSERT INTO t VALUES ($1, $2, $3, $4)";
        let first = [Bind::Text("a"), Bind::Blob(&[0, 1, 2]), Bind::Int(7), Bind::MaybeText(Some("x"))];
        assert_eq!(db.run(insert, &first, true, |_| Ok(())).unwrap(), 1);
        let second = [Bind::Text("b"), Bind::Blob(&[]), Bind::Int(-1), Bind::MaybeText(None)];
        assert_eq!(db.run(insert, &second, true, |_| Ok(())).unwrap(), 1, "the cached statement, bound afresh");
        let select = "SELECT k, v, n, o FROM t ORDER BY k";
        let mut rows = Vec::new();
        let changed = db
            .run(select, &[], true, |row| {
                rows.push((row.text(0)?, row.blob(1)?, row.int(2)?, row.maybe_text(3)?));
                Ok(())
            })
            .unwrap();
        assert_eq!(changed, 0, "a read changes nothing, whatever the write before it changed");
        assert_eq!(rows, [("a".into(), vec![0, 1, 2], 7, Some("x".into())), ("b".into(), vec![], -1, None)]);
        let e = db.run(select, &[], true, |row| row.int(0).map(|_| ())).unwrap_err();
        assert!(e.message.contains("column 0 is not an integer"), "{e}");
    }

    #[test]
    fn a_failing_statement_says_why_and_the_connection_stays_usable() {
        let (_dir, mut db) = open();
        db.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY)").unwrap();
        let insert = "INSERT INTO t VALUES (?)";
        db.run(insert, &[Bind::Text("a")], true, |_| Ok(())).unwrap();
        let e = db.run(insert, &[Bind::Text("a")], true, |_| Ok(())).unwrap_err();
        assert_eq!(e.code, ffi::SQLITE_CONSTRAINT_PRIMARYKEY, "{e}");
        assert!(e.message.contains("UNIQUE constraint failed: t.k"), "{e}");
        let e = db.run(insert, &[], true, |_| Ok(())).unwrap_err();
        assert!(e.message.contains("no value for parameter 1"), "{e}");
        let e = db.run(insert, &[Bind::Text("b"), Bind::Text("c")], true, |_| Ok(())).unwrap_err();
        assert!(e.message.contains("1 more values"), "{e}");
        let e = db.run("SELEC 1", &[], false, |_| Ok(())).unwrap_err();
        assert!(e.message.contains("syntax error"), "{e}");
        db.run(insert, &[Bind::Text("d")], true, |_| Ok(())).unwrap();
    }

    #[test]
    fn the_log_grows_until_another_connection_checkpoints_it() {
        let (dir, mut db) = open();
        db.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (v BLOB)").unwrap();
        let pages = Arc::new(AtomicU32::new(0));
        db.count_wal_pages(pages.clone());
        let insert = "INSERT INTO t VALUES (?)";
        let value = vec![7u8; 8192];
        for _ in 0..600 {
            db.run(insert, &[Bind::Blob(&value)], true, |_| Ok(())).unwrap();
        }
        // SQLite alone would have checkpointed and restarted the log at 1,000 pages.
        assert!(pages.load(Ordering::Relaxed) > 1500, "{} pages", pages.load(Ordering::Relaxed));
        let mut checkpointer = Connection::open(&dir.path().join("t.db")).unwrap();
        let mut frames = Vec::new();
        checkpointer
            .run("PRAGMA wal_checkpoint(PASSIVE)", &[], false, |row| {
                frames.push((row.int(1)?, row.int(2)?));
                Ok(())
            })
            .unwrap();
        let (logged, copied) = frames[0];
        assert!(logged > 1500 && copied == logged, "{logged} frames in the log, {copied} copied");
        db.run(insert, &[Bind::Blob(&value)], true, |_| Ok(())).unwrap();
        assert!(pages.load(Ordering::Relaxed) < 10, "the log starts over once checkpointed");
    }

    #[test]
    fn a_script_stopped_midway_leaves_its_transaction_open_for_the_caller_to_end() {
        let (_dir, mut db) = open();
        db.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY)").unwrap();
        let script = "BEGIN IMMEDIATE; INSERT INTO t VALUES ('a'); INSERT INTO t VALUES ('a'); COMMIT";
        assert!(db.execute_batch(script).is_err());
        assert!(db.in_transaction());
        db.execute_batch("ROLLBACK").unwrap();
        assert!(!db.in_transaction());
        let mut count = 0;
        db.run("SELECT count(*) FROM t", &[], false, |row| {
            count = row.int(0)?;
            Ok(())
        })
        .unwrap();
        assert_eq!(count, 0, "the first insert was rolled back with the rest");
    }
}
