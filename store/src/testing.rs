//! Fault injection for tests and drills (feature `testing`): [`FaultyStore`] wraps any object store and
//! fails or delays a share of its writes, as a flaky or slow bucket would. Nothing on the production
//! path goes through it: a process uses it only when a test builds its [`crate::Bucket`] over one.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// Injected faults: every `fail_one_in`-th write fails, every write is delayed, or all fail.
#[derive(Debug, Default)]
pub struct Faults {
    fail_one_in: AtomicU32,
    delay_ms: AtomicU64,
    fail_all: AtomicBool,
    checkpoint_delay_ms: AtomicU64,
    counter: AtomicU64,
}

impl Faults {
    /// Makes every `n`-th write fail (0 disables).
    pub fn fail_one_in(&self, n: u32) {
        self.fail_one_in.store(n, Ordering::SeqCst);
    }

    /// Delays every write.
    pub fn delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Delays only checkpoint writes.
    pub fn delay_checkpoints(&self, d: Duration) {
        self.checkpoint_delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Makes every write fail (or heals).
    pub fn fail_all(&self, on: bool) {
        self.fail_all.store(on, Ordering::SeqCst);
    }

    async fn before_write(&self, path: &Path) -> Result<()> {
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
                source: "injected write failure".into(),
            });
        }
        Ok(())
    }
}

/// An object store whose writes go through [`Faults`] first; reads pass through untouched.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Arc<Faults>,
}

impl FaultyStore {
    /// Wraps `inner`; returns the store and its fault controls.
    pub fn wrap(inner: Arc<dyn ObjectStore>) -> (Arc<dyn ObjectStore>, Arc<Faults>) {
        let faults = Arc::new(Faults::default());
        let store = Arc::new(Self {
            inner,
            faults: faults.clone(),
        });
        (store, faults)
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "faulty({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.faults.before_write(location).await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.faults.before_write(location).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.faults.before_write(to).await?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.faults.before_write(to).await?;
        self.inner.rename_opts(from, to, options).await
    }
}

/// A fixed signing key for test shard `id`: origin `test.cairn.dev/shard-<id>`.
pub fn test_signer(id: crate::ShardId) -> cairn_tlog::Signer {
    let mut seed = [7u8; 32];
    seed[..4].copy_from_slice(&id.to_be_bytes());
    // The origin is a valid key name, so this cannot fail.
    cairn_tlog::Signer::from_seed(&format!("test.cairn.dev/shard-{id}"), seed)
        .unwrap_or_else(|e| panic!("test key: {e}"))
}

/// The [`crate::Shard`] description of test shard `id` (see [`test_signer`]).
pub fn test_shard(id: crate::ShardId) -> crate::Shard {
    let signer = test_signer(id);
    crate::Shard {
        id,
        origin: signer.name().to_owned(),
        vkey: signer.verifier().to_string(),
    }
}

/// Writes a complete tiled log into `bucket` (a shard's prefix) as a publisher would, without a
/// sequencer: for read-path tests and benchmarks. A checkpoint is written after each batch (sizes from
/// `batches`, then the rest at once), so the partial tiles of every intermediate size exist too.
/// Returns the checkpoints written, in order.
pub async fn write_log(
    bucket: &crate::Bucket,
    signer: &cairn_tlog::Signer,
    entries: &[Vec<u8>],
    batches: &[usize],
) -> std::result::Result<Vec<cairn_tlog::Checkpoint>, object_store::Error> {
    use bytes::Bytes;
    use cairn_tlog::{BundleBuilder, Checkpoint, Hash, TileBuilder, leaf_hash};
    let mut tiles = TileBuilder::new();
    let mut bundles = BundleBuilder::new();
    let mut checkpoints = Vec::new();
    let mut start = 0;
    let mut sizes = batches
        .iter()
        .copied()
        .chain(std::iter::repeat(entries.len().max(1)));
    let generic = |e: cairn_tlog::bundle::BundleError| object_store::Error::Generic {
        store: "write_log",
        source: Box::new(e),
    };
    loop {
        let end = (start + sizes.next().unwrap_or(1)).min(entries.len());
        let leaves: Vec<Hash> = entries[start..end].iter().map(|e| leaf_hash(e)).collect();
        for t in tiles.extend(&leaves) {
            bucket.put(&t.id.path(), Bytes::from(t.data)).await?;
        }
        for b in bundles.extend(&entries[start..end]).map_err(generic)? {
            bucket.put(&b.id.path(), Bytes::from(b.data)).await?;
        }
        let cp = Checkpoint::new(signer.name(), end as u64, tiles.root());
        bucket
            .put("checkpoint", Bytes::from(cp.sign(signer).to_bytes()))
            .await?;
        checkpoints.push(cp);
        start = end;
        if start == entries.len() {
            return Ok(checkpoints);
        }
    }
}
