//! RFC 9457 problem documents: every error the API answers.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error as `application/problem+json`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank` when the status says it all).
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, for a person.
    pub detail: String,
    /// The field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds to wait before trying again (429, 503).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl Problem {
    /// A problem with this status and detail.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            retry_after: None,
        }
    }

    /// Names the field at fault.
    pub fn field(mut self, field: &str) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Asks the client to wait this many seconds.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 400.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 401: no valid session.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    /// 503 with a hint to come back.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail).retry_after(1)
    }

    /// The problem a NATS service error code stands for.
    pub fn from_service(code: u16, message: String) -> Self {
        let status = match code {
            400 => StatusCode::BAD_REQUEST,
            401 => StatusCode::UNAUTHORIZED,
            403 => StatusCode::FORBIDDEN,
            404 => StatusCode::NOT_FOUND,
            409 => StatusCode::CONFLICT,
            422 => StatusCode::UNPROCESSABLE_ENTITY,
            429 => StatusCode::TOO_MANY_REQUESTS,
            503 | 504 => return Self::unavailable(message),
            _ => {
                // A function's own failure (a store error, a path, a
                // database message) is for the operator's log, never a client.
                tracing::warn!(code, error = %message, "a function failed a request");
                return Self::new(StatusCode::BAD_GATEWAY, "the saga failed this request; the gateway's log says why");
            }
        };
        let problem = Self::new(status, message);
        if status == StatusCode::TOO_MANY_REQUESTS {
            // The function says when, where it knows ("... try again in 12 s").
            let said = problem.detail.rsplit_once("try again in ").and_then(|(_, rest)| rest.strip_suffix(" s"));
            let seconds = said.and_then(|s| s.parse().ok()).unwrap_or(5);
            problem.retry_after(seconds)
        } else {
            problem
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(&self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_functions_internal_error_text_never_reaches_the_client() {
        let problem =
            Problem::from_service(500, "error returned from database: disk I/O error at /srv/users.db".into());
        assert_eq!(problem.status, 502);
        assert!(!problem.detail.contains("/srv") && !problem.detail.contains("database"), "{}", problem.detail);
        assert_eq!(
            Problem::from_service(422, "quantity must be at least 1".into()).detail,
            "quantity must be at least 1"
        );
    }
}
