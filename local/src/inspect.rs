//! Read-only views of the streams: `trace`, `watch`, `status`, and the DLQ
//! commands. None of them consumes from a function's durable consumer.

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use jetsaga_events::Envelope;
use jetsaga_jetstream::ops;
use serde::Serialize;

use crate::client::Client;
use crate::flow::FlowPrinter;

/// One step of a trace.
#[derive(Debug, Serialize)]
pub struct TraceStep {
    /// Stream sequence.
    pub sequence: u64,
    /// The event.
    pub event: Envelope,
    /// Since the previous step.
    pub step_ms: f64,
    /// Since the first step.
    pub total_ms: f64,
}

/// `jetsaga trace ORDER_ID`: the saga's events from the stream, with per-step latency.
pub async fn trace(client: &Client, stream: &str, order_id: &str, json: bool) -> anyhow::Result<()> {
    let order = client.order(order_id).await?;
    let start = order.timeline.first().map(|t| t.at - chrono::Duration::seconds(1));
    let js = jetstream::new(client.nats.clone());
    let mut events = Vec::new();
    ops::read_stream(&js, stream, start, |sequence, message| {
        if !jetsaga_core::schedule::is_pending_schedule(&message.subject)
            && let Ok(envelope) = Envelope::decode(&message.payload)
            && envelope.saga_key.as_deref() == Some(order_id)
        {
            events.push((sequence, envelope));
        }
        true
    })
    .await?;
    let first = events.first().map(|(_, e)| e.occurred_at);
    let mut previous = first;
    let mut steps = Vec::new();
    for (sequence, event) in events {
        let ms = |a: DateTime<Utc>, b: DateTime<Utc>| (a - b).num_microseconds().unwrap_or(0) as f64 / 1000.0;
        let step_ms = previous.map_or(0.0, |p| ms(event.occurred_at, p));
        let total_ms = first.map_or(0.0, |f| ms(event.occurred_at, f));
        previous = Some(event.occurred_at);
        steps.push(TraceStep { sequence, event, step_ms, total_ms });
    }
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
    for step in &steps {
        println!("{:>8.1} ms  {}", step.step_ms, printer.line(&step.event));
    }
    if let Some(last) = steps.last() {
        println!("{} events, {:.1} ms from first to last", steps.len(), last.total_ms);
    }
    if let Some(deadline) = &order.deadline {
        println!("pending deadline: {}", crate::inspect::describe_deadline(deadline, Utc::now()));
    }
    Ok(())
}

/// `jetsaga watch`: every event as it is published (a plain subscription:
/// it never takes messages from the functions).
pub async fn watch(client: &Client, json: bool) -> anyhow::Result<()> {
    let mut events = client.nats.subscribe("*.evt.>").await?;
    let mut printer = FlowPrinter::new();
    eprintln!("watching *.evt.> (Ctrl-C to stop)");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            Some(message) = events.next() => {
                if json {
                    println!("{}", String::from_utf8_lossy(&message.payload));
                } else if let Ok(envelope) = Envelope::decode(&message.payload) {
                    println!("{}", printer.line(&envelope));
                }
            }
        }
    }
}

/// `jetsaga dlq list`.
pub async fn dlq_list(client: &Client, dlq_stream: &str, json: bool) -> anyhow::Result<()> {
    let letters = ops::dead_letters(&jetstream::new(client.nats.clone()), dlq_stream, usize::MAX).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&letters)?);
    } else if letters.is_empty() {
        println!("the dead-letter queue is empty");
    } else {
        println!("{:>5}  {:<10} {:<30} {:>8}  reason", "seq", "function", "subject", "attempts");
        for l in &letters {
            println!("{:>5}  {:<10} {:<30} {:>8}  {}", l.dlq_sequence, l.function, l.subject, l.attempts, l.reason);
        }
    }
    Ok(())
}

/// `jetsaga dlq show SEQ`.
pub async fn dlq_show(client: &Client, dlq_stream: &str, sequence: u64, json: bool) -> anyhow::Result<()> {
    let letter = ops::dead_letter(&jetstream::new(client.nats.clone()), dlq_stream, sequence)
        .await
        .map_err(|e| anyhow::anyhow!("{e} (see `jetsaga dlq list`)"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&letter)?);
    } else {
        println!("dead letter {}", letter.dlq_sequence);
        println!("  function: {}", letter.function);
        println!("  subject:  {}", letter.subject);
        println!("  origin:   {}", letter.origin);
        println!("  attempts: {}", letter.attempts);
        println!("  at:       {}", letter.at.map(|t| t.to_rfc3339()).unwrap_or_default());
        println!("  reason:   {}", letter.reason);
        println!("  payload:  {}", letter.payload);
    }
    Ok(())
}

/// `jetsaga dlq redrive`: sends dead letters to their original subject
/// again (commands that came as requests are asked again, so the answer is
/// shown), then removes them; one that cannot be sent is kept.
pub async fn dlq_redrive(client: &Client, dlq_stream: &str, sequence: Option<u64>) -> anyhow::Result<()> {
    let js = jetstream::new(client.nats.clone());
    let sequences: Vec<u64> = match sequence {
        Some(sequence) => vec![sequence],
        None => ops::dead_letters(&js, dlq_stream, usize::MAX).await?.iter().map(|l| l.dlq_sequence).collect(),
    };
    if sequences.is_empty() {
        anyhow::bail!("the dead-letter queue is empty");
    }
    let config = jetsaga_jetstream::Config { dlq_stream: dlq_stream.into(), ..jetsaga_jetstream::Config::default() }
        .with_saga(crate::saga::every_spec());
    for sequence in sequences {
        match ops::redrive(&client.nats, &js, &config, sequence).await {
            Ok(r) => println!("redriven {} ({} → {}): {}", r.sequence, r.function, r.subject, r.answer),
            Err(e @ (ops::OpsError::Kept { .. } | ops::OpsError::Refused { .. })) => println!("{e}"),
            Err(e) => anyhow::bail!("{e} (see `jetsaga dlq list`)"),
        }
    }
    Ok(())
}

/// `jetsaga dlq delete`: removes a dead letter without sending it again.
pub async fn dlq_delete(client: &Client, dlq_stream: &str, sequence: u64) -> anyhow::Result<()> {
    let js = jetstream::new(client.nats.clone());
    let config = jetsaga_jetstream::Config { dlq_stream: dlq_stream.into(), ..jetsaga_jetstream::Config::default() };
    let deleted =
        ops::delete(&js, &config, sequence).await.map_err(|e| anyhow::anyhow!("{e} (see `jetsaga dlq list`)"))?;
    println!("deleted {} ({} from {})", deleted.sequence, deleted.function, deleted.subject);
    Ok(())
}

/// `jetsaga status`: streams, consumers and services at a glance.
pub async fn status(client: &Client, stream_name: &str, dlq_stream: &str, json: bool) -> anyhow::Result<()> {
    let config = jetsaga_jetstream::Config {
        stream: stream_name.into(),
        dlq_stream: dlq_stream.into(),
        ..jetsaga_jetstream::Config::default()
    };
    let report = ops::status(&client.nats, &config).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("stream {stream_name}: {} messages, {} bytes", report.messages, report.bytes);
    println!(
        "{:<12} {:>8} {:>12} {:>12} {:>9} {:>12} {:>14}",
        "function", "pending", "ack pending", "redelivered", "commands", "unpublished", "oldest unpub."
    );
    // `-`: does not apply (the function consumes no saga event, or takes no
    // command) or nobody could say (the function is not running).
    let n = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    for c in &report.consumers {
        let oldest = match (c.unpublished, c.oldest_unpublished_age_ms) {
            (None, _) => "-".to_string(),
            (_, Some(ms)) => format!("{:.1}s", ms as f64 / 1000.0),
            (_, None) => "".to_string(),
        };
        println!(
            "{:<12} {:>8} {:>12} {:>12} {:>9} {:>12} {:>14}",
            c.function,
            n(c.pending),
            n(c.ack_pending),
            n(c.redelivered),
            n(c.commands_pending),
            n(c.unpublished),
            oldest
        );
    }
    let dead = report.dead_letters;
    println!("dead letters: {dead}{}", if dead > 0 { " (jetsaga dlq list)" } else { "" });
    let pending = report.pending_deadlines;
    println!(
        "pending deadlines: {pending}{}",
        if pending > 0 { " (jetsaga sagas --stuck: those past due)" } else { "" }
    );
    for warning in &report.warnings {
        println!("warning: {warning}");
    }
    Ok(())
}

/// "payment by 12:00:30.000 (in 12.3 s)", or "... (4.1 s overdue)".
pub fn describe_deadline(deadline: &jetsaga_events::PendingDeadline, now: DateTime<Utc>) -> String {
    let left = (deadline.due_at - now).num_milliseconds() as f64 / 1000.0;
    let when = if left >= 0.0 { format!("in {left:.1} s") } else { format!("{:.1} s overdue", -left) };
    format!("{} by {} ({when})", deadline.waiting_for, deadline.due_at.format("%H:%M:%S%.3f"))
}
