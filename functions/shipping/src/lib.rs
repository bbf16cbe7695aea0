//! The shipping step: dispatches a paid order to a delivery worker.
//!
//! On payment it schedules a shipment with one of the delivery workers
//! (`shipping.evt.scheduled`: the order has shipped and can no longer be
//! canceled), then informs the worker (`shipping.evt.informed`), which
//! lets the order complete. A shipment can fail: [`Shipping::failure_rate`]
//! is a knob for demos and tests, decided per order id so a redelivery
//! decides the same way.
//!
//! Shipping also arbitrates cancellation: a cancel request that arrives
//! before dispatch blocks the order and answers `shipping.evt.canceled`;
//! one that arrives after dispatch is answered by the scheduled event
//! already on its way, and the order refuses the cancel.

use jetsaga_core::hold::{HoldState, Holds};
use jetsaga_core::{Ctx, Function, FunctionSpec, HandlerError, async_trait};
use jetsaga_events::subjects::*;
use jetsaga_events::*;
use serde::{Deserialize, Serialize};

/// Delivery workers orders are dispatched to.
pub const WORKERS: [&str; 3] = ["courier-1", "courier-2", "courier-3"];

/// One order's shipment (a [`Hold`](jetsaga_core::hold::Hold) under
/// `shipment/<order_id>`: held once dispatched, consumed when its worker
/// has it, or a tombstone when the order was canceled or ended first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    /// Shipment reference.
    pub shipment_id: String,
    /// Delivery worker.
    pub worker: String,
}

/// Every order's shipment.
pub static SHIPMENTS: Holds<Shipment> = Holds::new("shipment");

/// FNV-1a: stable across processes and versions, unlike `DefaultHasher`.
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The shipping function.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shipping {
    /// Share of orders (0.0–1.0) whose shipment fails.
    pub failure_rate: f64,
    /// Reacts to payment events, or to the orchestrator's commands.
    pub mode: SagaMode,
}

/// Declaration in the choreographed saga.
pub static SPEC: FunctionSpec = FunctionSpec {
    name: "shipping",
    description: "Shipping: dispatches paid orders to a delivery worker; arbitrates cancel before dispatch",
    subscribes: &[PAYMENTS_EVT_EXECUTED, SHIPPING_EVT_SCHEDULED, ORDERS_EVT_CANCEL_REQUESTED, ORDERS_EVT_FAILED],
    accepts: &[],
    direct: &[],
    emits: &[SHIPPING_EVT_SCHEDULED, SHIPPING_EVT_INFORMED, SHIPPING_EVT_FAILED, SHIPPING_EVT_CANCELED],
    queries: &[],
    key_field: Some("order_id"),
};

/// Declaration in the orchestrated saga: the orchestrator's schedule
/// command; it still arbitrates cancel requests itself.
pub static ORCHESTRATED_SPEC: FunctionSpec =
    FunctionSpec { subscribes: &[SHIPPING_CMD_SCHEDULE, SHIPPING_EVT_SCHEDULED, ORDERS_EVT_CANCEL_REQUESTED], ..SPEC };

impl Shipping {
    /// The shipping function of the `mode` saga, failing `failure_rate` of shipments.
    pub fn new(mode: SagaMode, failure_rate: f64) -> Self {
        Self { mode, ..Self::with_failure_rate(failure_rate) }
    }

    /// A shipping function whose shipments fail for `failure_rate` of orders.
    pub fn with_failure_rate(failure_rate: f64) -> Self {
        Self { failure_rate: failure_rate.clamp(0.0, 1.0), mode: SagaMode::Choreographed }
    }

    fn fails(&self, order_id: &str) -> bool {
        let draw = (stable_hash(order_id) % 10_000) as f64 / 10_000.0;
        draw < self.failure_rate
    }

    /// Dispatches the order to a delivery worker.
    pub async fn schedule(&self, ctx: &mut Ctx<'_>, order_id: &str) -> Result<(), HandlerError> {
        if SHIPMENTS.decided(ctx, order_id).await? {
            return Ok(()); // dispatched before, or canceled first
        }
        if self.fails(order_id) {
            let reason = format!("no delivery worker accepted order {order_id}");
            return Err(HandlerError::rejected(reason.clone(), &ShipmentFailed { order_id: order_id.into(), reason }));
        }
        let worker = WORKERS[(stable_hash(order_id) % WORKERS.len() as u64) as usize].to_string();
        let shipment = Shipment { shipment_id: format!("shp-{order_id}"), worker };
        SHIPMENTS.hold(ctx, order_id, shipment.clone());
        ctx.emit(ShipmentScheduled {
            order_id: order_id.into(),
            shipment_id: shipment.shipment_id,
            worker: shipment.worker,
        });
        Ok(())
    }

    /// Hands the scheduled shipment to its worker.
    pub async fn inform(&self, ctx: &mut Ctx<'_>, order_id: &str) -> Result<(), HandlerError> {
        if let Some(shipment) = SHIPMENTS.consume(ctx, order_id).await? {
            ctx.emit(ShipmentInformed {
                order_id: order_id.into(),
                shipment_id: shipment.shipment_id,
                worker: shipment.worker,
            });
        }
        Ok(())
    }

    /// Answers a cancel request: confirmed unless the order has been
    /// dispatched (then the scheduled event already on its way answers it).
    pub async fn cancel(&self, ctx: &mut Ctx<'_>, order_id: &str) -> Result<(), HandlerError> {
        let blocked_now = SHIPMENTS.block(ctx, order_id).await?;
        let already_blocked =
            !blocked_now && SHIPMENTS.get(ctx, order_id).await?.is_some_and(|s| s.state == HoldState::Blocked);
        if blocked_now || already_blocked {
            ctx.emit(ShipmentCanceled { order_id: order_id.into() });
        }
        Ok(())
    }
}

#[async_trait]
impl Function for Shipping {
    fn spec(&self) -> &'static FunctionSpec {
        self.mode.select(&SPEC, &ORCHESTRATED_SPEC)
    }

    fn prefetch(&self, event: &Envelope) -> Vec<String> {
        jetsaga_events::order_key(event).map(|id| SHIPMENTS.key(id)).into_iter().collect()
    }

    async fn handle(&self, ctx: &mut Ctx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match event.event_type.as_str() {
            PAYMENTS_EVT_EXECUTED => self.schedule(ctx, &event.data_as::<PaymentExecuted>()?.order_id).await,
            SHIPPING_CMD_SCHEDULE => self.schedule(ctx, &event.data_as::<ScheduleShipment>()?.order_id).await,
            SHIPPING_EVT_SCHEDULED => self.inform(ctx, &event.data_as::<ShipmentScheduled>()?.order_id).await,
            ORDERS_EVT_CANCEL_REQUESTED => self.cancel(ctx, &event.data_as::<OrderCancelRequested>()?.order_id).await,
            ORDERS_EVT_FAILED => SHIPMENTS.block(ctx, &event.data_as::<OrderFailed>()?.order_id).await.map(|_| ()),
            other => Err(HandlerError::malformed(format!("shipping does not handle {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetsaga_core::testing::TestFunction;

    fn paid(order: &str) -> PaymentExecuted {
        PaymentExecuted { order_id: order.into(), customer_id: "c".into(), amount_cents: 100, payment_id: "p".into() }
    }

    #[tokio::test]
    async fn a_paid_order_is_scheduled_then_its_worker_informed() {
        let t = TestFunction::new(Shipping::default());
        let scheduled: ShipmentScheduled = t.when(&paid("o-1")).await.single();
        assert!(WORKERS.contains(&scheduled.worker.as_str()));
        let informed: ShipmentInformed = t.when(&scheduled).await.single();
        assert_eq!(informed.shipment_id, "shp-o-1");
        t.when(&paid("o-1")).await.assert_nothing_emitted();
    }

    #[tokio::test]
    async fn the_failure_knob_fails_shipments_deterministically() {
        let t = TestFunction::new(Shipping::with_failure_rate(1.0));
        let failed: ShipmentFailed = t.when(&paid("o-1")).await.single();
        assert_eq!(failed.reason, "no delivery worker accepted order o-1");
        let half = Shipping::with_failure_rate(0.5);
        let failing = (0..1000).filter(|i| half.fails(&format!("o-{i}"))).count();
        assert!((400..600).contains(&failing), "about half should fail, got {failing}");
        assert_eq!(half.fails("o-7"), half.fails("o-7"));
    }

    #[tokio::test]
    async fn a_cancel_before_dispatch_is_confirmed_and_blocks_shipping() {
        let t = TestFunction::new(Shipping::default());
        let cancel = OrderCancelRequested { order_id: "o-1".into(), customer_id: "c".into(), reason: None };
        t.when(&cancel).await.single::<ShipmentCanceled>();
        t.when(&paid("o-1")).await.assert_nothing_emitted();
    }

    #[tokio::test]
    async fn a_cancel_after_dispatch_is_not_confirmed() {
        let t = TestFunction::new(Shipping::default());
        t.when(&paid("o-1")).await.single::<ShipmentScheduled>();
        let cancel = OrderCancelRequested { order_id: "o-1".into(), customer_id: "c".into(), reason: None };
        t.when(&cancel).await.assert_nothing_emitted();
    }
}
