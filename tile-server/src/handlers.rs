//! Routing and handlers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{OriginalUri, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use cairn_tlog::proof::{ProofError, TileSource, consistency_tiles, inclusion_tiles};
use cairn_tlog::tile::tile_width;
use cairn_tlog::{
    Checkpoint, Hash, TileId, TilePath, TlogProof, VerifierKey, consistency_proof, inclusion_proof,
};
use futures::future::try_join_all;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{Any, CorsLayer};

use crate::cache::{Cache, Object, etag_of, new_cache};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::{AppState, Config, ShardEntry};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const TEXT: &str = "text/plain; charset=utf-8";
const BINARY: &str = "application/octet-stream";

/// Marks a response body worth compressing (entry bundles).
#[derive(Clone, Copy)]
struct Compressible;

struct CachedCheckpoint {
    fetched: Instant,
    object: Arc<Object>,
    checkpoint: Checkpoint,
}

struct Shard {
    entry: ShardEntry,
    vkey: Option<VerifierKey>,
}

pub(crate) struct Inner {
    config: Config,
    shards: HashMap<u32, Shard>,
    cache: Cache,
    checkpoints: Mutex<HashMap<u32, Arc<CachedCheckpoint>>>,
    metrics: Metrics,
    shards_json: Bytes,
}

impl Inner {
    pub(crate) fn new(config: Config) -> Self {
        let shards_json = shard_list(&config);
        let shards = config
            .shards
            .iter()
            .map(|s| {
                let vkey = VerifierKey::parse(&s.vkey)
                    .inspect_err(|e| tracing::error!(shard = s.id, error = %e, "invalid verifier key; proofs disabled"))
                    .ok();
                (s.id, Shard { entry: s.clone(), vkey })
            })
            .collect();
        Self {
            cache: new_cache(config.cache_bytes),
            config,
            shards,
            checkpoints: Mutex::new(HashMap::new()),
            metrics: Metrics::new(),
            shards_json,
        }
    }

    fn object_path(shard: &ShardEntry, rel: &str) -> Path {
        rel.split('/')
            .fold(shard.store_prefix.clone(), |p, part| p.join(part))
    }

    async fn fetch(&self, shard: &ShardEntry, rel: &str) -> Result<Option<Bytes>, ApiError> {
        let result = match self.config.store.get(&Self::object_path(shard, rel)).await {
            Ok(r) => r.bytes().await.map(Some),
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => Err(e),
        };
        result.map_err(|e| {
            self.metrics.store_errors.inc();
            tracing::warn!(shard = shard.id, path = rel, error = %e, "object store read failed");
            ApiError::Unavailable
        })
    }

    /// An immutable object, from the cache or the store (concurrent misses share one fetch).
    async fn immutable(&self, shard: &ShardEntry, rel: &str) -> Result<Arc<Object>, ApiError> {
        let key = format!("{}/{rel}", shard.id);
        if let Some(o) = self.cache.get(&key).await {
            self.metrics.cache_hits.inc();
            return Ok(o);
        }
        self.metrics.cache_misses.inc();
        self.cache
            .try_get_with(key, async {
                match self.fetch(shard, rel).await? {
                    Some(body) => Ok(Object::new(body)),
                    None => Err(ApiError::NotFound(format!("{rel} not found"))),
                }
            })
            .await
            .map_err(|e: Arc<ApiError>| (*e).clone())
    }

    /// The shard's latest checkpoint, verified with its key, refreshed at most every `checkpoint_ttl`.
    async fn checkpoint(&self, shard: &Shard) -> Result<Arc<CachedCheckpoint>, ApiError> {
        let id = shard.entry.id;
        if let Some(c) = self
            .checkpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            && c.fetched.elapsed() < self.config.checkpoint_ttl
        {
            return Ok(c.clone());
        }
        let body = self
            .fetch(&shard.entry, "checkpoint")
            .await?
            .ok_or_else(|| ApiError::NotFound("no checkpoint yet".into()))?;
        let vkey = shard.vkey.as_ref().ok_or(ApiError::Unavailable)?;
        let (checkpoint, _) = Checkpoint::open(&body, vkey, &[]).map_err(|e| {
            tracing::error!(shard = id, error = %e, "stored checkpoint does not verify");
            ApiError::Unavailable
        })?;
        let cached = Arc::new(CachedCheckpoint {
            fetched: Instant::now(),
            object: Object::new(body),
            checkpoint,
        });
        let mut map = self.checkpoints.lock().unwrap_or_else(|p| p.into_inner());
        // Never go back to an older checkpoint than one already seen.
        match map.get(&id) {
            Some(old) if old.checkpoint.size > cached.checkpoint.size => Ok(old.clone()),
            _ => {
                map.insert(id, cached.clone());
                Ok(cached)
            }
        }
    }

    /// The hash tiles a proof needs, as of the latest checkpoint (a full or wider tile serves every
    /// smaller tree), with their interior nodes.
    async fn proof_source(
        &self,
        shard: &ShardEntry,
        tiles: Vec<TileId>,
        latest: u64,
    ) -> Result<ProofSource, ApiError> {
        let fetches = tiles.into_iter().map(|t| async move {
            let width = tile_width(latest, t.level, t.index)
                .ok_or_else(|| ApiError::NotFound("tile not published".into()))?;
            let id = TileId { width, ..t };
            Ok::<_, ApiError>(((t.level, t.index), self.immutable(shard, &id.path()).await?))
        });
        Ok(ProofSource(try_join_all(fetches).await?.into_iter().collect()))
    }
}

struct ProofSource(HashMap<(u8, u64), Arc<Object>>);

impl TileSource for ProofSource {
    fn tile(&self, tile: TileId) -> Result<std::borrow::Cow<'_, [u8]>, ProofError> {
        self.0
            .get(&(tile.level, tile.index))
            .map(|o| std::borrow::Cow::Borrowed(&o.body[..]))
            .ok_or_else(|| ProofError::TileUnavailable {
                tile,
                reason: "not fetched".into(),
            })
    }

    fn subtree(&self, tile: TileId, offset: usize, height: u32) -> Result<Hash, ProofError> {
        let o = self
            .0
            .get(&(tile.level, tile.index))
            .ok_or_else(|| ProofError::TileUnavailable {
                tile,
                reason: "not fetched".into(),
            })?;
        o.expanded().subtree(offset, height).ok_or(ProofError::TileShort {
            tile,
            need: offset + (1 << height),
            got: o.body.len() / 32,
        })
    }
}

/// The read-path router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/shards.json", get(shards_json))
        .route("/logs/{shard}/{*rest}", get(shard_file))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(|| async { ApiError::NotFound("not found".into()) })
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
fn respond(
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

/// `shards.json`: every shard with its state, from the live source when there is one.
fn shard_list(config: &Config) -> Bytes {
    let list: Vec<serde_json::Value> = config
        .shards
        .iter()
        .map(|s| {
            let state = config.live_state.as_ref().and_then(|f| f(s.id)).unwrap_or(s.state);
            serde_json::json!({
                "id": s.id, "origin": s.origin, "vkey": s.vkey, "state": state, "prefix": format!("/logs/{}", s.id),
            })
        })
        .collect();
    Bytes::from(serde_json::json!({ "shards": list }).to_string())
}

async fn shards_json(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let body = match s.inner.config.live_state {
        Some(_) => shard_list(&s.inner.config),
        None => s.inner.shards_json.clone(),
    };
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
        s.inner.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(s): State<AppState>) -> Response {
    let Some(shard) = s.inner.config.shards.first() else {
        return (StatusCode::OK, "ok\n").into_response();
    };
    match s.inner.fetch(shard, "checkpoint").await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => e.into_response(),
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

fn proof_err(e: ProofError) -> ApiError {
    match e {
        ProofError::TileUnavailable { .. } | ProofError::TileShort { .. } => ApiError::Unavailable,
        other => ApiError::BadRequest(other.to_string()),
    }
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

async fn route_shard_file(
    s: &AppState,
    shard: &str,
    rest: &str,
    raw_path: &str,
    headers: &HeaderMap,
) -> (&'static str, Result<Response, ApiError>) {
    if raw_path.contains('%') {
        return (
            "other",
            Err(ApiError::BadRequest(
                "percent-encoded characters are not allowed in log paths".into(),
            )),
        );
    }
    let inner = &s.inner;
    let Some(shard) = decimal(shard, "shard").ok().and_then(|id| {
        inner
            .shards
            .get(&(id as u32))
            .filter(|_| id <= u64::from(u32::MAX))
    }) else {
        return ("other", Err(ApiError::NotFound("unknown shard".into())));
    };
    let short = format!("public, max-age={}", inner.config.mutable_max_age.as_secs());
    if rest == "checkpoint" {
        let r = inner.checkpoint(shard).await.map(|c| {
            respond(
                headers,
                c.object.body.clone(),
                &c.object.etag,
                TEXT,
                &short,
                false,
            )
        });
        return ("checkpoint", r);
    }
    if rest.starts_with("tile/") {
        let (route, compressible, content_type) = match TilePath::parse(rest) {
            Ok(TilePath::Hash(_)) => ("tile", false, BINARY),
            Ok(TilePath::Entries(_)) => ("bundle", true, BINARY),
            Err(e) => return ("other", Err(ApiError::BadRequest(e.to_string()))),
        };
        let r = inner.immutable(&shard.entry, rest).await.map(|o| {
            respond(
                headers,
                o.body.clone(),
                &o.etag,
                content_type,
                IMMUTABLE,
                compressible,
            )
        });
        return (route, r);
    }
    let parts: Vec<&str> = rest.split('/').collect();
    match parts[..] {
        ["proof", "inclusion", size, index] => {
            ("proof_inclusion", inclusion(s, shard, size, index, headers).await)
        }
        ["proof", "consistency", a, b] => ("proof_consistency", consistency(s, shard, a, b, headers).await),
        ["proof", index] => ("proof", tlog_proof(s, shard, index, headers, &short).await),
        _ => ("other", Err(ApiError::NotFound("not found".into()))),
    }
}

async fn published(s: &AppState, shard: &Shard, size: u64) -> Result<Arc<CachedCheckpoint>, ApiError> {
    let cp = s.inner.checkpoint(shard).await?;
    if size > cp.checkpoint.size {
        return Err(ApiError::NotFound(format!(
            "tree size {size} is not published; the latest is {}",
            cp.checkpoint.size
        )));
    }
    Ok(cp)
}

/// Computes a proof over the tiles it needs (as of the latest checkpoint) and serves it as immutable.
async fn proof_response(
    s: &AppState,
    shard: &Shard,
    tiles: Result<Vec<TileId>, ProofError>,
    latest: u64,
    prove: impl FnOnce(&ProofSource) -> Result<Vec<Hash>, ProofError>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let src = s
        .inner
        .proof_source(&shard.entry, tiles.map_err(proof_err)?, latest)
        .await?;
    let body = proof_body(&prove(&src).map_err(proof_err)?);
    Ok(respond(
        headers,
        body.clone(),
        &etag_of(&body),
        TEXT,
        IMMUTABLE,
        false,
    ))
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
    let cp = published(s, shard, size).await?;
    let tiles = inclusion_tiles(size, index);
    proof_response(
        s,
        shard,
        tiles,
        cp.checkpoint.size,
        |src| inclusion_proof(src, size, index),
        headers,
    )
    .await
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
    let cp = published(s, shard, size2).await?;
    let tiles = consistency_tiles(size1, size2);
    proof_response(
        s,
        shard,
        tiles,
        cp.checkpoint.size,
        |src| consistency_proof(src, size1, size2),
        headers,
    )
    .await
}

async fn tlog_proof(
    s: &AppState,
    shard: &Shard,
    index: &str,
    headers: &HeaderMap,
    cache: &str,
) -> Result<Response, ApiError> {
    let index = decimal(index, "index")?;
    let cp = s.inner.checkpoint(shard).await?;
    let size = cp.checkpoint.size;
    if index >= size {
        return Err(ApiError::NotFound(format!(
            "index {index} is not published; the tree has {size} entries"
        )));
    }
    let tiles = inclusion_tiles(size, index).map_err(proof_err)?;
    let src = s.inner.proof_source(&shard.entry, tiles, size).await?;
    let proof = inclusion_proof(&src, size, index).map_err(proof_err)?;
    let body = Bytes::from(
        TlogProof {
            extra: None,
            index,
            proof,
            checkpoint: cp.object.body.to_vec(),
        }
        .to_bytes(),
    );
    Ok(respond(
        headers,
        body.clone(),
        &etag_of(&body),
        TEXT,
        cache,
        false,
    ))
}
