//! `travel`: runs the trip saga's functions on a NATS JetStream server.
//!
//! ```sh
//! travel --nats-url nats://127.0.0.1:4222 --data-dir .travel
//! nats req flights.cmd.add_seats '{"resource":"LH-400","count":10}'
//! nats req trips.cmd.book '{"trip_id":"t-1","traveler":"ada","itinerary":{"flight":"LH-400","hotel":"h-harbour","car":"car-jfk","nights":3}}'
//! nats req trips.query.get '{"trip_id":"t-1"}'
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Run the trip saga's functions (all, or those named) with SQLite stores.
#[derive(Debug, Parser)]
struct Args {
    /// The NATS server (2.14+: deadlines are message schedules).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Where each function keeps its SQLite file.
    #[arg(long, default_value = ".travel")]
    data_dir: PathBuf,
    /// Host only this function (repeat for several): trip, flights, hotels, cars.
    #[arg(long = "function", value_name = "NAME")]
    functions: Vec<String>,
    /// Seconds a trip may take before it fails and gives everything back.
    #[arg(long, default_value_t = 60)]
    deadline_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").with_writer(std::io::stderr).init();
    let args = Args::parse();
    let deadline = Duration::from_secs(args.deadline_secs);
    let nats = async_nats::connect(&args.nats_url).await?;
    let mut runtime = jetsaga_jetstream::Runtime::new(nats, travel_saga::runtime_config());
    for engine in travel_saga::engines(&args.data_dir, &args.functions, deadline).await? {
        runtime = runtime.with(engine);
    }
    runtime
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
