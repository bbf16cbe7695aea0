//! A harness for per-function unit tests: given stored state and an input
//! event, assert the emitted events and the resulting state, in a few lines.
//!
//! ```text
//! let t = TestFunction::new(Inventory);
//! t.given("product/p-1", &Product { stock: 3, .. }).await;
//! let run = t.when(&OrderCreated { .. }).await;
//! let reserved: InventoryReserved = run.single();
//! assert_eq!(t.state::<Product>("product/p-1").await.unwrap().stock, 1);
//! ```
//!
//! Events go through the same [`Engine`] as in production, over a
//! [`MemoryStore`], so inbox de-duplication and rejection semantics hold here too.

use std::sync::Arc;

use chrono::Utc;
use jetsaga_envelope::{ENVELOPE_VERSION, Envelope, Payload};
use serde::{Serialize, de::DeserializeOwned};

use crate::engine::{Engine, Incoming, Outcome};
use crate::error::QueryError;
use crate::function::Function;
use crate::ids::new_id;
use crate::memory::MemoryStore;
use crate::schedule::Schedule;
use crate::store::{Commit, Expect, Store, Write};

/// A function under test over an in-memory store.
#[derive(Debug)]
pub struct TestFunction {
    engine: Engine,
    store: Arc<MemoryStore>,
}

/// The result of one input event.
#[derive(Debug)]
pub struct Run {
    /// The input as delivered.
    pub input: Envelope,
    /// What the engine decided.
    pub outcome: Outcome,
    /// Events published now (empty unless the outcome is `Publish`),
    /// including one that ends a schedule.
    pub emitted: Vec<Envelope>,
    /// Events held for later: their schedule (always [`Schedule::At`]),
    /// and the event.
    pub scheduled: Vec<(Schedule, Envelope)>,
    /// The schedules that the emitted events end ([`crate::schedule::name_for`]).
    pub unscheduled: Vec<String>,
}

/// Builds an envelope around a payload, as a client or upstream function would.
pub fn envelope_for<P: Payload>(payload: &P) -> Envelope {
    let id = new_id();
    Envelope {
        correlation_id: id.clone(),
        id,
        event_type: P::SUBJECT.to_string(),
        saga_key: payload.saga_key().map(str::to_string),
        causation_id: None,
        occurred_at: Utc::now(),
        version: ENVELOPE_VERSION,
        data: serde_json::to_value(payload).expect("payloads serialize"),
    }
}

impl TestFunction {
    /// Wraps a function with an empty in-memory store.
    pub fn new(function: impl Function) -> Self {
        let store = Arc::new(MemoryStore::new());
        Self { engine: Engine::new(Arc::new(function), store.clone()), store }
    }

    /// Stores a value directly, as if an earlier event had written it.
    pub async fn given<T: Serialize>(&self, key: &str, value: &T) -> &Self {
        let write = Write::new(key, Some(serde_json::to_vec(value).unwrap()), Expect::Any);
        let commit = Commit { event_id: format!("given/{}", new_id()), writes: vec![write], ..Default::default() };
        self.store.commit(&[commit]).await.expect("memory store commits");
        self
    }

    /// Delivers a payload in a fresh envelope.
    pub async fn when<P: Payload>(&self, payload: &P) -> Run {
        self.deliver(envelope_for(payload)).await
    }

    /// Delivers a prepared envelope (for example the same one twice).
    pub async fn deliver(&self, envelope: Envelope) -> Run {
        let outcome = self.engine.handle_one(&Incoming::new(envelope.clone())).await;
        self.finish(envelope, outcome).await
    }

    /// Delivers several envelopes as one batch, as the runtime does under load.
    pub async fn deliver_batch(&self, envelopes: Vec<Envelope>) -> Vec<Run> {
        let incoming: Vec<Incoming> = envelopes.iter().cloned().map(Incoming::new).collect();
        let outcomes = self.engine.handle_batch(&incoming).await;
        let mut runs = Vec::new();
        for (envelope, outcome) in envelopes.into_iter().zip(outcomes) {
            runs.push(self.finish(envelope, outcome).await);
        }
        runs
    }

    async fn finish(&self, input: Envelope, outcome: Outcome) -> Run {
        let (mut emitted, mut scheduled, mut unscheduled) = (Vec::new(), Vec::new(), Vec::new());
        if let Some(records) = outcome.outbox() {
            let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
            self.store.mark_published(&ids).await.unwrap();
            for record in records {
                let envelope = Envelope::decode(&record.payload).expect("outbox holds envelopes");
                match &record.schedule {
                    Some(schedule @ Schedule::At { .. }) => scheduled.push((schedule.clone(), envelope)),
                    Some(Schedule::Cancel { name }) => {
                        unscheduled.push(name.clone());
                        emitted.push(envelope);
                    }
                    None => emitted.push(envelope),
                }
            }
        }
        Run { input, outcome, emitted, scheduled, unscheduled }
    }

    /// Reads a stored value.
    pub async fn state<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let item = self.store.get(key).await.unwrap()?;
        Some(serde_json::from_slice(&item.value).expect("stored value decodes"))
    }

    /// Asks a query and decodes the reply.
    pub async fn query<Q: Payload, R: DeserializeOwned>(&self, request: &Q) -> Result<R, QueryError> {
        let body = serde_json::to_vec(request).unwrap();
        let value = self.engine.query(Q::SUBJECT, &body).await?;
        Ok(serde_json::from_value(value).expect("query reply decodes"))
    }

    /// Runs the store's sweep as if it were `at`: removes what was kept
    /// until then (see [`Ctx::put_until`](crate::Ctx::put_until)); how many keys.
    pub async fn sweep_expired_at(&self, at: chrono::DateTime<chrono::Utc>) -> u64 {
        self.store.sweep_expired(at.timestamp()).await.unwrap()
    }

    /// The engine, for tests that need it directly.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Run {
    /// Subjects of the emitted events, in order.
    pub fn emitted_types(&self) -> Vec<&str> {
        self.emitted.iter().map(|e| e.event_type.as_str()).collect()
    }

    /// The only emitted event, decoded as `P`; panics with the list otherwise.
    pub fn single<P: Payload>(&self) -> P {
        assert!(
            self.outcome.outbox().is_some(),
            "expected {} to be emitted, but the outcome was {:?}",
            P::SUBJECT,
            self.outcome
        );
        assert_eq!(self.emitted_types(), vec![P::SUBJECT], "expected exactly one {} event", P::SUBJECT);
        self.emitted[0].data_as().expect("emitted payload decodes")
    }

    /// Every emitted event of type `P`.
    pub fn all<P: Payload>(&self) -> Vec<P> {
        self.emitted.iter().filter(|e| e.event_type == P::SUBJECT).map(|e| e.data_as().unwrap()).collect()
    }

    /// Asserts the input was processed and emitted nothing.
    pub fn assert_nothing_emitted(&self) {
        assert!(self.outcome.outbox().is_some(), "expected processing, got {:?}", self.outcome);
        assert!(self.emitted.is_empty(), "expected no events, got {:?}", self.emitted_types());
    }

    /// The rejection reason; panics if the input was not rejected.
    pub fn rejection_reason(&self) -> &str {
        match &self.outcome {
            Outcome::Rejected { reason, .. } => reason,
            other => panic!("expected a business rejection, got {other:?}"),
        }
    }

    /// The reason of a refusal for now (a limit); panics if it was not refused.
    pub fn refusal_reason(&self) -> &str {
        match &self.outcome {
            Outcome::Refused(reason) => reason,
            other => panic!("expected a refusal for now, got {other:?}"),
        }
    }

    /// The dead-letter reason; panics if the input was not dead-lettered.
    pub fn dead_letter_reason(&self) -> &str {
        match &self.outcome {
            Outcome::DeadLetter(reason) => reason,
            other => panic!("expected the input to be dead-lettered, got {other:?}"),
        }
    }
}
