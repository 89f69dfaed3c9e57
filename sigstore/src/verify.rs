//! Client keys and signatures over a digest: what a hashedrekord entry's signature is checked with.
//!
//! ECDSA and RSA are verified with aws-lc-rs (fast, and it verifies over a digest the caller holds);
//! Ed25519ph with ed25519-dalek.

use aws_lc_rs::digest as lcd;
use aws_lc_rs::signature::{self as lc, UnparsedPublicKey};
use spki::SubjectPublicKeyInfoRef;
use spki::der::{self, Decode};

/// The hash a signature was made over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hash {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Hash {
    /// The digest length in bytes.
    pub fn len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// Never: every digest has a length.
    pub fn is_empty(self) -> bool {
        false
    }

    /// The name people read: `SHA-256`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "SHA-256",
            Self::Sha384 => "SHA-384",
            Self::Sha512 => "SHA-512",
        }
    }

    fn aws(self) -> &'static lcd::Algorithm {
        match self {
            Self::Sha256 => &lcd::SHA256,
            Self::Sha384 => &lcd::SHA384,
            Self::Sha512 => &lcd::SHA512,
        }
    }
}

/// A public key's type, as read from its SubjectPublicKeyInfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// RSA with a modulus of this many bits.
    Rsa(usize),
    /// ECDSA on NIST P-256.
    P256,
    /// ECDSA on NIST P-384.
    P384,
    /// ECDSA on NIST P-521.
    P521,
    /// Ed25519.
    Ed25519,
    /// An RSA-PSS key (its own SPKI algorithm).
    RsaPss,
    /// Anything else; the algorithm OID (and the curve OID for EC keys).
    Other(String),
}

impl std::fmt::Display for KeyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rsa(bits) => write!(f, "RSA {bits}-bit"),
            Self::P256 => f.write_str("ECDSA P-256"),
            Self::P384 => f.write_str("ECDSA P-384"),
            Self::P521 => f.write_str("ECDSA P-521"),
            Self::Ed25519 => f.write_str("Ed25519"),
            Self::RsaPss => f.write_str("RSA-PSS"),
            Self::Other(oid) => write!(f, "a key of algorithm {oid}"),
        }
    }
}

const RSA: &str = "1.2.840.113549.1.1.1";
const RSA_PSS: &str = "1.2.840.113549.1.1.10";
const EC: &str = "1.2.840.10045.2.1";
const P256: &str = "1.2.840.10045.3.1.7";
const P384: &str = "1.3.132.0.34";
const P521: &str = "1.3.132.0.35";
const ED25519: &str = "1.3.101.112";

/// A client's public key: its DER SubjectPublicKeyInfo and type.
#[derive(Clone, Debug)]
pub struct PublicKey {
    spki: Vec<u8>,
    key_type: KeyType,
    /// The raw key inside the SPKI (the EC point, the PKCS#1 key, the Ed25519 key).
    raw: Vec<u8>,
}

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo.
    pub fn from_spki(der: &[u8]) -> Result<Self, String> {
        let spki = SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| format!("the public key is not a DER SubjectPublicKeyInfo: {e}"))?;
        let raw = spki
            .subject_public_key
            .as_bytes()
            .ok_or("the public key's bit string has unused bits")?
            .to_vec();
        let oid = spki.algorithm.oid.to_string();
        let key_type = match oid.as_str() {
            RSA => {
                let key = pkcs1::RsaPublicKey::<der::asn1::UintRef<'_>>::from_der(&raw)
                    .map_err(|e| format!("the RSA public key does not parse: {e}"))?;
                let modulus = key.modulus.as_bytes();
                let leading = modulus.iter().take_while(|b| **b == 0).count();
                let bytes = &modulus[leading..];
                let bits = bytes
                    .first()
                    .map_or(0, |b| (bytes.len() - 1) * 8 + (8 - b.leading_zeros() as usize));
                KeyType::Rsa(bits)
            }
            RSA_PSS => KeyType::RsaPss,
            EC => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok())
                    .map(|o| o.to_string())
                    .ok_or("the EC public key names no named curve")?;
                match curve.as_str() {
                    P256 => KeyType::P256,
                    P384 => KeyType::P384,
                    P521 => KeyType::P521,
                    other => KeyType::Other(format!("{EC} on curve {other}")),
                }
            }
            ED25519 => {
                if raw.len() != 32 {
                    return Err(format!("an Ed25519 public key is 32 bytes, not {}", raw.len()));
                }
                KeyType::Ed25519
            }
            other => KeyType::Other(other.to_owned()),
        };
        Ok(Self {
            spki: der.to_vec(),
            key_type,
            raw,
        })
    }

    /// The public key of a DER X.509 certificate (the certificate itself is not checked: a log
    /// records who claimed what, verifiers judge the certificate).
    pub fn from_certificate(der: &[u8]) -> Result<Self, String> {
        let cert = x509_cert::Certificate::from_der(der)
            .map_err(|e| format!("the certificate is not a DER X.509 certificate: {e}"))?;
        let spki = der::Encode::to_der(cert.tbs_certificate().subject_public_key_info())
            .map_err(|e| format!("the certificate's public key does not encode: {e}"))?;
        Self::from_spki(&spki)
    }

    /// The key's type.
    pub fn key_type(&self) -> &KeyType {
        &self.key_type
    }

    /// Verifies `signature` over `digest` (a `hash` digest of the signed data): ECDSA (ASN.1
    /// signature) and RSA PKCS#1 v1.5 over the digest, Ed25519ph with the digest as the prehash.
    pub fn verify_digest(&self, hash: Hash, digest: &[u8], signature: &[u8]) -> Result<(), String> {
        if digest.len() != hash.len() {
            return Err(format!(
                "the digest is {} bytes; {} digests are {} bytes",
                digest.len(),
                hash.name(),
                hash.len()
            ));
        }
        let bad = || "the signature does not verify over the digest with the given key".to_owned();
        let lc_alg: &'static dyn lc::VerificationAlgorithm = match (&self.key_type, hash) {
            (KeyType::P256, Hash::Sha256) => &lc::ECDSA_P256_SHA256_ASN1,
            (KeyType::P384, Hash::Sha384) => &lc::ECDSA_P384_SHA384_ASN1,
            (KeyType::P521, Hash::Sha512) => &lc::ECDSA_P521_SHA512_ASN1,
            (KeyType::Rsa(_), Hash::Sha256) => &lc::RSA_PKCS1_2048_8192_SHA256,
            (KeyType::Ed25519, Hash::Sha512) => {
                return self.verify_ed25519ph(digest, signature).map_err(|_| bad());
            }
            (key, hash) => return Err(format!("{key} keys are not used with {} here", hash.name())),
        };
        let digest = lcd::Digest::import_less_safe(digest, hash.aws()).map_err(|_| bad())?;
        UnparsedPublicKey::new(lc_alg, &self.spki)
            .verify_digest(&digest, signature)
            .map_err(|_| bad())
    }

    fn verify_ed25519ph(&self, digest: &[u8], signature: &[u8]) -> Result<(), ()> {
        let key: [u8; 32] = self.raw.as_slice().try_into().map_err(|_| ())?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| ())?;
        let sig = ed25519_dalek::Signature::from_slice(signature).map_err(|_| ())?;
        let prehash: [u8; 64] = digest.try_into().map_err(|_| ())?;
        key.verify_prehashed_strict(Prehashed(prehash), None, &sig)
            .map_err(|_| ())
    }
}

/// A SHA-512 output someone else computed, offered where ed25519-dalek's Ed25519ph wants the hash
/// function: it only ever asks for the output.
#[derive(Clone)]
struct Prehashed([u8; 64]);

impl Default for Prehashed {
    fn default() -> Self {
        Self([0; 64])
    }
}

impl digest::HashMarker for Prehashed {}

impl digest::OutputSizeUser for Prehashed {
    type OutputSize = digest::consts::U64;
}

impl digest::Update for Prehashed {
    /// The digest is already complete: more input would be a caller's mistake, and is ignored.
    fn update(&mut self, _data: &[u8]) {}
}

impl digest::FixedOutput for Prehashed {
    fn finalize_into(self, out: &mut digest::Output<Self>) {
        out.copy_from_slice(&self.0);
    }
}

const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
const ECDSA_SHA512: &str = "1.2.840.10045.4.3.4";
const RSA_SHA256: &str = "1.2.840.113549.1.1.11";
const RSA_SHA384: &str = "1.2.840.113549.1.1.12";
const RSA_SHA512: &str = "1.2.840.113549.1.1.13";

impl PublicKey {
    /// Verifies `signature` over the whole `message` with the X.509 signature algorithm `algorithm`
    /// (an OID: ECDSA or RSA PKCS#1 v1.5 with SHA-2, or Ed25519), as certificates are signed.
    pub fn verify_message(&self, algorithm: &str, message: &[u8], signature: &[u8]) -> Result<(), String> {
        let (alg, key): (&'static dyn lc::VerificationAlgorithm, &[u8]) = match (algorithm, &self.key_type) {
            (ECDSA_SHA256, KeyType::P256) => (&lc::ECDSA_P256_SHA256_ASN1, &self.spki),
            (ECDSA_SHA384, KeyType::P256) => (&lc::ECDSA_P256_SHA384_ASN1, &self.spki),
            (ECDSA_SHA256, KeyType::P384) => (&lc::ECDSA_P384_SHA256_ASN1, &self.spki),
            (ECDSA_SHA384, KeyType::P384) => (&lc::ECDSA_P384_SHA384_ASN1, &self.spki),
            (ECDSA_SHA512, KeyType::P521) => (&lc::ECDSA_P521_SHA512_ASN1, &self.spki),
            (RSA_SHA256, KeyType::Rsa(_)) => (&lc::RSA_PKCS1_2048_8192_SHA256, &self.spki),
            (RSA_SHA384, KeyType::Rsa(_)) => (&lc::RSA_PKCS1_2048_8192_SHA384, &self.spki),
            (RSA_SHA512, KeyType::Rsa(_)) => (&lc::RSA_PKCS1_2048_8192_SHA512, &self.spki),
            (ED25519, KeyType::Ed25519) => (&lc::ED25519, &self.raw),
            (alg, key) => {
                return Err(format!(
                    "signature algorithm {alg} with {key} keys is not supported"
                ));
            }
        };
        UnparsedPublicKey::new(alg, key)
            .verify(message, signature)
            .map_err(|_| "the signature does not verify".to_owned())
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki(&self) -> &[u8] {
        &self.spki
    }
}
