//! The raw JetStream baseline a saga run is compared with, on the same
//! server in the same run.

use std::time::Instant;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

/// Publishes `count` messages of `size` bytes with async acks (window 1024)
/// while a durable pull consumer with explicit acks consumes them; returns
/// messages per second from the first publish to the last ack.
pub(crate) async fn raw_baseline(js: &jetstream::Context, count: usize, size: usize) -> anyhow::Result<f64> {
    let stream = js
        .create_stream(stream::Config {
            name: "BENCH_RAW".into(),
            subjects: vec!["bench.raw".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await?;
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let start = Instant::now();
    let consume = tokio::spawn(async move {
        let mut messages = consumer.messages().await?;
        let mut seen = 0;
        while seen < count {
            match messages.next().await {
                Some(Ok(message)) => {
                    message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                    seen += 1;
                }
                Some(Err(e)) => anyhow::bail!("raw consumer: {e}"),
                None => break,
            }
        }
        anyhow::Ok(())
    });
    let mut acks = FuturesUnordered::new();
    for _ in 0..count {
        while acks.len() >= 1024 {
            if let Some(result) = acks.next().await {
                result?;
            }
        }
        let ack = js.publish("bench.raw", payload.clone()).await?;
        acks.push(ack.into_future());
    }
    while let Some(result) = acks.next().await {
        result?;
    }
    consume.await??;
    let elapsed = start.elapsed().as_secs_f64();
    js.delete_stream("BENCH_RAW").await?;
    Ok(count as f64 / elapsed)
}
