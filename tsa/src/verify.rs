//! Verifying a timestamp, as a relying party does offline: the `TimeStampResp` (or bare token) a
//! Sigstore bundle carries, against the timestamp authorities a trusted root names.
//!
//! What is checked (RFC 3161 §2.4.2, RFC 5652 §5.4, §11): the reply granted a token; the token is a
//! `SignedData` over a `TSTInfo` whose message imprint is the digest of the signed data; one signer,
//! whose signed attributes name the `TSTInfo` content type and carry its digest; the signer is the
//! leaf of a trusted authority (matched by issuer and serial or key identifier: certificates the token
//! carries are not trusted for that) and its signature over the attributes verifies; the leaf has the
//! timeStamping extended key usage; each certificate of the authority's chain is signed by the next
//! and valid at `genTime`; `genTime` is within the period the trusted root gives the authority.

use std::time::SystemTime;

use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier};
use const_oid::ObjectIdentifier;
use const_oid::db::rfc5280::ID_KP_TIME_STAMPING;
use const_oid::db::rfc5911::{ID_CONTENT_TYPE, ID_MESSAGE_DIGEST, ID_SIGNED_DATA};
use const_oid::db::rfc5912::{
    ECDSA_WITH_SHA_256, ECDSA_WITH_SHA_384, ID_CE_EXT_KEY_USAGE, ID_CE_SUBJECT_KEY_IDENTIFIER, ID_SHA_256,
    ID_SHA_384, ID_SHA_512, SECP_256_R_1, SECP_384_R_1,
};
use der::asn1::OctetString;
use der::{Decode, Encode};
use sha2::Digest;
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::Certificate;
use x509_cert::ext::pkix::ExtendedKeyUsage;
use x509_tsp::{TimeStampResp, TstInfo};

use crate::token::ID_CT_TST_INFO;

/// A timestamp authority a verifier trusts.
#[derive(Clone, Debug)]
pub struct TrustedAuthority {
    /// DER certificates, the signing leaf first, its issuers after it.
    pub chain: Vec<Vec<u8>>,
    /// Since when the authority is trusted (`None`: always).
    pub valid_from: Option<SystemTime>,
    /// Until when (`None`: still).
    pub valid_until: Option<SystemTime>,
}

/// A timestamp that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedTimestamp {
    /// `genTime`.
    pub time: SystemTime,
    /// Which of the trusted authorities signed it.
    pub authority: usize,
}

/// Verifies `signed` (a DER `TimeStampResp`, or the token alone) as a timestamp over `message` by
/// one of `trusted`. The error says which check failed.
pub fn verify_timestamp(
    signed: &[u8],
    message: &[u8],
    trusted: &[TrustedAuthority],
) -> Result<VerifiedTimestamp, String> {
    let token = match TimeStampResp::from_der(signed) {
        Ok(reply) => {
            // granted (0) or grantedWithMods (1)
            let status = reply.status.status as u8;
            if status > 1 {
                return Err(format!(
                    "the timestamp reply did not grant a token (status {status})"
                ));
            }
            reply.time_stamp_token.ok_or("the timestamp reply has no token")?
        }
        Err(_) => ContentInfo::from_der(signed)
            .map_err(|e| format!("the timestamp is neither a TimeStampResp nor a token: {e}"))?,
    };
    if token.content_type != ID_SIGNED_DATA {
        return Err("the timestamp token is not CMS SignedData".into());
    }
    let signed_data: SignedData = token
        .content
        .decode_as()
        .map_err(|e| format!("the timestamp token's SignedData does not parse: {e}"))?;
    let content = &signed_data.encap_content_info;
    if content.econtent_type != ID_CT_TST_INFO {
        return Err("the timestamp token does not hold a TSTInfo".into());
    }
    let tst_der = content
        .econtent
        .as_ref()
        .ok_or("the timestamp token's TSTInfo is missing")?
        .decode_as::<OctetString>()
        .map_err(|e| format!("the timestamp token's content is not an OCTET STRING: {e}"))?
        .into_bytes();
    let tst = TstInfo::from_der(&tst_der).map_err(|e| format!("the TSTInfo does not parse: {e}"))?;

    let imprint = &tst.message_imprint;
    let expected = digest(&imprint.hash_algorithm.oid, message)
        .ok_or_else(|| format!("unknown message imprint hash {}", imprint.hash_algorithm.oid))?;
    if imprint.hashed_message.as_bytes() != expected.as_slice() {
        return Err(
            "the timestamp is over other data (its message imprint does not match the signature)".into(),
        );
    }
    let time = tst.gen_time.to_system_time();

    let mut signers = signed_data.signer_infos.0.iter();
    let (Some(signer), None) = (signers.next(), signers.next()) else {
        return Err("the timestamp token must have exactly one signer".into());
    };
    let attrs = signer
        .signed_attrs
        .as_ref()
        .ok_or("the timestamp token's signer has no signed attributes")?;
    let attr = |oid: ObjectIdentifier| {
        attrs
            .iter()
            .find(|a| a.oid == oid)
            .and_then(|a| a.values.iter().next())
    };
    let content_type = attr(ID_CONTENT_TYPE)
        .and_then(|v| v.decode_as::<ObjectIdentifier>().ok())
        .ok_or("the timestamp token's signed attributes have no content type")?;
    if content_type != ID_CT_TST_INFO {
        return Err("the timestamp token's signed content type is not TSTInfo".into());
    }
    let message_digest = attr(ID_MESSAGE_DIGEST)
        .and_then(|v| v.decode_as::<OctetString>().ok())
        .ok_or("the timestamp token's signed attributes have no message digest")?;
    let content_digest = digest(&signer.digest_alg.oid, &tst_der)
        .ok_or_else(|| format!("unknown digest algorithm {}", signer.digest_alg.oid))?;
    if message_digest.as_bytes() != content_digest.as_slice() {
        return Err("the timestamp token's signed digest does not match its TSTInfo".into());
    }
    let signed_attrs = attrs
        .to_der()
        .map_err(|e| format!("the signed attributes do not encode: {e}"))?;

    let (authority, chain) = find_authority(&signed_data, &signer.sid, trusted)?;
    let leaf = &chain[0];
    if !verify_ecdsa(
        &leaf.tbs_certificate.subject_public_key_info,
        &signer.signature_algorithm.oid,
        &signed_attrs,
        signer.signature.as_bytes(),
    )? {
        return Err("the timestamp's signature does not verify with the TSA certificate".into());
    }
    if !has_timestamping_eku(leaf) {
        return Err("the TSA certificate lacks the timeStamping extended key usage".into());
    }
    for (i, cert) in chain.iter().enumerate() {
        let validity = &cert.tbs_certificate.validity;
        if time < validity.not_before.to_system_time() || time > validity.not_after.to_system_time() {
            return Err(format!(
                "TSA certificate {i} of the trusted chain is not valid at the timestamp's time"
            ));
        }
        if let Some(issuer) = chain.get(i + 1) {
            let tbs = cert
                .tbs_certificate
                .to_der()
                .map_err(|e| format!("a TSA certificate does not encode: {e}"))?;
            let signature = cert
                .signature
                .as_bytes()
                .ok_or("a TSA certificate's signature has unused bits")?;
            if !verify_ecdsa(
                &issuer.tbs_certificate.subject_public_key_info,
                &cert.signature_algorithm.oid,
                &tbs,
                signature,
            )? {
                return Err(format!(
                    "TSA certificate {i} is not signed by the next one in its trusted chain"
                ));
            }
        }
    }
    let trusted = &trusted[authority];
    if trusted.valid_from.is_some_and(|from| time < from)
        || trusted.valid_until.is_some_and(|until| time > until)
    {
        return Err("the timestamp's time is outside the period the trusted root gives its TSA".into());
    }
    Ok(VerifiedTimestamp { time, authority })
}

/// The trusted authority whose leaf is the token's signer.
fn find_authority(
    signed_data: &SignedData,
    sid: &SignerIdentifier,
    trusted: &[TrustedAuthority],
) -> Result<(usize, Vec<Certificate>), String> {
    for (i, authority) in trusted.iter().enumerate() {
        let chain = authority
            .chain
            .iter()
            .map(|der| Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("a trusted TSA certificate does not parse: {e}"))?;
        let Some(leaf) = chain.first() else { continue };
        let matches = match sid {
            SignerIdentifier::IssuerAndSerialNumber(id) => {
                id.issuer == leaf.tbs_certificate.issuer
                    && id.serial_number == leaf.tbs_certificate.serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => leaf
                .tbs_certificate
                .extensions
                .iter()
                .flatten()
                .find(|e| e.extn_id == ID_CE_SUBJECT_KEY_IDENTIFIER)
                .and_then(|e| OctetString::from_der(e.extn_value.as_bytes()).ok())
                .is_some_and(|k| k.as_bytes() == ski.0.as_bytes()),
        };
        if matches {
            return Ok((i, chain));
        }
    }
    let carried = signed_data
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|c| match c {
            CertificateChoices::Certificate(c) => Some(c.tbs_certificate.subject.to_string()),
            CertificateChoices::Other(_) => None,
        })
        .collect::<Vec<_>>();
    Err(if carried.is_empty() {
        "the timestamp was signed by a TSA that is not in the trusted root".to_owned()
    } else {
        format!(
            "the timestamp was signed by a TSA that is not in the trusted root ({})",
            carried.join("; ")
        )
    })
}

fn has_timestamping_eku(cert: &Certificate) -> bool {
    cert.tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == ID_CE_EXT_KEY_USAGE)
        .and_then(|e| ExtendedKeyUsage::from_der(e.extn_value.as_bytes()).ok())
        .is_some_and(|eku| eku.0.contains(&ID_KP_TIME_STAMPING))
}

fn digest(algorithm: &ObjectIdentifier, data: &[u8]) -> Option<Vec<u8>> {
    Some(match *algorithm {
        ID_SHA_256 => sha2::Sha256::digest(data).to_vec(),
        ID_SHA_384 => sha2::Sha384::digest(data).to_vec(),
        ID_SHA_512 => sha2::Sha512::digest(data).to_vec(),
        _ => return None,
    })
}

/// An ECDSA signature (P-256 or P-384, SHA-256 or SHA-384) by `spki` over `message`. `Ok(false)`
/// when it does not verify; an error when the key or algorithm is not one TSAs use here.
fn verify_ecdsa(
    spki: &SubjectPublicKeyInfoOwned,
    algorithm: &ObjectIdentifier,
    message: &[u8],
    signature: &[u8],
) -> Result<bool, String> {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    let prehash = match *algorithm {
        ECDSA_WITH_SHA_256 => sha2::Sha256::digest(message).to_vec(),
        ECDSA_WITH_SHA_384 => sha2::Sha384::digest(message).to_vec(),
        other => {
            return Err(format!(
                "TSA signature algorithm {other} is not supported (ECDSA with SHA-256 or SHA-384 is)"
            ));
        }
    };
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    let point = spki.subject_public_key.raw_bytes();
    Ok(match curve {
        Some(SECP_256_R_1) => {
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map_err(|e| format!("a TSA P-256 key: {e}"))?;
            p256::ecdsa::Signature::from_der(signature)
                .is_ok_and(|s| key.verify_prehash(&prehash, &s).is_ok())
        }
        Some(SECP_384_R_1) => {
            let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map_err(|e| format!("a TSA P-384 key: {e}"))?;
            p384::ecdsa::Signature::from_der(signature)
                .is_ok_and(|s| key.verify_prehash(&prehash, &s).is_ok())
        }
        _ => return Err("TSA keys other than ECDSA P-256 and P-384 are not supported".into()),
    })
}
