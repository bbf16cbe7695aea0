//! Gauges of a function's store, read every so often for the process's
//! metrics (`Runtime::reporting_gauges`): the same reading the outbox
//! endpoint (`$JETSAGA.OUTBOX.<function>`, what `jetsaga status` shows) answers.
//!
//! - `jetsaga_outbox_unpublished{function}`: events committed, not yet published
//!   (counted up to 10,000);
//! - `jetsaga_outbox_oldest_age_seconds{function}`: how long the oldest of them
//!   has waited (0 when none);
//! - `jetsaga_inbox_size{function}`: inputs remembered for de-duplication
//!   (stores that can count them: SQLite, PostgreSQL);
//! - `jetsaga_dead_letters_unstored{function}`: dead letters the DLQ stream
//!   refused since the process started (their messages are kept and retried).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::publisher::Publisher;

/// Sets the gauges of `publisher`'s function every `every` until cancelled.
pub(crate) async fn report(publisher: Publisher, every: Duration, cancel: CancellationToken) {
    let function = publisher.engine.name();
    let mut ticks = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Ok(backlog) = crate::service::backlog(&publisher).await {
            if let Some(unpublished) = backlog["unpublished"].as_u64() {
                metrics::gauge!("jetsaga_outbox_unpublished", "function" => function).set(unpublished as f64);
                let age = backlog["oldest_age_ms"].as_u64().unwrap_or(0) as f64 / 1000.0;
                metrics::gauge!("jetsaga_outbox_oldest_age_seconds", "function" => function).set(age);
            }
            if let Some(unstored) = backlog["dead_letters_unstored"].as_u64() {
                metrics::gauge!("jetsaga_dead_letters_unstored", "function" => function).set(unstored as f64);
            }
        }
        match publisher.engine.inbox_size().await {
            Ok(Some(size)) => metrics::gauge!("jetsaga_inbox_size", "function" => function).set(size as f64),
            Ok(None) => {}
            Err(e) => tracing::debug!(function, error = %e, "inbox not counted"),
        }
    }
}
