//! Conversions between generated `cairn.v1` messages and the domain types of `cairn-store` and
//! `cairn-tlog`.

use cairn_store::{Lifecycle, Shard, ShardKind, ShardListing};
use cairn_tlog::Hash;

use crate::v1;

impl From<ShardListing> for v1::Shard {
    fn from(l: ShardListing) -> Self {
        Self {
            id: l.shard.id,
            origin: l.shard.origin,
            vkey: l.shard.vkey,
            state: l.state.as_str().to_owned(),
            prefix: l.http_prefix,
            kind: l.kind.as_str().to_owned(),
            valid_from: l.valid_from.unwrap_or(0),
            valid_until: l.valid_until.unwrap_or(0),
            archived: l.archived,
            base_url: l.base_url.unwrap_or_default(),
        }
    }
}

/// A `cairn.v1.Shard` whose state is not `active`, `frozen` or `planned`.
#[derive(Debug, thiserror::Error)]
#[error("shard {id} has unknown state or kind {state:?}")]
pub struct UnknownState {
    /// Shard id.
    pub id: u32,
    /// The state received.
    pub state: String,
}

impl TryFrom<v1::Shard> for ShardListing {
    type Error = UnknownState;

    fn try_from(s: v1::Shard) -> Result<Self, UnknownState> {
        let Some(state) = Lifecycle::parse(&s.state) else {
            return Err(UnknownState {
                id: s.id,
                state: s.state,
            });
        };
        let kind = match s.kind.as_str() {
            "" | "opaque" => ShardKind::Opaque,
            "sigstore" => ShardKind::Sigstore,
            _ => {
                return Err(UnknownState {
                    id: s.id,
                    state: format!("kind {}", s.kind),
                });
            }
        };
        Ok(Self {
            shard: Shard {
                id: s.id,
                origin: s.origin,
                vkey: s.vkey,
            },
            kind,
            state,
            http_prefix: s.prefix,
            valid_from: (s.valid_from > 0).then_some(s.valid_from),
            valid_until: (s.valid_until > 0).then_some(s.valid_until),
            archived: s.archived,
            base_url: (!s.base_url.is_empty()).then_some(s.base_url),
        })
    }
}

impl From<Vec<Hash>> for v1::ProofResponse {
    fn from(hashes: Vec<Hash>) -> Self {
        Self {
            hashes: hashes.iter().map(|h| h.as_bytes().to_vec()).collect(),
        }
    }
}

/// Proof hashes as the API carries them (32 raw bytes each).
pub fn hash_bytes(hashes: &[Hash]) -> Vec<Vec<u8>> {
    hashes.iter().map(|h| h.as_bytes().to_vec()).collect()
}

/// Proof hashes from the API, each checked to be 32 bytes.
pub fn hashes_from_bytes(raw: &[Vec<u8>]) -> Result<Vec<Hash>, cairn_tlog::hash::HashError> {
    raw.iter().map(|h| Hash::from_slice(h)).collect()
}
