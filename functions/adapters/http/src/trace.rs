//! The gateway's span of each HTTP request (`POST /api/orders`, kind
//! server): the root of the trace of the saga a request starts. Its
//! context goes with every NATS request the handler makes (the
//! `traceparent` header), so the function that processes the command is
//! its child.
//!
//! A `traceparent` the client sent is kept as a link, never taken as the
//! parent: the gateway is a public door, and a stranger must not decide
//! what this deployment samples (a forced sampled flag on every request
//! would make each one cost its whole saga's spans).

use opentelemetry::trace::{Link, Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue, global};

use jetsaga_core::telemetry;

tokio::task_local! {
    /// The `traceparent` of the request being served, for its upstream calls.
    static CURRENT: Option<String>;
}

/// The server span of one request.
#[derive(Debug)]
pub(crate) struct RequestSpan {
    span: global::BoxedSpan,
    traceparent: String,
}

impl RequestSpan {
    /// Starts the span of a request for `route` (the pattern, never the
    /// raw path); `None` when spans are off.
    pub(crate) fn start(method: &str, route: &str, client: Option<&str>) -> Option<Self> {
        if !telemetry::enabled() {
            return None;
        }
        let tracer = telemetry::tracer();
        let mut builder =
            tracer.span_builder(format!("{method} {route}")).with_kind(SpanKind::Server).with_attributes([
                KeyValue::new("http.request.method", method.to_string()),
                KeyValue::new("http.route", route.to_string()),
            ]);
        if let Some(linked) = client.and_then(telemetry::context_of) {
            builder = builder.with_links(vec![Link::with_context(linked.span().span_context().clone())]);
        }
        let span = builder.start_with_context(tracer, &Context::new());
        let traceparent = telemetry::traceparent_of(span.span_context());
        Some(Self { span, traceparent })
    }

    /// Runs `serve` with this span as the context of its upstream calls.
    pub(crate) async fn around<F: std::future::Future>(this: Option<&Self>, serve: F) -> F::Output {
        CURRENT.scope(this.map(|s| s.traceparent.clone()), serve).await
    }

    /// Ends the span with the response's status.
    pub(crate) fn end(mut self, status: u16) {
        self.span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        if status >= 500 {
            self.span.set_status(Status::error(format!("HTTP {status}")));
        }
        self.span.end();
    }
}

/// The `traceparent` of the request being served, if it is traced.
pub(crate) fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok().flatten()
}
