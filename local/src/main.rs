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
    let cli = jetsaga_local::cli::Cli::parse();
    let format = cli.log_format;
    jetsaga_local::cli::init_logging(format);
    // Spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT asks; flushed when dropped at exit.
    let spans = jetsaga_otel::install(cli.service_name()).map_err(anyhow::Error::from);
    let result = match spans {
        Ok(spans) => cli.run().await.map(|()| drop(spans)),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // It ran, and found problems (chaos): 1; it could not run: 2.
        Err(e) if e.downcast_ref::<jetsaga_runner::chaos::Found>().is_some() => {
            eprintln!("{e}: see above");
            std::process::ExitCode::from(1)
        }
        Err(e) if format == jetsaga_local::cli::LogFormat::Json => {
            // Every line of a JSON log is JSON, the last word too.
            tracing::error!(error = format!("{e:#}"), "jetsaga stopped on an error");
            std::process::ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
