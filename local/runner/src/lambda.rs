//! The saga on AWS Lambda: the saga's binary is each function's
//! `bootstrap` (`lambda`: the function `JETSAGA_FUNCTION` names, storing in
//! DynamoDB), and `bridge` feeds them from JetStream through the Lambda
//! Invoke API, as an event-source mapping would. Built with the `lambda`
//! feature.

use std::sync::Arc;
use std::time::Duration;

use crate::Saga;

/// Which function a Lambda runs.
pub const FUNCTION_VAR: &str = "JETSAGA_FUNCTION";

/// Whether this process was started by Lambda (or an emulator of its
/// Runtime API) as a bootstrap, with no command line.
pub fn started_by_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() && std::env::args_os().len() == 1
}

/// `lambda`: serves the function `JETSAGA_FUNCTION` names until the
/// runtime stops it (see [`jetsaga_lambda::serve`] for its table settings).
pub async fn serve(saga: &Arc<dyn Saga>) -> anyhow::Result<()> {
    let functions = saga.functions();
    let names: Vec<&str> = functions.iter().map(|f| f.spec().name).collect();
    let name = std::env::var(FUNCTION_VAR).map_err(|_| {
        anyhow::anyhow!("{FUNCTION_VAR} is not set: it names the function this Lambda runs ({})", names.join(", "))
    })?;
    let function = functions.iter().find(|f| f.spec().name == name).cloned().ok_or_else(|| {
        anyhow::anyhow!(
            "{FUNCTION_VAR}={name:?}: no such function in the {} saga: choose from {}",
            saga.name(),
            names.join(", ")
        )
    })?;
    jetsaga_lambda::serve(function).await.map_err(|e| anyhow::anyhow!("{e}"))
}

/// Options of `bridge`.
#[derive(Clone, Debug, clap::Args)]
pub struct BridgeArgs {
    /// The Lambda Invoke API, e.g. http://127.0.0.1:9000 for cargo-lambda's
    /// emulator [default: AWS, from the usual AWS configuration].
    #[arg(long, env = "JETSAGA_LAMBDA_ENDPOINT")]
    pub lambda_endpoint: Option<String>,
    /// Lambda function names are `<prefix><function>`.
    #[arg(long, default_value = "jetsaga-")]
    pub function_prefix: String,
    /// Bridge only this function (repeat for several) [default: all of them].
    #[arg(long = "function", value_name = "NAME")]
    pub functions: Vec<String>,
    /// Most records per invocation.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Invocations in flight per function (each on its own pull subscription).
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Replicas of the saga's streams when the bridge provisions them (3 on a three-node cluster).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// How long an invocation may take before its batch is redelivered (`60s`).
    #[arg(long, default_value = "60s", value_parser = |s: &str| jetsaga_core::duration::parse_wait("--invoke-timeout", s))]
    pub invoke_timeout: Duration,
    /// Do not create or update the streams and consumers (an administrator provisioned them).
    #[arg(long)]
    pub no_provision: bool,
    /// Every N seconds, print the dead-letter stream's depth as a
    /// CloudWatch embedded-metric line (namespace Jetsaga, metric
    /// DeadLetters) for the template's alarm; 0 turns it off.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub metrics_interval_secs: u64,
}

/// `bridge`: every function (or those named) as a Lambda invoked from its
/// consumers, until Ctrl-C or SIGTERM. It also answers the operations.
pub async fn bridge(saga: &Arc<dyn Saga>, url: &str, args: &BridgeArgs) -> anyhow::Result<()> {
    if args.batch_size == 0 || args.concurrency == 0 || args.replicas == 0 {
        anyhow::bail!("--batch-size, --concurrency and --replicas must be at least 1");
    }
    let functions = saga.functions();
    let chosen = crate::host::choose(saga.as_ref(), &functions, &args.functions)?;
    let client = jetsaga_lambda::invoker::LambdaProcessor::client(args.lambda_endpoint.as_deref()).await;
    let config = jetsaga_jetstream::Config {
        batch_size: args.batch_size,
        concurrency: args.concurrency,
        replicas: args.replicas,
        provision: !args.no_provision,
        // Each processing is an invocation: a keyed command runs once, from the stream.
        keyed_commands_from_stream: true,
        ..saga.runtime_config()
    };
    let nats = crate::connect::connect_options(&format!("{} bridge", saga.name()))?
        .custom_inbox_prefix(jetsaga_jetstream::service::inbox_prefix("bridge"))
        .retry_on_initial_connect()
        .connect(crate::connect::servers(url))
        .await?;
    if args.metrics_interval_secs > 0 {
        tokio::spawn(crate::metrics::report_dead_letters(
            nats.clone(),
            config.dlq_stream.clone(),
            Duration::from_secs(args.metrics_interval_secs),
        ));
    }
    let mut runtime = jetsaga_jetstream::Runtime::new(nats, config).serving_operations();
    for function in &chosen {
        let spec = function.spec();
        let name = format!("{}{}", args.function_prefix, spec.name);
        let processor =
            jetsaga_lambda::invoker::LambdaProcessor::new(spec, client.clone(), name).with_timeout(args.invoke_timeout);
        runtime = runtime.with(processor);
    }
    runtime.run(crate::host::shutdown_signal()).await?;
    Ok(())
}
