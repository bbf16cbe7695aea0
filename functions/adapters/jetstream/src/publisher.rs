//! Publishing committed outbox records and dead letters. Shared by the
//! consume loop, the request/reply intake and the outbox relay.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use futures::future::join_all;
use std::sync::Arc;

use jetsaga_core::{OutboxRecord, Processor};
use jetsaga_events::{ENVELOPE_HEADER, TRACEPARENT_HEADER};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::dlq;

/// Publishes one function's events.
#[derive(Clone, Debug)]
pub(crate) struct Publisher {
    pub(crate) engine: Arc<dyn Processor>,
    pub(crate) js: jetstream::Context,
    /// Published outbox ids, removed from the store in the background.
    sweeper: tokio::sync::mpsc::UnboundedSender<Vec<String>>,
    /// Set when a publish failed: the outbox holds events nobody is publishing.
    failed: Arc<std::sync::atomic::AtomicBool>,
}

/// How long published ids wait to be removed together.
const SWEEP_EVERY: Duration = Duration::from_millis(50);

impl Publisher {
    /// A publisher for one function. Removing published outbox records is
    /// off the hot path: ids are collected and removed in one store
    /// transaction every few milliseconds. A crash before that only means
    /// they are published again on restart, and JetStream drops the copies.
    pub(crate) fn new(engine: Arc<dyn Processor>, js: jetstream::Context) -> Self {
        let (sweeper, mut ids) = tokio::sync::mpsc::unbounded_channel::<Vec<String>>();
        let store = engine.clone();
        tokio::spawn(async move {
            while let Some(first) = ids.recv().await {
                let mut batch = first;
                let deadline = tokio::time::Instant::now() + SWEEP_EVERY;
                while let Ok(Some(more)) = tokio::time::timeout_at(deadline, ids.recv()).await {
                    batch.extend(more);
                }
                if let Err(e) = store.mark_published(&batch).await {
                    warn!(error = %e, "cannot remove published outbox records; they will be published again and de-duplicated");
                }
            }
        });
        Self { engine, js, sweeper, failed: Arc::default() }
    }

    /// Publishes outbox records concurrently, waiting for every ack, and
    /// marks the stored ones published. Returns, per record, whether
    /// JetStream has it (a duplicate counts: it was stored before).
    pub(crate) async fn publish(&self, records: &[OutboxRecord]) -> Vec<bool> {
        if records.is_empty() {
            return Vec::new();
        }
        let sends = records.iter().map(|record| async move {
            let mut headers = HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, record.id.as_str());
            headers.insert(ENVELOPE_HEADER, "1");
            if let Some(tp) = &record.traceparent {
                headers.insert(TRACEPARENT_HEADER, tp.as_str());
            }
            let payload = Bytes::copy_from_slice(&record.payload);
            let result = match self.js.publish_with_headers(record.subject.clone(), headers, payload).await {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = &result {
                self.failed.store(true, std::sync::atomic::Ordering::Relaxed);
                warn!(subject = %record.subject, error = %e, "publish failed; the event stays in the outbox");
            }
            result.is_ok()
        });
        let results = join_all(sends).await;
        let done: Vec<String> =
            records.iter().zip(&results).filter(|(_, ok)| **ok).map(|(r, _)| r.id.clone()).collect();
        if !done.is_empty() {
            let _ = self.sweeper.send(done);
        }
        results
    }

    /// Publishes what a failed publish left in the outbox, if anything
    /// failed since the last call (events being published right now are in
    /// the outbox too, so an unconditional sweep would publish them twice).
    pub(crate) async fn retry_failed(&self, cancel: &CancellationToken) {
        if self.failed.swap(false, std::sync::atomic::Ordering::Relaxed) {
            self.drain_outbox(cancel).await;
        }
    }

    /// Publishes whatever is left in the outbox (after a crash, or when a
    /// publish failed). Returns once the outbox is empty or `cancel` fires.
    pub(crate) async fn drain_outbox(&self, cancel: &CancellationToken) {
        loop {
            let pending = match self.engine.unpublished(1024).await {
                Ok(pending) => pending,
                Err(e) => {
                    warn!(error = %e, "cannot read the outbox; retrying");
                    Vec::new()
                }
            };
            if pending.is_empty() {
                return;
            }
            info!(count = pending.len(), "publishing events left in the outbox");
            let published = self.publish(&pending).await;
            // Remove them now, or the next round would find them again.
            let done: Vec<String> =
                pending.iter().zip(&published).filter(|(_, ok)| **ok).map(|(r, _)| r.id.clone()).collect();
            if let Err(e) = self.engine.mark_published(&done).await {
                warn!(error = %e, "cannot remove published outbox records");
            }
            if !published.iter().all(|ok| *ok) {
                tokio::select! { () = cancel.cancelled() => return, () = tokio::time::sleep(Duration::from_secs(1)) => {} }
            }
        }
    }

    /// Sends a message to the function's dead-letter subject.
    pub(crate) async fn dead_letter(
        &self,
        subject: &str,
        headers: Option<&HeaderMap>,
        payload: Bytes,
        reason: &str,
        attempts: i64,
        origin: &str,
    ) -> Result<(), String> {
        let name = self.engine.name();
        warn!(%subject, %origin, attempts, %reason, "dead-lettered");
        let headers = dlq::headers(headers, name, reason, attempts, subject, origin);
        let ack =
            self.js.publish_with_headers(dlq::subject_for(name), headers, payload).await.map_err(|e| e.to_string())?;
        ack.await.map(|_| ()).map_err(|e| e.to_string())?;
        debug!("dead letter stored");
        Ok(())
    }
}
