//! The storage port: a small key/value store with conditional writes, an
//! inbox and an outbox, committed all-or-nothing.
//!
//! It maps one-to-one onto SQLite and PostgreSQL (three tables, one
//! transaction) and onto DynamoDB (`TransactWriteItems` with condition
//! expressions), which is why it is no richer than this.

use async_trait::async_trait;

/// A stored value and its version. Versions start at 1 and grow by one on
/// every write; a delete removes the row, so the next insert starts again at 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// JSON bytes as written.
    pub value: Vec<u8>,
    /// Optimistic-concurrency version.
    pub version: u64,
}

/// What a write expects to find.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// No condition (blind write).
    Any,
    /// The key must not exist.
    Absent,
    /// The key must exist at exactly this version.
    Version(u64),
}

/// One conditional write; `value: None` deletes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// Key.
    pub key: String,
    /// New value, or `None` to delete.
    pub value: Option<Vec<u8>>,
    /// Condition.
    pub expect: Expect,
}

/// An event waiting to be published, stored with the state change that produced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRecord {
    /// Event id; published as `Nats-Msg-Id`.
    pub id: String,
    /// Subject to publish on.
    pub subject: String,
    /// Encoded envelope.
    pub payload: Vec<u8>,
    /// W3C traceparent to send as a header.
    pub traceparent: Option<String>,
}

/// Everything one input event changes: its inbox record, the state writes
/// and the outgoing events. Committed all-or-nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// Id of the input event (the inbox key).
    pub event_id: String,
    /// Conditional writes.
    pub writes: Vec<Write>,
    /// Events to publish after the commit.
    pub outbox: Vec<OutboxRecord>,
}

/// A store failure: the backend could not be reached or answered an error.
/// Always worth retrying from the handler's point of view.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{backend} store: {message}")]
pub struct StoreError {
    /// `sqlite`, `postgres`, `dynamodb`, `memory`.
    pub backend: &'static str,
    /// What failed.
    pub message: String,
}

impl StoreError {
    /// Builds an error.
    pub fn new(backend: &'static str, message: impl Into<String>) -> Self {
        Self { backend, message: message.into() }
    }
}

/// Why a commit did not apply. Nothing of it was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// A write condition failed: someone else changed `key` first.
    #[error("write conflict on key {key:?}")]
    Conflict {
        /// The contended key.
        key: String,
    },
    /// The input event was already processed.
    #[error("event {event_id} was already processed")]
    Duplicate {
        /// The duplicate input.
        event_id: String,
    },
    /// The commit holds more than the backend can apply at once (DynamoDB:
    /// 100 items per transaction). A batch is then committed event by event.
    #[error("commit too large: {message}")]
    TooLarge {
        /// What exceeded which limit.
        message: String,
    },
    /// The backend failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A function's private store.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Backend name, for logs.
    fn backend(&self) -> &'static str;

    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<Item>, StoreError>;

    /// Reads every key starting with `prefix`, in key order.
    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Item)>, StoreError>;

    /// Applies every commit in one transaction: all of them or none.
    async fn commit(&self, commits: &[Commit]) -> Result<(), CommitError>;

    /// `None` if the input event was never processed; otherwise the events
    /// it produced that are not yet marked published (often none).
    async fn processed(&self, event_id: &str) -> Result<Option<Vec<OutboxRecord>>, StoreError>;

    /// Outbox records not yet marked published, oldest first.
    async fn unpublished(&self, limit: usize) -> Result<Vec<OutboxRecord>, StoreError>;

    /// Marks outbox records as published (they may be removed).
    async fn mark_published(&self, ids: &[String]) -> Result<(), StoreError>;
}
