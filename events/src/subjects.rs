//! Subject names: `<context>.<kind>.<name>`.
//!
//! `cmd` subjects carry requests from outside (plain JSON payloads are
//! accepted, so `nats pub` works), `evt` subjects carry facts published by
//! the runtime (always full envelopes), `query` subjects are request/reply
//! and never stored in a stream.

pub use jetsaga_envelope::subject::{SubjectKind, parse};

pub const ORDERS_CMD_CREATE: &str = "orders.cmd.create";
pub const ORDERS_CMD_CANCEL: &str = "orders.cmd.cancel";
pub const INVENTORY_CMD_UPSERT_PRODUCT: &str = "inventory.cmd.upsert_product";
pub const CUSTOMERS_CMD_CREATE: &str = "customers.cmd.create";

pub const INVENTORY_CMD_RESERVE: &str = "inventory.cmd.reserve";
pub const INVENTORY_CMD_RELEASE: &str = "inventory.cmd.release";
pub const INVENTORY_CMD_CONSUME: &str = "inventory.cmd.consume";
pub const CUSTOMERS_CMD_RESERVE_CREDIT: &str = "customers.cmd.reserve_credit";
pub const CUSTOMERS_CMD_RELEASE_CREDIT: &str = "customers.cmd.release_credit";
pub const PAYMENTS_CMD_EXECUTE: &str = "payments.cmd.execute";
pub const PAYMENTS_CMD_REFUND: &str = "payments.cmd.refund";
pub const SHIPPING_CMD_SCHEDULE: &str = "shipping.cmd.schedule";
pub const USERS_CMD_SIGN_UP: &str = "users.cmd.sign_up";
pub const USERS_CMD_SET_ROLE: &str = "users.cmd.set_role";
pub const USERS_CMD_LOG_OUT: &str = "users.cmd.log_out";

pub const ORDERS_EVT_CREATED: &str = "orders.evt.created";
pub const ORDERS_EVT_COMPLETED: &str = "orders.evt.completed";
pub const ORDERS_EVT_FAILED: &str = "orders.evt.failed";
pub const ORDERS_EVT_CANCEL_REQUESTED: &str = "orders.evt.cancel_requested";
pub const ORDERS_EVT_CANCELED: &str = "orders.evt.canceled";
pub const ORDERS_EVT_CANCEL_REFUSED: &str = "orders.evt.cancel_refused";
pub const ORDERS_EVT_DEADLINE_PASSED: &str = "orders.evt.deadline_passed";
pub const ORDERS_EVT_DEADLINE_CANCELED: &str = "orders.evt.deadline_canceled";
/// Where the order function's deadlines wait (JetStream message schedules):
/// `schedules.order.<digest of the order id>`.
pub const ORDER_SCHEDULES: &str = "schedules.order.>";
pub const INVENTORY_EVT_PRODUCT_UPSERTED: &str = "inventory.evt.product_upserted";
pub const INVENTORY_EVT_RESERVED: &str = "inventory.evt.reserved";
pub const INVENTORY_EVT_RESERVATION_FAILED: &str = "inventory.evt.reservation_failed";
pub const INVENTORY_EVT_RELEASED: &str = "inventory.evt.released";
pub const INVENTORY_EVT_CONSUMED: &str = "inventory.evt.consumed";
pub const CUSTOMERS_EVT_CREATED: &str = "customers.evt.created";
pub const CUSTOMERS_EVT_CREDIT_RESERVED: &str = "customers.evt.credit_reserved";
pub const CUSTOMERS_EVT_CREDIT_REJECTED: &str = "customers.evt.credit_rejected";
pub const CUSTOMERS_EVT_CREDIT_RELEASED: &str = "customers.evt.credit_released";
pub const PAYMENTS_EVT_EXECUTED: &str = "payments.evt.executed";
pub const PAYMENTS_EVT_FAILED: &str = "payments.evt.failed";
pub const PAYMENTS_EVT_REFUNDED: &str = "payments.evt.refunded";
pub const SHIPPING_EVT_SCHEDULED: &str = "shipping.evt.scheduled";
pub const SHIPPING_EVT_INFORMED: &str = "shipping.evt.informed";
pub const SHIPPING_EVT_FAILED: &str = "shipping.evt.failed";
pub const SHIPPING_EVT_CANCELED: &str = "shipping.evt.canceled";
pub const LOYALTY_EVT_POINTS_AWARDED: &str = "loyalty.evt.points_awarded";
pub const LOYALTY_EVT_POINTS_REVOKED: &str = "loyalty.evt.points_revoked";
pub const USERS_EVT_SIGNED_UP: &str = "users.evt.signed_up";
pub const USERS_EVT_ROLE_CHANGED: &str = "users.evt.role_changed";

pub const ORDERS_QUERY_GET: &str = "orders.query.get";
pub const ORDERS_QUERY_LIST: &str = "orders.query.list";
pub const INVENTORY_QUERY_PRODUCTS: &str = "inventory.query.products";
pub const CUSTOMERS_QUERY_GET: &str = "customers.query.get";
pub const CUSTOMERS_QUERY_LIST: &str = "customers.query.list";
pub const LOYALTY_QUERY_GET: &str = "loyalty.query.get";
pub const USERS_QUERY_AUTHENTICATE: &str = "users.query.authenticate";
pub const USERS_QUERY_GET: &str = "users.query.get";
