//! The dead-letter format: the original payload and trace headers, plus headers
//! saying which function gave up, why, and after how many attempts. The
//! CLI's `dlq list|show|redrive` reads exactly these.

use async_nats::HeaderMap;
use chrono::{DateTime, Utc};
use jetsaga_envelope::{ENVELOPE_HEADER, TRACEPARENT_HEADER};

/// Function that dead-lettered the message.
pub const FUNCTION: &str = "Jetsaga-Dlq-Function";
/// Why, for a person.
pub const REASON: &str = "Jetsaga-Dlq-Reason";
/// Deliveries made before giving up.
pub const ATTEMPTS: &str = "Jetsaga-Dlq-Attempts";
/// The subject the message was originally published on (redrive target).
pub const SUBJECT: &str = "Jetsaga-Dlq-Subject";
/// Stream and sequence of the original (`SAGA/42`), or `request/<id>` for
/// a command that came by request/reply and was never stored.
pub const ORIGIN: &str = "Jetsaga-Dlq-Origin";
/// When it was dead-lettered (RFC 3339).
pub const AT: &str = "Jetsaga-Dlq-At";

/// `dlq.<function>`: where a function's dead letters go.
pub fn subject_for(function: &str) -> String {
    format!("dlq.{function}")
}

pub use jetsaga_envelope::ops::DeadLetter;

/// The original headers a dead letter keeps: trace context and the
/// envelope marker. Nothing else crosses over, on the way in or on a
/// redrive: a header such as `Nats-Expected-Stream` or `Nats-Schedule`
/// would make the DLQ stream refuse the letter (so it would loop forever)
/// or make a redrive do more than send the letter again.
pub const KEPT_HEADERS: [&str; 3] = [TRACEPARENT_HEADER, "tracestate", ENVELOPE_HEADER];

/// Copies the [`KEPT_HEADERS`] of `original` into `into`.
pub fn keep_allowed(original: &HeaderMap, into: &mut HeaderMap) {
    for name in KEPT_HEADERS {
        if let Some(value) = original.get(name) {
            into.insert(name, value.as_str());
        }
    }
}

/// Builds the headers of a dead letter: its own `Jetsaga-Dlq-*` headers
/// and the [`KEPT_HEADERS`] of the original.
pub fn headers(
    original: Option<&HeaderMap>,
    function: &str,
    reason: &str,
    attempts: i64,
    subject: &str,
    origin: &str,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(original) = original {
        keep_allowed(original, &mut headers);
    }
    // Header values are single-line.
    let reason: String = reason.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    headers.insert(FUNCTION, function);
    headers.insert(REASON, reason.as_str());
    headers.insert(ATTEMPTS, attempts.to_string().as_str());
    headers.insert(SUBJECT, subject);
    headers.insert(ORIGIN, origin);
    headers.insert(AT, Utc::now().to_rfc3339().as_str());
    headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("dlq/{function}/{origin}").as_str());
    headers
}

/// Reads a dead letter from a DLQ stream message.
pub fn read(dlq_sequence: u64, headers: &HeaderMap, payload: &[u8]) -> DeadLetter {
    let get = |name: &str| headers.get(name).map(|v| v.as_str().to_string()).unwrap_or_default();
    DeadLetter {
        dlq_sequence,
        function: get(FUNCTION),
        reason: get(REASON),
        attempts: get(ATTEMPTS).parse().unwrap_or(0),
        subject: get(SUBJECT),
        origin: get(ORIGIN),
        at: DateTime::parse_from_rfc3339(&get(AT)).ok().map(|t| t.with_timezone(&Utc)),
        payload: String::from_utf8_lossy(payload).into_owned(),
    }
}
