//! The handler contract: what a saga function declares and implements,
//! and the context it works through.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jetsaga_envelope::{Envelope, Payload};
use serde::{Serialize, de::DeserializeOwned};

use crate::error::{HandlerError, PendingEvent, QueryError};
use crate::store::{Expect, Item, Store, StoreError, Write};

/// What a function is: its name and the subjects it touches. The runtime
/// derives consumers, streams, services and permissions from this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionSpec {
    /// Unique name: durable consumer, store and service name (`inventory`).
    pub name: &'static str,
    /// One line for `--help` and service discovery.
    pub description: &'static str,
    /// Subjects consumed from the saga stream by the durable consumer (NATS wildcards allowed).
    pub subscribes: &'static [&'static str],
    /// Commands accepted over request/reply (`nats req`, or a plain `nats pub`):
    /// processed at once through the same handler, answered with what happened.
    /// Never stored in the stream, so the stream's own publish ack cannot race the answer.
    pub accepts: &'static [&'static str],
    /// Commands accepted over request/reply only and never kept in a stream,
    /// because they carry a secret (a password hash): processed at once and
    /// answered, whether or not they carry a `Nats-Msg-Id`. One sent while
    /// no copy of the function runs gets no answer (send it again); a plain
    /// publish of one is ignored.
    pub direct: &'static [&'static str],
    /// Subjects it may emit.
    pub emits: &'static [&'static str],
    /// Query subjects served (request/reply).
    pub queries: &'static [&'static str],
    /// The payload field that names the saga in a command a client sends
    /// as a bare payload (`order_id`, `trip_id`): the runtime puts it in
    /// the envelope's `saga_key` when it wraps one. `None` when the
    /// function's commands belong to no saga.
    pub key_field: Option<&'static str>,
}

/// A saga step: stateless code over its own store.
///
/// `handle` reads and writes only through `ctx` and never publishes: the
/// runtime commits the writes, the inbox record and the emitted events in
/// one store transaction, then publishes. It may run more than once for
/// the same event (redelivery, write conflicts), so it must not have side
/// effects outside `ctx`.
#[async_trait]
pub trait Function: Send + Sync + 'static {
    /// The function's declaration.
    fn spec(&self) -> &'static FunctionSpec;

    /// Handles one event.
    async fn handle(&self, ctx: &mut Ctx<'_>, event: &Envelope) -> Result<(), HandlerError>;

    /// The keys `handle` will likely read for `event`. The engine loads the
    /// keys of a whole batch in one store round trip before running any
    /// handler. Only a hint: keys left out are read when asked for, keys
    /// never asked for cost a little bandwidth, and a payload that does not
    /// decode should just give none (`handle` reports it).
    fn prefetch(&self, event: &Envelope) -> Vec<String> {
        let _ = event;
        Vec::new()
    }

    /// Answers a read-only query on one of `spec().queries`.
    async fn query(&self, ctx: &QueryCtx<'_>, subject: &str, request: &[u8]) -> Result<serde_json::Value, QueryError> {
        let _ = (ctx, request);
        Err(QueryError::NotFound(format!("{} serves no query {subject}", self.spec().name)))
    }
}

/// The state a batch has written so far, seen by the next handler in the
/// same batch before anything is committed.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    entries: BTreeMap<String, (Option<Vec<u8>>, Expect)>,
    /// Stored values loaded before the batch ran (see [`Function::prefetch`]).
    prefetched: std::collections::HashMap<String, Option<Item>>,
}

impl Overlay {
    /// An overlay that already knows these stored values.
    pub(crate) fn with_prefetched(prefetched: std::collections::HashMap<String, Option<Item>>) -> Self {
        Self { entries: BTreeMap::new(), prefetched }
    }

    /// Records the writes of a handler that succeeded: later handlers see
    /// the new values and expect the versions these writes will create.
    pub(crate) fn apply(&mut self, writes: &[Write]) {
        for write in writes {
            let next = match (&write.value, write.expect) {
                (None, _) => Expect::Absent,
                (Some(_), Expect::Absent) => Expect::Version(1),
                (Some(_), Expect::Version(v)) => Expect::Version(v + 1),
                (Some(_), Expect::Any) => Expect::Any,
            };
            self.entries.insert(write.key.clone(), (write.value.clone(), next));
        }
    }
}

#[derive(Debug)]
struct Touched {
    value: Option<Vec<u8>>,
    expect: Expect,
    written: bool,
    /// The write's retention, if any (see [`Ctx::put_until`]).
    expires_at: Option<i64>,
}

/// What a handler works through: its store (reads are tracked so writes
/// are conditional on what was read) and the events it emits.
pub struct Ctx<'a> {
    store: &'a dyn Store,
    overlay: &'a Overlay,
    touched: BTreeMap<String, Touched>,
    emitted: Vec<PendingEvent>,
    milestones: Vec<Milestone>,
    now: DateTime<Utc>,
}

/// A saga beginning or ending, as the handler that decides it says so
/// ([`Ctx::saga_started`], [`Ctx::saga_ended`]): counted by the engine once
/// the handler's effects are committed, so a redelivery or a re-run never
/// counts twice (`jetsaga_sagas_started_total`, `jetsaga_sagas_ended_total`,
/// `jetsaga_saga_duration_seconds`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Milestone {
    /// A saga of this kind began.
    Started {
        /// The kind of saga (`order`): a metric label, so a fixed word.
        saga: &'static str,
    },
    /// A saga of this kind reached an end.
    Ended {
        /// The kind of saga.
        saga: &'static str,
        /// Which end (`completed`, `failed`, …): a metric label, so a fixed word.
        outcome: &'static str,
        /// When the saga began, for its end-to-end duration.
        started_at: DateTime<Utc>,
    },
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("touched", &self.touched.keys()).field("emitted", &self.emitted).finish()
    }
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(store: &'a dyn Store, overlay: &'a Overlay, now: DateTime<Utc>) -> Self {
        Self { store, overlay, touched: BTreeMap::new(), emitted: Vec::new(), milestones: Vec::new(), now }
    }

    /// Processing time of this event.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    async fn load(&mut self, key: &str) -> Result<&Touched, StoreError> {
        if !self.touched.contains_key(key) {
            let touched = if let Some((value, expect)) = self.overlay.entries.get(key) {
                Touched { value: value.clone(), expect: *expect, written: false, expires_at: None }
            } else {
                let stored = match self.overlay.prefetched.get(key) {
                    Some(item) => item.clone(),
                    None => self.store.get(key).await?,
                };
                match stored {
                    Some(Item { value, version }) => Touched {
                        value: Some(value),
                        expect: Expect::Version(version),
                        written: false,
                        expires_at: None,
                    },
                    None => Touched { value: None, expect: Expect::Absent, written: false, expires_at: None },
                }
            };
            self.touched.insert(key.to_string(), touched);
        }
        Ok(&self.touched[key])
    }

    /// Reads and decodes a value. A later write of the same key only
    /// commits if nobody else changed it in between.
    pub async fn get<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, HandlerError> {
        let touched = self.load(key).await?;
        match &touched.value {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(bytes)
                .map(Some)
                .map_err(|e| HandlerError::retryable(format!("stored value of {key:?} does not decode: {e}"))),
        }
    }

    /// Writes a value. Conditional on the version read by `get` (or on the
    /// key being absent if `get` found nothing); unconditional without a `get`.
    pub fn put<T: Serialize>(&mut self, key: &str, value: &T) {
        let bytes = serde_json::to_vec(value).expect("state values serialize");
        self.set(key, Some(bytes), None);
    }

    /// Writes a value (like [`Ctx::put`]) that the store may remove once
    /// `until` has passed: a retention. The value stays readable until the
    /// store's sweep (SQL: hourly) or TTL (DynamoDB: within days) removes
    /// it; writing the key again with [`Ctx::put`] keeps it for good.
    pub fn put_until<T: Serialize>(&mut self, key: &str, value: &T, until: DateTime<Utc>) {
        let bytes = serde_json::to_vec(value).expect("state values serialize");
        self.set(key, Some(bytes), Some(until.timestamp()));
    }

    /// Deletes a key (conditional like [`Ctx::put`]).
    pub fn delete(&mut self, key: &str) {
        self.set(key, None, None);
    }

    fn set(&mut self, key: &str, value: Option<Vec<u8>>, expires_at: Option<i64>) {
        let overlay_expect = self.overlay.entries.get(key).map(|(_, e)| *e);
        let entry = self.touched.entry(key.to_string()).or_insert_with(|| Touched {
            value: None,
            expect: overlay_expect.unwrap_or(Expect::Any),
            written: true,
            expires_at: None,
        });
        entry.value = value;
        entry.written = true;
        entry.expires_at = expires_at;
    }

    /// Emits an event; it is published after this handler's changes are durable.
    pub fn emit<P: Payload>(&mut self, payload: P) {
        self.emitted.push(PendingEvent::new(&payload));
    }

    /// Emits `payload` at `at` instead of now: the transport holds it (one
    /// schedule per `key` of this function; a new one replaces the old) and
    /// stores it on its subject then. Committed with the rest, like any event.
    pub fn schedule<P: Payload>(&mut self, function: &str, key: &str, at: DateTime<Utc>, payload: P) {
        let mut event = PendingEvent::new(&payload);
        // To the millisecond, the precision every store and transport keeps.
        let at = chrono::SubsecRound::trunc_subsecs(at, 3);
        event.schedule = Some(crate::schedule::Schedule::At { name: crate::schedule::name_for(function, key), at });
        self.emitted.push(event);
    }

    /// Emits `payload` now, ending this function's schedule for `key` in the
    /// same write (nothing happens to a schedule that fired or never was).
    pub fn unschedule<P: Payload>(&mut self, function: &str, key: &str, payload: P) {
        let mut event = PendingEvent::new(&payload);
        event.schedule = Some(crate::schedule::Schedule::Cancel { name: crate::schedule::name_for(function, key) });
        self.emitted.push(event);
    }

    /// Emits an event that is not in the jetsaga catalog (frameworks users'
    /// own subjects). `saga_key: None` inherits the input's.
    pub fn emit_raw<T: Serialize>(&mut self, subject: &str, saga_key: Option<&str>, data: &T) {
        self.emitted.push(PendingEvent {
            subject: subject.to_string(),
            saga_key: saga_key.map(str::to_string),
            data: serde_json::to_value(data).expect("event payloads serialize"),
            schedule: None,
        });
    }

    /// The writes and events this handler produced.
    /// Says that this event begins a saga of kind `saga` (see [`Milestone`]).
    pub fn saga_started(&mut self, saga: &'static str) {
        self.milestones.push(Milestone::Started { saga });
    }

    /// Says that this event ends a saga of kind `saga` that began at
    /// `started_at`, with `outcome` (see [`Milestone`]).
    pub fn saga_ended(&mut self, saga: &'static str, outcome: &'static str, started_at: DateTime<Utc>) {
        self.milestones.push(Milestone::Ended { saga, outcome, started_at });
    }

    /// The milestones said so far (taken: the engine counts them after the commit).
    pub(crate) fn take_milestones(&mut self) -> Vec<Milestone> {
        std::mem::take(&mut self.milestones)
    }

    pub(crate) fn finish(self) -> (Vec<Write>, Vec<PendingEvent>) {
        let writes = self
            .touched
            .into_iter()
            .filter(|(_, t)| t.written)
            .filter(|(_, t)| !(t.value.is_none() && t.expect == Expect::Absent))
            .map(|(key, t)| Write { key, value: t.value, expect: t.expect, expires_at: t.expires_at })
            .collect();
        (writes, self.emitted)
    }
}

/// Read-only access to a function's store, for queries.
#[derive(Debug)]
pub struct QueryCtx<'a> {
    store: &'a dyn Store,
}

impl<'a> QueryCtx<'a> {
    pub(crate) fn new(store: &'a dyn Store) -> Self {
        Self { store }
    }

    /// Reads and decodes a value.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, QueryError> {
        match self.store.get(key).await? {
            None => Ok(None),
            Some(item) => serde_json::from_slice(&item.value)
                .map(Some)
                .map_err(|e| QueryError::Internal(format!("stored value of {key:?} does not decode: {e}"))),
        }
    }

    /// Reads and decodes several values at once; one answer per key, in order.
    pub async fn get_many<T: DeserializeOwned>(&self, keys: &[String]) -> Result<Vec<Option<T>>, QueryError> {
        let found = self.store.get_many(keys).await?;
        keys.iter().zip(found).map(|(key, item)| item.map(|item| decode(key, &item.value)).transpose()).collect()
    }

    /// Reads and decodes every value under a key prefix, in key order.
    pub async fn scan<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<(String, T)>, QueryError> {
        self.store
            .scan(prefix)
            .await?
            .into_iter()
            .map(|(key, item)| Ok((key.clone(), decode(&key, &item.value)?)))
            .collect()
    }

    /// Reads and decodes at most `limit` values under a key prefix, after
    /// the key `after`, in key order (see [`Store::scan_page`]).
    pub async fn scan_page<T: DeserializeOwned>(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, T)>, QueryError> {
        let found = self.store.scan_page(prefix, after, limit).await?;
        found.into_iter().map(|(key, item)| Ok((key.clone(), decode(&key, &item.value)?))).collect()
    }
}

fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, QueryError> {
    serde_json::from_slice(value)
        .map_err(|e| QueryError::Internal(format!("stored value of {key:?} does not decode: {e}")))
}
