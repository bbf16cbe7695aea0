//! `jetsaga bridge`: the JetStream→Lambda event-source mapping. For each
//! function it pulls that function's durable consumer in batches, invokes
//! the function's Lambda, publishes the returned events with their
//! de-duplication ids, and acks, naks or dead-letters each record by its
//! result. Queries and request/reply commands are forwarded as synchronous
//! invocations. It is the same JetStream runtime as `jetsaga up`, driving
//! remote functions instead of local ones.

use std::time::Duration;

use jetsaga_jetstream::{Config, Runtime};
use jetsaga_lambda::invoker::LambdaProcessor;

use crate::saga::SagaOptions;
use crate::up::{Hosting, SagaKind, host};

/// Options of `jetsaga bridge`.
#[derive(Clone, Debug, clap::Args)]
pub struct BridgeArgs {
    /// NATS server (2.14+ with JetStream: the deadlines are message schedules).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Lambda Invoke API endpoint, e.g. http://127.0.0.1:9000 for `cargo lambda watch`
    /// [default: AWS, from the usual AWS configuration]
    #[arg(long, env = "JETSAGA_LAMBDA_ENDPOINT")]
    pub lambda_endpoint: Option<String>,
    /// Lambda function names are <prefix><function>.
    #[arg(long, default_value = "jetsaga-")]
    pub function_prefix: String,
    /// Choreographed or orchestrated: which functions, subscribed to what.
    #[arg(long, value_enum, default_value_t = SagaKind::Choreographed)]
    pub saga: SagaKind,
    /// Bridge only this function (repeat for several).
    #[arg(long = "function", value_name = "NAME")]
    pub functions: Vec<String>,
    /// Most records per invocation.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Milliseconds to wait for a batch to fill before invoking.
    #[arg(long, default_value_t = 0)]
    pub batch_window_ms: u64,
    /// Batches in flight per function: of each consumer (saga events,
    /// captured commands), and of request/reply commands.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Stream replicas (3 on a 3-node cluster).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Seconds an invocation may take before it is given up and its batch
    /// redelivered (a Lambda instance that died may never answer).
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    pub invoke_timeout: f64,
    /// Invocations in flight per function at most (batches, request/reply
    /// commands, queries and outbox reads together); more wait their turn
    /// in the bridge. Keep it within the function's Lambda concurrency.
    #[arg(long, default_value_t = jetsaga_lambda::invoker::DEFAULT_MAX_INVOCATIONS)]
    pub max_invocations: usize,
    /// Serve health probes on this port: GET /healthz and /readyz.
    #[arg(long, value_name = "PORT")]
    pub health_port: Option<u16>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (messages per
    /// function and outcome, batch handling time and size). Off unless given.
    #[arg(long, value_name = "HOST:PORT", env = "JETSAGA_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Seconds JetStream waits for the bridge's ack before redelivering.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub ack_wait: f64,
    /// Do not create or update streams and consumers: bind to those
    /// `jetsaga provision` created (the bridge's NATS user may not change them).
    #[arg(long)]
    pub no_provision: bool,
    /// Create the demo products and customers that are missing.
    #[arg(long)]
    pub seed: bool,
    /// Do not print the saga flow.
    #[arg(long)]
    pub quiet: bool,
    /// Every N seconds, print the DLQ depth as a CloudWatch embedded-metric
    /// line (namespace Jetsaga, metric DeadLetters) for the deploy
    /// template's alarm; 0 turns it off.
    #[arg(long, default_value_t = 0)]
    pub metrics_interval_secs: u64,
}

/// Runs until Ctrl-C.
pub async fn run(args: BridgeArgs) -> anyhow::Result<()> {
    if args.batch_size == 0 || args.concurrency == 0 || args.max_invocations == 0 {
        anyhow::bail!("--batch-size, --concurrency and --max-invocations must be at least 1");
    }
    if !(args.invoke_timeout >= 0.1 && args.invoke_timeout <= 900.0) {
        anyhow::bail!("--invoke-timeout must be between 0.1 and 900 seconds, got {}", args.invoke_timeout);
    }
    if !(args.ack_wait >= 0.5 && args.ack_wait <= 3600.0) {
        anyhow::bail!("--ack-wait must be between 0.5 and 3600 seconds, got {}", args.ack_wait);
    }
    let options = SagaOptions { mode: args.saga.into(), ..SagaOptions::default() };
    let names: Vec<String> = if args.functions.is_empty() {
        options.names().iter().map(|s| s.to_string()).collect()
    } else {
        args.functions.clone()
    };
    let client = LambdaProcessor::client(args.lambda_endpoint.as_deref()).await;
    let config = Config {
        batch_size: args.batch_size,
        batch_window: Duration::from_millis(args.batch_window_ms),
        concurrency: args.concurrency,
        replicas: args.replicas,
        ack_wait: Duration::from_secs_f64(args.ack_wait),
        provision: !args.no_provision,
        // Each processing is an invocation: a keyed command runs once, from the stream.
        keyed_commands_from_stream: true,
        ..crate::saga::runtime_config(&options)
    };
    let nats = crate::client::connect_options(&format!("jetsaga bridge ({})", names.join(",")))?
        .custom_inbox_prefix(crate::client::inbox_prefix("bridge"))
        .retry_on_initial_connect()
        .connect(crate::client::servers(&args.nats_url))
        .await?;
    if args.metrics_interval_secs > 0 {
        tokio::spawn(jetsaga_runner::metrics::report_dead_letters(
            nats.clone(),
            jetsaga_jetstream::streams::DLQ.into(),
            Duration::from_secs(args.metrics_interval_secs),
        ));
    }
    // The bridge also answers the operations (status, dead letters, redrive) for the HTTP admin API.
    let mut runtime = Runtime::new(nats.clone(), config).serving_operations();
    for name in &names {
        let spec = options.function(name).map_err(anyhow::Error::msg)?.spec();
        let processor = LambdaProcessor::new(spec, client.clone(), format!("{}{name}", args.function_prefix))
            .with_timeout(Duration::from_secs_f64(args.invoke_timeout))
            .with_max_invocations(args.max_invocations);
        runtime = runtime.with(processor);
    }
    let banner = vec![format!(
        "  lambda: {} (functions {}<name>)",
        args.lambda_endpoint.as_deref().unwrap_or("AWS"),
        args.function_prefix
    )];
    let title = format!("jetsaga bridge is up ({:?} saga)", options.mode);
    let hosting = Hosting {
        title,
        banner,
        seed_demo: args.seed,
        quiet: args.quiet,
        health_port: args.health_port,
        metrics_addr: args.metrics_addr,
    };
    host(runtime, nats, &args.nats_url, &names, hosting, &options).await
}
