//! Orchestrated mode: which command the orchestrator sends next, and
//! how far an order has come.

use super::*;

/// The orchestrator's table: the command each step gets when an order
/// enters a status. A failed or canceled order tells every step to give
/// back what it may hold; each of those commands is idempotent and leaves a
/// tombstone where nothing was held, so commands still in flight for the
/// order find it ended.
pub(crate) fn orchestrate(ctx: &mut Ctx<'_>, order: &Order) {
    let order_id = order.order_id.clone();
    let customer_id = order.customer_id.clone();
    let amount_cents = order.total_cents.unwrap_or(0);
    match order.status {
        OrderStatus::Pending => ctx.emit(ReserveInventory { order_id, customer_id, items: order.items.clone() }),
        OrderStatus::StockReserved => ctx.emit(ReserveCredit { order_id, customer_id, amount_cents }),
        OrderStatus::CreditReserved => ctx.emit(ExecutePayment { order_id, customer_id, amount_cents }),
        OrderStatus::Paid => ctx.emit(ScheduleShipment { order_id, customer_id, lines: order.lines.clone() }),
        OrderStatus::Completed => ctx.emit(ConsumeInventory { order_id }),
        OrderStatus::Failed | OrderStatus::Canceled => {
            ctx.emit(ReleaseInventory { order_id: order_id.clone() });
            ctx.emit(ReleaseCredit { order_id: order_id.clone() });
            ctx.emit(RefundPayment { order_id });
        }
        // Shipping answers a cancel request itself, and a shipped order waits for its worker.
        OrderStatus::Canceling | OrderStatus::Shipped => {}
    }
}

/// Where another step's event points an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A step of the happy path is done: the order is at least this far.
    Reached(OrderStatus),
    /// A step failed (named): the order fails unless it is past failing.
    Fail(&'static str),
    /// Shipping confirmed that nothing was dispatched: a cancel completes.
    CancelConfirmed,
}

impl Target {
    pub(crate) fn of(event_type: &str) -> Option<Self> {
        Some(match event_type {
            INVENTORY_EVT_RESERVED => Self::Reached(OrderStatus::StockReserved),
            CUSTOMERS_EVT_CREDIT_RESERVED => Self::Reached(OrderStatus::CreditReserved),
            PAYMENTS_EVT_EXECUTED => Self::Reached(OrderStatus::Paid),
            SHIPPING_EVT_SCHEDULED => Self::Reached(OrderStatus::Shipped),
            SHIPPING_EVT_INFORMED => Self::Reached(OrderStatus::Completed),
            INVENTORY_EVT_RESERVATION_FAILED => Self::Fail("inventory"),
            CUSTOMERS_EVT_CREDIT_REJECTED => Self::Fail("customer"),
            PAYMENTS_EVT_FAILED => Self::Fail("payment"),
            SHIPPING_EVT_FAILED => Self::Fail("shipping"),
            SHIPPING_EVT_CANCELED => Self::CancelConfirmed,
            _ => return None,
        })
    }
}

/// Position on the happy path; `None` off it (failed, canceling, canceled).
pub(crate) fn progress(status: OrderStatus) -> Option<u8> {
    Some(match status {
        OrderStatus::Pending => 0,
        OrderStatus::StockReserved => 1,
        OrderStatus::CreditReserved => 2,
        OrderStatus::Paid => 3,
        OrderStatus::Shipped => 4,
        OrderStatus::Completed => 5,
        OrderStatus::Failed | OrderStatus::Canceling | OrderStatus::Canceled => return None,
    })
}

/// The order's transition table: the status an event moves it to, or
/// `None` if the event changes no status (stale, duplicate, or too late).
///
/// Status only moves forward. Events may arrive out of order (a nak'd
/// message comes back after later ones), so a later step's event moves the
/// order straight there, and an earlier step's event arriving after it is
/// stale. While a cancel is pending only shipping decides: a dispatch wins
/// (the cancel is refused), a confirmation cancels; failures change nothing.
pub(crate) fn next_status(status: OrderStatus, target: Target) -> Option<OrderStatus> {
    use OrderStatus::*;
    match (status, target) {
        (Completed | Failed | Canceled, _) => None,
        (Canceling, Target::Reached(to @ (Shipped | Completed))) => Some(to),
        (Canceling, Target::CancelConfirmed) => Some(Canceled),
        (Canceling, _) | (_, Target::CancelConfirmed) => None,
        (from, Target::Reached(to)) => (progress(to) > progress(from)).then_some(to),
        (from, Target::Fail(_)) => (progress(from) < progress(Shipped)).then_some(Failed),
    }
}
