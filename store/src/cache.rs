//! A byte-bounded cache of immutable objects (tiles and bundles), each with its strong ETag and, for
//! hash tiles used by proofs, its interior nodes. One cache can serve every shard of a process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use cairn_tlog::proof::ExpandedTile;
use sha2::{Digest, Sha256};

/// An immutable object as read from storage.
pub struct Object {
    /// Its bytes.
    pub body: Bytes,
    /// Strong ETag of the bytes (quoted).
    pub etag: String,
    expanded: OnceLock<ExpandedTile>,
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Object")
            .field("len", &self.body.len())
            .field("etag", &self.etag)
            .finish()
    }
}

impl Object {
    /// Wraps `body`, computing its ETag.
    pub fn new(body: Bytes) -> Arc<Self> {
        let etag = etag_of(&body);
        Arc::new(Self {
            body,
            etag,
            expanded: OnceLock::new(),
        })
    }

    /// The hash tile with its interior nodes, computed once.
    pub fn expanded(&self) -> &ExpandedTile {
        self.expanded.get_or_init(|| ExpandedTile::new(&self.body))
    }
}

/// A strong ETag: the first 16 bytes of the body's SHA-256, hex, quoted.
pub fn etag_of(body: &[u8]) -> String {
    let d = Sha256::digest(body);
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// Counters of a [`TileCache`].
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Reads answered from memory.
    pub hits: AtomicU64,
    /// Reads that went to storage.
    pub misses: AtomicU64,
    /// Storage reads that failed.
    pub store_errors: AtomicU64,
}

impl CacheStats {
    /// (hits, misses, store errors) now.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
            self.store_errors.load(Ordering::Relaxed),
        )
    }
}

/// The cache shared by the [`crate::TileReader`]s of a process. Cheap to clone.
#[derive(Clone)]
pub struct TileCache {
    pub(crate) objects: moka::future::Cache<String, Arc<Object>>,
    pub(crate) stats: Arc<CacheStats>,
}

impl TileCache {
    /// A cache holding about `bytes` bytes of objects.
    pub fn new(bytes: u64) -> Self {
        let objects = moka::future::Cache::builder()
            .max_capacity(bytes)
            // Weighed by the bytes served. A hash tile that has served proofs also keeps its interior
            // nodes (as much again), so memory can reach twice the bound when it holds only such tiles.
            .weigher(|k: &String, v: &Arc<Object>| {
                u32::try_from(k.len() + v.body.len() + 128).unwrap_or(u32::MAX)
            })
            .build();
        Self {
            objects,
            stats: Arc::default(),
        }
    }

    /// Hit, miss and error counters.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }
}

impl std::fmt::Debug for TileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TileCache")
            .field("entries", &self.objects.entry_count())
            .field("bytes", &self.objects.weighted_size())
            .finish()
    }
}
