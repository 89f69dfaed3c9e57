//! A byte-bounded cache of immutable objects (tiles and bundles), each with its strong ETag and, for
//! hash tiles used by proofs, its interior nodes.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use cairn_tlog::proof::ExpandedTile;
use sha2::{Digest, Sha256};

/// An immutable object as served.
pub(crate) struct Object {
    pub(crate) body: Bytes,
    pub(crate) etag: String,
    expanded: OnceLock<ExpandedTile>,
}

impl Object {
    pub(crate) fn new(body: Bytes) -> Arc<Self> {
        let etag = etag_of(&body);
        Arc::new(Self {
            body,
            etag,
            expanded: OnceLock::new(),
        })
    }

    /// The hash tile with its interior nodes, computed once.
    pub(crate) fn expanded(&self) -> &ExpandedTile {
        self.expanded.get_or_init(|| ExpandedTile::new(&self.body))
    }
}

/// A strong ETag: the first 16 bytes of the body's SHA-256, quoted.
pub(crate) fn etag_of(body: &[u8]) -> String {
    let d = Sha256::digest(body);
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

pub(crate) type Cache = moka::future::Cache<String, Arc<Object>>;

pub(crate) fn new_cache(bytes: u64) -> Cache {
    moka::future::Cache::builder()
        .max_capacity(bytes)
        // Weighed by the bytes served. A hash tile that has served proofs also keeps its interior nodes
        // (as much again), so memory can reach twice the bound when the cache holds only such tiles.
        .weigher(|k: &String, v: &Arc<Object>| {
            u32::try_from(k.len() + v.body.len() + 128).unwrap_or(u32::MAX)
        })
        .build()
}
