//! The order saga end to end against a real nats-server: every scenario
//! runs choreographed and orchestrated, each on SQLite and on PostgreSQL.

use jetsaga_events::SagaMode;
use jetsaga_tests::saga::{Backend, Setup};

macro_rules! scenarios {
    ($module:ident, $backend:expr, [$($name:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    jetsaga_tests::scenarios::$name($backend).await;
                }
            )*
        }
    };
}

macro_rules! all_scenarios {
    ($module:ident, $backend:expr) => {
        scenarios!(
            $module,
            $backend,
            [
                happy_path,
                completed_orders_earn_loyalty_points,
                users_sign_up_and_log_in_without_secrets_in_any_stream,
                out_of_stock,
                unknown_product,
                payment_under_a_dollar_fails_and_a_dollar_succeeds,
                insufficient_credit,
                unknown_customer,
                multi_item_orders_are_all_or_nothing,
                repeated_lines_add_up,
                cancel_before_shipping_releases_everything_and_refunds,
                cancel_after_completion_is_refused_and_changes_nothing,
                orders_racing_for_the_last_unit_have_one_winner,
                the_same_create_twice_makes_one_order,
                garbage_on_the_command_subject_does_not_stop_the_next_order,
                a_failed_shipment_releases_everything_and_refunds,
                hundreds_of_concurrent_orders_all_end_and_stock_is_conserved,
            ]
        );
    };
}

all_scenarios!(
    choreographed_sqlite,
    super::Setup { backend: super::Backend::Sqlite, mode: super::SagaMode::Choreographed }
);
all_scenarios!(
    choreographed_postgres,
    super::Setup { backend: super::Backend::Postgres, mode: super::SagaMode::Choreographed }
);
all_scenarios!(
    orchestrated_sqlite,
    super::Setup { backend: super::Backend::Sqlite, mode: super::SagaMode::Orchestrated }
);
all_scenarios!(
    orchestrated_postgres,
    super::Setup { backend: super::Backend::Postgres, mode: super::SagaMode::Orchestrated }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_copies_share_the_work_on_sqlite() {
    jetsaga_tests::scenarios::two_copies_of_every_function_share_the_work(Setup {
        backend: Backend::Sqlite,
        mode: SagaMode::Choreographed,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_copies_share_the_work_on_postgres() {
    jetsaga_tests::scenarios::two_copies_of_every_function_share_the_work(Setup {
        backend: Backend::Postgres,
        mode: SagaMode::Orchestrated,
    })
    .await;
}
