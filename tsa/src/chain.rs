//! The TSA's certificate chain: a self-signed root CA and the timestamping leaf it issues (RFC 5280, RFC 3161
//! §2.3).
//!
//! The root's key lives only while [`issue_chain`] runs: the root is a trust anchor that verifiers are given
//! out of band (`GET /api/v1/timestamp/certchain`), never used to sign again.

use std::time::Duration;

use const_oid::db::rfc4519::CN;
use const_oid::db::rfc5280::ID_KP_TIME_STAMPING;
use der::Any;
use der::asn1::{SetOfVec, Utf8StringRef};
use der::referenced::OwnedToRef;
use p256::ecdsa::signature::{Keypair, Signer};
use rand_core::{OsRng, RngCore};
use spki::{
    DynSignatureAlgorithmIdentifier, EncodePublicKey, SignatureBitStringEncoding, SubjectPublicKeyInfoOwned,
};
use x509_cert::Certificate;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;

use crate::error::TsaError;
use crate::key::TsaKey;

/// Issues `[leaf, root]` for `leaf_key`: a new root CA on the same curve, valid for `validity` from now,
/// named `<common_name> Root CA`, and a leaf named `common_name` that may only sign timestamps.
pub(crate) fn issue_chain(
    leaf_key: &TsaKey,
    common_name: &str,
    validity: Duration,
) -> Result<Vec<Certificate>, TsaError> {
    let leaf_spki = leaf_key.public_key_info()?;
    match leaf_key {
        TsaKey::P256(_) => {
            let root_key = p256::ecdsa::SigningKey::random(&mut OsRng);
            issue::<_, p256::ecdsa::DerSignature>(&root_key, leaf_spki, common_name, validity)
        }
        TsaKey::P384(_) => {
            let root_key = p384::ecdsa::SigningKey::random(&mut OsRng);
            issue::<_, p384::ecdsa::DerSignature>(&root_key, leaf_spki, common_name, validity)
        }
    }
}

fn issue<S, Sig>(
    root_key: &S,
    leaf_spki: SubjectPublicKeyInfoOwned,
    common_name: &str,
    validity: Duration,
) -> Result<Vec<Certificate>, TsaError>
where
    S: Keypair + DynSignatureAlgorithmIdentifier + Signer<Sig>,
    S::VerifyingKey: EncodePublicKey,
    Sig: SignatureBitStringEncoding,
{
    let validity = Validity::from_now(validity)?;
    let root_name = name(&format!("{common_name} Root CA"))?;
    let root_spki = SubjectPublicKeyInfoOwned::from_key(root_key.verifying_key())?;

    // Root profile: subjectKeyIdentifier, basicConstraints CA:TRUE (critical), keyUsage keyCertSign and
    // cRLSign (critical).
    let root = CertificateBuilder::new(
        Profile::Root,
        random_serial()?,
        validity,
        root_name.clone(),
        root_spki.clone(),
        root_key,
    )?
    .build::<Sig>()?;

    // The leaf's extensions are set one by one (the `Leaf` profile would add nonRepudiation): RFC 3161 §2.3
    // wants exactly one extended key usage, id-kp-timeStamping, marked critical.
    let mut leaf = CertificateBuilder::new(
        Profile::Manual {
            issuer: Some(root_name),
        },
        random_serial()?,
        validity,
        name(common_name)?,
        leaf_spki.clone(),
        root_key,
    )?;
    leaf.add_extension(&BasicConstraints {
        ca: false,
        path_len_constraint: None,
    })?;
    leaf.add_extension(&KeyUsage(KeyUsages::DigitalSignature.into()))?;
    // Critical, as x509-cert marks every EKU without anyExtendedKeyUsage.
    leaf.add_extension(&ExtendedKeyUsage(vec![ID_KP_TIME_STAMPING]))?;
    leaf.add_extension(&SubjectKeyIdentifier::try_from(leaf_spki.owned_to_ref())?)?;
    // The same SHA-1 key identifier method as the root's subjectKeyIdentifier, so the two match.
    leaf.add_extension(&AuthorityKeyIdentifier::try_from(root_spki.owned_to_ref())?)?;
    let leaf = leaf.build::<Sig>()?;

    Ok(vec![leaf, root])
}

/// A distinguished name with one attribute, `CN=common_name` as a UTF8String.
fn name(common_name: &str) -> Result<Name, TsaError> {
    let value = Any::encode_from(&Utf8StringRef::new(common_name)?)?;
    let cn = x509_cert::attr::AttributeTypeAndValue { oid: CN, value };
    Ok(RdnSequence(vec![RelativeDistinguishedName(SetOfVec::try_from(
        vec![cn],
    )?)]))
}

/// A random positive serial number of 16 octets, so that it needs no leading zero and fits RFC 5280's
/// 20-octet limit.
fn random_serial() -> Result<SerialNumber, TsaError> {
    Ok(SerialNumber::new(&random_positive_16())?)
}

/// 16 random octets read as a positive big-endian integer with no leading zero octet: the top bit is cleared
/// (positive) and the next one set (no leading zero), leaving 126 random bits.
pub(crate) fn random_positive_16() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    bytes
}
