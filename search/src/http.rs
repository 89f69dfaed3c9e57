//! `GET /api/v1/search`: matches with their entries and inclusion proofs against named checkpoints.
//!
//! Query: exactly one of `digest=sha256:<hex>` (also `sha384:`, `sha512:`), `identity=<SAN>`
//! (optionally with `issuer=<OIDC issuer>`), `fingerprint=<hex>`; `limit` (1–100, default 50);
//! `page_token` from the previous page. The answer:
//!
//! ```json
//! {"results": [{"log": "<origin>", "logKey": "<vkey>", "logIndex": 7,
//!               "entry": "<base64 body>",
//!               "inclusionProof": {"treeSize": 2300, "hashes": ["<base64>", ...]},
//!               "checkpoint": "<signed note>"}],
//!  "nextPageToken": "<opaque>" | null,
//!  "pending": false}
//! ```
//!
//! Only entries under a checkpoint the indexer trusts are answered (each proof leads to that
//! checkpoint): `pending: true` says the page stopped at entries indexed but not yet under one, so
//! asking again with the same token later returns them. A search proves presence, never absence.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{Query as QueryParams, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cairn_client::HttpShard;
use cairn_client::monitor::Trusted;
use cairn_store::{TileCache, TileReader};
use cairn_tlog::VerifierKey;
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::index::{Index, Position, Query};

/// Results per page at most.
pub const MAX_LIMIT: usize = 100;

/// What the search routes read: the index and the checkpoints the indexer trusts.
#[derive(Clone)]
pub struct Searcher {
    index: Arc<Index>,
    trusted: Arc<RwLock<Vec<Trusted>>>,
    http: reqwest::Client,
    readers: Arc<RwLock<HashMap<String, Arc<TileReader<HttpShard>>>>>,
}

impl Searcher {
    /// A searcher over `index`, answering with proofs against `trusted`.
    pub fn new(index: Arc<Index>, trusted: Arc<RwLock<Vec<Trusted>>>) -> Self {
        Self {
            index,
            trusted,
            http: reqwest::Client::new(),
            readers: Arc::default(),
        }
    }

    fn reader(&self, t: &Trusted) -> Result<Arc<TileReader<HttpShard>>, String> {
        if let Some(r) = self
            .readers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&t.key)
        {
            return Ok(r.clone());
        }
        let key = VerifierKey::parse(&t.key).map_err(|e| e.to_string())?;
        let reader = Arc::new(TileReader::new(
            HttpShard::new(&t.url, self.http.clone()),
            key,
            TileCache::new(32 << 20),
        ));
        self.readers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(t.key.clone(), reader.clone());
        Ok(reader)
    }
}

/// The search routes (`/api/v1/search`).
pub fn router(searcher: Searcher) -> Router {
    Router::new()
        .route("/api/v1/search", get(search))
        .with_state(searcher)
}

#[derive(Deserialize)]
struct Params {
    digest: Option<String>,
    identity: Option<String>,
    issuer: Option<String>,
    fingerprint: Option<String>,
    limit: Option<usize>,
    page_token: Option<String>,
}

fn bad(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": message.into()})),
    )
        .into_response()
}

fn parse_query(p: &Params) -> Result<Query, String> {
    match (&p.digest, &p.identity, &p.fingerprint) {
        (Some(d), None, None) => {
            let (alg, hex) = d
                .split_once(':')
                .ok_or("digest must be <algorithm>:<hex>, as sha256:1f2e...")?;
            let len = match alg {
                "sha256" => 32,
                "sha384" => 48,
                "sha512" => 64,
                other => return Err(format!("unknown digest algorithm {other:?}; use sha256, sha384 or sha512")),
            };
            let bytes = decode_hex(hex).ok_or("the digest is not hex")?;
            if bytes.len() != len {
                return Err(format!("a {alg} digest is {} hex digits, not {}", len * 2, hex.len()));
            }
            Ok(Query::Digest(bytes))
        }
        (None, Some(identity), None) if !identity.is_empty() => Ok(Query::Identity {
            identity: identity.clone(),
            issuer: p.issuer.clone().filter(|i| !i.is_empty()),
        }),
        (None, None, Some(f)) if f.len() == 64 && decode_hex(f).is_some() => Ok(Query::Fingerprint(f.to_ascii_lowercase())),
        (None, None, Some(_)) => Err("a fingerprint is 64 hex digits (SHA-256 of the DER certificate or public key)".into()),
        _ => Err("give exactly one of digest=sha256:<hex>, identity=<SAN> (with optional issuer=<URL>), fingerprint=<hex>".into()),
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

fn token(pos: Position) -> String {
    format!("{}.{}", pos.0, pos.1)
}

fn parse_token(t: &str) -> Option<Position> {
    let (a, b) = t.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

async fn search(State(s): State<Searcher>, QueryParams(p): QueryParams<Params>) -> Response {
    let query = match parse_query(&p) {
        Ok(q) => q,
        Err(e) => return bad(e),
    };
    let limit = p.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_LIMIT {
        return bad(format!("limit must be 1 to {MAX_LIMIT}"));
    }
    let after = match p.page_token.as_deref().map(parse_token) {
        Some(None) => return bad("page_token is not one this server gave"),
        Some(Some(pos)) => Some(pos),
        None => None,
    };
    let found = match s.index.search(&query, after, limit) {
        Ok(f) => f,
        Err(e @ crate::index::IndexError::Query(_)) => return bad(e.to_string()),
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error": e.to_string()})),
            )
                .into_response();
        }
    };
    let trusted = s
        .trusted
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    // Keep the prefix of matches under trusted checkpoints; stop at the first that is not.
    let mut answered: Vec<(Position, Trusted)> = Vec::new();
    let mut pending = false;
    for pos in &found {
        let t = s
            .index
            .log_key(pos.0)
            .and_then(|key| trusted.iter().find(|t| t.key == key).cloned());
        match t {
            Some(t) if pos.1 < t.size => answered.push((*pos, t)),
            _ => {
                pending = true;
                break;
            }
        }
    }
    match prove(&s, &answered).await {
        Ok(results) => {
            let next = if pending || found.len() == limit {
                answered
                    .last()
                    .map(|(pos, _)| token(*pos))
                    .or_else(|| p.page_token.clone())
            } else {
                None
            };
            axum::Json(json!({"results": results, "nextPageToken": next, "pending": pending})).into_response()
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            axum::Json(json!({"error": format!("reading the log: {e}")})),
        )
            .into_response(),
    }
}

/// Entry bundles one search request reads at the same time.
const BUNDLE_READS: usize = 8;

/// Each answered match with its entry and inclusion proof, grouped by log to read tiles once.
async fn prove(s: &Searcher, answered: &[(Position, Trusted)]) -> Result<Vec<Value>, String> {
    let mut results = vec![Value::Null; answered.len()];
    let mut by_log: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, (_, t)) in answered.iter().enumerate() {
        by_log.entry(t.key.as_str()).or_default().push(i);
    }
    for slots in by_log.values() {
        let t = &answered[slots[0]].1;
        let reader = s.reader(t)?;
        let checkpoint = reader.offer(&t.note).map_err(|e| e.to_string())?;
        let indexes: Vec<u64> = slots.iter().map(|i| answered[*i].0.1).collect();
        let proofs = reader
            .inclusion_proofs_in(&checkpoint, &indexes)
            .await
            .map_err(|e| e.to_string())?;
        // Each entry bundle the matches fall in, read once and decoded once, a few at a time.
        let width = u64::from(cairn_tlog::tile::TILE_WIDTH);
        let mut numbers: Vec<u64> = indexes.iter().map(|i| i / width).collect();
        numbers.dedup();
        let read: HashMap<u64, _> = futures::stream::iter(numbers)
            .map(|n| {
                let reader = &reader;
                async move { reader.bundle_at(n, t.size).await.map(|b| (n, b)) }
            })
            .buffered(BUNDLE_READS)
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        let bundles = read
            .iter()
            .map(|(n, b)| cairn_tlog::bundle::decode(&b.body, None).map(|e| (*n, e)))
            .collect::<Result<HashMap<u64, Vec<&[u8]>>, _>>()
            .map_err(|e| e.to_string())?;
        for (slot, proof) in slots.iter().zip(proofs) {
            let index = answered[*slot].0.1;
            let entry = bundles
                .get(&(index / width))
                .and_then(|entries| entries.get((index % width) as usize))
                .ok_or_else(|| format!("entry {index} is missing from its bundle"))?;
            results[*slot] = json!({
                "log": checkpoint.checkpoint.origin,
                "logKey": t.key,
                "logIndex": index,
                "entry": STANDARD.encode(entry),
                "inclusionProof": {
                    "treeSize": t.size,
                    "hashes": proof.iter().map(|h| h.to_base64()).collect::<Vec<_>>(),
                },
                "checkpoint": String::from_utf8_lossy(&t.note),
            });
        }
    }
    Ok(results)
}
