//! The Rekor v2-compatible write API of Sigstore shards: `POST /api/v2/log/entries` (protojson), as
//! rekor-tiles answers it, so unmodified Sigstore clients (cosign, sigstore-go, sigstore-python) log to
//! Cairn.
//!
//! A request is checked whole before anything is appended ([`cairn_sigstore::hashedrekord::check`]:
//! kind, algorithm, digest length, signature), then its canonical body is routed by leaf hash among the
//! active Sigstore shards like any entry, and the call returns once a published checkpoint covers it:
//! 201 with the `TransparencyLogEntry` (inclusion proof and signed checkpoint). A body logged before is
//! 409 with its index in `x-log-index`; a malformed or unverifiable request 400; too large 413; no
//! active Sigstore shard 405; a busy or leaderless shard 503 (retrying is safe: writes are idempotent).
//! Error bodies are `{"code": <gRPC code>, "message": "...", "details": []}`, as grpc-gateway writes
//! them.
//!
//! The gRPC service `dev.sigstore.rekor.v2.Rekor/CreateEntry` ([`grpc_service`]) does the same, with
//! `ALREADY_EXISTS` (and `x-log-index`) for a duplicate and `INVALID_ARGUMENT` for a refused request.
//!
//! The same route is served under each Sigstore shard's base URL (`/logs/<id>/api/v2/log/entries`):
//! the entry still goes where its leaf hash routes it, and its `logId` names that shard.

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use cairn_proto::rekor_v2::rekor_server::{Rekor as RekorApi, RekorServer};
use cairn_proto::v1::Wait;
use cairn_sequencer::ShardId;
use cairn_sigstore::LogEntry;
use cairn_sigstore::hashedrekord::{check, parse_json};
use cairn_sigstore::pb::rekor::v1::TransparencyLogEntry;
use cairn_sigstore::pb::rekor::v2::CreateEntryRequest;
use cairn_store::ShardKind;
use http_body_util::BodyExt;
use tonic::Code;
use tonic::metadata::{MetadataMap, MetadataValue};
use tracing::Instrument;

use crate::LogServer;
use crate::error::LogError;

/// Largest request body, as rekor-tiles' default.
pub const MAX_BODY: usize = 4 << 20;

/// How much of a body past [`MAX_BODY`] is read (and dropped) before the 413 is sent.
const DRAIN_MAX: u64 = 16 << 20;

/// The header naming a duplicate's index.
pub const LOG_INDEX: &str = "x-log-index";

#[derive(Clone)]
struct Rekor {
    server: LogServer,
    /// Each Sigstore shard's log id.
    log_ids: HashMap<ShardId, [u8; 32]>,
}

impl Rekor {
    fn new(server: LogServer) -> Result<Self, LogError> {
        let mut log_ids = HashMap::new();
        for s in &server.inner.config.shards {
            if server.inner.kind(s.id) == ShardKind::Sigstore {
                let key = s
                    .verifier()
                    .map_err(|e| LogError::Internal(format!("shard {}: verifier key: {e}", s.id)))?;
                log_ids.insert(s.id, cairn_sigstore::log_id(&key));
            }
        }
        Ok(Self { server, log_ids })
    }

    /// A Sigstore shard's log id: configured, or from the key of a shard added at runtime.
    fn log_id(&self, shard: ShardId) -> Option<[u8; 32]> {
        if let Some(id) = self.log_ids.get(&shard) {
            return Some(*id);
        }
        let inner = &self.server.inner;
        if inner.kind(shard) != ShardKind::Sigstore {
            return None;
        }
        let key = inner.shard(shard).ok()?.verifier().ok()?;
        Some(cairn_sigstore::log_id(&key))
    }
}

/// The Rekor v2 write routes, for the HTTP listener of a process running the log role. Fails if a
/// Sigstore shard's verifier key does not parse.
pub fn router(server: LogServer) -> Result<Router, LogError> {
    let metrics = server.metrics().layer("http");
    let state = Rekor::new(server)?;
    Ok(Router::new()
        .route("/api/v2/log/entries", post(create_entry))
        .route("/logs/{shard}/api/v2/log/entries", post(create_entry_at))
        .layer(metrics)
        .with_state(state))
}

/// A grpc-gateway style error: `{"code", "message", "details"}` with the HTTP status for `code`.
fn error(status: StatusCode, code: Code, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "code": code as i32, "message": message.into(), "details": [] });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn log_error(e: LogError) -> Response {
    let (status, code) = e.http_status();
    let retry_after = e.retry_after_secs();
    let message = match e {
        LogError::Frozen(m) => format!(
            "{m}; submit to the log's active Sigstore shard (see shards.json and signing_config.json)"
        ),
        LogError::Internal(detail) => {
            tracing::error!(%detail, "Rekor v2 submission failed");
            "internal error".into()
        }
        e => e.to_string(),
    };
    let mut r = error(status, code, message);
    if let Some(v) = retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Why a submission was not logged.
enum Refused {
    /// The request is the client's to fix.
    Entry(cairn_sigstore::EntryError),
    /// The same body was logged before, at this index.
    Duplicate(u64),
    /// The write path could not take it.
    Log(LogError),
}

impl Rekor {
    /// Checks, logs and proves one request: what both the HTTP and the gRPC API do.
    async fn submit(&self, req: CreateEntryRequest, metadata: &MetadataMap) -> Result<LogEntry, Refused> {
        let inner = &self.server.inner;
        let submission = check(req, &inner.config.sigstore_policy).map_err(Refused::Entry)?;
        let span = tracing::info_span!("create_entry", otel.kind = "server");
        crate::trace::continue_from(&span, metadata);
        let reply = inner
            .add_entries_of_kind(
                ShardKind::Sigstore,
                metadata,
                vec![submission.body.clone()],
                Wait::Published,
                None,
            )
            .instrument(span)
            .await
            .map_err(Refused::Log)?;
        let result = reply
            .results
            .into_iter()
            .next()
            .ok_or_else(|| Refused::Log(LogError::Internal("no result for the entry".into())))?;
        if result.duplicate {
            return Err(Refused::Duplicate(result.index));
        }
        let log_id = self.log_id(result.shard_id).ok_or_else(|| {
            Refused::Log(LogError::Internal(format!(
                "the entry went to shard {}, which is not a Sigstore shard",
                result.shard_id
            )))
        })?;
        let proof = cairn_proto::convert::hashes_from_bytes(&result.inclusion_proof)
            .map_err(|e| Refused::Log(LogError::Internal(format!("inclusion proof: {e}"))))?;
        Ok(LogEntry {
            index: result.index,
            log_id,
            body: submission.body,
            proof,
            checkpoint: result.checkpoint,
        })
    }
}

fn duplicate_message(index: u64) -> String {
    format!("an equivalent entry already exists in the transparency log with index {index}")
}

/// A submission to a shard's URL: the shard must be a Sigstore shard of this log (a client with a
/// wrong URL is told so), and the entry is then routed by its leaf hash like every other, so it may
/// land in another active Sigstore shard (its `logId` says which).
async fn create_entry_at(
    State(rekor): State<Rekor>,
    Path(shard): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let inner = &rekor.server.inner;
    let known = shard
        .parse::<ShardId>()
        .ok()
        .filter(|id| inner.shard(*id).is_ok());
    match known {
        Some(id) if inner.kind(id) == ShardKind::Sigstore => create_entry(State(rekor), headers, body).await,
        Some(id) => error(
            StatusCode::NOT_FOUND,
            Code::NotFound,
            format!(
                "shard {id} is not a Sigstore shard: POST to a Sigstore shard's URL (see signing_config.json)"
            ),
        ),
        None => error(
            StatusCode::NOT_FOUND,
            Code::NotFound,
            format!(
                "there is no shard {shard:?} here: POST to a Sigstore shard's URL (see signing_config.json)"
            ),
        ),
    }
}

async fn create_entry(State(rekor): State<Rekor>, headers: HeaderMap, body: Body) -> Response {
    let body = match read_body(&headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req = match parse_json(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, Code::InvalidArgument, e.to_string()),
    };
    let metadata = crate::auth::metadata_of(&headers);
    let entry = match rekor.submit(req, &metadata).await {
        Ok(e) => e,
        Err(Refused::Entry(e)) => {
            return error(StatusCode::BAD_REQUEST, Code::InvalidArgument, e.to_string());
        }
        Err(Refused::Duplicate(index)) => {
            let mut r = error(
                StatusCode::CONFLICT,
                Code::AlreadyExists,
                duplicate_message(index),
            );
            if let Ok(v) = HeaderValue::from_str(&index.to_string()) {
                r.headers_mut().insert(LOG_INDEX, v);
            }
            return r;
        }
        Err(Refused::Log(e)) => return log_error(e),
    };
    match entry.to_json() {
        Ok(json) => (
            StatusCode::CREATED,
            [(header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response(),
        Err(e) => log_error(LogError::Internal(e)),
    }
}

/// A request body, of at most [`MAX_BODY`] bytes. No more than that is kept. A longer one is read
/// on, and dropped, up to [`DRAIN_MAX`] bytes, so that a client still sending can read the 413 (an
/// HTTP/1.1 client that is cut off mid-body sees a broken connection, not the answer). A body
/// declared or found longer than that is answered at once.
async fn read_body(headers: &HeaderMap, mut body: Body) -> Result<bytes::Bytes, Response> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::InvalidArgument,
            format!(
                "the request is larger than the limit; the limit is {MAX_BODY} bytes (a hashedrekord request carries a digest, not the artifact)"
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_MAX) {
        return Err(too_large());
    }
    let mut kept = bytes::BytesMut::new();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                format!("the request body could not be read: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if total > DRAIN_MAX {
            return Err(too_large());
        }
        if total <= MAX_BODY as u64 {
            kept.extend_from_slice(&data);
        }
    }
    if total > MAX_BODY as u64 {
        return Err(too_large());
    }
    Ok(kept.freeze())
}

/// The gRPC service `dev.sigstore.rekor.v2.Rekor` (`CreateEntry`), for the gRPC listener. Fails if a
/// Sigstore shard's verifier key does not parse.
pub fn grpc_service(server: LogServer) -> Result<RekorServer<RekorGrpc>, LogError> {
    Ok(RekorServer::new(RekorGrpc(Rekor::new(server)?)).max_decoding_message_size(MAX_BODY))
}

/// The gRPC face of the Rekor v2 API.
pub struct RekorGrpc(Rekor);

#[tonic::async_trait]
impl RekorApi for RekorGrpc {
    async fn create_entry(
        &self,
        request: tonic::Request<CreateEntryRequest>,
    ) -> Result<tonic::Response<TransparencyLogEntry>, tonic::Status> {
        let metadata = request.metadata().clone();
        match self.0.submit(request.into_inner(), &metadata).await {
            Ok(entry) => entry
                .to_proto()
                .map(tonic::Response::new)
                .map_err(|e| LogError::Internal(e).into()),
            Err(Refused::Entry(e)) => Err(tonic::Status::invalid_argument(e.to_string())),
            Err(Refused::Duplicate(index)) => {
                let mut status = tonic::Status::already_exists(duplicate_message(index));
                status
                    .metadata_mut()
                    .insert(LOG_INDEX, MetadataValue::from(index));
                Err(status)
            }
            Err(Refused::Log(e)) => Err(e.into()),
        }
    }
}
