//! Deterministic ids and W3C trace context.
//!
//! Outgoing event ids are UUIDv7-shaped: the time part is the input
//! event's time, the random part is a hash of (function, input id, index).
//! Processing the same input again therefore yields the same ids, and
//! JetStream's `Nats-Msg-Id` de-duplication drops the copies.

use chrono::{DateTime, Utc};
use uuid::Uuid;

const NAMESPACE: Uuid = Uuid::from_u128(0x6a65_7473_6167_6100_8000_0000_0000_0001);

fn hash16(seed: &str) -> [u8; 16] {
    hash16_bytes(seed.as_bytes())
}

fn hash16_bytes(seed: &[u8]) -> [u8; 16] {
    *Uuid::new_v5(&NAMESPACE, seed).as_bytes()
}

/// A UUIDv7 whose time part is `at` and whose other bits derive from `seed`.
pub fn derived_id(at: DateTime<Utc>, seed: &str) -> String {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    let mut bytes = hash16(seed);
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bytes[6] = (bytes[6] & 0x0f) | 0x70; // version 7
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    Uuid::from_bytes(bytes).to_string()
}

/// The time part of a UUIDv7 id (for an outbox record: the time of the
/// input that caused it); `None` for ids of another shape.
pub fn time_of(id: &str) -> Option<DateTime<Utc>> {
    let (secs, nanos) = Uuid::parse_str(id).ok()?.get_timestamp()?.to_unix();
    DateTime::from_timestamp(i64::try_from(secs).ok()?, nanos)
}

/// A stable digest of `text` (UUIDv5 in hex, no dashes).
pub fn digest(text: &str) -> String {
    hex(&hash16(text))
}

/// A stable digest of any bytes (UUIDv5 in hex, no dashes).
pub fn digest_bytes(bytes: &[u8]) -> String {
    hex(&hash16_bytes(bytes))
}

/// A fresh random UUIDv7 (for commands created by tools and tests).
pub fn new_id() -> String {
    Uuid::now_v7().to_string()
}

/// Lower-case hex digits; written by hand because `format!` per byte was a
/// visible share of a busy runner's CPU (a digest or span id per event).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    text
}

/// Parsed W3C `traceparent` (version 00).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceParent {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits: the span that caused this message.
    pub parent_id: String,
    /// 2 hex digits.
    pub flags: String,
}

impl TraceParent {
    /// Parses `00-<trace>-<parent>-<flags>`; anything else is ignored.
    pub fn parse(header: &str) -> Option<Self> {
        let parts: Vec<&str> = header.trim().split('-').collect();
        let is_hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        match parts.as_slice() {
            [version, trace, parent, flags]
                if is_hex(version, 2) && is_hex(trace, 32) && is_hex(parent, 16) && is_hex(flags, 2) =>
            {
                Some(Self {
                    trace_id: trace.to_lowercase(),
                    parent_id: parent.to_lowercase(),
                    flags: flags.to_string(),
                })
            }
            _ => None,
        }
    }

    /// A root context for a saga that arrived without one, derived from its
    /// correlation id so every hop agrees on the trace id.
    pub fn root(correlation_id: &str) -> Self {
        let mut h = hash16(&format!("trace/{correlation_id}"));
        // A UUIDv5 fixes its version and variant bits (bytes 6 and 8); a
        // trace id must be random throughout, since samplers read a ratio off
        // its low 8 bytes (with 0b10 always on top, a 50% ratio took none).
        let more = hash16(&format!("trace-bits/{correlation_id}"));
        h[6] = more[0];
        h[8] = more[1];
        Self { trace_id: hex(&h), parent_id: hex(&h[..8]), flags: "01".into() }
    }

    /// The context for a message emitted while handling this one: same
    /// trace, a new span id derived from the emitted event id.
    pub fn child(&self, event_id: &str) -> Self {
        let seed = [b"span/".as_slice(), event_id.as_bytes()].concat();
        Self { parent_id: hex(&hash16_bytes(&seed)[..8]), ..self.clone() }
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "00-{}-{}-{}", self.trace_id, self.parent_id, self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_uuid_v7() {
        let at = DateTime::parse_from_rfc3339("2026-11-22T01:00:00Z").unwrap().with_timezone(&Utc);
        let a = derived_id(at, "inventory/abc/0");
        assert_eq!(a, derived_id(at, "inventory/abc/0"));
        assert_ne!(a, derived_id(at, "inventory/abc/1"));
        let uuid = Uuid::parse_str(&a).unwrap();
        assert_eq!(uuid.get_version_num(), 7);
        let (secs, _) = uuid.get_timestamp().unwrap().to_unix();
        assert_eq!(secs as i64, at.timestamp());
    }

    #[test]
    fn root_trace_ids_are_random_where_samplers_read_them() {
        // OpenTelemetry's ratio sampler compares the low 8 bytes (shifted
        // right by one) with ratio × 2^63: about half of the roots fall under 50%.
        let under_half = (0..1000)
            .filter(|i| {
                let id = TraceParent::root(&format!("c-{i}")).trace_id;
                let low = u64::from_str_radix(&id[16..], 16).unwrap() >> 1;
                low < 1 << 62
            })
            .count();
        assert!((400..=600).contains(&under_half), "{under_half} of 1000");
    }

    #[test]
    fn hex_is_two_lower_case_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(digest("x").len(), 32);
    }

    #[test]
    fn traceparent_round_trips_and_children_keep_the_trace() {
        let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(tp.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let child = tp.child("e1");
        assert_eq!(child.trace_id, tp.trace_id);
        assert_ne!(child.parent_id, tp.parent_id);
        assert_eq!(child, tp.child("e1"));
        assert!(TraceParent::parse("garbage").is_none());
        assert_eq!(TraceParent::root("c").trace_id.len(), 32);
    }
}
