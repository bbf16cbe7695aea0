//! Queries as a NATS micro service: one service per function (discoverable
//! with `$SRV.PING` / `nats micro ls`), one endpoint per query subject,
//! load-balanced over every running copy through the service queue group.

use async_nats::service::{ServiceExt, error::Error as ServiceError};
use futures::StreamExt;
use jetsaga_core::Engine;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::RuntimeError;

/// Starts the service; the returned task ends when `cancel` fires.
pub(crate) async fn serve(
    client: &async_nats::Client,
    engine: Engine,
    cancel: CancellationToken,
) -> Result<JoinHandle<()>, RuntimeError> {
    let spec = engine.function().spec();
    let err = |e: async_nats::Error| RuntimeError::Service { function: spec.name.into(), message: e.to_string() };
    let service = client
        .service_builder()
        .description(spec.description)
        .start(spec.name, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(err)?;
    let mut endpoints = Vec::new();
    for subject in spec.queries {
        let name = subject.rsplit('.').next().unwrap_or(subject);
        endpoints.push((*subject, service.endpoint_builder().name(name).add(*subject).await.map_err(err)?));
    }
    Ok(tokio::spawn(async move {
        let mut handlers = tokio::task::JoinSet::new();
        for (subject, mut endpoint) in endpoints {
            let engine = engine.clone();
            let cancel = cancel.clone();
            handlers.spawn(async move {
                loop {
                    let request = tokio::select! {
                        () = cancel.cancelled() => break,
                        request = endpoint.next() => match request { Some(r) => r, None => break },
                    };
                    let engine = engine.clone();
                    // Each request on its own task: a slow scan never blocks a point lookup.
                    tokio::spawn(async move {
                        let reply = match engine.query(subject, &request.message.payload).await {
                            Ok(value) => Ok(serde_json::to_vec(&value).expect("query replies serialize").into()),
                            Err(e) => {
                                debug!(subject, error = %e, "query refused");
                                Err(ServiceError { status: e.to_string(), code: e.code().into() })
                            }
                        };
                        // The error body repeats the headers as JSON, for clients that ignore headers.
                        let reply = match reply {
                            Err(e) => {
                                let body = serde_json::json!({"code": e.code, "error": e.status});
                                let mut headers = async_nats::HeaderMap::new();
                                headers.insert("Nats-Service-Error", e.status.as_str());
                                headers.insert("Nats-Service-Error-Code", e.code.to_string().as_str());
                                request.respond_with_headers(Ok(body.to_string().into()), headers).await
                            }
                            Ok(bytes) => request.respond(Ok(bytes)).await,
                        };
                        if let Err(e) = reply {
                            warn!(subject, error = %e, "could not send query reply");
                        }
                    });
                }
            });
        }
        while handlers.join_next().await.is_some() {}
        if let Err(e) = service.stop().await {
            debug!(error = %e, "service stop");
        }
    }))
}
