//! Reading a stream whole: what chaos checks and replay reads.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use jetsaga_envelope::Envelope;

/// Every message of a stream, in order, up to its last sequence when
/// asked; an error if the read stalls before (never a silent partial read,
/// which would let the checker miss what it did not see).
pub async fn read_all(js: &jetstream::Context, name: &str) -> anyhow::Result<Vec<jetstream::Message>> {
    let mut stream = js.get_stream(name).await?;
    let last = stream.info().await?.state.last_sequence;
    let mut read = Vec::new();
    if last == 0 {
        return Ok(read);
    }
    let reader = stream.create_consumer(consumer::pull::OrderedConfig::default()).await?;
    let mut messages = reader.messages().await?;
    loop {
        let message = match tokio::time::timeout(Duration::from_secs(10), messages.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => anyhow::bail!("reading {name} stalled: {e}"),
            Ok(None) | Err(_) => anyhow::bail!("reading {name} stalled after {} of {last} messages", read.len()),
        };
        let sequence = message.info().map_err(|e| anyhow::anyhow!("{e}"))?.stream_sequence;
        read.push(message);
        if sequence >= last {
            return Ok(read);
        }
    }
}

/// Every event in the saga stream `name`, in order (schedules still
/// waiting for their time are not events yet, and are left out).
pub async fn read_events(js: &jetstream::Context, name: &str) -> anyhow::Result<Vec<Envelope>> {
    let messages = read_all(js, name).await?;
    Ok(messages
        .iter()
        .filter(|message| !jetsaga_core::schedule::is_pending_schedule(&message.subject))
        .filter_map(|message| Envelope::decode(&message.payload).ok())
        .collect())
}
