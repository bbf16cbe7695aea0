//! Exports jetsaga's spans (see `jetsaga_core::telemetry`) over OTLP,
//! configured the way every OpenTelemetry SDK is, by environment:
//!
//! | Variable | Meaning |
//! |---|---|
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` (or `_TRACES_ENDPOINT`) | The collector; unset: no spans at all |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` (or `_TRACES_PROTOCOL`) | `http/protobuf` (default; feature `http`) or `grpc` (feature `grpc`) |
//! | `OTEL_SERVICE_NAME` | The service name (default: the process's own, `jetsaga`, `jetsaga-bridge`, …) |
//! | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | Sampling, decided at each saga's root (default `parentbased_always_on`) |
//! | `OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT`, `_COMPRESSION` | As the OTLP exporter spec says |
//! | `OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none` | Off, even with an endpoint |
//!
//! The provider's id generator hands out the ids jetsaga plans for a span
//! (a saga's root trace id from its correlation id, an event's `create`
//! span id from the event id), random ones otherwise.

#[cfg(not(any(feature = "grpc", feature = "http")))]
compile_error!("jetsaga-otel exports over OTLP: enable its `grpc` or `http` feature (or both, the default)");

use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_otlp::SpanExporter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A variable holds a value this build does not support.
    #[error("{variable}={value} is not supported: use {accepted}")]
    Unsupported {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What is accepted.
        accepted: &'static str,
    },
    /// The exporter refused its configuration (an endpoint that is no URL, …).
    #[error("cannot set up the OTLP span exporter: {0}")]
    Exporter(String),
}

/// Exporting spans: flushes what is buffered when dropped.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Sends every span ended so far, waiting for the collector (a Lambda
    /// invocation's spans before it returns and the sandbox is frozen).
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "spans not exported");
        }
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::debug!(error = %e, "span exporter shut down with spans unsent");
        }
    }
}

/// The ids jetsaga planned for the span being started, else random ones.
#[derive(Debug, Default)]
struct PlannedIds(RandomIdGenerator);

impl IdGenerator for PlannedIds {
    fn new_trace_id(&self) -> TraceId {
        jetsaga_core::telemetry::planned_trace_id().unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        jetsaga_core::telemetry::planned_span_id().unwrap_or_else(|| self.0.new_span_id())
    }
}

/// The protocols this build exports over.
const ACCEPTED: &str = match (cfg!(feature = "grpc"), cfg!(feature = "http")) {
    (true, true) => "grpc or http/protobuf",
    (true, false) => "grpc (this build has no HTTP exporter)",
    (false, true) => "http/protobuf (this build has no gRPC exporter)",
    (false, false) => "",
};

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// Whether the environment asks for spans: an OTLP endpoint is set and
/// spans are not switched off.
pub fn requested() -> bool {
    let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    endpoint.is_some() && !disabled
}

/// Installs the global tracer provider if the environment asks for spans
/// (see the module's table) and turns jetsaga's spans on; `None` when it
/// does not. Call inside a Tokio runtime (the gRPC exporter needs one).
/// `service` names the process unless `OTEL_SERVICE_NAME` does.
pub fn install(service: &str) -> Result<Option<Tracing>, Error> {
    if !requested() {
        return Ok(None);
    }
    let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "http/protobuf".into());
    let exporter = match protocol.as_str() {
        #[cfg(feature = "grpc")]
        "grpc" => SpanExporter::builder().with_tonic().build(),
        #[cfg(feature = "http")]
        "http/protobuf" => {
            use opentelemetry_otlp::{Protocol, WithExportConfig};
            SpanExporter::builder().with_http().with_protocol(Protocol::HttpBinary).build()
        }
        _ => {
            return Err(Error::Unsupported {
                variable: "OTEL_EXPORTER_OTLP_PROTOCOL",
                value: protocol,
                accepted: ACCEPTED,
            });
        }
    }
    .map_err(|e| Error::Exporter(e.to_string()))?;
    let service = var("OTEL_SERVICE_NAME").unwrap_or_else(|| service.to_string());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_id_generator(PlannedIds::default())
        .with_resource(Resource::builder().with_service_name(service.clone()).build())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    jetsaga_core::telemetry::enable();
    let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"));
    tracing::info!(service, protocol, endpoint = endpoint.as_deref().unwrap_or(""), "exporting spans over OTLP");
    Ok(Some(Tracing { provider }))
}
