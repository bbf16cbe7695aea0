//! `jetsaga bench --layout lambda`: the Lambda path (bootstraps under
//! cargo-lambda's emulator on moto's DynamoDB, fed by the bridge), priced
//! from the invocations' own cost lines.

use std::process::Command;

use serde_json::Value;

#[test]
fn the_lambda_bench_prices_an_order_from_what_its_invocations_reported() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_jetsaga"))
        .args(["bench", "--layout", "lambda", "--orders", "24", "--rate", "4", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(said.contains("$ per million:"), "the bill is printed: {said}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["correct"], true, "{said}");
    assert_eq!(report["store"], "dynamodb");
    let cost = &report["cost"];
    let per_saga = |field: &str| cost[field].as_f64().unwrap_or_else(|| panic!("no {field} in {cost}"));
    // Every step of the saga ran as an invocation of its own function.
    for function in ["order", "inventory", "customer", "payment", "shipping"] {
        let batches = cost["invocations"][function]["batch"].as_u64().unwrap_or(0);
        assert!(batches >= 1, "{function} was never invoked: {}", cost["invocations"]);
    }
    // (A batch may carry several orders' events: fewer invocations than steps is fine.)
    let invocations = per_saga("invocations_per_saga");
    assert!((1.0..100.0).contains(&invocations), "{invocations} invocations per order");
    // Each step of an order commits at least its inbox item and an outbox
    // item in a transaction, at two write units each, batched or not.
    assert!(per_saga("write_units_per_saga") >= 4.0 * 5.0, "{cost}");
    assert!(per_saga("read_units_per_saga") > 0.0, "{cost}");
    assert!(per_saga("gb_seconds_per_saga") > 0.0, "{cost}");
    let parts: f64 = ["lambda_requests", "lambda_duration", "dynamodb_reads", "dynamodb_writes", "bridge"]
        .iter()
        .map(|part| per_saga(part))
        .sum();
    assert!((per_saga("total") - parts).abs() < 1e-6, "{cost}");
    assert!(per_saga("total") > 0.0);
    // 4 orders a second: the bridge's share is a Fargate task-hour over 14,400 orders.
    assert!(per_saga("bridge") > 0.0 && per_saga("sagas_per_sec") == 4.0, "{cost}");
    assert_eq!(cost["transitions_per_saga"], 8);
}
