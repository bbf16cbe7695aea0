//! The whole catalog as data, and the generators for the checked-in JSON
//! Schemas and AsyncAPI document (a test fails when they drift from the
//! Rust types; `JETSAGA_BLESS=1 cargo test -p jetsaga-events` rewrites them).

use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value, json};

use crate::payloads::*;
use crate::subjects::{self, SubjectKind};
use crate::{Envelope, Payload};

/// One subject of the catalog.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// The subject.
    pub subject: &'static str,
    /// Rust type name of the payload (also the AsyncAPI message name).
    pub type_name: &'static str,
    /// JSON Schema of the payload, standalone.
    pub schema: fn() -> Schema,
    /// Registers the payload in a shared generator, returning a `$ref`.
    reference: fn(&mut SchemaGenerator) -> Schema,
    /// Decodes a JSON payload as this entry's type and encodes it again;
    /// fixtures and samples are checked with it.
    pub roundtrip: fn(&[u8]) -> Result<Value, crate::DecodeError>,
    /// For queries: the reply type.
    pub reply: Option<Reply>,
}

/// The reply of a query.
#[derive(Clone, Copy, Debug)]
pub struct Reply {
    /// Rust type name of the reply.
    pub type_name: &'static str,
    /// JSON Schema of the reply, standalone.
    pub schema: fn() -> Schema,
    reference: fn(&mut SchemaGenerator) -> Schema,
}

impl Entry {
    /// Command, event or query.
    pub fn kind(&self) -> SubjectKind {
        subjects::parse(self.subject).expect("catalog subjects follow the naming rule").1
    }

    /// The owning context (`orders`, `inventory`, ...).
    pub fn context(&self) -> &'static str {
        subjects::parse(self.subject).expect("catalog subjects follow the naming rule").0
    }
}

fn schema_of<T: JsonSchema>() -> Schema {
    schemars::schema_for!(T)
}

fn reference_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

fn short_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

fn roundtrip_of<P: Payload>(bytes: &[u8]) -> Result<Value, crate::DecodeError> {
    let payload: P = crate::decode_payload(bytes)?;
    Ok(serde_json::to_value(payload).expect("payloads serialize"))
}

fn entry<P: Payload>() -> Entry {
    Entry {
        subject: P::SUBJECT,
        type_name: short_name::<P>(),
        schema: schema_of::<P>,
        reference: reference_of::<P>,
        roundtrip: roundtrip_of::<P>,
        reply: None,
    }
}

fn query<P: Payload, R: JsonSchema>() -> Entry {
    Entry {
        reply: Some(Reply { type_name: short_name::<R>(), schema: schema_of::<R>, reference: reference_of::<R> }),
        ..entry::<P>()
    }
}

/// Every subject of the catalog, commands first, then events, then queries.
pub fn entries() -> Vec<Entry> {
    vec![
        entry::<CreateOrder>(),
        entry::<CancelOrder>(),
        entry::<UpsertProduct>(),
        entry::<CreateCustomer>(),
        entry::<ReserveInventory>(),
        entry::<ReleaseInventory>(),
        entry::<ConsumeInventory>(),
        entry::<ReserveCredit>(),
        entry::<ReleaseCredit>(),
        entry::<ExecutePayment>(),
        entry::<RefundPayment>(),
        entry::<ScheduleShipment>(),
        entry::<SignUp>(),
        entry::<SetRole>(),
        entry::<LogOut>(),
        entry::<OrderCreated>(),
        entry::<OrderCompleted>(),
        entry::<OrderFailed>(),
        entry::<OrderCancelRequested>(),
        entry::<OrderCanceled>(),
        entry::<OrderCancelRefused>(),
        entry::<DeadlinePassed>(),
        entry::<DeadlineCanceled>(),
        entry::<ProductUpserted>(),
        entry::<InventoryReserved>(),
        entry::<ReservationFailed>(),
        entry::<InventoryReleased>(),
        entry::<InventoryConsumed>(),
        entry::<CustomerCreated>(),
        entry::<CreditReserved>(),
        entry::<CreditRejected>(),
        entry::<CreditReleased>(),
        entry::<PaymentExecuted>(),
        entry::<PaymentFailed>(),
        entry::<PaymentRefunded>(),
        entry::<ShipmentScheduled>(),
        entry::<ShipmentInformed>(),
        entry::<ShipmentFailed>(),
        entry::<ShipmentCanceled>(),
        entry::<PointsAwarded>(),
        entry::<PointsRevoked>(),
        entry::<SignedUp>(),
        entry::<RoleChanged>(),
        query::<GetOrder, OrderView>(),
        query::<ListOrders, OrderPage>(),
        query::<ListProducts, ProductList>(),
        query::<GetCustomer, CustomerView>(),
        query::<ListCustomers, CustomerList>(),
        query::<GetLoyalty, LoyaltyView>(),
        query::<Authenticate, UserView>(),
        query::<GetUser, UserView>(),
    ]
}

/// Looks a subject up in the catalog.
pub fn find(subject: &str) -> Option<Entry> {
    entries().into_iter().find(|e| e.subject == subject)
}

fn pretty(value: &impl serde::Serialize) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("schemas serialize");
    text.push('\n');
    text
}

/// The checked-in JSON Schema files: `(file name, contents)`.
pub fn json_schema_files() -> Vec<(String, String)> {
    let mut files = vec![("envelope.json".to_string(), pretty(&schema_of::<Envelope>()))];
    for e in entries() {
        files.push((format!("{}.json", e.subject), pretty(&(e.schema)())));
        if let Some(reply) = e.reply {
            files.push((format!("{}.reply.json", e.subject), pretty(&(reply.schema)())));
        }
    }
    files
}

fn channel_id(subject: &str) -> String {
    subject.replace('.', "_")
}

/// The AsyncAPI 3.0 document for every subject, message and query.
pub fn asyncapi_document() -> String {
    let mut generator =
        SchemaSettings::draft07().with(|s| s.definitions_path = "/components/schemas/".into()).into_generator();
    let envelope_ref = generator.subschema_for::<Envelope>();

    let headers = json!({
        "type": "object",
        "properties": {
            "traceparent": {"type": "string", "description": "W3C trace context; carried on to every event this message causes."},
            "Nats-Msg-Id": {"type": "string", "description": "JetStream de-duplication id. On commands it is also the event id, so a retried publish is processed once."},
            "Jetsaga-Envelope": {"type": "string", "description": "Set to `1` when the body is a full envelope rather than a bare payload. Only the runtime sends envelopes: their `type` must equal the subject, and request/reply command endpoints refuse them."}
        }
    });

    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    for e in entries() {
        let id = channel_id(e.subject);
        let payload_ref = (e.reference)(&mut generator);
        let (description, payload, action) = match e.kind() {
            SubjectKind::Command => (
                "A command. Clients publish the bare payload (for example with `nats pub` or `nats req`); the orchestrator's commands travel as full envelopes with the `Jetsaga-Envelope: 1` header, whose `type` must equal the subject. Processed once.",
                json!({"oneOf": [payload_ref, {"allOf": [envelope_ref, {"properties": {"data": payload_ref}}]}]}),
                "receive",
            ),
            SubjectKind::Event => (
                "An event, published by the runtime as a full envelope once the state change that caused it is durable.",
                json!({"allOf": [envelope_ref, {"properties": {"data": payload_ref}}]}),
                "send",
            ),
            SubjectKind::Query => (
                "A read-only request/reply query, served as a NATS micro service endpoint by the owning function; never stored.",
                json!(payload_ref),
                "receive",
            ),
        };
        let summary = (e.schema)().get("description").and_then(Value::as_str).unwrap_or_default().to_string();
        messages.insert(
            e.type_name.to_string(),
            json!({"name": e.type_name, "title": e.subject, "summary": summary, "contentType": "application/json", "headers": headers, "payload": payload}),
        );
        channels.insert(
            id.clone(),
            json!({
                "address": e.subject,
                "description": description,
                "messages": {e.type_name: {"$ref": format!("#/components/messages/{}", e.type_name)}}
            }),
        );
        let mut operation = json!({
            "action": action,
            "channel": {"$ref": format!("#/channels/{id}")},
            "summary": summary,
            "messages": [{"$ref": format!("#/channels/{id}/messages/{}", e.type_name)}]
        });
        if let Some(reply) = e.reply {
            let reply_id = format!("{id}_reply");
            let reply_ref = (reply.reference)(&mut generator);
            let error_ref = generator.subschema_for::<QueryErrorReply>();
            messages.insert(
                reply.type_name.to_string(),
                json!({"name": reply.type_name, "contentType": "application/json", "payload": {"oneOf": [reply_ref, error_ref]}}),
            );
            channels.insert(
                reply_id.clone(),
                json!({
                    "address": null,
                    "description": format!("Reply to {}; on error the body is a QueryErrorReply and the Nats-Service-Error headers are set.", e.subject),
                    "messages": {reply.type_name: {"$ref": format!("#/components/messages/{}", reply.type_name)}}
                }),
            );
            operation["reply"] = json!({
                "address": {"location": "$message.header#/replyTo"},
                "channel": {"$ref": format!("#/channels/{reply_id}")},
                "messages": [{"$ref": format!("#/channels/{reply_id}/messages/{}", reply.type_name)}]
            });
        }
        operations.insert(format!("{action}_{id}"), operation);
    }

    let document = json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "jetsaga order saga",
            "version": "1.0.0",
            "description": "Commands, events and queries of the jetsaga e-commerce order saga on NATS JetStream. Subjects are `<context>.<kind>.<name>`: `cmd` from outside, `evt` facts from the runtime, `query` request/reply. Money is integer cents."
        },
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "localhost:4222", "protocol": "nats", "description": "`jetsaga up` (or NATS_URL)"}},
        "channels": channels,
        "operations": operations,
        "components": {"schemas": generator.take_definitions(true), "messages": messages}
    });
    pretty(&document)
}
