//! The jetsaga handler contract, free of any transport or database.
//!
//! - [`Function`]: a saga step. It declares its subscriptions in a
//!   [`FunctionSpec`], handles one [`Envelope`](jetsaga_envelope::Envelope)
//!   at a time through a [`Ctx`], and answers read-only queries.
//! - [`HandlerError`]: retryable, rejected or malformed; the kind decides
//!   whether the runtime naks, publishes a failure event or dead-letters.
//! - [`Store`]: the function's private store (conditional key/value +
//!   inbox + outbox, committed all-or-nothing), with an in-memory
//!   [`MemoryStore`] and a [`conformance`] suite every backend passes.
//! - [`Engine`]: the effectively-once processing loop that every adapter
//!   (JetStream, Lambda, the test harness) drives.
//! - [`hold`]: what a step keeps for an order until it ends (take once,
//!   give back once, remember ended orders), the saga's common pattern.
//! - [`testing`]: given state and an input, assert events and state.
//! - [`cpu`]: a bounded pool for expensive CPU work (password hashes).

pub mod conformance;
pub mod cpu;
pub mod duration;
pub mod engine;
pub mod error;
pub mod function;
pub mod hold;
pub mod ids;
pub mod memory;
pub mod schedule;
pub mod store;
pub mod telemetry;
pub mod testing;

pub use engine::{Engine, Incoming, Outcome, Processor, Receipt, command_envelope};
pub use error::{HandlerError, PendingEvent, QueryError};
pub use function::{Ctx, Function, FunctionSpec, Milestone, QueryCtx};
pub use memory::MemoryStore;
pub use store::{
    Commit, CommitError, Effect, Expect, Item, KeyChange, OutboxRecord, Store, StoreError, Write, net_changes,
};

pub use async_trait::async_trait;
pub use jetsaga_envelope as envelope;
