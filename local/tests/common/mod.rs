//! A `jetsaga up` process for the tests that watch the binary from outside.
// (Each test crate that includes it uses a part.)
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

pub mod collector;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `jetsaga up --quiet --no-http` with its own nats-server and data directory.
pub struct Runner {
    child: Child,
    stdout: JoinHandle<()>,
    stderr: JoinHandle<String>,
    pub dir: tempfile::TempDir,
}

impl Runner {
    /// Starts it with `args` added and `env` set, and waits until it says it is up.
    /// It serves no HTTP unless `args` give an `--http-port`.
    pub fn start(args: &[String], env: &[(&str, &str)]) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), args, env)
    }

    /// Like [`Runner::start`], on the data (and stream) directory of one
    /// that ran before: a restart.
    pub fn start_in(dir: tempfile::TempDir, args: &[String], env: &[(&str, &str)]) -> Self {
        let http = if args.iter().any(|a| a == "--http-port") { None } else { Some("--no-http") };
        let mut child = Command::new(env!("CARGO_BIN_EXE_jetsaga"))
            .args(["up", "--quiet", "--nats-port"])
            .arg(free_port().to_string())
            .args(http)
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .envs(env.iter().copied())
            .env_remove("NATS_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Both pipes read to the end: a full or closed pipe would stall or fail the runner.
        let out = BufReader::new(child.stdout.take().unwrap());
        let (up_tx, up_rx) = std::sync::mpsc::channel();
        let stdout = std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if line.starts_with("jetsaga is up") {
                    let _ = up_tx.send(());
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut log = String::new();
            let _ = err.read_to_string(&mut log);
            log
        });
        up_rx.recv_timeout(Duration::from_secs(120)).expect("the runner was not up within 120 s");
        Self { child, stdout, stderr, dir }
    }

    /// Its process id (to pause it with SIGSTOP, say).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The NATS URL it serves.
    pub fn nats_url(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.url")).unwrap().trim().to_string()
    }

    /// Stops it with SIGTERM, as a deployment does; it must exit cleanly.
    /// Returns what it wrote to stderr.
    pub fn stop(self) -> String {
        self.stop_keeping_data().0
    }

    /// Stops it like [`Runner::stop`] and hands back its data directory
    /// (for [`Runner::start_in`]).
    pub fn stop_keeping_data(mut self) -> (String, tempfile::TempDir) {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let status = self.child.wait().unwrap();
        self.stdout.join().unwrap();
        let log = self.stderr.join().unwrap();
        assert!(status.success(), "stopped with {status:?}:\n{log}");
        (log, self.dir)
    }
}
