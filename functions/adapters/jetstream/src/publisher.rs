//! Publishing committed outbox records and dead letters. Shared by the
//! consume loop, the request/reply intake and the outbox relay.

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use futures::future::join_all;
use std::sync::Arc;

use jetsaga_core::{OutboxRecord, Processor};
use jetsaga_envelope::MAX_COMMAND_BYTES;
use jetsaga_envelope::{ENVELOPE_HEADER, TRACEPARENT_HEADER};
use tracing::{debug, error, warn};

use crate::dlq;

/// How much of an oversized command its dead letter keeps.
const OVERSIZED_EXCERPT: usize = 1024;

/// Publishes one function's events. One per hosted function, shared by its
/// workers, its command intake and its outbox relay, so a failed publish on
/// any path wakes the one relay that publishes it later.
#[derive(Clone, Debug)]
pub(crate) struct Publisher {
    pub(crate) engine: Arc<dyn Processor>,
    pub(crate) js: jetstream::Context,
    /// Published outbox ids, removed from the store in the background.
    sweeper: tokio::sync::mpsc::UnboundedSender<Vec<String>>,
    /// Woken when a publish failed: the outbox holds events nobody is publishing.
    pub(crate) failed: Arc<tokio::sync::Notify>,
    /// Set once the function's consumers are bound: it processes what its
    /// streams hold (reported by its outbox endpoint, waited for by tools).
    pub(crate) consuming: Arc<std::sync::atomic::AtomicBool>,
    /// Where its consumed messages' time goes (`$JETSAGA.TIMINGS.<function>`).
    pub(crate) timings: Arc<crate::timings::Timings>,
    /// Dead letters that could not be stored since it started (reported by
    /// its outbox endpoint; `jetsaga status` warns).
    pub(crate) unstored_dead_letters: Arc<std::sync::atomic::AtomicU64>,
    /// Where its dead letters go ([`crate::Config::dlq_subject`]).
    dead_letters: Arc<str>,
}

/// Records handed to the connection, their acks still to come (one per
/// record, in order; or why it was not sent).
#[derive(Debug)]
pub(crate) struct Sent(Vec<Result<jetstream::context::PublishAckFuture, Unpublished>>, std::time::SystemTime);

/// Why one record was not published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Unpublished {
    /// Worth trying again (server away, stream full, timeout).
    Later(String),
    /// Can never be published as it is (larger than the server accepts).
    Never(String),
}

impl Publisher {
    /// A publisher for one function. Removing published outbox records is
    /// off the hot path: ids are collected and removed in one store
    /// transaction every [`Processor::mark_published_every`]. A crash before that only means
    /// they are published again on restart, and JetStream drops the copies.
    pub(crate) fn new(engine: Arc<dyn Processor>, js: jetstream::Context, dead_letters: String) -> Self {
        let name = engine.name();
        let (sweeper, mut ids) = tokio::sync::mpsc::unbounded_channel::<Vec<String>>();
        let store = engine.clone();
        let every = engine.mark_published_every();
        tokio::spawn(async move {
            while let Some(first) = ids.recv().await {
                let mut batch = first;
                let deadline = tokio::time::Instant::now() + every;
                while let Ok(Some(more)) = tokio::time::timeout_at(deadline, ids.recv()).await {
                    batch.extend(more);
                }
                if let Err(e) = store.mark_published(&batch).await {
                    warn!(error = %e, "cannot remove published outbox records; they will be published again and de-duplicated");
                }
            }
        });
        Self {
            engine,
            js,
            sweeper,
            failed: Arc::default(),
            consuming: Arc::default(),
            timings: Arc::new(crate::timings::Timings::exported(name)),
            unstored_dead_letters: Arc::default(),
            dead_letters: dead_letters.into(),
        }
    }

    /// Publishes outbox records concurrently, waiting for every ack, and
    /// marks the stored ones published. Returns, per record, whether
    /// JetStream has it (a duplicate counts: it was stored before).
    pub(crate) async fn publish(&self, records: &[OutboxRecord]) -> Vec<bool> {
        self.try_publish(records).await.iter().map(Result::is_ok).collect()
    }

    /// Like [`Publisher::publish`], saying why a record was not published.
    pub(crate) async fn try_publish(&self, records: &[OutboxRecord]) -> Vec<Result<(), Unpublished>> {
        let sent = self.send(records).await;
        self.confirm(records, sent).await
    }

    /// Hands every record to the connection, in order, without waiting for
    /// JetStream's acks ([`Publisher::confirm`] does). In order matters: a
    /// key's newer schedule must reach the server after the one it
    /// replaces, and a consumer that pipelines batches sends a batch's
    /// events before it takes the next batch.
    pub(crate) async fn send(&self, records: &[OutboxRecord]) -> Sent {
        let max_payload = self.js.client().server_info().max_payload;
        let at = std::time::SystemTime::now();
        let mut sent = Vec::with_capacity(records.len());
        for record in records {
            // Headers and subject count too; the server's limit is on the whole message.
            let size = record.payload.len() + record.subject.len() + 256;
            if max_payload > 0 && size > max_payload {
                sent.push(Err(Unpublished::Never(format!(
                    "the event is {} bytes, more than the server's max_payload of {max_payload} bytes",
                    record.payload.len()
                ))));
                continue;
            }
            let mut headers = HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, record.id.as_str());
            headers.insert(ENVELOPE_HEADER, "1");
            if let Some(tp) = &record.traceparent {
                headers.insert(TRACEPARENT_HEADER, tp.as_str());
            }
            for (name, value) in crate::schedule::headers(record) {
                headers.insert(name, value);
            }
            let payload = Bytes::copy_from_slice(&record.payload);
            sent.push(
                self.js
                    .publish_with_headers(record.destination().to_string(), headers, payload)
                    .await
                    .map_err(|e| Unpublished::Later(e.to_string())),
            );
        }
        Sent(sent, at)
    }

    /// Waits for the acks of what [`Publisher::send`] sent, and marks the
    /// stored records published. Returns, per record, whether JetStream has
    /// it (a duplicate counts: it was stored before), or why not.
    pub(crate) async fn confirm(&self, records: &[OutboxRecord], sent: Sent) -> Vec<Result<(), Unpublished>> {
        if records.is_empty() {
            return Vec::new();
        }
        let Sent(sent, at) = sent;
        let acks = sent.into_iter().map(|sent| async move {
            match sent {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| Unpublished::Later(e.to_string())),
                Err(e) => Err(e),
            }
        });
        let results = join_all(acks).await;
        if jetsaga_core::telemetry::enabled() {
            let spans: Vec<Result<(), std::borrow::Cow<'_, str>>> = results
                .iter()
                .map(|r| r.as_ref().map(|_| ()).map_err(|(Unpublished::Later(e) | Unpublished::Never(e))| e.into()))
                .collect();
            jetsaga_core::telemetry::sent(records, &spans, at);
        }
        for (record, result) in records.iter().zip(&results) {
            if let Err(Unpublished::Later(e) | Unpublished::Never(e)) = result {
                warn!(subject = %record.subject, id = %record.id, error = %e, "publish failed; the event stays in the outbox");
            }
        }
        if results.iter().any(Result::is_err) {
            self.failed.notify_one();
        }
        let done: Vec<String> =
            records.iter().zip(&results).filter(|(_, r)| r.is_ok()).map(|(r, _)| r.id.clone()).collect();
        if !done.is_empty() {
            let _ = self.sweeper.send(done);
        }
        results
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
        let trace_id = headers
            .and_then(|h| h.get(TRACEPARENT_HEADER))
            .and_then(|tp| jetsaga_core::ids::TraceParent::parse(tp.as_str()))
            .map(|tp| tp.trace_id)
            .unwrap_or_default();
        warn!(%subject, %origin, attempts, %reason, trace_id, "dead-lettered");
        // An oversized command keeps only its start: enough to see what it was,
        // and the dead letter itself stays publishable.
        let payload = if payload.len() > MAX_COMMAND_BYTES { payload.slice(..OVERSIZED_EXCERPT) } else { payload };
        let headers = dlq::headers(headers, name, reason, attempts, subject, origin);
        let stored = async {
            let ack = self.js.publish_with_headers(self.dead_letters.to_string(), headers, payload).await?;
            ack.await
        };
        if let Err(e) = stored.await {
            let unstored = self.unstored_dead_letters.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            error!(%subject, %origin, error = %e, unstored, "cannot store the dead letter; its message is kept and retried");
            return Err(e.to_string());
        }
        metrics::counter!("jetsaga_dead_letters_total", "function" => name).increment(1);
        debug!("dead letter stored");
        Ok(())
    }
}
