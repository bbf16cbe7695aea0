//! `jetsaga chaos`: the fault-injection suite that proves effectively-once.
//!
//! It runs the saga with every function as its own process (two copies of
//! each, sharing the durable consumers), drives orders over the wire with
//! plain NATS requests (limited stock, limited credit, payments under $1,
//! unknown customers, cancels sent right after the create), and meanwhile
//! injects faults on a schedule drawn from a seed:
//!
//! - `kill`: `kill -9` of a function process, restarted a moment later;
//! - `pause`: `SIGSTOP` of a function process for longer than the ack wait, then `SIGCONT`;
//! - `server`: `kill -9` of nats-server (restarted on the same store), or of
//!   one node of a 3-node cluster with `--cluster` (R3 streams);
//! - `hang`: `SIGSTOP` of every copy of one step (inventory, customer,
//!   payment or shipping) for longer than the step's deadline, then
//!   `SIGCONT`: orders waiting for it fail by their deadline, give back what
//!   they hold, and what the step does late is compensated (not with
//!   `--lambda`; the runs with `hang` give each step a 6 s deadline).
//!
//! With `--lambda` it runs the Lambda path instead: each function's real
//! bootstrap under cargo-lambda's emulator, storing in DynamoDB, fed by
//! `jetsaga bridge` processes, and kills and pauses hit bootstraps (an
//! invocation dies with its instance) and bridges (a batch invoked but not
//! yet acked or published).
//!
//! Afterwards it reads the whole stream back and checks the invariants
//! ([`crate::invariants`]): one terminal event per accepted order, no
//! doubled effect, stock, credit and money conserved, an empty DLQ, no
//! unpublished event, nothing stuck. A run that finds anything exits
//! non-zero, names the order and what went wrong, and prints the command
//! that reproduces it (same seed, same schedule).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use jetsaga_events::subjects::*;
use jetsaga_events::{CreateCustomer, UpsertProduct};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::client::Client;
use crate::invariants::{self, Expected, Observed, Tally};
use crate::lambda_local::{LambdaLocal, function_name};
use crate::saga::SagaOptions;
use crate::server::{self, NatsProcess};
use crate::tools::{self, Process};
use crate::up::{SagaKind, StoreKind};
use jetsaga_runner::chaos::{Answer, GIVE_UP_AFTER, Rng, send};

/// Options of `jetsaga chaos`.
#[derive(Clone, Debug, clap::Args)]
pub struct ChaosArgs {
    /// Orders to drive through the saga.
    #[arg(long, default_value_t = 3000)]
    pub orders: usize,
    /// Creates sent per second.
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// Seed of the order mix and the fault schedule [default: from the clock, printed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Faults to inject (`hang` too: every copy of one step stopped past its deadline).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "kill,pause,server")]
    pub faults: Vec<Fault>,
    /// Mean seconds between two faults.
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    pub fault_every: f64,
    /// Run on a 3-node JetStream cluster with R3 streams (`server` then kills one node at a time).
    #[arg(long)]
    pub cluster: bool,
    /// Store backend of the functions.
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    pub store: StoreKind,
    /// PostgreSQL URL for --store postgres.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Choreographed or orchestrated saga.
    #[arg(long, value_enum, default_value_t = SagaKind::Choreographed)]
    pub saga: SagaKind,
    /// Copies of each function process (with --lambda: of each bootstrap,
    /// and of the bridge).
    #[arg(long, default_value_t = 2)]
    pub copies: usize,
    /// The Lambda path: every function its real bootstrap under
    /// cargo-lambda's emulator, storing in DynamoDB (moto's server, or
    /// AWS_ENDPOINT_URL), fed by `jetsaga bridge` processes; kills and
    /// pauses then hit bootstraps and bridges. The bootstraps must be built
    /// beside the runner (`cargo build -p jetsaga-bootstrap`). --store does
    /// not apply.
    #[arg(long)]
    pub lambda: bool,
    /// Share of orders canceled right after their create.
    #[arg(long, default_value_t = 0.1)]
    pub cancel_share: f64,
    /// Share of creates sent as a plain `nats pub` (no reply, no id, never
    /// retried): each one the command stream kept must end like any other.
    #[arg(long, default_value_t = 0.2)]
    pub publish_share: f64,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Keep the run's directory (stores, logs) instead of removing it.
    #[arg(long)]
    pub keep: bool,
    /// The `jetsaga` binary to run the functions with [default: this one].
    #[arg(long, hide = true)]
    pub runner: Option<PathBuf>,
    /// Run every function as a container of this image (`scripts/image`)
    /// on the host's network, as an orchestrator would: a kill is `kill
    /// --signal KILL` of the container, a pause SIGSTOP to its process, a
    /// restart a new container. The nats-server nodes stay processes.
    #[arg(long, value_name = "IMAGE", conflicts_with = "lambda")]
    pub containers: Option<String>,
    /// The container runtime's command line (CI passes `scripts/podman --print`).
    #[arg(long, value_name = "COMMAND", default_value = "podman", requires = "containers")]
    pub container_runtime: String,
}

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// `kill -9` a function process, then start it again.
    Kill,
    /// `SIGSTOP` a function process for longer than the ack wait, then `SIGCONT`.
    Pause,
    /// `kill -9` nats-server (or one cluster node), then start it again on the same store.
    Server,
    /// `SIGSTOP` every copy of one step for longer than its deadline, then `SIGCONT`.
    Hang,
}

/// A step's deadline in runs with the `hang` fault (the default, 30 s, in
/// the others): a hang lasts longer than this.
pub const HANG_STEP_TIMEOUT: Duration = Duration::from_secs(6);

/// The steps a hang stops: those an order waits for.
const HANGING_STEPS: [&str; 4] = ["inventory", "customer", "payment", "shipping"];

/// Ack wait of the function processes: short, so a paused process's
/// messages go to the other copy within the run.
const ACK_WAIT: Duration = Duration::from_secs(3);
/// On the Lambda path: one invocation carries a batch through the
/// emulator and DynamoDB and takes seconds, so the bridge's ack wait is
/// longer, and an invocation whose bootstrap was killed is given up
/// (`--invoke-timeout`) before the batch would be redelivered anyway.
const LAMBDA_ACK_WAIT: Duration = Duration::from_secs(12);
const LAMBDA_INVOKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Records per invocation on the Lambda path: bounds an invocation's time.
const LAMBDA_BATCH: usize = 10;
/// How long the saga may take to settle after the last create.
const SETTLE: Duration = Duration::from_secs(180);
/// How long the client waits for each attempt's answer before sending it
/// again. On the Lambda path a command is an invocation that may queue
/// behind the function's batches and is given up by the bridge only after
/// its invoke timeout: a client retrying sooner only adds invocations for
/// a function already behind.
const PATIENCE: Duration = Duration::from_secs(5);
const LAMBDA_PATIENCE: Duration = LAMBDA_INVOKE_TIMEOUT.saturating_add(Duration::from_secs(5));

/// What a run did and found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The seed (same seed, same orders and fault schedule).
    pub seed: u64,
    /// Orders driven.
    pub orders: usize,
    /// Store backend.
    pub store: String,
    /// Saga mode.
    pub saga: String,
    /// `single node` or `3-node cluster, R3`.
    pub topology: String,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, usize>,
    /// Creates the client gave up on (no answer through all retries).
    pub unanswered: usize,
    /// Creates sent as a plain publish, fire and forget.
    pub published: usize,
    /// Of those, kept by the command stream (checked like accepted ones).
    /// One missing was lost before the server stored it (in flight when a
    /// node was killed): core NATS has no acknowledgement for a publish.
    pub published_kept: usize,
    /// Cancels sent.
    pub cancels: usize,
    /// Seconds from the first create until everything settled.
    pub seconds: f64,
    /// What the checker counted and found.
    pub tally: Tally,
    /// The command that reproduces the run.
    pub reproduce: String,
}

/// The catalog: prices (one under $1, so lone cheap orders fail payment) and limited stock.
fn catalog(orders: usize) -> Vec<(String, u64, u32)> {
    // About what the orders ask for: the last units are raced for, some orders run out.
    let stock = orders.max(5) as u32;
    [("p-cheap", 60), ("p-pen", 250), ("p-book", 1_500), ("p-lamp", 4_999), ("p-chair", 12_000), ("p-desk", 39_900)]
        .iter()
        .map(|(id, price)| (id.to_string(), *price, stock))
        .collect()
}

/// Customers with limited credit (some run out), plus one that does not exist.
fn customers(orders: usize) -> Vec<(String, u64)> {
    let n = orders as u64;
    vec![
        ("c-rich".into(), 200_000 * n),
        ("c-mid".into(), 50_000 * n),
        ("c-low".into(), 5_000 * n),
        ("c-tiny".into(), 20_000),
    ]
}

/// One planned order.
#[derive(Clone, Debug)]
struct Planned {
    order_id: String,
    body: Value,
    cancel: bool,
    /// Sent as a plain publish.
    publish: bool,
}

fn plan(seed: u64, orders: usize, cancel_share: f64, publish_share: f64) -> Vec<Planned> {
    let mut rng = Rng(seed);
    let products: Vec<String> = catalog(orders).into_iter().map(|p| p.0).collect();
    let mut buyers: Vec<String> = customers(orders).into_iter().map(|c| c.0).collect();
    buyers.push("c-ghost".into()); // unknown: fails at the customer step
    (0..orders)
        .map(|i| {
            let order_id = format!("chaos-{seed}-{i}");
            let customer = buyers[rng.below(buyers.len())].clone();
            let items: Vec<Value> = if rng.unit() < 0.1 {
                // A lone cheap line: payment under $1 fails.
                vec![json!({"product_id": "p-cheap", "quantity": 1})]
            } else {
                (0..1 + rng.below(3))
                    .map(|_| json!({"product_id": products[1 + rng.below(products.len() - 1)], "quantity": 1 + rng.below(3)}))
                    .collect()
            };
            let body = json!({"order_id": order_id, "customer_id": customer, "items": items});
            let cancel = rng.unit() < cancel_share;
            let publish = rng.unit() < publish_share;
            Planned { order_id, body, cancel: cancel && !publish, publish }
        })
        .collect()
}

/// A nats-server node this run started (and kills and restarts).
#[derive(Debug)]
struct Node {
    port: u16,
    dir: PathBuf,
    config: Option<PathBuf>,
    process: Option<NatsProcess>,
}

impl Node {
    fn start(&mut self, binary: &Path) -> anyhow::Result<()> {
        let process = NatsProcess::start_with_config(binary.to_path_buf(), self.port, &self.dir, self.config.clone())
            .map_err(anyhow::Error::msg)?;
        self.process = Some(process);
        Ok(())
    }
}

/// What a process of the saga is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// `jetsaga up --function <name>`.
    Function,
    /// A function's Lambda bootstrap under the emulator.
    Bootstrap,
    /// `jetsaga bridge`: JetStream to the Lambda Invoke API.
    Bridge,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Function => "function",
            Role::Bootstrap => "bootstrap",
            Role::Bridge => "bridge",
        }
    }
}

/// One process of the saga: what it runs (`jetsaga <args>`, or for a
/// bootstrap the function's name), where it logs, and the process while
/// it lives.
#[derive(Debug)]
struct Worker {
    role: Role,
    args: Vec<String>,
    log: PathBuf,
    process: Option<Process>,
    paused: bool,
    /// The container it runs in, with `--containers`.
    container: Option<String>,
}

/// Everything the run started.
#[derive(Debug)]
struct Fleet {
    exe: PathBuf,
    nats_binary: PathBuf,
    url: String,
    nodes: Vec<Node>,
    workers: Vec<Worker>,
    /// The emulator and DynamoDB endpoint on the Lambda path.
    lambda: Option<LambdaLocal>,
    /// With `--containers`: the runtime's command line, the image, and the
    /// directory the functions' stores live in (mounted at the same path).
    containers: Option<Containers>,
}

/// How the functions run as containers.
#[derive(Debug)]
struct Containers {
    runtime: Vec<String>,
    image: String,
    data_dir: PathBuf,
}

impl Containers {
    /// Checks the runtime's command line, and opens the functions' store
    /// directory to the image's non-root user.
    fn prepare(image: &str, runtime: &str, data_dir: &Path) -> anyhow::Result<Self> {
        let runtime: Vec<String> = runtime.split_whitespace().map(String::from).collect();
        anyhow::ensure!(!runtime.is_empty(), "--container-runtime is empty");
        std::fs::create_dir_all(data_dir)?;
        std::fs::set_permissions(data_dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
        Ok(Self { runtime, image: image.into(), data_dir: data_dir.into() })
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.runtime[0]);
        command.args(&self.runtime[1..]);
        command
    }

    /// Runs `<runtime> <args>` quietly; whether it succeeded.
    fn run(&self, args: &[&str]) -> bool {
        self.command().args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    }
}

impl Fleet {
    /// Stops every process: see `Drop`.
    fn stop(self) {}

    fn spawn(&self, worker: &mut Worker) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&worker.log)?;
        let (mut command, what) = match (worker.role, &self.containers) {
            (Role::Bootstrap, _) => {
                let lambda = self.lambda.as_ref().ok_or_else(|| anyhow::anyhow!("a bootstrap needs the emulator"))?;
                let name = &worker.args[0];
                (lambda.bootstraps().command(name).map_err(anyhow::Error::msg)?, function_name(name))
            }
            (Role::Function, Some(containers)) => {
                let name = worker.container.clone().expect("a containerized worker has a container name");
                // A container left by a kill of its client goes first.
                containers.run(&["rm", "-f", &name]);
                let data = containers.data_dir.display().to_string();
                let mut command = containers.command();
                command
                    .args(["run", "--rm", "--name", &name, "--network", "host", "--read-only", "--tmpfs", "/tmp"])
                    .args(["-v", &format!("{data}:{data}"), "-e", "RUST_LOG=warn", &containers.image])
                    .args(&worker.args)
                    .args(["--nats-url", &self.url, "--quiet"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null());
                (command, format!("container {name}: jetsaga {}", worker.args.join(" ")))
            }
            (Role::Function | Role::Bridge, _) => {
                let mut command = tools::tied_command(&self.exe);
                command
                    .args(&worker.args)
                    .args(["--nats-url", &self.url, "--quiet"])
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null());
                (command, format!("jetsaga {}", worker.args.join(" ")))
            }
        };
        let child = command.stderr(log).spawn()?;
        worker.process = Some(Process::new(child, what));
        worker.paused = false;
        Ok(())
    }

    /// Sends `kill -<signal>` to worker `i`'s program, in its container or not.
    fn signal(&self, i: usize, signal: &str) {
        let worker = &self.workers[i];
        match (&self.containers, &worker.container) {
            (Some(containers), Some(name)) => {
                containers.run(&["kill", "--signal", signal, name]);
            }
            _ => {
                if let Some(process) = &worker.process {
                    process.signal_program(signal);
                }
            }
        }
    }

    /// Starts worker `i` again (after a kill, or an exit).
    fn respawn(&mut self, i: usize) -> anyhow::Result<()> {
        let mut worker = std::mem::replace(&mut self.workers[i], placeholder());
        if let (Some(containers), Some(name)) = (&self.containers, &worker.container) {
            containers.run(&["rm", "-f", name]);
        }
        drop(worker.process.take());
        self.spawn(&mut worker)?;
        self.workers[i] = worker;
        Ok(())
    }
}

impl Drop for Fleet {
    /// Stops the saga's processes first and all at once (one by one, each
    /// drain would be waited for in turn), then Lambda, then the servers, so
    /// nothing outlives what it talks to.
    fn drop(&mut self) {
        for i in 0..self.workers.len() {
            self.signal(i, "CONT");
            self.signal(i, "TERM");
        }
        if let Some(containers) = &self.containers {
            let names: Vec<&str> = self.workers.iter().filter_map(|w| w.container.as_deref()).collect();
            if !names.is_empty() {
                let mut args = vec!["rm", "-f", "-t", "10"];
                args.extend(names);
                containers.run(&args);
            }
        }
        for worker in &mut self.workers {
            drop(worker.process.take());
        }
        drop(self.lambda.take());
        for node in &mut self.nodes {
            drop(node.process.take());
        }
    }
}

/// Runs the suite.
pub async fn run(args: ChaosArgs) -> anyhow::Result<Report> {
    if args.orders == 0 || args.rate == 0 || args.copies == 0 {
        anyhow::bail!("--orders, --rate and --copies must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.cancel_share) {
        anyhow::bail!("--cancel-share must be between 0.0 and 1.0, got {}", args.cancel_share);
    }
    if args.lambda && args.faults.contains(&Fault::Hang) {
        anyhow::bail!(
            "the hang fault stops every copy of a step's function process; on the Lambda path (--lambda) use kill and pause"
        );
    }
    if args.lambda && args.store != StoreKind::Sqlite {
        anyhow::bail!("--store does not apply with --lambda: the Lambda path stores in DynamoDB");
    }
    if args.store == StoreKind::Postgres && args.database_url.is_none() {
        anyhow::bail!(
            "--store postgres needs --database-url or DATABASE_URL (for example postgres://postgres@127.0.0.1:5432/jetsaga)"
        );
    }
    if !(0.0..=1.0).contains(&args.publish_share) {
        anyhow::bail!("--publish-share must be between 0.0 and 1.0, got {}", args.publish_share);
    }
    if args.fault_every <= 0.05 {
        anyhow::bail!("--fault-every must be more than 0.05 seconds, got {}", args.fault_every);
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 % 1_000_000)
    });
    let dir = std::env::temp_dir().join(format!("jetsaga-chaos-{}-{seed}", std::process::id()));
    std::fs::create_dir_all(dir.join("logs"))?;
    let result = run_in(&args, seed, &dir).await;
    if args.keep || result.as_ref().map_or(true, |r| !r.tally.findings.is_empty()) {
        eprintln!("  run directory kept: {}", dir.display());
        if args.store == StoreKind::Postgres {
            eprintln!("  PostgreSQL schemas kept: {}<function>", schema_prefix(seed));
        }
    } else {
        let _ = std::fs::remove_dir_all(&dir);
        if let (StoreKind::Postgres, Some(url)) = (args.store, &args.database_url) {
            drop_schemas(url, &schema_prefix(seed)).await;
        }
    }
    result
}

async fn run_in(args: &ChaosArgs, seed: u64, dir: &Path) -> anyhow::Result<Report> {
    let nats_binary = server::find_binary().map_err(anyhow::Error::msg)?;
    let exe = match &args.runner {
        Some(runner) => runner.clone(),
        None => std::env::current_exe()?,
    };
    let nodes = start_servers(&nats_binary, args.cluster, dir)?;
    let url = nodes.iter().map(|node| format!("nats://127.0.0.1:{}", node.port)).collect::<Vec<_>>().join(",");
    let run = RunShape::of(args);
    let (processes, lambda) = processes(args, &run, nodes.len(), &exe, seed, dir)?;
    let containers = args
        .containers
        .as_ref()
        .map(|image| Containers::prepare(image, &args.container_runtime, &dir.join("functions")))
        .transpose()?;
    let mut fleet = Fleet { exe, nats_binary, url: url.clone(), nodes, workers: Vec::new(), lambda, containers };
    for Launch { label, role, args } in processes {
        let log = dir.join("logs").join(format!("{label}.log"));
        let container = fleet.containers.as_ref().map(|_| format!("jetsaga-chaos-{seed}-{label}"));
        let mut worker = Worker { role, args, log, process: None, paused: false, container };
        fleet.spawn(&mut worker)?;
        fleet.workers.push(worker);
    }
    let nats =
        async_nats::ConnectOptions::new().retry_on_initial_connect().connect(crate::client::servers(&url)).await?;
    let client = Client::new(nats.clone(), url.clone());
    client.wait_for_services(&run.names, Duration::from_secs(90)).await?;
    let (initial_stock, initial_credit) = seed_shop(&client, args.orders).await?;

    println!(
        "jetsaga chaos: seed {seed}, {} orders at {}/s, {}, {}, {}, {} copies of each function, faults: {}",
        args.orders,
        args.rate,
        run.saga,
        run.store,
        if args.cluster { "3-node cluster (R3)" } else { "single node" },
        args.copies,
        args.faults.iter().map(|f| format!("{f:?}").to_lowercase()).collect::<Vec<_>>().join(",")
    );

    let planned = plan(seed, args.orders, args.cancel_share, args.publish_share);
    let published: BTreeSet<String> = planned.iter().filter(|o| o.publish).map(|o| o.order_id.clone()).collect();
    let started = Instant::now();
    let load = Load::start(nats.clone(), planned, args.rate, if args.lambda { LAMBDA_PATIENCE } else { PATIENCE });
    let mut faults = Faults::new(args, seed, run.ack_wait);
    let mut last_progress = Instant::now();
    while !load.task.is_finished() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = Instant::now();
        faults.tend(&mut fleet, now)?;
        if last_progress.elapsed() > Duration::from_secs(1) {
            eprint!("\r  {} accepted, {} faults so far ", load.accepted.lock().await.len(), faults.injected());
            last_progress = Instant::now();
        }
        faults.inject_when_due(&mut fleet, now);
    }
    let Load { task, accepted, unanswered, cancels } = load;
    task.await?;
    faults.heal(&mut fleet).await?;
    let mut accepted = accepted.lock().await.clone();
    let kept = kept_plain_publishes(&nats, &published).await?;
    accepted.extend(kept.iter().cloned());
    eprintln!("\r  {} accepted, {} faults; settling…          ", accepted.len(), faults.injected());

    // Settle: every accepted order ends, consumers drain, outboxes empty, nothing held.
    let observed = settle(&client, &nats, &run.names, &accepted).await?;
    let seconds = started.elapsed().as_secs_f64();
    let expected = Expected { accepted, initial_stock, initial_credit };
    let mut tally = invariants::check(&expected, &observed);
    tally.findings.extend(faults.exited.into_iter().map(|what| invariants::Finding { order_id: None, what }));
    fleet.stop();
    Ok(Report {
        seed,
        orders: args.orders,
        store: run.store.into(),
        saga: run.saga.into(),
        topology: if args.cluster { "3-node cluster, R3".into() } else { "single node".into() },
        faults: faults.counts,
        unanswered: unanswered.load(Ordering::Relaxed),
        published: published.len(),
        published_kept: kept.len(),
        cancels: cancels.load(Ordering::Relaxed),
        seconds,
        tally,
        reproduce: reproduce(args, seed, &run),
    })
}

/// Starts the servers: one node, or three routed into a cluster.
fn start_servers(nats_binary: &Path, cluster: bool, dir: &Path) -> anyhow::Result<Vec<Node>> {
    let size = if cluster { 3 } else { 1 };
    let ports: Vec<u16> = (0..size).map(|_| tools::free_port()).collect::<Result<_, _>>()?;
    let cluster_ports: Vec<u16> = (0..size).map(|_| tools::free_port()).collect::<Result<_, _>>()?;
    let mut nodes = Vec::new();
    for i in 0..size {
        let node_dir = dir.join(format!("nats-{i}"));
        std::fs::create_dir_all(&node_dir)?;
        let config = if cluster {
            let routes: Vec<String> = cluster_ports.iter().map(|p| format!("\"nats-route://127.0.0.1:{p}\"")).collect();
            let path = node_dir.join("node.conf");
            std::fs::write(
                &path,
                format!(
                    "server_name: n{i}\ncluster {{\n  name: chaos\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n",
                    cluster_ports[i],
                    routes.join(", ")
                ),
            )?;
            Some(path)
        } else {
            None
        };
        nodes.push(Node { port: ports[i], dir: node_dir, config, process: None });
    }
    // Cluster nodes wait for each other: start them together.
    let started: Vec<anyhow::Result<Node>> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            nodes.into_iter().map(|mut node| scope.spawn(move || node.start(nats_binary).map(|()| node))).collect();
        handles.into_iter().map(|h| h.join().expect("a node start does not panic")).collect()
    });
    started.into_iter().collect()
}

/// What a run's options make of it: names for the report, the functions, the ack wait.
struct RunShape {
    saga: &'static str,
    store: &'static str,
    names: Vec<String>,
    ack_wait: Duration,
}

impl RunShape {
    fn of(args: &ChaosArgs) -> Self {
        let saga = match args.saga {
            SagaKind::Choreographed => "choreographed",
            SagaKind::Orchestrated => "orchestrated",
        };
        let store = match (args.lambda, args.store) {
            (true, _) => "dynamodb",
            (false, StoreKind::Sqlite) => "sqlite",
            (false, StoreKind::Postgres) => "postgres",
        };
        let names = crate::saga::names(args.saga.into()).iter().map(|s| s.to_string()).collect();
        Self { saga, store, names, ack_wait: if args.lambda { LAMBDA_ACK_WAIT } else { ACK_WAIT } }
    }
}

/// A process of the saga to start: its label (its log's name), its role, its arguments.
struct Launch {
    label: String,
    role: Role,
    args: Vec<String>,
}

/// The saga's processes: every function
/// as its own process, `copies` times; on the Lambda path every bootstrap
/// `copies` times and `copies` bridges, with the emulator they run under.
fn processes(
    args: &ChaosArgs,
    run: &RunShape,
    replicas: usize,
    exe: &Path,
    seed: u64,
    dir: &Path,
) -> anyhow::Result<(Vec<Launch>, Option<LambdaLocal>)> {
    let common_args: Vec<String> = vec![
        "--saga".into(),
        run.saga.into(),
        "--replicas".into(),
        replicas.to_string(),
        "--ack-wait".into(),
        run.ack_wait.as_secs_f64().to_string(),
    ];
    let mut processes = Vec::new();
    if args.lambda {
        let options = SagaOptions {
            mode: args.saga.into(),
            order_limits: crate::saga::OrderLimits::UNLIMITED,
            ..SagaOptions::default()
        };
        let beside = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        let bootstrap = beside.join(crate::lambda_local::BOOTSTRAP_BINARY);
        let local = crate::lambda_local::start(bootstrap, &options, None, &format!("chaos-{seed}-"))
            .map_err(anyhow::Error::msg)?;
        for copy in 0..args.copies {
            for name in &run.names {
                processes.push(Launch {
                    label: format!("bootstrap-{name}-{copy}"),
                    role: Role::Bootstrap,
                    args: vec![name.clone()],
                });
            }
            let mut bridge: Vec<String> = vec!["bridge".into(), "--lambda-endpoint".into(), local.invoke_url.clone()];
            bridge.extend(common_args.iter().cloned());
            bridge.extend([
                "--invoke-timeout".into(),
                LAMBDA_INVOKE_TIMEOUT.as_secs_f64().to_string(),
                "--batch-size".into(),
                LAMBDA_BATCH.to_string(),
            ]);
            processes.push(Launch { label: format!("bridge-{copy}"), role: Role::Bridge, args: bridge });
        }
        return Ok((processes, Some(local)));
    }
    let mut function_args = common_args;
    function_args.extend([
        "--store".into(),
        run.store.into(),
        "--data-dir".into(),
        dir.join("functions").display().to_string(),
        "--schema-prefix".into(),
        schema_prefix(seed),
        // The load is a few customers at hundreds of orders a second, by design.
        "--max-orders-in-flight".into(),
        "0".into(),
        "--max-orders-per-minute".into(),
        "0".into(),
    ]);
    if let Some(db) = &args.database_url {
        function_args.extend(["--database-url".into(), db.clone()]);
    }
    if args.faults.contains(&Fault::Hang) {
        function_args.extend(["--step-timeout".into(), format!("{}s", HANG_STEP_TIMEOUT.as_secs())]);
    }
    for copy in 0..args.copies {
        for name in &run.names {
            let mut up: Vec<String> =
                vec!["up".into(), "--no-seed".into(), "--no-http".into(), "--function".into(), name.clone()];
            up.extend(function_args.iter().cloned());
            processes.push(Launch { label: format!("{name}-{copy}"), role: Role::Function, args: up });
        }
    }
    Ok((processes, None))
}

/// Creates the catalog and the customers; returns the stock and credit
/// every product and customer starts with, which the checker expects back.
async fn seed_shop(client: &Client, orders: usize) -> anyhow::Result<(BTreeMap<String, u32>, BTreeMap<String, u64>)> {
    let catalog = catalog(orders);
    for (id, price, stock) in &catalog {
        let upsert = UpsertProduct { product_id: id.clone(), name: id.clone(), price_cents: *price, stock: *stock };
        client.command(INVENTORY_CMD_UPSERT_PRODUCT, &upsert).await?;
    }
    for (id, limit) in customers(orders) {
        client
            .command(
                CUSTOMERS_CMD_CREATE,
                &CreateCustomer { customer_id: id.clone(), name: id, credit_limit_cents: limit },
            )
            .await?;
    }
    let stock = catalog.into_iter().map(|(id, _, stock)| (id, stock)).collect();
    let credit = customers(orders).into_iter().map(|(id, _)| (id, 0)).collect();
    Ok((stock, credit))
}

/// The load: each create on its own task, paced; a share canceled right after.
struct Load {
    task: tokio::task::JoinHandle<()>,
    accepted: Arc<Mutex<BTreeSet<String>>>,
    unanswered: Arc<AtomicUsize>,
    cancels: Arc<AtomicUsize>,
}

impl Load {
    fn start(nats: async_nats::Client, planned: Vec<Planned>, rate: u32, patience: Duration) -> Self {
        let accepted: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let unanswered = Arc::new(AtomicUsize::new(0));
        let cancels = Arc::new(AtomicUsize::new(0));
        let (shared_accepted, shared_unanswered, shared_cancels) =
            (accepted.clone(), unanswered.clone(), cancels.clone());
        let task = tokio::spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
            let mut tasks = tokio::task::JoinSet::new();
            for order in planned {
                pace.tick().await;
                let (nats, accepted, unanswered, cancels) =
                    (nats.clone(), shared_accepted.clone(), shared_unanswered.clone(), shared_cancels.clone());
                tasks.spawn(async move { drive(&nats, order, patience, &accepted, &unanswered, &cancels).await });
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        });
        Self { task, accepted, unanswered, cancels }
    }
}

/// Sends one planned order: a plain publish, or a create answered (then
/// perhaps canceled), counting what happened.
async fn drive(
    nats: &async_nats::Client,
    order: Planned,
    patience: Duration,
    accepted: &Mutex<BTreeSet<String>>,
    unanswered: &AtomicUsize,
    cancels: &AtomicUsize,
) {
    if order.publish {
        // As a developer would: `nats pub orders.cmd.create '{...}'`, once.
        if let Err(e) = nats.publish(ORDERS_CMD_CREATE, order.body.to_string().into()).await {
            eprintln!("\n  publish of {} failed: {e}", order.order_id);
        }
        return;
    }
    match send(nats, ORDERS_CMD_CREATE, &order.body, &format!("create-{}", order.order_id), patience).await {
        Answer::Ok => {
            accepted.lock().await.insert(order.order_id.clone());
        }
        Answer::Refused(code, error) => {
            eprintln!("\n  create {} refused ({code}): {error}", order.order_id);
            return;
        }
        Answer::GaveUp(why) => {
            unanswered.fetch_add(1, Ordering::Relaxed);
            eprintln!("\n  create {} unanswered after {GIVE_UP_AFTER:?}: {why}", order.order_id);
            return;
        }
    }
    if order.cancel {
        cancels.fetch_add(1, Ordering::Relaxed);
        let body = json!({"order_id": order.order_id, "reason": "chaos"});
        // Refused (already shipped) is a fine answer too.
        let _ = send(nats, ORDERS_CMD_CANCEL, &body, &format!("cancel-{}", order.order_id), patience).await;
    }
}

/// The fault schedule, drawn from the seed, and what is still to be undone.
struct Faults {
    faults: Vec<Fault>,
    every: f64,
    cluster: bool,
    ack_wait: Duration,
    rng: Rng,
    /// Faults injected, by kind.
    counts: BTreeMap<String, usize>,
    /// Workers to start again, and when.
    restarts: Vec<(Instant, usize)>,
    /// Workers to resume, and when.
    resumes: Vec<(Instant, usize)>,
    /// The node that is down, and when it starts again.
    node_down: Option<(Instant, usize)>,
    /// Processes that exited by themselves: findings.
    exited: Vec<String>,
    next_fault: Instant,
}

impl Faults {
    fn new(args: &ChaosArgs, seed: u64, ack_wait: Duration) -> Self {
        let mut rng = Rng(seed ^ 0x00c0_ffee);
        let next_fault = Instant::now() + rng.between(0.5 * args.fault_every, 1.5 * args.fault_every);
        Self {
            faults: args.faults.clone(),
            every: args.fault_every,
            cluster: args.cluster,
            ack_wait,
            rng,
            counts: BTreeMap::new(),
            restarts: Vec::new(),
            resumes: Vec::new(),
            node_down: None,
            exited: Vec::new(),
            next_fault,
        }
    }

    fn injected(&self) -> usize {
        self.counts.values().sum()
    }

    /// Undoes what is due: restarts, resumes, a node's restart. A process
    /// that exits by itself gave up on something it should have waited
    /// out: a finding, and it is started again.
    fn tend(&mut self, fleet: &mut Fleet, now: Instant) -> anyhow::Result<()> {
        for (_, i) in self.restarts.extract_if(.., |(at, _)| *at <= now) {
            fleet.respawn(i)?;
        }
        for (_, i) in self.resumes.extract_if(.., |(at, _)| *at <= now) {
            fleet.signal(i, "CONT");
            fleet.workers[i].paused = false;
        }
        for (i, worker) in fleet.workers.iter_mut().enumerate() {
            if self.restarts.iter().any(|(_, r)| *r == i) {
                continue;
            }
            if let Some(status) = worker.process.as_mut().and_then(Process::exited) {
                let last = std::fs::read_to_string(&worker.log).unwrap_or_default();
                let last = last.lines().last().unwrap_or("").to_string();
                self.exited.push(format!("{} exited by itself ({status}): {last}", worker.log.display()));
                self.restarts.push((now, i));
            }
        }
        if let Some((at, i)) = self.node_down
            && at <= now
        {
            fleet.nodes[i].start(&fleet.nats_binary)?;
            self.node_down = None;
        }
        Ok(())
    }

    /// The next fault on the schedule, once it is due.
    fn inject_when_due(&mut self, fleet: &mut Fleet, now: Instant) {
        if now < self.next_fault || self.faults.is_empty() {
            return;
        }
        self.next_fault = now + self.rng.between(0.5 * self.every, 1.5 * self.every);
        let fault = self.pick();
        let busy: BTreeSet<usize> = self.restarts.iter().chain(&self.resumes).map(|(_, i)| *i).collect();
        let idle: Vec<usize> = (0..fleet.workers.len()).filter(|i| !busy.contains(i)).collect();
        let key = match fault {
            Fault::Kill if !idle.is_empty() => {
                let i = idle[self.rng.below(idle.len())];
                fleet.signal(i, "KILL");
                self.restarts.push((now + self.rng.between(0.2, 1.5), i));
                fault_key(fault, fleet.workers[i].role)
            }
            Fault::Pause if !idle.is_empty() => {
                let i = idle[self.rng.below(idle.len())];
                fleet.signal(i, "STOP");
                fleet.workers[i].paused = true;
                self.resumes.push((now + self.ack_wait + self.rng.between(0.5, 2.0), i));
                fault_key(fault, fleet.workers[i].role)
            }
            Fault::Hang => {
                // Every copy of one step, so no other copy takes its messages over.
                let step = HANGING_STEPS[self.rng.below(HANGING_STEPS.len())];
                let copies: Vec<usize> = idle
                    .iter()
                    .copied()
                    .filter(|i| fleet.workers[*i].args.windows(2).any(|w| w[0] == "--function" && w[1] == step))
                    .collect();
                if copies.is_empty() {
                    return;
                }
                let until = now + HANG_STEP_TIMEOUT + self.rng.between(1.0, 3.0);
                for i in copies {
                    fleet.signal(i, "STOP");
                    fleet.workers[i].paused = true;
                    self.resumes.push((until, i));
                }
                format!("hang {step}")
            }
            Fault::Server if self.node_down.is_none() => {
                let i = self.rng.below(fleet.nodes.len());
                if let Some(process) = &fleet.nodes[i].process {
                    process.signal_program("KILL");
                }
                drop(fleet.nodes[i].process.take());
                // A cluster keeps a quorum meanwhile; a single node is simply away.
                let away = if self.cluster { self.rng.between(2.0, 5.0) } else { self.rng.between(0.5, 2.0) };
                self.node_down = Some((now + away, i));
                "server".into()
            }
            _ => return,
        };
        *self.counts.entry(key).or_default() += 1;
    }

    /// Draws the next fault. Kills are what a deploy or a crash does most:
    /// they get three times the weight. A run with `hang` hangs a step
    /// early (its second fault), so that even a short run has orders
    /// outlive their deadline.
    fn pick(&mut self) -> Fault {
        let weighted: Vec<Fault> =
            self.faults.iter().flat_map(|f| std::iter::repeat_n(*f, if *f == Fault::Kill { 3 } else { 1 })).collect();
        let fault = weighted[self.rng.below(weighted.len())];
        let hung = self.counts.keys().any(|k| k.starts_with("hang"));
        if self.faults.contains(&Fault::Hang) && self.injected() == 1 && !hung { Fault::Hang } else { fault }
    }

    /// Heals everything before settling. Pauses and hangs last as long as
    /// they were meant to (a hang past the step's deadline is the point),
    /// then resume.
    async fn heal(&mut self, fleet: &mut Fleet) -> anyhow::Result<()> {
        for (_, i) in self.restarts.drain(..) {
            fleet.respawn(i)?;
        }
        self.resumes.sort_by_key(|(at, _)| *at);
        for (at, i) in self.resumes.drain(..) {
            tokio::time::sleep_until(at.into()).await;
            fleet.signal(i, "CONT");
        }
        if let Some((_, i)) = self.node_down.take() {
            fleet.nodes[i].start(&fleet.nats_binary)?;
        }
        Ok(())
    }
}

/// Of the creates sent as plain publishes, those the command stream kept:
/// they must end like the answered ones.
async fn kept_plain_publishes(
    nats: &async_nats::Client,
    published: &BTreeSet<String>,
) -> anyhow::Result<BTreeSet<String>> {
    nats.flush().await?;
    let js = jetstream::new(nats.clone());
    // Right after a node restart the cluster may still be electing leaders.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match kept_creates(&js).await {
            Ok(kept) => return Ok(kept.into_iter().filter(|id| published.contains(id)).collect()),
            Err(e) if Instant::now() < deadline => {
                eprintln!("\n  reading the command stream: {e}; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The command that runs the same orders and fault schedule again.
fn reproduce(args: &ChaosArgs, seed: u64, run: &RunShape) -> String {
    let mut reproduce = format!(
        "jetsaga chaos --seed {seed} --orders {} --rate {} --faults {} --fault-every {} --saga {} --copies {} \
         --cancel-share {} --publish-share {}",
        args.orders,
        args.rate,
        args.faults.iter().map(|f| format!("{f:?}").to_lowercase()).collect::<Vec<_>>().join(","),
        args.fault_every,
        run.saga,
        args.copies,
        args.cancel_share,
        args.publish_share
    );
    if args.cluster {
        reproduce.push_str(" --cluster");
    }
    if let Some(image) = &args.containers {
        reproduce.push_str(&format!(" --containers {image}"));
    }
    if args.lambda {
        reproduce.push_str(" --lambda");
    } else {
        reproduce.push_str(&format!(" --store {}", run.store));
    }
    reproduce
}

/// The PostgreSQL schemas of one run: `<prefix><function>`.
fn schema_prefix(seed: u64) -> String {
    format!("chaos_{}_{seed}_", std::process::id())
}

async fn drop_schemas(url: &str, prefix: &str) {
    let Ok(pool) = jetsaga_sql::connect_postgres(url, 1).await else { return };
    for name in crate::saga::all_names() {
        if let Ok(store) = jetsaga_sql::PostgresStore::open(pool.clone(), &format!("{prefix}{name}")).await {
            let _ = store.drop_schema().await;
        }
    }
}

/// How a fault is counted: `kill`, `pause`, `server`; on the Lambda path
/// kills and pauses by what they hit (`kill bootstrap`, `pause bridge`).
fn fault_key(fault: Fault, role: Role) -> String {
    let fault = format!("{fault:?}").to_lowercase();
    match role {
        Role::Function => fault,
        Role::Bootstrap | Role::Bridge => format!("{fault} {}", role.name()),
    }
}

fn placeholder() -> Worker {
    Worker {
        role: Role::Function,
        args: Vec::new(),
        log: PathBuf::new(),
        process: None,
        paused: false,
        container: None,
    }
}

/// Waits until the run has settled, then reads back everything the checker needs.
async fn settle(
    client: &Client,
    nats: &async_nats::Client,
    names: &[String],
    accepted: &BTreeSet<String>,
) -> anyhow::Result<Observed> {
    client.wait_for_services(names, Duration::from_secs(90)).await?;
    let deadline = Instant::now() + SETTLE;
    let mut open: Vec<String> = accepted.iter().cloned().collect();
    while !open.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for chunk in open.chunks(64) {
            let states = futures::future::join_all(chunk.iter().map(|id| client.order(id))).await;
            for (id, state) in chunk.iter().zip(states) {
                if !state.is_ok_and(|o| o.status.is_terminal()) {
                    still.push(id.clone());
                }
            }
        }
        open = still;
        if !open.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // After the terminal events, compensations and consumption follow: wait
    // until every consumer has nothing left and every outbox is empty.
    let js = jetstream::new(nats.clone());
    let unpublished = loop {
        let mut busy = false;
        let stream = js.get_stream(jetsaga_jetstream::streams::SAGA).await?;
        // (A function that subscribes to nothing, only takes commands, has no consumer here.)
        for name in names.iter().filter(|n| crate::saga::subscribes(n)) {
            let mut consumer =
                stream.get_consumer::<consumer::pull::Config>(name).await.map_err(|e| anyhow::anyhow!(e))?;
            let info = consumer.info().await?;
            busy |= info.num_pending > 0 || info.num_ack_pending > 0;
        }
        let backlog = jetsaga_runner::connect::outbox_backlog(nats, names).await?;
        busy |= backlog.values().any(|n| *n > 0);
        if !busy || Instant::now() > deadline {
            break backlog;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let products = client.products().await?.products;
    let customers = client.customers().await?.customers;
    let dead_letters = match js.get_stream(jetsaga_jetstream::streams::DLQ).await {
        Ok(mut dlq) => dlq.info().await?.state.messages,
        Err(_) => 0,
    };
    Ok(Observed {
        events: jetsaga_runner::history::read_events(&js, jetsaga_jetstream::streams::SAGA).await?,
        products,
        customers,
        dead_letters,
        unpublished,
    })
}

/// The order ids of the creates the command stream holds.
async fn kept_creates(js: &jetstream::Context) -> anyhow::Result<BTreeSet<String>> {
    let commands = jetsaga_runner::history::read_all(js, &jetsaga_jetstream::Config::default().command_stream).await?;
    Ok(commands
        .iter()
        .filter(|message| message.subject.as_str() == ORDERS_CMD_CREATE)
        .filter_map(|message| serde_json::from_slice::<Value>(&message.payload).ok())
        .filter_map(|body| body["order_id"].as_str().map(str::to_string))
        .collect())
}

/// Prints a report.
pub fn print(report: &Report) {
    let t = &report.tally;
    let outcomes: Vec<String> = t.outcomes.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let faults: Vec<String> = report.faults.iter().map(|(k, v)| format!("{v} × {k}")).collect();
    println!(
        "\n  orders:    {} driven, {} accepted ({}), {} cancels sent, {} unanswered",
        report.orders,
        t.accepted,
        outcomes.join(", "),
        report.cancels,
        report.unanswered
    );
    println!(
        "  published: {} sent by plain publish, {} kept by the command stream (each checked like an accepted order)",
        report.published, report.published_kept
    );
    println!("  faults:    {}", if faults.is_empty() { "none".into() } else { faults.join(", ") });
    let reasons: Vec<String> = t.failure_reasons.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!("  failed:    {}", if reasons.is_empty() { "none".into() } else { reasons.join(", ") });
    println!("  topology:  {}, {} store, {} saga, {:.0}s", report.topology, report.store, report.saga, report.seconds);
    println!(
        "  checks:    lost/stuck {}, doubled {}, dead letters {}, stock, credit and money {}",
        t.stuck,
        t.doubled,
        t.dead_letters,
        if t.findings
            .iter()
            .any(|f| f.what.contains("conserved") || f.what.contains("refund") || f.what.contains("charged"))
        {
            "NOT conserved"
        } else {
            "conserved"
        }
    );
    println!("  findings:  {}", t.findings.len());
    for finding in t.findings.iter().take(50) {
        println!("    - {finding}");
    }
    if t.findings.len() > 50 {
        println!("    … and {} more (see --json)", t.findings.len() - 50);
    }
    println!("  reproduce: {}", report.reproduce);
}
