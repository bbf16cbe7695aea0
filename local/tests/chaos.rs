//! The fault-injection suite as a test: a short `jetsaga chaos` run
//! (function processes killed and paused, nats-server killed and restarted
//! on its store) must find nothing lost, doubled, stuck or dead-lettered;
//! and the same on the Lambda path (bootstraps under cargo-lambda's
//! emulator on DynamoDB, fed by bridges, both killed and paused).

use std::path::PathBuf;

use jetsaga_local::chaos::{self, ChaosArgs, Fault};
use jetsaga_local::up::{SagaKind, StoreKind};

fn args(seed: u64) -> ChaosArgs {
    ChaosArgs {
        orders: 400,
        rate: 80,
        seed: Some(seed),
        faults: vec![Fault::Kill, Fault::Pause, Fault::Server, Fault::Hang],
        fault_every: 0.4,
        cluster: false,
        store: StoreKind::Sqlite,
        database_url: None,
        saga: SagaKind::Choreographed,
        copies: 2,
        lambda: false,
        cancel_share: 0.1,
        publish_share: 0.2,
        json: None,
        keep: false,
        runner: Some(PathBuf::from(env!("CARGO_BIN_EXE_jetsaga"))),
        containers: None,
        container_runtime: "podman".into(),
    }
}

/// One run at a time: each one loads both cores, and the faults' timing
/// (a pause longer than the ack wait, say) means what it says only if the
/// run is not starved by another.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_pauses_and_server_restarts_lose_and_double_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let report = chaos::run(args(20261122)).await.unwrap();
    chaos::print(&report);
    let t = &report.tally;
    assert_eq!(t.findings, vec![], "reproduce: {}", report.reproduce);
    // Every create was answered, or sent by plain publish: of those, what the
    // server kept ran (checked above, as accepted); at most what was in
    // flight at a server kill is not kept.
    let lost_in_flight = report.published - report.published_kept;
    assert_eq!(t.accepted + report.unanswered + lost_in_flight, 400);
    assert!(report.published >= 40, "a share is published: {}", report.published);
    let server_kills = report.faults.get("server").copied().unwrap_or(0);
    assert!(lost_in_flight <= server_kills, "{lost_in_flight} publishes lost with {server_kills} server kills");
    assert!(t.accepted >= 390 - lost_in_flight, "the client got answers through the faults: {} accepted", t.accepted);
    for fault in ["kill", "server"] {
        assert!(report.faults.get(fault).copied().unwrap_or(0) >= 1, "no {fault} fault injected: {:?}", report.faults);
    }
    // A step hung past its deadline: orders waiting for it failed by it,
    // and everything above still holds (what it did late was compensated).
    let hangs: usize = report.faults.iter().filter(|(k, _)| k.starts_with("hang")).map(|(_, n)| n).sum();
    assert!(hangs >= 1, "no hang injected: {:?}", report.faults);
    assert!(t.failure_reasons.get("deadline").copied().unwrap_or(0) >= 1, "no order failed by its deadline: {t:?}");
    // The mix exercised every ending.
    for outcome in ["completed", "failed", "canceled"] {
        assert!(t.outcomes.get(outcome).copied().unwrap_or(0) > 0, "no {outcome} order: {:?}", t.outcomes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_lambda_path_bootstrap_and_bridge_kills_lose_and_double_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    // A gentler run than on the local stores, as the README's Lambda runs:
    // the emulated DynamoDB (moto) serves one request at a time, every
    // function has exactly two instances (Lambda would start more), and an
    // invocation lost with its instance is given up only after the invoke
    // timeout (Lambda would fail it at once).
    let orders = 120;
    let report = chaos::run(ChaosArgs {
        orders,
        rate: 3,
        fault_every: 1.0,
        lambda: true,
        faults: vec![Fault::Kill, Fault::Pause, Fault::Server],
        ..args(20261123)
    })
    .await
    .unwrap();
    chaos::print(&report);
    let t = &report.tally;
    assert_eq!(report.store, "dynamodb");
    assert_eq!(t.findings, vec![], "reproduce: {}", report.reproduce);
    let lost_in_flight = report.published - report.published_kept;
    assert_eq!(t.accepted + report.unanswered + lost_in_flight, orders);
    let server_kills = report.faults.get("server").copied().unwrap_or(0);
    assert!(lost_in_flight <= server_kills, "{lost_in_flight} publishes lost with {server_kills} server kills");
    assert!(
        t.accepted >= orders - 5 - lost_in_flight,
        "the client got answers through the faults: {} accepted",
        t.accepted
    );
    // Both halves of the Lambda path were killed mid-flight.
    for fault in ["kill bootstrap", "kill bridge"] {
        assert!(report.faults.get(fault).copied().unwrap_or(0) >= 1, "no {fault} fault injected: {:?}", report.faults);
    }
    for outcome in ["completed", "failed"] {
        assert!(t.outcomes.get(outcome).copied().unwrap_or(0) > 0, "no {outcome} order: {:?}", t.outcomes);
    }
}
