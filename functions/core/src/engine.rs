//! The transport-agnostic processing engine: inbox check, handler run,
//! one commit for a whole batch, outbox. Every adapter (JetStream, Lambda,
//! the unit-test harness) processes events through it, so the
//! effectively-once rules live in exactly one place.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use jetsaga_envelope::{DecodeError, ENVELOPE_VERSION, Envelope};
use serde::{Deserialize, Serialize};
use tracing::{Instrument, debug, info_span, warn};

use crate::error::{HandlerError, PendingEvent, QueryError};
use crate::function::{Ctx, Function, FunctionSpec, Milestone, Overlay, QueryCtx};
use crate::ids::{TraceParent, derived_id};
use crate::store::{Commit, CommitError, OutboxRecord, Store, StoreError};

/// How many times one event is re-run after losing a write race before it
/// is handed back to the transport for a delayed retry.
const MAX_CONFLICT_RETRIES: usize = 16;

/// One input event and its transport metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Incoming {
    /// The event.
    pub envelope: Envelope,
    /// W3C trace context from the transport headers.
    pub traceparent: Option<String>,
}

impl Outcome {
    /// The records to publish, if the input counts as processed.
    pub fn outbox(&self) -> Option<&[OutboxRecord]> {
        match self {
            Self::Publish(outbox) | Self::Rejected { outbox, .. } | Self::Repeated { outbox, .. } => Some(outbox),
            Self::Retry(_) | Self::Unavailable(_) | Self::DeadLetter(_) | Self::Conflict(_) | Self::Refused(_) => None,
        }
    }
}

/// What processing an input amounted to, stored with its inbox record, so
/// that a retry gets the first answer again and a different input reusing
/// the id is told apart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Digest of the input's type and payload.
    pub digest: String,
    /// Why it was refused, if it was a business rejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    /// Subjects of the events it emitted, in order.
    pub events: Vec<String>,
    /// The saga it concerned (for a create, the order it made). Receipts
    /// kept before the key was generic name it `order_id`.
    #[serde(default, alias = "order_id", skip_serializing_if = "Option::is_none")]
    pub saga_key: Option<String>,
}

impl Receipt {
    /// The digest of an input: its type and its payload (JSON objects have
    /// sorted keys, so key order and spacing of what a client sent do not matter).
    pub fn digest_of(envelope: &Envelope) -> String {
        // The bytes of `format!("{type}\n{data}")`, written without the
        // formatting machinery (a digest per input, on the hot path).
        let mut canonical = Vec::with_capacity(envelope.event_type.len() + 256);
        canonical.extend_from_slice(envelope.event_type.as_bytes());
        canonical.push(b'\n');
        serde_json::to_writer(&mut canonical, &envelope.data).expect("JSON values serialize");
        crate::ids::digest_bytes(&canonical)
    }
}

/// A handler run that can be committed; `rejected` holds the reason of a
/// business rejection, `milestones` the saga milestones it reached.
struct Ran {
    commit: Commit,
    rejected: Option<String>,
    milestones: Vec<Milestone>,
}

impl Ran {
    fn into_outcome(self) -> Outcome {
        match self.rejected {
            None => Outcome::Publish(self.commit.outbox),
            Some(reason) => Outcome::Rejected { reason, outbox: self.commit.outbox },
        }
    }
}

impl Incoming {
    /// An input without trace context.
    pub fn new(envelope: Envelope) -> Self {
        Self { envelope, traceparent: None }
    }
}

/// What the transport must do with an input.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Processed (now or earlier): publish these records, then acknowledge.
    Publish(Vec<OutboxRecord>),
    /// Processed as a business rejection: publish the failure events, then
    /// acknowledge. Request/reply callers get the reason as an error.
    Rejected {
        /// Why, for a person.
        reason: String,
        /// The failure events.
        outbox: Vec<OutboxRecord>,
    },
    /// Not processed: the handler asked to be tried again later. Counts
    /// toward `max_deliver`, after which the input is dead-lettered.
    Retry(String),
    /// Not processed: the function could not be run or its store not
    /// reached (a crash, an outage, a lost race). Retried until it works and
    /// never dead-lettered for it: an outage is no reason to give up on a
    /// good message.
    Unavailable(String),
    /// Never processable: dead-letter with this reason and acknowledge.
    DeadLetter(String),
    /// Processed before (a retry or a redelivery): publish what is still
    /// unpublished, then acknowledge; a caller gets the first answer again.
    Repeated {
        /// How it went the first time.
        receipt: Receipt,
        /// Its events not yet published (often none).
        outbox: Vec<OutboxRecord>,
    },
    /// Its id was used before by a different input: not processed. A
    /// request/reply caller gets 409; a stream message is dead-lettered.
    Conflict(String),
    /// Not processed, and nothing kept: the sender is over a limit (see
    /// [`HandlerError::Refused`]). Acknowledge; a request/reply caller gets 429.
    Refused(String),
}

/// The receipt of a run that emitted `events` (a rejection if `rejected`).
fn receipt(input: &Envelope, events: &[PendingEvent], rejected: Option<&str>) -> String {
    let receipt = Receipt {
        digest: Receipt::digest_of(input),
        rejected: rejected.map(str::to_string),
        // What was published now: a schedule is published later, if ever.
        events: events
            .iter()
            .filter(|e| e.schedule.as_ref().and_then(|s| s.at()).is_none())
            .map(|e| e.subject.clone())
            .collect(),
        saga_key: events.iter().find_map(|e| e.saga_key.clone()).or_else(|| input.saga_key.clone()),
    };
    serde_json::to_string(&receipt).expect("receipts serialize")
}

/// The trace id and span id an input's handling is logged with: those of
/// its delivery's span (see [`crate::telemetry`]), or the trace id its saga
/// is known by when it came without trace context.
fn trace_ids(incoming: &Incoming) -> (String, Option<String>) {
    match incoming.traceparent.as_deref().and_then(TraceParent::parse) {
        Some(context) => (context.trace_id, Some(context.parent_id)),
        None => (TraceParent::root(&incoming.envelope.correlation_id).trace_id, None),
    }
}

/// The text a panic was raised with.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Wraps a bare command payload (as sent by `nats pub`) in an envelope.
///
/// `id` is the client's idempotency id (`Nats-Msg-Id`) when given;
/// otherwise one is derived from `seed`, which must identify the stored
/// message (for example stream name and sequence), so a redelivery gets the same id.
pub fn command_envelope(
    subject: &str,
    body: &[u8],
    id: Option<&str>,
    seed: &str,
    at: DateTime<Utc>,
    key_field: Option<&str>,
) -> Result<Envelope, DecodeError> {
    let data: serde_json::Value = jetsaga_envelope::envelope::decode_json(subject, body)?;
    if !data.is_object() {
        return Err(DecodeError::new(subject, ".", format!("expected a JSON object, got {data}")));
    }
    let id = match id {
        Some(id) if !id.trim().is_empty() => id.to_string(),
        _ => derived_id(at, seed),
    };
    Ok(Envelope {
        // A bare payload names its saga in the field its function declares.
        saga_key: key_field.and_then(|field| data.get(field)?.as_str()).map(str::to_string),
        correlation_id: id.clone(),
        causation_id: None,
        id,
        event_type: subject.to_string(),
        occurred_at: at,
        version: ENVELOPE_VERSION,
        data,
    })
}

/// The id an input is remembered by in its function's inbox. A command's
/// id may be its sender's choice (`Nats-Msg-Id`), an event's is derived by
/// the runtime: commands are kept in a namespace of their own, so that no
/// sender can take an event's id before the event comes (which would turn
/// that event into a conflict, and a dead letter).
pub fn inbox_id(envelope: &Envelope) -> String {
    match jetsaga_envelope::subject::parse(&envelope.event_type) {
        Some((_, jetsaga_envelope::subject::SubjectKind::Command)) => format!("cmd:{}", envelope.id),
        _ => envelope.id.clone(),
    }
}

/// Processes events for one function, wherever the function runs: in this
/// process over its store ([`Engine`]), or remotely (a Lambda function the
/// bridge invokes). Transports drive this, so they work with either.
#[async_trait::async_trait]
pub trait Processor: Send + Sync + std::fmt::Debug + 'static {
    /// The function's declaration.
    fn spec(&self) -> &'static FunctionSpec;

    /// The function's name.
    fn name(&self) -> &'static str {
        self.spec().name
    }

    /// Processes a batch; one outcome per input, in order.
    async fn process(&self, batch: &[Incoming]) -> Vec<Outcome>;

    /// Answers a read-only query.
    async fn query(&self, subject: &str, request: &[u8]) -> Result<serde_json::Value, QueryError>;

    /// Outbox records committed but not yet published, oldest first.
    async fn unpublished(&self, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        let _ = limit;
        Ok(Vec::new())
    }

    /// Marks outbox records published (local stores only).
    async fn mark_published(&self, ids: &[String]) -> Result<(), StoreError> {
        let _ = ids;
        Ok(())
    }

    /// Forgets inbox records processed before `before` (see [`Store::sweep_inbox`]);
    /// remote functions expire theirs by themselves.
    async fn sweep_inbox(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let _ = before;
        Ok(0)
    }

    /// How many inputs its inbox remembers, if that can be counted (see [`Store::inbox_size`]).
    async fn inbox_size(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    /// Removes keys whose retention ended by `now`, Unix seconds (see
    /// [`Store::sweep_expired`]); remote functions' stores expire theirs by themselves.
    async fn sweep_expired(&self, now: i64) -> Result<u64, StoreError> {
        let _ = now;
        Ok(0)
    }

    /// How long published ids are gathered before one [`Processor::mark_published`]
    /// removes them all: short for a local store, longer where each call
    /// costs a remote invocation.
    fn mark_published_every(&self) -> std::time::Duration {
        std::time::Duration::from_millis(50)
    }
}

#[async_trait::async_trait]
impl Processor for Engine {
    fn spec(&self) -> &'static FunctionSpec {
        self.function.spec()
    }

    async fn process(&self, batch: &[Incoming]) -> Vec<Outcome> {
        self.handle_batch(batch).await
    }

    async fn query(&self, subject: &str, request: &[u8]) -> Result<serde_json::Value, QueryError> {
        Engine::query(self, subject, request).await
    }

    async fn unpublished(&self, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        self.store.unpublished(limit).await
    }

    async fn mark_published(&self, ids: &[String]) -> Result<(), StoreError> {
        self.store.mark_published(ids).await
    }

    async fn sweep_inbox(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.store.sweep_inbox(before).await
    }

    async fn sweep_expired(&self, now: i64) -> Result<u64, StoreError> {
        self.store.sweep_expired(now).await
    }

    async fn inbox_size(&self) -> Result<Option<u64>, StoreError> {
        self.store.inbox_size().await
    }
}

/// Runs one function over its store.
#[derive(Clone)]
pub struct Engine {
    function: Arc<dyn Function>,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("function", &self.function.spec().name).field("store", &self.store).finish()
    }
}

impl Engine {
    /// Pairs a function with its store.
    pub fn new(function: Arc<dyn Function>, store: Arc<dyn Store>) -> Self {
        Self { function, store }
    }

    /// The function's name.
    pub fn name(&self) -> &'static str {
        self.function.spec().name
    }

    /// The function.
    pub fn function(&self) -> &Arc<dyn Function> {
        &self.function
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Processes a batch, committing every successful handler run in one
    /// store transaction. Returns one outcome per input, in order.
    pub async fn handle_batch(&self, batch: &[Incoming]) -> Vec<Outcome> {
        if batch.len() == 1 {
            return vec![self.handle_one(&batch[0]).await];
        }
        // Whatever goes wrong for the batch as a whole is sorted out event by
        // event: one bad input must cost only itself, never hold its batch
        // back (a batch-wide retry would back off, and in the end
        // dead-letter, the good events with it).
        let mut overlay = match self.prefetch(batch).await {
            Ok(overlay) => overlay,
            Err(e) => {
                warn!(function = self.name(), error = %e, "cannot read the batch's state; processing it event by event");
                return self.one_by_one(batch.iter()).await;
            }
        };
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
        let mut runs = Vec::with_capacity(batch.len());
        let mut committed = Vec::with_capacity(batch.len());
        for (i, incoming) in batch.iter().enumerate() {
            match self.run_handler(incoming, &mut overlay).await {
                Ok(ran) => {
                    runs.push(ran);
                    committed.push(i);
                }
                Err(outcome) => outcomes[i] = Some(self.unless_processed(incoming, outcome).await),
            }
        }
        let commits: Vec<Commit> = runs.iter().map(|r| r.commit.clone()).collect();
        let started = std::time::SystemTime::now();
        match self.store.commit(&commits).await {
            Ok(()) => {
                let ended = self.commit_took(started);
                for (i, ran) in committed.into_iter().zip(runs) {
                    self.committed(&batch[i], &ran, started, ended);
                    outcomes[i] = Some(ran.into_outcome());
                }
            }
            Err(e) => {
                // A redelivery, a write race, or one event the store cannot
                // take somewhere in the batch: one transaction per event
                // sorts it out, and gives each event its own outcome.
                match &e {
                    CommitError::Store(e) => {
                        warn!(function = self.name(), error = %e, "batch commit failed; committing one by one")
                    }
                    e => {
                        debug!(function = self.name(), reason = %e, size = committed.len(), "batch commit refused; committing one by one")
                    }
                }
                let singles = self.one_by_one(committed.iter().map(|&i| &batch[i])).await;
                for (i, outcome) in committed.into_iter().zip(singles) {
                    outcomes[i] = Some(outcome);
                }
            }
        }
        outcomes.into_iter().map(|o| o.expect("every input has an outcome")).collect()
    }

    async fn one_by_one<'a>(&self, events: impl Iterator<Item = &'a Incoming>) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        for incoming in events {
            outcomes.push(self.handle_one(incoming).await);
        }
        outcomes
    }

    /// Processes one event in its own transaction, re-running the handler
    /// when it loses a write race.
    ///
    /// Optimistic: the handler runs before the inbox is consulted, because
    /// the commit refuses an event that was already processed anyway; only
    /// then is the earlier outcome looked up. A redelivery costs one wasted
    /// handler run, every first delivery saves a store round trip.
    pub async fn handle_one(&self, incoming: &Incoming) -> Outcome {
        let event_id = &incoming.envelope.id;
        let mut last_conflict = String::new();
        for _ in 0..MAX_CONFLICT_RETRIES {
            let mut overlay = match self.prefetch(std::slice::from_ref(incoming)).await {
                Ok(overlay) => overlay,
                Err(e) => return Outcome::Unavailable(e.to_string()),
            };
            let ran = match self.run_handler(incoming, &mut overlay).await {
                Ok(ran) => ran,
                Err(outcome) => return self.unless_processed(incoming, outcome).await,
            };
            let started = std::time::SystemTime::now();
            match self.store.commit(std::slice::from_ref(&ran.commit)).await {
                Ok(()) => {
                    let ended = self.commit_took(started);
                    self.committed(incoming, &ran, started, ended);
                    return ran.into_outcome();
                }
                Err(CommitError::Conflict { key }) => {
                    debug!(function = self.name(), event_id, key, "write conflict; re-running the handler");
                    last_conflict = key;
                }
                Err(CommitError::Duplicate { .. }) => {
                    debug!(function = self.name(), event_id, "already processed; answering as the first time");
                    return match self.earlier(incoming).await {
                        Some(outcome) => outcome,
                        // Inbox records are never removed while an event can be redelivered.
                        None => Outcome::Unavailable(format!("event {event_id} is both processed and not")),
                    };
                }
                Err(CommitError::TooLarge { message }) => {
                    return Outcome::DeadLetter(format!("this event's changes cannot be committed at once: {message}"));
                }
                Err(CommitError::Store(e)) => return Outcome::Unavailable(e.to_string()),
            }
        }
        Outcome::Unavailable(format!("lost {MAX_CONFLICT_RETRIES} write races in a row on key {last_conflict:?}"))
    }

    /// Records how long a commit that began at `started` took; returns when it ended.
    fn commit_took(&self, started: std::time::SystemTime) -> std::time::SystemTime {
        let ended = std::time::SystemTime::now();
        let took = ended.duration_since(started).unwrap_or_default();
        metrics::histogram!("jetsaga_commit_seconds", "function" => self.name()).record(took.as_secs_f64());
        ended
    }

    /// What follows a committed handler run: its spans (see
    /// [`crate::telemetry`]) and its saga milestones, counted now that they
    /// can never be counted again.
    fn committed(&self, incoming: &Incoming, ran: &Ran, started: std::time::SystemTime, ended: std::time::SystemTime) {
        crate::telemetry::committed(self.name(), incoming, &ran.commit.outbox, started, ended);
        for milestone in &ran.milestones {
            match milestone {
                Milestone::Started { saga } => {
                    metrics::counter!("jetsaga_sagas_started_total", "saga" => *saga).increment(1)
                }
                Milestone::Ended { saga, outcome, started_at } => {
                    metrics::counter!("jetsaga_sagas_ended_total", "saga" => *saga, "outcome" => *outcome).increment(1);
                    let took = (Utc::now() - *started_at).to_std().unwrap_or_default();
                    metrics::histogram!("jetsaga_saga_duration_seconds", "saga" => *saga, "outcome" => *outcome)
                        .record(took.as_secs_f64());
                }
            }
        }
    }

    /// A handler failed: if the event was processed before (a redelivery
    /// after its commit), that earlier outcome stands; otherwise `failure` does.
    async fn unless_processed(&self, incoming: &Incoming, failure: Outcome) -> Outcome {
        self.earlier(incoming).await.unwrap_or(failure)
    }

    /// How an input processed before went, if it was: the same answer
    /// again (with its events still unpublished), or a conflict if this
    /// input is not the one that used its id.
    async fn earlier(&self, incoming: &Incoming) -> Option<Outcome> {
        let id = &incoming.envelope.id;
        let key = inbox_id(&incoming.envelope);
        let pending = match self.store.processed(&key).await {
            Ok(Some(pending)) => pending,
            Ok(None) => return None,
            Err(e) => return Some(Outcome::Unavailable(e.to_string())),
        };
        let receipt = match self.store.receipt(&key).await {
            Ok(Some(text)) => serde_json::from_str::<Receipt>(&text).ok(),
            Ok(None) => None,
            Err(e) => return Some(Outcome::Unavailable(e.to_string())),
        };
        Some(match receipt {
            // Processed before receipts were kept: its events, nothing more is known.
            None => Outcome::Publish(pending),
            Some(receipt) if receipt.digest != Receipt::digest_of(&incoming.envelope) => Outcome::Conflict(format!(
                "id {id} was already used by a different {}: a retry must send the same payload under the same id \
                 (Nats-Msg-Id), a new command needs a new id",
                incoming.envelope.event_type
            )),
            Some(receipt) => Outcome::Repeated { receipt, outbox: pending },
        })
    }

    /// Loads every key the handlers of `batch` will likely read, in one round trip.
    async fn prefetch(&self, batch: &[Incoming]) -> Result<Overlay, StoreError> {
        let mut keys: Vec<String> = batch.iter().flat_map(|i| self.function.prefetch(&i.envelope)).collect();
        if keys.is_empty() {
            return Ok(Overlay::default());
        }
        keys.sort_unstable();
        keys.dedup();
        let items = self.store.get_many(&keys).await?;
        Ok(Overlay::with_prefetched(keys.into_iter().zip(items).collect()))
    }

    async fn run_handler(&self, incoming: &Incoming, overlay: &mut Overlay) -> Result<Ran, Outcome> {
        let envelope = &incoming.envelope;
        let span = info_span!(
            "handle",
            function = self.name(),
            event_id = %envelope.id,
            event_type = %envelope.event_type,
            saga_key = envelope.saga_key.as_deref().unwrap_or(""),
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        if !span.is_disabled() {
            // So that the log lines of this handling join its trace.
            let (trace_id, span_id) = trace_ids(incoming);
            span.record("trace_id", trace_id.as_str());
            if let Some(span_id) = span_id {
                span.record("span_id", span_id.as_str());
            }
        }
        let now = Utc::now();
        let mut ctx = Ctx::new(self.store.as_ref(), overlay, now);
        // A panicking handler is a bug for this one input, not a reason to
        // stop serving every other one (and to crash-loop on it at restart).
        let result = match AssertUnwindSafe(self.function.handle(&mut ctx, envelope))
            .catch_unwind()
            .instrument(span.clone())
            .await
        {
            Ok(result) => result,
            Err(panic) => Err(HandlerError::Malformed(format!("the handler panicked: {}", panic_message(&*panic)))),
        };
        let _entered = span.enter();
        match result {
            Ok(()) => {
                let milestones = ctx.take_milestones();
                let (writes, emitted) = ctx.finish();
                if let Err(reason) = self.declared(&emitted) {
                    warn!(%reason, trace_id = trace_ids(incoming).0, "undeclared event");
                    return Err(Outcome::DeadLetter(reason));
                }
                overlay.apply(&writes);
                let receipt = receipt(envelope, &emitted, None);
                let outbox = self.outbox(incoming, emitted, now);
                debug!(writes = writes.len(), emitted = outbox.len(), "handled");
                Ok(Ran {
                    commit: Commit { event_id: inbox_id(envelope), writes, outbox, receipt: Some(receipt) },
                    rejected: None,
                    milestones,
                })
            }
            Err(HandlerError::Rejected { reason, events }) => {
                drop(ctx);
                if let Err(reason) = self.declared(&events) {
                    warn!(%reason, trace_id = trace_ids(incoming).0, "undeclared event");
                    return Err(Outcome::DeadLetter(reason));
                }
                debug!(reason = %reason, "rejected");
                let receipt = receipt(envelope, &events, Some(&reason));
                let outbox = self.outbox(incoming, events, now);
                Ok(Ran {
                    commit: Commit { event_id: inbox_id(envelope), writes: Vec::new(), outbox, receipt: Some(receipt) },
                    rejected: Some(reason),
                    milestones: Vec::new(),
                })
            }
            Err(HandlerError::Retryable(reason)) => {
                warn!(%reason, trace_id = trace_ids(incoming).0, "retryable failure");
                Err(Outcome::Retry(reason))
            }
            Err(HandlerError::Unavailable(reason)) => {
                warn!(%reason, trace_id = trace_ids(incoming).0, "store unavailable");
                Err(Outcome::Unavailable(reason))
            }
            Err(HandlerError::Malformed(reason)) => {
                warn!(%reason, trace_id = trace_ids(incoming).0, "malformed input");
                Err(Outcome::DeadLetter(reason))
            }
            Err(HandlerError::Refused(reason)) => {
                debug!(%reason, "refused for now");
                Err(Outcome::Refused(reason))
            }
        }
    }

    /// Refuses events the function's declaration does not list (its
    /// `emits`: every subject it publishes, and the schedule subjects it
    /// schedules on). A handler bug, caught where it happens: undeclared,
    /// the stream might not keep the event, the function's NATS user might
    /// not publish it, and readers refuse a schedule's message from subjects
    /// no declaration names. Nothing is committed; the input is dead-lettered
    /// with the reason.
    fn declared(&self, events: &[PendingEvent]) -> Result<(), String> {
        let spec = self.function.spec();
        let covered = |subject: &str| {
            spec.emits.iter().any(|pattern| match pattern.strip_suffix('>') {
                Some(prefix) => subject.starts_with(prefix),
                None => *pattern == subject,
            })
        };
        for event in events {
            if !covered(&event.subject) {
                return Err(format!(
                    "{} emitted {}, which its declaration does not list in `emits`",
                    spec.name, event.subject
                ));
            }
            let Some(on) = event.schedule.as_ref().map(|s| s.name()) else { continue };
            if !covered(on) {
                let pattern = on.rsplit_once('.').map_or(on, |(prefix, _)| prefix);
                return Err(format!(
                    "{} scheduled on {on}, which its declaration does not list in `emits` (add \"{pattern}.>\")",
                    spec.name
                ));
            }
        }
        Ok(())
    }

    /// Turns emitted payloads into envelopes with deterministic ids.
    fn outbox(&self, incoming: &Incoming, emitted: Vec<PendingEvent>, now: DateTime<Utc>) -> Vec<OutboxRecord> {
        let input = &incoming.envelope;
        let trace = incoming
            .traceparent
            .as_deref()
            .and_then(TraceParent::parse)
            .unwrap_or_else(|| TraceParent::root(&input.correlation_id));
        // From the input's inbox identity: a command and an event sharing an
        // id never derive the same event ids.
        let input_key = inbox_id(input);
        emitted
            .into_iter()
            .enumerate()
            .map(|(index, event)| {
                let id = derived_id(input.occurred_at, &format!("{}/{input_key}/{index}", self.name()));
                let envelope = Envelope {
                    id: id.clone(),
                    event_type: event.subject.clone(),
                    saga_key: event.saga_key.or_else(|| input.saga_key.clone()),
                    correlation_id: input.correlation_id.clone(),
                    causation_id: Some(input.id.clone()),
                    // A scheduled event happens when it is published.
                    occurred_at: event.schedule.as_ref().and_then(|s| s.at()).unwrap_or(now),
                    version: ENVELOPE_VERSION,
                    data: event.data,
                };
                OutboxRecord {
                    traceparent: Some(trace.child(&id).to_string()),
                    id,
                    subject: event.subject,
                    payload: envelope.encode(),
                    schedule: event.schedule,
                }
            })
            .collect()
    }

    /// Answers a query from the store.
    pub async fn query(&self, subject: &str, request: &[u8]) -> Result<serde_json::Value, QueryError> {
        let ctx = QueryCtx::new(self.store.as_ref());
        self.function.query(&ctx, subject, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Receipts kept before the saga key was generic name it `order_id`:
    /// a retry of such an input is still answered with its key.
    #[test]
    fn a_receipt_kept_with_the_old_key_name_reads_the_same() {
        let old: Receipt = serde_json::from_str(r#"{"digest":"d","events":["orders.evt.created"],"order_id":"o-1"}"#)
            .expect("an old receipt reads");
        assert_eq!(old.saga_key.as_deref(), Some("o-1"));
        let again = serde_json::to_string(&old).unwrap();
        assert!(again.contains(r#""saga_key":"o-1""#), "{again}");
    }

    /// Inbox receipts written before the digest stopped going through
    /// `format!` must still match their redeliveries.
    #[test]
    fn the_input_digest_is_the_digest_of_type_and_compact_payload() {
        let data = serde_json::json!({"z": [1, {"b": "x\n\"y\""}], "a": null, "m": 2.5});
        let envelope = Envelope {
            id: "e1".into(),
            event_type: "orders.cmd.create".into(),
            saga_key: None,
            correlation_id: "c1".into(),
            causation_id: None,
            occurred_at: chrono::Utc::now(),
            version: jetsaga_envelope::ENVELOPE_VERSION,
            data: data.clone(),
        };
        let written_before = crate::ids::digest(&format!("orders.cmd.create\n{data}"));
        assert_eq!(Receipt::digest_of(&envelope), written_before);
        let other = Envelope { data: serde_json::json!({"a": 1}), ..envelope.clone() };
        assert_ne!(Receipt::digest_of(&other), written_before);
    }
}
