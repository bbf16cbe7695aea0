//! Request limits shared by every gateway instance: fixed-window counters
//! in a JetStream key/value bucket ([`BUCKET`]).
//!
//! A limit is a promise only if every instance keeps it (two gateways
//! behind a load balancer, many Lambda instances), and only if it cannot
//! be raced: each count is one compare-and-set on the bucket (create if
//! absent, else update at the revision read), so sixty parallel attempts
//! count sixty. Counters expire with their window (the bucket's `max_age`
//! is the longest window), so nothing is ever cleaned up by hand.
//!
//! Clients are keyed by address, IPv6 by its /64 prefix (one subscriber
//! usually holds a whole /64, so counting single addresses would give them
//! 2^64 budgets). Identities never appear in the bucket as written: keys
//! hold a digest of them.

use std::net::IpAddr;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use chrono::Utc;
use tokio::sync::OnceCell;

use crate::problem::Problem;

/// The key/value bucket of the counters.
pub const BUCKET: &str = "jetsaga_limits";

/// One limit: at most `max` within each `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Names the counter (a key prefix) and, for a person, what is limited.
    pub name: &'static str,
    /// What the refusal says is limited.
    pub what: &'static str,
    /// How many per window.
    pub max: u64,
    /// The window.
    pub window: Duration,
}

/// Log-in attempts of one client (address, or IPv6 /64), right or wrong.
pub const LOGINS_PER_CLIENT: Rule =
    Rule { name: "login-client", what: "log-ins from this address", max: 30, window: Duration::from_secs(60) };

/// Failed log-ins of one account from one client: past it, that client may
/// not try that account again until the window ends. Counted per account
/// *and* client so that a stranger who guesses wrong locks out only
/// themselves, never the account's owner elsewhere.
pub const FAILURES_PER_ACCOUNT_AND_CLIENT: Rule = Rule {
    name: "login-fail-account",
    what: "failed log-ins for this account from this address",
    max: 5,
    window: Duration::from_secs(15 * 60),
};

/// Failed log-ins of one client over every account (guessing across many).
pub const FAILURES_PER_CLIENT: Rule = Rule {
    name: "login-fail-client",
    what: "failed log-ins from this address",
    max: 20,
    window: Duration::from_secs(15 * 60),
};

/// Sign-ups from one client.
pub const SIGN_UPS_PER_CLIENT: Rule =
    Rule { name: "signup-client", what: "sign-ups from this address", max: 20, window: Duration::from_secs(60 * 60) };

/// Sign-ups from everyone together: a flood of new accounts from many
/// addresses slows to this.
pub const SIGN_UPS: Rule =
    Rule { name: "signup-all", what: "sign-ups right now", max: 120, window: Duration::from_secs(60) };

/// Live views one user opens, across every instance: where each view holds
/// an instance (Lambda, a minute each), this is what bounds how many
/// instances one user's views take (16 a minute: at most about 16 at once).
pub const LIVE_VIEWS_PER_USER: Rule =
    Rule { name: "live-user", what: "live views opened by this user", max: 16, window: Duration::from_secs(60) };

/// Every request of one client, whatever it asks: per second, after a
/// burst of [`PACE_BURST`]. Past it a client gets 429 before anything is
/// looked up (no session check, no query): a flood from one address costs
/// the gateway next to nothing, and others' requests go on.
pub const PACE_PER_SECOND: u32 = 50;

/// The burst of [`PACE_PER_SECOND`] (a page loading its assets at once).
pub const PACE_BURST: u32 = 2 * PACE_PER_SECOND;

/// The per-client request pace, kept in this process (it protects the
/// process; the limits that are promises are the shared ones above).
#[derive(Debug)]
pub struct Pace {
    limiter: governor::DefaultKeyedRateLimiter<String>,
    per_second: u32,
}

impl Pace {
    /// `per_second` requests a second per client after a burst of `burst`
    /// (0 per second: no pace).
    pub fn new(per_second: u32, burst: u32) -> Self {
        let rate = std::num::NonZeroU32::new(per_second.max(1)).expect("at least one");
        let burst = std::num::NonZeroU32::new(burst.max(1)).expect("at least one");
        Self { limiter: governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst)), per_second }
    }

    /// Counts a request of `client`; refuses it (429) past the pace.
    pub fn check(&self, client: IpAddr) -> Result<(), Problem> {
        if self.per_second == 0 {
            return Ok(());
        }
        self.limiter.check_key(&client_key(client)).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
            Problem::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                format!("too many requests from this address: at most {} a second", self.per_second),
            )
            .retry_after(wait.as_secs().max(1))
        })
    }

    /// Forgets clients that have been quiet (bounded memory).
    pub fn forget_quiet(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

impl Default for Pace {
    fn default() -> Self {
        Self::new(PACE_PER_SECOND, PACE_BURST)
    }
}

/// The middleware: the pace, first of all.
pub(crate) async fn pace(
    axum::extract::State(gateway): axum::extract::State<std::sync::Arc<crate::Gateway>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let client = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
    match gateway.pace.check(client) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// The longest window of any rule: how long the bucket keeps a counter.
pub const LONGEST_WINDOW: Duration = Duration::from_secs(60 * 60);

/// Attempts at one compare-and-set before giving up (others won each time).
const MAX_RACES: usize = 16;

/// The counters, over one NATS connection.
#[derive(Debug)]
pub struct Limits {
    js: jetstream::Context,
    store: OnceCell<kv::Store>,
}

/// The bucket's configuration (`jetsaga provision` creates it; the
/// gateway creates it itself where its identity may).
pub fn bucket_config(replicas: usize) -> kv::Config {
    kv::Config {
        bucket: BUCKET.into(),
        description: "jetsaga gateway request limits: fixed-window counters".into(),
        history: 1,
        max_age: LONGEST_WINDOW,
        // Keys are digests and counts: a few hundred bytes each.
        max_bytes: 64 * 1024 * 1024,
        max_value_size: 64,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// Creates the bucket if it is missing (idempotent).
pub async fn provision(js: &jetstream::Context, replicas: usize) -> Result<(), String> {
    if js.get_key_value(BUCKET).await.is_ok() {
        return Ok(());
    }
    js.create_key_value(bucket_config(replicas)).await.map(|_| ()).map_err(|e| e.to_string())
}

/// The client a limit counts: the address, or an IPv6 address's /64.
pub fn client_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

impl Limits {
    /// Counters on `nats`.
    pub fn new(nats: async_nats::Client) -> Self {
        Self { js: jetstream::new(nats), store: OnceCell::new() }
    }

    async fn store(&self) -> Result<&kv::Store, Problem> {
        self.store
            .get_or_try_init(|| async {
                match self.js.get_key_value(BUCKET).await {
                    Ok(store) => Ok(store),
                    // Local development: the gateway makes its own bucket.
                    Err(_) => self.js.create_key_value(bucket_config(1)).await.map_err(|e| {
                        tracing::error!(error = %e, bucket = BUCKET, "the request limits' bucket is missing and cannot be created (run `jetsaga provision`)");
                        Problem::unavailable("request limits are unavailable right now")
                    }),
                }
            })
            .await
    }

    /// Counts one against `rule` for `who`; refuses (429 with
    /// `Retry-After`: the end of the window) if the window is already full.
    pub async fn take(&self, rule: &Rule, who: &str) -> Result<(), Problem> {
        let (key, retry_after) = key_of(rule, who);
        let store = self.store().await?;
        for _ in 0..MAX_RACES {
            let counted = match store.entry(key.as_str()).await.map_err(unavailable)? {
                Some(entry) if entry.operation == kv::Operation::Put => {
                    let count = count_of(&entry.value);
                    if count >= rule.max {
                        return Err(refusal(rule, retry_after));
                    }
                    store.update(key.as_str(), (count + 1).to_string().into(), entry.revision).await.is_ok()
                }
                Some(entry) => store.update(key.as_str(), "1".into(), entry.revision).await.is_ok(),
                None => store.create(key.as_str(), "1".into()).await.is_ok(),
            };
            if counted {
                return Ok(());
            }
        }
        Err(Problem::unavailable("too many requests at once: try again"))
    }

    /// Takes back one count of `rule` for `who` (an attempt counted in
    /// advance that turned out not to count, such as a log-in that
    /// succeeded). Best effort: a count not taken back expires with its window.
    pub async fn give_back(&self, rule: &Rule, who: &str) {
        let (key, _) = key_of(rule, who);
        let Ok(store) = self.store().await else { return };
        for _ in 0..MAX_RACES {
            let Ok(Some(entry)) = store.entry(key.as_str()).await else { return };
            let count = count_of(&entry.value);
            if entry.operation != kv::Operation::Put || count == 0 {
                return;
            }
            if store.update(key.as_str(), (count - 1).to_string().into(), entry.revision).await.is_ok() {
                return;
            }
        }
    }

    /// Forgets `who`'s count of `rule` in this window (an account's owner
    /// logged in: their earlier mistakes no longer count).
    pub async fn clear(&self, rule: &Rule, who: &str) {
        let (key, _) = key_of(rule, who);
        if let Ok(store) = self.store().await {
            let _ = store.delete(key.as_str()).await;
        }
    }
}

fn count_of(value: &Bytes) -> u64 {
    std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn unavailable(e: impl std::fmt::Display) -> Problem {
    tracing::warn!(error = %e, "cannot read a request limit");
    Problem::unavailable("request limits are unavailable right now")
}

fn refusal(rule: &Rule, retry_after: u64) -> Problem {
    Problem::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        format!(
            "too many {}: at most {} per {} s; try again in {retry_after} s",
            rule.what,
            rule.max,
            rule.window.as_secs()
        ),
    )
    .retry_after(retry_after)
}

/// The key of `who`'s counter of `rule` in the current window, and the
/// seconds until that window ends.
fn key_of(rule: &Rule, who: &str) -> (String, u64) {
    let window = rule.window.as_secs().max(1);
    let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
    let index = now / window;
    let retry_after = (index + 1) * window - now;
    let digest = jetsaga_core::ids::digest(who);
    (format!("{}.{digest}.{index}", rule.name), retry_after.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_their_64_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        assert_eq!(client_key("::ffff:192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(client_key("192.0.2.7".parse().unwrap()), "192.0.2.7");
    }

    #[test]
    fn keys_hold_no_identity_and_name_their_window() {
        let (key, retry_after) = key_of(&FAILURES_PER_ACCOUNT_AND_CLIENT, "ada@example.com\n192.0.2.7");
        assert!(key.starts_with("login-fail-account.") && !key.contains("ada"), "{key}");
        assert!((1..=900).contains(&retry_after));
    }
}
