//! Hosting a saga's functions: `up` (a nats-server of its own when none
//! is named, every function in this process, events as they flow) and
//! `run` (the named functions against a running server: one process of a
//! deployment, or one copy among several).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jetsaga_jetstream::Runtime;
use tracing::info;

use crate::Saga;
use crate::server::{self, NatsProcess};
use crate::stores::StoreConfig;

/// Where the functions keep their state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// One SQLite file per function under `--data-dir`.
    Sqlite,
    /// One schema per function in the PostgreSQL database of `--database-url`.
    Postgres,
}

/// The options of `run` (and of `up`).
#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// Host only this function (repeat for several) [default: all of them].
    #[arg(long = "function", value_name = "NAME")]
    pub functions: Vec<String>,
    /// Where the functions keep their state.
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    pub store: StoreKind,
    /// PostgreSQL URL, for `--store postgres`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Prefix of the functions' PostgreSQL schemas (`<prefix><function>`).
    #[arg(long, default_value = "")]
    pub schema_prefix: String,
    /// How long a message may be in a function's hands before the server
    /// sends it again (`30s`, `500ms`).
    #[arg(long, default_value = "30s", value_parser = |s: &str| jetsaga_core::duration::parse_wait("--ack-wait", s))]
    pub ack_wait: Duration,
    /// Do not create or update the streams and consumers: they were
    /// provisioned by an administrator (`provision`), and this process's
    /// NATS user may not manage streams.
    #[arg(long)]
    pub no_provision: bool,
    /// Print nothing but errors.
    #[arg(long)]
    pub quiet: bool,
}

/// The options of `up`.
#[derive(Clone, Debug, clap::Args)]
pub struct UpArgs {
    /// The port of the nats-server `up` starts when `--nats-url` names
    /// none (another free one if it is taken).
    #[arg(long, default_value_t = 4222)]
    pub nats_port: u16,
    #[command(flatten)]
    pub run: RunArgs,
}

impl RunArgs {
    fn stores(&self, data_dir: &Path) -> anyhow::Result<StoreConfig> {
        Ok(match self.store {
            StoreKind::Sqlite => StoreConfig::sqlite(data_dir),
            StoreKind::Postgres => StoreConfig::Postgres {
                url: self
                    .database_url
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("--store postgres needs --database-url (or DATABASE_URL)"))?,
                schema_prefix: self.schema_prefix.clone(),
            },
        })
    }
}

/// The file `up` leaves the URL of its server in, so the other verbs find it.
pub fn url_file(data_dir: &Path) -> PathBuf {
    data_dir.join("nats.url")
}

/// `up`: a nats-server of its own unless `nats_url` names one, then every
/// function (or those named), until Ctrl-C.
pub async fn up(saga: &Arc<dyn Saga>, nats_url: Option<&str>, data_dir: &Path, args: &UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let mut nats_process = None;
    let url = match nats_url {
        Some(url) => url.to_string(),
        None => {
            let binary = server::find_binary().map_err(anyhow::Error::msg)?;
            let port = if server::port_in_use(args.nats_port) { server::free_port()? } else { args.nats_port };
            let process = NatsProcess::start(binary, port, &data_dir.join("nats")).map_err(anyhow::Error::msg)?;
            info!(url = %process.url, binary = %process.binary.display(), "started nats-server");
            let url = process.url.clone();
            nats_process = Some(process);
            url
        }
    };
    std::fs::write(url_file(data_dir), &url)?;
    let program = crate::cli::program();
    let name = saga.name().to_string();
    let describe = saga.clone();
    let watch = (!args.run.quiet).then(|| {
        let subjects = saga.runtime_config().stream_subjects;
        (subjects, move |event: &jetsaga_envelope::Envelope| describe.describe(event))
    });
    let shown = url.clone();
    let on_ready = move |functions: &[String]| {
        println!("{name} is up: {} on {shown}", functions.join(", "));
        println!("  state: {}", data_dir_note(data_dir));
        println!("  see:   {program} status | {program} trace <key> | {program} dlq list   (Ctrl-C stops)");
    };
    let result = host(saga, &url, data_dir, &args.run, Some(Box::new(on_ready)), watch).await;
    drop(nats_process);
    result
}

fn data_dir_note(data_dir: &Path) -> String {
    format!("{} (delete it to start afresh)", data_dir.display())
}

/// `run`: the named functions (all when none is named) on the server at
/// `url`, until Ctrl-C or SIGTERM.
pub async fn run(saga: &Arc<dyn Saga>, url: &str, data_dir: &Path, args: &RunArgs) -> anyhow::Result<()> {
    host(saga, url, data_dir, args, None, None::<(Vec<String>, fn(&jetsaga_envelope::Envelope) -> String)>).await
}

type OnReady<'a> = Box<dyn FnOnce(&[String]) + Send + 'a>;

async fn host<D>(
    saga: &Arc<dyn Saga>,
    url: &str,
    data_dir: &Path,
    args: &RunArgs,
    on_ready: Option<OnReady<'_>>,
    watch: Option<(Vec<String>, D)>,
) -> anyhow::Result<()>
where
    D: FnMut(&jetsaga_envelope::Envelope) -> String + Send + 'static,
{
    let all = saga.functions();
    let chosen = choose(saga.as_ref(), &all, &args.functions)?;
    let hosted: Vec<String> = chosen.iter().map(|f| f.spec().name.to_string()).collect();
    let mut connect = crate::connect::connect_options(&format!("{} ({})", saga.name(), hosted.join(",")))?;
    if let [name] = hosted.as_slice() {
        // A function's NATS user may read only the replies sent to it.
        connect = connect.custom_inbox_prefix(jetsaga_jetstream::service::inbox_prefix(name));
    }
    let nats = connect.retry_on_initial_connect().connect(crate::connect::servers(url)).await?;
    let config =
        jetsaga_jetstream::Config { ack_wait: args.ack_wait, provision: !args.no_provision, ..saga.runtime_config() };
    let mut runtime = Runtime::new(nats.clone(), config);
    if args.functions.is_empty() {
        // The whole saga in one process answers the operations too.
        runtime = runtime.serving_operations();
    }
    for engine in args.stores(data_dir)?.engines(chosen).await? {
        runtime = runtime.with(engine);
    }
    let ready = runtime.readiness();
    let shutdown = shutdown_signal();
    let announce = async {
        while !ready.is_ready() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(on_ready) = on_ready {
            on_ready(&hosted);
        }
        if let Some((subjects, describe)) = watch {
            tokio::spawn(print_events(nats.clone(), subjects, describe));
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        result = runtime.run(shutdown) => result?,
        _ = announce => {}
    }
    Ok(())
}

async fn print_events<D>(nats: async_nats::Client, subjects: Vec<String>, mut describe: D)
where
    D: FnMut(&jetsaga_envelope::Envelope) -> String + Send + 'static,
{
    use futures::StreamExt;
    let mut subscriptions = Vec::new();
    for subject in subjects {
        match nats.subscribe(subject).await {
            Ok(subscription) => subscriptions.push(subscription),
            Err(e) => tracing::warn!(error = %e, "cannot show events as they flow"),
        }
    }
    let mut events = futures::stream::select_all(subscriptions);
    while let Some(message) = events.next().await {
        if let Ok(event) = jetsaga_envelope::Envelope::decode(&message.payload) {
            println!("{}", describe(&event));
        }
    }
}

/// `provision`: creates or updates the saga's streams and every function's
/// consumers, as the NATS user this process connects as (an administrator).
pub async fn provision(saga: &Arc<dyn Saga>, url: &str) -> anyhow::Result<()> {
    let nats = crate::connect::connect(url, &format!("{} provision", saga.name())).await?;
    let config = saga.runtime_config();
    let specs = crate::specs(saga.as_ref());
    let js = async_nats::jetstream::new(nats.clone());
    jetsaga_jetstream::provision::provision(&nats, &js, &config, &specs).await?;
    println!(
        "provisioned {}, {}, {} and {} for {}",
        config.stream,
        config.dlq_stream,
        config.command_stream,
        config.claim_stream,
        specs.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

/// The functions called `names` (all when none is named); an unknown name
/// is an error that lists the saga's functions.
pub(crate) fn choose(
    saga: &dyn Saga,
    all: &[Arc<dyn jetsaga_core::Function>],
    names: &[String],
) -> anyhow::Result<Vec<Arc<dyn jetsaga_core::Function>>> {
    if names.is_empty() {
        return Ok(all.to_vec());
    }
    let choices: Vec<&str> = all.iter().map(|f| f.spec().name).collect();
    names
        .iter()
        .map(|name| {
            all.iter().find(|f| f.spec().name == name).cloned().ok_or_else(|| {
                anyhow::anyhow!("no function {name:?} in the {} saga: choose from {}", saga.name(), choices.join(", "))
            })
        })
        .collect()
}

/// Resolves on Ctrl-C or SIGTERM (what an orchestrator sends to stop a process).
pub(crate) async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM can be watched");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
