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

/// The trace of the order `order_id`, once it holds a span `until` and no
/// span whose parent has not come.
fn trace_of_order(collector: &Collector, order_id: &str, until: &str) -> (String, Vec<Span>) {
    collector.trace_where(|spans| {
        let trace_id = &spans
            .iter()
            .find(|s| s.attribute("jetsaga.saga.key") == Some(order_id) && s.name.starts_with("process"))?
            .trace_id;
        let trace: Vec<Span> = spans.iter().filter(|s| &s.trace_id == trace_id).cloned().collect();
        // Whole: processes export on their own schedules, a bootstrap's spans may come first.
        (trace.iter().any(|s| s.name == until) && collector::is_whole(&trace)).then(|| trace_id.clone())
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

#[test]
fn on_the_lambda_path_an_order_is_one_trace_across_the_bridge_and_the_bootstraps() {
    let collector = Collector::http();
    let env = collector.env();
    let runner = common::Runner::start(&["--lambda".into()], &env);
    let url = runner.nats_url();
    let placed = Command::new(env!("CARGO_BIN_EXE_jetsaga"))
        .args(["--nats-url", &url, "order", "create", "--order-id", "o-on-lambda", "--customer", "c-ada"])
        .args(["--item", "p-keyboard:1", "--wait"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&placed.stdout).to_string();
    assert!(said.contains("completed"), "{said}{}", String::from_utf8_lossy(&placed.stderr));
    let (_, trace) = trace_of_order(&collector, "o-on-lambda", "create orders.evt.completed");
    runner.stop();
    assert_completed_saga(&trace);
    // The bridge (in the runner) delivers; each function's bootstrap
    // commits and creates, under the bridge's delivery span.
    for function in ["order", "inventory", "customer", "payment", "shipping"] {
        let service = format!("jetsaga-{function}");
        let commit = trace.iter().find(|s| s.name == "commit" && s.service == service);
        let commit = commit.unwrap_or_else(|| panic!("no commit by {service}:\n{}", collector::outline(&trace)));
        let delivery = trace.iter().find(|s| s.span_id == commit.parent_id).unwrap();
        assert!(delivery.name.starts_with("process ") && delivery.service == "jetsaga", "{delivery:?}");
    }
}

#[test]
fn a_dead_letter_and_its_redrive_stay_in_the_trace_of_the_event() {
    let collector = Collector::http();
    let mut env = collector.env();
    env.push(("JETSAGA_LOG_FORMAT", "json"));
    let runner = common::Runner::start(&[], &env);
    let url = runner.nats_url();
    let jetsaga = env!("CARGO_BIN_EXE_jetsaga");
    let placed = Command::new(jetsaga)
        .args(["--nats-url", &url, "order", "create", "--order-id", "o-poisoned", "--customer", "c-ada"])
        .args(["--item", "p-keyboard:1", "--wait"])
        .output()
        .unwrap();
    assert!(placed.status.success(), "{}", String::from_utf8_lossy(&placed.stderr));
    let (trace_id, trace) = trace_of_order(&collector, "o-poisoned", "create orders.evt.completed");
    let cause = trace.iter().find(|s| s.name == "create inventory.evt.reserved").unwrap().clone();

    // An event no handler can read (its payload lacks every field), in
    // the trace of the event it claims to follow: the customer function
    // gives it up at once (the order function, its order over, lets it be).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let nats = async_nats::connect(url.as_str()).await.unwrap();
        let js = async_nats::jetstream::new(nats);
        let envelope = json!({
            "id": "0193a7a4-0000-7000-8000-00000000dead", "type": "inventory.evt.reserved", "order_id": "o-poisoned",
            "correlation_id": "o-poisoned", "occurred_at": "2026-12-07T12:00:00Z", "version": 1,
            "data": {"order_id": "o-poisoned"}
        });
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Jetsaga-Envelope", "1");
        headers.insert("traceparent", format!("00-{trace_id}-{}-01", cause.span_id).as_str());
        js.publish_with_headers("inventory.evt.reserved", headers, envelope.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
    });
    let poisoned = |spans: &[Span], at_least: usize| {
        let deliveries = spans
            .iter()
            .filter(|s| s.parent_id == cause.span_id && s.attribute("jetsaga.outcome") == Some("dead_lettered"))
            .count();
        (deliveries >= at_least).then(|| trace_id.clone())
    };
    collector.trace_where(|spans| poisoned(spans, 1));

    // Redriven, the letter is delivered again, in the same trace, under the same cause.
    let redriven = Command::new(jetsaga).args(["--nats-url", &url, "dlq", "redrive", "--all"]).output().unwrap();
    let (_, trace) = collector.trace_where(|spans| poisoned(spans, 2));
    let log = runner.stop();
    let failed = trace.iter().filter(|s| s.parent_id == cause.span_id && s.error.is_some()).count();
    assert!(failed >= 2, "{}\n{}", String::from_utf8_lossy(&redriven.stdout), collector::outline(&trace));
    collector::assert_whole(&trace);

    // The log lines of the failure name the trace: logs and traces join.
    let lines: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for message in ["malformed input", "dead-lettered"] {
        let line = lines.iter().find(|l| l["message"] == message).unwrap_or_else(|| panic!("no {message:?} in\n{log}"));
        assert_eq!(line["trace_id"], trace_id.as_str(), "{line}");
    }
}

#[test]
fn sampling_is_decided_once_at_the_root_and_honoured_by_every_step() {
    let collector = Collector::http();
    let mut env = collector.env();
    env.extend([("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0.5")]);
    let unlimited = ["--max-orders-in-flight", "0", "--max-orders-per-minute", "0"].map(String::from);
    let runner = common::Runner::start(&unlimited, &env);
    let url = runner.nats_url();
    let orders: Vec<String> = (0..24).map(|i| format!("o-sampled-{i}")).collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let nats = async_nats::connect(url.as_str()).await.unwrap();
        for order_id in &orders {
            let create = json!({"order_id": order_id, "customer_id": "c-ada", "items": [{"product_id": "p-mouse", "quantity": 1}]});
            nats.publish("orders.cmd.create", create.to_string().into()).await.unwrap();
        }
        nats.flush().await.unwrap();
    });
    let started = std::time::Instant::now();
    for order_id in &orders {
        loop {
            let got = Command::new(env!("CARGO_BIN_EXE_jetsaga"))
                .args(["--nats-url", &url, "order", "get", order_id, "--json"])
                .output()
                .unwrap();
            let view: Value = serde_json::from_slice(&got.stdout).unwrap_or_default();
            if view["status"] == "completed" {
                break;
            }
            assert!(started.elapsed().as_secs() < 60, "{order_id} did not complete: {view}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    // The last batches of spans on their way.
    std::thread::sleep(std::time::Duration::from_secs(1));
    runner.stop();
    let spans = collector.spans();
    let mut sampled = 0;
    for order_id in &orders {
        let Some(root) = spans.iter().find(|s| s.attribute("jetsaga.saga.key") == Some(order_id.as_str())) else {
            continue;
        };
        // Sampled at its root: every step of it is there, whole.
        let trace: Vec<Span> = spans.iter().filter(|s| s.trace_id == root.trace_id).cloned().collect();
        assert_completed_saga(&trace);
        sampled += 1;
    }
    // Not sampled: nothing of it at all (every span above belongs to a whole saga).
    let in_sagas =
        spans.iter().filter(|s| s.attribute("jetsaga.saga.key").is_some_and(|k| k.starts_with("o-sampled-")));
    assert!(in_sagas.clone().count() >= sampled * 5);
    assert!((3..=21).contains(&sampled), "{sampled} of 24 sagas sampled at a ratio of 0.5");
}
