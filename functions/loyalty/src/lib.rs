//! The loyalty step: a point per whole dollar of every completed order.
//!
//! Points are earned when an order's payment is executed, held for the
//! order (pending, not yet in the balance), added to the customer's
//! balance when the order completes, dropped if the payment is refunded
//! first (the order failed or was canceled), and taken back if a
//! completed order's payment is refunded later. It listens to events only,
//! so it runs unchanged in both saga modes and the order never waits for it.
//!
//! State: `account/<customer_id>` ([`Account`]) and `points/<order_id>`
//! (a [`Hold`](jetsaga_core::hold::Hold) of [`Pending`] points).

use jetsaga_core::hold::Holds;
use jetsaga_core::{Ctx, Function, FunctionSpec, HandlerError, QueryCtx, QueryError, async_trait};
use jetsaga_events::subjects::*;
use jetsaga_events::*;
use serde::{Deserialize, Serialize};

/// Cents paid per point earned.
pub const CENTS_PER_POINT: u64 = 100;

/// A customer's points.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The customer.
    pub customer_id: String,
    /// Points of completed orders.
    pub points: u64,
    /// Points of paid orders that have not completed yet.
    pub pending_points: u64,
}

/// Points held for one paid order until it ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Who earns them.
    pub customer_id: String,
    /// How many.
    pub points: u64,
}

static POINTS: Holds<Pending> = Holds::new("points");

fn account_key(customer_id: &str) -> String {
    format!("account/{customer_id}")
}

/// The loyalty function.
#[derive(Clone, Copy, Debug, Default)]
pub struct Loyalty;

jetsaga_events::inputs! {
    /// What loyalty takes: it follows the saga's events.
    pub enum LoyaltyInput {
        subscribes {
            Paid(PaymentExecuted),
            Completed(OrderCompleted),
            Refunded(PaymentRefunded),
        }
    }
}

/// Declaration (the same in both saga modes: it follows events).
pub static SPEC: FunctionSpec = FunctionSpec {
    name: "loyalty",
    description: "Loyalty: a point per dollar of every completed order, taken back if it is refunded",
    subscribes: LoyaltyInput::SUBSCRIBES,
    accepts: LoyaltyInput::ACCEPTS,
    direct: &[],
    emits: &[LOYALTY_EVT_POINTS_AWARDED, LOYALTY_EVT_POINTS_REVOKED],
    queries: &[LOYALTY_QUERY_GET],
    key_field: Some("order_id"),
};

impl Loyalty {
    async fn account(&self, ctx: &mut Ctx<'_>, customer_id: &str) -> Result<Account, HandlerError> {
        Ok(ctx
            .get::<Account>(&account_key(customer_id))
            .await?
            .unwrap_or_else(|| Account { customer_id: customer_id.into(), ..Account::default() }))
    }

    /// The order is paid: its points are pending until it ends.
    pub async fn earn(&self, ctx: &mut Ctx<'_>, paid: PaymentExecuted) -> Result<(), HandlerError> {
        if POINTS.decided(ctx, &paid.order_id).await? {
            return Ok(()); // a repeat, or the payment was refunded already
        }
        let points = paid.amount_cents / CENTS_PER_POINT;
        let mut account = self.account(ctx, &paid.customer_id).await?;
        account.pending_points = account.pending_points.saturating_add(points);
        ctx.put(&account_key(&paid.customer_id), &account);
        POINTS.hold(ctx, &paid.order_id, Pending { customer_id: paid.customer_id, points });
        Ok(())
    }

    /// The order completed: its pending points join the balance.
    pub async fn award(&self, ctx: &mut Ctx<'_>, order_id: &str) -> Result<(), HandlerError> {
        let Some(pending) = POINTS.consume(ctx, order_id).await? else {
            if !POINTS.decided(ctx, order_id).await? {
                // Completion implies a payment; its event is on its way (redelivered after this one).
                return Err(HandlerError::retryable(format!(
                    "order {order_id} completed before loyalty saw its payment; trying again"
                )));
            }
            return Ok(());
        };
        let mut account = self.account(ctx, &pending.customer_id).await?;
        account.pending_points = account.pending_points.saturating_sub(pending.points);
        account.points = account.points.saturating_add(pending.points);
        ctx.put(&account_key(&pending.customer_id), &account);
        ctx.emit(PointsAwarded {
            order_id: order_id.into(),
            customer_id: pending.customer_id,
            points: pending.points,
            balance: account.points,
        });
        Ok(())
    }

    /// The payment was refunded: pending points are dropped, awarded ones taken back.
    pub async fn refund(&self, ctx: &mut Ctx<'_>, order_id: &str) -> Result<(), HandlerError> {
        if let Some(pending) = POINTS.release(ctx, order_id).await? {
            let mut account = self.account(ctx, &pending.customer_id).await?;
            account.pending_points = account.pending_points.saturating_sub(pending.points);
            ctx.put(&account_key(&pending.customer_id), &account);
        } else if let Some(awarded) = POINTS.reverse(ctx, order_id).await? {
            let mut account = self.account(ctx, &awarded.customer_id).await?;
            account.points = account.points.saturating_sub(awarded.points);
            ctx.put(&account_key(&awarded.customer_id), &account);
            ctx.emit(PointsRevoked {
                order_id: order_id.into(),
                customer_id: awarded.customer_id,
                points: awarded.points,
                balance: account.points,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Function for Loyalty {
    fn spec(&self) -> &'static FunctionSpec {
        &SPEC
    }

    fn prefetch(&self, event: &Envelope) -> Vec<String> {
        let mut keys: Vec<String> = jetsaga_events::order_key(event).map(|id| POINTS.key(id)).into_iter().collect();
        if let Some(id) = event.data.get("customer_id").and_then(|v| v.as_str()) {
            keys.push(account_key(id));
        }
        keys
    }

    async fn handle(&self, ctx: &mut Ctx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match LoyaltyInput::decode(event)? {
            LoyaltyInput::Paid(paid) => self.earn(ctx, paid).await,
            LoyaltyInput::Completed(completed) => self.award(ctx, &completed.order_id).await,
            LoyaltyInput::Refunded(refunded) => self.refund(ctx, &refunded.order_id).await,
        }
    }

    async fn query(&self, ctx: &QueryCtx<'_>, subject: &str, request: &[u8]) -> Result<serde_json::Value, QueryError> {
        if subject != LOYALTY_QUERY_GET {
            return Err(QueryError::NotFound(format!("loyalty serves no query {subject}")));
        }
        let request: GetLoyalty = jetsaga_events::envelope::decode_json(subject, request)?;
        let account = ctx.get::<Account>(&account_key(&request.customer_id)).await?.unwrap_or_default();
        let view = LoyaltyView {
            customer_id: request.customer_id,
            points: account.points,
            pending_points: account.pending_points,
        };
        Ok(serde_json::to_value(view).expect("views serialize"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetsaga_core::testing::TestFunction;

    fn paid(order: &str, cents: u64) -> PaymentExecuted {
        PaymentExecuted {
            order_id: order.into(),
            customer_id: "c-1".into(),
            amount_cents: cents,
            payment_id: format!("pay-{order}"),
        }
    }

    fn completed(order: &str) -> OrderCompleted {
        OrderCompleted { order_id: order.into(), total_cents: 0 }
    }

    fn refunded(order: &str) -> PaymentRefunded {
        PaymentRefunded { order_id: order.into(), amount_cents: 0, payment_id: format!("pay-{order}") }
    }

    async fn points(t: &TestFunction) -> (u64, u64) {
        let view: LoyaltyView = t.query(&GetLoyalty { customer_id: "c-1".into() }).await.unwrap();
        (view.points, view.pending_points)
    }

    #[tokio::test]
    async fn a_completed_order_earns_a_point_per_whole_dollar_once() {
        let t = TestFunction::new(Loyalty);
        t.when(&paid("o-1", 12_345)).await.assert_nothing_emitted();
        assert_eq!(points(&t).await, (0, 123), "pending until the order completes");
        let awarded: PointsAwarded = t.when(&completed("o-1")).await.single();
        assert_eq!((awarded.points, awarded.balance), (123, 123));
        assert_eq!(points(&t).await, (123, 0));
        t.when(&completed("o-1")).await.assert_nothing_emitted();
        t.when(&paid("o-1", 12_345)).await.assert_nothing_emitted();
        assert_eq!(points(&t).await, (123, 0), "a repeat changes nothing");
    }

    #[tokio::test]
    async fn a_refund_before_completion_drops_the_pending_points() {
        let t = TestFunction::new(Loyalty);
        t.when(&paid("o-1", 5_000)).await;
        t.when(&refunded("o-1")).await.assert_nothing_emitted();
        assert_eq!(points(&t).await, (0, 0));
    }

    #[tokio::test]
    async fn a_refund_after_completion_takes_the_points_back_once() {
        let t = TestFunction::new(Loyalty);
        t.when(&paid("o-1", 5_000)).await;
        t.when(&paid("o-2", 2_000)).await;
        t.when(&completed("o-1")).await.single::<PointsAwarded>();
        t.when(&completed("o-2")).await.single::<PointsAwarded>();
        let revoked: PointsRevoked = t.when(&refunded("o-1")).await.single();
        assert_eq!((revoked.points, revoked.balance), (50, 20));
        t.when(&refunded("o-1")).await.assert_nothing_emitted();
        assert_eq!(points(&t).await, (20, 0));
    }

    #[tokio::test]
    async fn a_payment_seen_after_its_refund_earns_nothing() {
        let t = TestFunction::new(Loyalty);
        t.when(&refunded("o-1")).await.assert_nothing_emitted();
        t.when(&paid("o-1", 5_000)).await.assert_nothing_emitted();
        assert_eq!(points(&t).await, (0, 0));
    }

    #[tokio::test]
    async fn a_completion_seen_before_its_payment_is_retried() {
        let t = TestFunction::new(Loyalty);
        let run = t.when(&completed("o-1")).await;
        assert!(matches!(run.outcome, jetsaga_core::Outcome::Retry(_)), "{:?}", run.outcome);
        t.when(&paid("o-1", 300)).await;
        t.when(&completed("o-1")).await.single::<PointsAwarded>();
        assert_eq!(points(&t).await, (3, 0));
    }

    #[tokio::test]
    async fn an_unknown_customer_has_no_points() {
        let t = TestFunction::new(Loyalty);
        assert_eq!(points(&t).await, (0, 0));
    }
}
