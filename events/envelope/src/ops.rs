//! The operations contract: what the `jetsaga-ops` NATS micro service
//! answers (a running saga's status, its dead letters, their redrive), for
//! the CLI, the HTTP gateway's admin API and any other operator's tool.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `$JETSAGA.OPS.STATUS` (any payload) → a [`StatusReport`].
pub const STATUS_SUBJECT: &str = "$JETSAGA.OPS.STATUS";
/// `$JETSAGA.OPS.DLQ.LIST` (any payload) → a [`DeadLetterList`].
pub const DLQ_LIST_SUBJECT: &str = "$JETSAGA.OPS.DLQ.LIST";
/// `$JETSAGA.OPS.DLQ.REDRIVE` with a [`RedriveRequest`] → a [`Redriven`]
/// (errors: 400 a bad request, 404 no such dead letter, 502 sending it
/// again failed and it is kept).
pub const DLQ_REDRIVE_SUBJECT: &str = "$JETSAGA.OPS.DLQ.REDRIVE";
/// `$JETSAGA.OPS.DLQ.DELETE` with a [`DeleteRequest`] → a [`Deleted`]
/// (errors: 400 a bad request, 404 no such dead letter): the dead letter
/// is gone for good, its message never sent again.
pub const DLQ_DELETE_SUBJECT: &str = "$JETSAGA.OPS.DLQ.DELETE";
/// Every operations subject.
pub const OPS_SUBJECTS: [&str; 4] = [STATUS_SUBJECT, DLQ_LIST_SUBJECT, DLQ_REDRIVE_SUBJECT, DLQ_DELETE_SUBJECT];

/// Dead letters listed at most at once (the oldest first).
pub const MAX_LISTED_DEAD_LETTERS: usize = 1_000;

/// What `jetsaga status` shows: the saga stream, each function's backlog,
/// and how many dead letters wait.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StatusReport {
    /// The saga stream.
    pub stream: String,
    /// Messages in it.
    pub messages: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its subjects.
    pub subjects: Vec<String>,
    /// Every function with a durable consumer, by name.
    pub consumers: Vec<FunctionStatus>,
    /// Messages in the dead-letter stream.
    pub dead_letters: u64,
    /// Deadlines scheduled and not yet come (one per order waiting for a step).
    #[serde(default)]
    pub pending_deadlines: u64,
    /// Bytes in the dead-letter stream.
    #[serde(default)]
    pub dead_letter_bytes: u64,
    /// The most the dead-letter stream holds (bytes; none: unbounded).
    #[serde(default)]
    pub dead_letter_max_bytes: Option<u64>,
    /// What an operator should look at now, for a person (the dead-letter
    /// stream filling up, dead letters that could not be stored).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// One function's backlog. A field is null where it does not apply (a
/// function that consumes no saga event, or takes no command) or where
/// nobody could say (the function is not running: no outbox figures).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FunctionStatus {
    /// The function.
    pub function: String,
    /// Saga messages not delivered to it yet.
    pub pending: Option<u64>,
    /// Delivered, not acknowledged yet.
    pub ack_pending: Option<u64>,
    /// Delivered more than once.
    pub redelivered: Option<u64>,
    /// Pull requests waiting.
    pub waiting: Option<u64>,
    /// Commands kept for it and not processed yet.
    pub commands_pending: Option<u64>,
    /// Committed events not published yet.
    pub unpublished: Option<u64>,
    /// Age of the oldest of them, in milliseconds.
    pub oldest_unpublished_age_ms: Option<i64>,
    /// Messages it gave up on whose dead letter could not be stored (the
    /// dead-letter stream full or away) since it started: each is kept and
    /// retried with backoff until its letter is stored.
    #[serde(default)]
    pub dead_letters_unstored: Option<u64>,
}

/// A dead letter as read back from the `DLQ` stream: the message a
/// function gave up on, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeadLetter {
    /// Sequence in the DLQ stream (what a redrive names).
    pub dlq_sequence: u64,
    /// Function that gave up.
    pub function: String,
    /// Why.
    pub reason: String,
    /// Deliveries made.
    pub attempts: u64,
    /// Original subject (where a redrive sends it).
    pub subject: String,
    /// Original stream and sequence (`SAGA/42`), or `request/<id>`.
    pub origin: String,
    /// When.
    pub at: Option<DateTime<Utc>>,
    /// Original payload, as text.
    pub payload: String,
}

/// Every dead letter, oldest first (at most [`MAX_LISTED_DEAD_LETTERS`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeadLetterList {
    /// The dead letters.
    pub dead_letters: Vec<DeadLetter>,
}

/// Which dead letter to redrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// Its sequence in the DLQ stream.
    pub sequence: u64,
}

/// Which dead letter to delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    /// Its sequence in the DLQ stream.
    pub sequence: u64,
}

/// A deleted dead letter: removed without being sent again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Deleted {
    /// Its sequence in the DLQ stream (now removed).
    pub sequence: u64,
    /// The function that had given up on it.
    pub function: String,
    /// The subject it had come from.
    pub subject: String,
}

/// A redriven dead letter: sent again to its subject, then removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Redriven {
    /// Its sequence in the DLQ stream (now removed).
    pub sequence: u64,
    /// The function that had given up on it.
    pub function: String,
    /// Where it was sent again.
    pub subject: String,
    /// What came back: the command's answer, or where the message was stored.
    pub answer: String,
}
