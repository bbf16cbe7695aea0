//! The inventory step: the catalog and its stock.
//!
//! Reserves every line of an order or none (repeated lines of one product
//! add up), prices the order from the catalog, releases the reservation
//! when the order fails or is canceled, and consumes it when the order
//! completes. Stock is never oversold: every reservation is a conditional
//! write on the product rows it reads, so racing orders cannot both take
//! the last unit.
//!
//! State: `product/<id>` ([`Product`]) and [`RESERVATIONS`], one
//! [`Reservation`] hold per order (a tombstone marks an order that ended
//! before it reserved, so a late request never holds stock for it).

use jetsaga_core::hold::Holds;
use jetsaga_core::{Ctx, Function, FunctionSpec, HandlerError, QueryCtx, QueryError, async_trait};
use jetsaga_events::subjects::*;
use jetsaga_events::*;
use serde::{Deserialize, Serialize};

/// A catalog product.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Product id.
    pub product_id: String,
    /// Display name.
    pub name: String,
    /// Unit price in cents.
    pub price_cents: u64,
    /// Units available to reserve.
    pub stock: u32,
    /// Units held by orders in flight.
    pub reserved: u32,
}

/// Stock held for one order (a [`Hold`](jetsaga_core::hold::Hold) under
/// `reservation/<order_id>`: held, released when the order fails or is
/// canceled, consumed when it completes, or a tombstone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Priced lines held.
    pub lines: Vec<PricedLine>,
    /// Total price.
    pub total_cents: u64,
}

/// Every order's reservation.
pub static RESERVATIONS: Holds<Reservation> = Holds::new("reservation");

fn product_key(product_id: &str) -> String {
    format!("product/{product_id}")
}

/// The inventory function.
#[derive(Clone, Copy, Debug, Default)]
pub struct Inventory {
    /// Reacts to order events, or to the orchestrator's commands.
    pub mode: SagaMode,
}

/// Declaration in the choreographed saga.
pub static SPEC: FunctionSpec = FunctionSpec {
    name: "inventory",
    description: "Catalog and stock: reserves all order lines or none, releases and consumes them",
    subscribes: &[ORDERS_EVT_CREATED, ORDERS_EVT_FAILED, ORDERS_EVT_CANCELED, ORDERS_EVT_COMPLETED],
    accepts: &[INVENTORY_CMD_UPSERT_PRODUCT],
    direct: &[],
    emits: &[
        INVENTORY_EVT_PRODUCT_UPSERTED,
        INVENTORY_EVT_RESERVED,
        INVENTORY_EVT_RESERVATION_FAILED,
        INVENTORY_EVT_RELEASED,
        INVENTORY_EVT_CONSUMED,
    ],
    queries: &[INVENTORY_QUERY_PRODUCTS],
    key_field: Some("order_id"),
};

/// Declaration in the orchestrated saga: the orchestrator's commands.
pub static ORCHESTRATED_SPEC: FunctionSpec =
    FunctionSpec { subscribes: &[INVENTORY_CMD_RESERVE, INVENTORY_CMD_RELEASE, INVENTORY_CMD_CONSUME], ..SPEC };

impl Inventory {
    /// Creates a product or replaces its name, price and available stock
    /// (units held by orders in flight stay held).
    pub async fn upsert(&self, ctx: &mut Ctx<'_>, cmd: UpsertProduct) -> Result<(), HandlerError> {
        if let Err(reason) = cmd.validate() {
            return Err(HandlerError::Rejected { reason, events: vec![] });
        }
        let key = product_key(&cmd.product_id);
        let reserved = ctx.get::<Product>(&key).await?.map_or(0, |p| p.reserved);
        if cmd.stock.checked_add(reserved).is_none() {
            return Err(HandlerError::Rejected {
                reason: format!(
                    "invalid product: stock {} is too large: with {reserved} units held by orders in flight, \
                     at most {} can be available",
                    cmd.stock,
                    u32::MAX - reserved
                ),
                events: vec![],
            });
        }
        let product = Product {
            product_id: cmd.product_id.clone(),
            name: cmd.name.clone(),
            price_cents: cmd.price_cents,
            stock: cmd.stock,
            reserved,
        };
        ctx.put(&key, &product);
        ctx.emit(ProductUpserted {
            product_id: cmd.product_id,
            name: cmd.name,
            price_cents: cmd.price_cents,
            stock: cmd.stock,
        });
        Ok(())
    }

    /// Reserves every line or none.
    pub async fn reserve(
        &self,
        ctx: &mut Ctx<'_>,
        order_id: &str,
        customer_id: &str,
        items: &[OrderItem],
    ) -> Result<(), HandlerError> {
        if RESERVATIONS.decided(ctx, order_id).await? {
            return Ok(()); // decided before (or the order already ended)
        }
        let fail = |reason: String| {
            Err(HandlerError::rejected(reason.clone(), &ReservationFailed { order_id: order_id.to_string(), reason }))
        };
        // Repeated lines of one product add up, in first-seen order.
        let mut wanted: Vec<(String, u32)> = Vec::new();
        for item in items {
            match wanted.iter_mut().find(|(p, _)| *p == item.product_id) {
                Some((_, quantity)) => match quantity.checked_add(item.quantity) {
                    Some(sum) => *quantity = sum,
                    None => return fail(format!("quantity of {} is too large", item.product_id)),
                },
                None => wanted.push((item.product_id.clone(), item.quantity)),
            }
        }
        let mut lines = Vec::with_capacity(wanted.len());
        let mut total: u64 = 0;
        for (product_id, quantity) in wanted {
            let Some(mut product) = ctx.get::<Product>(&product_key(&product_id)).await? else {
                return fail(format!("unknown product {product_id}"));
            };
            if product.stock < quantity {
                return fail(format!(
                    "insufficient stock for {product_id}: requested {quantity}, available {}",
                    product.stock
                ));
            }
            let Some(line_total) =
                product.price_cents.checked_mul(u64::from(quantity)).and_then(|t| t.checked_add(total))
            else {
                return fail("order total is too large".into());
            };
            // Upsert keeps stock + reserved within u32, so moving units
            // between them cannot overflow; checked all the same.
            let (Some(stock), Some(reserved)) =
                (product.stock.checked_sub(quantity), product.reserved.checked_add(quantity))
            else {
                return fail(format!("reserving {quantity} of {product_id} exceeds what can be counted"));
            };
            total = line_total;
            product.stock = stock;
            product.reserved = reserved;
            ctx.put(&product_key(&product_id), &product);
            lines.push(PricedLine { product_id, quantity, unit_price_cents: product.price_cents });
        }
        RESERVATIONS.hold(ctx, order_id, Reservation { lines: lines.clone(), total_cents: total });
        ctx.emit(InventoryReserved {
            order_id: order_id.into(),
            customer_id: customer_id.into(),
            lines,
            total_cents: total,
        });
        Ok(())
    }

    /// Gives back what the order holds; blocks later reservations for it.
    pub async fn release(&self, ctx: &mut Ctx<'_>, order_id: &str) -> Result<(), HandlerError> {
        let Some(reservation) = RESERVATIONS.release(ctx, order_id).await? else {
            return Ok(());
        };
        for line in &reservation.lines {
            let pkey = product_key(&line.product_id);
            if let Some(mut product) = ctx.get::<Product>(&pkey).await? {
                product.stock = product.stock.saturating_add(line.quantity);
                product.reserved = product.reserved.saturating_sub(line.quantity);
                ctx.put(&pkey, &product);
            }
        }
        ctx.emit(InventoryReleased { order_id: order_id.into() });
        Ok(())
    }

    /// The order completed: the held units leave the warehouse.
    pub async fn consume(&self, ctx: &mut Ctx<'_>, order_id: &str) -> Result<(), HandlerError> {
        let Some(reservation) = RESERVATIONS.consume(ctx, order_id).await? else {
            return Ok(());
        };
        for line in &reservation.lines {
            let pkey = product_key(&line.product_id);
            if let Some(mut product) = ctx.get::<Product>(&pkey).await? {
                product.reserved = product.reserved.saturating_sub(line.quantity);
                ctx.put(&pkey, &product);
            }
        }
        ctx.emit(InventoryConsumed { order_id: order_id.into() });
        Ok(())
    }
}

#[async_trait]
impl Function for Inventory {
    fn spec(&self) -> &'static FunctionSpec {
        self.mode.select(&SPEC, &ORCHESTRATED_SPEC)
    }

    fn prefetch(&self, event: &Envelope) -> Vec<String> {
        let mut keys: Vec<String> =
            jetsaga_events::order_key(event).map(|id| RESERVATIONS.key(id)).into_iter().collect();
        keys.extend(event.data_strings("items", "product_id").into_iter().map(product_key));
        if event.event_type == INVENTORY_CMD_UPSERT_PRODUCT
            && let Some(id) = event.data.get("product_id").and_then(|v| v.as_str())
        {
            keys.push(product_key(id));
        }
        keys
    }

    async fn handle(&self, ctx: &mut Ctx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match event.event_type.as_str() {
            INVENTORY_CMD_UPSERT_PRODUCT => self.upsert(ctx, event.data_as()?).await,
            ORDERS_EVT_CREATED => {
                let created: OrderCreated = event.data_as()?;
                self.reserve(ctx, &created.order_id, &created.customer_id, &created.items).await
            }
            INVENTORY_CMD_RESERVE => {
                let cmd: ReserveInventory = event.data_as()?;
                self.reserve(ctx, &cmd.order_id, &cmd.customer_id, &cmd.items).await
            }
            ORDERS_EVT_FAILED => self.release(ctx, &event.data_as::<OrderFailed>()?.order_id).await,
            ORDERS_EVT_CANCELED => self.release(ctx, &event.data_as::<OrderCanceled>()?.order_id).await,
            INVENTORY_CMD_RELEASE => self.release(ctx, &event.data_as::<ReleaseInventory>()?.order_id).await,
            ORDERS_EVT_COMPLETED => self.consume(ctx, &event.data_as::<OrderCompleted>()?.order_id).await,
            INVENTORY_CMD_CONSUME => self.consume(ctx, &event.data_as::<ConsumeInventory>()?.order_id).await,
            other => Err(HandlerError::malformed(format!("inventory does not handle {other}"))),
        }
    }

    async fn query(&self, ctx: &QueryCtx<'_>, subject: &str, request: &[u8]) -> Result<serde_json::Value, QueryError> {
        if subject != INVENTORY_QUERY_PRODUCTS {
            return Err(QueryError::NotFound(format!("inventory serves no query {subject}")));
        }
        if !request.iter().all(u8::is_ascii_whitespace) {
            let _: ListProducts = jetsaga_events::envelope::decode_json(subject, request)?;
        }
        let products = ctx
            .scan::<Product>("product/")
            .await?
            .into_iter()
            .map(|(_, p)| ProductView {
                product_id: p.product_id,
                name: p.name,
                price_cents: p.price_cents,
                stock: p.stock,
                reserved: p.reserved,
            })
            .collect();
        Ok(serde_json::to_value(ProductList { products }).expect("views serialize"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetsaga_core::testing::TestFunction;

    async fn with_stock(products: &[(&str, u64, u32)]) -> TestFunction {
        let t = TestFunction::new(Inventory::default());
        for (id, price, stock) in products {
            let product = Product {
                product_id: id.to_string(),
                name: id.to_string(),
                price_cents: *price,
                stock: *stock,
                reserved: 0,
            };
            t.given(&product_key(id), &product).await;
        }
        t
    }

    fn created(order: &str, items: &[(&str, u32)]) -> OrderCreated {
        OrderCreated {
            order_id: order.into(),
            customer_id: "c-1".into(),
            items: items.iter().map(|(p, q)| OrderItem { product_id: p.to_string(), quantity: *q }).collect(),
        }
    }

    async fn product(t: &TestFunction, id: &str) -> (u32, u32) {
        let p: Product = t.state(&product_key(id)).await.unwrap();
        (p.stock, p.reserved)
    }

    #[tokio::test]
    async fn reserves_and_prices_every_line_from_the_catalog() {
        let t = with_stock(&[("kbd", 4999, 5), ("mouse", 1999, 5)]).await;
        let reserved: InventoryReserved = t.when(&created("o-1", &[("kbd", 2), ("mouse", 1)])).await.single();
        assert_eq!(reserved.total_cents, 2 * 4999 + 1999);
        assert_eq!(reserved.lines[0], PricedLine { product_id: "kbd".into(), quantity: 2, unit_price_cents: 4999 });
        assert_eq!(product(&t, "kbd").await, (3, 2));
        assert_eq!(product(&t, "mouse").await, (4, 1));
    }

    #[tokio::test]
    async fn repeated_lines_of_one_product_add_up() {
        let t = with_stock(&[("kbd", 100, 5)]).await;
        let reserved: InventoryReserved = t.when(&created("o-1", &[("kbd", 2), ("kbd", 3)])).await.single();
        assert_eq!(reserved.lines, vec![PricedLine { product_id: "kbd".into(), quantity: 5, unit_price_cents: 100 }]);
        assert_eq!(product(&t, "kbd").await, (0, 5));
        let run = t.when(&created("o-2", &[("kbd", 1), ("kbd", 1)])).await;
        assert_eq!(run.single::<ReservationFailed>().reason, "insufficient stock for kbd: requested 2, available 0");
    }

    #[tokio::test]
    async fn reservation_is_all_or_nothing() {
        let t = with_stock(&[("kbd", 100, 5), ("mouse", 50, 1)]).await;
        let run = t.when(&created("o-1", &[("kbd", 2), ("mouse", 2)])).await;
        let failed: ReservationFailed = run.single();
        assert_eq!(failed.reason, "insufficient stock for mouse: requested 2, available 1");
        assert_eq!(product(&t, "kbd").await, (5, 0), "the first line must not stay reserved");
        assert!(t.state::<jetsaga_core::hold::Hold<Reservation>>(&RESERVATIONS.key("o-1")).await.is_none());
    }

    #[tokio::test]
    async fn unknown_products_fail_the_reservation_with_their_id() {
        let t = with_stock(&[("kbd", 100, 5)]).await;
        let run = t.when(&created("o-1", &[("kbd", 1), ("ghost", 1)])).await;
        assert_eq!(run.single::<ReservationFailed>().reason, "unknown product ghost");
        assert_eq!(product(&t, "kbd").await, (5, 0));
    }

    #[tokio::test]
    async fn the_last_unit_goes_to_exactly_one_order() {
        let t = with_stock(&[("last", 100, 1)]).await;
        let events =
            (0..5).map(|i| jetsaga_core::testing::envelope_for(&created(&format!("o-{i}"), &[("last", 1)]))).collect();
        let runs = t.deliver_batch(events).await;
        let reserved = runs.iter().filter(|r| r.emitted_types() == [INVENTORY_EVT_RESERVED]).count();
        assert_eq!(reserved, 1);
        assert_eq!(product(&t, "last").await, (0, 1));
    }

    #[tokio::test]
    async fn failure_or_cancel_releases_the_stock_once() {
        let t = with_stock(&[("kbd", 100, 5)]).await;
        t.when(&created("o-1", &[("kbd", 2)])).await;
        let failed = OrderFailed { order_id: "o-1".into(), reason: "payment declined".into(), step: None };
        t.when(&failed).await.single::<InventoryReleased>();
        assert_eq!(product(&t, "kbd").await, (5, 0));
        t.when(&OrderCanceled { order_id: "o-1".into(), reason: None }).await.assert_nothing_emitted();
        assert_eq!(product(&t, "kbd").await, (5, 0), "released once only");
    }

    #[tokio::test]
    async fn a_late_reservation_for_an_ended_order_is_ignored() {
        let t = with_stock(&[("kbd", 100, 5)]).await;
        t.when(&OrderCanceled { order_id: "o-1".into(), reason: None }).await.assert_nothing_emitted();
        t.when(&created("o-1", &[("kbd", 2)])).await.assert_nothing_emitted();
        assert_eq!(product(&t, "kbd").await, (5, 0));
    }

    #[tokio::test]
    async fn completion_consumes_the_reserved_units() {
        let t = with_stock(&[("kbd", 100, 5)]).await;
        t.when(&created("o-1", &[("kbd", 2)])).await;
        t.when(&OrderCompleted { order_id: "o-1".into(), total_cents: 200 }).await.single::<InventoryConsumed>();
        assert_eq!(product(&t, "kbd").await, (3, 0));
        let failed = OrderFailed { order_id: "o-1".into(), reason: "late".into(), step: None };
        t.when(&failed).await.assert_nothing_emitted();
        assert_eq!(product(&t, "kbd").await, (3, 0), "consumed stock is never released");
    }

    #[tokio::test]
    async fn upsert_replaces_stock_but_keeps_units_in_flight() {
        let t = with_stock(&[("kbd", 100, 5)]).await;
        t.when(&created("o-1", &[("kbd", 2)])).await;
        let upsert = UpsertProduct { product_id: "kbd".into(), name: "Keyboard".into(), price_cents: 120, stock: 10 };
        t.when(&upsert).await.single::<ProductUpserted>();
        let list: ProductList = t.query(&ListProducts {}).await.unwrap();
        assert_eq!(
            list.products,
            vec![ProductView {
                product_id: "kbd".into(),
                name: "Keyboard".into(),
                price_cents: 120,
                stock: 10,
                reserved: 2
            }]
        );
    }

    #[tokio::test]
    async fn invalid_products_are_refused_with_every_problem_named() {
        let t = TestFunction::new(Inventory::default());
        let run = t.when(&UpsertProduct { product_id: " ".into(), name: "".into(), price_cents: 1, stock: 1 }).await;
        assert_eq!(run.rejection_reason(), "invalid product: product_id must not be empty; name must not be empty");
        assert!(run.emitted.is_empty());
    }

    #[tokio::test]
    async fn stock_near_the_counting_limit_never_overflows() {
        let t = with_stock(&[("p", 100, 10)]).await;
        t.when(&created("o-1", &[("p", 4)])).await.single::<InventoryReserved>();
        // 4 units are held: at most u32::MAX - 4 can be available.
        let upsert = |stock| UpsertProduct { product_id: "p".into(), name: "P".into(), price_cents: 100, stock };
        let run = t.when(&upsert(u32::MAX)).await;
        assert_eq!(
            run.rejection_reason(),
            format!(
                "invalid product: stock {} is too large: with 4 units held by orders in flight, at most {} can be available",
                u32::MAX,
                u32::MAX - 4
            )
        );
        assert_eq!(product(&t, "p").await, (6, 4), "a refused upsert changes nothing");
        t.when(&upsert(u32::MAX - 4)).await.single::<ProductUpserted>();
        t.when(&created("o-2", &[("p", u32::MAX - 4)])).await.single::<InventoryReserved>();
        assert_eq!(product(&t, "p").await, (0, u32::MAX));
        t.when(&OrderFailed { order_id: "o-2".into(), reason: "x".into(), step: None }).await;
        assert_eq!(product(&t, "p").await, (u32::MAX - 4, 4), "released exactly, nothing saturated away");
    }
}
