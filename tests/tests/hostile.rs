//! Hostile and invalid input over the wire, against a real saga: nothing a
//! client sends can change an order it did not create or address, and
//! every refusal says what was wrong.

use std::time::Duration;

use jetsaga_events::{OrderStatus, SagaMode};
use jetsaga_tests::saga::{Backend, Saga, Setup};
use jetsaga_tests::stream::{messages, wait_drained, wait_until};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// A saga with one completed order of 2 × p-a (1000 cents each) for c-1.
async fn shop_with_a_completed_order(mode: SagaMode) -> (Saga, String) {
    let saga = Saga::start(Setup { backend: Backend::Sqlite, mode }).await;
    saga.product("p-a", 1000, 10).await;
    saga.customer("c-1", 100_000).await;
    let id = saga.order("c-1", &[("p-a", 2)]).await;
    assert_eq!(saga.finish(&id).await.status, OrderStatus::Completed);
    saga.expect_stock("p-a", (8, 0)).await;
    saga.expect_used_credit("c-1", 2000).await;
    (saga, id)
}

/// Waits until every function's consumer has nothing left to process.
async fn settle(saga: &Saga) {
    // (A function that subscribes to nothing has no consumer on the saga stream.)
    for function in saga.functions().into_iter().filter(|f| jetsaga_local::saga::subscribes(f)) {
        wait_drained(&saga.js, "SAGA", function, WAIT).await;
    }
}

/// What must still hold for the completed order after hostile input.
async fn the_completed_order_is_untouched(saga: &Saga, id: &str) {
    settle(saga).await;
    assert_eq!(saga.client.order(id).await.unwrap().status, OrderStatus::Completed);
    assert_eq!(saga.stock("p-a").await, (8, 0), "the order's stock stays sold");
    assert_eq!(saga.used_credit("c-1").await, 2000, "the order's credit stays used");
    // (Forged `orders.evt.failed` messages may sit in the stream; what counts is
    // that no function acted on them.)
    for compensation in ["inventory.evt.released", "customers.evt.credit_released", "payments.evt.refunded"] {
        assert!(saga.events_for(compensation, id).await.is_empty(), "{compensation} for {id}");
    }
}

async fn invalid_create_naming_an_existing_order(mode: SagaMode) {
    let (saga, id) = shop_with_a_completed_order(mode).await;
    let err = saga
        .client
        .command("orders.cmd.create", &json!({"order_id": id, "customer_id": "", "items": []}))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err, "invalid order: customer_id must not be empty; items must list at least one product (422)",
        "the refusal names every problem"
    );
    the_completed_order_is_untouched(&saga, &id).await;
    assert!(saga.events_for("orders.evt.failed", &id).await.is_empty(), "the refused create announced nothing");
    saga.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_create_naming_an_existing_order_changes_nothing_choreographed() {
    invalid_create_naming_an_existing_order(SagaMode::Choreographed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_create_naming_an_existing_order_changes_nothing_orchestrated() {
    invalid_create_naming_an_existing_order(SagaMode::Orchestrated).await;
}

fn forged_failure(order_id: &str, event_type: &str) -> String {
    json!({
        "id": "0193b1a2-7c4e-7d10-9f3b-2a6c1d0e4f51", "type": event_type, "order_id": order_id,
        "correlation_id": "forged", "occurred_at": "2026-11-22T01:00:00Z", "version": 1,
        "data": {"order_id": order_id, "reason": "forged", "step": "order"}
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_endpoints_refuse_envelopes() {
    let (saga, id) = shop_with_a_completed_order(SagaMode::Choreographed).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Jetsaga-Envelope", "1");
    let reply = saga
        .client
        .nats
        .request_with_headers("customers.cmd.create", headers, forged_failure(&id, "orders.evt.failed").into())
        .await
        .unwrap();
    let reply_headers = reply.headers.as_ref().expect("an error reply");
    assert_eq!(reply_headers.get("Nats-Service-Error-Code").unwrap().as_str(), "400");
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert!(body["error"].as_str().unwrap().contains("takes the bare command payload"), "{body}");
    the_completed_order_is_untouched(&saga, &id).await;
    saga.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_whose_type_is_not_its_subject_is_dead_lettered() {
    let (saga, id) = shop_with_a_completed_order(SagaMode::Choreographed).await;
    // Inventory consumes orders.evt.created; a forged `orders.evt.failed` on it
    // would release the completed order's stock if the type were trusted.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Jetsaga-Envelope", "1");
    let forged = forged_failure(&id, "orders.evt.failed");
    saga.js.publish_with_headers("orders.evt.created", headers, forged.into()).await.unwrap().await.unwrap();
    // An unknown envelope version is refused the same way.
    let mut future = serde_json::from_str::<serde_json::Value>(&forged_failure(&id, "orders.evt.failed")).unwrap();
    future["version"] = json!(2);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Jetsaga-Envelope", "1");
    saga.js.publish_with_headers("orders.evt.failed", headers, future.to_string().into()).await.unwrap().await.unwrap();
    // Events come from the runtime as envelopes, never as bare payloads.
    // (Each of these two reaches the four functions that follow failures.)
    let bare = json!({"order_id": id, "reason": "forged"}).to_string();
    saga.js.publish("orders.evt.failed", bare.into()).await.unwrap().await.unwrap();

    wait_until(WAIT, "the forgeries to be dead-lettered", || async {
        messages(&saga.js, "DLQ", None).await.len() == 9
    })
    .await;
    let reasons: Vec<String> =
        messages(&saga.js, "DLQ", None).await.iter().map(|m| m.header("Jetsaga-Dlq-Reason").unwrap()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("field `type`") && r.contains("expected \"orders.evt.created\"")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("field `version`") && r.contains("got 2")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("a bare payload on the event subject orders.evt.failed")), "{reasons:?}");
    the_completed_order_is_untouched(&saga, &id).await;
    saga.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_committed_while_the_stream_refuses_them_are_published_once_it_takes_them() {
    jetsaga_tests::scenarios::events_committed_while_the_stream_refuses_them_are_published_once_it_takes_them(Setup {
        backend: Backend::Sqlite,
        mode: SagaMode::Choreographed,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_bad_commands_costs_only_itself() {
    let (saga, _) = shop_with_a_completed_order(SagaMode::Choreographed).await;
    saga.product("p-good", 1000, 100).await;
    let nats = &saga.client.nats;
    let line = |product: &str, quantity: u64| json!({"product_id": product, "quantity": quantity});
    let bad: Vec<String> = vec![
        "not json".into(),
        json!({"customer_id": 7}).to_string(),
        // Oversized: thousands of lines, a huge id.
        json!({"customer_id": "c-1", "items": (0..5000).map(|i| line(&format!("p-{i}"), 1)).collect::<Vec<_>>()})
            .to_string(),
        json!({"order_id": "x".repeat(100_000), "customer_id": "c-1", "items": [line("p-a", 1)]}).to_string(),
        // Within the size limit but out of bounds.
        json!({"customer_id": "c-1", "items": (0..150).map(|i| line(&format!("p-{i}"), 1)).collect::<Vec<_>>()})
            .to_string(),
        json!({"customer_id": "c-1", "items": [line("p-a", u64::from(u32::MAX))]}).to_string(),
        json!({"order_id": "o\u{0}", "customer_id": "c-1", "items": [line("p-a", 1)]}).to_string(),
        // Valid, but for nobody: fails in the saga and releases what it held.
        json!({"customer_id": "c-ghost", "items": [line("p-a", 1)]}).to_string(),
    ];
    for i in 0..160 {
        nats.publish("orders.cmd.create", bad[i % bad.len()].clone().into()).await.unwrap();
    }
    // Forgeries on the stream, too.
    for _ in 0..20 {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Jetsaga-Envelope", "1");
        let forged = forged_failure("someone-elses-order", "orders.evt.failed");
        saga.js.publish_with_headers("orders.evt.created", headers, forged.into()).await.unwrap().await.unwrap();
    }
    nats.flush().await.unwrap();

    let started = std::time::Instant::now();
    let id = saga.order("c-1", &[("p-good", 1)]).await;
    assert_eq!(saga.finish(&id).await.status, OrderStatus::Completed);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "the good order took {took:?} behind the bad ones");

    // Oversized requests are answered with what is accepted.
    let reply = nats.request("orders.cmd.create", bad[2].clone().into()).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body["code"], 400);
    assert!(body["error"].as_str().unwrap().ends_with("bytes; at most 65536 are accepted"), "{body}");
    let reply = nats.request("orders.cmd.create", bad[4].clone().into()).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body["error"], "invalid order: items must list at most 100 lines, got 150", "{body}");
    // Nothing held for the failed ones, nothing lost for the good one.
    settle(&saga).await;
    saga.expect_stock("p-a", (8, 0)).await;
    saga.expect_stock("p-good", (99, 0)).await;
    saga.expect_used_credit("c-1", 3000).await;
    saga.stop().await;
}

/// Sends a command with a `Nats-Msg-Id` and returns (error code, body).
async fn request_with_id(
    saga: &Saga,
    subject: &str,
    id: &str,
    body: serde_json::Value,
) -> (Option<u16>, serde_json::Value) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    let reply =
        saga.client.nats.request_with_headers(subject.to_string(), headers, body.to_string().into()).await.unwrap();
    let code =
        reply.headers.as_ref().and_then(|h| h.get("Nats-Service-Error-Code")).and_then(|v| v.as_str().parse().ok());
    (code, serde_json::from_slice(&reply.payload).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_commands_get_the_first_answer_and_a_reused_id_is_a_conflict() {
    let (saga, completed) = shop_with_a_completed_order(SagaMode::Choreographed).await;
    // Refused, then retried with the same id: refused the same way, not "OK".
    let cancel = json!({"order_id": completed});
    let first = request_with_id(&saga, "orders.cmd.cancel", "cancel-1", cancel.clone()).await;
    assert_eq!(first.0, Some(422), "{}", first.1);
    assert_eq!(first.1["error"], format!("order {completed} is already completed"));
    assert_eq!(request_with_id(&saga, "orders.cmd.cancel", "cancel-1", cancel).await, first);

    // Accepted, then retried: the same order, the same answer, one order.
    let create = json!({"customer_id": "c-1", "items": [{"product_id": "p-a", "quantity": 1}]});
    let (code, accepted) = request_with_id(&saga, "orders.cmd.create", "create-1", create.clone()).await;
    assert_eq!(code, None, "{accepted}");
    let order_id = accepted["order_id"].as_str().unwrap().to_string();
    assert_eq!(order_id, "create-1", "without an order_id the command's id names the order");
    let (code, again) = request_with_id(&saga, "orders.cmd.create", "create-1", create).await;
    assert_eq!((code, &again["order_id"], &again["events"]), (None, &accepted["order_id"], &accepted["events"]));
    assert_eq!(saga.finish(&order_id).await.status, OrderStatus::Completed);
    assert_eq!(saga.events_for("orders.evt.created", &order_id).await.len(), 1);

    // The same id with a different payload: 409, and nothing happens.
    let other = json!({"customer_id": "c-1", "items": [{"product_id": "p-a", "quantity": 5}]});
    let (code, conflict) = request_with_id(&saga, "orders.cmd.create", "create-1", other).await;
    assert_eq!(code, Some(409), "{conflict}");
    let reason = conflict["error"].as_str().unwrap();
    assert!(reason.contains("create-1 was already used by a different orders.cmd.create"), "{reason}");
    settle(&saga).await;
    saga.expect_stock("p-a", (7, 0)).await;
    saga.stop().await;
}

/// An error quoting a client's text holds whatever the client sent: a
/// query for an id with a newline is answered (404), not left unanswered
/// because the message broke the reply's error header (found by
/// schemathesis through the HTTP API).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_quoting_control_characters_are_still_answered() {
    let saga = Saga::start(Setup { backend: Backend::Sqlite, mode: SagaMode::Choreographed }).await;
    let started = std::time::Instant::now();
    let asked =
        saga.client.request("orders.query.get", json!({"order_id": "a\nb\r\u{1}c"}).to_string().into_bytes()).await;
    let error = asked.unwrap_err().downcast::<jetsaga_local::client::RequestError>().expect("a service error");
    assert_eq!(error.code, 404);
    assert_eq!(error.message, "no order a\nb\r\u{1}c", "the body keeps the message whole");
    assert!(started.elapsed() < Duration::from_secs(5), "answered at once, took {:?}", started.elapsed());
    saga.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_command_still_reaches_the_dlq_with_only_its_trace_headers() {
    let saga = Saga::start(Setup { backend: Backend::Sqlite, mode: SagaMode::Choreographed }).await;
    // A header that would make the DLQ stream refuse a copy of the message
    // (it is not the COMMANDS stream): the letter would never be stored.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Expected-Stream", "COMMANDS");
    headers.insert("Jetsaga-Something", "else");
    headers.insert("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    // Sent as `nats pub` sends it: the command stream keeps it, the order function refuses it.
    let nats = saga.server.connect().await;
    for _ in 0..5 {
        nats.publish_with_headers("orders.cmd.create", headers.clone(), "{not json".into()).await.unwrap();
    }
    nats.flush().await.unwrap();
    wait_until(WAIT, "five dead letters", || async { messages(&saga.js, "DLQ", None).await.len() == 5 }).await;
    for letter in messages(&saga.js, "DLQ", None).await {
        assert_eq!(letter.header("Nats-Expected-Stream"), None, "only allowed headers are kept");
        assert_eq!(letter.header("Jetsaga-Something"), None);
        assert_eq!(
            letter.header("traceparent").as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
    }
    // The DLQ is bounded and pushes nothing out to make room.
    let info = saga.js.get_stream("DLQ").await.unwrap().info().await.unwrap().config.clone();
    assert!(info.max_bytes > 0 && info.max_age > Duration::ZERO, "{info:?}");
    assert_eq!(info.discard, async_nats::jetstream::stream::DiscardPolicy::New);
    saga.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_sends_a_letter_only_where_its_function_takes_messages_in() {
    let (saga, id) = shop_with_a_completed_order(SagaMode::Choreographed).await;
    let js = &saga.js;
    let config = jetsaga_local::saga::runtime_config(&jetsaga_local::saga::SagaOptions::default());
    let forge = |function: &str, subject: &str, origin: &str| {
        jetsaga_jetstream::dlq::headers(None, function, "forged", 1, subject, origin)
    };
    let completed = forged_failure(&id, "orders.evt.completed");
    // Forged letters: an event inventory never takes in, a letter naming
    // another function than its DLQ subject, an outbox letter, one that
    // inventory does take in but that is not what its origin holds (the
    // issue's confused deputy), and an event said to have come by request.
    let forged = [
        ("dlq.inventory", forge("inventory", "users.evt.signed_up", "SAGA/1")),
        ("dlq.inventory", forge("order", "orders.cmd.create", "COMMANDS/1")),
        ("dlq.order", forge("order", "orders.cmd.create", "outbox/x")),
        ("dlq.inventory", forge("inventory", "orders.evt.completed", "SAGA/2")),
        ("dlq.inventory", forge("inventory", "orders.evt.completed", "request/x")),
    ];
    let mut sequences = Vec::new();
    for (subject, headers) in forged {
        let ack = js.publish_with_headers(subject, headers, completed.clone().into()).await.unwrap().await.unwrap();
        sequences.push(ack.sequence);
    }
    let before = saga.events("orders.evt.completed").await.len();
    let mut reasons = Vec::new();
    for sequence in &sequences {
        match jetsaga_jetstream::ops::redrive(&saga.server.connect().await, js, &config, *sequence).await {
            Err(e @ jetsaga_jetstream::ops::OpsError::Refused { .. }) => {
                assert_eq!(e.code(), 403);
                reasons.push(e.to_string());
            }
            other => panic!("redrive of forged letter {sequence} was not refused: {other:?}"),
        }
    }
    assert!(reasons[0].contains("inventory does not take messages on \"users.evt.signed_up\""), "{reasons:?}");
    assert!(reasons[1].contains("stored on dlq.inventory but names the function \"order\""), "{reasons:?}");
    assert!(reasons[2].contains("origin \"outbox/x\""), "{reasons:?}");
    assert!(reasons[3].contains("it is not what SAGA/2 holds"), "{reasons:?}");
    assert!(reasons[4].contains("orders.evt.completed is not a command"), "{reasons:?}");
    assert_eq!(saga.events("orders.evt.completed").await.len(), before, "nothing was published");
    assert_eq!(messages(js, "DLQ", None).await.len(), 5, "refused letters are kept");

    // A letter that is exactly its original (as if inventory had given up
    // on the real completion) goes back to inventory, which processes it as
    // itself: it had taken it already, so it answers "repeated" and nothing
    // changes. The letter is gone, and no event was published again.
    let original = messages(js, "SAGA", Some("orders.evt.completed")).await.into_iter().next().unwrap();
    let headers = forge("inventory", "orders.evt.completed", &format!("SAGA/{}", original.sequence));
    let letter =
        js.publish_with_headers("dlq.inventory", headers, original.payload.clone()).await.unwrap().await.unwrap();
    let redriven = jetsaga_jetstream::ops::redrive(&saga.server.connect().await, js, &config, letter.sequence)
        .await
        .expect("a true letter is redriven");
    assert!(redriven.answer.starts_with("processed by inventory:"), "{}", redriven.answer);
    assert!(redriven.answer.contains("\"repeated\":true"), "{}", redriven.answer);
    assert_eq!(saga.events("orders.evt.completed").await.len(), before, "processed, not published again");
    assert_eq!(messages(js, "DLQ", None).await.len(), 5, "the redriven letter is gone");
    the_completed_order_is_untouched(&saga, &id).await;
    saga.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_cannot_publish_an_event_its_function_does_not_emit() {
    let (saga, id) = shop_with_a_completed_order(SagaMode::Choreographed).await;
    // 2 × $10 completed: loyalty awarded its points (one per dollar).
    saga.expect_loyalty("c-1", (20, 0)).await;
    // With the order function's right to schedule (a leaked credential), a
    // schedule that the server would publish as payment's refund.
    let refund = json!({
        "id": "0193b1a2-7c4e-7d10-9f3b-2a6c1d0e4f52", "type": "payments.evt.refunded", "order_id": id,
        "correlation_id": "forged", "occurred_at": "2026-11-22T01:00:00Z", "version": 1,
        "data": {"order_id": id, "amount_cents": 2000, "payment_id": "forged"}
    });
    let at = chrono::Utc::now() + chrono::Duration::milliseconds(500);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Jetsaga-Envelope", "1");
    headers
        .insert("Nats-Schedule", format!("@at {}", at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)).as_str());
    headers.insert("Nats-Schedule-Target", "payments.evt.refunded");
    let schedule = jetsaga_core::schedule::name_for("order", "forged");
    saga.js.publish_with_headers(schedule, headers, refund.to_string().into()).await.unwrap().await.unwrap();
    wait_until(WAIT, "the fired forgery to be dead-lettered by loyalty", || async {
        messages(&saga.js, "DLQ", None)
            .await
            .iter()
            .any(|m| m.header("Jetsaga-Dlq-Function").as_deref() == Some("loyalty"))
    })
    .await;
    let letter = messages(&saga.js, "DLQ", None).await.into_iter().next().unwrap();
    let reason = letter.header("Jetsaga-Dlq-Reason").unwrap();
    assert!(
        reason.contains("published payments.evt.refunded, which the function that schedules there does not emit"),
        "{reason}"
    );
    saga.expect_loyalty("c-1", (20, 0)).await;
    // (The forgery itself is in the stream: the server put it there. What counts is that nobody took it.)
    settle(&saga).await;
    assert_eq!(saga.client.order(&id).await.unwrap().status, OrderStatus::Completed);
    saga.stop().await;
}
