//! The NATS cluster as generated (`infra/nats/cluster.conf`), with
//! certificates from `scripts/nats-certs`: a client that does not speak TLS
//! is refused, a node without a certificate of the cluster's CA cannot join
//! as a route, a client configured for TLS refuses a server without it, and
//! the saga runs over TLS with each identity's password.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use jetsaga_jetstream::tls::TlsSettings;
use jetsaga_jetstream::{Config, Runtime};
use jetsaga_local::client::Client;
use jetsaga_local::saga::{SagaOptions, StoreConfig, runtime_config};
use jetsaga_tests::nats::NatsServer;
use jetsaga_tests::stream::wait_until;
use tokio_util::sync::CancellationToken;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn password(user: &str) -> String {
    format!("{user}-secret")
}

/// The generated node config, with the certificates in `tls`, monitoring
/// and routes on ports of its own, routes to `routes`, literal passwords.
fn node_config(name: &str, tls: &Path, http: u16, cluster: u16, routes: &[u16]) -> String {
    let generated = jetsaga_infra::nats_cluster_config();
    let named_routes = "    nats-route://nats-1:6222\n    nats-route://nats-2:6222\n    nats-route://nats-3:6222\n";
    assert!(generated.contains(named_routes) && generated.contains("http: 127.0.0.1:8222"), "{generated}");
    let mut config = generated
        .replace(jetsaga_infra::nats::TLS_DIR, &tls.display().to_string())
        .replace("http: 127.0.0.1:8222", &format!("http: 127.0.0.1:{http}"))
        .replace("listen: 0.0.0.0:6222", &format!("listen: 127.0.0.1:{cluster}"))
        // (The harness gives each server its own store directory.)
        .replace("  store_dir: /data/jetstream\n", "")
        .replace("server_name: $NATS_NODE_NAME", &format!("server_name: {name}"))
        .replace(named_routes, &routes.iter().map(|p| format!("    nats-route://127.0.0.1:{p}\n")).collect::<String>());
    // Every `$JETSAGA_<USER>_PASSWORD`, as the server would read it from its environment.
    while let Some(start) = config.find("$JETSAGA_") {
        let end = start + config[start..].find("_PASSWORD").expect("a password variable") + "_PASSWORD".len();
        let user = config[start + "$JETSAGA_".len()..end - "_PASSWORD".len()].to_lowercase();
        config.replace_range(start..end, &format!("\"{}\"", password(&user)));
    }
    config
}

/// How many routes a node's monitoring endpoint reports.
async fn routes_of(http: u16) -> u64 {
    let url = format!("http://127.0.0.1:{http}/routez");
    match reqwest::get(&url).await {
        Ok(response) => response.json::<serde_json::Value>().await.map_or(0, |v| v["num_routes"].as_u64().unwrap_or(0)),
        Err(_) => 0,
    }
}

async fn connect(server: &NatsServer, user: &str, tls: &TlsSettings) -> Result<async_nats::Client, String> {
    connect_with(server, user, &password(user), tls).await
}

async fn connect_with(
    server: &NatsServer,
    user: &str,
    password: &str,
    tls: &TlsSettings,
) -> Result<async_nats::Client, String> {
    let options = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .custom_inbox_prefix(jetsaga_local::client::inbox_prefix(user))
        .retry_on_initial_connect()
        .max_reconnects(Some(1));
    let connecting = tls.apply(options).connect(server.url());
    match tokio::time::timeout(Duration::from_secs(5), connecting).await {
        Ok(Ok(client)) => {
            // A refused handshake may only show on the first round trip.
            match tokio::time::timeout(Duration::from_secs(5), client.flush()).await {
                Ok(Ok(())) => Ok(client),
                other => Err(format!("{other:?}")),
            }
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_cluster_is_tls_only_and_admits_only_nodes_of_its_ca() {
    jetsaga_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let tls_dir = jetsaga_tests::tls::certificates(&dir.path().join("tls"), &["nats-1", "nats-2"]);
    let ca = tls_dir.join("ca.crt");
    let with_ca = TlsSettings { ca: Some(ca.clone()), client: None, required: true };
    let (http_a, route_a, http_b, route_b) = (free_port(), free_port(), free_port(), free_port());
    let a = NatsServer::start_with_config(&node_config("nats-1", &tls_dir, http_a, route_a, &[route_b]));
    let b = NatsServer::start_with_config(&node_config("nats-2", &tls_dir, http_b, route_b, &[route_a]));
    wait_until(Duration::from_secs(30), "the second node to join over TLS", || async { routes_of(http_a).await > 0 })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await; // (a route is a pool of connections)
    let joined = routes_of(http_a).await;

    // A node without a certificate of the cluster's CA cannot join.
    let http_c = free_port();
    let intruder = format!(
        "server_name: intruder\nhttp: 127.0.0.1:{http_c}\ncluster {{\n  name: jetsaga\n  listen: 127.0.0.1:{}\n  routes: [ nats-route://127.0.0.1:{route_a} ]\n}}\n",
        free_port()
    );
    let _c = NatsServer::start_with_config(&intruder);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(routes_of(http_a).await, joined, "the intruder joined the cluster");
    assert_eq!(routes_of(http_c).await, 0, "the intruder has a route");

    // A client in clear text is refused before it can say who it is.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", a.port())).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut info = [0u8; 4096];
    let n = plain.read(&mut info).unwrap();
    assert!(String::from_utf8_lossy(&info[..n]).contains("\"tls_required\":true"), "the server offers TLS only");
    plain.write_all(b"CONNECT {\"user\":\"admin\",\"pass\":\"admin-secret\"}\r\nPING\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains("PONG"), "a clear-text client was served: {answer}");
    // Without the CA a client cannot trust the servers either.
    assert!(connect(&a, "admin", &TlsSettings { required: true, ..TlsSettings::default() }).await.is_err());

    // A client set up for TLS (NATS_CA, as the gateway and runners take it)
    // refuses a server that offers none: no password in clear.
    let clear = NatsServer::start();
    let refused = connect(&clear, "gateway", &with_ca).await;
    assert!(refused.is_err(), "connected to a server without TLS");

    // The saga over TLS: provisioned as `admin`, every function as `bridge`.
    let admin_nats = connect(&a, "admin", &with_ca).await.unwrap();
    let options = SagaOptions::default();
    let functions = options.functions();
    let specs: Vec<&jetsaga_core::FunctionSpec> = functions.iter().map(|f| f.spec()).collect();
    let config = runtime_config(&options);
    jetsaga_jetstream::provision::provision(&admin_nats, &jetstream::new(admin_nats.clone()), &config, &specs)
        .await
        .unwrap();
    let names: Vec<String> = options.names().iter().map(|s| s.to_string()).collect();
    let engines =
        jetsaga_local::saga::engines(&StoreConfig::sqlite(dir.path().join("stores")), &names, &options).await.unwrap();
    let mut runtime =
        Runtime::new(connect(&b, "bridge", &with_ca).await.unwrap(), Config { provision: false, ..config });
    for engine in engines {
        runtime = runtime.with(engine);
    }
    let cancel = CancellationToken::new();
    let task = tokio::spawn(runtime.run(cancel.clone().cancelled_owned()));
    let admin = Client::new(admin_nats, a.url());
    let view = jetsaga_tests::saga::one_order_through(&admin, &names).await;
    assert_eq!(view.status, jetsaga_events::OrderStatus::Completed, "{view:?}");
    cancel.cancel();
    task.await.unwrap().unwrap();
    drop(b);
}

/// compose's server (`infra/compose/nats.conf`) with what `jetsaga infra
/// credentials` made: each user gets in with its own password over TLS
/// with the CA it was given, and not with another user's password, nor
/// without trusting the CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_credentials_admit_each_user_by_its_own_password_over_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let made = jetsaga_local::credentials::write(dir.path(), None).unwrap();
    assert!(made.new_certificate && made.new_passwords == made.users, "{made:?}");
    let server_dir = dir.path().join("nats");
    let variables = std::fs::read_to_string(server_dir.join("passwords.conf")).unwrap();
    let generated = jetsaga_infra::compose::nats_config();
    let include = "include \"credentials/passwords.conf\"\n";
    assert!(generated.contains(include) && generated.contains("http: 127.0.0.1:8222\n"), "{generated}");
    // (The include, inlined: the harness keeps its config elsewhere.)
    let config = generated
        .replace(include, &variables)
        .replace("/etc/nats/credentials", &server_dir.display().to_string())
        .replace("http: 127.0.0.1:8222", &format!("http: 127.0.0.1:{}", free_port()))
        .replace("  store_dir: /data/jetstream\n", "");
    let server = NatsServer::start_with_config(&config);
    let read = |path: &str| std::fs::read_to_string(dir.path().join(path)).unwrap().trim().to_string();
    let with_ca = TlsSettings { ca: Some(dir.path().join("order/ca.crt")), client: None, required: true };

    let order = connect_with(&server, "order", &read("order/password"), &with_ca).await;
    assert!(order.is_ok(), "order with its own password: {order:?}");
    let borrowed = connect_with(&server, "order", &read("users/password"), &with_ca).await;
    assert!(borrowed.is_err(), "order got in with the users function's password");
    let untrusting = TlsSettings { required: true, ..TlsSettings::default() };
    let refused = connect_with(&server, "order", &read("order/password"), &untrusting).await;
    assert!(refused.is_err(), "a client without the deployment's CA connected");
}
