//! The HTTP gateway: one more thin adapter, beside JetStream and Lambda.
//!
//! An axum [`Router`] that turns REST calls into the saga's NATS commands
//! and queries, exactly as any NATS client could send them: it holds no
//! business rule and no state of its own (its request limits are counters
//! in a JetStream bucket shared by every instance, see [`limits`]). It knows who is calling from a session token (see [`auth`]) and
//! never takes a customer from a request body. Errors are RFC 9457
//! problem documents ([`problem`]).
//!
//! Endpoints (JSON):
//!
//! | method and path | who | what |
//! |---|---|---|
//! | `POST /api/users` | anyone | sign up: `{email, password, name}` → 201 the user (and their customer) |
//! | `POST /api/session` | anyone | log in: `{email, password}` → the user, a token, and the session cookie |
//! | `DELETE /api/session` | signed in | log out: every token issued so far stops working |
//! | `GET /api/me` | signed in | the user |
//! | `GET /api/products` | anyone | the catalog |
//! | `POST /api/orders` | signed in | `{items}` (`Idempotency-Key` header: the same key twice makes one order) → 202 |
//! | `GET /api/orders?status=&limit=&after=` | signed in | the caller's orders, newest first, a page at a time |
//! | `GET /api/orders/{id}` | its customer, admins | status, items, total, reason, timeline (404 for anyone else) |
//! | `POST /api/orders/{id}/cancel` | its customer, admins | `{reason?}` → 202 |
//! | `GET /api/orders/{id}/events` | its customer, admins | the saga live as server-sent events, resumable with `Last-Event-ID` |
//! | `GET /api/sagas?status=&customer_id=&created_from=&created_until=&limit=&after=` | admins | every order, newest first |
//! | `GET /api/customers`, `GET /api/customers/{id}`, `POST /api/customers` | admins | customers and their credit |
//! | `GET /api/status` | admins | what `jetsaga status` shows (asked of the `jetsaga-ops` service) |
//! | `GET /api/dlq`, `POST /api/dlq/{seq}/redrive` | admins | the dead letters; send one again to its subject |
//! | `PUT /api/products/{id}` | admins | `{name, price_cents, stock}` → the product |
//! | `GET /api/openapi.json` | anyone | this API as an OpenAPI 3.1 document |
//! | `GET /api/docs` | anyone | a page that lists the operations of that document (no CDN) |
//! | `GET /healthz` | anyone | the process runs |
//! | `GET /readyz` | anyone | connected to NATS and the saga's streams exist (else 503) |
//! | `GET /metrics` | anyone | Prometheus text: requests by route, method and status; latency histograms; saga outcomes |
//! | `GET /api/throughput` | admins | orders ended each second of the last minute, with p50/p99 latency |
//! | `DELETE /api/dlq/{seq}` | admins | remove a dead letter without sending it again |
//! | `GET /`, `GET /ui/{file}` | anyone | the web UI (shop and operations console; see [`ui`]) |

pub mod api;
pub mod auth;
pub mod forwarded;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod origin;
pub mod problem;
mod trace;
pub mod ui;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

pub use auth::Keys;

/// The largest request body accepted (larger: 413): half the largest
/// command the saga takes, so that every body accepted here makes a
/// command the saga takes too (the command adds the customer and the
/// order id; re-encoding never makes JSON larger), instead of a 400 and a
/// dead letter.
pub const MAX_BODY_BYTES: usize = jetsaga_events::limits::MAX_COMMAND_BYTES / 2;

/// How long a request may take before the caller gets a 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// What every handler works with.
#[derive(Debug)]
pub struct Gateway {
    /// The saga, over NATS.
    pub nats: async_nats::Client,
    /// The token signing key.
    pub keys: Keys,
    /// Whether the gateway is served over TLS (cookies get `Secure`).
    pub secure_cookies: bool,
    /// Log-in and sign-up limits, shared by every instance.
    pub limits: limits::Limits,
    /// The process's reader of the saga stream and its live views.
    pub live: live::LiveHub,
    /// Every request of one client, per second ([`limits::Pace`]).
    pub pace: limits::Pace,
    /// Requests and latencies, for `GET /metrics`.
    pub metrics: metrics::Metrics,
    /// Origins whose pages may call the API from a browser (CORS); none by default.
    pub cors_origins: Vec<HeaderValue>,
    /// Proxies whose `X-Forwarded-For` is believed ([`forwarded`]); none by default.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Gateway {
    /// A gateway over `nats`, signing tokens with `keys`.
    pub fn new(nats: async_nats::Client, keys: Keys) -> Self {
        Self {
            limits: limits::Limits::new(nats.clone()),
            nats,
            keys,
            secure_cookies: false,
            metrics: metrics::Metrics::default(),
            live: live::LiveHub::new(live::LiveLimits::default()),
            pace: limits::Pace::default(),
            cors_origins: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Starts the gateway's background work, in the current Tokio runtime:
/// counting orders as they end, from the saga stream (for `GET /metrics`
/// and `GET /api/throughput`), and forgetting the pace of clients gone
/// quiet (so that their records do not grow without bound). Call it once
/// beside [`router`]; it stops by itself when the gateway is dropped.
pub fn start_upkeep(gateway: &Arc<Gateway>) {
    metrics::count_outcomes(Arc::downgrade(gateway));
    let weak = Arc::downgrade(gateway);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            every.tick().await;
            let Some(gateway) = weak.upgrade() else { return };
            gateway.pace.forget_quiet();
        }
    });
}

/// The gateway's routes, with its limits and security headers. Starts
/// nothing: see [`start_upkeep`].
pub fn router(gateway: Arc<Gateway>) -> Router {
    // Cross-origin calls only from the origins configured, with credentials
    // (the session cookie); none by default, and the UI is same-origin.
    let cors = (!gateway.cors_origins.is_empty()).then(|| {
        tower_http::cors::CorsLayer::new()
            .allow_origin(gateway.cors_origins.clone())
            .allow_methods([
                axum::http::Method::GET,
                axum::http::Method::POST,
                axum::http::Method::PUT,
                axum::http::Method::DELETE,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::HeaderName::from_static("idempotency-key"),
            ])
            .allow_credentials(true)
    });
    let router = api::routes()
        .route_layer(axum::middleware::from_fn_with_state(gateway.clone(), origin::guard))
        .route_layer(axum::middleware::from_fn_with_state(gateway.clone(), limits::pace))
        .route_layer(axum::middleware::from_fn_with_state(gateway.clone(), forwarded::resolve))
        .route_layer(axum::middleware::from_fn_with_state(gateway.clone(), metrics::track))
        .with_state(gateway)
        // Enforced by the body extractors, so that a large body gets a 413 problem.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::SERVICE_UNAVAILABLE, REQUEST_TIMEOUT))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .layer(SetResponseHeaderLayer::if_not_present(header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}
