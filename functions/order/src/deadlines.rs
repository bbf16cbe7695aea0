//! How long an order waits for each step and in all, as settings write
//! it (`30s,payment=10s`) and as a failed order's reason says it.

use super::*;

/// How long an order may wait for each step, and in all, before it fails
/// (and everything it holds is given back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// Each step's wait, by step name (`inventory`, `customer`, `payment`,
    /// `shipping`); [`Deadlines::step`] for the others.
    pub steps: std::collections::BTreeMap<String, std::time::Duration>,
    /// A step's wait unless `steps` says otherwise.
    pub step: std::time::Duration,
    /// The whole order's wait, from its creation to its end.
    pub saga: std::time::Duration,
}

/// A step's wait by default.
pub const DEFAULT_STEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// An order's wait in all by default.
pub const DEFAULT_SAGA_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// What the order waits for in each status it can still fail in.
pub const WAITS: [(OrderStatus, &str); 4] = [
    (OrderStatus::Pending, "inventory"),
    (OrderStatus::StockReserved, "customer"),
    (OrderStatus::CreditReserved, "payment"),
    (OrderStatus::Paid, "shipping"),
];

impl Default for Deadlines {
    fn default() -> Self {
        Self { steps: Default::default(), step: DEFAULT_STEP_TIMEOUT, saga: DEFAULT_SAGA_TIMEOUT }
    }
}

impl Deadlines {
    /// How long `step` may take.
    pub fn step(&self, step: &str) -> std::time::Duration {
        self.steps.get(step).copied().unwrap_or(self.step)
    }

    /// The deadline of an order created at `created` that enters `status` at `now`, if it waits for a step.
    pub(crate) fn for_status(
        &self,
        status: OrderStatus,
        created: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<PendingDeadline> {
        let (_, step) = WAITS.iter().find(|(s, _)| *s == status)?;
        let wait = self.step(step);
        let step_due = now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
        let saga_due = created + chrono::Duration::from_std(self.saga).unwrap_or(chrono::Duration::MAX);
        Some(if saga_due < step_due {
            PendingDeadline { waiting_for: "saga".into(), status, after_ms: millis(self.saga), due_at: saga_due }
        } else {
            PendingDeadline { waiting_for: step.to_string(), status, after_ms: millis(wait), due_at: step_due }
        })
    }
}

impl Deadlines {
    /// Deadlines from settings as people write them: `steps` each `30s`
    /// (every step) or `payment=10s` (one step), `saga` like `5m`. Waits
    /// are `<number><ms|s|m|h>` (a bare number is seconds), from 100 ms to 7 days.
    pub fn from_settings(steps: &[String], saga: Option<&str>) -> Result<Self, String> {
        let mut deadlines = Self::default();
        for setting in steps.iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
            match setting.split_once('=') {
                None => deadlines.step = parse_wait("step timeout", setting)?,
                Some((step, wait)) => {
                    let step = step.trim();
                    if !WAITS.iter().any(|(_, name)| *name == step) {
                        let names: Vec<&str> = WAITS.iter().map(|(_, name)| *name).collect();
                        return Err(format!(
                            "step timeout {setting:?}: {step:?} is not a step the order waits for (one of {})",
                            names.join(", ")
                        ));
                    }
                    deadlines.steps.insert(step.to_string(), parse_wait("step timeout", wait.trim())?);
                }
            }
        }
        if let Some(saga) = saga {
            deadlines.saga = parse_wait("saga timeout", saga.trim())?;
        }
        Ok(deadlines)
    }
}

impl Deadlines {
    /// The settings [`Deadlines::from_settings`] reads back: the step waits
    /// (`30000ms,payment=1000ms`) and the saga's (`300000ms`).
    pub fn settings(&self) -> (String, String) {
        let mut steps = vec![format!("{}ms", millis(self.step))];
        steps.extend(self.steps.iter().map(|(step, wait)| format!("{step}={}ms", millis(*wait))));
        (steps.join(","), format!("{}ms", millis(self.saga)))
    }
}

pub use jetsaga_core::duration::{human, parse_retention, parse_wait};

pub(crate) fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Why a deadline failed an order, in a person's words.
pub fn deadline_reason(deadline: &PendingDeadline) -> String {
    match deadline.waiting_for.as_str() {
        "saga" => format!("the order did not end within {}", human(deadline.after_ms)),
        step => format!("{step} did not answer within {}", human(deadline.after_ms)),
    }
}
