//! Watch lists in rekor-monitor's configuration format, and what a logged entry claims.
//!
//! The format (YAML or JSON), as rekor-monitor reads it, so an existing configuration moves over
//! unchanged; keys other than `monitoredValues` are accepted and ignored:
//!
//! ```yaml
//! monitoredValues:
//!   certIdentities:                    # a SAN matching certSubject, from an issuer matching one of issuers
//!     - certSubject: '^release@example\.org$'
//!       issuers: ['^https://accounts\.example\.org$']
//!   subjects: ['@example\.org$']        # any certificate SAN
//!   fingerprints: ['<sha256 hex>']      # of the DER certificate, or of the DER public key
//!   oidMatchers:                       # an extension's value, exactly
//!     oidExtensions:    [{objectIdentifier: [1, 3, 6, 1, 4, 1, 57264, 1, 9], extensionValues: ['...']}]
//!     customExtensions: [{objectIdentifier: '1.3.6.1.4.1.57264.1.12', extensionValues: ['...']}]
//!     fulcioExtensions: {issuer: ['...'], build-signer-uri: ['...']}
//! ```
//!
//! Regular expressions are unanchored, as in rekor-monitor (write `^...$`). The issuer is Fulcio's
//! extension .1.8, else .1.1; a certificate with neither matches no `certIdentities` entry.

use std::collections::BTreeMap;

use cairn_sigstore::certificate::{OIDC_ISSUER_V1, OIDC_ISSUER_V2, SigningCertificate, hex};
use cairn_sigstore::hashedrekord::{Signer, parse_logged};
use regex::Regex;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct File {
    #[serde(default)]
    monitored_values: Values,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Values {
    #[serde(default)]
    cert_identities: Vec<CertIdentityFile>,
    #[serde(default)]
    subjects: Vec<String>,
    #[serde(default)]
    fingerprints: Vec<String>,
    #[serde(default)]
    oid_matchers: OidMatchersFile,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CertIdentityFile {
    cert_subject: String,
    #[serde(default)]
    issuers: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct OidMatchersFile {
    #[serde(default)]
    oid_extensions: Vec<OidFile<Vec<u64>>>,
    #[serde(default)]
    custom_extensions: Vec<OidFile<String>>,
    #[serde(default)]
    fulcio_extensions: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OidFile<O> {
    object_identifier: O,
    extension_values: Vec<String>,
}

/// Fulcio's extensions by their rekor-monitor names (`issuer` means both .1.1 and .1.8).
const FULCIO_EXTENSIONS: [(&str, &str); 20] = [
    ("github-workflow-trigger", "1.3.6.1.4.1.57264.1.2"),
    ("github-workflow-sha", "1.3.6.1.4.1.57264.1.3"),
    ("github-workflow-name", "1.3.6.1.4.1.57264.1.4"),
    ("github-workflow-repository", "1.3.6.1.4.1.57264.1.5"),
    ("github-workflow-ref", "1.3.6.1.4.1.57264.1.6"),
    ("build-signer-uri", "1.3.6.1.4.1.57264.1.9"),
    ("build-signer-digest", "1.3.6.1.4.1.57264.1.10"),
    ("runner-environment", "1.3.6.1.4.1.57264.1.11"),
    ("source-repository-uri", "1.3.6.1.4.1.57264.1.12"),
    ("source-repository-digest", "1.3.6.1.4.1.57264.1.13"),
    ("source-repository-ref", "1.3.6.1.4.1.57264.1.14"),
    ("source-repository-identifier", "1.3.6.1.4.1.57264.1.15"),
    ("source-repository-owner-uri", "1.3.6.1.4.1.57264.1.16"),
    ("source-repository-owner-identifier", "1.3.6.1.4.1.57264.1.17"),
    ("build-config-uri", "1.3.6.1.4.1.57264.1.18"),
    ("build-config-digest", "1.3.6.1.4.1.57264.1.19"),
    ("build-trigger", "1.3.6.1.4.1.57264.1.20"),
    ("run-invocation-uri", "1.3.6.1.4.1.57264.1.21"),
    (
        "source-repository-visibility-at-signing",
        "1.3.6.1.4.1.57264.1.22",
    ),
    ("deployment-environment", "1.3.6.1.4.1.57264.1.23"),
];

struct CertIdentity {
    subject: Regex,
    issuers: Vec<Regex>,
    source: CertIdentityFile,
}

/// A compiled watch list.
pub struct WatchList {
    cert_identities: Vec<CertIdentity>,
    subjects: Vec<(Regex, String)>,
    fingerprints: Vec<String>,
    /// OID (dotted) → accepted values.
    oids: BTreeMap<String, Vec<String>>,
}

fn compile(pattern: &str, what: &str) -> Result<Regex, String> {
    if pattern.is_empty() {
        return Err(format!("an empty {what}"));
    }
    Regex::new(pattern).map_err(|e| format!("{what} {pattern:?} is not a regular expression: {e}"))
}

impl WatchList {
    /// Parses a rekor-monitor configuration (YAML, of which JSON is a subset).
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = serde_norway::from_str(text).map_err(|e| format!("not a watch list: {e}"))?;
        let v = file.monitored_values;
        let mut cert_identities = Vec::new();
        for ci in v.cert_identities {
            let subject = compile(&ci.cert_subject, "certSubject")?;
            let issuers = ci
                .issuers
                .iter()
                .map(|i| compile(i, "issuer"))
                .collect::<Result<Vec<_>, _>>()?;
            cert_identities.push(CertIdentity {
                subject,
                issuers,
                source: ci,
            });
        }
        let subjects = v
            .subjects
            .into_iter()
            .map(|s| Ok((compile(&s, "subject")?, s)))
            .collect::<Result<Vec<_>, String>>()?;
        if v.fingerprints.iter().any(String::is_empty) {
            return Err("an empty fingerprint".into());
        }
        let mut oids = BTreeMap::new();
        let mut add = |oid: String, values: Vec<String>| -> Result<(), String> {
            if values.is_empty() || values.iter().any(String::is_empty) {
                return Err(format!("OID matcher {oid} needs non-empty extensionValues"));
            }
            if oid.split('.').any(|arc| arc.parse::<u64>().is_err()) || !oid.contains('.') {
                return Err(format!("{oid:?} is not an OID"));
            }
            oids.insert(oid, values);
            Ok(())
        };
        for m in v.oid_matchers.oid_extensions {
            let dotted = m
                .object_identifier
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(".");
            add(dotted, m.extension_values)?;
        }
        for (name, values) in v.oid_matchers.fulcio_extensions {
            if name == "issuer" {
                add(OIDC_ISSUER_V1.into(), values.clone())?;
                add(OIDC_ISSUER_V2.into(), values)?;
                continue;
            }
            let oid = FULCIO_EXTENSIONS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, o)| *o)
                .ok_or_else(|| format!("unknown fulcioExtensions name {name:?}"))?;
            add(oid.into(), values)?;
        }
        for m in v.oid_matchers.custom_extensions {
            add(m.object_identifier, m.extension_values)?;
        }
        let list = Self {
            cert_identities,
            subjects,
            // rekor-monitor compares lower-case hex exactly; an upper-case value would never match.
            fingerprints: v.fingerprints.iter().map(|f| f.to_ascii_lowercase()).collect(),
            oids,
        };
        if list.is_empty() {
            return Err("the watch list names nothing to watch (monitoredValues is empty)".into());
        }
        Ok(list)
    }

    /// Whether it names nothing.
    pub fn is_empty(&self) -> bool {
        self.cert_identities.is_empty()
            && self.subjects.is_empty()
            && self.fingerprints.is_empty()
            && self.oids.is_empty()
    }

    /// The matches of one entry's claims, each as rekor-monitor describes a found identity.
    pub fn matches(&self, claims: &Claims) -> Vec<Value> {
        let mut found = Vec::new();
        if let Some(cert) = &claims.certificate {
            if let Some(issuer) = &cert.issuer {
                for ci in &self.cert_identities {
                    if !ci.issuers.is_empty() && !ci.issuers.iter().any(|r| r.is_match(issuer)) {
                        continue;
                    }
                    if let Some(san) = cert.sans.iter().rev().find(|s| ci.subject.is_match(s)) {
                        found.push(json!({
                            "type": "certIdentity",
                            "certSubject": ci.source.cert_subject,
                            "issuers": ci.source.issuers,
                            "matched": {"certSubject": san, "issuer": issuer},
                        }));
                    }
                }
            }
            for (re, source) in &self.subjects {
                if let Some(san) = cert.sans.iter().rev().find(|s| re.is_match(s)) {
                    found.push(json!({"type": "subject", "subject": source, "matched": {"subject": san}}));
                }
            }
            for (oid, values) in &self.oids {
                if let Some(value) = cert.extension_string(oid)
                    && values.contains(&value)
                {
                    found.push(
                        json!({"type": "oidExtension", "oid": oid, "matched": {"extensionValue": value}}),
                    );
                }
            }
        }
        let key_fingerprint = claims
            .certificate
            .as_ref()
            .map(|c| hex(&Sha256::digest(c.key.spki())));
        for fp in [Some(&claims.fingerprint), key_fingerprint.as_ref()]
            .into_iter()
            .flatten()
        {
            if self.fingerprints.contains(fp) {
                found.push(json!({"type": "fingerprint", "fingerprint": fp}));
            }
        }
        found
    }
}

/// What a logged Sigstore entry claims about its signer.
pub struct Claims {
    /// The signing certificate, parsed (`None` for a keyed entry).
    pub certificate: Option<SigningCertificate>,
    /// Lower-case hex SHA-256 of the DER certificate, or of the DER public key.
    pub fingerprint: String,
    /// The artifact digest the entry records.
    pub digest: Vec<u8>,
}

impl Claims {
    /// Reads a `hashedrekord` 0.0.2 body.
    pub fn of_body(body: &[u8]) -> Result<Self, String> {
        let logged = parse_logged(body)?;
        Ok(match logged.signer {
            Signer::Certificate(der) => {
                let cert = SigningCertificate::parse(&der)?;
                Self {
                    fingerprint: cert.fingerprint.clone(),
                    certificate: Some(cert),
                    digest: logged.digest,
                }
            }
            Signer::PublicKey(spki) => Self {
                certificate: None,
                fingerprint: hex(&Sha256::digest(&spki)),
                digest: logged.digest,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
startIndex: 10            # rekor-monitor's other keys are accepted and ignored
monitoredValues:
  certIdentities:
    - certSubject: '^user@example\.com$'
    - certSubject: 'workflows/release\.yml@'
      issuers: ['^https://token\.actions\.githubusercontent\.com$']
  subjects: ['@example\.org$']
  fingerprints: ['aa11']
  oidMatchers:
    oidExtensions:
      - objectIdentifier: [1, 3, 6, 1, 4, 1, 57264, 1, 9]
        extensionValues: ['https://example.org/builder']
    customExtensions:
      - objectIdentifier: '1.3.6.1.4.1.99999.1'
        extensionValues: ['x']
    fulcioExtensions:
      issuer: ['https://accounts.example.org']
      source-repository-uri: ['https://github.com/example/app']
outputIdentities: found.txt
"#;

    #[test]
    fn reads_rekor_monitor_configuration() {
        let w = WatchList::parse(FULL).expect("parses");
        assert_eq!(w.cert_identities.len(), 2);
        assert_eq!(w.cert_identities[1].issuers.len(), 1);
        assert_eq!(w.subjects.len(), 1);
        let oids: Vec<&str> = w.oids.keys().map(String::as_str).collect();
        assert_eq!(
            oids,
            [
                "1.3.6.1.4.1.57264.1.1",
                "1.3.6.1.4.1.57264.1.12",
                "1.3.6.1.4.1.57264.1.8",
                "1.3.6.1.4.1.57264.1.9",
                "1.3.6.1.4.1.99999.1"
            ]
        );
        // JSON is YAML too.
        let json = r#"{"monitoredValues": {"fingerprints": ["aa11"]}}"#;
        assert_eq!(WatchList::parse(json).expect("parses").fingerprints, ["aa11"]);
    }

    #[test]
    fn refuses_what_rekor_monitor_refuses() {
        for (text, says) in [
            ("monitoredValues: {}", "names nothing"),
            ("startIndex: 3", "names nothing"),
            (
                "monitoredValues:\n  certIdentities:\n    - certSubject: ''",
                "empty certSubject",
            ),
            ("monitoredValues:\n  subjects: ['(']", "not a regular expression"),
            ("monitoredValues:\n  fingerprints: ['']", "empty fingerprint"),
            (
                "monitoredValues:\n  oidMatchers:\n    fulcioExtensions: {no-such-thing: ['x']}",
                "unknown fulcioExtensions name",
            ),
            (
                "monitoredValues:\n  oidMatchers:\n    customExtensions: [{objectIdentifier: '1.x', extensionValues: ['v']}]",
                "is not an OID",
            ),
            (
                "monitoredValues:\n  oidMatchers:\n    customExtensions: [{objectIdentifier: '1.2', extensionValues: []}]",
                "non-empty extensionValues",
            ),
            ("monitoredValues: [", "not a watch list"),
        ] {
            let err = WatchList::parse(text).err().unwrap_or_default();
            assert!(err.contains(says), "{text:?}: {err:?}");
        }
    }

    #[test]
    fn keyed_entries_match_by_fingerprint_only() {
        let w = WatchList::parse("monitoredValues:\n  subjects: ['.']\n  fingerprints: ['aa11']")
            .expect("parses");
        let claims = |fingerprint: &str| Claims {
            certificate: None,
            fingerprint: fingerprint.into(),
            digest: vec![0; 32],
        };
        let found = w.matches(&claims("aa11"));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["type"], "fingerprint");
        assert!(
            w.matches(&claims("AA11")).is_empty(),
            "fingerprints are lower-case hex, compared exactly"
        );
    }
}
