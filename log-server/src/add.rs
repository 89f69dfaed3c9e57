//! `POST /add`: the plain HTTP write path of opaque shards, as tlog-tiles logs commonly offer it
//! (Trillian Tessera's conformance logs, and the load tool `hammer` that drives them).
//!
//! The body is one entry (1 to [`MAX_ENTRY_SIZE`] bytes, any content). The reply is `200` with the
//! entry's index in decimal as the whole body, once the entry is sequenced (committed by a majority
//! of the shard's replicas; a checkpoint covering it follows within the publishing interval). A body
//! logged before gets its original index, with `Cairn-Duplicate: true`. `Cairn-Shard` names the shard.
//!
//! - `POST /logs/<id>/add` appends to shard `<id>`, whose read path is `/logs/<id>/`: one tlog, one
//!   origin, so a tool that writes and reads one log URL works unchanged.
//! - `POST /add` routes the entry among the active opaque shards by its leaf hash, as the gRPC API
//!   does: the index is in the shard `Cairn-Shard` names (with one active opaque shard, always it).
//!
//! Everything else is the gRPC API's: validation, the `Authorization: Bearer <token>` tenants and
//! their rate limits, and back-pressure. Errors are one line of text saying what to fix, with the
//! status: 400 empty body or a shard of another kind, 401/403 token, 404 no such shard, 405 a frozen
//! shard, 413 too large, 503 busy or leaderless (with `Retry-After`; retrying is safe, a repeated
//! entry meets its original).

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use cairn_proto::v1::Wait;
use cairn_sequencer::ShardId;
use cairn_store::ShardKind;
use cairn_tlog::bundle::MAX_ENTRY_SIZE;
use tracing::Instrument;

use crate::LogServer;
use crate::error::LogError;

/// The header naming the shard an entry went to.
pub const SHARD_HEADER: &str = "cairn-shard";
/// The header marking a reply for an entry logged before.
pub const DUPLICATE_HEADER: &str = "cairn-duplicate";

/// The `/add` routes, for the HTTP listener of a process running the log role.
pub fn router(server: LogServer) -> Router {
    let metrics = server.metrics().layer("http");
    Router::new()
        .route("/add", post(add_routed))
        .route("/logs/{shard}/add", post(add_to_shard))
        .layer(DefaultBodyLimit::max(MAX_ENTRY_SIZE))
        .layer(metrics)
        .with_state(server)
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn refused(e: LogError) -> Response {
    let (status, _) = e.http_status();
    let retry_after = e.retry_after_secs();
    let message = match e {
        LogError::Internal(detail) => {
            tracing::error!(%detail, "POST /add failed");
            "internal error".to_owned()
        }
        e => e.to_string(),
    };
    let mut r = text(status, message);
    if let Some(v) = retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

async fn add_routed(
    State(server): State<LogServer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    add(server, None, headers, body).await
}

async fn add_to_shard(
    State(server): State<LogServer>,
    Path(shard): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(shard) = shard.parse::<ShardId>() else {
        return text(
            StatusCode::NOT_FOUND,
            format!("`{shard}` is not a shard id; shards.json lists this log's shards"),
        );
    };
    add(server, Some(shard), headers, body).await
}

async fn add(
    server: LogServer,
    shard: Option<ShardId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the entry is larger than the limit of {MAX_ENTRY_SIZE} bytes"),
            );
        }
        Err(e) => return text(e.status(), e.body_text()),
    };
    if body.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            format!("the body is empty; POST one entry of 1 to {MAX_ENTRY_SIZE} bytes"),
        );
    }
    let metadata = crate::auth::metadata_of(&headers);
    let span = tracing::info_span!("http_add", shard, otel.kind = "server");
    crate::trace::continue_from(&span, &metadata);
    let reply = server
        .inner
        .add_entries_of_kind(
            ShardKind::Opaque,
            &metadata,
            vec![body.to_vec()],
            Wait::Sequenced,
            shard,
        )
        .instrument(span)
        .await;
    let result = match reply.map(|r| r.results.into_iter().next()) {
        Ok(Some(r)) => r,
        Ok(None) => return refused(LogError::Internal("no result for the entry".into())),
        Err(e) => return refused(e),
    };
    let mut r = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        result.index.to_string(),
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(SHARD_HEADER, HeaderValue::from(result.shard_id));
    if result.duplicate {
        h.insert(DUPLICATE_HEADER, HeaderValue::from_static("true"));
    }
    r
}
