//! Object storage for published tiles and checkpoints, through the `object_store` crate.
//!
//! [`open_store`] picks the backend by URL: `memory://`, `file:///dir`, `s3://bucket/prefix` (with
//! `AWS_*` settings or explicit options, e.g. an S3-compatible endpoint), `gs://`, `az://`.
//! [`Bucket`] adds the fault injection the failure tests use: failing or delaying a share of PUTs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

/// An object-store URL that cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreUrlError {
    /// The URL does not parse.
    #[error("invalid object store URL {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The backend refused the configuration.
    #[error(transparent)]
    Store(#[from] object_store::Error),
    /// The local directory cannot be created.
    #[error("cannot create {path}: {source}")]
    Dir {
        /// Directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Opens an object store by URL; returns the store and the path prefix inside it. `options` are
/// backend settings such as `("aws_endpoint", "http://127.0.0.1:9000")` or `("aws_allow_http", "true")`;
/// S3 settings are also read from `AWS_*` environment variables.
pub fn open_store(
    url: &str,
    options: &[(String, String)],
) -> Result<(Arc<dyn ObjectStore>, Path), StoreUrlError> {
    let bad = |reason: String| StoreUrlError::Url {
        url: url.to_owned(),
        reason,
    };
    if url == "memory://" || url.starts_with("memory:") {
        return Ok((Arc::new(InMemory::new()), Path::default()));
    }
    if let Some(dir) = url.strip_prefix("file://") {
        std::fs::create_dir_all(dir).map_err(|source| StoreUrlError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true);
        return Ok((Arc::new(fs), Path::default()));
    }
    let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    if parsed.scheme() == "s3" {
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_url(url);
        for (k, v) in options {
            let key = k.parse().map_err(|e: object_store::Error| bad(e.to_string()))?;
            builder = builder.with_config(key, v);
        }
        let prefix = Path::from(parsed.path().trim_start_matches('/'));
        return Ok((Arc::new(builder.build()?), prefix));
    }
    let (store, prefix) = object_store::parse_url_opts(&parsed, options.iter().cloned())?;
    Ok((Arc::from(store), prefix))
}

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

/// Injected faults (for tests and drills): every `fail_one_in`-th PUT fails, every PUT is delayed, or
/// all fail.
#[derive(Debug, Default)]
pub struct Faults {
    fail_one_in: AtomicU32,
    delay_ms: AtomicU64,
    fail_all: AtomicBool,
    checkpoint_delay_ms: AtomicU64,
    counter: AtomicU64,
}

impl Faults {
    /// Makes every `n`-th PUT fail (0 disables).
    pub fn fail_one_in(&self, n: u32) {
        self.fail_one_in.store(n, Ordering::SeqCst);
    }

    /// Delays every PUT.
    pub fn delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Delays only checkpoint PUTs.
    pub fn delay_checkpoints(&self, d: Duration) {
        self.checkpoint_delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Makes every PUT fail (or heals).
    pub fn fail_all(&self, on: bool) {
        self.fail_all.store(on, Ordering::SeqCst);
    }

    async fn before_put(&self, path: &Path) -> Result<(), object_store::Error> {
        let mut delay = self.delay_ms.load(Ordering::SeqCst);
        if path.filename() == Some("checkpoint") {
            delay += self.checkpoint_delay_ms.load(Ordering::SeqCst);
        }
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let n = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        let one_in = u64::from(self.fail_one_in.load(Ordering::SeqCst));
        if self.fail_all.load(Ordering::SeqCst) || (one_in > 0 && n.is_multiple_of(one_in)) {
            return Err(object_store::Error::Generic {
                store: "faults",
                source: "injected PUT failure".into(),
            });
        }
        Ok(())
    }
}

/// An object store with a path prefix and optional injected faults.
#[derive(Clone, Debug)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    faults: Arc<Faults>,
}

impl Bucket {
    /// A bucket over `store` under `prefix`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path) -> Self {
        Self {
            store,
            prefix,
            faults: Arc::default(),
        }
    }

    /// The same store under a longer prefix (sharing the fault settings).
    pub fn child(&self, sub: &str) -> Self {
        let mut prefix = self.prefix.clone();
        for part in sub.split('/').filter(|p| !p.is_empty()) {
            prefix = prefix.join(part);
        }
        Self {
            store: self.store.clone(),
            prefix,
            faults: self.faults.clone(),
        }
    }

    /// The same store and prefix with fault settings of its own (one per node in tests).
    pub fn with_own_faults(&self) -> Self {
        Self {
            store: self.store.clone(),
            prefix: self.prefix.clone(),
            faults: Arc::default(),
        }
    }

    /// Fault injection controls.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Full path of `rel` (such as `tile/0/000`).
    pub fn path(&self, rel: &str) -> Path {
        let mut p = self.prefix.clone();
        for part in rel.split('/') {
            p = p.join(part);
        }
        p
    }

    /// Writes an object.
    pub async fn put(&self, rel: &str, data: Bytes) -> Result<(), object_store::Error> {
        let path = self.path(rel);
        self.faults.before_put(&path).await?;
        self.store
            .put(&path, PutPayload::from_bytes(data))
            .await
            .map(drop)
    }

    /// Writes an object that must never change (a tile or a bundle): created if absent; if present, its
    /// bytes must equal `data`. Where the store enforces conditional creation, a different existing
    /// object is reported as [`PutError::Conflict`] instead of being overwritten; stores that ignore
    /// the condition (some S3-compatible ones do) simply overwrite it with the same bytes any leader
    /// would write.
    pub async fn put_immutable(&self, rel: &str, data: Bytes) -> Result<(), PutError> {
        let path = self.path(rel);
        self.faults.before_put(&path).await?;
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
                    None => Ok(self
                        .store
                        .put(&path, PutPayload::from_bytes(data))
                        .await
                        .map(drop)?),
                }
            }
            Err(object_store::Error::NotImplemented { .. }) => Ok(self
                .store
                .put(&path, PutPayload::from_bytes(data))
                .await
                .map(drop)?),
            Err(e) => Err(e.into()),
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
