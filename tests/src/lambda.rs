//! The saga's functions as real Lambda `bootstrap` binaries under
//! cargo-lambda's runtime emulator (`cargo lambda watch --only-lambda-apis`,
//! from `pip install cargo-lambda`), storing in a DynamoDB-compatible
//! endpoint. Each function is its own process polling the emulator's
//! Runtime API, exactly as on Lambda; the emulator also serves the Invoke
//! API the bridge calls.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jetsaga_local::saga::SagaOptions;

use crate::moto::Endpoint;

/// How to get the emulator, for error messages.
pub const HOW_TO_GET: &str =
    "install it with `pip install cargo-lambda` (scripts/setup does this into ~/.cache/jetsaga/tools)";

/// Finds the `cargo-lambda` executable on PATH or in the tools venv.
pub fn cargo_lambda() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.insert(0, Path::new(&home).join(".cache/jetsaga/tools/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("cargo-lambda"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("cargo-lambda not found; {HOW_TO_GET}"))
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// An emulator, a DynamoDB endpoint, and the bootstrap processes started so far.
#[derive(Debug)]
pub struct Deployment {
    /// The DynamoDB-compatible endpoint the functions store in.
    pub dynamodb: Endpoint,
    emulator: Child,
    /// Invoke API endpoint (`http://127.0.0.1:<port>`).
    pub invoke_url: String,
    functions: Vec<Child>,
    binary_for: fn(&str) -> PathBuf,
    options: SagaOptions,
    table_prefix: String,
}

impl Deployment {
    /// Starts moto and the emulator; `binary_for` names each function's bootstrap binary.
    pub fn start(binary_for: fn(&str) -> PathBuf, options: SagaOptions) -> Self {
        let dynamodb = Endpoint::start();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let emulator = Command::new(cargo_lambda())
            .args(["lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", &port.to_string()])
            .current_dir(workspace)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start cargo-lambda: {e}; {HOW_TO_GET}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the Lambda emulator did not listen on {port} within 30s");
            std::thread::sleep(Duration::from_millis(20));
        }
        let table_prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        Self {
            dynamodb,
            emulator,
            invoke_url: format!("http://127.0.0.1:{port}"),
            functions: Vec::new(),
            binary_for,
            options,
            table_prefix,
        }
    }

    /// The Lambda function name of a saga function.
    pub fn function_name(name: &str) -> String {
        format!("jetsaga-{name}")
    }

    /// Starts one function's bootstrap against the emulator.
    pub fn spawn(&mut self, name: &str) {
        let binary = (self.binary_for)(name);
        assert!(
            binary.is_file(),
            "no bootstrap binary at {}: build it with `cargo build -p jetsaga-bootstraps`",
            binary.display()
        );
        let lambda_name = Self::function_name(name);
        let child = Command::new(&binary)
            .env("AWS_LAMBDA_FUNCTION_NAME", &lambda_name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_RUNTIME_API", format!("{}/.rt/{lambda_name}", self.invoke_url))
            .env("AWS_ENDPOINT_URL", &self.dynamodb.url)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("JETSAGA_CREATE_TABLE", "1")
            .env("JETSAGA_TABLE", format!("{}-{name}", self.table_prefix))
            .env(
                "JETSAGA_SAGA",
                match self.options.mode {
                    jetsaga_events::SagaMode::Orchestrated => "orchestrated",
                    jetsaga_events::SagaMode::Choreographed => "choreographed",
                },
            )
            .env("JETSAGA_SHIPPING_FAILURE_RATE", self.options.shipping_failure_rate.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        self.functions.push(child);
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for child in &mut self.functions {
            kill(child);
        }
        kill(&mut self.emulator);
    }
}
