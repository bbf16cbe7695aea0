//! Payload types of every command, event and query in the catalog.
//!
//! Money is always integer cents. Prices come from the inventory catalog,
//! never from the client.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::subjects;

/// A message body with a fixed subject.
pub trait Payload:
    Serialize + serde::de::DeserializeOwned + JsonSchema + Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static
{
    /// The subject this payload is published on.
    const SUBJECT: &'static str;

    /// The saga key carried by this payload, if any.
    fn order_id(&self) -> Option<&str> {
        None
    }
}

macro_rules! payloads {
    ($($ty:ident => $subject:path $(, order_id = $field:ident)?;)*) => {
        $(
            impl Payload for $ty {
                const SUBJECT: &'static str = $subject;
                $(
                    fn order_id(&self) -> Option<&str> {
                        payloads!(@order_id self, $field)
                    }
                )?
            }
        )*
    };
    (@order_id $self:ident, optional) => { $self.order_id.as_deref() };
    (@order_id $self:ident, required) => { Some(&$self.order_id) };
}

/// One line of an order as the client sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct OrderItem {
    /// Catalog product id.
    pub product_id: String,
    /// Units ordered; must be at least 1.
    pub quantity: u32,
}

/// One line of an order priced from the catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct PricedLine {
    /// Catalog product id.
    pub product_id: String,
    /// Units reserved.
    pub quantity: u32,
    /// Catalog price of one unit when the order was reserved.
    pub unit_price_cents: u64,
}

// ---------------------------------------------------------------- commands

/// `orders.cmd.create`: place an order. `order_id` is the idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct CreateOrder {
    /// Optional client-chosen id; sending the same create twice makes one order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// The customer placing the order.
    pub customer_id: String,
    /// At least one line; quantities above zero.
    pub items: Vec<OrderItem>,
}

/// `orders.cmd.cancel`: cancel an order that has not shipped yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct CancelOrder {
    /// The order to cancel.
    pub order_id: String,
    /// Why the customer cancels (shown in the order's timeline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `inventory.cmd.upsert_product`: create a product or replace its name, price and stock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct UpsertProduct {
    /// Product id.
    pub product_id: String,
    /// Display name.
    pub name: String,
    /// Unit price in cents.
    pub price_cents: u64,
    /// Units available to reserve.
    pub stock: u32,
}

/// `customers.cmd.create`: register a customer with a credit limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct CreateCustomer {
    /// Customer id.
    pub customer_id: String,
    /// Display name.
    pub name: String,
    /// Credit limit in cents.
    pub credit_limit_cents: u64,
}

/// `inventory.cmd.reserve` (orchestrated mode): reserve every line or none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct ReserveInventory {
    /// The order.
    pub order_id: String,
    /// The customer (carried on to the reply).
    pub customer_id: String,
    /// Lines to reserve.
    pub items: Vec<OrderItem>,
}

/// `inventory.cmd.release` (orchestrated mode): give back what an order holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct ReleaseInventory {
    /// The order.
    pub order_id: String,
}

/// `inventory.cmd.consume` (orchestrated mode): the order completed; the stock is gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct ConsumeInventory {
    /// The order.
    pub order_id: String,
}

/// `customers.cmd.reserve_credit` (orchestrated mode).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct ReserveCredit {
    /// The order.
    pub order_id: String,
    /// The customer whose credit is used.
    pub customer_id: String,
    /// Amount to hold.
    pub amount_cents: u64,
}

/// `customers.cmd.release_credit` (orchestrated mode).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct ReleaseCredit {
    /// The order.
    pub order_id: String,
}

/// `payments.cmd.execute` (orchestrated mode).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct ExecutePayment {
    /// The order.
    pub order_id: String,
    /// The paying customer.
    pub customer_id: String,
    /// Amount to charge.
    pub amount_cents: u64,
}

/// `payments.cmd.refund` (orchestrated mode).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct RefundPayment {
    /// The order.
    pub order_id: String,
}

/// `shipping.cmd.schedule` (orchestrated mode).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct ScheduleShipment {
    /// The order.
    pub order_id: String,
    /// The receiving customer.
    pub customer_id: String,
    /// What to ship.
    pub lines: Vec<PricedLine>,
}

// ------------------------------------------------------------------ events

/// `orders.evt.created`: an order was accepted and its saga starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct OrderCreated {
    /// The order.
    pub order_id: String,
    /// The customer.
    pub customer_id: String,
    /// Lines as ordered.
    pub items: Vec<OrderItem>,
}

/// `orders.evt.completed`: terminal; the order shipped and was paid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct OrderCompleted {
    /// The order.
    pub order_id: String,
    /// What the customer paid.
    pub total_cents: u64,
}

/// `orders.evt.failed`: terminal; everything the order held has been released.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct OrderFailed {
    /// The order.
    pub order_id: String,
    /// Why, for a person: "insufficient stock for p-17: requested 40, available 30".
    pub reason: String,
    /// The saga step that failed (`inventory`, `customer`, `payment`, `shipping`, `order`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// `orders.evt.cancel_requested`: the customer asked to cancel; compensation runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct OrderCancelRequested {
    /// The order.
    pub order_id: String,
    /// The customer (so credit can be released without a lookup).
    pub customer_id: String,
    /// Why the customer cancels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `orders.evt.canceled`: terminal; stock and credit released, payment refunded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct OrderCanceled {
    /// The order.
    pub order_id: String,
    /// Why it was canceled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `orders.evt.cancel_refused`: a cancel arrived too late (shipped or terminal); nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct OrderCancelRefused {
    /// The order.
    pub order_id: String,
    /// Why the cancel was refused.
    pub reason: String,
}

/// `inventory.evt.product_upserted`: a product was created or changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct ProductUpserted {
    /// Product id.
    pub product_id: String,
    /// Display name.
    pub name: String,
    /// Unit price in cents.
    pub price_cents: u64,
    /// Units available to reserve.
    pub stock: u32,
}

/// `inventory.evt.reserved`: every line of the order is held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct InventoryReserved {
    /// The order.
    pub order_id: String,
    /// The customer.
    pub customer_id: String,
    /// Reserved lines with catalog prices.
    pub lines: Vec<PricedLine>,
    /// Sum of quantity × unit price.
    pub total_cents: u64,
}

/// `inventory.evt.reservation_failed`: nothing was reserved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct ReservationFailed {
    /// The order.
    pub order_id: String,
    /// Why, for a person.
    pub reason: String,
}

/// `inventory.evt.released`: the order's reserved stock is available again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct InventoryReleased {
    /// The order.
    pub order_id: String,
}

/// `inventory.evt.consumed`: the reserved stock left the warehouse with the order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct InventoryConsumed {
    /// The order.
    pub order_id: String,
}

/// `customers.evt.created`: a customer was registered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct CustomerCreated {
    /// Customer id.
    pub customer_id: String,
    /// Display name.
    pub name: String,
    /// Credit limit in cents.
    pub credit_limit_cents: u64,
}

/// `customers.evt.credit_reserved`: the order total is held against the customer's credit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct CreditReserved {
    /// The order.
    pub order_id: String,
    /// The customer.
    pub customer_id: String,
    /// Amount held.
    pub amount_cents: u64,
}

/// `customers.evt.credit_rejected`: the customer is unknown or lacks credit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct CreditRejected {
    /// The order.
    pub order_id: String,
    /// The customer.
    pub customer_id: String,
    /// Why, for a person.
    pub reason: String,
}

/// `customers.evt.credit_released`: the held amount is available again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct CreditReleased {
    /// The order.
    pub order_id: String,
    /// The customer.
    pub customer_id: String,
    /// Amount released.
    pub amount_cents: u64,
}

/// `payments.evt.executed`: the customer was charged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct PaymentExecuted {
    /// The order.
    pub order_id: String,
    /// The customer.
    pub customer_id: String,
    /// Amount charged.
    pub amount_cents: u64,
    /// Payment reference.
    pub payment_id: String,
}

/// `payments.evt.failed`: the charge was declined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct PaymentFailed {
    /// The order.
    pub order_id: String,
    /// Why, for a person.
    pub reason: String,
}

/// `payments.evt.refunded`: a charge was paid back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct PaymentRefunded {
    /// The order.
    pub order_id: String,
    /// Amount refunded.
    pub amount_cents: u64,
    /// Reference of the refunded payment.
    pub payment_id: String,
}

/// `shipping.evt.scheduled`: a delivery worker was assigned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct ShipmentScheduled {
    /// The order.
    pub order_id: String,
    /// Shipment reference.
    pub shipment_id: String,
    /// The delivery worker.
    pub worker: String,
}

/// `shipping.evt.informed`: the delivery worker accepted the shipment; the order has shipped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct ShipmentInformed {
    /// The order.
    pub order_id: String,
    /// Shipment reference.
    pub shipment_id: String,
    /// The delivery worker.
    pub worker: String,
}

/// `shipping.evt.failed`: no shipment could be made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct ShipmentFailed {
    /// The order.
    pub order_id: String,
    /// Why, for a person.
    pub reason: String,
}

/// `shipping.evt.canceled`: answer to a cancel request that arrived before
/// dispatch; this order will never ship, so the cancel can go ahead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct ShipmentCanceled {
    /// The order.
    pub order_id: String,
}

// ----------------------------------------------------------------- queries

/// `orders.query.get` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct GetOrder {
    /// The order to look up.
    pub order_id: String,
}

/// Where an order is in its saga.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Created; stock not yet reserved.
    Pending,
    /// Stock reserved; waiting for credit.
    StockReserved,
    /// Credit reserved; waiting for payment.
    CreditReserved,
    /// Paid; waiting for shipment.
    Paid,
    /// Handed to a delivery worker; can no longer be canceled.
    Shipped,
    /// Terminal: done.
    Completed,
    /// Terminal: failed with a reason; everything released.
    Failed,
    /// Cancel requested; compensation running.
    Canceling,
    /// Terminal: canceled; everything released and refunded.
    Canceled,
}

impl OrderStatus {
    /// Whether the order has reached one of its three terminal states.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Canceled)
    }
}

/// One step of an order's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct TimelineEntry {
    /// Event type (subject).
    pub event: String,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Short human note (reason, amount).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `orders.query.get` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct OrderView {
    /// The order.
    pub order_id: String,
    /// The customer.
    pub customer_id: String,
    /// Where the saga is.
    pub status: OrderStatus,
    /// Lines as ordered.
    pub items: Vec<OrderItem>,
    /// Total in cents once priced by inventory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_cents: Option<u64>,
    /// Why it failed or was canceled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Every event of the saga seen by the order function, oldest first.
    pub timeline: Vec<TimelineEntry>,
}

/// `inventory.query.products` request (empty object).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct ListProducts {}

/// One product in the catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct ProductView {
    /// Product id.
    pub product_id: String,
    /// Display name.
    pub name: String,
    /// Unit price in cents.
    pub price_cents: u64,
    /// Units still available to reserve.
    pub stock: u32,
    /// Units held by orders in flight.
    pub reserved: u32,
}

/// `inventory.query.products` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct ProductList {
    /// Every product, by id.
    pub products: Vec<ProductView>,
}

/// `customers.query.get` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct GetCustomer {
    /// The customer to look up.
    pub customer_id: String,
}

/// `customers.query.get` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct CustomerView {
    /// Customer id.
    pub customer_id: String,
    /// Display name.
    pub name: String,
    /// Credit limit in cents.
    pub credit_limit_cents: u64,
    /// Credit held by orders in flight or completed.
    pub used_cents: u64,
    /// Credit still available.
    pub available_cents: u64,
}

/// `customers.query.list` request (empty object).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct ListCustomers {}

/// `customers.query.list` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct CustomerList {
    /// Every customer, by id.
    pub customers: Vec<CustomerView>,
}

/// Error reply of any query (also signalled by the `Nats-Service-Error` headers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct QueryErrorReply {
    /// HTTP-like code: 400 bad request, 404 not found, 500 internal.
    pub code: u16,
    /// What went wrong, for a person.
    pub error: String,
}

payloads! {
    CreateOrder => subjects::ORDERS_CMD_CREATE, order_id = optional;
    CancelOrder => subjects::ORDERS_CMD_CANCEL, order_id = required;
    UpsertProduct => subjects::INVENTORY_CMD_UPSERT_PRODUCT;
    CreateCustomer => subjects::CUSTOMERS_CMD_CREATE;
    ReserveInventory => subjects::INVENTORY_CMD_RESERVE, order_id = required;
    ReleaseInventory => subjects::INVENTORY_CMD_RELEASE, order_id = required;
    ConsumeInventory => subjects::INVENTORY_CMD_CONSUME, order_id = required;
    ReserveCredit => subjects::CUSTOMERS_CMD_RESERVE_CREDIT, order_id = required;
    ReleaseCredit => subjects::CUSTOMERS_CMD_RELEASE_CREDIT, order_id = required;
    ExecutePayment => subjects::PAYMENTS_CMD_EXECUTE, order_id = required;
    RefundPayment => subjects::PAYMENTS_CMD_REFUND, order_id = required;
    ScheduleShipment => subjects::SHIPPING_CMD_SCHEDULE, order_id = required;
    OrderCreated => subjects::ORDERS_EVT_CREATED, order_id = required;
    OrderCompleted => subjects::ORDERS_EVT_COMPLETED, order_id = required;
    OrderFailed => subjects::ORDERS_EVT_FAILED, order_id = required;
    OrderCancelRequested => subjects::ORDERS_EVT_CANCEL_REQUESTED, order_id = required;
    OrderCanceled => subjects::ORDERS_EVT_CANCELED, order_id = required;
    OrderCancelRefused => subjects::ORDERS_EVT_CANCEL_REFUSED, order_id = required;
    ProductUpserted => subjects::INVENTORY_EVT_PRODUCT_UPSERTED;
    InventoryReserved => subjects::INVENTORY_EVT_RESERVED, order_id = required;
    ReservationFailed => subjects::INVENTORY_EVT_RESERVATION_FAILED, order_id = required;
    InventoryReleased => subjects::INVENTORY_EVT_RELEASED, order_id = required;
    InventoryConsumed => subjects::INVENTORY_EVT_CONSUMED, order_id = required;
    CustomerCreated => subjects::CUSTOMERS_EVT_CREATED;
    CreditReserved => subjects::CUSTOMERS_EVT_CREDIT_RESERVED, order_id = required;
    CreditRejected => subjects::CUSTOMERS_EVT_CREDIT_REJECTED, order_id = required;
    CreditReleased => subjects::CUSTOMERS_EVT_CREDIT_RELEASED, order_id = required;
    PaymentExecuted => subjects::PAYMENTS_EVT_EXECUTED, order_id = required;
    PaymentFailed => subjects::PAYMENTS_EVT_FAILED, order_id = required;
    PaymentRefunded => subjects::PAYMENTS_EVT_REFUNDED, order_id = required;
    ShipmentScheduled => subjects::SHIPPING_EVT_SCHEDULED, order_id = required;
    ShipmentInformed => subjects::SHIPPING_EVT_INFORMED, order_id = required;
    ShipmentFailed => subjects::SHIPPING_EVT_FAILED, order_id = required;
    ShipmentCanceled => subjects::SHIPPING_EVT_CANCELED, order_id = required;
    GetOrder => subjects::ORDERS_QUERY_GET, order_id = required;
    ListProducts => subjects::INVENTORY_QUERY_PRODUCTS;
    GetCustomer => subjects::CUSTOMERS_QUERY_GET;
    ListCustomers => subjects::CUSTOMERS_QUERY_LIST;
}
