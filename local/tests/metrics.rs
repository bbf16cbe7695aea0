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
    assert!(page.contains("# TYPE jetsaga_batch_handling_seconds histogram"), "{page}");
    assert!(page.contains("jetsaga_batch_size_bucket{function=\"order\",le=\"1\"}"), "{page}");
    assert!(!page.contains("order_id"), "no label may name an order:\n{page}");
}
