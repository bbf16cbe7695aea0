//! The runner library: what any saga's own binary gets by handing its
//! saga to a [`Runner`], as restate's `Endpoint::builder().bind(..)` or
//! axum's `serve` do for a service.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! struct Trip;
//! impl jetsaga_runner::Saga for Trip {
//!     fn name(&self) -> &str { "travel" }
//!     fn functions(&self) -> Vec<Arc<dyn jetsaga_core::Function>> { Vec::new() }
//! }
//!
//! /// The saga's own options (none here).
//! #[derive(Debug, clap::Args)]
//! struct TripOptions {}
//!
//! fn main() -> std::process::ExitCode {
//!     jetsaga_runner::Runner::main(|_: &TripOptions| jetsaga_runner::Runner::new(Trip))
//! }
//! ```
//!
//! - [`Saga`]: what the runner needs to know of a saga (its name and functions).
//! - [`cli`]: the verbs (`up`, `run`, `status`, `dlq`, `trace`, `watch`, `chaos`, `bench`).
//! - [`host`]: hosting functions on a NATS server, ours or one already running.
//! - [`stores`]: where functions keep their state (SQLite files, PostgreSQL schemas).
//! - [`inspect`]: read-only views of the streams; [`history`]: reading a stream whole.
//! - [`bench`]: sagas per second and latency against raw JetStream, with the saga's workload.
//! - [`chaos`]: fault injection over any saga, with the saga's own workload and invariants.
//! - [`lambda`] (feature `lambda`): the binary as a Lambda bootstrap, and the JetStream→Lambda bridge;
//!   [`lambda_local`]: the functions' bootstraps under cargo-lambda's emulator, storing in moto.
//! - [`cloudformation`]: the saga's AWS template (`infra`); [`metrics`]: the lines its alarms read;
//!   [`cost`] (feature `lambda`): what sagas cost on Lambda, from what the invocations reported.
//! - [`connect`]: connecting as an operator, waiting for functions.
//! - [`server`], [`tools`]: finding and starting nats-server and other local tools.

pub mod bench;
pub mod chaos;
pub mod cli;
pub mod cloudformation;
pub mod connect;
#[cfg(feature = "lambda")]
pub mod cost;
pub mod history;
pub mod host;
pub mod inspect;
#[cfg(feature = "lambda")]
pub mod lambda;
#[cfg(feature = "lambda")]
pub mod lambda_local;
pub mod metrics;
pub mod server;
pub mod stores;
pub mod tools;

use std::sync::Arc;

use jetsaga_core::{Function, FunctionSpec};
use jetsaga_envelope::Envelope;

pub use chaos::{Finding, History, Invariants, Workload};
pub use cli::{Runner, Verb};

/// A saga as the runner sees it: a name and its functions. Everything
/// else (streams, permissions, consumers) is derived from the functions'
/// declarations.
pub trait Saga: Send + Sync + 'static {
    /// Short and lowercase (`travel`): names the streams (`TRAVEL`,
    /// `TRAVEL_DLQ`, …) unless [`Saga::runtime_config`] says otherwise,
    /// and the default data directory (`.travel`).
    fn name(&self) -> &str;

    /// Every function, in the order a saga reaches them.
    fn functions(&self) -> Vec<Arc<dyn Function>>;

    /// The configuration every process of the saga runs with: the streams
    /// named after the saga, capturing every subject its functions declare.
    fn runtime_config(&self) -> jetsaga_jetstream::Config {
        let functions = self.functions();
        jetsaga_jetstream::Config::named(self.name()).for_saga(functions.iter().map(|f| f.spec()))
    }

    /// One readable line for an event (`up`, `watch`, `trace`). The
    /// default: its subject, its saga and its data.
    fn describe(&self, event: &Envelope) -> String {
        format!("{:<28} {:<16} {}", event.event_type, event.saga_key.as_deref().unwrap_or("-"), event.data)
    }
}

/// Every function's declaration.
pub fn specs(saga: &dyn Saga) -> Vec<&'static FunctionSpec> {
    saga.functions().iter().map(|f| f.spec()).collect()
}
