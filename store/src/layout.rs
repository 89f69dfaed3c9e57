//! The published layout: where a shard's files live in object storage and on the read path, and the
//! shard list (`shards.json`) that tells verifiers which shards exist.
//!
//! A shard's files are `<prefix>/checkpoint`, `<prefix>/tile/<L>/<N>[.p/<W>]` and
//! `<prefix>/tile/entries/<N>[.p/<W>]`, where the prefix is `logs/<id>` under the bucket's root and
//! `/logs/<id>` on the read path.

use cairn_tlog::VerifierKey;
use cairn_tlog::note::NoteError;
use serde::{Deserialize, Serialize};

/// A shard: one log, one Raft group.
pub type ShardId = u32;

/// The folder, under the bucket root and the read path's root, that holds every shard's folder.
pub const SHARDS_DIR: &str = "logs";

/// A shard's object-store prefix, relative to the log's bucket root: `logs/<id>`.
pub fn shard_prefix(id: ShardId) -> String {
    format!("{SHARDS_DIR}/{id}")
}

/// A shard's path prefix on the read path: `/logs/<id>`.
pub fn http_prefix(id: ShardId) -> String {
    format!("/{}", shard_prefix(id))
}

/// A shard's identity: the same in configuration, in the shard's replicated state, in the API and in
/// `shards.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Shard id.
    pub id: ShardId,
    /// Checkpoint origin, also the signing key's name.
    pub origin: String,
    /// The shard's verifier key, `<origin>+<key id>+<base64 key>`.
    pub vkey: String,
}

impl Shard {
    /// Where its files are in object storage (see [`shard_prefix`]).
    pub fn prefix(&self) -> String {
        shard_prefix(self.id)
    }

    /// Where the read path serves it (see [`http_prefix`]).
    pub fn http_prefix(&self) -> String {
        http_prefix(self.id)
    }

    /// The parsed verifier key.
    pub fn verifier(&self) -> Result<VerifierKey, NoteError> {
        VerifierKey::parse(&self.vkey)
    }
}

/// Where a shard is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// Accepting entries.
    Active,
    /// Read-only forever; its checkpoint is final.
    Frozen,
    /// Added, not yet taking entries (its window has not started, or its group is starting): listed
    /// ahead of time so that verifiers and monitors know it before its first entry.
    Planned,
}

impl Lifecycle {
    /// `active`, `frozen` or `planned`, as `shards.json` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Frozen => "frozen",
            Self::Planned => "planned",
        }
    }

    /// The state `shards.json` writes as `s`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "frozen" => Some(Self::Frozen),
            "planned" => Some(Self::Planned),
            _ => None,
        }
    }
}

/// What a shard logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardKind {
    /// Any bytes (`cairn.v1.Log`).
    #[default]
    Opaque,
    /// Only validated Sigstore `hashedrekord` v0.0.2 entries, so monitors can parse every entry: a
    /// Rekor v2-compatible log.
    Sigstore,
}

impl ShardKind {
    /// `opaque` or `sigstore`, as configuration and `shards.json` write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opaque => "opaque",
            Self::Sigstore => "sigstore",
        }
    }
}

/// A shard as `shards.json` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardListing {
    /// Identity.
    #[serde(flatten)]
    pub shard: Shard,
    /// What it logs (`opaque` when a document predates kinds).
    #[serde(default)]
    pub kind: ShardKind,
    /// Lifecycle state.
    pub state: Lifecycle,
    /// Path under which the read path serves its files (`prefix` in the document).
    #[serde(rename = "prefix")]
    pub http_prefix: String,
    /// Start of the shard's validity window, in Unix seconds, when the operator published one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<u64>,
    /// End of its validity window, in Unix seconds: it is frozen then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<u64>,
    /// A frozen shard whose Raft group was stopped: served from object storage alone (written only
    /// when true).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub archived: bool,
    /// A Sigstore shard's base URL (clients sign to `<base_url>/api/v2/log/entries`; its host is
    /// the origin), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
}

impl ShardListing {
    /// The listing of `shard` of `kind` in `state`, at its read-path prefix.
    pub fn new(shard: Shard, kind: ShardKind, state: Lifecycle) -> Self {
        let http_prefix = shard.http_prefix();
        Self {
            shard,
            kind,
            state,
            http_prefix,
            valid_from: None,
            valid_until: None,
            archived: false,
            base_url: None,
        }
    }
}

/// Shards a process learns while it runs (added through the cluster's control group), with their
/// current state: asked on every use, so it must be cheap.
#[derive(Clone)]
pub struct Catalog(std::sync::Arc<dyn Fn() -> Vec<ShardListing> + Send + Sync>);

impl Catalog {
    /// A catalog answered by `f`.
    pub fn new(f: impl Fn() -> Vec<ShardListing> + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(f))
    }

    /// The shards now.
    pub fn shards(&self) -> Vec<ShardListing> {
        (self.0)()
    }
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Catalog")
    }
}

impl std::ops::Deref for ShardListing {
    type Target = Shard;

    fn deref(&self) -> &Shard {
        &self.shard
    }
}

/// The `shards.json` document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardsJson {
    /// Every shard, active and frozen.
    pub shards: Vec<ShardListing>,
}

impl ShardsJson {
    /// The document's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain strings, numbers and enums cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a document.
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Seconds since the Unix epoch now: the clock shards' validity windows ([`ShardListing`]'s
/// `valid_from` and `valid_until`) are read against.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
