//! What the bridge sends a function's Lambda and what it answers. Plain
//! JSON, so a function can also be invoked by hand (`cargo lambda invoke`,
//! the AWS console) with a readable payload.

use jetsaga_core::schedule::Schedule;
use jetsaga_core::{Incoming, OutboxRecord, Outcome};
use jetsaga_envelope::Envelope;
use serde::{Deserialize, Serialize};

/// An invocation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Request {
    /// Events to process, in stream order.
    Batch {
        /// The events.
        records: Vec<Record>,
    },
    /// A read-only query (or a request/reply command is sent as a one-record batch).
    Query {
        /// The query subject, e.g. `orders.query.get`.
        subject: String,
        /// The request body.
        request: serde_json::Value,
    },
    /// The outbox relay asks for committed events not yet marked published
    /// (their first publish failed, or the bridge died before it).
    Outbox {
        /// At most this many, oldest first.
        limit: usize,
    },
    /// The outbox relay says these events are in the stream.
    MarkPublished {
        /// Event ids.
        ids: Vec<String>,
    },
}

impl Request {
    /// What is asked, as the wire's `kind` names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Batch { .. } => "batch",
            Self::Query { .. } => "query",
            Self::Outbox { .. } => "outbox",
            Self::MarkPublished { .. } => "mark_published",
        }
    }

    /// Records in a batch; 0 for the other requests.
    pub fn records(&self) -> usize {
        match self {
            Self::Batch { records } => records.len(),
            _ => 0,
        }
    }
}

/// One event and its trace context.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The event.
    pub envelope: Envelope,
    /// W3C trace context from the NATS headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// An event the function wants published, with its de-duplication id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Event id; publish it as `Nats-Msg-Id`.
    pub id: String,
    /// Subject.
    pub subject: String,
    /// The envelope, as JSON text (published byte for byte).
    pub envelope: String,
    /// W3C trace context to send as a header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Publish it later, or end a schedule with it (see
    /// [`jetsaga_core::schedule`]). Bridges older than this field would
    /// publish a scheduled event at once: upgrade the bridge before the
    /// functions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

/// What became of one record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Result {
    /// Processed: publish `events`, then ack.
    Processed {
        /// Input event id.
        event_id: String,
        /// Events to publish.
        events: Vec<Event>,
    },
    /// A business rejection: publish the failure `events`, then ack.
    Rejected {
        /// Input event id.
        event_id: String,
        /// Why.
        reason: String,
        /// Failure events to publish.
        events: Vec<Event>,
    },
    /// Not processed; redeliver later.
    Retry {
        /// Input event id.
        event_id: String,
        /// Why.
        reason: String,
    },
    /// The function could not reach its store; redeliver later, never dead-letter for it.
    Unavailable {
        /// Input event id.
        event_id: String,
        /// Why.
        reason: String,
    },
    /// Never processable; dead-letter.
    DeadLetter {
        /// Input event id.
        event_id: String,
        /// Why.
        reason: String,
    },
    /// Processed before: publish the events still unpublished, then ack;
    /// `receipt` is how it went the first time.
    Repeated {
        /// Input event id.
        event_id: String,
        /// The first time's receipt.
        receipt: jetsaga_core::Receipt,
        /// Events still unpublished.
        events: Vec<Event>,
    },
    /// The id was used before by a different input; dead-letter.
    Conflict {
        /// Input event id.
        event_id: String,
        /// Why.
        reason: String,
    },
    /// Over a limit: not processed, nothing kept; acknowledge (429 to a caller).
    Refused {
        /// Input event id.
        event_id: String,
        /// Why.
        reason: String,
    },
}

/// A record to redeliver, in the shape AWS uses for partial batch responses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemFailure {
    /// The input event id.
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

/// The answer to an invocation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    /// One result per record, in order.
    Batch {
        /// Results.
        results: Vec<Result>,
        /// Records that were not processed (retry or dead letter): one bad
        /// record never fails its batch.
        #[serde(rename = "batchItemFailures")]
        batch_item_failures: Vec<ItemFailure>,
    },
    /// A query's answer.
    Query {
        /// The reply, on success.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply: Option<serde_json::Value>,
        /// `{code, error}` on failure.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<QueryFailure>,
    },
    /// Unpublished events, oldest first.
    Outbox {
        /// The events.
        events: Vec<Event>,
    },
    /// The events are marked published.
    Marked,
}

/// A refused query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryFailure {
    /// 400, 404 or 500.
    pub code: u16,
    /// Why.
    pub error: String,
}

impl From<&OutboxRecord> for Event {
    fn from(record: &OutboxRecord) -> Self {
        Self {
            id: record.id.clone(),
            subject: record.subject.clone(),
            envelope: String::from_utf8_lossy(&record.payload).into_owned(),
            traceparent: record.traceparent.clone(),
            schedule: record.schedule.clone(),
        }
    }
}

impl From<Event> for OutboxRecord {
    /// A function built before schedules were a field of their own writes
    /// them into the subject: read as a store reads such records.
    fn from(event: Event) -> Self {
        let Event { id, subject, envelope, traceparent, schedule } = event;
        let payload = envelope.into_bytes();
        if schedule.is_some() || !subject.contains(' ') {
            return OutboxRecord { id, subject, payload, traceparent, schedule };
        }
        match OutboxRecord::from_stored(id.clone(), subject.clone(), payload.clone(), traceparent.clone(), None) {
            Ok(record) => record,
            Err(e) => {
                // Published as given: the server refuses the subject, and
                // the record waits in the function's outbox for a fix.
                tracing::warn!(event_id = %id, error = %e, "unreadable event from the function");
                OutboxRecord { id, subject, payload, traceparent, schedule }
            }
        }
    }
}

impl From<Record> for Incoming {
    fn from(record: Record) -> Self {
        Incoming { envelope: record.envelope, traceparent: record.traceparent }
    }
}

impl From<&Incoming> for Record {
    fn from(incoming: &Incoming) -> Self {
        Record { envelope: incoming.envelope.clone(), traceparent: incoming.traceparent.clone() }
    }
}

impl Result {
    /// Wraps an engine outcome.
    pub fn from_outcome(event_id: String, outcome: Outcome) -> Self {
        let events = |records: Vec<OutboxRecord>| records.iter().map(Event::from).collect();
        match outcome {
            Outcome::Publish(records) => Self::Processed { event_id, events: events(records) },
            Outcome::Rejected { reason, outbox } => Self::Rejected { event_id, reason, events: events(outbox) },
            Outcome::Retry(reason) => Self::Retry { event_id, reason },
            Outcome::Unavailable(reason) => Self::Unavailable { event_id, reason },
            Outcome::DeadLetter(reason) => Self::DeadLetter { event_id, reason },
            Outcome::Repeated { receipt, outbox } => Self::Repeated { event_id, receipt, events: events(outbox) },
            Outcome::Conflict(reason) => Self::Conflict { event_id, reason },
            Outcome::Refused(reason) => Self::Refused { event_id, reason },
        }
    }

    /// Back to an engine outcome (on the bridge).
    pub fn into_outcome(self) -> Outcome {
        let records = |events: Vec<Event>| events.into_iter().map(OutboxRecord::from).collect();
        match self {
            Self::Processed { events, .. } => Outcome::Publish(records(events)),
            Self::Rejected { reason, events, .. } => Outcome::Rejected { reason, outbox: records(events) },
            Self::Retry { reason, .. } => Outcome::Retry(reason),
            Self::Unavailable { reason, .. } => Outcome::Unavailable(reason),
            Self::DeadLetter { reason, .. } => Outcome::DeadLetter(reason),
            Self::Repeated { receipt, events, .. } => Outcome::Repeated { receipt, outbox: records(events) },
            Self::Conflict { reason, .. } => Outcome::Conflict(reason),
            Self::Refused { reason, .. } => Outcome::Refused(reason),
        }
    }
}
