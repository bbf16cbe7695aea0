//! `chaos`: fault injection over any saga. The runner starts a
//! nats-server and every function as `copies` processes of the saga's own
//! binary, drives the saga's [`Workload`], and meanwhile kills and pauses
//! function processes and kills the server. Then it waits for every saga to
//! end and checks what holds for any saga (each accepted saga ended exactly
//! once, no event twice, no dead letter, every outbox empty) and what the
//! saga's own [`Invariants`] say.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use jetsaga_envelope::Envelope;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::Saga;
use crate::server::NatsProcess;
use crate::tools::{self, Process};

/// A command to send: its subject and JSON body.
#[derive(Clone, Debug, Serialize)]
pub struct Command {
    /// Where it goes (`trips.cmd.book`).
    pub subject: String,
    /// Its body.
    pub body: Value,
}

/// The command that starts one saga.
#[derive(Clone, Debug, Serialize)]
pub struct Start {
    /// The saga's key (as its events carry it in `saga_key`).
    pub key: String,
    /// The command.
    pub command: Command,
}

/// The load a chaos run drives through a saga.
pub trait Workload: Send + Sync {
    /// Commands that prepare for `sagas` sagas (capacity, accounts), sent
    /// before the load, each until it is answered.
    fn setup(&self, sagas: usize) -> Vec<Command>;
    /// The command that starts saga number `i`; its choices drawn from `rng`
    /// (so a seed reproduces a run).
    fn start(&self, i: usize, rng: &mut Rng) -> Start;
    /// Whether `event` ends its saga.
    fn is_terminal(&self, event: &Envelope) -> bool;
}

/// What must hold once every saga has ended, in the saga's own terms
/// (nothing held for a failed trip, money balanced, …).
#[async_trait::async_trait]
pub trait Invariants: Send + Sync {
    /// What is wrong, given the run's `history`; `nats` reaches the
    /// functions, for their queries.
    async fn check(&self, history: &History, nats: &async_nats::Client) -> anyhow::Result<Vec<Finding>>;
}

/// What a run did and saw, for [`Invariants::check`].
#[derive(Debug)]
pub struct History {
    /// Every start the load sent, in order.
    pub started: Vec<Start>,
    /// The keys of the starts that were accepted.
    pub accepted: BTreeSet<String>,
    /// Every event in the saga stream, in order.
    pub events: Vec<Envelope>,
    /// How many sagas the workload was set up for.
    pub sagas: usize,
}

impl History {
    /// The events of the saga `key`, in order.
    pub fn of<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Envelope> + 'a {
        self.events.iter().filter(move |e| e.saga_key.as_deref() == Some(key))
    }

    /// The start of the saga `key`.
    pub fn start(&self, key: &str) -> Option<&Start> {
        self.started.iter().find(|s| s.key == key)
    }
}

/// One thing that is wrong.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// The saga it concerns, if one.
    pub saga: Option<String>,
    /// What is wrong, in words.
    pub what: String,
}

impl Finding {
    /// A finding about the saga `key`.
    pub fn saga(key: impl Into<String>, what: impl Into<String>) -> Self {
        Self { saga: Some(key.into()), what: what.into() }
    }

    /// A finding about the whole run.
    pub fn run(what: impl Into<String>) -> Self {
        Self { saga: None, what: what.into() }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.saga {
            Some(key) => write!(f, "{key}: {}", self.what),
            None => f.write_str(&self.what),
        }
    }
}

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// `kill -9` a function process, then start it again.
    Kill,
    /// `SIGSTOP` a function process for longer than the ack wait, then `SIGCONT`.
    Pause,
    /// `kill -9` nats-server, then start it again on the same store.
    Server,
}

/// Options of `chaos`.
#[derive(Clone, Debug, clap::Args)]
pub struct ChaosArgs {
    /// Sagas to drive.
    #[arg(long, default_value_t = 300)]
    pub sagas: usize,
    /// Starts sent per second.
    #[arg(long, default_value_t = 50)]
    pub rate: u32,
    /// Seed of the workload's choices and the fault schedule [default: from the clock, printed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Faults to inject (with `server`, the second fault is always a
    /// server restart, so a short run has one).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "kill,pause,server")]
    pub faults: Vec<Fault>,
    /// Mean time between two faults (`1s`, `500ms`).
    #[arg(long, default_value = "1s", value_parser = |s: &str| jetsaga_core::duration::parse_wait("--fault-every", s))]
    pub fault_every: Duration,
    /// Copies of each function process.
    #[arg(long, default_value_t = 2)]
    pub copies: usize,
    /// Where the functions keep their state (shared by a function's copies).
    #[arg(long, value_enum, default_value_t = crate::host::StoreKind::Sqlite)]
    pub store: crate::host::StoreKind,
    /// PostgreSQL URL, for `--store postgres` (the run's schemas are dropped after it).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Keep the run's directory (stores, logs) and say where it is.
    #[arg(long)]
    pub keep: bool,
}

/// A message's ack wait in a chaos run: short, so a killed or paused
/// process's messages go to another copy soon.
const ACK_WAIT: &str = "3s";
/// How long the sagas may take to end once the faults stop.
const SETTLE: Duration = Duration::from_secs(180);
/// How long a command is retried through restarts and outages.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// How long one attempt of a command waits for its answer.
const PATIENCE: Duration = Duration::from_secs(5);

/// The report of a run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The seed (a run with it repeats the choices and the fault schedule).
    pub seed: u64,
    /// Sagas started.
    pub sagas: usize,
    /// Starts accepted.
    pub accepted: usize,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, usize>,
    /// How the sagas ended: terminal event subject → count.
    pub outcomes: BTreeMap<String, usize>,
    /// Events in the saga stream.
    pub events: usize,
    /// What is wrong; empty when the run passed.
    pub findings: Vec<Finding>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// The command line that repeats this run.
    pub reproduce: String,
}

/// Findings were made: the run itself worked (exit code 1, where "could
/// not run" is 2).
#[derive(Debug, thiserror::Error)]
#[error("chaos found {0} problem(s)")]
pub struct Found(pub usize);

/// SplitMix64: a tiny seeded generator, so a seed reproduces a run on any machine.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// A duration between `low` and `high` seconds.
    pub fn between(&mut self, low: f64, high: f64) -> Duration {
        Duration::from_secs_f64(low + (high - low) * self.unit())
    }
}

/// A command's fate at the client.
#[derive(Debug)]
pub enum Answer {
    /// Done.
    Ok,
    /// Refused, with the service error code and message.
    Refused(u16, String),
    /// No answer within [`GIVE_UP_AFTER`]: the last reason.
    GaveUp(String),
}

/// Sends a command, retrying through restarts and outages with the same
/// `Nats-Msg-Id`, so a retry of something that went through is answered,
/// not done twice. Each attempt waits `patience` for its answer.
pub async fn send(nats: &async_nats::Client, subject: &str, body: &Value, msg_id: &str, patience: Duration) -> Answer {
    let deadline = Instant::now() + GIVE_UP_AFTER;
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id);
        let request = async_nats::client::Request::new()
            .headers(headers)
            .payload(body.to_string().into())
            .timeout(Some(patience));
        let request = nats.send_request(subject.to_string(), request);
        match tokio::time::timeout(patience + Duration::from_secs(1), request).await {
            Ok(Ok(reply)) => {
                let code = reply
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Service-Error-Code"))
                    .and_then(|v| v.as_str().parse::<u16>().ok());
                let value: Value = serde_json::from_slice(&reply.payload).unwrap_or(Value::Null);
                match code {
                    None => return Answer::Ok,
                    Some(503) => last = value["error"].as_str().unwrap_or("unavailable").to_string(),
                    Some(code) => return Answer::Refused(code, value["error"].as_str().unwrap_or("").to_string()),
                }
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("no answer within {patience:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Answer::GaveUp(last)
}

/// One function process: how it is started, where it logs, the process
/// while it lives.
#[derive(Debug)]
struct Worker {
    function: String,
    args: Vec<String>,
    log: PathBuf,
    process: Option<Process>,
}

impl Worker {
    fn spawn(&mut self, exe: &Path) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = tools::tied_command(exe)
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.process = Some(Process::new(child, format!("{} {}", exe.display(), self.args.join(" "))));
        Ok(())
    }

    fn signal(&self, signal: &str) {
        if let Some(process) = &self.process {
            process.signal_program(signal);
        }
    }
}

/// Sends the workload's setup commands for `sagas` sagas, each retried
/// (with the id `<id_prefix>-<subject>-<body>`) until it is answered.
pub(crate) async fn prepare(
    nats: &async_nats::Client,
    workload: &dyn Workload,
    sagas: usize,
    id_prefix: &str,
) -> anyhow::Result<()> {
    for command in workload.setup(sagas) {
        let id = format!("{id_prefix}-{}-{}", command.subject, command.body);
        match send(nats, &command.subject, &command.body, &id, PATIENCE).await {
            Answer::Ok => {}
            Answer::Refused(code, error) => {
                anyhow::bail!("the setup command {} was refused ({code}): {error}", command.subject)
            }
            Answer::GaveUp(why) => anyhow::bail!("the setup command {} was not answered: {why}", command.subject),
        }
    }
    Ok(())
}

/// Runs the suite over `saga`: the functions run as `exe <forward> run
/// --function <name>` processes (`forward`: the saga binary's own options).
pub async fn run(
    saga: &Arc<dyn Saga>,
    workload: &dyn Workload,
    invariants: &dyn Invariants,
    exe: &Path,
    forward: &[String],
    args: &ChaosArgs,
) -> anyhow::Result<Report> {
    if args.sagas == 0 || args.rate == 0 || args.copies == 0 {
        anyhow::bail!("--sagas, --rate and --copies must be at least 1");
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let dir = tempfile::Builder::new().prefix(&format!("{}-chaos-", saga.name())).tempdir()?;
    let result = run_in(saga, workload, invariants, exe, forward, args, seed, dir.path()).await;
    if args.keep {
        let kept = dir.keep();
        eprintln!("kept the run's stores and logs in {}", kept.display());
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_in(
    saga: &Arc<dyn Saga>,
    workload: &dyn Workload,
    invariants: &dyn Invariants,
    exe: &Path,
    forward: &[String],
    args: &ChaosArgs,
    seed: u64,
    dir: &Path,
) -> anyhow::Result<Report> {
    let started_at = Instant::now();
    let config = saga.runtime_config();
    let functions: Vec<&'static jetsaga_core::FunctionSpec> = crate::specs(saga.as_ref());
    let names: Vec<String> = functions.iter().map(|f| f.name.to_string()).collect();
    let nats_binary = crate::server::find_binary().map_err(anyhow::Error::msg)?;
    let port = tools::free_port()?;
    let nats_dir = dir.join("nats");
    let mut server = Some(NatsProcess::start(nats_binary.clone(), port, &nats_dir).map_err(anyhow::Error::msg)?);
    let url = format!("nats://127.0.0.1:{port}");
    std::fs::create_dir_all(dir.join("logs"))?;

    let postgres = match args.store {
        crate::host::StoreKind::Sqlite => None,
        crate::host::StoreKind::Postgres => Some(
            args.database_url
                .clone()
                .ok_or_else(|| anyhow::anyhow!("--store postgres needs --database-url (or DATABASE_URL)"))?,
        ),
    };
    // The run's own schemas, dropped when it ends.
    let schema_prefix = format!("{}_chaos_{}_{seed}_", saga.name(), std::process::id());
    let mut workers = Vec::new();
    for copy in 0..args.copies {
        for name in &names {
            let mut worker_args: Vec<String> = vec![
                "--nats-url".into(),
                url.clone(),
                "--data-dir".into(),
                dir.join("functions").display().to_string(),
            ];
            worker_args.extend(forward.iter().cloned());
            worker_args.extend(["run", "--function", name, "--ack-wait", ACK_WAIT, "--quiet"].map(String::from));
            if let Some(url) = &postgres {
                worker_args.extend(
                    ["--store", "postgres", "--database-url", url, "--schema-prefix", &schema_prefix].map(String::from),
                );
            }
            let mut worker = Worker {
                function: name.clone(),
                args: worker_args,
                log: dir.join("logs").join(format!("{name}-{copy}.log")),
                process: None,
            };
            worker.spawn(exe)?;
            workers.push(worker);
        }
    }
    let nats = async_nats::ConnectOptions::new().retry_on_initial_connect().connect(url.as_str()).await?;
    crate::connect::wait_for_functions(&nats, &names, Duration::from_secs(90)).await?;
    prepare(&nats, workload, args.sagas, &format!("setup-{seed}")).await?;
    let faults = args.faults.iter().map(|f| format!("{f:?}").to_lowercase()).collect::<Vec<_>>().join(",");
    println!(
        "{} chaos: seed {seed}, {} sagas at {}/s, {} copies of each of {}, {} stores, faults: {faults}",
        saga.name(),
        args.sagas,
        args.rate,
        args.copies,
        names.join(", "),
        if postgres.is_some() { "PostgreSQL" } else { "SQLite" }
    );

    // The load: each start on its own task, paced.
    let mut choices = Rng(seed);
    let starts: Vec<Start> = (0..args.sagas).map(|i| workload.start(i, &mut choices)).collect();
    let accepted: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let problems: Arc<Mutex<Vec<Finding>>> = Arc::default();
    let load = {
        let (nats, accepted, problems, starts) = (nats.clone(), accepted.clone(), problems.clone(), starts.clone());
        let rate = args.rate;
        tokio::spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
            let mut tasks = tokio::task::JoinSet::new();
            for start in starts {
                pace.tick().await;
                let (nats, accepted, problems) = (nats.clone(), accepted.clone(), problems.clone());
                tasks.spawn(async move {
                    let id = format!("start-{}", start.key);
                    match send(&nats, &start.command.subject, &start.command.body, &id, PATIENCE).await {
                        Answer::Ok => {
                            accepted.lock().await.insert(start.key);
                        }
                        Answer::Refused(code, error) => {
                            problems
                                .lock()
                                .await
                                .push(Finding::saga(start.key, format!("start refused ({code}): {error}")));
                        }
                        Answer::GaveUp(why) => {
                            let what = format!("start unanswered after {GIVE_UP_AFTER:?}: {why}");
                            problems.lock().await.push(Finding::saga(start.key, what));
                        }
                    }
                });
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        })
    };

    // The faults, on a schedule drawn from the seed, until the load is sent.
    let mut rng = Rng(seed ^ 0x00c0_ffee);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut restarts: Vec<(Instant, usize)> = Vec::new();
    let mut resumes: Vec<(Instant, usize)> = Vec::new();
    let mut server_back: Option<Instant> = None;
    let every = args.fault_every.as_secs_f64();
    let ack_wait = jetsaga_core::duration::parse_wait("ack wait", ACK_WAIT).map_err(anyhow::Error::msg)?;
    let mut next_fault = Instant::now() + rng.between(0.5 * every, 1.5 * every);
    let mut last_progress = Instant::now();
    while !load.is_finished() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = Instant::now();
        for (_, i) in restarts.extract_if(.., |(at, _)| *at <= now) {
            workers[i].spawn(exe)?;
        }
        for (_, i) in resumes.extract_if(.., |(at, _)| *at <= now) {
            workers[i].signal("CONT");
        }
        // A process that exits by itself gave up on something it should have waited out.
        for (i, worker) in workers.iter_mut().enumerate() {
            if restarts.iter().any(|(_, r)| *r == i) {
                continue;
            }
            if let Some(status) = worker.process.as_mut().and_then(Process::exited) {
                let log = std::fs::read_to_string(&worker.log).unwrap_or_default();
                let last = log.lines().last().unwrap_or("").to_string();
                problems
                    .lock()
                    .await
                    .push(Finding::run(format!("{} exited by itself ({status}): {last}", worker.function)));
                restarts.push((now, i));
            }
        }
        if server_back.is_some_and(|at| at <= now) {
            server = Some(NatsProcess::start(nats_binary.clone(), port, &nats_dir).map_err(anyhow::Error::msg)?);
            server_back = None;
        }
        if last_progress.elapsed() > Duration::from_secs(1) {
            eprint!("\r  {} accepted, {} faults so far ", accepted.lock().await.len(), counts.values().sum::<usize>());
            last_progress = Instant::now();
        }
        if now < next_fault || args.faults.is_empty() {
            continue;
        }
        next_fault = now + rng.between(0.5 * every, 1.5 * every);
        // Kills are what a deploy or a crash does most: they get three times the weight.
        let weighted: Vec<Fault> =
            args.faults.iter().flat_map(|f| std::iter::repeat_n(*f, if *f == Fault::Kill { 3 } else { 1 })).collect();
        let mut fault = weighted[rng.below(weighted.len())];
        // A run with `server` restarts the server early (its second fault),
        // so that even a short run has one.
        if args.faults.contains(&Fault::Server) && counts.values().sum::<usize>() == 1 && !counts.contains_key("server")
        {
            fault = Fault::Server;
        }
        let busy: BTreeSet<usize> = restarts.iter().chain(&resumes).map(|(_, i)| *i).collect();
        let idle: Vec<usize> = (0..workers.len()).filter(|i| !busy.contains(i)).collect();
        match fault {
            Fault::Kill if !idle.is_empty() => {
                let i = idle[rng.below(idle.len())];
                workers[i].signal("KILL");
                drop(workers[i].process.take());
                restarts.push((now + rng.between(0.2, 1.5), i));
            }
            Fault::Pause if !idle.is_empty() => {
                let i = idle[rng.below(idle.len())];
                workers[i].signal("STOP");
                resumes.push((now + ack_wait + rng.between(0.5, 2.0), i));
            }
            Fault::Server if server_back.is_none() => {
                if let Some(process) = &server {
                    process.signal_program("KILL");
                }
                drop(server.take());
                server_back = Some(now + rng.between(0.5, 2.0));
            }
            _ => continue,
        }
        *counts.entry(format!("{fault:?}").to_lowercase()).or_default() += 1;
    }
    load.await?;
    // Heal everything before settling.
    for (_, i) in restarts.drain(..) {
        workers[i].spawn(exe)?;
    }
    resumes.sort_by_key(|(at, _)| *at);
    for (at, i) in resumes.drain(..) {
        tokio::time::sleep_until(at.into()).await;
        workers[i].signal("CONT");
    }
    if server_back.take().is_some() {
        server = Some(NatsProcess::start(nats_binary.clone(), port, &nats_dir).map_err(anyhow::Error::msg)?);
    }
    let accepted = accepted.lock().await.clone();
    eprintln!("\r  {} accepted, {} faults; settling…          ", accepted.len(), counts.values().sum::<usize>());

    let events = settle(&nats, &config, &names, workload, &accepted).await?;
    let mut findings = std::mem::take(&mut *problems.lock().await);
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut terminals: BTreeMap<&str, Vec<&Envelope>> = BTreeMap::new();
    for event in events.iter().filter(|e| workload.is_terminal(e)) {
        if let Some(key) = event.saga_key.as_deref() {
            terminals.entry(key).or_default().push(event);
        }
    }
    for key in &accepted {
        match terminals.get(key.as_str()).map(Vec::as_slice) {
            None | Some([]) => {
                let last = events.iter().rev().find(|e| e.saga_key.as_deref() == Some(key));
                let last = last.map_or("no event at all".to_string(), |e| format!("its last event: {}", e.event_type));
                findings.push(Finding::saga(key, format!("never ended ({last})")));
            }
            Some([one]) => *outcomes.entry(one.event_type.clone()).or_default() += 1,
            Some(many) => {
                let ends: Vec<&str> = many.iter().map(|e| e.event_type.as_str()).collect();
                findings.push(Finding::saga(key, format!("ended {} times: {}", many.len(), ends.join(", "))));
            }
        }
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for event in &events {
        *seen.entry(event.id.as_str()).or_default() += 1;
    }
    for (id, n) in seen.into_iter().filter(|(_, n)| *n > 1) {
        let event = events.iter().find(|e| e.id == id).expect("counted from the events");
        let key = event.saga_key.clone().unwrap_or_default();
        findings.push(Finding::saga(key, format!("event {id} ({}) is in the stream {n} times", event.event_type)));
    }
    let js = jetstream::new(nats.clone());
    for letter in jetsaga_jetstream::ops::dead_letters(&js, &config.dlq_stream, 100).await.unwrap_or_default() {
        findings.push(Finding::run(format!(
            "dead letter from {} on {}: {}",
            letter.function, letter.subject, letter.reason
        )));
    }
    for (function, n) in crate::connect::outbox_backlog(&nats, &names).await? {
        if n > 0 {
            let what = if n == u64::MAX { "did not say".to_string() } else { n.to_string() };
            findings.push(Finding::run(format!("{function}: events committed but not published: {what}")));
        }
    }
    let history = History { started: starts, accepted: accepted.clone(), events, sagas: args.sagas };
    findings.extend(invariants.check(&history, &nats).await?);
    // Every copy drains at once (one by one, each drain would be waited for in turn).
    for worker in &workers {
        worker.signal("CONT");
        worker.signal("TERM");
    }
    drop(workers);
    drop(server);
    if let Some(url) = &postgres {
        drop_schemas(url, &schema_prefix, &names).await;
    }

    let reproduce = format!(
        "{} chaos --seed {seed} --sagas {} --rate {} --faults {faults} --fault-every {}ms --copies {} --store {}",
        crate::cli::program(),
        args.sagas,
        args.rate,
        args.fault_every.as_millis(),
        args.copies,
        if postgres.is_some() { "postgres" } else { "sqlite" }
    );
    Ok(Report {
        seed,
        sagas: args.sagas,
        accepted: accepted.len(),
        faults: counts,
        outcomes,
        events: history.events.len(),
        findings,
        seconds: started_at.elapsed().as_secs_f64(),
        reproduce,
    })
}

/// Drops the run's PostgreSQL schemas (`<prefix><function>`).
async fn drop_schemas(url: &str, prefix: &str, names: &[String]) {
    let Ok(pool) = jetsaga_sql::connect_postgres(url, 1).await else { return };
    for name in names {
        if let Ok(store) = jetsaga_sql::PostgresStore::open(pool.clone(), &format!("{prefix}{name}")).await {
            let _ = store.drop_schema().await;
        }
    }
}

/// Waits until every accepted saga has ended, every consumer has nothing
/// left and every outbox is empty (or [`SETTLE`] has passed); returns
/// every event of the saga stream.
async fn settle(
    nats: &async_nats::Client,
    config: &jetsaga_jetstream::Config,
    names: &[String],
    workload: &dyn Workload,
    accepted: &BTreeSet<String>,
) -> anyhow::Result<Vec<Envelope>> {
    crate::connect::wait_for_functions(nats, names, Duration::from_secs(90)).await?;
    let js = jetstream::new(nats.clone());
    let deadline = Instant::now() + SETTLE;
    loop {
        let events = crate::history::read_events(&js, &config.stream).await?;
        let ended: BTreeSet<&str> =
            events.iter().filter(|e| workload.is_terminal(e)).filter_map(|e| e.saga_key.as_deref()).collect();
        if accepted.iter().all(|key| ended.contains(key.as_str())) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // After the terminal events, compensations and consumption follow.
    loop {
        let mut busy = false;
        let stream = js.get_stream(&config.stream).await?;
        for name in names {
            // A function that subscribes to nothing has no consumer here.
            if let Ok(mut consumer) = stream.get_consumer::<consumer::pull::Config>(name).await {
                let info = consumer.info().await?;
                busy |= info.num_pending > 0 || info.num_ack_pending > 0;
            }
        }
        busy |= crate::connect::outbox_backlog(nats, names).await?.values().any(|n| *n > 0);
        if !busy || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    crate::history::read_events(&js, &config.stream).await
}

/// Prints a report.
pub fn print(report: &Report) {
    let outcomes: Vec<String> = report.outcomes.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let faults: Vec<String> = report.faults.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!(
        "{} sagas started, {} accepted, {} events, in {:.1} s",
        report.sagas, report.accepted, report.events, report.seconds
    );
    println!("  ended:  {}", if outcomes.is_empty() { "none".into() } else { outcomes.join(", ") });
    println!("  faults: {}", if faults.is_empty() { "none".into() } else { faults.join(", ") });
    if report.findings.is_empty() {
        println!("no findings: every accepted saga ended exactly once, nothing doubled, no dead letters");
    } else {
        println!("{} findings:", report.findings.len());
        for finding in report.findings.iter().take(50) {
            println!("  - {finding}");
        }
        println!("repeat with: {}", report.reproduce);
    }
}
