//! The order step: accepts orders and cancels, and follows each saga to
//! exactly one terminal event.
//!
//! `orders.cmd.create` is validated (customer id present, at least one
//! item, quantities above zero); its optional `order_id` is the
//! idempotency key, so the same create twice makes one order. The order
//! then follows the other steps' events:
//!
//! ```text
//! created → inventory.reserved → customers.credit_reserved → payments.executed
//!         → shipping.scheduled (shipped) → shipping.informed → orders.completed
//! ```
//!
//! Any failure event ends it with `orders.evt.failed` and a reason a person
//! can read; the other steps release what they hold when they see it. A
//! cancel is accepted until the order has shipped: `orders.evt.cancel_requested`
//! goes out, shipping confirms that nothing was dispatched
//! (`shipping.evt.canceled`) and the order ends `orders.evt.canceled`, upon
//! which stock and credit are released and the payment refunded. If the
//! shipment was dispatched first, the cancel is refused and the order
//! completes. Late or duplicate events never change a terminal order.
//!
//! A customer may have [`OrderLimits::in_flight`] orders under way at once
//! and start [`OrderLimits::per_minute`] a minute; a create past either is
//! refused for now (429 to a caller, nothing kept: the same create may be
//! sent again later), whoever sends it, over HTTP or NATS.
//!
//! State: `order/<id>` ([`Order`]), `customer/<id>` ([`CustomerOrders`]).

use chrono::{DateTime, Utc};
use jetsaga_core::{Ctx, Function, FunctionSpec, HandlerError, QueryCtx, QueryError, async_trait};
use jetsaga_events::subjects::*;
use jetsaga_events::*;
use serde::{Deserialize, Serialize};

mod deadlines;
mod list;
mod orchestration;

pub use deadlines::*;
pub use jetsaga_events::limits::MAX_PAGE;
pub use list::MAX_LIST_READS;
use list::{index, list, position};
use orchestration::{Target, next_status, orchestrate};

/// An order and its saga history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The order.
    pub order_id: String,
    /// The customer.
    pub customer_id: String,
    /// Lines as ordered.
    pub items: Vec<OrderItem>,
    /// Where the saga is.
    pub status: OrderStatus,
    /// Total once priced by inventory.
    pub total_cents: Option<u64>,
    /// Lines as priced by inventory (the orchestrator passes them to shipping).
    #[serde(default)]
    pub lines: Vec<PricedLine>,
    /// Why it failed or was canceled.
    pub reason: Option<String>,
    /// Events seen and emitted, oldest first.
    pub timeline: Vec<TimelineEntry>,
    /// The deadline the order waits under, while it waits.
    #[serde(default)]
    pub deadline: Option<PendingDeadline>,
    /// The deadline JetStream holds a schedule for, when it is not
    /// `deadline` itself: an earlier one, set in an earlier status (see
    /// [`Orders::set_deadline`]). `None` with a `deadline`: that one is
    /// scheduled (as it always was before schedules were armed lazily).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub armed: Option<PendingDeadline>,
    /// Whether it counts among its customer's orders in flight (it was
    /// created under a limit), so that its end gives the place back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub holds_place: bool,
}

/// One customer's orders under way and recent starts, for [`OrderLimits`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerOrders {
    /// Orders created under an in-flight limit that have not ended.
    #[serde(default)]
    pub in_flight: Vec<String>,
    /// When the orders of the last minute were created (under a rate limit).
    #[serde(default)]
    pub started: Vec<DateTime<Utc>>,
}

fn customer_key(customer_id: &str) -> String {
    format!("customer/{customer_id}")
}

/// How many orders one customer may have under way at once, and start in
/// a minute (0: no limit). The cap lives with the saga, so it holds for
/// every gateway instance and for NATS clients alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderLimits {
    /// Orders not ended yet.
    pub in_flight: usize,
    /// Orders created within the last minute.
    pub per_minute: usize,
}

impl Default for OrderLimits {
    /// 20 under way, 60 a minute.
    fn default() -> Self {
        Self { in_flight: 20, per_minute: 60 }
    }
}

impl OrderLimits {
    /// No limit (load generators: one customer, thousands of orders a second).
    pub const UNLIMITED: Self = Self { in_flight: 0, per_minute: 0 };

    fn any(&self) -> bool {
        self.in_flight > 0 || self.per_minute > 0
    }
}

impl Order {
    /// Where the order sorts in the lists (`now` if it has no history yet).
    fn position(&self, now: DateTime<Utc>) -> String {
        position(self.timeline.first().map_or(now, |e| e.at), &self.order_id)
    }

    /// The deadline a schedule is pending for, if any.
    fn scheduled(&self) -> Option<&PendingDeadline> {
        self.armed.as_ref().or(self.deadline.as_ref())
    }
}

impl Order {
    /// When the order was created (its first timeline entry).
    fn began(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.timeline.first().map_or(now, |e| e.at)
    }

    fn record(&mut self, event: &str, at: DateTime<Utc>, note: Option<String>) {
        self.timeline.push(TimelineEntry { event: event.into(), at, note });
    }

    fn view(self) -> OrderView {
        OrderView {
            order_id: self.order_id,
            customer_id: self.customer_id,
            status: self.status,
            items: self.items,
            total_cents: self.total_cents,
            reason: self.reason,
            timeline: self.timeline,
            deadline: self.deadline,
        }
    }
}

fn key(order_id: &str) -> String {
    format!("order/{order_id}")
}

/// The order function; in orchestrated mode, the orchestrator. By default
/// choreographed, with the default deadlines.
#[derive(Clone, Debug)]
pub struct Orders {
    /// Choreographed: announce events, the steps react. Orchestrated: also
    /// send each step its command, and the compensation commands.
    pub mode: SagaMode,
    /// How long an order waits for each step and in all; `None`: forever.
    pub deadlines: Option<Deadlines>,
    /// How many orders a customer may have under way, and start a minute.
    pub limits: OrderLimits,
    /// How long an ended order (and its place in the lists) is kept before
    /// the store removes it.
    pub keep_ended: std::time::Duration,
}

/// How long ended orders are kept by default: 30 days.
pub const DEFAULT_KEEP_ENDED: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

impl Default for Orders {
    fn default() -> Self {
        Self {
            mode: SagaMode::default(),
            deadlines: Some(Deadlines::default()),
            limits: OrderLimits::default(),
            keep_ended: DEFAULT_KEEP_ENDED,
        }
    }
}

/// The function name schedules are kept under (both modes share the subjects).
const SCHEDULER: &str = "order";
/// The kind of saga the order function's milestones are counted under (the `saga` label).
const SAGA: &str = "order";

/// Declaration in the choreographed saga.
pub static SPEC: FunctionSpec = FunctionSpec {
    name: "order",
    description: "Orders: accepts creates and cancels, follows each saga to exactly one terminal event",
    subscribes: &[
        INVENTORY_EVT_RESERVED,
        INVENTORY_EVT_RESERVATION_FAILED,
        CUSTOMERS_EVT_CREDIT_RESERVED,
        CUSTOMERS_EVT_CREDIT_REJECTED,
        PAYMENTS_EVT_EXECUTED,
        PAYMENTS_EVT_FAILED,
        SHIPPING_EVT_SCHEDULED,
        SHIPPING_EVT_INFORMED,
        SHIPPING_EVT_FAILED,
        SHIPPING_EVT_CANCELED,
        ORDERS_EVT_DEADLINE_PASSED,
    ],
    accepts: &[ORDERS_CMD_CREATE, ORDERS_CMD_CANCEL],
    direct: &[],
    emits: &[
        ORDERS_EVT_CREATED,
        ORDERS_EVT_COMPLETED,
        ORDERS_EVT_FAILED,
        ORDERS_EVT_CANCEL_REQUESTED,
        ORDERS_EVT_CANCELED,
        ORDERS_EVT_CANCEL_REFUSED,
        ORDERS_EVT_DEADLINE_CANCELED,
        // Published by the server when one of its schedules fires.
        ORDERS_EVT_DEADLINE_PASSED,
        ORDER_SCHEDULES,
    ],
    queries: &[ORDERS_QUERY_GET, ORDERS_QUERY_LIST],
    key_field: Some("order_id"),
};

/// Declaration in the orchestrated saga: the same order state machine,
/// named `orchestrator`, sending every step its command.
pub static ORCHESTRATED_SPEC: FunctionSpec = FunctionSpec {
    name: "orchestrator",
    description: "Orchestrator: accepts orders, sends each step its command and the compensations, ends each saga once",
    emits: &[
        ORDERS_EVT_CREATED,
        ORDERS_EVT_COMPLETED,
        ORDERS_EVT_FAILED,
        ORDERS_EVT_CANCEL_REQUESTED,
        ORDERS_EVT_CANCELED,
        ORDERS_EVT_CANCEL_REFUSED,
        ORDERS_EVT_DEADLINE_CANCELED,
        // Published by the server when one of its schedules fires.
        ORDERS_EVT_DEADLINE_PASSED,
        ORDER_SCHEDULES,
        INVENTORY_CMD_RESERVE,
        INVENTORY_CMD_RELEASE,
        INVENTORY_CMD_CONSUME,
        CUSTOMERS_CMD_RESERVE_CREDIT,
        CUSTOMERS_CMD_RELEASE_CREDIT,
        PAYMENTS_CMD_EXECUTE,
        PAYMENTS_CMD_REFUND,
        SHIPPING_CMD_SCHEDULE,
    ],
    ..SPEC
};

impl Orders {
    async fn create(&self, ctx: &mut Ctx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let cmd: CreateOrder = event.data_as()?;
        // An invalid create starts nothing and says nothing about any order:
        // its `order_id` may well name someone else's order, and an
        // `orders.evt.failed` for it would make every step compensate that order.
        if let Err(reason) = cmd.validate() {
            return Err(HandlerError::Rejected { reason, events: vec![] });
        }
        // Without a client-chosen id, the command's event id names the order.
        let order_id = cmd.order_id.clone().unwrap_or_else(|| event.id.clone());
        if ctx.get::<Order>(&key(&order_id)).await?.is_some() {
            return Ok(()); // the same create again: one order
        }
        let holds_place = self.take_place(ctx, &cmd.customer_id, &order_id).await?;
        let mut order = Order {
            order_id: order_id.clone(),
            customer_id: cmd.customer_id.clone(),
            items: cmd.items.clone(),
            status: OrderStatus::Pending,
            total_cents: None,
            lines: Vec::new(),
            reason: None,
            timeline: Vec::new(),
            deadline: None,
            armed: None,
            holds_place,
        };
        order.record(ORDERS_EVT_CREATED, ctx.now(), None);
        ctx.saga_started(SAGA);
        ctx.emit(OrderCreated { order_id: order_id.clone(), customer_id: cmd.customer_id, items: cmd.items });
        self.set_deadline(ctx, &mut order);
        self.save(ctx, &order);
        let position = order.position(ctx.now());
        for list in [index::EVERY.to_string(), index::of_customer(&order.customer_id), index::OPEN.to_string()] {
            ctx.put(&format!("{list}{position}"), &order_id);
        }
        self.steer(ctx, &order);
        Ok(())
    }

    /// Stores the order. One that ended is kept for [`Orders::keep_ended`]
    /// with its list entries, and leaves the list of open orders.
    fn save(&self, ctx: &mut Ctx<'_>, order: &Order) {
        if !order.status.is_terminal() {
            ctx.put(&key(&order.order_id), order);
            return;
        }
        let now = ctx.now();
        let until = chrono::Duration::from_std(self.keep_ended)
            .ok()
            .and_then(|keep| now.checked_add_signed(keep))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        ctx.put_until(&key(&order.order_id), order, until);
        let position = order.position(now);
        for list in [index::EVERY.to_string(), index::of_customer(&order.customer_id)] {
            ctx.put_until(&format!("{list}{position}"), &order.order_id, until);
        }
        ctx.delete(&format!("{}{position}", index::OPEN));
    }

    /// Counts a new order against its customer's [`OrderLimits`], or
    /// refuses it for now; whether it holds a place among those in flight.
    async fn take_place(&self, ctx: &mut Ctx<'_>, customer_id: &str, order_id: &str) -> Result<bool, HandlerError> {
        let limits = self.limits;
        if !limits.any() {
            return Ok(false);
        }
        let key = customer_key(customer_id);
        let mut orders = ctx.get::<CustomerOrders>(&key).await?.unwrap_or_default();
        let now = ctx.now();
        let minute = chrono::Duration::minutes(1);
        orders.started.retain(|at| now - *at < minute);
        if limits.in_flight > 0 && orders.in_flight.len() >= limits.in_flight {
            return Err(HandlerError::refused(format!(
                "customer {customer_id} already has {} orders under way (at most {}): try again when one has ended",
                orders.in_flight.len(),
                limits.in_flight
            )));
        }
        if limits.per_minute > 0 && orders.started.len() >= limits.per_minute {
            let wait = orders.started.first().map_or(60, |first| (*first + minute - now).num_seconds().max(1));
            return Err(HandlerError::refused(format!(
                "customer {customer_id} placed {} orders in the last minute (at most {}): try again in {wait} s",
                orders.started.len(),
                limits.per_minute
            )));
        }
        if limits.per_minute > 0 {
            orders.started.push(now);
        }
        let holds_place = limits.in_flight > 0;
        if holds_place {
            orders.in_flight.push(order_id.to_string());
        }
        ctx.put(&key, &orders);
        Ok(holds_place)
    }

    /// An order ended: it gives its place among its customer's back.
    async fn give_place_back(&self, ctx: &mut Ctx<'_>, order: &mut Order) -> Result<(), HandlerError> {
        if !std::mem::take(&mut order.holds_place) {
            return Ok(());
        }
        let key = customer_key(&order.customer_id);
        if let Some(mut orders) = ctx.get::<CustomerOrders>(&key).await? {
            orders.in_flight.retain(|id| *id != order.order_id);
            ctx.put(&key, &orders);
        }
        Ok(())
    }

    async fn cancel(&self, ctx: &mut Ctx<'_>, cmd: CancelOrder) -> Result<(), HandlerError> {
        if let Err(reason) = cmd.validate() {
            return Err(HandlerError::Rejected { reason, events: vec![] });
        }
        let Some(mut order) = ctx.get::<Order>(&key(&cmd.order_id)).await? else {
            return Err(HandlerError::Rejected { reason: format!("no order {}", cmd.order_id), events: vec![] });
        };
        let refuse = |reason: String| {
            let event = OrderCancelRefused { order_id: cmd.order_id.clone(), reason: reason.clone() };
            Err(HandlerError::rejected(reason, &event))
        };
        match order.status {
            OrderStatus::Canceling | OrderStatus::Canceled => Ok(()), // already on its way
            OrderStatus::Shipped => refuse(format!("order {} has already shipped", cmd.order_id)),
            OrderStatus::Completed => refuse(format!("order {} is already completed", cmd.order_id)),
            OrderStatus::Failed => refuse(format!("order {} has already failed", cmd.order_id)),
            OrderStatus::Pending | OrderStatus::StockReserved | OrderStatus::CreditReserved | OrderStatus::Paid => {
                order.status = OrderStatus::Canceling;
                order.reason = Some(cmd.reason.clone().unwrap_or_else(|| "canceled by the customer".into()));
                order.record(ORDERS_EVT_CANCEL_REQUESTED, ctx.now(), cmd.reason.clone());
                self.save(ctx, &order);
                ctx.emit(OrderCancelRequested {
                    order_id: cmd.order_id,
                    customer_id: order.customer_id,
                    reason: cmd.reason,
                });
                Ok(())
            }
        }
    }

    /// The one difference between the two saga modes: having entered a
    /// status, the order tells the steps nothing (choreographed: they
    /// follow its events) or tells each what to do next (orchestrated).
    fn steer(&self, ctx: &mut Ctx<'_>, order: &Order) {
        match self.mode {
            SagaMode::Choreographed => {}
            SagaMode::Orchestrated => orchestrate(ctx, order),
        }
    }

    /// After the order entered its status: a new deadline if it now waits
    /// for a step, none once it ended (its schedule is ended with the event
    /// that says so). Shipped and canceling keep theirs: it comes, finds
    /// the order moved on, and changes nothing.
    ///
    /// Schedules are armed lazily: a new deadline that is due no earlier
    /// than the one already scheduled publishes nothing, because that
    /// schedule comes first and then re-arms for the order's deadline of
    /// the moment (see [`Orders::deadline_passed`]). An order whose steps
    /// answer in time so costs one schedule and one cancel, not one
    /// schedule per step; a deadline is still met to the same time.
    fn set_deadline(&self, ctx: &mut Ctx<'_>, order: &mut Order) {
        let Some(deadlines) = &self.deadlines else { return };
        if order.status.is_terminal() {
            if let Some(scheduled) = order.scheduled().cloned() {
                let deadline = order.deadline.take().unwrap_or(scheduled);
                order.armed = None;
                let canceled = DeadlineCanceled { order_id: order.order_id.clone(), deadline };
                ctx.unschedule(SCHEDULER, &order.order_id, canceled);
            }
            return;
        }
        let created = order.timeline.first().map_or_else(|| ctx.now(), |e| e.at);
        if let Some(deadline) = deadlines.for_status(order.status, created, ctx.now()) {
            match order.scheduled().cloned() {
                Some(scheduled) if scheduled.due_at <= deadline.due_at => order.armed = Some(scheduled),
                _ => self.arm(ctx, order, &deadline),
            }
            order.deadline = Some(deadline);
        }
    }

    /// Schedules `deadline` (replacing whatever was scheduled for the order).
    fn arm(&self, ctx: &mut Ctx<'_>, order: &mut Order, deadline: &PendingDeadline) {
        let passed = DeadlinePassed { order_id: order.order_id.clone(), deadline: deadline.clone() };
        ctx.schedule(SCHEDULER, &order.order_id, deadline.due_at, passed);
        order.armed = None;
        order.deadline = Some(deadline.clone());
    }

    /// A scheduled deadline came. If the order still waits under a
    /// deadline that is now due, it fails; if it waits under a later one
    /// (it moved on to another step meanwhile), that one is scheduled; a
    /// replaced or repeated schedule, or one that finds the order no longer
    /// waiting for a step, changes nothing.
    async fn deadline_passed(&self, ctx: &mut Ctx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let passed: DeadlinePassed = event.data_as()?;
        let Some(mut order) = ctx.get::<Order>(&key(&passed.order_id)).await? else {
            return Ok(());
        };
        if order.status.is_terminal() || order.scheduled() != Some(&passed.deadline) {
            return Ok(());
        }
        // It fired: the server removed its schedule.
        order.armed = None;
        let waiting = order.deadline.clone().filter(|d| d.status == order.status);
        let Some(current) = waiting else {
            order.deadline = None; // shipped or canceling: no step to wait for
            self.save(ctx, &order);
            return Ok(());
        };
        if current != passed.deadline && current.due_at > event.occurred_at.max(ctx.now()) {
            self.arm(ctx, &mut order, &current);
            self.save(ctx, &order);
            return Ok(());
        }
        let reason = deadline_reason(&current);
        let from = order.status;
        order.deadline = None;
        order.record(ORDERS_EVT_DEADLINE_PASSED, event.occurred_at, Some(reason.clone()));
        order.status = OrderStatus::Failed;
        order.reason = Some(reason.clone());
        order.record(ORDERS_EVT_FAILED, ctx.now(), Some(reason.clone()));
        ctx.saga_ended(SAGA, "failed", order.began(ctx.now()));
        ctx.emit(OrderFailed { order_id: order.order_id.clone(), reason, step: Some(current.waiting_for) });
        debug_assert!(from != OrderStatus::Failed);
        self.give_place_back(ctx, &mut order).await?;
        self.save(ctx, &order);
        self.steer(ctx, &order);
        Ok(())
    }

    /// Moves the order along on another step's event, by [`next_status`].
    async fn follow(&self, ctx: &mut Ctx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let Some(order_id) = jetsaga_events::order_key(event).map(str::to_string) else {
            return Err(HandlerError::malformed(format!("{} without an order_id", event.event_type)));
        };
        let Some(mut target) = Target::of(&event.event_type) else {
            return Err(HandlerError::malformed(format!("the order function does not handle {}", event.event_type)));
        };
        let Some(mut order) = ctx.get::<Order>(&key(&order_id)).await? else {
            return Ok(()); // not one of ours (an invalid create was never stored)
        };
        if order.status.is_terminal() {
            return Ok(()); // late or duplicate: a terminal order never changes
        }
        let mut changed = false;
        if event.event_type == INVENTORY_EVT_RESERVED && order.total_cents.is_none() {
            // The price is needed whatever order the events arrive in.
            let reserved: InventoryReserved = event.data_as()?;
            order.total_cents = Some(reserved.total_cents);
            order.lines = reserved.lines;
            changed = true;
        }
        // An order completes with its price: shipping's word that arrived
        // before inventory's price waits for it (the timeline remembers it).
        let informed = |order: &Order| order.timeline.iter().any(|e| e.event == SHIPPING_EVT_INFORMED);
        if order.total_cents.is_some() && event.event_type == INVENTORY_EVT_RESERVED && informed(&order) {
            target = Target::Reached(OrderStatus::Completed);
        } else if order.total_cents.is_none() && target == Target::Reached(OrderStatus::Completed) {
            target = Target::Reached(OrderStatus::Shipped);
        }
        if !order.timeline.iter().any(|e| e.event == event.event_type) {
            order.record(&event.event_type, event.occurred_at, event.data["reason"].as_str().map(str::to_string));
            changed = true;
        }
        if let Some(next) = next_status(order.status, target) {
            let from = order.status;
            order.status = next;
            self.entered(ctx, &mut order, from, target, event);
            self.set_deadline(ctx, &mut order);
            if order.status.is_terminal() {
                self.give_place_back(ctx, &mut order).await?;
            }
            changed = true;
        }
        if changed {
            self.save(ctx, &order);
        }
        Ok(())
    }

    /// What entering `order.status` from `from` announces.
    fn entered(&self, ctx: &mut Ctx<'_>, order: &mut Order, from: OrderStatus, target: Target, event: &Envelope) {
        let order_id = order.order_id.clone();
        if from == OrderStatus::Canceling && matches!(order.status, OrderStatus::Shipped | OrderStatus::Completed) {
            // Dispatched before shipping saw the cancel: too late to cancel.
            let reason = format!("order {order_id} has already shipped");
            order.reason = None;
            order.record(ORDERS_EVT_CANCEL_REFUSED, ctx.now(), Some(reason.clone()));
            ctx.emit(OrderCancelRefused { order_id: order_id.clone(), reason });
        }
        match order.status {
            OrderStatus::Completed => {
                order.record(ORDERS_EVT_COMPLETED, ctx.now(), None);
                ctx.saga_ended(SAGA, "completed", order.began(ctx.now()));
                ctx.emit(OrderCompleted { order_id: order_id.clone(), total_cents: order.total_cents.unwrap_or(0) });
            }
            OrderStatus::Failed => {
                let Target::Fail(step) = target else { unreachable!("only a failure event fails an order") };
                let reason = event.data["reason"].as_str().unwrap_or("no reason given").to_string();
                order.reason = Some(reason.clone());
                order.record(ORDERS_EVT_FAILED, ctx.now(), Some(reason.clone()));
                ctx.saga_ended(SAGA, "failed", order.began(ctx.now()));
                ctx.emit(OrderFailed { order_id: order_id.clone(), reason, step: Some(step.into()) });
            }
            OrderStatus::Canceled => {
                order.record(ORDERS_EVT_CANCELED, ctx.now(), order.reason.clone());
                ctx.saga_ended(SAGA, "canceled", order.began(ctx.now()));
                ctx.emit(OrderCanceled { order_id: order_id.clone(), reason: order.reason.clone() });
            }
            _ => {}
        }
        self.steer(ctx, order);
    }
}

#[async_trait]
impl Function for Orders {
    fn spec(&self) -> &'static FunctionSpec {
        self.mode.select(&SPEC, &ORCHESTRATED_SPEC)
    }

    fn prefetch(&self, event: &Envelope) -> Vec<String> {
        // A create without a client-chosen id names the order after the command.
        let order_id = match event.event_type.as_str() {
            ORDERS_CMD_CREATE => {
                let order = key(jetsaga_events::order_key(event).unwrap_or(&event.id));
                return match event.data.get("customer_id").and_then(|c| c.as_str()) {
                    Some(customer) if self.limits.any() => vec![order, customer_key(customer)],
                    _ => vec![order],
                };
            }
            _ => match jetsaga_events::order_key(event) {
                Some(order_id) => order_id,
                None => return Vec::new(),
            },
        };
        vec![key(order_id)]
    }

    async fn handle(&self, ctx: &mut Ctx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match event.event_type.as_str() {
            ORDERS_CMD_CREATE => self.create(ctx, event).await,
            ORDERS_CMD_CANCEL => self.cancel(ctx, event.data_as()?).await,
            ORDERS_EVT_DEADLINE_PASSED => self.deadline_passed(ctx, event).await,
            _ => self.follow(ctx, event).await,
        }
    }

    async fn query(&self, ctx: &QueryCtx<'_>, subject: &str, request: &[u8]) -> Result<serde_json::Value, QueryError> {
        if subject == ORDERS_QUERY_LIST {
            let request: ListOrders = jetsaga_events::envelope::decode_json(subject, request)?;
            return Ok(serde_json::to_value(
                list(ctx, request, self.deadlines.as_ref().map_or(DEFAULT_SAGA_TIMEOUT, |d| d.saga)).await?,
            )
            .expect("pages serialize"));
        }
        if subject != ORDERS_QUERY_GET {
            return Err(QueryError::NotFound(format!("order serves no query {subject}")));
        }
        let request: GetOrder = jetsaga_events::envelope::decode_json(subject, request)?;
        let order = ctx
            .get::<Order>(&key(&request.order_id))
            .await?
            .ok_or_else(|| QueryError::NotFound(format!("no order {}", request.order_id)))?;
        Ok(serde_json::to_value(order.view()).expect("views serialize"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestration::progress;
    use jetsaga_core::testing::TestFunction;

    fn create(order_id: Option<&str>, items: &[(&str, u32)]) -> CreateOrder {
        CreateOrder {
            order_id: order_id.map(str::to_string),
            customer_id: "c-1".into(),
            items: items.iter().map(|(p, q)| OrderItem { product_id: p.to_string(), quantity: *q }).collect(),
        }
    }

    async fn status(t: &TestFunction, id: &str) -> OrderStatus {
        t.query::<_, OrderView>(&GetOrder { order_id: id.into() }).await.unwrap().status
    }

    async fn placed(t: &TestFunction, id: &str) {
        t.when(&create(Some(id), &[("p", 1)])).await.single::<OrderCreated>();
    }

    fn reserved(id: &str) -> InventoryReserved {
        InventoryReserved { order_id: id.into(), customer_id: "c-1".into(), lines: vec![], total_cents: 250 }
    }

    fn scheduled(id: &str) -> ShipmentScheduled {
        ShipmentScheduled { order_id: id.into(), shipment_id: "s".into(), worker: "w".into() }
    }

    /// An order's end: its one terminal event, published with the event
    /// that ends its pending deadline.
    trait Ended {
        fn ended<P: jetsaga_events::Payload>(&self) -> P;
    }

    impl Ended for jetsaga_core::testing::Run {
        fn ended<P: jetsaga_events::Payload>(&self) -> P {
            assert_eq!(self.emitted_types(), [P::SUBJECT, ORDERS_EVT_DEADLINE_CANCELED], "{:?}", self.outcome);
            assert_eq!(self.unscheduled.len(), 1, "the order's one schedule ends");
            self.emitted[0].data_as().expect("emitted payload decodes")
        }
    }

    /// The deadline the order set last, decoded, and where it waits.
    fn deadline_of(run: &jetsaga_core::testing::Run) -> (String, DeadlinePassed) {
        let [(schedule, envelope)] = run.scheduled.as_slice() else {
            panic!("expected one schedule, got {:?}", run.scheduled);
        };
        assert_eq!(envelope.event_type, ORDERS_EVT_DEADLINE_PASSED);
        assert_eq!(schedule.at(), Some(envelope.occurred_at), "published when it is due: {schedule:?}");
        (schedule.name().to_string(), envelope.data_as().unwrap())
    }

    fn short() -> Orders {
        let deadlines = Deadlines::from_settings(&["2s".into(), "payment=1s".into()], Some("5s")).unwrap();
        Orders { deadlines: Some(deadlines), ..Orders::default() }
    }

    #[tokio::test]
    async fn the_first_wait_arms_one_schedule_and_a_later_step_re_arms_only_when_due_sooner() {
        let t = TestFunction::new(short());
        let created = t.when(&create(Some("o-1"), &[("p", 1)])).await;
        created.single::<OrderCreated>();
        let (subject, first) = deadline_of(&created);
        assert_eq!(subject, jetsaga_core::schedule::name_for("order", "o-1"));
        assert_eq!((first.deadline.waiting_for.as_str(), first.deadline.status), ("inventory", OrderStatus::Pending));
        assert_eq!(first.deadline.after_ms, 2_000);
        // Customer's deadline is due after inventory's, still scheduled: that one comes first and re-arms.
        let stock = t.when(&reserved("o-1")).await;
        assert!(stock.scheduled.is_empty(), "nothing to schedule yet: {:?}", stock.scheduled);
        let view: OrderView = t.query(&GetOrder { order_id: "o-1".into() }).await.unwrap();
        let waits = view.deadline.expect("the order shows the deadline it waits under");
        assert_eq!((waits.waiting_for.as_str(), waits.after_ms), ("customer", 2_000));
        // Payment's wait is shorter: due before what is scheduled, so it is scheduled now, on the same subject.
        let credit =
            t.when(&CreditReserved { order_id: "o-1".into(), customer_id: "c-1".into(), amount_cents: 250 }).await;
        let (same, third) = deadline_of(&credit);
        assert_eq!(same, subject, "the new deadline replaces the old one");
        assert_eq!((third.deadline.waiting_for.as_str(), third.deadline.after_ms), ("payment", 1_000), "per step");
        let view: OrderView = t.query(&GetOrder { order_id: "o-1".into() }).await.unwrap();
        assert_eq!(view.deadline, Some(third.deadline), "the order shows the deadline it waits under");
    }

    #[tokio::test]
    async fn a_deadline_that_finds_the_order_still_waiting_fails_it_with_a_readable_reason() {
        let t = TestFunction::new(short());
        placed(&t, "o-1").await;
        t.when(&reserved("o-1")).await;
        let credit =
            t.when(&CreditReserved { order_id: "o-1".into(), customer_id: "c-1".into(), amount_cents: 250 }).await;
        let (_, passed) = deadline_of(&credit);
        let failed: OrderFailed = t.when(&passed).await.single();
        assert_eq!(failed.reason, "payment did not answer within 1 s");
        assert_eq!(failed.step.as_deref(), Some("payment"));
        let view: OrderView = t.query(&GetOrder { order_id: "o-1".into() }).await.unwrap();
        assert_eq!((view.status, view.deadline), (OrderStatus::Failed, None));
        // The same deadline again, and the late answer, change nothing.
        t.when(&passed).await.assert_nothing_emitted();
        let late = PaymentExecuted {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            amount_cents: 250,
            payment_id: "pay".into(),
        };
        t.when(&late).await.assert_nothing_emitted();
        assert_eq!(status(&t, "o-1").await, OrderStatus::Failed);
    }

    #[tokio::test]
    async fn an_early_deadline_re_arms_for_the_next_step_a_replaced_one_changes_nothing_and_completing_cancels() {
        let t = TestFunction::new(short());
        let created = t.when(&create(Some("o-1"), &[("p", 1)])).await;
        let (_, for_inventory) = deadline_of(&created);
        t.when(&reserved("o-1")).await;
        // Inventory's deadline, come after inventory answered: the order now
        // waits for the customer, due later: that deadline is scheduled instead.
        let early = t.when(&for_inventory).await;
        early.assert_nothing_emitted();
        let (_, for_customer) = deadline_of(&early);
        assert_eq!(
            (for_customer.deadline.waiting_for.as_str(), for_customer.deadline.status),
            ("customer", OrderStatus::StockReserved)
        );
        assert_eq!(status(&t, "o-1").await, OrderStatus::StockReserved);
        // The same inventory deadline again: replaced, nothing happens at all.
        let again = t.when(&for_inventory).await;
        again.assert_nothing_emitted();
        assert!(again.scheduled.is_empty(), "{:?}", again.scheduled);
        t.when(&CreditReserved { order_id: "o-1".into(), customer_id: "c-1".into(), amount_cents: 250 }).await;
        t.when(&PaymentExecuted {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            amount_cents: 250,
            payment_id: "pay".into(),
        })
        .await;
        let shipped = t.when(&scheduled("o-1")).await;
        assert!(shipped.scheduled.is_empty(), "a shipped order cannot fail: no new deadline");
        let informed = ShipmentInformed { order_id: "o-1".into(), shipment_id: "s".into(), worker: "w".into() };
        let done = t.when(&informed).await;
        assert_eq!(done.emitted_types(), [ORDERS_EVT_COMPLETED, ORDERS_EVT_DEADLINE_CANCELED]);
        assert!(done.scheduled.is_empty(), "{:?}", done.scheduled);
        assert_eq!(done.unscheduled, [jetsaga_core::schedule::name_for("order", "o-1")], "ends the schedule");
        let event = &done.emitted[1];
        let canceled: DeadlineCanceled = event.data_as().unwrap();
        assert_eq!(canceled.deadline.waiting_for, "shipping");
        // A deadline firing after completion changes nothing.
        let late = DeadlinePassed { order_id: "o-1".into(), deadline: canceled.deadline };
        t.when(&late).await.assert_nothing_emitted();
        assert_eq!(status(&t, "o-1").await, OrderStatus::Completed);
    }

    #[tokio::test]
    async fn the_whole_order_deadline_wins_when_it_comes_first() {
        let deadlines = Deadlines::from_settings(&["10s".into()], Some("3s")).unwrap();
        let t = TestFunction::new(Orders { deadlines: Some(deadlines), ..Orders::default() });
        let (_, passed) = deadline_of(&t.when(&create(Some("o-1"), &[("p", 1)])).await);
        assert_eq!((passed.deadline.waiting_for.as_str(), passed.deadline.after_ms), ("saga", 3_000));
        let failed: OrderFailed = t.when(&passed).await.single();
        assert_eq!(failed.reason, "the order did not end within 3 s");
    }

    #[tokio::test]
    async fn orders_past_their_deadline_and_not_ended_are_listed_as_stuck() {
        let deadlines = Deadlines::from_settings(&["100ms".into()], Some("10s")).unwrap();
        let t = TestFunction::new(Orders { deadlines: Some(deadlines), ..Orders::default() });
        placed(&t, "o-stuck").await;
        placed(&t, "o-done").await;
        t.when(&PaymentFailed { order_id: "o-done".into(), reason: "declined".into() }).await;
        let list = ListOrders { past_due: Some(true), ..ListOrders::default() };
        let page: OrderPage = t.query(&list).await.unwrap();
        assert_eq!(page.orders, vec![], "within its deadline: not stuck");
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let page: OrderPage = t.query(&list).await.unwrap();
        let ids: Vec<String> = page.orders.into_iter().map(|o| o.order_id).collect();
        assert_eq!(ids, ["o-stuck"], "past due and not ended (its deadline never came)");
    }

    #[tokio::test]
    async fn without_deadlines_nothing_is_scheduled() {
        let t = TestFunction::new(Orders { deadlines: None, ..Orders::default() });
        let created = t.when(&create(Some("o-1"), &[("p", 1)])).await;
        assert!(created.scheduled.is_empty());
    }

    #[test]
    fn waits_are_read_as_people_write_them_and_refused_with_what_is_accepted() {
        let d = Deadlines::from_settings(&["45s".into(), "payment=500ms, shipping=2m".into()], Some("1h")).unwrap();
        assert_eq!(d.step("inventory"), std::time::Duration::from_secs(45));
        assert_eq!(d.step("payment"), std::time::Duration::from_millis(500));
        assert_eq!(d.step("shipping"), std::time::Duration::from_secs(120));
        assert_eq!(d.saga, std::time::Duration::from_secs(3600));
        assert_eq!(Deadlines::from_settings(&[], None).unwrap(), Deadlines::default());
        let (steps, saga) = d.settings();
        assert_eq!(Deadlines::from_settings(&[steps], Some(&saga)).unwrap(), d, "settings read back");
        let err = |steps: &[&str], saga: Option<&str>| {
            Deadlines::from_settings(&steps.iter().map(|s| s.to_string()).collect::<Vec<_>>(), saga).unwrap_err()
        };
        assert_eq!(
            err(&["warehouse=1s"], None),
            "step timeout \"warehouse=1s\": \"warehouse\" is not a step the order waits for (one of inventory, customer, payment, shipping)"
        );
        assert!(
            err(&["30 seconds"], None).contains("the unit must be ms, s, m or h"),
            "{}",
            err(&["30 seconds"], None)
        );
        assert!(err(&["10ms"], None).contains("from 100ms to 7 days"));
        assert!(err(&[], Some("soon")).starts_with("saga timeout \"soon\""));
        assert_eq!(human(30_000), "30 s");
        assert_eq!(human(300_000), "5 min");
        assert_eq!(human(1_500), "1.5 s");
    }

    #[tokio::test]
    async fn a_customer_has_at_most_the_limit_under_way_and_an_ended_order_gives_its_place_back() {
        let limits = OrderLimits { in_flight: 3, per_minute: 0 };
        let t = TestFunction::new(Orders { limits, ..Orders::default() });
        for id in ["o-1", "o-2", "o-3"] {
            t.when(&create(Some(id), &[("p", 1)])).await.single::<OrderCreated>();
        }
        // The same create (same envelope id) refused now, accepted later: nothing was kept.
        let fourth = jetsaga_core::testing::envelope_for(&create(Some("o-4"), &[("p", 1)]));
        let refused = t.deliver(fourth.clone()).await;
        assert_eq!(
            refused.refusal_reason(),
            "customer c-1 already has 3 orders under way (at most 3): try again when one has ended"
        );
        assert!(refused.emitted.is_empty());
        assert!(t.state::<Order>("order/o-4").await.is_none(), "a refused create stores nothing");
        // Another customer is not affected.
        let other = CreateOrder { customer_id: "c-2".into(), ..create(Some("o-9"), &[("p", 1)]) };
        t.when(&other).await.single::<OrderCreated>();
        // One of c-1's orders ends (failed): its place is free again, once.
        t.when(&PaymentFailed { order_id: "o-2".into(), reason: "declined".into() }).await.ended::<OrderFailed>();
        t.when(&PaymentFailed { order_id: "o-2".into(), reason: "declined".into() }).await;
        t.deliver(fourth).await.single::<OrderCreated>();
        let fifth = t.when(&create(Some("o-5"), &[("p", 1)])).await;
        assert!(fifth.refusal_reason().starts_with("customer c-1 already has 3 orders under way"));
        let held: CustomerOrders = t.state("customer/c-1").await.unwrap();
        assert_eq!(held.in_flight, vec!["o-1", "o-3", "o-4"]);
    }

    #[tokio::test]
    async fn a_customer_starts_at_most_the_limit_a_minute_and_is_told_when_to_come_back() {
        let limits = OrderLimits { in_flight: 0, per_minute: 2 };
        let t = TestFunction::new(Orders { limits, ..Orders::default() });
        t.when(&create(Some("o-1"), &[("p", 1)])).await.single::<OrderCreated>();
        t.when(&create(Some("o-2"), &[("p", 1)])).await.single::<OrderCreated>();
        let third = t.when(&create(Some("o-3"), &[("p", 1)])).await;
        let reason = third.refusal_reason();
        assert!(
            reason.starts_with("customer c-1 placed 2 orders in the last minute (at most 2): try again in "),
            "{reason}"
        );
        // Unlimited: nothing is counted at all.
        let t = TestFunction::new(Orders { limits: OrderLimits::UNLIMITED, ..Orders::default() });
        for i in 0..30 {
            t.when(&create(Some(&format!("o-{i}")), &[("p", 1)])).await.single::<OrderCreated>();
        }
        assert!(t.state::<CustomerOrders>("customer/c-1").await.is_none());
    }

    #[tokio::test]
    async fn orders_are_listed_newest_first_by_customer_and_status_a_page_at_a_time() {
        let t = TestFunction::new(Orders::default());
        for id in ["o-1", "o-2", "o-3"] {
            placed(&t, id).await;
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let other = CreateOrder { customer_id: "c-2".into(), ..create(Some("o-9"), &[("p", 1)]) };
        t.when(&other).await.single::<OrderCreated>();
        t.when(&PaymentFailed { order_id: "o-2".into(), reason: "declined".into() }).await;
        let page = |after: Option<String>, status: Option<OrderStatus>| ListOrders {
            customer_id: Some("c-1".into()),
            status,
            limit: Some(2),
            after,
            ..ListOrders::default()
        };
        let first: OrderPage = t.query(&page(None, None)).await.unwrap();
        let ids: Vec<&str> = first.orders.iter().map(|o| o.order_id.as_str()).collect();
        assert_eq!(ids, ["o-3", "o-2"]);
        let second: OrderPage = t.query(&page(first.next.clone(), None)).await.unwrap();
        let ids: Vec<&str> = second.orders.iter().map(|o| o.order_id.as_str()).collect();
        assert_eq!((ids, second.next), (vec!["o-1"], None));
        let failed: OrderPage = t.query(&page(None, Some(OrderStatus::Failed))).await.unwrap();
        assert_eq!(failed.orders.len(), 1);
        assert_eq!(failed.orders[0].reason.as_deref(), Some("declined"));
        let everyone: OrderPage = t.query(&ListOrders { limit: Some(100), ..ListOrders::default() }).await.unwrap();
        assert_eq!(everyone.orders.len(), 4);
        // A time range: from the second order's creation, before the third's.
        let created = |id: &str| everyone.orders.iter().find(|o| o.order_id == id).unwrap().created_at;
        let range = ListOrders {
            created_from: Some(created("o-2")),
            created_until: Some(created("o-3")),
            ..ListOrders::default()
        };
        let between: OrderPage = t.query(&range).await.unwrap();
        let ids: Vec<&str> = between.orders.iter().map(|o| o.order_id.as_str()).collect();
        assert_eq!(ids, ["o-2"], "from is inclusive, until exclusive");
        let err = t.query::<_, OrderPage>(&ListOrders { limit: Some(0), ..ListOrders::default() }).await.unwrap_err();
        assert_eq!((err.code(), err.to_string()), (400, "limit must be 1 to 100, got 0".into()));
    }

    fn ids(page: &OrderPage) -> Vec<&str> {
        page.orders.iter().map(|o| o.order_id.as_str()).collect()
    }

    #[tokio::test]
    async fn an_ended_order_leaves_with_its_list_entries_after_the_retention_and_open_ones_stay() {
        let t = TestFunction::new(Orders { keep_ended: std::time::Duration::from_secs(3600), ..Orders::default() });
        placed(&t, "o-open").await;
        placed(&t, "o-ended").await;
        let neighbour = CreateOrder { customer_id: "c-1/x".into(), ..create(Some("o-x"), &[("p", 1)]) };
        t.when(&neighbour).await.single::<OrderCreated>();
        t.when(&PaymentFailed { order_id: "o-ended".into(), reason: "declined".into() }).await;
        let of_c1 = ListOrders { customer_id: Some("c-1".into()), ..ListOrders::default() };
        let page: OrderPage = t.query(&of_c1).await.unwrap();
        assert_eq!(ids(&page), ["o-ended", "o-open"], "c-1/x's order is not c-1's");
        let now = Utc::now();
        assert_eq!(t.sweep_expired_at(now + chrono::Duration::minutes(30)).await, 0, "within the retention");
        let swept = t.sweep_expired_at(now + chrono::Duration::minutes(61)).await;
        assert_eq!(swept, 3, "the ended order and its two list entries");
        assert!(t.state::<Order>("order/o-ended").await.is_none());
        let page: OrderPage = t.query(&of_c1).await.unwrap();
        assert_eq!(ids(&page), ["o-open"]);
        let everyone: OrderPage = t.query(&ListOrders::default()).await.unwrap();
        assert_eq!(ids(&everyone), ["o-x", "o-open"]);
        // A late event for the removed order finds nothing and changes nothing.
        t.when(&reserved("o-ended")).await.assert_nothing_emitted();
    }

    #[tokio::test]
    async fn a_list_reads_a_bounded_part_of_its_index_and_says_where_to_go_on() {
        let t = TestFunction::new(Orders { limits: OrderLimits::UNLIMITED, ..Orders::default() });
        placed(&t, "o-first").await;
        t.when(&PaymentFailed { order_id: "o-first".into(), reason: "declined".into() }).await;
        for i in 0..MAX_LIST_READS + 10 {
            placed(&t, &format!("o-{i}")).await;
        }
        let failed = |after| ListOrders { status: Some(OrderStatus::Failed), after, ..ListOrders::default() };
        let page: OrderPage = t.query(&failed(None)).await.unwrap();
        assert!(page.orders.is_empty(), "the failed order is past what one page reads");
        assert!(page.next.is_some(), "an empty page that is not the end says where to go on");
        let page: OrderPage = t.query(&failed(page.next)).await.unwrap();
        assert_eq!((ids(&page), page.next.as_deref()), (vec!["o-first"], None));
    }

    #[test]
    fn retentions_are_read_as_people_write_them() {
        assert_eq!(parse_retention("x", "30d").unwrap(), std::time::Duration::from_secs(30 * 86_400));
        assert_eq!(parse_retention("x", "90m").unwrap(), std::time::Duration::from_secs(5_400));
        let err = parse_retention("--keep-ended-orders", "30 days").unwrap_err();
        assert!(err.contains("unit d, h or m"), "{err}");
        assert!(parse_retention("x", "0d").unwrap_err().contains("from 1 minute to 10 years"));
    }

    #[tokio::test]
    async fn a_create_emits_created_and_the_same_create_twice_makes_one_order() {
        let t = TestFunction::new(Orders::default());
        let created: OrderCreated = t.when(&create(Some("o-1"), &[("p", 2)])).await.single();
        assert_eq!(created.order_id, "o-1");
        t.when(&create(Some("o-1"), &[("p", 2)])).await.assert_nothing_emitted();
        assert_eq!(status(&t, "o-1").await, OrderStatus::Pending);
    }

    #[tokio::test]
    async fn without_an_order_id_the_command_id_names_the_order() {
        let t = TestFunction::new(Orders::default());
        let run = t.when(&create(None, &[("p", 1)])).await;
        let created: OrderCreated = run.single();
        assert_eq!(created.order_id, run.input.id);
    }

    #[tokio::test]
    async fn invalid_creates_are_refused_with_every_problem_named_and_emit_and_store_nothing() {
        let t = TestFunction::new(Orders::default());
        let mut bad = create(Some("o-1"), &[("p", 0), ("", 1)]);
        bad.customer_id = " ".into();
        let run = t.when(&bad).await;
        assert_eq!(
            run.rejection_reason(),
            "invalid order: customer_id must not be empty; items[0].quantity must be at least 1, got 0; items[1].product_id must not be empty"
        );
        run.assert_nothing_emitted();
        assert!(t.state::<Order>("order/o-1").await.is_none());
        let run = t.when(&create(Some("o-2"), &[])).await;
        assert_eq!(run.rejection_reason(), "invalid order: items must list at least one product");
    }

    #[tokio::test]
    async fn the_happy_path_ends_completed_with_the_total_and_a_timeline() {
        let t = TestFunction::new(Orders::default());
        placed(&t, "o-1").await;
        t.when(&reserved("o-1")).await.assert_nothing_emitted();
        t.when(&CreditReserved { order_id: "o-1".into(), customer_id: "c-1".into(), amount_cents: 250 }).await;
        t.when(&PaymentExecuted {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            amount_cents: 250,
            payment_id: "p".into(),
        })
        .await;
        assert_eq!(status(&t, "o-1").await, OrderStatus::Paid);
        t.when(&scheduled("o-1")).await;
        assert_eq!(status(&t, "o-1").await, OrderStatus::Shipped);
        let run =
            t.when(&ShipmentInformed { order_id: "o-1".into(), shipment_id: "s".into(), worker: "w".into() }).await;
        assert_eq!(run.ended::<OrderCompleted>().total_cents, 250);
        let view: OrderView = t.query(&GetOrder { order_id: "o-1".into() }).await.unwrap();
        let events: Vec<&str> = view.timeline.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(
            events,
            [
                ORDERS_EVT_CREATED,
                INVENTORY_EVT_RESERVED,
                CUSTOMERS_EVT_CREDIT_RESERVED,
                PAYMENTS_EVT_EXECUTED,
                SHIPPING_EVT_SCHEDULED,
                SHIPPING_EVT_INFORMED,
                ORDERS_EVT_COMPLETED
            ]
        );
        assert_eq!(view.total_cents, Some(250));
    }

    #[tokio::test]
    async fn each_failure_ends_the_order_failed_with_its_step_and_reason() {
        let cases: Vec<(Envelope, &str)> = vec![
            (
                jetsaga_core::testing::envelope_for(&ReservationFailed {
                    order_id: "o".into(),
                    reason: "out of stock".into(),
                }),
                "inventory",
            ),
            (
                jetsaga_core::testing::envelope_for(&CreditRejected {
                    order_id: "o".into(),
                    customer_id: "c".into(),
                    reason: "no credit".into(),
                }),
                "customer",
            ),
            (
                jetsaga_core::testing::envelope_for(&PaymentFailed { order_id: "o".into(), reason: "declined".into() }),
                "payment",
            ),
            (
                jetsaga_core::testing::envelope_for(&ShipmentFailed {
                    order_id: "o".into(),
                    reason: "no worker".into(),
                }),
                "shipping",
            ),
        ];
        for (event, step) in cases {
            let t = TestFunction::new(Orders::default());
            placed(&t, "o").await;
            let reason = event.data["reason"].as_str().unwrap().to_string();
            let failed: OrderFailed = t.deliver(event).await.ended();
            assert_eq!((failed.step.as_deref(), failed.reason), (Some(step), reason));
            assert_eq!(status(&t, "o").await, OrderStatus::Failed);
        }
    }

    #[tokio::test]
    async fn late_or_duplicate_events_never_change_a_terminal_order() {
        let t = TestFunction::new(Orders::default());
        placed(&t, "o-1").await;
        t.when(&PaymentFailed { order_id: "o-1".into(), reason: "declined".into() }).await.ended::<OrderFailed>();
        t.when(&PaymentFailed { order_id: "o-1".into(), reason: "again".into() }).await.assert_nothing_emitted();
        t.when(&ShipmentInformed { order_id: "o-1".into(), shipment_id: "s".into(), worker: "w".into() })
            .await
            .assert_nothing_emitted();
        let view: OrderView = t.query(&GetOrder { order_id: "o-1".into() }).await.unwrap();
        assert_eq!((view.status, view.reason.as_deref()), (OrderStatus::Failed, Some("declined")));
    }

    #[tokio::test]
    async fn a_cancel_before_shipping_waits_for_shippings_confirmation() {
        let t = TestFunction::new(Orders::default());
        placed(&t, "o-1").await;
        t.when(&reserved("o-1")).await;
        let cancel = CancelOrder { order_id: "o-1".into(), reason: Some("changed my mind".into()) };
        t.when(&cancel).await.single::<OrderCancelRequested>();
        assert_eq!(status(&t, "o-1").await, OrderStatus::Canceling);
        t.when(&cancel).await.assert_nothing_emitted();
        // A failure racing the cancel changes nothing; shipping's answer decides.
        t.when(&PaymentFailed { order_id: "o-1".into(), reason: "x".into() }).await.assert_nothing_emitted();
        let canceled: OrderCanceled = t.when(&ShipmentCanceled { order_id: "o-1".into() }).await.ended();
        assert_eq!(canceled.reason.as_deref(), Some("changed my mind"));
        assert_eq!(status(&t, "o-1").await, OrderStatus::Canceled);
    }

    #[tokio::test]
    async fn a_cancel_after_shipping_or_completion_is_refused_and_changes_nothing() {
        let t = TestFunction::new(Orders::default());
        placed(&t, "o-1").await;
        t.when(&reserved("o-1")).await;
        t.when(&scheduled("o-1")).await;
        let run = t.when(&CancelOrder { order_id: "o-1".into(), reason: None }).await;
        assert_eq!(run.single::<OrderCancelRefused>().reason, "order o-1 has already shipped");
        assert_eq!(status(&t, "o-1").await, OrderStatus::Shipped);
        t.when(&ShipmentInformed { order_id: "o-1".into(), shipment_id: "s".into(), worker: "w".into() }).await;
        let run = t.when(&CancelOrder { order_id: "o-1".into(), reason: None }).await;
        assert_eq!(run.rejection_reason(), "order o-1 is already completed");
        assert_eq!(status(&t, "o-1").await, OrderStatus::Completed);
        let run = t.when(&CancelOrder { order_id: "nope".into(), reason: None }).await;
        assert_eq!(run.rejection_reason(), "no order nope");
    }

    #[tokio::test]
    async fn the_orchestrator_sends_each_step_its_command() {
        let t = TestFunction::new(Orders { mode: SagaMode::Orchestrated, ..Orders::default() });
        let run = t.when(&create(Some("o-1"), &[("p", 2)])).await;
        assert_eq!(run.emitted_types(), [ORDERS_EVT_CREATED, INVENTORY_CMD_RESERVE]);
        let lines = vec![PricedLine { product_id: "p".into(), quantity: 2, unit_price_cents: 125 }];
        let reserved = InventoryReserved {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            lines: lines.clone(),
            total_cents: 250,
        };
        let credit: ReserveCredit = t.when(&reserved).await.single();
        assert_eq!(credit.amount_cents, 250);
        let held = CreditReserved { order_id: "o-1".into(), customer_id: "c-1".into(), amount_cents: 250 };
        let pay: ExecutePayment = t.when(&held).await.single();
        assert_eq!(pay.amount_cents, 250);
        let paid = PaymentExecuted {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            amount_cents: 250,
            payment_id: "p".into(),
        };
        let ship: ScheduleShipment = t.when(&paid).await.single();
        assert_eq!(ship.lines, lines);
        t.when(&scheduled("o-1")).await.assert_nothing_emitted();
        let run =
            t.when(&ShipmentInformed { order_id: "o-1".into(), shipment_id: "s".into(), worker: "w".into() }).await;
        assert_eq!(run.emitted_types(), [ORDERS_EVT_COMPLETED, INVENTORY_CMD_CONSUME, ORDERS_EVT_DEADLINE_CANCELED]);
    }

    #[tokio::test]
    async fn the_orchestrator_compensates_every_step_on_failure_and_cancel() {
        let t = TestFunction::new(Orders { mode: SagaMode::Orchestrated, ..Orders::default() });
        t.when(&create(Some("o-1"), &[("p", 1)])).await;
        let run = t.when(&PaymentFailed { order_id: "o-1".into(), reason: "declined".into() }).await;
        let compensations = [INVENTORY_CMD_RELEASE, CUSTOMERS_CMD_RELEASE_CREDIT, PAYMENTS_CMD_REFUND];
        let ending = [ORDERS_EVT_DEADLINE_CANCELED];
        assert_eq!(run.emitted_types(), [&[ORDERS_EVT_FAILED][..], &compensations, &ending].concat());

        t.when(&create(Some("o-2"), &[("p", 1)])).await;
        t.when(&CancelOrder { order_id: "o-2".into(), reason: None }).await.single::<OrderCancelRequested>();
        let run = t.when(&ShipmentCanceled { order_id: "o-2".into() }).await;
        assert_eq!(run.emitted_types(), [&[ORDERS_EVT_CANCELED][..], &compensations, &ending].concat());
    }

    #[tokio::test]
    async fn a_cancel_that_loses_the_race_to_dispatch_is_refused_and_the_order_completes() {
        let t = TestFunction::new(Orders::default());
        placed(&t, "o-1").await;
        t.when(&reserved("o-1")).await;
        t.when(&CancelOrder { order_id: "o-1".into(), reason: None }).await.single::<OrderCancelRequested>();
        t.when(&scheduled("o-1")).await.single::<OrderCancelRefused>();
        let run =
            t.when(&ShipmentInformed { order_id: "o-1".into(), shipment_id: "s".into(), worker: "w".into() }).await;
        run.ended::<OrderCompleted>();
        let view: OrderView = t.query(&GetOrder { order_id: "o-1".into() }).await.unwrap();
        assert_eq!((view.status, view.reason), (OrderStatus::Completed, None));
    }

    /// Every order of the five happy-path events, each delivered twice (as
    /// separate events, so the inbox cannot catch the copy): the order
    /// completes exactly once and its status never moves backwards.
    #[tokio::test]
    async fn events_out_of_order_and_twice_only_move_the_order_forward() {
        let paid = PaymentExecuted {
            order_id: "o".into(),
            customer_id: "c-1".into(),
            amount_cents: 250,
            payment_id: "p".into(),
        };
        let steps: Vec<Envelope> = vec![
            jetsaga_core::testing::envelope_for(&reserved("o")),
            jetsaga_core::testing::envelope_for(&CreditReserved {
                order_id: "o".into(),
                customer_id: "c-1".into(),
                amount_cents: 250,
            }),
            jetsaga_core::testing::envelope_for(&paid),
            jetsaga_core::testing::envelope_for(&scheduled("o")),
            jetsaga_core::testing::envelope_for(&ShipmentInformed {
                order_id: "o".into(),
                shipment_id: "s".into(),
                worker: "w".into(),
            }),
        ];
        let mut orders = vec![vec![]];
        for step in 0..steps.len() {
            orders = orders
                .into_iter()
                .flat_map(|order: Vec<usize>| {
                    (0..=order.len()).map(move |at| {
                        let mut next = order.clone();
                        next.insert(at, step);
                        next
                    })
                })
                .collect();
        }
        assert_eq!(orders.len(), 120);
        for mode in [SagaMode::Choreographed, SagaMode::Orchestrated] {
            for order in &orders {
                let t = TestFunction::new(Orders { mode, ..Orders::default() });
                t.when(&create(Some("o"), &[("p", 1)])).await.all::<OrderCreated>();
                let mut completed = 0;
                let mut last = progress(OrderStatus::Pending);
                for &i in order.iter().chain(order.iter().rev()) {
                    let mut copy = steps[i].clone();
                    copy.id = jetsaga_core::ids::new_id();
                    let run = t.deliver(copy).await;
                    for done in run.all::<OrderCompleted>() {
                        assert_eq!(done.total_cents, 250, "{order:?}: completed with its price");
                        completed += 1;
                    }
                    let now = progress(status(&t, "o").await);
                    assert!(now >= last, "{order:?}: moved back from {last:?} to {now:?}");
                    last = now;
                }
                assert_eq!(status(&t, "o").await, OrderStatus::Completed, "{order:?}");
                assert_eq!(completed, 1, "{order:?}: completed once");
                let view: OrderView = t.query(&GetOrder { order_id: "o".into() }).await.unwrap();
                assert_eq!(view.total_cents, Some(250), "priced whatever the order of events");
            }
        }
    }

    #[tokio::test]
    async fn a_late_failure_or_an_early_step_after_a_later_one_moves_nothing_back() {
        let t = TestFunction::new(Orders::default());
        placed(&t, "o").await;
        t.when(&PaymentExecuted {
            order_id: "o".into(),
            customer_id: "c-1".into(),
            amount_cents: 250,
            payment_id: "p".into(),
        })
        .await;
        t.when(&scheduled("o")).await;
        assert_eq!(status(&t, "o").await, OrderStatus::Shipped);
        t.when(&reserved("o")).await.assert_nothing_emitted();
        t.when(&PaymentFailed { order_id: "o".into(), reason: "late".into() }).await.assert_nothing_emitted();
        assert_eq!(status(&t, "o").await, OrderStatus::Shipped, "a shipped order can no longer fail or go back");
        // A shipping confirmation nobody asked for does not cancel it either.
        t.when(&ShipmentCanceled { order_id: "o".into() }).await.assert_nothing_emitted();
        assert_eq!(status(&t, "o").await, OrderStatus::Shipped);
    }

    #[tokio::test]
    async fn an_invalid_create_naming_an_existing_order_changes_nothing() {
        let t = TestFunction::new(Orders::default());
        placed(&t, "o-1").await;
        let mut bad = create(Some("o-1"), &[]);
        bad.customer_id = String::new();
        let run = t.when(&bad).await;
        run.rejection_reason();
        run.assert_nothing_emitted();
        assert_eq!(status(&t, "o-1").await, OrderStatus::Pending);
    }
}
