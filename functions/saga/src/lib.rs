//! The order saga's definition: which functions it has, in which saga
//! mode each runs, and how each is built.
//!
//! This list is the only place that names the saga's functions. The
//! runner (`jetsaga up --function`), the Lambda bootstrap, local Lambda
//! mode, the bridge, the CloudFormation and NATS-permission generators,
//! `jetsaga status`, the test harness, the chaos suite and the benchmark
//! all read it; what a function subscribes to, accepts, emits and serves
//! comes from its [`FunctionSpec`]. Adding a function is its crate, its
//! events in the catalog and one line in [`STEPS`] (see
//! `docs/writing-a-function.md`).

use std::sync::Arc;

use jetsaga_core::{Function, FunctionSpec};
pub use jetsaga_customer::DEFAULT_CREDIT_LIMIT_CENTS as DEFAULT_SIGN_UP_CREDIT_CENTS;
use jetsaga_events::SagaMode;
pub use jetsaga_order::{DEFAULT_KEEP_ENDED, Deadlines, OrderLimits, human, parse_retention, parse_wait};

/// The saga's functions, in flow order (the order the runner lists them).
pub static STEPS: &[Step] = &[
    Step::only(SagaMode::Choreographed, |o| {
        Arc::new(jetsaga_order::Orders {
            mode: o.mode,
            deadlines: o.deadlines.clone(),
            limits: o.order_limits,
            keep_ended: o.keep_ended_orders,
        })
    }),
    Step::only(SagaMode::Orchestrated, |o| {
        Arc::new(jetsaga_order::Orders {
            mode: o.mode,
            deadlines: o.deadlines.clone(),
            limits: o.order_limits,
            keep_ended: o.keep_ended_orders,
        })
    }),
    Step::both(|o| Arc::new(jetsaga_inventory::Inventory { mode: o.mode })),
    Step::both(|o| {
        Arc::new(jetsaga_customer::CustomerCredit { mode: o.mode, sign_up_credit_cents: o.sign_up_credit_cents })
    }),
    Step::both(|o| Arc::new(jetsaga_payment::Payments { mode: o.mode })),
    Step::both(|o| Arc::new(jetsaga_shipping::Shipping::new(o.mode, o.shipping_failure_rate))),
    Step::both(|_| Arc::new(jetsaga_loyalty::Loyalty)),
    Step::both(|_| Arc::new(jetsaga_users::Users)),
];

/// One registered function.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    /// The saga modes it runs in.
    pub modes: &'static [SagaMode],
    /// Builds it for a saga mode and the demo knobs.
    pub build: fn(&SagaOptions) -> Arc<dyn Function>,
}

impl Step {
    /// A function of both saga modes (it reads `options.mode` to pick its
    /// subscriptions).
    pub const fn both(build: fn(&SagaOptions) -> Arc<dyn Function>) -> Self {
        Self { modes: &[SagaMode::Choreographed, SagaMode::Orchestrated], build }
    }

    /// A function of one saga mode only.
    pub const fn only(mode: SagaMode, build: fn(&SagaOptions) -> Arc<dyn Function>) -> Self {
        Self {
            modes: match mode {
                SagaMode::Choreographed => &[SagaMode::Choreographed],
                SagaMode::Orchestrated => &[SagaMode::Orchestrated],
            },
            build,
        }
    }

    /// Whether it runs in `mode`.
    pub fn runs_in(&self, mode: SagaMode) -> bool {
        self.modes.contains(&mode)
    }

    /// Its declaration in `mode` (or in the one mode it runs in).
    pub fn spec(&self, mode: SagaMode) -> &'static FunctionSpec {
        let mode = if self.runs_in(mode) { mode } else { self.modes[0] };
        (self.build)(&SagaOptions { mode, ..SagaOptions::default() }).spec()
    }

    /// Its name (the durable consumer's, the store's, the NATS user's).
    pub fn name(&self) -> &'static str {
        self.spec(self.modes[0]).name
    }
}

/// Knobs of the demo saga.
#[derive(Clone, Debug)]
pub struct SagaOptions {
    /// Share of shipments that fail (0.0–1.0).
    pub shipping_failure_rate: f64,
    /// Choreographed (events) or orchestrated (commands from one orchestrator).
    pub mode: SagaMode,
    /// How long an order waits for each step and in all (`None`: forever).
    pub deadlines: Option<jetsaga_order::Deadlines>,
    /// How many orders one customer may have under way, and start a minute.
    pub order_limits: jetsaga_order::OrderLimits,
    /// The credit a user's sign-up gives their customer, in cents.
    pub sign_up_credit_cents: u64,
    /// How long an ended order is kept before its store removes it.
    pub keep_ended_orders: std::time::Duration,
}

impl Default for SagaOptions {
    /// Choreographed, no failing shipments, the default deadlines (each step
    /// 30 s, the whole order 5 min).
    fn default() -> Self {
        Self {
            shipping_failure_rate: 0.0,
            mode: SagaMode::default(),
            deadlines: Some(jetsaga_order::Deadlines::default()),
            order_limits: jetsaga_order::OrderLimits::default(),
            sign_up_credit_cents: jetsaga_customer::DEFAULT_CREDIT_LIMIT_CENTS,
            keep_ended_orders: jetsaga_order::DEFAULT_KEEP_ENDED,
        }
    }
}

impl SagaOptions {
    /// Choreographed or orchestrated, with the knobs at their defaults.
    pub fn mode(mode: SagaMode) -> Self {
        Self { mode, ..Self::default() }
    }

    /// The names of the saga's functions in this mode, in flow order.
    pub fn names(&self) -> Vec<&'static str> {
        names(self.mode)
    }

    /// Every function of the saga in this mode, built with these knobs.
    pub fn functions(&self) -> Vec<Arc<dyn Function>> {
        STEPS.iter().filter(|s| s.runs_in(self.mode)).map(|s| (s.build)(self)).collect()
    }

    /// Builds the function called `name`; the error names the choices.
    pub fn function(&self, name: &str) -> Result<Arc<dyn Function>, String> {
        if let Some(step) = STEPS.iter().find(|s| s.runs_in(self.mode) && s.name() == name) {
            return Ok((step.build)(self));
        }
        let mode = mode_name(self.mode);
        let choices = self.names().join(", ");
        Err(match STEPS.iter().find(|s| s.name() == name) {
            Some(step) => format!(
                "the function {name:?} runs only in the {} saga, not the {mode} one: choose from {choices}",
                mode_name(step.modes[0])
            ),
            None => format!("no function {name:?} in the {mode} saga: choose from {choices}"),
        })
    }
}

/// The names of the saga's functions in `mode`, in flow order.
pub fn names(mode: SagaMode) -> Vec<&'static str> {
    STEPS.iter().filter(|s| s.runs_in(mode)).map(Step::name).collect()
}

/// The registered function called `name`, in whichever mode it runs.
pub fn step(name: &str) -> Option<&'static Step> {
    STEPS.iter().find(|s| s.name() == name)
}

/// Every function name of either mode, each once, in flow order.
pub fn all_names() -> Vec<&'static str> {
    STEPS.iter().map(Step::name).collect()
}

/// `choreographed` or `orchestrated`, as the CLI and `JETSAGA_SAGA` spell it.
pub fn mode_name(mode: SagaMode) -> &'static str {
    match mode {
        SagaMode::Choreographed => "choreographed",
        SagaMode::Orchestrated => "orchestrated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_has_one_name_in_every_mode_it_runs_in() {
        for step in STEPS {
            for mode in step.modes {
                assert_eq!(step.spec(*mode).name, step.name(), "a function keeps its name across modes");
            }
        }
        let mut names = all_names();
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count, "function names are unique: {names:?}");
    }

    #[test]
    fn asking_for_a_function_of_the_other_mode_says_so() {
        let choreographed = SagaOptions::mode(SagaMode::Choreographed);
        assert_eq!(choreographed.function("inventory").unwrap().spec().name, "inventory");
        let err = choreographed.function("orchestrator").err().unwrap();
        assert!(err.contains("runs only in the orchestrated saga"), "{err}");
        let err = choreographed.function("nope").err().unwrap();
        assert!(
            err.starts_with("no function \"nope\" in the choreographed saga: choose from order, inventory"),
            "{err}"
        );
    }
}
