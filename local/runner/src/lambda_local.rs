//! Local Lambda mode: every function as its real `bootstrap` binary under
//! cargo-lambda's runtime emulator (`cargo lambda watch --only-lambda-apis`),
//! storing in a DynamoDB-compatible endpoint (moto's server unless
//! `AWS_ENDPOINT_URL` names one). The bridge then feeds them from JetStream
//! through the emulator's Invoke API, exactly as it would on AWS.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

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

    /// Starts moto's server on a free port, serving one request at a time.
    ///
    /// moto's own `moto_server` serves requests on parallel threads, and
    /// its DynamoDB is not safe that way: a `TransactWriteItems` backs up
    /// the whole table and restores that copy when a condition fails,
    /// erasing what another request wrote meanwhile, and two requests on
    /// one table can fail with a 500. Real DynamoDB is serializable per
    /// item, so one request at a time is a faithful stand-in. That backup
    /// is also a deep copy of the whole table, which makes every
    /// transaction slower as the table grows (5 a second at a few thousand
    /// items); with requests one at a time, backing up only the items the
    /// transaction touches restores the same state, at a constant cost
    /// (hundreds a second at any size).
    pub fn start_moto() -> Result<Self, String> {
        let moto_server = tools::find("moto_server", HOW_TO_GET)?;
        // The Python that moto was installed for (a venv's `bin/`).
        let python = moto_server.parent().map(|d| d.join("python3")).filter(|p| p.is_file());
        let python = python.unwrap_or_else(|| PathBuf::from("python3"));
        let port = tools::free_port().map_err(|e| e.to_string())?;
        let child = tools::tied_command(&python)
            .args(["-c", SERIAL_MOTO, &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start moto's server with {}: {e}", python.display()))?;
        let mut process = Process::new(child, "moto's server");
        process.wait_for_port(port, Duration::from_secs(30))?;
        Ok(Self { url: format!("http://127.0.0.1:{port}"), _process: Some(process) })
    }
}

/// moto's server app behind one lock, with transactions that back up only
/// the items they touch (see [`DynamoEndpoint::start_moto`]); the port is
/// its first argument.
const SERIAL_MOTO: &str = include_str!("serial_moto.py");

/// The emulator plus the function processes started so far.
#[derive(Debug)]
pub struct LambdaLocal {
    // Fields drop in order: the bootstraps stop before the emulator
    // and the endpoint they talk to, so none reports losing them.
    functions: Vec<Process>,
    /// Where the functions store.
    pub dynamodb: DynamoEndpoint,
    /// The emulator's Invoke API (`http://127.0.0.1:<port>`).
    pub invoke_url: String,
    _emulator: Process,
    bootstraps: Bootstraps,
    /// The emulator's working directory (its manifest and its log).
    _emulator_dir: tempfile::TempDir,
}

/// `cargo lambda watch` reads a Cargo manifest even when it only serves
/// the Lambda APIs, and serves only functions named by its binaries: it
/// gets a package of its own declaring one per saga function, so it starts
/// the same anywhere (outside a checkout, or while a build holds the
/// workspace). Nothing is built from it.
fn emulator_manifest(functions: &[String]) -> String {
    let mut manifest =
        String::from("[package]\nname = \"jetsaga-lambda-emulator\"\nversion = \"0.0.0\"\nedition = \"2021\"\n");
    for name in functions {
        manifest.push_str(&format!("\n[[bin]]\nname = \"{}\"\npath = \"main.rs\"\n", function_name(name)));
    }
    manifest.push_str("\n[workspace]\n");
    manifest
}

/// How to start a function's bootstrap against this emulator and endpoint
/// (what Lambda's environment would give it).
#[derive(Clone, Debug)]
pub struct Bootstraps {
    bootstrap: PathBuf,
    /// The saga's own settings, as each bootstrap's environment.
    env: Vec<(String, String)>,
    table_prefix: String,
    invoke_url: String,
    dynamodb_url: String,
}

pub use jetsaga_lambda::function_name;

impl LambdaLocal {
    /// Starts the DynamoDB endpoint and the emulator (on `port`, or a free
    /// one) serving `functions`. `bootstrap` is the bootstrap binary, `env`
    /// the saga's settings every bootstrap gets; `table_prefix` prefixes
    /// the tables.
    pub fn start(
        bootstrap: PathBuf,
        functions: &[String],
        env: Vec<(String, String)>,
        port: Option<u16>,
        table_prefix: &str,
    ) -> Result<Self, String> {
        let dynamodb = DynamoEndpoint::start()?;
        let cargo_lambda = tools::find("cargo-lambda", HOW_TO_GET)?;
        let port = match port {
            Some(port) => port,
            None => tools::free_port().map_err(|e| e.to_string())?,
        };
        let dir = tempfile::Builder::new()
            .prefix("jetsaga-emulator-")
            .tempdir()
            .map_err(|e| format!("cannot make the emulator's directory: {e}"))?;
        let io = |e: std::io::Error| format!("cannot prepare the emulator's directory: {e}");
        std::fs::write(dir.path().join("Cargo.toml"), emulator_manifest(functions)).map_err(io)?;
        std::fs::write(dir.path().join("main.rs"), "fn main() {}\n").map_err(io)?;
        let log_path = dir.path().join("emulator.log");
        let log = std::fs::File::create(&log_path).map_err(io)?;
        let child = tools::tied_command(&cargo_lambda)
            .args(["lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", &port.to_string()])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", cargo_lambda.display()))?;
        let mut emulator = Process::new(child, "the cargo-lambda emulator");
        if let Err(e) = emulator.wait_for_port(port, Duration::from_secs(30)) {
            let said = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("{e}; it said:\n{}", said.trim_end()));
        }
        let invoke_url = format!("http://127.0.0.1:{port}");
        let bootstraps = Bootstraps {
            bootstrap,
            env,
            table_prefix: table_prefix.to_string(),
            invoke_url: invoke_url.clone(),
            dynamodb_url: dynamodb.url.clone(),
        };
        Ok(Self { dynamodb, invoke_url, _emulator: emulator, functions: Vec::new(), bootstraps, _emulator_dir: dir })
    }

    /// How to start bootstraps against this emulator (to run and restart
    /// them yourself, as the chaos suite does).
    pub fn bootstraps(&self) -> &Bootstraps {
        &self.bootstraps
    }

    /// Starts `function`'s bootstrap with `env` besides its usual
    /// environment (a gateway's server and secret, say).
    pub fn spawn_with(&mut self, function: &str, env: &[(&str, &str)]) -> Result<(), String> {
        let mut command = self.bootstraps.command(function)?;
        command.envs(env.iter().copied());
        let child = command.stderr(Stdio::inherit()).spawn().map_err(|e| format!("cannot start {function}: {e}"))?;
        self.functions.push(Process::new(child, function_name(function)));
        Ok(())
    }

    /// A function's Function URL under the emulator (`…/lambda-url/jetsaga-<function>`).
    pub fn function_url(&self, function: &str) -> String {
        format!("{}/lambda-url/{}", self.invoke_url, function_name(function))
    }

    /// Starts one function's bootstrap, polling the emulator's Runtime API
    /// as it would poll Lambda's; it lives as long as this.
    pub fn spawn(&mut self, function: &str) -> Result<(), String> {
        self.spawn_with(function, &[])
    }
}

impl Bootstraps {
    /// The command that runs `function`'s bootstrap (a [`tools::tied_command`],
    /// stdout discarded, stderr left to the caller).
    pub fn command(&self, function: &str) -> Result<std::process::Command, String> {
        let binary = &self.bootstrap;
        if !binary.is_file() {
            return Err(format!("no bootstrap binary at {}: build it first", binary.display()));
        }
        let lambda_name = function_name(function);
        let mut command = tools::tied_command(binary);
        command
            .env("AWS_LAMBDA_FUNCTION_NAME", &lambda_name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_RUNTIME_API", format!("{}/.rt/{lambda_name}", self.invoke_url))
            .env("AWS_ENDPOINT_URL", &self.dynamodb_url)
            .env("JETSAGA_CREATE_TABLE", "1")
            .env("JETSAGA_FUNCTION", function)
            .env("JETSAGA_TABLE", format!("{}{function}", self.table_prefix))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null());
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
        Ok(command)
    }
}
