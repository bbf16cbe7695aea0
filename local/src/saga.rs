//! The saga's functions (defined once, in `jetsaga-saga`) and their
//! stores: how each is paired with its storage backend.

use jetsaga_core::Engine;

pub use jetsaga_saga::{Deadlines, OrderLimits, SagaOptions, all_names, human, mode_name, names};

/// The runtime's configuration for the saga: every process asks for the
/// same streams, whichever functions it hosts.
pub fn runtime_config(options: &SagaOptions) -> jetsaga_jetstream::Config {
    let functions = options.functions();
    jetsaga_jetstream::Config::default().for_saga(functions.iter().map(|f| f.spec()))
}

/// Every function's declaration in every saga mode it runs in.
pub fn every_spec() -> Vec<&'static jetsaga_core::FunctionSpec> {
    jetsaga_saga::STEPS.iter().flat_map(|step| step.modes.iter().map(|mode| step.spec(*mode))).collect()
}

/// The commands the functions called `names` accept (what a process
/// hosting them can be sent).
pub fn accepted_commands(options: &SagaOptions, names: &[String]) -> Vec<&'static str> {
    names.iter().filter_map(|n| options.function(n).ok()).flat_map(|f| f.spec().accepts.iter().copied()).collect()
}

/// Whether the function called `name` consumes the saga stream (it
/// subscribes to something, in either mode).
pub fn subscribes(name: &str) -> bool {
    jetsaga_saga::step(name).is_some_and(|step| step.modes.iter().any(|mode| !step.spec(*mode).subscribes.is_empty()))
}

pub use jetsaga_runner::stores::StoreConfig;

/// The functions called `names`, paired with their stores.
pub async fn engines(stores: &StoreConfig, names: &[String], options: &SagaOptions) -> Result<Vec<Engine>, String> {
    let functions = names.iter().map(|name| options.function(name)).collect::<Result<Vec<_>, _>>()?;
    stores.engines(functions).await.map_err(|e| format!("{e:#}"))
}
