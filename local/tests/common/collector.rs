//! An OTLP collector of the tests' own: takes spans over gRPC or
//! HTTP/protobuf, as a real collector does, and keeps them for the test.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;

/// One span as received.
#[derive(Clone, Debug)]
pub struct Span {
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root.
    pub parent_id: String,
    pub name: String,
    /// OTLP's numbering: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: BTreeMap<String, String>,
    /// The status message of a span that ended in error.
    pub error: Option<String>,
    /// Trace ids of its links.
    pub links: Vec<String>,
}

impl Span {
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }
}

type Kept = Arc<Mutex<Vec<Span>>>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn keep(kept: &Kept, request: ExportTraceServiceRequest) {
    let mut spans = kept.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .as_ref()
            .and_then(|r| text(&r.attributes).get("service.name").cloned())
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                let error = span.status.as_ref().filter(|s| s.code == 2).map(|s| s.message.clone());
                spans.push(Span {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_id: hex(&span.parent_span_id),
                    name: span.name,
                    kind: span.kind,
                    start_ns: span.start_time_unix_nano,
                    end_ns: span.end_time_unix_nano,
                    attributes: text(&span.attributes),
                    error,
                    links: span.links.iter().map(|l| hex(&l.trace_id)).collect(),
                });
            }
        }
    }
}

struct Grpc(Kept);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        keep(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A running collector.
pub struct Collector {
    /// What `OTEL_EXPORTER_OTLP_ENDPOINT` should say.
    pub endpoint: String,
    /// What `OTEL_EXPORTER_OTLP_PROTOCOL` should say.
    pub protocol: &'static str,
    kept: Kept,
    _runtime: tokio::runtime::Runtime,
}

impl Collector {
    /// A collector taking OTLP over HTTP/protobuf (`POST /v1/traces`).
    pub fn http() -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let kept = Kept::default();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let into = kept.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let into = into.clone();
                async move {
                    match ExportTraceServiceRequest::decode(body) {
                        Ok(request) => {
                            keep(&into, request);
                            let answer = ExportTraceServiceResponse::default().encode_to_vec();
                            (axum::http::StatusCode::OK, [("content-type", "application/x-protobuf")], answer)
                        }
                        Err(e) => (
                            axum::http::StatusCode::BAD_REQUEST,
                            [("content-type", "text/plain")],
                            e.to_string().into_bytes(),
                        ),
                    }
                }
            }),
        );
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self { endpoint: format!("http://127.0.0.1:{port}"), protocol: "http/protobuf", kept, _runtime: runtime }
    }

    /// A collector taking OTLP over gRPC.
    pub fn grpc() -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let kept = Kept::default();
        let port = super::free_port();
        let service = TraceServiceServer::new(Grpc(kept.clone()));
        runtime.spawn(async move {
            tonic::transport::Server::builder().add_service(service).serve(([127, 0, 0, 1], port).into()).await.unwrap()
        });
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "the gRPC collector did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { endpoint: format!("http://127.0.0.1:{port}"), protocol: "grpc", kept, _runtime: runtime }
    }

    /// The environment that points a jetsaga process here.
    pub fn env(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &self.endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", self.protocol),
            // Batches sent every 100 ms instead of 5 s: the tests wait less.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ]
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.kept.lock().unwrap().clone()
    }

    /// The spans of one trace once `done` holds for them (waiting up to 30 s
    /// for the batches still on their way); panics with what came otherwise.
    pub fn trace_where(&self, done: impl Fn(&[Span]) -> Option<String>) -> (String, Vec<Span>) {
        let started = Instant::now();
        loop {
            let spans = self.spans();
            if let Some(trace_id) = done(&spans) {
                let trace = spans.into_iter().filter(|s| s.trace_id == trace_id).collect();
                return (trace_id, trace);
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no such trace among:\n{}", outline(&spans));
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The spans as trees, one per trace: name, service, duration, outcome.
pub fn outline(spans: &[Span]) -> String {
    let mut out = String::new();
    let mut traces: Vec<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    traces.sort_unstable();
    traces.dedup();
    for trace in traces {
        let of: Vec<&Span> = spans.iter().filter(|s| s.trace_id == trace).collect();
        out.push_str(&format!("trace {trace}\n"));
        let known = |id: &str| of.iter().any(|s| s.span_id == id);
        let mut roots: Vec<&Span> =
            of.iter().copied().filter(|s| s.parent_id.is_empty() || !known(&s.parent_id)).collect();
        roots.sort_by_key(|s| s.start_ns);
        for root in roots {
            branch(&of, root, 1, &mut out);
        }
    }
    out
}

fn branch(spans: &[&Span], span: &Span, depth: usize, out: &mut String) {
    let millis = span.end_ns.saturating_sub(span.start_ns) as f64 / 1e6;
    let missing = if !span.parent_id.is_empty() && !spans.iter().any(|s| s.span_id == span.parent_id) {
        format!(" [parent {} not received]", span.parent_id)
    } else {
        String::new()
    };
    let outcome = span.attribute("jetsaga.outcome").map(|o| format!(" → {o}")).unwrap_or_default();
    let function = span.attribute("jetsaga.function").map(|f| format!(" ({f})")).unwrap_or_default();
    out.push_str(&format!(
        "{}{}{function} [{}] {millis:.1} ms{outcome}{missing}\n",
        "  ".repeat(depth),
        span.name,
        span.service
    ));
    let mut children: Vec<&Span> = spans.iter().copied().filter(|s| s.parent_id == span.span_id).collect();
    children.sort_by_key(|s| s.start_ns);
    for child in children {
        branch(spans, child, depth + 1, out);
    }
}

/// Whether `trace` is one tree: a single root, every other span's parent received.
pub fn is_whole(trace: &[Span]) -> bool {
    trace.iter().filter(|s| s.parent_id.is_empty()).count() == 1
        && trace.iter().all(|s| s.parent_id.is_empty() || trace.iter().any(|p| p.span_id == s.parent_id))
}

/// Checks that `trace` is one tree: a single root, every other span's
/// parent received. Returns the root.
pub fn assert_whole(trace: &[Span]) -> &Span {
    let roots: Vec<&Span> = trace.iter().filter(|s| s.parent_id.is_empty()).collect();
    let orphans: Vec<&Span> =
        trace.iter().filter(|s| !s.parent_id.is_empty() && !trace.iter().any(|p| p.span_id == s.parent_id)).collect();
    assert!(roots.len() == 1 && orphans.is_empty(), "not one whole tree:\n{}", outline(trace));
    roots[0]
}
