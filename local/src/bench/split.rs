//! Where the time goes inside the runner: each function's latency split
//! (queue wait, handling, publish, ack per consumed message), read from
//! every copy's `$JETSAGA.TIMINGS.<function>` and summed.

use std::time::Duration;

use futures::StreamExt;
use jetsaga_jetstream::timings::{Histogram, Timings, timings_subject};
use serde::Serialize;

/// One phase of a consumed message's time, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Phase {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Phase {
    fn of(histogram: &Histogram) -> Self {
        let summary = histogram.summary();
        let ms = |name: &str| summary[name].as_f64().unwrap_or(0.0);
        Self { p50_ms: ms("p50_ms"), p99_ms: ms("p99_ms"), mean_ms: ms("mean_ms") }
    }
}

/// One function's split (or `all` of them together).
#[derive(Clone, Debug, Serialize)]
pub struct FunctionSplit {
    /// The function, or `all`.
    pub function: String,
    /// Messages consumed, and the batches they came in.
    pub messages: u64,
    /// Batches.
    pub batches: u64,
    /// Stored by the server → taken by a worker.
    pub queue_wait: Phase,
    /// Taken → committed.
    pub handling: Phase,
    /// Committed → the batch's events acked by JetStream.
    pub publish: Phase,
    /// → the input's ack sent.
    pub ack: Phase,
}

impl FunctionSplit {
    fn of(function: &str, timings: &Timings) -> Self {
        let summary = timings.summary(function);
        Self {
            function: function.to_string(),
            messages: summary["messages"].as_u64().unwrap_or(0),
            batches: summary["batches"].as_u64().unwrap_or(0),
            queue_wait: Phase::of(&timings.queue),
            handling: Phase::of(&timings.handling),
            publish: Phase::of(&timings.publish),
            ack: Phase::of(&timings.ack),
        }
    }
}

/// Asks every copy of every function for its timings (`copies` answers
/// each, waited for 3 s at most: a busy copy answers late) and sums them,
/// per function and for all.
pub(crate) async fn gather(
    nats: &async_nats::Client,
    names: &[String],
    copies: usize,
) -> anyhow::Result<Vec<FunctionSplit>> {
    let all = Timings::default();
    let mut splits = Vec::new();
    for name in names {
        let inbox = nats.new_inbox();
        let mut replies = nats.subscribe(inbox.clone()).await?;
        nats.publish_with_reply(timings_subject(name), inbox, "".into()).await?;
        nats.flush().await?;
        let timings = Timings::default();
        let until = tokio::time::Instant::now() + Duration::from_secs(3);
        for _ in 0..copies {
            let Ok(Some(reply)) = tokio::time::timeout_at(until, replies.next()).await else { break };
            let summary: serde_json::Value = serde_json::from_slice(&reply.payload)?;
            timings.add(&summary);
            all.add(&summary);
        }
        splits.push(FunctionSplit::of(name, &timings));
    }
    splits.push(FunctionSplit::of("all", &all));
    Ok(splits)
}
