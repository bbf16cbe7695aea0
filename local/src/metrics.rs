//! `--metrics-addr`: Prometheus metrics over HTTP, from what the runtime
//! records through the `metrics` facade (`jetsaga_messages_total`,
//! `jetsaga_batch_handling_seconds`, `jetsaga_batch_size`).

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Latency buckets in seconds: a millisecond to ten seconds.
const SECONDS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// Batch sizes: one message to a full pull of 500.
const BATCH: [f64; 9] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0];

/// Installs the process's recorder and serves `GET /metrics` on `addr`
/// (on the current Tokio runtime).
pub fn serve(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)?
        .set_buckets_for_metric(Matcher::Full("jetsaga_batch_size".into()), &BATCH)?
        .install()
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
    tracing::info!(%addr, "Prometheus metrics at http://{addr}/metrics");
    Ok(())
}
