//! The consumer side: `cairn verify-bundle` (offline Sigstore bundle verification with an identity
//! policy), `cairn monitor` (follow logs, alert on watched identities and inconsistencies) and
//! `cairn search` (query a search index, check every answer).

mod monitor;
mod search;
mod verify_bundle;

use std::path::Path;

use anyhow::Context;
use cairn_sigstore::bundle::Trust;

pub use monitor::{MonitorArgs, monitor};
pub use search::{SearchArgs, search};
pub use verify_bundle::{VerifyBundleArgs, verify_bundle};

/// Exit status of a bundle that does not verify.
pub const EXIT_INVALID: u8 = 1;
/// Exit status of a usage or I/O error (nothing was verified).
pub const EXIT_USAGE: u8 = 2;

/// A Sigstore trusted root file (or a client trust config holding one).
pub(super) fn read_trust(path: &Path) -> anyhow::Result<Trust> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Trust::from_json(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

pub(super) fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Reading a JSON body without reqwest's `json` feature.
pub(super) trait JsonValue {
    async fn json_value(self) -> anyhow::Result<serde_json::Value>;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> anyhow::Result<serde_json::Value> {
        let bytes = self.bytes().await?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&bytes)))
    }
}
