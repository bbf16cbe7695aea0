//! The generated NATS accounts (one user per function, exactly its
//! subjects) run the whole saga, and refuse a function what it may not do.

use std::time::Duration;

use async_nats::jetstream;
use jetsaga_jetstream::{Config, Runtime};
use jetsaga_local::client::Client;
use jetsaga_local::saga::{FUNCTIONS, SagaOptions, StoreConfig};
use jetsaga_tests::nats::NatsServer;
use tokio_util::sync::CancellationToken;

fn password(user: &str) -> String {
    format!("{user}-secret")
}

/// The generated accounts with literal passwords instead of `$JETSAGA_<USER>_PASSWORD`.
fn accounts() -> String {
    let mut config = jetsaga_local::infra::nats_accounts();
    for user in ["admin", "bridge", "order", "orchestrator", "inventory", "customer", "payment", "shipping"] {
        config =
            config.replace(&format!("$JETSAGA_{}_PASSWORD", user.to_uppercase()), &format!("\"{}\"", password(user)));
    }
    assert!(!config.contains("$JETSAGA_"), "every password was replaced:\n{config}");
    config
}

async fn connect_as(server: &NatsServer, user: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), password(user))
        .connect(server.url())
        .await
        .unwrap_or_else(|e| panic!("{user} cannot connect: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_function_runs_with_only_its_own_permissions() {
    jetsaga_tests::init_tracing();
    let server = NatsServer::start_with_config(&accounts());
    let dir = tempfile::tempdir().unwrap();
    let stores = StoreConfig::sqlite(dir.path());
    let options = SagaOptions::default();
    let mut running = Vec::new();
    for name in FUNCTIONS {
        let engines = stores.engines(&[name.to_string()], &options).await.unwrap();
        let mut runtime = Runtime::new(connect_as(&server, name).await, Config::default());
        for engine in engines {
            runtime = runtime.with(engine);
        }
        let cancel = CancellationToken::new();
        let task = tokio::spawn(runtime.run(cancel.clone().cancelled_owned()));
        running.push((cancel, task));
    }
    let admin = Client::new(connect_as(&server, "admin").await, server.url());
    let names: Vec<String> = FUNCTIONS.iter().map(|s| s.to_string()).collect();
    admin.wait_for_services(&names, Duration::from_secs(30)).await.unwrap();
    let product =
        jetsaga_events::UpsertProduct { product_id: "p".into(), name: "P".into(), price_cents: 500, stock: 3 };
    admin.command("inventory.cmd.upsert_product", &product).await.unwrap();
    let customer =
        jetsaga_events::CreateCustomer { customer_id: "c".into(), name: "C".into(), credit_limit_cents: 10_000 };
    admin.command("customers.cmd.create", &customer).await.unwrap();
    let order = serde_json::json!({"customer_id": "c", "items": [{"product_id": "p", "quantity": 2}]});
    let reply = admin.command("orders.cmd.create", &order).await.unwrap();
    let view = admin.wait_terminal(reply["order_id"].as_str().unwrap(), Duration::from_secs(30)).await.unwrap();
    assert_eq!(view.status, jetsaga_events::OrderStatus::Completed, "{view:?}");

    // Inventory may not announce an order's completion, nor read another function's consumer.
    let inventory = jetstream::new(connect_as(&server, "inventory").await);
    let forged =
        async { inventory.publish("orders.evt.completed", "{}".into()).await?.await.map_err(async_nats::Error::from) };
    let refused = tokio::time::timeout(Duration::from_secs(6), forged).await;
    assert!(!matches!(refused, Ok(Ok(_))), "inventory could publish orders.evt.completed");
    let stream = inventory.get_stream("SAGA").await.unwrap();
    assert!(stream.get_consumer::<jetstream::consumer::pull::Config>("order").await.is_err());
    let completed =
        jetsaga_tests::stream::messages(&jetstream::new(admin.nats.clone()), "SAGA", Some("orders.evt.completed"))
            .await;
    assert_eq!(completed.len(), 1, "only the order function's completion is in the stream");

    for (cancel, task) in running {
        cancel.cancel();
        task.await.unwrap().unwrap();
    }
}

#[test]
fn the_generated_cluster_config_is_accepted_by_nats_server() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.conf");
    std::fs::write(&path, jetsaga_local::infra::nats_cluster_config()).unwrap();
    let mut check = std::process::Command::new(jetsaga_tests::nats::server_binary());
    check.arg("-t").arg("-c").arg(&path).env("NATS_NODE_NAME", "nats-1");
    for user in ["admin", "bridge", "order", "orchestrator", "inventory", "customer", "payment", "shipping"] {
        check.env(format!("JETSAGA_{}_PASSWORD", user.to_uppercase()), password(user));
    }
    let output = check.output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr).to_string() + &String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "nats-server refused infra/nats/cluster.conf:\n{said}");
}
