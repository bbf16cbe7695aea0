//! Events published later, as part of a handler's effectively-once commit.
//!
//! A handler calls [`Ctx::schedule`](crate::Ctx::schedule): the event is
//! committed to the outbox with the rest of its effects, and its record
//! carries a [`Schedule::At`]: when, and the schedule's name
//! (`schedules.<function>.<digest of the key>`, one schedule per key: a new
//! one replaces the old). The transport holds the event and stores it on its
//! subject at that time, where the function's consumer takes it like any
//! other. [`Ctx::unschedule`](crate::Ctx::unschedule) emits an event now with
//! a [`Schedule::Cancel`], which ends that schedule in the same write; ending
//! one that already fired, or never existed, is harmless.
//!
//! The schedule is data on the [`OutboxRecord`]: every store keeps it in
//! fields of its own (its name, and its time in milliseconds: see
//! [`Schedule::from_fields`]), the Lambda wire carries it as a field, and only the transport adapter knows how it is sent (the
//! JetStream adapter: message schedules, ADR-51). Records written before it
//! was a field are read through [`OutboxRecord::from_stored`], which
//! understands their old form.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::store::OutboxRecord;

/// The names schedules have (a saga stream takes their messages).
pub const SCHEDULE_SUBJECTS: &str = "schedules.>";

/// Whether a stream message is a schedule still waiting (its event has not
/// happened yet: readers of the saga's history skip it).
pub fn is_pending_schedule(subject: &str) -> bool {
    subject.starts_with(SCHEDULE_SUBJECTS.trim_end_matches('>'))
}

/// What to do with an emitted event besides publishing it on its subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// Hold it under the schedule `name` (replacing what that schedule
    /// held), and publish it at `at`.
    At {
        /// The schedule's name ([`name_for`]).
        name: String,
        /// When.
        #[serde(with = "millis")]
        at: DateTime<Utc>,
    },
    /// Publish it now, ending the schedule `name`.
    Cancel {
        /// The schedule to end.
        name: String,
    },
}

/// The name of `function`'s schedule for `key`: `schedules.<function>.<digest>`
/// (keys are any text; names are safe as NATS subjects and storage keys).
pub fn name_for(function: &str, key: &str) -> String {
    format!("schedules.{function}.{}", crate::ids::digest(key))
}

impl Schedule {
    /// The schedule this concerns.
    pub fn name(&self) -> &str {
        match self {
            Self::At { name, .. } | Self::Cancel { name } => name,
        }
    }

    /// When the event is published, if later.
    pub fn at(&self) -> Option<DateTime<Utc>> {
        match self {
            Self::At { at, .. } => Some(*at),
            Self::Cancel { .. } => None,
        }
    }

    /// The time as stores keep it: Unix milliseconds.
    pub fn at_ms(&self) -> Option<i64> {
        self.at().map(|at| at.timestamp_millis())
    }

    /// Reads a schedule back from a store's two fields: its name (none: no
    /// schedule) and its time in Unix milliseconds (none: a cancel).
    pub fn from_fields(name: Option<String>, at_ms: Option<i64>) -> Result<Option<Self>, String> {
        match (name, at_ms) {
            (None, None) => Ok(None),
            (Some(name), None) => Ok(Some(Self::Cancel { name })),
            (Some(name), Some(ms)) => match DateTime::from_timestamp_millis(ms) {
                Some(at) => Ok(Some(Self::At { name, at })),
                None => Err(format!("schedule {name}: time {ms} ms is out of range")),
            },
            (None, Some(ms)) => Err(format!("a schedule time ({ms} ms) without a schedule name")),
        }
    }
}

impl OutboxRecord {
    /// Whether the event waits for its time (rather than being published now).
    pub fn is_scheduled(&self) -> bool {
        matches!(self.schedule, Some(Schedule::At { .. }))
    }

    /// Where the record is sent first: a scheduled event to its schedule
    /// (which stores it on its subject later), any other to its subject.
    pub fn destination(&self) -> &str {
        match &self.schedule {
            Some(Schedule::At { name, .. }) => name,
            _ => &self.subject,
        }
    }

    /// A record as a store read it back (`schedule` from
    /// [`Schedule::from_fields`]).
    ///
    /// Records written before the schedule was a field of its own (jetsaga
    /// up to 2026-12-07) kept it in their subject, after a space (which no
    /// subject contains): `<name> @at <time> <event subject>` for a schedule,
    /// `<event subject> purge <name>` for a cancel. They are read into the
    /// same record a new commit makes, so a store upgraded with such records
    /// pending publishes them as they were meant.
    pub fn from_stored(
        id: String,
        subject: String,
        payload: Vec<u8>,
        traceparent: Option<String>,
        schedule: Option<Schedule>,
    ) -> Result<Self, String> {
        let (subject, schedule) = match schedule {
            None if subject.contains(' ') => legacy(&subject)?,
            schedule => (subject, schedule),
        };
        Ok(Self { id, subject, payload, traceparent, schedule })
    }
}

/// Reads a subject written in the old in-band form (see [`OutboxRecord::from_stored`]).
fn legacy(stored: &str) -> Result<(String, Option<Schedule>), String> {
    let parts: Vec<&str> = stored.split(' ').collect();
    match parts[..] {
        [name, "@at", at, subject] => {
            let at = DateTime::parse_from_rfc3339(at)
                .map_err(|e| format!("outbox subject {stored:?}: unreadable schedule time: {e}"))?
                .with_timezone(&Utc);
            Ok((subject.to_string(), Some(Schedule::At { name: name.to_string(), at })))
        }
        [subject, "purge", name] => Ok((subject.to_string(), Some(Schedule::Cancel { name: name.to_string() }))),
        _ => Err(format!(
            "outbox subject {stored:?} is neither a subject nor an old-form schedule \
             (`<name> @at <time> <subject>` or `<subject> purge <name>`)"
        )),
    }
}

/// Schedule times as RFC 3339 with milliseconds, the precision they are
/// sent with.
mod millis {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&text).map(|at| at.with_timezone(&Utc)).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn stored(subject: &str, schedule: Option<Schedule>) -> Result<OutboxRecord, String> {
        OutboxRecord::from_stored("e1".into(), subject.into(), b"{}".to_vec(), None, schedule)
    }

    #[test]
    fn a_schedule_is_stored_as_two_fields_and_read_back_the_same() {
        let at = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 30).unwrap() + chrono::Duration::milliseconds(250);
        let name = name_for("order", "o 1.*>");
        assert!(name.starts_with("schedules.order.") && !name[16..].contains(['.', ' ', '*', '>']), "{name}");
        for schedule in [Schedule::At { name: name.clone(), at }, Schedule::Cancel { name: name.clone() }] {
            let fields = (Some(schedule.name().to_string()), schedule.at_ms());
            let back = Schedule::from_fields(fields.0, fields.1).unwrap();
            let record = stored("orders.evt.deadline_passed", back).unwrap();
            assert_eq!(record.subject, "orders.evt.deadline_passed");
            assert_eq!(record.schedule.as_ref(), Some(&schedule));
        }
        assert_eq!(Schedule::from_fields(None, None), Ok(None));
        let orphan = Schedule::from_fields(None, Some(5)).unwrap_err();
        assert!(orphan.contains("without a schedule name"), "{orphan}");
        let far = Schedule::from_fields(Some(name), Some(i64::MAX)).unwrap_err();
        assert!(far.contains("out of range"), "{far}");
        // On the Lambda wire: a tagged object, the time in milliseconds.
        let wire = serde_json::to_string(&Schedule::At { name: "schedules.order.x".into(), at }).unwrap();
        assert_eq!(wire, r#"{"kind":"at","name":"schedules.order.x","at":"2026-12-01T12:00:30.250Z"}"#);
    }

    #[test]
    fn records_written_in_the_old_in_band_form_read_as_new_ones() {
        let at = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 30).unwrap();
        let name = name_for("order", "o-1");
        let old = stored(&format!("{name} @at 2026-12-01T12:00:30.000Z orders.evt.deadline_passed"), None).unwrap();
        assert_eq!(old.subject, "orders.evt.deadline_passed");
        assert_eq!(old.schedule, Some(Schedule::At { name: name.clone(), at }));
        assert!(old.is_scheduled());
        let cancel = stored(&format!("orders.evt.deadline_canceled purge {name}"), None).unwrap();
        assert_eq!(cancel.subject, "orders.evt.deadline_canceled");
        assert_eq!(cancel.schedule, Some(Schedule::Cancel { name }));
        assert!(!cancel.is_scheduled());
        let garbled = stored("orders.evt.created and more", None).unwrap_err();
        assert!(garbled.contains("neither a subject nor an old-form schedule"), "{garbled}");
        let bad_time = stored("schedules.order.x @at yesterday orders.evt.deadline_passed", None).unwrap_err();
        assert!(bad_time.contains("unreadable schedule time"), "{bad_time}");
    }
}
