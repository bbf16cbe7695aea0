//! An order's saga, live: server-sent events read from the `SAGA` stream.
//!
//! Each event of the order becomes one SSE event: `id` is its stream
//! sequence, `event` its subject, `data` the envelope. A client that
//! reconnects sends the last id it saw (`Last-Event-ID`) and gets what
//! followed, nothing twice. After the order's terminal event
//! (`orders.evt.completed`, `failed` or `canceled`) it goes on for
//! [`SETTLE`] more, for what follows an end (stock, credit and payment
//! released, points awarded), then sends one `end` event (no id; data
//! `{"order_id", "outcome"}`) and closes: a client closes its `EventSource` on `end` instead of
//! reconnecting.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use jetsaga_events::Envelope;
use jetsaga_events::subjects::{ORDERS_EVT_CANCELED, ORDERS_EVT_COMPLETED, ORDERS_EVT_FAILED};

use crate::Gateway;
use crate::auth::Session;
use crate::problem::Problem;

/// The stream the saga's events are in.
pub const SAGA_STREAM: &str = "SAGA";

/// How long a live view stays open at most (the client reconnects with
/// `Last-Event-ID` and loses nothing).
pub const MAX_LIVE: Duration = Duration::from_secs(15 * 60);

/// How long the stream goes on after the terminal event.
pub const SETTLE: Duration = Duration::from_secs(2);

/// The event that says the stream is over.
pub const END_EVENT: &str = "end";

const TERMINAL: [&str; 3] = [ORDERS_EVT_COMPLETED, ORDERS_EVT_FAILED, ORDERS_EVT_CANCELED];

/// `GET /api/orders/{id}/events`.
pub(crate) async fn order_events(
    State(gateway): State<Arc<Gateway>>,
    session: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let order = crate::api::visible_order(&gateway, &session, &id).await?;
    let deliver_policy = match headers.get("Last-Event-ID") {
        Some(value) => {
            let seen: u64 = value.to_str().ok().and_then(|v| v.trim().parse().ok()).ok_or_else(|| {
                Problem::bad_request("Last-Event-ID must be an event id this stream sent").field("Last-Event-ID")
            })?;
            consumer::DeliverPolicy::ByStartSequence { start_sequence: seen + 1 }
        }
        // From just before the order was created: its first event is later.
        None => match order.timeline.first() {
            Some(first) => consumer::DeliverPolicy::ByStartTime { start_time: first.at - chrono::Duration::seconds(1) },
            None => consumer::DeliverPolicy::All,
        },
    };
    let js = jetstream::new(gateway.nats.clone());
    let unavailable = |e: &dyn std::fmt::Display| Problem::unavailable(format!("cannot read the saga stream: {e}"));
    let stream = js.get_stream(SAGA_STREAM).await.map_err(|e| unavailable(&e))?;
    let reader = stream
        .create_consumer(consumer::pull::OrderedConfig { deliver_policy, ..Default::default() })
        .await
        .map_err(|e| unavailable(&e))?;
    let messages = reader.messages().await.map_err(|e| unavailable(&e))?;
    let order_id = id;
    // Live until the terminal event, then settling until `SETTLE` after it.
    let events = futures::stream::unfold((messages, Phase::Live), move |(mut messages, phase)| {
        let order_id = order_id.clone();
        async move {
            let settle_until = match phase {
                Phase::Over => return None,
                Phase::Live => None,
                Phase::Settling(until, outcome) => Some((until, outcome)),
            };
            loop {
                let next = match settle_until {
                    None => messages.next().await,
                    Some((until, outcome)) => match tokio::time::timeout_at(until, messages.next()).await {
                        Ok(next) => next,
                        Err(_) => {
                            let end = serde_json::json!({"order_id": order_id, "outcome": outcome}).to_string();
                            return Some((Ok(Event::default().event(END_EVENT).data(end)), (messages, Phase::Over)));
                        }
                    },
                };
                let message = match next {
                    Some(Ok(message)) => message,
                    Some(Err(_)) | None => return None, // the client reconnects with Last-Event-ID
                };
                // A deadline still scheduled has not happened: it shows when it comes.
                if jetsaga_core::schedule::is_pending_schedule(&message.subject) {
                    continue;
                }
                let Ok(envelope) = Envelope::decode(&message.payload) else { continue };
                if envelope.order_id.as_deref() != Some(order_id.as_str()) {
                    continue;
                }
                let sequence = message.info().map(|i| i.stream_sequence).unwrap_or_default();
                let phase = match settle_until {
                    Some((until, outcome)) => Phase::Settling(until, outcome),
                    None => match TERMINAL.iter().find(|t| **t == envelope.event_type) {
                        Some(terminal) => Phase::Settling(
                            tokio::time::Instant::now() + SETTLE,
                            terminal.rsplit('.').next().unwrap_or_default(),
                        ),
                        None => Phase::Live,
                    },
                };
                let event = Event::default()
                    .id(sequence.to_string())
                    .event(envelope.event_type.clone())
                    .data(String::from_utf8_lossy(&envelope.encode()));
                return Some((Ok(event), (messages, phase)));
            }
        }
    });
    let bounded = for_at_most(events, MAX_LIVE);
    Ok(Sse::new(bounded).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Where a live view is.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Before the terminal event.
    Live,
    /// After it (the outcome it said), until this moment.
    Settling(tokio::time::Instant, &'static str),
    /// `end` sent.
    Over,
}

/// Ends `events` after `limit`.
fn for_at_most<S: Stream + Send + 'static>(events: S, limit: Duration) -> impl Stream<Item = S::Item> {
    let deadline = tokio::time::sleep(limit);
    events.take_until(deadline)
}
