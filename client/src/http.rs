//! The read path over plain HTTP: nothing here needs a Cairn server, only the C2SP tlog-tiles layout
//! and a `shards.json`. Reading and verifying is `cairn_store::TileReader`'s, over an HTTP [`Source`].

use std::time::Duration;

use bytes::Bytes;
use cairn_store::{ReadError, ShardListing, ShardsJson, Source, TileCache, TileReader};
use cairn_tlog::{Checkpoint, Hash, VerifierKey, verify_consistency};

use crate::error::ClientError;

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

/// One shard's files over HTTP, for a [`TileReader`].
#[derive(Clone, Debug)]
pub struct HttpShard {
    base: String,
    http: reqwest::Client,
}

impl Source for HttpShard {
    async fn get(&self, rel: &str) -> Result<Option<Bytes>, ReadError> {
        let url = format!("{}/{rel}", self.base);
        let unavailable = |e: reqwest::Error| ReadError::Unavailable(format!("GET {url}: {e}"));
        let r = self.http.get(&url).send().await.map_err(unavailable)?;
        match r.status() {
            reqwest::StatusCode::OK => Ok(Some(r.bytes().await.map_err(unavailable)?)),
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            s => Err(ReadError::Unavailable(format!("GET {url}: {s}"))),
        }
    }

    fn describe(&self) -> String {
        self.base.clone()
    }
}

impl HttpShard {
    /// The files of the log whose read path is `base` (no trailing slash needed), over `http`.
    pub fn new(base: &str, http: reqwest::Client) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        }
    }
}

fn verify_err(e: impl std::fmt::Display) -> ClientError {
    ClientError::Verify(e.to_string())
}

impl From<ReadError> for ClientError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Unavailable(m) => Self::Http(m),
            ReadError::Invalid(m) => Self::Invalid(m),
            ReadError::NoCheckpoint | ReadError::NotPublished(_) | ReadError::NotFound(_) => {
                Self::Http(e.to_string())
            }
            ReadError::Corrupt(m) => Self::Verify(m),
        }
    }
}

impl HttpLog {
    /// A reader of the site at `base`.
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// A reader of the site at `base` over `http` (for TLS settings: [`crate::TlsOptions`]).
    pub fn with_client(base: &str, http: reqwest::Client) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// The site's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The HTTP client (connections are pooled: share it).
    pub fn client(&self) -> reqwest::Client {
        self.http.clone()
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

    /// The shard list.
    pub async fn shards(&self) -> Result<Vec<ShardListing>, ClientError> {
        let body = self
            .get("/shards.json")
            .await?
            .ok_or_else(|| ClientError::Http("GET /shards.json: 404 Not Found".into()))?;
        let list = ShardsJson::parse(&body).map_err(|e| ClientError::Http(format!("shards.json: {e}")))?;
        Ok(list.shards)
    }

    /// A verified reader of one shard (its checkpoint is read afresh on every call).
    pub fn reader(&self, shard: &ShardListing) -> Result<TileReader<HttpShard>, ClientError> {
        let key = VerifierKey::parse(&shard.vkey).map_err(verify_err)?;
        let source = HttpShard {
            base: format!("{}{}", self.base, shard.http_prefix),
            http: self.http.clone(),
        };
        Ok(TileReader::new(source, key, TileCache::new(16 << 20)).with_checkpoint_ttl(Duration::ZERO))
    }

    /// A shard's latest checkpoint, its signature verified with the listed key.
    pub async fn checkpoint(&self, shard: &ShardListing) -> Result<Checkpoint, ClientError> {
        Ok(self.reader(shard)?.checkpoint().await?.checkpoint.clone())
    }

    /// Verifies a whole shard from its files (`cairn_tlog::audit`): the checkpoint signature; every entry
    /// bundle; every hash tile of every level, full and partial, byte for byte equal to the tile
    /// recomputed from the entries; and the root equal to the checkpoint's.
    pub async fn verify_shard(&self, shard: &ShardListing) -> Result<VerifiedShard, ClientError> {
        let log = self.reader(shard)?.audit().await.map_err(|e| match e {
            ReadError::Corrupt(m) => ClientError::Verify(format!("shard {}: {m}", shard.id)),
            other => other.into(),
        })?;
        Ok(VerifiedShard {
            checkpoint: log.checkpoint,
            entries: log.entries,
        })
    }

    /// The inclusion proof of `index` in the tree of `size`, built locally from the tiles.
    pub async fn inclusion_proof(
        &self,
        shard: &ShardListing,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, ClientError> {
        Ok(self.reader(shard)?.inclusion_proof(size, index).await?)
    }

    /// One step of following a log: fetches the latest checkpoint and, if `previous` is given, proves
    /// from the tiles that the new tree extends it. Returns the new checkpoint.
    pub async fn follow(
        &self,
        shard: &ShardListing,
        previous: Option<&Checkpoint>,
    ) -> Result<Checkpoint, ClientError> {
        let reader = self.reader(shard)?;
        let latest = reader.checkpoint().await?.checkpoint.clone();
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
        let proof = reader.consistency_proof(prev.size, latest.size).await?;
        verify_consistency(prev.size, latest.size, &proof, &prev.root, &latest.root).map_err(verify_err)?;
        Ok(latest)
    }
}
