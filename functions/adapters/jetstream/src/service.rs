//! Each function's NATS micro service (discoverable with `$SRV.PING` /
//! `nats micro ls`), load-balanced over every running copy through the
//! service queue group:
//!
//! - one endpoint per query subject: read-only, answered from the store;
//! - one endpoint per accepted command (`nats req orders.cmd.create`, or a
//!   plain `nats pub`): answered with the event id, the saga key and the
//!   events it caused, or with an error saying why. A command with a
//!   `Nats-Msg-Id` is processed here at once through the engine (commit,
//!   then publish the outbox); one without waits for its copy in the
//!   command stream to be processed ([`crate::answers`]);
//! - `$JETSAGA.REDRIVE.<function>`: a dead letter of one of its events,
//!   handed back by the operations service, processed here as this
//!   function (never published again by anyone: see [`crate::ops::redrive`]).

use async_nats::HeaderMap;
use async_nats::service::{Request, ServiceExt};
use chrono::Utc;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

use jetsaga_core::telemetry::Delivery;
use jetsaga_core::{Incoming, Outcome, Processor, command_envelope, ids};
use jetsaga_envelope::MAX_COMMAND_BYTES;
use jetsaga_envelope::{ENVELOPE_HEADER, Envelope, TRACEPARENT_HEADER};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::RuntimeError;
use crate::answers::{Answer, Answers, command_key};
use crate::publisher::Publisher;
use crate::worker::{failure_of, outcome_label};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Query,
    Command,
    /// A command never kept in a stream (see `FunctionSpec::direct`).
    Direct,
    Outbox,
    /// The latency split of its consumed messages.
    Timings,
    /// A dead letter handed back by the operations service.
    Redrive,
}

/// `$JETSAGA.OUTBOX.<function>`: whether the function consumes its streams
/// yet (it is provisioned and bound), how many of its committed events are
/// not published yet, and how old the oldest is (`jetsaga status`).
pub fn outbox_subject(function: &str) -> String {
    format!("$JETSAGA.OUTBOX.{function}")
}

/// `$JETSAGA.REDRIVE.<function>`: where the operations service hands a
/// function a dead letter of an event to process again. Only the
/// operations user may publish there, and only the function's user
/// receives it.
pub fn redrive_subject(function: &str) -> String {
    format!("$JETSAGA.REDRIVE.{function}")
}

/// The header naming the subject a redriven letter was taken from.
pub const REDRIVE_SUBJECT_HEADER: &str = "Jetsaga-Redrive-Subject";

/// The reply-inbox prefix of a function's connection, `_INBOX_<function>`:
/// its NATS user may read replies there and nowhere else.
pub fn inbox_prefix(function: &str) -> String {
    format!("_INBOX_{function}")
}

/// Outbox records counted at most by the outbox endpoint.
const OUTBOX_COUNT_LIMIT: usize = 10_000;

/// Starts the service; the returned task ends when `cancel` fires.
pub(crate) async fn serve(
    client: &async_nats::Client,
    publisher: Publisher,
    answers: Answers,
    intake: Intake,
    cancel: CancellationToken,
) -> Result<JoinHandle<()>, RuntimeError> {
    let engine = publisher.engine.clone();
    let spec = engine.spec();
    let err = |e: async_nats::Error| RuntimeError::Service { function: spec.name.into(), message: e.to_string() };
    let service = client
        .service_builder()
        .description(spec.description)
        .start(spec.name, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(err)?;
    let mut endpoints = Vec::new();
    let subjects = spec
        .queries
        .iter()
        .map(|s| (*s, Kind::Query))
        .chain(spec.accepts.iter().map(|s| (*s, Kind::Command)))
        .chain(spec.direct.iter().map(|s| (*s, Kind::Direct)));
    for (subject, kind) in subjects {
        let name = subject.replace('.', "_");
        let endpoint = service.endpoint_builder().name(name).add(subject).await.map_err(err)?;
        endpoints.push((Arc::<str>::from(subject), kind, endpoint));
    }
    let outbox = outbox_subject(spec.name);
    let endpoint = service.endpoint_builder().name("outbox").add(outbox.as_str()).await.map_err(err)?;
    endpoints.push((outbox.into(), Kind::Outbox, endpoint));
    let letters = redrive_subject(spec.name);
    let endpoint = service.endpoint_builder().name("redrive").add(letters.as_str()).await.map_err(err)?;
    endpoints.push((letters.into(), Kind::Redrive, endpoint));
    let timings = crate::timings::timings_subject(spec.name);
    // Every copy answers (a group of its own, named by its own inbox), so a
    // caller can sum the copies' timings instead of sampling one.
    let own_group = client.new_inbox().replace(['_', '.'], "-");
    let endpoint =
        service.endpoint_builder().name("timings").queue_group(own_group).add(timings.as_str()).await.map_err(err)?;
    endpoints.push((timings.into(), Kind::Timings, endpoint));
    let batcher = CommandBatcher::new(engine, intake.batches_in_flight);
    Ok(tokio::spawn(async move {
        let mut handlers = tokio::task::JoinSet::new();
        for (subject, kind, mut endpoint) in endpoints {
            let publisher = publisher.clone();
            let batcher = batcher.clone();
            let answers = answers.clone();
            let cancel = cancel.clone();
            handlers.spawn(async move {
                loop {
                    let request = tokio::select! {
                        () = cancel.cancelled() => break,
                        request = endpoint.next() => match request { Some(r) => r, None => break },
                    };
                    let publisher = publisher.clone();
                    let batcher = batcher.clone();
                    let answers = answers.clone();
                    let subject = subject.clone();
                    // Each request on its own task: a slow scan never blocks a point lookup.
                    tokio::spawn(async move {
                        let subject = &*subject;
                        let reply = match kind {
                            Kind::Query => publisher
                                .engine
                                .query(subject, &request.message.payload)
                                .await
                                .map_err(|e| (e.code(), e.to_string())),
                            Kind::Command => {
                                match accept(&publisher, &batcher, &answers, &intake, subject, &request).await {
                                    Some(answer) => answer,
                                    None => return,
                                }
                            }
                            Kind::Direct => match direct(&publisher, &batcher, subject, &request).await {
                                Some(answer) => answer,
                                None => return,
                            },
                            Kind::Outbox => backlog(&publisher).await,
                            Kind::Timings => Ok(publisher.timings.summary(publisher.engine.name())),
                            Kind::Redrive => redrive(&publisher, &batcher, &request).await,
                        };
                        respond(&request, subject, reply).await;
                    });
                }
            });
        }
        // A service without endpoints still answers PING/INFO until shutdown.
        cancel.cancelled().await;
        while handlers.join_next().await.is_some() {}
        if let Err(e) = service.stop().await {
            debug!(error = %e, "service stop");
        }
    }))
}

/// How long the outbox endpoint waits for the store to count the outbox.
/// Past it the answer says so and still tells whether the function is
/// consuming: readiness must not wait on a slow store (on Lambda, every
/// count is an invocation that may queue behind the function's work).
const BACKLOG_READ_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) async fn backlog(publisher: &Publisher) -> Result<Value, (u16, String)> {
    let consuming = publisher.consuming.load(std::sync::atomic::Ordering::Relaxed);
    let unstored = publisher.unstored_dead_letters.load(std::sync::atomic::Ordering::Relaxed);
    let function = publisher.engine.name();
    let pending =
        match tokio::time::timeout(BACKLOG_READ_TIMEOUT, publisher.engine.unpublished(OUTBOX_COUNT_LIMIT)).await {
            Ok(Ok(pending)) => pending,
            Ok(Err(e)) => {
                return Ok(
                    json!({"function": function, "consuming": consuming, "unpublished": null, "error": e.to_string()}),
                );
            }
            Err(_) => {
                let error = format!("the store did not count the outbox within {BACKLOG_READ_TIMEOUT:?}");
                return Ok(json!({"function": function, "consuming": consuming, "unpublished": null, "error": error}));
            }
        };
    let oldest = pending.iter().filter_map(|r| ids::time_of(&r.id)).min();
    Ok(json!({
        "function": function,
        "consuming": consuming,
        "unpublished": pending.len(),
        "at_least": pending.len() == OUTBOX_COUNT_LIMIT,
        "oldest_age_ms": oldest.map(|t| (Utc::now() - t).num_milliseconds().max(0)),
        "dead_letters_unstored": unstored,
    }))
}

fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers?.get(name).map(|v| v.as_str())
}

/// Processes one command through the engine and publishes what it caused.
/// Most commands committed in one store transaction.
const COMMAND_BATCH: usize = 256;

/// How the request endpoints take commands.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Intake {
    /// How long a request for a command without `Nats-Msg-Id` waits for the
    /// command stream's copy to be processed.
    pub answer_timeout: Duration,
    /// Commands with a `Nats-Msg-Id` are processed from the command stream
    /// too ([`crate::Config::keyed_commands_from_stream`]).
    pub keyed_from_stream: bool,
    /// Batches of request/reply commands processed at once (the function's
    /// `concurrency`): one slow batch (a Lambda invocation whose instance
    /// died, waited out until the invoke timeout) then holds up only itself.
    pub batches_in_flight: usize,
}

/// Groups concurrent request/reply commands so that many of them share one
/// store transaction, as consumed events do; each caller gets its own outcome.
#[derive(Clone, Debug)]
struct CommandBatcher {
    queue: tokio::sync::mpsc::Sender<(Incoming, tokio::sync::oneshot::Sender<Outcome>)>,
    /// Where the function's bare commands name their saga.
    key_field: Option<&'static str>,
}

impl CommandBatcher {
    fn new(processor: Arc<dyn Processor>, batches_in_flight: usize) -> Self {
        let key_field = processor.spec().key_field;
        let (queue, mut commands) =
            tokio::sync::mpsc::channel::<(Incoming, tokio::sync::oneshot::Sender<Outcome>)>(4 * COMMAND_BATCH);
        let slots = Arc::new(tokio::sync::Semaphore::new(batches_in_flight.max(1)));
        tokio::spawn(async move {
            while let Some(first) = commands.recv().await {
                // A batch forms while the slots are busy: what arrived meanwhile goes in one.
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                let mut batch = vec![first];
                while batch.len() < COMMAND_BATCH {
                    match commands.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let processor = processor.clone();
                tokio::spawn(async move {
                    let (incoming, replies): (Vec<Incoming>, Vec<_>) = batch.into_iter().unzip();
                    let outcomes = processor.process(&incoming).await;
                    drop(slot);
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(outcome);
                    }
                });
            }
        });
        Self { queue, key_field }
    }

    async fn process(&self, incoming: Incoming) -> Outcome {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        if self.queue.send((incoming, reply)).await.is_err() {
            return Outcome::Unavailable("shutting down".into());
        }
        outcome.await.unwrap_or_else(|_| Outcome::Unavailable("shutting down".into()))
    }
}

/// Takes one command from a client. With a `Nats-Msg-Id` it is processed
/// here at once: the id is its identity, so the stream's copy of it is
/// recognized as the same command. Without one only the stream's copy is
/// processed, and a request waits for that copy's answer. With
/// `keyed_from_stream` a keyed command's request waits for its stream
/// copy's answer too, and is processed here only if none comes in time.
/// `None`: a plain publish that the stream's copy stands for, nothing to do here.
async fn accept(
    publisher: &Publisher,
    batcher: &CommandBatcher,
    answers: &Answers,
    intake: &Intake,
    subject: &str,
    request: &Request,
) -> Option<Answer> {
    let answer_timeout = intake.answer_timeout;
    let message = &request.message;
    let headers = message.headers.as_ref();
    // Refused at once; the stream's copy is dead-lettered by the consumer.
    if let Err(reason) = intake_check(subject, message.payload.len(), headers) {
        return Some(Err((400, reason)));
    }
    if let Some(id) = client_id(headers).filter(|_| intake.keyed_from_stream) {
        message.reply.as_ref()?;
        if answers.captured().await.unwrap_or(false) {
            let key = command_key(subject, &message.payload);
            if let Some(answer) = answers.wait(&key, answer_timeout).await {
                return Some(answer);
            }
        }
        return Some(process_now(publisher, batcher, subject, request, id).await);
    }
    let Some(id) = client_id(headers) else {
        message.reply.as_ref()?;
        match answers.captured().await {
            Ok(true) => {}
            Ok(false) => {
                return Some(Err((
                    503,
                    format!(
                        "{} is starting: its command stream does not exist yet, so the command was not kept; send \
                         it again in a moment",
                        publisher.engine.name()
                    ),
                )));
            }
            Err(e) => {
                return Some(Err((
                    503,
                    format!(
                        "cannot tell whether the command stream kept the command ({e}); to retry without doing it \
                         twice, send it with a Nats-Msg-Id header"
                    ),
                )));
            }
        }
        let key = command_key(subject, &message.payload);
        return Some(answers.wait(&key, answer_timeout).await.unwrap_or_else(|| {
            Err((
                504,
                format!(
                    "not processed within {answer_timeout:?}: {} is behind, or the command stream was not \
                     available to keep the command (a server restart, a leader election). A kept command runs \
                     once, when the function catches up; to retry without doing it twice, send commands with a \
                     Nats-Msg-Id header",
                    publisher.engine.name()
                ),
            ))
        }));
    };
    Some(process_now(publisher, batcher, subject, request, id).await)
}

/// Takes one command that is never kept in a stream because it carries a
/// secret: processed here at once, under its `Nats-Msg-Id` or a fresh id.
/// `None`: a plain publish, which nobody could be answered about and no
/// stream keeps, so it is ignored.
async fn direct(publisher: &Publisher, batcher: &CommandBatcher, subject: &str, request: &Request) -> Option<Answer> {
    let message = &request.message;
    message.reply.as_ref()?;
    let headers = message.headers.as_ref();
    if let Err(reason) = intake_check(subject, message.payload.len(), headers) {
        return Some(Err((400, reason)));
    }
    let id = client_id(headers).map_or_else(ids::new_id, str::to_string);
    Some(process_now(publisher, batcher, subject, request, &id).await)
}

/// Processes a command at once through the engine under `id`, publishes
/// what it caused and answers.
async fn process_now(
    publisher: &Publisher,
    batcher: &CommandBatcher,
    subject: &str,
    request: &Request,
    id: &str,
) -> Answer {
    let message = &request.message;
    let envelope = match command_envelope(subject, &message.payload, Some(id), id, Utc::now(), batcher.key_field) {
        Ok(envelope) => envelope,
        Err(e) => return Err((400, e.to_string())),
    };
    let traceparent = header(message.headers.as_ref(), TRACEPARENT_HEADER).map(str::to_string);
    let mut incoming = Incoming { envelope, traceparent };
    let delivery = Delivery::start(publisher.engine.name(), &mut incoming, 1);
    let outcome = batcher.process(incoming.clone()).await;
    if let Some(delivery) = delivery {
        delivery.end(outcome_label(&outcome, false), failure_of(&outcome));
    }
    if let Some(records) = outcome.outbox() {
        // Committed: even if a publish fails now, the relay publishes it later.
        publisher.publish(records).await;
    }
    answer_of(&outcome, &incoming.envelope)
}

/// Processes a dead letter of one of this function's events again, as a
/// delivery from its stream would be: only on a subject it subscribes to,
/// only as the envelope the runtime published, answered like a command
/// (the letter's id is its identity, so an event it had processed after
/// all is answered as repeated and changes nothing).
async fn redrive(publisher: &Publisher, batcher: &CommandBatcher, request: &Request) -> Answer {
    let message = &request.message;
    let headers = message.headers.as_ref();
    let spec = publisher.engine.spec();
    let Some(subject) = header(headers, REDRIVE_SUBJECT_HEADER) else {
        return Err((400, format!("a redrive names the letter's subject in the {REDRIVE_SUBJECT_HEADER} header")));
    };
    if !spec.subscribes.contains(&subject) {
        return Err((403, format!("{} does not subscribe to {subject}: not one of its letters", spec.name)));
    }
    let envelope = match Envelope::decode(&message.payload) {
        Ok(envelope) => envelope,
        Err(e) => return Err((400, format!("the letter is not an event envelope: {e}"))),
    };
    if let Err(e) = envelope.check_arrival(subject) {
        return Err((400, e.to_string()));
    }
    let traceparent = header(headers, TRACEPARENT_HEADER).map(str::to_string);
    let mut incoming = Incoming { envelope, traceparent };
    // A redrive is one more delivery of the letter, in the trace it came from.
    let delivery = Delivery::start(publisher.engine.name(), &mut incoming, 1);
    let outcome = batcher.process(incoming.clone()).await;
    if let Some(delivery) = delivery {
        delivery.end(outcome_label(&outcome, false), failure_of(&outcome));
    }
    if let Some(records) = outcome.outbox() {
        // Committed: even if a publish fails now, the relay publishes it later.
        publisher.publish(records).await;
    }
    answer_of(&outcome, &incoming.envelope)
}

/// The identity a client gave its command (`Nats-Msg-Id`), if any: such a
/// command is answered by the request endpoint, one without by whichever
/// copy processes it from the command stream.
pub(crate) fn client_id(headers: Option<&HeaderMap>) -> Option<&str> {
    header(headers, "Nats-Msg-Id").filter(|id| !id.trim().is_empty())
}

/// What a command may not be, whichever path it takes: larger than
/// [`MAX_COMMAND_BYTES`], or an envelope.
pub(crate) fn intake_check(subject: &str, size: usize, headers: Option<&HeaderMap>) -> Result<(), String> {
    if size > MAX_COMMAND_BYTES {
        return Err(format!("the command is {size} bytes; at most {MAX_COMMAND_BYTES} are accepted"));
    }
    // Outside clients send commands, never envelopes: an envelope names its
    // own `type`, and one naming another context's event would make this
    // function act on an order it was never asked about.
    if header(headers, ENVELOPE_HEADER).is_some() {
        return Err(format!(
            "{subject} takes the bare command payload; the {ENVELOPE_HEADER} header is for events the runtime \
             publishes, and is refused here"
        ));
    }
    Ok(())
}

/// The answer to a processed command; the same on a retry.
pub(crate) fn answer_of(outcome: &Outcome, envelope: &Envelope) -> Answer {
    let reply = |saga_key: Option<String>, events: Vec<String>, repeated: bool| {
        let mut reply = json!({"event_id": envelope.id, "events": events});
        if let Some(key) = saga_key {
            reply["saga_key"] = json!(key);
            // The same, under the name clients written before the key was
            // generic read (deprecated; see CHANGELOG.md).
            reply["order_id"] = json!(key);
        }
        if repeated {
            reply["repeated"] = json!(true);
        }
        reply
    };
    match outcome {
        Outcome::Publish(records) => {
            // What was published now (as the receipt a retry is answered from): a schedule comes later, if ever.
            let events: Vec<Envelope> = records
                .iter()
                .filter(|r| !r.is_scheduled())
                .filter_map(|r| Envelope::decode(&r.payload).ok())
                .collect();
            let key = events.iter().find_map(|e| e.saga_key.clone()).or_else(|| envelope.saga_key.clone());
            Ok(reply(key, events.into_iter().map(|e| e.event_type).collect(), false))
        }
        Outcome::Rejected { reason, .. } => Err((422, reason.clone())),
        // A retry: the first answer again.
        Outcome::Repeated { receipt, .. } => match &receipt.rejected {
            Some(reason) => Err((422, reason.clone())),
            None => Ok(reply(receipt.saga_key.clone(), receipt.events.clone(), true)),
        },
        Outcome::Conflict(reason) => Err((409, reason.clone())),
        Outcome::Retry(reason) | Outcome::Unavailable(reason) => {
            Err((503, format!("temporarily unavailable, retry: {reason}")))
        }
        Outcome::DeadLetter(reason) => Err((400, reason.clone())),
        Outcome::Refused(reason) => Err((429, reason.clone())),
    }
}

/// Answers a request (a plain publish has nobody to answer). Errors set the
/// `Nats-Service-Error` headers and repeat them as a JSON body, for clients
/// that ignore headers.
pub(crate) async fn respond(request: &Request, subject: &str, reply: Result<Value, (u16, String)>) {
    if request.message.reply.is_none() {
        if let Err((code, error)) = &reply {
            debug!(subject, code, %error, "published command refused");
        }
        return;
    }
    let sent = match reply {
        Ok(value) => request.respond(Ok(value.to_string().into())).await,
        Err((code, error)) => {
            let body = json!({"code": code, "error": error});
            let mut headers = HeaderMap::new();
            // A header value is one line of printable text (an id quoted in
            // the message may hold anything); the body keeps the message whole.
            let line: String = error.chars().take(512).map(|c| if c.is_control() { ' ' } else { c }).collect();
            headers.insert("Nats-Service-Error", line.as_str());
            headers.insert("Nats-Service-Error-Code", code.to_string().as_str());
            request.respond_with_headers(Ok(body.to_string().into()), headers).await
        }
    };
    if let Err(e) = sent {
        warn!(subject, error = %e, "could not send the reply");
    }
}
