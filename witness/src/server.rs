//! The witness: c2sp.org/tlog-witness `add-checkpoint` over HTTP, cosigning (c2sp.org/tlog-cosignature)
//! only checkpoints consistent with the latest one it cosigned for the same log.
//!
//! The latest cosigned checkpoint of each log is persisted (RocksDB, synced) before the cosignature is
//! returned, and the check of the old size against it and the write of the new one happen under one
//! lock per log, so two concurrent requests can never roll the witness back.
//!
//! | answer | when |
//! |---|---|
//! | 200 | cosigned; the body is the cosignature line |
//! | 400 | malformed body, old size above the checkpoint's size, a proof with old size 0 |
//! | 403 | no signature by a key the witness trusts for the origin verifies |
//! | 404 | unknown origin |
//! | 409 | old size is not the latest cosigned size (body: that size, `text/x.tlog.size`), or same size with a different root |
//! | 413 | body over the limit |
//! | 422 | the consistency proof does not verify |
//! | 429 | the log's request rate is over its limit (counted after the signature check) |
//! | 500 | the witness could not persist its state (nothing was cosigned) |

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State as AxumState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cairn_tlog::note::NoteError;
use cairn_tlog::{Checkpoint, Cosigner, Hash, Note, VerifierKey, verify_consistency};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use sha2::{Digest, Sha256};

use crate::protocol::{AddCheckpoint, SIZE_CONTENT_TYPE};

/// Request bodies above this many bytes are refused (a checkpoint with many cosignatures and a full
/// proof is a few KiB).
pub const DEFAULT_MAX_BODY: usize = 64 << 10;

/// Where a witness keeps the latest cosigned checkpoint of each log.
pub trait WitnessState: Send + Sync + 'static {
    /// The latest cosigned checkpoint note for `origin`.
    fn get(&self, origin: &str) -> Result<Option<Vec<u8>>, String>;
    /// Replaces it; durable when this returns.
    fn put(&self, origin: &str, note: &[u8]) -> Result<(), String>;
}

/// State in RocksDB: one key per origin, written with fsync.
pub struct RocksState(rocksdb::DB);

impl RocksState {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, rocksdb::Error> {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        Ok(Self(rocksdb::DB::open(&opts, path)?))
    }
}

impl WitnessState for RocksState {
    fn get(&self, origin: &str) -> Result<Option<Vec<u8>>, String> {
        self.0.get(origin.as_bytes()).map_err(|e| e.to_string())
    }

    fn put(&self, origin: &str, note: &[u8]) -> Result<(), String> {
        let mut w = rocksdb::WriteOptions::default();
        w.set_sync(true);
        self.0
            .put_opt(origin.as_bytes(), note, &w)
            .map_err(|e| e.to_string())
    }
}

/// State in memory (tests).
#[derive(Default)]
pub struct MemoryState(Mutex<HashMap<String, Vec<u8>>>);

impl WitnessState for MemoryState {
    fn get(&self, origin: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(origin)
            .cloned())
    }

    fn put(&self, origin: &str, note: &[u8]) -> Result<(), String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(origin.to_owned(), note.to_vec());
        Ok(())
    }
}

/// A refused `add-checkpoint`, with the status the spec gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessError {
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("unknown log {0:?}: this witness does not witness that origin")]
    UnknownLog(String),
    /// 409: the latest cosigned size.
    #[error("{message}")]
    Conflict {
        /// The size of the latest checkpoint this witness cosigned for the log.
        latest: u64,
        /// Why.
        message: String,
    },
    /// 413.
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    /// 422.
    #[error("{0}")]
    BadProof(String),
    /// 429.
    #[error("too many requests for log {0}; retry later")]
    RateLimited(String),
    /// 500.
    #[error("witness state: {0}")]
    Internal(String),
}

impl WitnessError {
    /// The HTTP status of the error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::UnknownLog(_) => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadProof(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for WitnessError {
    fn into_response(self) -> Response {
        match &self {
            // The body of a 409 is the size alone, for clients to resend from it.
            Self::Conflict { latest, message } => {
                tracing::debug!(%message, "add-checkpoint conflict");
                (
                    StatusCode::CONFLICT,
                    [(header::CONTENT_TYPE, SIZE_CONTENT_TYPE)],
                    format!("{latest}\n"),
                )
                    .into_response()
            }
            other => (
                other.status(),
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{other}\n"),
            )
                .into_response(),
        }
    }
}

/// What a witness is configured with.
#[derive(Clone, Debug)]
pub struct WitnessConfig {
    /// The witness's cosigning key (its name is the witness's name).
    pub cosigner: Cosigner,
    /// The logs it witnesses: each key's name is the log's origin (a log may have several keys).
    pub logs: Vec<VerifierKey>,
    /// Requests per second allowed per log (`None`: unlimited).
    pub rate_per_log: Option<NonZeroU32>,
    /// Burst allowed per log above the rate.
    pub burst_per_log: Option<NonZeroU32>,
    /// Largest request body accepted.
    pub max_body: usize,
}

impl WitnessConfig {
    /// A witness of `logs` with the default limits (20 requests/s per log, bursts of 100, 64 KiB bodies).
    pub fn new(cosigner: Cosigner, logs: Vec<VerifierKey>) -> Self {
        Self {
            cosigner,
            logs,
            rate_per_log: NonZeroU32::new(20),
            burst_per_log: NonZeroU32::new(100),
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    seconds: HistogramVec,
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "cairn_witness_add_checkpoint_total",
                "add-checkpoint requests by log origin and HTTP status",
            ),
            &["log", "code"],
        )
        .expect("valid metric");
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "cairn_witness_add_checkpoint_seconds",
                "add-checkpoint handling time, including the synced state write",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            &["log"],
        )
        .expect("valid metric");
        registry.register(Box::new(requests.clone())).expect("register");
        registry.register(Box::new(seconds.clone())).expect("register");
        Self {
            registry,
            requests,
            seconds,
        }
    }
}

/// A witness: checks and cosigns checkpoints of the logs it knows.
pub struct Witness {
    cosigner: Cosigner,
    logs: HashMap<String, Vec<VerifierKey>>,
    /// Origins by lowercase hex SHA-256, for the monitoring endpoint.
    by_hash: HashMap<String, String>,
    /// One lock per origin: the check of the old size and the write of the new state are atomic.
    locks: HashMap<String, Mutex<()>>,
    state: Box<dyn WitnessState>,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    max_body: usize,
    metrics: Metrics,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Witness")
            .field("key", &self.cosigner.verifier())
            .field("logs", &self.logs.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The hex SHA-256 of a log's origin: its name in the monitoring endpoint's path.
pub fn origin_hash(origin: &str) -> String {
    hex::encode(Sha256::digest(origin.as_bytes()))
}

impl Witness {
    /// A witness with `config`, keeping its state in `state`.
    pub fn new(config: WitnessConfig, state: Box<dyn WitnessState>) -> Self {
        let mut logs: HashMap<String, Vec<VerifierKey>> = HashMap::new();
        for k in config.logs {
            logs.entry(k.name.clone()).or_default().push(k);
        }
        let by_hash = logs.keys().map(|o| (origin_hash(o), o.clone())).collect();
        let locks = logs.keys().map(|o| (o.clone(), Mutex::new(()))).collect();
        let limiter = config.rate_per_log.map(|rate| {
            let quota = Quota::per_second(rate).allow_burst(config.burst_per_log.unwrap_or(rate));
            RateLimiter::keyed(quota)
        });
        Self {
            cosigner: config.cosigner,
            logs,
            by_hash,
            locks,
            state,
            limiter,
            max_body: config.max_body,
            metrics: Metrics::new(),
        }
    }

    /// The witness's verifier key (type 0x04), as policies name it.
    pub fn verifier(&self) -> VerifierKey {
        self.cosigner.verifier()
    }

    /// The latest checkpoint this witness cosigned for `origin` (the log's signature and this
    /// witness's cosignature).
    pub fn latest(&self, origin: &str) -> Result<Option<Vec<u8>>, WitnessError> {
        self.state.get(origin).map_err(WitnessError::Internal)
    }

    /// Handles an `add-checkpoint` body; returns the response body (the cosignature line) on success.
    pub fn add_checkpoint(&self, body: &[u8]) -> Result<Vec<u8>, WitnessError> {
        if body.len() > self.max_body {
            return Err(WitnessError::TooLarge(self.max_body));
        }
        let req = AddCheckpoint::parse(body).map_err(|e| WitnessError::BadRequest(e.to_string()))?;
        let note =
            Note::parse(&req.checkpoint).map_err(|e| WitnessError::BadRequest(format!("checkpoint: {e}")))?;
        let checkpoint = Checkpoint::parse(&note.text)
            .map_err(|e| WitnessError::BadRequest(format!("checkpoint: {e}")))?;
        let origin = checkpoint.origin.clone();
        let keys = self
            .logs
            .get(&origin)
            .ok_or_else(|| WitnessError::UnknownLog(origin.clone()))?;
        let signed: Vec<cairn_tlog::note::Signature> = match note.verify(keys) {
            Ok(sigs) => sigs.into_iter().cloned().collect(),
            Err(NoteError::InvalidSignature(name)) => {
                return Err(WitnessError::Forbidden(format!(
                    "the signature by {name} does not verify"
                )));
            }
            Err(_) => {
                return Err(WitnessError::Forbidden(format!(
                    "no signature by a key this witness trusts for {origin}"
                )));
            }
        };
        // Only requests the log itself signed count against its rate: anyone can name a public origin.
        if let Some(limiter) = &self.limiter
            && limiter.check_key(&origin).is_err()
        {
            return Err(WitnessError::RateLimited(origin));
        }
        if req.old > checkpoint.size {
            return Err(WitnessError::BadRequest(format!(
                "old size {} is above the checkpoint's size {}",
                req.old, checkpoint.size
            )));
        }
        if req.old == 0 && !req.proof.is_empty() {
            return Err(WitnessError::BadRequest(
                "the consistency proof must be empty when the old size is 0".into(),
            ));
        }

        // A panic under the lock leaves nothing half-done: the state is re-read from the store below.
        let _guard = self.locks[&origin].lock().unwrap_or_else(|p| p.into_inner());
        let latest = match self.state.get(&origin).map_err(WitnessError::Internal)? {
            Some(stored) => {
                let c = Checkpoint::parse_note_unverified(&stored)
                    .map_err(|e| WitnessError::Internal(format!("stored checkpoint of {origin}: {e}")))?;
                Some((c.size, c.root))
            }
            None => None,
        };
        let (latest_size, latest_root) = latest.unwrap_or((0, Hash::default()));
        if req.old != latest_size {
            return Err(WitnessError::Conflict {
                latest: latest_size,
                message: format!(
                    "old size {} is not the latest cosigned size {latest_size}",
                    req.old
                ),
            });
        }
        if latest.is_some() && latest_size == checkpoint.size && latest_root != checkpoint.root {
            tracing::warn!(%origin, size = checkpoint.size, "log presented two roots for one size");
            return Err(WitnessError::Conflict {
                latest: latest_size,
                message: format!("a different root was cosigned for size {latest_size}"),
            });
        }
        if latest.is_some()
            && let Err(e) = verify_consistency(
                latest_size,
                checkpoint.size,
                &req.proof,
                &latest_root,
                &checkpoint.root,
            )
        {
            // Signed by the log, and not consistent with what it signed before: evidence worth keeping.
            tracing::warn!(
                %origin,
                old = latest_size,
                size = checkpoint.size,
                checkpoint = ?String::from_utf8_lossy(&req.checkpoint),
                "consistency proof does not verify"
            );
            return Err(WitnessError::BadProof(format!(
                "consistency proof from {latest_size} to {} does not verify: {e}",
                checkpoint.size
            )));
        }

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let cosig = self
            .cosigner
            .sign(&note.text, now)
            .map_err(|e| WitnessError::Internal(e.to_string()))?;
        let mut stored = Note {
            text: note.text.clone(),
            signatures: signed,
        };
        stored.push(cosig.clone());
        self.state
            .put(&origin, &stored.to_bytes())
            .map_err(WitnessError::Internal)?;
        Ok(cosig.line().into_bytes())
    }

    fn record(&self, body: &[u8], code: StatusCode, started: Instant) {
        let log = Checkpoint::parse_note_unverified(
            AddCheckpoint::parse(body)
                .map(|r| r.checkpoint)
                .unwrap_or_default()
                .as_slice(),
        )
        .ok()
        .map(|c| c.origin)
        .filter(|o| self.logs.contains_key(o))
        .unwrap_or_else(|| "unknown".into());
        self.metrics
            .requests
            .with_label_values(&[log.as_str(), code.as_str()])
            .inc();
        self.metrics
            .seconds
            .with_label_values(&[log.as_str()])
            .observe(started.elapsed().as_secs_f64());
    }
}

/// The witness's HTTP routes, relative to its submission (and monitoring) prefix:
/// `POST /add-checkpoint`, `GET /<hex sha256(origin)>/checkpoint` (the latest cosigned checkpoint),
/// `GET /metrics`.
pub fn router(witness: Arc<Witness>) -> Router {
    let limit = witness.max_body;
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .route("/{log}/checkpoint", get(latest_checkpoint))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(witness)
}

async fn add_checkpoint(AxumState(w): AxumState<Arc<Witness>>, body: Bytes) -> Response {
    let started = Instant::now();
    let w2 = w.clone();
    let b2 = body.clone();
    let result = tokio::task::spawn_blocking(move || w2.add_checkpoint(&b2))
        .await
        .unwrap_or_else(|e| Err(WitnessError::Internal(e.to_string())));
    let response = match result {
        Ok(line) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            line,
        )
            .into_response(),
        Err(e) => e.into_response(),
    };
    w.record(&body, response.status(), started);
    response
}

async fn latest_checkpoint(AxumState(w): AxumState<Arc<Witness>>, UrlPath(log): UrlPath<String>) -> Response {
    let Some(origin) = w.by_hash.get(&log) else {
        return (
            StatusCode::NOT_FOUND,
            "unknown log: the path is the lowercase hex SHA-256 of the origin\n",
        )
            .into_response();
    };
    match w.latest(origin) {
        Ok(Some(note)) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            note,
        )
            .into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            format!("no checkpoint of {origin} cosigned yet\n"),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn metrics(AxumState(w): AxumState<Arc<Witness>>) -> Response {
    let mut out = Vec::new();
    if let Err(e) = prometheus::TextEncoder::new().encode(&w.metrics.registry.gather(), &mut out) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], out).into_response()
}
