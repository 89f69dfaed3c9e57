//! What a verifier trusts, read from a Sigstore trusted root (`trusted_root.json`, or a client
//! trust config holding one): the transparency logs' checkpoint keys, Fulcio CAs, CT logs and
//! timestamp authorities, each with its validity window.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_tsa::TrustedAuthority;
use sigstore_protobuf_specs::dev::sigstore::common::v1::TimeRange;
use sigstore_protobuf_specs::dev::sigstore::trustroot::v1::{CertificateAuthority as PbCa, TrustedRoot};

use crate::certificate::{CertificateAuthority, CtLog};
use crate::verify::{KeyType, PublicKey};

/// A transparency log of the trusted root.
#[derive(Clone, Debug)]
pub struct TrustedLog {
    /// Its log id (for Cairn and Rekor v2: the checkpoint key's note key hash).
    pub log_id: Vec<u8>,
    /// Its Ed25519 checkpoint key.
    pub key: [u8; 32],
    /// Its base URL.
    pub base_url: String,
    /// Since when it is trusted.
    pub valid_from: Option<SystemTime>,
    /// Until when.
    pub valid_until: Option<SystemTime>,
}

/// The keys and certificates a verifier trusts: read from a Sigstore trusted root.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    /// Transparency logs.
    pub tlogs: Vec<TrustedLog>,
    /// Fulcio CAs.
    pub cas: Vec<CertificateAuthority>,
    /// CT logs.
    pub ctlogs: Vec<CtLog>,
    /// Timestamp authorities.
    pub tsas: Vec<TrustedAuthority>,
    /// Accept a certificate without checking an SCT when the root lists no CT logs. Off unless the
    /// verifier asks (as cosign's `--insecure-ignore-sct`): with it off, a certificate bundle fails
    /// against a root without CT logs, as it does in sigstore-python and cosign.
    pub ignore_sct_without_ctlogs: bool,
}

fn time(t: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    let t = t?;
    let secs = u64::try_from(t.seconds).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(u64::try_from(t.nanos).unwrap_or(0)))
}

fn range(r: Option<&TimeRange>) -> (Option<SystemTime>, Option<SystemTime>) {
    r.map_or((None, None), |r| (time(r.start.as_ref()), time(r.end.as_ref())))
}

fn chain_of(ca: &PbCa) -> Vec<Vec<u8>> {
    ca.cert_chain
        .as_ref()
        .map(|c| c.certificates.iter().map(|c| c.raw_bytes.clone()).collect())
        .unwrap_or_default()
}

impl Trust {
    /// Reads `trusted_root.json` (also accepts a client trust config holding one).
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("the trusted root is not JSON: {e}"))?;
        let value = match value.get("trustedRoot") {
            Some(inner) => inner.clone(),
            None => value,
        };
        let root: TrustedRoot =
            serde_json::from_value(value).map_err(|e| format!("not a Sigstore trusted root: {e}"))?;
        Self::from_root(&root)
    }

    /// From the protobuf message.
    pub fn from_root(root: &TrustedRoot) -> Result<Self, String> {
        let mut trust = Self::default();
        for log in &root.tlogs {
            let Some(key) = &log.public_key else { continue };
            let raw = key.raw_bytes.clone().unwrap_or_default();
            let parsed = PublicKey::from_spki(&raw).map_err(|e| format!("tlog {}: {e}", log.base_url))?;
            // Only Ed25519 checkpoint keys are used here (Cairn's, and Rekor v2's Ed25519 logs).
            if *parsed.key_type() != KeyType::Ed25519 {
                continue;
            }
            let (valid_from, valid_until) = range(key.valid_for.as_ref());
            trust.tlogs.push(TrustedLog {
                log_id: log.log_id.as_ref().map(|l| l.key_id.clone()).unwrap_or_default(),
                key: raw[raw.len() - 32..]
                    .try_into()
                    .map_err(|_| "an Ed25519 key is 32 bytes")?,
                base_url: log.base_url.clone(),
                valid_from,
                valid_until,
            });
        }
        for log in &root.ctlogs {
            let Some(key) = &log.public_key else { continue };
            let (valid_from, valid_until) = range(key.valid_for.as_ref());
            trust.ctlogs.push(CtLog {
                log_id: log.log_id.as_ref().map(|l| l.key_id.clone()).unwrap_or_default(),
                spki: key.raw_bytes.clone().unwrap_or_default(),
                valid_from,
                valid_until,
            });
        }
        for ca in &root.certificate_authorities {
            let (valid_from, valid_until) = range(ca.valid_for.as_ref());
            trust.cas.push(CertificateAuthority {
                chain: chain_of(ca),
                valid_from,
                valid_until,
            });
        }
        for tsa in &root.timestamp_authorities {
            let (valid_from, valid_until) = range(tsa.valid_for.as_ref());
            trust.tsas.push(TrustedAuthority {
                chain: chain_of(tsa),
                valid_from,
                valid_until,
            });
        }
        Ok(trust)
    }
}
