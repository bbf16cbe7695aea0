//! A second saga on jetsaga: a trip books a flight, then a hotel, then a
//! car, and either all three are kept or every one is given back.
//!
//! Built only on the framework's public API (`jetsaga-core` for the
//! handler contract, `jetsaga-jetstream` for the runtime, `jetsaga-sql` for
//! the stores), as a crate outside the repository would be. What that took,
//! and what it could not get for free, is in `examples/travel/README.md`.

pub mod booking;
pub mod chaos;
pub mod events;
pub mod trip;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jetsaga_core::{Engine, Function, FunctionSpec};
use jetsaga_sql::{Durability, SqliteStore};

pub use booking::Booking;
pub use trip::{Trip, TripFunction, TripStatus};

/// The saga's functions, in the order a trip reaches them.
pub fn functions(deadline: Duration) -> Vec<Arc<dyn Function>> {
    vec![
        Arc::new(TripFunction { deadline }),
        Arc::new(Booking::Flight),
        Arc::new(Booking::Hotel),
        Arc::new(Booking::Car),
    ]
}

/// Every function's declaration.
pub fn specs() -> Vec<&'static FunctionSpec> {
    vec![&trip::TRIP, &booking::FLIGHT, &booking::HOTEL, &booking::CAR]
}

/// The trip saga, as the runner ([`jetsaga_runner::Runner`]) runs it:
/// its streams are `TRAVEL`, `TRAVEL_DLQ`, `TRAVEL_COMMANDS` and
/// `TRAVEL_CLAIMS`, so it can share a NATS account with another saga.
#[derive(Clone, Copy, Debug)]
pub struct TravelSaga {
    /// How long a trip may take before it fails and gives everything back.
    pub deadline: Duration,
}

impl jetsaga_runner::Saga for TravelSaga {
    fn name(&self) -> &str {
        "travel"
    }

    fn functions(&self) -> Vec<Arc<dyn Function>> {
        functions(self.deadline)
    }

    fn describe(&self, event: &jetsaga_envelope::Envelope) -> String {
        describe(event)
    }
}

/// The runtime's configuration: every process asks for the same streams,
/// whichever functions it hosts.
pub fn runtime_config() -> jetsaga_jetstream::Config {
    jetsaga_jetstream::Config::named("travel").for_saga(specs())
}

/// An event in a traveler's words: `t-1  flight LH-400 booked`.
pub fn describe(event: &jetsaga_envelope::Envelope) -> String {
    let trip = event.saga_key.as_deref().unwrap_or("-");
    let field = |name: &str| event.data[name].as_str().unwrap_or("?").to_string();
    let itinerary = |name: &str| event.data["itinerary"][name].as_str().unwrap_or("?").to_string();
    let what = match event.event_type.as_str() {
        "trips.evt.requested" => {
            format!("requested: flight {}, hotel {}, car {}", itinerary("flight"), itinerary("hotel"), itinerary("car"))
        }
        "flights.evt.booked" => format!("flight {} booked", itinerary("flight")),
        "hotels.evt.booked" => format!("hotel {} booked", itinerary("hotel")),
        "cars.evt.booked" => "car booked".to_string(),
        "flights.evt.refused" | "hotels.evt.refused" | "cars.evt.refused" => {
            format!("{} refused: {}", event.event_type.split('.').next().unwrap_or("?"), field("reason"))
        }
        "trips.evt.confirmed" => "CONFIRMED: flight, hotel and car".to_string(),
        "trips.evt.failed" => format!("FAILED: {} (everything held is given back)", field("reason")),
        "trips.evt.deadline_passed" => "deadline passed".to_string(),
        other => format!("{other} {}", event.data),
    };
    format!("{trip:<14} {what}")
}

/// The functions called `names` (all when empty), each over its own SQLite file in `dir`.
pub async fn engines(dir: &Path, names: &[String], deadline: Duration) -> anyhow::Result<Vec<Engine>> {
    std::fs::create_dir_all(dir)?;
    let mut engines = Vec::new();
    for function in functions(deadline) {
        let name = function.spec().name;
        if !names.is_empty() && !names.iter().any(|n| n == name) {
            continue;
        }
        let store = SqliteStore::open(dir.join(format!("{name}.db")), Durability::Normal).await?;
        engines.push(Engine::new(function, Arc::new(store)));
    }
    Ok(engines)
}
