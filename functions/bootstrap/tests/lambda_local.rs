//! The saga scenarios with every function running as its real `bootstrap`
//! binary under cargo-lambda's runtime emulator, storing in a
//! DynamoDB-compatible endpoint (moto), fed by the JetStream→Lambda bridge,
//! against a real nats-server. Choreographed and orchestrated.

use jetsaga_events::SagaMode;
use jetsaga_tests::saga::{Backend, Setup};

/// The bootstrap binary cargo built for these tests.
const BOOTSTRAP: &str = env!("CARGO_BIN_EXE_jetsaga-bootstrap");

macro_rules! on_lambda {
    ($module:ident, $mode:expr, [$($name:ident),* $(,)?]) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    jetsaga_tests::scenarios::$name(Setup { backend: Backend::Lambda(BOOTSTRAP), mode: $mode }).await;
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
                a_step_that_never_answers_fails_the_order_in_time_and_its_late_answer_is_refunded,
                completed_orders_earn_loyalty_points,
                users_sign_up_and_log_in_without_secrets_in_any_stream,
                out_of_stock,
                payment_under_a_dollar_fails_and_a_dollar_succeeds,
                insufficient_credit,
                cancel_before_shipping_releases_everything_and_refunds,
                cancel_after_completion_is_refused_and_changes_nothing,
                the_same_create_twice_makes_one_order,
                orders_racing_for_the_last_unit_have_one_winner,
                events_committed_while_the_stream_refuses_them_are_published_once_it_takes_them,
            ]
        );
    };
}

lambda_scenarios!(choreographed, SagaMode::Choreographed);
lambda_scenarios!(orchestrated, SagaMode::Orchestrated);
