//! The API described as an OpenAPI 3.1 document, generated from the same
//! Rust types the routes use (JSON Schemas by schemars), checked in as
//! `events/openapi.json` with a drift test, and served at
//! `GET /api/openapi.json`.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::api::{
    Accepted, CancelRequest, CreateOrderRequest, ListParams, LogInRequest, ProductRequest, SagaParams, SessionView,
    SignUpRequest,
};
use crate::problem::Problem;
use jetsaga_events::ops::{DeadLetterList, Deleted, Redriven, StatusReport};

use crate::metrics::ThroughputReport;
use jetsaga_events::{
    CreateCustomer, CustomerList, CustomerView, OrderPage, OrderView, ProductList, ProductView, UserView,
};

/// Who may call an operation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Anyone,
    SignedIn,
    Admin,
}

struct Operation {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    access: Access,
    body: Option<Value>,
    query: Vec<Value>,
    ok: (u16, &'static str, Option<Value>),
    errors: &'static [u16],
}

fn reason(status: u16) -> &'static str {
    axum::http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error")
}

fn query_parameters<T: JsonSchema>(generator: &mut SchemaGenerator) -> Vec<Value> {
    let schema = generator.root_schema_for::<T>();
    let properties = schema.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
    properties
        .into_iter()
        .map(|(name, schema)| {
            let description = schema.get("description").cloned().unwrap_or(Value::Null);
            json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
        })
        .collect()
}

/// The OpenAPI 3.1 document of the gateway.
pub fn document() -> Value {
    let mut generator =
        SchemaSettings::draft2020_12().with(|s| s.definitions_path = "/components/schemas/".into()).into_generator();
    let schema = |g: &mut SchemaGenerator, f: fn(&mut SchemaGenerator) -> schemars::Schema| f(g).to_value();
    let user = schema(&mut generator, |g| g.subschema_for::<UserView>());
    let operations = vec![
        Operation {
            method: "post",
            path: "/api/users",
            summary: "Sign up (creates your customer, with the default credit)",
            access: Access::Anyone,
            body: Some(schema(&mut generator, |g| g.subschema_for::<SignUpRequest>())),
            query: vec![],
            ok: (201, "The new user", Some(user.clone())),
            errors: &[400, 409, 413, 415, 422, 429, 503],
        },
        Operation {
            method: "post",
            path: "/api/session",
            summary: "Log in: the session cookie and a Bearer token",
            access: Access::Anyone,
            body: Some(schema(&mut generator, |g| g.subschema_for::<LogInRequest>())),
            query: vec![],
            ok: (200, "The session", Some(schema(&mut generator, |g| g.subschema_for::<SessionView>()))),
            errors: &[400, 401, 413, 415, 429, 503],
        },
        Operation {
            method: "delete",
            path: "/api/session",
            summary: "Log out: every token issued so far stops working",
            access: Access::SignedIn,
            body: None,
            query: vec![],
            ok: (204, "Logged out", None),
            errors: &[401, 503],
        },
        Operation {
            method: "get",
            path: "/api/me",
            summary: "The signed-in user",
            access: Access::SignedIn,
            body: None,
            query: vec![],
            ok: (200, "The user", Some(user.clone())),
            errors: &[401, 503],
        },
        Operation {
            method: "get",
            path: "/api/products",
            summary: "The catalog",
            access: Access::Anyone,
            body: None,
            query: vec![],
            ok: (200, "The products", Some(schema(&mut generator, |g| g.subschema_for::<ProductList>()))),
            errors: &[503],
        },
        Operation {
            method: "put",
            path: "/api/products/{id}",
            summary: "Create or change a product",
            access: Access::Admin,
            body: Some(schema(&mut generator, |g| g.subschema_for::<ProductRequest>())),
            query: vec![],
            ok: (200, "The product", Some(schema(&mut generator, |g| g.subschema_for::<ProductView>()))),
            errors: &[400, 401, 403, 413, 415, 422, 503],
        },
        Operation {
            method: "post",
            path: "/api/orders",
            summary: "Place an order for yourself (Idempotency-Key: the same key makes one order)",
            access: Access::SignedIn,
            body: Some(schema(&mut generator, |g| g.subschema_for::<CreateOrderRequest>())),
            query: vec![
                json!({"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "minLength": 1, "maxLength": 128}}),
            ],
            ok: (202, "Accepted; follow it at href", Some(schema(&mut generator, |g| g.subschema_for::<Accepted>()))),
            errors: &[400, 401, 409, 413, 415, 422, 429, 503],
        },
        Operation {
            method: "get",
            path: "/api/orders",
            summary: "Your orders, newest first",
            access: Access::SignedIn,
            body: None,
            query: query_parameters::<ListParams>(&mut generator),
            ok: (200, "A page of orders", Some(schema(&mut generator, |g| g.subschema_for::<OrderPage>()))),
            errors: &[400, 401, 503],
        },
        Operation {
            method: "get",
            path: "/api/orders/{id}",
            summary: "An order: status, items, total, reason, timeline",
            access: Access::SignedIn,
            body: None,
            query: vec![],
            ok: (200, "The order", Some(schema(&mut generator, |g| g.subschema_for::<OrderView>()))),
            errors: &[401, 404, 503],
        },
        Operation {
            method: "post",
            path: "/api/orders/{id}/cancel",
            summary: "Cancel an order that has not shipped",
            access: Access::SignedIn,
            body: Some(schema(&mut generator, |g| g.subschema_for::<CancelRequest>())),
            query: vec![],
            ok: (202, "Cancel requested", Some(schema(&mut generator, |g| g.subschema_for::<Accepted>()))),
            errors: &[400, 401, 404, 422, 503],
        },
        Operation {
            method: "get",
            path: "/api/orders/{id}/events",
            summary: "The order's saga live, as server-sent events (resumable with Last-Event-ID)",
            access: Access::SignedIn,
            body: None,
            query: vec![
                json!({"name": "Last-Event-ID", "in": "header", "required": false, "schema": {"type": "string", "pattern": "^[0-9]+$"}}),
            ],
            ok: (200, "text/event-stream: id = stream sequence, event = subject, data = envelope", None),
            errors: &[400, 401, 404, 429, 503],
        },
        Operation {
            method: "get",
            path: "/api/sagas",
            summary: "Every order, newest first",
            access: Access::Admin,
            body: None,
            query: query_parameters::<SagaParams>(&mut generator),
            ok: (200, "A page of orders", Some(schema(&mut generator, |g| g.subschema_for::<OrderPage>()))),
            errors: &[400, 401, 403, 503],
        },
        Operation {
            method: "get",
            path: "/api/customers",
            summary: "Every customer with their credit",
            access: Access::Admin,
            body: None,
            query: vec![],
            ok: (200, "The customers", Some(schema(&mut generator, |g| g.subschema_for::<CustomerList>()))),
            errors: &[401, 403, 503],
        },
        Operation {
            method: "post",
            path: "/api/customers",
            summary: "Create or change a customer",
            access: Access::Admin,
            body: Some(schema(&mut generator, |g| g.subschema_for::<CreateCustomer>())),
            query: vec![],
            ok: (201, "The customer", Some(schema(&mut generator, |g| g.subschema_for::<CustomerView>()))),
            errors: &[400, 401, 403, 413, 415, 422, 503],
        },
        Operation {
            method: "get",
            path: "/api/customers/{id}",
            summary: "A customer",
            access: Access::Admin,
            body: None,
            query: vec![],
            ok: (200, "The customer", Some(schema(&mut generator, |g| g.subschema_for::<CustomerView>()))),
            errors: &[401, 403, 404, 503],
        },
        Operation {
            method: "get",
            path: "/api/status",
            summary: "What `jetsaga status` shows: each function's backlog, redeliveries and unpublished events",
            access: Access::Admin,
            body: None,
            query: vec![],
            ok: (200, "The saga's status", Some(schema(&mut generator, |g| g.subschema_for::<StatusReport>()))),
            errors: &[401, 403, 404, 503],
        },
        Operation {
            method: "get",
            path: "/api/dlq",
            summary: "The dead letters: messages a function gave up on, with the reason",
            access: Access::Admin,
            body: None,
            query: vec![],
            ok: (
                200,
                "The dead letters, oldest first",
                Some(schema(&mut generator, |g| g.subschema_for::<DeadLetterList>())),
            ),
            errors: &[401, 403, 503],
        },
        Operation {
            method: "post",
            path: "/api/dlq/{seq}/redrive",
            summary: "Send a dead letter again to its subject, then remove it (kept if that fails: 502)",
            access: Access::Admin,
            body: None,
            query: vec![],
            ok: (200, "Redriven", Some(schema(&mut generator, |g| g.subschema_for::<Redriven>()))),
            errors: &[400, 401, 403, 404, 502, 503],
        },
        Operation {
            method: "delete",
            path: "/api/dlq/{seq}",
            summary: "Remove a dead letter for good, without sending it again",
            access: Access::Admin,
            body: None,
            query: vec![],
            ok: (200, "Deleted", Some(schema(&mut generator, |g| g.subschema_for::<Deleted>()))),
            errors: &[400, 401, 403, 404, 503],
        },
        Operation {
            method: "get",
            path: "/api/throughput",
            summary: "Orders ended each second of the last minute, with p50/p99 latency from created to ended (as this gateway saw them since it started)",
            access: Access::Admin,
            body: None,
            query: vec![],
            ok: (
                200,
                "One entry a second, oldest first",
                Some(schema(&mut generator, |g| g.subschema_for::<ThroughputReport>())),
            ),
            errors: &[401, 403],
        },
        Operation {
            method: "get",
            path: "/healthz",
            summary: "The process runs",
            access: Access::Anyone,
            body: None,
            query: vec![],
            ok: (200, "Alive", Some(json!({"type": "object"}))),
            errors: &[],
        },
        Operation {
            method: "get",
            path: "/readyz",
            summary: "Connected to NATS, and the saga's streams exist",
            access: Access::Anyone,
            body: None,
            query: vec![],
            ok: (200, "Ready", Some(json!({"type": "object"}))),
            errors: &[503],
        },
        Operation {
            method: "get",
            path: "/metrics",
            summary: "Prometheus text: requests and latencies",
            access: Access::Anyone,
            body: None,
            query: vec![],
            ok: (200, "text/plain metrics", None),
            errors: &[],
        },
    ];
    let problem = json!({"$ref": "#/components/schemas/Problem"});
    let mut paths = Map::new();
    for op in operations {
        let mut parameters = op.query.clone();
        if op.path.contains("{seq}") {
            parameters.push(json!({"name": "seq", "in": "path", "required": true, "description": "The dead letter's sequence (`GET /api/dlq`)", "schema": {"type": "integer", "minimum": 1}}));
        }
        if op.path.contains("{id}") {
            parameters.push(json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "minLength": 1, "maxLength": 128}}));
        }
        let mut responses = Map::new();
        let (status, description, body) = op.ok;
        let mut ok = json!({"description": description});
        if let Some(body) = body {
            ok["content"] = json!({"application/json": {"schema": body}});
        } else if op.path.ends_with("/events") {
            // Before OpenAPI 3.2 (`itemSchema`), an event stream's `schema` describes one event.
            ok["content"] = json!({"text/event-stream": {"schema": sse_event()}});
        } else if op.path == "/metrics" {
            ok["content"] = json!({"text/plain": {"schema": {"type": "string"}}});
        } else if op.path == "/api/docs" {
            ok["content"] = json!({"text/html": {"schema": {"type": "string"}}});
        }
        responses.insert(status.to_string(), ok);
        // Every id in a path is checked first (1 to 128 characters, no control characters).
        let bad_id: &[u16] = if op.path.contains("{id}") && !op.errors.contains(&400) { &[400] } else { &[] };
        // Every state-changing request is refused from another site (403)
        // and as anything but JSON (415): see `crate::origin`.
        let cross_site: &[u16] = if op.method == "get" { &[] } else { &[403, 415] };
        // Every request is paced per client address (`crate::limits::Pace`).
        for error in op.errors.iter().chain(bad_id).chain(cross_site).chain(&[429]) {
            responses.insert(
                error.to_string(),
                json!({"description": reason(*error), "content": {"application/problem+json": {"schema": problem}}}),
            );
        }
        let mut operation = json!({
            "summary": op.summary,
            "operationId": format!("{}{}", op.method, op.path.replace(['/', '{', '}'], "_")),
            "responses": responses,
        });
        if !parameters.is_empty() {
            operation["parameters"] = Value::Array(parameters);
        }
        if let Some(body) = op.body {
            operation["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": body}}});
        }
        match op.access {
            Access::Anyone => {}
            Access::SignedIn | Access::Admin => {
                operation["security"] = json!([{"bearer": []}, {"cookie": []}]);
            }
        }
        if op.access == Access::Admin {
            operation["description"] = json!("Administrators only (403 for others).");
        }
        paths.entry(op.path.to_string()).or_insert_with(|| json!({}))[op.method] = operation;
    }
    let mut schemas = generator.take_definitions(true);
    schemas.insert("Problem".into(), schemars::schema_for!(Problem).to_value());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "jetsaga HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The order saga over HTTP: sign up, log in, order, follow and cancel orders; administrators run the shop. Errors are RFC 9457 problem documents."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": crate::auth::COOKIE}
            }
        }
    })
}

/// One server-sent event of an order's saga: `id` is the event's sequence in
/// the SAGA stream (send it back as `Last-Event-ID` to resume), `event` the
/// event's subject, `data` its envelope as JSON.
fn sse_event() -> Value {
    json!({
        "oneOf": [
            {
                "description": "One of the order's saga events",
                "type": "object",
                "required": ["id", "event", "data"],
                "properties": {
                    "id": {"type": "string", "pattern": "^[0-9]+$"},
                    "event": {"type": "string", "minLength": 1, "not": {"const": crate::live::END_EVENT}},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {
                            "type": "object",
                            "required": ["id", "type", "saga_key", "occurred_at", "data"],
                            "properties": {
                                "id": {"type": "string"},
                                "type": {"type": "string"},
                                "saga_key": {"type": "string", "description": "The order (called `order_id` before 2026-12-07)"},
                                "occurred_at": {"type": "string", "format": "date-time"},
                                "data": {"type": "object"}
                            }
                        }
                    }
                }
            },
            {
                "description": "The stream is over (sent once, a moment after the terminal event): close it",
                "type": "object",
                "required": ["event", "data"],
                "properties": {
                    "event": {"const": crate::live::END_EVENT},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {
                            "type": "object",
                            "required": ["order_id", "outcome"],
                            "properties": {
                                "order_id": {"type": "string"},
                                "outcome": {"enum": ["completed", "failed", "canceled"]}
                            }
                        }
                    }
                }
            }
        ]
    })
}

/// The checked-in document's text (pretty JSON and a newline).
pub fn text() -> String {
    let mut text = serde_json::to_string_pretty(&document()).expect("documents serialize");
    text.push('\n');
    text
}
