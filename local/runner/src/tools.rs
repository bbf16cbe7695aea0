//! Finding and running the external tools jetsaga uses locally
//! (nats-server, moto's DynamoDB server, cargo-lambda's emulator).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where scripts/setup installs the tools from PyPI.
pub fn tools_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/jetsaga/tools/bin"))
}

/// Every place a tool may be: `PATH`, then the tools venv.
pub fn candidates(name: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    dirs.extend(tools_dir());
    dirs.into_iter().map(|d| d.join(name)).filter(|p| p.is_file()).collect()
}

/// The first `name` found, or an error saying how to install it.
pub fn find(name: &str, how_to_get: &str) -> Result<PathBuf, String> {
    candidates(name).into_iter().next().ok_or_else(|| format!("{name} not found; {how_to_get}"))
}

/// Whether something listens on `127.0.0.1:port`.
pub fn port_in_use(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// A free loopback port.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A command that runs `program` and takes it down when our end of its
/// stdin closes: when the [`Process`] is dropped, and also when this
/// process dies without running destructors (SIGKILL, abort), so local
/// runs and tests never leave servers behind. The wrapper exits when the
/// program does, with its status, so an early exit is seen as one.
pub fn tied_command(program: &Path) -> Command {
    let mut command = Command::new("sh");
    command.arg("-c").arg(TIE).arg(program).stdin(Stdio::piped());
    command
}

/// The `sh` wrapper of [`tied_command`]: the program runs in the background
/// (its stdin from /dev/null); a watcher reads the wrapper's stdin (fd 3:
/// a background list's own stdin is /dev/null) and kills the program at
/// EOF; the wrapper waits for the program (again after a trapped signal
/// interrupts the wait) and exits with its status. The wrapper's own
/// chatter ("Terminated") goes nowhere; the program keeps the real stderr.
const TIE: &str = r#"exec 3<&0 4>&2 2>/dev/null
"$0" "$@" </dev/null 2>&4 3<&- 4>&- & child=$!
trap 'kill $child 2>/dev/null' TERM INT
(read _ignored <&3; kill $child 2>/dev/null) >/dev/null 2>&1 &
wait $child; status=$?
while kill -0 $child 2>/dev/null; do wait $child; status=$?; done
exit $status"#;

/// A child process stopped (and reaped) when dropped.
#[derive(Debug)]
pub struct Process {
    child: Child,
    what: String,
}

impl Process {
    /// Wraps a started child; `what` names it in errors.
    pub fn new(child: Child, what: impl Into<String>) -> Self {
        Self { child, what: what.into() }
    }

    /// The OS process id (of the `sh` wrapper for a [`tied_command`]).
    pub fn id(&self) -> Option<u32> {
        Some(self.child.id())
    }

    /// The pid of the program a [`tied_command`] runs (the `sh` wrapper's child).
    pub fn program_pid(&self) -> Option<u32> {
        let sh = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{sh}/task/{sh}/children")).ok()?;
        // The other child is the stdin watcher: a fork of the wrapper itself.
        let wrapper = std::fs::read(format!("/proc/{sh}/cmdline")).ok()?;
        children
            .split_whitespace()
            .filter_map(|pid| pid.parse::<u32>().ok())
            .find(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| cmdline != wrapper))
    }

    /// Sends `kill -<signal>` (`KILL`, `STOP`, `CONT`, …) to the program a
    /// [`tied_command`] runs, as an operator or a crash would.
    pub fn signal_program(&self, signal: &str) {
        if let Some(pid) = self.program_pid() {
            let _ = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
        }
    }

    /// Whether it has exited, and how (without waiting).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits until it listens on `port`, failing early if it exits.
    pub fn wait_for_port(&mut self, port: u16, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while !port_in_use(port) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{} exited with {status} before listening on port {port}", self.what));
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not listen on port {port} within {timeout:?}", self.what));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops it now: closing its stdin stops a [`tied_command`] and what it
    /// runs; anything still alive a moment later is killed.
    pub fn stop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Still alive: kill the program itself too, not only its `sh` wrapper
        // (whose trap cannot run under SIGKILL), or it would be orphaned.
        self.signal_program("KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}
