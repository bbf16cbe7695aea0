//! The services a deployment runs beside the functions: the HTTP gateway
//! and the operations service.

use std::net::SocketAddr;
use std::path::Path;

use crate::up;

/// `jetsaga gateway`: the HTTP API for a running saga, until Ctrl-C.
pub(super) async fn gateway(
    url: &str,
    http: &crate::gateway::HttpArgs,
    data_dir: &Path,
    metrics_addr: Option<SocketAddr>,
) -> anyhow::Result<()> {
    // Its NATS user (infra/nats) may read replies under its own inbox prefix only.
    let nats = crate::client::connect_options("jetsaga gateway")?
        .custom_inbox_prefix(crate::client::inbox_prefix(jetsaga_infra::nats::GATEWAY_USER))
        .retry_on_initial_connect()
        .connect(crate::client::servers(url))
        .await?;
    let keys = crate::gateway::keys(http, data_dir)?;
    let listener = crate::gateway::bind(http).await?;
    let (served, metrics) = crate::gateway::serve(listener, nats, keys, http)?;
    if let Some(addr) = metrics_addr {
        crate::metrics::serve_page(addr, metrics).await?;
    }
    println!("jetsaga gateway: the HTTP API at {served}/api/..., the saga at {url}; Ctrl-C stops it");
    up::shutdown_signal().await;
    Ok(())
}

/// `jetsaga ops`: status, dead letters and redrive for the saga, until Ctrl-C.
pub(super) async fn ops(url: &str, saga: up::SagaKind, health_port: Option<u16>) -> anyhow::Result<()> {
    // Its NATS user (`ops` in infra/nats) reads replies under its own inbox prefix only.
    let nats = crate::client::connect_options("jetsaga ops")?
        .custom_inbox_prefix(crate::client::inbox_prefix(jetsaga_infra::nats::OPS_USER))
        .retry_on_initial_connect()
        .connect(crate::client::servers(url))
        .await?;
    if let Some(port) = health_port {
        crate::health::serve(port, crate::health::Probe { nats: nats.clone(), ready: None }).await?;
    }
    let options = crate::saga::SagaOptions { mode: saga.into(), ..Default::default() };
    let cancel = tokio_util::sync::CancellationToken::new();
    let served = jetsaga_jetstream::ops::serve(&nats, crate::saga::runtime_config(&options), cancel.clone())
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve the operations: {e}"))?;
    println!("jetsaga ops: status, dead letters and redrive for {url}; Ctrl-C stops it");
    up::shutdown_signal().await;
    cancel.cancel();
    let _ = served.await;
    Ok(())
}
