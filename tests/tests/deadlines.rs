//! Saga deadlines against a real nats-server (2.14+: JetStream message
//! schedules), with short waits: a step that never answers, its late
//! answer, a deadline after the end, and a restart while one is pending.

use std::time::Duration;

use jetsaga_events::subjects::*;
use jetsaga_events::{DeadlinePassed, OrderStatus, SagaMode};
use jetsaga_tests::saga::{Backend, SETTLE, Setup};
use jetsaga_tests::scenarios::{
    self, assert_deadline_came_once, pending_schedules, shop_with_deadlines, terminal_events,
};
use jetsaga_tests::stream::wait_until;

const SQLITE: Setup = Setup { backend: Backend::Sqlite, mode: SagaMode::Choreographed };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn choreographed_a_step_that_never_answers_fails_the_order_in_time_and_its_late_answer_is_refunded() {
    scenarios::a_step_that_never_answers_fails_the_order_in_time_and_its_late_answer_is_refunded(Setup {
        backend: Backend::Sqlite,
        mode: SagaMode::Choreographed,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrated_a_step_that_never_answers_fails_the_order_in_time_and_its_late_answer_is_refunded() {
    scenarios::a_step_that_never_answers_fails_the_order_in_time_and_its_late_answer_is_refunded(Setup {
        backend: Backend::Sqlite,
        mode: SagaMode::Orchestrated,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completing_cancels_the_deadline_and_a_deadline_after_the_end_changes_nothing() {
    let saga = shop_with_deadlines(SQLITE, None).await;
    let id = saga.order("c-1", &[("p-a", 1)]).await;
    let view = saga.finish(&id).await;
    assert_eq!(view.status, OrderStatus::Completed, "{view:?}");
    let canceled = saga.events_for(ORDERS_EVT_DEADLINE_CANCELED, &id).await;
    assert_eq!(canceled.len(), 1, "the end cancels the pending deadline");
    wait_until(SETTLE, "no schedule left", || async { pending_schedules(&saga).await == 0 }).await;
    // Past every deadline of the order: none came.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(saga.events_for(ORDERS_EVT_DEADLINE_PASSED, &id).await.len(), 0, "a canceled deadline never fires");

    // A deadline that fires after the order ended (scheduled by hand, as a
    // cancel lost in a crash would leave it): nothing changes.
    let deadline = canceled[0].data_as::<jetsaga_events::DeadlineCanceled>().unwrap().deadline;
    let late = DeadlinePassed { order_id: id.clone(), deadline };
    let at = chrono::Utc::now() + chrono::Duration::milliseconds(300);
    let envelope = jetsaga_events::Envelope {
        id: uuid::Uuid::now_v7().to_string(),
        event_type: ORDERS_EVT_DEADLINE_PASSED.into(),
        saga_key: Some(id.clone()),
        correlation_id: id.clone(),
        causation_id: None,
        occurred_at: at,
        version: jetsaga_events::envelope::ENVELOPE_VERSION,
        data: serde_json::to_value(&late).unwrap(),
    };
    let mut headers = async_nats::HeaderMap::new();
    headers
        .insert("Nats-Schedule", format!("@at {}", at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)).as_str());
    headers.insert("Nats-Schedule-Target", ORDERS_EVT_DEADLINE_PASSED);
    let schedule = jetsaga_core::schedule::name_for("order", &id);
    saga.js.publish_with_headers(schedule, headers, envelope.encode().into()).await.unwrap().await.unwrap();
    wait_until(SETTLE, "the late deadline fired", || async {
        saga.events_for(ORDERS_EVT_DEADLINE_PASSED, &id).await.len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = saga.client.order(&id).await.unwrap();
    assert_eq!((after.status, after.reason), (OrderStatus::Completed, None), "a late deadline changes nothing");
    assert_eq!(terminal_events(&saga, &id).await, 1);
    saga.expect_stock("p-a", (9, 0)).await;
    saga.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_deadline_fires_once_after_the_server_and_the_functions_restart() {
    let mut saga = shop_with_deadlines(SQLITE, Some("payment")).await;
    let names: Vec<&str> = saga.functions().into_iter().filter(|n| *n != "payment").collect();
    let id = saga.order("c-1", &[("p-a", 1)]).await;
    wait_until(SETTLE, "credit held (now waiting for payment)", || async {
        saga.client.order(&id).await.is_ok_and(|o| o.status == OrderStatus::CreditReserved)
    })
    .await;
    assert_eq!(pending_schedules(&saga).await, 1, "one deadline pending");
    // Everything goes down before the deadline, and comes back after it.
    saga.stop_hosts().await;
    saga.server.restart();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    saga.host(&names).await;
    let view = saga.finish(&id).await;
    assert_eq!(view.status, OrderStatus::Failed, "{view:?}");
    assert_eq!(view.reason.as_deref(), Some("payment did not answer within 1.5 s"));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_deadline_came_once(&saga, &id, "payment").await;
    assert_eq!(terminal_events(&saga, &id).await, 1);
    saga.expect_stock("p-a", (10, 0)).await;
    saga.expect_used_credit("c-1", 0).await;
    saga.stop().await;
}
