//! Messages published later by JetStream itself (message schedules,
//! ADR-51, nats-server 2.14+), as part of a handler's effectively-once
//! commit.
//!
//! A handler calls [`Ctx::schedule`](crate::Ctx::schedule): the event is
//! committed to the outbox with the rest of its effects, and published to a
//! schedule subject (`schedules.<function>.<digest of the key>`, one
//! schedule per key: a new one replaces the old) with `Nats-Schedule: @at
//! <time>` and `Nats-Schedule-Target: <the event's subject>`. At that time
//! the server stores the event on its subject, where the function's
//! consumer takes it like any other. [`Ctx::unschedule`](crate::Ctx::unschedule)
//! publishes an event whose `Nats-Scheduler` header ends that schedule in
//! the same write (the server's atomic cancel); ending one that already
//! fired, or never existed, is harmless.
//!
//! The outbox keeps no headers, so what a record needs is written in its
//! subject, after a space (which no NATS subject contains): the adapters
//! turn it back into a subject and headers with [`Publication::of`].

use chrono::{DateTime, SecondsFormat, Utc};

/// The subjects that schedules live on (the saga stream takes them).
pub const SCHEDULE_SUBJECTS: &str = "schedules.>";

/// Whether a stream message is a schedule still waiting (its event has not
/// happened yet: readers of the saga's history skip it).
pub fn is_pending_schedule(subject: &str) -> bool {
    subject.starts_with(SCHEDULE_SUBJECTS.trim_end_matches('>'))
}

/// The nats-server version message schedules, with their atomic cancel, need.
pub const MIN_SERVER: (u64, u64) = (2, 14);

/// What to do with an emitted event besides publishing it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Hold it on `subject` and publish it at `at`.
    At {
        /// The schedule subject.
        subject: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Publish it now, ending the schedule on `scheduler`.
    Cancel {
        /// The schedule subject to end.
        scheduler: String,
    },
}

/// The schedule subject of `key` for `function`: `schedules.<function>.<digest>`
/// (keys are any text; subjects are not).
pub fn subject_for(function: &str, key: &str) -> String {
    format!("schedules.{function}.{}", crate::ids::digest(key))
}

impl Schedule {
    /// The outbox subject of an event on `subject` scheduled like this.
    pub fn encode(&self, subject: &str) -> String {
        match self {
            Self::At { subject: on, at } => {
                format!("{on} @at {} {subject}", at.to_rfc3339_opts(SecondsFormat::Millis, true))
            }
            Self::Cancel { scheduler } => format!("{subject} purge {scheduler}"),
        }
    }
}

/// Where and how to publish one outbox record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    /// The subject to publish on.
    pub subject: String,
    /// Headers beyond the usual ones (message id, trace context).
    pub headers: Vec<(&'static str, String)>,
}

impl Publication {
    /// Reads an outbox record's subject (see [`Schedule::encode`]).
    pub fn of(record_subject: &str) -> Self {
        let mut parts = record_subject.split(' ');
        let subject = parts.next().unwrap_or_default().to_string();
        let headers = match (parts.next(), parts.next(), parts.next()) {
            (Some("@at"), Some(at), Some(target)) => {
                vec![("Nats-Schedule", format!("@at {at}")), ("Nats-Schedule-Target", target.to_string())]
            }
            (Some("purge"), Some(scheduler), None) => {
                vec![("Nats-Scheduler", scheduler.to_string()), ("Nats-Schedule-Next", "purge".to_string())]
            }
            _ => Vec::new(),
        };
        Self { subject, headers }
    }

    /// The subject a schedule stores its event on when it fires.
    pub fn target(&self) -> Option<&str> {
        self.headers.iter().find(|(name, _)| *name == "Nats-Schedule-Target").map(|(_, value)| value.as_str())
    }

    /// Whether this record holds a schedule (rather than an event to store now).
    pub fn is_schedule(&self) -> bool {
        self.headers.iter().any(|(name, _)| *name == "Nats-Schedule")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_schedule_and_a_cancel_survive_the_outbox_as_subject_and_headers() {
        let at = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 30).unwrap();
        let on = subject_for("order", "o 1.*>");
        assert!(on.starts_with("schedules.order.") && !on[16..].contains(['.', ' ', '*', '>']), "{on}");
        let scheduled = Schedule::At { subject: on.clone(), at }.encode("orders.evt.deadline_passed");
        let publication = Publication::of(&scheduled);
        assert_eq!(publication.subject, on);
        assert_eq!(
            publication.headers,
            vec![
                ("Nats-Schedule", "@at 2026-12-01T12:00:30.000Z".to_string()),
                ("Nats-Schedule-Target", "orders.evt.deadline_passed".to_string())
            ]
        );
        assert!(publication.is_schedule());
        let cancel =
            Publication::of(&Schedule::Cancel { scheduler: on.clone() }.encode("orders.evt.deadline_canceled"));
        assert_eq!(cancel.subject, "orders.evt.deadline_canceled");
        assert_eq!(cancel.headers, vec![("Nats-Scheduler", on), ("Nats-Schedule-Next", "purge".to_string())]);
        assert!(!cancel.is_schedule());
        let plain = Publication::of("orders.evt.created");
        assert_eq!((plain.subject.as_str(), plain.headers.len()), ("orders.evt.created", 0));
    }
}
