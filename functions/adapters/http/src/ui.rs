//! The web UI: a shop and an operations console, plain ES modules and one
//! stylesheet embedded in the binary (no build step, no CDN: it works
//! offline), served at `/` and `/ui/...`. Every page is the same document;
//! the client routes on the URL's fragment (`#/orders/o-1`), so a reload
//! or a shared link lands on the same page.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::problem::Problem;

/// Scripts, styles and requests only from this origin; nothing inline.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The embedded files: name, content type, contents.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("../ui/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_str!("../ui/api.js")),
    ("dom.js", "text/javascript; charset=utf-8", include_str!("../ui/dom.js")),
    ("saga.js", "text/javascript; charset=utf-8", include_str!("../ui/saga.js")),
    ("shop.js", "text/javascript; charset=utf-8", include_str!("../ui/shop.js")),
    ("console.js", "text/javascript; charset=utf-8", include_str!("../ui/console.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("../ui/style.css")),
    ("icon.svg", "image/svg+xml", include_str!("../ui/icon.svg")),
];

const INDEX: &str = include_str!("../ui/index.html");

pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(|| async { page("text/html; charset=utf-8", INDEX) })).route(
        "/ui/{file}",
        get(|Path(file): Path<String>| async move {
            match ASSETS.iter().find(|(name, _, _)| *name == file) {
                Some((_, content_type, body)) => page(content_type, body),
                None => Problem::not_found(format!("no UI file {:?}", file.chars().take(60).collect::<String>()))
                    .into_response(),
            }
        }),
    )
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    // Embedded in the binary: a new binary may bring new files, so revalidate.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
