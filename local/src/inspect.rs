//! The shop's views of an order (`trace` with the order's state, `watch`
//! in the shop's words); `status` and the DLQ commands are the runner's
//! ([`jetsaga_runner::inspect`]).

use chrono::{DateTime, Utc};

use crate::client::Client;
use crate::flow::FlowPrinter;

/// `jetsaga trace ORDER_ID`: the saga's events from the stream, with per-step latency.
pub async fn trace(client: &Client, stream: &str, order_id: &str, json: bool) -> anyhow::Result<()> {
    let order = client.order(order_id).await?;
    let start = order.timeline.first().map(|t| t.at - chrono::Duration::seconds(1));
    let steps = jetsaga_runner::inspect::trace_steps(&client.nats, stream, order_id, start).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&steps)?);
        return Ok(());
    }
    println!(
        "order {} ({:?}){}",
        order.order_id,
        order.status,
        order.reason.map(|r| format!(": {r}")).unwrap_or_default()
    );
    let mut printer = FlowPrinter::new();
    jetsaga_runner::inspect::print_steps(&steps, &mut |event| printer.line(event));
    if let Some(deadline) = &order.deadline {
        println!("pending deadline: {}", crate::inspect::describe_deadline(deadline, Utc::now()));
    }
    Ok(())
}

/// `jetsaga watch`: every event as it is published (a plain subscription:
/// it never takes messages from the functions).
pub async fn watch(client: &Client, json: bool) -> anyhow::Result<()> {
    let mut printer = FlowPrinter::new();
    jetsaga_runner::inspect::watch(&client.nats, &["*.evt.>".to_string()], |event| printer.line(event), json).await
}

/// "payment by 12:00:30.000 (in 12.3 s)", or "... (4.1 s overdue)".
pub fn describe_deadline(deadline: &jetsaga_events::PendingDeadline, now: DateTime<Utc>) -> String {
    let left = (deadline.due_at - now).num_milliseconds() as f64 / 1000.0;
    let when = if left >= 0.0 { format!("in {left:.1} s") } else { format!("{:.1} s overdue", -left) };
    format!("{} by {} ({when})", deadline.waiting_for, deadline.due_at.format("%H:%M:%S%.3f"))
}
