//! `GET /metrics` (Prometheus text) and `GET /readyz`.
//!
//! The gateway's metrics are recorded through the `metrics` facade into a
//! Prometheus recorder of its own, never the process's global one: in
//! `jetsaga up` the gateway shares its process with the runner, and each
//! serves its own page (`GET /metrics` here, `--metrics-addr` there).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Gateway;
use crate::problem::Problem;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// The outcomes `jetsaga_saga_outcomes_total` counts (each shown from 0).
const OUTCOMES: [&str; 3] = ["completed", "failed", "canceled"];

/// `jetsaga_http_requests_total{route,method,status}`,
/// `jetsaga_http_request_duration_seconds{route,method}` and
/// `jetsaga_saga_outcomes_total{outcome}`, and the orders ended second by
/// second for `GET /api/throughput`.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Orders ended, second by second, for `GET /api/throughput`.
    throughput: Mutex<Throughput>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("jetsaga_http_request_duration_seconds".into()), &BUCKETS)
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::describe_counter!(
                "jetsaga_saga_outcomes_total",
                "Orders ended since the gateway started, by outcome (as the saga stream shows them)."
            );
            metrics::describe_counter!("jetsaga_http_requests_total", "HTTP requests by route, method and status.");
            metrics::describe_histogram!(
                "jetsaga_http_request_duration_seconds",
                metrics::Unit::Seconds,
                "HTTP request latency by route and method."
            );
            for outcome in OUTCOMES {
                metrics::counter!("jetsaga_saga_outcomes_total", "outcome" => outcome).absolute(0);
            }
        });
        Self { recorder, handle, throughput: Mutex::default() }
    }
}

/// Seconds of history `GET /api/throughput` answers.
pub const THROUGHPUT_SECONDS: usize = 60;

/// Orders in flight whose creation time is remembered (for their latency);
/// beyond this, the oldest are forgotten and their latency is not counted.
const MAX_REMEMBERED_ORDERS: usize = 50_000;

/// Latencies kept per second (enough for percentiles; more are not kept).
const MAX_LATENCIES_PER_SECOND: usize = 5_000;

/// What the saga stream showed of the orders ended lately.
#[derive(Debug, Default)]
struct Throughput {
    /// When each order in flight was created, in order of creation.
    created: std::collections::HashMap<String, chrono::DateTime<chrono::Utc>>,
    creation_order: std::collections::VecDeque<String>,
    /// Per second (Unix time) of the terminal event.
    seconds: BTreeMap<i64, Second>,
}

#[derive(Debug, Default, Clone)]
struct Second {
    completed: u64,
    failed: u64,
    canceled: u64,
    latencies_ms: Vec<f64>,
}

impl Throughput {
    fn created(&mut self, order_id: &str, at: chrono::DateTime<chrono::Utc>) {
        if self.created.insert(order_id.to_string(), at).is_none() {
            self.creation_order.push_back(order_id.to_string());
        }
        while self.creation_order.len() > MAX_REMEMBERED_ORDERS {
            if let Some(oldest) = self.creation_order.pop_front() {
                self.created.remove(&oldest);
            }
        }
    }

    fn ended(&mut self, order_id: &str, outcome: &str, at: chrono::DateTime<chrono::Utc>) {
        let latency = self.created.remove(order_id).map(|created| (at - created).num_microseconds().unwrap_or(0));
        let second = self.seconds.entry(at.timestamp()).or_default();
        match outcome {
            "completed" => second.completed += 1,
            "failed" => second.failed += 1,
            _ => second.canceled += 1,
        }
        if let Some(micros) = latency
            && second.latencies_ms.len() < MAX_LATENCIES_PER_SECOND
        {
            second.latencies_ms.push(micros.max(0) as f64 / 1000.0);
        }
        let oldest = at.timestamp() - 2 * THROUGHPUT_SECONDS as i64;
        self.seconds.retain(|s, _| *s >= oldest);
    }

    fn report(&self, now: chrono::DateTime<chrono::Utc>) -> ThroughputReport {
        let last = now.timestamp() - 1; // the second now running is not over
        let seconds = (last - THROUGHPUT_SECONDS as i64 + 1..=last)
            .map(|at| {
                let second = self.seconds.get(&at).cloned().unwrap_or_default();
                let mut latencies = second.latencies_ms;
                latencies.sort_by(f64::total_cmp);
                let percentile = |p: f64| {
                    (!latencies.is_empty()).then(|| latencies[((latencies.len() - 1) as f64 * p).round() as usize])
                };
                ThroughputSecond {
                    at: chrono::DateTime::from_timestamp(at, 0).unwrap_or(now),
                    completed: second.completed,
                    failed: second.failed,
                    canceled: second.canceled,
                    p50_ms: percentile(0.5),
                    p99_ms: percentile(0.99),
                }
            })
            .collect();
        ThroughputReport { seconds }
    }
}

/// `GET /api/throughput`: orders ended each second of the last minute, as
/// this gateway saw them on the saga stream (since it started).
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct ThroughputReport {
    /// Oldest first, one per second, the last one the second just over.
    pub seconds: Vec<ThroughputSecond>,
}

/// One second of [`ThroughputReport`].
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct ThroughputSecond {
    /// The second's start.
    pub at: chrono::DateTime<chrono::Utc>,
    /// Orders completed in it.
    pub completed: u64,
    /// Orders failed in it.
    pub failed: u64,
    /// Orders canceled in it.
    pub canceled: u64,
    /// Median latency from created to ended of those orders, in ms
    /// (null: none ended, or their creation was before the gateway started).
    pub p50_ms: Option<f64>,
    /// 99th percentile of the same.
    pub p99_ms: Option<f64>,
}

impl Metrics {
    fn record(&self, route: &str, method: &str, status: u16, seconds: f64) {
        metrics::with_local_recorder(&self.recorder, || {
            let (route, method) = (route.to_string(), method.to_string());
            metrics::counter!("jetsaga_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status.to_string())
                .increment(1);
            metrics::histogram!("jetsaga_http_request_duration_seconds", "route" => route, "method" => method)
                .record(seconds);
        });
    }

    /// An event of the saga stream: creations and terminal events count.
    fn saga_event(&self, envelope: &jetsaga_events::Envelope) {
        let Some(order_id) = envelope.saga_key.as_deref() else { return };
        let mut throughput = self.throughput.lock().expect("never poisoned");
        if envelope.event_type == "orders.evt.created" {
            throughput.created(order_id, envelope.occurred_at);
            return;
        }
        let outcome = envelope.event_type.rsplit('.').next().unwrap_or_default();
        throughput.ended(order_id, outcome, envelope.occurred_at);
        drop(throughput);
        // Only the outcomes it watches: a label never takes a stranger's value.
        if let Some(outcome) = OUTCOMES.into_iter().find(|o| *o == outcome) {
            metrics::with_local_recorder(&self.recorder, || {
                metrics::counter!("jetsaga_saga_outcomes_total", "outcome" => outcome).increment(1);
            });
        }
    }

    /// The Prometheus text exposition of everything recorded.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// What `/metrics` serves, for another listener (`jetsaga gateway --metrics-addr`).
    pub fn handle(&self) -> PrometheusHandle {
        self.handle.clone()
    }
}

/// Middleware: counts and times every request by its route pattern (never
/// the raw path, so ids do not make a series each).
pub(crate) async fn track(State(gateway): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_string();
    let method = request.method().to_string();
    let started = Instant::now();
    let client_trace = request.headers().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string);
    let span = crate::trace::RequestSpan::start(&method, &route, client_trace.as_deref());
    let response = crate::trace::RequestSpan::around(span.as_ref(), next.run(request)).await;
    let status = response.status().as_u16();
    if let Some(span) = span {
        span.end(status);
    }
    gateway.metrics.record(&route, &method, status, started.elapsed().as_secs_f64());
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

/// `GET /api/throughput` (admins).
pub(crate) async fn throughput(
    State(gateway): State<Arc<Gateway>>,
    session: crate::auth::Session,
) -> Result<axum::Json<ThroughputReport>, Problem> {
    session.require_admin()?;
    Ok(axum::Json(gateway.metrics.throughput.lock().expect("never poisoned").report(chrono::Utc::now())))
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
pub const COMMAND_STREAM: &str = jetsaga_jetstream::streams::COMMANDS;

/// Counts orders as they end, with their latency: reads the creations and
/// terminal events that reach the saga stream from now on, through an
/// ordered consumer of its own (what the gateway's NATS user may do),
/// starting over after any interruption.
pub(crate) fn count_outcomes(gateway: std::sync::Weak<Gateway>) {
    use async_nats::jetstream::consumer;
    use futures::StreamExt;
    tokio::spawn(async move {
        let watched = ["orders.evt.created", "orders.evt.completed", "orders.evt.failed", "orders.evt.canceled"];
        loop {
            let Some(strong) = gateway.upgrade() else { return };
            let js = async_nats::jetstream::new(strong.nats.clone());
            drop(strong);
            let reader = async {
                let stream = js.get_stream(crate::live::SAGA_STREAM).await.ok()?;
                let config = consumer::pull::OrderedConfig {
                    deliver_policy: consumer::DeliverPolicy::New,
                    filter_subjects: watched.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                };
                stream.create_consumer(config).await.ok()?.messages().await.ok()
            };
            if let Some(mut messages) = reader.await {
                while let Some(Ok(message)) = messages.next().await {
                    let Some(gateway) = gateway.upgrade() else { return };
                    if let Ok(envelope) = jetsaga_events::Envelope::decode(&message.payload) {
                        gateway.metrics.saga_event(&envelope);
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};

    #[test]
    fn throughput_counts_each_second_with_its_latencies_and_forgets_nothing_it_should_keep() {
        let start = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
        let mut throughput = Throughput::default();
        for i in 0..10 {
            throughput.created(&format!("o-{i}"), start + Duration::milliseconds(i * 10));
        }
        // Latencies 100 ms to 1,000 ms; o-9 ends in the second second.
        for i in 0..10 {
            let outcome = if i < 8 { "completed" } else { "failed" };
            throughput.ended(&format!("o-{i}"), outcome, start + Duration::milliseconds(i * 10 + (i + 1) * 100));
        }
        // One whose creation was never seen: counted, no latency.
        throughput.ended("o-unknown", "canceled", start + Duration::milliseconds(500));
        let report = throughput.report(start + Duration::seconds(3));
        assert_eq!(report.seconds.len(), THROUGHPUT_SECONDS);
        let last = report.seconds.last().unwrap();
        assert_eq!(last.at, start + Duration::seconds(2), "the last second reported is over");
        let count = |s: &ThroughputSecond| s.completed + s.failed + s.canceled;
        assert_eq!(report.seconds.iter().map(count).sum::<u64>(), 11);
        let first = report.seconds.iter().find(|s| s.at == start).unwrap();
        // In the first second: o-0 to o-8 (o-8 ends at 980 ms, failed), and the unknown one.
        assert_eq!((first.completed, first.failed, first.canceled), (8, 1, 1));
        assert_eq!(first.p50_ms, Some(500.0));
        assert_eq!(first.p99_ms, Some(900.0));
        let empty = report.seconds.iter().find(|s| s.at == start - Duration::seconds(5)).unwrap();
        assert_eq!((count(empty), empty.p50_ms), (0, None));
        assert!(throughput.created.is_empty(), "an ended order is forgotten");
    }

    #[test]
    fn orders_in_flight_are_remembered_up_to_a_bound() {
        let mut throughput = Throughput::default();
        let at = Utc::now();
        for i in 0..MAX_REMEMBERED_ORDERS + 10 {
            throughput.created(&format!("o-{i}"), at);
        }
        assert_eq!(throughput.created.len(), MAX_REMEMBERED_ORDERS);
        assert!(!throughput.created.contains_key("o-0"), "the oldest are forgotten first");
    }
}
