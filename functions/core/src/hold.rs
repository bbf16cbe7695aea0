//! Holds: what a step keeps for one order (stock, credit, a charge, a
//! shipment, pending points) from the moment it takes it until the order
//! ends.
//!
//! Every step of a saga that takes something for an order needs the same
//! four rules, and getting any of them wrong breaks effectively-once:
//!
//! 1. **Decide once.** A redelivered or repeated request for an order that
//!    was already decided (held, refused, released, consumed) takes nothing
//!    again.
//! 2. **Give back once.** Releasing (the order failed or was canceled)
//!    returns what was held exactly once; a second release changes nothing.
//! 3. **Remember ended orders.** A release that finds nothing held leaves a
//!    tombstone, so that a request arriving late (redelivered, reordered,
//!    or from a step that was down) never holds anything for an order that
//!    already ended.
//! 4. **Use up once.** Consuming (the order completed) ends the hold
//!    without giving it back; a consumed hold is never released.
//!
//! [`Holds`] keeps one record per order under `<prefix>/<order_id>` in the
//! step's own store, read and written through the handler's [`Ctx`] (so it
//! commits with the step's other writes and events, all or nothing). The
//! step keeps what its holds mean: it decides whether to hold, and gives
//! back or uses up what [`Holds::release`] or [`Holds::consume`] return.
//!
//! ```
//! # use jetsaga_core::{Ctx, HandlerError, hold::Holds};
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Credit { amount_cents: u64 }
//! static CREDIT: Holds<Credit> = Holds::new("credit");
//!
//! async fn reserve(ctx: &mut Ctx<'_>, order_id: &str, amount_cents: u64) -> Result<(), HandlerError> {
//!     if CREDIT.decided(ctx, order_id).await? {
//!         return Ok(()); // a repeat, or the order already ended
//!     }
//!     // ... check and take the credit ...
//!     CREDIT.hold(ctx, order_id, Credit { amount_cents });
//!     Ok(())
//! }
//!
//! async fn release(ctx: &mut Ctx<'_>, order_id: &str) -> Result<(), HandlerError> {
//!     if let Some(credit) = CREDIT.release(ctx, order_id).await? {
//!         // ... give `credit.amount_cents` back and emit the released event ...
//!         # let _ = credit;
//!     }
//!     Ok(())
//! }
//! ```

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{HandlerError, QueryError};
use crate::function::{Ctx, QueryCtx};

/// Where one order's hold stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    /// Taken and kept for the order.
    Held,
    /// Given back (the order failed or was canceled).
    Released,
    /// Used up by the completed order; never given back.
    Consumed,
    /// Given back after it was used up (a completed order refunded later).
    Reversed,
    /// Tombstone: the order ended before anything was held; never hold for it.
    Blocked,
}

/// One order's hold as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold<T> {
    /// The order.
    pub order_id: String,
    /// Where it stands.
    pub state: HoldState,
    /// What is (or was) held; none for a tombstone.
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub held: Option<T>,
}

/// One step's holds of one kind, keyed by order: `<prefix>/<order_id>`.
#[derive(Debug)]
pub struct Holds<T> {
    prefix: &'static str,
    held: PhantomData<fn() -> T>,
}

impl<T> Holds<T> {
    /// Holds stored under `<prefix>/<order_id>` (a prefix no other key of
    /// the step uses).
    pub const fn new(prefix: &'static str) -> Self {
        Self { prefix, held: PhantomData }
    }

    /// The store key of `order_id`'s hold (for [`Function::prefetch`](crate::Function::prefetch)).
    pub fn key(&self, order_id: &str) -> String {
        format!("{}/{order_id}", self.prefix)
    }
}

impl<T: Serialize + DeserializeOwned> Holds<T> {
    /// The order's hold, if anything was decided for it.
    pub async fn get(&self, ctx: &mut Ctx<'_>, order_id: &str) -> Result<Option<Hold<T>>, HandlerError> {
        ctx.get(&self.key(order_id)).await
    }

    /// Whether anything was decided for the order already (held, given
    /// back, used up, or a tombstone): a request for it must take nothing.
    pub async fn decided(&self, ctx: &mut Ctx<'_>, order_id: &str) -> Result<bool, HandlerError> {
        Ok(self.get(ctx, order_id).await?.is_some())
    }

    /// Records `held` for the order. Call it after [`Holds::decided`] said
    /// no, in the same handler run (the write is conditional on that read).
    pub fn hold(&self, ctx: &mut Ctx<'_>, order_id: &str, held: T) {
        self.put(ctx, order_id, HoldState::Held, Some(held));
    }

    /// The order failed or was canceled. If something was held, it is
    /// marked given back and returned (the caller gives it back and says
    /// so, once). If nothing was decided yet, a tombstone is left so that
    /// a late request holds nothing. Otherwise nothing changes.
    pub async fn release(&self, ctx: &mut Ctx<'_>, order_id: &str) -> Result<Option<T>, HandlerError> {
        match self.get(ctx, order_id).await? {
            None => {
                self.put(ctx, order_id, HoldState::Blocked, None);
                Ok(None)
            }
            Some(hold) => Ok(self.advance(ctx, hold, HoldState::Held, HoldState::Released)),
        }
    }

    /// The order completed: a held hold is marked used up and returned
    /// (the caller uses it up, once). Otherwise nothing changes.
    pub async fn consume(&self, ctx: &mut Ctx<'_>, order_id: &str) -> Result<Option<T>, HandlerError> {
        Ok(match self.get(ctx, order_id).await? {
            Some(hold) => self.advance(ctx, hold, HoldState::Held, HoldState::Consumed),
            None => None,
        })
    }

    /// A used-up hold is given back after all (a completed order refunded
    /// later): it is marked reversed and returned, once. Otherwise nothing
    /// changes.
    pub async fn reverse(&self, ctx: &mut Ctx<'_>, order_id: &str) -> Result<Option<T>, HandlerError> {
        Ok(match self.get(ctx, order_id).await? {
            Some(hold) => self.advance(ctx, hold, HoldState::Consumed, HoldState::Reversed),
            None => None,
        })
    }

    /// Leaves a tombstone if nothing was decided for the order yet, so
    /// nothing is ever held for it; returns whether it did.
    pub async fn block(&self, ctx: &mut Ctx<'_>, order_id: &str) -> Result<bool, HandlerError> {
        if self.decided(ctx, order_id).await? {
            return Ok(false);
        }
        self.put(ctx, order_id, HoldState::Blocked, None);
        Ok(true)
    }

    /// The order's hold, for a query.
    pub async fn read(&self, ctx: &QueryCtx<'_>, order_id: &str) -> Result<Option<Hold<T>>, QueryError> {
        ctx.get(&self.key(order_id)).await
    }

    fn advance(&self, ctx: &mut Ctx<'_>, mut hold: Hold<T>, from: HoldState, to: HoldState) -> Option<T> {
        if hold.state != from {
            return None;
        }
        hold.state = to;
        ctx.put(&self.key(&hold.order_id), &hold);
        hold.held
    }

    fn put(&self, ctx: &mut Ctx<'_>, order_id: &str, state: HoldState, held: Option<T>) {
        ctx.put(&self.key(order_id), &Hold { order_id: order_id.to_string(), state, held });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestFunction;
    use crate::{Function, FunctionSpec, async_trait};
    use jetsaga_events::Envelope;

    /// A step holding an amount per order, driven by `hold.cmd.<verb>`
    /// envelopes whose data is `{"order_id", "amount"}`; it emits
    /// `hold.evt.<verb>` with what the primitive returned.
    struct Ledger;

    static AMOUNTS: Holds<u64> = Holds::new("amount");

    static SPEC: FunctionSpec = FunctionSpec {
        name: "ledger",
        description: "test",
        subscribes: &["hold.cmd.>"],
        accepts: &[],
        direct: &[],
        emits: &["hold.evt.>"],
        queries: &[],
        key_field: None,
    };

    #[async_trait]
    impl Function for Ledger {
        fn spec(&self) -> &'static FunctionSpec {
            &SPEC
        }

        async fn handle(&self, ctx: &mut Ctx<'_>, event: &Envelope) -> Result<(), HandlerError> {
            let order = event.data["order_id"].as_str().unwrap_or_default().to_string();
            let verb = event.event_type.rsplit('.').next().unwrap_or_default();
            let returned = match verb {
                "hold" => {
                    if AMOUNTS.decided(ctx, &order).await? {
                        None
                    } else {
                        let amount = event.data["amount"].as_u64().unwrap_or_default();
                        AMOUNTS.hold(ctx, &order, amount);
                        Some(amount)
                    }
                }
                "release" => AMOUNTS.release(ctx, &order).await?,
                "consume" => AMOUNTS.consume(ctx, &order).await?,
                "reverse" => AMOUNTS.reverse(ctx, &order).await?,
                "block" => AMOUNTS.block(ctx, &order).await?.then_some(0),
                other => return Err(HandlerError::malformed(format!("no verb {other}"))),
            };
            if let Some(amount) = returned {
                ctx.emit_raw(&format!("hold.evt.{verb}"), Some(&order), &amount);
            }
            Ok(())
        }
    }

    /// Sends `verb` for `order`; returns what the primitive handed back.
    async fn send(t: &TestFunction, verb: &str, order: &str, amount: u64) -> Option<u64> {
        let mut envelope =
            crate::testing::envelope_for(&jetsaga_events::OrderCanceled { order_id: order.into(), reason: None });
        envelope.event_type = format!("hold.cmd.{verb}");
        envelope.data = serde_json::json!({"order_id": order, "amount": amount});
        let run = t.deliver(envelope).await;
        assert!(run.outcome.outbox().is_some(), "{verb} was processed: {:?}", run.outcome);
        run.emitted.first().map(|e| e.data.as_u64().unwrap())
    }

    async fn state(t: &TestFunction, order: &str) -> Option<HoldState> {
        t.state::<Hold<u64>>(&AMOUNTS.key(order)).await.map(|h| h.state)
    }

    #[tokio::test]
    async fn a_hold_is_taken_once_and_given_back_once() {
        let t = TestFunction::new(Ledger);
        assert_eq!(send(&t, "hold", "o-1", 5).await, Some(5));
        assert_eq!(send(&t, "hold", "o-1", 7).await, None, "a repeated request takes nothing more");
        assert_eq!(send(&t, "release", "o-1", 0).await, Some(5));
        assert_eq!(send(&t, "release", "o-1", 0).await, None, "given back once");
        assert_eq!(send(&t, "consume", "o-1", 0).await, None, "a released hold is not used up");
        assert_eq!(send(&t, "hold", "o-1", 5).await, None, "an ended order holds nothing again");
        assert_eq!(state(&t, "o-1").await, Some(HoldState::Released));
    }

    #[tokio::test]
    async fn a_release_before_the_request_leaves_a_tombstone() {
        let t = TestFunction::new(Ledger);
        assert_eq!(send(&t, "release", "o-1", 0).await, None);
        assert_eq!(state(&t, "o-1").await, Some(HoldState::Blocked));
        assert_eq!(send(&t, "hold", "o-1", 5).await, None, "the late request holds nothing");
        assert_eq!(send(&t, "release", "o-1", 0).await, None);
        let stored: Hold<u64> = t.state(&AMOUNTS.key("o-1")).await.unwrap();
        assert_eq!(stored, Hold { order_id: "o-1".into(), state: HoldState::Blocked, held: None });
    }

    #[tokio::test]
    async fn a_consumed_hold_is_never_released_but_can_be_reversed_once() {
        let t = TestFunction::new(Ledger);
        send(&t, "hold", "o-1", 5).await;
        assert_eq!(send(&t, "consume", "o-1", 0).await, Some(5));
        assert_eq!(send(&t, "consume", "o-1", 0).await, None, "used up once");
        assert_eq!(send(&t, "release", "o-1", 0).await, None, "a used-up hold is not given back");
        assert_eq!(state(&t, "o-1").await, Some(HoldState::Consumed));
        assert_eq!(send(&t, "reverse", "o-1", 0).await, Some(5));
        assert_eq!(send(&t, "reverse", "o-1", 0).await, None, "reversed once");
        assert_eq!(state(&t, "o-1").await, Some(HoldState::Reversed));
    }

    #[tokio::test]
    async fn consuming_or_reversing_what_was_never_held_changes_nothing() {
        let t = TestFunction::new(Ledger);
        assert_eq!(send(&t, "consume", "o-1", 0).await, None);
        assert_eq!(send(&t, "reverse", "o-1", 0).await, None);
        assert_eq!(state(&t, "o-1").await, None, "no tombstone: the order may still ask");
        assert_eq!(send(&t, "hold", "o-1", 5).await, Some(5));
        assert_eq!(send(&t, "reverse", "o-1", 0).await, None, "only a used-up hold is reversed");
    }

    #[tokio::test]
    async fn block_only_stops_orders_not_decided_yet() {
        let t = TestFunction::new(Ledger);
        assert_eq!(send(&t, "block", "o-1", 0).await, Some(0), "blocked now");
        assert_eq!(send(&t, "block", "o-1", 0).await, None, "already decided");
        assert_eq!(send(&t, "hold", "o-1", 5).await, None);
        send(&t, "hold", "o-2", 5).await;
        assert_eq!(send(&t, "block", "o-2", 0).await, None, "a held order is not blocked");
        assert_eq!(state(&t, "o-2").await, Some(HoldState::Held));
    }

    #[tokio::test]
    async fn racing_requests_in_one_batch_hold_once() {
        let t = TestFunction::new(Ledger);
        let mut envelopes = Vec::new();
        for amount in [1, 2, 3] {
            let mut envelope =
                crate::testing::envelope_for(&jetsaga_events::OrderCanceled { order_id: "o-1".into(), reason: None });
            envelope.event_type = "hold.cmd.hold".into();
            envelope.data = serde_json::json!({"order_id": "o-1", "amount": amount});
            envelopes.push(envelope);
        }
        let runs = t.deliver_batch(envelopes).await;
        let held: Vec<usize> = runs.iter().map(|r| r.emitted.len()).collect();
        assert_eq!(held, [1, 0, 0], "the first request holds, the others see it");
        let stored: Hold<u64> = t.state(&AMOUNTS.key("o-1")).await.unwrap();
        assert_eq!(stored.held, Some(1));
    }
}
