//! The HTTP API against a real nats-server running the whole saga: the
//! `curl` flow of the README, and the statuses a client can rely on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jetsaga_events::{OrderStatus, SagaMode};
use jetsaga_http::{Gateway, Keys};
use jetsaga_tests::saga::{Backend, SETTLE, Saga, Setup};
use jetsaga_tests::stream::wait_until;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The `jetsaga` binary's allocator, so that the memory figures of the
/// hostile-load test are what a gateway would use. (With glibc's, each
/// Argon2 hash's freed 19 MiB stays in an arena: this process grew to
/// about 240 MiB over ten log-ins and stayed there; the binary, on mimalloc,
/// stays at 63 MiB over 25.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SECRET: &[u8] = b"a test signing secret of at least 32 bytes";
const PASSWORD: &str = "correct horse battery staple";

struct Api {
    base: String,
    http: reqwest::Client,
    saga: Saga,
}

impl Api {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A saga and a gateway, configured by `configure`.
    async fn start_with(configure: impl FnOnce(&mut Gateway)) -> Self {
        let saga = Saga::start(Setup { backend: Backend::Sqlite, mode: SagaMode::Choreographed }).await;
        Self::over(saga, configure).await
    }

    /// A gateway, configured by `configure`, over `saga`.
    async fn over(saga: Saga, configure: impl FnOnce(&mut Gateway)) -> Self {
        jetsaga_tests::init_tracing();
        saga.product("p-a", 1250, 10).await;
        let mut gateway = Gateway::new(saga.server.connect().await, Keys::from_secret(SECRET).unwrap());
        configure(&mut gateway);
        let gateway = Arc::new(gateway);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        jetsaga_http::start_upkeep(&gateway);
        let app = jetsaga_http::router(gateway).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, http: reqwest::Client::new(), saga }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> reqwest::Response {
        let mut request = self.http.post(self.url(path)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    async fn sign_up(&self, email: &str) -> Value {
        let response =
            self.post("/api/users", None, json!({"email": email, "password": PASSWORD, "name": "Ada"})).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    /// Signs up and logs in `email`, waits for their customer, and places
    /// one order of p-a; returns the token and the order id.
    async fn shopper_with_an_order(&self, email: &str) -> (String, String) {
        let user = self.sign_up(email).await;
        let (token, _) = self.log_in(email).await;
        let customer = user["customer_id"].as_str().unwrap().to_string();
        wait_until(SETTLE, "the shopper's customer", || async { self.saga.client.customer(&customer).await.is_ok() })
            .await;
        let order = json!({"items": [{"product_id": "p-a", "quantity": 1}]});
        let placed = self.post("/api/orders", Some(&token), order).await;
        assert_eq!(placed.status(), StatusCode::ACCEPTED);
        let id = placed.json::<Value>().await.unwrap()["order_id"].as_str().unwrap().to_string();
        (token, id)
    }

    /// Logs in; returns the token and the Set-Cookie header.
    async fn log_in(&self, email: &str) -> (String, String) {
        let response = self.post("/api/session", None, json!({"email": email, "password": PASSWORD})).await;
        assert_eq!(response.status(), StatusCode::OK);
        let cookie = response.headers()["set-cookie"].to_str().unwrap().to_string();
        let body: Value = response.json().await.unwrap();
        (body["token"].as_str().unwrap().to_string(), cookie)
    }
}

/// The events of a server-sent event stream: (id, event, data).
fn sse(text: &str) -> Vec<(u64, String, String)> {
    text.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(str::to_string);
            Some((field("id:")?.trim().parse().ok()?, field("event:")?.trim().to_string(), field("data:")?))
        })
        .collect()
}

/// Asserts a problem document with this status; returns it.
async fn problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_log_in_order_and_follow_it_over_http() {
    let api = Api::start().await;
    let ada = api.sign_up("Ada@Example.com").await;
    assert_eq!(ada["email"], "ada@example.com");
    assert!(ada.get("password_hash").is_none(), "{ada}");
    let again =
        api.post("/api/users", None, json!({"email": "ada@example.com", "password": PASSWORD, "name": "A"})).await;
    let again = problem(again, StatusCode::CONFLICT).await;
    assert_eq!(
        (again["detail"].as_str(), again["field"].as_str()),
        (Some("ada@example.com is already registered"), Some("email"))
    );

    let (token, cookie) = api.log_in("ada@example.com").await;
    assert!(
        cookie.starts_with("jetsaga_session=") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let me: Value =
        api.http.get(api.url("/api/me")).header("cookie", session).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["user_id"], ada["user_id"], "the cookie is a session");
    let me: Value = api.get("/api/me", Some(&token)).await.json().await.unwrap();
    assert_eq!(me["customer_id"], ada["customer_id"], "and so is the Bearer token");

    let products: Value = api.get("/api/products", None).await.json().await.unwrap();
    assert_eq!(products["products"][0]["product_id"], "p-a");

    // The customer comes from the session; the same Idempotency-Key makes one order.
    wait_until(SETTLE, "ada's customer", || async {
        api.saga.client.customer(ada["customer_id"].as_str().unwrap()).await.is_ok()
    })
    .await;
    let order = json!({"items": [{"product_id": "p-a", "quantity": 2}]});
    let create =
        || api.http.post(api.url("/api/orders")).bearer_auth(&token).header("Idempotency-Key", "basket-1").json(&order);
    let first = create().send().await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let location = first.headers()["location"].to_str().unwrap().to_string();
    let first: Value = first.json().await.unwrap();
    let second: Value = create().send().await.unwrap().json().await.unwrap();
    assert_eq!(first["order_id"], second["order_id"], "one order for one key");
    assert_eq!(location, format!("/api/orders/{}", first["order_id"].as_str().unwrap()));
    let other_items = api
        .http
        .post(api.url("/api/orders"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "basket-1")
        .json(&json!({"items": [{"product_id": "p-a", "quantity": 3}]}))
        .send()
        .await
        .unwrap();
    problem(other_items, StatusCode::CONFLICT).await;

    // Live: the saga's events as they happen, in order; after the terminal
    // one, what follows it for a moment (stock consumed, points), then `end`.
    let live = api.http.get(api.url(&format!("{location}/events"))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(live.headers()["content-type"], "text/event-stream");
    let text = live.text().await.unwrap();
    let end = format!(
        "event: end\ndata: {{\"order_id\":\"{}\",\"outcome\":\"completed\"}}",
        first["order_id"].as_str().unwrap()
    );
    assert!(text.trim_end().ends_with(&end), "the stream says it is over, and how: {text}");
    let events = sse(&text);
    let types: Vec<&str> = events.iter().map(|(_, t, _)| t.as_str()).collect();
    assert_eq!(types.first(), Some(&"orders.evt.created"), "{types:?}");
    let completed = types.iter().position(|t| *t == "orders.evt.completed").expect("the terminal event");
    for step in
        ["inventory.evt.reserved", "customers.evt.credit_reserved", "payments.evt.executed", "shipping.evt.scheduled"]
    {
        assert_eq!(types.iter().filter(|t| **t == step).count(), 1, "{step} once in {types:?}");
        assert!(types.iter().position(|t| *t == step) < Some(completed), "{step} before the end: {types:?}");
    }
    assert!(types.contains(&"inventory.evt.consumed"), "what follows the end is streamed too: {types:?}");
    assert!(events.windows(2).all(|w| w[0].0 < w[1].0), "ids are increasing stream sequences");
    assert!(events.iter().all(|(_, _, data)| data.contains(first["order_id"].as_str().unwrap())));
    // A reconnect with Last-Event-ID gets what followed, nothing twice.
    let resumed = api
        .http
        .get(api.url(&format!("{location}/events")))
        .bearer_auth(&token)
        .header("Last-Event-ID", events[2].0.to_string())
        .send()
        .await
        .unwrap();
    let rest = sse(&resumed.text().await.unwrap());
    assert_eq!(rest, events[3..].to_vec(), "the rest, exactly once");

    let mut view = Value::Null;
    for _ in 0..100 {
        view = api.get(&location, Some(&token)).await.json().await.unwrap();
        if view["status"] == json!(OrderStatus::Completed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(view["status"], "completed", "{view}");
    assert_eq!(view["total_cents"], 2500);

    // The gateway counts how orders end.
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = api.get("/metrics", None).await.text().await.unwrap();
        if metrics.contains(r#"jetsaga_saga_outcomes_total{outcome="completed"} 1"#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metrics.contains(r#"jetsaga_saga_outcomes_total{outcome="completed"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"jetsaga_saga_outcomes_total{outcome="failed"} 0"#));

    // Her orders, newest first; others' never.
    let mine: Value = api.get("/api/orders?limit=10", Some(&token)).await.json().await.unwrap();
    assert_eq!(mine["orders"].as_array().map(Vec::len), Some(1), "{mine}");
    assert_eq!(mine["orders"][0]["order_id"], first["order_id"]);
    let completed: Value = api.get("/api/orders?status=completed", Some(&token)).await.json().await.unwrap();
    assert_eq!(completed["orders"].as_array().map(Vec::len), Some(1));
    let failed: Value = api.get("/api/orders?status=failed", Some(&token)).await.json().await.unwrap();
    assert_eq!(failed["orders"], json!([]));
    problem(api.get("/api/orders?limit=0", Some(&token)).await, StatusCode::BAD_REQUEST).await;
    problem(api.get("/api/orders?status=lost", Some(&token)).await, StatusCode::BAD_REQUEST).await;

    // Another user cannot tell the order exists.
    api.sign_up("bob@example.com").await;
    let (bob, _) = api.log_in("bob@example.com").await;
    let peek = problem(api.get(&location, Some(&bob)).await, StatusCode::NOT_FOUND).await;
    let missing = problem(api.get("/api/orders/o-none", Some(&bob)).await, StatusCode::NOT_FOUND).await;
    assert_eq!(peek["detail"].as_str().map(|d| d.starts_with("no order ")), Some(true));
    assert_eq!(missing["title"], peek["title"]);
    problem(api.post(&format!("{location}/cancel"), Some(&bob), json!({})).await, StatusCode::NOT_FOUND).await;
    problem(api.get(&format!("{location}/events"), Some(&bob)).await, StatusCode::NOT_FOUND).await;
    let bobs: Value = api.get("/api/orders", Some(&bob)).await.json().await.unwrap();
    assert_eq!(bobs["orders"], json!([]), "bob sees none of ada's orders");
    // Its owner may try: a completed order refuses, with the reason.
    let refused = problem(
        api.post(&format!("{location}/cancel"), Some(&token), json!({"reason": "late"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(refused["detail"].as_str().unwrap().ends_with("is already completed"), "{refused}");
    api.saga.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_see_every_saga_and_run_the_shop_and_customers_may_not() {
    let api = Api::start().await;
    api.sign_up("ada@example.com").await;
    api.sign_up("root@example.com").await;
    let (ada, _) = api.log_in("ada@example.com").await;
    let (root, _) = api.log_in("root@example.com").await;
    let product = json!({"name": "Lamp", "price_cents": 3000, "stock": 4});
    let put = |token: &str| api.http.put(api.url("/api/products/p-lamp")).bearer_auth(token).json(&product).send();
    for path in ["/api/sagas", "/api/customers", "/api/customers/c-1"] {
        problem(api.get(path, Some(&ada)).await, StatusCode::FORBIDDEN).await;
    }
    problem(put(&ada).await.unwrap(), StatusCode::FORBIDDEN).await;

    // The first admin is made from the command line (`jetsaga users grant-admin`).
    let grant = jetsaga_events::SetRole { email: "root@example.com".into(), role: jetsaga_events::Role::Admin };
    api.saga.client.command(jetsaga_events::subjects::USERS_CMD_SET_ROLE, &grant).await.unwrap();
    let lamp: Value = put(&root).await.unwrap().json().await.unwrap();
    assert_eq!((lamp["product_id"].as_str(), lamp["stock"].as_u64()), (Some("p-lamp"), Some(4)));
    let created = api
        .post(
            "/api/customers",
            Some(&root),
            json!({"customer_id": "c-shop", "name": "Shop", "credit_limit_cents": 500}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let shop: Value = api.get("/api/customers/c-shop", Some(&root)).await.json().await.unwrap();
    assert_eq!(shop["credit_limit_cents"], 500);
    let invalid =
        api.post("/api/customers", Some(&root), json!({"customer_id": "", "name": "", "credit_limit_cents": 1})).await;
    let invalid = problem(invalid, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(invalid["detail"].as_str().unwrap().contains("customer_id must not be empty"), "{invalid}");

    let order = json!({"items": [{"product_id": "p-lamp", "quantity": 1}]});
    let placed: Value = api.post("/api/orders", Some(&ada), order).await.json().await.unwrap();
    let all: Value = api.get("/api/sagas?limit=50", Some(&root)).await.json().await.unwrap();
    assert!(all["orders"].as_array().unwrap().iter().any(|o| o["order_id"] == placed["order_id"]), "{all}");
    let order: Value = api.get(placed["href"].as_str().unwrap(), Some(&root)).await.json().await.unwrap();
    assert_eq!(order["order_id"], placed["order_id"], "admins see any order");
    // A time range: the order is in the minute around its creation, not after it.
    let created = chrono::DateTime::parse_from_rfc3339(order["timeline"][0]["at"].as_str().unwrap()).unwrap();
    let range = |from: chrono::DateTime<chrono::FixedOffset>, until: chrono::DateTime<chrono::FixedOffset>| {
        let q = |t: chrono::DateTime<chrono::FixedOffset>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        format!(
            "/api/sagas?created_from={}&created_until={}",
            q(from).replace('+', "%2B"),
            q(until).replace('+', "%2B")
        )
    };
    let minute = chrono::Duration::seconds(30);
    let around: Value = api.get(&range(created - minute, created + minute), Some(&root)).await.json().await.unwrap();
    assert!(around["orders"].as_array().unwrap().iter().any(|o| o["order_id"] == placed["order_id"]), "{around}");
    let later: Value = api.get(&range(created + minute, created + minute * 2), Some(&root)).await.json().await.unwrap();
    assert_eq!(later["orders"], json!([]), "{later}");
    problem(api.get("/api/sagas?created_from=yesterday", Some(&root)).await, StatusCode::BAD_REQUEST).await;

    // Throughput: the orders ended lately, second by second, for admins only.
    problem(api.get("/api/throughput", Some(&ada)).await, StatusCode::FORBIDDEN).await;
    let view = api.saga.client.wait_terminal(placed["order_id"].as_str().unwrap(), SETTLE).await.unwrap();
    assert_eq!(view.status, OrderStatus::Completed);
    let mut ended = 0;
    for _ in 0..40 {
        let throughput: Value = api.get("/api/throughput", Some(&root)).await.json().await.unwrap();
        let seconds = throughput["seconds"].as_array().unwrap();
        assert_eq!(seconds.len(), jetsaga_http::metrics::THROUGHPUT_SECONDS, "{throughput}");
        ended = seconds.iter().map(|s| s["completed"].as_u64().unwrap()).sum::<u64>();
        if ended > 0 {
            let second = seconds.iter().find(|s| s["completed"] != 0).unwrap();
            let (p50, p99) = (second["p50_ms"].as_f64().unwrap(), second["p99_ms"].as_f64().unwrap());
            assert!(p50 > 0.0 && p50 <= p99 && p99 < 10_000.0, "latencies from created to ended: {second}");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(ended, 1, "the one completed order, once the second it ended in is over");
    api.saga.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_is_served_from_the_binary_with_a_strict_content_security_policy() {
    let api = Api::start().await;
    let page = api.http.get(api.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "no inline script or style: {csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/ui/app.js">"#), "{html}");
    for (file, content_type) in [("app.js", "text/javascript; charset=utf-8"), ("style.css", "text/css; charset=utf-8")]
    {
        let asset = api.http.get(api.url(&format!("/ui/{file}"))).send().await.unwrap();
        assert_eq!(asset.status(), StatusCode::OK, "{file}");
        assert_eq!(asset.headers()["content-type"], content_type, "{file}");
        assert!(!asset.text().await.unwrap().contains("http://"), "{file} fetches nothing from elsewhere");
    }
    // Every module the UI imports is served.
    let app = api.http.get(api.url("/ui/app.js")).send().await.unwrap().text().await.unwrap();
    for import in app.lines().filter_map(|l| l.split("from \"./").nth(1)).map(|l| l.trim_end_matches("\";")) {
        let status = api.http.get(api.url(&format!("/ui/{import}"))).send().await.unwrap().status();
        assert_eq!(status, StatusCode::OK, "{import}");
    }
    let missing =
        problem(api.http.get(api.url("/ui/../Cargo.toml")).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    assert!(missing["detail"].as_str().is_some(), "{missing}");
    problem(api.http.get(api.url("/ui/secret.js")).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    api.saga.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_tampered_expired_foreign_or_logged_out_tokens_are_401() {
    let api = Api::start().await;
    let ada = api.sign_up("ada@example.com").await;
    let (token, _) = api.log_in("ada@example.com").await;
    problem(api.get("/api/me", None).await, StatusCode::UNAUTHORIZED).await;
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    problem(api.get("/api/me", Some(&tampered)).await, StatusCode::UNAUTHORIZED).await;
    let keys = Keys::from_secret(SECRET).unwrap();
    let user_id = ada["user_id"].as_str().unwrap();
    let (expired, _) = jetsaga_http::auth::issue(&keys, user_id, chrono::Utc::now() - chrono::Duration::hours(2));
    let body = problem(api.get("/api/me", Some(&expired)).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body["detail"], "the session has expired: log in again");
    let foreign_keys = Keys::from_secret(b"another secret, also 32 bytes long!!").unwrap();
    let (foreign, _) = jetsaga_http::auth::issue(&foreign_keys, user_id, chrono::Utc::now());
    problem(api.get("/api/me", Some(&foreign)).await, StatusCode::UNAUTHORIZED).await;

    assert_eq!(api.get("/api/me", Some(&token)).await.status(), StatusCode::OK);
    let out = api.http.delete(api.url("/api/session")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert!(out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    let body = problem(api.get("/api/me", Some(&token)).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body["detail"], "the session has ended (logged out): log in again");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (fresh, _) = api.log_in("ada@example.com").await;
    assert_eq!(api.get("/api/me", Some(&fresh)).await.status(), StatusCode::OK, "a new login works");
    api.saga.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_problems() {
    let api = Api::start().await;
    let no_json = api.http.post(api.url("/api/users")).body("email=a").send().await.unwrap();
    problem(no_json, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let huge = "x".repeat(70 * 1024);
    let too_big = api.post("/api/users", None, json!({"email": "a@b.co", "password": huge, "name": "A"})).await;
    problem(too_big, StatusCode::PAYLOAD_TOO_LARGE).await;
    let garbled =
        api.http.post(api.url("/api/users")).header("content-type", "application/json").body("{").send().await.unwrap();
    problem(garbled, StatusCode::BAD_REQUEST).await;
    let short = api.post("/api/users", None, json!({"email": "a@b.co", "password": "short", "name": "A"})).await;
    let short = problem(short, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(short["field"], "password");
    assert_eq!(short["detail"], "password must be 8 to 256 characters, got 5");
    let bad_email = api.post("/api/users", None, json!({"email": "nope", "password": PASSWORD, "name": "A"})).await;
    let bad_email = problem(bad_email, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(bad_email["detail"].as_str().unwrap().contains("email must look like name@example.com"), "{bad_email}");
    problem(api.get("/api/nothing-here", None).await, StatusCode::NOT_FOUND).await;
    // An id with control characters is refused before it reaches a function
    // (found by schemathesis: its error message broke the reply's header).
    api.sign_up("ada@example.com").await;
    let (token, _) = api.log_in("ada@example.com").await;
    let odd = problem(api.get("/api/orders/a%0Ab", Some(&token)).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(odd["field"], "id");
    let response = api.get("/healthz", None).await;
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let docs = api.get("/api/docs", None).await;
    assert!(docs.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(docs.text().await.unwrap().contains("/api/openapi.json"), "the docs page reads the document");
    let document: Value = api.get("/api/openapi.json", None).await.json().await.unwrap();
    assert_eq!(document, jetsaga_http::openapi::document(), "the served document is the generated one");
    let ready: Value = api.get("/readyz", None).await.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    // Requests are counted by route pattern and status, and timed.
    let metrics = api.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains(r#"jetsaga_http_requests_total{route="/api/users",method="POST",status="422"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"jetsaga_http_request_duration_seconds_count{route="/api/users",method="POST"}"#));
    assert!(!metrics.contains("nothing-here"), "unmatched paths do not make series of their own");
    api.saga.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_calls_only_from_configured_origins() {
    let saga = Saga::start(Setup { backend: Backend::Sqlite, mode: SagaMode::Choreographed }).await;
    let keys = Keys::from_secret(SECRET).unwrap();
    let gateway = Gateway {
        cors_origins: vec!["https://shop.example.com".parse().unwrap()],
        ..Gateway::new(saga.server.connect().await, keys)
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, jetsaga_http::router(Arc::new(gateway))).await.unwrap() });
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, format!("{base}/api/orders"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let allowed = preflight("https://shop.example.com").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://shop.example.com");
    assert_eq!(allowed.headers()["access-control-allow-credentials"], "true");
    let other = preflight("https://evil.example.com").await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"), "{:?}", other.headers());
    // Without configuration (the default gateway of the other tests) no origin is allowed.
    let api = Api::start().await;
    let default = api
        .http
        .request(reqwest::Method::OPTIONS, api.url("/api/orders"))
        .header("origin", "https://shop.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(!default.headers().contains_key("access-control-allow-origin"));
    api.saga.stop().await;
    saga.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_counted_atomically_and_lock_out_only_the_guesser() {
    let api = Api::start().await;
    api.sign_up("ada@example.com").await;
    // A stranger on another address guesses 60 times at once: the count
    // cannot be raced, so at most the limit of guesses are checked.
    let stranger =
        reqwest::Client::builder().local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap()).build().unwrap();
    let guess = |password: &'static str| {
        stranger.post(api.url("/api/session")).json(&json!({"email": "ada@example.com", "password": password})).send()
    };
    let answers = futures::future::join_all((0..60).map(|_| guess("wrong one"))).await;
    let statuses: Vec<u16> = answers.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let limit = usize::try_from(jetsaga_http::limits::FAILURES_PER_ACCOUNT_AND_CLIENT.max).unwrap();
    assert!((1..=limit).contains(&checked), "{checked} of 60 parallel guesses were checked: {statuses:?}");
    assert!(statuses.iter().all(|s| matches!(s, 401 | 429 | 503)), "{statuses:?}");
    // The stranger is locked out of the account, even with the right password ...
    let locked = guess(PASSWORD).await.unwrap();
    assert!(locked.headers().contains_key("retry-after"));
    let body = problem(locked, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(body["detail"].as_str().unwrap().starts_with("too many "), "{body}");
    // ... and the owner, elsewhere, is not.
    api.log_in("ada@example.com").await;
    api.saga.stop().await;
}

/// A create the order function gave up on (its store was down, say), as
/// the runtime dead-letters it.
async fn dead_letter_a_create(api: &Api, order_id: &str, customer: &str, reason: &str, origin: &str) {
    let command =
        json!({"order_id": order_id, "customer_id": customer, "items": [{"product_id": "p-a", "quantity": 1}]});
    let headers =
        jetsaga_jetstream::dlq::headers(None, "order", reason, 5, jetsaga_events::subjects::ORDERS_CMD_CREATE, origin);
    api.saga
        .js
        .publish_with_headers(jetsaga_jetstream::dlq::subject_for("order"), headers, command.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_see_the_status_and_redrive_dead_letters() {
    let api = Api::start().await;
    let customer = api.sign_up("ada@example.com").await["customer_id"].as_str().unwrap().to_string();
    api.sign_up("root@example.com").await;
    let (ada, _) = api.log_in("ada@example.com").await;
    let (root, _) = api.log_in("root@example.com").await;
    let grant = jetsaga_events::SetRole { email: "root@example.com".into(), role: jetsaga_events::Role::Admin };
    api.saga.client.command(jetsaga_events::subjects::USERS_CMD_SET_ROLE, &grant).await.unwrap();
    for path in ["/api/status", "/api/dlq"] {
        problem(api.get(path, Some(&ada)).await, StatusCode::FORBIDDEN).await;
    }
    problem(api.post("/api/dlq/1/redrive", Some(&ada), json!({})).await, StatusCode::FORBIDDEN).await;
    problem(api.post("/api/dlq/1/redrive", None, json!({})).await, StatusCode::UNAUTHORIZED).await;

    let empty: Value = api.get("/api/dlq", Some(&root)).await.json().await.unwrap();
    assert_eq!(empty, json!({"dead_letters": []}));
    // A command the order function gave up on (its store was down, say):
    // the dead letter as the runtime writes it.
    let order_id = "o-redriven";
    dead_letter_a_create(&api, order_id, &customer, "the store is unavailable", "request/redrive-test-1").await;

    let status: Value = api.get("/api/status", Some(&root)).await.json().await.unwrap();
    assert_eq!(status["dead_letters"], 1, "{status}");
    let functions: Vec<&str> =
        status["consumers"].as_array().unwrap().iter().filter_map(|c| c["function"].as_str()).collect();
    for function in ["order", "inventory", "customer", "payment", "shipping", "users"] {
        assert!(functions.contains(&function), "{function} is in {status}");
    }
    let listed: Value = api.get("/api/dlq", Some(&root)).await.json().await.unwrap();
    let letter = &listed["dead_letters"][0];
    assert_eq!(
        (
            letter["function"].as_str(),
            letter["subject"].as_str(),
            letter["reason"].as_str(),
            letter["attempts"].as_u64()
        ),
        (Some("order"), Some("orders.cmd.create"), Some("the store is unavailable"), Some(5)),
        "{listed}"
    );
    let sequence = letter["dlq_sequence"].as_u64().unwrap();

    problem(api.post("/api/dlq/abc/redrive", Some(&root), json!({})).await, StatusCode::BAD_REQUEST).await;
    let missing = problem(api.post("/api/dlq/999/redrive", Some(&root), json!({})).await, StatusCode::NOT_FOUND).await;
    assert!(missing["detail"].as_str().unwrap().contains("no dead letter 999"), "{missing}");
    let redriven = api.post(&format!("/api/dlq/{sequence}/redrive"), Some(&root), json!({})).await;
    assert_eq!(redriven.status(), StatusCode::OK);
    let redriven: Value = redriven.json().await.unwrap();
    assert_eq!(redriven["subject"], "orders.cmd.create", "{redriven}");
    assert!(redriven["answer"].as_str().unwrap().contains(order_id), "the order function's answer: {redriven}");
    // Processed: the order it carried runs to completion, and the letter is gone.
    let view = api.saga.client.wait_terminal(order_id, SETTLE).await.unwrap();
    assert_eq!(view.status, OrderStatus::Completed, "{view:?}");
    let after: Value = api.get("/api/dlq", Some(&root)).await.json().await.unwrap();
    assert_eq!(after, json!({"dead_letters": []}));
    problem(api.post(&format!("/api/dlq/{sequence}/redrive"), Some(&root), json!({})).await, StatusCode::NOT_FOUND)
        .await;

    // Delete: a letter an operator decides must never run is gone, unsent.
    let dropped = "o-dropped";
    dead_letter_a_create(&api, dropped, &customer, "poison", "request/redrive-test-2").await;
    let listed: Value = api.get("/api/dlq", Some(&root)).await.json().await.unwrap();
    let sequence = listed["dead_letters"][0]["dlq_sequence"].as_u64().unwrap();
    let delete = |token: Option<&str>, seq: String| {
        let request = api.http.delete(api.url(&format!("/api/dlq/{seq}")));
        match token {
            Some(token) => request.bearer_auth(token.to_string()).send(),
            None => request.send(),
        }
    };
    problem(delete(Some(&ada), sequence.to_string()).await.unwrap(), StatusCode::FORBIDDEN).await;
    problem(delete(None, sequence.to_string()).await.unwrap(), StatusCode::UNAUTHORIZED).await;
    let bad = problem(delete(Some(&root), "0".into()).await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert_eq!(bad["field"], "seq", "{bad}");
    problem(delete(Some(&root), "999".into()).await.unwrap(), StatusCode::NOT_FOUND).await;
    let deleted = delete(Some(&root), sequence.to_string()).await.unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    let deleted: Value = deleted.json().await.unwrap();
    assert_eq!((deleted["function"].as_str(), deleted["subject"].as_str()), (Some("order"), Some("orders.cmd.create")));
    let after: Value = api.get("/api/dlq", Some(&root)).await.json().await.unwrap();
    assert_eq!(after, json!({"dead_letters": []}));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    problem(api.get(&format!("/api/orders/{dropped}"), Some(&root)).await, StatusCode::NOT_FOUND).await;
    problem(delete(Some(&root), sequence.to_string()).await.unwrap(), StatusCode::NOT_FOUND).await;
    api.saga.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changing_requests_from_another_site_or_as_a_form_are_refused() {
    let api = Api::start().await;
    let ada = api.sign_up("ada@example.com").await;
    let (_, cookie) = api.log_in("ada@example.com").await;
    let session = cookie.split(';').next().unwrap().to_string();
    wait_until(SETTLE, "ada's customer", || async {
        api.saga.client.customer(ada["customer_id"].as_str().unwrap()).await.is_ok()
    })
    .await;
    let order = json!({"items": [{"product_id": "p-a", "quantity": 1}]});
    let own = api.base.trim_start_matches("http://").to_string();
    let post = |path: &str, origin: &str| {
        api.http.post(api.url(path)).header("cookie", &session).header("origin", origin.to_string())
    };
    // Another site, and a sibling port of the same host (same site for SameSite=Lax).
    for origin in ["https://evil.example", "http://127.0.0.1:1"] {
        let refused = post("/api/orders", origin).json(&order).send().await.unwrap();
        let body = problem(refused, StatusCode::FORBIDDEN).await;
        assert!(body["detail"].as_str().unwrap().starts_with("cross-site request refused"), "{body}");
    }
    let fetch_metadata = api
        .http
        .post(api.url("/api/orders"))
        .header("cookie", &session)
        .header("sec-fetch-site", "same-site")
        .json(&order)
        .send()
        .await
        .unwrap();
    problem(fetch_metadata, StatusCode::FORBIDDEN).await;
    // The gateway's own page may.
    let placed = post("/api/orders", &format!("http://{own}")).json(&order).send().await.unwrap();
    assert_eq!(placed.status(), StatusCode::ACCEPTED);
    let id = placed.json::<Value>().await.unwrap()["order_id"].as_str().unwrap().to_string();
    // A form post (even from the same origin) reaches no state-changing endpoint.
    for (content_type, body) in [("application/x-www-form-urlencoded", "reason=x"), ("text/plain", "")] {
        let form = post(&format!("/api/orders/{id}/cancel"), &format!("http://{own}"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        problem(form, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    }
    assert!(api.saga.events_for("orders.evt.cancel_requested", &id).await.is_empty(), "nothing was canceled");
    api.saga.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_views_are_capped_per_user_and_end_at_logout() {
    let api = Api::start_with(|gateway| {
        gateway.live = jetsaga_http::live::LiveHub::new(jetsaga_http::live::LiveLimits {
            per_user: 2,
            ..jetsaga_http::live::LiveLimits::default()
        });
    })
    .await;
    let (token, id) = api.shopper_with_an_order("ada@example.com").await;
    let view = || {
        api.http
            .get(api.url(&format!("/api/orders/{id}/events")))
            .bearer_auth(&token)
            .header("Last-Event-ID", "1")
            .send()
    };
    let first = view().await.unwrap();
    let second = view().await.unwrap();
    assert_eq!((first.status(), second.status()), (StatusCode::OK, StatusCode::OK));
    let third = view().await.unwrap();
    assert!(third.headers().contains_key("retry-after"));
    let body = problem(third, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(body["detail"].as_str().unwrap().contains("at most 2"), "{body}");
    // Logging out ends them: both streams close (each sends at most the order's own events).
    let out = api.http.delete(api.url("/api/session")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    for open in [first, second] {
        let text = tokio::time::timeout(Duration::from_secs(10), open.text()).await.expect("the view ended").unwrap();
        assert!(sse(&text).iter().all(|(_, _, data)| data.contains(&id)), "{text}");
    }
    let (token, _) = api.log_in("ada@example.com").await;
    let again = api.get(&format!("/api/orders/{id}/events"), Some(&token)).await;
    assert_eq!(again.status(), StatusCode::OK, "ended views gave their places back");
    api.saga.stop().await;
}

/// Behind a trusted proxy each client is counted on its own (the address
/// the proxy puts in `X-Forwarded-For`); nobody else's header is believed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_client_has_its_own_limits() {
    let api = Api::start_with(|gateway| {
        gateway.pace = jetsaga_http::limits::Pace::new(1, 2);
        gateway.trusted_proxies = vec![jetsaga_http::forwarded::parse_proxy("127.0.0.1").unwrap()];
    })
    .await;
    let from = |local: &str| {
        reqwest::Client::builder().local_address(local.parse::<std::net::IpAddr>().unwrap()).build().unwrap()
    };
    let (proxy, stranger) = (from("127.0.0.1"), from("127.0.0.5"));
    let ask = |client: &reqwest::Client, forwarded_for: &str| {
        client.get(api.url("/api/products")).header("X-Forwarded-For", forwarded_for).send()
    };
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(ask(&proxy, "203.0.113.7").await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429], "one client through the proxy is paced");
    assert_eq!(ask(&proxy, "203.0.113.8").await.unwrap().status(), StatusCode::OK, "another is not");
    // A client writing the header itself through the proxy gets no new address.
    assert_eq!(ask(&proxy, "198.51.100.1, 203.0.113.7").await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    // Straight from an untrusted address the header is ignored: it is paced as itself.
    let mut statuses = Vec::new();
    for forwarded_for in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        statuses.push(ask(&stranger, forwarded_for).await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
    api.saga.stop().await;
}

/// As on Lambda, where every view holds an instance of its own: the views
/// a user opens are counted across instances, closed ones too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_views_a_user_opens_are_counted_across_instances() {
    let rule = jetsaga_http::limits::Rule { max: 3, ..jetsaga_http::limits::LIVE_VIEWS_PER_USER };
    let api = Api::start_with(|gateway| {
        gateway.live = jetsaga_http::live::LiveHub::new(jetsaga_http::live::LiveLimits {
            opened_per_user: Some(rule),
            ..jetsaga_http::live::LiveLimits::default()
        });
    })
    .await;
    let (token, id) = api.shopper_with_an_order("ada@example.com").await;
    for _ in 0..3 {
        let view = api.get(&format!("/api/orders/{id}/events"), Some(&token)).await;
        assert_eq!(view.status(), StatusCode::OK);
        drop(view); // closed: the place on this instance is free again
    }
    let fourth = api.get(&format!("/api/orders/{id}/events"), Some(&token)).await;
    assert!(fourth.headers().contains_key("retry-after"));
    let body = problem(fourth, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(body["detail"].as_str().unwrap().contains("live views opened by this user: at most 3"), "{body}");
    // Another user is not affected.
    let (other, other_id) = api.shopper_with_an_order("bob@example.com").await;
    let view = api.get(&format!("/api/orders/{other_id}/events"), Some(&other)).await;
    assert_eq!(view.status(), StatusCode::OK);
    api.saga.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ups_are_limited_per_address_before_any_password_is_hashed() {
    let api = Api::start().await;
    let limit = jetsaga_http::limits::SIGN_UPS_PER_CLIENT.max;
    let client =
        reqwest::Client::builder().local_address("127.0.0.3".parse::<std::net::IpAddr>().unwrap()).build().unwrap();
    let mut statuses = Vec::new();
    for i in 0..limit + 2 {
        let body = json!({"email": format!("u{i}@example.com"), "password": PASSWORD, "name": "U"});
        let response = client.post(api.url("/api/users")).json(&body).send().await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(response.headers().contains_key("retry-after"));
        }
    }
    let created = statuses.iter().filter(|s| **s == 201).count() as u64;
    assert_eq!(created, limit, "{statuses:?}");
    assert_eq!(&statuses[statuses.len() - 2..], &[429, 429]);
    // Another address is not affected.
    api.sign_up("ada@example.com").await;
    api.saga.stop().await;
}

/// Resident memory of this process (the saga and the gateway run in it), in MiB.
fn resident_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024
}

/// p50 of how long `n` orders of a good customer take, one after another.
async fn good_orders_p50(api: &Api, n: usize) -> Duration {
    let mut took = Vec::new();
    for _ in 0..n {
        let started = std::time::Instant::now();
        let id = api.saga.order("c-good", &[("p-a", 1)]).await;
        assert_eq!(api.saga.finish(&id).await.status, OrderStatus::Completed);
        took.push(started.elapsed());
    }
    took.sort();
    took[n / 2]
}

/// The hostile-load suite at a small scale: one signed-up attacker opens
/// live views with `Last-Event-ID: 1`, logs in from 30 loops and floods
/// sign-ups, while a good customer places orders. Every attack is refused
/// early, memory stays bounded, and the good customer's p50 stays within a
/// factor of the same run without attack. (`jetsaga chaos --hostile` is
/// the long run.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_attack_good_orders_keep_their_pace_and_memory_stays_bounded() {
    let api = Api::start().await;
    api.saga.product("p-a", 100, 10_000).await;
    api.saga.customer("c-good", 100_000_000).await;
    let (token, own) = api.shopper_with_an_order("mallory@example.com").await;
    let baseline = good_orders_p50(&api, 15).await;
    let memory_before = resident_mib();

    let stop = tokio_util::sync::CancellationToken::new();
    let counter = || Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (views_refused, logins_refused, sign_ups_refused) = (counter(), counter(), counter());
    let mut attacks = tokio::task::JoinSet::new();
    // 100 live views of the attacker's own order, replaying from the start.
    for _ in 0..100 {
        let (http, url, token, refused) =
            (api.http.clone(), api.url(&format!("/api/orders/{own}/events")), token.clone(), views_refused.clone());
        attacks.spawn(async move {
            let response = http.get(url).bearer_auth(token).header("Last-Event-ID", "1").send().await.unwrap();
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let _ = response.text().await; // held open until it ends
        });
    }
    // 30 loops of correct log-ins, and a flood of sign-ups from another address.
    for loop_index in 0..30 {
        let (http, url, stop, refused) =
            (api.http.clone(), api.url("/api/session"), stop.clone(), logins_refused.clone());
        attacks.spawn(async move {
            while !stop.is_cancelled() {
                let body = json!({"email": "mallory@example.com", "password": PASSWORD});
                let status = http.post(&url).json(&body).send().await.unwrap().status();
                if matches!(status.as_u16(), 429 | 503) {
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50 + loop_index)).await;
                }
            }
        });
    }
    let flood =
        reqwest::Client::builder().local_address("127.0.0.4".parse::<std::net::IpAddr>().unwrap()).build().unwrap();
    for i in 0..100 {
        let (flood, url, refused) = (flood.clone(), api.url("/api/users"), sign_ups_refused.clone());
        attacks.spawn(async move {
            let body = json!({"email": format!("bot{i}@example.com"), "password": PASSWORD, "name": "Bot"});
            let status = flood.post(&url).json(&body).send().await.unwrap().status();
            if matches!(status.as_u16(), 429 | 503) {
                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let attacked = good_orders_p50(&api, 15).await;
    let memory_during = resident_mib();
    stop.cancel();
    attacks.abort_all();
    while attacks.join_next().await.is_some() {}

    let count = |c: &Arc<std::sync::atomic::AtomicUsize>| c.load(std::sync::atomic::Ordering::Relaxed);
    let (views, logins, sign_ups) = (count(&views_refused), count(&logins_refused), count(&sign_ups_refused));
    println!(
        "refused: {views} of 100 views, {logins} log-ins, {sign_ups} of 100 sign-ups; memory {memory_before} -> {memory_during} MiB"
    );
    assert!(views >= 80, "{views} of 100 live views refused");
    assert!(logins > 0, "log-in loops were never refused");
    assert!(sign_ups >= 70, "{sign_ups} of 100 sign-ups refused");
    let bound = (baseline * 4).max(baseline + Duration::from_millis(300));
    assert!(attacked <= bound, "good orders: p50 {attacked:?} under attack against {baseline:?} without");
    // Before the pool, 300 sign-ups took the gateway from under 100 MiB to 2 GiB.
    assert!(
        memory_during <= memory_before + 100,
        "memory grew from {memory_before} to {memory_during} MiB under attack"
    );
    println!(
        "good orders p50: {baseline:?} without attack, {attacked:?} with; memory {memory_before} -> {memory_during} MiB"
    );
    api.saga.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_the_gateway_accepts_never_becomes_a_dead_letter() {
    let api = Api::start().await;
    api.sign_up("ada@example.com").await;
    let (token, _) = api.log_in("ada@example.com").await;
    // Just under the body limit, with an id far over the saga's: refused by the rule, nothing dead-lettered.
    let long_id = "p".repeat(jetsaga_http::MAX_BODY_BYTES - 100);
    let refused =
        api.post("/api/orders", Some(&token), json!({"items": [{"product_id": long_id, "quantity": 1}]})).await;
    let body = problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(body["detail"].as_str().unwrap().contains("product_id must be at most 128 characters"), "{body}");
    let too_large = "p".repeat(jetsaga_http::MAX_BODY_BYTES + 1);
    let refused =
        api.post("/api/orders", Some(&token), json!({"items": [{"product_id": too_large, "quantity": 1}]})).await;
    problem(refused, StatusCode::PAYLOAD_TOO_LARGE).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(jetsaga_tests::stream::messages(&api.saga.js, "DLQ", None).await.is_empty(), "no dead letter");
    api.saga.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customers_orders_under_way_are_capped_for_every_client_alike() {
    let options = jetsaga_local::saga::SagaOptions {
        order_limits: jetsaga_local::saga::OrderLimits { in_flight: 2, per_minute: 0 },
        ..jetsaga_local::saga::SagaOptions::default()
    };
    // Payment is away, so orders stay under way (waiting for it).
    let names: Vec<&str> = options.names().into_iter().filter(|n| *n != "payment").collect();
    let saga = Saga::start_with(Backend::Sqlite, &names, options).await;
    let api = Api::over(saga, |_| {}).await;
    let (token, first) = api.shopper_with_an_order("ada@example.com").await;
    let customer = api.saga.client.order(&first).await.unwrap().customer_id;
    let items = json!([{"product_id": "p-a", "quantity": 1}]);
    let create = json!({"customer_id": customer, "items": items});
    // The second over NATS, as any client may send it.
    api.saga.client.command(jetsaga_events::subjects::ORDERS_CMD_CREATE, &create).await.unwrap();
    let refused = api.post("/api/orders", Some(&token), json!({"items": items})).await;
    assert!(refused.headers().contains_key("retry-after"));
    let body = problem(refused, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(
        body["detail"],
        format!("customer {customer} already has 2 orders under way (at most 2): try again when one has ended")
    );
    let err = api.saga.client.command(jetsaga_events::subjects::ORDERS_CMD_CREATE, &create).await.unwrap_err();
    assert!(err.to_string().ends_with("(429)"), "{err}");
    // One ends (canceled): the customer may order again.
    let canceled = api.post(&format!("/api/orders/{first}/cancel"), Some(&token), json!({})).await;
    assert_eq!(canceled.status(), StatusCode::ACCEPTED);
    assert_eq!(api.saga.finish(&first).await.status, OrderStatus::Canceled);
    let again = api.post("/api/orders", Some(&token), json!({"items": items})).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    api.saga.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_api_document_allows_is_accepted() {
    let api = Api::start().await;
    let (token, _) = api.shopper_with_an_order("ada@example.com").await;
    // JSON Schema's integers include 1.0.
    let whole = api.post("/api/orders", Some(&token), json!({"items": [{"product_id": "p-a", "quantity": 1.0}]})).await;
    assert_eq!(whole.status(), StatusCode::ACCEPTED);
    let fraction =
        api.post("/api/orders", Some(&token), json!({"items": [{"product_id": "p-a", "quantity": 1.5}]})).await;
    let body = problem(fraction, StatusCode::BAD_REQUEST).await;
    assert!(body["detail"].as_str().unwrap().contains("1.5 is not a whole number"), "{body}");
    // And the document declares what is refused.
    let document = jetsaga_http::openapi::document();
    let schemas = &document["components"]["schemas"];
    assert_eq!(schemas["OrderItem"]["properties"]["quantity"]["minimum"], 1);
    assert_eq!(schemas["CreateOrderRequest"]["properties"]["items"]["minItems"], 1);
    assert_eq!(schemas["SignUpRequest"]["properties"]["password"]["minLength"], 8);
    let limit = document["paths"]["/api/orders"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap()
        .clone();
    assert_eq!(limit["schema"]["minimum"], 1);
    api.saga.stop().await;
}
