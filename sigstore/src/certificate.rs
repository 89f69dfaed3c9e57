//! Fulcio signing certificates: who they name, and whether a trusted root vouches for them.
//!
//! [`SigningCertificate::parse`] reads the identity a certificate claims (subject alternative names,
//! the OIDC issuer, any extension by OID, fingerprints) without judging it: the monitor and the
//! search index need exactly that. [`verify_fulcio`] judges it as a relying party does: the chain to
//! a certificate authority of the trusted root at every moment the signature is known to have
//! existed, an embedded SCT from a trusted CT log, and the code-signing profile.

use std::time::SystemTime;

use sha2::{Digest, Sha256};
use spki::der::asn1::{Ia5String, OctetString, PrintableString, Utf8StringRef};
use spki::der::{Decode, Encode};
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::sct::{HashAlgorithm, SignatureAlgorithm, SignedCertificateTimestampList};
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAltName};

use crate::verify::PublicKey;

/// Fulcio's OIDC issuer extension, v1: the issuer URL's raw bytes.
pub const OIDC_ISSUER_V1: &str = "1.3.6.1.4.1.57264.1.1";
/// Fulcio's OIDC issuer extension, v2: a DER UTF8String.
pub const OIDC_ISSUER_V2: &str = "1.3.6.1.4.1.57264.1.8";
/// Fulcio's username SAN (an `otherName`).
const FULCIO_USERNAME: &str = "1.3.6.1.4.1.57264.1.7";
/// RFC 6962 embedded SCT list.
const EMBEDDED_SCTS: &str = "1.3.6.1.4.1.11129.2.4.2";
/// id-kp-codeSigning.
const CODE_SIGNING: &str = "1.3.6.1.5.5.7.3.3";

/// A certificate authority of a trusted root (a Fulcio instance).
#[derive(Clone, Debug)]
pub struct CertificateAuthority {
    /// DER certificates: the one that issues leaves first, the root last.
    pub chain: Vec<Vec<u8>>,
    /// Since when it is trusted.
    pub valid_from: Option<SystemTime>,
    /// Until when.
    pub valid_until: Option<SystemTime>,
}

/// A CT log of a trusted root.
#[derive(Clone, Debug)]
pub struct CtLog {
    /// Its log id: SHA-256 of its DER public key.
    pub log_id: Vec<u8>,
    /// Its DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    /// Since when it is trusted.
    pub valid_from: Option<SystemTime>,
    /// Until when.
    pub valid_until: Option<SystemTime>,
}

fn within(t: SystemTime, from: Option<SystemTime>, until: Option<SystemTime>) -> bool {
    from.is_none_or(|f| t >= f) && until.is_none_or(|u| t <= u)
}

/// The identity a signing certificate claims.
#[derive(Clone, Debug)]
pub struct SigningCertificate {
    der: Vec<u8>,
    cert: Certificate,
    /// Subject alternative names: e-mail addresses, URIs, DNS names, Fulcio usernames.
    pub sans: Vec<String>,
    /// The OIDC issuer (extension .1.8, else .1.1).
    pub issuer: Option<String>,
    /// The certificate's public key.
    pub key: PublicKey,
    /// Lower-case hex SHA-256 of the DER certificate.
    pub fingerprint: String,
}

impl SigningCertificate {
    /// Reads a DER certificate's claims. Nothing is verified.
    pub fn parse(der: &[u8]) -> Result<Self, String> {
        let cert = Certificate::from_der(der).map_err(|e| format!("the certificate does not parse: {e}"))?;
        let tbs = cert.tbs_certificate();
        let mut sans = Vec::new();
        if let Ok(Some((_, SubjectAltName(names)))) = tbs.get_extension::<SubjectAltName>() {
            for name in names {
                match name {
                    GeneralName::Rfc822Name(s)
                    | GeneralName::DnsName(s)
                    | GeneralName::UniformResourceIdentifier(s) => {
                        sans.push(s.to_string());
                    }
                    GeneralName::OtherName(other) if other.type_id.to_string() == FULCIO_USERNAME => {
                        if let Ok(s) = other.value.decode_as::<Utf8StringRef<'_>>() {
                            sans.push(s.to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        let key = PublicKey::from_certificate(der)?;
        let mut parsed = Self {
            der: der.to_vec(),
            cert,
            sans,
            issuer: None,
            key,
            fingerprint: hex(&Sha256::digest(der)),
        };
        parsed.issuer = parsed
            .extension_string(OIDC_ISSUER_V2)
            .or_else(|| parsed.extension_string(OIDC_ISSUER_V1));
        Ok(parsed)
    }

    /// The DER certificate.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// An extension's value as text: a DER string decoded, else the raw bytes as UTF-8 (Fulcio's v1
    /// extensions are raw), else `None`.
    pub fn extension_string(&self, oid: &str) -> Option<String> {
        let ext = self
            .cert
            .tbs_certificate()
            .extensions()?
            .iter()
            .find(|e| e.extn_id.to_string() == oid)?;
        let raw = ext.extn_value.as_bytes();
        if let Ok(s) = Utf8StringRef::from_der(raw) {
            return Some(s.to_string());
        }
        if let Ok(s) = Ia5String::from_der(raw) {
            return Some(s.to_string());
        }
        if let Ok(s) = PrintableString::from_der(raw) {
            return Some(s.to_string());
        }
        std::str::from_utf8(raw).ok().map(str::to_owned)
    }

    /// When the certificate became valid (Fulcio: the moment it was issued).
    pub fn not_before(&self) -> SystemTime {
        self.validity().0
    }

    fn validity(&self) -> (SystemTime, SystemTime) {
        let v = self.cert.tbs_certificate().validity();
        (v.not_before.to_system_time(), v.not_after.to_system_time())
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Verifies a leaf certificate as Sigstore clients do: it chains to one of `cas` (the authority
/// trusted at every time in `times`, each certificate valid at each of them), carries an SCT that a
/// trusted CT log signed (when the trusted root lists CT logs), and has the code-signing profile.
pub fn verify_fulcio(
    leaf: &SigningCertificate,
    times: &[SystemTime],
    cas: &[CertificateAuthority],
    ctlogs: &[CtLog],
) -> Result<(), String> {
    if times.is_empty() {
        return Err("no verified time to check the certificate at".into());
    }
    let (not_before, not_after) = leaf.validity();
    for &t in times {
        if t < not_before || t > not_after {
            return Err(format!(
                "the signing certificate was not valid at the signing time {} (valid {} to {})",
                rfc3339(t),
                rfc3339(not_before),
                rfc3339(not_after)
            ));
        }
    }
    let issuer = chain_to_authority(leaf, times, cas)?;
    if !ctlogs.is_empty() {
        verify_sct(leaf, &issuer, ctlogs)?;
    }
    let tbs = leaf.cert.tbs_certificate();
    if let Ok(Some((_, bc))) = tbs.get_extension::<BasicConstraints>()
        && bc.ca
    {
        return Err("the signing certificate is a CA certificate".into());
    }
    match tbs.get_extension::<KeyUsage>() {
        Ok(Some((_, ku))) if ku.digital_signature() => {}
        _ => return Err("the signing certificate's key usage does not allow digital signatures".into()),
    }
    match tbs.get_extension::<ExtendedKeyUsage>() {
        Ok(Some((_, eku))) if eku.0.iter().any(|o| o.to_string() == CODE_SIGNING) => {}
        _ => return Err("the signing certificate lacks the code-signing extended key usage".into()),
    }
    Ok(())
}

/// The chain from `leaf` to a trusted authority; returns the leaf's issuer.
fn chain_to_authority(
    leaf: &SigningCertificate,
    times: &[SystemTime],
    cas: &[CertificateAuthority],
) -> Result<Certificate, String> {
    let mut last = String::from("the trusted root lists no certificate authority");
    for ca in cas {
        let chain = match ca
            .chain
            .iter()
            .map(|d| Certificate::from_der(d))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(c) if !c.is_empty() => c,
            Ok(_) => continue,
            Err(e) => return Err(format!("a trusted CA certificate does not parse: {e}")),
        };
        if chain[0].tbs_certificate().subject() != leaf.cert.tbs_certificate().issuer() {
            continue;
        }
        match check_chain(&leaf.cert, &chain, times) {
            Ok(()) => {}
            Err(e) => {
                last = e;
                continue;
            }
        }
        if let Some(t) = times.iter().find(|t| !within(**t, ca.valid_from, ca.valid_until)) {
            last = format!(
                "the certificate authority was not trusted at the signing time {}",
                rfc3339(*t)
            );
            continue;
        }
        return Ok(chain[0].clone());
    }
    if last.starts_with("the trusted root lists") && !cas.is_empty() {
        last = format!(
            "the signing certificate's issuer ({}) is not a certificate authority of the trusted root",
            leaf.cert.tbs_certificate().issuer()
        );
    }
    Err(last)
}

fn check_chain(leaf: &Certificate, chain: &[Certificate], times: &[SystemTime]) -> Result<(), String> {
    let mut child = leaf;
    for (i, parent) in chain.iter().enumerate() {
        let key = PublicKey::from_spki(
            &parent
                .tbs_certificate()
                .subject_public_key_info()
                .to_der()
                .map_err(|e| e.to_string())?,
        )?;
        let tbs = child.tbs_certificate().to_der().map_err(|e| e.to_string())?;
        let signature = child
            .signature()
            .as_bytes()
            .ok_or("a certificate signature has unused bits")?;
        key.verify_message(&child.signature_algorithm().oid.to_string(), &tbs, signature)
            .map_err(|e| format!("certificate {i} of the chain is not signed by the next: {e}"))?;
        let ptbs = parent.tbs_certificate();
        let is_ca = matches!(ptbs.get_extension::<BasicConstraints>(), Ok(Some((_, bc))) if bc.ca);
        let can_sign = matches!(ptbs.get_extension::<KeyUsage>(), Ok(Some((_, ku))) if ku.key_cert_sign());
        if !is_ca || !can_sign {
            return Err(format!(
                "CA certificate {} ({}) may not issue certificates",
                i + 1,
                ptbs.subject()
            ));
        }
        let v = ptbs.validity();
        for &t in times {
            if t < v.not_before.to_system_time() || t > v.not_after.to_system_time() {
                return Err(format!(
                    "CA certificate {} ({}) was not valid at the signing time {}",
                    i + 1,
                    ptbs.subject(),
                    rfc3339(t)
                ));
            }
        }
        child = parent;
    }
    Ok(())
}

/// RFC 6962 §3.2: one embedded SCT by a trusted CT log over the precertificate.
fn verify_sct(leaf: &SigningCertificate, issuer: &Certificate, ctlogs: &[CtLog]) -> Result<(), String> {
    let tbs = leaf.cert.tbs_certificate();
    let ext = tbs
        .extensions()
        .and_then(|exts| exts.iter().find(|e| e.extn_id.to_string() == EMBEDDED_SCTS))
        .ok_or("the signing certificate has no embedded SCT")?;
    let list = SignedCertificateTimestampList::from_der(ext.extn_value.as_bytes())
        .map_err(|e| format!("the certificate's SCT list does not parse: {e}"))?;
    let scts = list
        .parse_timestamps()
        .map_err(|e| format!("the certificate's SCT list does not parse: {e:?}"))?;
    let precert = precert_tbs(&tbs.to_der().map_err(|e| e.to_string())?)?;
    let issuer_key_hash = Sha256::digest(
        issuer
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| e.to_string())?,
    );
    let mut last = "no SCT is from a CT log of the trusted root".to_owned();
    for serialized in scts {
        let Ok(sct) = serialized.parse_timestamp() else {
            continue;
        };
        let Some(log) = ctlogs.iter().find(|l| l.log_id == sct.log_id.key_id) else {
            continue;
        };
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(sct.timestamp);
        if !within(at, log.valid_from, log.valid_until) {
            last = "the SCT's CT log was not trusted at the SCT's time".into();
            continue;
        }
        // digitally-signed struct: version, signature_type, timestamp, entry_type precert,
        // issuer_key_hash, tbs (u24 length), extensions (u16 length).
        let mut signed = vec![0u8, 0u8];
        signed.extend_from_slice(&sct.timestamp.to_be_bytes());
        signed.extend_from_slice(&1u16.to_be_bytes());
        signed.extend_from_slice(&issuer_key_hash);
        let len = precert.len();
        signed.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8]);
        signed.extend_from_slice(&precert);
        let exts = sct.extensions.as_slice();
        signed.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        signed.extend_from_slice(exts);
        let algorithm = match (&sct.signature.algorithm.signature, &sct.signature.algorithm.hash) {
            (SignatureAlgorithm::Ecdsa, HashAlgorithm::Sha256) => "1.2.840.10045.4.3.2",
            (SignatureAlgorithm::Ecdsa, HashAlgorithm::Sha384) => "1.2.840.10045.4.3.3",
            (SignatureAlgorithm::Rsa, HashAlgorithm::Sha256) => "1.2.840.113549.1.1.11",
            (SignatureAlgorithm::Ed25519, _) => "1.3.101.112",
            _ => {
                last = "the SCT's signature algorithm is not supported".into();
                continue;
            }
        };
        let key = PublicKey::from_spki(&log.spki)?;
        match key.verify_message(algorithm, &signed, sct.signature.signature.as_slice()) {
            Ok(()) => return Ok(()),
            Err(_) => last = "the SCT's signature does not verify with its CT log's key".into(),
        }
    }
    Err(last)
}

/// The precertificate TBS: the certificate's TBS without the SCT list extension (RFC 6962 §3.2).
fn precert_tbs(tbs: &[u8]) -> Result<Vec<u8>, String> {
    let bad = || "the certificate's TBS is not DER".to_owned();
    let (tag, body, rest) = tlv(tbs).ok_or_else(bad)?;
    if tag != 0x30 || !rest.is_empty() {
        return Err(bad());
    }
    let sct_oid = OctetString::new(
        spki::der::asn1::ObjectIdentifier::new(EMBEDDED_SCTS)
            .map_err(|e| e.to_string())?
            .as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut items = body;
    while !items.is_empty() {
        let (t, content, next) = tlv(items).ok_or_else(bad)?;
        let whole = &items[..items.len() - next.len()];
        if t == 0xa3 {
            let (_, exts, _) = tlv(content).ok_or_else(bad)?;
            let mut kept = Vec::new();
            let mut e = exts;
            while !e.is_empty() {
                let (_, ext_body, e_next) = tlv(e).ok_or_else(bad)?;
                let (oid_tag, oid, _) = tlv(ext_body).ok_or_else(bad)?;
                if !(oid_tag == 0x06 && oid == sct_oid.as_bytes()) {
                    kept.extend_from_slice(&e[..e.len() - e_next.len()]);
                }
                e = e_next;
            }
            out.extend(encode(0xa3, &encode(0x30, &kept)));
        } else {
            out.extend_from_slice(whole);
        }
        items = next;
    }
    Ok(encode(0x30, &out))
}

/// One DER TLV (single-byte tags): (tag, contents, rest).
fn tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *buf.first()?;
    let first = *buf.get(1)?;
    let (len, header) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for b in buf.get(2..2 + n)? {
            len = (len << 8) | *b as usize;
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((tag, buf.get(header..end)?, &buf[end..]))
}

fn encode(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// RFC 3339, whole seconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match spki::der::DateTime::from_unix_duration(std::time::Duration::from_secs(secs)) {
        Ok(dt) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            dt.year(),
            dt.month(),
            dt.day(),
            dt.hour(),
            dt.minutes(),
            dt.seconds()
        ),
        Err(_) => format!("{secs}s after the epoch"),
    }
}
