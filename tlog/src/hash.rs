//! Merkle tree hashing as specified by RFC 6962 §2.1 (and RFC 9162 §2.1.1), with SHA-256.
//!
//! - leaf hash: `SHA-256(0x00 || entry)`
//! - interior node: `SHA-256(0x01 || left || right)`
//! - the empty tree's root: `SHA-256("")`

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// Length in bytes of every hash in the tree.
pub const HASH_SIZE: usize = 32;

/// A SHA-256 Merkle tree hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; HASH_SIZE]);

/// The root of the empty tree: SHA-256 of the empty string.
pub const EMPTY_ROOT: Hash = Hash([
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24, 0x27,
    0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
]);

/// A byte string that is not a 32-byte hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// The input decodes to the wrong number of bytes.
    #[error("a hash is {HASH_SIZE} bytes, got {0}")]
    Length(usize),
    /// The input is not canonical standard base64.
    #[error("hash is not valid standard base64")]
    Base64,
}

impl Hash {
    /// Reads a hash from a slice that must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, HashError> {
        <[u8; HASH_SIZE]>::try_from(bytes)
            .map(Hash)
            .map_err(|_| HashError::Length(bytes.len()))
    }

    /// Parses canonical standard base64 (RFC 4648 §4, padded) of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, HashError> {
        // A 32-byte value is always 44 characters; checking first bounds the work on hostile input.
        if text.len() != 44 {
            return Err(HashError::Base64);
        }
        let bytes = STANDARD.decode(text).map_err(|_| HashError::Base64)?;
        Self::from_slice(&bytes)
    }

    /// Standard padded base64, as used in checkpoints and proofs.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Lower-case hexadecimal.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The bytes of the hash.
    pub fn as_bytes(&self) -> &[u8; HASH_SIZE] {
        &self.0
    }
}

impl AsRef<[u8]> for Hash {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// RFC 6962 leaf hash: `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(entry);
    Hash(h.finalize().into())
}

/// RFC 6962 interior node hash: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 1 + 2 * HASH_SIZE];
    buf[0] = 0x01;
    buf[1..1 + HASH_SIZE].copy_from_slice(&left.0);
    buf[1 + HASH_SIZE..].copy_from_slice(&right.0);
    Hash(Sha256::digest(buf).into())
}

/// The root of a perfect subtree whose leaves (at any height) are `hashes`, whose length must be a
/// power of two. Hashes in place, pairwise, level by level.
pub(crate) fn perfect_root(hashes: &[Hash]) -> Hash {
    debug_assert!(hashes.len().is_power_of_two());
    if hashes.len() == 1 {
        return hashes[0];
    }
    let mut level: Vec<Hash> = hashes.chunks_exact(2).map(|p| node_hash(&p[0], &p[1])).collect();
    while level.len() > 1 {
        let next: Vec<Hash> = level.chunks_exact(2).map(|p| node_hash(&p[0], &p[1])).collect();
        level = next;
    }
    level[0]
}

/// Folds the roots of a tree's perfect subtrees, given left (largest) to right, into the tree's root:
/// RFC 6962 hashes the right edge from the right, so the rightmost two subtrees combine first.
pub(crate) fn fold_right_edge(subtrees: &[Hash]) -> Hash {
    let mut iter = subtrees.iter().rev();
    let Some(last) = iter.next() else {
        return EMPTY_ROOT;
    };
    iter.fold(*last, |acc, left| node_hash(left, &acc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(EMPTY_ROOT, Hash(Sha256::digest(b"").into()));
    }

    #[test]
    fn base64_round_trip_and_rejections() {
        let h = leaf_hash(b"x");
        assert_eq!(Hash::from_base64(&h.to_base64()), Ok(h));
        assert_eq!(Hash::from_base64("AAAA"), Err(HashError::Base64));
        // 33 bytes of base64 is the wrong length.
        assert!(Hash::from_base64(&STANDARD.encode([0u8; 33])).is_err());
        // Non-canonical trailing bits are rejected by the base64 decoder.
        let mut s = h.to_base64();
        s.replace_range(42..43, "B");
        let canonical = Hash::from_base64(&s).map(|x| x.to_base64() == s);
        assert_ne!(canonical, Ok(false), "a decoded hash must re-encode to its input");
    }

    #[test]
    fn perfect_root_matches_pairwise() {
        let l: Vec<Hash> = (0u8..4).map(|i| leaf_hash(&[i])).collect();
        let want = node_hash(&node_hash(&l[0], &l[1]), &node_hash(&l[2], &l[3]));
        assert_eq!(perfect_root(&l), want);
        assert_eq!(fold_right_edge(&[]), EMPTY_ROOT);
    }
}
