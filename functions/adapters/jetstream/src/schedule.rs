//! How an outbox record's [`Schedule`] is sent: JetStream message schedules
//! (ADR-51). A scheduled event is published on its schedule's name with
//! `Nats-Schedule: @at <time>` and `Nats-Schedule-Target: <its subject>`
//! (the server stores it on its subject then; a newer message on the same
//! name replaces it); an event that ends a schedule is published on its
//! subject with `Nats-Scheduler: <name>` and `Nats-Schedule-Next: purge`,
//! which removes the schedule in the same write.

use chrono::SecondsFormat;
use jetsaga_core::OutboxRecord;
use jetsaga_core::schedule::Schedule;

/// The nats-server version message schedules, with their atomic cancel, need.
pub const MIN_SERVER: (u64, u64) = (2, 14);

/// The header that names the schedule an event ends (the server removes
/// the schedule; readers check that the name belongs to the function).
pub const SCHEDULER_HEADER: &str = "Nats-Scheduler";

/// The headers `record`'s schedule is sent with (none for a plain event).
/// The subject is [`OutboxRecord::destination`].
pub fn headers(record: &OutboxRecord) -> Vec<(&'static str, String)> {
    match &record.schedule {
        None => Vec::new(),
        Some(Schedule::At { at, .. }) => vec![
            ("Nats-Schedule", format!("@at {}", at.to_rfc3339_opts(SecondsFormat::Millis, true))),
            ("Nats-Schedule-Target", record.subject.clone()),
        ],
        Some(Schedule::Cancel { name }) => {
            vec![(SCHEDULER_HEADER, name.clone()), ("Nats-Schedule-Next", "purge".to_string())]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use jetsaga_core::schedule::name_for;

    fn record(schedule: Option<Schedule>) -> OutboxRecord {
        OutboxRecord {
            id: "e1".into(),
            subject: "orders.evt.deadline_passed".into(),
            payload: b"{}".to_vec(),
            traceparent: None,
            schedule,
        }
    }

    #[test]
    fn a_schedule_is_sent_on_its_name_and_a_cancel_on_its_subject() {
        let at = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 30).unwrap();
        let name = name_for("order", "o-1");
        let scheduled = record(Some(Schedule::At { name: name.clone(), at }));
        assert_eq!(scheduled.destination(), name);
        assert_eq!(
            headers(&scheduled),
            vec![
                ("Nats-Schedule", "@at 2026-12-01T12:00:30.000Z".to_string()),
                ("Nats-Schedule-Target", "orders.evt.deadline_passed".to_string())
            ]
        );
        let cancel = record(Some(Schedule::Cancel { name: name.clone() }));
        assert_eq!(cancel.destination(), "orders.evt.deadline_passed");
        assert_eq!(headers(&cancel), vec![("Nats-Scheduler", name), ("Nats-Schedule-Next", "purge".to_string())]);
        let plain = record(None);
        assert_eq!((plain.destination(), headers(&plain).len()), ("orders.evt.deadline_passed", 0));
    }
}
