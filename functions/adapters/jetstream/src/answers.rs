//! Answers for requests whose command is processed from the command stream.
//!
//! A command sent without `Nats-Msg-Id` has no identity both paths could
//! agree on: the stream gives its copy a sequence the request never sees.
//! So only the stream copy is processed (each message one command, even two
//! with the same body), and the copy of the function that consumed it
//! broadcasts the answer, with the command's stream sequence, on
//! `$JETSAGA.ANSWER.<function>.<key>`, the key being a digest of the
//! command's subject and body. Every running copy listens; one holding a
//! request with that key claims the answer (a create-only write of
//! `$JETSAGA.CLAIM.<function>.<sequence>` to the `CLAIMS` stream, which
//! exactly one copy wins) and answers its request. Two requests with the
//! same body, held by two copies, so get one answer each, never the same.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::RuntimeError;

/// What a command's requester is told: the reply, or `(code, error)`.
pub type Answer = Result<Value, (u16, String)>;

/// How long an answer nobody was waiting for is kept, for a request whose
/// stream copy was processed before the request itself reached us.
const KEEP_UNCLAIMED: Duration = Duration::from_secs(2);
/// Unclaimed answers kept at most.
const UNCLAIMED_LIMIT: usize = 4096;

/// The key a command's answer is sent under: its subject and body.
pub fn command_key(subject: &str, body: &[u8]) -> String {
    let mut text = Vec::with_capacity(subject.len() + 1 + body.len());
    text.extend_from_slice(subject.as_bytes());
    text.push(0);
    text.extend_from_slice(body);
    jetsaga_core::ids::digest_bytes(&text)
}

/// `$JETSAGA.ANSWER.<function>.<key>`.
pub fn answer_subject(function: &str, key: &str) -> String {
    format!("$JETSAGA.ANSWER.{function}.{key}")
}

/// `$JETSAGA.CLAIM.<function>.<sequence>`: claimed by the copy answering it.
pub fn claim_subject(function: &str, sequence: &str) -> String {
    format!("$JETSAGA.CLAIM.{function}.{sequence}")
}

/// An answer heard, not yet given to a request.
struct Heard {
    at: Instant,
    key: String,
    sequence: u64,
    answer: Answer,
}

#[derive(Default)]
struct Pending {
    waiting: HashMap<String, VecDeque<oneshot::Sender<Answer>>>,
    /// Claims under way per key.
    claiming: HashMap<String, usize>,
    heard: VecDeque<Heard>,
}

/// One function's answers, shared by its service and its command workers.
#[derive(Clone)]
pub(crate) struct Answers {
    client: async_nats::Client,
    js: jetstream::Context,
    function: &'static str,
    pending: Arc<Mutex<Pending>>,
    /// The command stream, and whether it is known to exist.
    command_stream: Arc<str>,
    captured: Arc<AtomicBool>,
    /// `$JETSAGA.CLAIM.<function>.` (or the saga's own, [`crate::Config::claim_subject`]).
    claims: Arc<str>,
}

impl std::fmt::Debug for Answers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answers").field("function", &self.function).finish_non_exhaustive()
    }
}

impl Answers {
    /// Subscribes to the function's answers (before any request is taken,
    /// so none is missed) until `cancel` fires.
    pub(crate) async fn start(
        client: &async_nats::Client,
        function: &'static str,
        config: &crate::Config,
        cancel: CancellationToken,
    ) -> Result<Self, RuntimeError> {
        let mut answers = client.subscribe(answer_subject(function, "*")).await.map_err(|e| RuntimeError::Service {
            function: function.into(),
            message: format!("cannot subscribe to its answers: {e}"),
        })?;
        let this = Self {
            client: client.clone(),
            js: jetstream::new(client.clone()),
            function,
            pending: Arc::default(),
            command_stream: config.command_stream.as_str().into(),
            captured: Arc::default(),
            claims: config.claim_subject(function, "").into(),
        };
        let dispatcher = this.clone();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    () = cancel.cancelled() => break,
                    message = answers.next() => match message { Some(m) => m, None => break },
                };
                let Some(key) = message.subject.rsplit('.').next() else { continue };
                match decode(&message.payload) {
                    Some((sequence, answer)) => dispatcher.heard(key, sequence, answer),
                    None => debug!(subject = %message.subject, "an answer that is not one of ours; ignored"),
                }
            }
        });
        Ok(this)
    }

    /// Whether commands sent so far were captured: the command stream
    /// exists. A stream is never created behind a message, so if it does
    /// not exist now, it did not when the command was sent, and nothing
    /// kept it. Once seen, it is not asked again.
    pub(crate) async fn captured(&self) -> Result<bool, String> {
        if self.captured.load(Ordering::Relaxed) {
            return Ok(true);
        }
        match self.js.get_stream(&*self.command_stream).await {
            Ok(_) => {
                self.captured.store(true, Ordering::Relaxed);
                Ok(true)
            }
            Err(e) if crate::provision::is_stream_not_found(&e) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Broadcasts the answer to the command at `sequence` of the command
    /// stream, for the request waiting for `key`, wherever it is.
    pub(crate) async fn send(&self, key: &str, sequence: u64, answer: &Answer) {
        let body = encode(sequence, answer);
        if let Err(e) = self.client.publish(answer_subject(self.function, key), body.into()).await {
            warn!(error = %e, "cannot send a command's answer; its requester will time out");
        }
    }

    /// Waits for an answer under `key`, at most `timeout`.
    pub(crate) async fn wait(&self, key: &str, timeout: Duration) -> Option<Answer> {
        let (sender, receiver) = oneshot::channel();
        self.lock().waiting.entry(key.to_string()).or_default().push_back(sender);
        self.settle(key);
        let answer = tokio::time::timeout(timeout, receiver).await.ok().and_then(Result::ok);
        if answer.is_none() {
            let mut pending = self.lock();
            if let Some(queue) = pending.waiting.get_mut(key) {
                queue.retain(|sender| !sender.is_closed());
                if queue.is_empty() {
                    pending.waiting.remove(key);
                }
            }
        }
        answer
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().expect("answers lock")
    }

    fn heard(&self, key: &str, sequence: u64, answer: Answer) {
        {
            let mut pending = self.lock();
            let now = Instant::now();
            // Most are for requests another copy holds; kept briefly in case
            // ours simply has not arrived yet.
            while pending.heard.front().is_some_and(|h| now.duration_since(h.at) >= KEEP_UNCLAIMED)
                || pending.heard.len() >= UNCLAIMED_LIMIT
            {
                pending.heard.pop_front();
            }
            pending.heard.push_back(Heard { at: now, key: key.to_string(), sequence, answer });
        }
        self.settle(key);
    }

    /// Claims one heard answer per request waiting under `key` (beyond the
    /// claims already under way); a claim lost to another copy tries the next.
    fn settle(&self, key: &str) {
        let mut pending = self.lock();
        loop {
            let waiting = pending.waiting.get(key).map_or(0, |q| q.iter().filter(|s| !s.is_closed()).count());
            let claiming = pending.claiming.get(key).copied().unwrap_or(0);
            if waiting <= claiming {
                return;
            }
            let Some(position) = pending.heard.iter().position(|h| h.key == key) else { return };
            let heard = pending.heard.remove(position).expect("a position found just now");
            *pending.claiming.entry(key.to_string()).or_default() += 1;
            let this = self.clone();
            tokio::spawn(async move {
                let won = this.claim(heard.sequence).await;
                let mut pending = this.lock();
                if let Some(count) = pending.claiming.get_mut(&heard.key) {
                    *count -= 1;
                    if *count == 0 {
                        pending.claiming.remove(&heard.key);
                    }
                }
                if won {
                    give(&mut pending, &heard.key, heard.answer);
                }
                drop(pending);
                this.settle(&heard.key);
            });
        }
    }

    /// Whether this copy answers the command at `sequence`: exactly one
    /// copy's create-only write of its claim succeeds.
    async fn claim(&self, sequence: u64) -> bool {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
        let subject = format!("{}{sequence}", self.claims);
        let acked = match self.js.publish_with_headers(subject, headers, bytes::Bytes::new()).await {
            Ok(ack) => ack.await.map(|_| ()),
            Err(e) => Err(e),
        };
        match acked {
            Ok(()) => true,
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => false,
            Err(e) => {
                // Without a claim, answering is better than leaving the request unanswered.
                warn!(error = %e, "cannot claim a command's answer; answering anyway");
                true
            }
        }
    }
}

/// Gives an answer to the oldest request still waiting under `key`.
fn give(pending: &mut Pending, key: &str, mut answer: Answer) {
    let Some(queue) = pending.waiting.get_mut(key) else { return };
    while let Some(sender) = queue.pop_front() {
        match sender.send(answer) {
            Ok(()) => break,
            // That request gave up waiting: the next one gets it.
            Err(unsent) => answer = unsent,
        }
    }
    if queue.is_empty() {
        pending.waiting.remove(key);
    }
}

fn encode(sequence: u64, answer: &Answer) -> Vec<u8> {
    let value = match answer {
        Ok(reply) => json!({"sequence": sequence, "ok": reply}),
        Err((code, error)) => json!({"sequence": sequence, "code": code, "error": error}),
    };
    value.to_string().into_bytes()
}

fn decode(body: &[u8]) -> Option<(u64, Answer)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let sequence = value.get("sequence")?.as_u64()?;
    if let Some(reply) = value.get("ok") {
        return Some((sequence, Ok(reply.clone())));
    }
    let code = u16::try_from(value.get("code")?.as_u64()?).ok()?;
    Some((sequence, Err((code, value.get("error")?.as_str()?.to_string()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_survive_the_wire() {
        let ok: Answer = Ok(json!({"order_id": "o-1", "events": ["orders.evt.created"]}));
        assert_eq!(decode(&encode(7, &ok)), Some((7, ok)));
        let refused: Answer = Err((422, "items: at least one item is needed".into()));
        assert_eq!(decode(&encode(8, &refused)), Some((8, refused)));
        assert_eq!(decode(b"{\"something\": 1}"), None);
    }

    #[test]
    fn the_key_is_the_subject_and_the_body() {
        let key = command_key("orders.cmd.create", b"{}");
        assert_eq!(key, command_key("orders.cmd.create", b"{}"));
        assert_ne!(key, command_key("orders.cmd.cancel", b"{}"));
        assert_ne!(key, command_key("orders.cmd.create", b"{ }"));
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit()), "a subject token: {key}");
    }
}
