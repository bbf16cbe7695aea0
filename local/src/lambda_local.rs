//! Local Lambda mode: every function as its real `bootstrap` binary under
//! cargo-lambda's runtime emulator (`cargo lambda watch --only-lambda-apis`),
//! storing in a DynamoDB-compatible endpoint (moto's server unless
//! `AWS_ENDPOINT_URL` names one). The bridge then feeds them from JetStream
//! through the emulator's Invoke API, exactly as it would on AWS.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use jetsaga_events::SagaMode;

use crate::saga::SagaOptions;
use crate::tools::{self, Process};

/// How to get the Python-packaged tools.
const HOW_TO_GET: &str = "run scripts/setup (it installs moto[server] and cargo-lambda into ~/.cache/jetsaga/tools), or `pip install 'moto[server]' cargo-lambda`";

/// A DynamoDB-compatible endpoint: `AWS_ENDPOINT_URL`, or a moto server of our own.
#[derive(Debug)]
pub struct DynamoEndpoint {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    _process: Option<Process>,
}

impl DynamoEndpoint {
    /// Uses `AWS_ENDPOINT_URL` if set, otherwise starts `moto_server` on a free port.
    pub fn start() -> Result<Self, String> {
        if let Ok(url) = std::env::var("AWS_ENDPOINT_URL") {
            return Ok(Self { url, _process: None });
        }
        Self::start_moto()
    }

    /// Starts `moto_server` on a free port.
    pub fn start_moto() -> Result<Self, String> {
        let binary = tools::find("moto_server", HOW_TO_GET)?;
        let port = tools::free_port().map_err(|e| e.to_string())?;
        let child = tools::tied_command(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut process = Process::new(child, "moto_server");
        process.wait_for_port(port, Duration::from_secs(30))?;
        Ok(Self { url: format!("http://127.0.0.1:{port}"), _process: Some(process) })
    }
}

/// The emulator plus the function processes started so far.
#[derive(Debug)]
pub struct LambdaLocal {
    /// Where the functions store.
    pub dynamodb: DynamoEndpoint,
    /// The emulator's Invoke API (`http://127.0.0.1:<port>`).
    pub invoke_url: String,
    _emulator: Process,
    functions: Vec<Process>,
    bootstrap: fn(&str) -> PathBuf,
    options: SagaOptions,
    table_prefix: String,
}

/// The Lambda function name of a saga function (also its bootstrap binary's name).
pub fn function_name(function: &str) -> String {
    format!("jetsaga-{function}")
}

/// The bootstrap binaries next to the running executable (cargo puts every
/// binary of the workspace in one directory).
pub fn bootstrap_beside_current_exe(function: &str) -> PathBuf {
    let dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default();
    dir.join(function_name(function))
}

impl LambdaLocal {
    /// Starts the DynamoDB endpoint and the emulator (on `port`, or a free one).
    /// `bootstrap` names each function's binary; `table_prefix` its tables.
    pub fn start(
        bootstrap: fn(&str) -> PathBuf,
        options: SagaOptions,
        port: Option<u16>,
        table_prefix: &str,
    ) -> Result<Self, String> {
        let dynamodb = DynamoEndpoint::start()?;
        let cargo_lambda = tools::find("cargo-lambda", HOW_TO_GET)?;
        let port = match port {
            Some(port) => port,
            None => tools::free_port().map_err(|e| e.to_string())?,
        };
        let child = tools::tied_command(&cargo_lambda)
            .args(["lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", cargo_lambda.display()))?;
        let mut emulator = Process::new(child, "the cargo-lambda emulator");
        emulator.wait_for_port(port, Duration::from_secs(30))?;
        Ok(Self {
            dynamodb,
            invoke_url: format!("http://127.0.0.1:{port}"),
            _emulator: emulator,
            functions: Vec::new(),
            bootstrap,
            options,
            table_prefix: table_prefix.to_string(),
        })
    }

    /// Starts one function's bootstrap, polling the emulator's Runtime API
    /// as it would poll Lambda's.
    pub fn spawn(&mut self, function: &str) -> Result<(), String> {
        let binary = (self.bootstrap)(function);
        if !binary.is_file() {
            return Err(format!(
                "no bootstrap binary at {}: build them with `cargo build -p jetsaga-bootstraps`",
                binary.display()
            ));
        }
        let lambda_name = function_name(function);
        let mode = match self.options.mode {
            SagaMode::Orchestrated => "orchestrated",
            SagaMode::Choreographed => "choreographed",
        };
        let mut command = tools::tied_command(&binary);
        command
            .env("AWS_LAMBDA_FUNCTION_NAME", &lambda_name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_RUNTIME_API", format!("{}/.rt/{lambda_name}", self.invoke_url))
            .env("AWS_ENDPOINT_URL", &self.dynamodb.url)
            .env("JETSAGA_CREATE_TABLE", "1")
            .env("JETSAGA_TABLE", format!("{}{function}", self.table_prefix))
            .env("JETSAGA_SAGA", mode)
            .env("JETSAGA_SHIPPING_FAILURE_RATE", self.options.shipping_failure_rate.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // A local endpoint needs no real identity.
        for (name, value) in
            [("AWS_REGION", "us-east-1"), ("AWS_ACCESS_KEY_ID", "local"), ("AWS_SECRET_ACCESS_KEY", "local")]
        {
            if std::env::var_os(name).is_none() {
                command.env(name, value);
            }
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "warn");
        }
        let child = command.spawn().map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        self.functions.push(Process::new(child, lambda_name));
        Ok(())
    }
}
