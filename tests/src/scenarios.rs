//! The end-to-end saga scenarios, shared by every way the saga can run:
//! choreographed or orchestrated, on SQLite, PostgreSQL, or as Lambda
//! functions on DynamoDB behind the bridge. Each takes a [`Setup`].

use jetsaga_events::{OrderStatus, SagaMode};
use jetsaga_local::saga::SagaOptions;

use std::time::{Duration, Instant};

use jetsaga_events::subjects::*;

use crate::saga::{Backend, SETTLE, Saga, Setup};
use crate::stream::{messages, wait_until};

async fn shop(setup: Setup) -> Saga {
    let saga = Saga::start(setup).await;
    saga.product("p-a", 1000, 10).await;
    saga.product("p-b", 250, 3).await;
    saga.customer("c-1", 100_000).await;
    saga
}

pub async fn happy_path(setup: Setup) {
    let saga = shop(setup).await;
    let id = saga.order("c-1", &[("p-a", 2), ("p-b", 1)]).await;
    let order = saga.finish(&id).await;
    assert_eq!(order.status, OrderStatus::Completed);
    assert_eq!(order.total_cents, Some(2250));
    saga.expect_stock("p-a", (8, 0)).await;
    saga.expect_stock("p-b", (2, 0)).await;
    assert_eq!(saga.used_credit("c-1").await, 2250);
    assert_eq!(saga.events_for("orders.evt.completed", &id).await.len(), 1);
    assert_eq!(saga.events_for("inventory.evt.consumed", &id).await.len(), 1);
    // Orchestrated, every step was told what to do; choreographed, nobody was.
    let orchestrated = usize::from(setup.mode == SagaMode::Orchestrated);
    for command in
        ["inventory.cmd.reserve", "customers.cmd.reserve_credit", "payments.cmd.execute", "shipping.cmd.schedule"]
    {
        assert_eq!(saga.events_for(command, &id).await.len(), orchestrated, "{command}");
    }
    saga.stop().await;
}

/// The loyalty step follows the saga from the side: a completed order
/// earns a point per whole dollar, a declined one none.
pub async fn completed_orders_earn_loyalty_points(setup: Setup) {
    let saga = shop(setup).await;
    let id = saga.order("c-1", &[("p-a", 2), ("p-b", 1)]).await;
    assert_eq!(saga.finish(&id).await.status, OrderStatus::Completed);
    saga.expect_loyalty("c-1", (22, 0)).await;
    saga.product("p-cheap", 50, 10).await;
    let declined = saga.order("c-1", &[("p-cheap", 1)]).await;
    assert_eq!(saga.finish(&declined).await.status, OrderStatus::Failed);
    assert_eq!(saga.events_for("loyalty.evt.points_awarded", &id).await.len(), 1);
    assert!(saga.events_for("loyalty.evt.points_awarded", &declined).await.is_empty());
    saga.expect_loyalty("c-1", (22, 0)).await;
    saga.stop().await;
}

/// Users: a sign-up (a direct command, never kept in a stream) makes a
/// user and, through its event, a customer with the default credit; the
/// password checks out, a wrong one and an unknown email get the same 401;
/// no stream holds the password or its hash.
pub async fn users_sign_up_and_log_in_without_secrets_in_any_stream(setup: Setup) {
    use jetsaga_events::subjects::{USERS_CMD_SIGN_UP, USERS_QUERY_AUTHENTICATE};
    use jetsaga_events::{Authenticate, SignUp, UserView};
    let saga = Saga::start(setup).await;
    let password = "correct horse battery staple";
    let hash = jetsaga_users::hash_password(password);
    let sign_up = SignUp { email: "Ada@Example.com".into(), name: "Ada".into(), password_hash: hash.clone() };
    let reply = saga.client.command(USERS_CMD_SIGN_UP, &sign_up).await.unwrap();
    assert_eq!(reply["events"], serde_json::json!(["users.evt.signed_up"]), "{reply}");
    let code = |e: anyhow::Error| e.downcast::<jetsaga_local::client::RequestError>().map(|e| (e.code, e.message)).ok();
    let again = saga.client.command(USERS_CMD_SIGN_UP, &sign_up).await.unwrap_err();
    assert_eq!(code(again), Some((422, "ada@example.com is already registered".to_string())));

    let login = |email: &str, password: &str| Authenticate { email: email.into(), password: password.into() };
    let user: UserView =
        saga.client.query(USERS_QUERY_AUTHENTICATE, &login("ada@example.com", password)).await.unwrap();
    assert_eq!(user.email, "ada@example.com");
    let wrong = saga.client.query::<_, UserView>(USERS_QUERY_AUTHENTICATE, &login("ada@example.com", "guess")).await;
    let unknown = saga.client.query::<_, UserView>(USERS_QUERY_AUTHENTICATE, &login("bob@example.com", password)).await;
    let wrong = code(wrong.unwrap_err());
    assert_eq!(wrong, Some((401, "invalid email or password".to_string())));
    assert_eq!(code(unknown.unwrap_err()), wrong, "an unknown email answers as a wrong password");

    wait_until(SETTLE, "the user's customer", || async { saga.client.customer(&user.customer_id).await.is_ok() }).await;
    let customer = saga.client.customer(&user.customer_id).await.unwrap();
    assert_eq!(customer.credit_limit_cents, jetsaga_customer::DEFAULT_CREDIT_LIMIT_CENTS);

    for stream in ["SAGA", "COMMANDS", "DLQ"] {
        for message in messages(&saga.js, stream, None).await {
            let text = String::from_utf8_lossy(&message.payload);
            assert!(
                !text.contains("argon2") && !text.contains(password),
                "{stream} seq {} holds a secret: {}",
                message.sequence,
                message.subject
            );
        }
    }
    saga.stop().await;
}

pub async fn out_of_stock(setup: Setup) {
    let saga = shop(setup).await;
    let id = saga.order("c-1", &[("p-a", 11)]).await;
    let order = saga.finish(&id).await;
    assert_eq!(order.status, OrderStatus::Failed);
    assert_eq!(order.reason.as_deref(), Some("insufficient stock for p-a: requested 11, available 10"));
    saga.expect_stock("p-a", (10, 0)).await;
    assert_eq!(saga.used_credit("c-1").await, 0);
    saga.stop().await;
}

pub async fn unknown_product(setup: Setup) {
    let saga = shop(setup).await;
    let id = saga.order("c-1", &[("p-a", 1), ("p-ghost", 1)]).await;
    let order = saga.finish(&id).await;
    assert_eq!(order.reason.as_deref(), Some("unknown product p-ghost"));
    saga.expect_stock("p-a", (10, 0)).await;
    saga.stop().await;
}

pub async fn payment_under_a_dollar_fails_and_a_dollar_succeeds(setup: Setup) {
    let saga = shop(setup).await;
    saga.product("p-99", 99, 5).await;
    saga.product("p-100", 100, 5).await;
    let cheap = saga.order("c-1", &[("p-99", 1)]).await;
    let dollar = saga.order("c-1", &[("p-100", 1)]).await;
    let cheap = saga.finish(&cheap).await;
    assert_eq!(cheap.status, OrderStatus::Failed);
    assert_eq!(cheap.reason.as_deref(), Some("payment of 99 cents declined: the minimum charge is 100 cents"));
    assert_eq!(saga.finish(&dollar).await.status, OrderStatus::Completed);
    saga.expect_stock("p-99", (5, 0)).await;
    saga.expect_stock("p-100", (4, 0)).await;
    saga.expect_used_credit("c-1", 100).await;
    saga.stop().await;
}

pub async fn insufficient_credit(setup: Setup) {
    let saga = shop(setup).await;
    saga.customer("c-poor", 1500).await;
    let id = saga.order("c-poor", &[("p-a", 2)]).await;
    let order = saga.finish(&id).await;
    assert_eq!(order.reason.as_deref(), Some("order total 2000 cents exceeds available credit 1500 cents"));
    saga.expect_stock("p-a", (10, 0)).await;
    assert_eq!(saga.used_credit("c-poor").await, 0);
    saga.stop().await;
}

pub async fn unknown_customer(setup: Setup) {
    let saga = shop(setup).await;
    let id = saga.order("c-ghost", &[("p-a", 1)]).await;
    let order = saga.finish(&id).await;
    assert_eq!(order.reason.as_deref(), Some("unknown customer c-ghost"));
    saga.expect_stock("p-a", (10, 0)).await;
    // The queue keeps moving.
    let next = saga.order("c-1", &[("p-a", 1)]).await;
    assert_eq!(saga.finish(&next).await.status, OrderStatus::Completed);
    saga.stop().await;
}

pub async fn multi_item_orders_are_all_or_nothing(setup: Setup) {
    let saga = shop(setup).await;
    let id = saga.order("c-1", &[("p-a", 2), ("p-b", 4)]).await;
    let order = saga.finish(&id).await;
    assert_eq!(order.reason.as_deref(), Some("insufficient stock for p-b: requested 4, available 3"));
    saga.expect_stock("p-a", (10, 0)).await;
    saga.expect_stock("p-b", (3, 0)).await;
    saga.stop().await;
}

pub async fn repeated_lines_add_up(setup: Setup) {
    let saga = shop(setup).await;
    let id = saga.order("c-1", &[("p-b", 2), ("p-b", 1)]).await;
    assert_eq!(saga.finish(&id).await.total_cents, Some(750));
    saga.expect_stock("p-b", (0, 0)).await;
    let again = saga.order("c-1", &[("p-b", 1), ("p-b", 1)]).await;
    assert_eq!(
        saga.finish(&again).await.reason.as_deref(),
        Some("insufficient stock for p-b: requested 2, available 0")
    );
    saga.stop().await;
}

pub async fn cancel_before_shipping_releases_everything_and_refunds(setup: Setup) {
    // Payment is not running yet, so the order waits with stock and credit held.
    let options = SagaOptions { mode: setup.mode, ..SagaOptions::default() };
    let others: Vec<&str> = options.names().into_iter().filter(|f| *f != "payment").collect();
    let mut saga = Saga::start_with(setup.backend, &others, options).await;
    saga.product("p-a", 1000, 10).await;
    saga.customer("c-1", 100_000).await;
    let id = saga.order("c-1", &[("p-a", 3)]).await;
    wait_until(SETTLE, "credit to be reserved", || async {
        saga.client.order(&id).await.unwrap().status == OrderStatus::CreditReserved
    })
    .await;
    saga.expect_stock("p-a", (7, 3)).await;
    saga.client
        .command("orders.cmd.cancel", &serde_json::json!({"order_id": id, "reason": "changed my mind"}))
        .await
        .unwrap();
    let order = saga.finish(&id).await;
    assert_eq!(order.status, OrderStatus::Canceled);
    assert_eq!(order.reason.as_deref(), Some("changed my mind"));
    saga.expect_stock("p-a", (10, 0)).await;
    saga.expect_used_credit("c-1", 0).await;

    // Payment starts late, charges what it was asked to, then refunds it; the order stays canceled.
    saga.host(&["payment"]).await;
    wait_until(SETTLE, "the refund", || async { saga.events_for("payments.evt.refunded", &id).await.len() == 1 }).await;
    assert!(saga.events_for("shipping.evt.scheduled", &id).await.is_empty(), "a canceled order never ships");
    assert_eq!(saga.client.order(&id).await.unwrap().status, OrderStatus::Canceled);
    saga.stop().await;
}

pub async fn cancel_after_completion_is_refused_and_changes_nothing(setup: Setup) {
    let saga = shop(setup).await;
    let id = saga.order("c-1", &[("p-a", 1)]).await;
    assert_eq!(saga.finish(&id).await.status, OrderStatus::Completed);
    let err = saga.client.command("orders.cmd.cancel", &serde_json::json!({"order_id": id})).await.unwrap_err();
    assert_eq!(err.to_string(), format!("order {id} is already completed (422)"));
    assert_eq!(saga.client.order(&id).await.unwrap().status, OrderStatus::Completed);
    saga.expect_stock("p-a", (9, 0)).await;
    assert_eq!(saga.used_credit("c-1").await, 1000);
    assert!(saga.events_for("orders.evt.cancel_requested", &id).await.is_empty());
    saga.stop().await;
}

pub async fn orders_racing_for_the_last_unit_have_one_winner(setup: Setup) {
    let saga = shop(setup).await;
    saga.product("p-last", 500, 1).await;
    let orders = futures::future::join_all((0..5).map(|_| saga.order("c-1", &[("p-last", 1)]))).await;
    let mut completed = 0;
    for id in &orders {
        let order = saga.finish(id).await;
        match order.status {
            OrderStatus::Completed => completed += 1,
            OrderStatus::Failed => {
                assert_eq!(order.reason.as_deref(), Some("insufficient stock for p-last: requested 1, available 0"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(completed, 1);
    saga.expect_stock("p-last", (0, 0)).await;
    assert_eq!(saga.used_credit("c-1").await, 500);
    saga.stop().await;
}

pub async fn the_same_create_twice_makes_one_order(setup: Setup) {
    let saga = shop(setup).await;
    let first = saga.order_with_id(Some("ord-twice"), "c-1", &[("p-a", 1)]).await;
    let second = saga.order_with_id(Some("ord-twice"), "c-1", &[("p-a", 1)]).await;
    assert_eq!((first.as_str(), second.as_str()), ("ord-twice", "ord-twice"));
    assert_eq!(saga.finish("ord-twice").await.status, OrderStatus::Completed);
    assert_eq!(saga.events_for("orders.evt.created", "ord-twice").await.len(), 1);
    saga.expect_stock("p-a", (9, 0)).await;
    saga.stop().await;
}

pub async fn garbage_on_the_command_subject_does_not_stop_the_next_order(setup: Setup) {
    let saga = shop(setup).await;
    saga.client.nats.publish("orders.cmd.create", "definitely not json".into()).await.unwrap();
    saga.client.nats.publish("orders.cmd.create", r#"{"customer_id": 7}"#.into()).await.unwrap();
    let id = saga.order("c-1", &[("p-a", 1)]).await;
    assert_eq!(saga.finish(&id).await.status, OrderStatus::Completed);
    wait_until(SETTLE, "two dead letters", || async { messages(&saga.js, "DLQ", None).await.len() == 2 }).await;
    let dead = messages(&saga.js, "DLQ", None).await;
    let reasons: Vec<String> = dead.iter().map(|m| m.header("Jetsaga-Dlq-Reason").unwrap()).collect();
    assert!(reasons.iter().any(|r| r.contains("not valid JSON")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("customer_id") && r.contains("expected a string")), "{reasons:?}");
    saga.stop().await;
}

pub async fn a_failed_shipment_releases_everything_and_refunds(setup: Setup) {
    let options = SagaOptions { shipping_failure_rate: 1.0, mode: setup.mode, ..SagaOptions::default() };
    let saga = Saga::start_with(setup.backend, &options.names(), options).await;
    saga.product("p-a", 1000, 10).await;
    saga.customer("c-1", 100_000).await;
    let id = saga.order("c-1", &[("p-a", 2)]).await;
    let order = saga.finish(&id).await;
    assert_eq!(order.reason, Some(format!("no delivery worker accepted order {id}")));
    saga.expect_stock("p-a", (10, 0)).await;
    saga.expect_used_credit("c-1", 0).await;
    wait_until(SETTLE, "the refund", || async { saga.events_for("payments.evt.refunded", &id).await.len() == 1 }).await;
    saga.expect_loyalty("c-1", (0, 0)).await; // paid, then refunded: its pending points were dropped
    saga.stop().await;
}

pub async fn hundreds_of_concurrent_orders_all_end_and_stock_is_conserved(setup: Setup) {
    let saga = Saga::start(setup).await;
    let products = [("p-a", 300u64, 120u32), ("p-b", 150, 80), ("p-c", 99, 500)];
    for (id, price, stock) in products {
        saga.product(id, price, stock).await;
    }
    for (id, limit) in [("c-rich", 10_000_000u64), ("c-mid", 20_000), ("c-poor", 1_000)] {
        saga.customer(id, limit).await;
    }
    let customers = ["c-rich", "c-mid", "c-poor", "c-ghost"];
    let requests = (0..300).map(|i| {
        let customer = customers[i % customers.len()];
        let a = (i % 3) as u32;
        let b = ((i / 3) % 2) as u32 + 1;
        let mut items = vec![("p-b", b)];
        if a > 0 {
            items.push(("p-a", a));
        }
        if i % 7 == 0 {
            items.push(("p-c", 1));
        }
        let saga = &saga;
        async move { saga.order(customer, &items).await }
    });
    let ids = futures::future::join_all(requests).await;
    let mut completed = Vec::new();
    for id in &ids {
        let order = saga.finish(id).await;
        assert!(order.status.is_terminal());
        if order.status == OrderStatus::Completed {
            completed.push(order);
        }
    }
    assert!(!completed.is_empty(), "some orders must complete");
    // Conservation: what left the warehouse is exactly what completed orders bought.
    for (product, _, initial) in products {
        let sold: u32 =
            completed.iter().flat_map(|o| &o.items).filter(|i| i.product_id == product).map(|i| i.quantity).sum();
        saga.expect_stock(product, (initial - sold, 0)).await;
    }
    for customer in ["c-rich", "c-mid", "c-poor"] {
        let spent: u64 = completed.iter().filter(|o| o.customer_id == customer).map(|o| o.total_cents.unwrap()).sum();
        saga.expect_used_credit(customer, spent).await;
    }
    assert_eq!(saga.events("orders.evt.completed").await.len(), completed.len());
    let terminal = saga.events("orders.evt.completed").await.len()
        + saga.events("orders.evt.failed").await.len()
        + saga.events("orders.evt.canceled").await.len();
    assert_eq!(terminal, ids.len(), "exactly one terminal event per order");
    saga.stop().await;
}

/// Two copies of every function share each durable consumer (what
/// `jetsaga up --function NAME` twice does), on the same stores.
pub async fn two_copies_of_every_function_share_the_work(setup: Setup) {
    let mut saga = Saga::start(setup).await;
    let functions = saga.functions();
    saga.host(&functions).await;
    saga.product("p-a", 100, 50).await;
    saga.customer("c-1", 1_000_000).await;
    let ids = futures::future::join_all((0..80).map(|_| saga.order("c-1", &[("p-a", 1)]))).await;
    let mut completed = 0;
    for id in &ids {
        let order = saga.finish(id).await;
        if order.status == OrderStatus::Completed {
            completed += 1;
        } else {
            assert_eq!(order.reason.as_deref(), Some("insufficient stock for p-a: requested 1, available 0"));
        }
    }
    assert_eq!(completed, 50, "exactly the stock is sold, never more");
    saga.expect_stock("p-a", (0, 0)).await;
    saga.expect_used_credit("c-1", 5_000).await;
    assert_eq!(saga.events("orders.evt.created").await.len(), 80, "each order created once");
    saga.stop().await;
}

/// The outbox relay covers the request/reply path (and, on Lambda, the
/// bridge): a create committed while the stream refuses new messages is
/// answered, waits in the outbox, and is published once the stream accepts.
/// (The stream refuses them by no longer taking their subjects: a stream
/// with message schedules cannot discard new messages when full.)
pub async fn events_committed_while_the_stream_refuses_them_are_published_once_it_takes_them(setup: Setup) {
    let saga = shop(setup).await;
    let outbox = |function: &'static str| {
        let nats = saga.client.nats.clone();
        async move {
            let reply = nats.request(format!("$JETSAGA.OUTBOX.{function}"), "".into()).await.unwrap();
            serde_json::from_slice::<serde_json::Value>(&reply.payload).unwrap()
        }
    };
    // A stream that takes none of the saga's subjects refuses every new event.
    let mut stream = saga.js.get_stream("SAGA").await.unwrap();
    let info = stream.info().await.unwrap().clone();
    let refusing =
        async_nats::jetstream::stream::Config { subjects: vec!["nothing.goes.here".into()], ..info.config.clone() };
    saga.js.update_stream(refusing).await.unwrap();

    let order_function = saga.functions()[0];
    let id = saga.order("c-1", &[("p-a", 1)]).await;
    let waiting = outbox(order_function).await;
    // orders.evt.created, its deadline's schedule (and, orchestrated,
    // inventory.cmd.reserve) wait.
    let expected = if setup.mode == SagaMode::Orchestrated { 3 } else { 2 };
    assert_eq!(waiting["unpublished"], expected, "{waiting}");
    assert!(waiting["oldest_age_ms"].as_i64().is_some(), "{waiting}");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(saga.client.order(&id).await.unwrap().status, OrderStatus::Pending);

    // Once the stream accepts again the relay publishes it: no restart needed.
    saga.js.update_stream(info.config.clone()).await.unwrap();
    assert_eq!(saga.finish(&id).await.status, OrderStatus::Completed);
    assert_eq!(saga.events_for("orders.evt.created", &id).await.len(), 1, "published once");
    wait_until(SETTLE, "the order's outbox to be empty", || async { outbox(order_function).await["unpublished"] == 0 })
        .await;
    saga.stop().await;
}

// Deadlines.

/// A step's deadline in the deadline scenarios: short, and longer on the
/// Lambda path, whose steps take longer under the emulator.
pub fn step_deadline(backend: Backend) -> std::time::Duration {
    match backend {
        Backend::Lambda(_) => std::time::Duration::from_secs(6),
        _ => std::time::Duration::from_millis(1500),
    }
}

/// The saga with short deadlines (each step [`step_deadline`], the whole
/// order 60 s), without the function `missing`, with a product and a customer.
pub async fn shop_with_deadlines(setup: Setup, missing: Option<&str>) -> Saga {
    let step = format!("{}ms", step_deadline(setup.backend).as_millis());
    let deadlines = jetsaga_local::saga::Deadlines::from_settings(&[step], Some("60s")).unwrap();
    let options = SagaOptions { mode: setup.mode, deadlines: Some(deadlines), ..SagaOptions::default() };
    let names: Vec<&str> = options.names().into_iter().filter(|n| Some(*n) != missing).collect();
    let saga = Saga::start_with(setup.backend, &names, options).await;
    saga.product("p-a", 1250, 10).await;
    saga.customer("c-1", 100_000).await;
    saga
}

/// Messages waiting on schedule subjects (pending deadlines).
pub async fn pending_schedules(saga: &Saga) -> u64 {
    use futures::TryStreamExt;
    let stream = saga.js.get_stream("SAGA").await.unwrap();
    let mut subjects = stream.info_with_subjects("schedules.>").await.unwrap();
    let mut total = 0;
    while let Some((_, count)) = subjects.try_next().await.unwrap() {
        total += count as u64;
    }
    total
}

/// The order's terminal events (exactly one, always).
pub async fn terminal_events(saga: &Saga, order_id: &str) -> usize {
    let mut count = 0;
    for subject in [ORDERS_EVT_COMPLETED, ORDERS_EVT_FAILED, ORDERS_EVT_CANCELED] {
        count += saga.events_for(subject, order_id).await.len();
    }
    count
}

/// A step that never answers (payment not running): the order fails with
/// the deadline's reason within the deadline and a small margin, and gives
/// back what it holds. Then payment starts: it charges from its backlog,
/// and refunds; the order stays failed with one terminal event.
pub async fn a_step_that_never_answers_fails_the_order_in_time_and_its_late_answer_is_refunded(setup: Setup) {
    let mut saga = shop_with_deadlines(setup, Some("payment")).await;
    let deadline = step_deadline(setup.backend);
    let reason = format!(
        "payment did not answer within {}",
        jetsaga_local::saga::human(u64::try_from(deadline.as_millis()).unwrap())
    );
    let started = Instant::now();
    let id = saga.order("c-1", &[("p-a", 2)]).await;
    let view = saga.finish(&id).await;
    let took = started.elapsed();
    assert_eq!(view.status, OrderStatus::Failed, "{view:?}");
    assert_eq!(view.reason.as_deref(), Some(reason.as_str()));
    assert!(took >= deadline, "not before its deadline: {took:?}");
    assert!(took < deadline * 2 + Duration::from_secs(2), "within the deadline and a small margin: {took:?}");
    assert_eq!(view.deadline, None, "no deadline left pending");
    // Everything held is given back.
    saga.expect_stock("p-a", (10, 0)).await;
    saga.expect_used_credit("c-1", 0).await;

    // The late answer: payment comes back, charges from its backlog, and refunds.
    saga.host(&["payment"]).await;
    wait_until(SETTLE, "the late charge refunded", || async {
        saga.events_for(PAYMENTS_EVT_REFUNDED, &id).await.len() == 1
    })
    .await;
    let charged = saga.events_for(PAYMENTS_EVT_EXECUTED, &id).await;
    let refunded = saga.events_for(PAYMENTS_EVT_REFUNDED, &id).await;
    assert_eq!((charged.len(), refunded.len()), (1, 1), "charged once, refunded once");
    assert_eq!(charged[0].data["amount_cents"], refunded[0].data["amount_cents"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(saga.client.order(&id).await.unwrap().status, OrderStatus::Failed, "it stays failed");
    assert_eq!(terminal_events(&saga, &id).await, 1, "exactly one terminal event");
    assert_deadline_came_once(&saga, &id, "payment").await;
    saga.expect_stock("p-a", (10, 0)).await;
    saga.expect_used_credit("c-1", 0).await;
    saga.stop().await;
}

/// Asserts that an order failed by `step`'s deadline saw it come once.
/// Schedules are armed lazily: the first step's deadline comes first and
/// fails the order if `step`'s is due by then, or re-arms for it, which then
/// comes once; nothing comes twice.
pub async fn assert_deadline_came_once(saga: &Saga, order_id: &str, step: &str) {
    let came = saga.events_for(ORDERS_EVT_DEADLINE_PASSED, order_id).await;
    let of_step = came.iter().filter(|e| e.data["waiting_for"] == step).count();
    let others = came.len() - of_step;
    assert!(of_step <= 1 && others == 1, "{} deadlines came, {of_step} of {step}'s: {came:?}", came.len());
}
