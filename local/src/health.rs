//! A runner's health over HTTP, for an orchestrator's probes
//! (`jetsaga up --health-port`, `jetsaga bridge --health-port`,
//! `jetsaga ops --health-port`):
//!
//! - `GET /healthz`: the process runs (200) — a liveness probe restarts it
//!   only when it does not answer at all;
//! - `GET /readyz`: connected to NATS and every hosted function consuming
//!   its streams (200), else 503 with what is missing — a readiness probe
//!   keeps the pod out of a rollout's count until then.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tracing::{info, warn};

/// What `/readyz` looks at.
#[derive(Clone, Debug)]
pub struct Probe {
    /// The process's NATS connection.
    pub nats: async_nats::Client,
    /// Set once the runtime consumes its streams (`None`: nothing to consume).
    pub ready: Option<jetsaga_jetstream::Readiness>,
}

async fn ready(State(probe): State<Probe>) -> (StatusCode, String) {
    if probe.nats.connection_state() != async_nats::connection::State::Connected {
        return (StatusCode::SERVICE_UNAVAILABLE, "not connected to NATS\n".into());
    }
    match &probe.ready {
        Some(ready) if !ready.is_ready() => {
            (StatusCode::SERVICE_UNAVAILABLE, "not consuming yet (streams and consumers not bound)\n".into())
        }
        _ => (StatusCode::OK, "ready\n".into()),
    }
}

/// Serves the probes on `port` (all interfaces: the kubelet probes the
/// pod's address) until the process ends.
pub async fn serve(port: u16, probe: Probe) -> anyhow::Result<SocketAddr> {
    let app = Router::new().route("/healthz", get(|| async { "ok\n" })).route("/readyz", get(ready)).with_state(probe);
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for health probes on port {port}: {e}"))?;
    let address = listener.local_addr()?;
    info!(%address, "health probes: /healthz, /readyz");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "the health probes stopped");
        }
    });
    Ok(address)
}
