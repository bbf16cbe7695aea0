//! The customer step: customers and their credit.
//!
//! Reserves the order total against the customer's available credit,
//! rejects an unknown customer or a total above the available credit, and
//! releases the held amount when the order fails or is canceled.
//!
//! State: `customer/<id>` ([`Customer`]) and [`CREDIT_HOLDS`], one
//! [`CreditHold`] per order (a tombstone marks an order that ended before
//! credit was reserved, so a late request never holds credit for it).

use jetsaga_core::hold::Holds;
use jetsaga_core::{Ctx, Function, FunctionSpec, HandlerError, QueryCtx, QueryError, async_trait};
use jetsaga_events::subjects::*;
use jetsaga_events::*;
use serde::{Deserialize, Serialize};

/// A customer and the credit in use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// Customer id.
    pub customer_id: String,
    /// Display name.
    pub name: String,
    /// Credit limit.
    pub credit_limit_cents: u64,
    /// Credit held by orders in flight or completed.
    pub used_cents: u64,
}

impl Customer {
    /// Credit still available.
    pub fn available_cents(&self) -> u64 {
        self.credit_limit_cents.saturating_sub(self.used_cents)
    }
}

/// Credit held for one order (a [`Hold`](jetsaga_core::hold::Hold) under
/// `credit/<order_id>`, released when the order fails or is canceled).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditHold {
    /// The customer.
    pub customer_id: String,
    /// Amount held.
    pub amount_cents: u64,
}

/// Every order's credit hold.
pub static CREDIT_HOLDS: Holds<CreditHold> = Holds::new("credit");

fn customer_key(id: &str) -> String {
    format!("customer/{id}")
}

/// The customer function.
#[derive(Clone, Copy, Debug)]
pub struct CustomerCredit {
    /// Reacts to saga events, or to the orchestrator's commands.
    pub mode: SagaMode,
    /// The credit limit of a customer a user's sign-up creates.
    pub sign_up_credit_cents: u64,
}

impl Default for CustomerCredit {
    fn default() -> Self {
        Self { mode: SagaMode::default(), sign_up_credit_cents: DEFAULT_CREDIT_LIMIT_CENTS }
    }
}

/// Declaration in the choreographed saga.
pub static SPEC: FunctionSpec = FunctionSpec {
    name: "customer",
    description: "Customers and credit: reserves the order total, rejects what exceeds the credit, releases it",
    subscribes: &[INVENTORY_EVT_RESERVED, ORDERS_EVT_FAILED, ORDERS_EVT_CANCELED, USERS_EVT_SIGNED_UP],
    accepts: &[CUSTOMERS_CMD_CREATE],
    direct: &[],
    emits: &[
        CUSTOMERS_EVT_CREATED,
        CUSTOMERS_EVT_CREDIT_RESERVED,
        CUSTOMERS_EVT_CREDIT_REJECTED,
        CUSTOMERS_EVT_CREDIT_RELEASED,
    ],
    queries: &[CUSTOMERS_QUERY_GET, CUSTOMERS_QUERY_LIST],
    key_field: Some("order_id"),
};

/// Declaration in the orchestrated saga: the orchestrator's commands.
pub static ORCHESTRATED_SPEC: FunctionSpec = FunctionSpec {
    subscribes: &[CUSTOMERS_CMD_RESERVE_CREDIT, CUSTOMERS_CMD_RELEASE_CREDIT, USERS_EVT_SIGNED_UP],
    ..SPEC
};

/// The credit limit of a customer created by a user's sign-up, unless set
/// otherwise ($100): anyone may sign up, so it is small.
pub const DEFAULT_CREDIT_LIMIT_CENTS: u64 = 10_000;

impl CustomerCredit {
    /// A user signed up: their customer, with the default credit, unless it exists.
    pub async fn signed_up(&self, ctx: &mut Ctx<'_>, user: SignedUp) -> Result<(), HandlerError> {
        if ctx.get::<Customer>(&customer_key(&user.customer_id)).await?.is_some() {
            return Ok(());
        }
        let create = CreateCustomer {
            customer_id: user.customer_id,
            name: user.name,
            credit_limit_cents: self.sign_up_credit_cents,
        };
        self.create(ctx, create).await
    }

    /// Registers a customer, or changes the name and limit of a known one.
    pub async fn create(&self, ctx: &mut Ctx<'_>, cmd: CreateCustomer) -> Result<(), HandlerError> {
        if let Err(reason) = cmd.validate() {
            return Err(HandlerError::Rejected { reason, events: vec![] });
        }
        let key = customer_key(&cmd.customer_id);
        let used_cents = ctx.get::<Customer>(&key).await?.map_or(0, |c| c.used_cents);
        let customer = Customer {
            customer_id: cmd.customer_id.clone(),
            name: cmd.name.clone(),
            credit_limit_cents: cmd.credit_limit_cents,
            used_cents,
        };
        ctx.put(&key, &customer);
        ctx.emit(CustomerCreated {
            customer_id: cmd.customer_id,
            name: cmd.name,
            credit_limit_cents: cmd.credit_limit_cents,
        });
        Ok(())
    }

    /// Holds `amount_cents` of the customer's credit for the order.
    pub async fn reserve(
        &self,
        ctx: &mut Ctx<'_>,
        order_id: &str,
        customer_id: &str,
        amount_cents: u64,
    ) -> Result<(), HandlerError> {
        if CREDIT_HOLDS.decided(ctx, order_id).await? {
            return Ok(()); // decided before (or the order already ended)
        }
        let reject = |reason: String| {
            let event =
                CreditRejected { order_id: order_id.into(), customer_id: customer_id.into(), reason: reason.clone() };
            Err(HandlerError::rejected(reason, &event))
        };
        let ckey = customer_key(customer_id);
        let Some(mut customer) = ctx.get::<Customer>(&ckey).await? else {
            return reject(format!("unknown customer {customer_id}"));
        };
        let available = customer.available_cents();
        if amount_cents > available {
            return reject(format!("order total {amount_cents} cents exceeds available credit {available} cents"));
        }
        let Some(used_cents) = customer.used_cents.checked_add(amount_cents) else {
            return reject(format!("order total {amount_cents} cents exceeds what can be counted"));
        };
        customer.used_cents = used_cents;
        ctx.put(&ckey, &customer);
        CREDIT_HOLDS.hold(ctx, order_id, CreditHold { customer_id: customer_id.into(), amount_cents });
        ctx.emit(CreditReserved { order_id: order_id.into(), customer_id: customer_id.into(), amount_cents });
        Ok(())
    }

    /// Gives the held amount back; blocks later holds for the order.
    pub async fn release(&self, ctx: &mut Ctx<'_>, order_id: &str) -> Result<(), HandlerError> {
        let Some(hold) = CREDIT_HOLDS.release(ctx, order_id).await? else {
            return Ok(());
        };
        let ckey = customer_key(&hold.customer_id);
        if let Some(mut customer) = ctx.get::<Customer>(&ckey).await? {
            customer.used_cents = customer.used_cents.saturating_sub(hold.amount_cents);
            ctx.put(&ckey, &customer);
        }
        ctx.emit(CreditReleased {
            order_id: order_id.into(),
            customer_id: hold.customer_id,
            amount_cents: hold.amount_cents,
        });
        Ok(())
    }
}

fn view(customer: Customer) -> CustomerView {
    CustomerView {
        available_cents: customer.available_cents(),
        customer_id: customer.customer_id,
        name: customer.name,
        credit_limit_cents: customer.credit_limit_cents,
        used_cents: customer.used_cents,
    }
}

#[async_trait]
impl Function for CustomerCredit {
    fn spec(&self) -> &'static FunctionSpec {
        self.mode.select(&SPEC, &ORCHESTRATED_SPEC)
    }

    fn prefetch(&self, event: &Envelope) -> Vec<String> {
        let mut keys: Vec<String> =
            jetsaga_events::order_key(event).map(|id| CREDIT_HOLDS.key(id)).into_iter().collect();
        if let Some(id) = event.data.get("customer_id").and_then(|v| v.as_str()) {
            keys.push(customer_key(id));
        }
        keys
    }

    async fn handle(&self, ctx: &mut Ctx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match event.event_type.as_str() {
            CUSTOMERS_CMD_CREATE => self.create(ctx, event.data_as()?).await,
            USERS_EVT_SIGNED_UP => self.signed_up(ctx, event.data_as()?).await,
            INVENTORY_EVT_RESERVED => {
                let reserved: InventoryReserved = event.data_as()?;
                self.reserve(ctx, &reserved.order_id, &reserved.customer_id, reserved.total_cents).await
            }
            CUSTOMERS_CMD_RESERVE_CREDIT => {
                let cmd: ReserveCredit = event.data_as()?;
                self.reserve(ctx, &cmd.order_id, &cmd.customer_id, cmd.amount_cents).await
            }
            ORDERS_EVT_FAILED => self.release(ctx, &event.data_as::<OrderFailed>()?.order_id).await,
            ORDERS_EVT_CANCELED => self.release(ctx, &event.data_as::<OrderCanceled>()?.order_id).await,
            CUSTOMERS_CMD_RELEASE_CREDIT => self.release(ctx, &event.data_as::<ReleaseCredit>()?.order_id).await,
            other => Err(HandlerError::malformed(format!("customer does not handle {other}"))),
        }
    }

    async fn query(&self, ctx: &QueryCtx<'_>, subject: &str, request: &[u8]) -> Result<serde_json::Value, QueryError> {
        let reply = match subject {
            CUSTOMERS_QUERY_GET => {
                let request: GetCustomer = jetsaga_events::envelope::decode_json(subject, request)?;
                let customer = ctx
                    .get::<Customer>(&customer_key(&request.customer_id))
                    .await?
                    .ok_or_else(|| QueryError::NotFound(format!("no customer {}", request.customer_id)))?;
                serde_json::to_value(view(customer))
            }
            CUSTOMERS_QUERY_LIST => {
                let customers = ctx.scan::<Customer>("customer/").await?.into_iter().map(|(_, c)| view(c)).collect();
                serde_json::to_value(CustomerList { customers })
            }
            other => return Err(QueryError::NotFound(format!("customer serves no query {other}"))),
        };
        Ok(reply.expect("views serialize"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetsaga_core::testing::TestFunction;

    async fn with_customer(limit: u64) -> TestFunction {
        let t = TestFunction::new(CustomerCredit::default());
        t.when(&CreateCustomer { customer_id: "c-1".into(), name: "Ada".into(), credit_limit_cents: limit }).await;
        t
    }

    fn reserved(order: &str, customer: &str, total: u64) -> InventoryReserved {
        InventoryReserved { order_id: order.into(), customer_id: customer.into(), lines: vec![], total_cents: total }
    }

    async fn view(t: &TestFunction) -> CustomerView {
        t.query(&GetCustomer { customer_id: "c-1".into() }).await.unwrap()
    }

    #[tokio::test]
    async fn reserves_the_order_total_against_the_credit() {
        let t = with_customer(10_000).await;
        let held: CreditReserved = t.when(&reserved("o-1", "c-1", 6_000)).await.single();
        assert_eq!(held.amount_cents, 6_000);
        let v = view(&t).await;
        assert_eq!((v.used_cents, v.available_cents), (6_000, 4_000));
    }

    #[tokio::test]
    async fn a_total_above_the_available_credit_is_rejected_and_holds_nothing() {
        let t = with_customer(10_000).await;
        t.when(&reserved("o-1", "c-1", 6_000)).await;
        let run = t.when(&reserved("o-2", "c-1", 4_001)).await;
        let rejected: CreditRejected = run.single();
        assert_eq!(rejected.reason, "order total 4001 cents exceeds available credit 4000 cents");
        assert_eq!(view(&t).await.used_cents, 6_000);
        // Exactly the available credit is fine.
        t.when(&reserved("o-3", "c-1", 4_000)).await.single::<CreditReserved>();
    }

    #[tokio::test]
    async fn an_unknown_customer_is_rejected_by_id() {
        let t = with_customer(10_000).await;
        let rejected: CreditRejected = t.when(&reserved("o-1", "c-404", 1)).await.single();
        assert_eq!(rejected.reason, "unknown customer c-404");
    }

    #[tokio::test]
    async fn failure_or_cancel_releases_the_credit_once_and_blocks_late_holds() {
        let t = with_customer(10_000).await;
        t.when(&reserved("o-1", "c-1", 6_000)).await;
        let released: CreditReleased = t.when(&OrderCanceled { order_id: "o-1".into(), reason: None }).await.single();
        assert_eq!(released.amount_cents, 6_000);
        t.when(&OrderFailed { order_id: "o-1".into(), reason: "x".into(), step: None }).await.assert_nothing_emitted();
        assert_eq!(view(&t).await.used_cents, 0);

        t.when(&OrderFailed { order_id: "o-2".into(), reason: "x".into(), step: None }).await.assert_nothing_emitted();
        t.when(&reserved("o-2", "c-1", 100)).await.assert_nothing_emitted();
        assert_eq!(view(&t).await.used_cents, 0, "an ended order never holds credit");
    }

    #[tokio::test]
    async fn updating_a_customer_keeps_credit_in_use() {
        let t = with_customer(10_000).await;
        t.when(&reserved("o-1", "c-1", 6_000)).await;
        t.when(&CreateCustomer { customer_id: "c-1".into(), name: "Ada L.".into(), credit_limit_cents: 5_000 }).await;
        let v = view(&t).await;
        assert_eq!((v.name.as_str(), v.used_cents, v.available_cents), ("Ada L.", 6_000, 0));
    }

    #[tokio::test]
    async fn a_user_signing_up_gets_a_customer_with_the_default_credit_once() {
        let t = TestFunction::new(CustomerCredit::default());
        let user = SignedUp {
            user_id: "u-1".into(),
            email: "ada@example.com".into(),
            name: "Ada".into(),
            customer_id: "u-1".into(),
            role: Role::Customer,
        };
        let created: CustomerCreated = t.when(&user).await.single();
        assert_eq!((created.customer_id.as_str(), created.credit_limit_cents), ("u-1", DEFAULT_CREDIT_LIMIT_CENTS));
        assert_eq!(DEFAULT_CREDIT_LIMIT_CENTS, 10_000, "anyone may sign up: a small default ($100)");
        t.when(&user).await.assert_nothing_emitted();
        // A setting (`jetsaga up --sign-up-credit-cents`).
        let generous = TestFunction::new(CustomerCredit { sign_up_credit_cents: 100_000, ..CustomerCredit::default() });
        assert_eq!(generous.when(&user).await.single::<CustomerCreated>().credit_limit_cents, 100_000);
    }

    #[tokio::test]
    async fn customers_are_listed_by_id() {
        let t = with_customer(1).await;
        t.when(&CreateCustomer { customer_id: "a-0".into(), name: "Zed".into(), credit_limit_cents: 5 }).await;
        let list: CustomerList = t.query(&ListCustomers {}).await.unwrap();
        let ids: Vec<&str> = list.customers.iter().map(|c| c.customer_id.as_str()).collect();
        assert_eq!(ids, ["a-0", "c-1"]);
    }

    #[tokio::test]
    async fn unknown_customers_are_a_404_query() {
        let t = with_customer(1).await;
        let err = t.query::<_, CustomerView>(&GetCustomer { customer_id: "nobody".into() }).await.unwrap_err();
        assert_eq!((err.code(), err.to_string()), (404, "no customer nobody".into()));
    }
}
