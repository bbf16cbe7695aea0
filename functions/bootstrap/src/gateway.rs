//! The HTTP gateway as a Lambda behind a Function URL: the same router as
//! `jetsaga gateway`, fed by `lambda_http` with streamed responses (so the
//! live order events, server-sent events, work through the Function URL's
//! `RESPONSE_STREAM` mode). It reaches the saga over NATS, as the
//! `gateway` user.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::ConnectInfo;
use lambda_http::request::RequestContext;
use lambda_http::{RequestExt, tower::ServiceBuilder};

/// `JETSAGA_FUNCTION=gateway` runs the HTTP gateway instead of a saga function.
pub use jetsaga_lambda::GATEWAY_FUNCTION as GATEWAY;

/// What the gateway Lambda reads from its environment.
#[derive(Clone, PartialEq, Eq)]
pub struct GatewaySettings {
    /// `NATS_URL`: the saga's NATS servers (comma-separated).
    pub nats_url: String,
    /// `NATS_USER`: the gateway's NATS user (`gateway` by default).
    pub nats_user: String,
    /// `NATS_PASSWORD`: its password (none: an unauthenticated server).
    pub nats_password: Option<String>,
    /// `JETSAGA_JWT_SECRET`: the session token signing secret (32 bytes or more).
    pub jwt_secret: String,
    /// `JETSAGA_SECURE_COOKIES`: `true` (the default; a Function URL is HTTPS) or `false`.
    pub secure_cookies: bool,
}

impl std::fmt::Debug for GatewaySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password nor the signing secret.
        f.debug_struct("GatewaySettings")
            .field("nats_url", &self.nats_url)
            .field("nats_user", &self.nats_user)
            .field("secure_cookies", &self.secure_cookies)
            .finish_non_exhaustive()
    }
}

/// Reads the settings; an error names the variable and what it accepts.
pub fn gateway_settings_from(var: impl Fn(&str) -> Option<String>) -> Result<GatewaySettings, String> {
    let nats_url = var("NATS_URL").ok_or("NATS_URL is not set: it names the saga's NATS servers (nats://host:4222)")?;
    let jwt_secret = var("JETSAGA_JWT_SECRET")
        .ok_or("JETSAGA_JWT_SECRET is not set: it is the session token signing secret (32 bytes or more)")?;
    jetsaga_http::Keys::from_secret(jwt_secret.as_bytes()).map_err(|e| format!("JETSAGA_JWT_SECRET: {e}"))?;
    let secure_cookies = match var("JETSAGA_SECURE_COOKIES").as_deref() {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => return Err(format!("JETSAGA_SECURE_COOKIES={other:?}: expected true or false")),
    };
    Ok(GatewaySettings {
        nats_url,
        nats_user: var("NATS_USER").unwrap_or_else(|| DEFAULT_NATS_USER.into()),
        nats_password: var("NATS_PASSWORD"),
        jwt_secret,
        secure_cookies,
    })
}

/// How long a live view lasts on Lambda (see [`serve`]).
pub const LAMBDA_LIVE_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// The NATS user the generated accounts (`infra/nats`) give the gateway.
pub const DEFAULT_NATS_USER: &str = "gateway";

/// Connects to NATS and serves the router to the Lambda runtime until it stops.
pub async fn serve(settings: GatewaySettings) -> Result<(), lambda_runtime::Error> {
    let mut options = async_nats::ConnectOptions::new()
        .name("jetsaga gateway (Lambda)")
        // Its NATS user may read replies under its own inbox prefix only.
        .custom_inbox_prefix(jetsaga_jetstream::service::inbox_prefix(&settings.nats_user));
    if let Some(password) = &settings.nats_password {
        options = options.user_and_password(settings.nats_user.clone(), password.clone());
    }
    let servers: Vec<String> = settings.nats_url.split(',').map(|s| s.trim().to_string()).collect();
    // NATS_CA (or a tls:// URL): TLS required, the password never in clear.
    let tls = jetsaga_jetstream::tls::TlsSettings::from_env(|name| std::env::var(name).ok(), &servers)?;
    options = tls.apply(options);
    let nats =
        options.connect(servers).await.map_err(|e| format!("cannot connect to NATS at {}: {e}", settings.nats_url))?;
    let keys = jetsaga_http::Keys::from_secret(settings.jwt_secret.as_bytes())?;
    let mut gateway = jetsaga_http::Gateway::new(nats, keys);
    gateway.secure_cookies = settings.secure_cookies;
    // An instance serves one request at a time: a live view holds it for as
    // long as it lasts, so on Lambda a view lasts a minute (the browser's
    // EventSource reconnects with Last-Event-ID and loses nothing), and a
    // user's views are counted across every instance.
    gateway.live = jetsaga_http::live::LiveHub::new(jetsaga_http::live::LiveLimits {
        live_for: LAMBDA_LIVE_FOR,
        opened_per_user: Some(jetsaga_http::limits::LIVE_VIEWS_PER_USER),
        ..jetsaga_http::live::LiveLimits::default()
    });
    let gateway = Arc::new(gateway);
    jetsaga_http::start_upkeep(&gateway);
    let router = jetsaga_http::router(gateway);
    let service = ServiceBuilder::new().map_request(with_client_address).service(router);
    lambda_http::run_with_streaming_response(service).await
}

/// The caller's address, from the Function URL's request context, where
/// the router reads it on a server (`ConnectInfo`): the login throttle
/// counts failures per client address.
fn with_client_address(mut request: lambda_http::Request) -> lambda_http::Request {
    let source = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.http.source_ip.clone(),
        Some(RequestContext::ApiGatewayV1(context)) => context.identity.source_ip.clone(),
        _ => None,
    };
    if let Some(ip) = source.and_then(|ip| ip.parse::<IpAddr>().ok()) {
        request.extensions_mut().insert(ConnectInfo(SocketAddr::new(ip, 0)));
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    const SECRET: &str = "a signing secret of at least 32 bytes";

    #[test]
    fn defaults_to_the_gateway_user_and_secure_cookies() {
        let settings =
            gateway_settings_from(env(&[("NATS_URL", "nats://n:4222"), ("JETSAGA_JWT_SECRET", SECRET)])).unwrap();
        assert_eq!((settings.nats_user.as_str(), settings.secure_cookies), ("gateway", true));
    }

    #[test]
    fn a_missing_or_wrong_setting_names_the_variable_and_what_it_accepts() {
        let err = gateway_settings_from(env(&[("JETSAGA_JWT_SECRET", SECRET)])).unwrap_err();
        assert!(err.starts_with("NATS_URL is not set"), "{err}");
        let err = gateway_settings_from(env(&[("NATS_URL", "nats://n")])).unwrap_err();
        assert!(err.starts_with("JETSAGA_JWT_SECRET is not set"), "{err}");
        let err = gateway_settings_from(env(&[("NATS_URL", "nats://n"), ("JETSAGA_JWT_SECRET", "short")])).unwrap_err();
        assert_eq!(err, "JETSAGA_JWT_SECRET: the token signing secret must be at least 32 bytes, got 5");
        let err = gateway_settings_from(env(&[
            ("NATS_URL", "nats://n"),
            ("JETSAGA_JWT_SECRET", SECRET),
            ("JETSAGA_SECURE_COOKIES", "yes"),
        ]))
        .unwrap_err();
        assert_eq!(err, "JETSAGA_SECURE_COOKIES=\"yes\": expected true or false");
    }

    #[test]
    fn debug_output_shows_neither_the_password_nor_the_secret() {
        let settings = gateway_settings_from(env(&[
            ("NATS_URL", "nats://n"),
            ("NATS_PASSWORD", "hunter2-nats"),
            ("JETSAGA_JWT_SECRET", SECRET),
        ]))
        .unwrap();
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2") && !shown.contains(SECRET), "{shown}");
    }
}
