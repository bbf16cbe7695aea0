//! `jetsaga bench`: how many orders per second, and how long one order
//! takes, measured honestly.
//!
//! In one run, on one nats-server: the saga (runner processes started from
//! this binary, N orders through the full saga, paced or as fast as a
//! bounded window allows), then the raw JetStream baseline with the same
//! number of messages of the same size (async publish with a window,
//! durable pull consumer with explicit acks, no handler, no store). The
//! saga's throughput is reported against `raw msg/s ÷ messages per saga`.
//! Correctness is checked while measuring: every order must end in exactly
//! one terminal state, and stock must be conserved.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use jetsaga_events::{Envelope, OrderItem};
use serde::Serialize;

use crate::client::Client;
use crate::server::{self, NatsProcess};
use crate::tools::{self, Process};
use crate::up::{SagaKind, StoreKind};

/// Options of `jetsaga bench`.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Orders to run through the saga.
    #[arg(long, default_value_t = 10_000)]
    pub orders: usize,
    /// Orders per second (paced); without it, as fast as --window allows.
    #[arg(long)]
    pub rate: Option<u32>,
    /// Orders in flight at most when not paced.
    #[arg(long, default_value_t = 1024)]
    pub window: usize,
    /// Store backend of the runner.
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    pub store: StoreKind,
    /// PostgreSQL URL for --store postgres.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// One runner process hosting every function, or one process per function.
    #[arg(long, value_enum, default_value_t = Layout::OneProcess)]
    pub layout: Layout,
    /// Copies of each process (horizontal scaling on the same consumers).
    #[arg(long, default_value_t = 1)]
    pub copies: usize,
    /// Choreographed or orchestrated saga.
    #[arg(long, value_enum, default_value_t = SagaKind::Choreographed)]
    pub saga: SagaKind,
    /// fsync every SQLite commit (synchronous=FULL).
    #[arg(long)]
    pub sync_full: bool,
    /// Start nats-server with `sync_interval: always` (fsync every JetStream write).
    #[arg(long)]
    pub nats_sync_always: bool,
    /// Write the full results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a latency histogram and throughput time series (SVG) here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Instead of the saga: measure each Lambda bootstrap in this directory
    /// (e.g. target/x86_64-unknown-linux-gnu/lambda): size, and start-up time
    /// from process start to its first `next` poll of the Runtime API.
    #[arg(long, value_name = "DIR")]
    pub bootstraps: Option<PathBuf>,
}

/// Size and start-up time of one bootstrap binary.
#[derive(Debug, Serialize)]
pub struct BootstrapFigure {
    /// Binary name.
    pub name: String,
    /// Size on disk.
    pub bytes: u64,
    /// Start-up of the first run (cold page cache, as after a deploy).
    pub first_init_ms: f64,
    /// Median start-up over the following runs.
    pub median_init_ms: f64,
}

/// Starts each `jetsaga-*` bootstrap in `dir` (cargo's output, or
/// cargo-lambda's `--lambda-dir` layout `jetsaga-*/bootstrap`) against a stand-in Runtime API
/// (a listening socket) and times process start to the first `GET
/// /2018-06-01/runtime/invocation/next`, as Lambda's init phase ends there.
pub fn measure_bootstraps(dir: &std::path::Path, runs: usize) -> anyhow::Result<Vec<BootstrapFigure>> {
    use std::io::Read;
    let mut figures = Vec::new();
    let mut binaries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("jetsaga-")) && p.extension().is_none()
        })
        .map(|p| if p.is_dir() { p.join("bootstrap") } else { p })
        .filter(|p| p.is_file())
        .collect();
    binaries.sort();
    if binaries.is_empty() {
        anyhow::bail!(
            "no jetsaga-* bootstrap binaries in {} (build them with `cargo lambda build --profile lambda -p jetsaga-bootstraps`)",
            dir.display()
        );
    }
    for binary in binaries {
        let mut times = Vec::new();
        for _ in 0..runs.max(2) {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            let port = listener.local_addr()?.port();
            let started = Instant::now();
            let mut child = std::process::Command::new(&binary)
                .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}"))
                .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
                .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "bench")
                .env("AWS_SECRET_ACCESS_KEY", "bench")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let (mut socket, _) = listener.accept()?;
            let mut request = [0u8; 256];
            let n = socket.read(&mut request)?;
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            let _ = child.kill();
            let _ = child.wait();
            if !String::from_utf8_lossy(&request[..n]).contains("/runtime/invocation/next") {
                anyhow::bail!("{} did not poll for its next invocation first", binary.display());
            }
            times.push(elapsed);
        }
        let first = times.remove(0);
        times.sort_by(|a, b| a.total_cmp(b));
        figures.push(BootstrapFigure {
            // `jetsaga-order` or `jetsaga-order/bootstrap`.
            name: binary
                .iter()
                .rev()
                .find(|part| part.to_string_lossy().starts_with("jetsaga-"))
                .map_or_else(|| binary.display().to_string(), |n| n.to_string_lossy().into_owned()),
            bytes: std::fs::metadata(&binary)?.len(),
            first_init_ms: first,
            median_init_ms: times[times.len() / 2],
        });
    }
    Ok(figures)
}

/// How the functions are spread over processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// Every function in one process.
    OneProcess,
    /// One process per function.
    PerFunction,
}

/// Latency summary in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Worst.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Latency {
    fn of(mut samples: Vec<f64>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
        Self {
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            max_ms: *samples.last().unwrap(),
            mean_ms: samples.iter().sum::<f64>() / samples.len() as f64,
        }
    }
}

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Options of the run.
    pub orders: usize,
    /// Paced rate, if any.
    pub rate: Option<u32>,
    /// Process layout.
    pub layout: Layout,
    /// Copies per process.
    pub copies: usize,
    /// Store backend.
    pub store: String,
    /// Saga mode.
    pub saga: String,
    /// Durability settings the figures hold for.
    pub durability: String,
    /// Completed sagas per second (first command to last terminal event).
    pub sagas_per_sec: f64,
    /// Wall time of the saga run.
    pub saga_seconds: f64,
    /// Messages stored per saga (commands are request/reply; this counts events).
    pub messages_per_saga: f64,
    /// Average message size in bytes.
    pub message_bytes: usize,
    /// Raw JetStream: messages per second published and consumed (same count and size).
    pub raw_msgs_per_sec: f64,
    /// Raw bound in sagas per second: raw msg/s ÷ messages per saga.
    pub raw_bound_sagas_per_sec: f64,
    /// Saga throughput as a share of the raw bound.
    pub ratio_to_raw: f64,
    /// Command sent → terminal event received.
    pub latency: Latency,
    /// Mean time from one event of a saga to the next, by the later event's type.
    pub step_ms: Vec<(String, f64)>,
    /// CPU seconds used by the runner processes.
    pub runner_cpu_seconds: f64,
    /// Peak resident memory of the largest runner process (MiB).
    pub runner_peak_rss_mib: f64,
    /// Completed, failed, canceled.
    pub outcomes: HashMap<String, usize>,
    /// Terminal events delivered twice to plain subscribers (re-published
    /// and de-duplicated by JetStream; not a correctness problem).
    pub republished_terminal_events: usize,
    /// Orders with a doubled effect (two ends, or two different events of one type).
    pub doubled: usize,
    /// Messages dead-lettered during the run.
    pub dead_letters: u64,
    /// Failed orders by kind of reason.
    pub failure_reasons: std::collections::BTreeMap<String, usize>,
    /// Correctness: the invariants of `jetsaga chaos` (one end per order,
    /// nothing doubled, stock, credit and money conserved, no dead letter,
    /// nothing left unpublished).
    pub correct: bool,
    /// What was wrong, if anything.
    pub problems: Vec<String>,
    /// Terminal events per 100 ms bucket, for the time series.
    pub throughput_series: Vec<usize>,
    /// Every end-to-end latency (ms), for the histogram.
    #[serde(skip)]
    pub samples: Vec<f64>,
}

/// Reads (CPU seconds, peak RSS in KiB) of a process and its children's tree root.
fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some((ticks / 100.0, hwm))
}

/// Runs the benchmark.
pub async fn run(args: BenchArgs) -> anyhow::Result<Report> {
    if args.orders == 0 || args.window == 0 || args.copies == 0 {
        anyhow::bail!("--orders, --window and --copies must be at least 1");
    }
    let dir = tempfile_dir()?;
    // A server of our own: figures are only comparable on a server nobody else loads.
    let binary = server::find_binary().map_err(anyhow::Error::msg)?;
    let port = tools::free_port()?;
    if args.nats_sync_always {
        std::fs::write(dir.join("nats.conf"), "jetstream { sync_interval: always }\n")?;
    }
    let nats_server = NatsProcess::start_with_config(
        binary,
        port,
        &dir.join("nats"),
        args.nats_sync_always.then(|| dir.join("nats.conf")),
    )
    .map_err(anyhow::Error::msg)?;
    let url = nats_server.url.clone();
    let nats = async_nats::connect(&url).await?;
    let client = Client::new(nats.clone(), url.clone());
    let js = jetstream::new(nats.clone());

    // The runner(s): this very binary, `jetsaga up` against our server.
    let exe = std::env::current_exe()?;
    let functions: Vec<Vec<&str>> = match args.layout {
        Layout::OneProcess => vec![Vec::new()],
        Layout::PerFunction => match args.saga {
            SagaKind::Choreographed => crate::saga::FUNCTIONS.iter().map(|f| vec![*f]).collect(),
            SagaKind::Orchestrated => crate::saga::ORCHESTRATED_FUNCTIONS.iter().map(|f| vec![*f]).collect(),
        },
    };
    let schema_prefix = format!("bench_{}_", std::process::id());
    let mut runners = Vec::new();
    for copy in 0..args.copies {
        for group in &functions {
            let mut command = tools::tied_command(&exe);
            command
                .args(["up", "--nats-url", &url, "--quiet", "--no-seed"])
                .arg("--data-dir")
                .arg(dir.join("runner"))
                .args([
                    "--saga",
                    match args.saga {
                        SagaKind::Choreographed => "choreographed",
                        SagaKind::Orchestrated => "orchestrated",
                    },
                ])
                .args([
                    "--store",
                    match args.store {
                        StoreKind::Sqlite => "sqlite",
                        StoreKind::Postgres => "postgres",
                    },
                ])
                .args(["--schema-prefix", &schema_prefix])
                .env("RUST_LOG", "error")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            if let Some(db) = &args.database_url {
                command.args(["--database-url", db]);
            }
            if args.sync_full {
                command.arg("--sync-full");
            }
            for f in group {
                command.args(["--function", f]);
            }
            let child = command.spawn()?;
            runners.push(Process::new(child, format!("runner {copy}")));
        }
    }
    let names: Vec<String> = match args.saga {
        SagaKind::Choreographed => crate::saga::FUNCTIONS.iter().map(|s| s.to_string()).collect(),
        SagaKind::Orchestrated => crate::saga::ORCHESTRATED_FUNCTIONS.iter().map(|s| s.to_string()).collect(),
    };
    client.wait_for_services(&names, Duration::from_secs(60)).await?;
    let runner_pids: Vec<u32> = runners.iter().filter_map(Process::program_pid).collect();
    let cpu_before: f64 = runner_pids.iter().filter_map(|p| proc_usage(*p)).map(|u| u.0).sum();

    // Catalog: five products with ample stock, one customer with ample credit.
    let products: Vec<(String, u64, u32)> =
        (1..=5).map(|i| (format!("p-bench-{i}"), 100 + i as u64 * 25, (args.orders * 3) as u32)).collect();
    for (id, price, stock) in &products {
        let upsert = jetsaga_events::UpsertProduct {
            product_id: id.clone(),
            name: id.clone(),
            price_cents: *price,
            stock: *stock,
        };
        client.command(jetsaga_events::subjects::INVENTORY_CMD_UPSERT_PRODUCT, &upsert).await?;
    }
    let customer = jetsaga_events::CreateCustomer {
        customer_id: "c-bench".into(),
        name: "Bench".into(),
        credit_limit_cents: jetsaga_events::limits::MAX_CREDIT_LIMIT_CENTS,
    };
    client.command(jetsaga_events::subjects::CUSTOMERS_CMD_CREATE, &customer).await?;
    let first_seq = js.get_stream("SAGA").await?.info().await?.state.last_sequence;

    // Terminal events, as they happen.
    let mut terminal = nats.subscribe("orders.evt.*").await?;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String, Instant)>();
    tokio::spawn(async move {
        while let Some(message) = terminal.next().await {
            let kind = message.subject.as_str().rsplit('.').next().unwrap_or("").to_string();
            if matches!(kind.as_str(), "completed" | "failed" | "canceled")
                && let Ok(envelope) = Envelope::decode(&message.payload)
                && let Some(order_id) = envelope.order_id
                && done_tx.send((order_id, kind, Instant::now())).is_err()
            {
                break;
            }
        }
    });

    let sent_at: std::sync::Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let start = Instant::now();
    let sender = {
        let client = client.clone();
        let sent_at = sent_at.clone();
        let (orders, window, rate) = (args.orders, args.window, args.rate);
        let products: Vec<String> = products.iter().map(|p| p.0.clone()).collect();
        tokio::spawn(async move {
            // Each create is its own task, so it goes out the moment it is
            // due (a future parked in a set would wait until the set is polled).
            let window = std::sync::Arc::new(tokio::sync::Semaphore::new(window.max(1)));
            let mut in_flight = tokio::task::JoinSet::new();
            let mut pace = rate.map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(r.max(1)))));
            for i in 0..orders {
                if let Some(pace) = pace.as_mut() {
                    pace.tick().await;
                }
                let permit = window.clone().acquire_owned().await.expect("the window is never closed");
                while in_flight.try_join_next().is_some() {}
                let order_id = format!("b-{i}");
                let items = vec![
                    OrderItem { product_id: products[i % products.len()].clone(), quantity: 1 + (i % 2) as u32 },
                    OrderItem { product_id: products[(i + 1) % products.len()].clone(), quantity: 1 },
                ];
                let create = jetsaga_events::CreateOrder {
                    order_id: Some(order_id.clone()),
                    customer_id: "c-bench".into(),
                    items,
                };
                sent_at.lock().unwrap().insert(order_id, Instant::now());
                let client = client.clone();
                in_flight.spawn(async move {
                    let answer = client.command(jetsaga_events::subjects::ORDERS_CMD_CREATE, &create).await;
                    drop(permit);
                    answer
                });
            }
            while in_flight.join_next().await.is_some() {}
        })
    };

    let mut finished: HashMap<String, (String, Instant)> = HashMap::new();
    let mut duplicates = Vec::new();
    let deadline = Duration::from_secs(60 + (args.orders / 50) as u64);
    let mut last_progress = Instant::now();
    while finished.len() < args.orders {
        match tokio::time::timeout(Duration::from_secs(5), done_rx.recv()).await {
            Ok(Some((order_id, kind, at))) => {
                if finished.insert(order_id.clone(), (kind, at)).is_some() {
                    duplicates.push(order_id);
                }
            }
            Ok(None) => break,
            Err(_) if start.elapsed() > deadline => break,
            Err(_) => {}
        }
        if last_progress.elapsed() > Duration::from_millis(250) {
            eprint!("\r  {} / {} orders finished", finished.len(), args.orders);
            last_progress = Instant::now();
        }
    }
    let end = finished.values().map(|(_, at)| *at).max().unwrap_or_else(Instant::now);
    eprintln!("\r  {} / {} orders finished", finished.len(), args.orders);
    sender.await?;
    let saga_seconds = (end - start).as_secs_f64();

    let usage: Vec<(f64, u64)> = runner_pids.iter().filter_map(|p| proc_usage(*p)).collect();
    let runner_cpu_seconds = usage.iter().map(|u| u.0).sum::<f64>() - cpu_before;
    let runner_peak_rss_mib = usage.iter().map(|u| u.1).max().unwrap_or(0) as f64 / 1024.0;

    // Correctness and per-step latency, from what the stream holds.
    let mut problems = Vec::new();
    if finished.len() < args.orders {
        problems.push(format!("{} orders never reached a terminal state", args.orders - finished.len()));
    }
    let mut saga_stream = js.get_stream("SAGA").await?;
    // Plain subscribers can see an event before the stream has stored it
    // (with sync_interval=always storing waits for the disk): read until
    // the stream stops growing.
    let mut last_seq = saga_stream.info().await?.state.last_sequence;
    let (mut stored, mut bytes) = (0u64, 0usize);
    let mut per_order: HashMap<String, Vec<Envelope>> = HashMap::new();
    let mut history: Vec<Envelope> = Vec::new();
    let mut terminal_count: HashMap<String, usize> = HashMap::new();
    let ordered = saga_stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: first_seq + 1 },
            ..Default::default()
        })
        .await?;
    let mut messages = ordered.messages().await?;
    loop {
        if stored >= last_seq - first_seq {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = saga_stream.info().await?.state.last_sequence;
            if now == last_seq {
                break;
            }
            last_seq = now;
            continue;
        }
        let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(5), messages.next()).await else { break };
        stored += 1;
        bytes += message.payload.len();
        if let Ok(envelope) = Envelope::decode(&message.payload)
            && let Some(order_id) = envelope.order_id.clone()
            && order_id.starts_with("b-")
        {
            if matches!(
                envelope.event_type.as_str(),
                "orders.evt.completed" | "orders.evt.failed" | "orders.evt.canceled"
            ) {
                *terminal_count.entry(order_id.clone()).or_default() += 1;
            }
            history.push(envelope.clone());
            per_order.entry(order_id).or_default().push(envelope);
        }
    }
    // The stream is the record: a re-published event that JetStream
    // de-duplicated still reaches plain subscribers, so `duplicates` (seen
    // live) is reported but not a failure.
    let doubled = terminal_count.values().filter(|c| **c > 1).count();
    if doubled > 0 {
        problems.push(format!("{doubled} orders have more than one terminal event in the stream"));
    }
    let missing_in_stream = finished.keys().filter(|id| !terminal_count.contains_key(*id)).count();
    if missing_in_stream > 0 {
        problems.push(format!("{missing_in_stream} terminal events seen live are missing from the stream"));
    }
    let mut steps: HashMap<String, (f64, usize)> = HashMap::new();
    for events in per_order.values_mut() {
        events.sort_by_key(|e| e.occurred_at);
        for pair in events.windows(2) {
            let ms = (pair[1].occurred_at - pair[0].occurred_at).num_microseconds().unwrap_or(0) as f64 / 1000.0;
            let entry = steps.entry(pair[1].event_type.clone()).or_default();
            entry.0 += ms;
            entry.1 += 1;
        }
    }
    let mut step_ms: Vec<(String, f64)> = steps.into_iter().map(|(k, (sum, n))| (k, sum / n as f64)).collect();
    step_ms.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for (kind, _) in finished.values() {
        *outcomes.entry(kind.clone()).or_default() += 1;
    }
    // Inventory consumes a completed order's reservation just after the
    // order completes: give the tail of the run a moment to settle.
    let settle = Instant::now();
    let mut list = client.products().await?;
    while list.products.iter().any(|p| p.reserved > 0) && settle.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        list = client.products().await?;
    }
    // The same invariants as `jetsaga chaos`: one end per order, nothing
    // doubled, stock, credit and money conserved, no dead letter, no event
    // left unpublished.
    let expected = crate::invariants::Expected {
        accepted: sent_at.lock().unwrap().keys().cloned().collect(),
        initial_stock: products.iter().map(|(id, _, stock)| (id.clone(), *stock)).collect(),
        initial_credit: [("c-bench".to_string(), 0)].into(),
    };
    let observed = crate::invariants::Observed {
        events: history,
        products: list.products,
        customers: client.customers().await?.customers,
        dead_letters: match js.get_stream("DLQ").await {
            Ok(mut dlq) => dlq.info().await?.state.messages,
            Err(_) => 0,
        },
        unpublished: crate::chaos::outbox_backlog(&nats, &names).await?,
    };
    let tally = crate::invariants::check(&expected, &observed);
    problems.extend(tally.findings.iter().take(20).map(ToString::to_string));
    if tally.findings.len() > 20 {
        problems.push(format!("… and {} more findings", tally.findings.len() - 20));
    }
    let sent = sent_at.lock().unwrap().clone();
    let samples: Vec<f64> =
        finished.iter().filter_map(|(id, (_, at))| sent.get(id).map(|s| (*at - *s).as_secs_f64() * 1000.0)).collect();
    let mut throughput_series = vec![0usize; (saga_seconds * 10.0).ceil() as usize + 1];
    for (_, at) in finished.values() {
        let bucket = ((*at - start).as_secs_f64() * 10.0) as usize;
        if let Some(slot) = throughput_series.get_mut(bucket) {
            *slot += 1;
        }
    }
    let messages_per_saga = stored as f64 / args.orders as f64;
    let message_bytes = if stored > 0 { bytes / stored as usize } else { 0 };
    drop(runners);

    // The raw JetStream baseline: same server, same message count and size.
    let raw_msgs_per_sec = raw_baseline(&js, stored.max(1) as usize, message_bytes.max(16)).await?;
    let raw_bound = raw_msgs_per_sec / messages_per_saga.max(1.0);
    let sagas_per_sec = finished.len() as f64 / saga_seconds.max(1e-9);
    drop(nats_server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Report {
        orders: args.orders,
        rate: args.rate,
        layout: args.layout,
        copies: args.copies,
        store: format!("{:?}", args.store).to_lowercase(),
        saga: format!("{:?}", args.saga).to_lowercase(),
        durability: format!(
            "JetStream file store, sync_interval {}; SQLite WAL synchronous={}",
            if args.nats_sync_always { "always" } else { "default (2 min)" },
            if args.sync_full { "FULL" } else { "NORMAL" }
        ),
        sagas_per_sec,
        saga_seconds,
        messages_per_saga,
        message_bytes,
        raw_msgs_per_sec,
        raw_bound_sagas_per_sec: raw_bound,
        ratio_to_raw: sagas_per_sec / raw_bound.max(1e-9),
        latency: Latency::of(samples.clone()),
        step_ms,
        runner_cpu_seconds,
        runner_peak_rss_mib,
        outcomes,
        republished_terminal_events: duplicates.len(),
        dead_letters: tally.dead_letters,
        doubled: tally.doubled,
        failure_reasons: tally.failure_reasons,
        correct: problems.is_empty(),
        problems,
        throughput_series,
        samples,
    })
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("jetsaga-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Publishes `count` messages of `size` bytes with async acks (window 1024)
/// while a durable pull consumer with explicit acks consumes them; returns
/// messages per second from the first publish to the last ack.
async fn raw_baseline(js: &jetstream::Context, count: usize, size: usize) -> anyhow::Result<f64> {
    let stream = js
        .create_stream(stream::Config {
            name: "BENCH_RAW".into(),
            subjects: vec!["bench.raw".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await?;
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let start = Instant::now();
    let consume = tokio::spawn(async move {
        let mut messages = consumer.messages().await?;
        let mut seen = 0;
        while seen < count {
            match messages.next().await {
                Some(Ok(message)) => {
                    message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                    seen += 1;
                }
                Some(Err(e)) => anyhow::bail!("raw consumer: {e}"),
                None => break,
            }
        }
        anyhow::Ok(())
    });
    let mut acks = FuturesUnordered::new();
    for _ in 0..count {
        while acks.len() >= 1024 {
            if let Some(result) = acks.next().await {
                result?;
            }
        }
        let ack = js.publish("bench.raw", payload.clone()).await?;
        acks.push(ack.into_future());
    }
    while let Some(result) = acks.next().await {
        result?;
    }
    consume.await??;
    let elapsed = start.elapsed().as_secs_f64();
    js.delete_stream("BENCH_RAW").await?;
    Ok(count as f64 / elapsed)
}

/// The report as a table a person reads.
pub fn print(report: &Report) {
    println!(
        "jetsaga bench: {} orders, {:?} x{}, {} store, {} saga{}",
        report.orders,
        report.layout,
        report.copies,
        report.store,
        report.saga,
        report.rate.map(|r| format!(", paced at {r}/s")).unwrap_or_default()
    );
    println!("  durability:        {}", report.durability);
    println!("  sagas/s:           {:.0}  ({:.2} s)", report.sagas_per_sec, report.saga_seconds);
    println!(
        "  raw JetStream:     {:.0} msg/s  ({:.1} messages/saga of {} B -> bound {:.0} sagas/s)",
        report.raw_msgs_per_sec, report.messages_per_saga, report.message_bytes, report.raw_bound_sagas_per_sec
    );
    println!("  ratio to raw:      {:.1}%", report.ratio_to_raw * 100.0);
    let l = &report.latency;
    println!("  latency (ms):      p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}", l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms);
    println!(
        "  per step (ms):     {}",
        report.step_ms.iter().map(|(k, v)| format!("{k} {v:.1}")).collect::<Vec<_>>().join(", ")
    );
    println!(
        "  runner:            {:.1} CPU s, peak RSS {:.0} MiB",
        report.runner_cpu_seconds, report.runner_peak_rss_mib
    );
    println!("  outcomes:          {:?}; failures {:?}", report.outcomes, report.failure_reasons);
    if report.correct {
        println!(
            "  correctness:       ok (one end per order, nothing doubled, stock, credit and money conserved, \
             no dead letter, nothing unpublished)"
        );
    } else {
        println!("  correctness:       FAILED: {}", report.problems.join("; "));
    }
}

/// A latency histogram and a throughput time series, as one SVG.
pub fn svg(report: &Report) -> String {
    let (w, h, pad) = (720.0, 260.0, 40.0);
    let max_ms = report.samples.iter().cloned().fold(1.0f64, f64::max);
    let buckets = 40usize;
    let mut hist = vec![0usize; buckets];
    for s in &report.samples {
        hist[((s / max_ms) * (buckets as f64 - 1.0)) as usize] += 1;
    }
    let top = *hist.iter().max().unwrap_or(&1) as f64;
    let bar_w = (w - 2.0 * pad) / buckets as f64;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" font-family="sans-serif" font-size="11">"#,
        2.0 * h + 20.0
    );
    out += &format!(
        r#"<text x="{pad}" y="16">end-to-end latency, {} orders (p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms)</text>"#,
        report.orders, report.latency.p50_ms, report.latency.p99_ms, report.latency.max_ms
    );
    for (i, count) in hist.iter().enumerate() {
        let bh = (*count as f64 / top.max(1.0)) * (h - 2.0 * pad);
        out += &format!(
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#4878a8"/>"##,
            pad + i as f64 * bar_w,
            h - pad - bh,
            bar_w - 1.0,
            bh
        );
    }
    out += &format!(
        r#"<text x="{pad}" y="{}">0 ms</text><text x="{}" y="{}" text-anchor="end">{max_ms:.1} ms</text>"#,
        h - pad + 14.0,
        w - pad,
        h - pad + 14.0
    );
    let series = &report.throughput_series;
    let smax = *series.iter().max().unwrap_or(&1) as f64;
    let y0 = 2.0 * h - pad + 20.0;
    out += &format!(
        r#"<text x="{pad}" y="{}">sagas finished per second over time (peak {:.0}/s)</text>"#,
        h + 30.0,
        smax * 10.0
    );
    let points: Vec<String> = series
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                pad + i as f64 * (w - 2.0 * pad) / series.len().max(1) as f64,
                y0 - (*v as f64 / smax.max(1.0)) * (h - 2.0 * pad)
            )
        })
        .collect();
    out += &format!(r##"<polyline fill="none" stroke="#c0504d" stroke-width="1.5" points="{}"/>"##, points.join(" "));
    out += "</svg>\n";
    out
}
