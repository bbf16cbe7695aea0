//! `jetsaga up`: nats-server (found or started), streams and consumers,
//! every function hosted in this process, demo data, the live saga flow.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use jetsaga_events::Envelope;
use jetsaga_jetstream::{Config, Runtime};
use jetsaga_sql::Durability;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::client::Client;
use crate::flow::FlowPrinter;
use crate::lambda_local::{bootstrap_beside_current_exe, function_name};
use crate::saga::{SagaOptions, StoreConfig};
use crate::server::{self, NatsProcess};
use jetsaga_events::SagaMode;
use jetsaga_lambda::invoker::LambdaProcessor;

/// Which store backend `up` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// One SQLite file per function under --data-dir (no setup needed).
    Sqlite,
    /// One schema per function in the PostgreSQL database at --database-url.
    Postgres,
}

/// How the saga is driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SagaKind {
    /// Each step reacts to the others' events.
    Choreographed,
    /// One orchestrator function sends each step a command.
    Orchestrated,
}

impl From<SagaKind> for SagaMode {
    fn from(kind: SagaKind) -> Self {
        match kind {
            SagaKind::Choreographed => SagaMode::Choreographed,
            SagaKind::Orchestrated => SagaMode::Orchestrated,
        }
    }
}

/// Options of `jetsaga up`.
#[derive(Clone, Debug, clap::Args)]
pub struct UpArgs {
    /// Use this NATS server instead of starting one (must be 2.14+ with
    /// JetStream, or 2.10+ with --no-deadlines); the nodes of a cluster separated by commas.
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// Where SQLite stores and the started nats-server keep their data.
    #[arg(long, env = "JETSAGA_DATA_DIR", default_value = ".jetsaga")]
    pub data_dir: PathBuf,
    /// Port for the nats-server `up` starts; a free one is chosen if it is taken.
    #[arg(long, default_value_t = 4222)]
    pub nats_port: u16,
    /// Choreographed (events) or orchestrated (an orchestrator sends commands).
    #[arg(long, value_enum, default_value_t = SagaKind::Choreographed)]
    pub saga: SagaKind,
    /// Host only this function (repeat for several). Run more copies to share the work.
    #[arg(long = "function", value_name = "NAME",
          value_parser = clap::builder::PossibleValuesParser::new(crate::saga::all_names()))]
    pub functions: Vec<String>,
    /// Do not create the demo products and customers.
    #[arg(long)]
    pub no_seed: bool,
    /// Storage backend for the functions' state.
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    pub store: StoreKind,
    /// PostgreSQL URL for --store postgres.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Schema name prefix for --store postgres (schemas are <prefix><function>).
    #[arg(long, default_value = "jetsaga_")]
    pub schema_prefix: String,
    /// fsync every SQLite commit (synchronous=FULL) instead of WAL's NORMAL.
    #[arg(long)]
    pub sync_full: bool,
    /// Share of shipments that fail, 0.0 to 1.0 (a knob for demos and tests).
    #[arg(long, default_value_t = 0.0)]
    pub shipping_failure_rate: f64,
    /// How long an order waits for a step before it fails and gives back
    /// what it holds: `30s` for every step, or `payment=10s` for one
    /// (repeat; steps: inventory, customer, payment, shipping). Units ms, s, m, h.
    #[arg(long = "step-timeout", value_name = "[STEP=]WAIT", default_value = "30s")]
    pub step_timeouts: Vec<String>,
    /// How long an order may take in all, from creation to its end.
    #[arg(long, value_name = "WAIT", default_value = "5m")]
    pub saga_timeout: String,
    /// No deadlines: an order waits for its steps forever (for nats-server
    /// older than 2.14, which cannot schedule messages).
    #[arg(long, conflicts_with_all = ["step_timeouts", "saga_timeout"])]
    pub no_deadlines: bool,
    /// Orders one customer may have under way at once; past it a create is
    /// refused for now (429 over HTTP, an error over NATS). 0: no limit.
    #[arg(long, value_name = "N", default_value_t = jetsaga_saga::OrderLimits::default().in_flight)]
    pub max_orders_in_flight: usize,
    /// Orders one customer may start in a minute. 0: no limit.
    #[arg(long, value_name = "N", default_value_t = jetsaga_saga::OrderLimits::default().per_minute)]
    pub max_orders_per_minute: usize,
    /// The credit, in cents, a user's sign-up gives their customer (anyone
    /// may sign up: keep it small where strangers can).
    #[arg(long, value_name = "CENTS", default_value_t = jetsaga_saga::DEFAULT_SIGN_UP_CREDIT_CENTS)]
    pub sign_up_credit_cents: u64,
    /// How long an ended order is kept (its store removes it after, and it
    /// leaves the lists): a whole number and d, h or m.
    #[arg(long, value_name = "AGE", default_value = "30d")]
    pub keep_ended_orders: String,
    /// Do not print the saga flow.
    #[arg(long)]
    pub quiet: bool,
    /// Stream replicas (3 on a 3-node cluster such as infra/nats/cluster.conf).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Seconds JetStream waits for a function's ack before redelivering to
    /// another copy (a paused or hung process gives its messages up then).
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub ack_wait: f64,
    /// Do not create or update streams and consumers: bind to the consumers
    /// `jetsaga provision` created (deployments where each function's NATS
    /// user may only read its own consumer).
    #[arg(long)]
    pub no_provision: bool,
    /// Run every function as its real Lambda bootstrap under cargo-lambda's
    /// emulator, storing in DynamoDB (AWS_ENDPOINT_URL, or a moto server
    /// started here), fed by the JetStream→Lambda bridge.
    #[arg(long)]
    pub lambda: bool,
    /// Port of the Lambda emulator's Invoke API with --lambda [default: a free one].
    #[arg(long, requires = "lambda")]
    pub lambda_port: Option<u16>,
    /// DynamoDB table name prefix with --lambda (tables are <prefix>-<function>).
    #[arg(long, default_value = "jetsaga-local")]
    pub table_prefix: String,
    /// Do not serve the HTTP API.
    #[arg(long)]
    pub no_http: bool,
    /// Serve health probes on this port: GET /healthz (the process runs)
    /// and /readyz (connected, every function consuming), for Kubernetes.
    #[arg(long, value_name = "PORT")]
    pub health_port: Option<u16>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics: messages
    /// handled per function and outcome, batch handling time and size.
    /// Off unless given.
    #[arg(long, value_name = "HOST:PORT", env = "JETSAGA_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub http: crate::gateway::HttpArgs,
}

/// Demo catalog: id, name, price in cents, stock.
pub const DEMO_PRODUCTS: [(&str, &str, u64, u32); 5] = [
    ("p-keyboard", "Mechanical keyboard", 4999, 50),
    ("p-mouse", "Wireless mouse", 1999, 100),
    ("p-monitor", "27\" monitor", 19900, 10),
    ("p-sticker", "Sticker (under $1: payment declined)", 50, 1000),
    ("p-last", "Limited edition (1 in stock)", 2500, 1),
];

/// Demo customers: id, name, credit limit in cents.
pub const DEMO_CUSTOMERS: [(&str, &str, u64); 3] =
    [("c-ada", "Ada Lovelace", 100_000), ("c-grace", "Grace Hopper", 10_000), ("c-broke", "Penny Less", 500)];

fn store_config(args: &UpArgs) -> anyhow::Result<StoreConfig> {
    Ok(match args.store {
        StoreKind::Sqlite => StoreConfig::Sqlite {
            dir: args.data_dir.join("stores"),
            durability: if args.sync_full { Durability::Full } else { Durability::Normal },
        },
        StoreKind::Postgres => StoreConfig::Postgres {
            url: args.database_url.clone().ok_or_else(|| {
                anyhow::anyhow!("--store postgres needs --database-url or DATABASE_URL (for example postgres://postgres@127.0.0.1:5432/jetsaga)")
            })?,
            schema_prefix: args.schema_prefix.clone(),
        },
    })
}

/// Runs until Ctrl-C.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.shipping_failure_rate) {
        anyhow::bail!("--shipping-failure-rate must be between 0.0 and 1.0, got {}", args.shipping_failure_rate);
    }
    let stores = store_config(&args)?;
    std::fs::create_dir_all(&args.data_dir)?;
    let url_file = args.data_dir.join("nats.url");

    let mut nats_process = None;
    let url = match &args.nats_url {
        Some(url) => url.clone(),
        None => {
            let binary = server::find_binary().map_err(anyhow::Error::msg)?;
            let port = if server::port_in_use(args.nats_port) {
                let port = server::free_port()?;
                warn!("port {} is taken; starting nats-server on {port} instead", args.nats_port);
                port
            } else {
                args.nats_port
            };
            let process = NatsProcess::start(binary, port, &args.data_dir.join("nats")).map_err(anyhow::Error::msg)?;
            let url = process.url.clone();
            info!(url = %url, binary = %process.binary.display(), "started nats-server");
            nats_process = Some(process);
            url
        }
    };
    std::fs::write(&url_file, &url)?;

    let mode = SagaMode::from(args.saga);
    let deadlines = if args.no_deadlines {
        None
    } else {
        Some(
            jetsaga_saga::Deadlines::from_settings(&args.step_timeouts, Some(&args.saga_timeout))
                .map_err(anyhow::Error::msg)?,
        )
    };
    let order_limits =
        jetsaga_saga::OrderLimits { in_flight: args.max_orders_in_flight, per_minute: args.max_orders_per_minute };
    let options = SagaOptions {
        shipping_failure_rate: args.shipping_failure_rate,
        mode,
        deadlines,
        order_limits,
        sign_up_credit_cents: args.sign_up_credit_cents,
        keep_ended_orders: jetsaga_saga::parse_retention("--keep-ended-orders", &args.keep_ended_orders)
            .map_err(anyhow::Error::msg)?,
    };
    let names: Vec<String> = if args.functions.is_empty() {
        options.names().iter().map(|s| s.to_string()).collect()
    } else {
        args.functions.clone()
    };
    let mut connect = crate::client::connect_options(&format!("jetsaga up ({})", names.join(",")))?;
    if let [name] = names.as_slice() {
        // A function's NATS user may read only the replies sent to it.
        connect = connect.custom_inbox_prefix(crate::client::inbox_prefix(name));
    }
    let nats = connect.retry_on_initial_connect().connect(crate::client::servers(&url)).await?;
    if !(args.ack_wait >= 0.5 && args.ack_wait <= 3600.0) {
        anyhow::bail!("--ack-wait must be between 0.5 and 3600 seconds, got {}", args.ack_wait);
    }
    let config = Config {
        replicas: args.replicas,
        ack_wait: Duration::from_secs_f64(args.ack_wait),
        provision: !args.no_provision,
        message_schedules: !args.no_deadlines,
        ..crate::saga::runtime_config(&options)
    };
    let mut runtime = Runtime::new(nats.clone(), config);
    if args.functions.is_empty() {
        // The whole saga in one process: it answers the operations too (the HTTP admin API asks them).
        runtime = runtime.serving_operations();
    }
    // Keeps the emulator and the function processes alive in --lambda mode.
    let mut _lambda_local = None;
    let mut banner = Vec::new();
    if args.lambda {
        let prefix = format!("{}-", args.table_prefix.trim_end_matches('-'));
        let mut local = crate::lambda_local::start(bootstrap_beside_current_exe(), &options, args.lambda_port, &prefix)
            .map_err(anyhow::Error::msg)?;
        let client = LambdaProcessor::client(Some(&local.invoke_url)).await;
        for name in &names {
            local.spawn(name).map_err(anyhow::Error::msg)?;
            let spec = options.function(name).map_err(anyhow::Error::msg)?.spec();
            runtime = runtime.with(LambdaProcessor::new(spec, client.clone(), function_name(name)));
        }
        banner.push(format!(
            "  lambda: every function a bootstrap under cargo-lambda's emulator at {}",
            local.invoke_url
        ));
        banner.push(format!("  state:  DynamoDB tables {prefix}<function> at {}", local.dynamodb.url));
        _lambda_local = Some(local);
    } else {
        for engine in crate::saga::engines(&stores, &names, &options).await.map_err(anyhow::Error::msg)? {
            runtime = runtime.with(engine);
        }
        banner.push(format!("  state:  {}", stores.describe()));
    }
    if !args.no_http {
        let keys = crate::gateway::keys(&args.http, &args.data_dir)?;
        let listener = crate::gateway::bind(&args.http).await?;
        let (http, _) = crate::gateway::serve(listener, nats.clone(), keys, &args.http)?;
        banner.push(format!(
            "  web UI: {http}/  (the shop; the operations console at {http}/#/admin for administrators)"
        ));
        banner.push(format!("  http:   {http}/api/... (sign up: curl -X POST {http}/api/users -H 'content-type: application/json' -d '{{\"email\":\"you@example.com\",\"password\":\"at least 8\",\"name\":\"You\"}}')"));
    }
    if url != "nats://127.0.0.1:4222" {
        banner.push(format!(
            "  note:   other jetsaga commands find this server through {}; for other tools: export NATS_URL={url}",
            url_file.display()
        ));
    }
    let title = format!("jetsaga is up ({mode:?} saga)");
    let hosting = Hosting {
        title,
        banner,
        seed_demo: !args.no_seed,
        quiet: args.quiet,
        health_port: args.health_port,
        metrics_addr: args.metrics_addr,
    };
    host(runtime, nats, &url, &names, hosting, &options).await?;
    drop(nats_process);
    let _ = std::fs::remove_file(&url_file);
    println!("stopped");
    Ok(())
}

/// How [`host`] presents a runtime.
pub(crate) struct Hosting {
    /// The banner's first line.
    pub title: String,
    /// Its other lines.
    pub banner: Vec<String>,
    /// Seed the demo catalog and customers.
    pub seed_demo: bool,
    /// Do not print the saga flow.
    pub quiet: bool,
    /// Serve health probes on this port.
    pub health_port: Option<u16>,
    /// Serve Prometheus metrics here.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Runs `runtime` until Ctrl-C: waits for its functions to answer, prints
/// a banner, seeds demo data, prints the saga flow, then shuts down cleanly.
/// Shared by `jetsaga up` and `jetsaga bridge`.
pub(crate) async fn host(
    runtime: Runtime,
    nats: async_nats::Client,
    url: &str,
    names: &[String],
    hosting: Hosting,
    options: &SagaOptions,
) -> anyhow::Result<()> {
    let Hosting { title, banner, seed_demo, quiet, health_port, metrics_addr } = hosting;
    let title = title.as_str();
    let mut runtime = runtime;
    if let Some(addr) = metrics_addr {
        crate::metrics::serve(addr)?;
        runtime = runtime.reporting_gauges(crate::metrics::STATE_POLL);
    }
    if let Some(port) = health_port {
        let probe = crate::health::Probe { nats: nats.clone(), ready: Some(runtime.readiness()) };
        crate::health::serve(port, probe).await?;
    }
    let cancel = CancellationToken::new();
    let shutdown = cancel.clone();
    let consuming = runtime.readiness();
    let mut runner = tokio::spawn(async move { runtime.run(shutdown.cancelled_owned()).await });

    let client = Client::new(nats.clone(), url.to_string());
    // A runtime that cannot start (provisioning refused, server too old)
    // says why at once instead of being waited for.
    // A slow function (a cold or throttled Lambda, a store catching up) is
    // waited for, with a word every minute, never given up on: a bridge or
    // runner that exited would help nobody.
    let mut waited = 0;
    let mut every_minute =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(60), Duration::from_secs(60));
    // First its own word that it consumes its streams (no NATS request: a
    // function's own user may ask nothing of others)…
    while !consuming.is_ready() {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = every_minute.tick() => {
                waited += 1;
                warn!(minutes = waited, "still waiting to consume the streams; is the server (or provisioning) there?");
            }
            result = &mut runner => {
                result??;
                anyhow::bail!("the runtime stopped before its functions came up");
            }
        }
    }
    if metrics_addr.is_some() {
        let config = crate::saga::runtime_config(options);
        let consumers = names
            .iter()
            .filter_map(|name| options.function(name).ok())
            .map(|function| {
                let spec = function.spec();
                let mut streams = Vec::new();
                if !spec.subscribes.is_empty() {
                    streams.push(config.stream.clone());
                }
                if !spec.accepts.is_empty() {
                    streams.push(config.command_stream.clone());
                }
                (spec.name.to_string(), streams)
            })
            .collect();
        crate::metrics::watch_consumers(nats.clone(), consumers, cancel.clone());
    }
    // …then, where this process talks to its functions as a client does
    // (the demo data, the flow), that they answer: on the Lambda path that
    // is when the Lambdas do.
    if seed_demo || !quiet {
        loop {
            tokio::select! {
                ready = client.wait_for_services(names, Duration::from_secs(60)) => match ready {
                    Ok(()) => break,
                    Err(e) => {
                        waited += 1;
                        warn!(error = %e, minutes = waited, "still waiting for the functions to answer; is their store (or Lambda) reachable?");
                    }
                },
                result = &mut runner => {
                    result??;
                    anyhow::bail!("the runtime stopped before its functions came up");
                }
            }
        }
    }
    // The demo data first: "is up" means the banner's `try` lines work at once.
    let mut flow = if quiet { None } else { Some(nats.subscribe("*.evt.>").await?) };
    if seed_demo {
        seed(&client, &crate::saga::accepted_commands(options, names)).await?;
    }
    println!("{title}: {} on {url}", names.join(", "));
    for line in banner {
        println!("{line}");
    }
    // (Hints for a person at a terminal, not for a deployment's logs.)
    if !quiet {
        println!("  try:    nats --server {url} pub orders.cmd.create \"$(cat events/samples/create-order.json)\"");
        println!("     or:  jetsaga order create --customer c-ada --item p-keyboard:1 --item p-mouse:2 --wait");
        println!("  stop:   Ctrl-C");
    }

    let mut printer = FlowPrinter::new();
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            result = &mut runner => {
                result??;
                anyhow::bail!("the runtime stopped unexpectedly");
            }
            Some(message) = async { match flow.as_mut() { Some(f) => f.next().await, None => std::future::pending().await } } => {
                if let Ok(envelope) = Envelope::decode(&message.payload) {
                    println!("{}", printer.line(&envelope));
                }
            }
        }
    }
    println!("stopping: finishing in-flight work…");
    cancel.cancel();
    match tokio::time::timeout(Duration::from_secs(30), runner).await {
        Ok(result) => result??,
        Err(_) => warn!("in-flight work did not finish within 30s; it will be redelivered on the next start"),
    }
    Ok(())
}

/// Ctrl-C, or SIGTERM (`kill`, `timeout`, a container stop): either way,
/// drain and stop what we started.
pub(crate) async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler can be installed");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// Creates the demo products and customers that do not exist yet, when
/// this process hosts the functions that accept them.
pub(crate) async fn seed(client: &Client, accepted: &[&str]) -> anyhow::Result<()> {
    use jetsaga_events::subjects::{CUSTOMERS_CMD_CREATE, INVENTORY_CMD_UPSERT_PRODUCT};
    if accepted.contains(&INVENTORY_CMD_UPSERT_PRODUCT) {
        let existing = client.products().await?;
        for (id, name, price, stock) in DEMO_PRODUCTS {
            if !existing.products.iter().any(|p| p.product_id == id) {
                let upsert = jetsaga_events::UpsertProduct {
                    product_id: id.into(),
                    name: name.into(),
                    price_cents: price,
                    stock,
                };
                client.command(INVENTORY_CMD_UPSERT_PRODUCT, &upsert).await?;
            }
        }
    }
    if accepted.contains(&CUSTOMERS_CMD_CREATE) {
        let existing = client.customers().await?;
        for (id, name, limit) in DEMO_CUSTOMERS {
            if !existing.customers.iter().any(|c| c.customer_id == id) {
                let create = jetsaga_events::CreateCustomer {
                    customer_id: id.into(),
                    name: name.into(),
                    credit_limit_cents: limit,
                };
                client.command(CUSTOMERS_CMD_CREATE, &create).await?;
            }
        }
    }
    Ok(())
}

/// Options of `jetsaga provision`.
#[derive(Clone, Debug, clap::Args)]
pub struct ProvisionArgs {
    /// Which saga's functions get consumers.
    #[arg(long, value_enum, default_value_t = SagaKind::Choreographed)]
    pub saga: SagaKind,
    /// Stream and consumer replicas (3 on a 3-node cluster).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Seconds JetStream waits for a function's ack before redelivering.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub ack_wait: f64,
}

/// `jetsaga provision`: creates or updates the saga stream, the `DLQ`
/// stream, every function's durable consumer and the gateway's
/// request-limits bucket, as an administrator's
/// deploy step; the functions then run with `--no-provision`.
pub async fn provision(args: ProvisionArgs, url: &str, stream: &str) -> anyhow::Result<()> {
    if !(args.ack_wait >= 0.5 && args.ack_wait <= 3600.0) {
        anyhow::bail!("--ack-wait must be between 0.5 and 3600 seconds, got {}", args.ack_wait);
    }
    let options = SagaOptions { mode: args.saga.into(), ..SagaOptions::default() };
    let functions = options.functions();
    let specs: Vec<&jetsaga_core::FunctionSpec> = functions.iter().map(|f| f.spec()).collect();
    let config = Config {
        stream: stream.to_string(),
        replicas: args.replicas,
        ack_wait: Duration::from_secs_f64(args.ack_wait),
        ..crate::saga::runtime_config(&options)
    };
    config.check()?;
    let nats = crate::client::connect_options("jetsaga provision")?
        .connect(crate::client::servers(url))
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to NATS at {url}: {e}"))?;
    let js = async_nats::jetstream::new(nats.clone());
    jetsaga_jetstream::provision::provision(&nats, &js, &config, &specs).await?;
    jetsaga_http::limits::provision(&js, args.replicas)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the gateway's request-limits bucket: {e}"))?;
    println!(
        "provisioned streams {stream} and {}, the gateway's request-limits bucket {} ({} replica(s)) and the consumers of {}",
        config.dlq_stream,
        jetsaga_http::limits::BUCKET,
        args.replicas,
        specs.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}
