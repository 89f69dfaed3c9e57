//! `cairn verify-bundle`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cairn_sigstore::bundle::{self, Artifact, Expect, Matcher, Trust};
use cairn_sigstore::certificate::rfc3339;
use cairn_sigstore::verify::PublicKey;
use cairn_tlog::{Checkpoint, VerifierKey};
use cairn_witness::Policy;
use serde_json::json;

use super::{EXIT_INVALID, EXIT_USAGE};

/// Arguments of `cairn verify-bundle`.
#[derive(clap::Args)]
pub struct VerifyBundleArgs {
    /// The artifact: a file, or `sha256:<hex>` for its digest.
    pub artifact: String,
    /// The Sigstore bundle (JSON, v0.3 or v0.2).
    #[arg(long)]
    pub bundle: PathBuf,
    /// The signer's identity: a subject alternative name of the certificate (e-mail, URI), exactly.
    #[arg(long, conflicts_with = "certificate_identity_regexp")]
    pub certificate_identity: Option<String>,
    /// The signer's identity as a regular expression (unanchored: use ^...$ to anchor it).
    #[arg(long)]
    pub certificate_identity_regexp: Option<String>,
    /// The OIDC issuer the certificate names, exactly.
    #[arg(long, conflicts_with = "certificate_oidc_issuer_regexp")]
    pub certificate_oidc_issuer: Option<String>,
    /// The OIDC issuer as a regular expression.
    #[arg(long)]
    pub certificate_oidc_issuer_regexp: Option<String>,
    /// A PEM public key: the bundle must be signed by it (keyed signing, no certificate policy).
    #[arg(long, conflicts_with_all = [
        "certificate_identity", "certificate_identity_regexp",
        "certificate_oidc_issuer", "certificate_oidc_issuer_regexp",
    ])]
    pub key: Option<PathBuf>,
    /// The Sigstore trusted root (`trusted_root.json`, or a client trust config).
    #[arg(long)]
    pub trusted_root: Option<PathBuf>,
    /// Instead of --trusted-root: a Cairn read path whose trusted root is fetched once and pinned
    /// (under --trust-dir); later runs use the pinned copy and need no network.
    #[arg(long, conflicts_with = "trusted_root")]
    pub log_url: Option<String>,
    /// Accept a signing certificate without an SCT check when the trusted root lists no CT logs
    /// (cosign's flag of the same name). Without it such a bundle is invalid.
    #[arg(long)]
    pub insecure_ignore_sct: bool,
    /// Where pinned trusted roots are kept [default: $XDG_CONFIG_HOME/cairn/trust, else
    /// ~/.config/cairn/trust]. Never the working directory: a checkout could bring its own "pins".
    #[arg(long)]
    pub trust_dir: Option<PathBuf>,
    /// A witness policy (c2sp.org/tlog-policy): the entry's checkpoint must carry its quorum of
    /// witness cosignatures.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `cairn verify-bundle`: exit 0 valid, 1 invalid, 2 usage or I/O error.
pub async fn verify_bundle(args: VerifyBundleArgs) -> ExitCode {
    let json = args.json;
    let setup = match prepare(&args).await {
        Ok(s) => s,
        Err(e) => {
            if json {
                println!(
                    "{}",
                    json!({"valid": false, "check": "usage", "error": format!("{e:#}")})
                );
            }
            eprintln!("error: {e:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let artifact = match &setup.artifact {
        Input::Bytes(b) => Artifact::Bytes(b),
        Input::Digest(d) => Artifact::Sha256(d),
    };
    let result = bundle::verify(&setup.bundle, artifact, &setup.trust, &setup.expect).and_then(|v| {
        let Some(policy) = &setup.policy else {
            return Ok((v, Vec::new()));
        };
        let origin = Checkpoint::parse_note_unverified(&v.checkpoint)
            .map(|c| c.origin)
            .unwrap_or_default();
        let log = setup.trust.tlogs.iter().find(|l| l.base_url == v.log_url);
        let key = log.and_then(|l| VerifierKey::new(&origin, 0x01, l.key).ok());
        policy
            .verify(&v.checkpoint, key.as_ref())
            .map(|(_, _, names)| (v, names))
            .map_err(|e| bundle::Failure {
                check: bundle::Check::Checkpoint,
                message: format!("the witness policy is not met: {e}"),
            })
    });
    match result {
        Ok((v, witnesses)) => {
            if json {
                println!(
                    "{}",
                    json!({
                        "valid": true,
                        "logIndex": v.log_index,
                        "logId": v.log_id,
                        "logUrl": v.log_url,
                        "treeSize": v.tree_size,
                        "signedAt": v.signed_at.iter().map(|t| rfc3339(*t)).collect::<Vec<_>>(),
                        "identities": v.sans,
                        "issuer": v.issuer,
                        "witnesses": witnesses,
                    })
                );
            } else {
                let who = if v.sans.is_empty() {
                    "the given key".to_owned()
                } else {
                    format!(
                        "{} ({})",
                        v.sans.join(", "),
                        v.issuer.as_deref().unwrap_or("no issuer")
                    )
                };
                let cosigned = if witnesses.is_empty() {
                    String::new()
                } else {
                    format!(", cosigned by {}", witnesses.join(", "))
                };
                println!(
                    "OK: {} signed by {who} at {}; entry {} of {} (tree size {}){cosigned}",
                    args.artifact,
                    v.signed_at.first().map(|t| rfc3339(*t)).unwrap_or_default(),
                    v.log_index,
                    v.log_url,
                    v.tree_size
                );
            }
            ExitCode::SUCCESS
        }
        Err(f) => {
            if json {
                println!(
                    "{}",
                    json!({"valid": false, "check": f.check.name(), "error": f.message})
                );
            } else {
                println!("INVALID ({}): {}", f.check.name(), f.message);
            }
            ExitCode::from(EXIT_INVALID)
        }
    }
}

enum Input {
    Bytes(Vec<u8>),
    Digest([u8; 32]),
}

struct Setup {
    artifact: Input,
    bundle: Vec<u8>,
    trust: Trust,
    expect: Expect,
    policy: Option<Policy>,
}

async fn prepare(args: &VerifyBundleArgs) -> anyhow::Result<Setup> {
    let artifact = match args.artifact.strip_prefix("sha256:") {
        Some(hex) => {
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                .collect::<Option<Vec<u8>>>()
                .filter(|b| b.len() == 32)
                .context("sha256:<digest> needs 64 hex digits")?;
            Input::Digest(
                bytes
                    .try_into()
                    .map_err(|_| anyhow::anyhow!("sha256 digests are 32 bytes"))?,
            )
        }
        None => {
            Input::Bytes(std::fs::read(&args.artifact).with_context(|| format!("reading {}", args.artifact))?)
        }
    };
    let bundle = std::fs::read(&args.bundle).with_context(|| format!("reading {}", args.bundle.display()))?;
    let trust_bytes = match (&args.trusted_root, &args.log_url) {
        (Some(path), _) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        (None, Some(url)) => pinned_trusted_root(url, &trust_dir(args.trust_dir.as_deref())?).await?,
        (None, None) => {
            anyhow::bail!("give --trusted-root FILE, or --log-url URL to fetch and pin a log's trusted root")
        }
    };
    let mut trust = Trust::from_json(&trust_bytes).map_err(anyhow::Error::msg)?;
    trust.ignore_sct_without_ctlogs = args.insecure_ignore_sct;
    let matcher = |exact: &Option<String>, regex: &Option<String>, what: &str| -> anyhow::Result<Matcher> {
        match (exact, regex) {
            (Some(e), _) => Ok(Matcher::Exact(e.clone())),
            (None, Some(r)) => Matcher::regex(r).map_err(|e| anyhow::anyhow!("--{what}-regexp: {e}")),
            (None, None) => {
                anyhow::bail!("give --{what} or --{what}-regexp (or --key for a keyed signature)")
            }
        }
    };
    let expect = match &args.key {
        Some(path) => Expect::Key(read_public_key(path)?),
        None => Expect::Identity {
            identity: matcher(
                &args.certificate_identity,
                &args.certificate_identity_regexp,
                "certificate-identity",
            )?,
            issuer: matcher(
                &args.certificate_oidc_issuer,
                &args.certificate_oidc_issuer_regexp,
                "certificate-oidc-issuer",
            )?,
        },
    };
    let policy = args
        .policy
        .as_ref()
        .map(|p| -> anyhow::Result<Policy> {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Policy::parse(&text).with_context(|| format!("witness policy {}", p.display()))
        })
        .transpose()?;
    Ok(Setup {
        artifact,
        bundle,
        trust,
        expect,
        policy,
    })
}

/// A PEM (`PUBLIC KEY`) or DER SubjectPublicKeyInfo file.
fn read_public_key(path: &Path) -> anyhow::Result<PublicKey> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let der = match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains("-----BEGIN PUBLIC KEY-----") => {
            let body: String = text
                .lines()
                .skip_while(|l| !l.starts_with("-----BEGIN PUBLIC KEY-----"))
                .skip(1)
                .take_while(|l| !l.starts_with("-----END"))
                .collect();
            STANDARD
                .decode(body.trim())
                .with_context(|| format!("{}: the PEM body is not base64", path.display()))?
        }
        _ => bytes,
    };
    PublicKey::from_spki(&der).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Where pinned trusted roots are kept: `given`, else the user's configuration directory.
fn trust_dir(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = given {
        return Ok(dir.to_owned());
    }
    default_trust_dir(std::env::var_os("XDG_CONFIG_HOME"), std::env::var_os("HOME"))
        .context("neither XDG_CONFIG_HOME nor HOME is set: give --trust-dir DIR for pinned trusted roots")
}

/// `$XDG_CONFIG_HOME/cairn/trust`, else `$HOME/.config/cairn/trust`. Empty and relative values
/// count as unset (a relative one would put the pins under the working directory again).
fn default_trust_dir(xdg: Option<std::ffi::OsString>, home: Option<std::ffi::OsString>) -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    let config = match (xdg.and_then(absolute), home.and_then(absolute)) {
        (Some(xdg), _) => xdg,
        (None, Some(home)) => home.join(".config"),
        (None, None) => return None,
    };
    Some(config.join("cairn").join("trust"))
}

/// The URL made safe for a file name, for people to read.
fn readable_name(url: &str) -> String {
    url.trim_end_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The file a log's pinned trusted root is kept in: [`readable_name`] and a digest of the whole
/// URL, so that two URLs never share a pin.
fn pin_file_name(url: &str) -> String {
    use sha2::Digest;
    let digest =
        cairn_sigstore::certificate::hex(&sha2::Sha256::digest(url.trim_end_matches('/').as_bytes()));
    format!("{}-{}.trusted_root.json", readable_name(url), &digest[..16])
}

/// The trusted root of the log at `url`: the pinned copy under `dir` if there is one, else fetched
/// now and pinned (trust on first use, said on stderr with the document's digest).
async fn pinned_trusted_root(url: &str, dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = dir.join(pin_file_name(url));
    if let Ok(bytes) = std::fs::read(&path) {
        return Ok(bytes);
    }
    // A pin made before names carried the URL's digest is still the pin: fetching anew would trust
    // whatever the log serves today.
    let earlier = dir.join(format!("{}.trusted_root.json", readable_name(url)));
    if let Ok(bytes) = std::fs::read(&earlier) {
        eprintln!(
            "using the trusted root of {url} pinned in {} (a file name from an earlier version)",
            earlier.display()
        );
        return Ok(bytes);
    }
    let site = cairn_client::HttpLog::new(url);
    let bytes = site
        .get("/trusted_root.json")
        .await
        .with_context(|| format!("fetching {url}/trusted_root.json"))?
        .with_context(|| format!("{url} serves no trusted_root.json"))?;
    Trust::from_json(&bytes).map_err(|e| anyhow::anyhow!("{url}/trusted_root.json: {e}"))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    use sha2::Digest;
    eprintln!(
        "pinned the trusted root of {url} in {} (sha256 {}); later runs use it offline",
        path.display(),
        cairn_sigstore::certificate::hex(&sha2::Sha256::digest(&bytes))
    );
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_that_read_alike_get_their_own_pins() {
        let a = pin_file_name("https://a.example:8443");
        let b = pin_file_name("https://a.example/8443");
        assert_ne!(a, b, "two logs would share one pinned root");
        assert!(a.starts_with("https___a.example_8443-"), "{a}");
        assert_eq!(
            a,
            pin_file_name("https://a.example:8443/"),
            "a trailing slash is the same log"
        );
    }

    #[test]
    fn pins_are_kept_under_the_given_dir_or_the_user_configuration() {
        let given = Path::new("/somewhere/pins");
        assert_eq!(trust_dir(Some(given)).ok().as_deref(), Some(given));
        let os = |s: &str| Some(std::ffi::OsString::from(s));
        assert_eq!(
            default_trust_dir(os("/x"), os("/home/u")),
            Some(PathBuf::from("/x/cairn/trust"))
        );
        assert_eq!(
            default_trust_dir(os(""), os("/home/u")),
            Some(PathBuf::from("/home/u/.config/cairn/trust"))
        );
        assert_eq!(default_trust_dir(None, None), None);
        assert_eq!(
            default_trust_dir(os(".config"), os("/home/u")),
            Some(PathBuf::from("/home/u/.config/cairn/trust")),
            "a relative XDG_CONFIG_HOME is ignored"
        );
        assert_eq!(default_trust_dir(os(".config"), os("home")), None);
    }
}
