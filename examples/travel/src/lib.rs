//! A second saga on jetsaga: a trip books a flight, then a hotel, then a
//! car, and either all three are kept or every one is given back.
//!
//! Built only on the framework's public API (`jetsaga-core` for the
//! handler contract, `jetsaga-jetstream` for the runtime, `jetsaga-sql` for
//! the stores), as a crate outside the repository would be. What that took,
//! and what it could not get for free, is in `examples/travel/README.md`.

pub mod booking;
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

/// The runtime's configuration: every process asks for the same streams,
/// whichever functions it hosts.
pub fn runtime_config() -> jetsaga_jetstream::Config {
    jetsaga_jetstream::Config {
        stream_subjects: jetsaga_jetstream::provision::stream_subjects(specs()).into_iter().collect(),
        command_subjects: jetsaga_jetstream::provision::command_subjects(specs()).into_iter().collect(),
        ..jetsaga_jetstream::Config::named("travel")
    }
    .with_saga(specs())
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
