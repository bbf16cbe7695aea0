//! Read-only views of the streams: `trace`, `watch`, `status`, and the DLQ
//! commands. None of them consumes from a function's durable consumer.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use jetsaga_events::Envelope;
use jetsaga_jetstream::DeadLetter;
use serde::Serialize;

use crate::client::Client;
use crate::flow::FlowPrinter;

/// Reads stream messages (with an ephemeral ordered consumer) from `start`
/// until caught up, handing each to `each`.
async fn read_stream(
    js: &jetstream::Context,
    stream: &str,
    start: Option<DateTime<Utc>>,
    mut each: impl FnMut(u64, &async_nats::jetstream::Message),
) -> anyhow::Result<()> {
    let stream = js.get_stream(stream).await.map_err(|e| anyhow::anyhow!("no stream {stream}: {e}"))?;
    let deliver_policy = match start {
        Some(start) => consumer::DeliverPolicy::ByStartTime { start_time: start },
        None => consumer::DeliverPolicy::All,
    };
    let ordered = stream
        .create_consumer(consumer::pull::OrderedConfig { deliver_policy, ..Default::default() })
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the stream: {e}"))?;
    let mut messages = ordered.messages().await?;
    loop {
        let next = tokio::time::timeout(Duration::from_millis(500), messages.next()).await;
        let Ok(Some(Ok(message))) = next else { break };
        let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let (sequence, pending) = (info.stream_sequence, info.pending);
        each(sequence, &message);
        if pending == 0 {
            break;
        }
    }
    Ok(())
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

/// `jetsaga trace ORDER_ID`: the saga's events from the stream, with per-step latency.
pub async fn trace(client: &Client, stream: &str, order_id: &str, json: bool) -> anyhow::Result<()> {
    let order = client.order(order_id).await?;
    let start = order.timeline.first().map(|t| t.at - chrono::Duration::seconds(1));
    let js = jetstream::new(client.nats.clone());
    let mut events = Vec::new();
    read_stream(&js, stream, start, |sequence, message| {
        if let Ok(envelope) = Envelope::decode(&message.payload)
            && envelope.order_id.as_deref() == Some(order_id)
        {
            events.push((sequence, envelope));
        }
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

/// Every dead letter in the DLQ stream.
pub async fn dead_letters(client: &Client, dlq_stream: &str) -> anyhow::Result<Vec<DeadLetter>> {
    let js = jetstream::new(client.nats.clone());
    let mut letters = Vec::new();
    let stream = js.get_stream(dlq_stream).await;
    if stream.is_err() {
        return Ok(letters);
    }
    read_stream(&js, dlq_stream, None, |sequence, message| {
        let empty = async_nats::HeaderMap::new();
        letters.push(DeadLetter::from_message(sequence, message.headers.as_ref().unwrap_or(&empty), &message.payload));
    })
    .await?;
    Ok(letters)
}

/// `jetsaga dlq list`.
pub async fn dlq_list(client: &Client, dlq_stream: &str, json: bool) -> anyhow::Result<()> {
    let letters = dead_letters(client, dlq_stream).await?;
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
    let letter = dead_letters(client, dlq_stream)
        .await?
        .into_iter()
        .find(|l| l.dlq_sequence == sequence)
        .ok_or_else(|| anyhow::anyhow!("no dead letter {sequence} (see `jetsaga dlq list`)"))?;
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

/// `jetsaga dlq redrive`: publishes dead letters to their original subject
/// again (commands as requests, so the answer is shown), then removes them.
pub async fn dlq_redrive(client: &Client, dlq_stream: &str, sequence: Option<u64>) -> anyhow::Result<()> {
    let js = jetstream::new(client.nats.clone());
    let letters: Vec<DeadLetter> = dead_letters(client, dlq_stream)
        .await?
        .into_iter()
        .filter(|l| sequence.is_none_or(|s| s == l.dlq_sequence))
        .collect();
    if letters.is_empty() {
        anyhow::bail!(
            "{}",
            match sequence {
                Some(s) => format!("no dead letter {s} (see `jetsaga dlq list`)"),
                None => "the dead-letter queue is empty".into(),
            }
        );
    }
    let stream = js.get_stream(dlq_stream).await?;
    for letter in letters {
        let raw = stream.get_raw_message(letter.dlq_sequence).await?;
        let mut headers = async_nats::HeaderMap::new();
        for (name, values) in raw.headers.iter() {
            let name: &str = name.as_ref();
            if !name.starts_with("Jetsaga-Dlq-") && name != "Nats-Msg-Id" {
                for value in values {
                    headers.append(name, value.as_str());
                }
            }
        }
        let payload = raw.payload.clone();
        let outcome = if letter.origin.starts_with("request/") {
            // Commands a function accepts by request/reply are not stored: ask again.
            match client.nats.request_with_headers(letter.subject.clone(), headers, payload).await {
                Ok(reply) => match reply.headers.as_ref().and_then(|h| h.get("Nats-Service-Error")) {
                    Some(error) => Err(error.as_str().to_string()),
                    None => Ok(String::from_utf8_lossy(&reply.payload).into_owned()),
                },
                Err(e) => Err(e.to_string()),
            }
        } else {
            match js.publish_with_headers(letter.subject.clone(), headers, payload).await {
                Ok(ack) => {
                    ack.await.map(|a| format!("stored as {}/{}", a.stream, a.sequence)).map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            }
        };
        match outcome {
            Ok(answer) => {
                stream.delete_message(letter.dlq_sequence).await?;
                println!("redriven {} ({} → {}): {answer}", letter.dlq_sequence, letter.function, letter.subject);
            }
            Err(error) => println!("kept {} ({}): {error}", letter.dlq_sequence, letter.subject),
        }
    }
    Ok(())
}

/// `jetsaga status`: streams, consumers and services at a glance.
pub async fn status(client: &Client, stream_name: &str, dlq_stream: &str, json: bool) -> anyhow::Result<()> {
    let js = jetstream::new(client.nats.clone());
    let mut stream = js
        .get_stream(stream_name)
        .await
        .map_err(|e| anyhow::anyhow!("no stream {stream_name} (has `jetsaga up` run?): {e}"))?;
    let info = stream.info().await?.clone();
    let commands = js.get_stream(jetsaga_jetstream::Config::default().command_stream).await.ok();
    // Every function with a durable consumer on the saga stream, or on the
    // command stream (a function that only takes commands has no other).
    let mut functions = std::collections::BTreeSet::new();
    let mut names = stream.consumer_names();
    while let Some(Ok(name)) = names.next().await {
        functions.insert(name);
    }
    if let Some(commands) = &commands {
        let mut names = commands.consumer_names();
        while let Some(Ok(name)) = names.next().await {
            functions.insert(name);
        }
    }
    let mut consumers = Vec::new();
    for name in functions {
        let saga_consumer = match stream.get_consumer::<consumer::pull::Config>(&name).await {
            Ok(mut consumer) => Some(consumer.info().await?.clone()),
            Err(_) => None,
        };
        if saga_consumer.as_ref().is_some_and(|ci| ci.config.durable_name.is_none()) {
            continue; // someone's `trace` or `dlq` reader, not a function
        }
        // Committed events not yet published, as the function's own outbox relay sees them.
        let outbox = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            client.nats.request(jetsaga_jetstream::service::outbox_subject(&name), "".into()),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(|reply| serde_json::from_slice::<serde_json::Value>(&reply.payload).ok())
        .filter(|v| v.get("unpublished").is_some());
        // Commands kept for it and not processed yet (sent while it was down, or a backlog).
        let mut commands_pending = None;
        if let Some(commands) = &commands
            && let Ok(mut consumer) = commands.get_consumer::<consumer::pull::Config>(&name).await
        {
            let info = consumer.info().await?;
            commands_pending = Some(info.num_pending + info.num_ack_pending as u64);
        }
        let field = |f: fn(&consumer::Info) -> u64| saga_consumer.as_ref().map(f);
        consumers.push(serde_json::json!({
            "function": name,
            "pending": field(|ci| ci.num_pending),
            "ack_pending": field(|ci| ci.num_ack_pending as u64),
            "redelivered": field(|ci| ci.num_redelivered as u64),
            "waiting": field(|ci| ci.num_waiting as u64),
            "commands_pending": commands_pending,
            "unpublished": outbox.as_ref().map(|o| o["unpublished"].clone()),
            "oldest_unpublished_age_ms": outbox.as_ref().map(|o| o["oldest_age_ms"].clone()),
        }));
    }
    let dead = match js.get_stream(dlq_stream).await {
        Ok(mut dlq) => dlq.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    };
    let report = serde_json::json!({
        "stream": stream_name,
        "messages": info.state.messages,
        "bytes": info.state.bytes,
        "subjects": info.config.subjects,
        "consumers": consumers,
        "dead_letters": dead,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("stream {stream_name}: {} messages, {} bytes", info.state.messages, info.state.bytes);
    println!(
        "{:<12} {:>8} {:>12} {:>12} {:>9} {:>12} {:>14}",
        "function", "pending", "ack pending", "redelivered", "commands", "unpublished", "oldest unpub."
    );
    for c in &consumers {
        // `-`: the function consumes no saga events (it only takes commands).
        let n = |field: &str| c[field].as_u64().map_or("-".to_string(), |v| v.to_string());
        // `-`: the function is not running, so nobody could say.
        let unpublished = c["unpublished"].as_u64().map_or("-".to_string(), |u| u.to_string());
        let oldest = match (&c["unpublished"], c["oldest_unpublished_age_ms"].as_i64()) {
            (serde_json::Value::Null, _) => "-".to_string(),
            (_, Some(ms)) => format!("{:.1}s", ms as f64 / 1000.0),
            (_, None) => "".to_string(),
        };
        // `-`: the function accepts no command.
        let commands = c["commands_pending"].as_u64().map_or("-".to_string(), |u| u.to_string());
        println!(
            "{:<12} {:>8} {:>12} {:>12} {:>9} {:>12} {:>14}",
            c["function"].as_str().unwrap_or(""),
            n("pending"),
            n("ack_pending"),
            n("redelivered"),
            commands,
            unpublished,
            oldest
        );
    }
    println!("dead letters: {dead}{}", if dead > 0 { " (jetsaga dlq list)" } else { "" });
    Ok(())
}
