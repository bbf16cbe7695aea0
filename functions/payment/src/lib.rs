//! The payment step: charges the order total, refunds it on failure or cancel.
//!
//! Deterministic failure rule: a charge under [`MIN_CHARGE_CENTS`] (one
//! dollar) is declined, so the failure path can be driven from the outside.
//!
//! State: [`PAYMENTS`], one [`Payment`] hold per order (a tombstone marks
//! an order that ended before it was charged, so a late request never
//! charges it).

use jetsaga_core::hold::Holds;
use jetsaga_core::{Ctx, Function, FunctionSpec, HandlerError, async_trait};
use jetsaga_events::subjects::*;
use jetsaga_events::*;
use serde::{Deserialize, Serialize};

/// Charges below this many cents are declined.
pub const MIN_CHARGE_CENTS: u64 = 100;

/// One order's charge (a [`Hold`](jetsaga_core::hold::Hold) under
/// `payment/<order_id>`: held once executed, released when refunded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The customer.
    pub customer_id: String,
    /// Amount charged.
    pub amount_cents: u64,
    /// Payment reference.
    pub payment_id: String,
}

/// Every order's charge.
pub static PAYMENTS: Holds<Payment> = Holds::new("payment");

/// The payment function.
#[derive(Clone, Copy, Debug, Default)]
pub struct Payments {
    /// Reacts to saga events, or to the orchestrator's commands.
    pub mode: SagaMode,
}

/// Declaration in the choreographed saga.
pub static SPEC: FunctionSpec = FunctionSpec {
    name: "payment",
    description: "Payments: charges the order total (under 100 cents is declined), refunds it",
    subscribes: &[CUSTOMERS_EVT_CREDIT_RESERVED, ORDERS_EVT_FAILED, ORDERS_EVT_CANCELED],
    accepts: &[],
    direct: &[],
    emits: &[PAYMENTS_EVT_EXECUTED, PAYMENTS_EVT_FAILED, PAYMENTS_EVT_REFUNDED],
    queries: &[],
    key_field: Some("order_id"),
};

/// Declaration in the orchestrated saga: the orchestrator's commands.
pub static ORCHESTRATED_SPEC: FunctionSpec =
    FunctionSpec { subscribes: &[PAYMENTS_CMD_EXECUTE, PAYMENTS_CMD_REFUND], ..SPEC };

impl Payments {
    /// Charges the customer for the order.
    pub async fn execute(
        &self,
        ctx: &mut Ctx<'_>,
        order_id: &str,
        customer_id: &str,
        amount_cents: u64,
    ) -> Result<(), HandlerError> {
        if PAYMENTS.decided(ctx, order_id).await? {
            return Ok(()); // charged before (or the order already ended)
        }
        if amount_cents < MIN_CHARGE_CENTS {
            let reason =
                format!("payment of {amount_cents} cents declined: the minimum charge is {MIN_CHARGE_CENTS} cents");
            return Err(HandlerError::rejected(reason.clone(), &PaymentFailed { order_id: order_id.into(), reason }));
        }
        let payment_id = format!("pay-{order_id}");
        let payment = Payment { customer_id: customer_id.into(), amount_cents, payment_id: payment_id.clone() };
        PAYMENTS.hold(ctx, order_id, payment);
        ctx.emit(PaymentExecuted {
            order_id: order_id.into(),
            customer_id: customer_id.into(),
            amount_cents,
            payment_id,
        });
        Ok(())
    }

    /// Refunds a charge; blocks a later charge of the order.
    pub async fn refund(&self, ctx: &mut Ctx<'_>, order_id: &str) -> Result<(), HandlerError> {
        if let Some(payment) = PAYMENTS.release(ctx, order_id).await? {
            ctx.emit(PaymentRefunded {
                order_id: order_id.into(),
                amount_cents: payment.amount_cents,
                payment_id: payment.payment_id,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Function for Payments {
    fn spec(&self) -> &'static FunctionSpec {
        self.mode.select(&SPEC, &ORCHESTRATED_SPEC)
    }

    fn prefetch(&self, event: &Envelope) -> Vec<String> {
        jetsaga_events::order_key(event).map(|id| PAYMENTS.key(id)).into_iter().collect()
    }

    async fn handle(&self, ctx: &mut Ctx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match event.event_type.as_str() {
            CUSTOMERS_EVT_CREDIT_RESERVED => {
                let held: CreditReserved = event.data_as()?;
                self.execute(ctx, &held.order_id, &held.customer_id, held.amount_cents).await
            }
            PAYMENTS_CMD_EXECUTE => {
                let cmd: ExecutePayment = event.data_as()?;
                self.execute(ctx, &cmd.order_id, &cmd.customer_id, cmd.amount_cents).await
            }
            ORDERS_EVT_FAILED => self.refund(ctx, &event.data_as::<OrderFailed>()?.order_id).await,
            ORDERS_EVT_CANCELED => self.refund(ctx, &event.data_as::<OrderCanceled>()?.order_id).await,
            PAYMENTS_CMD_REFUND => self.refund(ctx, &event.data_as::<RefundPayment>()?.order_id).await,
            other => Err(HandlerError::malformed(format!("payment does not handle {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetsaga_core::testing::TestFunction;

    fn credit(order: &str, amount: u64) -> CreditReserved {
        CreditReserved { order_id: order.into(), customer_id: "c-1".into(), amount_cents: amount }
    }

    #[tokio::test]
    async fn ninety_nine_cents_is_declined_and_a_dollar_is_charged() {
        let t = TestFunction::new(Payments::default());
        let failed: PaymentFailed = t.when(&credit("o-1", 99)).await.single();
        assert_eq!(failed.reason, "payment of 99 cents declined: the minimum charge is 100 cents");
        let paid: PaymentExecuted = t.when(&credit("o-2", 100)).await.single();
        assert_eq!((paid.amount_cents, paid.payment_id.as_str()), (100, "pay-o-2"));
    }

    #[tokio::test]
    async fn a_payment_is_charged_once_and_refunded_once() {
        let t = TestFunction::new(Payments::default());
        t.when(&credit("o-1", 500)).await.single::<PaymentExecuted>();
        t.when(&credit("o-1", 500)).await.assert_nothing_emitted();
        let refunded: PaymentRefunded = t.when(&OrderCanceled { order_id: "o-1".into(), reason: None }).await.single();
        assert_eq!(refunded.amount_cents, 500);
        t.when(&OrderFailed { order_id: "o-1".into(), reason: "x".into(), step: None }).await.assert_nothing_emitted();
        let stored: jetsaga_core::hold::Hold<Payment> = t.state(&PAYMENTS.key("o-1")).await.unwrap();
        assert_eq!(stored.state, jetsaga_core::hold::HoldState::Released);
    }

    #[tokio::test]
    async fn an_ended_order_is_never_charged() {
        let t = TestFunction::new(Payments::default());
        t.when(&OrderCanceled { order_id: "o-1".into(), reason: None }).await.assert_nothing_emitted();
        t.when(&credit("o-1", 500)).await.assert_nothing_emitted();
    }
}
