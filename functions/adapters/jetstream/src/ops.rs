//! Operations on a running saga: its status (streams, each function's
//! consumer lag, redeliveries and outbox backlog), its dead letters, and
//! their redrive. The CLI (`jetsaga status`, `jetsaga dlq …`) calls these
//! directly; the `jetsaga-ops` NATS micro service ([`serve`]) answers them
//! for clients that may not touch the streams themselves (the HTTP
//! gateway asks it, and so never reads the DLQ nor publishes an event).

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use async_nats::service::ServiceExt;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{Config, RuntimeError, dlq};

pub use jetsaga_envelope::ops::*;

/// The micro service's name (`nats micro ls`).
pub const SERVICE_NAME: &str = "jetsaga-ops";

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// No such dead letter (or the stream does not exist).
    #[error("no dead letter {0}")]
    NoDeadLetter(u64),
    /// The saga stream does not exist.
    #[error("no stream {0} (has the saga been provisioned, e.g. by `jetsaga up`?)")]
    NoStream(String),
    /// Sending the dead letter again failed; it is kept.
    #[error("dead letter {sequence} kept: {message}")]
    Kept {
        /// Its sequence.
        sequence: u64,
        /// Why.
        message: String,
    },
    /// The dead letter may not be sent again (see [`redrive_refusal`]); it is kept.
    #[error("dead letter {sequence} not sent again: {reason}")]
    Refused {
        /// Its sequence.
        sequence: u64,
        /// Why.
        reason: String,
    },
    /// The request is not understood.
    #[error("{0}")]
    BadRequest(String),
    /// NATS failed.
    #[error("{0}")]
    Nats(String),
}

impl OpsError {
    /// The NATS service error code: 404 for what does not exist, 403 for a
    /// letter that may not be sent again, 502 when the redriven message was
    /// refused, 503 otherwise.
    pub fn code(&self) -> u16 {
        match self {
            OpsError::NoDeadLetter(_) | OpsError::NoStream(_) => 404,
            OpsError::Kept { .. } => 502,
            OpsError::BadRequest(_) => 400,
            OpsError::Refused { .. } => 403,
            OpsError::Nats(_) => 503,
        }
    }
}

/// Reads a stream (with an ephemeral ordered consumer, never a function's
/// own) from `start` until caught up, handing each message to `each`, until
/// `each` says stop.
pub async fn read_stream(
    js: &jetstream::Context,
    stream: &str,
    start: Option<DateTime<Utc>>,
    mut each: impl FnMut(u64, &jetstream::Message) -> bool,
) -> Result<(), OpsError> {
    let stream = js.get_stream(stream).await.map_err(|_| OpsError::NoStream(stream.to_string()))?;
    let deliver_policy = match start {
        Some(start) => consumer::DeliverPolicy::ByStartTime { start_time: start },
        None => consumer::DeliverPolicy::All,
    };
    if stream.cached_info().state.messages == 0 {
        return Ok(());
    }
    let ordered = stream
        .create_consumer(consumer::pull::OrderedConfig { deliver_policy, ..Default::default() })
        .await
        .map_err(|e| OpsError::Nats(format!("cannot read the stream: {e}")))?;
    let mut messages = ordered.messages().await.map_err(nats_error)?;
    loop {
        let next = tokio::time::timeout(Duration::from_millis(500), messages.next()).await;
        let Ok(Some(Ok(message))) = next else { break };
        let info = message.info().map_err(nats_error)?;
        let (sequence, pending) = (info.stream_sequence, info.pending);
        if !each(sequence, &message) || pending == 0 {
            break;
        }
    }
    Ok(())
}

/// The dead letters in `dlq_stream`, oldest first (at most `limit`).
pub async fn dead_letters(
    js: &jetstream::Context,
    dlq_stream: &str,
    limit: usize,
) -> Result<Vec<DeadLetter>, OpsError> {
    let mut letters = Vec::new();
    let read = read_stream(js, dlq_stream, None, |sequence, message| {
        let empty = async_nats::HeaderMap::new();
        letters.push(dlq::read(sequence, message.headers.as_ref().unwrap_or(&empty), &message.payload));
        letters.len() < limit
    })
    .await;
    match read {
        // No DLQ stream yet: nothing was ever dead-lettered.
        Ok(()) | Err(OpsError::NoStream(_)) => Ok(letters),
        Err(e) => Err(e),
    }
}

/// One dead letter, by its sequence.
pub async fn dead_letter(js: &jetstream::Context, dlq_stream: &str, sequence: u64) -> Result<DeadLetter, OpsError> {
    let (_, raw) = stored_letter(js, dlq_stream, sequence).await?;
    Ok(dlq::read(sequence, &raw.headers, &raw.payload))
}

/// The DLQ stream and one message of it, as stored (headers included).
async fn stored_letter(
    js: &jetstream::Context,
    dlq_stream: &str,
    sequence: u64,
) -> Result<(jetstream::stream::Stream, jetstream::message::StreamMessage), OpsError> {
    let stream = js.get_stream(dlq_stream).await.map_err(|_| OpsError::NoDeadLetter(sequence))?;
    let raw = stream.get_raw_message(sequence).await.map_err(|_| OpsError::NoDeadLetter(sequence))?;
    Ok((stream, raw))
}

/// Why a dead letter may not be sent again, if it may not. A letter is
/// sent again only where its function takes messages in, and only if it
/// is what the runtime itself stores: on `dlq.<function>`, naming that
/// function, a subject that function subscribes to or accepts, and an
/// origin of the saga's streams or a request. Anyone who may publish on a
/// `dlq.` subject could otherwise have an administrator's redrive publish
/// any event on their behalf.
pub fn redrive_refusal(config: &Config, stored_on: &str, letter: &DeadLetter) -> Option<String> {
    let function = &letter.function;
    if stored_on != config.dlq_subject(function) {
        return Some(format!(
            "it was stored on {stored_on} but names the function {function:?}: only the runtime's own dead letters \
             (on {}) are sent again",
            config.dlq_subject(function)
        ));
    }
    let Some(declared) = config.saga.get(function) else {
        return Some(format!("{function:?} is not a function of this saga"));
    };
    if !declared.takes.contains(&letter.subject) {
        return Some(format!(
            "{function} does not take messages on {:?}: a dead letter is sent again only to a subject its function \
             subscribes to or accepts",
            letter.subject
        ));
    }
    let is_command = matches!(
        jetsaga_envelope::subject::parse(&letter.subject),
        Some((_, jetsaga_envelope::subject::SubjectKind::Command))
    );
    if letter.origin.starts_with("request/") && !is_command {
        return Some(format!(
            "it says it came by request, but {} is not a command (only commands are sent by request)",
            letter.subject
        ));
    }
    if original_in_stream(config, &letter.origin).is_none() && !letter.origin.starts_with("request/") {
        return Some(format!(
            "its origin {:?} is not one of the saga's streams or a request (an event its function emitted that no \
             server accepts cannot be sent again: delete it)",
            letter.origin
        ));
    }
    None
}

/// The stream and sequence of a letter's original, when it came from one
/// of the saga's streams (`SAGA/42`).
fn original_in_stream<'a>(config: &'a Config, origin: &str) -> Option<(&'a str, u64)> {
    let (stream, sequence) = origin.split_once('/')?;
    let stream = [&config.stream, &config.command_stream].into_iter().find(|s| s.as_str() == stream)?;
    Some((stream.as_str(), sequence.parse().ok()?))
}

/// Why a letter from a stream is not what that stream holds, if it is
/// not: the original must still be there, on the letter's subject, with
/// the letter's payload. A letter anyone forged on a `dlq.` subject then
/// names a message that is not its own, and is not sent.
async fn unlike_its_original(
    js: &jetstream::Context,
    config: &Config,
    letter: &DeadLetter,
    payload: &[u8],
) -> Option<String> {
    let (stream, sequence) = original_in_stream(config, &letter.origin)?;
    let original = match js.get_stream(stream).await {
        Ok(stream) => stream.get_raw_message(sequence).await.ok(),
        Err(_) => None,
    };
    match original {
        None => Some(format!(
            "its original {} is no longer in the stream, so the letter cannot be checked against it (delete it, or \
             send the command again yourself)",
            letter.origin
        )),
        Some(original) if original.subject.as_str() != letter.subject || original.payload.as_ref() != payload => {
            Some(format!("it is not what {} holds (subject or payload differ): a forged or cut letter", letter.origin))
        }
        Some(_) => None,
    }
}

/// Sends a dead letter again to its original subject with its trace
/// headers ([`dlq::KEPT_HEADERS`]), then removes it from the DLQ, if
/// [`redrive_refusal`] finds nothing against it:
///
/// - a command that came by request/reply (never stored) is asked again,
///   and kept in the DLQ if that fails;
/// - a command from the command stream is sent as a request too: the
///   stream keeps it whatever happens (it never acknowledges a publish),
///   and the function's answer says how it went when a copy runs;
/// - an event is handed to its function (`$JETSAGA.REDRIVE.<function>`),
///   which processes it as itself, and kept if that fails, with the reason.
///
/// A command that fails again is dead-lettered again (a new sequence).
pub async fn redrive(
    nats: &async_nats::Client,
    js: &jetstream::Context,
    config: &Config,
    sequence: u64,
) -> Result<Redriven, OpsError> {
    let (stream, raw) = stored_letter(js, &config.dlq_stream, sequence).await?;
    let letter = dlq::read(sequence, &raw.headers, &raw.payload);
    let refusal = match redrive_refusal(config, &raw.subject, &letter) {
        Some(reason) => Some(reason),
        None => unlike_its_original(js, config, &letter, &raw.payload).await,
    };
    if let Some(reason) = refusal {
        warn!(sequence, function = %letter.function, subject = %letter.subject, %reason, "redrive refused");
        return Err(OpsError::Refused { sequence, reason });
    }
    let mut headers = async_nats::HeaderMap::new();
    dlq::keep_allowed(&raw.headers, &mut headers);
    let kept = |message: String| OpsError::Kept { sequence, message };
    if letter.subject.is_empty() {
        return Err(kept("it names no subject to send it to".into()));
    }
    let (subject, payload) = (letter.subject.clone(), raw.payload.clone());
    let service_error =
        |reply: &async_nats::Message| reply.headers.as_ref()?.get("Nats-Service-Error").map(|e| e.as_str().to_string());
    let answer = if letter.origin.starts_with("request/") {
        let reply = nats.request_with_headers(subject, headers, payload).await.map_err(|e| kept(e.to_string()))?;
        if let Some(error) = service_error(&reply) {
            return Err(kept(error));
        }
        String::from_utf8_lossy(&reply.payload).into_owned()
    } else if letter.origin.starts_with(&format!("{}/", config.command_stream)) {
        use async_nats::RequestErrorKind;
        let asked = tokio::time::timeout(config.answer_timeout, nats.request_with_headers(subject, headers, payload));
        match asked.await {
            Ok(Ok(reply)) => match service_error(&reply) {
                Some(error) => format!("refused: {error}"),
                None => String::from_utf8_lossy(&reply.payload).into_owned(),
            },
            Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => {
                format!("kept in {}: no copy of {} runs now", config.command_stream, letter.function)
            }
            Ok(Err(e)) if e.kind() == RequestErrorKind::TimedOut => {
                format!("kept in {}: no answer yet", config.command_stream)
            }
            Err(_) => format!("kept in {}: no answer yet", config.command_stream),
            Ok(Err(e)) => return Err(kept(e.to_string())),
        }
    } else {
        // An event: handed to its function, which processes it as itself.
        // Nobody publishes it again, so no identity here may write events.
        use async_nats::RequestErrorKind;
        headers.insert(crate::service::REDRIVE_SUBJECT_HEADER, subject.as_str());
        let asked = nats.request_with_headers(crate::service::redrive_subject(&letter.function), headers, payload);
        match asked.await {
            Ok(reply) => match service_error(&reply) {
                Some(error) => return Err(kept(format!("{} did not take it: {error}", letter.function))),
                None => format!("processed by {}: {}", letter.function, String::from_utf8_lossy(&reply.payload)),
            },
            Err(e) if e.kind() == RequestErrorKind::NoResponders => {
                return Err(kept(format!("no copy of {} runs now", letter.function)));
            }
            Err(e) => return Err(kept(e.to_string())),
        }
    };
    stream.delete_message(sequence).await.map_err(nats_error)?;
    info!(sequence, function = %letter.function, subject = %letter.subject, %answer, "dead letter redriven");
    Ok(Redriven { sequence, function: letter.function, subject: letter.subject, answer })
}

/// Removes a dead letter for good (an operator decided it must never run).
pub async fn delete(js: &jetstream::Context, config: &Config, sequence: u64) -> Result<Deleted, OpsError> {
    let (stream, raw) = stored_letter(js, &config.dlq_stream, sequence).await?;
    let letter = dlq::read(sequence, &raw.headers, &raw.payload);
    stream.delete_message(sequence).await.map_err(nats_error)?;
    info!(sequence, function = %letter.function, subject = %letter.subject, "dead letter deleted");
    Ok(Deleted { sequence, function: letter.function, subject: letter.subject })
}

/// The saga's streams, consumers and outboxes at a glance.
pub async fn status(nats: &async_nats::Client, config: &Config) -> Result<StatusReport, OpsError> {
    let js = jetstream::new(nats.clone());
    let mut stream = js.get_stream(&config.stream).await.map_err(|_| OpsError::NoStream(config.stream.clone()))?;
    let info = stream.info().await.map_err(nats_error)?.clone();
    let commands = js.get_stream(&config.command_stream).await.ok();
    // Every function with a durable consumer on the saga stream, or on the
    // command stream (a function that only takes commands has no other).
    // Readers' ephemeral consumers (a live view, a trace) come and go while
    // this runs: one that is gone by the time it is asked about is skipped.
    let mut functions = BTreeSet::new();
    let mut names = stream.consumer_names();
    while let Some(Ok(name)) = names.next().await {
        functions.insert(name);
    }
    let mut command_consumers = BTreeSet::new();
    if let Some(commands) = &commands {
        let mut names = commands.consumer_names();
        while let Some(Ok(name)) = names.next().await {
            command_consumers.insert(name.clone());
            functions.insert(name);
        }
    }
    let mut consumers = Vec::new();
    for name in functions {
        let saga_consumer = match stream.get_consumer::<consumer::pull::Config>(&name).await {
            Ok(mut consumer) => match consumer.info().await {
                Ok(info) => Some(info.clone()),
                Err(_) => continue,
            },
            Err(_) if !command_consumers.contains(&name) => continue,
            Err(_) => None,
        };
        if saga_consumer.as_ref().is_some_and(|ci| ci.config.durable_name.is_none()) {
            continue; // someone's `trace` or live view, not a function
        }
        // Committed events not yet published, as the function's own outbox relay sees them.
        let outbox = tokio::time::timeout(
            Duration::from_secs(2),
            nats.request(crate::service::outbox_subject(&name), "".into()),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(|reply| serde_json::from_slice::<serde_json::Value>(&reply.payload).ok())
        .filter(|v| v.get("unpublished").is_some());
        // Commands kept for it and not processed yet (sent while it was down, or a backlog).
        let mut commands_pending = None;
        if let Some(commands) = &commands
            && let Ok(mut consumer) = commands.get_consumer::<consumer::pull::Config>(&name).await
            && let Ok(info) = consumer.info().await
        {
            commands_pending = Some(info.num_pending + info.num_ack_pending as u64);
        }
        let field = |f: fn(&consumer::Info) -> u64| saga_consumer.as_ref().map(f);
        consumers.push(FunctionStatus {
            function: name,
            pending: field(|ci| ci.num_pending),
            ack_pending: field(|ci| ci.num_ack_pending as u64),
            redelivered: field(|ci| ci.num_redelivered as u64),
            waiting: field(|ci| ci.num_waiting as u64),
            commands_pending,
            unpublished: outbox.as_ref().and_then(|o| o["unpublished"].as_u64()),
            oldest_unpublished_age_ms: outbox.as_ref().and_then(|o| o["oldest_age_ms"].as_i64()),
            dead_letters_unstored: outbox.as_ref().and_then(|o| o["dead_letters_unstored"].as_u64()),
        });
    }
    let (dead_letters, dead_letter_bytes, dead_letter_max_bytes) = match js.get_stream(&config.dlq_stream).await {
        Ok(mut dlq) => match dlq.info().await {
            Ok(i) => (i.state.messages, i.state.bytes, u64::try_from(i.config.max_bytes).ok()),
            Err(_) => (0, 0, None),
        },
        Err(_) => (0, 0, None),
    };
    let mut warnings = Vec::new();
    if let Some(max) = dead_letter_max_bytes.filter(|max| *max > 0) {
        let percent = dead_letter_bytes * 100 / max;
        if percent >= crate::DLQ_WARN_PERCENT {
            warnings.push(format!(
                "the dead-letter stream {} is {percent}% full ({dead_letter_bytes} of {max} bytes): when full, new \
                 dead letters are refused and their messages retried; redrive or delete letters (jetsaga dlq)",
                config.dlq_stream
            ));
        }
    }
    for c in consumers.iter().filter(|c| c.dead_letters_unstored.unwrap_or(0) > 0) {
        warnings.push(format!(
            "{} could not store {} dead letter(s) since it started (the dead-letter stream full or away): their \
             messages are kept and retried",
            c.function,
            c.dead_letters_unstored.unwrap_or(0)
        ));
    }
    // Pending deadlines: the schedules the stream holds (one per waiting order).
    let mut pending_deadlines = 0;
    if info.config.allow_message_schedules {
        use futures::TryStreamExt;
        if let Ok(mut subjects) = stream.info_with_subjects(jetsaga_core::schedule::SCHEDULE_SUBJECTS).await {
            while let Ok(Some((_, count))) = subjects.try_next().await {
                pending_deadlines += u64::try_from(count).unwrap_or(0);
            }
        }
    }
    Ok(StatusReport {
        stream: config.stream.clone(),
        messages: info.state.messages,
        bytes: info.state.bytes,
        subjects: info.config.subjects,
        consumers,
        dead_letters,
        pending_deadlines,
        dead_letter_bytes,
        dead_letter_max_bytes,
        warnings,
    })
}

fn nats_error(e: impl std::fmt::Display) -> OpsError {
    OpsError::Nats(e.to_string())
}

/// Starts the `jetsaga-ops` micro service (queue group: any number of
/// copies may run); the returned task ends when `cancel` fires.
pub async fn serve(
    client: &async_nats::Client,
    config: Config,
    cancel: CancellationToken,
) -> Result<JoinHandle<()>, RuntimeError> {
    let err = |e: async_nats::Error| RuntimeError::Service { function: SERVICE_NAME.into(), message: e.to_string() };
    let service = client
        .service_builder()
        .description("jetsaga operations: status, dead letters, redrive, delete")
        .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(err)?;
    let mut endpoints = Vec::new();
    for subject in OPS_SUBJECTS {
        let name = subject.trim_start_matches("$JETSAGA.OPS.").replace('.', "_").to_lowercase();
        endpoints.push((subject, service.endpoint_builder().name(name).add(subject).await.map_err(err)?));
    }
    let client = client.clone();
    Ok(tokio::spawn(async move {
        let js = jetstream::new(client.clone());
        let mut handlers = tokio::task::JoinSet::new();
        for (subject, mut endpoint) in endpoints {
            let (client, js, config, cancel) = (client.clone(), js.clone(), config.clone(), cancel.clone());
            handlers.spawn(async move {
                loop {
                    let request = tokio::select! {
                        () = cancel.cancelled() => break,
                        request = endpoint.next() => match request { Some(r) => r, None => break },
                    };
                    let (client, js, config) = (client.clone(), js.clone(), config.clone());
                    tokio::spawn(async move {
                        let reply = answer(&client, &js, &config, subject, &request.message.payload)
                            .await
                            .map_err(|e| (e.code(), e.to_string()));
                        crate::service::respond(&request, subject, reply).await;
                    });
                }
            });
        }
        cancel.cancelled().await;
        while handlers.join_next().await.is_some() {}
        let _ = service.stop().await;
    }))
}

async fn answer(
    client: &async_nats::Client,
    js: &jetstream::Context,
    config: &Config,
    subject: &str,
    payload: &[u8],
) -> Result<serde_json::Value, OpsError> {
    fn json(value: &impl Serialize) -> serde_json::Value {
        serde_json::to_value(value).expect("reports serialize")
    }
    match subject {
        STATUS_SUBJECT => Ok(json(&status(client, config).await?)),
        DLQ_LIST_SUBJECT => {
            let dead_letters = dead_letters(js, &config.dlq_stream, MAX_LISTED_DEAD_LETTERS).await?;
            Ok(json(&DeadLetterList { dead_letters }))
        }
        DLQ_DELETE_SUBJECT => {
            let request: DeleteRequest = serde_json::from_slice(payload).map_err(|e| {
                OpsError::BadRequest(format!("a delete request is {{\"sequence\": <DLQ sequence>}}: {e}"))
            })?;
            Ok(json(&delete(js, config, request.sequence).await?))
        }
        _ => {
            let request: RedriveRequest = serde_json::from_slice(payload).map_err(|e| {
                OpsError::BadRequest(format!("a redrive request is {{\"sequence\": <DLQ sequence>}}: {e}"))
            })?;
            Ok(json(&redrive(client, js, config, request.sequence).await?))
        }
    }
}
