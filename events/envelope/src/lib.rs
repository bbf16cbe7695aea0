//! The contract every jetsaga saga speaks, whatever its domain: the
//! [`Envelope`] each message travels in (and decoding with errors that name
//! the bad field), the [`Payload`] trait a message body implements, the
//! subject grammar ([`subject`]), a function's typed input ([`inputs!`]),
//! the operations service's requests and answers ([`ops`]), and [`whole`]
//! numbers as JSON Schema counts them.
//!
//! It knows no saga: the shop's catalog is `jetsaga-events`, the travel
//! example's is its own `events` module.

pub mod envelope;
pub mod input;
pub mod ops;
mod payload;
pub mod subject;
pub mod whole;

pub use envelope::{
    DecodeError, ENVELOPE_HEADER, ENVELOPE_VERSION, Envelope, TRACEPARENT_HEADER, decode_json, decode_payload,
    decode_value,
};
pub use payload::Payload;

/// Largest command body accepted from a client, in bytes.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
