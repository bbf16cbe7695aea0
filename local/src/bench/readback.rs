//! The run read back from the stream: what was stored per order, the
//! record the correctness checks and per-step latencies are taken from.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use jetsaga_events::Envelope;

/// The benchmark's orders as the `SAGA` stream holds them.
#[derive(Debug, Default)]
pub(crate) struct Record {
    /// Messages stored during the run, and their bytes.
    pub(crate) stored: u64,
    pub(crate) bytes: usize,
    /// Every event of a benchmark order, in stream order.
    pub(crate) history: Vec<Envelope>,
    /// The same, by order.
    pub(crate) per_order: HashMap<String, Vec<Envelope>>,
    /// Terminal events per order.
    pub(crate) terminal_count: HashMap<String, usize>,
}

/// Reads the stream after `first_seq`. Plain subscribers can see an event
/// before the stream has stored it (with `sync_interval: always` storing
/// waits for the disk): it reads until the stream stops growing.
pub(crate) async fn read(js: &jetstream::Context, first_seq: u64) -> anyhow::Result<Record> {
    let mut saga_stream = js.get_stream(jetsaga_jetstream::streams::SAGA).await?;
    let mut last_seq = saga_stream.info().await?.state.last_sequence;
    let (mut stored, mut bytes) = (0u64, 0usize);
    let mut per_order: HashMap<String, Vec<Envelope>> = HashMap::new();
    let mut history: Vec<Envelope> = Vec::new();
    let mut terminal_count: HashMap<String, usize> = HashMap::new();
    let ordered = saga_stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: first_seq + 1 },
            ..Default::default()
        })
        .await?;
    let mut messages = ordered.messages().await?;
    loop {
        if stored >= last_seq - first_seq {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = saga_stream.info().await?.state.last_sequence;
            if now == last_seq {
                break;
            }
            last_seq = now;
            continue;
        }
        let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(5), messages.next()).await else { break };
        stored += 1;
        bytes += message.payload.len();
        if let Ok(envelope) = Envelope::decode(&message.payload)
            // Every order on the benchmark's own server is the benchmark's
            // (`b-…` over NATS, the gateway's `o-…` with --http).
            && let Some(order_id) = envelope.saga_key.clone()
        {
            if matches!(
                envelope.event_type.as_str(),
                "orders.evt.completed" | "orders.evt.failed" | "orders.evt.canceled"
            ) {
                *terminal_count.entry(order_id.clone()).or_default() += 1;
            }
            history.push(envelope.clone());
            per_order.entry(order_id).or_default().push(envelope);
        }
    }
    Ok(Record { stored, bytes, history, per_order, terminal_count })
}

/// Mean time from one event of an order to the next, by the later event's type, fastest first.
pub(crate) fn step_ms(per_order: &mut HashMap<String, Vec<Envelope>>) -> Vec<(String, f64)> {
    let mut steps: HashMap<String, (f64, usize)> = HashMap::new();
    for events in per_order.values_mut() {
        events.sort_by_key(|e| e.occurred_at);
        for pair in events.windows(2) {
            let ms = (pair[1].occurred_at - pair[0].occurred_at).num_microseconds().unwrap_or(0) as f64 / 1000.0;
            let entry = steps.entry(pair[1].event_type.clone()).or_default();
            entry.0 += ms;
            entry.1 += 1;
        }
    }
    let mut step_ms: Vec<(String, f64)> = steps.into_iter().map(|(k, (sum, n))| (k, sum / n as f64)).collect();
    step_ms.sort_by(|a, b| a.1.total_cmp(&b.1));
    step_ms
}
