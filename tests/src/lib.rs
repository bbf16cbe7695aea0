//! End-to-end test support for jetsaga.
//!
//! - [`nats`]: a real nats-server per test (random port, temporary store,
//!   killed on drop), restartable, and a 3-node cluster.
//! - [`moto`]: a DynamoDB-compatible endpoint (moto's server) per test.
//! - [`ledger`]: a tiny function used to test the runtime itself.
//! - [`saga`]: the whole order saga, hosted in-process, for scenario tests.
//! - [`scenarios`]: the saga scenarios every deployment mode must pass.
//! - [`stream`]: reading what landed in a stream, waiting for conditions.

pub mod ledger;
pub mod moto;
pub mod nats;
pub mod saga;
pub mod scenarios;
pub mod stream;
pub mod tls;

/// Starts a `tracing` subscriber once, honouring `RUST_LOG` (quiet by default).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}
