//! Payload types of every command, event and query in the catalog.
//!
//! Money is always integer cents. Prices come from the inventory catalog,
//! never from the client.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::subjects;

pub use jetsaga_envelope::Payload;

macro_rules! payloads {
    ($($ty:ident => $subject:path $(, order_id = $field:ident)?;)*) => {
        $(
            impl Payload for $ty {
                const SUBJECT: &'static str = $subject;
                $(
                    fn saga_key(&self) -> Option<&str> {
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
    #[schemars(length(min = 1, max = crate::limits::MAX_ID_CHARS), regex(pattern = crate::limits::REQUIRED_TEXT_PATTERN))]
    pub product_id: String,
    /// Units ordered; must be at least 1.
    #[serde(deserialize_with = "crate::whole::deserialize")]
    #[schemars(range(min = 1, max = crate::limits::MAX_QUANTITY))]
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
    #[schemars(length(min = 1, max = crate::limits::MAX_ID_CHARS), regex(pattern = crate::limits::REQUIRED_TEXT_PATTERN))]
    pub order_id: Option<String>,
    /// The customer placing the order.
    #[schemars(length(min = 1, max = crate::limits::MAX_ID_CHARS), regex(pattern = crate::limits::REQUIRED_TEXT_PATTERN))]
    pub customer_id: String,
    /// At least one line; quantities above zero.
    #[schemars(length(min = 1, max = crate::limits::MAX_ITEMS))]
    pub items: Vec<OrderItem>,
}

/// `orders.cmd.cancel`: cancel an order that has not shipped yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct CancelOrder {
    /// The order to cancel.
    #[schemars(length(min = 1, max = crate::limits::MAX_ID_CHARS), regex(pattern = crate::limits::REQUIRED_TEXT_PATTERN))]
    pub order_id: String,
    /// Why the customer cancels (shown in the order's timeline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = crate::limits::MAX_REASON_CHARS), regex(pattern = crate::limits::OPTIONAL_TEXT_PATTERN))]
    pub reason: Option<String>,
}

/// `inventory.cmd.upsert_product`: create a product or replace its name, price and stock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct UpsertProduct {
    /// Product id.
    #[schemars(length(min = 1, max = crate::limits::MAX_ID_CHARS), regex(pattern = crate::limits::REQUIRED_TEXT_PATTERN))]
    pub product_id: String,
    /// Display name.
    #[schemars(length(min = 1, max = crate::limits::MAX_NAME_CHARS), regex(pattern = crate::limits::REQUIRED_TEXT_PATTERN))]
    pub name: String,
    /// Unit price in cents.
    #[serde(deserialize_with = "crate::whole::deserialize")]
    #[schemars(range(max = crate::limits::MAX_PRICE_CENTS))]
    pub price_cents: u64,
    /// Units available to reserve.
    #[serde(deserialize_with = "crate::whole::deserialize")]
    pub stock: u32,
}

/// `customers.cmd.create`: register a customer with a credit limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct CreateCustomer {
    /// Customer id.
    #[schemars(length(min = 1, max = crate::limits::MAX_ID_CHARS), regex(pattern = crate::limits::REQUIRED_TEXT_PATTERN))]
    pub customer_id: String,
    /// Display name.
    #[schemars(length(min = 1, max = crate::limits::MAX_NAME_CHARS), regex(pattern = crate::limits::REQUIRED_TEXT_PATTERN))]
    pub name: String,
    /// Credit limit in cents.
    #[serde(deserialize_with = "crate::whole::deserialize")]
    #[schemars(range(max = crate::limits::MAX_CREDIT_LIMIT_CENTS))]
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

/// A deadline the order is waiting under: what it waits for, since which
/// status, and when it is due.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct PendingDeadline {
    /// The step the order waits for (`inventory`, `customer`, `payment`,
    /// `shipping`), or `saga` for the whole order's deadline.
    pub waiting_for: String,
    /// The status the order was in when the deadline was set: a deadline
    /// arriving in any other status changes nothing.
    pub status: OrderStatus,
    /// How long the wait may last, in milliseconds.
    pub after_ms: u64,
    /// When it is due.
    pub due_at: DateTime<Utc>,
}

/// `orders.evt.deadline_passed`: published by JetStream itself at the
/// deadline (a message schedule the order function set when the order began
/// waiting). If the order still waits as it did then, it fails with
/// "<step> did not answer within <time>"; otherwise it changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct DeadlinePassed {
    /// The order.
    pub order_id: String,
    /// The deadline.
    #[serde(flatten)]
    pub deadline: PendingDeadline,
}

/// `orders.evt.deadline_canceled`: the order ended before its deadline;
/// this event also ended the schedule (the server's atomic cancel).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct DeadlineCanceled {
    /// The order.
    pub order_id: String,
    /// The deadline no longer pending.
    #[serde(flatten)]
    pub deadline: PendingDeadline,
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

/// `loyalty.evt.points_awarded`: a completed order's points joined its customer's balance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct PointsAwarded {
    /// The completed order.
    pub order_id: String,
    /// Who earned them.
    pub customer_id: String,
    /// Points awarded (one per whole dollar paid).
    pub points: u64,
    /// The customer's balance afterwards.
    pub balance: u64,
}

/// `loyalty.evt.points_revoked`: a completed order was refunded, its points taken back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct PointsRevoked {
    /// The refunded order.
    pub order_id: String,
    /// Whose points.
    pub customer_id: String,
    /// Points taken back.
    pub points: u64,
    /// The customer's balance afterwards.
    pub balance: u64,
}

/// A user's role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Shops: places, follows and cancels their own orders.
    #[default]
    Customer,
    /// Runs the shop: products, customers, every saga, dead letters.
    Admin,
}

/// `users.cmd.sign_up`: registers a user (and, through
/// `users.evt.signed_up`, a customer with the default credit). Sent over
/// request/reply only and never kept in a stream: it carries the
/// password's hash, computed by the caller (the gateway) with Argon2id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct SignUp {
    /// Email address, the login name (compared case-insensitively).
    pub email: String,
    /// Display name.
    pub name: String,
    /// The password as an Argon2id PHC string (`$argon2id$v=19$...`).
    pub password_hash: String,
}

/// `users.cmd.set_role`: makes a user an administrator, or a customer again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct SetRole {
    /// The user's email address.
    pub email: String,
    /// The new role.
    pub role: Role,
}

/// `users.cmd.log_out`: ends every session of a user issued so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct LogOut {
    /// The user.
    pub user_id: String,
}

/// `users.evt.signed_up`: a user exists, linked to a customer of the same id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct SignedUp {
    /// The new user.
    pub user_id: String,
    /// Email address, lower-cased.
    pub email: String,
    /// Display name.
    pub name: String,
    /// The customer whose orders the user places.
    pub customer_id: String,
    /// Role (`customer` at sign-up).
    pub role: Role,
}

/// `users.evt.role_changed`: a user's role changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct RoleChanged {
    /// The user.
    pub user_id: String,
    /// Email address.
    pub email: String,
    /// The new role.
    pub role: Role,
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

/// `orders.query.list` request: orders newest first, a page at a time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct ListOrders {
    /// Only this customer's orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// Only orders in this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<OrderStatus>,
    /// At most this many (1 to 100; 20 if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The page after this cursor (the previous page's `next`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Only orders created at or after this moment (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_from: Option<DateTime<Utc>>,
    /// Only orders created before this moment (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_until: Option<DateTime<Utc>>,
    /// Only orders past their deadline that have not ended (stuck).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub past_due: Option<bool>,
}

/// One order in a list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct OrderSummary {
    /// The order.
    pub order_id: String,
    /// The customer.
    pub customer_id: String,
    /// Where it is.
    pub status: OrderStatus,
    /// Total, once priced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_cents: Option<u64>,
    /// Why it failed or was canceled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// `orders.query.list` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct OrderPage {
    /// Newest first.
    pub orders: Vec<OrderSummary>,
    /// The cursor of the next page, if there is one. A page holds fewer
    /// orders than asked for when filters skipped many (a page reads a
    /// bounded part of the list): go on while `next` is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
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
    /// The deadline it waits under, while it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<PendingDeadline>,
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

/// `loyalty.query.get` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct GetLoyalty {
    /// The customer to look up.
    pub customer_id: String,
}

/// `loyalty.query.get` reply (zeros for a customer without orders).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct LoyaltyView {
    /// The customer.
    pub customer_id: String,
    /// Points of completed orders.
    pub points: u64,
    /// Points of paid orders that have not completed yet.
    pub pending_points: u64,
}

/// `users.query.authenticate` request: checks a password (request/reply,
/// never stored). Answers the user, or 401 with the same reason whether
/// the email is unknown or the password wrong, or 503 while the process
/// already checks as many passwords as it has cores (a password hash is
/// expensive: callers limit how often anyone may ask, as the HTTP gateway
/// does per account and per client).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct Authenticate {
    /// Email address.
    pub email: String,
    /// The password, as typed.
    pub password: String,
}

/// `users.query.get` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct GetUser {
    /// The user.
    pub user_id: String,
}

/// A user as `users.query.get` and `users.query.authenticate` answer it
/// (never the password's hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct UserView {
    /// The user.
    pub user_id: String,
    /// Email address, lower-cased.
    pub email: String,
    /// Display name.
    pub name: String,
    /// The customer whose orders the user places.
    pub customer_id: String,
    /// Role.
    pub role: Role,
    /// Sessions issued before this moment are over (the last logout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions_valid_from: Option<DateTime<Utc>>,
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
    SignUp => subjects::USERS_CMD_SIGN_UP;
    SetRole => subjects::USERS_CMD_SET_ROLE;
    LogOut => subjects::USERS_CMD_LOG_OUT;
    OrderCreated => subjects::ORDERS_EVT_CREATED, order_id = required;
    OrderCompleted => subjects::ORDERS_EVT_COMPLETED, order_id = required;
    OrderFailed => subjects::ORDERS_EVT_FAILED, order_id = required;
    OrderCancelRequested => subjects::ORDERS_EVT_CANCEL_REQUESTED, order_id = required;
    OrderCanceled => subjects::ORDERS_EVT_CANCELED, order_id = required;
    OrderCancelRefused => subjects::ORDERS_EVT_CANCEL_REFUSED, order_id = required;
    DeadlinePassed => subjects::ORDERS_EVT_DEADLINE_PASSED, order_id = required;
    DeadlineCanceled => subjects::ORDERS_EVT_DEADLINE_CANCELED, order_id = required;
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
    PointsAwarded => subjects::LOYALTY_EVT_POINTS_AWARDED, order_id = required;
    PointsRevoked => subjects::LOYALTY_EVT_POINTS_REVOKED, order_id = required;
    SignedUp => subjects::USERS_EVT_SIGNED_UP;
    RoleChanged => subjects::USERS_EVT_ROLE_CHANGED;
    GetOrder => subjects::ORDERS_QUERY_GET, order_id = required;
    ListOrders => subjects::ORDERS_QUERY_LIST;
    ListProducts => subjects::INVENTORY_QUERY_PRODUCTS;
    GetCustomer => subjects::CUSTOMERS_QUERY_GET;
    ListCustomers => subjects::CUSTOMERS_QUERY_LIST;
    GetLoyalty => subjects::LOYALTY_QUERY_GET;
    Authenticate => subjects::USERS_QUERY_AUTHENTICATE;
    GetUser => subjects::USERS_QUERY_GET;
}

/// The order a shop message is about: the envelope's saga key, or the
/// payload's `order_id` (a bare command sent with `nats pub` carries only
/// its payload).
pub fn order_key(envelope: &crate::Envelope) -> Option<&str> {
    envelope.saga_key_or_field("order_id")
}
