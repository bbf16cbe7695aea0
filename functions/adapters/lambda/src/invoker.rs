//! The bridge side: a [`Processor`] that runs a function by invoking its
//! Lambda through the Invoke API (AWS, or `cargo lambda watch` locally).
//! The JetStream runtime drives it exactly like a local engine: it pulls,
//! hands over batches, publishes what comes back and acks.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_lambda::Client;
use aws_sdk_lambda::primitives::Blob;
use jetsaga_core::{FunctionSpec, Incoming, OutboxRecord, Outcome, Processor, QueryError, StoreError};
use tokio::sync::Semaphore;
use tracing::warn;

use crate::wire::{Record, Request, Response};

/// A function that runs on Lambda.
#[derive(Clone, Debug)]
pub struct LambdaProcessor {
    spec: &'static FunctionSpec,
    client: Client,
    function_name: String,
    timeout: std::time::Duration,
    /// Invocations of this function in flight from this process; the rest
    /// wait their turn here (see [`LambdaProcessor::with_max_invocations`]).
    in_flight: Arc<Semaphore>,
}

/// How long an invocation may take by default before it is given up (and
/// its batch redelivered): an invocation whose Lambda instance died may
/// otherwise never be answered, and would hold its worker forever.
pub const DEFAULT_INVOKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How many invocations of one function a bridge has in flight at most by
/// default: its batches, request/reply commands, queries and outbox reads.
pub const DEFAULT_MAX_INVOCATIONS: usize = 10;

/// The largest batch request one invocation carries: Lambda refuses a
/// synchronous request over 6 MB, so a larger batch is split, and a record
/// that alone would exceed it is dead-lettered rather than retried forever.
/// (Room is left for the request's framing.)
pub const MAX_REQUEST_BYTES: usize = 6 * 1024 * 1024 - 16 * 1024;

/// One piece of a batch on its way to Lambda.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// These records (by position) in one invocation.
    Invoke(std::ops::Range<usize>),
    /// This record alone is over the limit.
    TooLarge(usize),
}

/// Splits records of these encoded sizes into invocations of at most
/// `max` bytes each, in order.
pub fn split(sizes: &[usize], max: usize) -> Vec<Part> {
    let mut parts = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, &size) in sizes.iter().enumerate() {
        if size > max || used + size > max {
            if start < i {
                parts.push(Part::Invoke(start..i));
            }
            (start, used) = (i, 0);
        }
        if size > max {
            parts.push(Part::TooLarge(i));
            start = i + 1;
        } else {
            used += size;
        }
    }
    if start < sizes.len() {
        parts.push(Part::Invoke(start..sizes.len()));
    }
    parts
}

impl LambdaProcessor {
    /// Invokes `function_name` for the function declared by `spec`.
    pub fn new(spec: &'static FunctionSpec, client: Client, function_name: impl Into<String>) -> Self {
        Self {
            spec,
            client,
            function_name: function_name.into(),
            timeout: DEFAULT_INVOKE_TIMEOUT,
            in_flight: Arc::new(Semaphore::new(DEFAULT_MAX_INVOCATIONS)),
        }
    }

    /// Keeps at most `max` invocations of the function in flight (at least
    /// one); more wait here, in order, for one to finish. A burst of
    /// requests then queues in the bridge instead of piling up on the
    /// function: Lambda would throttle it (and cargo-lambda's emulator stops
    /// serving every function once 100 invocations of one are queued).
    pub fn with_max_invocations(mut self, max: usize) -> Self {
        self.in_flight = Arc::new(Semaphore::new(max.max(1)));
        self
    }

    /// Gives up an invocation after `timeout` (the batch is redelivered, and
    /// processing it again is a no-op if the first one did commit).
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A Lambda client with the default AWS configuration, or pointed at
    /// `endpoint` (for example `cargo lambda watch` on http://127.0.0.1:9000).
    /// A local emulator needs no real identity: without AWS credentials
    /// or region in the environment, placeholders are used.
    pub async fn client(endpoint: Option<&str>) -> Client {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(endpoint) = endpoint {
            loader = loader.endpoint_url(endpoint);
            if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
                loader = loader.region(aws_config::Region::new("us-east-1"));
            }
            if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() && std::env::var_os("AWS_PROFILE").is_none() {
                loader = loader.credentials_provider(aws_sdk_lambda::config::Credentials::new(
                    "local",
                    "local",
                    None,
                    None,
                    "jetsaga-local",
                ));
            }
        }
        Client::new(&loader.load().await)
    }

    /// Invokes the function with these records; one outcome each.
    async fn invoke_batch(&self, records: Vec<Record>) -> Vec<Outcome> {
        let count = records.len();
        match self.invoke(&Request::Batch { records }).await {
            Ok(Response::Batch { results, .. }) if results.len() == count => {
                results.into_iter().map(crate::wire::Result::into_outcome).collect()
            }
            Ok(other) => {
                let reason = format!("{} answered a batch of {count} with {other:?}", self.function_name);
                warn!(%reason);
                vec![Outcome::Unavailable(reason); count]
            }
            Err(reason) => {
                warn!(%reason, "invocation failed; the batch will be redelivered");
                vec![Outcome::Unavailable(reason); count]
            }
        }
    }

    async fn invoke(&self, request: &Request) -> Result<Response, String> {
        let payload = serde_json::to_vec(request).map_err(|e| e.to_string())?;
        // The timeout counts from the invocation, not from the wait for a turn.
        let _turn = self.in_flight.acquire().await.map_err(|e| e.to_string())?;
        let invocation = self.client.invoke().function_name(&self.function_name).payload(Blob::new(payload)).send();
        let output = tokio::time::timeout(self.timeout, invocation)
            .await
            .map_err(|_| format!("invoking {} timed out after {:?}", self.function_name, self.timeout))?
            .map_err(|e| {
                format!("invoking {} failed: {}", self.function_name, aws_sdk_lambda::error::DisplayErrorContext(&e))
            })?;
        let body = output.payload().map(|b| b.as_ref().to_vec()).unwrap_or_default();
        if let Some(error) = output.function_error() {
            return Err(format!("{} returned {error}: {}", self.function_name, String::from_utf8_lossy(&body)));
        }
        serde_json::from_slice(&body).map_err(|e| {
            format!(
                "{} answered something else than a jetsaga response ({e}): {}",
                self.function_name,
                String::from_utf8_lossy(&body)
            )
        })
    }
}

#[async_trait]
impl Processor for LambdaProcessor {
    fn spec(&self) -> &'static FunctionSpec {
        self.spec
    }

    async fn process(&self, batch: &[Incoming]) -> Vec<Outcome> {
        let records: Vec<Record> = batch.iter().map(Record::from).collect();
        // What each record weighs in a request (and a comma).
        let sizes: Vec<usize> =
            records.iter().map(|r| serde_json::to_vec(r).map_or(usize::MAX, |json| json.len() + 1)).collect();
        let mut outcomes = Vec::with_capacity(batch.len());
        for part in split(&sizes, MAX_REQUEST_BYTES) {
            match part {
                Part::Invoke(range) => outcomes.extend(self.invoke_batch(records[range].to_vec()).await),
                Part::TooLarge(i) => outcomes.push(Outcome::DeadLetter(format!(
                    "the event is {} bytes as a Lambda request, more than the {MAX_REQUEST_BYTES} one invocation may \
                     carry",
                    sizes[i]
                ))),
            }
        }
        outcomes
    }

    async fn unpublished(&self, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        match self.invoke(&Request::Outbox { limit }).await {
            Ok(Response::Outbox { events }) => Ok(events.into_iter().map(OutboxRecord::from).collect()),
            Ok(other) => Err(StoreError::new("lambda", format!("unexpected answer to an outbox read: {other:?}"))),
            Err(reason) => Err(StoreError::new("lambda", reason)),
        }
    }

    fn mark_published_every(&self) -> std::time::Duration {
        // One invocation removes a second's worth of published events.
        std::time::Duration::from_secs(1)
    }

    async fn mark_published(&self, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        match self.invoke(&Request::MarkPublished { ids: ids.to_vec() }).await {
            Ok(Response::Marked) => Ok(()),
            Ok(other) => Err(StoreError::new("lambda", format!("unexpected answer to marking published: {other:?}"))),
            Err(reason) => Err(StoreError::new("lambda", reason)),
        }
    }

    async fn query(&self, subject: &str, request: &[u8]) -> Result<serde_json::Value, QueryError> {
        let body: serde_json::Value = if request.iter().all(u8::is_ascii_whitespace) {
            serde_json::json!({})
        } else {
            jetsaga_envelope::envelope::decode_json(subject, request)?
        };
        match self.invoke(&Request::Query { subject: subject.into(), request: body }).await {
            Ok(Response::Query { reply: Some(reply), .. }) => Ok(reply),
            Ok(Response::Query { error: Some(e), .. }) => Err(match e.code {
                400 => QueryError::BadRequest(e.error),
                404 => QueryError::NotFound(e.error),
                401 => QueryError::Unauthorized(e.error),
                429 => QueryError::TooManyRequests(e.error),
                503 => QueryError::Unavailable(e.error),
                _ => QueryError::Internal(e.error),
            }),
            Ok(other) => Err(QueryError::Internal(format!("unexpected answer {other:?}"))),
            Err(reason) => Err(QueryError::Internal(reason)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_split_at_the_request_limit_and_a_record_over_it_stands_alone() {
        assert_eq!(split(&[3, 3, 3], 10), vec![Part::Invoke(0..3)]);
        assert_eq!(split(&[4, 4, 4], 10), vec![Part::Invoke(0..2), Part::Invoke(2..3)]);
        assert_eq!(
            split(&[4, 11, 4, 4, 12], 10),
            vec![Part::Invoke(0..1), Part::TooLarge(1), Part::Invoke(2..4), Part::TooLarge(4)]
        );
        assert_eq!(split(&[11], 10), vec![Part::TooLarge(0)]);
        assert_eq!(split(&[], 10), vec![]);
        // 100 commands of 64 KiB: two invocations under Lambda's 6 MB.
        let parts = split(&[64 * 1024 + 200; 100], MAX_REQUEST_BYTES);
        assert_eq!(parts, vec![Part::Invoke(0..95), Part::Invoke(95..100)]);
    }
}
