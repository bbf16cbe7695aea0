//! The runner processes under test: this very binary running `jetsaga up`
//! against the benchmark's own nats-server, and what they cost.

use std::path::Path;
use std::process::Stdio;

use crate::tools::{self, Process};
use crate::up::{SagaKind, StoreKind};

use super::{BenchArgs, Layout};

/// Starts the runners of `args` (one process, or one per function; each
/// `args.copies` times), storing under `dir`.
pub(crate) fn start(args: &BenchArgs, url: &str, dir: &Path) -> anyhow::Result<Vec<Process>> {
    let exe = std::env::current_exe()?;
    let functions: Vec<Vec<&str>> = match args.layout {
        Layout::OneProcess => vec![Vec::new()],
        Layout::PerFunction => crate::saga::names(args.saga.into()).into_iter().map(|f| vec![f]).collect(),
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
    Ok(runners)
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
