//! A whole-log audit of the files a c2sp.org/tlog-tiles log publishes, against its signed checkpoint
//! (c2sp.org/tlog-checkpoint).
//!
//! The audit recomputes the log from its entries alone and demands that everything published agrees:
//! every entry bundle holds exactly its width of valid entries, every hash tile is byte for byte the tile
//! built from the entries' leaf hashes, and the root is the checkpoint's. It is pure: callers wrap it with
//! the few lines of I/O that fetch [`required_objects`] into an [`AuditSource`].
//!
//! Only the files of the checkpoint's size are read: full tiles and bundles, plus the partial ones at
//! exactly that size. Partial tiles of intermediate sizes may linger in a store; they are not part of the
//! published tree and are ignored.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

use crate::builder::{HashTile, TileBuilder};
use crate::bundle::{self, BundleError};
use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::hash::{HASH_SIZE, Hash, leaf_hash};
use crate::note::VerifierKey;
use crate::proof::{TileMap, tree_root};
use crate::tile::{BundleId, TILE_WIDTH, TileId, TilePath, new_bundles, new_tiles};

/// Where the audit reads a log's published files.
pub trait AuditSource {
    /// The contents of hash tile `id` (at exactly its width), if the log published it.
    fn tile(&self, id: TileId) -> Option<&[u8]>;
    /// The contents of entry bundle `id` (at exactly its width), if the log published it.
    fn bundle(&self, id: BundleId) -> Option<&[u8]>;
}

/// Files keyed by their path, [`TilePath::Hash`] or [`TilePath::Entries`].
impl<S: BuildHasher> AuditSource for HashMap<TilePath, Vec<u8>, S> {
    fn tile(&self, id: TileId) -> Option<&[u8]> {
        self.get(&TilePath::Hash(id)).map(Vec::as_slice)
    }

    fn bundle(&self, id: BundleId) -> Option<&[u8]> {
        self.get(&TilePath::Entries(id)).map(Vec::as_slice)
    }
}

/// Files keyed by their path, [`TilePath::Hash`] or [`TilePath::Entries`].
impl AuditSource for BTreeMap<TilePath, Vec<u8>> {
    fn tile(&self, id: TileId) -> Option<&[u8]> {
        self.get(&TilePath::Hash(id)).map(Vec::as_slice)
    }

    fn bundle(&self, id: BundleId) -> Option<&[u8]> {
        self.get(&TilePath::Entries(id)).map(Vec::as_slice)
    }
}

/// What an audit established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditedLog {
    /// The checkpoint, signed by the log's key.
    pub checkpoint: Checkpoint,
    /// Every entry, in log order: `checkpoint.size` of them.
    pub entries: Vec<Vec<u8>>,
    /// Every hash tile of the tree, at the widths of `checkpoint.size`, keyed by (level, index).
    pub tiles: TileMap,
}

/// Why a log fails its audit. Each variant names the file at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The checkpoint is malformed, or not signed by the log's key.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// A file the tree of the checkpoint's size serves is not in the source.
    #[error("missing {0}")]
    Missing(TilePath),
    /// An entry bundle is malformed, or holds other than its width of entries.
    #[error("{bundle}: {source}")]
    Bundle {
        /// The bundle.
        bundle: BundleId,
        /// What is wrong with it.
        source: BundleError,
    },
    /// An entry's leaf hash differs from the level-0 tile's, while the tiles agree with the checkpoint:
    /// the bundle holds a different entry than the one the log signed.
    #[error(
        "entry {index} in {bundle} does not match its leaf hash in the tiles, which match the checkpoint"
    )]
    Entry {
        /// Index of the entry in the log.
        index: u64,
        /// The bundle that holds it.
        bundle: BundleId,
    },
    /// A hash tile differs from the tile computed from the entries.
    #[error("{0} differs from the tile computed from the entries")]
    Tile(TileId),
    /// Neither the entries nor the tiles hash to the checkpoint's root.
    #[error("the entries hash to root {computed}, the checkpoint's is {checkpoint}")]
    Root {
        /// The root of the entries.
        computed: Hash,
        /// The root in the checkpoint.
        checkpoint: Hash,
    },
}

/// Every object a full audit of the tree of `size` reads: every hash tile of every level that the tree of
/// `size` serves (full tiles, plus the partial tiles at exactly `size`), and every entry bundle (full,
/// plus the partial one at `size`). Lowest level first: hash tiles by level then index, then bundles by
/// index (which is also [`TilePath`]'s order).
pub fn required_objects(size: u64) -> Vec<TilePath> {
    let tiles = new_tiles(0, size).into_iter().map(TilePath::Hash);
    let bundles = new_bundles(0, size).into_iter().map(TilePath::Entries);
    tiles.chain(bundles).collect()
}

/// Audits a log: the checkpoint note's signature by `key` ([`Checkpoint::open`]), every bundle decodes
/// with exactly its width of entries, the hash tiles recomputed from the entries' leaf hashes
/// ([`TileBuilder`]) equal the served tiles byte for byte at every level (full tiles and the partial tiles
/// at the checkpoint's size), and the root equals the checkpoint's root. Reads exactly
/// [`required_objects`] of the checkpoint's size.
pub fn audit(note: &[u8], key: &VerifierKey, src: &impl AuditSource) -> Result<AuditedLog, AuditError> {
    let (checkpoint, _) = Checkpoint::open(note, key, &[])?;
    let size = checkpoint.size;

    // Bundles are read lazily, so that a checkpoint claiming an absurd size costs one missing file, not
    // an allocation of every bundle id.
    let mut builder = TileBuilder::new();
    let mut computed: Vec<HashTile> = Vec::new();
    let mut entries: Vec<Vec<u8>> = Vec::new();
    let bundles = (0..size.div_ceil(u64::from(TILE_WIDTH))).filter_map(|i| BundleId::full(i).at_size(size));
    for id in bundles {
        let data = src.bundle(id).ok_or(AuditError::Missing(TilePath::Entries(id)))?;
        let decoded = bundle::decode(data, Some(usize::from(id.width)))
            .map_err(|source| AuditError::Bundle { bundle: id, source })?;
        let leaves: Vec<Hash> = decoded.iter().map(|e| leaf_hash(e)).collect();
        // Only full tiles: the partial tiles of intermediate sizes are not part of the published tree.
        computed.extend(builder.extend(&leaves).into_iter().filter(|t| t.id.is_full()));
        entries.extend(decoded.into_iter().map(<[u8]>::to_vec));
    }
    computed.extend(builder.partial_tiles());
    computed.sort_by_key(|t| (t.id.level, t.id.index));

    let mut tiles = TileMap::with_capacity(computed.len());
    for t in &computed {
        let data = src.tile(t.id).ok_or(AuditError::Missing(TilePath::Hash(t.id)))?;
        tiles.insert((t.id.level, t.id.index), data.to_vec());
    }

    // The checkpoint is the trust anchor. When the entries do not hash to its root but the tiles do, the
    // entries are at fault: name the first one that disagrees with the level-0 tiles.
    let computed_root = builder.root();
    if computed_root != checkpoint.root {
        if tree_root(&tiles, size).ok() != Some(checkpoint.root) {
            return Err(AuditError::Root {
                computed: computed_root,
                checkpoint: checkpoint.root,
            });
        }
        let unlike = first_unlike_leaf(&entries, &tiles).and_then(|index| {
            let bundle = BundleId::full(index / u64::from(TILE_WIDTH)).at_size(size)?;
            Some(AuditError::Entry { index, bundle })
        });
        if let Some(err) = unlike {
            return Err(err);
        }
        // Every entry matches the level-0 tiles: a tile above them is at fault, found below.
    }
    for t in &computed {
        if tiles.get(&(t.id.level, t.id.index)) != Some(&t.data) {
            return Err(AuditError::Tile(t.id));
        }
    }
    // The served tiles equal the computed ones, so they cannot hash to the checkpoint's root when the
    // entries do not; kept so that the root is checked whatever the branches above conclude.
    if computed_root != checkpoint.root {
        return Err(AuditError::Root {
            computed: computed_root,
            checkpoint: checkpoint.root,
        });
    }
    Ok(AuditedLog {
        checkpoint,
        entries,
        tiles,
    })
}

/// The index of the first entry whose leaf hash is not the one in its level-0 tile.
fn first_unlike_leaf(entries: &[Vec<u8>], tiles: &TileMap) -> Option<u64> {
    let w = usize::from(TILE_WIDTH);
    entries.iter().enumerate().find_map(|(i, entry)| {
        let at = (i % w) * HASH_SIZE;
        let served = tiles
            .get(&(0, (i / w) as u64))
            .and_then(|tile| tile.get(at..at + HASH_SIZE));
        (served != Some(leaf_hash(entry).as_bytes().as_slice())).then_some(i as u64)
    })
}
