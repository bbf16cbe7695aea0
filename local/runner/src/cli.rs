//! The runner's verbs, for any saga's binary: [`Runner::main`] parses the
//! command line, runs the verb and turns the outcome into an exit code.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::Saga;
use crate::chaos::{ChaosArgs, Invariants, Workload};
use crate::cloudformation::{SagaOption, Template};
use crate::host::{RunArgs, UpArgs};

/// The runner's options, for every verb.
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// The NATS server [default: $NATS_URL, else the one `up` started
    /// (`<data-dir>/nats.url`), else nats://127.0.0.1:4222]. A cluster's
    /// nodes separated by commas.
    #[arg(long, global = true, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// Where `up` and `run` keep the functions' stores and the server's
    /// files [default: `.<saga>` in the current directory].
    #[arg(long, global = true, env = "JETSAGA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// How log lines look on stderr: `text`, or `json` (one object per line).
    #[arg(long, global = true, env = "JETSAGA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// A saga binary's whole command line: the saga's own options (`O`), the
/// runner's, and a verb.
#[derive(Debug, Parser)]
pub struct Cli<O: clap::Args> {
    /// The saga's own options.
    #[command(flatten)]
    pub saga: O,
    /// The runner's options.
    #[command(flatten)]
    pub options: Options,
    /// What to do.
    #[command(subcommand)]
    pub verb: Verb,
}

/// What the runner does.
#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Run the saga here: a nats-server of its own (unless --nats-url names
    /// one), every function in this process, each event printed as it
    /// flows. Ctrl-C stops.
    Up(UpArgs),
    /// Run the named functions (all by default) against a running NATS
    /// server: a process of a deployment, or one copy among several.
    Run(RunArgs),
    /// Create or update the saga's streams and consumers: an
    /// administrator's deploy step, after which each function's process
    /// runs as its own NATS user with `run --no-provision`.
    Provision,
    /// Print the `accounts { }` block of a nats-server configuration for
    /// the saga: `admin`, and one user per function allowed exactly the
    /// subjects its declarations imply; passwords from
    /// `$JETSAGA_<USER>_PASSWORD` when the server starts.
    NatsAccounts {
        /// The account's name [default: the saga's, in capitals].
        #[arg(long)]
        account: Option<String>,
    },
    /// Streams, consumers, outboxes and dead letters at a glance.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One saga's events from the stream, with per-step latency.
    Trace {
        /// The saga's key (its events' `saga_key`).
        key: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print every event as it is published (never takes messages from the functions).
    Watch {
        /// Print each envelope as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Inspect, redrive and delete dead letters.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Fault injection: every function as several processes, killed and
    /// paused, the server killed, while the saga's workload runs; then
    /// checks that every saga ended exactly once and the saga's own
    /// invariants. Exit code 1 when it finds a problem, 2 when it could
    /// not run.
    Chaos(ChaosArgs),
    /// Run as a Lambda function: the function `JETSAGA_FUNCTION` names,
    /// storing in DynamoDB (`JETSAGA_TABLE`, `AWS_ENDPOINT_URL`). Started
    /// by Lambda as the `bootstrap`, with no arguments, the binary does this
    /// by itself.
    #[cfg(feature = "lambda")]
    Lambda,
    /// Feed the saga's functions on Lambda from JetStream: each function's
    /// consumer invokes its Lambda in batches and publishes what it returns.
    #[cfg(feature = "lambda")]
    Bridge(crate::lambda::BridgeArgs),
    /// The saga's deployment files: its CloudFormation template (per
    /// function a Lambda running this binary as its bootstrap, a DynamoDB
    /// table and a role allowed only that table; the bridge on ECS Fargate
    /// allowed only to invoke them; alarms) and its NATS accounts.
    #[command(subcommand)]
    Infra(InfraCommand),
    /// Sagas per second and start-to-end latency with the saga's workload,
    /// against raw JetStream measured on the same server in the same run
    /// (the ratio is what compares across machines).
    Bench(crate::bench::BenchArgs),
}

/// The deployment-file verbs.
#[derive(Debug, Subcommand)]
pub enum InfraCommand {
    /// Print the CloudFormation template.
    Template,
    /// Write `cloudformation.json` and `nats-accounts.conf` into a directory.
    Write {
        /// Where to write them.
        #[arg(long, default_value = "infra")]
        dir: PathBuf,
    },
}

/// The dead-letter verbs.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter with its payload.
    Show {
        /// Sequence number from `dlq list`.
        sequence: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Publish dead letters to their subject again and remove the ones that went through.
    Redrive {
        /// Sequence number from `dlq list`.
        #[arg(required_unless_present = "all")]
        sequence: Option<u64>,
        /// Redrive every dead letter.
        #[arg(long, conflicts_with = "sequence")]
        all: bool,
    },
    /// Remove a dead letter for good, without sending it again.
    Delete {
        /// Sequence number from `dlq list`.
        sequence: u64,
    },
}

/// The format of log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colours on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

/// Starts logging to stderr in `format`; `RUST_LOG` picks what is logged
/// (`default_filter` when it is unset).
pub fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        // Fields at the top level, beside `timestamp`, `level`, `target` and
        // `message`, and the spans (function, …) the event happened in.
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).with_span_list(true).init(),
    }
}

/// The name this program was started as (`travel`), for hints and for
/// the command line that repeats a run.
pub fn program() -> String {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "jetsaga".into())
}

/// A saga with what the runner needs to run its verbs.
pub struct Runner {
    saga: Arc<dyn Saga>,
    chaos: Option<(Box<dyn Workload>, Box<dyn Invariants>)>,
    forward: Vec<String>,
    /// The saga's own options that reach a Lambda (their `env` names).
    options: Vec<SagaOption>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("saga", &self.saga.name()).field("forward", &self.forward).finish()
    }
}

impl Runner {
    /// The runner for `saga`.
    pub fn new(saga: impl Saga) -> Self {
        Self { saga: Arc::new(saga), chaos: None, forward: Vec::new(), options: Vec::new() }
    }

    /// What `chaos` and `bench` drive through the saga, and what `chaos`
    /// checks afterwards.
    pub fn with_chaos(mut self, workload: impl Workload + 'static, invariants: impl Invariants + 'static) -> Self {
        self.chaos = Some((Box::new(workload), Box::new(invariants)));
        self
    }

    /// The saga's own options as the processes the runner starts (chaos's
    /// function copies) must get them, so they run the same saga.
    pub fn forward(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.forward = args.into_iter().map(Into::into).collect();
        self
    }

    /// The saga's own options, which the template passes to every function
    /// as parameters ([`Runner::main`] sets them from its `O`).
    pub fn with_options(mut self, options: Vec<SagaOption>) -> Self {
        self.options = options;
        self
    }

    /// The saga's CloudFormation template, for the binary named `binary`.
    pub fn template(&self, binary: &str) -> serde_json::Value {
        Template::for_saga(self.saga.as_ref(), &self.options, binary)
    }

    /// Runs `verb`.
    pub async fn run(&self, options: &Options, verb: Verb) -> anyhow::Result<()> {
        let data_dir = options.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!(".{}", self.saga.name())));
        let url = || -> String {
            options.nats_url.clone().unwrap_or_else(|| {
                std::fs::read_to_string(crate::host::url_file(&data_dir))
                    .map(|url| url.trim().to_string())
                    .unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
            })
        };
        let config = self.saga.runtime_config();
        let describe = |event: &jetsaga_envelope::Envelope| self.saga.describe(event);
        match verb {
            Verb::Up(args) => crate::host::up(&self.saga, options.nats_url.as_deref(), &data_dir, &args).await,
            Verb::Run(args) => crate::host::run(&self.saga, &url(), &data_dir, &args).await,
            Verb::Provision => crate::host::provision(&self.saga, &url()).await,
            #[cfg(feature = "lambda")]
            Verb::Lambda => crate::lambda::serve(&self.saga).await,
            #[cfg(feature = "lambda")]
            Verb::Bridge(args) => crate::lambda::bridge(&self.saga, &url(), &args).await,
            Verb::NatsAccounts { account } => {
                let account = account.unwrap_or_else(|| self.saga.name().to_uppercase());
                let users = jetsaga_jetstream::permissions::saga_users(&crate::specs(self.saga.as_ref()), &config);
                print!("{}", jetsaga_jetstream::permissions::accounts(&account, &users));
                Ok(())
            }
            Verb::Infra(command) => self.infra(command, &config),
            Verb::Status { json } => {
                let nats = crate::connect::connect(&url(), &format!("{} status", self.saga.name())).await?;
                crate::inspect::status(&nats, &config, None, json).await
            }
            Verb::Trace { key, json } => {
                let nats = crate::connect::connect(&url(), &format!("{} trace", self.saga.name())).await?;
                crate::inspect::trace(&nats, &config, &key, describe, json).await
            }
            Verb::Watch { json } => {
                let nats = crate::connect::connect(&url(), &format!("{} watch", self.saga.name())).await?;
                crate::inspect::watch(&nats, &config.stream_subjects, describe, json).await
            }
            Verb::Dlq(command) => {
                let nats = crate::connect::connect(&url(), &format!("{} dlq", self.saga.name())).await?;
                crate::inspect::dlq(&nats, &config, command).await
            }
            Verb::Chaos(args) => {
                let Some((workload, invariants)) = &self.chaos else {
                    anyhow::bail!("the {} saga declares no workload (Runner::with_chaos)", self.saga.name());
                };
                let exe = std::env::current_exe()?;
                let report =
                    crate::chaos::run(&self.saga, workload.as_ref(), invariants.as_ref(), &exe, &self.forward, &args)
                        .await?;
                if let Some(path) = &args.json {
                    std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
                }
                crate::chaos::print(&report);
                match report.findings.len() {
                    0 => Ok(()),
                    n => Err(crate::chaos::Found(n).into()),
                }
            }
            Verb::Bench(args) => {
                let Some((workload, _)) = &self.chaos else {
                    anyhow::bail!("the {} saga declares no workload (Runner::with_chaos)", self.saga.name());
                };
                let exe = std::env::current_exe()?;
                let report = crate::bench::run(&self.saga, workload.as_ref(), &exe, &self.forward, &args).await?;
                if let Some(path) = &args.json {
                    std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
                }
                crate::bench::print(&report);
                Ok(())
            }
        }
    }

    fn infra(&self, command: InfraCommand, config: &jetsaga_jetstream::Config) -> anyhow::Result<()> {
        let binary = program();
        let template = serde_json::to_string_pretty(&self.template(&binary))? + "\n";
        match command {
            InfraCommand::Template => print!("{template}"),
            InfraCommand::Write { dir } => {
                std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
                let users = jetsaga_jetstream::permissions::saga_users(&crate::specs(self.saga.as_ref()), config);
                let accounts = jetsaga_jetstream::permissions::accounts(&self.saga.name().to_uppercase(), &users);
                for (file, contents) in [("cloudformation.json", template), ("nats-accounts.conf", accounts)] {
                    let path = dir.join(file);
                    std::fs::write(&path, contents)
                        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                    println!("wrote {}", path.display());
                }
                println!(
                    "next: cargo lambda build --release --arm64 --bin {binary} --output-format zip --lambda-dir {dir}/build\n      \
                     then aws cloudformation package and deploy {dir}/cloudformation.json (docs/writing-a-saga.md)",
                    dir = dir.display()
                );
            }
        }
        Ok(())
    }

    /// A saga binary's `main`: parses [`Cli`] (the saga's options `O`
    /// first: `build` makes the runner from them), starts logging, runs
    /// the verb. Exit code 0 when it worked, 1 when chaos found problems,
    /// 2 when it could not run (the error is printed).
    pub fn main<O: clap::Args + std::fmt::Debug>(build: impl FnOnce(&O) -> Runner) -> std::process::ExitCode {
        #[cfg(feature = "lambda")]
        if crate::lambda::started_by_lambda() {
            // Lambda starts the bootstrap with no arguments: the saga's
            // options come from the environment (their `env` names).
            let cli = Cli::<O>::parse_from([program(), "lambda".into()]);
            let runner = build(&cli.saga).with_options(SagaOption::of::<O>());
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            return match runtime
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(runner.run(&cli.options, cli.verb)))
            {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    std::process::ExitCode::from(2)
                }
            };
        }
        let cli = Cli::<O>::parse();
        init_logging(cli.options.log_format, "warn,jetsaga_jetstream=info,jetsaga_runner=info");
        let runner = build(&cli.saga).with_options(SagaOption::of::<O>());
        let runtime = match tokio::runtime::Runtime::new() {
            Ok(runtime) => runtime,
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                return std::process::ExitCode::from(2);
            }
        };
        match runtime.block_on(runner.run(&cli.options, cli.verb)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) if e.downcast_ref::<crate::chaos::Found>().is_some() => std::process::ExitCode::from(1),
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::from(2)
            }
        }
    }
}
