//! OpenTelemetry spans for a saga: one trace per saga, whole.
//!
//! The spans are made with the OpenTelemetry API directly (no exporter
//! here: a process that exports installs a tracer provider and calls
//! [`enable`]; until then every function below is a branch on one flag).
//! Three kinds, following the semantic conventions for messaging:
//!
//! - `process <subject>` (consumer): one delivery of one message to one
//!   function, from the transport taking it to its settling (ack, retry,
//!   dead letter), with the function, the saga key, the attempt and the
//!   outcome. Started by the transport ([`Delivery::start`]), which hands its
//!   context on to the engine in [`Incoming::traceparent`].
//! - `commit` (internal): the store transaction that kept the handler's
//!   effects (a batch's one transaction, shared by the batch's spans).
//! - `create <subject>` (producer): an event the commit emitted. Its span id
//!   is derived from the event's id, the one every copy of the event carries
//!   in its `traceparent`, so the function that consumes it (later, after a
//!   schedule's wait, after a crash and a redelivery, after a redrive from
//!   the dead-letter queue) is its child whichever process runs it.
//! - `send <subject>` (producer): one publish of an event, up to its ack.
//!
//! A saga begun without trace context (a bare `nats pub`) gets a trace id
//! derived from its correlation id ([`TraceParent::root`]), so each attempt
//! of its first step lands in the same trace; whether it is sampled is
//! decided there, once, by the provider's sampler, and every later hop
//! honours the sampled flag its `traceparent` carries.

use std::borrow::Cow;
use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue, global};

use crate::engine::Incoming;
use crate::ids::TraceParent;
use crate::store::OutboxRecord;

static ENABLED: AtomicBool = AtomicBool::new(false);
static TRACER: OnceLock<global::BoxedTracer> = OnceLock::new();

thread_local! {
    static PLANNED_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
    static PLANNED_SPAN_ID: Cell<Option<SpanId>> = const { Cell::new(None) };
}

/// The trace id planned for the span being started on this thread, if
/// any: what an installed provider's id generator must hand out (see
/// `jetsaga-otel`), since the SDK draws every id from its generator.
pub fn planned_trace_id() -> Option<TraceId> {
    PLANNED_TRACE_ID.with(Cell::take)
}

/// The span id planned for the span being started on this thread, if any.
pub fn planned_span_id() -> Option<SpanId> {
    PLANNED_SPAN_ID.with(Cell::take)
}

/// Starts `builder`'s span under `parent` with these ids, where given.
fn start_planned(
    builder: opentelemetry::trace::SpanBuilder,
    parent: &Context,
    trace_id: Option<TraceId>,
    span_id: Option<SpanId>,
) -> global::BoxedSpan {
    PLANNED_TRACE_ID.with(|c| c.set(trace_id));
    PLANNED_SPAN_ID.with(|c| c.set(span_id));
    let span = builder.start_with_context(tracer(), parent);
    PLANNED_TRACE_ID.with(|c| c.set(None));
    PLANNED_SPAN_ID.with(|c| c.set(None));
    span
}

/// Turns span making on: call once the global tracer provider is installed.
pub fn enable() {
    ENABLED.store(true, Ordering::Release);
}

/// Whether spans are made (a tracer provider is installed).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The tracer every jetsaga span is made with.
pub fn tracer() -> &'static global::BoxedTracer {
    TRACER.get_or_init(|| global::tracer("jetsaga"))
}

/// The remote context a `traceparent` names, if it parses.
pub fn context_of(traceparent: &str) -> Option<Context> {
    let tp = TraceParent::parse(traceparent)?;
    let trace_id = TraceId::from_hex(&tp.trace_id).ok()?;
    let span_id = SpanId::from_hex(&tp.parent_id).ok()?;
    let flags = u8::from_str_radix(&tp.flags, 16).ok()?;
    let span = SpanContext::new(trace_id, span_id, TraceFlags::new(flags), true, TraceState::default());
    Some(Context::new().with_remote_span_context(span))
}

/// The `traceparent` naming a span.
pub fn traceparent_of(span: &SpanContext) -> String {
    format!("00-{}-{}-{:02x}", span.trace_id(), span.span_id(), span.trace_flags().to_u8())
}

/// A sampled remote context, or `None` (not sampled, none, or spans off):
/// the parent of the engine's and publisher's child spans.
fn sampled_parent(traceparent: Option<&str>) -> Option<Context> {
    if !enabled() {
        return None;
    }
    let cx = context_of(traceparent?)?;
    cx.span().span_context().is_sampled().then_some(cx)
}

/// Attributes every messaging span of a message carries.
fn message_attributes(operation: &'static str, subject: &str, message_id: &str) -> Vec<KeyValue> {
    vec![
        KeyValue::new("messaging.system", "nats"),
        KeyValue::new("messaging.operation.type", operation),
        KeyValue::new("messaging.operation.name", operation),
        KeyValue::new("messaging.destination.name", subject.to_string()),
        KeyValue::new("messaging.message.id", message_id.to_string()),
    ]
}

/// The consumer span of one delivery of a message to a function.
#[derive(Debug)]
pub struct Delivery {
    span: global::BoxedSpan,
}

impl Delivery {
    /// Starts the span of `incoming`'s delivery number `attempt` to
    /// `function`, as a child of the context it arrived with (or as the root
    /// of its saga's trace), and puts the span's own context in its place:
    /// what the engine emits while handling it descends from this delivery.
    /// `None` when spans are off.
    pub fn start(function: &str, incoming: &mut Incoming, attempt: u64) -> Option<Self> {
        if !enabled() {
            return None;
        }
        let envelope = &incoming.envelope;
        let tracer = tracer();
        let mut attributes = message_attributes("process", &envelope.event_type, &envelope.id);
        attributes.extend([
            KeyValue::new("messaging.consumer.group.name", function.to_string()),
            KeyValue::new("messaging.message.conversation_id", envelope.correlation_id.clone()),
            KeyValue::new("jetsaga.function", function.to_string()),
            KeyValue::new("jetsaga.delivery.attempt", i64::try_from(attempt).unwrap_or(i64::MAX)),
        ]);
        if let Some(key) = envelope.saga_key.as_deref() {
            attributes.push(KeyValue::new("jetsaga.saga.key", key.to_string()));
        }
        let builder = tracer
            .span_builder(format!("process {}", envelope.event_type))
            .with_kind(SpanKind::Consumer)
            .with_attributes(attributes);
        let span = match incoming.traceparent.as_deref().and_then(context_of) {
            Some(parent) => builder.start_with_context(tracer, &parent),
            None => {
                // The saga's root: its trace id follows from its correlation
                // id, so the sampler decides the same for every attempt.
                let root = TraceParent::root(&envelope.correlation_id);
                start_planned(builder, &Context::new(), TraceId::from_hex(&root.trace_id).ok(), None)
            }
        };
        let context = span.span_context();
        if context.is_valid() {
            incoming.traceparent = Some(traceparent_of(context));
        }
        Some(Self { span })
    }

    /// Ends the span with what became of the delivery (`processed`,
    /// `rejected`, `duplicate`, `retry`, `dead_lettered`, …) and, for a
    /// failure, why.
    pub fn end(mut self, outcome: &'static str, failure: Option<&str>) {
        self.span.set_attribute(KeyValue::new("jetsaga.outcome", outcome));
        if let Some(reason) = failure {
            self.span.set_status(Status::error(reason.to_string()));
        }
        self.span.end();
    }

    /// The span's trace id and span id (lower-case hex), for log lines.
    pub fn ids(&self) -> (String, String) {
        let context = self.span.span_context();
        (context.trace_id().to_string(), context.span_id().to_string())
    }
}

/// Records the `commit` span of `incoming` (the transaction ran from
/// `start` to `end`) and a `create` span for each event it emitted.
pub fn committed(function: &str, incoming: &Incoming, records: &[OutboxRecord], start: SystemTime, end: SystemTime) {
    let Some(parent) = sampled_parent(incoming.traceparent.as_deref()) else {
        return;
    };
    let tracer = tracer();
    tracer
        .span_builder("commit")
        .with_kind(SpanKind::Internal)
        .with_start_time(start)
        .with_attributes([
            KeyValue::new("jetsaga.function", function.to_string()),
            KeyValue::new("jetsaga.events", i64::try_from(records.len()).unwrap_or(i64::MAX)),
        ])
        .start_with_context(tracer, &parent)
        .end_with_timestamp(end);
    for record in records {
        let Some(span_id) = record
            .traceparent
            .as_deref()
            .and_then(TraceParent::parse)
            .and_then(|tp| SpanId::from_hex(&tp.parent_id).ok())
        else {
            continue;
        };
        let target = &record.subject;
        let mut attributes = message_attributes("create", target, &record.id);
        if record.is_scheduled() {
            attributes.push(KeyValue::new("jetsaga.scheduled", true));
        }
        let builder = tracer
            .span_builder(format!("create {target}"))
            .with_kind(SpanKind::Producer)
            .with_start_time(start)
            .with_attributes(attributes);
        start_planned(builder, &parent, None, Some(span_id)).end_with_timestamp(end);
    }
}

/// Records a `send` span for each record published from `start`, whether
/// its ack came (`Ok`) or why not.
pub fn sent(records: &[OutboxRecord], results: &[Result<(), Cow<'_, str>>], start: SystemTime) {
    if !enabled() {
        return;
    }
    let end = SystemTime::now();
    let tracer = tracer();
    for (record, result) in records.iter().zip(results) {
        let Some(parent) = sampled_parent(record.traceparent.as_deref()) else {
            continue;
        };
        let destination = record.destination();
        let mut span = tracer
            .span_builder(format!("send {destination}"))
            .with_kind(SpanKind::Producer)
            .with_start_time(start)
            .with_attributes(message_attributes("send", destination, &record.id))
            .start_with_context(tracer, &parent);
        if let Err(reason) = result {
            span.set_status(Status::error(reason.to_string()));
        }
        span.end_with_timestamp(end);
    }
}
