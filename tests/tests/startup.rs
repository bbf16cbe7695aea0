//! Starting many function processes at the same moment (a deploy, or every
//! pod restarting) against one nats-server: all come up, and the saga
//! stream captures every subject whoever started last.

use std::collections::BTreeSet;

use async_nats::jetstream;
use jetsaga_jetstream::Runtime;
use jetsaga_local::client::Client;
use jetsaga_local::saga::{SagaOptions, StoreConfig, runtime_config};
use jetsaga_tests::nats::NatsServer;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_runtimes_starting_together_all_come_up_with_every_subject() {
    jetsaga_tests::init_tracing();
    let options = SagaOptions::default();
    let wanted: BTreeSet<String> = runtime_config(&options).stream_subjects.into_iter().collect();
    // Races are timing-dependent: several fresh servers, every start at once.
    for _ in 0..4 {
        let server = NatsServer::start();
        let dir = tempfile::tempdir().unwrap();
        let stores = StoreConfig::sqlite(dir.path());
        let mut runtimes = Vec::new();
        for name in options.names().iter().chain(options.names().iter()) {
            let engines = jetsaga_local::saga::engines(&stores, &[name.to_string()], &options).await.unwrap();
            let config = runtime_config(&options);
            let mut runtime = Runtime::new(server.connect().await, config);
            for engine in engines {
                runtime = runtime.with(engine);
            }
            runtimes.push(runtime);
        }
        let provisioned = futures::future::join_all(runtimes.iter().map(Runtime::provision)).await;
        for (runtime, result) in runtimes.iter().zip(&provisioned) {
            let name = runtime.engines()[0].name();
            assert!(result.is_ok(), "{name} did not provision: {:?}", result.as_ref().unwrap_err());
        }
        let js = jetstream::new(server.connect().await);
        let mut stream = js.get_stream("SAGA").await.unwrap();
        let have: BTreeSet<String> = stream.info().await.unwrap().config.subjects.iter().cloned().collect();
        assert_eq!(have, wanted, "the stream captures the whole saga's subjects");

        // And they all serve: an order goes through.
        let mut running = Vec::new();
        for runtime in runtimes {
            let cancel = CancellationToken::new();
            running.push((cancel.clone(), tokio::spawn(runtime.run(cancel.cancelled_owned()))));
        }
        let client = Client::new(server.connect().await, server.url());
        let names: Vec<String> = options.names().iter().map(|s| s.to_string()).collect();
        let order = jetsaga_tests::saga::one_order_through(&client, &names).await;
        assert_eq!(order.status, jetsaga_events::OrderStatus::Completed);
        for (cancel, task) in running {
            cancel.cancel();
            task.await.unwrap().unwrap();
        }
    }
}
