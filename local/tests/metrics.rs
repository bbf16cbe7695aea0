//! `--metrics-addr`: a runner serves Prometheus metrics: an order's steps
//! show in them, per function and outcome, beside its consumers' state.

use std::process::Command;

mod common;

/// The value of the sample `name{labels}` in a Prometheus text page.
fn sample(page: &str, name_and_labels: &str) -> Option<f64> {
    page.lines().find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
}

/// The body of `GET path` on 127.0.0.1:`port` (HTTP/1.0: the answer ends with the connection).
fn get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    assert!(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"), "{head}");
    body.to_string()
}

#[test]
fn an_order_shows_in_the_runners_metrics() {
    let metrics_port = common::free_port();
    let jetsaga = env!("CARGO_BIN_EXE_jetsaga");
    let runner = common::Runner::start(&["--metrics-addr".into(), format!("127.0.0.1:{metrics_port}")], &[]);
    let url = runner.nats_url();
    let order = Command::new(jetsaga)
        .args(["--nats-url", &url, "order", "create", "--customer", "c-ada", "--item", "p-keyboard:1", "--wait"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&order.stdout);
    assert!(order.status.success() && said.contains("completed"), "{said}");

    let page = get(metrics_port, "/metrics");
    runner.stop();

    for function in ["order", "inventory", "customer", "payment", "shipping"] {
        let processed =
            sample(&page, &format!("jetsaga_messages_total{{function=\"{function}\",outcome=\"processed\"}}"));
        assert!(processed.is_some_and(|n| n >= 1.0), "{function} processed nothing:\n{page}");
    }
    // The consumers' state, read by the runner itself.
    let pending = sample(&page, "jetsaga_consumer_pending{function=\"inventory\",stream=\"SAGA\"}");
    assert!(pending.is_some(), "no consumer gauge:\n{page}");
    assert!(page.contains("jetsaga_consumer_ack_pending{function=\"order\",stream=\"COMMANDS\"}"), "{page}");
    assert!(page.contains("# TYPE jetsaga_message_phase_seconds histogram"), "{page}");
    assert!(page.contains("jetsaga_message_phase_seconds_count{function=\"order\",phase=\"handling\"}"), "{page}");
    assert!(page.contains("jetsaga_batch_size_bucket{function=\"order\",le=\"1\"}"), "{page}");
    assert!(!page.contains("order_id"), "no label may name an order:\n{page}");
}

/// The metric names the dashboard and the alerting rules use, whose name
/// starts with `prefix` (a histogram by its base name); panics on PromQL
/// that does not parse.
fn referenced(prefix: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for expr in jetsaga_infra::observability::expressions() {
        let query = expr.replace("$__rate_interval", "1m");
        promql_parser::parser::parse(&query).unwrap_or_else(|e| panic!("{expr}: {e}"));
        for word in query.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with(prefix) {
                let base = word.strip_suffix("_bucket").unwrap_or(word);
                names.insert(base.to_string());
            }
        }
    }
    names
}

/// Checks that every metric the dashboard and the alerts use that starts
/// with `prefix` is on `page`.
fn assert_dashboard_served(page: &str, prefix: &str) {
    let names = referenced(prefix);
    assert!(!names.is_empty());
    for name in names {
        assert!(page.contains(&format!("\n{name}")), "the dashboard or an alert uses {name}, not served:\n{page}");
    }
}

/// The page parsed as Prometheus reads it.
fn scrape(page: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(page.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// The value of the counter or gauge `name` with these labels (0 when absent);
/// for a histogram, how many observations it holds.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
        .sum()
}

#[test]
fn after_failures_and_a_dead_letter_the_counters_match_the_streams() {
    let metrics_port = common::free_port();
    let jetsaga = env!("CARGO_BIN_EXE_jetsaga");
    // Unacknowledged messages come back after a second.
    let args = ["--metrics-addr".into(), format!("127.0.0.1:{metrics_port}"), "--ack-wait".into(), "1".into()];
    let runner = common::Runner::start(&args, &[]);
    let url = runner.nats_url();
    let order = |id: &str, item: &str| {
        let out = Command::new(jetsaga)
            .args([
                "--nats-url",
                &url,
                "order",
                "create",
                "--order-id",
                id,
                "--customer",
                "c-ada",
                "--item",
                item,
                "--wait",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(order("o-fine", "p-keyboard:1").contains("completed"));
    assert!(order("o-fine-2", "p-mouse:1").contains("completed"));
    assert!(order("o-too-dear", "p-keyboard:40").contains("failed"), "more than the credit allows");

    // A redelivery: a command sent while the runner is paused is delivered
    // to it and not acknowledged within the ack wait, so it comes again.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let signal = |sig: &str| Command::new("kill").args([sig, &runner.pid().to_string()]).status().unwrap();
    signal("-STOP");
    runtime.block_on(async {
        let nats = async_nats::connect(url.as_str()).await.unwrap();
        let create = serde_json::json!({"order_id": "o-paused", "customer_id": "c-ada", "items": [{"product_id": "p-mouse", "quantity": 1}]});
        nats.publish("orders.cmd.create", create.to_string().into()).await.unwrap();
        nats.flush().await.unwrap();
    });
    std::thread::sleep(std::time::Duration::from_millis(2500));
    signal("-CONT");
    let started = std::time::Instant::now();
    loop {
        let got =
            Command::new(jetsaga).args(["--nats-url", &url, "order", "get", "o-paused", "--json"]).output().unwrap();
        let view: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap_or_default();
        if view["status"] == "completed" {
            break;
        }
        assert!(started.elapsed().as_secs() < 30, "o-paused did not complete: {view}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // An event its reader cannot read: the customer function dead-letters it.
    let streams = runtime.block_on(async {
        let nats = async_nats::connect(url.as_str()).await.unwrap();
        let js = async_nats::jetstream::new(nats);
        let envelope = serde_json::json!({
            "id": "0193a7a4-0000-7000-8000-00000000dead", "type": "inventory.evt.reserved", "order_id": "o-fine",
            "correlation_id": "o-fine", "occurred_at": "2026-12-07T12:00:00Z", "version": 1,
            "data": {"order_id": "o-fine"}
        });
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Jetsaga-Envelope", "1");
        js.publish_with_headers("inventory.evt.reserved", headers, envelope.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
        // What the streams hold, subject by subject, once the letter is stored.
        let dlq = js.get_stream("DLQ").await.unwrap();
        let started = std::time::Instant::now();
        while dlq.clone().info().await.unwrap().state.messages == 0 {
            assert!(started.elapsed().as_secs() < 30, "no dead letter");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let mut counts = std::collections::BTreeMap::new();
        // Deliveries to the order function, redeliveries included, as its consumers count them.
        for stream in ["SAGA", "COMMANDS"] {
            let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                js.get_consumer_from_stream("order", stream).await.unwrap();
            let info = consumer.info().await.unwrap();
            counts.insert(format!("deliveries/{stream}"), info.delivered.consumer_sequence as f64);
        }
        for (stream, filter) in [("SAGA", "orders.evt.>"), ("DLQ", "dlq.>")] {
            let stream = js.get_stream(stream).await.unwrap();
            let mut subjects = stream.info_with_subjects(filter).await.unwrap();
            use futures::StreamExt;
            while let Some(Ok((subject, count))) = subjects.next().await {
                counts.insert(subject, count as f64);
            }
        }
        counts
    });
    // The store gauges are read every 10 s.
    std::thread::sleep(std::time::Duration::from_secs(11));
    let page = get(metrics_port, "/metrics");
    // The bench's timings endpoint is a view of the same measurements.
    let timings: serde_json::Value = runtime.block_on(async {
        let nats = async_nats::connect(url.as_str()).await.unwrap();
        let answer = nats.request("$JETSAGA.TIMINGS.order", "".into()).await.unwrap();
        serde_json::from_slice(&answer.payload).unwrap()
    });
    runner.stop();
    let metrics = scrape(&page);
    let stream = |subject: &str| streams.get(subject).copied().unwrap_or(0.0);

    let started = value(&metrics, "jetsaga_sagas_started_total", &[("saga", "order")]);
    assert_eq!(started, stream("orders.evt.created"), "{streams:?}\n{page}");
    assert_eq!(started, 4.0);
    // Every delivery to the order function is counted once, by what became of it.
    let handled = value(&metrics, "jetsaga_messages_total", &[("function", "order")]);
    assert_eq!(handled, stream("deliveries/SAGA") + stream("deliveries/COMMANDS"), "{streams:?}\n{page}");
    let redelivered = value(&metrics, "jetsaga_redeliveries_total", &[("function", "order")]);
    assert!(redelivered >= 1.0, "the paused runner's command came again:\n{page}");
    for outcome in ["completed", "failed"] {
        let ended = value(&metrics, "jetsaga_sagas_ended_total", &[("saga", "order"), ("outcome", outcome)]);
        assert_eq!(ended, stream(&format!("orders.evt.{outcome}")), "{outcome}: {streams:?}\n{page}");
        let timed = value(&metrics, "jetsaga_saga_duration_seconds", &[("saga", "order"), ("outcome", outcome)]);
        assert_eq!(timed, ended, "every ended saga is timed");
    }
    let letters = value(&metrics, "jetsaga_dead_letters_total", &[("function", "customer")]);
    assert_eq!(letters, stream("dlq.customer"), "{streams:?}\n{page}");
    assert_eq!(letters, 1.0);
    let given_up = value(&metrics, "jetsaga_messages_total", &[("function", "customer"), ("outcome", "dead_lettered")]);
    assert_eq!(given_up, 1.0, "{page}");
    // The order function read every order event and command once.
    let commits = value(&metrics, "jetsaga_commit_seconds", &[("function", "order")]);
    assert!(commits >= 3.0, "{page}");
    assert_eq!(value(&metrics, "jetsaga_outbox_unpublished", &[("function", "order")]), 0.0, "{page}");
    assert!(page.contains("jetsaga_outbox_oldest_age_seconds{function=\"order\"} 0"), "{page}");
    assert!(value(&metrics, "jetsaga_inbox_size", &[("function", "order")]) >= 3.0, "{page}");
    for (phase, name) in [("handling", "handling"), ("queue_wait", "queue_wait"), ("ack", "ack")] {
        let seen = value(&metrics, "jetsaga_message_phase_seconds", &[("function", "order"), ("phase", phase)]);
        assert_eq!(seen, timings[name]["count"].as_f64().unwrap(), "{phase}: {timings}\n{page}");
        assert!(seen >= 3.0);
    }
    // What the dashboard and the alerting rules read of a runner is all there.
    for prefix in [
        "jetsaga_sagas",
        "jetsaga_saga_",
        "jetsaga_consumer",
        "jetsaga_outbox",
        "jetsaga_dead",
        "jetsaga_messages",
        "jetsaga_commit",
    ] {
        assert_dashboard_served(&page, prefix);
    }
}

#[test]
fn a_gateway_serves_its_http_metrics_on_its_metrics_address() {
    let runner = common::Runner::start(&[], &[]);
    let (http_port, metrics_port) = (common::free_port(), common::free_port());
    let data = tempfile::tempdir().unwrap();
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_jetsaga"))
        .args(["gateway", "--nats-url", &runner.nats_url(), "--http-port", &http_port.to_string()])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}"), "--data-dir"])
        .arg(data.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", metrics_port)).is_err() {
        assert!(started.elapsed().as_secs() < 30, "the gateway did not serve its metrics");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for _ in 0..3 {
        get(http_port, "/api/products");
    }
    let page = get(metrics_port, "/metrics");
    gateway.kill().unwrap();
    gateway.wait().unwrap();
    runner.stop();
    let metrics = scrape(&page);
    let listed = [("route", "/api/products"), ("method", "GET"), ("status", "200")];
    assert_eq!(value(&metrics, "jetsaga_http_requests_total", &listed), 3.0, "{page}");
    let timed = value(&metrics, "jetsaga_http_request_duration_seconds", &[("route", "/api/products")]);
    assert_eq!(timed, 3.0, "{page}");
    assert!(page.contains("jetsaga_saga_outcomes_total{outcome=\"failed\"} 0"), "{page}");
    assert!(!page.contains("jetsaga_messages_total"), "the gateway's page is its own:\n{page}");
    assert_dashboard_served(&page, "jetsaga_http");
}
