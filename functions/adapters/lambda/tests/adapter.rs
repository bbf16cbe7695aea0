//! Every saga function called through the Lambda adapter in-process, with
//! JSON payloads as the bridge (or `cargo lambda invoke`) sends them.

use std::sync::Arc;

use jetsaga_core::testing::envelope_for;
use jetsaga_core::{Engine, Function, MemoryStore};
use jetsaga_events::*;
use jetsaga_lambda::handle;
use jetsaga_lambda::wire::{Request, Response, Result as RecordResult};
use serde_json::json;

fn engine(function: impl Function) -> Engine {
    Engine::new(Arc::new(function), Arc::new(MemoryStore::new()))
}

/// Sends a batch as the JSON a Lambda receives and returns the JSON it answers.
async fn invoke(engine: &Engine, request: serde_json::Value) -> serde_json::Value {
    let request: Request = serde_json::from_value(request).expect("the request decodes");
    let response = handle(engine, request).await.expect("the invocation succeeds");
    serde_json::to_value(response).unwrap()
}

fn batch<P: Payload>(payloads: &[P]) -> serde_json::Value {
    let records: Vec<serde_json::Value> =
        payloads.iter().map(|p| json!({"envelope": envelope_for(p), "traceparent": null})).collect();
    json!({"kind": "batch", "records": records})
}

fn statuses(response: &serde_json::Value) -> Vec<String> {
    response["results"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap().to_string()).collect()
}

fn emitted(response: &serde_json::Value, i: usize) -> Vec<String> {
    response["results"][i]["events"]
        .as_array()
        .map(|events| events.iter().map(|e| e["subject"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn order_accepts_creates_and_reports_validation_failures() {
    let engine = engine(jetsaga_order::Orders::default());
    let good = CreateOrder {
        order_id: Some("o-1".into()),
        customer_id: "c".into(),
        items: vec![OrderItem { product_id: "p".into(), quantity: 1 }],
    };
    let bad = CreateOrder { order_id: Some("o-2".into()), customer_id: "c".into(), items: vec![] };
    let response = invoke(&engine, batch(&[good, bad])).await;
    assert_eq!(statuses(&response), ["processed", "rejected"]);
    // The order's deadline travels like any event, its schedule a field of
    // its own: which schedule it waits in, and when (the bridge turns that
    // into headers).
    let subjects = emitted(&response, 0);
    assert_eq!(subjects, ["orders.evt.created", "orders.evt.deadline_passed"]);
    let schedule = &response["results"][0]["events"][1]["schedule"];
    assert_eq!(schedule["kind"], "at", "{schedule}");
    assert_eq!(schedule["name"], jetsaga_core::schedule::name_for("order", "o-1"), "{schedule}");
    assert!(schedule["at"].as_str().is_some_and(|at| at.ends_with('Z')), "{schedule}");
    assert_eq!(response["results"][0]["events"][0].get("schedule"), None, "a plain event has none");
    assert_eq!(response["results"][1]["reason"], "invalid order: items must list at least one product");
    assert_eq!(response["batchItemFailures"], json!([]));
    // Events carry the envelope as JSON text and their de-duplication id.
    let event = &response["results"][0]["events"][0];
    let envelope = Envelope::decode(event["envelope"].as_str().unwrap().as_bytes()).unwrap();
    assert_eq!(envelope.id, event["id"].as_str().unwrap());

    let query =
        invoke(&engine, json!({"kind": "query", "subject": "orders.query.get", "request": {"order_id": "o-1"}})).await;
    assert_eq!(query["reply"]["status"], "pending");
    let missing =
        invoke(&engine, json!({"kind": "query", "subject": "orders.query.get", "request": {"order_id": "nope"}})).await;
    assert_eq!(missing["error"], json!({"code": 404, "error": "no order nope"}));
}

#[tokio::test]
async fn inventory_reserves_and_a_malformed_record_fails_alone() {
    let engine = engine(jetsaga_inventory::Inventory::default());
    let upsert = UpsertProduct { product_id: "p".into(), name: "P".into(), price_cents: 150, stock: 2 };
    invoke(&engine, batch(&[upsert])).await;
    let created = OrderCreated {
        order_id: "o-1".into(),
        customer_id: "c".into(),
        items: vec![OrderItem { product_id: "p".into(), quantity: 2 }],
    };
    let mut request = batch(&[created]);
    let mut broken = request["records"][0].clone();
    broken["envelope"]["id"] = json!("broken-1");
    broken["envelope"]["data"] = json!({"order_id": 7});
    request["records"].as_array_mut().unwrap().insert(0, broken);
    let response = invoke(&engine, request).await;
    assert_eq!(statuses(&response), ["dead_letter", "processed"]);
    assert_eq!(emitted(&response, 1), ["inventory.evt.reserved"]);
    assert_eq!(response["batchItemFailures"], json!([{"itemIdentifier": "broken-1"}]));
    let products =
        invoke(&engine, json!({"kind": "query", "subject": "inventory.query.products", "request": {}})).await;
    assert_eq!(products["reply"]["products"][0]["reserved"], 2);
}

#[tokio::test]
async fn customer_payment_and_shipping_answer_through_the_adapter() {
    let customer = engine(jetsaga_customer::CustomerCredit::default());
    invoke(&customer, batch(&[CreateCustomer { customer_id: "c".into(), name: "C".into(), credit_limit_cents: 100 }]))
        .await;
    let reserved = InventoryReserved { order_id: "o".into(), customer_id: "c".into(), lines: vec![], total_cents: 150 };
    let response = invoke(&customer, batch(&[reserved])).await;
    assert_eq!(statuses(&response), ["rejected"]);
    assert_eq!(emitted(&response, 0), ["customers.evt.credit_rejected"]);

    let payment = engine(jetsaga_payment::Payments::default());
    let held = CreditReserved { order_id: "o".into(), customer_id: "c".into(), amount_cents: 99 };
    let response = invoke(&payment, batch(&[held])).await;
    assert_eq!(emitted(&response, 0), ["payments.evt.failed"]);

    let shipping = engine(jetsaga_shipping::Shipping::default());
    let paid =
        PaymentExecuted { order_id: "o".into(), customer_id: "c".into(), amount_cents: 100, payment_id: "p".into() };
    let response = invoke(&shipping, batch(&[paid])).await;
    assert_eq!(emitted(&response, 0), ["shipping.evt.scheduled"]);
}

#[tokio::test]
async fn a_redelivered_batch_returns_the_same_events_and_changes_nothing() {
    let engine = engine(jetsaga_order::Orders { mode: SagaMode::Orchestrated, ..Default::default() });
    let create = CreateOrder {
        order_id: Some("o-1".into()),
        customer_id: "c".into(),
        items: vec![OrderItem { product_id: "p".into(), quantity: 1 }],
    };
    let request = batch(&[create]);
    let first: Response = serde_json::from_value(invoke(&engine, request.clone()).await).unwrap();
    let again: Response = serde_json::from_value(invoke(&engine, request).await).unwrap();
    let Response::Batch { results: first, .. } = first else { panic!() };
    let Response::Batch { results: again, .. } = again else { panic!() };
    let RecordResult::Processed { events, .. } = &first[0] else { panic!("{first:?}") };
    let subjects: Vec<&str> = events.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(subjects, ["orders.evt.created", "orders.evt.deadline_passed", "inventory.cmd.reserve"]);
    let schedule = events[1].schedule.as_ref().map(|s| s.name().to_string());
    assert_eq!(schedule, Some(jetsaga_core::schedule::name_for("order", "o-1")));
    // Not marked published yet, so the same events come back, with how it went the first time.
    let RecordResult::Repeated { events: again_events, receipt, .. } = &again[0] else { panic!("{again:?}") };
    assert_eq!(again_events, events);
    assert_eq!(receipt.events, ["orders.evt.created", "inventory.cmd.reserve"]);
    assert_eq!(receipt.saga_key.as_deref(), Some("o-1"));
}

#[tokio::test]
async fn the_outbox_relay_reads_and_clears_what_was_committed_but_not_published() {
    let engine = engine(jetsaga_order::Orders::default());
    let create = CreateOrder {
        order_id: Some("o-1".into()),
        customer_id: "c".into(),
        items: vec![OrderItem { product_id: "p".into(), quantity: 1 }],
    };
    let response = invoke(&engine, batch(&[create])).await;
    let id = response["results"][0]["events"][0]["id"].as_str().unwrap().to_string();
    // The bridge died before publishing: the relay asks the function for its outbox.
    let outbox = invoke(&engine, json!({"kind": "outbox", "limit": 10})).await;
    assert_eq!(outbox["kind"], "outbox");
    // The created event and the deadline's schedule.
    assert_eq!(outbox["events"].as_array().unwrap().len(), 2, "{outbox}");
    assert_eq!(outbox["events"][0]["id"], id.as_str());
    assert_eq!(outbox["events"][0]["subject"], "orders.evt.created");
    let schedule_id = outbox["events"][1]["id"].clone();
    let marked = invoke(&engine, json!({"kind": "mark_published", "ids": [id, schedule_id]})).await;
    assert_eq!(marked, json!({"kind": "marked"}));
    let outbox = invoke(&engine, json!({"kind": "outbox", "limit": 10})).await;
    assert_eq!(outbox["events"], json!([]));
}
