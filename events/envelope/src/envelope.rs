//! The event envelope every jetsaga message travels in, and decoding with
//! errors that name the field, what was expected and what arrived.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::Payload;

/// Current envelope format version.
pub const ENVELOPE_VERSION: u32 = 1;

/// NATS header that marks a message body as a full [`Envelope`]. Messages
/// without it (for example a plain `nats pub orders.cmd.create '{...}'`)
/// carry only the `data` part and the runtime wraps them.
pub const ENVELOPE_HEADER: &str = "Jetsaga-Envelope";

/// W3C trace context header carried on every message.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// One event or command with its saga metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct Envelope {
    /// Unique id (UUIDv7). Outgoing ids are derived deterministically from
    /// the input, so a replay produces the same ids and JetStream drops the copy.
    pub id: String,
    /// The subject this event is published on, e.g. `orders.evt.created`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The saga this message belongs to (an order, a trip): the key its
    /// steps keep their state under, chosen by the saga (see
    /// [`Payload::saga_key`]). Written as `saga_key`; envelopes written
    /// before it was generic named it `order_id`, which is read too.
    #[serde(default, rename = "saga_key", alias = "order_id", skip_serializing_if = "Option::is_none")]
    pub saga_key: Option<String>,
    /// Id shared by every event of one saga (the id of the command that started it).
    pub correlation_id: String,
    /// Id of the event that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// When the event happened (RFC 3339).
    pub occurred_at: DateTime<Utc>,
    /// Envelope format version.
    pub version: u32,
    /// The payload; its shape is given by `type`.
    pub data: serde_json::Value,
}

impl Envelope {
    /// Decodes a full envelope from JSON bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let envelope: Envelope = decode_json("envelope", bytes)?;
        if envelope.id.trim().is_empty() {
            return Err(DecodeError::new("envelope", "id", "expected a non-empty id, got \"\""));
        }
        if envelope.event_type.trim().is_empty() {
            return Err(DecodeError::new(
                "envelope",
                "type",
                "expected a subject such as \"orders.evt.created\", got \"\"",
            ));
        }
        Ok(envelope)
    }

    /// Checks that this envelope may be taken as having arrived on
    /// `subject`: the subject is the truth, so a `type` naming another
    /// subject (a forged `orders.evt.failed` sent on a command subject) or
    /// a `version` this runtime does not know is refused.
    pub fn check_arrival(&self, subject: &str) -> Result<(), DecodeError> {
        if self.event_type != subject {
            return Err(DecodeError::new(
                "envelope",
                "type",
                format!(
                    "expected {subject:?} (the subject it arrived on), got {:?}: an envelope's type must be its subject",
                    self.event_type
                ),
            ));
        }
        if self.version != ENVELOPE_VERSION {
            return Err(DecodeError::new(
                "envelope",
                "version",
                format!(
                    "expected {ENVELOPE_VERSION} (the only envelope version this runtime reads), got {}",
                    self.version
                ),
            ));
        }
        Ok(())
    }

    /// Encodes the envelope as compact JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serializes")
    }

    /// The saga this message belongs to: the envelope's key, or else the
    /// payload's string field `field` (a bare command sent with `nats pub`
    /// carries only its payload).
    pub fn saga_key_or_field(&self, field: &str) -> Option<&str> {
        self.saga_key.as_deref().or_else(|| self.data.get(field).and_then(|v| v.as_str()))
    }

    /// String field `field` of every object in the payload's array `array`
    /// (`items[*].product_id`), for cheap key hints; empty if absent.
    pub fn data_strings<'a>(&'a self, array: &str, field: &str) -> Vec<&'a str> {
        self.data
            .get(array)
            .and_then(|v| v.as_array())
            .map(|items| items.iter().filter_map(|item| item.get(field)?.as_str()).collect())
            .unwrap_or_default()
    }

    /// Decodes `data` as the payload type `P`.
    pub fn data_as<P: Payload>(&self) -> Result<P, DecodeError> {
        decode_value(P::SUBJECT, self.data.clone())
    }

    /// Decodes `data` as any type (one body shared by several subjects, say),
    /// with the same error as [`Envelope::data_as`]: the subject, the field
    /// and what was wrong.
    pub fn data_into<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        decode_value(&self.event_type, self.data.clone())
    }
}

/// Why a message could not be decoded: which part, which field, and what
/// was wrong with it. Its `Display` is meant for a person reading a DLQ entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {}{message}", if path.is_empty() || path == "." { String::new() } else { format!("field `{path}`: ") })]
pub struct DecodeError {
    /// What was being decoded (`envelope`, or the subject of a payload).
    pub what: String,
    /// Path of the offending field (`items[0].quantity`), `.` for the whole value.
    pub path: String,
    /// What was expected and what arrived.
    pub message: String,
}

impl DecodeError {
    /// Builds an error for `what` at field `path`.
    pub fn new(what: impl Into<String>, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { what: what.into(), path: path.into(), message: message.into() }
    }
}

/// Decodes JSON bytes into `T`, reporting the path of the first bad field.
pub fn decode_json<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, DecodeError> {
    // Tracking the path costs on every field; only a failure needs it.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message =
            if inner.is_syntax() || inner.is_eof() { format!("not valid JSON ({inner})") } else { inner.to_string() };
        DecodeError::new(what, path, message)
    })
}

/// Decodes a JSON value into `T`, reporting the path of the first bad field.
pub fn decode_value<T: DeserializeOwned>(what: &str, value: serde_json::Value) -> Result<T, DecodeError> {
    if let Ok(decoded) = T::deserialize(&value) {
        return Ok(decoded);
    }
    serde_path_to_error::deserialize(value)
        .map_err(|e| DecodeError::new(what, e.path().to_string(), e.into_inner().to_string()))
}

/// Decodes a payload of type `P` from JSON bytes.
pub fn decode_payload<P: Payload>(bytes: &[u8]) -> Result<P, DecodeError> {
    decode_json(P::SUBJECT, bytes)
}
