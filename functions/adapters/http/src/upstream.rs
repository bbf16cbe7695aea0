//! Requests to the saga over NATS, with their errors as problems.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::problem::Problem;

/// How long a function may take to answer before the caller gets a 503.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `body` to `subject` and decodes the answer; a function's error
/// comes back as the problem of the same status, a silence as a 503.
pub async fn request<T: Serialize, R: DeserializeOwned>(
    nats: &async_nats::Client,
    subject: &str,
    headers: Option<async_nats::HeaderMap>,
    body: &T,
) -> Result<R, Problem> {
    let payload = serde_json::to_vec(body).expect("requests serialize").into();
    let mut headers = headers.unwrap_or_default();
    if let Some(traceparent) = crate::trace::current() {
        headers.insert(jetsaga_events::TRACEPARENT_HEADER, traceparent.as_str());
    }
    let call = nats.request_with_headers(subject.to_string(), headers, payload);
    let reply = match tokio::time::timeout(UPSTREAM_TIMEOUT, call).await {
        Err(_) => return Err(Problem::unavailable(format!("{subject} did not answer within {UPSTREAM_TIMEOUT:?}"))),
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            return Err(Problem::unavailable(format!("nothing serves {subject} right now")));
        }
        Ok(Err(e)) => return Err(Problem::unavailable(format!("{subject}: {e}"))),
        Ok(Ok(reply)) => reply,
    };
    let value: Value = serde_json::from_slice(&reply.payload)
        .map_err(|e| Problem::new(axum::http::StatusCode::BAD_GATEWAY, format!("{subject} answered non-JSON: {e}")))?;
    if let Some(code) = reply.headers.as_ref().and_then(|h| h.get("Nats-Service-Error-Code")) {
        let message = value["error"].as_str().map_or_else(|| value.to_string(), str::to_string);
        return Err(Problem::from_service(code.as_str().parse().unwrap_or(500), message));
    }
    serde_json::from_value(value).map_err(|e| {
        Problem::new(axum::http::StatusCode::BAD_GATEWAY, format!("{subject} answered an unexpected shape: {e}"))
    })
}
