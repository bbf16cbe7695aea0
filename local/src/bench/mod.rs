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
//!
//! The rooms: `runners` (the processes under test and what they cost),
//! `load` (catalog, orders, their ends as they happen), `readback` (the run
//! as the stream stored it), `report`
//! (table and plot), `bootstraps` (`--bootstraps`); this file ties a run
//! together and checks it with the chaos suite's invariants.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde::Serialize;

use crate::client::Client;
use crate::server::{self, NatsProcess};
use crate::tools::{self, Process};
use crate::up::{SagaKind, StoreKind};

mod bootstraps;
mod load;
mod readback;
mod report;
mod runners;
mod split;

pub use bootstraps::{BootstrapFigure, measure_bootstraps};
pub use report::{Latency, print, svg};
pub use split::{FunctionSplit, Phase};

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
    /// Run the saga without deadlines (no schedules: five fewer messages a
    /// saga), to measure what they cost.
    #[arg(long)]
    pub no_deadlines: bool,
    /// Write the full results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a latency histogram and throughput time series (SVG) here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Every other order through the HTTP API instead of NATS: a `jetsaga
    /// gateway` process in front of the same saga, a signed-in user posting
    /// `/api/orders`. Interleaved, both see the same load at the same time;
    /// their latencies side by side show what the gateway adds.
    #[arg(long)]
    pub http: bool,
    /// Instead of the saga: measure the Lambda bootstrap in this directory
    /// (e.g. target/x86_64-unknown-linux-gnu/lambda) as each function: size,
    /// and start-up time from process start to its first `next` poll of
    /// the Runtime API.
    #[arg(long, value_name = "DIR")]
    pub bootstraps: Option<PathBuf>,
}

/// How the functions are spread over processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// Every function in one process.
    OneProcess,
    /// One process per function.
    PerFunction,
    /// The Lambda path: each function's bootstrap (built beside this
    /// binary: `cargo build -p jetsaga-bootstrap`) under cargo-lambda's
    /// emulator, storing in DynamoDB (moto's server, or AWS_ENDPOINT_URL),
    /// fed by `jetsaga bridge` (--copies of it); prints what the run would
    /// cost on AWS, per million orders. The emulator, not Lambda, sets the
    /// pace here: run it paced (--rate 20) and read the bill, not the speed.
    Lambda,
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
    /// Whether the saga ran with deadlines (JetStream message schedules).
    pub deadlines: bool,
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
    /// The run against the performance targets (ratios to raw JetStream in this run).
    pub targets: jetsaga_runner::bench::Targets,
    /// Command sent → terminal event received.
    pub latency: Latency,
    /// With `--http`: the orders that went in through the HTTP gateway
    /// (every other one; `latency` above is then the NATS orders').
    pub http: Option<HttpRun>,
    /// Mean time from one event of a saga to the next, by the later event's type.
    pub step_ms: Vec<(String, f64)>,
    /// Where each consumed message's time went inside the runner, per
    /// function and for `all`: queue wait, handling, publish, ack.
    pub split: Vec<FunctionSplit>,
    /// CPU seconds used by the runner processes.
    pub runner_cpu_seconds: f64,
    /// Runner CPU per completed saga, in milliseconds.
    pub runner_cpu_ms_per_saga: f64,
    /// CPU seconds used by the benchmark's nats-server meanwhile (it also
    /// serves the benchmark's own requests and subscription).
    pub nats_server_cpu_seconds: f64,
    /// Peak resident memory of the largest runner process (MiB).
    pub runner_peak_rss_mib: f64,
    /// With `--layout lambda`: what the run's invocations would cost on
    /// AWS, per million orders, beside Step Functions.
    pub cost: Option<jetsaga_runner::cost::Bill>,
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

/// The orders driven through the HTTP gateway (`--http`).
#[derive(Clone, Debug, Serialize)]
pub struct HttpRun {
    /// Orders that went in through HTTP.
    pub orders: usize,
    /// `POST /api/orders` sent → terminal event received.
    pub latency: Latency,
    /// CPU seconds used by the gateway process.
    pub gateway_cpu_seconds: f64,
    /// The signed-up user's customer, who placed these orders.
    pub customer_id: String,
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
    let runners = runners::start(&args, &url, &dir)?;
    let names: Vec<String> = crate::saga::names(args.saga.into()).iter().map(|s| s.to_string()).collect();
    client.wait_for_services(&names, Duration::from_secs(60)).await?;
    let runner_pids: Vec<u32> = runners.processes.iter().filter_map(Process::program_pid).collect();
    let cpu_before: f64 = runner_pids.iter().filter_map(|p| runners::proc_usage(*p)).map(|u| u.0).sum();
    let server_pid = nats_server.program_pid();
    let server_cpu_before = server_pid.and_then(runners::proc_usage).map_or(0.0, |u| u.0);

    let products = load::seed(&client, args.orders).await?;
    let first_seq = js.get_stream(jetsaga_jetstream::streams::SAGA).await?.info().await?.state.last_sequence;

    let gateway = if args.http { Some(http_entry(&client, &url, &dir).await?) } else { None };
    // With --http, the NATS orders carry a Nats-Msg-Id as the gateway's do (see `Entry::Nats`);
    // on the Lambda path too, as the HTTP API's and any careful client's do: they are what it bills.
    let mut entries = vec![load::Entry::Nats { keyed: args.http || args.layout == Layout::Lambda }];
    entries.extend(gateway.as_ref().map(|g| g.entry.clone()));
    let gateway_cpu_before = gateway.as_ref().and_then(|g| g.process.program_pid()).and_then(runners::proc_usage);
    let load::Drive { start, sent_at, finished, duplicates, via_http } =
        load::drive(&client, &nats, &args, &products, entries).await?;
    let end = finished.values().map(|(_, at)| *at).max().unwrap_or_else(Instant::now);
    let saga_seconds = (end - start).as_secs_f64();
    let (over_http, over_nats): (HashMap<_, _>, HashMap<_, _>) =
        finished.iter().map(|(id, end)| (id.clone(), end.clone())).partition(|(id, _)| via_http.contains(id));
    let samples = latencies(&sent_at, &over_nats);
    let latency = Latency::of(samples.clone());

    // (Bridges and bootstraps keep no phase timings.)
    let split =
        if args.layout == Layout::Lambda { Vec::new() } else { split::gather(&nats, &names, args.copies).await? };
    let usage: Vec<(f64, u64)> = runner_pids.iter().filter_map(|p| runners::proc_usage(*p)).collect();
    let runner_cpu_seconds = usage.iter().map(|u| u.0).sum::<f64>() - cpu_before;
    let nats_server_cpu_seconds = server_pid.and_then(runners::proc_usage).map_or(0.0, |u| u.0) - server_cpu_before;
    let runner_peak_rss_mib = usage.iter().map(|u| u.1).max().unwrap_or(0) as f64 / 1024.0;
    let http = gateway.map(|g| {
        let cpu = g.process.program_pid().and_then(runners::proc_usage);
        HttpRun {
            orders: via_http.len(),
            latency: Latency::of(latencies(&sent_at, &over_http)),
            gateway_cpu_seconds: cpu.zip(gateway_cpu_before).map_or(0.0, |(after, before)| after.0 - before.0),
            customer_id: g.customer_id,
        }
    });

    // Correctness and per-step latency, from what the stream holds.
    let mut problems = Vec::new();
    if finished.len() < args.orders {
        problems.push(format!("{} orders never reached a terminal state", args.orders - finished.len()));
    }
    let readback::Record { stored, bytes, history, mut per_order, terminal_count } =
        readback::read(&js, first_seq).await?;
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
    let step_ms = readback::step_ms(&mut per_order);
    // The raw chain the latency targets compare with is as long as an order's path from its command to its end.
    let terminal = |e: &jetsaga_events::Envelope| {
        matches!(e.event_type.as_str(), "orders.evt.completed" | "orders.evt.failed" | "orders.evt.canceled")
    };
    let critical_path = jetsaga_runner::bench::critical_path(&history, terminal);
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
        accepted: sent_at.keys().cloned().collect(),
        initial_stock: products.iter().map(|(id, _, stock)| (id.clone(), *stock)).collect(),
        initial_credit: std::iter::once("c-bench".to_string())
            .chain(http.as_ref().map(|h| h.customer_id.clone()))
            .map(|customer| (customer, 0))
            .collect(),
    };
    let observed = crate::invariants::Observed {
        events: history,
        products: list.products,
        customers: client.customers().await?.customers,
        dead_letters: match js.get_stream(jetsaga_jetstream::streams::DLQ).await {
            Ok(mut dlq) => dlq.info().await?.state.messages,
            Err(_) => 0,
        },
        unpublished: jetsaga_runner::connect::outbox_backlog(&nats, &names).await?,
    };
    let tally = crate::invariants::check(&expected, &observed);
    problems.extend(tally.findings.iter().take(20).map(ToString::to_string));
    if tally.findings.len() > 20 {
        problems.push(format!("… and {} more findings", tally.findings.len() - 20));
    }
    let mut throughput_series = vec![0usize; (saga_seconds * 10.0).ceil() as usize + 1];
    for (_, at) in finished.values() {
        let bucket = ((*at - start).as_secs_f64() * 10.0) as usize;
        if let Some(slot) = throughput_series.get_mut(bucket) {
            *slot += 1;
        }
    }
    let messages_per_saga = stored as f64 / args.orders as f64;
    let message_bytes = if stored > 0 { bytes / stored as usize } else { 0 };
    let sagas_per_sec = finished.len() as f64 / saga_seconds.max(1e-9);
    let cost = match &runners.lambda {
        Some(_) => {
            let usage = jetsaga_runner::cost::Usage::from_logs(&runners.bootstrap_logs)?;
            let rate = args.rate.map_or(sagas_per_sec, f64::from);
            Some(jetsaga_runner::cost::Bill::new(
                &usage,
                finished.len(),
                BILLED_MEMORY_MB,
                rate,
                ORDER_STATE_MACHINE,
                jetsaga_runner::cost::US_EAST_1,
            ))
        }
        None => None,
    };
    drop(runners);

    // The raw JetStream baseline: same server, same message count and size.
    let raw_msgs_per_sec =
        jetsaga_runner::bench::raw_baseline(&js, stored.max(1) as usize, message_bytes.max(16)).await?;
    let raw_bound = raw_msgs_per_sec / messages_per_saga.max(1.0);
    let ratio_to_raw = sagas_per_sec / raw_bound.max(1e-9);
    let targets = jetsaga_runner::bench::Targets::measure(
        &js,
        critical_path.unwrap_or(messages_per_saga.round() as usize),
        message_bytes.max(16),
        ratio_to_raw,
        &latency,
    )
    .await?;
    drop(nats_server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Report {
        orders: args.orders,
        rate: args.rate,
        layout: args.layout,
        copies: args.copies,
        store: if args.layout == Layout::Lambda {
            "dynamodb".into()
        } else {
            format!("{:?}", args.store).to_lowercase()
        },
        saga: format!("{:?}", args.saga).to_lowercase(),
        durability: format!(
            "JetStream file store, sync_interval {}; {}",
            if args.nats_sync_always { "always" } else { "default (2 min)" },
            match (args.layout, args.sync_full) {
                (Layout::Lambda, _) => "DynamoDB transactions",
                (_, true) => "SQLite WAL synchronous=FULL",
                (_, false) => "SQLite WAL synchronous=NORMAL",
            }
        ),
        deadlines: !args.no_deadlines,
        sagas_per_sec,
        saga_seconds,
        messages_per_saga,
        message_bytes,
        raw_msgs_per_sec,
        raw_bound_sagas_per_sec: raw_bound,
        ratio_to_raw,
        targets,
        latency,
        http,
        step_ms,
        split,
        runner_cpu_seconds,
        runner_cpu_ms_per_saga: runner_cpu_seconds * 1000.0 / finished.len().max(1) as f64,
        nats_server_cpu_seconds,
        runner_peak_rss_mib,
        cost,
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

/// The memory size the template gives each function (its `MemorySize` default).
const BILLED_MEMORY_MB: u32 = 128;

/// The order saga on the managed orchestrators, for the bill's comparison.
/// Step Functions, transitions on the way to a completed order (each state
/// entered is one): reserve stock, reserve credit, execute payment,
/// schedule shipping (Tasks, 4), a Parallel state consuming the stock and
/// awarding points (1 + 2 branch states), the Succeed state (1): 8, before
/// any retry or compensation. An Express execution's duration: the four
/// Task invocations and the branches, at about 25 ms each with the
/// service's own time per state, is taken as 200 ms (two of Express's
/// 100 ms steps) at its 64 MB minimum. A Lambda durable function: the six
/// steps (the four, consume stock, award points), each one durable
/// operation, before any retry or wait. The tasks' own Lambda and DynamoDB
/// cost comes on top of each, as it does for jetsaga.
const ORDER_STATE_MACHINE: jetsaga_runner::cost::StateMachine = jetsaga_runner::cost::StateMachine {
    transitions: 8,
    express_duration_ms: 200.0,
    express_memory_mb: 64.0,
    durable_operations: 6,
};

/// Command sent → terminal event received, in ms, for every order seen to end.
fn latencies(sent_at: &HashMap<String, Instant>, finished: &HashMap<String, (String, Instant)>) -> Vec<f64> {
    finished.iter().filter_map(|(id, (_, at))| sent_at.get(id).map(|s| (*at - *s).as_secs_f64() * 1000.0)).collect()
}

/// `--http`'s way in: a gateway process in front of the same saga, and a
/// user signed up and logged in over HTTP, their customer given the
/// benchmark's credit.
struct Gateway {
    process: Process,
    entry: load::Entry,
    customer_id: String,
}

async fn http_entry(client: &Client, url: &str, dir: &std::path::Path) -> anyhow::Result<Gateway> {
    let (process, base) = runners::start_gateway(url, dir)?;
    let http = reqwest::Client::new();
    let user =
        serde_json::json!({"email": "bench@example.com", "password": "the benchmark's password", "name": "Bench"});
    let signed: serde_json::Value =
        http.post(format!("{base}/api/users")).json(&user).send().await?.error_for_status()?.json().await?;
    let customer_id = signed["customer_id"].as_str().unwrap_or_default().to_string();
    let credit = jetsaga_events::CreateCustomer {
        customer_id: customer_id.clone(),
        name: "Bench".into(),
        credit_limit_cents: jetsaga_events::limits::MAX_CREDIT_LIMIT_CENTS,
    };
    client.command(jetsaga_events::subjects::CUSTOMERS_CMD_CREATE, &credit).await?;
    let login = serde_json::json!({"email": user["email"], "password": user["password"]});
    let session: serde_json::Value =
        http.post(format!("{base}/api/session")).json(&login).send().await?.error_for_status()?.json().await?;
    let token = session["token"].as_str().unwrap_or_default().to_string();
    Ok(Gateway { process, entry: load::Entry::Http { base, token, http }, customer_id })
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("jetsaga-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
