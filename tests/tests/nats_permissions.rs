//! The generated NATS accounts (one user per function, exactly its
//! subjects) run the whole saga, and refuse a function what it may not do.

use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
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
        .custom_inbox_prefix(jetsaga_local::client::inbox_prefix(user))
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
    // Provisioning is the administrator's deploy step.
    let admin_nats = async_nats::ConnectOptions::with_user_and_password("admin".into(), password("admin"))
        .connect(server.url())
        .await
        .unwrap();
    let specs: Vec<_> = FUNCTIONS.iter().map(|name| jetsaga_local::saga::function(name, &options).unwrap()).collect();
    let specs: Vec<&jetsaga_core::FunctionSpec> = specs.iter().map(|f| f.spec()).collect();
    let config = options.runtime_config();
    jetsaga_jetstream::provision::provision(&admin_nats, &jetstream::new(admin_nats.clone()), &config, &specs)
        .await
        .unwrap();

    let mut running = Vec::new();
    for name in FUNCTIONS {
        let engines = stores.engines(&[name.to_string()], &options).await.unwrap();
        let config = Config { provision: false, ..config.clone() };
        let mut runtime = Runtime::new(connect_as(&server, name).await, config);
        for engine in engines {
            runtime = runtime.with(engine);
        }
        let cancel = CancellationToken::new();
        let task = tokio::spawn(runtime.run(cancel.clone().cancelled_owned()));
        running.push((cancel, task));
    }
    let admin = Client::new(admin_nats.clone(), server.url());
    let names: Vec<String> = FUNCTIONS.iter().map(|s| s.to_string()).collect();
    let view = jetsaga_tests::saga::one_order_through(&admin, &names).await;
    assert_eq!(view.status, jetsaga_events::OrderStatus::Completed, "{view:?}");
    let outbox = admin.nats.request("$JETSAGA.OUTBOX.order", "".into()).await.unwrap();
    assert!(String::from_utf8_lossy(&outbox.payload).contains("\"unpublished\""), "the outbox endpoint serves");

    // Every function user tries what it may not do (the administrator can, so a refusal means something).
    let sanity = jetstream::consumer::pull::Config { durable_name: Some("admin-reader".into()), ..Default::default() };
    assert!(within(jetstream::new(admin_nats.clone()).create_consumer_on_stream(sanity, "SAGA")).await);
    let admin_js = jetstream::new(admin_nats.clone());
    let saga_before = admin_js.get_stream("SAGA").await.unwrap().info().await.unwrap().config.clone();
    // (Concurrently: a refused JetStream request only shows as a time-out.)
    let attempts = FUNCTIONS.iter().map(|name| {
        let (server, admin_nats, saga_before) = (&server, &admin_nats, &saga_before);
        async move {
            let nats = connect_as(server, name).await;
            let js = jetstream::new(nats.clone());
            let other = if *name == "order" { "inventory" } else { "order" };
            let foreign = if *name == "order" { "inventory.evt.reserved" } else { "orders.evt.completed" };
            let evil = jetstream::stream::Config {
                name: "EVIL".into(),
                subjects: vec!["evil.>".into()],
                ..Default::default()
            };
            let widened = jetstream::stream::Config {
                subjects: vec![">".into()],
                max_age: Duration::from_secs(1),
                ..saga_before.clone()
            };
            let spy =
                jetstream::consumer::pull::Config { durable_name: Some(format!("spy-{name}")), ..Default::default() };
            // Its own consumer, re-created to read everything.
            let widen_own = jetstream::consumer::pull::Config {
                durable_name: Some(name.to_string()),
                filter_subject: ">".into(),
                ..Default::default()
            };
            let (created, changed, deleted, spied, widened_own, peeked, forged) = tokio::join!(
                within(js.create_stream(evil)),
                within(js.update_stream(widened)),
                within(js.delete_stream("DLQ")),
                within(js.create_consumer_on_stream(spy, "SAGA")),
                within(js.create_consumer_on_stream(widen_own, "SAGA")),
                within(js.get_consumer_from_stream::<jetstream::consumer::pull::Config, _, _>(other, "SAGA")),
                within(async { js.publish(foreign, "{}".into()).await?.await.map_err(async_nats::Error::from) }),
            );
            for (what, done) in [
                ("create a stream", created),
                ("change the saga stream", changed),
                ("delete the DLQ", deleted),
                ("create a consumer reading every subject", spied),
                ("widen its own consumer's filter", widened_own),
                ("read another function's consumer", peeked),
                ("publish another context's event", forged),
            ] {
                assert!(!done, "{name} could {what}");
            }
            // Others' replies: subscribing to `_INBOX.>` is refused, so nothing arrives.
            let mut snoop = nats.subscribe("_INBOX.>").await.unwrap();
            nats.flush().await.unwrap();
            admin_nats.publish(format!("_INBOX.someone.{name}"), "secret".into()).await.unwrap();
            admin_nats.flush().await.unwrap();
            let snooped = tokio::time::timeout(Duration::from_millis(500), snoop.next()).await;
            assert!(!matches!(snooped, Ok(Some(_))), "{name} read a reply meant for someone else");
        }
    });
    futures::future::join_all(attempts).await;
    let saga_after = admin_js.get_stream("SAGA").await.unwrap().info().await.unwrap().config.clone();
    assert_eq!(saga_after.subjects, saga_before.subjects, "the saga stream is unchanged");
    assert_eq!(saga_after.max_age, saga_before.max_age);
    assert!(admin_js.get_stream("EVIL").await.is_err());
    assert!(admin_js.get_stream("DLQ").await.is_ok());
    let completed = jetsaga_tests::stream::messages(&admin_js, "SAGA", Some("orders.evt.completed")).await;
    assert_eq!(completed.len(), 1, "only the order function's completion is in the stream");

    for (cancel, task) in running {
        cancel.cancel();
        task.await.unwrap().unwrap();
    }
}

/// Whether a JetStream call succeeded within a few seconds (a refused
/// request times out or is answered with an error).
async fn within<T, E>(call: impl std::future::Future<Output = Result<T, E>>) -> bool {
    matches!(tokio::time::timeout(Duration::from_secs(3), call).await, Ok(Ok(_)))
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
