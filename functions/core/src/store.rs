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
    /// When the value may be removed (Unix seconds): a retention, not a
    /// deadline. The key stays readable until the store removes it
    /// ([`Store::sweep_expired`], or DynamoDB's TTL within days); a later
    /// write without one keeps the key for good.
    pub expires_at: Option<i64>,
}

impl Write {
    /// A write that keeps the key for good.
    pub fn new(key: impl Into<String>, value: Option<Vec<u8>>, expect: Expect) -> Self {
        Self { key: key.into(), value, expect, expires_at: None }
    }
}

/// An event waiting to be published, stored with the state change that produced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRecord {
    /// Event id (the transport's de-duplication id).
    pub id: String,
    /// The event's subject.
    pub subject: String,
    /// Encoded envelope.
    pub payload: Vec<u8>,
    /// W3C traceparent to send with it.
    pub traceparent: Option<String>,
    /// Published later, or ending a schedule (see [`crate::schedule`]).
    pub schedule: Option<crate::schedule::Schedule>,
}

/// Everything one input event changes: its inbox record, the state writes
/// and the outgoing events. Committed all-or-nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Commit {
    /// Id of the input event (the inbox key).
    pub event_id: String,
    /// Conditional writes.
    pub writes: Vec<Write>,
    /// Events to publish after the commit.
    pub outbox: Vec<OutboxRecord>,
    /// What processing the input amounted to, kept with its inbox record
    /// (opaque JSON to the store; the engine's `Receipt`), so that a retry
    /// is answered as the first delivery was.
    pub receipt: Option<String>,
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

    /// Reads several keys at once; one answer per key, in order. Backends
    /// override this to answer in one round trip (the engine prefetches a
    /// whole batch's keys through it).
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Item>>, StoreError> {
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            found.push(self.get(key).await?);
        }
        Ok(found)
    }

    /// Reads every key starting with `prefix`, in key order.
    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Item)>, StoreError>;

    /// Reads at most `limit` keys starting with `prefix` and greater than
    /// `after` (all of them without one), in key order: a page of an index
    /// whatever its size. Backends answer from their key order; this
    /// default reads the whole prefix (stores for tests).
    async fn scan_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Item)>, StoreError> {
        let found = self.scan(prefix).await?;
        Ok(found.into_iter().filter(|(key, _)| after.is_none_or(|a| key.as_str() > a)).take(limit).collect())
    }

    /// Applies every commit in one transaction: all of them or none.
    async fn commit(&self, commits: &[Commit]) -> Result<(), CommitError>;

    /// `None` if the input event was never processed; otherwise the events
    /// it produced that are not yet marked published (often none).
    async fn processed(&self, event_id: &str) -> Result<Option<Vec<OutboxRecord>>, StoreError>;

    /// The receipt stored with an input's inbox record; `None` if the input
    /// was never processed (or was processed without one).
    async fn receipt(&self, event_id: &str) -> Result<Option<String>, StoreError>;

    /// Outbox records not yet marked published, oldest first.
    async fn unpublished(&self, limit: usize) -> Result<Vec<OutboxRecord>, StoreError>;

    /// Marks outbox records as published (they may be removed).
    async fn mark_published(&self, ids: &[String]) -> Result<(), StoreError>;

    /// Forgets the inbox records of inputs processed before `before` whose
    /// events are all published; returns how many. The runtime calls it with
    /// a cutoff older than anything that can still be redelivered (see
    /// `jetsaga_jetstream::Config::inbox_retention`). Backends that expire
    /// inbox records by themselves (DynamoDB's TTL) keep the default.
    async fn sweep_inbox(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64, StoreError> {
        let _ = before;
        Ok(0)
    }

    /// How many inputs the inbox remembers (`None`: this backend cannot
    /// count them cheaply, as DynamoDB without a scan). A metric only.
    async fn inbox_size(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    /// Removes the keys whose [`Write::expires_at`] is at or before `now`
    /// (Unix seconds); returns how many. The runtime calls it with the
    /// inbox sweep. Backends that expire keys by themselves (DynamoDB's
    /// TTL) keep the default.
    async fn sweep_expired(&self, now: i64) -> Result<u64, StoreError> {
        let _ = now;
        Ok(0)
    }
}

/// What a batch's writes to one key amount to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect<'a> {
    /// Store `value` at exactly `version`.
    Put {
        /// The last value written.
        value: &'a [u8],
        /// The version after all the writes.
        version: u64,
    },
    /// Store `value`, adding `writes` to the current version (or starting at
    /// `writes` if the key is absent): unconditional writes on a key whose
    /// version nobody read.
    PutCounting {
        /// The last value written.
        value: &'a [u8],
        /// How many writes since the last delete.
        writes: u64,
    },
    /// Remove the key.
    Delete,
    /// Created and deleted within the batch: only the condition (absent) remains.
    CheckAbsent,
}

/// The single net change of a batch to one key: the first write's
/// condition and the effect of all of them. Backends apply one action per
/// key (DynamoDB refuses two actions on one item in a transaction; the SQL
/// stores apply each kind of change in one multi-row statement).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyChange<'a> {
    /// The key.
    pub key: &'a str,
    /// What the key must look like before the batch.
    pub expect: Expect,
    /// What it looks like after.
    pub effect: Effect<'a>,
    /// The last write's [`Write::expires_at`].
    pub expires_at: Option<i64>,
}

/// Folds the writes of `commits` into one [`KeyChange`] per key, in key order.
pub fn net_changes(commits: &[Commit]) -> Vec<KeyChange<'_>> {
    let mut by_key: std::collections::BTreeMap<&str, Vec<&Write>> = std::collections::BTreeMap::new();
    for write in commits.iter().flat_map(|c| &c.writes) {
        by_key.entry(write.key.as_str()).or_default().push(write);
    }
    by_key.into_iter().map(|(key, writes)| fold(key, &writes)).collect()
}

fn fold<'a>(key: &'a str, writes: &[&'a Write]) -> KeyChange<'a> {
    let expect = writes[0].expect;
    // (exists, version) after each write, where known.
    let mut exists = match expect {
        Expect::Absent => Some(false),
        Expect::Version(_) => Some(true),
        Expect::Any => None,
    };
    let mut version = match expect {
        Expect::Version(v) => Some(v),
        Expect::Absent => Some(0),
        Expect::Any => None,
    };
    let mut puts_since_delete = 0u64;
    for write in writes {
        if write.value.is_some() {
            version = match exists {
                Some(true) => version.map(|v| v + 1),
                Some(false) => Some(1),
                None => None,
            };
            exists = Some(true);
            puts_since_delete += 1;
        } else {
            exists = Some(false);
            version = Some(0);
            puts_since_delete = 0;
        }
    }
    let effect = match (writes[writes.len() - 1].value.as_deref(), version) {
        (None, _) if expect == Expect::Absent => Effect::CheckAbsent,
        (None, _) => Effect::Delete,
        (Some(value), Some(version)) => Effect::Put { value, version },
        (Some(value), None) => Effect::PutCounting { value, writes: puts_since_delete.max(1) },
    };
    KeyChange { key, expect, effect, expires_at: writes[writes.len() - 1].expires_at }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(key: &str, value: Option<&str>, expect: Expect) -> Write {
        Write::new(key, value.map(|v| v.as_bytes().to_vec()), expect)
    }

    fn commit(writes: Vec<Write>) -> Commit {
        Commit { event_id: "e".into(), writes, ..Commit::default() }
    }

    #[test]
    fn chained_writes_fold_into_one_change_per_key() {
        let commits = [
            commit(vec![write("a", Some("1"), Expect::Version(3)), write("b", Some("x"), Expect::Absent)]),
            commit(vec![write("a", Some("2"), Expect::Version(4))]),
            commit(vec![write("b", None, Expect::Version(1)), write("c", Some("y"), Expect::Any)]),
            commit(vec![write("c", Some("z"), Expect::Any), write("d", None, Expect::Version(7))]),
        ];
        assert_eq!(
            net_changes(&commits),
            vec![
                KeyChange {
                    key: "a",
                    expect: Expect::Version(3),
                    effect: Effect::Put { value: b"2", version: 5 },
                    expires_at: None
                },
                KeyChange { key: "b", expect: Expect::Absent, effect: Effect::CheckAbsent, expires_at: None },
                KeyChange {
                    key: "c",
                    expect: Expect::Any,
                    effect: Effect::PutCounting { value: b"z", writes: 2 },
                    expires_at: None
                },
                KeyChange { key: "d", expect: Expect::Version(7), effect: Effect::Delete, expires_at: None },
            ]
        );
    }

    #[test]
    fn a_put_after_a_delete_restarts_at_version_one() {
        let commits =
            [commit(vec![write("k", None, Expect::Any)]), commit(vec![write("k", Some("v"), Expect::Absent)])];
        assert_eq!(
            net_changes(&commits),
            vec![KeyChange {
                key: "k",
                expect: Expect::Any,
                effect: Effect::Put { value: b"v", version: 1 },
                expires_at: None
            }]
        );
    }
}
