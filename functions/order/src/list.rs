//! The order lists (`orders.query.list`): indexes kept newest first, read
//! a page at a time, so a list costs its page, not the store.

use super::*;

/// The lists' indexes: a key per order under each, sorted newest first
/// (see [`position`]), holding the order id. A list reads a page of one
/// index and then those orders, so its cost is the page's, not the
/// store's; an order's keys are written with it and kept as long.
pub(crate) mod index {
    /// Every order.
    pub(crate) const EVERY: &str = "orders-by-time/";
    /// Orders not ended (the stuck list reads these only).
    pub(crate) const OPEN: &str = "orders-open/";

    /// One customer's orders. A `/` or `%` in the id is escaped, so that no
    /// customer's prefix is another's.
    pub(crate) fn of_customer(customer_id: &str) -> String {
        format!("orders-of/{}/", customer_id.replace('%', "%25").replace('/', "%2F"))
    }
}

/// Where an order sorts in the indexes, newest first; also the lists' cursor.
pub(crate) fn position(created_at: DateTime<Utc>, order_id: &str) -> String {
    format!("{:020}:{order_id}", i64::MAX - created_at.timestamp_micros().max(0))
}

/// Positions from here on are of orders created before `until`.
pub(crate) fn position_before(until: DateTime<Utc>) -> String {
    // ';' sorts right after ':': past every order created at `until` itself.
    format!("{:020};", i64::MAX - until.timestamp_micros().max(0))
}

/// Index entries a list reads at most to fill one page: past it, the page
/// ends early with a cursor to go on from (filters that match few orders
/// cost pages, not unbounded reads).
pub const MAX_LIST_READS: usize = 1_000;

/// Lists orders. Past due ("stuck"): not ended, and past the deadline it
/// waits under, or (waiting under none: deadlines off, or shipped or
/// canceling) older than the whole order's wait.
pub(crate) async fn list(
    ctx: &QueryCtx<'_>,
    request: ListOrders,
    saga_wait: std::time::Duration,
) -> Result<OrderPage, QueryError> {
    let limit = request.limit.unwrap_or(20);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(QueryError::BadRequest(format!("limit must be 1 to {MAX_PAGE}, got {limit}")));
    }
    let limit = limit as usize;
    let prefix = match (&request.customer_id, request.past_due) {
        (_, Some(true)) => index::OPEN.to_string(),
        (Some(customer_id), _) => index::of_customer(customer_id),
        (None, _) => index::EVERY.to_string(),
    };
    let now = Utc::now();
    let matches = |o: &Order, created_at: DateTime<Utc>| {
        let saga_due = created_at + chrono::Duration::from_std(saga_wait).unwrap_or_default();
        let due = o.deadline.as_ref().map(|d| d.due_at).unwrap_or(saga_due);
        request.customer_id.as_ref().is_none_or(|c| *c == o.customer_id)
            && request.status.is_none_or(|s| s == o.status)
            && (request.past_due != Some(true) || (!o.status.is_terminal() && due < now))
    };
    let mut after = [request.after.clone(), request.created_until.map(position_before)]
        .into_iter()
        .flatten()
        .max()
        .map(|position| format!("{prefix}{position}"));
    let (mut orders, mut read, mut more) = (Vec::new(), 0, false);
    'pages: loop {
        if read >= MAX_LIST_READS {
            // Read as much as one page may: the next goes on from here.
            more = true;
            break;
        }
        let want = (limit + 1 - orders.len()).min(MAX_LIST_READS - read);
        let entries: Vec<(String, String)> = ctx.scan_page(&prefix, after.as_deref(), want).await?;
        read += entries.len();
        let keys: Vec<String> = entries.iter().map(|(_, order_id)| key(order_id)).collect();
        for ((entry, _), order) in entries.iter().zip(ctx.get_many::<Order>(&keys).await?) {
            after = Some(entry.clone());
            // Gone meanwhile (its retention ended): nothing to list.
            let Some(order) = order else { continue };
            let created_at = order.timeline.first().map_or(now, |e| e.at);
            if request.created_from.is_some_and(|from| created_at < from) {
                break 'pages; // the rest are older still
            }
            if !matches(&order, created_at) {
                continue;
            }
            if orders.len() == limit {
                more = true;
                break 'pages;
            }
            let summary = OrderSummary {
                order_id: order.order_id,
                customer_id: order.customer_id,
                status: order.status,
                total_cents: order.total_cents,
                reason: order.reason,
                created_at,
            };
            orders.push((position(created_at, &summary.order_id), summary));
        }
        if entries.len() < want {
            break; // the index ends here
        }
    }
    let next = if more {
        match orders.len() {
            n if n == limit => orders.last().map(|(position, _)| position.clone()),
            _ => after.as_deref().and_then(|a| a.strip_prefix(prefix.as_str())).map(str::to_string),
        }
    } else {
        None
    };
    Ok(OrderPage { orders: orders.into_iter().map(|(_, o)| o).collect(), next })
}
