//! Trust discovery documents: a Sigstore `trusted_root.json` (every Sigstore shard as a transparency
//! log, the timestamp authority, and any CAs and CT logs the operator adds), `signing_config.json`
//! (v0.2: where to log and timestamp), and the `ClientTrustConfig` that combines them.
//!
//! The documents are the protobuf-specs messages in their canonical JSON form (lowerCamelCase,
//! timestamps in RFC 3339, zero values left out), with the media types current clients require.

use std::time::{SystemTime, UNIX_EPOCH};

use cairn_tlog::VerifierKey;
use sigstore_protobuf_specs::dev::sigstore::common::v1::{
    DistinguishedName, HashAlgorithm, LogId, PublicKey, PublicKeyDetails, TimeRange, X509Certificate,
    X509CertificateChain,
};
use sigstore_protobuf_specs::dev::sigstore::trustroot::v1::{
    CertificateAuthority, ClientTrustConfig, Service, ServiceConfiguration, ServiceSelector, SigningConfig,
    TransparencyLogInstance, TrustedRoot,
};

use crate::log_id;

/// The trusted root's media type.
pub const TRUSTED_ROOT_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.trustedroot+json;version=0.1";
/// The signing config's media type (v0.2).
pub const SIGNING_CONFIG_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.signingconfig.v0.2+json";
/// The client trust config's media type.
pub const CLIENT_TRUST_CONFIG_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json";

/// A Sigstore shard as the documents describe it.
#[derive(Clone, Debug)]
pub struct Tlog {
    /// Base URL: clients append `/api/v2/log/entries`; its host is the shard's origin.
    pub base_url: String,
    /// The shard's checkpoint key (Ed25519).
    pub key: VerifierKey,
    /// Since when the key signs.
    pub valid_from: SystemTime,
    /// Until when it signed (a frozen shard); `None` while it is active.
    pub valid_until: Option<SystemTime>,
}

/// The timestamp authority as the documents describe it.
#[derive(Clone, Debug)]
pub struct Tsa {
    /// `POST` URL of the timestamp endpoint.
    pub url: String,
    /// DER certificates, leaf first, root last.
    pub chain: Vec<Vec<u8>>,
    /// Subject common name and organization, for people reading the document.
    pub common_name: String,
    /// Organization.
    pub organization: String,
    /// Since when its certificate is valid.
    pub valid_from: SystemTime,
}

/// What the operator adds to the trusted root: certificate authorities (Fulcio instances) and CT
/// logs, read from a trusted-root-shaped JSON file.
#[derive(Clone, Debug, Default)]
pub struct Extra {
    /// Certificate authorities.
    pub certificate_authorities: Vec<CertificateAuthority>,
    /// CT logs.
    pub ctlogs: Vec<TransparencyLogInstance>,
    /// Fulcio URLs for the signing config's `caUrls`.
    pub ca_urls: Vec<String>,
    /// OIDC provider URLs for `oidcUrls`.
    pub oidc_urls: Vec<String>,
}

impl Extra {
    /// Reads the CAs and CT logs of a trusted root document (other fields are ignored).
    pub fn from_trusted_root_json(bytes: &[u8]) -> Result<Self, String> {
        let root: TrustedRoot =
            serde_json::from_slice(bytes).map_err(|e| format!("not a Sigstore trusted root: {e}"))?;
        Ok(Self {
            certificate_authorities: root.certificate_authorities,
            ctlogs: root.ctlogs,
            ..Self::default()
        })
    }
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

fn range(from: SystemTime, until: Option<SystemTime>) -> TimeRange {
    TimeRange {
        start: Some(timestamp(from)),
        end: until.map(timestamp),
    }
}

/// An Ed25519 key as a DER SubjectPublicKeyInfo.
pub fn ed25519_spki(key: &[u8; 32]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    der.extend_from_slice(key);
    der
}

/// The trusted root.
pub fn trusted_root(tlogs: &[Tlog], tsa: Option<&Tsa>, extra: &Extra) -> TrustedRoot {
    TrustedRoot {
        media_type: TRUSTED_ROOT_MEDIA_TYPE.into(),
        tlogs: tlogs
            .iter()
            .map(|t| {
                let id = LogId {
                    key_id: log_id(&t.key).to_vec(),
                };
                TransparencyLogInstance {
                    base_url: t.base_url.clone(),
                    hash_algorithm: HashAlgorithm::Sha2256 as i32,
                    public_key: Some(PublicKey {
                        raw_bytes: Some(ed25519_spki(&t.key.public_key())),
                        key_details: PublicKeyDetails::PkixEd25519 as i32,
                        valid_for: Some(range(t.valid_from, t.valid_until)),
                    }),
                    log_id: Some(id.clone()),
                    checkpoint_key_id: Some(id),
                    operator: String::new(),
                }
            })
            .collect(),
        certificate_authorities: extra.certificate_authorities.clone(),
        ctlogs: extra.ctlogs.clone(),
        timestamp_authorities: tsa
            .map(|t| CertificateAuthority {
                subject: Some(DistinguishedName {
                    organization: t.organization.clone(),
                    common_name: t.common_name.clone(),
                }),
                uri: t.url.clone(),
                cert_chain: Some(X509CertificateChain {
                    certificates: t
                        .chain
                        .iter()
                        .map(|c| X509Certificate { raw_bytes: c.clone() })
                        .collect(),
                }),
                valid_for: Some(range(t.valid_from, None)),
                operator: String::new(),
            })
            .into_iter()
            .collect(),
    }
}

fn service(url: &str, major: u32, from: SystemTime, until: Option<SystemTime>, operator: &str) -> Service {
    Service {
        url: url.into(),
        major_api_version: major,
        valid_for: Some(range(from, until)),
        operator: operator.into(),
    }
}

/// The signing config (v0.2): every Sigstore shard as a Rekor v2 log (`majorApiVersion` 2) with its
/// validity, the TSA, and the operator's CA and OIDC URLs. Clients pick one log (`ANY`) among those
/// valid now, and keep the newest per operator.
pub fn signing_config(tlogs: &[Tlog], tsa: Option<&Tsa>, extra: &Extra, operator: &str) -> SigningConfig {
    let any = || {
        Some(ServiceConfiguration {
            selector: ServiceSelector::Any as i32,
            count: 0,
        })
    };
    SigningConfig {
        media_type: SIGNING_CONFIG_MEDIA_TYPE.into(),
        ca_urls: extra
            .ca_urls
            .iter()
            .map(|u| service(u, 1, UNIX_EPOCH, None, operator))
            .collect(),
        oidc_urls: extra
            .oidc_urls
            .iter()
            .map(|u| service(u, 1, UNIX_EPOCH, None, operator))
            .collect(),
        rekor_tlog_urls: tlogs
            .iter()
            .map(|t| service(&t.base_url, 2, t.valid_from, t.valid_until, operator))
            .collect(),
        rekor_tlog_config: any(),
        tsa_urls: tsa
            .map(|t| service(&t.url, 1, t.valid_from, None, operator))
            .into_iter()
            .collect(),
        tsa_config: any(),
    }
}

/// Both documents in one.
pub fn client_trust_config(root: TrustedRoot, signing: SigningConfig) -> ClientTrustConfig {
    ClientTrustConfig {
        media_type: CLIENT_TRUST_CONFIG_MEDIA_TYPE.into(),
        trusted_root: Some(root),
        signing_config: Some(signing),
    }
}

/// A document's JSON (pretty-printed: people read these).
pub fn to_json<T: serde::Serialize>(doc: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec_pretty(doc).map_err(|e| format!("the document does not encode: {e}"))
}

/// A Sigstore log's base URL must be an `http(s)` URL whose host is the log's origin (clients check a
/// checkpoint's origin against the host of the URL they signed to, `<base_url>/api/v2/log/entries`)
/// and whose path is one Cairn serves the log under: none (the log's own host name) or
/// `/logs/<id>`.
pub fn check_base_url(id: u32, origin: &str, base_url: &str) -> Result<(), String> {
    let url = url::Url::parse(base_url).map_err(|e| format!("base_url {base_url:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "base_url {base_url:?} must be an http(s) URL without query or fragment"
        ));
    }
    if url.host_str() != Some(origin) {
        return Err(format!(
            "a Sigstore log's origin ({origin}) must be the host of its base_url ({base_url}), as Sigstore clients check; set the origin to the host name, or the base_url to a URL on that host"
        ));
    }
    let path = url.path().trim_end_matches('/');
    if !path.is_empty() && path != format!("/logs/{id}") {
        return Err(format!(
            "base_url {base_url:?}: its path must be empty (the log's own host name) or /logs/{id}, where Cairn serves shard {id}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_base_url;

    #[test]
    fn a_base_url_names_the_origin_and_a_path_cairn_serves() {
        for ok in [
            "https://log.example.org",
            "https://log.example.org/",
            "http://log.example.org:7480/logs/3",
        ] {
            assert_eq!(check_base_url(3, "log.example.org", ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("https://other.example.org", "must be the host of its base_url"),
            ("https://log.example.org/rekor", "its path must be empty"),
            ("https://log.example.org/logs/4", "its path must be empty"),
            ("ftp://log.example.org", "http(s) URL"),
            ("https://log.example.org/?a=b", "http(s) URL"),
            ("log.example.org", "base_url"),
        ] {
            let err = check_base_url(3, "log.example.org", bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
