//! The trust discovery documents of a running log (`trusted_root.json`, `signing_config.json`,
//! `client_trust_config.json`), built from the shards the read path lists (configured, and added at
//! runtime or by the schedule, with their windows): served on the read path and fetched by `cairn
//! trust`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use cairn_sigstore::trust::{self, Extra, Tlog, Tsa};
use cairn_store::{Lifecycle, ShardKind, ShardListing};
use cairn_tile_server::{Document, DocumentSource};

use crate::config::ServeConfig;

/// The timestamp endpoint under the public URL.
pub const TSA_PATH: &str = cairn_tsa::TIMESTAMP_PATH;

/// The paths of the documents.
const PATHS: [&str; 3] = [
    "/trusted_root.json",
    "/signing_config.json",
    "/client_trust_config.json",
];

/// The documents for the Sigstore shards the read path lists (configured and added at runtime, with
/// their windows), the TSA this process runs (if any), and the operator's additions (read once,
/// here).
pub(crate) fn documents(
    config: &ServeConfig,
    tsa: Option<&cairn_tsa::Authority>,
    public_url: &str,
) -> anyhow::Result<DocumentSource> {
    let tsa = tsa.map(|a| Tsa {
        url: format!("{public_url}{TSA_PATH}"),
        chain: a.chain_der().to_vec(),
        common_name: "Cairn timestamp authority".into(),
        organization: config.sigstore.operator.clone(),
        valid_from: a.valid_from().unwrap_or(SystemTime::UNIX_EPOCH),
    });
    let mut extra = match &config.sigstore.extra_trusted_root {
        Some(path) => {
            let path = if path.is_absolute() {
                path.clone()
            } else {
                config.data_dir.join(path)
            };
            let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            Extra::from_trusted_root_json(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => Extra::default(),
    };
    extra.ca_urls = config.sigstore.ca_urls.clone();
    extra.oidc_urls = config.sigstore.oidc_urls.clone();
    let operator = config.sigstore.operator.clone();
    Ok(DocumentSource {
        paths: PATHS.iter().map(|p| (*p).to_owned()).collect(),
        build: Arc::new(move |listing: &[ShardListing]| build(listing, tsa.as_ref(), &extra, &operator)),
    })
}

/// Seconds since the epoch as a time.
fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The documents for `listing`'s Sigstore shards, oldest first (clients keep the newest valid log
/// per operator: sigstore-go by start, sigstore-python the last listed).
///
/// - The trusted root lists every one of them: planned ones ahead of their window, frozen ones with
///   the end of their validity once the control group recorded it.
/// - The signing config lists those a client may sign to: active, planned with a window still to
///   come, and frozen with their end (so that clients skip them); not a frozen shard whose end is
///   not recorded yet, nor a planned one whose window started while it waits for its keys.
fn build(
    listing: &[ShardListing],
    tsa: Option<&Tsa>,
    extra: &Extra,
    operator: &str,
) -> Result<Vec<Document>, String> {
    let now = cairn_store::unix_now();
    let mut shards: Vec<&ShardListing> = listing
        .iter()
        .filter(|l| l.kind == ShardKind::Sigstore && l.base_url.is_some())
        .collect();
    shards.sort_by_key(|l| (l.valid_from.unwrap_or(0), l.id));
    let mut tlogs = Vec::new();
    let mut signable = Vec::new();
    for l in shards {
        let key = l
            .verifier()
            .map_err(|e| format!("shard {}: verifier key: {e}", l.id))?;
        let tlog = Tlog {
            base_url: l.base_url.clone().unwrap_or_default(),
            key,
            valid_from: at(l.valid_from.unwrap_or(0)),
            valid_until: l.valid_until.map(at),
        };
        let sign_to = match l.state {
            Lifecycle::Active => true,
            Lifecycle::Planned => l.valid_from.is_some_and(|from| from > now),
            Lifecycle::Frozen => l.valid_until.is_some(),
        };
        if sign_to {
            signable.push(tlog.clone());
        }
        tlogs.push(tlog);
    }
    if tlogs.is_empty() {
        return Ok(Vec::new());
    }
    let root = trust::trusted_root(&tlogs, tsa, extra);
    let signing = trust::signing_config(&signable, tsa, extra, operator);
    let both = trust::client_trust_config(root.clone(), signing.clone());
    let doc = |path: &str, body: Vec<u8>| Document {
        path: path.into(),
        content_type: "application/json",
        body: Bytes::from(body),
    };
    let json = |d: &dyn erased::Doc| d.json();
    Ok(vec![
        doc(PATHS[0], json(&root)?),
        doc(PATHS[1], json(&signing)?),
        doc(PATHS[2], json(&both)?),
    ])
}

/// The three documents are different message types; this lets one closure encode each.
mod erased {
    pub(super) trait Doc {
        fn json(&self) -> Result<Vec<u8>, String>;
    }

    impl<T: serde::Serialize> Doc for T {
        fn json(&self) -> Result<Vec<u8>, String> {
            cairn_sigstore::trust::to_json(self)
        }
    }
}
