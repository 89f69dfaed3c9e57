//! Building c2sp.org/tlog-tiles hash tiles and entry bundles incrementally.
//!
//! A builder's whole state is the tree's partial tiles (at most 255 hashes per level), so a publisher
//! can resume from the partial tiles it last wrote, append new leaves, and get exactly the tiles the
//! larger tree adds — full tiles completed along the way and the new partial tiles — without reading the
//! rest of the tree. The partial tiles also determine the tree's root.

use crate::bundle::{self, BundleError};
use crate::hash::{HASH_SIZE, Hash, fold_right_edge, perfect_root};
use crate::tile::{BundleId, TILE_WIDTH, TileId, hashes_at_level, partial_tiles};

/// A hash tile's coordinates and contents (`width * 32` bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashTile {
    /// Where the tile lives.
    pub id: TileId,
    /// Concatenated hashes.
    pub data: Vec<u8>,
}

/// An entry bundle's coordinates and contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    /// Where the bundle lives.
    pub id: BundleId,
    /// Length-prefixed entries.
    pub data: Vec<u8>,
}

/// Stored partial tiles that do not describe a tree of the claimed size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The set of partial tiles is not the one a tree of this size has.
    #[error("a tree of size {size} has partial tiles {expected:?}, got {got:?}")]
    Tiles {
        /// Claimed tree size.
        size: u64,
        /// Partial tiles the size implies.
        expected: Vec<TileId>,
        /// Tiles supplied.
        got: Vec<TileId>,
    },
    /// A tile's contents do not match its width.
    #[error("tile {id} must be {expected} bytes, got {got}")]
    Length {
        /// The tile.
        id: TileId,
        /// `width * 32`.
        expected: usize,
        /// Bytes supplied.
        got: usize,
    },
    /// The partial bundle does not hold `size mod 256` valid entries.
    #[error("partial bundle: {0}")]
    Bundle(#[from] BundleError),
}

/// Incremental builder of hash tiles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TileBuilder {
    size: u64,
    /// `levels[l]`: the hashes of the partial tile at level `l` (fewer than 256).
    levels: Vec<Vec<Hash>>,
}

impl TileBuilder {
    /// A builder for the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resumes from the partial tiles of a tree of `size`, in any order. They must be exactly the tiles
    /// [`partial_tiles`] lists for `size`.
    pub fn from_partial_tiles<'a, I>(size: u64, tiles: I) -> Result<Self, BuildError>
    where
        I: IntoIterator<Item = (TileId, &'a [u8])>,
    {
        let mut got: Vec<(TileId, &[u8])> = tiles.into_iter().collect();
        got.sort_by_key(|(id, _)| *id);
        let expected = partial_tiles(size);
        if got.iter().map(|(id, _)| *id).ne(expected.iter().copied()) {
            return Err(BuildError::Tiles {
                size,
                expected,
                got: got.into_iter().map(|(id, _)| id).collect(),
            });
        }
        let mut levels = Vec::new();
        for (id, data) in got {
            if data.len() != id.byte_len() {
                return Err(BuildError::Length {
                    id,
                    expected: id.byte_len(),
                    got: data.len(),
                });
            }
            levels.resize(usize::from(id.level) + 1, Vec::new());
            levels[usize::from(id.level)] = split_hashes(data);
        }
        Ok(Self { size, levels })
    }

    /// Number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash; each full tile it completes (at any level) is pushed onto `completed`.
    pub fn append(&mut self, leaf: Hash, completed: &mut Vec<HashTile>) {
        let mut carry = leaf;
        let mut level = 0;
        self.size += 1;
        loop {
            if self.levels.len() <= level {
                self.levels.push(Vec::with_capacity(usize::from(TILE_WIDTH)));
            }
            let hashes = &mut self.levels[level];
            hashes.push(carry);
            if hashes.len() < usize::from(TILE_WIDTH) {
                return;
            }
            let full = std::mem::take(hashes);
            let index = hashes_at_level(self.size, level as u8) / u64::from(TILE_WIDTH) - 1;
            carry = perfect_root(&full);
            completed.push(HashTile {
                id: TileId::full(level as u8, index),
                data: join_hashes(&full),
            });
            level += 1;
        }
    }

    /// Appends leaf hashes and returns every tile the grown tree has that the old one did not: full
    /// tiles completed (lowest level first) followed by the new partial tiles. This is exactly
    /// [`crate::tile::new_tiles`]`(old_size, new_size)`, with contents.
    pub fn extend(&mut self, leaves: &[Hash]) -> Vec<HashTile> {
        let old = self.size;
        let mut out = Vec::new();
        for leaf in leaves {
            self.append(*leaf, &mut out);
        }
        out.sort_by_key(|t| (t.id.level, t.id.index));
        let mut with_partials = Vec::with_capacity(out.len() + self.levels.len());
        let mut full = out.into_iter().peekable();
        for tile in self.partial_tiles() {
            while let Some(t) = full.next_if(|t| t.id.level <= tile.id.level) {
                with_partials.push(t);
            }
            let level = tile.id.level;
            if hashes_at_level(old, level) != hashes_at_level(self.size, level) {
                with_partials.push(tile);
            }
        }
        with_partials.extend(full);
        with_partials
    }

    /// The partial tiles of the current tree, lowest level first.
    pub fn partial_tiles(&self) -> Vec<HashTile> {
        let w = u64::from(TILE_WIDTH);
        self.levels
            .iter()
            .enumerate()
            .filter(|(_, hashes)| !hashes.is_empty())
            .map(|(level, hashes)| HashTile {
                id: TileId {
                    level: level as u8,
                    index: hashes_at_level(self.size, level as u8) / w,
                    width: hashes.len() as u16,
                },
                data: join_hashes(hashes),
            })
            .collect()
    }

    /// The root of the current tree. Each partial tile's hashes split into perfect subtrees by the bits
    /// of its width; together, from the highest level down, they are the tree's right edge.
    pub fn root(&self) -> Hash {
        let mut subtrees = Vec::new();
        for hashes in self.levels.iter().rev() {
            let mut start = 0;
            for bit in (0..TILE_HEIGHT_BITS).rev() {
                let len = 1usize << bit;
                if hashes.len() & len != 0 {
                    subtrees.push(perfect_root(&hashes[start..start + len]));
                    start += len;
                }
            }
        }
        fold_right_edge(&subtrees)
    }
}

const TILE_HEIGHT_BITS: u32 = crate::tile::TILE_HEIGHT;

/// Incremental builder of entry bundles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BundleBuilder {
    size: u64,
    partial: Vec<u8>,
}

impl BundleBuilder {
    /// A builder for the empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resumes from the partial bundle of a log of `size` (empty when `size` is a multiple of 256).
    pub fn from_partial(size: u64, partial: &[u8]) -> Result<Self, BuildError> {
        let expected = (size % u64::from(TILE_WIDTH)) as usize;
        bundle::decode(partial, Some(expected))?;
        Ok(Self {
            size,
            partial: partial.to_vec(),
        })
    }

    /// Number of entries appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends entries and returns the bundles the grown log has that the old one did not: full bundles
    /// completed, then the new partial bundle. Nothing is appended if any entry is invalid.
    pub fn extend<E: AsRef<[u8]>>(&mut self, entries: &[E]) -> Result<Vec<Bundle>, BundleError> {
        for (index, entry) in entries.iter().enumerate() {
            bundle::check_entry(index, entry.as_ref())?;
        }
        let w = u64::from(TILE_WIDTH);
        let mut out = Vec::new();
        for entry in entries {
            bundle::push_entry(&mut self.partial, entry.as_ref())?;
            self.size += 1;
            if self.size.is_multiple_of(w) {
                let data = std::mem::take(&mut self.partial);
                out.push(Bundle {
                    id: BundleId::full(self.size / w - 1),
                    data,
                });
            }
        }
        if !entries.is_empty() && !self.size.is_multiple_of(w) {
            out.push(self.partial_bundle_unchecked());
        }
        Ok(out)
    }

    /// The current partial bundle, if the log size is not a multiple of 256.
    pub fn partial_bundle(&self) -> Option<Bundle> {
        (!self.size.is_multiple_of(u64::from(TILE_WIDTH))).then(|| self.partial_bundle_unchecked())
    }

    fn partial_bundle_unchecked(&self) -> Bundle {
        let w = u64::from(TILE_WIDTH);
        Bundle {
            id: BundleId {
                index: self.size / w,
                width: (self.size % w) as u16,
            },
            data: self.partial.clone(),
        }
    }
}

/// Splits tile contents into hashes (the length must be a multiple of 32; a trailing remainder is ignored).
pub fn split_hashes(data: &[u8]) -> Vec<Hash> {
    data.chunks_exact(HASH_SIZE)
        .map(|c| Hash(c.try_into().unwrap_or([0; HASH_SIZE])))
        .collect()
}

/// Concatenates hashes into tile contents.
pub fn join_hashes(hashes: &[Hash]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hashes.len() * HASH_SIZE);
    for h in hashes {
        out.extend_from_slice(&h.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::TreeEdge;
    use crate::hash::leaf_hash;
    use crate::tile::new_tiles;

    #[test]
    fn extend_emits_exactly_new_tiles_and_matching_root() {
        let mut b = TileBuilder::new();
        let mut edge = TreeEdge::new();
        let mut size = 0u64;
        for batch in [1usize, 254, 1, 1, 300, 65_000, 7] {
            let leaves: Vec<Hash> = (size..size + batch as u64)
                .map(|i| leaf_hash(&i.to_be_bytes()))
                .collect();
            let tiles = b.extend(&leaves);
            edge.extend(leaves.iter().copied());
            assert_eq!(
                tiles.iter().map(|t| t.id).collect::<Vec<_>>(),
                new_tiles(size, size + batch as u64)
            );
            size += batch as u64;
            assert_eq!(b.root(), edge.root(), "size {size}");
            let partials = b.partial_tiles();
            let resumed =
                TileBuilder::from_partial_tiles(size, partials.iter().map(|t| (t.id, t.data.as_slice())));
            assert_eq!(resumed.as_ref(), Ok(&b));
        }
    }

    #[test]
    fn resume_rejects_wrong_tiles() {
        let mut b = TileBuilder::new();
        b.extend(&[leaf_hash(b"a"), leaf_hash(b"b")]);
        let p = b.partial_tiles();
        assert!(TileBuilder::from_partial_tiles(3, p.iter().map(|t| (t.id, t.data.as_slice()))).is_err());
        assert!(TileBuilder::from_partial_tiles(2, [(p[0].id, &p[0].data[..32])]).is_err());
        assert!(TileBuilder::from_partial_tiles(2, []).is_err());
    }

    #[test]
    fn bundles() {
        let mut b = BundleBuilder::new();
        assert_eq!(
            b.extend(&[b"".as_slice()]),
            Err(BundleError::EmptyEntry { index: 0 })
        );
        assert_eq!(b.size(), 0, "a rejected batch appends nothing");
        let entries: Vec<Vec<u8>> = (0..300u32).map(|i| format!("e{i}").into_bytes()).collect();
        let out = b.extend(&entries).expect("valid");
        assert_eq!(
            out.iter().map(|x| x.id).collect::<Vec<_>>(),
            vec![BundleId::full(0), BundleId { index: 1, width: 44 }]
        );
        let resumed = BundleBuilder::from_partial(300, &out[1].data).expect("valid partial");
        assert_eq!(resumed, b);
        assert!(BundleBuilder::from_partial(301, &out[1].data).is_err());
    }
}
