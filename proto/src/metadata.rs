//! gRPC metadata keys of the Cairn API, spelled here and nowhere else.

/// On `UNAVAILABLE`: the gRPC URL of the shard's leader, when known; retry there.
pub const LEADER: &str = "x-cairn-leader";
/// On `RESOURCE_EXHAUSTED`: how long to wait before retrying, in milliseconds.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";
/// Set by a log-server that forwards one shard's share of a request to that shard's leader: the shard
/// id. The receiver neither routes nor forwards it again.
pub const FORWARDED_SHARD: &str = "x-cairn-shard";
/// Set (to `1`) with [`FORWARDED_SHARD`] when the original caller named the shard (`POST
/// /logs/<id>/add`): the receiver appends to that opaque shard even where the leaf-hash routing would
/// pick another. Without it a forwarded request whose routing disagrees is refused as retryable.
pub const NAMED_SHARD: &str = "x-cairn-named-shard";
/// The caller's bearer token (`Bearer <token>`), carried along when a request is forwarded.
pub const AUTHORIZATION: &str = "authorization";
