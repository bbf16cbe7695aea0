//! SQLite and PostgreSQL implementations of the jetsaga
//! [`Store`](jetsaga_core::Store) port.
//!
//! Both keep three tables per function: `kv` (key, value, version),
//! `inbox` (ids of processed input events) and `outbox` (events waiting to
//! be published). A [`Commit`](jetsaga_core::Commit) batch is one transaction; conditions are
//! checked with `UPDATE ... WHERE version = $n` / `INSERT ... ON CONFLICT
//! DO NOTHING` and the affected row count, so concurrent writers on the
//! same key have exactly one winner.
//!
//! - [`SqliteStore`]: one database file per function, WAL mode; the
//!   embedded default.
//! - [`PostgresStore`]: one schema per function in a shared database
//!   (`DATABASE_URL`).
//!
//! The store is written once ([`SqlStore`], in `store.rs`) over a small
//! `Driver` trait (`driver.rs`); each driver (`sqlite.rs`, `postgres.rs`) only opens
//! its database, runs statements, and runs a commit's statements its way.
//! The statements themselves are built once, in `plan.rs`.

mod driver;
mod plan;
mod postgres;
mod sqlite;
mod store;

pub use postgres::{PgPool, PostgresDriver, PostgresStore, connect_postgres, validate_schema_name};
pub use sqlite::{Durability, SqliteDriver, SqliteStore};
pub use store::SqlStore;
