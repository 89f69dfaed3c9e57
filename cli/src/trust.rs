//! The trust discovery documents of a running log (`trusted_root.json`, `signing_config.json`,
//! `client_trust_config.json`), built from its configuration: served on the read path and written by
//! `cairn trust`.

use std::time::SystemTime;

use anyhow::Context;
use bytes::Bytes;
use cairn_sigstore::trust::{self, Extra, Tlog, Tsa};
use cairn_store::ShardKind;
use cairn_tile_server::Document;

use crate::config::ServeConfig;
use crate::serve::Resolved;

/// The timestamp endpoint under the public URL.
pub const TSA_PATH: &str = cairn_tsa::TIMESTAMP_PATH;

/// The documents for the Sigstore shards of `shards`, the TSA this process runs (if any), and the
/// operator's additions.
pub(crate) fn documents(
    config: &ServeConfig,
    shards: &[Resolved],
    tsa: Option<&cairn_tsa::Authority>,
    public_url: &str,
) -> anyhow::Result<Vec<Document>> {
    let tlogs = shards
        .iter()
        .filter(|s| s.kind == ShardKind::Sigstore)
        .map(|s| {
            let key = s
                .config
                .shard
                .verifier()
                .map_err(|e| anyhow::anyhow!("shard {}: verifier key: {e}", s.config.shard.id))?;
            Ok(Tlog {
                base_url: s.base_url.clone().unwrap_or_default(),
                key,
                valid_from: s.valid_from,
                valid_until: None,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if tlogs.is_empty() {
        return Ok(Vec::new());
    }
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
    let root = trust::trusted_root(&tlogs, tsa.as_ref(), &extra);
    let signing = trust::signing_config(&tlogs, tsa.as_ref(), &extra, &config.sigstore.operator);
    let both = trust::client_trust_config(root.clone(), signing.clone());
    let doc = |path: &str, body: Vec<u8>| Document {
        path: path.into(),
        content_type: "application/json",
        body: Bytes::from(body),
    };
    let json = |d: &dyn erased::Doc| d.json().map_err(anyhow::Error::msg);
    Ok(vec![
        doc("/trusted_root.json", json(&root)?),
        doc("/signing_config.json", json(&signing)?),
        doc("/client_trust_config.json", json(&both)?),
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
