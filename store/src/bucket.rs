//! A shard's (or the whole log's) place in object storage: a store and a path prefix, with the two
//! kinds of write the publisher makes — the checkpoint, which is overwritten, and tiles and bundles,
//! which never change once written.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::reader::{ReadError, Source};

/// A failed write.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// An immutable object already exists with different contents: two writers disagree about the log.
    #[error("{0} already exists with different contents")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] object_store::Error),
}

/// Numbers the stores buckets are made over, so that readers of different stores never share cache
/// entries (two stores of one kind display alike).
static NEXT_STORE: AtomicU64 = AtomicU64::new(0);

/// An object store with a path prefix. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// Shared by the clones and children of one bucket.
    store_id: u64,
}

impl Bucket {
    /// A bucket over `store` under `prefix`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path) -> Self {
        Self {
            store,
            prefix,
            store_id: NEXT_STORE.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The same store under a longer prefix, such as a shard's (`crate::layout::shard_prefix`).
    pub fn child(&self, sub: &str) -> Self {
        Self {
            store: self.store.clone(),
            prefix: join(&self.prefix, sub),
            store_id: self.store_id,
        }
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The path prefix inside the store.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// Full path of `rel` (such as `tile/0/000`).
    pub fn path(&self, rel: &str) -> Path {
        join(&self.prefix, rel)
    }

    /// Writes (or overwrites) an object.
    pub async fn put(&self, rel: &str, data: Bytes) -> Result<(), object_store::Error> {
        self.store
            .put(&self.path(rel), PutPayload::from_bytes(data))
            .await
            .map(drop)
    }

    /// Writes an object that must never change (a tile or a bundle): created if absent; if present, its
    /// bytes must equal `data`. Where the store enforces conditional creation, a different existing
    /// object is reported as [`PutError::Conflict`] instead of being overwritten; stores that ignore
    /// the condition (some S3-compatible ones do) simply overwrite it with the same bytes any leader
    /// would write. Correctness never rests on the condition: the publisher's fencing comes from Raft.
    pub async fn put_immutable(&self, rel: &str, data: Bytes) -> Result<(), PutError> {
        let path = self.path(rel);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from_bytes(data.clone()), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                match self.get(rel).await? {
                    Some(existing) if existing == data => Ok(()),
                    Some(_) => Err(PutError::Conflict(rel.to_owned())),
                    // Deleted in between: nothing to compare with; write it.
                    None => Ok(self.put(rel, data).await?),
                }
            }
            Err(object_store::Error::NotImplemented { .. }) => Ok(self.put(rel, data).await?),
            Err(e) => Err(e.into()),
        }
    }

    /// When an object was last written, `None` if it does not exist.
    pub async fn modified(&self, rel: &str) -> Result<Option<std::time::SystemTime>, object_store::Error> {
        match self.store.head(&self.path(rel)).await {
            Ok(meta) => Ok(Some(meta.last_modified.into())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads an object, `None` if it does not exist.
    pub async fn get(&self, rel: &str) -> Result<Option<Bytes>, object_store::Error> {
        match self.store.get(&self.path(rel)).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn join(prefix: &Path, rel: &str) -> Path {
    rel.split('/')
        .filter(|p| !p.is_empty())
        .fold(prefix.clone(), |p, part| p.join(part))
}

impl Source for Bucket {
    async fn get(&self, rel: &str) -> Result<Option<Bytes>, ReadError> {
        Bucket::get(self, rel).await.map_err(|e| {
            tracing::warn!(path = %self.path(rel), error = %e, "object store read failed");
            ReadError::Unavailable(format!("object storage: {e}"))
        })
    }

    fn describe(&self) -> String {
        format!("{}#{}/{}", self.store, self.store_id, self.prefix)
    }
}
