//! The shop's event catalog: the public wire contract of the order saga.
//!
//! The framework's part of the contract (the [`Envelope`], [`Payload`],
//! the subject grammar, the operations service) is `jetsaga-envelope`,
//! re-exported here so that the shop's crates need only this one.
//!
//! - [`envelope`]: the [`Envelope`] every event travels in, and decoding
//!   with errors that name the bad field ([`DecodeError`]).
//! - [`subjects`]: every subject name, `<context>.<kind>.<name>`.
//! - [`payloads`]: one serde type per command, event and query.
//! - [`limits`]: the bounds every client command is checked against at intake.
//! - [`ops`]: the operations service's contract (status, dead letters, redrive).
//! - [`whole`]: counts and cents read as JSON Schema's integers (`1.0` too).
//! - [`catalog`]: the list of all of them, from which the checked-in JSON
//!   Schemas (`events/schemas/`) and the AsyncAPI document
//!   (`events/asyncapi.json`) are generated.
//!
//! Sample payloads for `nats pub` live in `events/samples/`.

pub mod catalog;
pub mod limits;
pub mod payloads;
pub mod subjects;

pub use jetsaga_envelope::{envelope, inputs, ops, whole};

pub use envelope::{DecodeError, ENVELOPE_HEADER, ENVELOPE_VERSION, Envelope, TRACEPARENT_HEADER, decode_payload};
pub use payloads::*;

/// How the saga's steps are driven.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SagaMode {
    /// Each step reacts to the events of the others (`orders.evt.created` →
    /// inventory, `inventory.evt.reserved` → customer, …).
    #[default]
    Choreographed,
    /// One orchestrator sends each step a command (`inventory.cmd.reserve`,
    /// `customers.cmd.reserve_credit`, …) and collects their replies.
    Orchestrated,
}

impl SagaMode {
    /// Picks the value for this mode (a function's declaration, say).
    pub fn select<T>(self, choreographed: T, orchestrated: T) -> T {
        match self {
            Self::Choreographed => choreographed,
            Self::Orchestrated => orchestrated,
        }
    }
}
