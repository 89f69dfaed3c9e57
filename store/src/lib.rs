//! `cairn-store`: the one crate that opens object storage, knows where a log's files live in it, and
//! reads them back verified.
//!
//! - [`open_store`] / [`open_bucket`]: object storage by URL (`file://`, `memory://`, `s3://`, `gs://`,
//!   `az://`), through the `object_store` crate.
//! - [`Bucket`]: a store and a prefix, with the publisher's two kinds of write (the checkpoint, and
//!   immutable tiles and bundles that must never change).
//! - [`layout`]: a shard's prefix, the shard description shared by every crate ([`Shard`]), and the
//!   `shards.json` document.
//! - [`TileReader`]: a shard's latest checkpoint verified against its key, tiles and bundles as of that
//!   size, proofs computed from them, a whole-log audit, and a byte-bounded cache ([`TileCache`]).
//! - `testing` (feature): fault injection for tests and drills.
//!
//! Formats and proof math are `cairn-tlog`'s; this crate adds storage and I/O.

pub mod bucket;
pub mod cache;
pub mod layout;
pub mod reader;
#[cfg(feature = "testing")]
pub mod testing;
pub mod url;

pub use bucket::{Bucket, PutError};
pub use cache::{CacheStats, Object, TileCache, etag_of};
pub use layout::{
    Catalog, Lifecycle, Shard, ShardId, ShardKind, ShardListing, ShardsJson, http_prefix, shard_prefix,
    unix_now,
};
pub use reader::{ProofTiles, ReadError, Source, TileReader, VerifiedCheckpoint};
pub use url::{StoreUrlError, open_bucket, open_store};
