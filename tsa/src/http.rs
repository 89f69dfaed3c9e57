//! The HTTP API of the timestamp authority, the one Sigstore's timestamp-authority serves:
//!
//! - `POST /api/v1/timestamp` with a DER `TimeStampReq` (`Content-Type: application/timestamp-query`, at most
//!   [`MAX_REQUEST_BYTES`]) answers 200 with the DER `TimeStampResp` (`application/timestamp-reply`). A request
//!   we refuse answers 400 with the rejection `TimeStampResp`, so RFC 3161 clients see its `failInfo`; its
//!   `statusString` says what to change. A wrong content type is 415, a larger body 413, both with a text
//!   message. The JSON form of the request (`application/json`, as Sigstore's timestamp-authority takes
//!   it and sigstore-js sends it) gets the same DER reply; refused, it is 400 with a JSON message.
//! - `GET /api/v1/timestamp/certchain` answers the chain as PEM, the leaf first, then the root
//!   (`application/pem-certificate-chain`).

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use tower_http::trace::TraceLayer;

use crate::authority::Authority;
use crate::error::TsaError;

/// Where timestamp requests are posted.
pub const TIMESTAMP_PATH: &str = "/api/v1/timestamp";

/// Where the certificate chain is served.
pub const CERTCHAIN_PATH: &str = "/api/v1/timestamp/certchain";

/// The largest request body accepted: 64 KiB (a `TimeStampReq` is under 100 bytes).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The media type of a DER `TimeStampReq` (RFC 3161 §3.4).
pub const TIMESTAMP_QUERY: &str = "application/timestamp-query";

/// The media type of a DER `TimeStampResp` (RFC 3161 §3.4).
pub const TIMESTAMP_REPLY: &str = "application/timestamp-reply";

/// The media type of the JSON form of a request (Sigstore's timestamp-authority; sigstore-js).
const JSON: &str = "application/json";

/// The media type of a PEM certificate chain (RFC 8555 §9.1).
pub const PEM_CERTIFICATE_CHAIN: &str = "application/pem-certificate-chain";

/// The routes of the timestamp authority, to be merged into a server's router.
pub fn router(authority: Arc<Authority>) -> Router {
    Router::new()
        .route(TIMESTAMP_PATH, post(timestamp))
        .route(CERTCHAIN_PATH, get(certchain))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(authority)
}

async fn timestamp(
    State(authority): State<Arc<Authority>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let json = match media_type(&headers).as_deref() {
        Some(TIMESTAMP_QUERY) => false,
        Some(JSON) => true,
        _ => {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "send the TimeStampReq with Content-Type: {TIMESTAMP_QUERY} \
                     (or its JSON form with Content-Type: {JSON})"
                ),
            )
                .into_response();
        }
    };
    let body = match body {
        Ok(body) => body,
        Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than {MAX_REQUEST_BYTES} bytes: \
                     send a DER TimeStampReq, which holds a digest, not the data"
                ),
            )
                .into_response();
        }
        Err(other) => return other.into_response(),
    };
    let der = if json {
        match crate::json::to_der(&body) {
            Ok(der) => der,
            Err(message) => return json_error(&message),
        }
    } else {
        body.to_vec()
    };
    match authority.timestamp(&der, SystemTime::now()) {
        Ok(reply) => ([(header::CONTENT_TYPE, TIMESTAMP_REPLY)], reply).into_response(),
        // A JSON client reads what to fix from a JSON error, as the reference server answers it.
        Err(TsaError::Rejected(rejection)) if json => json_error(rejection.message()),
        Err(error) => error.into_response(),
    }
}

/// A refused JSON request: 400 with `{"code": 400, "message": ...}`.
fn json_error(message: &str) -> Response {
    let body = serde_json::json!({ "code": 400, "message": message });
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, JSON)],
        body.to_string(),
    )
        .into_response()
}

async fn certchain(State(authority): State<Arc<Authority>>) -> Response {
    (
        [(header::CONTENT_TYPE, PEM_CERTIFICATE_CHAIN)],
        authority.chain_pem().to_owned(),
    )
        .into_response()
}

/// The request's media type, without parameters, lower-cased.
fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|media_type| media_type.trim().to_ascii_lowercase())
}

/// The one mapping of the crate's errors to HTTP: a refused request is 400 with the rejection
/// `TimeStampResp`; anything else is ours, logged, and 500 without details.
impl IntoResponse for TsaError {
    fn into_response(self) -> Response {
        match self {
            TsaError::Rejected(rejection) => {
                tracing::debug!(
                    failure = rejection.failure().name(),
                    message = rejection.message(),
                    "timestamp request rejected"
                );
                let reply = rejection.reply_der().to_vec();
                (
                    StatusCode::BAD_REQUEST,
                    [(header::CONTENT_TYPE, TIMESTAMP_REPLY)],
                    reply,
                )
                    .into_response()
            }
            other => {
                tracing::error!(error = %other, "timestamp authority failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the timestamp authority failed; see its log",
                )
                    .into_response()
            }
        }
    }
}
