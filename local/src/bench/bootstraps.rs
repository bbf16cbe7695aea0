//! `jetsaga bench --bootstraps`: the Lambda bootstrap's size and start-up
//! time as each function.

use std::process::Stdio;
use std::time::Instant;

use serde::Serialize;

/// Size and start-up time of the bootstrap as one function.
#[derive(Debug, Serialize)]
pub struct BootstrapFigure {
    /// The function it ran as.
    pub name: String,
    /// Size on disk.
    pub bytes: u64,
    /// Start-up of the first run (cold page cache, as after a deploy).
    pub first_init_ms: f64,
    /// Median start-up over the following runs.
    pub median_init_ms: f64,
}

/// Starts the bootstrap in `dir` (cargo's output `jetsaga-bootstrap`, or
/// cargo-lambda's `--lambda-dir` layout `jetsaga-bootstrap/bootstrap`) as
/// each saga function in turn against a stand-in Runtime API (a listening
/// socket) and times process start to the first `GET
/// /2018-06-01/runtime/invocation/next`, as Lambda's init phase ends there.
pub fn measure_bootstraps(dir: &std::path::Path, runs: usize) -> anyhow::Result<Vec<BootstrapFigure>> {
    use std::io::Read;
    let name = crate::lambda_local::BOOTSTRAP_BINARY;
    let Some(binary) = [dir.join(name).join("bootstrap"), dir.join(name)].into_iter().find(|p| p.is_file()) else {
        anyhow::bail!(
            "no {name} bootstrap in {} (build it with `cargo lambda build --profile lambda -p jetsaga-bootstrap`)",
            dir.display()
        );
    };
    let mut figures = Vec::new();
    for function in crate::saga::all_names() {
        // The orchestrator exists only in the orchestrated saga.
        let mode = jetsaga_saga::step(function).map_or(jetsaga_events::SagaMode::Choreographed, |s| s.modes[0]);
        let mut times = Vec::new();
        for _ in 0..runs.max(2) {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            let port = listener.local_addr()?.port();
            let started = Instant::now();
            let mut child = std::process::Command::new(&binary)
                .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}"))
                .env("AWS_LAMBDA_FUNCTION_NAME", crate::lambda_local::function_name(function))
                .env("JETSAGA_FUNCTION", function)
                .env("JETSAGA_SAGA", crate::saga::mode_name(mode))
                .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "bench")
                .env("AWS_SECRET_ACCESS_KEY", "bench")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let mut socket = first_poll(&listener, &mut child)
                .map_err(|e| anyhow::anyhow!("{} as {function}: {e}", binary.display()))?;
            let mut request = [0u8; 256];
            let n = socket.read(&mut request)?;
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            let _ = child.kill();
            let _ = child.wait();
            if !String::from_utf8_lossy(&request[..n]).contains("/runtime/invocation/next") {
                anyhow::bail!("{} did not poll for its next invocation first", binary.display());
            }
            times.push(elapsed);
        }
        let first = times.remove(0);
        figures.push(BootstrapFigure {
            name: function.to_string(),
            bytes: std::fs::metadata(&binary)?.len(),
            first_init_ms: first,
            median_init_ms: jetsaga_runner::bench::Latency::of(times).p50_ms,
        });
    }
    Ok(figures)
}

/// Waits for the bootstrap's first connection to the Runtime API; a
/// bootstrap that exits first (a bad setting) or never polls is an error,
/// not a hang.
fn first_poll(
    listener: &std::net::TcpListener,
    child: &mut std::process::Child,
) -> anyhow::Result<std::net::TcpStream> {
    listener.set_nonblocking(true)?;
    let started = Instant::now();
    loop {
        match listener.accept() {
            Ok((socket, _)) => {
                socket.set_nonblocking(false)?;
                return Ok(socket);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("exited ({status}) before polling for an invocation: run it by hand to see why");
        }
        if started.elapsed() > std::time::Duration::from_secs(10) {
            let _ = child.kill();
            anyhow::bail!("did not poll for an invocation within 10 s");
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bootstrap_that_exits_before_polling_is_an_error_not_a_hang() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join(crate::lambda_local::BOOTSTRAP_BINARY);
        std::fs::write(&fake, "#!/bin/sh\nexit 3\n").unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let started = Instant::now();
        let err = measure_bootstraps(dir.path(), 2).unwrap_err().to_string();
        assert!(err.contains("as order: exited (exit status: 3) before polling for an invocation"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
