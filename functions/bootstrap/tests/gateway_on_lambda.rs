//! The HTTP gateway as a Lambda: the real bootstrap binary with
//! `JETSAGA_FUNCTION=gateway` under cargo-lambda's emulator, called through
//! the emulator's Function URL, against the saga on a real nats-server.

use std::time::Duration;

use jetsaga_events::{OrderStatus, SagaMode};
use jetsaga_tests::saga::{Backend, SETTLE, Saga, Setup};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The bootstrap binary cargo built for these tests.
const BOOTSTRAP: &str = env!("CARGO_BIN_EXE_jetsaga-bootstrap");

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_the_api_through_a_function_url() {
    let saga = Saga::start(Setup { backend: Backend::Sqlite, mode: SagaMode::Choreographed }).await;
    saga.product("p-a", 1250, 10).await;
    let mut lambda = jetsaga_local::lambda_local::start(BOOTSTRAP.into(), &Default::default(), None, "gw-").unwrap();
    jetsaga_local::lambda_local::spawn_gateway(
        &mut lambda,
        &saga.server.url(),
        "a test signing secret of at least 32 bytes",
    )
    .unwrap();
    let api = jetsaga_local::lambda_local::gateway_url(&lambda);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();

    // The first call waits for the bootstrap to poll the emulator.
    let signed = http
        .post(format!("{api}/api/users"))
        .json(&json!({"email": "ada@example.com", "password": PASSWORD, "name": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), StatusCode::CREATED, "{}", signed.text().await.unwrap());
    let login = http
        .post(format!("{api}/api/session"))
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("Secure"), "a Function URL is HTTPS: {cookie}");
    let session: Value = login.json().await.unwrap();
    let token = session["token"].as_str().unwrap().to_string();

    let anonymous = http.get(format!("{api}/api/me")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers()["content-type"], "application/problem+json");
    let me: Value = http.get(format!("{api}/api/me")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["email"], "ada@example.com");

    let placed = http
        .post(format!("{api}/api/orders"))
        .bearer_auth(&token)
        .json(&json!({"items": [{"product_id": "p-a", "quantity": 2}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), StatusCode::ACCEPTED);
    let placed: Value = placed.json().await.unwrap();
    let order_id = placed["order_id"].as_str().unwrap().to_string();
    let view = saga.client.wait_terminal(&order_id, SETTLE).await.unwrap();
    assert_eq!(view.status, OrderStatus::Completed, "{view:?}");
    let order: Value = http
        .get(format!("{api}/api/orders/{order_id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((order["status"].as_str(), order["total_cents"].as_u64()), (Some("completed"), Some(2500)), "{order}");

    // The saga's events as server-sent events, streamed through the Function URL.
    let live = http.get(format!("{api}/api/orders/{order_id}/events")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    assert_eq!(live.headers()["content-type"], "text/event-stream");
    let text = live.text().await.unwrap();
    let events: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(events.first(), Some(&"orders.evt.created"), "{text}");
    assert!(events.contains(&"orders.evt.completed"), "{text}");
    assert_eq!(events.last(), Some(&"end"), "the stream says it is over: {text}");
    saga.stop().await;
}
