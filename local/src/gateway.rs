//! `jetsaga gateway`, and the gateway `jetsaga up` starts: the HTTP API
//! (`jetsaga-http`) served on a port, with its token signing key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jetsaga_http::{Gateway, Keys};
use tokio::net::TcpListener;
use tracing::{info, warn};

/// The environment variable holding the token signing secret (32 bytes or more).
pub const SECRET_VAR: &str = "JETSAGA_JWT_SECRET";

/// Where the HTTP API listens and how it signs sessions.
#[derive(Clone, Debug, clap::Args)]
pub struct HttpArgs {
    /// Port of the HTTP API; a free one is chosen if it is taken.
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// Address the HTTP API listens on (0.0.0.0 to serve other machines).
    #[arg(long, default_value = "127.0.0.1")]
    pub http_host: std::net::IpAddr,
    /// File holding the session token signing secret [default: $JETSAGA_JWT_SECRET,
    /// else <data-dir>/jwt.key, created on first run].
    #[arg(long)]
    pub jwt_secret_file: Option<PathBuf>,
    /// Mark the session cookie `Secure` (set when a TLS proxy serves the API).
    #[arg(long)]
    pub secure_cookies: bool,
    /// An origin whose pages may call the API from a browser, e.g.
    /// https://shop.example.com (repeat for several); none by default.
    #[arg(long = "cors-origin", value_name = "ORIGIN", value_parser = parse_origin)]
    pub cors_origins: Vec<axum::http::HeaderValue>,
    /// Requests one client address may make per second (after a burst of
    /// twice as many); past it, 429 before anything is looked up. 0: no
    /// pace (a load generator, or a proxy in front that paces clients).
    #[arg(long, value_name = "N", default_value_t = jetsaga_http::limits::PACE_PER_SECOND)]
    pub client_requests_per_second: u32,
    /// A reverse proxy or ingress in front of the gateway, by address or
    /// network (10.0.0.0/8; repeat for several): its X-Forwarded-For then
    /// names the client that the per-address limits count. Without one,
    /// every client behind a proxy shares the proxy's limits. Nobody else's
    /// X-Forwarded-For is believed.
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = jetsaga_http::forwarded::parse_proxy)]
    pub trusted_proxies: Vec<jetsaga_http::forwarded::IpNet>,
}

fn parse_origin(text: &str) -> Result<axum::http::HeaderValue, String> {
    let ok = (text.starts_with("http://") || text.starts_with("https://")) && !text.ends_with('/');
    match axum::http::HeaderValue::from_str(text) {
        Ok(value) if ok => Ok(value),
        _ => Err(format!("{text:?} is not an origin: expected scheme://host[:port], e.g. https://shop.example.com")),
    }
}

/// The signing key: `$JETSAGA_JWT_SECRET`, else the file named, else
/// `<data_dir>/jwt.key` (64 random hex characters, made on first run,
/// readable by its owner only).
pub fn keys(args: &HttpArgs, data_dir: &Path) -> anyhow::Result<Keys> {
    if let Ok(secret) = std::env::var(SECRET_VAR) {
        return Keys::from_secret(secret.trim().as_bytes()).map_err(|e| anyhow::anyhow!("{SECRET_VAR}: {e}"));
    }
    let path = match &args.jwt_secret_file {
        Some(path) => path.clone(),
        None => {
            let path = data_dir.join("jwt.key");
            if !path.exists() {
                std::fs::create_dir_all(data_dir)?;
                write_private(&path, &random_secret())?;
                info!(path = %path.display(), "created a session signing key");
            }
            path
        }
    };
    let secret = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("cannot read the session signing key {}: {e}", path.display()))?;
    Keys::from_secret(secret.trim().as_bytes()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// 64 random hex characters (256 bits from the system's generator, by way
/// of two v4 UUIDs' random bits: 244 of them).
pub(crate) fn random_secret() -> String {
    (0..2).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect::<Vec<_>>().concat()
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(contents.as_bytes())
}

/// Binds the API's port: the one asked for, or a free one if it is taken.
pub async fn bind(args: &HttpArgs) -> anyhow::Result<TcpListener> {
    match TcpListener::bind((args.http_host, args.http_port)).await {
        Ok(listener) => Ok(listener),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            warn!(port = args.http_port, "the HTTP port is taken; using a free one");
            Ok(TcpListener::bind((args.http_host, 0)).await?)
        }
        Err(e) => Err(anyhow::anyhow!("cannot listen on {}:{}: {e}", args.http_host, args.http_port)),
    }
}

/// Serves the API on `listener` until the process ends; returns its URL.
/// Serves the HTTP API on `listener`; returns its base URL and what its
/// `GET /metrics` shows (for `--metrics-addr`).
pub fn serve(
    listener: TcpListener,
    nats: async_nats::Client,
    keys: Keys,
    args: &HttpArgs,
) -> anyhow::Result<(String, metrics_exporter_prometheus::PrometheusHandle)> {
    let address = listener.local_addr()?;
    let pace = args.client_requests_per_second;
    let gateway = Arc::new(Gateway {
        secure_cookies: args.secure_cookies,
        cors_origins: args.cors_origins.clone(),
        trusted_proxies: args.trusted_proxies.clone(),
        pace: jetsaga_http::limits::Pace::new(pace, pace.saturating_mul(2)),
        ..Gateway::new(nats, keys)
    });
    let metrics = gateway.metrics.handle();
    jetsaga_http::start_upkeep(&gateway);
    let app = jetsaga_http::router(gateway).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "the HTTP API stopped");
        }
    });
    Ok((format!("http://{address}"), metrics))
}
