//! `jetsaga`: see `jetsaga --help`.

use clap::Parser;

/// glibc's allocator was about a fifth of the runner's CPU at full speed
/// (bench/results/profile-runner-full-speed-round4.txt); mimalloc's
/// thread-local free lists make the many short-lived envelopes, rows and
/// buffers of a batch cheaper.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,jetsaga_jetstream=info,jetsaga_local=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match jetsaga_local::cli::Cli::parse().run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
