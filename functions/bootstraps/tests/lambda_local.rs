//! The saga scenarios with every function running as its real `bootstrap`
//! binary under cargo-lambda's runtime emulator, storing in a
//! DynamoDB-compatible endpoint (moto), fed by the JetStream→Lambda bridge,
//! against a real nats-server. Choreographed and orchestrated.

use std::path::PathBuf;

use jetsaga_events::SagaMode;
use jetsaga_tests::saga::{Backend, Setup};

/// The bootstrap binaries cargo built for these tests.
fn bootstrap(function: &str) -> PathBuf {
    PathBuf::from(match function {
        "order" => env!("CARGO_BIN_EXE_jetsaga-order"),
        "orchestrator" => env!("CARGO_BIN_EXE_jetsaga-orchestrator"),
        "inventory" => env!("CARGO_BIN_EXE_jetsaga-inventory"),
        "customer" => env!("CARGO_BIN_EXE_jetsaga-customer"),
        "payment" => env!("CARGO_BIN_EXE_jetsaga-payment"),
        "shipping" => env!("CARGO_BIN_EXE_jetsaga-shipping"),
        other => panic!("no bootstrap for {other}"),
    })
}

macro_rules! on_lambda {
    ($module:ident, $mode:expr, [$($name:ident),* $(,)?]) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    jetsaga_tests::scenarios::$name(Setup { backend: Backend::Lambda(bootstrap), mode: $mode }).await;
                }
            )*
        }
    };
}

macro_rules! lambda_scenarios {
    ($module:ident, $mode:expr) => {
        on_lambda!(
            $module,
            $mode,
            [
                happy_path,
                out_of_stock,
                payment_under_a_dollar_fails_and_a_dollar_succeeds,
                insufficient_credit,
                cancel_before_shipping_releases_everything_and_refunds,
                cancel_after_completion_is_refused_and_changes_nothing,
                the_same_create_twice_makes_one_order,
                orders_racing_for_the_last_unit_have_one_winner,
                events_committed_while_the_stream_is_full_are_published_once_it_is_not,
            ]
        );
    };
}

lambda_scenarios!(choreographed, SagaMode::Choreographed);
lambda_scenarios!(orchestrated, SagaMode::Orchestrated);
