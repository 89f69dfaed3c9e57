//! Verification of inclusion and consistency proofs, following RFC 9162 §2.1.3.2 and §2.1.4.2.
//!
//! Both algorithms reject a proof of the wrong length before hashing anything, so a verifier never
//! accepts trailing or missing hashes.

use crate::hash::{Hash, node_hash};
use crate::proof::ProofError;

/// The root that an inclusion proof for `leaf` at `index` in a tree of `size` leads to.
pub fn root_from_inclusion_proof(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    // The path length is the number of levels where the leaf's ancestor has a sibling.
    let expected = inner_len(index, size) + (index >> inner_len(index, size)).count_ones() as usize;
    if proof.len() != expected {
        return Err(ProofError::ProofLength {
            expected,
            got: proof.len(),
        });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    // The length check above makes the walk end at the root; a failure here is a logic error, but it
    // must still reject rather than accept.
    if snode != 0 {
        return Err(ProofError::Mismatch);
    }
    Ok(r)
}

/// Verifies that `leaf` is at `index` in the tree of `size` with root `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if root_from_inclusion_proof(leaf, index, size, proof)? == *root {
        Ok(())
    } else {
        Err(ProofError::Mismatch)
    }
}

/// Number of levels below the point where the paths to `index` and to the last leaf diverge.
fn inner_len(index: u64, size: u64) -> usize {
    (64 - (index ^ (size - 1)).leading_zeros()) as usize
}

/// Verifies that the tree of `size2` with `root2` extends the tree of `size1` with `root1`.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> Result<(), ProofError> {
    if size1 > size2 {
        return Err(ProofError::Sizes { size1, size2 });
    }
    if size1 == size2 {
        // Identical trees: the proof must be empty and the roots equal.
        if !proof.is_empty() {
            return Err(ProofError::ProofLength {
                expected: 0,
                got: proof.len(),
            });
        }
        return if root1 == root2 {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    if size1 == 0 {
        // Every tree extends the empty tree; there is nothing to prove.
        if !proof.is_empty() {
            return Err(ProofError::ProofLength {
                expected: 0,
                got: proof.len(),
            });
        }
        return Ok(());
    }
    // RFC 9162 §2.1.4.2. When size1 is a power of two, its root is the first node of the path.
    let size1_is_pow2 = size1.is_power_of_two();
    let (mut fnode, mut snode) = (size1 - 1, size2 - 1);
    let shift = fnode.trailing_ones();
    fnode >>= shift;
    snode >>= shift;
    let inner = (64 - (fnode ^ snode).leading_zeros()) as usize;
    let expected = inner + (fnode >> inner).count_ones() as usize + usize::from(!size1_is_pow2);
    if proof.len() != expected {
        return Err(ProofError::ProofLength {
            expected,
            got: proof.len(),
        });
    }
    let (first, rest) = if size1_is_pow2 {
        (root1, proof)
    } else {
        (&proof[0], &proof[1..])
    };
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return Err(ProofError::Mismatch);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode == 0 && fr == *root1 && sr == *root2 {
        Ok(())
    } else {
        Err(ProofError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;

    #[test]
    fn wrong_lengths_are_rejected_before_hashing() {
        let l = leaf_hash(b"a");
        assert_eq!(root_from_inclusion_proof(&l, 0, 1, &[]), Ok(l));
        assert_eq!(
            root_from_inclusion_proof(&l, 0, 1, &[l]),
            Err(ProofError::ProofLength { expected: 0, got: 1 })
        );
        assert_eq!(
            root_from_inclusion_proof(&l, 1, 1, &[]),
            Err(ProofError::IndexOutOfRange { index: 1, size: 1 })
        );
        assert!(verify_consistency(2, 1, &[], &l, &l).is_err());
        assert!(verify_consistency(0, 3, &[l], &l, &l).is_err());
        assert!(verify_consistency(3, 3, &[], &l, &l).is_ok());
    }
}
