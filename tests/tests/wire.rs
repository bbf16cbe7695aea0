//! Wire compatibility: an independent NATS client (nats-py) drives the saga
//! with plain JSON, exactly as `nats pub` / `nats req` would.

use std::path::Path;
use std::process::Command;

use jetsaga_events::SagaMode;
use jetsaga_tests::saga::{Backend, Saga, Setup};

fn python() -> String {
    // scripts/setup installs nats-py into this venv.
    let venv = Path::new(&std::env::var("HOME").unwrap_or_default()).join(".cache/jetsaga/tools/bin/python");
    let python = std::env::var("JETSAGA_PYTHON").unwrap_or_else(|_| venv.display().to_string());
    let ok = Command::new(&python).args(["-c", "import nats"]).output().is_ok_and(|o| o.status.success());
    assert!(ok, "{python} cannot import nats-py: run scripts/setup (it installs nats-py) or set JETSAGA_PYTHON");
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_py_drives_the_saga_with_plain_json() {
    let python = python();
    let saga = Saga::start(Setup { backend: Backend::Sqlite, mode: SagaMode::Choreographed }).await;
    saga.product("p-keyboard", 4999, 50).await;
    saga.product("p-mouse", 1999, 100).await;
    saga.customer("c-ada", 100_000).await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("wire/nats_py_client.py");
    let url = saga.server.url();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python).arg(script).env("NATS_URL", url).output().expect("python runs")
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(seen["published"]["order_id"], "py-pub-1");
    assert_eq!(seen["published"]["status"], "completed");
    assert_eq!(seen["published"]["total_cents"], 4999 + 2 * 1999);
    let requested_id = seen["requested_reply"]["saga_key"].as_str().expect("nats req is answered with the saga key");
    assert_eq!(seen["requested_reply"]["order_id"], requested_id, "and, deprecated, under its old name");
    assert_eq!(seen["requested"]["order_id"], requested_id);
    assert_eq!(seen["requested"]["status"], "completed");
    assert_eq!(seen["validation_error"]["headers"]["Nats-Service-Error-Code"], "422");
    assert_eq!(seen["validation_error"]["body"]["error"], "invalid order: items must list at least one product");

    let keyboard =
        seen["products"]["products"].as_array().unwrap().iter().find(|p| p["product_id"] == "p-keyboard").unwrap();
    assert_eq!(keyboard["stock"], 48);

    let events = seen["events"].as_array().unwrap();
    let completed: Vec<&serde_json::Value> = events.iter().filter(|e| e["subject"] == "orders.evt.completed").collect();
    assert_eq!(completed.len(), 2, "nats-py saw both completions");
    let envelope = &completed[0]["envelope"];
    for field in ["id", "type", "saga_key", "correlation_id", "causation_id", "occurred_at", "version", "data"] {
        assert!(envelope.get(field).is_some(), "envelope field {field} missing: {envelope}");
    }
    assert!(completed[0]["headers"]["traceparent"].as_str().is_some_and(|t| t.starts_with("00-")));
    saga.stop().await;
}
