//! A real DynamoDB-compatible endpoint per test: moto's server (`pip
//! install 'moto[server]'`, done by scripts/setup), on a random port,
//! killed on drop. Set `AWS_ENDPOINT_URL` to use an endpoint you run
//! yourself (LocalStack, DynamoDB Local) instead.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to get moto's server, for error messages.
pub const HOW_TO_GET: &str = "install it with `pip install 'moto[server]'` (scripts/setup does this into \
     ~/.cache/jetsaga/tools) or set AWS_ENDPOINT_URL to a DynamoDB-compatible endpoint";

/// Finds `moto_server` on PATH or in the tools venv.
pub fn moto_binary() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.insert(0, Path::new(&home).join(".cache/jetsaga/tools/bin"));
    }
    dirs.into_iter().map(|d| d.join("moto_server")).find(|p| p.is_file())
}

/// A DynamoDB-compatible endpoint.
#[derive(Debug)]
pub struct Endpoint {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    child: Option<Child>,
}

impl Endpoint {
    /// `AWS_ENDPOINT_URL` if set, otherwise a fresh moto server.
    pub fn start() -> Self {
        if let Ok(url) = std::env::var("AWS_ENDPOINT_URL") {
            return Self { url, child: None };
        }
        let bin = moto_binary().unwrap_or_else(|| panic!("moto_server not found; {HOW_TO_GET}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {HOW_TO_GET}", bin.display()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not listen on {port} within 30s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { url: format!("http://127.0.0.1:{port}"), child: Some(child) }
    }

    /// A DynamoDB client for this endpoint with dummy credentials.
    pub async fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.url)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "tests"))
            .load()
            .await;
        aws_sdk_dynamodb::Client::new(&config)
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
