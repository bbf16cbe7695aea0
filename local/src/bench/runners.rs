//! The runner processes under test: this very binary running `jetsaga up`
//! against the benchmark's own nats-server, and what they cost.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::lambda_local::LambdaLocal;
use crate::tools::{self, Process};
use crate::up::{SagaKind, StoreKind};

use super::{BenchArgs, Layout};

/// What runs the saga during a run: its processes, and on the Lambda
/// path the emulator and DynamoDB endpoint they use and where each
/// bootstrap's stdout (its per-invocation cost lines) went.
pub(crate) struct Runners {
    pub(crate) processes: Vec<Process>,
    pub(crate) lambda: Option<LambdaLocal>,
    pub(crate) bootstrap_logs: Vec<PathBuf>,
}

/// Starts the runners of `args` (one process, or one per function; each
/// `args.copies` times; or the Lambda path), storing under `dir`.
pub(crate) fn start(args: &BenchArgs, url: &str, dir: &Path) -> anyhow::Result<Runners> {
    if args.layout == Layout::Lambda {
        return start_lambda(args, url, dir);
    }
    let exe = std::env::current_exe()?;
    let functions: Vec<Vec<&str>> = match args.layout {
        Layout::PerFunction => crate::saga::names(args.saga.into()).into_iter().map(|f| vec![f]).collect(),
        Layout::OneProcess | Layout::Lambda => vec![Vec::new()],
    };
    let schema_prefix = format!("bench_{}_", std::process::id());
    let mut runners = Vec::new();
    for copy in 0..args.copies {
        for group in &functions {
            let mut command = tools::tied_command(&exe);
            command
                .args(["up", "--nats-url", url, "--quiet", "--no-seed", "--no-http"])
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
                // The load is one customer at thousands of orders a second, by design.
                .args(["--max-orders-in-flight", "0", "--max-orders-per-minute", "0"])
                .env("RUST_LOG", "error")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            if let Some(db) = &args.database_url {
                command.args(["--database-url", db]);
            }
            if args.sync_full {
                command.arg("--sync-full");
            }
            if args.no_deadlines {
                command.arg("--no-deadlines");
            }
            for f in group {
                command.args(["--function", f]);
            }
            let child = command.spawn()?;
            runners.push(Process::new(child, format!("runner {copy}")));
        }
    }
    Ok(Runners { processes: runners, lambda: None, bootstrap_logs: Vec::new() })
}

/// The Lambda path: every function's bootstrap (beside this binary) under
/// cargo-lambda's emulator, storing in DynamoDB (moto's server, or
/// `AWS_ENDPOINT_URL`), fed by `args.copies` `jetsaga bridge` processes.
fn start_lambda(args: &BenchArgs, url: &str, dir: &Path) -> anyhow::Result<Runners> {
    let exe = std::env::current_exe()?;
    let options = crate::saga::SagaOptions {
        mode: args.saga.into(),
        order_limits: crate::saga::OrderLimits::UNLIMITED,
        deadlines: if args.no_deadlines { None } else { crate::saga::SagaOptions::default().deadlines },
        ..crate::saga::SagaOptions::default()
    };
    let bootstrap = crate::lambda_local::bootstrap_beside_current_exe();
    let local = crate::lambda_local::start(bootstrap, &options, None, &format!("bench-{}-", std::process::id()))
        .map_err(anyhow::Error::msg)?;
    let mut processes = Vec::new();
    let mut bootstrap_logs = Vec::new();
    for name in crate::saga::names(args.saga.into()) {
        let log = dir.join(format!("bootstrap-{name}.log"));
        let mut command = local.bootstraps().command(name).map_err(anyhow::Error::msg)?;
        command.env("RUST_LOG", "error").stdout(std::fs::File::create(&log)?).stderr(Stdio::inherit());
        processes.push(Process::new(command.spawn()?, crate::lambda_local::function_name(name)));
        bootstrap_logs.push(log);
    }
    for copy in 0..args.copies {
        let child = tools::tied_command(&exe)
            .args(["bridge", "--nats-url", url, "--quiet", "--lambda-endpoint", &local.invoke_url])
            .args(["--saga", crate::saga::mode_name(options.mode)])
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        processes.push(Process::new(child, format!("bridge {copy}")));
    }
    Ok(Runners { processes, lambda: Some(local), bootstrap_logs })
}

/// Starts `jetsaga gateway` (this binary) in front of the saga at `url`;
/// returns it and the API's base URL once it listens.
pub(crate) fn start_gateway(url: &str, dir: &Path) -> anyhow::Result<(Process, String)> {
    let port = tools::free_port()?;
    let child = tools::tied_command(&std::env::current_exe()?)
        .args(["--nats-url", url, "gateway", "--http-host", "127.0.0.1", "--http-port", &port.to_string()])
        // All the load comes from this one address, by design.
        .args(["--client-requests-per-second", "0"])
        .arg("--data-dir")
        .arg(dir.join("gateway"))
        .env("JETSAGA_JWT_SECRET", "the benchmark's session signing secret, 32+ bytes")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut gateway = Process::new(child, "the gateway");
    gateway.wait_for_port(port, std::time::Duration::from_secs(30)).map_err(anyhow::Error::msg)?;
    Ok((gateway, format!("http://127.0.0.1:{port}")))
}

/// Reads (CPU seconds, peak RSS in KiB) of a process and its children's tree root.
pub(crate) fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some((ticks / 100.0, hwm))
}
