//! The JetStream runtime against a real nats-server: effectively-once under
//! redelivery, crashes and server restarts; dead letters; retries; queries.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use jetsaga_core::Engine;
use jetsaga_jetstream::{Config, Runtime};
use jetsaga_sql::{Durability, SqliteStore};
use jetsaga_tests::ledger::{Deposited, Ledger};
use jetsaga_tests::nats::NatsServer;
use jetsaga_tests::stream::{messages, wait_drained, wait_until};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const DEPOSIT: &str = "ledger.cmd.deposit";
const DEPOSITED: &str = "ledger.evt.deposited";
const WAIT: Duration = Duration::from_secs(30);

fn fast_config() -> Config {
    Config {
        backoff: vec![Duration::from_millis(50), Duration::from_millis(100)],
        ack_wait: Duration::from_secs(2),
        max_deliver: 4,
        ..Config::default()
    }
}

struct Running {
    cancel: CancellationToken,
    task: JoinHandle<()>,
    store: SqliteStore,
}

impl Running {
    async fn start(url: &str, dir: &std::path::Path, config: Config) -> Self {
        let client = async_nats::ConnectOptions::new().retry_on_initial_connect().connect(url).await.unwrap();
        let store = SqliteStore::open(dir.join("ledger.db"), Durability::Normal).await.unwrap();
        let runtime =
            Runtime::new(client, config).with(Engine::new(Arc::new(Ledger::default()), Arc::new(store.clone())));
        runtime.provision().await.unwrap();
        let cancel = CancellationToken::new();
        let shutdown = cancel.clone();
        let task = tokio::spawn(async move { runtime.run(shutdown.cancelled_owned()).await.unwrap() });
        // Ready once its micro service answers.
        let probe = async_nats::connect(url).await.unwrap();
        wait_until(WAIT, "the ledger service to answer", || async {
            probe.request("$SRV.PING.ledger", "".into()).await.is_ok()
        })
        .await;
        Self { cancel, task, store }
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(WAIT, self.task).await.expect("runtime stops").unwrap();
    }

    async fn balance(&self, account: &str) -> Option<u64> {
        use jetsaga_core::Store;
        let item = self.store.get(&format!("balance/{account}")).await.unwrap()?;
        Some(serde_json::from_slice(&item.value).unwrap())
    }
}

/// A fresh server with the ledger running on it (the directory holds its store).
async fn ledger_on_fresh_server() -> (NatsServer, tempfile::TempDir, Running) {
    jetsaga_tests::init_tracing();
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(&server.url(), dir.path(), fast_config()).await;
    (server, dir, running)
}

async fn publish(js: &jetstream::Context, payload: serde_json::Value) {
    js.publish(DEPOSIT, payload.to_string().into()).await.unwrap().await.unwrap();
}

async fn deposited(js: &jetstream::Context) -> Vec<Deposited> {
    messages(js, "SAGA", Some(DEPOSITED)).await.iter().map(|m| m.envelope().data_as_value()).collect()
}

trait DataAs {
    fn data_as_value(&self) -> Deposited;
}
impl DataAs for jetsaga_events::Envelope {
    fn data_as_value(&self) -> Deposited {
        serde_json::from_value(self.data.clone()).unwrap()
    }
}

#[tokio::test]
async fn redelivering_the_same_event_id_changes_nothing() {
    let (server, _dir, running) = ledger_on_fresh_server().await;
    let js = jetstream::new(server.connect().await);

    // The same envelope twice, without a de-duplication id, so JetStream stores
    // both and the function's inbox must catch the second.
    let envelope = json!({
        "id": "0193b1a2-7c4e-7d10-9f3b-2a6c1d0e4f51", "type": DEPOSIT, "correlation_id": "c-1",
        "occurred_at": "2026-11-22T01:00:00Z", "version": 1,
        "data": {"account": "acc", "amount": 5}
    });
    for _ in 0..2 {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Jetsaga-Envelope", "1");
        js.publish_with_headers(DEPOSIT, headers, envelope.to_string().into()).await.unwrap().await.unwrap();
    }
    publish(&js, json!({"account": "acc", "amount": 1})).await;
    wait_drained(&js, "SAGA", "ledger", WAIT).await;

    assert_eq!(running.balance("acc").await, Some(6), "the duplicate must not be applied twice");
    let events = deposited(&js).await;
    assert_eq!(events.iter().map(|d| d.amount).collect::<Vec<_>>(), vec![5, 1]);
    running.stop().await;
}

#[tokio::test]
async fn a_crash_between_commit_and_publish_loses_and_doubles_nothing() {
    jetsaga_tests::init_tracing();
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_fixture-runner");
    let js = jetstream::new(server.connect().await);

    // First process: aborts right after committing the deposit.
    let mut crashing = std::process::Command::new(bin)
        .env("NATS_URL", server.url())
        .env("JETSAGA_DATA_DIR", dir.path())
        .env("JETSAGA_CRASH_AFTER_COMMIT", "ledger")
        .env("JETSAGA_ACK_WAIT_MS", "1500")
        .spawn()
        .unwrap();
    wait_until(WAIT, "the SAGA stream to exist", || async { js.get_stream("SAGA").await.is_ok() }).await;
    publish(&js, json!({"account": "acc", "amount": 7})).await;
    let status = tokio::task::spawn_blocking(move || crashing.wait()).await.unwrap().unwrap();
    assert!(!status.success(), "the runner should have aborted after the commit");
    assert!(deposited(&js).await.is_empty(), "nothing may be published before the crash");

    // Second process: re-publishes the outbox, then sees the redelivered input as done.
    let mut recovering = std::process::Command::new(bin)
        .env("NATS_URL", server.url())
        .env("JETSAGA_DATA_DIR", dir.path())
        .env("JETSAGA_ACK_WAIT_MS", "1500")
        .spawn()
        .unwrap();
    wait_drained(&js, "SAGA", "ledger", WAIT).await;
    publish(&js, json!({"account": "acc", "amount": 1})).await;
    wait_drained(&js, "SAGA", "ledger", WAIT).await;
    recovering.kill().unwrap();
    recovering.wait().unwrap();

    let events = deposited(&js).await;
    assert_eq!(
        events,
        vec![
            Deposited { account: "acc".into(), amount: 7, balance: 7 },
            Deposited { account: "acc".into(), amount: 1, balance: 8 },
        ],
        "each event exactly once, in order"
    );
}

#[tokio::test]
async fn malformed_messages_go_to_the_dlq_and_processing_continues() {
    let (server, _dir, running) = ledger_on_fresh_server().await;
    let js = jetstream::new(server.connect().await);

    js.publish(DEPOSIT, "this is not json".into()).await.unwrap().await.unwrap();
    publish(&js, json!({"account": "acc", "amount": "ten"})).await;
    publish(&js, json!({"account": "acc", "amount": 10})).await;
    wait_drained(&js, "SAGA", "ledger", WAIT).await;
    assert_eq!(running.balance("acc").await, Some(10));

    let dead = messages(&js, "DLQ", None).await;
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().all(|m| m.subject == "dlq.ledger"));
    assert_eq!(dead[0].header("Jetsaga-Dlq-Function").as_deref(), Some("ledger"));
    assert_eq!(dead[0].header("Jetsaga-Dlq-Subject").as_deref(), Some(DEPOSIT));
    assert_eq!(dead[0].header("Jetsaga-Dlq-Attempts").as_deref(), Some("1"));
    assert!(dead[0].header("Jetsaga-Dlq-Reason").unwrap().contains("not valid JSON"), "{:?}", dead[0].headers);
    assert_eq!(&dead[0].payload[..], b"this is not json", "the original payload is kept for redrive");
    let reason = dead[1].header("Jetsaga-Dlq-Reason").unwrap();
    assert!(reason.contains("field `amount`") && reason.contains("\"ten\""), "{reason}");
    running.stop().await;
}

#[tokio::test]
async fn retryable_failures_back_off_then_succeed_or_are_dead_lettered() {
    let (server, _dir, running) = ledger_on_fresh_server().await;
    let js = jetstream::new(server.connect().await);

    publish(&js, json!({"account": "flaky", "amount": 3, "fail_first": 2})).await;
    publish(&js, json!({"account": "doomed", "amount": 4, "fail_first": 100})).await;
    wait_drained(&js, "SAGA", "ledger", WAIT).await;

    assert_eq!(running.balance("flaky").await, Some(3), "succeeds on the third attempt");
    assert_eq!(running.balance("doomed").await, None);
    let dead = messages(&js, "DLQ", None).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header("Jetsaga-Dlq-Attempts").as_deref(), Some("4"));
    let reason = dead[0].header("Jetsaga-Dlq-Reason").unwrap();
    assert!(reason.contains("gave up after 4 attempts") && reason.contains("simulated outage"), "{reason}");
    running.stop().await;
}

#[tokio::test]
async fn an_outage_longer_than_max_deliver_is_waited_out_not_dead_lettered() {
    let (server, _dir, running) = ledger_on_fresh_server().await;
    let js = jetstream::new(server.connect().await);
    // max_deliver is 4: a handler's own retries would be dead-lettered by now;
    // an unreachable store is waited out.
    publish(&js, json!({"account": "acc", "amount": 3, "unavailable_first": 7})).await;
    wait_drained(&js, "SAGA", "ledger", WAIT).await;
    assert_eq!(running.balance("acc").await, Some(3));
    assert!(messages(&js, "DLQ", None).await.is_empty(), "an outage is no reason to dead-letter");
    running.stop().await;
}

#[tokio::test]
async fn a_nats_server_restart_mid_stream_loses_and_doubles_nothing() {
    jetsaga_tests::init_tracing();
    let mut server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(&server.url(), dir.path(), fast_config()).await;
    let client = server.connect().await;
    let js = jetstream::new(client.clone());

    for i in 0..200u64 {
        publish(&js, json!({"account": "acc", "amount": 1, "n": i})).await;
    }
    server.restart();
    wait_until(WAIT, "the client to reconnect", || async {
        client.connection_state() == async_nats::connection::State::Connected
    })
    .await;
    for _ in 0..200u64 {
        // Publishing right after a restart can time out while JetStream recovers: retry like a client would.
        let mut attempt = 0;
        loop {
            let payload = json!({"account": "acc", "amount": 1}).to_string();
            let stored = match js.publish(DEPOSIT, payload.into()).await {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            };
            match stored {
                true => break,
                false if attempt < 50 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => panic!("cannot publish after the restart"),
            }
        }
    }
    wait_drained(&js, "SAGA", "ledger", Duration::from_secs(60)).await;
    assert_eq!(running.balance("acc").await, Some(400));
    let events = deposited(&js).await;
    assert_eq!(events.len(), 400, "one event per deposit");
    let mut balances: Vec<u64> = events.iter().map(|d| d.balance).collect();
    // Events of a batch that was being published when the server went away
    // are re-published afterwards, so only their order may differ.
    balances.sort_unstable();
    assert_eq!(balances, (1..=400).collect::<Vec<_>>(), "every balance exactly once");
    running.stop().await;
}

#[tokio::test]
async fn queries_are_served_as_a_micro_service() {
    let (server, _dir, running) = ledger_on_fresh_server().await;
    let client = server.connect().await;
    let js = jetstream::new(client.clone());
    publish(&js, json!({"account": "acc", "amount": 12})).await;
    wait_drained(&js, "SAGA", "ledger", WAIT).await;

    let reply = client.request("ledger.query.balance", r#"{"account":"acc"}"#.into()).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body, json!({"account": "acc", "balance": 12}));

    let reply = client.request("ledger.query.balance", r#"{"account":"nobody"}"#.into()).await.unwrap();
    let headers = reply.headers.unwrap();
    assert_eq!(headers.get("Nats-Service-Error-Code").unwrap().as_str(), "404");
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body["error"], "no account \"nobody\"");

    let reply = client.request("ledger.query.balance", r#"{"acct":1}"#.into()).await.unwrap();
    assert_eq!(reply.headers.unwrap().get("Nats-Service-Error-Code").unwrap().as_str(), "400");

    // Discoverable like any NATS micro service.
    let ping = client.request("$SRV.PING.ledger", "".into()).await.unwrap();
    let ping: serde_json::Value = serde_json::from_slice(&ping.payload).unwrap();
    assert_eq!(ping["name"], "ledger");
    running.stop().await;
}

#[tokio::test]
async fn trace_context_flows_from_the_command_to_the_events_it_causes() {
    let (server, _dir, running) = ledger_on_fresh_server().await;
    let js = jetstream::new(server.connect().await);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    headers.insert("Nats-Msg-Id", "client-chosen-id");
    let body = json!({"account": "acc", "amount": 2}).to_string();
    js.publish_with_headers(DEPOSIT, headers, body.into()).await.unwrap().await.unwrap();
    wait_drained(&js, "SAGA", "ledger", WAIT).await;

    let out = &messages(&js, "SAGA", Some(DEPOSITED)).await[0];
    let tp = out.header("traceparent").unwrap();
    assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{tp}");
    assert!(!tp.contains("00f067aa0ba902b7"), "a new span id per hop: {tp}");
    let envelope = out.envelope();
    assert_eq!(envelope.causation_id.as_deref(), Some("client-chosen-id"), "Nats-Msg-Id is the command's event id");
    assert_eq!(envelope.correlation_id, "client-chosen-id");
    assert_eq!(out.header("Nats-Msg-Id").unwrap(), envelope.id);
    running.stop().await;
}

#[tokio::test]
async fn provisioning_is_idempotent_and_keeps_other_functions_subjects() {
    jetsaga_tests::init_tracing();
    let server = NatsServer::start();
    let client = server.connect().await;
    let js = jetstream::new(client.clone());
    js.create_stream(jetstream::stream::Config {
        name: "SAGA".into(),
        subjects: vec!["orders.evt.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let running = Running::start(&server.url(), dir.path(), fast_config()).await;
        running.stop().await;
    }
    let mut stream = js.get_stream("SAGA").await.unwrap();
    let mut subjects = stream.info().await.unwrap().config.subjects.clone();
    subjects.sort();
    assert_eq!(
        subjects,
        ["ledger.cmd.deposit", "ledger.evt.>", "orders.evt.>"],
        "ledger.cmd.open is request/reply only"
    );
    let consumer = stream.get_consumer::<jetstream::consumer::pull::Config>("ledger").await.unwrap();
    assert_eq!(consumer.cached_info().config.filter_subjects, vec![DEPOSIT.to_string()]);
}

#[tokio::test]
async fn the_runtime_runs_on_a_three_node_cluster_with_replicated_streams() {
    jetsaga_tests::init_tracing();
    let cluster = jetsaga_tests::nats::run_cluster(3);
    let client = cluster.connect().await;
    let js = jetstream::new(client.clone());
    let dir = tempfile::tempdir().unwrap();
    let config = Config { replicas: 3, ..fast_config() };
    // The cluster elects its JetStream leader shortly after the nodes are up.
    let store = SqliteStore::open(dir.path().join("ledger.db"), Durability::Normal).await.unwrap();
    let runtime = Runtime::new(client.clone(), config).with(Engine::new(Arc::new(Ledger::default()), Arc::new(store)));
    let mut provisioned = false;
    for _ in 0..100 {
        if runtime.provision().await.is_ok() {
            provisioned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(provisioned, "provisioning never succeeded on the cluster");
    let cancel = CancellationToken::new();
    let task = tokio::spawn(runtime.run(cancel.clone().cancelled_owned()));
    for _ in 0..20 {
        publish(&js, json!({"account": "acc", "amount": 1})).await;
    }
    wait_drained(&js, "SAGA", "ledger", WAIT).await;
    let mut stream = js.get_stream("SAGA").await.unwrap();
    assert_eq!(stream.info().await.unwrap().config.num_replicas, 3);
    assert_eq!(deposited(&js).await.len(), 20);
    cancel.cancel();
    task.await.unwrap().unwrap();
}

fn error_code(reply: &async_nats::Message) -> Option<String> {
    Some(reply.headers.as_ref()?.get("Nats-Service-Error-Code")?.as_str().to_string())
}

async fn open_with_id(client: &async_nats::Client, body: &'static str, id: &str) -> serde_json::Value {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    let reply = client.request_with_headers("ledger.cmd.open", headers, body.into()).await.unwrap();
    assert_eq!(error_code(&reply), None);
    serde_json::from_slice(&reply.payload).unwrap()
}

#[tokio::test]
async fn commands_are_stored_processed_once_each_and_answered() {
    let (server, _dir, running) = ledger_on_fresh_server().await;
    let client = server.connect().await;
    let js = jetstream::new(client.clone());

    let reply = client.request("ledger.cmd.open", r#"{"account":"new"}"#.into()).await.unwrap();
    assert_eq!(error_code(&reply), None);
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body["events"], json!(["ledger.evt.opened"]));
    assert!(body["event_id"].as_str().is_some_and(|id| !id.is_empty()));

    // The same body again is another command (no id says otherwise): it
    // runs, and is refused because the first one opened the account.
    let reply = client.request("ledger.cmd.open", r#"{"account":"new"}"#.into()).await.unwrap();
    assert_eq!(error_code(&reply).as_deref(), Some("422"));
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body["error"], "account \"new\" is already open");

    // With a Nats-Msg-Id, a retry is the same command: the first answer again.
    let first = open_with_id(&client, r#"{"account":"retried"}"#, "open-retried").await;
    let again = open_with_id(&client, r#"{"account":"retried"}"#, "open-retried").await;
    assert_eq!(again["event_id"], first["event_id"]);
    assert_eq!(again["events"], json!(["ledger.evt.opened"]));
    assert_eq!(again["repeated"], true);

    let reply = client.request("ledger.cmd.open", "{".into()).await.unwrap();
    assert_eq!(error_code(&reply).as_deref(), Some("400"));

    // A plain publish (no reply subject) is processed too.
    client.publish("ledger.cmd.open", r#"{"account":"quiet"}"#.into()).await.unwrap();
    client.flush().await.unwrap();
    wait_until(WAIT, "the published open to be processed", || async { running.balance("quiet").await == Some(0) })
        .await;
    wait_drained(&js, "COMMANDS", "ledger", WAIT).await;

    let opened = messages(&js, "SAGA", Some("ledger.evt.opened")).await;
    assert_eq!(opened.len(), 3, "new, retried and quiet, once each");
    // Every command is kept in the command stream (the retry's copy dropped
    // by its de-duplication), none in the saga stream.
    assert_eq!(messages(&js, "COMMANDS", Some("ledger.cmd.open")).await.len(), 5);
    assert!(messages(&js, "SAGA", Some("ledger.cmd.open")).await.is_empty());
    let dead = messages(&js, "DLQ", None).await;
    assert_eq!(dead.len(), 1, "the malformed command is kept for inspection");
    assert!(dead[0].header("Jetsaga-Dlq-Origin").unwrap().starts_with("COMMANDS/"));
    running.stop().await;
}

#[tokio::test]
async fn commands_sent_while_no_copy_of_the_function_runs_are_processed_when_one_starts() {
    let (server, dir, running) = ledger_on_fresh_server().await;
    running.stop().await;
    let client = server.connect().await;
    let js = jetstream::new(client.clone());

    for body in [r#"{"account":"later"}"#, r#"{"account":"later"}"#, r#"{"account":"other"}"#] {
        client.publish("ledger.cmd.open", body.into()).await.unwrap();
    }
    client.flush().await.unwrap();
    // A request finds nobody to answer it, but its command is kept as well.
    let unanswered = tokio::time::timeout(
        Duration::from_secs(1),
        client.request("ledger.cmd.open", r#"{"account":"asked"}"#.into()),
    )
    .await;
    assert!(!matches!(unanswered, Ok(Ok(_))), "nothing runs that could answer: {unanswered:?}");

    let running = Running::start(&server.url(), dir.path(), fast_config()).await;
    wait_until(WAIT, "every command sent while down to be processed", || async {
        running.balance("later").await == Some(0)
            && running.balance("other").await == Some(0)
            && running.balance("asked").await == Some(0)
    })
    .await;
    wait_drained(&js, "COMMANDS", "ledger", WAIT).await;
    let opened = messages(&js, "SAGA", Some("ledger.evt.opened")).await;
    assert_eq!(opened.len(), 3, "later (once: the second was refused), other, asked");
    assert!(messages(&js, "DLQ", None).await.is_empty());
    running.stop().await;
}

#[tokio::test]
async fn a_message_whose_dead_letter_cannot_be_stored_is_kept_until_it_can() {
    let (server, _dir, running) = ledger_on_fresh_server().await;
    let js = jetstream::new(server.connect().await);
    let dlq = js.get_stream("DLQ").await.unwrap().info().await.unwrap().config.clone();
    js.delete_stream("DLQ").await.unwrap();

    js.publish(DEPOSIT, "not json".into()).await.unwrap().await.unwrap();
    // Far more deliveries than max_deliver (4) while the DLQ is away: the
    // server must not give up on it, and the worker must not drop it.
    wait_until(WAIT, "the message to be delivered 8 times", || async {
        let stream = js.get_stream("SAGA").await.unwrap();
        let consumer = stream.get_consumer::<jetstream::consumer::pull::Config>("ledger").await.unwrap();
        consumer.cached_info().delivered.consumer_sequence >= 8
    })
    .await;
    js.create_stream(dlq).await.unwrap();
    wait_drained(&js, "SAGA", "ledger", WAIT).await;
    let dead = messages(&js, "DLQ", None).await;
    assert_eq!(dead.len(), 1, "dead-lettered once the DLQ is back");
    assert!(dead[0].header("Jetsaga-Dlq-Reason").unwrap().contains("not valid JSON"));
    publish(&js, json!({"account": "acc", "amount": 3})).await;
    wait_drained(&js, "SAGA", "ledger", WAIT).await;
    assert_eq!(running.balance("acc").await, Some(3), "and processing went on");
    running.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_dead_letters_its_input_and_the_function_keeps_serving() {
    let (server, _dir, running) = ledger_on_fresh_server().await;
    let js = jetstream::new(server.connect().await);
    publish(&js, json!({"account": "acc", "amount": 1, "panic": true})).await;
    publish(&js, json!({"account": "acc", "amount": 2})).await;
    wait_drained(&js, "SAGA", "ledger", WAIT).await;
    assert_eq!(running.balance("acc").await, Some(2));
    let dead = messages(&js, "DLQ", None).await;
    assert_eq!(dead.len(), 1);
    let reason = dead[0].header("Jetsaga-Dlq-Reason").unwrap();
    assert!(reason.contains("the handler panicked: simulated bug in the ledger handler"), "{reason}");
    // Still serving after the panic.
    publish(&js, json!({"account": "acc", "amount": 4})).await;
    wait_drained(&js, "SAGA", "ledger", WAIT).await;
    assert_eq!(running.balance("acc").await, Some(6));
    running.stop().await;
}

#[tokio::test]
async fn the_inbox_is_swept_past_its_retention_and_unsafe_retentions_are_refused() {
    jetsaga_tests::init_tracing();
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let js = jetstream::new(server.connect().await);
    // Retention just above what the stream can still redeliver.
    let config = Config {
        max_age: Some(Duration::from_secs(2)),
        duplicate_window: Duration::from_secs(1),
        inbox_retention: Duration::from_secs(4),
        ..fast_config()
    };
    let running = Running::start(&server.url(), dir.path(), config.clone()).await;
    let envelope = json!({
        "id": "0193b1a2-7c4e-7d10-9f3b-2a6c1d0e4f52", "type": DEPOSIT, "correlation_id": "c-1",
        "occurred_at": "2026-11-22T01:00:00Z", "version": 1, "data": {"account": "acc", "amount": 5}
    });
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Jetsaga-Envelope", "1");
    js.publish_with_headers(DEPOSIT, headers, envelope.to_string().into()).await.unwrap().await.unwrap();
    wait_drained(&js, "SAGA", "ledger", WAIT).await;
    use jetsaga_core::Store;
    // A command, remembered under its inbox identity.
    let id = &jetsaga_core::engine::inbox_id(&serde_json::from_value(envelope).unwrap());
    assert!(running.store.processed(id).await.unwrap().is_some(), "remembered while it can be redelivered");
    let store = running.store.clone();
    running.stop().await;

    tokio::time::sleep(Duration::from_secs(5)).await;
    // The relay sweeps at start (then hourly).
    let again = Running::start(&server.url(), dir.path(), config).await;
    wait_until(WAIT, "the old inbox record to be swept", || async { store.processed(id).await.unwrap().is_none() })
        .await;
    again.stop().await;

    // A retention shorter than what the stream can redeliver is refused.
    let client = server.connect().await;
    let unsafe_config = Config { inbox_retention: Duration::from_secs(60), ..Config::default() };
    let runtime = Runtime::new(client, unsafe_config).with(Engine::new(Arc::new(Ledger::default()), Arc::new(store)));
    let err = runtime.run(std::future::pending()).await.unwrap_err().to_string();
    assert!(err.contains("inbox_retention") && err.contains("max_age"), "{err}");
}

/// The ledger where anything for the account "slow" takes 4 s (an
/// invocation lost with its Lambda instance, waited out until the invoke
/// timeout), counting the inputs for it that it is handed.
#[derive(Debug)]
struct SlowForOne {
    engine: Engine,
    slow_inputs: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait::async_trait]
impl jetsaga_core::Processor for SlowForOne {
    fn spec(&self) -> &'static jetsaga_core::FunctionSpec {
        self.engine.spec()
    }
    async fn process(&self, batch: &[jetsaga_core::Incoming]) -> Vec<jetsaga_core::Outcome> {
        let slow = batch.iter().filter(|i| i.envelope.data["account"] == "slow").count();
        if slow > 0 {
            self.slow_inputs.fetch_add(slow, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(4)).await;
        }
        self.engine.process(batch).await
    }
    async fn query(&self, subject: &str, request: &[u8]) -> Result<serde_json::Value, jetsaga_core::QueryError> {
        self.engine.query(subject, request).await
    }
    async fn unpublished(&self, limit: usize) -> Result<Vec<jetsaga_core::OutboxRecord>, jetsaga_core::StoreError> {
        self.engine.unpublished(limit).await
    }
    async fn mark_published(&self, ids: &[String]) -> Result<(), jetsaga_core::StoreError> {
        self.engine.mark_published(ids).await
    }
}

/// The slow ledger on a fresh server (ack wait 2 s): the runtime's
/// cancellation, its task, and the count of inputs for "slow".
async fn slow_ledger(
    server: &NatsServer,
    dir: &std::path::Path,
    config: Config,
) -> (CancellationToken, JoinHandle<Result<(), jetsaga_jetstream::RuntimeError>>, Arc<std::sync::atomic::AtomicUsize>) {
    let client = server.connect().await;
    let store = SqliteStore::open(dir.join("ledger.db"), Durability::Normal).await.unwrap();
    let slow_inputs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let slow = SlowForOne {
        engine: Engine::new(Arc::new(Ledger::default()), Arc::new(store)),
        slow_inputs: slow_inputs.clone(),
    };
    let runtime = Runtime::new(client.clone(), config).with(slow);
    runtime.provision().await.unwrap();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(runtime.run(cancel.clone().cancelled_owned()));
    wait_until(WAIT, "the ledger service to answer", || async {
        client.request("$SRV.PING.ledger", "".into()).await.is_ok()
    })
    .await;
    (cancel, task, slow_inputs)
}

#[tokio::test]
async fn a_slow_request_batch_holds_up_only_itself() {
    jetsaga_tests::init_tracing();
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (cancel, task, _) = slow_ledger(&server, dir.path(), Config { concurrency: 2, ..fast_config() }).await;
    let client = server.connect().await;
    let slow = tokio::spawn({
        let client = client.clone();
        async move { open_with_id(&client, r#"{"account":"slow"}"#, "open-slow").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Sent while the slow one is being processed: answered long before it.
    let started = std::time::Instant::now();
    let quick = open_with_id(&client, r#"{"account":"quick"}"#, "open-quick").await;
    assert_eq!(quick["events"], json!(["ledger.evt.opened"]));
    assert!(started.elapsed() < Duration::from_secs(2), "waited {:?} behind the slow batch", started.elapsed());
    assert!(!slow.is_finished(), "the slow one is still being processed");
    assert_eq!(slow.await.unwrap()["events"], json!(["ledger.evt.opened"]));
    cancel.cancel();
    tokio::time::timeout(WAIT, task).await.expect("runtime stops").unwrap().unwrap();
}

#[tokio::test]
async fn a_batch_slower_than_the_ack_wait_is_kept_in_progress_not_redelivered() {
    jetsaga_tests::init_tracing();
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    // Ack wait 2 s; the deposit takes 4 s.
    let (cancel, task, slow_inputs) = slow_ledger(&server, dir.path(), fast_config()).await;
    let js = jetstream::new(server.connect().await);
    publish(&js, json!({"account": "slow", "amount": 3})).await;
    wait_drained(&js, "SAGA", "ledger", WAIT).await;
    let stream = js.get_stream("SAGA").await.unwrap();
    let mut consumer = stream.get_consumer::<jetstream::consumer::pull::Config>("ledger").await.unwrap();
    let info = consumer.info().await.unwrap().clone();
    assert_eq!(info.num_redelivered, 0, "in-progress acks kept the slow deposit from being redelivered");
    assert_eq!(slow_inputs.load(std::sync::atomic::Ordering::SeqCst), 1, "handed to the function once");
    assert_eq!(deposited(&js).await.iter().map(|d| d.amount).collect::<Vec<_>>(), vec![3]);
    cancel.cancel();
    tokio::time::timeout(WAIT, task).await.expect("runtime stops").unwrap().unwrap();
}

/// An event published before a crash whose removal from the outbox was
/// lost, found again at a start later than the duplicate window, is not
/// stored twice: the relay reads back the stream and leaves it out. One
/// that never reached the stream is published.
#[tokio::test]
async fn events_published_before_a_crash_are_not_doubled_after_the_duplicate_window() {
    use jetsaga_core::Store;
    jetsaga_tests::init_tracing();
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let js = jetstream::new(server.connect().await);
    let config = Config { duplicate_window: Duration::from_secs(1), ..fast_config() };
    // Provisioned with a one-second window; then the process is gone.
    let first = Running::start(&server.url(), dir.path(), config.clone()).await;
    let store = first.store.clone();
    first.stop().await;

    // Two events committed an hour ago: the first reached the stream before
    // the crash (its removal from the outbox did not), the second did not.
    let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let record = |seed: &str| {
        let id = jetsaga_core::ids::derived_id(an_hour_ago, seed);
        let envelope = json!({
            "id": id, "type": DEPOSITED, "correlation_id": "c-1", "occurred_at": an_hour_ago.to_rfc3339(),
            "version": 1, "data": {"account": "acc", "amount": 1, "balance": 1}
        });
        jetsaga_core::OutboxRecord {
            id,
            subject: DEPOSITED.into(),
            payload: envelope.to_string().into_bytes(),
            traceparent: None,
            schedule: None,
        }
    };
    let (published, lost) = (record("published"), record("lost"));
    let commit = jetsaga_core::Commit {
        event_id: "input-an-hour-ago".into(),
        outbox: vec![published.clone(), lost.clone()],
        ..Default::default()
    };
    store.commit(&[commit]).await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, published.id.as_str());
    headers.insert("Jetsaga-Envelope", "1");
    js.publish_with_headers(DEPOSITED, headers, published.payload.clone().into()).await.unwrap().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await; // past the window

    let again = Running::start(&server.url(), dir.path(), config).await;
    wait_until(WAIT, "the outbox to be empty", || async { store.unpublished(10).await.unwrap().is_empty() }).await;
    let ids: Vec<String> =
        messages(&js, "SAGA", Some(DEPOSITED)).await.iter().map(|m| m.envelope().id.clone()).collect();
    assert_eq!(ids, vec![published.id.clone(), lost.id.clone()], "each event once");
    again.stop().await;
}

/// A schedule left in the outbox by a crash, found again after the
/// duplicate window, does not replace a newer schedule of the same key
/// that the stream holds (it would put off or lose that deadline).
#[tokio::test]
async fn an_old_schedule_found_after_a_crash_does_not_replace_a_newer_one() {
    use jetsaga_core::Store;
    use jetsaga_core::schedule::Schedule;
    jetsaga_tests::init_tracing();
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let js = jetstream::new(server.connect().await);
    let config = Config {
        duplicate_window: Duration::from_secs(1),
        stream_subjects: vec![jetsaga_core::schedule::SCHEDULE_SUBJECTS.into()],
        ..fast_config()
    };
    let first = Running::start(&server.url(), dir.path(), config.clone()).await;
    let store = first.store.clone();
    first.stop().await;

    let on = jetsaga_core::schedule::name_for("ledger", "acc");
    let schedule = |seed: &str, made: chrono::DateTime<chrono::Utc>, due: chrono::DateTime<chrono::Utc>| {
        let id = jetsaga_core::ids::derived_id(made, seed);
        let envelope = json!({
            "id": id, "type": "ledger.evt.opened", "correlation_id": "c-1", "occurred_at": made.to_rfc3339(),
            "version": 1, "data": {"account": "acc"}
        });
        jetsaga_core::OutboxRecord {
            id,
            subject: "ledger.evt.opened".into(),
            payload: envelope.to_string().into_bytes(),
            traceparent: None,
            schedule: Some(Schedule::At { name: on.clone(), at: chrono::SubsecRound::trunc_subsecs(due, 3) }),
        }
    };
    let now = chrono::Utc::now();
    // The older one fired long ago (the server removed it); the newer one waits.
    let older = schedule("older", now - chrono::Duration::hours(2), now - chrono::Duration::minutes(90));
    let newer = schedule("newer", now - chrono::Duration::hours(1), now + chrono::Duration::hours(1));
    let commit = jetsaga_core::Commit {
        event_id: "inputs-hours-ago".into(),
        outbox: vec![older.clone(), newer.clone()],
        ..Default::default()
    };
    store.commit(&[commit]).await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, newer.id.as_str());
    headers.insert("Jetsaga-Envelope", "1");
    for (name, value) in jetsaga_jetstream::schedule::headers(&newer) {
        headers.insert(name, value);
    }
    js.publish_with_headers(newer.destination().to_string(), headers, newer.payload.clone().into())
        .await
        .unwrap()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await; // past the window

    let again = Running::start(&server.url(), dir.path(), config).await;
    wait_until(WAIT, "the outbox to be empty", || async { store.unpublished(10).await.unwrap().is_empty() }).await;
    let held: Vec<String> =
        messages(&js, "SAGA", Some(&on)).await.iter().filter_map(|m| m.header("Nats-Msg-Id")).collect();
    assert_eq!(held, vec![newer.id.clone()], "the newer schedule alone waits");
    again.stop().await;
}

/// A store written before schedules were a field of their own (they were
/// written into the outbox record's subject) is upgraded in place when a
/// function opens it, and what it still had to publish goes out as it was
/// meant: the schedule waits under its name and fires on its subject, the
/// cancel is stored on its subject and ends its schedule.
#[tokio::test]
async fn pending_schedules_in_an_old_store_are_published_as_they_were_meant() {
    use jetsaga_core::Store;
    use jetsaga_core::schedule::{SCHEDULE_SUBJECTS, Schedule, name_for};
    use sqlx::Connection;
    jetsaga_tests::init_tracing();
    let server = NatsServer::start();
    let js = jetstream::new(server.connect().await);
    let config = Config { stream_subjects: vec![SCHEDULE_SUBJECTS.into()], ..fast_config() };
    // Streams first (a throwaway store), then a schedule the old store's cancel ends.
    let scratch = tempfile::tempdir().unwrap();
    Running::start(&server.url(), scratch.path(), config.clone()).await.stop().await;
    let now = chrono::Utc::now();
    let envelope = |id: &str, subject: &str| {
        json!({"id": id, "type": subject, "correlation_id": "c-1", "occurred_at": now.to_rfc3339(),
               "version": 1, "data": {"account": "acc"}})
        .to_string()
    };
    let (waiting, ended) = (name_for("ledger", "acc"), name_for("ledger", "old"));
    let doomed = jetsaga_core::OutboxRecord {
        id: "e-doomed".into(),
        subject: "ledger.evt.opened".into(),
        payload: envelope("e-doomed", "ledger.evt.opened").into_bytes(),
        traceparent: None,
        schedule: Some(Schedule::At { name: ended.clone(), at: now + chrono::Duration::hours(1) }),
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, doomed.id.as_str());
    headers.insert("Jetsaga-Envelope", "1");
    for (name, value) in jetsaga_jetstream::schedule::headers(&doomed) {
        headers.insert(name, value);
    }
    js.publish_with_headers(ended.clone(), headers, doomed.payload.into()).await.unwrap().await.unwrap();
    assert_eq!(messages(&js, "SAGA", Some(&ended)).await.len(), 1, "the schedule to end waits");

    // The old store: its outbox table without schedule columns, two records pending.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ledger.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let due = (now + chrono::Duration::seconds(2)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let old = format!(
        "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL, expires_at INTEGER);
         CREATE TABLE inbox (event_id TEXT PRIMARY KEY, processed_at_ms INTEGER NOT NULL, receipt TEXT) WITHOUT ROWID;
         CREATE TABLE outbox (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, event_id TEXT NOT NULL,
                              subject TEXT NOT NULL, payload BLOB NOT NULL, traceparent TEXT);
         INSERT INTO inbox VALUES ('e-in', 0, NULL);
         INSERT INTO outbox (id, event_id, subject, payload) VALUES
           ('e-later', 'e-in', '{waiting} @at {due} ledger.evt.opened', CAST('{}' AS BLOB)),
           ('e-ending', 'e-in', 'ledger.evt.deposited purge {ended}', CAST('{}' AS BLOB));",
        envelope("e-later", "ledger.evt.opened"),
        envelope("e-ending", "ledger.evt.deposited"),
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(old)).execute(&mut db).await.unwrap();
    db.close().await.unwrap();

    let running = Running::start(&server.url(), dir.path(), config).await;
    wait_until(WAIT, "the old outbox to be empty", || async {
        running.store.unpublished(10).await.unwrap().is_empty()
    })
    .await;
    let ids = |stored: &[jetsaga_tests::stream::Stored]| {
        stored.iter().filter_map(|m| m.header("Nats-Msg-Id")).collect::<Vec<String>>()
    };
    assert_eq!(ids(&messages(&js, "SAGA", Some("ledger.evt.deposited")).await), ["e-ending"]);
    assert!(messages(&js, "SAGA", Some(&ended)).await.is_empty(), "the cancel ended its schedule");
    let pending = messages(&js, "SAGA", Some(&waiting)).await;
    assert_eq!(ids(&pending), ["e-later"], "the schedule waits under its name");
    assert_eq!(pending[0].header("Nats-Schedule-Target").as_deref(), Some("ledger.evt.opened"));
    wait_until(WAIT, "the schedule to fire", || async {
        messages(&js, "SAGA", Some("ledger.evt.opened"))
            .await
            .iter()
            .any(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).is_ok_and(|e| e["id"] == "e-later"))
    })
    .await;
    running.stop().await;
}
