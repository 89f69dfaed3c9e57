//! Routing and handlers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{OriginalUri, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use cairn_store::layout::SHARDS_DIR;
use cairn_store::{Bucket, ReadError, ShardListing, ShardsJson, TileReader, etag_of};
use cairn_tlog::{Hash, TilePath};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{Any, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::error::{ApiError, ConfigError};
use crate::metrics::Metrics;
use crate::{AppState, Config, ShardStatus};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const TEXT: &str = "text/plain; charset=utf-8";
const BINARY: &str = "application/octet-stream";

/// Marks a response body worth compressing (entry bundles).
#[derive(Clone, Copy)]
struct Compressible;

struct Shard {
    listing: cairn_store::Shard,
    reader: TileReader<Bucket>,
}

pub(crate) struct Inner {
    config: Config,
    /// Readers of the configured shards, and of shards of the catalog once asked for.
    shards: std::sync::RwLock<HashMap<u32, Arc<Shard>>>,
    metrics: Metrics,
    /// The last documents built by `config.documents`, and the listing they were built from.
    documents: std::sync::Mutex<Option<Built>>,
}

/// Documents, the listing they were built from, and when.
struct Built {
    listing: Vec<ShardListing>,
    at: Instant,
    documents: Arc<Vec<crate::Document>>,
}

/// How long built documents are served while the listing stays the same (a build also depends on
/// the clock: a planned shard's window opening).
const DOCUMENTS_TTL: std::time::Duration = std::time::Duration::from_secs(1);

impl Inner {
    pub(crate) fn new(config: Config) -> Result<Self, ConfigError> {
        let mut shards = HashMap::new();
        for s in &config.shards {
            shards.insert(s.id, Arc::new(Self::open(&config, s)?));
        }
        Ok(Self {
            metrics: Metrics::new(config.cache.clone()),
            config,
            shards: std::sync::RwLock::new(shards),
            documents: std::sync::Mutex::new(None),
        })
    }

    fn open(config: &Config, s: &cairn_store::Shard) -> Result<Shard, ConfigError> {
        let key = s
            .verifier()
            .map_err(|e| ConfigError(format!("shard {}: verifier key: {e}", s.id)))?;
        let reader = TileReader::new(config.bucket.child(&s.prefix()), key, config.cache.clone())
            .with_checkpoint_ttl(config.checkpoint_ttl);
        Ok(Shard {
            listing: s.clone(),
            reader,
        })
    }

    /// The shard `id`: configured, or added at runtime (its reader made on first use).
    fn shard(&self, id: u32) -> Option<Arc<Shard>> {
        if let Some(s) = self.shards.read().ok()?.get(&id) {
            return Some(s.clone());
        }
        let listing = self
            .config
            .catalog
            .as_ref()?
            .shards()
            .into_iter()
            .find(|l| l.id == id)?;
        let shard = Arc::new(Self::open(&self.config, &listing.shard).ok()?);
        let mut shards = self.shards.write().ok()?;
        Some(shards.entry(id).or_insert(shard).clone())
    }

    /// A read error as the HTTP API reports it; storage trouble is logged and counted, not shown.
    fn read_err(&self, shard: u32, e: ReadError) -> ApiError {
        match e {
            ReadError::NoCheckpoint => ApiError::NotFound("no checkpoint yet".into()),
            ReadError::NotPublished(m) => ApiError::NotFound(m),
            ReadError::NotFound(p) => ApiError::NotFound(format!("{p} not found")),
            ReadError::Invalid(m) => ApiError::BadRequest(m),
            ReadError::Unavailable(m) => {
                tracing::warn!(shard, error = %m, "object store read failed");
                ApiError::Unavailable
            }
            ReadError::Corrupt(m) => {
                tracing::error!(shard, error = %m, "published log does not verify");
                self.metrics.corrupt.inc();
                ApiError::Unavailable
            }
        }
    }

    /// Every shard with its state (from the live source when there is one) and window: the
    /// configured ones, then those of the catalog.
    fn listing(&self) -> Vec<ShardListing> {
        let config = &self.config;
        let mut shards = config
            .shards
            .iter()
            .map(|s| {
                let state = config
                    .live_state
                    .as_ref()
                    .and_then(|f| f(s.id))
                    .unwrap_or(config.default_state);
                let mut listing = ShardListing::new(
                    s.clone(),
                    config.kinds.get(&s.id).copied().unwrap_or_default(),
                    state,
                );
                listing.valid_from = config.valid_from.get(&s.id).copied();
                listing.valid_until = config.valid_until.as_ref().and_then(|f| f(s.id));
                listing.archived = config.archived.as_ref().is_some_and(|f| f(s.id));
                listing.base_url = config.base_urls.get(&s.id).cloned();
                listing
            })
            .collect::<Vec<_>>();
        if let Some(catalog) = &config.catalog {
            for l in catalog.shards() {
                if !shards.iter().any(|s| s.id == l.id) {
                    shards.push(l);
                }
            }
        }
        shards
    }

    /// The Sigstore shard whose origin is `host` (virtual hosting): configured, else added at runtime.
    fn sigstore_by_host(&self, host: &str) -> Option<cairn_store::Shard> {
        let config = &self.config;
        let sigstore = cairn_store::ShardKind::Sigstore;
        if let Some(s) = config.shards.iter().find(|s| s.origin.eq_ignore_ascii_case(host)) {
            return (config.kinds.get(&s.id) == Some(&sigstore)).then(|| s.clone());
        }
        let catalog = config.catalog.as_ref()?.shards();
        catalog
            .into_iter()
            .find(|l| l.origin.eq_ignore_ascii_case(host) && l.kind == sigstore)
            .map(|l| l.shard)
    }

    /// `shards.json`.
    fn shard_list(&self) -> Bytes {
        Bytes::from(
            ShardsJson {
                shards: self.listing(),
            }
            .to_bytes(),
        )
    }

    /// The documents for the shards now: rebuilt when the listing changed since the last build, or
    /// that is [`DOCUMENTS_TTL`] old.
    fn documents(&self) -> Result<Arc<Vec<crate::Document>>, ApiError> {
        let Some(source) = &self.config.documents else {
            return Ok(Arc::default());
        };
        let listing = self.listing();
        let mut last = self.documents.lock().map_err(|_| ApiError::Unavailable)?;
        if let Some(b) = last
            .as_ref()
            .filter(|b| b.listing == listing && b.at.elapsed() < DOCUMENTS_TTL)
        {
            return Ok(b.documents.clone());
        }
        let documents = Arc::new((source.build)(&listing).map_err(|e| {
            tracing::error!(error = %e, "building the discovery documents");
            ApiError::Unavailable
        })?);
        *last = Some(Built {
            listing,
            at: Instant::now(),
            documents: documents.clone(),
        });
        Ok(documents)
    }

    fn status(&self) -> Vec<ShardStatus> {
        self.config.status.as_ref().map(|f| f()).unwrap_or_default()
    }
}

/// The read-path router.
pub fn router(state: AppState) -> Router {
    let mut documents = Router::new();
    let paths = state.inner.config.documents.iter().flat_map(|d| d.paths.clone());
    for path in paths {
        documents = documents.route(
            &path.clone(),
            get(move |State(s): State<AppState>, headers: HeaderMap| async move {
                let documents = match s.inner.documents() {
                    Ok(d) => d,
                    Err(e) => return e.into_response(),
                };
                match documents.iter().find(|d| d.path == path) {
                    Some(d) => {
                        let etag = etag_of(&d.body);
                        let cache = format!("public, max-age={}", s.inner.config.mutable_max_age.as_secs());
                        respond(&headers, d.body.clone(), &etag, d.content_type, &cache, true)
                    }
                    None => {
                        ApiError::NotFound(format!("{path}: this log has no Sigstore shard")).into_response()
                    }
                }
            }),
        );
    }
    Router::new()
        .route("/shards.json", get(shards_json))
        .merge(documents)
        .route(&format!("/{SHARDS_DIR}/{{shard}}/{{*rest}}"), get(shard_file))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(crate::explorer::routes())
        .fallback(host_file)
        .layer(TraceLayer::new_for_http())
        .layer(CompressionLayer::new().gzip(true).compress_when(
            |_, _, _: &HeaderMap, ext: &axum::http::Extensions| ext.get::<Compressible>().is_some(),
        ))
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([Method::GET, Method::HEAD])
                .expose_headers([header::ETAG]),
        )
        .with_state(state)
}

/// A 200 (or 304 when `If-None-Match` matches) with the given caching headers.
pub(crate) fn respond(
    req: &HeaderMap,
    body: Bytes,
    etag: &str,
    content_type: &'static str,
    cache: &str,
    compressible: bool,
) -> Response {
    let matches = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut r = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, body).into_response()
    };
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(cache) {
        h.insert(header::CACHE_CONTROL, v);
    }
    if !matches {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    if compressible {
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        r.extensions_mut().insert(Compressible);
    }
    r
}

async fn shards_json(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let body = s.inner.shard_list();
    let cache = format!("public, max-age={}", s.inner.config.mutable_max_age.as_secs());
    respond(
        &headers,
        body.clone(),
        &etag_of(&body),
        "application/json",
        &cache,
        false,
    )
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.inner
            .metrics
            .render(&s.inner.status(), &s.inner.config.extra_metrics),
    )
        .into_response()
}

/// Ready when object storage answers and no shard's publisher has stopped on a fatal error; otherwise
/// 503 with the reasons.
async fn readyz(State(s): State<AppState>) -> Response {
    let mut body = String::new();
    for st in s.inner.status() {
        if let Some(why) = st.publishing_stopped {
            body.push_str(&format!("shard {}: publishing stopped: {why}\n", st.id));
        }
    }
    if !body.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CACHE_CONTROL, "no-store")],
            body,
        )
            .into_response();
    }
    let Some(shard) = s.inner.config.shards.first() else {
        return (StatusCode::OK, "ok\n").into_response();
    };
    match s
        .inner
        .config
        .bucket
        .child(&shard.prefix())
        .get("checkpoint")
        .await
    {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "object store unreachable");
            ApiError::Unavailable.into_response()
        }
    }
}

/// Strict decimal: no sign, no leading zeros.
fn decimal(s: &str, what: &str) -> Result<u64, ApiError> {
    let ok = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    ok.then(|| s.parse().ok())
        .flatten()
        .ok_or_else(|| ApiError::BadRequest(format!("{what} must be a decimal without leading zeros")))
}

fn proof_body(hashes: &[Hash]) -> Bytes {
    let mut s = String::with_capacity(hashes.len() * 45);
    for h in hashes {
        s.push_str(&h.to_base64());
        s.push('\n');
    }
    Bytes::from(s)
}

async fn shard_file(
    State(s): State<AppState>,
    UrlPath((shard, rest)): UrlPath<(String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let start = Instant::now();
    let (route, result) = route_shard_file(&s, &shard, &rest, uri.path(), &headers).await;
    let response = result.unwrap_or_else(IntoResponse::into_response);
    let m = &s.inner.metrics;
    m.requests
        .with_label_values(&[route, response.status().as_str()])
        .inc();
    m.seconds
        .with_label_values(&[route])
        .observe(start.elapsed().as_secs_f64());
    response
}

/// Virtual hosting: a request whose host (`Host`, or HTTP/2's `:authority`) is a Sigstore shard's
/// origin reads that shard from the root (`/checkpoint`, `/tile/...`, and the same under `/api/v2/`),
/// as Sigstore clients and monitors address a log by its hostname. Anything else is 404.
async fn host_file(
    State(s): State<AppState>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let shard = request_host(&headers, &uri).and_then(|h| s.inner.sigstore_by_host(&h));
    match shard {
        Some(sh) if method == Method::GET || method == Method::HEAD => {
            let rest = uri.path().trim_start_matches('/').to_owned();
            shard_file(
                State(s.clone()),
                UrlPath((sh.id.to_string(), rest)),
                OriginalUri(uri),
                headers,
            )
            .await
        }
        _ => ApiError::NotFound("not found".into()).into_response(),
    }
}

/// The host a request was sent to, without port, lowercased, without a trailing dot: from `Host`
/// (HTTP/1.1), else from the URI's authority (HTTP/2 clients send only `:authority`, which hyper puts
/// there).
fn request_host(headers: &HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    let h = match headers.get(header::HOST) {
        Some(v) => v.to_str().ok()?,
        None => uri.authority()?.as_str(),
    };
    let h = match h.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => h.split(':').next().unwrap_or(h),
    };
    Some(h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase())
}

async fn route_shard_file(
    s: &AppState,
    shard: &str,
    rest: &str,
    raw_path: &str,
    headers: &HeaderMap,
) -> (&'static str, Result<Response, ApiError>) {
    // Rekor v2 clients and monitors read a log's checkpoint and tiles under `<base>/api/v2/` as well.
    let rest = rest.strip_prefix("api/v2/").unwrap_or(rest);
    if raw_path.contains('%') {
        return (
            "other",
            Err(ApiError::BadRequest(
                "percent-encoded characters are not allowed in log paths".into(),
            )),
        );
    }
    let inner = &s.inner;
    let Some(shard) = decimal(shard, "shard")
        .ok()
        .filter(|id| *id <= u64::from(u32::MAX))
        .and_then(|id| inner.shard(id as u32))
    else {
        return ("other", Err(ApiError::NotFound("unknown shard".into())));
    };
    let short = format!("public, max-age={}", inner.config.mutable_max_age.as_secs());
    if rest == "checkpoint" {
        let r = shard
            .reader
            .checkpoint()
            .await
            .map(|c| respond(headers, c.note.body.clone(), &c.note.etag, TEXT, &short, false))
            .map_err(|e| inner.read_err(shard.listing.id, e));
        return ("checkpoint", r);
    }
    if rest.starts_with("tile/") {
        let (route, compressible, content_type) = match TilePath::parse(rest) {
            Ok(TilePath::Hash(_)) => ("tile", false, BINARY),
            Ok(TilePath::Entries(_)) => ("bundle", true, BINARY),
            Err(e) => return ("other", Err(ApiError::BadRequest(e.to_string()))),
        };
        let r = shard
            .reader
            .object(rest)
            .await
            .map(|o| {
                respond(
                    headers,
                    o.body.clone(),
                    &o.etag,
                    content_type,
                    IMMUTABLE,
                    compressible,
                )
            })
            .map_err(|e| inner.read_err(shard.listing.id, e));
        return (route, r);
    }
    let parts: Vec<&str> = rest.split('/').collect();
    match parts[..] {
        ["proof", "inclusion", size, index] => (
            "proof_inclusion",
            inclusion(s, &shard, size, index, headers).await,
        ),
        ["proof", "consistency", a, b] => ("proof_consistency", consistency(s, &shard, a, b, headers).await),
        ["proof", index] => ("proof", tlog_proof(s, &shard, index, headers, &short).await),
        _ => ("other", Err(ApiError::NotFound("not found".into()))),
    }
}

/// A proof (immutable: its URL names everything it depends on).
fn proof_response(hashes: &[Hash], headers: &HeaderMap) -> Response {
    let body = proof_body(hashes);
    respond(headers, body.clone(), &etag_of(&body), TEXT, IMMUTABLE, false)
}

async fn inclusion(
    s: &AppState,
    shard: &Shard,
    size: &str,
    index: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let (size, index) = (decimal(size, "size")?, decimal(index, "index")?);
    if index >= size {
        return Err(ApiError::BadRequest(format!(
            "index {index} is not below size {size}"
        )));
    }
    let proof = shard
        .reader
        .inclusion_proof(size, index)
        .await
        .map_err(|e| s.inner.read_err(shard.listing.id, e))?;
    Ok(proof_response(&proof, headers))
}

async fn consistency(
    s: &AppState,
    shard: &Shard,
    a: &str,
    b: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let (size1, size2) = (decimal(a, "size1")?, decimal(b, "size2")?);
    if size1 == 0 || size1 > size2 {
        return Err(ApiError::BadRequest(format!(
            "need 0 < size1 <= size2, got {size1} and {size2}"
        )));
    }
    let proof = shard
        .reader
        .consistency_proof(size1, size2)
        .await
        .map_err(|e| s.inner.read_err(shard.listing.id, e))?;
    Ok(proof_response(&proof, headers))
}

async fn tlog_proof(
    s: &AppState,
    shard: &Shard,
    index: &str,
    headers: &HeaderMap,
    cache: &str,
) -> Result<Response, ApiError> {
    let index = decimal(index, "index")?;
    let proof = shard
        .reader
        .tlog_proof(index)
        .await
        .map_err(|e| s.inner.read_err(shard.listing.id, e))?;
    let body = Bytes::from(proof.to_bytes());
    Ok(respond(
        headers,
        body.clone(),
        &etag_of(&body),
        TEXT,
        cache,
        false,
    ))
}
