//! The shop's functions and gateway under cargo-lambda's emulator: the
//! runner's harness ([`jetsaga_runner::lambda_local`]) with the shop's
//! bootstrap (`jetsaga-bootstrap`) and its settings as each bootstrap's
//! environment.

use std::path::{Path, PathBuf};

pub use jetsaga_lambda::{BOOTSTRAP_BINARY, GATEWAY_FUNCTION};
pub use jetsaga_runner::lambda_local::{Bootstraps, DynamoEndpoint, LambdaLocal, function_name};

use crate::saga::SagaOptions;

/// The bootstrap binary next to the running executable (cargo puts every
/// binary of the workspace in one directory).
pub fn bootstrap_beside_current_exe() -> PathBuf {
    let dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default();
    dir.join(BOOTSTRAP_BINARY)
}

/// Starts the emulator for every shop function and the gateway (see
/// [`LambdaLocal::start`]), each bootstrap configured by `options`.
pub fn start(
    bootstrap: PathBuf,
    options: &SagaOptions,
    port: Option<u16>,
    table_prefix: &str,
) -> Result<LambdaLocal, String> {
    let functions: Vec<String> =
        crate::saga::all_names().into_iter().chain([GATEWAY_FUNCTION]).map(String::from).collect();
    LambdaLocal::start(bootstrap, &functions, bootstrap_env(options), port, table_prefix)
}

/// The shop's settings as a bootstrap reads them (`jetsaga_bootstrap::options_from`).
pub fn bootstrap_env(options: &SagaOptions) -> Vec<(String, String)> {
    let mut env = vec![
        ("JETSAGA_SAGA".to_string(), crate::saga::mode_name(options.mode).to_string()),
        ("JETSAGA_SHIPPING_FAILURE_RATE".into(), options.shipping_failure_rate.to_string()),
        ("JETSAGA_MAX_ORDERS_IN_FLIGHT".into(), options.order_limits.in_flight.to_string()),
        ("JETSAGA_MAX_ORDERS_PER_MINUTE".into(), options.order_limits.per_minute.to_string()),
        ("JETSAGA_SIGN_UP_CREDIT_CENTS".into(), options.sign_up_credit_cents.to_string()),
        ("JETSAGA_KEEP_ENDED_ORDERS".into(), format!("{}m", options.keep_ended_orders.as_secs() / 60)),
    ];
    match &options.deadlines {
        Some(deadlines) => {
            let (steps, saga) = deadlines.settings();
            env.push(("JETSAGA_STEP_TIMEOUT".into(), steps));
            env.push(("JETSAGA_SAGA_TIMEOUT".into(), saga));
        }
        None => env.push(("JETSAGA_DEADLINES".into(), "off".into())),
    }
    env
}

/// Starts the HTTP gateway's bootstrap (`JETSAGA_FUNCTION=gateway`),
/// reaching the saga at `nats_url`; the emulator serves it at [`gateway_url`].
pub fn spawn_gateway(local: &mut LambdaLocal, nats_url: &str, jwt_secret: &str) -> Result<(), String> {
    local.spawn_with(GATEWAY_FUNCTION, &[("NATS_URL", nats_url), ("JETSAGA_JWT_SECRET", jwt_secret)])
}

/// The gateway's Function URL under the emulator (`…/lambda-url/jetsaga-gateway`).
pub fn gateway_url(local: &LambdaLocal) -> String {
    local.function_url(GATEWAY_FUNCTION)
}
