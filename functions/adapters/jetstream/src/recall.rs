//! Publishing again, later than the duplicate window, without doubles.
//!
//! JetStream drops a publish whose `Nats-Msg-Id` it has seen within the
//! stream's duplicate window (10 minutes by default). An outbox record whose
//! publish succeeded but whose removal from the store was lost to a crash
//! is published again when the function starts; after an outage longer
//! than the window the stream would keep it twice (the inboxes absorb the
//! copy, but a live view, the metrics and a scheduled deadline would not).
//!
//! So before the relay publishes records older than the window can vouch
//! for, it reads back what the stream holds on their subjects from just
//! before the oldest of them, headers only, and leaves out those it finds.
//! A function reads back only subjects it publishes itself, through one
//! consumer named after it (`recall_<function>`: its NATS user may create
//! that consumer filtered on its own subjects, and no other).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use jetsaga_core::{OutboxRecord, ids};
use tracing::{info, warn};

/// Records younger than the duplicate window less this are left to the
/// server's de-duplication (the time in their id is their input's, which
/// is earlier than their first publish).
const MARGIN: Duration = Duration::from_secs(60);
/// Messages read back per subject at most: past it the rest is published
/// (the inboxes still absorb a copy), and a warning says so.
const MAX_READ: u64 = 1_000_000;
/// Messages asked for at once.
const FETCH: usize = 1_000;

/// The name of a function's read-back consumer.
pub fn consumer_name(function: &str) -> String {
    format!("recall_{function}")
}

/// What the relay needs to read back.
#[derive(Clone, Debug)]
pub(crate) struct Recall {
    pub(crate) function: String,
    pub(crate) duplicate_window: Duration,
}

impl Recall {
    /// The records the server can no longer de-duplicate by itself.
    fn beyond_the_window<'a>(&self, records: &'a [OutboxRecord], now: DateTime<Utc>) -> Vec<&'a OutboxRecord> {
        let trusted = self.duplicate_window.saturating_sub(MARGIN);
        let since = chrono::Duration::from_std(trusted).ok().and_then(|d| now.checked_sub_signed(d));
        records
            .iter()
            .filter(|r| match (ids::time_of(&r.id), since) {
                (Some(at), Some(since)) => at < since,
                // An id without a time: it cannot be told young.
                (None, _) => true,
                (Some(_), None) => false,
            })
            .collect()
    }

    /// The ids of `records` the streams already hold, among those older
    /// than the duplicate window. A subject that cannot be read back is
    /// logged and its records published (as before: inboxes absorb them).
    pub(crate) async fn already_stored(&self, js: &jetstream::Context, records: &[OutboxRecord]) -> HashSet<String> {
        let old = self.beyond_the_window(records, Utc::now());
        let mut by_subject: BTreeMap<String, Vec<&OutboxRecord>> = BTreeMap::new();
        for record in old {
            by_subject.entry(record.destination().to_string()).or_default().push(record);
        }
        let mut found = HashSet::new();
        for (subject, records) in by_subject {
            match self.read_back(js, &subject, &records).await {
                Ok(held) => found.extend(held),
                Err(e) => warn!(
                    subject,
                    records = records.len(),
                    error = %e,
                    "cannot read back what the stream holds; publishing again (a copy the inboxes absorb)"
                ),
            }
        }
        if !found.is_empty() {
            info!(count = found.len(), "left out events the stream already holds (published before a restart)");
        }
        found
    }

    async fn read_back(
        &self,
        js: &jetstream::Context,
        subject: &str,
        records: &[&OutboxRecord],
    ) -> Result<HashSet<String>, String> {
        let mut wanted: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
        // From a little before the oldest (clocks of copies differ), or from
        // the start for an id that carries no time.
        let times: Option<Vec<DateTime<Utc>>> = records.iter().map(|r| ids::time_of(&r.id)).collect();
        let deliver_policy = match times.and_then(|times| times.into_iter().min()) {
            Some(oldest) => consumer::DeliverPolicy::ByStartTime {
                start_time: oldest.checked_sub_signed(chrono::Duration::seconds(5)).unwrap_or(oldest),
            },
            None => consumer::DeliverPolicy::All,
        };
        let stream_name = js.stream_by_subject(subject).await.map_err(|e| format!("which stream: {e}"))?;
        let stream = js.get_stream_no_info(&stream_name).await.map_err(|e| e.to_string())?;
        let name = consumer_name(&self.function);
        let config = consumer::pull::Config {
            name: Some(name.clone()),
            filter_subject: subject.to_string(),
            deliver_policy,
            ack_policy: consumer::AckPolicy::None,
            headers_only: true,
            memory_storage: true,
            num_replicas: 1,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        };
        // Another copy of the function may be reading back too: wait for it.
        let mut tries = 0;
        let consumer = loop {
            match stream.create_consumer_strict(config.clone()).await {
                Ok(consumer) => break consumer,
                Err(e) if tries < 10 => {
                    tries += 1;
                    tracing::debug!(error = %e, "read-back consumer busy; waiting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(format!("cannot create consumer {name}: {e}")),
            }
        };
        let mut found = HashSet::new();
        // The newest message seen on the subject, by its id's time.
        let mut newest: Option<DateTime<Utc>> = None;
        let mut read = 0u64;
        let outcome = async {
            loop {
                let mut batch = consumer
                    .fetch()
                    .max_messages(FETCH)
                    .expires(Duration::from_secs(1))
                    .messages()
                    .await
                    .map_err(|e| e.to_string())?;
                let mut pending = 0;
                let mut got = 0;
                while let Some(message) = batch.next().await {
                    let message = message.map_err(|e| e.to_string())?;
                    got += 1;
                    read += 1;
                    let id = message.headers.as_ref().and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID));
                    if let Some(id) = id.map(|id| id.as_str()) {
                        newest = newest.max(ids::time_of(id));
                        if wanted.remove(id) {
                            found.insert(id.to_string());
                        }
                    }
                    pending = message.info().map(|i| i.pending).unwrap_or(0);
                }
                if wanted.is_empty() || got == 0 || pending == 0 {
                    return Ok::<(), String>(());
                }
                if read >= MAX_READ {
                    warn!(subject, read, "read back as much as allowed; publishing the rest again");
                    return Ok(());
                }
            }
        }
        .await;
        if let Err(e) = stream.delete_consumer(&name).await {
            tracing::debug!(error = %e, "read-back consumer not deleted; it goes by itself when idle");
        }
        outcome?;
        // A schedule's subject holds one schedule, the newest: a schedule
        // older than one already there would replace it, so it stays out.
        for record in records.iter().filter(|r| r.is_scheduled()) {
            let superseded = ids::time_of(&record.id).is_some_and(|at| newest.is_some_and(|newer| newer > at));
            if superseded {
                found.insert(record.id.clone());
            }
        }
        Ok(found)
    }
}
