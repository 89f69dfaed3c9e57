//! The `TransparencyLogEntry` a Sigstore shard answers a submission with, and its protojson form.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cairn_tlog::{Checkpoint, Hash, VerifierKey};
use sigstore_protobuf_specs::dev::sigstore::common::v1::LogId;
use sigstore_protobuf_specs::dev::sigstore::rekor::v1::{
    Checkpoint as PbCheckpoint, InclusionProof, KindVersion, TransparencyLogEntry,
};

use crate::hashedrekord::{API_VERSION, KIND};

/// A shard's Sigstore log id: the full 32-byte key hash of its checkpoint key
/// (`SHA-256(origin || "\n" || 0x01 || Ed25519 key)` for the Ed25519 keys shards sign with).
pub fn log_id(key: &VerifierKey) -> [u8; 32] {
    key.key_hash()
}

/// A logged entry with its inclusion proof in a signed checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Index in the shard.
    pub index: u64,
    /// The shard's log id ([`log_id`]).
    pub log_id: [u8; 32],
    /// The canonical body logged.
    pub body: Vec<u8>,
    /// The inclusion proof, leaf to root.
    pub proof: Vec<Hash>,
    /// The signed checkpoint the proof leads to (the whole note).
    pub checkpoint: Vec<u8>,
}

impl LogEntry {
    /// The checkpoint's tree size and root (read from the note's text; the note's signature is the
    /// log's own and was made by this server).
    fn tree(&self) -> Result<(u64, Hash), String> {
        let cp = Checkpoint::parse_note_unverified(&self.checkpoint)
            .map_err(|e| format!("the checkpoint does not parse: {e}"))?;
        Ok((cp.size, cp.root))
    }

    /// As the protobuf message.
    pub fn to_proto(&self) -> Result<TransparencyLogEntry, String> {
        let (size, root) = self.tree()?;
        let index = i64::try_from(self.index).map_err(|_| "index out of range")?;
        let size = i64::try_from(size).map_err(|_| "tree size out of range")?;
        Ok(TransparencyLogEntry {
            log_index: index,
            log_id: Some(LogId {
                key_id: self.log_id.to_vec(),
            }),
            kind_version: Some(KindVersion {
                kind: KIND.into(),
                version: API_VERSION.into(),
            }),
            integrated_time: 0,
            inclusion_promise: None,
            inclusion_proof: Some(InclusionProof {
                log_index: index,
                root_hash: root.as_bytes().to_vec(),
                tree_size: size,
                hashes: self.proof.iter().map(|h| h.as_bytes().to_vec()).collect(),
                checkpoint: Some(PbCheckpoint {
                    envelope: String::from_utf8_lossy(&self.checkpoint).into_owned(),
                }),
            }),
            canonicalized_body: self.body.clone(),
        })
    }

    /// The protojson reply, as rekor-tiles writes it: lowerCamelCase, 64-bit integers as strings,
    /// bytes in padded base64, every field present even at its zero value (`"logIndex": "0"`,
    /// `"hashes": []`, `"integratedTime": "0"`), and no inclusion promise (Rekor v2 gives none; some
    /// clients refuse a v2 entry that has one). Written directly (one per submission): only the
    /// checkpoint's text needs escaping.
    pub fn to_json(&self) -> Result<String, String> {
        let (size, root) = self.tree()?;
        let b64 = STANDARD;
        let envelope = serde_json::to_string(&String::from_utf8_lossy(&self.checkpoint))
            .map_err(|e| format!("the checkpoint does not encode: {e}"))?;
        let mut out =
            String::with_capacity(300 + envelope.len() + self.body.len() * 4 / 3 + self.proof.len() * 48);
        let index = self.index.to_string();
        out.push_str(r#"{"logIndex":""#);
        out.push_str(&index);
        out.push_str(r#"","logId":{"keyId":""#);
        b64.encode_string(self.log_id, &mut out);
        out.push_str(r#""},"kindVersion":{"kind":""#);
        out.push_str(KIND);
        out.push_str(r#"","version":""#);
        out.push_str(API_VERSION);
        out.push_str(r#""},"integratedTime":"0","inclusionProof":{"logIndex":""#);
        out.push_str(&index);
        out.push_str(r#"","rootHash":""#);
        b64.encode_string(root.as_bytes(), &mut out);
        out.push_str(r#"","treeSize":""#);
        out.push_str(&size.to_string());
        out.push_str(r#"","hashes":["#);
        for (i, h) in self.proof.iter().enumerate() {
            out.push_str(if i == 0 { "\"" } else { ",\"" });
            b64.encode_string(h.as_bytes(), &mut out);
            out.push('"');
        }
        out.push_str(r#"],"checkpoint":{"envelope":"#);
        out.push_str(&envelope);
        out.push_str(r#"}},"canonicalizedBody":""#);
        b64.encode_string(&self.body, &mut out);
        out.push_str("\"}");
        Ok(out)
    }
}
