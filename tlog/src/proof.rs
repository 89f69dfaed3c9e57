//! Inclusion and consistency proofs (RFC 6962 §2.1.1 and §2.1.2) computed from hash tiles.
//!
//! Proof hashes are Merkle tree hashes of ranges of leaves. A range that is a complete, aligned subtree
//! of height `h` is read from one tile at level `h / 8`, by hashing `2^(h mod 8)` of its hashes together.
//! A range on the right edge of the tree that is not a perfect subtree is the RFC 6962 hash of the
//! perfect subtrees it decomposes into.
//!
//! Proof generation is synchronous and has no I/O: callers that fetch tiles asynchronously first ask
//! [`inclusion_tiles`] or [`consistency_tiles`] which tiles a proof needs, fetch them, and then prove
//! from memory.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use crate::hash::{HASH_SIZE, Hash, fold_right_edge, perfect_root};
use crate::tile::{TILE_HEIGHT, TILE_WIDTH, TileId};

/// Why a proof or a root could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The index is not below the tree size.
    #[error("index {index} is out of range for a tree of size {size}")]
    IndexOutOfRange {
        /// Requested index.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// The sizes are not `0 < size1 <= size2`, or otherwise impossible.
    #[error("invalid tree sizes {size1} and {size2}")]
    Sizes {
        /// Older size.
        size1: u64,
        /// Newer size.
        size2: u64,
    },
    /// The tile source could not supply a tile.
    #[error("tile {tile} is unavailable: {reason}")]
    TileUnavailable {
        /// The tile asked for.
        tile: TileId,
        /// What the source said.
        reason: String,
    },
    /// The tile source supplied fewer or malformed bytes.
    #[error("tile {tile} has {got} bytes; at least {need} were needed")]
    TileShort {
        /// The tile asked for.
        tile: TileId,
        /// Bytes needed.
        need: usize,
        /// Bytes returned.
        got: usize,
    },
    /// A proof hash has the wrong length.
    #[error("proof hash has the wrong length")]
    HashLength,
    /// The proof has the wrong number of hashes for the sizes and index.
    #[error("proof has {got} hashes, expected {expected}")]
    ProofLength {
        /// Length RFC 9162 requires.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// The proof does not lead to the expected root.
    #[error("proof does not verify against the root")]
    Mismatch,
}

/// Where the proof code reads hash tiles from.
pub trait TileSource {
    /// Returns the contents of hash tile `tile` as of the tree being proven: at least `tile.width` hashes
    /// (a wider tile, such as the full tile that later replaced a partial one, is fine).
    fn tile(&self, tile: TileId) -> Result<std::borrow::Cow<'_, [u8]>, ProofError>;

    /// The root of the perfect subtree whose leaves are hashes `offset .. offset + 2^height` of `tile`
    /// (`height < 8`). Sources that keep tiles with their interior nodes precomputed override this.
    fn subtree(&self, tile: TileId, offset: usize, height: u32) -> Result<Hash, ProofError> {
        let data = self.tile(tile)?;
        let end = (offset + (1usize << height)) * HASH_SIZE;
        if data.len() < end {
            return Err(ProofError::TileShort {
                tile,
                need: end,
                got: data.len(),
            });
        }
        let hashes: Vec<Hash> = data[offset * HASH_SIZE..end]
            .chunks_exact(HASH_SIZE)
            .map(|c| Hash::from_slice(c).unwrap_or_default())
            .collect();
        Ok(perfect_root(&hashes))
    }
}

/// A hash tile with every interior node of its height-8 subtree precomputed, so that a proof reads any
/// subtree root from it without hashing. Worth keeping in caches that serve many proofs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpandedTile {
    /// `nodes[h]` holds the complete subtree roots of height `h`, left to right.
    nodes: Vec<Vec<Hash>>,
}

impl ExpandedTile {
    /// Expands tile contents (a whole number of hashes; a trailing remainder is ignored).
    pub fn new(data: &[u8]) -> Self {
        let mut nodes = vec![crate::builder::split_hashes(data)];
        while let Some(below) = nodes.last().filter(|l| l.len() > 1) {
            let next = below
                .chunks_exact(2)
                .map(|p| crate::hash::node_hash(&p[0], &p[1]))
                .collect();
            nodes.push(next);
        }
        Self { nodes }
    }

    /// Number of hashes in the tile.
    pub fn width(&self) -> usize {
        self.nodes[0].len()
    }

    /// The root of the subtree of `height` over hashes `offset .. offset + 2^height`, if the tile holds
    /// all of them and `offset` is aligned to `2^height`.
    pub fn subtree(&self, offset: usize, height: u32) -> Option<Hash> {
        if !offset.is_multiple_of(1usize << height) {
            return None;
        }
        self.nodes.get(height as usize)?.get(offset >> height).copied()
    }
}

/// Hash tiles held in memory, keyed by (level, index). As a [`TileSource`], a stored tile may be wider
/// than the one asked for (a full tile serves every partial version of itself).
pub type TileMap = HashMap<(u8, u64), Vec<u8>>;

/// See [`TileMap`].
impl<S: std::hash::BuildHasher> TileSource for HashMap<(u8, u64), Vec<u8>, S> {
    fn tile(&self, tile: TileId) -> Result<std::borrow::Cow<'_, [u8]>, ProofError> {
        self.get(&(tile.level, tile.index))
            .map(|d| std::borrow::Cow::Borrowed(d.as_slice()))
            .ok_or_else(|| ProofError::TileUnavailable {
                tile,
                reason: "not in memory".into(),
            })
    }
}

/// Reads Merkle tree hashes of a tree of a given size from a tile source.
struct Reader<'a, S: ?Sized> {
    src: &'a S,
    size: u64,
}

impl<S: TileSource + ?Sized> Reader<'_, S> {
    /// Hash of the perfect subtree of `height` whose leaves start at `index << height`.
    fn perfect(&self, height: u32, index: u64) -> Result<Hash, ProofError> {
        let level = height / TILE_HEIGHT;
        let sub = height % TILE_HEIGHT;
        // Position of the subtree's first hash among the tile-level hashes.
        let first = index << sub;
        let tile_index = first / u64::from(TILE_WIDTH);
        let offset = (first % u64::from(TILE_WIDTH)) as usize;
        let tile = TileId::full(level as u8, tile_index)
            .at_size(self.size)
            .ok_or(ProofError::Sizes {
                size1: self.size,
                size2: self.size,
            })?;
        self.src.subtree(tile, offset, sub)
    }

    /// RFC 6962 hash of leaves `[lo, hi)`, where `lo` is a multiple of the largest power of two below
    /// `hi - lo` (true of every range the proof recursions visit).
    fn range(&self, lo: u64, hi: u64) -> Result<Hash, ProofError> {
        let mut subtrees = Vec::new();
        let mut start = lo;
        while start < hi {
            // The largest aligned perfect subtree that starts at `start` and fits in the range.
            let mut height = (hi - start).ilog2();
            if start != 0 {
                height = height.min(start.trailing_zeros());
            }
            subtrees.push(self.perfect(height, start >> height)?);
            start += 1 << height;
        }
        Ok(fold_right_edge(&subtrees))
    }
}

fn largest_power_of_two_below(n: u64) -> u64 {
    debug_assert!(n > 1);
    1 << (n - 1).ilog2()
}

/// The root of the tree of `size` leaves, computed from its tiles.
pub fn tree_root<S: TileSource + ?Sized>(src: &S, size: u64) -> Result<Hash, ProofError> {
    Reader { src, size }.range(0, size)
}

/// The hash of leaf `index` in a tree of `size`, read from the level-0 tile.
pub fn leaf_hash_at<S: TileSource + ?Sized>(src: &S, size: u64, index: u64) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    Reader { src, size }.perfect(0, index)
}

/// The inclusion proof (audit path) of leaf `index` in the tree of `size`, leaf to root.
pub fn inclusion_proof<S: TileSource + ?Sized>(
    src: &S,
    size: u64,
    index: u64,
) -> Result<Vec<Hash>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let r = Reader { src, size };
    // Walk from the root down, recording the sibling at each split; the proof lists them bottom-up.
    let (mut lo, mut hi) = (0, size);
    let mut path = Vec::new();
    while hi - lo > 1 {
        let k = largest_power_of_two_below(hi - lo);
        if index < lo + k {
            path.push(r.range(lo + k, hi)?);
            hi = lo + k;
        } else {
            path.push(r.range(lo, lo + k)?);
            lo += k;
        }
    }
    path.reverse();
    Ok(path)
}

/// The consistency proof between trees of `size1` and `size2` (RFC 6962 §2.1.2), oldest-first order as
/// RFC 6962 defines it. Empty when `size1 == size2`; `size1` must be at least 1.
pub fn consistency_proof<S: TileSource + ?Sized>(
    src: &S,
    size1: u64,
    size2: u64,
) -> Result<Vec<Hash>, ProofError> {
    if size1 == 0 || size1 > size2 {
        return Err(ProofError::Sizes { size1, size2 });
    }
    let r = Reader { src, size: size2 };
    let mut path = Vec::new();
    // SUBPROOF(m, D[lo:hi], b), iteratively: `complete` is b, whether the old tree is exactly D[lo:lo+m].
    let (mut lo, mut hi, mut m, mut complete) = (0u64, size2, size1, true);
    loop {
        if m == hi - lo {
            if !complete {
                path.push(r.range(lo, hi)?);
            }
            break;
        }
        let k = largest_power_of_two_below(hi - lo);
        if m <= k {
            path.push(r.range(lo + k, hi)?);
            hi = lo + k;
        } else {
            path.push(r.range(lo, lo + k)?);
            lo += k;
            m -= k;
            complete = false;
        }
    }
    path.reverse();
    Ok(path)
}

/// A tile source that hands out zeroed tiles and records which tiles were asked for: proofs read the
/// same tiles whatever their contents, so one dry run lists exactly the tiles a proof needs.
struct Recorder(Mutex<BTreeSet<TileId>>);

impl TileSource for Recorder {
    fn tile(&self, tile: TileId) -> Result<std::borrow::Cow<'_, [u8]>, ProofError> {
        if let Ok(mut set) = self.0.lock() {
            set.insert(tile);
        }
        Ok(std::borrow::Cow::Owned(vec![0; tile.byte_len()]))
    }

    // Recording needs no hashing: a dry run costs a few set insertions, not a proof's worth of SHA-256.
    fn subtree(&self, tile: TileId, _offset: usize, _height: u32) -> Result<Hash, ProofError> {
        if let Ok(mut set) = self.0.lock() {
            set.insert(tile);
        }
        Ok(Hash::default())
    }
}

fn record(run: impl FnOnce(&Recorder) -> Result<(), ProofError>) -> Result<Vec<TileId>, ProofError> {
    let rec = Recorder(Mutex::new(BTreeSet::new()));
    run(&rec)?;
    Ok(rec
        .0
        .into_inner()
        .map(|s| s.into_iter().collect())
        .unwrap_or_default())
}

/// The hash tiles [`inclusion_proof`]`(size, index)` reads.
pub fn inclusion_tiles(size: u64, index: u64) -> Result<Vec<TileId>, ProofError> {
    record(|rec| inclusion_proof(rec, size, index).map(drop))
}

/// The hash tiles [`consistency_proof`]`(size1, size2)` reads.
pub fn consistency_tiles(size1: u64, size2: u64) -> Result<Vec<TileId>, ProofError> {
    record(|rec| consistency_proof(rec, size1, size2).map(drop))
}

/// The hash tiles [`tree_root`]`(size)` reads.
pub fn root_tiles(size: u64) -> Result<Vec<TileId>, ProofError> {
    record(|rec| tree_root(rec, size).map(drop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_needed() {
        assert_eq!(inclusion_tiles(1, 0), Ok(vec![]));
        assert_eq!(
            inclusion_tiles(2, 0),
            Ok(vec![TileId {
                level: 0,
                index: 0,
                width: 2
            }])
        );
        assert_eq!(
            root_tiles(70_000),
            Ok(vec![
                TileId {
                    level: 0,
                    index: 273,
                    width: 112
                },
                TileId {
                    level: 1,
                    index: 1,
                    width: 17
                },
                TileId {
                    level: 2,
                    index: 0,
                    width: 1
                },
            ])
        );
        assert!(inclusion_tiles(5, 5).is_err());
        assert!(consistency_tiles(0, 5).is_err());
        assert!(consistency_tiles(6, 5).is_err());
    }

    #[test]
    fn expanded_tile_subtrees() {
        let hashes: Vec<Hash> = (0u8..13).map(|i| crate::hash::leaf_hash(&[i])).collect();
        let t = ExpandedTile::new(&crate::builder::join_hashes(&hashes));
        assert_eq!(t.width(), 13);
        assert_eq!(t.subtree(4, 2), Some(perfect_root(&hashes[4..8])));
        assert_eq!(t.subtree(8, 3), None, "only 5 hashes from offset 8");
        assert_eq!(t.subtree(2, 2), None, "unaligned");
        assert_eq!(t.subtree(12, 0), Some(hashes[12]));
    }
}
