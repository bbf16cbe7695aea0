//! The outbox relay: one per hosted function, whatever path committed the
//! events (a consumed event, a request/reply command, a Lambda invocation).
//!
//! Every path publishes right after its commit; when that fails (server
//! away, stream full) the event stays in the outbox and the publisher wakes
//! this relay, which publishes it until it is out. It also drains the outbox
//! at start (a crash between commit and publish) and every
//! [`SAFETY_NET`] in case a wake-up was missed. An event that can never be
//! published as it is (larger than the server accepts) is dead-lettered
//! with the reason instead of blocking the relay forever.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use jetsaga_core::{OutboxRecord, StoreError};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::publisher::{Publisher, Unpublished};
use crate::recall::Recall;

/// How often the outbox is looked at without being woken.
pub const SAFETY_NET: Duration = Duration::from_secs(30);
/// Pause before trying again after a failed publish or store read.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Records read from the outbox at once.
const PAGE: usize = 1024;
/// The most of an unpublishable event's payload kept in its dead letter.
const DEAD_LETTER_EXCERPT: usize = 16 * 1024;

/// How often inbox records older than the retention are swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Runs the relay until `cancel` fires; it also sweeps the function's inbox
/// of records older than `inbox_retention`, and its store of keys whose
/// retention ended, at start and every [`SWEEP_EVERY`].
pub(crate) async fn run(publisher: Publisher, inbox_retention: Duration, recall: Recall, cancel: CancellationToken) {
    let span = info_span!("outbox", function = publisher.engine.name());
    async move {
        let mut woken = true; // at start: whatever a crash left behind
        let mut next_sweep = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_sweep {
                next_sweep += SWEEP_EVERY;
                let before = chrono::TimeDelta::from_std(inbox_retention)
                    .ok()
                    .and_then(|d| chrono::Utc::now().checked_sub_signed(d))
                    .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
                match publisher.engine.sweep_inbox(before).await {
                    Ok(0) => {}
                    Ok(n) => info!(records = n, %before, "swept inbox records older than the retention"),
                    Err(e) => warn!(error = %e, "cannot sweep the inbox; trying again in an hour"),
                }
                match publisher.engine.sweep_expired(chrono::Utc::now().timestamp()).await {
                    Ok(0) => {}
                    Ok(n) => info!(keys = n, "removed stored keys whose retention ended"),
                    Err(e) => warn!(error = %e, "cannot remove expired keys; trying again in an hour"),
                }
            }
            let pause = match drain(&publisher, &recall, woken).await {
                Ok(true) => None,
                Ok(false) => Some(RETRY_AFTER),
                Err(e) => {
                    warn!(error = %e, "cannot read the outbox; trying again");
                    Some(RETRY_AFTER)
                }
            };
            woken = tokio::select! {
                () = cancel.cancelled() => return,
                () = publisher.failed.notified(), if pause.is_none() => true,
                () = tokio::time::sleep(pause.unwrap_or(SAFETY_NET)) => pause.is_some(),
            };
        }
    }
    .instrument(span)
    .await
}

/// Publishes what the outbox holds, leaving out what the streams hold
/// already beyond the duplicate window ([`Recall`]). `Ok(true)` once it is
/// empty (as far as this pass could tell), `Ok(false)` if something is
/// still waiting.
async fn drain(publisher: &Publisher, recall: &Recall, woken: bool) -> Result<bool, StoreError> {
    loop {
        let pending = publisher.engine.unpublished(PAGE).await?;
        if pending.is_empty() {
            return Ok(true);
        }
        if woken {
            info!(count = pending.len(), "publishing events left in the outbox");
        } else {
            debug!(count = pending.len(), "outbox safety-net pass");
        }
        let held = recall.already_stored(&publisher.js, &pending).await;
        let (mut done, pending): (Vec<String>, Vec<OutboxRecord>) = {
            let (held, rest): (Vec<OutboxRecord>, Vec<OutboxRecord>) =
                pending.into_iter().partition(|r| held.contains(&r.id));
            (held.into_iter().map(|r| r.id).collect(), rest)
        };
        let page_was_full = done.len() + pending.len() == PAGE;
        let results = publisher.try_publish(&pending).await;
        let mut all_out = true;
        for (record, result) in pending.iter().zip(results) {
            match result {
                Ok(()) => done.push(record.id.clone()),
                Err(Unpublished::Never(reason)) => match dead_letter(publisher, record, &reason).await {
                    Ok(()) => done.push(record.id.clone()),
                    Err(e) => {
                        warn!(id = %record.id, error = %e, "cannot dead-letter an unpublishable event; trying again");
                        all_out = false;
                    }
                },
                Err(Unpublished::Later(_)) => all_out = false,
            }
        }
        // Removed now, or the next page would find them again.
        publisher.engine.mark_published(&done).await?;
        if !all_out {
            return Ok(false);
        }
        if !page_was_full {
            return Ok(true);
        }
    }
}

/// Moves an event that can never be published to the DLQ: its subject, id
/// and reason, and as much of its payload as a message can carry.
async fn dead_letter(publisher: &Publisher, record: &OutboxRecord, reason: &str) -> Result<(), String> {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, record.id.as_str());
    let (payload, reason) = if record.payload.len() > DEAD_LETTER_EXCERPT {
        let kept = Bytes::copy_from_slice(&record.payload[..DEAD_LETTER_EXCERPT]);
        (kept, format!("{reason} (the first {DEAD_LETTER_EXCERPT} bytes are kept here)"))
    } else {
        (Bytes::copy_from_slice(&record.payload), reason.to_string())
    };
    let reason = format!("committed event {} could not be published: {reason}", record.id);
    publisher.dead_letter(&record.subject, Some(&headers), payload, &reason, 1, &format!("outbox/{}", record.id)).await
}
