//! One function's consume loop: pull a batch, decode, process through the
//! engine, publish the outbox, then ack / nak / dead-letter each input.

use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{AckKind, Message, consumer::PullConsumer};
use futures::{FutureExt, StreamExt, future::join_all};
use std::sync::Arc;

use jetsaga_core::telemetry::Delivery;
use jetsaga_core::{Incoming, OutboxRecord, Outcome, Processor, command_envelope};
use jetsaga_envelope::subject::{self as subjects, SubjectKind};
use jetsaga_envelope::{ENVELOPE_HEADER, Envelope, TRACEPARENT_HEADER};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::answers::{Answer, Answers, command_key};
use crate::publisher::Publisher;
use crate::timings::Phase;
use crate::{Config, service};

/// How long a batch is kept from redelivery by in-progress acks at most
/// (Lambda's longest invocation): past it, work that is still not done is
/// presumed stuck, and the server redelivers the batch after the ack wait.
const MAX_IN_PROGRESS: Duration = Duration::from_secs(15 * 60);

/// Batches of one worker whose publish acks (and then input acks) are
/// awaited while it takes and commits the next ones: a batch's commit no
/// longer waits for the previous batch's round trips to the server. Its
/// events were handed to the connection before the next batch was taken,
/// so they reach the server in commit order.
const PIPELINED_BATCHES: usize = 4;

/// What happened to one input, decided before acking.
enum Disposition {
    Ack,
    Nak(Duration),
    DeadLetter(String),
}

/// Consumes for one function.
pub(crate) struct Worker {
    engine: Arc<dyn Processor>,
    publisher: Publisher,
    config: Config,
    /// Set when consuming the command stream: where answers go.
    answers: Option<Answers>,
    /// `jetsaga_batch_size{function}`, registered once.
    batch_size: metrics::Histogram,
}

fn delivered_of(message: &Message) -> i64 {
    message.info().map(|i| i.delivered).unwrap_or(1)
}

fn header<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message.headers.as_ref()?.get(name).map(|v| v.as_str())
}

impl Worker {
    pub(crate) fn new(publisher: Publisher, config: Config, answers: Option<Answers>) -> Self {
        let batch_size = metrics::histogram!("jetsaga_batch_size", "function" => publisher.engine.name());
        Self { engine: publisher.engine.clone(), publisher, config, answers, batch_size }
    }

    pub(crate) async fn run(self, consumer: PullConsumer, cancel: CancellationToken) {
        let name = self.engine.name();
        let span = info_span!("function", function = name);
        let this = Arc::new(self);
        // Batches committed and sent whose acks are still awaited (see `PIPELINED_BATCHES`).
        let mut tails = tokio::task::JoinSet::new();
        async move {
            while !cancel.is_cancelled() {
                let mut messages = match consumer
                    .stream()
                    .max_messages_per_batch(this.config.batch_size)
                    .heartbeat(Duration::from_secs(5))
                    .expires(Duration::from_secs(30))
                    .messages()
                    .await
                {
                    Ok(messages) => messages,
                    Err(e) => {
                        warn!(error = %e, "cannot start pulling; retrying in 1s");
                        tokio::select! { () = cancel.cancelled() => break, () = tokio::time::sleep(Duration::from_secs(1)) => continue }
                    }
                };
                debug!("consuming");
                loop {
                    let first = tokio::select! {
                        () = cancel.cancelled() => break,
                        next = messages.next() => next,
                    };
                    let mut batch = match first {
                        Some(Ok(message)) => vec![message],
                        Some(Err(e)) => {
                            // Missed heartbeats while the server restarts: the stream recovers by itself.
                            debug!(error = %e, "pull interrupted");
                            continue;
                        }
                        None => break,
                    };
                    let deadline = tokio::time::Instant::now() + this.config.batch_window;
                    while batch.len() < this.config.batch_size {
                        let next = if this.config.batch_window.is_zero() {
                            messages.next().now_or_never()
                        } else {
                            tokio::time::timeout_at(deadline, messages.next()).await.ok()
                        };
                        match next {
                            Some(Some(Ok(message))) => batch.push(message),
                            _ => break,
                        }
                    }
                    while tails.try_join_next().is_some() {}
                    while tails.len() >= PIPELINED_BATCHES {
                        tails.join_next().await;
                    }
                    tails.spawn(this.clone().process(batch).await.in_current_span());
                }
                if !cancel.is_cancelled() {
                    warn!("message stream ended; re-subscribing");
                }
            }
            // Shutting down: every batch taken is finished (published, acked).
            while tails.join_next().await.is_some() {}
            info!("stopped");
        }
        .instrument(span)
        .await
    }

    fn decode(&self, message: &Message) -> Result<Incoming, String> {
        let traceparent = header(message, TRACEPARENT_HEADER).map(str::to_string);
        if let Some(scheduler) = header(message, crate::schedule::SCHEDULER_HEADER) {
            self.config.check_scheduled(scheduler, &message.subject)?;
        }
        if self.answers.is_some() {
            // What a client sent: held to the same rules as at the request endpoint.
            service::intake_check(&message.subject, message.payload.len(), message.headers.as_ref())?;
        }
        let envelope = if header(message, ENVELOPE_HEADER).is_some() {
            let envelope = Envelope::decode(&message.payload).map_err(|e| e.to_string())?;
            envelope.check_arrival(&message.subject).map_err(|e| e.to_string())?;
            envelope
        } else if matches!(subjects::parse(&message.subject), Some((_, SubjectKind::Event))) {
            return Err(format!(
                "a bare payload on the event subject {}: events are published by the jetsaga runtime as envelopes \
                 (header {ENVELOPE_HEADER}: 1), never by clients",
                message.subject
            ));
        } else {
            let info = message.info().map_err(|e| format!("not a JetStream message: {e}"))?;
            let seed = format!("{}/{}", info.stream, info.stream_sequence);
            let id = header(message, "Nats-Msg-Id");
            let key_field = self.engine.spec().key_field;
            command_envelope(&message.subject, &message.payload, id, &seed, info.published, key_field)
                .map_err(|e| e.to_string())?
        };
        Ok(Incoming { envelope, traceparent })
    }

    /// Processes a batch up to its commit and hands its events to the
    /// connection; returns the rest (awaiting the publish acks, then acking
    /// or nak'ing each input), which runs while the next batch is processed.
    async fn process(self: Arc<Self>, batch: Vec<Message>) -> impl std::future::Future<Output = ()> + Send + 'static {
        let taken = Instant::now();
        let timings = self.publisher.timings.clone();
        timings.record_queue(
            batch.iter().filter_map(|m| m.info().ok()).map(|i| SystemTime::from(i.published)),
            SystemTime::now(),
        );
        let mut dispositions: Vec<Option<Disposition>> = Vec::with_capacity(batch.len());
        let mut incoming = Vec::with_capacity(batch.len());
        // Each input's place in the batch, and the span of its delivery.
        let mut positions = Vec::with_capacity(batch.len());
        for (i, message) in batch.iter().enumerate() {
            match self.decode(message) {
                Ok(mut event) => {
                    let attempt = delivered_of(message).max(1).unsigned_abs();
                    positions.push((i, Delivery::start(self.engine.name(), &mut event, attempt)));
                    incoming.push(event);
                    dispositions.push(None);
                }
                Err(reason) => {
                    count(self.engine.name(), "dead_lettered");
                    dispositions.push(Some(Disposition::DeadLetter(reason)))
                }
            }
        }
        let (outcomes, records, sent) = self
            .in_progress(&batch, async {
                let outcomes = self.engine.process(&incoming).await;
                timings.record(Phase::Handling, taken.elapsed(), batch.len() as u64);
                self.batch_size.record(batch.len() as f64);
                let records: Vec<OutboxRecord> =
                    outcomes.iter().filter_map(Outcome::outbox).flatten().cloned().collect();
                let sent = self.publisher.send(&records).await;
                (outcomes, records, sent)
            })
            .await;
        let committed = Instant::now();
        async move {
            let published = self.in_progress(&batch, self.publisher.confirm(&records, sent)).await;
            timings.record(Phase::Publish, committed.elapsed(), batch.len() as u64);
            let acking = Instant::now();
            self.settle(&batch, dispositions, positions, outcomes, &incoming, published).await;
            timings.record(Phase::Ack, acking.elapsed(), batch.len() as u64);
        }
    }

    /// Decides each input's fate from its outcome and whether its events
    /// are out, answers waiting requests, then acks, naks or dead-letters.
    async fn settle(
        &self,
        batch: &[Message],
        mut dispositions: Vec<Option<Disposition>>,
        positions: Vec<(usize, Option<Delivery>)>,
        outcomes: Vec<Outcome>,
        incoming: &[Incoming],
        published: Vec<Result<(), crate::publisher::Unpublished>>,
    ) {
        let mut published = published.into_iter().map(|r| r.is_ok());
        let mut answers: Vec<Option<Answer>> = vec![None; batch.len()];
        for (((i, delivery), outcome), input) in positions.into_iter().zip(outcomes).zip(incoming) {
            let message = &batch[i];
            let delivered = delivered_of(message);
            if delivered > 1 {
                metrics::counter!("jetsaga_redeliveries_total", "function" => self.engine.name()).increment(1);
            }
            let awaited = self.answers.is_some() && self.answered_here(message);
            if awaited && !matches!(outcome, Outcome::Retry(_) | Outcome::Unavailable(_)) {
                // Final once committed or refused, even if its events are published later.
                answers[i] = Some(service::answer_of(&outcome, &input.envelope));
            }
            let label = outcome_label(&outcome, delivered >= self.config.max_deliver);
            count(self.engine.name(), label);
            if let Some(delivery) = delivery {
                delivery.end(label, failure_of(&outcome));
            }
            dispositions[i] = Some(match outcome {
                Outcome::Publish(records)
                | Outcome::Rejected { outbox: records, .. }
                | Outcome::Repeated { outbox: records, .. } => {
                    // Consume exactly this input's share of the publish results.
                    let results: Vec<bool> = records.iter().map(|_| published.next().unwrap_or(false)).collect();
                    let all_out = results.into_iter().all(|ok| ok);
                    if all_out { Disposition::Ack } else { Disposition::Nak(self.config.backoff_for(delivered)) }
                }
                Outcome::Retry(reason) if delivered >= self.config.max_deliver => {
                    Disposition::DeadLetter(format!("gave up after {delivered} attempts: {reason}"))
                }
                Outcome::Retry(reason) | Outcome::Unavailable(reason) => {
                    let delay = self.config.backoff_for(delivered);
                    debug!(%reason, attempt = delivered, ?delay, "will retry");
                    Disposition::Nak(delay)
                }
                Outcome::DeadLetter(reason) | Outcome::Conflict(reason) => Disposition::DeadLetter(reason),
                // Over a limit: answered (429) and let go, nothing kept.
                Outcome::Refused(_) => Disposition::Ack,
            });
        }
        if let Some(answerer) = &self.answers {
            self.answer(answerer, batch, &dispositions, answers).await;
        }
        let acks = batch.iter().zip(dispositions).map(|(message, disposition)| async move {
            let result = match disposition.expect("every message has a disposition") {
                Disposition::Ack => message.ack().await,
                Disposition::Nak(delay) => message.ack_with(AckKind::Nak(Some(delay))).await,
                Disposition::DeadLetter(reason) => match self.dead_letter(message, &reason).await {
                    Ok(()) => message.ack_with(AckKind::Term).await,
                    Err(e) => {
                        // Kept until its dead letter is stored: the consumer
                        // redelivers without limit, so it cannot age out.
                        warn!(error = %e, "cannot store the dead letter; the message stays and is retried");
                        message.ack_with(AckKind::Nak(Some(self.config.backoff_for(delivered_of(message))))).await
                    }
                },
            };
            if let Err(e) = result {
                debug!(error = %e, "ack not sent; the message will be redelivered");
            }
        });
        join_all(acks).await;
    }

    /// Runs `work` on `batch`, telling the server every third of the ack
    /// wait that the batch is still being worked on, so that a slow step (a
    /// Lambda invocation, waited for up to the invoke timeout; a store
    /// catching up) is not redelivered to another copy meanwhile, which
    /// would only do it twice. A process that is paused or dead sends
    /// nothing, and its batch is redelivered after the ack wait as before;
    /// a batch is kept in progress for [`MAX_IN_PROGRESS`] at most.
    async fn in_progress<T>(&self, batch: &[Message], work: impl std::future::Future<Output = T>) -> T {
        let every = (self.config.ack_wait / 3).max(Duration::from_millis(100));
        let until = tokio::time::Instant::now() + MAX_IN_PROGRESS;
        let mut work = std::pin::pin!(work);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = ticks.tick(), if tokio::time::Instant::now() < until => {
                    let progress = batch.iter().map(|message| message.ack_with(AckKind::Progress));
                    for result in join_all(progress).await {
                        if let Err(e) = result {
                            debug!(error = %e, "in-progress ack not sent");
                        }
                    }
                }
            }
        }
    }

    /// Answers the requests waiting for these commands: those that reached
    /// an end (committed, refused or dead-lettered); a command that will be
    /// retried is answered when it is done. Commands with a `Nats-Msg-Id`
    /// were answered by the request endpoint itself.
    async fn answer(
        &self,
        answerer: &Answers,
        batch: &[Message],
        dispositions: &[Option<Disposition>],
        answers: Vec<Option<Answer>>,
    ) {
        for ((message, disposition), answer) in batch.iter().zip(dispositions).zip(answers) {
            if !self.answered_here(message) {
                continue;
            }
            let answer = match (disposition, answer) {
                (_, Some(answer)) => answer,
                // Undecodable, or retried until it was given up.
                (Some(Disposition::DeadLetter(reason)), None) => Err((400, reason.clone())),
                _ => continue,
            };
            let sequence = message.info().map(|i| i.stream_sequence).unwrap_or_default();
            answerer.send(&command_key(&message.subject, &message.payload), sequence, &answer).await;
        }
    }

    /// Whether a command's requester waits for this copy's answer: always
    /// without `Nats-Msg-Id`; with one, only where keyed commands are
    /// processed from the stream (else the request endpoint answered it).
    fn answered_here(&self, message: &Message) -> bool {
        self.config.keyed_commands_from_stream || service::client_id(message.headers.as_ref()).is_none()
    }

    async fn dead_letter(&self, message: &Message, reason: &str) -> Result<(), String> {
        let info = message.info().map_err(|e| e.to_string())?;
        let origin = format!("{}/{}", info.stream, info.stream_sequence);
        self.publisher
            .dead_letter(
                &message.subject,
                message.headers.as_ref(),
                message.payload.clone(),
                reason,
                info.delivered,
                &origin,
            )
            .await
    }
}

/// Counts one message handled by `function` (`jetsaga_messages_total`;
/// a no-op unless the process installed a metrics recorder).
fn count(function: &str, outcome: &'static str) {
    metrics::counter!("jetsaga_messages_total", "function" => function.to_string(), "outcome" => outcome).increment(1);
}

/// Why a message was not processed, if it was not.
pub(crate) fn failure_of(outcome: &Outcome) -> Option<&str> {
    match outcome {
        Outcome::Retry(reason)
        | Outcome::Unavailable(reason)
        | Outcome::DeadLetter(reason)
        | Outcome::Conflict(reason)
        | Outcome::Refused(reason) => Some(reason),
        Outcome::Publish(_) | Outcome::Rejected { .. } | Outcome::Repeated { .. } => None,
    }
}

/// What became of a message, as the `outcome` label says it: a bounded set.
pub(crate) fn outcome_label(outcome: &Outcome, last_attempt: bool) -> &'static str {
    match outcome {
        Outcome::Publish(_) => "processed",
        Outcome::Rejected { .. } => "rejected",
        Outcome::Repeated { .. } => "duplicate",
        Outcome::Retry(_) if last_attempt => "dead_lettered",
        Outcome::Retry(_) | Outcome::Unavailable(_) => "retry",
        Outcome::DeadLetter(_) | Outcome::Conflict(_) => "dead_lettered",
        Outcome::Refused(_) => "refused",
    }
}
