//! The closed set of HTTP error kinds, mapped to status codes in one `match`. Every error body is
//! `{statusCode, error, message, field?}`; 5xx bodies say nothing about the cause: it travels in
//! the response's extensions as an [`ErrorCause`], and the request middleware (`http::track`)
//! logs it once, with the route and method.

use crate::store::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// Every error a handler can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the input is malformed; `field` names the offending field.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// 413: the body is larger than the limit (2 MB).
    #[error("payload too large")]
    TooLarge,
    /// 401: no token, a bad or expired token, or wrong credentials.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// 403: not allowed: the role may not do this, or a media URL's signature is wrong or expired.
    #[error("forbidden")]
    Forbidden(&'static str),
    /// 404: `what` does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 429: too many attempts; try again after `retry_after`.
    #[error("too many requests")]
    TooMany { retry_after: std::time::Duration },
    /// 409: the change conflicts with existing state.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// 503: a dependency is unavailable; `cause` is logged, never returned.
    #[error("service unavailable: {message}")]
    Unavailable {
        message: &'static str,
        cause: String,
    },
    /// 500: a bug or an infrastructure failure; details are logged, never returned.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A store error for a request about `what`.
    pub fn from_store(what: &'static str, e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound(what),
            StoreError::Conflict(m) => Self::Conflict(m),
            StoreError::Unavailable(e) => Self::Unavailable {
                message: "the database is unavailable; retry later",
                cause: e.to_string(),
            },
            StoreError::Db(e) => Self::Internal(e.to_string()),
        }
    }
}

/// Why a request failed with a 5xx, for the log only.
#[derive(Clone, Debug)]
pub struct ErrorCause(pub String);

/// The body of every error answer (the OpenAPI document's `ErrorBody`).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// The HTTP status code, repeated.
    status_code: u16,
    /// The status code's reason phrase, e.g. `Bad Request`.
    error: &'static str,
    /// What went wrong, for a person; a 5xx says nothing about the cause.
    message: String,
    /// The offending field of a 400 (`body` for the whole body).
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut cause = None;
        let mut retry_after = None;
        let (status, message, field) = match self {
            ApiError::Invalid { field, message } => (
                StatusCode::BAD_REQUEST,
                format!("{field}: {message}"),
                Some(field),
            ),
            ApiError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body: larger than the 2 MB limit".to_owned(),
                Some("body".to_owned()),
            ),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m.to_owned(), None),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m.to_owned(), None),
            ApiError::NotFound(what) => (StatusCode::NOT_FOUND, format!("{what} not found"), None),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m.to_owned(), None),
            ApiError::TooMany { retry_after: wait } => {
                retry_after = Some(wait.as_secs().max(1));
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "too many failed attempts; retry in {} s",
                        wait.as_secs().max(1)
                    ),
                    None,
                )
            }
            ApiError::Unavailable { message, cause: c } => {
                cause = Some(c);
                (StatusCode::SERVICE_UNAVAILABLE, message.to_owned(), None)
            }
            ApiError::Internal(detail) => {
                cause = Some(detail);
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_owned(),
                    None,
                )
            }
        };
        let body = ErrorBody {
            status_code: status.as_u16(),
            error: status.canonical_reason().unwrap_or("Error"),
            message,
            field,
        };
        let mut resp = (status, Json(body)).into_response();
        if let Some(cause) = cause {
            resp.extensions_mut().insert(ErrorCause(cause));
        }
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

/// The answer of routes that do not exist.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_reveal_nothing() {
        let resp =
            ApiError::Internal("password authentication failed for user x".into()).into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(!text.contains("password"), "{text}");
        assert!(text.contains("\"statusCode\":500"));
    }

    #[tokio::test]
    async fn invalid_names_the_field() {
        let resp = ApiError::invalid("cameraId", "must be a UUID").into_response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["field"], "cameraId");
        assert_eq!(v["error"], "Bad Request");
    }
}
