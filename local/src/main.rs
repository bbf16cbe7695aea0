//! `jetsaga`: see `jetsaga --help`.

use clap::Parser;

/// glibc's allocator was a fifth of the runner's CPU under load (its
/// arenas consolidate and unlink chunks on every other free); mimalloc's
/// thread-local free lists make the many short-lived envelopes, rows and
/// buffers of a batch cheap.
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
