//! Runs a jetsaga function on AWS Lambda, with the same handler as the
//! JetStream runtime: the function crate does not change.
//!
//! - [`serve`]: the whole `bootstrap` main: a [`DynamoStore`] (one table per
//!   function), the [`Engine`], and `lambda_runtime`. Tracing goes to
//!   stdout in the format Lambda asks for (`AWS_LAMBDA_LOG_FORMAT`).
//! - [`handle`]: one invocation: a batch of envelopes in, per-record
//!   results out (the events to publish, with their de-duplication ids),
//!   plus `batchItemFailures` so one bad record never fails its batch; or
//!   a query.
//! - [`wire`]: the request and response types, shared with the bridge.
//! - [`metrics`]: one line per invocation with what it cost (handler time,
//!   DynamoDB request units).
//! - `invoker` (feature): the bridge side, a [`Processor`](jetsaga_core::Processor)
//!   that invokes a function through the Lambda Invoke API.
//!
//! The function never publishes: the bridge publishes the returned events
//! and acks the inputs. Because inbox, state and outbox are committed in
//! one DynamoDB transaction, a retried invocation returns the same events
//! and changes nothing.

#[cfg(feature = "invoker")]
pub mod invoker;
pub mod metrics;
pub mod wire;

use std::sync::Arc;

use jetsaga_core::{Engine, Function, Incoming, Store};
use jetsaga_dynamodb::DynamoStore;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};

use crate::wire::{ItemFailure, QueryFailure, Request, Response};

/// Handles one invocation.
pub async fn handle(engine: &Engine, request: Request) -> Result<Response, Diagnostic> {
    match request {
        Request::Batch { records } => {
            let ids: Vec<String> = records.iter().map(|r| r.envelope.id.clone()).collect();
            let incoming: Vec<Incoming> = records.into_iter().map(Incoming::from).collect();
            let outcomes = engine.handle_batch(&incoming).await;
            let results: Vec<wire::Result> =
                ids.into_iter().zip(outcomes).map(|(id, outcome)| wire::Result::from_outcome(id, outcome)).collect();
            let batch_item_failures = results
                .iter()
                .filter_map(|r| match r {
                    wire::Result::Retry { event_id, .. }
                    | wire::Result::Unavailable { event_id, .. }
                    | wire::Result::DeadLetter { event_id, .. }
                    | wire::Result::Conflict { event_id, .. } => {
                        Some(ItemFailure { item_identifier: event_id.clone() })
                    }
                    _ => None,
                })
                .collect();
            Ok(Response::Batch { results, batch_item_failures })
        }
        Request::Outbox { limit } => match engine.store().unpublished(limit).await {
            Ok(records) => Ok(Response::Outbox { events: records.iter().map(wire::Event::from).collect() }),
            Err(e) => Err(store_error(e.to_string())),
        },
        Request::MarkPublished { ids } => match engine.store().mark_published(&ids).await {
            Ok(()) => Ok(Response::Marked),
            Err(e) => Err(store_error(e.to_string())),
        },
        Request::Query { subject, request } => {
            let body = serde_json::to_vec(&request).map_err(|e| bad_request(e.to_string()))?;
            Ok(match engine.query(&subject, &body).await {
                Ok(reply) => Response::Query { reply: Some(reply), error: None },
                Err(e) => {
                    Response::Query { reply: None, error: Some(QueryFailure { code: e.code(), error: e.to_string() }) }
                }
            })
        }
    }
}

fn store_error(message: String) -> Diagnostic {
    Diagnostic { error_type: "Jetsaga.StoreError".into(), error_message: message }
}

fn bad_request(message: String) -> Diagnostic {
    Diagnostic { error_type: "Jetsaga.BadRequest".into(), error_message: message }
}

/// The bootstrap binary every function runs (`functions/bootstrap`;
/// cargo-lambda packages it as `bootstrap`).
pub const BOOTSTRAP_BINARY: &str = "jetsaga-bootstrap";

/// What `JETSAGA_FUNCTION` names for the HTTP gateway's Lambda (the same
/// bootstrap runs the gateway's router instead of a saga function).
pub const GATEWAY_FUNCTION: &str = "gateway";

/// The Lambda function name of a saga function, `jetsaga-<function>`
/// (the deploy template adds its own prefix instead).
pub fn function_name(function: &str) -> String {
    format!("jetsaga-{function}")
}

/// The DynamoDB table of a function: `JETSAGA_TABLE`, or `jetsaga-<function>`.
pub fn table_name(function: &str) -> String {
    std::env::var("JETSAGA_TABLE").unwrap_or_else(|_| format!("jetsaga-{function}"))
}

/// Stands in for the exporter in a bootstrap built without the `otel`
/// feature: says so once if the environment asks for spans.
#[cfg(not(feature = "otel"))]
#[derive(Debug)]
struct NoSpans;

#[cfg(not(feature = "otel"))]
impl NoSpans {
    fn warn_if_asked() -> Option<Arc<Self>> {
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        {
            tracing::warn!(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set, but this bootstrap was built without the `otel` feature: \
                 no spans (build it with `--features jetsaga-lambda/otel`, as `scripts/deploy --traces` does)"
            );
        }
        None
    }

    fn flush(&self) {}
}

/// Runs `function` as a Lambda function until the runtime stops it.
///
/// Environment: `JETSAGA_TABLE` (default `jetsaga-<function>`),
/// `JETSAGA_CREATE_TABLE=1` to create the table on start (local runs; the
/// deploy template creates it in AWS), `AWS_ENDPOINT_URL` for a local
/// DynamoDB-compatible endpoint.
pub async fn serve(function: Arc<dyn Function>) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let name = function.spec().name;
    let store = DynamoStore::from_env(table_name(name))?;
    if std::env::var("JETSAGA_CREATE_TABLE").as_deref() == Ok("1") {
        store.create_table_if_missing().await?;
    }
    // Spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT asks: the commit and
    // create spans of each batch, under the bridge's delivery spans.
    #[cfg(feature = "otel")]
    let spans = jetsaga_otel::install(&format!("jetsaga-{name}"))?.map(Arc::new);
    #[cfg(not(feature = "otel"))]
    let spans: Option<Arc<NoSpans>> = NoSpans::warn_if_asked();
    tracing::info!(function = name, table = store.table(), backend = store.backend(), "ready");
    let store = Arc::new(store);
    let engine = Engine::new(function, store.clone());
    let metered = metrics::enabled();
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Request>| {
        let engine = engine.clone();
        let spans = spans.clone();
        let store = store.clone();
        async move {
            // One invocation at a time per sandbox: the meter's count since
            // the last one is this one's.
            let (request, records) = (event.payload.kind(), event.payload.records());
            let started = std::time::Instant::now();
            let response = handle(&engine, event.payload).await;
            if metered {
                let handler_ms = started.elapsed().as_secs_f64() * 1000.0;
                let units = store.meter().take();
                println!("{}", metrics::Invocation::new(name, request, records, handler_ms, units).line());
            }
            if let Some(spans) = spans {
                // Sent before answering: a sandbox is frozen between
                // invocations, and a batch left in memory may never go.
                let _ = tokio::task::spawn_blocking(move || spans.flush()).await;
            }
            response
        }
    }))
    .await
}
