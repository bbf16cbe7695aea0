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
}

impl Publisher {
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
                warn!(subject = %record.subject, error = %e, "publish failed; the event stays in the outbox");
            }
            result.is_ok()
        });
        let results = join_all(sends).await;
        let done: Vec<String> =
            records.iter().zip(&results).filter(|(_, ok)| **ok).map(|(r, _)| r.id.clone()).collect();
        if let Err(e) = self.engine.mark_published(&done).await {
            // Harmless: they will be published again and de-duplicated.
            warn!(error = %e, "cannot mark outbox records published");
        }
        results
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
            if !self.publish(&pending).await.iter().all(|ok| *ok) {
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
