//! The shop's own verbs, over NATS as any client: demo data, orders,
//! the order list, products, customers and the HTTP API's users.

use std::time::Duration;

use jetsaga_events::subjects::*;
use jetsaga_events::{CancelOrder, CreateOrder, OrderView};
use serde_json::Value;

use super::{OrderCommand, UsersCommand};
use crate::client::Client;
use crate::flow::dollars;
use crate::up;

fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

/// `jetsaga seed`: the demo catalog and customers, once inventory and customer answer.
pub(super) async fn seed(client: &Client, wait_seconds: u64) -> anyhow::Result<()> {
    let wait = Duration::from_secs(wait_seconds);
    client.wait_for_services(&["inventory".into(), "customer".into()], wait).await?;
    up::seed(client, &[INVENTORY_CMD_UPSERT_PRODUCT, CUSTOMERS_CMD_CREATE]).await?;
    println!("demo data: {} products, {} customers", up::DEMO_PRODUCTS.len(), up::DEMO_CUSTOMERS.len());
    Ok(())
}

/// `jetsaga order create|get|cancel`.
pub(super) async fn order(client: &Client, command: OrderCommand) -> anyhow::Result<()> {
    match command {
        OrderCommand::Create { customer, items, order_id, wait, json } => {
            let create = CreateOrder { order_id, customer_id: customer, items };
            let reply = client.command(ORDERS_CMD_CREATE, &create).await?;
            let id = reply["order_id"].as_str().unwrap_or_default().to_string();
            answered(client, &id, &reply, wait, json, &format!("order {id} accepted")).await?;
        }
        OrderCommand::Get { order_id, json } => show_order(&client.order(&order_id).await?, json)?,
        OrderCommand::Cancel { order_id, reason, wait, json } => {
            let reply = client.command(ORDERS_CMD_CANCEL, &CancelOrder { order_id: order_id.clone(), reason }).await?;
            answered(client, &order_id, &reply, wait, json, &format!("cancel of order {order_id} requested")).await?;
        }
    }
    Ok(())
}

/// After a command on an order: with `wait`, how the order ended; else the
/// reply as JSON, or `said`.
async fn answered(client: &Client, id: &str, reply: &Value, wait: bool, json: bool, said: &str) -> anyhow::Result<()> {
    if wait {
        show_order(&client.wait_terminal(id, Duration::from_secs(30)).await?, json)
    } else {
        if json {
            print_json(reply);
        } else {
            println!("{said}");
        }
        Ok(())
    }
}

fn show_order(view: &OrderView, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(&serde_json::to_value(view)?);
    } else {
        print_order(view);
    }
    Ok(())
}

fn print_order(view: &OrderView) {
    println!("order {}  {:?}", view.order_id, view.status);
    println!("  customer: {}", view.customer_id);
    for item in &view.items {
        println!("  item:     {} × {}", item.quantity, item.product_id);
    }
    if let Some(total) = view.total_cents {
        println!("  total:    {}", dollars(total));
    }
    if let Some(reason) = &view.reason {
        println!("  reason:   {reason}");
    }
    if let Some(deadline) = &view.deadline {
        println!("  deadline: {}", crate::inspect::describe_deadline(deadline, chrono::Utc::now()));
    }
    println!("  timeline:");
    for entry in &view.timeline {
        let note = entry.note.as_ref().map(|n| format!("  ({n})")).unwrap_or_default();
        println!("    {}  {}{note}", entry.at.format("%H:%M:%S%.3f"), entry.event);
    }
}

/// Which orders `jetsaga sagas` lists.
pub(super) struct SagaFilter {
    pub(super) status: Option<String>,
    pub(super) customer: Option<String>,
    pub(super) stuck: bool,
    pub(super) limit: u32,
}

/// `jetsaga sagas`: orders, newest first, a page filled across the query's pages.
pub(super) async fn sagas(client: &Client, filter: SagaFilter, json: bool) -> anyhow::Result<()> {
    let SagaFilter { status, customer, stuck, limit } = filter;
    let status = status
        .map(|s| {
            serde_json::from_value::<jetsaga_events::OrderStatus>(Value::String(s.clone())).map_err(|_| {
                anyhow::anyhow!(
                    "--status {s:?}: not a status (pending, stock_reserved, credit_reserved, paid, shipped, \
                     completed, failed, canceling, canceled)"
                )
            })
        })
        .transpose()?;
    let mut list = jetsaga_events::ListOrders {
        customer_id: customer,
        status,
        limit: Some(limit),
        past_due: stuck.then_some(true),
        ..Default::default()
    };
    // A page ends early where filters skip many orders: go on until it is full.
    let mut page = jetsaga_events::OrderPage { orders: Vec::new(), next: None };
    loop {
        let part: jetsaga_events::OrderPage = client.query(ORDERS_QUERY_LIST, &list).await?;
        page.orders.extend(part.orders);
        page.next = part.next;
        let wanted = limit as usize - page.orders.len().min(limit as usize);
        if wanted == 0 || page.next.is_none() {
            break;
        }
        list.limit = Some(wanted as u32);
        list.after = page.next.clone();
    }
    if json {
        print_json(&serde_json::to_value(&page)?);
    } else if page.orders.is_empty() {
        println!("{}", if stuck { "no stuck orders: every order waiting is within its deadline" } else { "no orders" });
    } else {
        println!("{:<40} {:<14} {:<16} {:>10}  created", "order", "customer", "status", "total");
        for o in &page.orders {
            let total = o.total_cents.map(dollars).unwrap_or_default();
            println!(
                "{:<40} {:<14} {:<16} {:>10}  {}{}",
                o.order_id,
                o.customer_id,
                serde_json::to_value(o.status)?.as_str().unwrap_or_default().to_string(),
                total,
                o.created_at.format("%Y-%m-%d %H:%M:%S"),
                o.reason.as_ref().map(|r| format!("  ({r})")).unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// `jetsaga products`: the catalog with available and reserved stock.
pub(super) async fn products(client: &Client, json: bool) -> anyhow::Result<()> {
    let list = client.products().await?;
    if json {
        print_json(&serde_json::to_value(&list)?);
        return Ok(());
    }
    println!("{:<14} {:<38} {:>10} {:>7} {:>9}", "product", "name", "price", "stock", "reserved");
    for p in list.products {
        println!("{:<14} {:<38} {:>10} {:>7} {:>9}", p.product_id, p.name, dollars(p.price_cents), p.stock, p.reserved);
    }
    Ok(())
}

/// `jetsaga customers [ID]`: credit limits, used and available.
pub(super) async fn customers(client: &Client, customer_id: Option<String>, json: bool) -> anyhow::Result<()> {
    let customers = match customer_id {
        Some(id) => vec![client.customer(&id).await?],
        None => client.customers().await?.customers,
    };
    if json {
        print_json(&serde_json::to_value(&customers)?);
        return Ok(());
    }
    println!("{:<10} {:<20} {:>12} {:>12} {:>12}", "customer", "name", "limit", "used", "available");
    for c in customers {
        println!(
            "{:<10} {:<20} {:>12} {:>12} {:>12}",
            c.customer_id,
            c.name,
            dollars(c.credit_limit_cents),
            dollars(c.used_cents),
            dollars(c.available_cents)
        );
    }
    Ok(())
}

/// `jetsaga users grant-admin|revoke-admin EMAIL`.
pub(super) async fn users(client: &Client, command: UsersCommand) -> anyhow::Result<()> {
    let (email, role) = match command {
        UsersCommand::GrantAdmin { email } => (email, jetsaga_events::Role::Admin),
        UsersCommand::RevokeAdmin { email } => (email, jetsaga_events::Role::Customer),
    };
    let set = jetsaga_events::SetRole { email: email.clone(), role };
    let reply = client.command(USERS_CMD_SET_ROLE, &set).await?;
    let changed = reply["events"].as_array().is_some_and(|e| !e.is_empty());
    let role = serde_json::to_value(role)?;
    let role = role.as_str().unwrap_or("");
    println!("{email} {} {role}", if changed { "is now" } else { "already was" });
    Ok(())
}
