//! Reading streams back and waiting for conditions in tests.

use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use jetsaga_events::Envelope;

/// A message as stored in a stream.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Stream sequence.
    pub sequence: u64,
    /// Subject.
    pub subject: String,
    /// Headers.
    pub headers: async_nats::HeaderMap,
    /// Payload.
    pub payload: bytes::Bytes,
}

impl Stored {
    /// Decodes the payload as an envelope.
    pub fn envelope(&self) -> Envelope {
        Envelope::decode(&self.payload).unwrap_or_else(|e| panic!("seq {}: {e}", self.sequence))
    }

    /// A header value.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.as_str().to_string())
    }
}

/// Every message in `stream` whose subject matches `filter` exactly, or every message when `filter` is `None`.
pub async fn messages(js: &jetstream::Context, stream: &str, filter: Option<&str>) -> Vec<Stored> {
    let mut stream = match js.get_stream(stream).await {
        Ok(s) => s,
        Err(_) => return Vec::new(),
    };
    let state = stream.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    for sequence in state.first_sequence..=state.last_sequence {
        if sequence == 0 {
            continue;
        }
        if let Ok(message) = stream.get_raw_message(sequence).await
            && filter.is_none_or(|f| message.subject.as_str() == f)
        {
            out.push(Stored {
                sequence,
                subject: message.subject.to_string(),
                headers: message.headers.clone(),
                payload: message.payload.clone(),
            });
        }
    }
    out
}

/// Polls `condition` every 50 ms until it holds, panicking with `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a durable consumer has nothing pending and nothing unacknowledged.
pub async fn wait_drained(js: &jetstream::Context, stream: &str, consumer: &str, timeout: Duration) {
    wait_until(timeout, &format!("consumer {consumer} to drain"), || async {
        let Ok(stream) = js.get_stream(stream).await else {
            return false;
        };
        let Ok(mut consumer) = stream.get_consumer::<jetstream::consumer::pull::Config>(consumer).await else {
            return false;
        };
        match consumer.info().await {
            Ok(info) => info.num_pending == 0 && info.num_ack_pending == 0 && info.delivered.stream_sequence > 0,
            Err(_) => false,
        }
    })
    .await;
}
