//! Typed handler and query errors. The kind decides what the runtime does,
//! so a saga never has to guess whether to retry.

use jetsaga_envelope::{DecodeError, Payload};

use crate::store::StoreError;

/// An event a handler wants published: subject, saga key, payload.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingEvent {
    /// Subject (and envelope `type`).
    pub subject: String,
    /// Saga key; inherited from the input when `None`.
    pub saga_key: Option<String>,
    /// Payload.
    pub data: serde_json::Value,
    /// Published later, or ending such a schedule (see [`crate::schedule`]).
    pub schedule: Option<crate::schedule::Schedule>,
}

impl PendingEvent {
    /// Wraps a typed payload.
    pub fn new<P: Payload>(payload: &P) -> Self {
        Self {
            subject: P::SUBJECT.to_string(),
            saga_key: payload.saga_key().map(str::to_string),
            data: serde_json::to_value(payload).expect("payloads serialize"),
            schedule: None,
        }
    }
}

/// Why a handler did not complete normally.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// An infrastructure hiccup (store unavailable, timeout). The input is
    /// redelivered with backoff; after `max_deliver` attempts it is dead-lettered.
    #[error("retryable: {0}")]
    Retryable(String),
    /// A business failure. The handler's state changes are discarded, the
    /// failure events are committed and published (for example
    /// `inventory.evt.reservation_failed`), and the input counts as processed.
    #[error("rejected: {reason}")]
    Rejected {
        /// Why, for a person.
        reason: String,
        /// The failure events to publish.
        events: Vec<PendingEvent>,
    },
    /// The function's store could not be reached (returned by [`Ctx`](crate::Ctx)
    /// reads). Redelivered with backoff until it can be, never dead-lettered
    /// for it.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The input can never be processed (bad payload). It is dead-lettered at
    /// once with this reason, never retried, and processing continues.
    #[error("malformed: {0}")]
    Malformed(String),
    /// Not now: the sender is over a limit (too many orders in flight, too
    /// many too fast). Nothing is kept, not even the input's id, so the same
    /// command sent again later may succeed; the input is acknowledged, and
    /// a request/reply caller gets 429 with the reason.
    #[error("refused: {0}")]
    Refused(String),
}

impl HandlerError {
    /// A business rejection announced by one failure event.
    pub fn rejected<P: Payload>(reason: impl Into<String>, event: &P) -> Self {
        Self::Rejected { reason: reason.into(), events: vec![PendingEvent::new(event)] }
    }

    /// A malformed input.
    pub fn malformed(reason: impl Into<String>) -> Self {
        Self::Malformed(reason.into())
    }

    /// A refusal for now (a limit): see [`HandlerError::Refused`].
    pub fn refused(reason: impl Into<String>) -> Self {
        Self::Refused(reason.into())
    }

    /// A transient failure worth retrying.
    pub fn retryable(reason: impl Into<String>) -> Self {
        Self::Retryable(reason.into())
    }
}

impl From<StoreError> for HandlerError {
    fn from(e: StoreError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<DecodeError> for HandlerError {
    fn from(e: DecodeError) -> Self {
        Self::Malformed(e.to_string())
    }
}

/// Why a query could not be answered. Maps onto the NATS micro service
/// error headers (`Nats-Service-Error-Code`).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The request is wrong (400).
    #[error("{0}")]
    BadRequest(String),
    /// Nothing by that id (404).
    #[error("{0}")]
    NotFound(String),
    /// The credentials are wrong (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Too many attempts; try again later (429).
    #[error("{0}")]
    TooManyRequests(String),
    /// The store failed (500).
    #[error("{0}")]
    Internal(String),
    /// Too busy to answer now; try again in a moment (503).
    #[error("{0}")]
    Unavailable(String),
}

impl QueryError {
    /// HTTP-like status code.
    pub fn code(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::NotFound(_) => 404,
            Self::Unauthorized(_) => 401,
            Self::TooManyRequests(_) => 429,
            Self::Internal(_) => 500,
            Self::Unavailable(_) => 503,
        }
    }
}

impl From<crate::cpu::Busy> for QueryError {
    fn from(e: crate::cpu::Busy) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<StoreError> for QueryError {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<DecodeError> for QueryError {
    fn from(e: DecodeError) -> Self {
        Self::BadRequest(e.to_string())
    }
}
