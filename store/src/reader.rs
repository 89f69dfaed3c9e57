//! [`TileReader`]: one shard's published log as of its latest checkpoint, verified against the shard's
//! key. Every reader of a log — the read path, the write API's proofs, clients, monitors — reads tiles
//! through it, so the rules live once: the checkpoint is verified before anything is read as of it and
//! never goes backwards; a tile is read at the width the verified tree size implies; proofs are computed
//! from those tiles; immutable objects are cached by bytes.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_tlog::audit::{AuditedLog, audit, required_objects};
use cairn_tlog::proof::{ProofError, TileSource, consistency_tiles, inclusion_tiles};
use cairn_tlog::{BundleId, Checkpoint, Hash, TileId, TlogProof, VerifierKey, verify_consistency};
use futures::{StreamExt, TryStreamExt};

use crate::cache::{Object, TileCache};

/// Reads at once when fetching many objects.
const FETCH_CONCURRENCY: usize = 16;

/// Most hash tiles [`TileReader`] keeps at hand for the newest tree size proofs were asked in.
const AT_HAND: usize = 256;

/// A tile at hand: read once however many proofs wait for it (a failed read answers every waiter,
/// and the slot is dropped so that a later proof reads again).
type Slot = Arc<tokio::sync::OnceCell<Result<Arc<Object>, ReadError>>>;

/// The hash tiles proofs used at one tree size (the widths that size implies), looked up without the
/// shared cache: a publication round answers every waiting submission at once with a proof in the same
/// new tree, and they all need the same few tiles, each read once.
#[derive(Default)]
struct AtHand {
    size: u64,
    tiles: HashMap<(u8, u64), Slot>,
}

/// Why a read failed, classified by how the caller must react.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The shard has not published a checkpoint yet.
    #[error("no checkpoint has been published yet")]
    NoCheckpoint,
    /// A tree size or index beyond the latest checkpoint: ask again later.
    #[error("{0}")]
    NotPublished(String),
    /// No object at that path.
    #[error("{0} not found")]
    NotFound(String),
    /// The request cannot be answered as asked; the message says what to fix.
    #[error("{0}")]
    Invalid(String),
    /// Storage failed; retrying may help.
    #[error("{0}")]
    Unavailable(String),
    /// What storage holds does not verify: a bad checkpoint signature, a checkpoint that contradicts
    /// one seen before, or a tile the checkpoint implies that is missing or malformed.
    #[error("{0}")]
    Corrupt(String),
}

/// Where a reader finds a shard's files: object storage ([`crate::Bucket`] under the shard's prefix),
/// HTTP (a client of the read path), or anything else that maps a relative path to bytes.
pub trait Source: Send + Sync + 'static {
    /// The object at `rel` (such as `checkpoint` or `tile/0/000`), `None` if there is none.
    fn get(&self, rel: &str) -> impl Future<Output = Result<Option<Bytes>, ReadError>> + Send;
    /// A name for logs and cache keys (unique per shard within a process).
    fn describe(&self) -> String;
}

/// A checkpoint whose signature has been verified with the shard's key.
#[derive(Debug)]
pub struct VerifiedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The signed note as stored, with its ETag.
    pub note: Arc<Object>,
}

/// The hash tiles a proof needs, read as of one tree size, with their interior nodes.
pub struct ProofTiles(HashMap<(u8, u64), Arc<Object>>);

impl ProofTiles {
    fn get(&self, tile: TileId) -> Result<&Arc<Object>, ProofError> {
        self.0
            .get(&(tile.level, tile.index))
            .ok_or_else(|| ProofError::TileUnavailable {
                tile,
                reason: "not fetched".into(),
            })
    }
}

impl TileSource for ProofTiles {
    fn tile(&self, tile: TileId) -> Result<std::borrow::Cow<'_, [u8]>, ProofError> {
        Ok(std::borrow::Cow::Borrowed(&self.get(tile)?.body[..]))
    }

    fn subtree(&self, tile: TileId, offset: usize, height: u32) -> Result<Hash, ProofError> {
        let o = self.get(tile)?;
        o.expanded().subtree(offset, height).ok_or(ProofError::TileShort {
            tile,
            need: offset + (1 << height),
            got: o.body.len() / 32,
        })
    }
}

fn proof_err(e: ProofError) -> ReadError {
    match e {
        ProofError::IndexOutOfRange { .. } | ProofError::Sizes { .. } => ReadError::Invalid(e.to_string()),
        other => ReadError::Corrupt(format!("proof from published tiles: {other}")),
    }
}

/// One shard's published log, read through a [`Source`] and verified with the shard's key.
pub struct TileReader<S> {
    source: S,
    key: VerifierKey,
    scope: String,
    cache: TileCache,
    ttl: Duration,
    /// The newest verified checkpoint, and when the source was last read for it.
    latest: Mutex<Option<(Arc<VerifiedCheckpoint>, Instant)>>,
    /// The tiles of the newest tree size proofs were asked in.
    at_hand: Mutex<AtHand>,
}

impl<S> std::fmt::Debug for TileReader<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TileReader")
            .field("scope", &self.scope)
            .field("key", &self.key)
            .finish()
    }
}

impl<S: Source> TileReader<S> {
    /// A reader of the shard at `source`, whose checkpoints `key` signs, caching objects in `cache`.
    /// The checkpoint is re-read at most once a second (see [`TileReader::with_checkpoint_ttl`]).
    pub fn new(source: S, key: VerifierKey, cache: TileCache) -> Self {
        Self {
            scope: source.describe(),
            source,
            key,
            cache,
            ttl: Duration::from_secs(1),
            latest: Mutex::new(None),
            at_hand: Mutex::default(),
        }
    }

    /// How long a checkpoint read from the source is reused before reading it again (zero: always).
    pub fn with_checkpoint_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The shard's verifier key.
    pub fn key(&self) -> &VerifierKey {
        &self.key
    }

    /// The source the reader reads.
    pub fn source(&self) -> &S {
        &self.source
    }

    fn cached_checkpoint(&self) -> Option<(Arc<VerifiedCheckpoint>, Instant)> {
        self.latest.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Adopts `candidate` unless it would go backwards; a different root at the same size is a
    /// split view and an error.
    fn adopt(&self, candidate: Arc<VerifiedCheckpoint>) -> Result<Arc<VerifiedCheckpoint>, ReadError> {
        let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        match latest.as_ref().map(|(cp, _)| cp.clone()) {
            Some(old)
                if old.checkpoint.size == candidate.checkpoint.size
                    && old.checkpoint.root != candidate.checkpoint.root =>
            {
                tracing::error!(shard = %self.scope, size = old.checkpoint.size, "two checkpoints with different roots for one size");
                return Err(ReadError::Corrupt(format!(
                    "two checkpoints of size {} with different roots",
                    old.checkpoint.size
                )));
            }
            Some(old) if old.checkpoint.size > candidate.checkpoint.size => {
                // The source is behind what this reader already verified (it was offered a newer
                // one, or the store lags): keep the newer, and count this as a fresh read.
                *latest = Some((old.clone(), Instant::now()));
                return Ok(old);
            }
            _ => {}
        }
        *latest = Some((candidate.clone(), Instant::now()));
        Ok(candidate)
    }

    fn verify(&self, note: Bytes) -> Result<VerifiedCheckpoint, ReadError> {
        let (checkpoint, _) = Checkpoint::open(&note, &self.key, &[]).map_err(|e| {
            tracing::error!(shard = %self.scope, error = %e, "checkpoint does not verify");
            ReadError::Corrupt(format!("the checkpoint does not verify: {e}"))
        })?;
        Ok(VerifiedCheckpoint {
            checkpoint,
            note: Object::new(note),
        })
    }

    /// The latest checkpoint, its signature verified; never older than one returned before.
    pub async fn checkpoint(&self) -> Result<Arc<VerifiedCheckpoint>, ReadError> {
        if let Some((c, read)) = self.cached_checkpoint()
            && read.elapsed() < self.ttl
        {
            return Ok(c);
        }
        let note = self
            .source
            .get("checkpoint")
            .await?
            .ok_or(ReadError::NoCheckpoint)?;
        let verified = self.verify(note)?;
        if let Some((old, _)) = self.cached_checkpoint() {
            self.check_extends(&old.checkpoint, &verified.checkpoint).await?;
        }
        self.adopt(Arc::new(verified))
    }

    /// A larger checkpoint must extend the one read before: a consistency proof from the tiles as of the
    /// new size must verify between the two roots. A log that rewrote its history (a fork shown to this
    /// reader over time) is `Corrupt`.
    async fn check_extends(&self, old: &Checkpoint, new: &Checkpoint) -> Result<(), ReadError> {
        if old.size == 0 || new.size <= old.size {
            return Ok(());
        }
        let tiles = consistency_tiles(old.size, new.size).map_err(proof_err)?;
        let src = self.proof_tiles(tiles, new.size).await?;
        let proof = cairn_tlog::consistency_proof(&src, old.size, new.size).map_err(proof_err)?;
        verify_consistency(old.size, new.size, &proof, &old.root, &new.root).map_err(|e| {
            tracing::error!(shard = %self.scope, old = old.size, new = new.size, "checkpoint does not extend the one read before");
            ReadError::Corrupt(format!(
                "the checkpoint of size {} is not consistent with the one of size {} read before: {e}",
                new.size, old.size
            ))
        })
    }

    /// Verifies a signed checkpoint obtained elsewhere (from the sequencer that just published it),
    /// reads as of it from now on if it is newer than the one known, and returns it.
    pub fn offer(&self, note: &[u8]) -> Result<Arc<VerifiedCheckpoint>, ReadError> {
        // Every writer waiting on one publication round offers the same note: verified once, when
        // it is first seen (the bytes are compared whole, so nothing unverified is ever adopted).
        if let Some((latest, _)) = self.cached_checkpoint()
            && latest.note.body.as_ref() == note
        {
            return Ok(latest);
        }
        let verified = Arc::new(self.verify(Bytes::copy_from_slice(note))?);
        self.adopt(verified.clone())?;
        Ok(verified)
    }

    /// The latest checkpoint, which must cover a tree of `size`.
    pub async fn checkpoint_covering(&self, size: u64) -> Result<Arc<VerifiedCheckpoint>, ReadError> {
        let cp = self.checkpoint().await?;
        if size > cp.checkpoint.size {
            return Err(ReadError::NotPublished(format!(
                "tree size {size} is not published; the latest checkpoint has size {}",
                cp.checkpoint.size
            )));
        }
        Ok(cp)
    }

    /// An immutable object (a tile or bundle at an exact path), from the cache or the source; concurrent
    /// misses share one read.
    pub async fn object(&self, rel: &str) -> Result<Arc<Object>, ReadError> {
        let key = format!("{}/{rel}", self.scope);
        let stats = &self.cache.stats;
        if let Some(o) = self.cache.objects.get(&key).await {
            stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(o);
        }
        stats.misses.fetch_add(1, Ordering::Relaxed);
        self.cache
            .objects
            .try_get_with(key, async {
                match self.source.get(rel).await {
                    Ok(Some(body)) => Ok(Object::new(body)),
                    Ok(None) => Err(ReadError::NotFound(rel.to_owned())),
                    Err(e) => {
                        stats.store_errors.fetch_add(1, Ordering::Relaxed);
                        Err(e)
                    }
                }
            })
            .await
            .map_err(|e: Arc<ReadError>| (*e).clone())
    }

    /// Hash tile (`level`, `index`) as the tree of `size` serves it (a full tile, or the partial tile of
    /// that width), checked for length. `size` must not exceed a verified checkpoint's.
    pub async fn tile_at(&self, tile: TileId, size: u64) -> Result<Arc<Object>, ReadError> {
        let id = tile
            .at_size(size)
            .ok_or_else(|| ReadError::Invalid(format!("tile {tile} is not in the tree of size {size}")))?;
        let o = self.object(&id.path()).await.map_err(|e| match e {
            ReadError::NotFound(p) => ReadError::Corrupt(format!("published tile {p} is missing")),
            other => other,
        })?;
        if o.body.len() != id.byte_len() {
            // Not kept: a repaired store must be read again.
            self.cache
                .objects
                .invalidate(&format!("{}/{}", self.scope, id.path()))
                .await;
            return Err(ReadError::Corrupt(format!("{id} has {} bytes", o.body.len())));
        }
        Ok(o)
    }

    /// Entry bundle `index` as the tree of `size` serves it.
    pub async fn bundle_at(&self, index: u64, size: u64) -> Result<Arc<Object>, ReadError> {
        let id = BundleId::full(index)
            .at_size(size)
            .ok_or_else(|| ReadError::Invalid(format!("bundle {index} is not in the tree of size {size}")))?;
        self.object(&id.path()).await.map_err(|e| match e {
            ReadError::NotFound(p) => ReadError::Corrupt(format!("published bundle {p} is missing")),
            other => other,
        })
    }

    /// The hash tiles `tiles` as of the tree of `latest` (a full or wider tile serves every smaller tree).
    pub async fn proof_tiles(
        &self,
        tiles: impl IntoIterator<Item = TileId>,
        latest: u64,
    ) -> Result<ProofTiles, ReadError> {
        let wanted: BTreeSet<TileId> = tiles
            .into_iter()
            .map(|t| TileId::full(t.level, t.index))
            .collect();
        // Each tile's slot at this size (a tree older than the newest asked for, or a full table,
        // reads without one).
        let slots: Vec<(TileId, Option<Slot>)> = {
            let mut at_hand = self.at_hand.lock().unwrap_or_else(|p| p.into_inner());
            if latest > at_hand.size {
                *at_hand = AtHand {
                    size: latest,
                    tiles: HashMap::new(),
                };
            }
            wanted
                .into_iter()
                .map(|t| {
                    let slot = if at_hand.size != latest {
                        None
                    } else if let Some(slot) = at_hand.tiles.get(&(t.level, t.index)) {
                        Some(slot.clone())
                    } else if at_hand.tiles.len() < AT_HAND {
                        let slot = Slot::default();
                        at_hand.tiles.insert((t.level, t.index), slot.clone());
                        Some(slot)
                    } else {
                        None
                    };
                    (t, slot)
                })
                .collect()
        };
        let ready: Option<HashMap<(u8, u64), Arc<Object>>> = slots
            .iter()
            .map(|(t, slot)| Some(((t.level, t.index), slot.as_ref()?.get()?.as_ref().ok()?.clone())))
            .collect();
        if let Some(ready) = ready {
            return Ok(ProofTiles(ready));
        }
        let fetched: Vec<((u8, u64), Arc<Object>)> = futures::stream::iter(slots)
            .map(|(t, slot)| async move {
                let o = match slot {
                    Some(slot) => {
                        let read = slot.get_or_init(|| self.tile_at(t, latest)).await.clone();
                        if read.is_err() {
                            self.drop_slot(t, latest, &slot);
                        }
                        read?
                    }
                    None => self.tile_at(t, latest).await?,
                };
                Ok::<_, ReadError>(((t.level, t.index), o))
            })
            .buffer_unordered(FETCH_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(ProofTiles(fetched.into_iter().collect()))
    }

    /// Forgets a slot whose read failed (unless it was replaced already).
    fn drop_slot(&self, t: TileId, latest: u64, slot: &Slot) {
        let mut at_hand = self.at_hand.lock().unwrap_or_else(|p| p.into_inner());
        if at_hand.size == latest
            && at_hand
                .tiles
                .get(&(t.level, t.index))
                .is_some_and(|s| Arc::ptr_eq(s, slot))
        {
            at_hand.tiles.remove(&(t.level, t.index));
        }
    }

    /// Inclusion proofs of `indexes` in the tree of `size`, which a verified checkpoint must cover.
    pub async fn inclusion_proofs(&self, size: u64, indexes: &[u64]) -> Result<Vec<Vec<Hash>>, ReadError> {
        let latest = self.checkpoint_covering(size).await?.checkpoint.size;
        self.prove_inclusion(latest, size, indexes).await
    }

    /// Inclusion proofs of `indexes` in the tree of a checkpoint already verified (such as one from
    /// [`TileReader::offer`]), reading the tiles at its size.
    pub async fn inclusion_proofs_in(
        &self,
        checkpoint: &VerifiedCheckpoint,
        indexes: &[u64],
    ) -> Result<Vec<Vec<Hash>>, ReadError> {
        let size = checkpoint.checkpoint.size;
        self.prove_inclusion(size, size, indexes).await
    }

    async fn prove_inclusion(
        &self,
        latest: u64,
        size: u64,
        indexes: &[u64],
    ) -> Result<Vec<Vec<Hash>>, ReadError> {
        let mut tiles = BTreeSet::new();
        for &i in indexes {
            if i >= size {
                return Err(ReadError::Invalid(format!(
                    "index {i} is not below tree size {size}"
                )));
            }
            tiles.extend(inclusion_tiles(size, i).map_err(proof_err)?);
        }
        let src = self.proof_tiles(tiles, latest).await?;
        indexes
            .iter()
            .map(|&i| cairn_tlog::inclusion_proof(&src, size, i).map_err(proof_err))
            .collect()
    }

    /// The inclusion proof of `index` in the tree of `size`.
    pub async fn inclusion_proof(&self, size: u64, index: u64) -> Result<Vec<Hash>, ReadError> {
        Ok(self
            .inclusion_proofs(size, &[index])
            .await?
            .pop()
            .unwrap_or_default())
    }

    /// The consistency proof between the trees of `size1` and `size2` (0 < size1 <= size2).
    pub async fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, ReadError> {
        if size1 == 0 || size1 > size2 {
            return Err(ReadError::Invalid(format!(
                "sizes must satisfy 0 < size1 <= size2; got {size1} and {size2}"
            )));
        }
        let latest = self.checkpoint_covering(size2).await?.checkpoint.size;
        let tiles = consistency_tiles(size1, size2).map_err(proof_err)?;
        let src = self.proof_tiles(tiles, latest).await?;
        cairn_tlog::consistency_proof(&src, size1, size2).map_err(proof_err)
    }

    /// A c2sp tlog-proof of entry `index` against the latest checkpoint.
    pub async fn tlog_proof(&self, index: u64) -> Result<TlogProof, ReadError> {
        let cp = self.checkpoint().await?;
        let size = cp.checkpoint.size;
        if index >= size {
            return Err(ReadError::NotPublished(format!(
                "index {index} is not published; the tree has {size} entries"
            )));
        }
        let tiles = inclusion_tiles(size, index).map_err(proof_err)?;
        let src = self.proof_tiles(tiles, size).await?;
        let proof = cairn_tlog::inclusion_proof(&src, size, index).map_err(proof_err)?;
        Ok(TlogProof {
            extra: None,
            index,
            proof,
            checkpoint: cp.note.body.to_vec(),
        })
    }

    /// Audits the whole shard as of its latest checkpoint (see `cairn_tlog::audit`): every bundle, every
    /// hash tile recomputed from the entries, the root, the signature. Reads every object once,
    /// bypassing the cache.
    pub async fn audit(&self) -> Result<AuditedLog, ReadError> {
        let cp = self.checkpoint().await?;
        let files: HashMap<_, _> = futures::stream::iter(required_objects(cp.checkpoint.size))
            .map(|path| async move {
                let body = self.source.get(&path.to_string()).await?;
                Ok::<_, ReadError>(body.map(|b| (path, b.to_vec())))
            })
            .buffer_unordered(FETCH_CONCURRENCY)
            .try_filter_map(|x| async move { Ok(x) })
            .try_collect()
            .await?;
        audit(&cp.note.body, &self.key, &files).map_err(|e| ReadError::Corrupt(e.to_string()))
    }
}
