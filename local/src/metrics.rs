//! `--metrics-addr`: Prometheus metrics over HTTP, from what the runtime
//! records through the `metrics` facade (messages, batches, commits,
//! outboxes, inboxes, dead letters, sagas; see the README's "Metrics").

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Latency buckets in seconds: a millisecond to ten seconds.
const SECONDS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// A saga from end to end: ten milliseconds to past the default saga
/// deadline of five minutes (the alert on sagas ending past it reads these).
const SAGA_SECONDS: [f64; 15] =
    [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];
/// Batch sizes: one message to a full pull of 500.
const BATCH: [f64; 9] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0];

/// Installs the process's recorder and serves `GET /metrics` on `addr`
/// (on the current Tokio runtime).
pub fn serve(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        // Full names match before suffixes.
        .set_buckets_for_metric(Matcher::Full("jetsaga_saga_duration_seconds".into()), &SAGA_SECONDS)?
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)?
        .set_buckets_for_metric(Matcher::Full("jetsaga_batch_size".into()), &BATCH)?
        .install()
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
    tracing::info!(%addr, "Prometheus metrics at http://{addr}/metrics");
    Ok(())
}

/// Serves `page` (a recorder's handle, not the process's global one) at
/// `GET /metrics` on `addr`.
pub async fn serve_page(
    addr: std::net::SocketAddr,
    page: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let page = page.clone();
            async move { ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], page.render()) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    tracing::info!(%addr, "Prometheus metrics at http://{addr}/metrics");
    Ok(())
}

/// How often the consumers' and stores' state is read for the gauges.
pub const STATE_POLL: std::time::Duration = std::time::Duration::from_secs(10);

/// Keeps `jetsaga_consumer_pending`, `jetsaga_consumer_ack_pending` and
/// `jetsaga_consumer_redelivered` (labels `function`, `stream`) current
/// for each function of `consumers` (its name and the streams it consumes),
/// reading each durable consumer's state every 10 s: what KEDA scales on,
/// as the runner sees it. A function's own NATS user may read its own
/// consumer's state, nothing else is asked.
pub fn watch_consumers(
    nats: async_nats::Client,
    consumers: Vec<(String, Vec<String>)>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let js = async_nats::jetstream::new(nats);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(STATE_POLL);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = every.tick() => {}
            }
            for (function, streams) in &consumers {
                for stream in streams {
                    let consumer = js
                        .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                            function.as_str(),
                            stream.as_str(),
                        )
                        .await;
                    let info = match consumer {
                        Ok(mut consumer) => consumer.info().await.cloned(),
                        Err(e) => {
                            tracing::debug!(%function, %stream, error = %e, "consumer state not read");
                            continue;
                        }
                    };
                    let Ok(info) = info else { continue };
                    let labels = [("function", function.clone()), ("stream", stream.clone())];
                    metrics::gauge!("jetsaga_consumer_pending", &labels).set(info.num_pending as f64);
                    metrics::gauge!("jetsaga_consumer_ack_pending", &labels).set(info.num_ack_pending as f64);
                    metrics::gauge!("jetsaga_consumer_redelivered", &labels).set(info.num_redelivered as f64);
                }
            }
        }
    });
}
