//! HTTP errors: one type, mapped to a status and a short text body in one place.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// What a request can fail with.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ApiError {
    /// The path or a parameter is malformed: the caller must fix it.
    #[error("{0}")]
    BadRequest(String),
    /// Nothing is there (unknown shard, unpublished size, missing object).
    #[error("{0}")]
    NotFound(String),
    /// Object storage failed; retry later. Details go to the log, not the response.
    #[error("storage unavailable")]
    Unavailable,
}

/// A configuration the read path cannot serve (such as a verifier key that does not parse).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status(), format!("{self}\n")).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if matches!(self, ApiError::Unavailable) {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}
