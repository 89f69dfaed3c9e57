//! Sigstore entries for Cairn's Sigstore shards: every such shard is a Rekor v2-compatible log.
//!
//! - [`hashedrekord`]: a `CreateEntryRequest` (protojson or protobuf) checked before anything is
//!   appended: only `hashedrekord` v0.0.2, a key type and hash the log accepts ([`Policy`]), a digest
//!   of the hash's length, and a signature that verifies over the digest ([`verify`]). What is logged
//!   is the canonical body: JCS ([`jcs`]) of the protojson `Entry`, byte for byte what rekor-tiles
//!   stores, since verifiers rebuild it from a bundle.
//! - [`entry`]: the `TransparencyLogEntry` a submission answers with, and its protojson form.
//! - [`bundle`]: offline verification of a Sigstore bundle (who signed, when, and that the log
//!   holds it), with [`certificate`] judging Fulcio certificates.
//! - [`trust`]: `trusted_root.json`, `signing_config.json` and the client trust config.
//!
//! Nothing here does I/O.

pub mod bundle;
pub mod certificate;
pub mod entry;
pub mod hashedrekord;
pub mod jcs;
pub mod trust;
pub mod trusted;
pub mod verify;

pub use entry::{LogEntry, log_id};
pub use hashedrekord::{EntryError, Policy, Submission};
pub use sigstore_protobuf_specs::dev::sigstore as pb;
