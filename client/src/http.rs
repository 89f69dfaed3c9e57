//! The read path over plain HTTP: nothing here needs a Cairn server, only the C2SP tlog-tiles layout
//! and a `shards.json`.

use std::collections::BTreeSet;

use cairn_tlog::proof::{TileMap, consistency_tiles, inclusion_tiles};
use cairn_tlog::tile::{TILE_WIDTH, TileId, tile_width};
use cairn_tlog::{
    BundleId, Checkpoint, Hash, TileBuilder, VerifierKey, bundle, consistency_proof, inclusion_proof,
    leaf_hash, verify_consistency,
};
use serde::Deserialize;

use crate::error::ClientError;

/// A shard as `shards.json` lists it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ShardListing {
    /// Shard id.
    pub id: u32,
    /// Checkpoint origin.
    pub origin: String,
    /// Verifier key.
    pub vkey: String,
    /// `active` or `frozen`.
    pub state: String,
    /// Path under which its files are served.
    pub prefix: String,
}

#[derive(Deserialize)]
struct ShardList {
    shards: Vec<ShardListing>,
}

/// What a full verification of a shard established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedShard {
    /// The checkpoint, signature verified.
    pub checkpoint: Checkpoint,
    /// Every entry, each checked against its leaf hash in the level-0 tiles.
    pub entries: Vec<Vec<u8>>,
}

/// A log's read path at `base` (`http://host:port`, no trailing slash).
#[derive(Clone, Debug)]
pub struct HttpLog {
    base: String,
    http: reqwest::Client,
}

fn verify_err(e: impl std::fmt::Display) -> ClientError {
    ClientError::Verify(e.to_string())
}

impl HttpLog {
    /// A reader of the site at `base`.
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// `GET base + path`: the body, or `None` on 404.
    pub async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, ClientError> {
        let r = self.http.get(format!("{}{path}", self.base)).send().await?;
        match r.status() {
            reqwest::StatusCode::OK => Ok(Some(r.bytes().await?.to_vec())),
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            s => Err(ClientError::Http(format!("GET {path}: {s}"))),
        }
    }

    async fn need(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        self.get(path)
            .await?
            .ok_or_else(|| ClientError::Http(format!("GET {path}: 404 Not Found")))
    }

    /// The shard list.
    pub async fn shards(&self) -> Result<Vec<ShardListing>, ClientError> {
        let body = self.need("/shards.json").await?;
        let list: ShardList =
            serde_json::from_slice(&body).map_err(|e| ClientError::Http(format!("shards.json: {e}")))?;
        Ok(list.shards)
    }

    /// A shard's latest checkpoint, its signature verified with the listed key.
    pub async fn checkpoint(&self, shard: &ShardListing) -> Result<Checkpoint, ClientError> {
        let key = VerifierKey::parse(&shard.vkey).map_err(verify_err)?;
        let note = self.need(&format!("{}/checkpoint", shard.prefix)).await?;
        Ok(Checkpoint::open(&note, &key, &[]).map_err(verify_err)?.0)
    }

    /// Fetches hash tiles as of tree size `latest` (a full or wider tile serves every smaller tree).
    async fn tiles(
        &self,
        shard: &ShardListing,
        tiles: impl IntoIterator<Item = TileId>,
        latest: u64,
    ) -> Result<TileMap, ClientError> {
        let mut map = TileMap::new();
        for t in tiles.into_iter().collect::<BTreeSet<_>>() {
            let width = tile_width(latest, t.level, t.index)
                .ok_or_else(|| ClientError::Invalid(format!("tile {t} is beyond tree size {latest}")))?;
            let id = TileId { width, ..t };
            let data = self.need(&format!("{}/{}", shard.prefix, id.path())).await?;
            if data.len() != id.byte_len() {
                return Err(ClientError::Verify(format!("{id} has {} bytes", data.len())));
            }
            map.insert((t.level, t.index), data);
        }
        Ok(map)
    }

    /// Verifies a whole shard from its files: the checkpoint signature; every entry bundle; the root
    /// recomputed from the entries equal to the checkpoint's; and every hash tile of every level, full and
    /// partial, byte for byte equal to the tile recomputed from the entries.
    pub async fn verify_shard(&self, shard: &ShardListing) -> Result<VerifiedShard, ClientError> {
        let checkpoint = self.checkpoint(shard).await?;
        let size = checkpoint.size;
        let width = u64::from(TILE_WIDTH);
        let mut builder = TileBuilder::new();
        let mut tiles = Vec::new();
        let mut entries = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        for index in 0..size.div_ceil(width) {
            let b = BundleId {
                index,
                width: (size - index * width).min(width) as u16,
            };
            let data = self.need(&format!("{}/{}", shard.prefix, b.path())).await?;
            let decoded = bundle::decode(&data, Some(usize::from(b.width))).map_err(verify_err)?;
            if decoded.len() != usize::from(b.width) {
                return Err(ClientError::Verify(format!(
                    "{b} holds {} entries",
                    decoded.len()
                )));
            }
            let leaves: Vec<Hash> = decoded.iter().map(|e| leaf_hash(e)).collect();
            // Only full tiles: the partial tiles of intermediate sizes were never published.
            tiles.extend(builder.extend(&leaves).into_iter().filter(|t| t.id.is_full()));
            entries.extend(decoded.into_iter().map(<[u8]>::to_vec));
        }
        if builder.root() != checkpoint.root {
            return Err(ClientError::Verify(format!(
                "shard {}: the entries do not hash to the checkpoint's root",
                shard.id
            )));
        }
        tiles.extend(builder.partial_tiles());
        for t in tiles {
            let served = self.need(&format!("{}/{}", shard.prefix, t.id.path())).await?;
            if served != t.data {
                return Err(ClientError::Verify(format!(
                    "shard {}: {} differs from the tile computed from the entries",
                    shard.id, t.id
                )));
            }
        }
        Ok(VerifiedShard { checkpoint, entries })
    }

    /// The inclusion proof of `index` in the tree of `size`, built locally from the tiles.
    pub async fn inclusion_proof(
        &self,
        shard: &ShardListing,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, ClientError> {
        let latest = self.checkpoint(shard).await?.size;
        let tiles = self
            .tiles(shard, inclusion_tiles(size, index).map_err(verify_err)?, latest)
            .await?;
        inclusion_proof(&tiles, size, index).map_err(verify_err)
    }

    /// One step of following a log: fetches the latest checkpoint and, if `previous` is given, proves
    /// from the tiles that the new tree extends it. Returns the new checkpoint.
    pub async fn follow(
        &self,
        shard: &ShardListing,
        previous: Option<&Checkpoint>,
    ) -> Result<Checkpoint, ClientError> {
        let latest = self.checkpoint(shard).await?;
        let Some(prev) = previous else {
            return Ok(latest);
        };
        if latest.size < prev.size {
            return Err(ClientError::Verify(format!(
                "the checkpoint went backwards from {} to {}",
                prev.size, latest.size
            )));
        }
        if prev.size == 0 || latest.size == prev.size {
            if latest.size == prev.size && latest.root != prev.root {
                return Err(ClientError::Verify(
                    "two different roots for the same size".into(),
                ));
            }
            return Ok(latest);
        }
        let tiles = self
            .tiles(
                shard,
                consistency_tiles(prev.size, latest.size).map_err(verify_err)?,
                latest.size,
            )
            .await?;
        let proof = consistency_proof(&tiles, prev.size, latest.size).map_err(verify_err)?;
        verify_consistency(prev.size, latest.size, &proof, &prev.root, &latest.root).map_err(verify_err)?;
        Ok(latest)
    }
}
