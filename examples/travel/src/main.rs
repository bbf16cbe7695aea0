//! `travel`: the trip saga's own binary. The runner library gives it
//! `up`, `run`, `status`, `trace`, `watch`, `dlq` and `chaos`; see
//! `travel --help`.
//!
//! ```sh
//! travel up                    # its own nats-server, every function, events as they flow
//! nats req flights.cmd.add_seats '{"resource":"LH-400","count":10}'
//! nats req trips.cmd.book '{"trip_id":"t-1","traveler":"ada","itinerary":{"flight":"LH-400","hotel":"h-harbour","car":"car-jfk","nights":3}}'
//! travel trace t-1
//! travel chaos --sagas 300     # kills, pauses and server restarts; the trip's own invariants
//! ```

use std::time::Duration;

use travel_saga::TravelSaga;

/// The trip saga's own options.
#[derive(Debug, clap::Args)]
struct TripOptions {
    /// How long a trip may take before it fails and gives everything back (`60s`, `5m`).
    #[arg(long, global = true, env = "TRAVEL_DEADLINE", default_value = "60s", value_parser = |s: &str| jetsaga_core::duration::parse_wait("--deadline", s))]
    deadline: Duration,
}

fn main() -> std::process::ExitCode {
    jetsaga_runner::Runner::main(|options: &TripOptions| {
        jetsaga_runner::Runner::new(TravelSaga { deadline: options.deadline })
            .with_chaos(travel_saga::chaos::Trips, travel_saga::chaos::TripLedger)
            .forward(["--deadline".to_string(), format!("{}ms", options.deadline.as_millis())])
    })
}
