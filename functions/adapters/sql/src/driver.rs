//! What the shared store needs of a database driver, and the few generic
//! helpers both drivers use to bind parameters and read columns.

use std::sync::Arc;

use jetsaga_core::async_trait;
use sqlx::{Database, Encode, Type};

use crate::plan::{Bind, Refusal, Step};

/// The type of a column a statement returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    Text,
    MaybeText,
    Blob,
    Int,
    MaybeInt,
}

/// One value read from a row, as its [`Column`] said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cell {
    Text(String),
    MaybeText(Option<String>),
    Blob(Vec<u8>),
    Int(i64),
    MaybeInt(Option<i64>),
}

impl Cell {
    pub(crate) fn text(self) -> String {
        match self {
            Self::Text(s) => s,
            Self::MaybeText(s) => s.unwrap_or_default(),
            other => unreachable!("read as text: {other:?}"),
        }
    }

    pub(crate) fn maybe_text(self) -> Option<String> {
        match self {
            Self::MaybeText(s) => s,
            Self::Text(s) => Some(s),
            other => unreachable!("read as optional text: {other:?}"),
        }
    }

    pub(crate) fn blob(self) -> Vec<u8> {
        match self {
            Self::Blob(b) => b,
            other => unreachable!("read as a blob: {other:?}"),
        }
    }

    pub(crate) fn int(self) -> i64 {
        match self {
            Self::Int(i) => i,
            other => unreachable!("read as an integer: {other:?}"),
        }
    }

    pub(crate) fn maybe_int(self) -> Option<i64> {
        match self {
            Self::MaybeInt(i) => i,
            Self::Int(i) => Some(i),
            other => unreachable!("read as an optional integer: {other:?}"),
        }
    }
}

/// Why a commit's statements did not all hold.
#[derive(Debug)]
pub struct Refused {
    pub(crate) refusal: Refusal,
    /// The culprit, when the statement named it.
    pub(crate) key: Option<String>,
}

/// A database the shared [`SqlStore`](crate::SqlStore) runs on
/// ([`SqliteDriver`](crate::SqliteDriver), [`PostgresDriver`](crate::PostgresDriver)).
#[async_trait]
pub trait Driver: Send + Sync + std::fmt::Debug + 'static {
    /// `sqlite` or `postgres`, for errors and `Store::backend`.
    const BACKEND: &'static str;

    /// Runs a query and reads every row's `columns`. Every statement is
    /// prepared once and kept: the texts are few (see `plan.rs`).
    async fn fetch(&self, sql: Arc<str>, binds: &[Bind<'_>], columns: &[Column])
    -> Result<Vec<Vec<Cell>>, sqlx::Error>;

    /// Runs a statement; returns the rows it affected.
    async fn execute(&self, sql: Arc<str>, binds: &[Bind<'_>]) -> Result<u64, sqlx::Error>;

    /// Runs a commit's statements in one transaction, committed if every
    /// check held and rolled back otherwise (saying which refused).
    async fn transact(&self, steps: &[Step<'_>]) -> Result<Option<Refused>, sqlx::Error>;
}

/// Binds a statement's values in order.
pub(crate) fn bind_all<'q, DB>(
    mut query: sqlx::query::Query<'q, DB, <DB as Database>::Arguments>,
    binds: impl IntoIterator<Item = &'q Bind<'q>>,
) -> sqlx::query::Query<'q, DB, <DB as Database>::Arguments>
where
    DB: Database,
    &'q str: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    &'q [u8]: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB> + Type<DB>,
{
    for bind in binds {
        query = match bind {
            Bind::Text(v) => query.bind(*v),
            Bind::MaybeText(v) => query.bind(*v),
            Bind::Blob(v) => query.bind(*v),
            Bind::Int(v) => query.bind(*v),
            Bind::MaybeInt(v) => query.bind(*v),
        };
    }
    query
}

/// A row of a driver's result, read a column at a time by its type.
pub(crate) trait RowColumns {
    type Error;
    fn text(&self, column: usize) -> Result<String, Self::Error>;
    fn maybe_text(&self, column: usize) -> Result<Option<String>, Self::Error>;
    fn blob(&self, column: usize) -> Result<Vec<u8>, Self::Error>;
    fn int(&self, column: usize) -> Result<i64, Self::Error>;
    fn maybe_int(&self, column: usize) -> Result<Option<i64>, Self::Error>;
}

/// Reads `columns` from a row.
pub(crate) fn cells<R: RowColumns>(row: &R, columns: &[Column]) -> Result<Vec<Cell>, R::Error> {
    columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            Ok(match column {
                Column::Text => Cell::Text(row.text(i)?),
                Column::MaybeText => Cell::MaybeText(row.maybe_text(i)?),
                Column::Blob => Cell::Blob(row.blob(i)?),
                Column::Int => Cell::Int(row.int(i)?),
                Column::MaybeInt => Cell::MaybeInt(row.maybe_int(i)?),
            })
        })
        .collect()
}
