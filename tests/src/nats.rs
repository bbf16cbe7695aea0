//! A real nats-server per test.
//!
//! The binary comes from `NATS_SERVER_BIN`, or the first `nats-server` on
//! `PATH` (then in scripts/setup's tools venv) that is 2.10 or newer
//! (Debian's 2.9 is skipped). Each server gets
//! a random port (`-p -1`, read back through `--ports_file_dir`) and its own
//! temporary store directory; it is killed and cleaned up on drop, and can
//! be stopped and restarted on the same port and store.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Finds a nats-server 2.10+ binary (the same search as `jetsaga up`), or
/// panics saying how to get one.
pub fn server_binary() -> PathBuf {
    jetsaga_runner::server::find_binary().unwrap_or_else(|e| panic!("{e}"))
}

/// A nats-server process with JetStream.
#[derive(Debug)]
pub struct NatsServer {
    bin: PathBuf,
    dir: TempDir,
    port: u16,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a single server with JetStream on a random port.
    pub fn start() -> Self {
        Self::start_with(Vec::new())
    }

    /// Starts a server that also reads `config` (nats-server.conf syntax;
    /// the harness's own flags for port, JetStream and store win).
    pub fn start_with_config(config: &str) -> Self {
        Self::start_with_files(Vec::new(), Some(config))
    }

    fn start_with(extra_args: Vec<String>) -> Self {
        Self::start_with_files(extra_args, None)
    }

    fn start_with_files(mut extra_args: Vec<String>, config: Option<&str>) -> Self {
        let dir = tempfile::Builder::new().prefix("jetsaga-nats-").tempdir().unwrap();
        if let Some(config) = config {
            let path = dir.path().join("server.conf");
            std::fs::write(&path, config).unwrap();
            extra_args.push("-c".into());
            extra_args.push(path.display().to_string());
        }
        let mut server = Self { bin: server_binary(), dir, port: 0, extra_args, child: None };
        server.spawn();
        server
    }

    /// Where its JetStream data and log live.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self) {
        let ports_dir = self.dir.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir).unwrap();
        let port = if self.port == 0 { "-1".to_string() } else { self.port.to_string() };
        let child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
            .arg(self.dir.path().join("store"))
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .arg("-l")
            .arg(self.dir.path().join("nats-server.log"))
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        let pid = child.id();
        self.child = Some(child);
        let ports_file = ports_dir.join(format!("nats-server_{pid}.ports"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ports_file)
                && let Ok(ports) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(url) = ports["nats"][0].as_str()
            {
                self.port = url.rsplit(':').next().unwrap().parse().unwrap();
                break;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log = std::fs::read_to_string(self.dir.path().join("nats-server.log")).unwrap_or_default();
                panic!("nats-server exited with {status} before listening:\n{log}");
            }
            assert!(Instant::now() < deadline, "nats-server did not start within 20s");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The ports file is written before JetStream has recovered its store;
        // wait until the server answers health checks with JetStream enabled.
        self.wait_healthy();
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let log = std::fs::read_to_string(self.dir.path().join("nats-server.log")).unwrap_or_default();
            if log.contains("Server is ready") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("nats-server on port {} never became ready", self.port);
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (SIGKILL: like a crash; the file store is kept).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.stop();
        // Truncate the log so readiness is judged on the new run.
        let _ = std::fs::write(self.dir.path().join("nats-server.log"), "");
        self.spawn();
    }

    /// Connects a client that keeps reconnecting forever.
    pub async fn connect(&self) -> async_nats::Client {
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(self.url())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url()))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A 3-node JetStream cluster on loopback.
#[derive(Debug)]
pub struct Cluster {
    /// The nodes.
    pub servers: Vec<NatsServer>,
}

/// Starts `size` servers routed into one JetStream cluster.
pub fn run_cluster(size: usize) -> Cluster {
    let cluster_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
    let routes: Vec<String> = cluster_ports.iter().map(|p| format!("nats-route://127.0.0.1:{p}")).collect();
    let mut servers = Vec::new();
    // Start them in parallel: each waits for a quorum before it is ready.
    let handles: Vec<_> = cluster_ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let args = vec![
                "--name".into(),
                format!("n{i}"),
                "--cluster_name".into(),
                "jetsaga".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{port}"),
                "--routes".into(),
                routes.join(","),
            ];
            std::thread::spawn(move || NatsServer::start_with(args))
        })
        .collect();
    for handle in handles {
        servers.push(handle.join().expect("cluster node started"));
    }
    Cluster { servers }
}

impl Cluster {
    /// A URL list naming every node.
    pub fn urls(&self) -> String {
        self.servers.iter().map(NatsServer::url).collect::<Vec<_>>().join(",")
    }

    /// Connects to all nodes.
    pub async fn connect(&self) -> async_nats::Client {
        let urls: Vec<async_nats::ServerAddr> = self.servers.iter().map(|s| s.url().parse().unwrap()).collect();
        async_nats::ConnectOptions::new().retry_on_initial_connect().connect(urls).await.unwrap()
    }
}
