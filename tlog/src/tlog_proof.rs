//! Offline proofs of inclusion (c2sp.org/tlog-proof):
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! [extra <base64>]
//! index <N>
//! <base64 hash, leaf to root, one per line>
//!
//! <signed checkpoint, verbatim>
//! ```
//!
//! A proof verifies offline against the log's verifier key (and, by policy, witness keys): the
//! checkpoint's signature, then the entry's inclusion at the index in the checkpointed tree.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::hash::{Hash, leaf_hash};
use crate::note::{Note, VerifierKey};
use crate::proof::ProofError;
use crate::tile::parse_decimal;
use crate::verify::verify_inclusion;

/// The first line of every proof.
pub const HEADER: &str = "c2sp.org/tlog-proof@v1";
/// A tree of 2^64 leaves has inclusion proofs of at most 64 hashes.
pub const MAX_PROOF_HASHES: usize = 64;

/// A parsed tlog-proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlogProof {
    /// Unauthenticated application data.
    pub extra: Option<Vec<u8>>,
    /// Index of the entry.
    pub index: u64,
    /// Inclusion proof, leaf to root.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: Vec<u8>,
}

/// Why a tlog-proof is malformed or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlogProofError {
    /// The text does not follow the tlog-proof format.
    #[error("malformed proof: {0}")]
    Malformed(&'static str),
    /// The checkpoint is malformed or its signature does not verify.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The inclusion proof does not verify against the checkpoint.
    #[error("inclusion: {0}")]
    Inclusion(#[from] ProofError),
}

impl TlogProof {
    /// Serializes the proof.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("{HEADER}\n");
        if let Some(extra) = &self.extra {
            s.push_str(&format!("extra {}\n", STANDARD.encode(extra)));
        }
        s.push_str(&format!("index {}\n", self.index));
        for h in &self.proof {
            s.push_str(&h.to_base64());
            s.push('\n');
        }
        s.push('\n');
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.checkpoint);
        out
    }

    /// Parses a proof strictly (the checkpoint is parsed but not verified).
    pub fn parse(bytes: &[u8]) -> Result<Self, TlogProofError> {
        let text = std::str::from_utf8(bytes).map_err(|_| TlogProofError::Malformed("not UTF-8"))?;
        let (head, checkpoint) = text
            .split_once("\n\n")
            .ok_or(TlogProofError::Malformed("no blank line before the checkpoint"))?;
        let mut lines = head.split('\n');
        if lines.next() != Some(HEADER) {
            return Err(TlogProofError::Malformed(
                "first line must be c2sp.org/tlog-proof@v1",
            ));
        }
        let mut line = lines
            .next()
            .ok_or(TlogProofError::Malformed("missing index line"))?;
        let mut extra = None;
        if let Some(b64) = line.strip_prefix("extra ") {
            extra = Some(
                STANDARD
                    .decode(b64)
                    .map_err(|_| TlogProofError::Malformed("extra is not valid base64"))?,
            );
            line = lines
                .next()
                .ok_or(TlogProofError::Malformed("missing index line"))?;
        }
        let index = line
            .strip_prefix("index ")
            .and_then(parse_decimal)
            .ok_or(TlogProofError::Malformed(
                "index line must be 'index <decimal without leading zeros>'",
            ))?;
        let proof = lines
            .map(|l| {
                Hash::from_base64(l)
                    .map_err(|_| TlogProofError::Malformed("proof lines must be base64 SHA-256 hashes"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if proof.len() > MAX_PROOF_HASHES {
            return Err(TlogProofError::Malformed("too many proof hashes"));
        }
        // The checkpoint must at least be a well-formed signed checkpoint note.
        let note = Note::parse(checkpoint.as_bytes()).map_err(CheckpointError::from)?;
        Checkpoint::parse(&note.text)?;
        Ok(Self {
            extra,
            index,
            proof,
            checkpoint: checkpoint.as_bytes().to_vec(),
        })
    }

    /// Verifies that `entry` is in the log signed by `log_key` at this proof's index: the checkpoint
    /// signature (by `log_key`, and by any `witnesses` that signed), then the inclusion proof.
    /// Returns the checkpoint and its note so the caller can apply a witness policy.
    pub fn verify(
        &self,
        entry: &[u8],
        log_key: &VerifierKey,
        witnesses: &[VerifierKey],
    ) -> Result<(Checkpoint, Note), TlogProofError> {
        let (checkpoint, note) = Checkpoint::open(&self.checkpoint, log_key, witnesses)?;
        verify_inclusion(
            &leaf_hash(entry),
            self.index,
            checkpoint.size,
            &self.proof,
            &checkpoint.root,
        )?;
        Ok((checkpoint, note))
    }
}
