//! The saga's invariants, checked from what the stream holds and what the
//! functions answer, after a run: what `jetsaga chaos` (and the benchmark)
//! prove. Jepsen-style: the history (every event in the stream) is read
//! back and checked against what was accepted; nothing is taken on trust
//! from the processes that were killed along the way.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jetsaga_events::subjects::*;
use jetsaga_events::{
    CustomerView, Envelope, InventoryReserved, OrderCreated, PaymentExecuted, PaymentRefunded, PointsAwarded,
    ProductView,
};
use serde::Serialize;

/// One violated invariant, with the order it concerns where there is one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The order, if the finding is about one.
    pub order_id: Option<String>,
    /// What is wrong, for a person.
    pub what: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.order_id {
            Some(order_id) => write!(f, "order {order_id}: {}", self.what),
            None => write!(f, "{}", self.what),
        }
    }
}

/// What a run is checked against.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    /// Orders whose create was answered with success: each must end once.
    pub accepted: BTreeSet<String>,
    /// Products' available stock before the run.
    pub initial_stock: BTreeMap<String, u32>,
    /// Customers' used credit before the run.
    pub initial_credit: BTreeMap<String, u64>,
}

/// What the run left behind.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Every envelope in the saga stream, in stream order.
    pub events: Vec<Envelope>,
    /// The catalog as inventory answers it now.
    pub products: Vec<ProductView>,
    /// The customers as the customer function answers them now.
    pub customers: Vec<CustomerView>,
    /// Messages in the dead-letter stream.
    pub dead_letters: u64,
    /// Committed events not yet published, per function.
    pub unpublished: BTreeMap<String, u64>,
}

/// The tally of a checked run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Tally {
    /// Accepted orders.
    pub accepted: usize,
    /// Orders per terminal event (`completed`, `failed`, `canceled`).
    pub outcomes: BTreeMap<String, usize>,
    /// Accepted orders with no terminal event.
    pub stuck: usize,
    /// Orders with two terminal events, or two different events of one type.
    pub doubled: usize,
    /// Orders that ended but were never accepted (not a violation: the
    /// client gave up waiting for an answer that was on its way).
    pub ended_unacknowledged: usize,
    /// Dead letters.
    pub dead_letters: u64,
    /// Failed orders by kind of reason (stock, credit, unknown customer, payment, shipping, deadline).
    pub failure_reasons: BTreeMap<String, usize>,
    /// Every violation.
    pub findings: Vec<Finding>,
}

/// The kind of a failure reason, for the tally.
fn kind_of_reason(reason: &str) -> String {
    let kinds = [
        ("insufficient stock", "out of stock"),
        ("unknown product", "unknown product"),
        ("exceeds available credit", "credit exceeded"),
        ("unknown customer", "unknown customer"),
        ("declined", "payment declined"),
        ("delivery worker", "shipment failed"),
        ("did not answer within", "deadline"),
        ("did not end within", "deadline"),
    ];
    kinds.iter().find(|(needle, _)| reason.contains(needle)).map_or("other", |(_, kind)| kind).to_string()
}

const TERMINAL: [&str; 3] = [ORDERS_EVT_COMPLETED, ORDERS_EVT_FAILED, ORDERS_EVT_CANCELED];

/// Checks every invariant; an empty `findings` means the run was correct.
pub fn check(expected: &Expected, observed: &Observed) -> Tally {
    let mut tally =
        Tally { accepted: expected.accepted.len(), dead_letters: observed.dead_letters, ..Tally::default() };
    let mut find = |order_id: Option<&str>, what: String| {
        tally.findings.push(Finding { order_id: order_id.map(str::to_string), what });
    };

    // Per order: its events by type, each type with the distinct ids seen.
    let mut by_order: BTreeMap<&str, BTreeMap<&str, Vec<&Envelope>>> = BTreeMap::new();
    for event in &observed.events {
        if let Some(order_id) = event.saga_key.as_deref() {
            let of_type = by_order.entry(order_id).or_default().entry(event.event_type.as_str()).or_default();
            if !of_type.iter().any(|e| e.id == event.id) {
                of_type.push(event);
            }
        }
    }
    let empty = BTreeMap::new();
    let mut completed_units: HashMap<String, u64> = HashMap::new();
    let mut completed_credit: HashMap<String, u64> = HashMap::new();
    let mut doubled = 0;
    let mut stuck = 0;
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut ended_unacknowledged = 0;
    let mut failure_reasons = BTreeMap::new();
    let orders: BTreeSet<&str> = expected.accepted.iter().map(String::as_str).chain(by_order.keys().copied()).collect();
    for order_id in orders {
        let events = by_order.get(order_id).unwrap_or(&empty);
        let count = |t: &str| events.get(t).map_or(0, Vec::len);
        let terminal: Vec<&str> = TERMINAL.into_iter().filter(|t| count(t) > 0).collect();
        let created =
            events.get(ORDERS_EVT_CREATED).and_then(|e| e.first()).and_then(|e| e.data_as::<OrderCreated>().ok());
        if created.is_none() && !expected.accepted.contains(order_id) {
            continue; // never created, never acknowledged: nothing was promised
        }
        if !expected.accepted.contains(order_id) {
            ended_unacknowledged += 1;
        }
        // One of each event, except deadlines: a step's deadline may come
        // while its late answer is on the way (it changes nothing), then the
        // next step's. Two of the *same* deadline would be doubled.
        let repeated: Vec<String> = events
            .iter()
            .map(|(t, v)| {
                let copies = if *t == ORDERS_EVT_DEADLINE_PASSED {
                    let distinct: BTreeSet<String> = v.iter().map(|e| e.data.to_string()).collect();
                    v.len() - distinct.len() + usize::from(!distinct.is_empty())
                } else {
                    v.len()
                };
                (t, copies)
            })
            .filter(|(_, copies)| *copies > 1)
            .map(|(t, copies)| format!("{copies} × {t}"))
            .collect();
        if terminal.len() > 1 || !repeated.is_empty() {
            doubled += 1;
            let mut what: Vec<String> = repeated;
            if terminal.len() > 1 {
                what.push(format!("ended {}", terminal.join(" and ")));
            }
            find(Some(order_id), format!("doubled: {}", what.join(", ")));
        }
        let Some(&outcome) = terminal.first() else {
            stuck += 1;
            let last = events.values().flatten().max_by_key(|e| e.occurred_at).map(|e| e.event_type.as_str());
            find(Some(order_id), format!("no terminal event (last seen: {})", last.unwrap_or("nothing")));
            continue;
        };
        *outcomes.entry(outcome.rsplit('.').next().unwrap_or(outcome).to_string()).or_default() += 1;
        if let Some(failed) = events.get(ORDERS_EVT_FAILED).and_then(|e| e.first()) {
            *failure_reasons.entry(kind_of_reason(failed.data["reason"].as_str().unwrap_or(""))).or_default() += 1;
        }
        let Some(created) = created else {
            find(Some(order_id), format!("ended {outcome} without orders.evt.created"));
            continue;
        };

        // Money: a completed order paid once and kept; an ended one refunded what it paid.
        let paid: Option<u64> = events
            .get(PAYMENTS_EVT_EXECUTED)
            .and_then(|e| e.first())
            .and_then(|e| e.data_as::<PaymentExecuted>().ok())
            .map(|p| p.amount_cents);
        let refunded: Option<u64> = events
            .get(PAYMENTS_EVT_REFUNDED)
            .and_then(|e| e.first())
            .and_then(|e| e.data_as::<PaymentRefunded>().ok())
            .map(|p| p.amount_cents);
        let reserved = events
            .get(INVENTORY_EVT_RESERVED)
            .and_then(|e| e.first())
            .and_then(|e| e.data_as::<InventoryReserved>().ok());
        match (outcome, paid, refunded) {
            (ORDERS_EVT_COMPLETED, Some(_), None) => {}
            (ORDERS_EVT_COMPLETED, None, _) => find(Some(order_id), "completed without a payment".into()),
            (ORDERS_EVT_COMPLETED, Some(p), Some(r)) => {
                find(Some(order_id), format!("completed, yet {r} of its {p} cents were refunded"))
            }
            (_, Some(p), Some(r)) if p != r => find(Some(order_id), format!("charged {p} cents, refunded {r}")),
            (_, Some(p), None) => find(Some(order_id), format!("{outcome}, but its {p} cents were never refunded")),
            (_, None, Some(r)) => find(Some(order_id), format!("refunded {r} cents that were never charged")),
            _ => {}
        }
        // Loyalty: a completed order earns a point per whole dollar paid, once;
        // an order that did not complete earns none.
        let awarded = events
            .get(LOYALTY_EVT_POINTS_AWARDED)
            .and_then(|e| e.first())
            .and_then(|e| e.data_as::<PointsAwarded>().ok())
            .map(|a| a.points);
        match (outcome, paid, awarded) {
            (ORDERS_EVT_COMPLETED, Some(p), Some(a)) if a != p / jetsaga_loyalty::CENTS_PER_POINT => {
                find(Some(order_id), format!("awarded {a} loyalty points for {p} cents"))
            }
            (ORDERS_EVT_COMPLETED, Some(_), None) => {
                find(Some(order_id), "completed, but earned no loyalty points".into())
            }
            (_, _, Some(a)) if outcome != ORDERS_EVT_COMPLETED => {
                find(Some(order_id), format!("{outcome}, yet awarded {a} loyalty points"))
            }
            _ => {}
        }
        if outcome == ORDERS_EVT_COMPLETED {
            match &reserved {
                Some(reserved) => {
                    for line in &reserved.lines {
                        *completed_units.entry(line.product_id.clone()).or_default() += u64::from(line.quantity);
                    }
                    *completed_credit.entry(created.customer_id.clone()).or_default() += reserved.total_cents;
                }
                None => find(Some(order_id), "completed without a stock reservation".into()),
            }
            if count(INVENTORY_EVT_CONSUMED) == 0 {
                find(Some(order_id), "completed, but its reserved stock was never consumed".into());
            }
        } else if reserved.is_some() && count(INVENTORY_EVT_RELEASED) == 0 {
            find(Some(order_id), format!("{outcome}, but its reserved stock was never released"));
        }
    }

    // Stock: what left the warehouse is exactly what completed orders bought.
    for (product_id, initial) in &expected.initial_stock {
        let Some(now) = observed.products.iter().find(|p| &p.product_id == product_id) else {
            find(None, format!("product {product_id} disappeared"));
            continue;
        };
        let sold = completed_units.get(product_id).copied().unwrap_or(0);
        if u64::from(now.stock) + sold != u64::from(*initial) || now.reserved != 0 {
            find(
                None,
                format!(
                    "stock of {product_id} not conserved: {initial} at start, {} available + {} reserved now, {sold} sold",
                    now.stock, now.reserved
                ),
            );
        }
    }
    // Credit: used = what completed orders cost.
    for (customer_id, initial) in &expected.initial_credit {
        let Some(now) = observed.customers.iter().find(|c| &c.customer_id == customer_id) else {
            find(None, format!("customer {customer_id} disappeared"));
            continue;
        };
        let spent = completed_credit.get(customer_id).copied().unwrap_or(0);
        if now.used_cents != initial + spent {
            find(
                None,
                format!(
                    "credit of {customer_id} not conserved: {initial} used at start + {spent} for completed orders, \
                     but {} used now",
                    now.used_cents
                ),
            );
        }
    }
    if observed.dead_letters > 0 {
        find(None, format!("{} messages were dead-lettered (jetsaga dlq list)", observed.dead_letters));
    }
    for (function, n) in &observed.unpublished {
        if *n == u64::MAX {
            find(None, format!("{function} never said how many committed events wait in its outbox"));
        } else if *n > 0 {
            find(None, format!("{function} holds {n} committed events that were never published"));
        }
    }
    tally.outcomes = outcomes;
    tally.failure_reasons = failure_reasons;
    tally.stuck = stuck;
    tally.doubled = doubled;
    tally.ended_unacknowledged = ended_unacknowledged;
    tally
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetsaga_core::ids::new_id;
    use jetsaga_events::*;

    fn event<P: Payload>(payload: &P) -> Envelope {
        let mut envelope = jetsaga_core::testing::envelope_for(payload);
        envelope.id = new_id();
        envelope
    }

    /// A completed order of 2 × p (500 cents each) for c, as the stream holds it.
    fn completed(order_id: &str) -> Vec<Envelope> {
        let o = || order_id.to_string();
        vec![
            event(&OrderCreated {
                order_id: o(),
                customer_id: "c".into(),
                items: vec![OrderItem { product_id: "p".into(), quantity: 2 }],
            }),
            event(&InventoryReserved {
                order_id: o(),
                customer_id: "c".into(),
                lines: vec![PricedLine { product_id: "p".into(), quantity: 2, unit_price_cents: 500 }],
                total_cents: 1000,
            }),
            event(&CreditReserved { order_id: o(), customer_id: "c".into(), amount_cents: 1000 }),
            event(&PaymentExecuted {
                order_id: o(),
                customer_id: "c".into(),
                amount_cents: 1000,
                payment_id: "x".into(),
            }),
            event(&OrderCompleted { order_id: o(), total_cents: 1000 }),
            event(&InventoryConsumed { order_id: o() }),
            event(&PointsAwarded { order_id: o(), customer_id: "c".into(), points: 10, balance: 10 }),
        ]
    }

    fn run(events: Vec<Envelope>, stock: u32, used: u64) -> Tally {
        let expected = Expected {
            accepted: ["o-1".to_string()].into(),
            initial_stock: [("p".to_string(), 10)].into(),
            initial_credit: [("c".to_string(), 0)].into(),
        };
        let observed = Observed {
            events,
            products: vec![ProductView {
                product_id: "p".into(),
                name: "p".into(),
                price_cents: 500,
                stock,
                reserved: 0,
            }],
            customers: vec![CustomerView {
                customer_id: "c".into(),
                name: "c".into(),
                credit_limit_cents: 10_000,
                used_cents: used,
                available_cents: 10_000 - used,
            }],
            ..Observed::default()
        };
        check(&expected, &observed)
    }

    fn whats(tally: &Tally) -> Vec<String> {
        tally.findings.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_clean_history_has_no_finding() {
        let tally = run(completed("o-1"), 8, 1000);
        assert_eq!(whats(&tally), Vec::<String>::new());
        assert_eq!(tally.outcomes, [("completed".to_string(), 1)].into());
    }

    #[test]
    fn loyalty_points_follow_completed_orders_only() {
        let mut events = completed("o-1");
        events.retain(|e| e.event_type != LOYALTY_EVT_POINTS_AWARDED);
        assert_eq!(whats(&run(events.clone(), 8, 1000)), ["order o-1: completed, but earned no loyalty points"]);
        events.push(event(&PointsAwarded { order_id: "o-1".into(), customer_id: "c".into(), points: 9, balance: 9 }));
        assert_eq!(whats(&run(events, 8, 1000)), ["order o-1: awarded 9 loyalty points for 1000 cents"]);
    }

    #[test]
    fn an_accepted_order_without_an_end_is_stuck() {
        let mut events = completed("o-1");
        events.truncate(4);
        let tally = run(events, 8, 1000);
        assert_eq!(tally.stuck, 1);
        assert!(whats(&tally).contains(&"order o-1: no terminal event (last seen: payments.evt.executed)".to_string()));
    }

    #[test]
    fn a_second_charge_or_a_second_end_is_doubled() {
        let mut events = completed("o-1");
        events.push(event(&PaymentExecuted {
            order_id: "o-1".into(),
            customer_id: "c".into(),
            amount_cents: 1000,
            payment_id: "y".into(),
        }));
        events.push(event(&OrderFailed { order_id: "o-1".into(), reason: "late".into(), step: None }));
        let tally = run(events, 8, 1000);
        assert_eq!(tally.doubled, 1);
        assert_eq!(
            whats(&tally)[0],
            "order o-1: doubled: 2 × payments.evt.executed, ended orders.evt.completed and orders.evt.failed"
        );
        // The same event read twice (a re-publish JetStream would drop) is not a double.
        let mut events = completed("o-1");
        events.push(events[3].clone());
        assert_eq!(run(events, 8, 1000).doubled, 0);
    }

    #[test]
    fn two_different_deadlines_are_not_a_double_and_the_same_one_twice_is() {
        let deadline = |status: OrderStatus, waiting_for: &str| DeadlinePassed {
            order_id: "o-1".into(),
            deadline: jetsaga_events::PendingDeadline {
                waiting_for: waiting_for.into(),
                status,
                after_ms: 1000,
                due_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            },
        };
        let mut events = completed("o-1");
        // Inventory's came while its late answer was on the way; then customer's.
        events.push(event(&deadline(OrderStatus::Pending, "inventory")));
        events.push(event(&deadline(OrderStatus::StockReserved, "customer")));
        assert_eq!(run(events.clone(), 8, 1000).doubled, 0);
        events.push(event(&deadline(OrderStatus::StockReserved, "customer")));
        let tally = run(events, 8, 1000);
        assert_eq!(tally.doubled, 1);
        assert_eq!(whats(&tally)[0], "order o-1: doubled: 2 × orders.evt.deadline_passed");
    }

    #[test]
    fn money_stock_and_credit_must_balance() {
        let mut events = completed("o-1");
        events.push(event(&PaymentRefunded { order_id: "o-1".into(), amount_cents: 1000, payment_id: "x".into() }));
        let tally = run(events, 9, 700);
        let found = whats(&tally);
        assert!(
            found.contains(&"order o-1: completed, yet 1000 of its 1000 cents were refunded".to_string()),
            "{found:?}"
        );
        assert!(found.iter().any(|f| f.starts_with("stock of p not conserved: 10 at start, 9 available")), "{found:?}");
        assert!(found.iter().any(|f| f.starts_with("credit of c not conserved")), "{found:?}");

        // A failed order that was charged must be refunded, and release its stock.
        let mut events = completed("o-1");
        events.truncate(4);
        events.push(event(&OrderFailed { order_id: "o-1".into(), reason: "no delivery worker".into(), step: None }));
        let found = whats(&run(events, 10, 0));
        assert!(
            found.contains(&"order o-1: orders.evt.failed, but its 1000 cents were never refunded".to_string()),
            "{found:?}"
        );
        assert!(
            found.contains(&"order o-1: orders.evt.failed, but its reserved stock was never released".to_string()),
            "{found:?}"
        );
    }
}
