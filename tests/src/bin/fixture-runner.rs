//! Hosts the test `ledger` function in its own process, so tests can kill
//! it at the worst moment. Configured by environment:
//! `NATS_URL`, `JETSAGA_DATA_DIR` (SQLite files), `JETSAGA_CRASH_AFTER_COMMIT`
//! (set: abort right after a commit, before publishing), `JETSAGA_ACK_WAIT_MS`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jetsaga_core::{Engine, Incoming, OutboxRecord, Outcome, Processor, QueryError, StoreError, async_trait};
use jetsaga_jetstream::{Config, Runtime};
use jetsaga_sql::{Durability, SqliteStore};
use jetsaga_tests::ledger::Ledger;

/// The engine, except that the process aborts right after a batch that
/// emitted events is committed and before the runtime publishes them: the
/// worst moment for a crash, which the outbox relay must recover from.
/// (The hook lives here, in the test fixture, not in the runtime.)
#[derive(Debug)]
struct CrashAfterCommit(Engine);

#[async_trait]
impl Processor for CrashAfterCommit {
    fn spec(&self) -> &'static jetsaga_core::FunctionSpec {
        self.0.spec()
    }

    async fn process(&self, batch: &[Incoming]) -> Vec<Outcome> {
        let outcomes = self.0.process(batch).await;
        if outcomes.iter().any(|o| o.outbox().is_some_and(|records| !records.is_empty())) {
            tracing::error!("JETSAGA_CRASH_AFTER_COMMIT is set: aborting after the commit, before publishing");
            std::process::abort();
        }
        outcomes
    }

    async fn query(&self, subject: &str, request: &[u8]) -> Result<serde_json::Value, QueryError> {
        Processor::query(&self.0, subject, request).await
    }

    async fn unpublished(&self, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        self.0.unpublished(limit).await
    }

    async fn mark_published(&self, ids: &[String]) -> Result<(), StoreError> {
        self.0.mark_published(ids).await
    }

    async fn sweep_inbox(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.0.sweep_inbox(before).await
    }

    async fn sweep_expired(&self, now: i64) -> Result<u64, StoreError> {
        self.0.sweep_expired(now).await
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    jetsaga_tests::init_tracing();
    let url = std::env::var("NATS_URL")?;
    let dir = std::env::var("JETSAGA_DATA_DIR")?;
    let mut config = Config::default();
    if let Ok(ms) = std::env::var("JETSAGA_ACK_WAIT_MS") {
        config.ack_wait = Duration::from_millis(ms.parse()?);
    }
    let store = SqliteStore::open(format!("{dir}/ledger.db"), Durability::Normal).await?;
    let client = async_nats::connect(url).await?;
    let engine = Engine::new(Arc::new(Ledger::default()), Arc::new(store));
    let runtime = Runtime::new(client, config);
    let runtime = if std::env::var_os("JETSAGA_CRASH_AFTER_COMMIT").is_some() {
        runtime.with(CrashAfterCommit(engine))
    } else {
        runtime.with(engine)
    };
    runtime.run(async { tokio::signal::ctrl_c().await.unwrap() }).await?;
    Ok(())
}
