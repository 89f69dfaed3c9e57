//! `cairn-tlog`: the pure core of the Cairn transparency log.
//!
//! Everything a log, a verifier, a witness or a monitor must agree on byte for byte lives here, and
//! nothing else: no async, no I/O, no network. One module per specification:
//!
//! | module | specification |
//! |---|---|
//! | [`hash`] | RFC 6962 §2.1 Merkle tree hashing |
//! | [`edge`] | the tree's right edge (compact range) for appends in `O(log n)` memory |
//! | [`tile`] | c2sp.org/tlog-tiles coordinates and paths |
//! | [`builder`] | building tlog-tiles hash tiles and entry bundles incrementally |
//! | [`bundle`] | tlog-tiles entry bundles |
//! | [`proof`] | RFC 6962 §2.1.1–2 inclusion and consistency proofs computed from tiles |
//! | [`verify`] | RFC 9162 §2.1.3–4 proof verification |
//! | [`note`] | c2sp.org/signed-note with Ed25519, key formats |
//! | [`checkpoint`] | c2sp.org/tlog-checkpoint |
//! | [`cosignature`] | c2sp.org/tlog-cosignature wire format (Ed25519, type 0x04) |
//! | [`tlog_proof`] | c2sp.org/tlog-proof offline proofs |
//! | [`audit`] | whole-log audit of a c2sp.org/tlog-tiles log's published files against its checkpoint |
//!
//! Parsers of outside input are strict (one canonical form accepted), return typed errors, and never
//! panic; each has a fuzz target under `fuzz/`.

pub mod audit;
pub mod builder;
pub mod bundle;
pub mod checkpoint;
pub mod cosignature;
pub mod edge;
pub mod hash;
pub mod note;
pub mod proof;
pub mod tile;
pub mod tlog_proof;
pub mod verify;

pub use builder::{Bundle, BundleBuilder, HashTile, TileBuilder};
pub use checkpoint::Checkpoint;
pub use edge::TreeEdge;
pub use hash::{EMPTY_ROOT, HASH_SIZE, Hash, leaf_hash, node_hash};
pub use note::{Cosigner, Note, Signer, VerifierKey};
pub use proof::{TileSource, consistency_proof, inclusion_proof, tree_root};
pub use tile::{BundleId, TileId, TilePath};
pub use tlog_proof::TlogProof;
pub use verify::{verify_consistency, verify_inclusion};

/// Any error from this crate, for callers that do not need to tell the kinds apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A malformed hash.
    #[error(transparent)]
    Hash(#[from] hash::HashError),
    /// A malformed tile path.
    #[error(transparent)]
    Path(#[from] tile::PathError),
    /// A malformed entry or bundle.
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
    /// Partial tiles that do not fit their tree size.
    #[error(transparent)]
    Build(#[from] builder::BuildError),
    /// A proof that cannot be made or does not verify.
    #[error(transparent)]
    Proof(#[from] proof::ProofError),
    /// A malformed or unverified note, or a malformed key.
    #[error(transparent)]
    Note(#[from] note::NoteError),
    /// A malformed or unverified checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    /// A malformed or unverified tlog-proof.
    #[error(transparent)]
    TlogProof(#[from] tlog_proof::TlogProofError),
    /// A stored tree edge whose shape does not match its size.
    #[error(transparent)]
    Edge(#[from] edge::EdgeError),
    /// A log whose published files fail an audit.
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
}
