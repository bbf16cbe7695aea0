//! Hosts the test `ledger` function in its own process, so tests can kill
//! it at the worst moment. Configured by environment:
//! `NATS_URL`, `JETSAGA_DATA_DIR` (SQLite files), `JETSAGA_CRASH_AFTER_COMMIT`
//! (function name: abort after commit, before publish), `JETSAGA_ACK_WAIT_MS`.

use std::sync::Arc;
use std::time::Duration;

use jetsaga_core::Engine;
use jetsaga_jetstream::{Config, Runtime};
use jetsaga_sql::{Durability, SqliteStore};
use jetsaga_tests::ledger::Ledger;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    jetsaga_tests::init_tracing();
    let url = std::env::var("NATS_URL")?;
    let dir = std::env::var("JETSAGA_DATA_DIR")?;
    let mut config =
        Config { crash_after_commit: std::env::var("JETSAGA_CRASH_AFTER_COMMIT").ok(), ..Config::default() };
    if let Ok(ms) = std::env::var("JETSAGA_ACK_WAIT_MS") {
        config.ack_wait = Duration::from_millis(ms.parse()?);
    }
    let store = SqliteStore::open(format!("{dir}/ledger.db"), Durability::Normal).await?;
    let client = async_nats::connect(url).await?;
    let runtime = Runtime::new(client, config).with(Engine::new(Arc::new(Ledger::default()), Arc::new(store)));
    runtime.run(async { tokio::signal::ctrl_c().await.unwrap() }).await?;
    Ok(())
}
