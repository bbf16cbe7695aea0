//! The generated NATS accounts (one user per function, exactly its
//! subjects) run the whole saga, and refuse a function what it may not do:
//! with passwords (`infra/nats`), and with NATS's decentralized auth
//! (operator mode, a `.creds` file per process: `jetsaga infra credentials
//! --jwt`).

use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use jetsaga_jetstream::{Config, Runtime};
use jetsaga_local::client::Client;
use jetsaga_local::saga::{SagaOptions, StoreConfig, runtime_config};
use jetsaga_tests::nats::NatsServer;
use tokio_util::sync::CancellationToken;

/// Every NATS user of the generated accounts.
fn users() -> Vec<&'static str> {
    let mut users = vec!["admin", "bridge", jetsaga_infra::nats::GATEWAY_USER, jetsaga_infra::nats::OPS_USER];
    users.extend(jetsaga_local::saga::all_names());
    users
}

fn password(user: &str) -> String {
    format!("{user}-secret")
}

/// The generated accounts with literal passwords instead of `$JETSAGA_<USER>_PASSWORD`.
fn accounts() -> String {
    let mut config = jetsaga_infra::nats_accounts();
    for user in users() {
        config =
            config.replace(&format!("$JETSAGA_{}_PASSWORD", user.to_uppercase()), &format!("\"{}\"", password(user)));
    }
    assert!(!config.contains("$JETSAGA_"), "every password was replaced:\n{config}");
    config
}

/// How every process proves who it is.
enum Auth {
    /// A password each, in the generated `accounts` block.
    Passwords,
    /// Operator mode: the JWTs and `.creds` files `jetsaga infra credentials --jwt` made here.
    Creds(tempfile::TempDir),
}

impl Auth {
    fn creds() -> Self {
        let dir = tempfile::tempdir().unwrap();
        jetsaga_local::credentials::write_decentralized(dir.path(), None).unwrap();
        Auth::Creds(dir)
    }

    fn server(&self) -> NatsServer {
        match self {
            Auth::Passwords => NatsServer::start_with_config(&accounts()),
            Auth::Creds(dir) => {
                let operator = std::fs::read_to_string(dir.path().join("nats/operator.conf")).unwrap();
                NatsServer::start_with_config(&operator)
            }
        }
    }

    fn options(&self, user: &str) -> async_nats::ConnectOptions {
        match self {
            Auth::Passwords => async_nats::ConnectOptions::with_user_and_password(user.into(), password(user)),
            Auth::Creds(dir) => {
                let creds = std::fs::read_to_string(dir.path().join(user).join("user.creds")).unwrap();
                async_nats::ConnectOptions::with_credentials(&creds).unwrap()
            }
        }
    }
}

async fn connect_as(server: &NatsServer, auth: &Auth, user: &str) -> async_nats::Client {
    auth.options(user)
        .custom_inbox_prefix(jetsaga_local::client::inbox_prefix(user))
        .connect(server.url())
        .await
        .unwrap_or_else(|e| panic!("{user} cannot connect: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_function_runs_with_only_its_own_permissions() {
    each_function_runs_with_only_its_own_permissions_by(Auth::Passwords).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_function_runs_with_only_its_own_permissions_by_jwt_creds() {
    each_function_runs_with_only_its_own_permissions_by(Auth::creds()).await;
}

async fn each_function_runs_with_only_its_own_permissions_by(auth: Auth) {
    jetsaga_tests::init_tracing();
    let server = auth.server();
    let dir = tempfile::tempdir().unwrap();
    let stores = StoreConfig::sqlite(dir.path());
    let options = SagaOptions::default();
    // Provisioning is the administrator's deploy step.
    let admin_nats = auth.options("admin").connect(server.url()).await.unwrap();
    let functions = options.functions();
    let specs: Vec<&jetsaga_core::FunctionSpec> = functions.iter().map(|f| f.spec()).collect();
    let config = runtime_config(&options);
    jetsaga_jetstream::provision::provision(&admin_nats, &jetstream::new(admin_nats.clone()), &config, &specs)
        .await
        .unwrap();
    // As `jetsaga provision` does: the gateway's request limits live in a bucket it may only use.
    jetsaga_http::limits::provision(&jetstream::new(admin_nats.clone()), 1).await.unwrap();

    let mut running = Vec::new();
    let names = options.names();
    for name in names.iter().copied() {
        let engines = jetsaga_local::saga::engines(&stores, &[name.to_string()], &options).await.unwrap();
        let config = Config { provision: false, ..config.clone() };
        let mut runtime = Runtime::new(connect_as(&server, &auth, name).await, config);
        for engine in engines {
            runtime = runtime.with(engine);
        }
        let cancel = CancellationToken::new();
        let task = tokio::spawn(runtime.run(cancel.clone().cancelled_owned()));
        running.push((cancel, task));
    }
    let admin = Client::new(admin_nats.clone(), server.url());
    let view =
        jetsaga_tests::saga::one_order_through(&admin, &names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).await;
    assert_eq!(view.status, jetsaga_events::OrderStatus::Completed, "{view:?}");
    let outbox = admin.nats.request("$JETSAGA.OUTBOX.order", "".into()).await.unwrap();
    assert!(String::from_utf8_lossy(&outbox.payload).contains("\"unpublished\""), "the outbox endpoint serves");

    // Every function user tries what it may not do (the administrator can, so a refusal means something).
    let sanity = jetstream::consumer::pull::Config { durable_name: Some("admin-reader".into()), ..Default::default() };
    assert!(within(jetstream::new(admin_nats.clone()).create_consumer_on_stream(sanity, "SAGA")).await);
    let admin_js = jetstream::new(admin_nats.clone());
    let saga_before = admin_js.get_stream("SAGA").await.unwrap().info().await.unwrap().config.clone();
    // (Concurrently: a refused JetStream request only shows as a time-out.)
    let attempts = specs.iter().map(|spec| {
        let (server, auth, admin_nats, saga_before, specs) = (&server, &auth, &admin_nats, &saga_before, &specs);
        let name = &spec.name;
        // Another function, and an event only others may publish.
        let other = specs.iter().find(|s| s.name != spec.name).expect("the saga has several functions");
        let foreign = specs
            .iter()
            .flat_map(|s| s.emits.iter())
            .copied()
            .find(|subject| !spec.emits.contains(subject))
            .expect("some event belongs to another function");
        let other = other.name;
        async move {
            let nats = connect_as(server, auth, name).await;
            let js = jetstream::new(nats.clone());
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
            // Its read-back consumer, filtered on another function's event.
            let recall = jetsaga_jetstream::recall::consumer_name(name);
            let read_back = |filter: &str| jetstream::consumer::pull::Config {
                name: Some(recall.clone()),
                filter_subject: filter.to_string(),
                ..Default::default()
            };
            let own = spec.emits.iter().find(|s| !s.contains('>') && !s.contains('*'));
            if let Some(own) = own {
                assert!(
                    within(js.create_consumer_on_stream(read_back(own), "SAGA")).await,
                    "{name} cannot read back its own {own}"
                );
                assert!(within(js.delete_consumer_from_stream(&recall, "SAGA")).await);
            }
            let (created, changed, deleted, spied, widened_own, peeked, forged) = tokio::join!(
                within(js.create_stream(evil)),
                within(js.update_stream(widened)),
                within(js.delete_stream("DLQ")),
                within(js.create_consumer_on_stream(spy, "SAGA")),
                within(js.create_consumer_on_stream(widen_own, "SAGA")),
                within(js.get_consumer_from_stream::<jetstream::consumer::pull::Config, _, _>(other, "SAGA")),
                within(async { js.publish(foreign, "{}".into()).await?.await.map_err(async_nats::Error::from) }),
            );
            let read_foreign = within(js.create_consumer_on_stream(read_back(foreign), "SAGA")).await;
            for (what, done) in [
                ("read back another function's event", read_foreign),
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

    gateway_drives_the_saga_and_may_do_nothing_else(&server, &auth, &admin).await;
    operations_run_as_the_ops_user(&server, &auth, &admin).await;

    for (cancel, task) in running {
        cancel.cancel();
        task.await.unwrap().unwrap();
    }
}

/// The HTTP gateway as its own NATS user: a user signs up, logs in and
/// orders over HTTP to completion; the gateway user may not publish an
/// event or read the saga's events.
async fn gateway_drives_the_saga_and_may_do_nothing_else(server: &NatsServer, auth: &Auth, admin: &Client) {
    let (base, nats) = gateway_as_its_user(server, auth).await;
    let http = reqwest::Client::new();
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::OK, "{}", ready.text().await.unwrap());
    let body = serde_json::json!({"email": "ada@example.com", "password": "correct horse battery", "name": "Ada"});
    let signed = http.post(format!("{base}/api/users")).json(&body).send().await.unwrap();
    assert_eq!(signed.status(), reqwest::StatusCode::CREATED, "{}", signed.text().await.unwrap());
    let login = serde_json::json!({"email": "ada@example.com", "password": "correct horse battery"});
    let session: serde_json::Value =
        http.post(format!("{base}/api/session")).json(&login).send().await.unwrap().json().await.unwrap();
    let token = session["token"].as_str().expect("a token").to_string();
    let customer = session["user"]["customer_id"].as_str().unwrap().to_string();
    jetsaga_tests::stream::wait_until(Duration::from_secs(30), "the user's customer", || async {
        admin.customer(&customer).await.is_ok()
    })
    .await;
    let order = serde_json::json!({"items": [{"product_id": "p", "quantity": 1}]});
    let accepted: serde_json::Value = http
        .post(format!("{base}/api/orders"))
        .bearer_auth(&token)
        .json(&order)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let order_id = accepted["order_id"].as_str().expect("an order id").to_string();
    let view = admin.wait_terminal(&order_id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(view.status, jetsaga_events::OrderStatus::Completed, "{view:?}");
    // Its live events, read by the gateway user from the saga stream.
    let live = http.get(format!("{base}/api/orders/{order_id}/events")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(live.status(), reqwest::StatusCode::OK);
    let text = live.text().await.unwrap();
    assert!(text.contains("event: orders.evt.created") && text.contains("event: orders.evt.completed"), "{text}");

    // What the gateway user may not do.
    let js = jetstream::new(nats.clone());
    let forged =
        within(async { js.publish("orders.evt.completed", "{}".into()).await?.await.map_err(async_nats::Error::from) });
    assert!(!forged.await, "the gateway could publish an event");
    let mut spy = nats.subscribe("orders.evt.>").await.unwrap();
    nats.flush().await.unwrap();
    admin.nats.publish("orders.evt.completed", "{}".into()).await.unwrap();
    admin.nats.flush().await.unwrap();
    let seen = tokio::time::timeout(Duration::from_millis(500), spy.next()).await;
    assert!(!matches!(seen, Ok(Some(_))), "the gateway could read the saga's events");
    // Nor touch a function's consumer, which it could use to take the function's messages.
    let (deleted, widened) = tokio::join!(
        within(js.delete_consumer_from_stream("inventory", "SAGA")),
        within(js.create_consumer_on_stream(
            jetstream::consumer::pull::Config {
                durable_name: Some("inventory".into()),
                filter_subject: ">".into(),
                ..Default::default()
            },
            "SAGA"
        )),
    );
    assert!(!deleted, "the gateway could delete a function's consumer");
    assert!(!widened, "the gateway could change a function's consumer");
}

/// A gateway serving HTTP on a free port, connected as the `gateway` user.
async fn gateway_as_its_user(server: &NatsServer, auth: &Auth) -> (String, async_nats::Client) {
    let nats = connect_as(server, auth, jetsaga_infra::nats::GATEWAY_USER).await;
    let keys = jetsaga_http::Keys::from_secret(b"a test signing secret of at least 32 bytes").unwrap();
    let gateway = std::sync::Arc::new(jetsaga_http::Gateway::new(nats.clone(), keys));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    jetsaga_http::start_upkeep(&gateway);
    let app = jetsaga_http::router(gateway).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, nats)
}

/// The admin API's operations: the `ops` user hosts the operations
/// service and runs a whole dead-letter cycle for it (list, status,
/// redrive); the gateway only asks, and may not read the DLQ itself. A
/// dead event goes back to its function, and the `ops` user may write no
/// event itself.
async fn operations_run_as_the_ops_user(server: &NatsServer, auth: &Auth, admin: &Client) {
    let config = runtime_config(&SagaOptions::default());
    let cancel = CancellationToken::new();
    let ops_nats = connect_as(server, auth, jetsaga_infra::nats::OPS_USER).await;
    let ops = jetsaga_jetstream::ops::serve(&ops_nats, config.clone(), cancel.clone()).await.unwrap();
    let (base, nats) = gateway_as_its_user(server, auth).await;
    let http = reqwest::Client::new();
    let login = serde_json::json!({"email": "ada@example.com", "password": "correct horse battery"});
    let grant = jetsaga_events::SetRole { email: "ada@example.com".into(), role: jetsaga_events::Role::Admin };
    admin.command(jetsaga_events::subjects::USERS_CMD_SET_ROLE, &grant).await.unwrap();
    let session: serde_json::Value =
        http.post(format!("{base}/api/session")).json(&login).send().await.unwrap().json().await.unwrap();
    let token = session["token"].as_str().expect("a token").to_string();
    let get = |path: &str| http.get(format!("{base}{path}")).bearer_auth(&token).send();

    // A command nobody can read: the order function dead-letters it.
    admin.nats.publish("orders.cmd.create", "not json".into()).await.unwrap();
    admin.nats.flush().await.unwrap();
    // (The gateway's forged event above is in the DLQ too.)
    let unreadable = |letters: &serde_json::Value| -> Vec<u64> {
        letters["dead_letters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| l["function"] == "order" && l["payload"] == "not json")
            .filter_map(|l| l["dlq_sequence"].as_u64())
            .collect()
    };
    jetsaga_tests::stream::wait_until(Duration::from_secs(30), "a dead letter", || async {
        let letters: serde_json::Value = get("/api/dlq").await.unwrap().json().await.unwrap();
        unreadable(&letters).len() == 1
    })
    .await;
    let letters: serde_json::Value = get("/api/dlq").await.unwrap().json().await.unwrap();
    let sequence = unreadable(&letters)[0];
    let before = letters["dead_letters"].as_array().unwrap().len();
    let status: serde_json::Value = get("/api/status").await.unwrap().json().await.unwrap();
    assert_eq!(status["dead_letters"], before, "{status}");
    let redriven = http.post(format!("{base}/api/dlq/{sequence}/redrive")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(redriven.status(), reqwest::StatusCode::OK, "{}", redriven.text().await.unwrap());
    // Still not JSON: dead-lettered again, under a new sequence.
    jetsaga_tests::stream::wait_until(Duration::from_secs(30), "the redriven letter back in the DLQ", || async {
        let letters: serde_json::Value = get("/api/dlq").await.unwrap().json().await.unwrap();
        matches!(unreadable(&letters)[..], [again] if again != sequence)
    })
    .await;

    // A dead event: the bare `{}` published on orders.evt.completed above,
    // which a function refused. Redriven, it goes back to that function,
    // which refuses it again as itself: the letter stays, nothing is published.
    let ops_js = jetstream::new(ops_nats.clone());
    let letters = jetsaga_jetstream::ops::dead_letters(&ops_js, &config.dlq_stream, 100).await.unwrap();
    let event = letters.iter().find(|l| l.subject == "orders.evt.completed").expect("a dead event");
    let admin_js = jetstream::new(admin.nats.clone());
    let completed_before = jetsaga_tests::stream::messages(&admin_js, "SAGA", Some("orders.evt.completed")).await.len();
    let kept = jetsaga_jetstream::ops::redrive(&ops_nats, &ops_js, &config, event.dlq_sequence).await.unwrap_err();
    let said = kept.to_string();
    assert!(said.contains(&format!("{} did not take it", event.function)), "{said}");
    assert!(said.contains("not an event envelope"), "{said}");
    jetsaga_jetstream::ops::dead_letter(&ops_js, &config.dlq_stream, event.dlq_sequence).await.expect("kept");
    let completed_after = jetsaga_tests::stream::messages(&admin_js, "SAGA", Some("orders.evt.completed")).await.len();
    assert_eq!(completed_after, completed_before, "a redrive publishes no event");
    let forged = within(async {
        ops_js.publish("orders.evt.completed", "{}".into()).await?.await.map_err(async_nats::Error::from)
    });
    assert!(!forged.await, "the ops user could publish an event");

    // The gateway user may not read, delete or write dead letters itself.
    let js = jetstream::new(nats.clone());
    let (read, deleted, written) = tokio::join!(
        within(async {
            js.get_stream("DLQ").await?.get_raw_message(sequence + 1).await.map_err(async_nats::Error::from)
        }),
        within(async {
            js.get_stream("DLQ").await?.delete_message(sequence + 1).await.map_err(async_nats::Error::from)
        }),
        within(async { js.publish("dlq.order", "{}".into()).await?.await.map_err(async_nats::Error::from) }),
    );
    assert!(!read, "the gateway could read a dead letter");
    assert!(!deleted, "the gateway could delete a dead letter");
    assert!(!written, "the gateway could write a dead letter");
    cancel.cancel();
    ops.await.unwrap();
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
    let tls = jetsaga_tests::tls::certificates(&dir.path().join("tls"), &["nats-1", "nats-2", "nats-3"]);
    let config = jetsaga_infra::nats_cluster_config().replace(jetsaga_infra::nats::TLS_DIR, &tls.display().to_string());
    std::fs::write(&path, config).unwrap();
    let mut check = std::process::Command::new(jetsaga_tests::nats::server_binary());
    check.arg("-t").arg("-c").arg(&path).env("NATS_NODE_NAME", "nats-1");
    for user in users() {
        check.env(format!("JETSAGA_{}_PASSWORD", user.to_uppercase()), password(user));
    }
    let output = check.output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr).to_string() + &String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "nats-server refused infra/nats/cluster.conf:\n{said}");
}
