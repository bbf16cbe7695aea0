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
//!
//! What a view costs is bounded. One reader per gateway process ([`LiveHub`])
//! follows the saga stream and fans each event out to the views of its
//! order; it keeps the most recent events ([`RECENT_EVENTS`]), from which a
//! view's history is served. Only a view whose history is older than that
//! reads the stream itself, in one of [`REPLAY_SLOTS`] slots and at most
//! [`MAX_REPLAY`] messages. Views are capped per user and per process
//! ([`LiveLimits`]; past a cap: 429 with `Retry-After`), a view lasts at
//! most [`LiveLimits::live_for`], a client that does not keep up is
//! disconnected (it reconnects with `Last-Event-ID`), and a view ends when
//! its user logs out (at once on this instance, within
//! [`SESSION_RECHECK`] on others).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use jetsaga_events::subjects::{
    ORDERS_EVT_CANCELED, ORDERS_EVT_COMPLETED, ORDERS_EVT_CREATED, ORDERS_EVT_FAILED, USERS_QUERY_GET,
};
use jetsaga_events::{Envelope, GetUser, OrderStatus, UserView};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::Gateway;
use crate::auth::Session;
use crate::problem::Problem;

/// The stream the saga's events are in.
pub const SAGA_STREAM: &str = jetsaga_jetstream::streams::SAGA;

/// How long the stream goes on after the terminal event.
pub const SETTLE: Duration = Duration::from_secs(2);

/// The event that says the stream is over.
pub const END_EVENT: &str = "end";

/// Events the process's reader keeps, newest last: a view's history comes
/// from them when they reach back far enough.
pub const RECENT_EVENTS: usize = 20_000;

/// Bytes of envelopes those events may hold at most.
pub const RECENT_BYTES: usize = 32 * 1024 * 1024;

/// Views reading history older than the recent events at once, per process.
pub const REPLAY_SLOTS: usize = 2;

/// Messages such a view reads at most; an order older than that shows
/// what is left of it (and `end` if it has ended). Its whole timeline is
/// `GET /api/orders/{id}`.
pub const MAX_REPLAY: u64 = 50_000;

/// Events waiting to be sent to one view: a client slower than this is
/// disconnected and reconnects with `Last-Event-ID`.
const VIEW_BUFFER: usize = 256;

/// How often a view checks that its session still holds (a logout on
/// another gateway instance).
pub const SESSION_RECHECK: Duration = Duration::from_secs(30);

/// How long a view waits for a history slot before a 503.
const REPLAY_WAIT: Duration = Duration::from_secs(2);

const TERMINAL: [&str; 3] = [ORDERS_EVT_COMPLETED, ORDERS_EVT_FAILED, ORDERS_EVT_CANCELED];

/// The bounds of live views.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveLimits {
    /// Views one user may have open at once on one process.
    pub per_user: usize,
    /// Views one process serves at once.
    pub per_process: usize,
    /// How long a view stays open at most (the client reconnects with
    /// `Last-Event-ID` and loses nothing). On Lambda each view holds an
    /// instance for that long: the bootstrap sets it shorter.
    pub live_for: Duration,
    /// Views one user may open per window across every instance, counted in
    /// the shared limits bucket. Where every view is an instance of its own
    /// (Lambda) the caps above hold per instance only, so this one bounds a
    /// user's views; `None` (a long-running gateway) counts nothing.
    pub opened_per_user: Option<crate::limits::Rule>,
}

impl Default for LiveLimits {
    fn default() -> Self {
        Self { per_user: 8, per_process: 2_000, live_for: Duration::from_secs(15 * 60), opened_per_user: None }
    }
}

/// One event of the saga stream that names an order.
#[derive(Debug)]
struct Item {
    sequence: u64,
    order_id: String,
    event_type: String,
    envelope: String,
}

impl Item {
    fn of(message: &jetstream::Message) -> Option<Self> {
        // A deadline still scheduled has not happened: it shows when it comes.
        if jetsaga_core::schedule::is_pending_schedule(&message.subject) {
            return None;
        }
        let envelope = Envelope::decode(&message.payload).ok()?;
        let sequence = message.info().ok()?.stream_sequence;
        Some(Item {
            sequence,
            order_id: envelope.saga_key.clone()?,
            event_type: envelope.event_type.clone(),
            envelope: String::from_utf8_lossy(&envelope.encode()).into_owned(),
        })
    }
}

/// The process's one reader of the saga stream, and its views.
#[derive(Debug)]
pub struct LiveHub {
    limits: LiveLimits,
    state: Mutex<HubState>,
    replays: Semaphore,
}

#[derive(Debug, Default)]
struct HubState {
    /// Whether the reader runs (started with the first view).
    reading: bool,
    /// The sequence from which on every event is in `recent` (or was
    /// evicted, moving this on); `None` until the reader starts.
    covered_from: Option<u64>,
    recent: VecDeque<Arc<Item>>,
    recent_bytes: usize,
    /// The views of each order.
    followers: HashMap<String, Vec<Follower>>,
    next_follower: u64,
    /// Views open per user, and what ends them (a logout).
    users: HashMap<String, (usize, CancellationToken)>,
    views: usize,
}

/// One view of an order, as the reader hands it events: (its id, its queue).
type Follower = (u64, mpsc::Sender<Arc<Item>>);

/// A view's place in the caps, given back when it ends.
#[derive(Debug)]
struct Admission {
    hub: Arc<Gateway>,
    user_id: String,
    follower: Option<(String, u64)>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut state = self.hub.live.state.lock().expect("the live hub lock is never poisoned");
        state.views -= 1;
        if let Some((count, _)) = state.users.get_mut(&self.user_id) {
            *count -= 1;
            if *count == 0 {
                state.users.remove(&self.user_id);
            }
        }
        if let Some((order_id, id)) = &self.follower
            && let Some(list) = state.followers.get_mut(order_id)
        {
            list.retain(|(f, _)| f != id);
            if list.is_empty() {
                state.followers.remove(order_id);
            }
        }
    }
}

impl LiveHub {
    /// A hub with these bounds (the reader starts with the first view).
    pub fn new(limits: LiveLimits) -> Self {
        Self { limits, state: Mutex::default(), replays: Semaphore::new(REPLAY_SLOTS) }
    }

    /// Views open now.
    pub fn views(&self) -> usize {
        self.state.lock().expect("the live hub lock is never poisoned").views
    }

    /// Ends every view of `user_id` on this process (they logged out).
    pub fn end_views_of(&self, user_id: &str) {
        if let Some((_, ended)) = self.state.lock().expect("the live hub lock is never poisoned").users.get_mut(user_id)
        {
            ended.cancel();
            // Views opened after the logout (a new session) are not ended with these.
            *ended = CancellationToken::new();
        }
    }

    /// Takes a place for a view of `user_id`, or says why not (429).
    fn admit(gateway: &Arc<Gateway>, user_id: &str) -> Result<(Admission, CancellationToken), Problem> {
        let hub = &gateway.live;
        let mut state = hub.state.lock().expect("the live hub lock is never poisoned");
        let busy = |detail: String| Problem::new(StatusCode::TOO_MANY_REQUESTS, detail).retry_after(5);
        if state.views >= hub.limits.per_process {
            return Err(busy(format!(
                "this server already follows {} orders live: try again shortly",
                hub.limits.per_process
            )));
        }
        let (count, ended) = state.users.entry(user_id.to_string()).or_insert_with(|| (0, CancellationToken::new()));
        if *count >= hub.limits.per_user {
            return Err(busy(format!(
                "you already follow {} orders live (at most {}): close one, or try again shortly",
                count, hub.limits.per_user
            )));
        }
        *count += 1;
        let ended = ended.clone();
        state.views += 1;
        Ok((Admission { hub: gateway.clone(), user_id: user_id.to_string(), follower: None }, ended))
    }

    /// Starts the reader if it is not running.
    fn ensure_reading(gateway: &Arc<Gateway>) {
        {
            let mut state = gateway.live.state.lock().expect("the live hub lock is never poisoned");
            if state.reading {
                return;
            }
            state.reading = true;
        }
        let weak = Arc::downgrade(gateway);
        let nats = gateway.nats.clone();
        tokio::spawn(read(weak, nats));
    }
}

/// The reader: follows the saga stream from the last [`RECENT_EVENTS`]
/// messages on, starting over after any interruption where it left off.
async fn read(gateway: std::sync::Weak<Gateway>, nats: async_nats::Client) {
    let js = jetstream::new(nats);
    let mut next: Option<u64> = None;
    loop {
        let started = async {
            let mut stream = js.get_stream(SAGA_STREAM).await.ok()?;
            let last = stream.info().await.ok()?.state.last_sequence;
            let from = next.unwrap_or_else(|| last.saturating_sub(RECENT_EVENTS as u64).max(1));
            let config = consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: from },
                ..Default::default()
            };
            let messages = stream.create_consumer(config).await.ok()?.messages().await.ok()?;
            Some((from, messages))
        };
        if let Some((from, mut messages)) = started.await {
            {
                let Some(gateway) = gateway.upgrade() else { return };
                let mut state = gateway.live.state.lock().expect("the live hub lock is never poisoned");
                state.covered_from.get_or_insert(from);
            }
            while let Some(Ok(message)) = messages.next().await {
                let Some(gateway) = gateway.upgrade() else { return };
                let sequence = message.info().map(|i| i.stream_sequence).unwrap_or_default();
                next = Some(sequence + 1);
                if let Some(item) = Item::of(&message) {
                    deliver(&gateway.live, Arc::new(item));
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if gateway.strong_count() == 0 {
            return;
        }
    }
}

/// Keeps `item` among the recent events and hands it to its order's views;
/// a view that is this far behind is dropped (its client reconnects).
fn deliver(hub: &LiveHub, item: Arc<Item>) {
    let mut state = hub.state.lock().expect("the live hub lock is never poisoned");
    if let Some(list) = state.followers.get_mut(&item.order_id) {
        list.retain(|(_, tx)| tx.try_send(item.clone()).is_ok());
    }
    state.recent_bytes += item.envelope.len();
    state.recent.push_back(item);
    while state.recent.len() > RECENT_EVENTS || state.recent_bytes > RECENT_BYTES {
        let Some(oldest) = state.recent.pop_front() else { break };
        state.recent_bytes -= oldest.envelope.len();
        state.covered_from = Some(oldest.sequence + 1);
    }
}

/// `GET /api/orders/{id}/events`.
pub(crate) async fn order_events(
    State(gateway): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let after = match headers.get("Last-Event-ID") {
        Some(value) => Some(value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or_else(|| {
            Problem::bad_request("Last-Event-ID must be an event id this stream sent").field("Last-Event-ID")
        })?),
        None => None,
    };
    // A place first, by the token alone: a user over the cap costs no lookup.
    let claims = crate::auth::claims(&gateway, &headers)?;
    let (mut admission, ended) = LiveHub::admit(&gateway, &claims.sub)?;
    if let Some(rule) = &gateway.live.limits.opened_per_user {
        gateway.limits.take(rule, &claims.sub).await?;
    }
    let session = Session::of(&gateway, claims).await?;
    let order = crate::api::visible_order(&gateway, &session, &id).await?;
    LiveHub::ensure_reading(&gateway);
    // Follow first, then take the history: nothing falls between the two.
    let (tx, live) = mpsc::channel(VIEW_BUFFER);
    let (covered_from, recent) = {
        let mut state = gateway.live.state.lock().expect("the live hub lock is never poisoned");
        let follower = state.next_follower;
        state.next_follower += 1;
        state.followers.entry(id.clone()).or_default().push((follower, tx));
        admission.follower = Some((id.clone(), follower));
        let from = after.map_or(0, |a| a + 1);
        let recent: VecDeque<Arc<Item>> =
            state.recent.iter().filter(|i| i.order_id == id && i.sequence >= from).cloned().collect();
        (state.covered_from, recent)
    };
    // History older than the recent events: read it, bounded, in a slot,
    // and never from before the order's own first event.
    let mut backlog = VecDeque::new();
    let mut history_cut = false;
    let first_wanted = after.map(|a| a + 1);
    let starts_here = recent.iter().any(|i| i.event_type == ORDERS_EVT_CREATED);
    let needs_history = match (covered_from, first_wanted) {
        (None, _) => true,
        (Some(covered), Some(first)) => first < covered,
        (Some(_), None) => !starts_here,
    };
    if needs_history {
        let _slot = tokio::time::timeout(REPLAY_WAIT, gateway.live.replays.acquire())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| {
            Problem::unavailable("too many views are reading old history right now").retry_after(2)
        })?;
        let created = order.timeline.first().map(|first| first.at - chrono::Duration::seconds(1));
        let start = replay_start(&gateway, first_wanted, created).await;
        history_cut = replay(&gateway, &id, start, covered_from.unwrap_or(u64::MAX), &mut backlog).await?;
    }
    backlog.extend(recent);
    // An ended order whose events are no longer at hand still says how it ended.
    let ended_as = match order.status {
        OrderStatus::Completed => Some("completed"),
        OrderStatus::Failed => Some("failed"),
        OrderStatus::Canceled => Some("canceled"),
        _ => None,
    };
    let mut phase = Phase::Live;
    if history_cut && let Some(outcome) = ended_as {
        phase = Phase::Settling(tokio::time::Instant::now(), outcome);
    }
    let view = View {
        gateway: gateway.clone(),
        order_id: id,
        backlog,
        live,
        last_sent: after.unwrap_or(0),
        phase,
        issued_at_ms: session.issued_at_ms,
        user_id: session.user.user_id.clone(),
        recheck: tokio::time::Instant::now() + SESSION_RECHECK,
        _admission: admission,
    };
    let events = futures::stream::unfold(view, |mut view| async move {
        let event = view.next().await?;
        Some((Ok(event), view))
    });
    let bounded =
        events.take_until(tokio::time::sleep(gateway.live.limits.live_for)).take_until(ended.cancelled_owned());
    Ok(Sse::new(bounded).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Where a view's history starts: after `Last-Event-ID`, but not before
/// the order was `created` (an id from long before it would only make the
/// view read events of other orders).
async fn replay_start(
    gateway: &Gateway,
    first_wanted: Option<u64>,
    created: Option<chrono::DateTime<chrono::Utc>>,
) -> consumer::DeliverPolicy {
    let by_time = |created: Option<chrono::DateTime<chrono::Utc>>| match created {
        Some(start_time) => consumer::DeliverPolicy::ByStartTime { start_time },
        None => consumer::DeliverPolicy::All,
    };
    let Some(first) = first_wanted else { return by_time(created) };
    let Some(created) = created else { return consumer::DeliverPolicy::ByStartSequence { start_sequence: first } };
    let js = jetstream::new(gateway.nats.clone());
    let stored_at = match js.get_stream(SAGA_STREAM).await {
        Ok(stream) => stream.direct_get(first).await.ok().map(|m| m.time),
        Err(_) => None,
    };
    match stored_at {
        Some(at) if at < created => by_time(Some(created)),
        _ => consumer::DeliverPolicy::ByStartSequence { start_sequence: first },
    }
}

/// Reads the order's events from `start` up to sequence `until` (not
/// included), at most [`MAX_REPLAY`] messages; true if it stopped at that
/// bound before reaching `until` or the stream's end.
async fn replay(
    gateway: &Gateway,
    order_id: &str,
    start: consumer::DeliverPolicy,
    until: u64,
    into: &mut VecDeque<Arc<Item>>,
) -> Result<bool, Problem> {
    let unavailable = |e: &dyn std::fmt::Display| Problem::unavailable(format!("cannot read the saga stream: {e}"));
    let js = jetstream::new(gateway.nats.clone());
    let stream = js.get_stream(SAGA_STREAM).await.map_err(|e| unavailable(&e))?;
    if stream.cached_info().state.messages == 0 {
        return Ok(false);
    }
    let reader = stream
        .create_consumer(consumer::pull::OrderedConfig { deliver_policy: start, ..Default::default() })
        .await
        .map_err(|e| unavailable(&e))?;
    let mut messages = reader.messages().await.map_err(|e| unavailable(&e))?;
    let mut read = 0;
    loop {
        let next = tokio::time::timeout(Duration::from_millis(500), messages.next()).await;
        let Ok(Some(Ok(message))) = next else { return Ok(false) };
        let Ok(info) = message.info() else { return Ok(false) };
        let (sequence, pending) = (info.stream_sequence, info.pending);
        if sequence >= until {
            return Ok(false);
        }
        if let Some(item) = Item::of(&message).filter(|i| i.order_id == order_id) {
            into.push_back(Arc::new(item));
        }
        read += 1;
        if pending == 0 {
            return Ok(false);
        }
        if read >= MAX_REPLAY {
            return Ok(true);
        }
    }
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

/// One open view: its history, then what the reader hands it.
#[derive(Debug)]
struct View {
    gateway: Arc<Gateway>,
    order_id: String,
    backlog: VecDeque<Arc<Item>>,
    live: mpsc::Receiver<Arc<Item>>,
    last_sent: u64,
    phase: Phase,
    user_id: String,
    issued_at_ms: i64,
    recheck: tokio::time::Instant,
    _admission: Admission,
}

impl View {
    /// The next event to send, or `None` when the view is over.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Phase::Over = self.phase {
                return None;
            }
            let item = match self.backlog.pop_front() {
                Some(item) => item,
                None => {
                    let settle_until = match self.phase {
                        Phase::Settling(until, outcome) => Some((until, outcome)),
                        _ => None,
                    };
                    let deadline = settle_until.map_or(self.recheck, |(until, _)| until.min(self.recheck));
                    match tokio::time::timeout_at(deadline, self.live.recv()).await {
                        Ok(Some(item)) => item,
                        // Dropped by the reader (too slow), or the reader stopped: the client reconnects.
                        Ok(None) => return None,
                        Err(_) => {
                            if tokio::time::Instant::now() >= self.recheck {
                                if !self.session_holds().await {
                                    return None;
                                }
                                self.recheck = tokio::time::Instant::now() + SESSION_RECHECK;
                            }
                            if let Some((until, outcome)) = settle_until
                                && tokio::time::Instant::now() >= until
                            {
                                self.phase = Phase::Over;
                                let end = serde_json::json!({"order_id": self.order_id, "outcome": outcome});
                                return Some(Event::default().event(END_EVENT).data(end.to_string()));
                            }
                            continue;
                        }
                    }
                }
            };
            if item.sequence <= self.last_sent {
                continue;
            }
            self.last_sent = item.sequence;
            if let Phase::Live = self.phase
                && let Some(terminal) = TERMINAL.iter().find(|t| **t == item.event_type)
            {
                let outcome = terminal.rsplit('.').next().unwrap_or_default();
                self.phase = Phase::Settling(tokio::time::Instant::now() + SETTLE, outcome);
            }
            return Some(
                Event::default().id(item.sequence.to_string()).event(item.event_type.clone()).data(&item.envelope),
            );
        }
    }

    /// Whether the view's session still holds (not logged out since).
    async fn session_holds(&self) -> bool {
        let get = GetUser { user_id: self.user_id.clone() };
        match crate::upstream::request::<_, UserView>(&self.gateway.nats, USERS_QUERY_GET, None, &get).await {
            Ok(user) => user.sessions_valid_from.is_none_or(|from| self.issued_at_ms >= from.timestamp_millis()),
            Err(p) => p.status >= 500, // the users function away: keep the view, check again later
        }
    }
}
