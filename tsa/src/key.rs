//! The TSA's signing key: ECDSA on P-256 (the default) or P-384, the key of the leaf certificate.
//!
//! A P-256 key signs with ecdsa-with-SHA256 over SHA-256 digests, a P-384 key with ecdsa-with-SHA384 over
//! SHA-384 digests: each curve is paired with the hash of its strength, as RFC 5753 recommends and as the
//! clients' CMS verifiers expect.

use const_oid::db::rfc5912::{ID_SHA_256, ID_SHA_384};
use p256::ecdsa::signature::Signer;
use p256::elliptic_curve::zeroize::Zeroizing;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rand_core::OsRng;
use sha2::Digest;
use spki::{AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, SubjectPublicKeyInfoOwned};

use crate::error::TsaError;

/// The curve of a TSA key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256 with SHA-256.
    P256,
    /// NIST P-384 with SHA-384.
    P384,
}

/// An ECDSA signing key of the timestamp authority.
#[derive(Clone)]
pub enum TsaKey {
    /// A P-256 key.
    P256(p256::ecdsa::SigningKey),
    /// A P-384 key.
    P384(p384::ecdsa::SigningKey),
}

impl std::fmt::Debug for TsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        write!(f, "TsaKey({:?})", self.curve())
    }
}

impl TsaKey {
    /// A new random key on `curve`, from the operating system's random source.
    pub fn generate(curve: Curve) -> Self {
        match curve {
            Curve::P256 => TsaKey::P256(p256::ecdsa::SigningKey::random(&mut OsRng)),
            Curve::P384 => TsaKey::P384(p384::ecdsa::SigningKey::random(&mut OsRng)),
        }
    }

    /// The curve of this key.
    pub fn curve(&self) -> Curve {
        match self {
            TsaKey::P256(_) => Curve::P256,
            TsaKey::P384(_) => Curve::P384,
        }
    }

    /// The key as a PKCS#8 PEM document (`-----BEGIN PRIVATE KEY-----`), zeroized when dropped.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, TsaError> {
        let pem = match self {
            TsaKey::P256(k) => k.to_pkcs8_pem(LineEnding::LF),
            TsaKey::P384(k) => k.to_pkcs8_pem(LineEnding::LF),
        };
        pem.map_err(|e| TsaError::Key(format!("encoding the key as PKCS#8: {e}")))
    }

    /// Reads a PKCS#8 PEM private key on P-256 or P-384; `None` if it is neither.
    pub fn from_pkcs8_pem(pem: &str) -> Option<Self> {
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            return Some(TsaKey::P256(k));
        }
        p384::ecdsa::SigningKey::from_pkcs8_pem(pem)
            .ok()
            .map(TsaKey::P384)
    }

    /// The public key as a `SubjectPublicKeyInfo`, as it appears in the leaf certificate.
    pub fn public_key_info(&self) -> Result<SubjectPublicKeyInfoOwned, TsaError> {
        Ok(match self {
            TsaKey::P256(k) => SubjectPublicKeyInfoOwned::from_key(*k.verifying_key())?,
            TsaKey::P384(k) => SubjectPublicKeyInfoOwned::from_key(*k.verifying_key())?,
        })
    }

    /// The digest algorithm paired with this key (SHA-256 or SHA-384), parameters absent (RFC 5754 §2).
    pub(crate) fn digest_algorithm(&self) -> AlgorithmIdentifierOwned {
        let oid = match self {
            TsaKey::P256(_) => ID_SHA_256,
            TsaKey::P384(_) => ID_SHA_384,
        };
        AlgorithmIdentifierOwned {
            oid,
            parameters: None,
        }
    }

    /// The signature algorithm: ecdsa-with-SHA256 or ecdsa-with-SHA384, parameters absent (RFC 5758 §3.2).
    pub(crate) fn signature_algorithm(&self) -> Result<AlgorithmIdentifierOwned, TsaError> {
        Ok(match self {
            TsaKey::P256(k) => k.signature_algorithm_identifier()?,
            TsaKey::P384(k) => k.signature_algorithm_identifier()?,
        })
    }

    /// `data` hashed with [`TsaKey::digest_algorithm`].
    pub(crate) fn digest(&self, data: &[u8]) -> Vec<u8> {
        match self {
            TsaKey::P256(_) => sha2::Sha256::digest(data).to_vec(),
            TsaKey::P384(_) => sha2::Sha384::digest(data).to_vec(),
        }
    }

    /// The DER `ECDSA-Sig-Value` of `message` (hashed with the curve's hash by the signer).
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, TsaError> {
        let fail = |e: p256::ecdsa::Error| TsaError::Key(e.to_string());
        Ok(match self {
            TsaKey::P256(k) => {
                let sig: p256::ecdsa::DerSignature = k.try_sign(message).map_err(fail)?;
                sig.as_bytes().to_vec()
            }
            TsaKey::P384(k) => {
                let sig: p384::ecdsa::DerSignature = k.try_sign(message).map_err(fail)?;
                sig.as_bytes().to_vec()
            }
        })
    }
}
