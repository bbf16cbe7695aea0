//! Read-only views of the streams (`status`, `trace`, `watch`) and the
//! dead-letter commands. None of them consumes from a function's durable
//! consumer.

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use jetsaga_envelope::Envelope;
use jetsaga_jetstream::{Config, ops};
use serde::Serialize;

use crate::cli::DlqCommand;

/// `dlq list|show|redrive|delete`.
pub async fn dlq(nats: &async_nats::Client, config: &Config, command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List { json } => dlq_list(nats, config, json).await,
        DlqCommand::Show { sequence, json } => dlq_show(nats, config, sequence, json).await,
        DlqCommand::Redrive { sequence, all } => dlq_redrive(nats, config, if all { None } else { sequence }).await,
        DlqCommand::Delete { sequence } => dlq_delete(nats, config, sequence).await,
    }
}

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

/// The events of the saga `key` in `stream` (read from `since` on, when
/// known: a saga's start bounds the read), with per-step latency.
pub async fn trace_steps(
    nats: &async_nats::Client,
    stream: &str,
    key: &str,
    since: Option<DateTime<Utc>>,
) -> anyhow::Result<Vec<TraceStep>> {
    let js = jetstream::new(nats.clone());
    let mut events = Vec::new();
    ops::read_stream(&js, stream, since, |sequence, message| {
        if !jetsaga_core::schedule::is_pending_schedule(&message.subject)
            && let Ok(envelope) = Envelope::decode(&message.payload)
            && envelope.saga_key.as_deref() == Some(key)
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
    Ok(steps)
}

/// `trace KEY`: the saga's events, each as `describe` words it, with
/// per-step latency (or JSON).
pub async fn trace(
    nats: &async_nats::Client,
    config: &Config,
    key: &str,
    mut describe: impl FnMut(&Envelope) -> String,
    json: bool,
) -> anyhow::Result<()> {
    let steps = trace_steps(nats, &config.stream, key, None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&steps)?);
        return Ok(());
    }
    if steps.is_empty() {
        anyhow::bail!("no events of saga {key:?} in the stream {}", config.stream);
    }
    print_steps(&steps, &mut describe);
    Ok(())
}

/// A trace as text: one line per step, then the total.
pub fn print_steps(steps: &[TraceStep], describe: &mut dyn FnMut(&Envelope) -> String) {
    for step in steps {
        println!("{:>8.1} ms  {}", step.step_ms, describe(&step.event));
    }
    if let Some(last) = steps.last() {
        println!("{} events, {:.1} ms from first to last", steps.len(), last.total_ms);
    }
}

/// `watch`: every event on `subjects` as it is published (a plain
/// subscription: it never takes messages from the functions), until Ctrl-C.
pub async fn watch(
    nats: &async_nats::Client,
    subjects: &[String],
    mut describe: impl FnMut(&Envelope) -> String,
    json: bool,
) -> anyhow::Result<()> {
    let mut subscriptions = Vec::new();
    for subject in subjects {
        subscriptions.push(nats.subscribe(subject.clone()).await?);
    }
    let mut events = futures::stream::select_all(subscriptions);
    eprintln!("watching {} (Ctrl-C to stop)", subjects.join(", "));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            Some(message) = events.next() => {
                if json {
                    println!("{}", String::from_utf8_lossy(&message.payload));
                } else if let Ok(envelope) = Envelope::decode(&message.payload) {
                    println!("{}", describe(&envelope));
                }
            }
        }
    }
}

/// `dlq list`.
pub async fn dlq_list(nats: &async_nats::Client, config: &Config, json: bool) -> anyhow::Result<()> {
    let letters = ops::dead_letters(&jetstream::new(nats.clone()), &config.dlq_stream, usize::MAX).await?;
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

/// `dlq show SEQ`.
pub async fn dlq_show(nats: &async_nats::Client, config: &Config, sequence: u64, json: bool) -> anyhow::Result<()> {
    let letter = ops::dead_letter(&jetstream::new(nats.clone()), &config.dlq_stream, sequence)
        .await
        .map_err(|e| anyhow::anyhow!("{e} (see `dlq list`)"))?;
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

/// `dlq redrive`: sends dead letters to their original subject
/// again (commands that came as requests are asked again, so the answer is
/// shown), then removes them; one that cannot be sent is kept.
pub async fn dlq_redrive(nats: &async_nats::Client, config: &Config, sequence: Option<u64>) -> anyhow::Result<()> {
    let js = jetstream::new(nats.clone());
    let sequences: Vec<u64> = match sequence {
        Some(sequence) => vec![sequence],
        None => ops::dead_letters(&js, &config.dlq_stream, usize::MAX).await?.iter().map(|l| l.dlq_sequence).collect(),
    };
    if sequences.is_empty() {
        anyhow::bail!("the dead-letter queue is empty");
    }
    for sequence in sequences {
        match ops::redrive(nats, &js, config, sequence).await {
            Ok(r) => println!("redriven {} ({} → {}): {}", r.sequence, r.function, r.subject, r.answer),
            Err(e @ (ops::OpsError::Kept { .. } | ops::OpsError::Refused { .. })) => println!("{e}"),
            Err(e) => anyhow::bail!("{e} (see `dlq list`)"),
        }
    }
    Ok(())
}

/// `dlq delete`: removes a dead letter without sending it again.
pub async fn dlq_delete(nats: &async_nats::Client, config: &Config, sequence: u64) -> anyhow::Result<()> {
    let js = jetstream::new(nats.clone());
    let deleted = ops::delete(&js, config, sequence).await.map_err(|e| anyhow::anyhow!("{e} (see `dlq list`)"))?;
    println!("deleted {} ({} from {})", deleted.sequence, deleted.function, deleted.subject);
    Ok(())
}

/// `status`: streams, consumers and services at a glance.
///
/// `stuck_hint` names what lists the sagas past their deadline, if the
/// saga has such a query.
pub async fn status(
    nats: &async_nats::Client,
    config: &Config,
    stuck_hint: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let stream_name = &config.stream;
    let report = ops::status(nats, config).await?;
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
    println!("dead letters: {dead}{}", if dead > 0 { " (see `dlq list`)" } else { "" });
    let pending = report.pending_deadlines;
    println!(
        "pending deadlines: {pending}{}",
        match stuck_hint {
            Some(hint) if pending > 0 => format!(" ({hint}: those past due)"),
            _ => String::new(),
        }
    );
    for warning in &report.warnings {
        println!("warning: {warning}");
    }
    Ok(())
}
