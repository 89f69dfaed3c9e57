//! Helpers shared by the store's integration tests: logs written by `cairn_store::testing::write_log`
//! into in-memory buckets, and a naive RFC 6962 Merkle tree hash (SHA-256 straight from `sha2`) as the
//! independent reference that expected roots and tiles come from.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_store::testing::{test_signer, write_log};
use cairn_store::{Bucket, ShardId, TileCache, TileReader, shard_prefix};
use cairn_tlog::{Checkpoint, Hash, Signer};
use object_store::memory::InMemory;
use object_store::path::Path;
use sha2::{Digest, Sha256};

/// Batch sizes of the usual test log: checkpoints at 1, 256, 1256, 1259 and 6259 entries.
pub const BATCHES: [usize; 5] = [1, 255, 1000, 3, 5000];
/// Entries in the usual test log.
pub const LOG_SIZE: usize = 6259;

/// The root of a fresh in-memory store.
pub fn memory_root() -> Bucket {
    Bucket::new(Arc::new(InMemory::new()), Path::default())
}

/// `n` entries of varying lengths (1 to 40 bytes or so), distinct per `tag`.
pub fn entries(tag: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut e = format!("{tag}-{i}").into_bytes();
            e.resize(e.len() + i % 17, b'.');
            e
        })
        .collect()
}

/// A log written into a shard's bucket.
pub struct Log {
    /// The shard's bucket (`logs/<id>` under the store's root).
    pub bucket: Bucket,
    /// The shard id.
    pub id: ShardId,
    /// Every entry, in order.
    pub entries: Vec<Vec<u8>>,
    /// The checkpoints `write_log` returned, in order.
    pub checkpoints: Vec<Checkpoint>,
}

impl Log {
    /// The shard's signing key.
    pub fn signer(&self) -> Signer {
        test_signer(self.id)
    }

    /// The last checkpoint.
    pub fn latest(&self) -> &Checkpoint {
        self.checkpoints
            .last()
            .unwrap_or_else(|| panic!("write_log returned no checkpoint"))
    }

    /// The checkpoint of exactly `size`.
    pub fn checkpoint_of(&self, size: u64) -> &Checkpoint {
        self.checkpoints
            .iter()
            .find(|c| c.size == size)
            .unwrap_or_else(|| panic!("no checkpoint of size {size}"))
    }

    /// `cp` signed with the shard's key, as a note's bytes.
    pub fn note(&self, cp: &Checkpoint) -> Vec<u8> {
        cp.sign(&self.signer()).to_bytes()
    }

    /// Replaces the stored checkpoint.
    pub async fn store_checkpoint(&self, note: Vec<u8>) {
        self.bucket
            .put("checkpoint", Bytes::from(note))
            .await
            .unwrap_or_else(|e| panic!("put checkpoint: {e}"));
    }

    /// The stored object at `rel`, which must exist.
    pub async fn object(&self, rel: &str) -> Vec<u8> {
        match self.bucket.get(rel).await {
            Ok(Some(b)) => b.to_vec(),
            other => panic!("{rel}: {other:?}"),
        }
    }

    /// Overwrites the object at `rel`.
    pub async fn replace(&self, rel: &str, data: Vec<u8>) {
        self.bucket
            .put(rel, Bytes::from(data))
            .await
            .unwrap_or_else(|e| panic!("put {rel}: {e}"));
    }

    /// Flips one bit of byte `at` of the object at `rel` (from the end when `at` is negative); returns
    /// the original bytes.
    pub async fn tamper(&self, rel: &str, at: isize) -> Vec<u8> {
        let original = self.object(rel).await;
        let mut bad = original.clone();
        let i = if at < 0 {
            bad.len() - at.unsigned_abs()
        } else {
            at.unsigned_abs()
        };
        bad[i] ^= 0x01;
        self.replace(rel, bad).await;
        original
    }

    /// Deletes the object at `rel`.
    pub async fn delete(&self, rel: &str) {
        use object_store::ObjectStoreExt;
        self.bucket
            .store()
            .delete(&self.bucket.path(rel))
            .await
            .unwrap_or_else(|e| panic!("delete {rel}: {e}"));
    }

    /// A reader of this shard with its own cache, re-reading the checkpoint on every call.
    pub fn reader(&self) -> TileReader<Bucket> {
        self.reader_with(TileCache::new(16 << 20))
    }

    /// A reader of this shard over `cache`, re-reading the checkpoint on every call.
    pub fn reader_with(&self, cache: TileCache) -> TileReader<Bucket> {
        TileReader::new(self.bucket.clone(), test_signer(self.id).verifier(), cache)
            .with_checkpoint_ttl(Duration::ZERO)
    }

    /// Leaf hashes of every entry, computed by the naive reference.
    pub fn leaves(&self) -> Vec<[u8; 32]> {
        self.entries.iter().map(|e| naive_leaf(e)).collect()
    }
}

/// Writes `entries` as shard `id` of `root` in batches of `batches` (see `write_log`).
pub async fn write(root: &Bucket, id: ShardId, entries: Vec<Vec<u8>>, batches: &[usize]) -> Log {
    let bucket = root.child(&shard_prefix(id));
    let checkpoints = write_log(&bucket, &test_signer(id), &entries, batches)
        .await
        .unwrap_or_else(|e| panic!("write_log: {e}"));
    Log {
        bucket,
        id,
        entries,
        checkpoints,
    }
}

/// The usual test log: [`LOG_SIZE`] entries in [`BATCHES`], as shard 1 of a fresh in-memory store.
pub async fn usual_log() -> Log {
    write(&memory_root(), 1, entries("entry", LOG_SIZE), &BATCHES).await
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let mut out = [0; 32];
    out.copy_from_slice(&h.finalize());
    out
}

/// RFC 6962 leaf hash, `SHA-256(0x00 || entry)`.
pub fn naive_leaf(entry: &[u8]) -> [u8; 32] {
    sha256(&[&[0], entry])
}

/// RFC 6962 Merkle tree hash of `leaves`, by the recursive definition.
pub fn naive_root(leaves: &[[u8; 32]]) -> Hash {
    fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
        match leaves.len() {
            0 => sha256(&[]),
            1 => leaves[0],
            n => {
                let k = 1 << (n - 1).ilog2();
                sha256(&[&[1], &mth(&leaves[..k]), &mth(&leaves[k..])])
            }
        }
    }
    Hash(mth(leaves))
}

/// A level-0 hash tile by hand: the leaf hashes, concatenated.
pub fn naive_tile0(leaves: &[[u8; 32]]) -> Vec<u8> {
    leaves.concat()
}

/// An entry bundle by hand: each entry as a big-endian u16 length and its bytes.
pub fn naive_bundle(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&u16::try_from(e.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(e);
    }
    out
}
