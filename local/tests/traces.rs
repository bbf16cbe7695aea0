//! OpenTelemetry traces: one saga is one trace, whole, received by a
//! collector of the test's own over OTLP (HTTP/protobuf and gRPC).

use std::process::Command;

use serde_json::{Value, json};

mod common;

use common::collector::{self, Collector, Span};

const PASSWORD: &str = "a long and secret passphrase";

/// The steps every completed order passes through, each a `process` span of its function.
const STEPS: [(&str, &str); 5] = [
    ("order", "process orders.cmd.create"),
    ("inventory", "process orders.evt.created"),
    ("customer", "process inventory.evt.reserved"),
    ("payment", "process customers.evt.credit_reserved"),
    ("shipping", "process payments.evt.executed"),
];

fn has(trace: &[Span], function: &str, name: &str) -> bool {
    trace.iter().any(|s| s.name == name && s.attribute("jetsaga.function") == Some(function))
}

/// The trace holding a span `name` whose saga key is `order_id`.
fn trace_of_order(collector: &Collector, order_id: &str, until: &str) -> (String, Vec<Span>) {
    collector.trace_where(|spans| {
        let trace_id = &spans
            .iter()
            .find(|s| s.attribute("jetsaga.saga.key") == Some(order_id) && s.name.starts_with("process"))?
            .trace_id;
        spans.iter().any(|s| &s.trace_id == trace_id && s.name == until).then(|| trace_id.clone())
    })
}

/// Every step of a completed order is in `trace`, under one root, as far as
/// the `create orders.evt.completed` of the order function.
fn assert_completed_saga(trace: &[Span]) {
    let root = collector::assert_whole(trace);
    for (function, name) in STEPS {
        assert!(has(trace, function, name), "no `{name}` by {function}:\n{}", collector::outline(trace));
    }
    for span in trace.iter().filter(|s| s.name.starts_with("process ")) {
        assert_eq!(span.attribute("messaging.system"), Some("nats"), "{span:?}");
        assert!(span.attribute("jetsaga.delivery.attempt").is_some(), "{span:?}");
        assert!(span.attribute("jetsaga.outcome").is_some(), "{span:?}");
    }
    assert!(trace.iter().any(|s| s.name == "commit"), "no commit span:\n{}", collector::outline(trace));
    assert!(trace.iter().any(|s| s.name.starts_with("send ")), "no send span:\n{}", collector::outline(trace));
    // The path from the end back to the root is unbroken.
    let mut span = trace.iter().find(|s| s.name == "create orders.evt.completed").unwrap();
    let mut hops = 0;
    while !span.parent_id.is_empty() {
        span = trace.iter().find(|s| s.span_id == span.parent_id).unwrap();
        hops += 1;
    }
    assert_eq!(span.span_id, root.span_id);
    assert!(hops >= 10, "{hops} hops from the end to the root:\n{}", collector::outline(trace));
}

#[test]
fn an_order_over_http_and_one_by_nats_pub_are_one_trace_each() {
    let collector = Collector::http();
    let env = collector.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let http_port = common::free_port();
    let runner = common::Runner::start(&["--http-port".into(), http_port.to_string()], &env);
    let base = format!("http://127.0.0.1:{http_port}");
    let runtime = tokio::runtime::Runtime::new().unwrap();

    // Over HTTP: the gateway's request span is the root.
    let order_id = runtime.block_on(async {
        let http = reqwest::Client::new();
        let post = |path: &str, token: Option<&str>, body: Value| {
            let request = http.post(format!("{base}{path}")).json(&body);
            match token {
                Some(token) => request.bearer_auth(token.to_string()),
                None => request,
            }
            .send()
        };
        let signed_up =
            post("/api/users", None, json!({"email": "ada@example.com", "password": PASSWORD, "name": "Ada"}))
                .await
                .unwrap();
        assert!(signed_up.status().is_success(), "{:?}", signed_up.text().await);
        let session: Value = post("/api/session", None, json!({"email": "ada@example.com", "password": PASSWORD}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = session["token"].as_str().unwrap().to_string();
        let placed = post("/api/orders", Some(&token), json!({"items": [{"product_id": "p-keyboard", "quantity": 1}]}))
            .await
            .unwrap();
        assert_eq!(placed.status(), 202, "{:?}", placed.text().await);
        let placed: Value = placed.json().await.unwrap();
        placed["order_id"].as_str().unwrap().to_string()
    });
    let (_, trace) = trace_of_order(&collector, &order_id, "create orders.evt.completed");
    assert_completed_saga(&trace);
    let root = collector::assert_whole(&trace);
    assert_eq!((root.name.as_str(), root.kind, root.service.as_str()), ("POST /api/orders", 2, "jetsaga"), "{root:?}");
    assert_eq!(root.attribute("http.response.status_code"), Some("202"));

    // By a bare `nats pub`, no trace context: the order
    // function's first delivery is the root.
    let url = runner.nats_url();
    runtime.block_on(async {
        // What `nats pub orders.cmd.create '{…}'` sends.
        let nats = async_nats::connect(url.as_str()).await.unwrap();
        let create = json!({"order_id": "o-published", "customer_id": "c-ada", "items": [{"product_id": "p-mouse", "quantity": 1}]});
        nats.publish("orders.cmd.create", create.to_string().into()).await.unwrap();
        nats.flush().await.unwrap();
    });
    let (_, trace) = trace_of_order(&collector, "o-published", "create orders.evt.completed");
    assert_completed_saga(&trace);
    let root = collector::assert_whole(&trace);
    assert_eq!((root.name.as_str(), root.kind), ("process orders.cmd.create", 5), "{root:?}");
    assert_eq!(root.attribute("messaging.destination.name"), Some("orders.cmd.create"));

    // A failed order's compensation stays in its trace: more than its
    // credit allows, so the stock held for it is released.
    let jetsaga = env!("CARGO_BIN_EXE_jetsaga");
    let order = Command::new(jetsaga)
        .args(["--nats-url", &url, "order", "create", "--order-id", "o-too-dear", "--customer", "c-ada"])
        .args(["--item", "p-keyboard:40", "--wait"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&order.stdout).to_string();
    assert!(said.contains("failed"), "{said}{}", String::from_utf8_lossy(&order.stderr));
    let failed_id = "o-too-dear";
    let (_, trace) = trace_of_order(&collector, failed_id, "create orders.evt.failed");
    collector::assert_whole(&trace);
    println!("{}", collector::outline(&trace));
    assert!(trace.iter().any(|s| s.name == "process orders.evt.failed"), "{}", collector::outline(&trace));

    let log = runner.stop();
    println!("{}", collector::outline(&collector.spans()));
    assert!(log.contains("exporting spans over OTLP"), "{log}");
}

/// `jetsaga up` hosting `functions` only, exporting to `collector`.
fn hosting(functions: &[&str], more: &[&str]) -> Vec<String> {
    functions
        .iter()
        .flat_map(|f| ["--function".to_string(), f.to_string()])
        .chain(more.iter().map(|a| a.to_string()))
        .collect()
}

#[test]
fn a_deadline_that_fires_after_a_restart_stays_in_its_trace() {
    let collector = Collector::grpc();
    let env = collector.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // No payment function: the order waits for payment until its deadline.
    let args = hosting(&["order", "inventory", "customer"], &["--step-timeout", "payment=8s"]);
    let runner = common::Runner::start(&args, &env);
    let url = runner.nats_url();
    let placed = Command::new(env!("CARGO_BIN_EXE_jetsaga"))
        .args(["--nats-url", &url, "order", "create", "--order-id", "o-waits", "--customer", "c-ada"])
        .args(["--item", "p-keyboard:1"])
        .output()
        .unwrap();
    assert!(placed.status.success(), "{}", String::from_utf8_lossy(&placed.stderr));
    // Waiting for payment, under a deadline scheduled in the stream.
    let (trace_id, _) = trace_of_order(&collector, "o-waits", "process customers.evt.credit_reserved");
    let (_, dir) = runner.stop_keeping_data();
    let restarted_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let runner = common::Runner::start_in(dir, &args, &env);

    // The deadline fires while the restarted runner runs, in the same trace.
    let (_, trace) = collector.trace_where(|spans| {
        spans.iter().any(|s| s.trace_id == trace_id && s.name == "create orders.evt.failed").then(|| trace_id.clone())
    });
    runner.stop();
    collector::assert_whole(&trace);
    let fired = trace
        .iter()
        .find(|s| s.name == "process orders.evt.deadline_passed")
        .unwrap_or_else(|| panic!("the deadline's delivery is not in the trace:\n{}", collector::outline(&trace)));
    assert!(fired.start_ns > restarted_at, "handled after the restart:\n{}", collector::outline(&trace));
    let scheduled = trace.iter().find(|s| s.span_id == fired.parent_id).unwrap();
    assert_eq!(scheduled.name, "create orders.evt.deadline_passed", "{}", collector::outline(&trace));
    assert!(scheduled.end_ns < restarted_at, "scheduled before the restart:\n{}", collector::outline(&trace));
}
