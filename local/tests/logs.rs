//! `--log-format json`: a runner's whole log, from its start to its stop
//! on SIGTERM, is JSON lines a log pipeline can read, each with its level,
//! target and message, and the function's span where one is at work.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn a_runner_logs_json_lines_from_start_to_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut runner = Command::new(env!("CARGO_BIN_EXE_jetsaga"))
        .args(["up", "--quiet", "--no-http", "--nats-port"])
        .arg(free_port().to_string())
        .arg("--data-dir")
        .arg(dir.path())
        .env("JETSAGA_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env_remove("NATS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its stdout read to the end (a closed pipe would fail its prints).
    let stdout = BufReader::new(runner.stdout.take().unwrap());
    let (up_tx, up_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if line.starts_with("jetsaga is up") {
                let _ = up_tx.send(());
            }
        }
    });
    let started = Instant::now();
    up_rx.recv_timeout(Duration::from_secs(120)).expect("the runner was not up within 120 s");
    assert!(started.elapsed() < Duration::from_secs(120));
    // SIGTERM: it stops as a deployment stops it.
    Command::new("kill").args(["-TERM", &runner.id().to_string()]).status().unwrap();
    let output = runner.wait_with_output().unwrap();
    reader.join().unwrap();
    assert!(output.status.success(), "stopped with {:?}", output.status);

    let log = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect();
    assert!(lines.len() >= 3, "a runner says something as it starts:\n{log}");
    for line in &lines {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(line[field].is_string(), "{field} missing in {line}");
        }
    }
    // What happened inside a function carries the function's span.
    let in_function = lines.iter().find(|l| {
        l["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(|s| s["name"] == "function" && s["function"] == "order"))
    });
    assert!(in_function.is_some(), "no line names the order function's span:\n{log}");
}
