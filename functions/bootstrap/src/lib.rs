//! Settings the bootstrap reads from its Lambda environment. One binary
//! serves every saga function: `JETSAGA_FUNCTION` names the one this
//! Lambda runs (the template sets it per function), so a new function
//! needs no bootstrap of its own.

pub mod gateway;

use jetsaga_events::SagaMode;
use jetsaga_saga::SagaOptions;

/// Which function this Lambda runs.
pub const FUNCTION_VAR: &str = "JETSAGA_FUNCTION";

/// The saga mode and knobs from the environment: `JETSAGA_SAGA`
/// (`choreographed`, the default, or `orchestrated`) and
/// `JETSAGA_SHIPPING_FAILURE_RATE` (0.0–1.0, default 0); the order's
/// deadlines from `JETSAGA_STEP_TIMEOUT` (`30s`, or `30s,payment=10s`),
/// `JETSAGA_SAGA_TIMEOUT` (`5m`) and `JETSAGA_DEADLINES` (`on`, `off`); a
/// customer's orders under way and a minute from
/// `JETSAGA_MAX_ORDERS_IN_FLIGHT` (default 20) and
/// `JETSAGA_MAX_ORDERS_PER_MINUTE` (default 60; 0: no limit); the credit a
/// sign-up gives from `JETSAGA_SIGN_UP_CREDIT_CENTS` (default 10000); how
/// long ended orders are kept from `JETSAGA_KEEP_ENDED_ORDERS` (`30d`).
pub fn options_from(var: impl Fn(&str) -> Option<String>) -> Result<SagaOptions, String> {
    let mode = match var("JETSAGA_SAGA").as_deref() {
        None | Some("choreographed") => SagaMode::Choreographed,
        Some("orchestrated") => SagaMode::Orchestrated,
        Some(other) => return Err(format!("JETSAGA_SAGA={other:?}: expected choreographed or orchestrated")),
    };
    let shipping_failure_rate = match var("JETSAGA_SHIPPING_FAILURE_RATE") {
        None => 0.0,
        Some(text) => match text.parse::<f64>() {
            Ok(rate) if (0.0..=1.0).contains(&rate) => rate,
            _ => return Err(format!("JETSAGA_SHIPPING_FAILURE_RATE={text:?}: expected a number from 0 to 1")),
        },
    };
    let deadlines = match var("JETSAGA_DEADLINES").as_deref() {
        Some("off") => None,
        None | Some("on") => {
            let steps: Vec<String> = var("JETSAGA_STEP_TIMEOUT").into_iter().collect();
            let saga = var("JETSAGA_SAGA_TIMEOUT");
            Some(
                jetsaga_saga::Deadlines::from_settings(&steps, saga.as_deref())
                    .map_err(|e| format!("JETSAGA_STEP_TIMEOUT/JETSAGA_SAGA_TIMEOUT: {e}"))?,
            )
        }
        Some(other) => return Err(format!("JETSAGA_DEADLINES={other:?}: expected on or off")),
    };
    let defaults = jetsaga_saga::OrderLimits::default();
    let limit = |name: &str, default: usize| match var(name) {
        None => Ok(default),
        Some(text) => {
            text.parse::<usize>().map_err(|_| format!("{name}={text:?}: expected a whole number (0: no limit)"))
        }
    };
    let order_limits = jetsaga_saga::OrderLimits {
        in_flight: limit("JETSAGA_MAX_ORDERS_IN_FLIGHT", defaults.in_flight)?,
        per_minute: limit("JETSAGA_MAX_ORDERS_PER_MINUTE", defaults.per_minute)?,
    };
    let sign_up_credit_cents = match var("JETSAGA_SIGN_UP_CREDIT_CENTS") {
        None => jetsaga_saga::DEFAULT_SIGN_UP_CREDIT_CENTS,
        Some(text) => text
            .parse()
            .map_err(|_| format!("JETSAGA_SIGN_UP_CREDIT_CENTS={text:?}: expected cents, a whole number"))?,
    };
    let keep_ended_orders = match var("JETSAGA_KEEP_ENDED_ORDERS") {
        None => jetsaga_saga::DEFAULT_KEEP_ENDED,
        Some(text) => jetsaga_saga::parse_retention("JETSAGA_KEEP_ENDED_ORDERS", &text)?,
    };
    Ok(SagaOptions { mode, shipping_failure_rate, deadlines, order_limits, sign_up_credit_cents, keep_ended_orders })
}

/// The function this Lambda runs, from `JETSAGA_FUNCTION` and the options.
pub fn function_from(
    var: impl Fn(&str) -> Option<String>,
) -> Result<std::sync::Arc<dyn jetsaga_core::Function>, String> {
    let options = options_from(&var)?;
    let Some(name) = var(FUNCTION_VAR) else {
        return Err(format!(
            "{FUNCTION_VAR} is not set: it names the saga function this Lambda runs ({}), or `gateway` for the HTTP API",
            options.names().join(", ")
        ));
    };
    options.function(&name).map_err(|e| format!("{FUNCTION_VAR}={name:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn picks_the_named_function_in_the_named_mode() {
        let f = function_from(env(&[("JETSAGA_FUNCTION", "orchestrator"), ("JETSAGA_SAGA", "orchestrated")])).unwrap();
        assert_eq!(f.spec().name, "orchestrator");
    }

    #[test]
    fn a_missing_or_wrong_setting_says_what_is_accepted() {
        let err = function_from(env(&[])).err().unwrap();
        assert!(
            err.starts_with("JETSAGA_FUNCTION is not set: it names the saga function this Lambda runs (order, "),
            "{err}"
        );
        let err = function_from(env(&[("JETSAGA_FUNCTION", "orchestrator")])).err().unwrap();
        assert!(err.contains("runs only in the orchestrated saga"), "{err}");
        let err = options_from(env(&[("JETSAGA_SAGA", "chaotic")])).err().unwrap();
        assert_eq!(err, "JETSAGA_SAGA=\"chaotic\": expected choreographed or orchestrated");
        let err = options_from(env(&[("JETSAGA_SHIPPING_FAILURE_RATE", "2")])).err().unwrap();
        assert_eq!(err, "JETSAGA_SHIPPING_FAILURE_RATE=\"2\": expected a number from 0 to 1");
    }
}
