//! One SQLite connection driven through SQLite's C API (`libsqlite3-sys`,
//! the same bundled library sqlx links) on the caller's thread.
//!
//! Why not sqlx's `SqliteConnection`: it runs every statement on a thread
//! of its own, so each round trip is two thread wake-ups (hand the work
//! over, hand the answer back). A commit here takes tens of microseconds
//! of SQLite's time, and on our 2-core VMs those wake-ups cost more than
//! the work: they were the biggest single item of the runner's profile.
//! Run in place, a read or a whole commit is a function call.
//!
//! Everything unsafe in the crate is in this file. The invariants are few:
//! a [`Connection`] owns its `sqlite3*` and every statement prepared on it
//! (finalized before the connection is closed); it is used by one thread
//! at a time (`&mut self`; SQLite is opened in multi-thread mode, which
//! allows that); a bound text or blob stays alive until its statement is
//! reset and its bindings cleared, which happens before `run` returns.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_int};
use std::path::Path;
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use libsqlite3_sys as ffi;

use crate::driver::RowColumns;
use crate::plan::Bind;

/// Statements kept prepared at most; past that the cache starts over
/// (a batch's commit shapes recur, so it refills with the ones in use).
const CACHED_SCRIPTS: usize = 256;

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

/// One prepared statement, finalized when dropped.
struct Statement(NonNull<ffi::sqlite3_stmt>);

impl Drop for Statement {
    fn drop(&mut self) {
        // SAFETY: the statement was prepared by `prepare` and is finalized once, here.
        unsafe {
            ffi::sqlite3_finalize(self.0.as_ptr());
        }
    }
}

/// The statements of one SQL text, in order (a script has several).
struct Script(Vec<Statement>);

/// A row being read: valid until the next step of its statement.
pub(crate) struct Row<'s> {
    statement: &'s Statement,
}

impl Row<'_> {
    fn kind(&self, column: usize) -> c_int {
        // SAFETY: the statement has a current row (`run` only hands out a Row after SQLITE_ROW).
        unsafe { ffi::sqlite3_column_type(self.statement.0.as_ptr(), column as c_int) }
    }

    fn bytes(&self, column: usize, text: bool) -> Vec<u8> {
        let stmt = self.statement.0.as_ptr();
        // SAFETY: as in `kind`; the pointer returned is valid for the
        // number of bytes `sqlite3_column_bytes` reports, read right after it
        // (SQLite's documented order: the value first, then its length).
        unsafe {
            let data = if text {
                ffi::sqlite3_column_text(stmt, column as c_int).cast::<u8>()
            } else {
                ffi::sqlite3_column_blob(stmt, column as c_int).cast::<u8>()
            };
            let len = usize::try_from(ffi::sqlite3_column_bytes(stmt, column as c_int)).unwrap_or(0);
            if data.is_null() || len == 0 { Vec::new() } else { std::slice::from_raw_parts(data, len).to_vec() }
        }
    }
}

impl RowColumns for Row<'_> {
    type Error = Error;

    /// A text column; `None` if it is NULL.
    fn maybe_text(&self, column: usize) -> Result<Option<String>, Error> {
        if self.kind(column) == ffi::SQLITE_NULL {
            return Ok(None);
        }
        String::from_utf8(self.bytes(column, true))
            .map(Some)
            .map_err(|_| Error::new(ffi::SQLITE_MISMATCH, format!("column {column} is not UTF-8 text")))
    }

    /// A text column that must not be NULL.
    fn text(&self, column: usize) -> Result<String, Error> {
        self.maybe_text(column)?.ok_or_else(|| Error::new(ffi::SQLITE_MISMATCH, format!("column {column} is NULL")))
    }

    /// A blob column (a NULL reads as an error).
    fn blob(&self, column: usize) -> Result<Vec<u8>, Error> {
        if self.kind(column) == ffi::SQLITE_NULL {
            return Err(Error::new(ffi::SQLITE_MISMATCH, format!("column {column} is NULL")));
        }
        Ok(self.bytes(column, false))
    }

    /// An integer column (a NULL reads as an error).
    fn int(&self, column: usize) -> Result<i64, Error> {
        match self.kind(column) {
            ffi::SQLITE_NULL => Err(Error::new(ffi::SQLITE_MISMATCH, format!("column {column} is NULL"))),
            // SAFETY: as in `kind`.
            _ => Ok(unsafe { ffi::sqlite3_column_int64(self.statement.0.as_ptr(), column as c_int) }),
        }
    }

    /// An integer column that may be NULL.
    fn maybe_int(&self, column: usize) -> Result<Option<i64>, Error> {
        match self.kind(column) {
            ffi::SQLITE_NULL => Ok(None),
            _ => self.int(column).map(Some),
        }
    }
}

/// One SQLite connection, with its prepared statements.
pub(crate) struct Connection {
    db: NonNull<ffi::sqlite3>,
    cache: HashMap<Box<str>, Script>,
    /// Pages in the write-ahead log after the last commit, once
    /// [`Connection::count_wal_pages`] is on (kept alive here: SQLite holds a pointer to it).
    wal_pages: Option<Arc<AtomicU32>>,
}

// SAFETY: opened with SQLITE_OPEN_NOMUTEX (SQLite's multi-thread mode): a
// connection and its statements may be used from any thread, one thread at
// a time, which `&mut self` on every use guarantees.
unsafe impl Send for Connection {}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("cached_scripts", &self.cache.len()).finish()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.cache.clear();
        // SAFETY: every statement of this connection is finalized above (the
        // cache holds all that outlive a `run`); the handle is closed once.
        unsafe {
            ffi::sqlite3_close(self.db.as_ptr());
        }
    }
}

impl Connection {
    /// Opens (creating if missing) the database file at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        let name = CString::new(path.to_string_lossy().as_bytes())
            .map_err(|_| Error::new(ffi::SQLITE_CANTOPEN, "the path contains a NUL byte"))?;
        let flags = ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE | ffi::SQLITE_OPEN_NOMUTEX;
        let mut db = ptr::null_mut();
        // SAFETY: `name` is a NUL-terminated string; `db` receives the handle.
        let code = unsafe { ffi::sqlite3_open_v2(name.as_ptr(), &mut db, flags, ptr::null()) };
        let Some(db) = NonNull::new(db) else {
            return Err(Error::new(code, "out of memory opening the database"));
        };
        // From here on `Drop` closes the handle, also when opening failed.
        let connection = Self { db, cache: HashMap::new(), wal_pages: None };
        if code != ffi::SQLITE_OK {
            return Err(connection.error(code));
        }
        // SAFETY: a valid handle.
        unsafe {
            ffi::sqlite3_extended_result_codes(db.as_ptr(), 1);
        }
        Ok(connection)
    }

    /// The connection's last error, as SQLite describes it.
    fn error(&self, code: c_int) -> Error {
        // SAFETY: a valid handle; the message is copied before anything else runs on it.
        let (code, message) = unsafe {
            let extended = ffi::sqlite3_extended_errcode(self.db.as_ptr());
            let message = CStr::from_ptr(ffi::sqlite3_errmsg(self.db.as_ptr())).to_string_lossy().into_owned();
            (if extended & 0xff == code & 0xff { extended } else { code }, message)
        };
        Error::new(code, message)
    }

    /// Counts the pages in the write-ahead log after each commit instead
    /// of checkpointing it: SQLite checkpoints in the commit that crosses
    /// its threshold, and a checkpoint writes and syncs the database file,
    /// which must not happen on the caller's thread. The caller
    /// checkpoints, on another connection, when the count is high.
    pub(crate) fn count_wal_pages(&mut self, pages: Arc<AtomicU32>) {
        let pages = self.wal_pages.insert(pages);
        // SAFETY: the hook's argument points into the `Arc` the connection
        // keeps for as long as it is open; the hook only stores into it.
        unsafe {
            ffi::sqlite3_wal_hook(self.db.as_ptr(), Some(wal_hook), Arc::as_ptr(pages).cast_mut().cast());
        }
    }

    /// Whether a transaction is open (a script stopped before its `COMMIT`).
    pub(crate) fn in_transaction(&self) -> bool {
        // SAFETY: a valid handle.
        unsafe { ffi::sqlite3_get_autocommit(self.db.as_ptr()) == 0 }
    }

    /// Prepares the statement of `sql` that starts at byte `from`; returns
    /// it (`None` if only blanks or comments are left) and where the next begins.
    fn prepare(&self, sql: &str, from: usize, persistent: bool) -> Result<(Option<Statement>, usize), Error> {
        let flags = if persistent { ffi::SQLITE_PREPARE_PERSISTENT } else { 0 };
        let rest = &sql.as_bytes()[from..];
        let start = rest.as_ptr().cast::<c_char>();
        let mut stmt = ptr::null_mut();
        let mut tail = ptr::null();
        // SAFETY: `rest` outlives the call; SQLite reads at most its length
        // and points `tail` within it (or at its end).
        let code = unsafe {
            ffi::sqlite3_prepare_v3(
                self.db.as_ptr(),
                start,
                c_int::try_from(rest.len()).unwrap_or(c_int::MAX),
                flags,
                &mut stmt,
                &mut tail,
            )
        };
        if code != ffi::SQLITE_OK {
            return Err(self.error(code));
        }
        let used = if tail.is_null() {
            rest.len()
        } else {
            // SAFETY: both pointers are within (or one past) `rest`.
            usize::try_from(unsafe { tail.offset_from(start) }).unwrap_or(rest.len())
        };
        Ok((NonNull::new(stmt).map(Statement), from + used.max(1).min(rest.len())))
    }

    /// Runs `sql` (one statement or several separated by `;`), binding
    /// `binds` in order across its statements, handing every row any of
    /// them returns to `row`. Returns how many rows its writes changed.
    /// `cached`: keep the statements prepared for the next run of the same text.
    pub(crate) fn run(
        &mut self,
        sql: &str,
        binds: &[Bind<'_>],
        cached: bool,
        mut row: impl FnMut(&Row<'_>) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        let mut binds = binds.iter();
        let mut changed = 0;
        if let Some(script) = self.cache.get(sql) {
            for statement in &script.0 {
                changed += self.run_one(statement, &mut binds, &mut row)?;
            }
        } else {
            // Each statement is prepared once the ones before it ran: a
            // statement may use what an earlier one created.
            let mut statements = Vec::new();
            let mut from = 0;
            while from < sql.len() {
                let (statement, next) = self.prepare(sql, from, cached)?;
                from = next;
                if let Some(statement) = statement {
                    changed += self.run_one(&statement, &mut binds, &mut row)?;
                    statements.push(statement);
                }
            }
            if cached {
                if self.cache.len() >= CACHED_SCRIPTS {
                    self.cache.clear();
                }
                self.cache.insert(sql.into(), Script(statements));
            }
        }
        let left = binds.count();
        if left > 0 {
            return Err(Error::new(
                ffi::SQLITE_RANGE,
                format!("{left} more values than the statements have parameters"),
            ));
        }
        Ok(changed)
    }

    /// Runs SQL without parameters or rows (schema, pragmas, `ROLLBACK`), not cached.
    pub(crate) fn execute_batch(&mut self, sql: &str) -> Result<(), Error> {
        self.run(sql, &[], false, |_| Ok(())).map(|_| ())
    }

    /// Binds, steps to the end, then resets one statement; returns the rows its write changed.
    fn run_one<'b>(
        &self,
        statement: &Statement,
        binds: &mut impl Iterator<Item = &'b Bind<'b>>,
        row: &mut dyn FnMut(&Row<'_>) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        let outcome = self.bind(statement, binds).and_then(|()| self.step_all(statement, row));
        // SAFETY: a statement of this connection. Reset ends its run (and its
        // read of the database); clearing drops its pointers to the bound
        // values, which live only as long as the caller's call.
        unsafe {
            ffi::sqlite3_reset(statement.0.as_ptr());
            ffi::sqlite3_clear_bindings(statement.0.as_ptr());
        }
        outcome
    }

    /// Binds the statement's parameters from `binds`, in order.
    fn bind<'b>(&self, statement: &Statement, binds: &mut impl Iterator<Item = &'b Bind<'b>>) -> Result<(), Error> {
        let stmt = statement.0.as_ptr();
        // SAFETY: a statement of this connection.
        let count = unsafe { ffi::sqlite3_bind_parameter_count(stmt) };
        for index in 1..=count {
            let Some(bind) = binds.next() else {
                return Err(Error::new(ffi::SQLITE_RANGE, format!("no value for parameter {index}")));
            };
            // SAFETY: SQLITE_STATIC: SQLite keeps the pointers without
            // copying; the values outlive the statement's run, and
            // `run_script` clears the bindings before returning.
            let code = unsafe {
                match bind {
                    Bind::Text(v) | Bind::MaybeText(Some(v)) => text(stmt, index, v),
                    Bind::MaybeText(None) | Bind::MaybeInt(None) => ffi::sqlite3_bind_null(stmt, index),
                    Bind::Blob(v) => ffi::sqlite3_bind_blob(
                        stmt,
                        index,
                        v.as_ptr().cast(),
                        c_int::try_from(v.len()).unwrap_or(c_int::MAX),
                        ffi::SQLITE_STATIC(),
                    ),
                    Bind::Int(v) | Bind::MaybeInt(Some(v)) => ffi::sqlite3_bind_int64(stmt, index, *v),
                }
            };
            if code != ffi::SQLITE_OK {
                return Err(self.error(code));
            }
        }
        Ok(())
    }

    /// Steps the statement to its end; returns the rows its write changed.
    fn step_all(
        &self,
        statement: &Statement,
        row: &mut dyn FnMut(&Row<'_>) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        let stmt = statement.0.as_ptr();
        loop {
            // SAFETY: a statement of this connection, its parameters bound.
            match unsafe { ffi::sqlite3_step(stmt) } {
                ffi::SQLITE_ROW => row(&Row { statement })?,
                ffi::SQLITE_DONE => {
                    // SAFETY: as above. `changes` is the last write's, so
                    // it only counts for a statement that writes.
                    return Ok(unsafe {
                        if ffi::sqlite3_stmt_readonly(stmt) != 0 {
                            0
                        } else {
                            u64::try_from(ffi::sqlite3_changes64(self.db.as_ptr())).unwrap_or(0)
                        }
                    });
                }
                code => return Err(self.error(code)),
            }
        }
    }
}

/// SQLite's call after each commit in WAL mode: records the log's size.
unsafe extern "C" fn wal_hook(
    pages: *mut std::ffi::c_void,
    _db: *mut ffi::sqlite3,
    _name: *const c_char,
    count: c_int,
) -> c_int {
    // SAFETY: `pages` is the `AtomicU32` that `count_wal_pages` registered, alive while the connection is.
    let pages = unsafe { &*pages.cast::<AtomicU32>() };
    pages.store(u32::try_from(count).unwrap_or(0), Ordering::Relaxed);
    ffi::SQLITE_OK
}

/// Binds a text parameter without copying it.
///
/// # Safety
/// `stmt` is a live statement and `value` outlives its current run.
unsafe fn text(stmt: *mut ffi::sqlite3_stmt, index: c_int, value: &str) -> c_int {
    // SAFETY: per the function's contract.
    unsafe {
        ffi::sqlite3_bind_text(
            stmt,
            index,
            value.as_ptr().cast(),
            c_int::try_from(value.len()).unwrap_or(c_int::MAX),
            ffi::SQLITE_STATIC(),
        )
    }
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
    fn binds_run_across_a_scripts_statements_and_rows_come_back_typed() {
        let (_dir, mut db) = open();
        db.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB, n INTEGER, o TEXT)").unwrap();
        let insert = "INSERT INTO t VALUES (?, ?, ?, ?); INSERT INTO t VALUES (?, ?, ?, NULL)";
        let changed = db
            .run(
                insert,
                &[
                    Bind::Text("a"),
                    Bind::Blob(&[0, 1, 2]),
                    Bind::Int(7),
                    Bind::MaybeText(Some("x")),
                    Bind::Text("b"),
                    Bind::Blob(&[]),
                    Bind::Int(-1),
                ],
                true,
                |_| Ok(()),
            )
            .unwrap();
        assert_eq!(changed, 2);
        let select = "SELECT k, v, n, o FROM t ORDER BY k";
        let mut rows = Vec::new();
        db.run(select, &[], true, |row| {
            rows.push((row.text(0)?, row.blob(1)?, row.int(2)?, row.maybe_text(3)?));
            Ok(())
        })
        .unwrap();
        assert_eq!(rows, [("a".into(), vec![0, 1, 2], 7, Some("x".into())), ("b".into(), vec![], -1, None)]);
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
        assert!(db.run(script, &[], false, |_| Ok(())).is_err());
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
