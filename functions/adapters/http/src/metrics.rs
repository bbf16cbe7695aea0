//! `GET /metrics` (Prometheus text) and `GET /readyz`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Gateway;
use crate::problem::Problem;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Debug, Default, Clone)]
struct Latency {
    count: u64,
    sum: f64,
    /// Requests at or under each of [`BUCKETS`].
    buckets: [u64; BUCKETS.len()],
}

/// Requests by route, method and status, and latency by route and method.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<(String, String), Latency>>,
    /// Terminal events seen on the saga stream since the gateway started, by outcome.
    outcomes: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    fn record(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let mut requests = self.requests.lock().expect("the metrics lock is never poisoned");
        *requests.entry((route.to_string(), method.to_string(), status)).or_default() += 1;
        drop(requests);
        let mut latency = self.latency.lock().expect("the metrics lock is never poisoned");
        let entry = latency.entry((route.to_string(), method.to_string())).or_default();
        entry.count += 1;
        entry.sum += seconds;
        for (bucket, bound) in entry.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
    }

    fn outcome(&self, outcome: &str) {
        *self.outcomes.lock().expect("never poisoned").entry(outcome.to_string()).or_default() += 1;
    }

    /// The Prometheus text exposition of everything recorded.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP jetsaga_saga_outcomes_total Orders ended since the gateway started, by outcome.\n");
        out.push_str("# TYPE jetsaga_saga_outcomes_total counter\n");
        for outcome in ["completed", "failed", "canceled"] {
            let count = self.outcomes.lock().expect("never poisoned").get(outcome).copied().unwrap_or(0);
            let _ = writeln!(out, "jetsaga_saga_outcomes_total{{outcome=\"{outcome}\"}} {count}");
        }
        out.push_str("# HELP jetsaga_http_requests_total HTTP requests by route, method and status.\n");
        out.push_str("# TYPE jetsaga_http_requests_total counter\n");
        for ((route, method, status), count) in self.requests.lock().expect("never poisoned").iter() {
            let _ = writeln!(
                out,
                "jetsaga_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {count}"
            );
        }
        out.push_str("# HELP jetsaga_http_request_duration_seconds HTTP request latency by route and method.\n");
        out.push_str("# TYPE jetsaga_http_request_duration_seconds histogram\n");
        for ((route, method), latency) in self.latency.lock().expect("never poisoned").iter() {
            let labels = format!("route=\"{route}\",method=\"{method}\"");
            for (bound, count) in BUCKETS.iter().zip(latency.buckets) {
                let _ =
                    writeln!(out, "jetsaga_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}");
            }
            let _ =
                writeln!(out, "jetsaga_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}", latency.count);
            let _ = writeln!(out, "jetsaga_http_request_duration_seconds_sum{{{labels}}} {}", latency.sum);
            let _ = writeln!(out, "jetsaga_http_request_duration_seconds_count{{{labels}}} {}", latency.count);
        }
        out
    }
}

/// Middleware: counts and times every request by its route pattern (never
/// the raw path, so ids do not make a series each).
pub(crate) async fn track(State(gateway): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_string();
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    gateway.metrics.record(&route, &method, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    let mut response = gateway.metrics.render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

/// `GET /readyz`: connected to NATS, and the saga's streams exist.
pub(crate) async fn ready(State(gateway): State<Arc<Gateway>>) -> Result<axum::Json<serde_json::Value>, Problem> {
    if gateway.nats.connection_state() != async_nats::connection::State::Connected {
        return Err(Problem::unavailable("not connected to NATS"));
    }
    let js = async_nats::jetstream::new(gateway.nats.clone());
    let mut missing = Vec::new();
    for stream in [crate::live::SAGA_STREAM, COMMAND_STREAM] {
        if js.get_stream(stream).await.is_err() {
            missing.push(stream);
        }
    }
    if !missing.is_empty() {
        return Err(Problem::unavailable(format!("the saga's streams are not there yet: {}", missing.join(", "))));
    }
    Ok(axum::Json(
        json!({"status": "ready", "nats": "connected", "streams": [crate::live::SAGA_STREAM, COMMAND_STREAM]}),
    ))
}

/// The stream that keeps commands.
pub const COMMAND_STREAM: &str = "COMMANDS";

/// Counts orders as they end: reads the terminal events that reach the
/// saga stream from now on, through an ordered consumer of its own (what
/// the gateway's NATS user may do), starting over after any interruption.
pub(crate) fn count_outcomes(gateway: std::sync::Weak<Gateway>) {
    use async_nats::jetstream::consumer;
    use futures::StreamExt;
    tokio::spawn(async move {
        let terminal = ["orders.evt.completed", "orders.evt.failed", "orders.evt.canceled"];
        loop {
            let Some(strong) = gateway.upgrade() else { return };
            let js = async_nats::jetstream::new(strong.nats.clone());
            drop(strong);
            let reader = async {
                let stream = js.get_stream(crate::live::SAGA_STREAM).await.ok()?;
                let config = consumer::pull::OrderedConfig {
                    deliver_policy: consumer::DeliverPolicy::New,
                    filter_subjects: terminal.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                };
                stream.create_consumer(config).await.ok()?.messages().await.ok()
            };
            if let Some(mut messages) = reader.await {
                while let Some(Ok(message)) = messages.next().await {
                    let Some(gateway) = gateway.upgrade() else { return };
                    let outcome = message.subject.as_str().rsplit('.').next().unwrap_or_default();
                    gateway.metrics.outcome(outcome);
                }
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    });
}
