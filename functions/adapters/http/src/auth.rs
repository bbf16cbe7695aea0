//! Sessions: short-lived HS256 JWTs, sent as an `HttpOnly; SameSite=Lax`
//! cookie for browsers and accepted as `Authorization: Bearer` for API
//! clients. Every authenticated request asks the users function who the
//! token's user is now, so a logout (or a role change) takes effect at once.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use jetsaga_events::subjects::USERS_QUERY_GET;
use jetsaga_events::{GetUser, Role, UserView};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::Gateway;
use crate::problem::Problem;

/// The session cookie's name.
pub const COOKIE: &str = "jetsaga_session";

/// How long a token is good for.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// The signing key (HS256), at least 32 bytes.
#[derive(Clone)]
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    /// Keys from a secret; refuses one shorter than 32 bytes.
    pub fn from_secret(secret: &[u8]) -> Result<Self, String> {
        if secret.len() < 32 {
            return Err(format!("the token signing secret must be at least 32 bytes, got {}", secret.len()));
        }
        Ok(Self { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret) })
    }
}

/// What a token says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// Issued at (seconds).
    pub iat: i64,
    /// Issued at (milliseconds): compared with the user's last logout.
    pub iat_ms: i64,
    /// Expires at (seconds).
    pub exp: i64,
}

/// Signs a token for `user_id`, valid for [`TOKEN_LIFETIME`].
pub fn issue(keys: &Keys, user_id: &str, now: DateTime<Utc>) -> (String, DateTime<Utc>) {
    let expires = now + chrono::Duration::from_std(TOKEN_LIFETIME).expect("a short lifetime");
    let claims =
        Claims { sub: user_id.into(), iat: now.timestamp(), iat_ms: now.timestamp_millis(), exp: expires.timestamp() };
    let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).expect("tokens sign");
    (token, expires)
}

/// Checks a token's signature and expiry.
pub fn verify(keys: &Keys, token: &str) -> Result<Claims, Problem> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "sub"]);
    jsonwebtoken::decode::<Claims>(token, &keys.decoding, &validation).map(|data| data.claims).map_err(|e| {
        match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                Problem::unauthorized("the session has expired: log in again")
            }
            _ => Problem::unauthorized("the session token is not valid: log in again"),
        }
    })
}

/// The `Set-Cookie` value carrying `token` (`Secure` when served over TLS).
pub fn session_cookie(token: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}{secure}", TOKEN_LIFETIME.as_secs())
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn cleared_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0{secure}")
}

/// The token a request carries: `Authorization: Bearer`, else the cookie.
fn token_of(headers: &axum::http::HeaderMap) -> Option<String> {
    if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return value.strip_prefix("Bearer ").map(|t| t.trim().to_string());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(&format!("{COOKIE}=")).map(str::to_string))
        .filter(|t| !t.is_empty())
}

/// The signed-in user of a request; a 401 problem without a valid session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who, as the users function knows them now.
    pub user: UserView,
    /// When its token was issued (milliseconds): a logout after it ends it.
    pub issued_at_ms: i64,
}

impl Session {
    /// Whether the user is an administrator.
    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }

    /// A 403 unless the user is an administrator.
    pub fn require_admin(&self) -> Result<(), Problem> {
        if self.is_admin() { Ok(()) } else { Err(Problem::forbidden("this needs an administrator")) }
    }
}

/// The claims of a request's token, checked (signature, expiry) but not
/// yet against the users function: enough to know whom to count a request
/// against before anything is looked up.
pub fn claims(gateway: &Gateway, headers: &axum::http::HeaderMap) -> Result<Claims, Problem> {
    let token =
        token_of(headers).ok_or_else(|| Problem::unauthorized("log in first (a session cookie or a Bearer token)"))?;
    verify(&gateway.keys, &token)
}

impl FromRequestParts<Arc<Gateway>> for Session {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, gateway: &Arc<Gateway>) -> Result<Self, Self::Rejection> {
        Session::of(gateway, claims(gateway, &parts.headers)?).await
    }
}

impl Session {
    /// The session `claims` stand for, as the users function knows its user now.
    pub async fn of(gateway: &Gateway, claims: Claims) -> Result<Self, Problem> {
        let user: UserView =
            crate::upstream::request(&gateway.nats, USERS_QUERY_GET, None, &GetUser { user_id: claims.sub.clone() })
                .await
                .map_err(|p| {
                    if p.status == 404 { Problem::unauthorized("the session's user no longer exists") } else { p }
                })?;
        if user.sessions_valid_from.is_some_and(|from| claims.iat_ms < from.timestamp_millis()) {
            return Err(Problem::unauthorized("the session has ended (logged out): log in again"));
        }
        Ok(Session { user, issued_at_ms: claims.iat_ms })
    }
}
