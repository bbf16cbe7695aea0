//! Settings the bootstrap binaries read from their Lambda environment.
//! Each binary in `src/bin/` is one saga function's `bootstrap`.

use jetsaga_events::SagaMode;

/// `JETSAGA_SAGA=orchestrated` selects the orchestrated saga; anything else, choreographed.
pub fn saga_mode() -> SagaMode {
    match std::env::var("JETSAGA_SAGA").as_deref() {
        Ok("orchestrated") => SagaMode::Orchestrated,
        _ => SagaMode::Choreographed,
    }
}

/// `JETSAGA_SHIPPING_FAILURE_RATE` (0.0–1.0, default 0).
pub fn shipping_failure_rate() -> f64 {
    std::env::var("JETSAGA_SHIPPING_FAILURE_RATE").ok().and_then(|v| v.parse().ok()).unwrap_or(0.0)
}
