//! The timestamp authority: its key, certificate chain and policy, their files, and timestamping a request.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use const_oid::ObjectIdentifier;
use der::pem::LineEnding;
use der::{Encode, EncodePem};
use x509_cert::Certificate;

use crate::chain::issue_chain;
use crate::error::{Rejection, TsaError};
use crate::key::{Curve, TsaKey};
use crate::token::TokenSigner;
use crate::{rejection, request};

/// The leaf's private key in the authority's directory: PKCS#8 PEM, mode 0600.
pub const KEY_FILE: &str = "tsa-key.pem";

/// The certificate chain in the authority's directory: PEM, the leaf first, then the root.
pub const CHAIN_FILE: &str = "tsa-chain.pem";

/// How long certificates made by [`Authority::load_or_generate`] are valid: ten years.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// The TSA policy of our timestamps (`TSTInfo.policy`) unless [`Authority::with_policy`] sets another:
/// `1.3.6.1.4.1.32473.3161.1`, a placeholder under enterprise number 32473, which RFC 5612 reserves for
/// documentation. A deployment whose verifiers pin the policy sets an OID under an arc it controls.
///
/// (A `2.25` UUID OID would be the self-assigned choice, but its 128-bit arc does not fit `const-oid` 0.9,
/// whose arcs are 32-bit, so neither `x509-tsp` nor `der` could carry it.)
pub const DEFAULT_POLICY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.32473.3161.1");

/// An RFC 3161 timestamp authority: an ECDSA key, its certificate chain `[leaf, root]` and a policy.
#[derive(Debug)]
pub struct Authority {
    signer: TokenSigner,
    chain: Vec<Certificate>,
    chain_der: Vec<Vec<u8>>,
    chain_pem: String,
    policy: ObjectIdentifier,
}

impl Authority {
    /// An authority signing with `key`, whose certificate is `chain[0]`; the rest of `chain` (its issuers, up
    /// to the root) is what [`Authority::chain_pem`] publishes.
    pub fn new(key: TsaKey, chain: Vec<Certificate>) -> Result<Self, TsaError> {
        let Some(leaf) = chain.first() else {
            return Err(TsaError::Certificate("the certificate chain is empty".to_owned()));
        };
        if leaf.tbs_certificate.subject_public_key_info != key.public_key_info()? {
            return Err(TsaError::Certificate(
                "the first certificate of the chain is not the signing key's".to_owned(),
            ));
        }
        let chain_der = chain.iter().map(|c| c.to_der()).collect::<Result<Vec<_>, _>>()?;
        let mut chain_pem = String::new();
        for certificate in &chain {
            chain_pem.push_str(&certificate.to_pem(LineEnding::LF)?);
        }
        Ok(Authority {
            signer: TokenSigner::new(key, leaf.clone())?,
            chain,
            chain_der,
            chain_pem,
            policy: DEFAULT_POLICY,
        })
    }

    /// A new P-256 authority: a new key, and a new self-signed root CA named `<common_name> Root CA` that
    /// issues its leaf, named `common_name`. Both certificates are valid for `validity` from now. The root's
    /// key is dropped: it signs nothing else.
    pub fn generate(common_name: &str, validity: Duration) -> Result<Self, TsaError> {
        Self::generate_with_curve(Curve::P256, common_name, validity)
    }

    /// [`Authority::generate`] with a key, and a root, on `curve`.
    pub fn generate_with_curve(
        curve: Curve,
        common_name: &str,
        validity: Duration,
    ) -> Result<Self, TsaError> {
        let key = TsaKey::generate(curve);
        let chain = issue_chain(&key, common_name, validity)?;
        Self::new(key, chain)
    }

    /// Reads the authority kept in `dir` by [`Authority::to_pem_files`]: [`KEY_FILE`] and [`CHAIN_FILE`].
    /// A key file that its group or others can read is refused.
    pub fn load(dir: &Path) -> Result<Self, TsaError> {
        let key_path = dir.join(KEY_FILE);
        check_private(&key_path)?;
        let pem = p256::elliptic_curve::zeroize::Zeroizing::new(
            std::fs::read_to_string(&key_path).map_err(|source| io_error(&key_path, source))?,
        );
        let key = TsaKey::from_pkcs8_pem(&pem).ok_or_else(|| TsaError::BadKeyMaterial {
            path: key_path.clone(),
            reason: "not a PKCS#8 PEM private key on P-256 or P-384".to_owned(),
        })?;

        let chain_path = dir.join(CHAIN_FILE);
        let bad_chain = |reason: String| TsaError::BadKeyMaterial {
            path: chain_path.clone(),
            reason,
        };
        let chain_bytes = std::fs::read(&chain_path).map_err(|source| io_error(&chain_path, source))?;
        let chain = Certificate::load_pem_chain(&chain_bytes)
            .map_err(|e| bad_chain(format!("not a PEM certificate chain: {e}")))?;
        Self::new(key, chain).map_err(|e| bad_chain(e.to_string()))
    }

    /// Writes the key to `dir`/[`KEY_FILE`] (mode 0600) and the chain to `dir`/[`CHAIN_FILE`], creating
    /// `dir`. Refuses to replace an existing key file. Each file is written whole or not at all (a temporary
    /// file renamed into place), the key last, so a crash leaves no key without its chain.
    pub fn to_pem_files(&self, dir: &Path) -> Result<(), TsaError> {
        std::fs::create_dir_all(dir).map_err(|source| io_error(dir, source))?;
        let key_path = dir.join(KEY_FILE);
        if key_path.exists() {
            return Err(TsaError::BadKeyMaterial {
                path: key_path,
                reason: "a key file is already there: refusing to replace it".to_owned(),
            });
        }
        write_atomically(&dir.join(CHAIN_FILE), self.chain_pem.as_bytes(), 0o644)?;
        let key_pem = self.signer.key().to_pkcs8_pem()?;
        write_atomically(&key_path, key_pem.as_bytes(), 0o600)
    }

    /// The authority kept in `dir` or, on first start (no [`KEY_FILE`] there), a new P-256 one named
    /// `common_name`, valid for [`DEFAULT_VALIDITY`], written to `dir`.
    pub fn load_or_generate(dir: &Path, common_name: &str) -> Result<Self, TsaError> {
        if dir.join(KEY_FILE).exists() {
            return Self::load(dir);
        }
        let authority = Self::generate(common_name, DEFAULT_VALIDITY)?;
        authority.to_pem_files(dir)?;
        tracing::info!(dir = %dir.display(), common_name, "generated a new timestamp authority key and chain");
        Ok(authority)
    }

    /// This authority with `policy` as the policy of its timestamps, and the only `reqPolicy` it accepts.
    pub fn with_policy(mut self, policy: ObjectIdentifier) -> Self {
        self.policy = policy;
        self
    }

    /// The policy of this authority's timestamps.
    pub fn policy(&self) -> ObjectIdentifier {
        self.policy
    }

    /// The curve of the signing key.
    pub fn curve(&self) -> Curve {
        self.signer.key().curve()
    }

    /// The certificate chain: the leaf first, then its issuers up to the root.
    pub fn chain(&self) -> &[Certificate] {
        &self.chain
    }

    /// The certificate chain as PEM, the leaf first, then the root (`application/pem-certificate-chain`).
    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// The certificate chain as DER certificates, the leaf first, then the root.
    pub fn chain_der(&self) -> &[Vec<u8>] {
        &self.chain_der
    }

    /// Since when the leaf certificate is valid: the start of the TSA's validity in trust documents.
    pub fn valid_from(&self) -> Option<SystemTime> {
        Some(
            self.chain
                .first()?
                .tbs_certificate
                .validity
                .not_before
                .to_system_time(),
        )
    }

    /// Answers the DER `TimeStampReq` `request_der` with a DER `TimeStampResp` granting it at `now`.
    ///
    /// A request we refuse is [`TsaError::Rejected`], whose [`Rejection`] holds the rejection
    /// `TimeStampResp` to send back; any other error is ours, such as [`TsaError::CertificateNotValid`] when
    /// `now` is outside the leaf certificate's validity.
    pub fn timestamp(&self, request_der: &[u8], now: SystemTime) -> Result<Vec<u8>, TsaError> {
        match request::check(request_der, &self.policy) {
            Ok(accepted) => {
                self.check_validity(now)?;
                self.signer.grant(self.policy, accepted, now)
            }
            Err(refusal) => {
                let reply = rejection::reply(refusal.failure, &refusal.message)?;
                Err(TsaError::Rejected(Rejection::new(
                    refusal.failure,
                    refusal.message,
                    reply,
                )))
            }
        }
    }
}

impl Authority {
    /// Refuses to sign at a time the leaf certificate does not cover: no verifier would accept the token.
    fn check_validity(&self, now: SystemTime) -> Result<(), TsaError> {
        let validity = &self.chain[0].tbs_certificate.validity;
        let (not_before, not_after) = (
            validity.not_before.to_date_time(),
            validity.not_after.to_date_time(),
        );
        let at = der::DateTime::from_system_time(now)?;
        if at < not_before || at > not_after {
            return Err(TsaError::CertificateNotValid {
                at,
                not_before,
                not_after,
            });
        }
        Ok(())
    }
}

fn io_error(path: &Path, source: std::io::Error) -> TsaError {
    TsaError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Refuses a key file that its group or others may read (or, elsewhere than Unix, only checks that it exists).
fn check_private(path: &Path) -> Result<(), TsaError> {
    let metadata = std::fs::metadata(path).map_err(|source| io_error(path, source))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TsaError::BadKeyMaterial {
                path: path.to_owned(),
                reason: format!("the key file is readable by others (mode {mode:o}): chmod 600 it"),
            });
        }
    }
    #[cfg(not(unix))]
    let _ = metadata;
    Ok(())
}

/// Writes `contents` to a temporary file beside `path` with `mode`, syncs it and renames it to `path`.
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), TsaError> {
    let mut temporary = PathBuf::from(path);
    temporary.as_mut_os_string().push(".tmp");
    // A temporary file left by a crash is ours to replace; none there is the usual case.
    if let Err(source) = std::fs::remove_file(&temporary)
        && source.kind() != std::io::ErrorKind::NotFound
    {
        return Err(io_error(&temporary, source));
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(&temporary)
        .map_err(|source| io_error(&temporary, source))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error(&temporary, source))?;
    std::fs::rename(&temporary, path).map_err(|source| io_error(path, source))
}
