//! Cross-site request refusal: a state-changing request must come from the
//! gateway's own pages (or a configured CORS origin), and can never be a
//! plain HTML form post.
//!
//! The session cookie is `SameSite=Lax`, which stops a form on another
//! *site*, but not one on a sibling subdomain or another port of the same
//! host (those are the same site). So every request that is not `GET`,
//! `HEAD` or `OPTIONS`:
//!
//! - with an `Origin` header (browsers send one on every such request)
//!   must name this gateway's own host (the `Host` it was asked as) or an
//!   origin of `--cors-origin`, else 403;
//! - with `Sec-Fetch-Site: cross-site` or `same-site` and no `Origin` is
//!   refused the same way (403);
//! - with a body must send it as `application/json` (415): an HTML form
//!   can only send `application/x-www-form-urlencoded`, `multipart/form-data`
//!   or `text/plain`, so no form reaches a state-changing endpoint, even
//!   one whose body is optional.
//!
//! API clients that are not browsers (curl, SDKs with a Bearer token) send
//! neither header and are not affected.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Gateway;
use crate::problem::Problem;

/// The middleware (see the module docs).
pub(crate) async fn guard(State(gateway): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    if let Err(problem) = check(request.headers(), &gateway.cors_origins) {
        return problem.into_response();
    }
    next.run(request).await
}

/// Whether a state-changing request with these headers may go on.
pub fn check(headers: &HeaderMap, cors_origins: &[axum::http::HeaderValue]) -> Result<(), Problem> {
    let cross_site = || {
        Problem::forbidden(
            "cross-site request refused: state-changing requests must come from the gateway's own pages \
             (or an origin allowed with --cors-origin)",
        )
    };
    match headers.get(header::ORIGIN) {
        Some(origin) => {
            if !cors_origins.contains(origin) && !same_host(origin.to_str().unwrap_or(""), headers) {
                return Err(cross_site());
            }
        }
        None => {
            let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).unwrap_or("");
            if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
                return Err(cross_site());
            }
        }
    }
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let essence = content_type.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let json = essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"));
        if !json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON with Content-Type: application/json (or no body and no Content-Type)",
            ));
        }
    }
    Ok(())
}

/// Whether `origin` (`scheme://host[:port]`) names the host the request was
/// sent to. `null` (a sandboxed or opaque origin) never does.
fn same_host(origin: &str, headers: &HeaderMap) -> bool {
    let Some(authority) = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    !host.is_empty() && authority.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn own_pages_and_api_clients_pass_other_sites_and_forms_do_not() {
        let own = headers(&[("host", "shop.example:8080"), ("origin", "http://shop.example:8080")]);
        assert!(check(&own, &[]).is_ok());
        let no_browser = headers(&[("host", "shop.example"), ("content-type", "application/json")]);
        assert!(check(&no_browser, &[]).is_ok());
        let sibling = headers(&[("host", "shop.example:8080"), ("origin", "http://shop.example:9090")]);
        assert_eq!(check(&sibling, &[]).unwrap_err().status, 403);
        let evil = headers(&[("host", "shop.example"), ("origin", "https://evil.example")]);
        assert_eq!(check(&evil, &[]).unwrap_err().status, 403);
        assert!(check(&evil, &[HeaderValue::from_static("https://evil.example")]).is_ok(), "configured CORS origin");
        let opaque = headers(&[("host", "shop.example"), ("origin", "null")]);
        assert_eq!(check(&opaque, &[]).unwrap_err().status, 403);
        let fetch_metadata = headers(&[("host", "shop.example"), ("sec-fetch-site", "same-site")]);
        assert_eq!(check(&fetch_metadata, &[]).unwrap_err().status, 403);
        let form = headers(&[
            ("host", "shop.example"),
            ("origin", "http://shop.example"),
            ("content-type", "application/x-www-form-urlencoded"),
        ]);
        assert_eq!(check(&form, &[]).unwrap_err().status, 415);
        let text = headers(&[("host", "shop.example"), ("content-type", "text/plain;charset=UTF-8")]);
        assert_eq!(check(&text, &[]).unwrap_err().status, 415);
        let problem_json = headers(&[("host", "shop.example"), ("content-type", "application/merge-patch+json")]);
        assert!(check(&problem_json, &[]).is_ok());
    }
}
