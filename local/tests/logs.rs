//! `--log-format json`: a runner's whole log, from its start to its stop
//! on SIGTERM, is JSON lines a log pipeline can read, each with its level,
//! target and message, and the function's span where one is at work.

mod common;

#[test]
fn a_runner_logs_json_lines_from_start_to_stop() {
    let runner = common::Runner::start(&[], &[("JETSAGA_LOG_FORMAT", "json"), ("RUST_LOG", "info")]);
    let log = runner.stop();
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
