//! The jetsaga local runner and CLI (`jetsaga`).
//!
//! - [`cli`]: the command line (`up`, `order`, `products`, `customers`,
//!   `trace`, `watch`, `status`, `dlq`).
//! - [`bench`]: `jetsaga bench`, throughput and latency against raw JetStream.
//! - [`bridge`]: the JetStream→Lambda bridge (`jetsaga bridge`).
//! - [`chaos`]: `jetsaga chaos`, the fault-injection suite; [`invariants`]: what it checks.
//! - [`up`]: starts or finds nats-server, provisions, hosts functions, seeds demo data.
//! - [`saga`]: the saga's functions and their stores.
//! - [`server`]: finding and starting nats-server; [`tools`]: finding and
//!   running external tools; [`lambda_local`]: the functions as Lambda
//!   bootstraps under cargo-lambda's emulator (`up --lambda`).
//! - [`client`]: commands and queries over request/reply.
//! - [`infra`]: the generated CloudFormation template and NATS configuration.
//! - [`flow`]: readable event lines; [`inspect`]: trace, watch, status, DLQ.

pub mod bench;
pub mod bridge;
pub mod chaos;
pub mod cli;
pub mod client;
pub mod credentials;
pub mod flow;
pub mod gateway;
pub mod health;
pub mod inspect;
pub mod invariants;
pub mod lambda_local;
pub mod metrics;
pub mod saga;
pub mod up;

pub use jetsaga_runner::{server, tools};
