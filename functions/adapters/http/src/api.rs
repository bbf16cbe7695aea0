//! The routes: each turns a request into one NATS command or query.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use jetsaga_events::ops::{self, DeadLetterList, DeleteRequest, Deleted, RedriveRequest, Redriven, StatusReport};
use jetsaga_events::subjects::*;
use jetsaga_events::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Gateway;
use crate::auth::{self, Session};
use crate::limits;
use crate::problem::Problem;
use crate::upstream::request;
use jetsaga_core::cpu::CpuPool;

type Shared = State<Arc<Gateway>>;

/// The shortest password accepted at sign-up.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// The longest password accepted at sign-up (Argon2 takes any length; a
/// bound keeps each hash cheap to compute).
pub const MAX_PASSWORD_CHARS: usize = 256;

/// The longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;

pub(crate) fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(crate::metrics::ready))
        .route("/metrics", get(crate::metrics::metrics))
        .route("/api/openapi.json", get(|| async { Json(crate::openapi::document()) }))
        .route("/api/docs", get(|| async { axum::response::Html(include_str!("docs.html")) }))
        .route("/api/users", post(sign_up))
        .route("/api/session", post(log_in).delete(log_out))
        .route("/api/me", get(me))
        .route("/api/products", get(products))
        .route("/api/orders", post(create_order).get(list_orders))
        .route("/api/orders/{id}", get(get_order))
        .route("/api/orders/{id}/cancel", post(cancel_order))
        .route("/api/status", get(status))
        .route("/api/dlq", get(dead_letters))
        .route("/api/dlq/{seq}", axum::routing::delete(delete_dead_letter))
        .route("/api/dlq/{seq}/redrive", post(redrive))
        .route("/api/throughput", get(crate::metrics::throughput))
        .route("/api/orders/{id}/events", get(crate::live::order_events))
        .route("/api/sagas", get(list_sagas))
        .route("/api/customers", get(list_customers).post(create_customer))
        .route("/api/customers/{id}", get(get_customer))
        .route("/api/products/{id}", axum::routing::put(put_product))
        .merge(crate::ui::routes())
        .fallback(|| async { Problem::not_found("no such endpoint") })
}

/// A JSON body whose rejections are problems: 415 without a JSON content
/// type, 413 too large, 400 malformed with what serde said.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON with Content-Type: application/json",
            )),
            Err(JsonRejection::BytesRejection(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than the {} bytes accepted", crate::MAX_BODY_BYTES),
            )),
            Err(e) => Err(Problem::bad_request(e.body_text())),
        }
    }
}

/// Query parameters whose rejections are 400 problems.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(params)) => Ok(Self(params)),
            Err(e) => Err(Problem::bad_request(e.body_text())),
        }
    }
}

/// `POST /api/users` body.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignUpRequest {
    /// Email address (the login name).
    #[schemars(length(max = jetsaga_events::limits::MAX_EMAIL_CHARS), regex(pattern = jetsaga_events::limits::EMAIL_PATTERN))]
    pub email: String,
    /// 8 to 256 characters.
    #[schemars(length(min = MIN_PASSWORD_CHARS, max = MAX_PASSWORD_CHARS))]
    pub password: String,
    /// Display name.
    #[schemars(length(min = 1, max = jetsaga_events::limits::MAX_NAME_CHARS), regex(pattern = jetsaga_events::limits::REQUIRED_TEXT_PATTERN))]
    pub name: String,
}

async fn sign_up(
    State(gateway): Shared,
    ClientAddr(client): ClientAddr,
    Body(body): Body<SignUpRequest>,
) -> Result<Response, Problem> {
    let chars = body.password.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters, got {chars}"),
        )
        .field("password"));
    }
    // Counted before the expensive part: a refused sign-up costs nothing.
    gateway.limits.take(&limits::SIGN_UPS_PER_CLIENT, &limits::client_key(client)).await?;
    gateway.limits.take(&limits::SIGN_UPS, "everyone").await?;
    // Hashed here, so that no password ever reaches a function, a stream or
    // a log; on the bounded pool, so that a burst of sign-ups neither
    // stalls the functions nor runs the process out of memory.
    let password = body.password;
    let password_hash = CpuPool::shared().run(move || hash(&password)).await.map_err(busy)?;
    let command = SignUp { email: body.email, name: body.name, password_hash };
    // The command's id names the user (`u-<id>`, see the users function).
    let id = uuid::Uuid::now_v7().to_string();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id.as_str());
    let _: Value = request(&gateway.nats, USERS_CMD_SIGN_UP, Some(headers), &command).await.map_err(|p| {
        if p.detail.ends_with("is already registered") {
            Problem { status: 409, title: "Conflict".into(), field: Some("email".into()), ..p }
        } else if p.status == 422 {
            Problem { field: None, ..p }
        } else {
            p
        }
    })?;
    let user: UserView = request(&gateway.nats, USERS_QUERY_GET, None, &GetUser { user_id: format!("u-{id}") }).await?;
    wait_for_customer(&gateway, &user.customer_id).await;
    Ok((StatusCode::CREATED, [(header::LOCATION, HeaderValue::from_static("/api/me"))], Json(user)).into_response())
}

/// The pool for expensive work stayed full: 503, come back in a second.
fn busy(e: jetsaga_core::cpu::Busy) -> Problem {
    Problem::unavailable(format!("the server is {e}"))
}

/// The customer function creates the user's customer from the sign-up
/// event, a moment later: the answer waits for it (a few seconds at most,
/// asking less and less often), so that an order placed right after
/// signing up finds its customer.
async fn wait_for_customer(gateway: &Gateway, customer_id: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let get = GetCustomer { customer_id: customer_id.into() };
    let mut pause = std::time::Duration::from_millis(25);
    while tokio::time::Instant::now() < deadline {
        if request::<_, Value>(&gateway.nats, CUSTOMERS_QUERY_GET, None, &get).await.is_ok() {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(1));
    }
}

fn hash(password: &str) -> String {
    use argon2::PasswordHasher;
    let salt = argon2::password_hash::SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("Argon2id hashes any password")
        .to_string()
}

/// `POST /api/session` body.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogInRequest {
    /// Email address.
    pub email: String,
    /// Password.
    #[schemars(length(min = 1, max = MAX_PASSWORD_CHARS))]
    pub password: String,
}

/// A session, as `POST /api/session` answers it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SessionView {
    /// Who.
    pub user: UserView,
    /// The token, for `Authorization: Bearer` (browsers use the cookie).
    pub token: String,
    /// When it stops working.
    pub expires_at: chrono::DateTime<Utc>,
}

/// The caller's address, when the server knows it (`ConnectInfo`);
/// loopback otherwise (then every caller shares one set of limits).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
        Ok(Self(ip))
    }
}

async fn log_in(
    State(gateway): Shared,
    ClientAddr(client): ClientAddr,
    Body(body): Body<LogInRequest>,
) -> Result<Response, Problem> {
    let client = limits::client_key(client);
    gateway.limits.take(&limits::LOGINS_PER_CLIENT, &client).await?;
    // Failures are counted in advance, before the password is checked, so
    // that parallel attempts cannot all pass the check before any failure is
    // recorded; a success (or an answer that is no failure) gives them back.
    let account = format!("{}\n{client}", body.email.trim().to_lowercase());
    gateway.limits.take(&limits::FAILURES_PER_CLIENT, &client).await?;
    if let Err(refused) = gateway.limits.take(&limits::FAILURES_PER_ACCOUNT_AND_CLIENT, &account).await {
        gateway.limits.give_back(&limits::FAILURES_PER_CLIENT, &client).await;
        return Err(refused);
    }
    let check = Authenticate { email: body.email, password: body.password };
    let outcome: Result<UserView, Problem> = request(&gateway.nats, USERS_QUERY_AUTHENTICATE, None, &check).await;
    match &outcome {
        Err(p) if p.status == 401 => {} // a failure, counted
        Ok(_) => {
            gateway.limits.clear(&limits::FAILURES_PER_ACCOUNT_AND_CLIENT, &account).await;
            gateway.limits.give_back(&limits::FAILURES_PER_CLIENT, &client).await;
        }
        Err(_) => {
            gateway.limits.give_back(&limits::FAILURES_PER_ACCOUNT_AND_CLIENT, &account).await;
            gateway.limits.give_back(&limits::FAILURES_PER_CLIENT, &client).await;
        }
    }
    let user = outcome?;
    let (token, expires_at) = auth::issue(&gateway.keys, &user.user_id, Utc::now());
    let cookie = auth::session_cookie(&token, gateway.secure_cookies);
    let mut headers = HeaderMap::new();
    headers.insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("cookies are ASCII"));
    Ok((headers, Json(SessionView { user, token, expires_at })).into_response())
}

async fn log_out(State(gateway): Shared, session: Session) -> Result<Response, Problem> {
    let command = LogOut { user_id: session.user.user_id.clone() };
    let _: Value = request(&gateway.nats, USERS_CMD_LOG_OUT, None, &command).await?;
    // Its live views here end now; those on other instances at their next session check.
    gateway.live.end_views_of(&session.user.user_id);
    let cookie = auth::cleared_cookie(gateway.secure_cookies);
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("ASCII"))]).into_response())
}

async fn me(session: Session) -> Json<UserView> {
    Json(session.user)
}

async fn products(State(gateway): Shared) -> Result<Json<ProductList>, Problem> {
    Ok(Json(request(&gateway.nats, INVENTORY_QUERY_PRODUCTS, None, &ListProducts {}).await?))
}

/// `POST /api/orders` body: the customer is the caller's, never the body's.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrderRequest {
    /// Lines: product and quantity.
    #[schemars(length(min = 1, max = jetsaga_events::limits::MAX_ITEMS))]
    pub items: Vec<OrderItem>,
}

/// `GET /api/orders` query parameters.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
    /// At most this many (1 to 100; 20 if absent).
    #[schemars(range(min = 1, max = jetsaga_events::limits::MAX_PAGE))]
    pub limit: Option<u32>,
    /// The page after this cursor (the previous page's `next`).
    pub after: Option<String>,
}

async fn list_orders(
    State(gateway): Shared,
    session: Session,
    Params(params): Params<ListParams>,
) -> Result<Json<OrderPage>, Problem> {
    // The caller's own orders; everyone's are the admin's saga list.
    let list = ListOrders {
        customer_id: Some(session.user.customer_id),
        status: params.status,
        limit: params.limit,
        after: params.after,
        ..ListOrders::default()
    };
    Ok(Json(request(&gateway.nats, ORDERS_QUERY_LIST, None, &list).await?))
}

/// `GET /api/sagas` query parameters (admins).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SagaParams {
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
    /// Only this customer's orders.
    pub customer_id: Option<String>,
    /// At most this many (1 to 100; 20 if absent).
    #[schemars(range(min = 1, max = jetsaga_events::limits::MAX_PAGE))]
    pub limit: Option<u32>,
    /// The page after this cursor (the previous page's `next`).
    pub after: Option<String>,
    /// Only orders created at or after this moment (RFC 3339).
    pub created_from: Option<chrono::DateTime<Utc>>,
    /// Only orders created before this moment (RFC 3339).
    pub created_until: Option<chrono::DateTime<Utc>>,
    /// Only orders past their deadline that have not ended (stuck).
    pub past_due: Option<bool>,
}

async fn list_sagas(
    State(gateway): Shared,
    session: Session,
    Params(params): Params<SagaParams>,
) -> Result<Json<OrderPage>, Problem> {
    session.require_admin()?;
    let list = ListOrders {
        customer_id: params.customer_id,
        status: params.status,
        limit: params.limit,
        after: params.after,
        created_from: params.created_from,
        created_until: params.created_until,
        past_due: params.past_due,
    };
    Ok(Json(request(&gateway.nats, ORDERS_QUERY_LIST, None, &list).await?))
}

async fn list_customers(State(gateway): Shared, session: Session) -> Result<Json<CustomerList>, Problem> {
    session.require_admin()?;
    Ok(Json(request(&gateway.nats, CUSTOMERS_QUERY_LIST, None, &ListCustomers {}).await?))
}

async fn get_customer(
    State(gateway): Shared,
    session: Session,
    Path(id): Path<String>,
) -> Result<Json<CustomerView>, Problem> {
    session.require_admin()?;
    check_id("id", &id)?;
    Ok(Json(request(&gateway.nats, CUSTOMERS_QUERY_GET, None, &GetCustomer { customer_id: id }).await?))
}

async fn create_customer(
    State(gateway): Shared,
    session: Session,
    Body(body): Body<CreateCustomer>,
) -> Result<Response, Problem> {
    session.require_admin()?;
    let _: Value = request(&gateway.nats, CUSTOMERS_CMD_CREATE, None, &body).await?;
    let customer: CustomerView =
        request(&gateway.nats, CUSTOMERS_QUERY_GET, None, &GetCustomer { customer_id: body.customer_id.clone() })
            .await?;
    let location = HeaderValue::from_str(&format!("/api/customers/{}", body.customer_id))
        .map_err(|_| Problem::bad_request("customer_id is not a valid path segment").field("customer_id"))?;
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(customer)).into_response())
}

/// An id from a path: 1 to 128 characters, no control characters (what
/// every id of the saga is).
fn check_id(field: &str, id: &str) -> Result<(), Problem> {
    let chars = id.chars().count();
    if id.trim().is_empty() || chars > jetsaga_events::limits::MAX_ID_CHARS || id.chars().any(char::is_control) {
        return Err(Problem::bad_request(format!(
            "{field} must be 1 to {} characters without control characters",
            jetsaga_events::limits::MAX_ID_CHARS
        ))
        .field(field));
    }
    Ok(())
}

/// `PUT /api/products/{id}` body.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductRequest {
    /// Display name.
    #[schemars(length(min = 1, max = jetsaga_events::limits::MAX_NAME_CHARS), regex(pattern = jetsaga_events::limits::REQUIRED_TEXT_PATTERN))]
    pub name: String,
    /// Unit price in cents.
    #[serde(deserialize_with = "jetsaga_events::whole::deserialize")]
    #[schemars(range(max = jetsaga_events::limits::MAX_PRICE_CENTS))]
    pub price_cents: u64,
    /// Units available to reserve.
    #[serde(deserialize_with = "jetsaga_events::whole::deserialize")]
    pub stock: u32,
}

async fn put_product(
    State(gateway): Shared,
    session: Session,
    Path(id): Path<String>,
    Body(body): Body<ProductRequest>,
) -> Result<Json<ProductView>, Problem> {
    session.require_admin()?;
    let upsert =
        UpsertProduct { product_id: id.clone(), name: body.name, price_cents: body.price_cents, stock: body.stock };
    let _: Value = request(&gateway.nats, INVENTORY_CMD_UPSERT_PRODUCT, None, &upsert).await?;
    let list: ProductList = request(&gateway.nats, INVENTORY_QUERY_PRODUCTS, None, &ListProducts {}).await?;
    list.products
        .into_iter()
        .find(|p| p.product_id == id)
        .map(Json)
        .ok_or_else(|| Problem::unavailable("the product was saved but is not listed yet"))
}

/// The answer to a create or a cancel.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Accepted {
    /// The order.
    pub order_id: String,
    /// Where to follow it.
    pub href: String,
}

/// The order id an `Idempotency-Key` stands for: per customer, so two
/// customers' keys never meet.
fn order_id_for(customer_id: &str, key: &str) -> String {
    format!("o-{}", jetsaga_core::ids::digest(&format!("{customer_id}\n{key}")))
}

async fn create_order(
    State(gateway): Shared,
    session: Session,
    headers: HeaderMap,
    Body(body): Body<CreateOrderRequest>,
) -> Result<Response, Problem> {
    let key = match headers.get("Idempotency-Key") {
        None => None,
        Some(value) => {
            let key = value
                .to_str()
                .map_err(|_| Problem::bad_request("Idempotency-Key must be visible ASCII").field("Idempotency-Key"))?;
            if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
                return Err(Problem::bad_request(format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"
                ))
                .field("Idempotency-Key"));
            }
            Some(key.to_string())
        }
    };
    let order_id = key.as_deref().map(|k| order_id_for(&session.user.customer_id, k));
    let create =
        CreateOrder { order_id: order_id.clone(), customer_id: session.user.customer_id.clone(), items: body.items };
    // The key is also the command's identity: a retry gets the first answer,
    // the same key with other items a 409.
    let nats_headers = order_id.as_ref().map(|id| {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", id.as_str());
        h
    });
    let answer: Value = request(&gateway.nats, ORDERS_CMD_CREATE, nats_headers, &create).await?;
    let order_id = answer["saga_key"].as_str().map(str::to_string).or(order_id).unwrap_or_default();
    accepted(order_id)
}

fn accepted(order_id: String) -> Result<Response, Problem> {
    let href = format!("/api/orders/{order_id}");
    let location =
        HeaderValue::from_str(&href).map_err(|_| Problem::bad_request("the order id is not a valid path"))?;
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(Accepted { order_id, href })).into_response())
}

/// The order, if the caller may see it; anyone else gets the same 404 as
/// for an order that does not exist.
pub(crate) async fn visible_order(gateway: &Gateway, session: &Session, order_id: &str) -> Result<OrderView, Problem> {
    check_id("id", order_id)?;
    let not_found = || Problem::not_found(format!("no order {order_id}"));
    let order: OrderView = request(&gateway.nats, ORDERS_QUERY_GET, None, &GetOrder { order_id: order_id.into() })
        .await
        .map_err(|p| if p.status == 404 { not_found() } else { p })?;
    if order.customer_id != session.user.customer_id && !session.is_admin() {
        return Err(not_found());
    }
    Ok(order)
}

async fn get_order(
    State(gateway): Shared,
    session: Session,
    Path(id): Path<String>,
) -> Result<Json<OrderView>, Problem> {
    Ok(Json(visible_order(&gateway, &session, &id).await?))
}

/// `POST /api/orders/{id}/cancel` body (optional).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Why (shown in the timeline).
    #[serde(default)]
    #[schemars(length(max = jetsaga_events::limits::MAX_REASON_CHARS), regex(pattern = jetsaga_events::limits::OPTIONAL_TEXT_PATTERN))]
    pub reason: Option<String>,
}

async fn cancel_order(
    State(gateway): Shared,
    session: Session,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    // The body is optional: none, or `{"reason": "..."}`.
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<CancelRequest>(&body)
            .map_err(|e| Problem::bad_request(format!("the body: {e}")))?
            .reason
    };
    visible_order(&gateway, &session, &id).await?;
    let _: Value =
        request(&gateway.nats, ORDERS_CMD_CANCEL, None, &CancelOrder { order_id: id.clone(), reason }).await?;
    accepted(id)
}

async fn status(State(gateway): Shared, session: Session) -> Result<Json<StatusReport>, Problem> {
    session.require_admin()?;
    Ok(Json(request(&gateway.nats, ops::STATUS_SUBJECT, None, &json!({})).await?))
}

async fn dead_letters(State(gateway): Shared, session: Session) -> Result<Json<DeadLetterList>, Problem> {
    session.require_admin()?;
    Ok(Json(request(&gateway.nats, ops::DLQ_LIST_SUBJECT, None, &json!({})).await?))
}

/// A dead letter's sequence from the path: a whole number from 1.
fn dead_letter_sequence(sequence: &str) -> Result<u64, Problem> {
    sequence.parse::<u64>().ok().filter(|s| *s > 0).ok_or_else(|| {
        Problem::bad_request(format!(
            "seq: {:?} is not a dead letter's sequence (a whole number from 1, as `GET /api/dlq` lists)",
            sequence.chars().take(40).collect::<String>()
        ))
        .field("seq")
    })
}

async fn redrive(
    State(gateway): Shared,
    session: Session,
    Path(sequence): Path<String>,
) -> Result<Json<Redriven>, Problem> {
    session.require_admin()?;
    let sequence = dead_letter_sequence(&sequence)?;
    Ok(Json(request(&gateway.nats, ops::DLQ_REDRIVE_SUBJECT, None, &RedriveRequest { sequence }).await?))
}

async fn delete_dead_letter(
    State(gateway): Shared,
    session: Session,
    Path(sequence): Path<String>,
) -> Result<Json<Deleted>, Problem> {
    session.require_admin()?;
    let sequence = dead_letter_sequence(&sequence)?;
    Ok(Json(request(&gateway.nats, ops::DLQ_DELETE_SUBJECT, None, &DeleteRequest { sequence }).await?))
}
