//! The right edge of an RFC 6962 Merkle tree (a compact range `[0, size)`).
//!
//! A tree of size `s` is the concatenation of one perfect subtree per set bit of `s`, largest first.
//! Keeping the roots of those subtrees is enough to append leaves and to compute the root at every size,
//! in `O(log s)` memory: this is what every replica of a shard keeps to assign indexes and roots
//! deterministically without reading the tree back.

use crate::hash::{Hash, fold_right_edge, node_hash};

/// The roots of the perfect subtrees that make up a tree, left (largest) to right.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeEdge {
    size: u64,
    subtrees: Vec<Hash>,
}

/// A stored edge whose shape does not match its size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a tree of size {size} has {expected} perfect subtrees, got {got}")]
pub struct EdgeError {
    /// The claimed tree size.
    pub size: u64,
    /// `size.count_ones()`.
    pub expected: u32,
    /// How many subtree roots were given.
    pub got: usize,
}

impl TreeEdge {
    /// The edge of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores an edge from its size and subtree roots (as returned by [`TreeEdge::subtrees`]).
    pub fn from_parts(size: u64, subtrees: Vec<Hash>) -> Result<Self, EdgeError> {
        if subtrees.len() != size.count_ones() as usize {
            return Err(EdgeError {
                size,
                expected: size.count_ones(),
                got: subtrees.len(),
            });
        }
        Ok(Self { size, subtrees })
    }

    /// Number of leaves in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Roots of the perfect subtrees, left (largest) to right.
    pub fn subtrees(&self) -> &[Hash] {
        &self.subtrees
    }

    /// Appends one leaf hash. Amortised one node hash per leaf.
    pub fn append(&mut self, leaf: Hash) {
        self.subtrees.push(leaf);
        // Every trailing one bit of the old size is a subtree of the same height as the one just
        // completed: merge them, smallest first.
        let mut carry = self.size;
        while carry & 1 == 1 {
            let right = self.subtrees.pop();
            let left = self.subtrees.pop();
            if let (Some(left), Some(right)) = (left, right) {
                self.subtrees.push(node_hash(&left, &right));
            }
            carry >>= 1;
        }
        self.size += 1;
    }

    /// Appends many leaf hashes.
    pub fn extend<I: IntoIterator<Item = Hash>>(&mut self, leaves: I) {
        for leaf in leaves {
            self.append(leaf);
        }
    }

    /// The tree's root hash (the empty tree's root when empty).
    pub fn root(&self) -> Hash {
        fold_right_edge(&self.subtrees)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{EMPTY_ROOT, leaf_hash};

    #[test]
    fn shapes() {
        let mut e = TreeEdge::new();
        assert_eq!(e.root(), EMPTY_ROOT);
        for i in 0u32..100 {
            e.append(leaf_hash(&i.to_be_bytes()));
            assert_eq!(e.subtrees().len(), e.size().count_ones() as usize);
        }
        let restored = TreeEdge::from_parts(e.size(), e.subtrees().to_vec());
        assert_eq!(restored.as_ref().map(TreeEdge::root), Ok(e.root()));
        assert!(TreeEdge::from_parts(3, vec![EMPTY_ROOT]).is_err());
    }
}
