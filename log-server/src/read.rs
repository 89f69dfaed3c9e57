//! The read side of the API: checkpoints and proofs, all through each shard's `cairn_store::TileReader`
//! (checkpoint verified against the shard's key; tiles read at the widths the verified size implies).

use std::sync::Arc;

use cairn_proto::v1::{GetConsistencyProofRequest, GetInclusionProofRequest};
use cairn_sequencer::ShardId;
use cairn_store::{Bucket, TileReader};
use cairn_tlog::Hash;

use crate::error::LogError;
use crate::service::Inner;

impl Inner {
    pub(crate) fn reader(&self, shard: ShardId) -> Result<Arc<TileReader<Bucket>>, LogError> {
        if let Some(r) = self.readers.lock().ok().and_then(|r| r.get(&shard).cloned()) {
            return Ok(r);
        }
        // A shard added at runtime: its reader is made on first use.
        let s = self.shard(shard)?;
        let reader = Arc::new(self.new_reader(&s)?);
        if let Ok(mut r) = self.readers.lock() {
            r.entry(shard).or_insert_with(|| reader.clone());
        }
        Ok(reader)
    }

    /// The shard's latest checkpoint in object storage, verified with its key.
    pub(crate) async fn checkpoint(&self, shard: ShardId) -> Result<Vec<u8>, LogError> {
        Ok(self.reader(shard)?.checkpoint().await?.note.body.to_vec())
    }

    /// Inclusion proofs of `indexes` against `note`, the checkpoint the sequencer just published:
    /// verified with the shard's key before anything is proven against it.
    pub(crate) async fn published_proofs(
        &self,
        shard: ShardId,
        note: &[u8],
        indexes: &[u64],
    ) -> Result<Vec<Vec<Hash>>, LogError> {
        let reader = self.reader(shard)?;
        let cp = reader.offer(note)?;
        Ok(reader.inclusion_proofs_in(&cp, indexes).await?)
    }

    pub(crate) async fn get_inclusion_proof(
        &self,
        req: GetInclusionProofRequest,
    ) -> Result<Vec<Hash>, LogError> {
        let reader = self.reader(req.shard_id)?;
        Ok(reader.inclusion_proof(req.tree_size, req.index).await?)
    }

    pub(crate) async fn get_consistency_proof(
        &self,
        req: GetConsistencyProofRequest,
    ) -> Result<Vec<Hash>, LogError> {
        let reader = self.reader(req.shard_id)?;
        Ok(reader.consistency_proof(req.first_size, req.second_size).await?)
    }
}
