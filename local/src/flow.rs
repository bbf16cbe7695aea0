//! Short, readable lines for saga events, shared by `jetsaga up`,
//! `jetsaga watch` and `jetsaga trace`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use jetsaga_events::Envelope;

/// Formats money in cents as dollars.
pub fn dollars(cents: u64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

/// An order id short enough for a column: client ids as they are,
/// generated UUIDs by their distinctive tail.
pub fn short_id(id: &str) -> String {
    if id.len() <= 14 { id.to_string() } else { format!("…{}", &id[id.len() - 8..]) }
}

#[derive(Clone, Copy)]
enum Tone {
    Plain,
    Good,
    Bad,
    Warn,
}

/// Turns events into lines, tracking each saga's start for latencies.
#[derive(Debug)]
pub struct FlowPrinter {
    color: bool,
    started: HashMap<String, DateTime<Utc>>,
}

impl FlowPrinter {
    /// Colors when stdout is a terminal and `NO_COLOR` is unset.
    pub fn new() -> Self {
        use std::io::IsTerminal;
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Self { color, started: HashMap::new() }
    }

    /// Without colors (for files and tests).
    pub fn plain() -> Self {
        Self { color: false, started: HashMap::new() }
    }

    fn paint(&self, tone: Tone, text: &str) -> String {
        let code = match tone {
            Tone::Plain => return text.to_string(),
            Tone::Good => "32",
            Tone::Bad => "31",
            Tone::Warn => "33",
        };
        if self.color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }

    fn describe(envelope: &Envelope) -> (Tone, String) {
        let d = &envelope.data;
        let money = |field: &str| d[field].as_u64().map(dollars).unwrap_or_default();
        let reason = || d["reason"].as_str().unwrap_or("").to_string();
        match envelope.event_type.as_str() {
            "orders.evt.created" => {
                let items = d["items"].as_array().map_or(0, Vec::len);
                (Tone::Plain, format!("{items} line(s) for {}", d["customer_id"].as_str().unwrap_or("?")))
            }
            "orders.evt.completed" => (Tone::Good, format!("COMPLETED {}", money("total_cents"))),
            "orders.evt.failed" => (Tone::Bad, format!("FAILED: {}", reason())),
            "orders.evt.canceled" => (Tone::Warn, format!("CANCELED: {}", reason())),
            "orders.evt.cancel_requested" => (Tone::Warn, "cancel requested".into()),
            "orders.evt.cancel_refused" => (Tone::Warn, format!("cancel refused: {}", reason())),
            "inventory.evt.reserved" => (Tone::Plain, format!("stock reserved, total {}", money("total_cents"))),
            "inventory.evt.product_upserted" => (
                Tone::Plain,
                format!(
                    "{} {} at {}, stock {}",
                    d["product_id"].as_str().unwrap_or("?"),
                    d["name"],
                    money("price_cents"),
                    d["stock"]
                ),
            ),
            "customers.evt.created" => (
                Tone::Plain,
                format!(
                    "{} {} with credit {}",
                    d["customer_id"].as_str().unwrap_or("?"),
                    d["name"],
                    money("credit_limit_cents")
                ),
            ),
            "customers.evt.credit_reserved" => (Tone::Plain, format!("{} credit held", money("amount_cents"))),
            "customers.evt.credit_released" => (Tone::Plain, format!("{} credit released", money("amount_cents"))),
            "payments.evt.executed" => (Tone::Plain, format!("{} charged", money("amount_cents"))),
            "payments.evt.refunded" => (Tone::Plain, format!("{} refunded", money("amount_cents"))),
            "shipping.evt.scheduled" => (Tone::Plain, format!("dispatched to {}", d["worker"].as_str().unwrap_or("?"))),
            "shipping.evt.informed" => (Tone::Plain, format!("{} has it", d["worker"].as_str().unwrap_or("?"))),
            t if t.ends_with("failed") || t.ends_with("rejected") => (Tone::Bad, reason()),
            _ => (Tone::Plain, String::new()),
        }
    }

    /// One line for an event.
    pub fn line(&mut self, envelope: &Envelope) -> String {
        let (tone, text) = Self::describe(envelope);
        let order = envelope.saga_key.as_deref().unwrap_or("-");
        let since = match envelope.saga_key.as_deref() {
            Some(id) if envelope.event_type == "orders.evt.created" => {
                self.started.insert(id.to_string(), envelope.occurred_at);
                String::new()
            }
            Some(id) => self.started.get(id).map_or(String::new(), |start| {
                let ms = (envelope.occurred_at - *start).num_microseconds().unwrap_or(0) as f64 / 1000.0;
                format!("+{ms:.1} ms")
            }),
            None => String::new(),
        };
        if matches!(envelope.event_type.as_str(), "orders.evt.completed" | "orders.evt.failed" | "orders.evt.canceled")
            && let Some(id) = envelope.saga_key.as_deref()
        {
            self.started.remove(id);
        }
        let (context, name) = envelope.event_type.split_once(".evt.").unwrap_or(("", envelope.event_type.as_str()));
        format!(
            "{}  {:<15} {:<10} {:<20} {:<48} {}",
            envelope.occurred_at.format("%H:%M:%S%.3f"),
            short_id(order),
            context,
            name,
            self.paint(tone, &text),
            since
        )
        .trim_end()
        .to_string()
    }
}

impl Default for FlowPrinter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, order: &str, at: &str, data: serde_json::Value) -> Envelope {
        Envelope {
            id: "e".into(),
            event_type: kind.into(),
            saga_key: Some(order.into()),
            correlation_id: "c".into(),
            causation_id: None,
            occurred_at: DateTime::parse_from_rfc3339(at).unwrap().with_timezone(&Utc),
            version: 1,
            data,
        }
    }

    #[test]
    fn lines_say_what_happened_and_how_long_since_the_order_was_created() {
        let mut p = FlowPrinter::plain();
        let created = event(
            "orders.evt.created",
            "ord-1",
            "2026-11-22T01:00:00.000Z",
            serde_json::json!({"items": [1, 2], "customer_id": "c-ada"}),
        );
        let line = p.line(&created);
        assert!(line.contains("ord-1") && line.contains("2 line(s) for c-ada"), "{line}");
        let done = event(
            "orders.evt.completed",
            "ord-1",
            "2026-11-22T01:00:00.0042Z",
            serde_json::json!({"total_cents": 11997}),
        );
        let line = p.line(&done);
        assert!(line.contains("COMPLETED $119.97") && line.ends_with("+4.2 ms"), "{line}");
    }

    #[test]
    fn long_ids_are_shortened_to_their_tail() {
        assert_eq!(short_id("0193b1a2-7c4e-7d10-9f3b-2a6c1d0e4f51"), "…1d0e4f51");
        assert_eq!(short_id("ord-demo-1"), "ord-demo-1");
    }
}
