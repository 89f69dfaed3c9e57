//! `cairn search`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cairn_tlog::{Checkpoint, VerifierKey};
use serde_json::json;

use super::{EXIT_INVALID, JsonValue, read_trust, urlencode};

/// Arguments of `cairn search`.
#[derive(clap::Args)]
pub struct SearchArgs {
    /// A search server (`cairn serve` with the search role).
    #[arg(long, default_value = "http://127.0.0.1:7480")]
    pub url: String,
    /// The read path whose `shards.json` gives the keys results must be signed by (default: --url,
    /// with a warning; not needed with --trusted-root).
    #[arg(long)]
    pub log_url: Option<String>,
    /// Entries signing this digest: `sha256:<hex>`.
    #[arg(long, conflicts_with_all = ["artifact", "identity", "fingerprint"])]
    pub digest: Option<String>,
    /// Entries signing this file's SHA-256 digest.
    #[arg(long, conflicts_with_all = ["identity", "fingerprint"])]
    pub artifact: Option<PathBuf>,
    /// Entries whose certificate names this identity (a SAN: e-mail or URI), exactly.
    #[arg(long, conflicts_with = "fingerprint")]
    pub identity: Option<String>,
    /// With --identity: the OIDC issuer, exactly.
    #[arg(long, requires = "identity")]
    pub issuer: Option<String>,
    /// Entries signed by this certificate or key (hex SHA-256 of its DER).
    #[arg(long)]
    pub fingerprint: Option<String>,
    /// A Sigstore trusted root: its logs' keys sign the checkpoints results are proven against, and
    /// results whose certificate does not chain to its CAs (anyone can log a self-made certificate
    /// naming anyone) are marked (`certificateTrusted: false`).
    #[arg(long)]
    pub trusted_root: Option<PathBuf>,
    /// Stop after this many results.
    #[arg(long, default_value_t = 10_000)]
    pub max: usize,
    /// One JSON object per result instead of text.
    #[arg(long)]
    pub json: bool,
    /// For `https://` servers.
    #[command(flatten)]
    pub tls: crate::commands::TlsArgs,
}

/// Whether an entry's claims answer the query.
type Matches = Box<dyn Fn(&cairn_client::watch::Claims) -> bool>;

/// `cairn search`: every result is checked here (checkpoint signature, inclusion proof, and that the
/// entry really matches the query) before it is printed. Exit 0, or 1 if a result does not verify.
pub async fn search(args: SearchArgs) -> anyhow::Result<ExitCode> {
    use cairn_client::watch::Claims;
    use cairn_sigstore::certificate::hex;
    use cairn_tlog::{Hash, leaf_hash, verify_inclusion};
    use sha2::Digest;

    let (param, want): (String, Matches) = if let Some(path) = &args.artifact {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let digest = sha2::Sha256::digest(&bytes).to_vec();
        (
            format!("digest=sha256:{}", hex(&digest)),
            Box::new(move |c: &Claims| c.digest == digest),
        )
    } else if let Some(d) = &args.digest {
        let hexdigest = d
            .split_once(':')
            .map_or(d.as_str(), |(_, h)| h)
            .to_ascii_lowercase();
        (
            format!("digest={}", urlencode(d)),
            Box::new(move |c: &Claims| hex(&c.digest) == hexdigest),
        )
    } else if let Some(identity) = &args.identity {
        let issuer = args.issuer.clone();
        let id = identity.clone();
        let mut q = format!("identity={}", urlencode(identity));
        if let Some(i) = &issuer {
            q.push_str(&format!("&issuer={}", urlencode(i)));
        }
        (
            q,
            Box::new(move |c: &Claims| {
                c.certificate.as_ref().is_some_and(|cert| {
                    cert.sans.contains(&id) && issuer.as_ref().is_none_or(|i| cert.issuer.as_ref() == Some(i))
                })
            }),
        )
    } else if let Some(f) = &args.fingerprint {
        let f = f.to_ascii_lowercase();
        (
            format!("fingerprint={f}"),
            Box::new(move |c: &Claims| {
                c.fingerprint == f
                    || c.certificate
                        .as_ref()
                        .is_some_and(|cert| hex(&sha2::Sha256::digest(cert.key.spki())) == f)
            }),
        )
    } else {
        anyhow::bail!("give one of --digest, --artifact, --identity, --fingerprint");
    };

    let trust = args.trusted_root.as_ref().map(|p| read_trust(p)).transpose()?;
    // Whose signature a result's checkpoint must carry: a log of the trusted root, else a key the
    // log's own read path lists.
    let keys: Vec<VerifierKey> = match (&trust, &args.log_url) {
        (Some(_), None) => Vec::new(),
        (_, log_url) => {
            if log_url.is_none() {
                eprintln!(
                    "warning: the log's keys come from the search server itself ({}): results are checked for \
                     consistency, not against an independent key; give --trusted-root, or --log-url of the log",
                    args.url
                );
            }
            cairn_client::HttpLog::with_client(log_url.as_deref().unwrap_or(&args.url), args.tls.http(None)?)
                .shards()
                .await
                .context("reading the log's shards.json for its keys")?
                .iter()
                .filter_map(|s| VerifierKey::parse(&s.vkey).ok())
                .collect()
        }
    };
    let known = |text: &str| -> Option<VerifierKey> {
        let key = VerifierKey::parse(text).ok()?;
        if keys.contains(&key) {
            return Some(key);
        }
        let trusted = trust
            .as_ref()?
            .tlogs
            .iter()
            .any(|l| l.key == key.public_key() && l.log_id.as_slice() == key.key_hash().as_slice());
        trusted.then_some(key)
    };
    let http = args.tls.http(None)?;
    let base = args.url.trim_end_matches('/');
    let mut token: Option<String> = None;
    let (mut shown, mut bad) = (0usize, 0usize);
    loop {
        let mut url = format!("{base}/api/v1/search?{param}&limit=100");
        if let Some(t) = &token {
            url.push_str(&format!("&page_token={}", urlencode(t)));
        }
        let reply = http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = reply.status();
        let body: serde_json::Value = reply.json_value().await?;
        anyhow::ensure!(status.is_success(), "{url}: {status}: {}", body["error"]);
        for r in body["results"].as_array().into_iter().flatten() {
            let check = || -> Result<Claims, String> {
                let key = known(r["logKey"].as_str().unwrap_or_default())
                    .ok_or("signed by a key that is neither in the trusted root nor listed by the log")?;
                let note = r["checkpoint"].as_str().unwrap_or_default().as_bytes();
                let (cp, _) = Checkpoint::open(note, &key, &[]).map_err(|e| format!("checkpoint: {e}"))?;
                let entry = STANDARD
                    .decode(r["entry"].as_str().unwrap_or_default())
                    .map_err(|_| "entry is not base64")?;
                let index = r["logIndex"].as_u64().ok_or("no logIndex")?;
                let proof = r["inclusionProof"]["hashes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|h| Hash::from_base64(h.as_str().unwrap_or_default()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("proof: {e}"))?;
                if r["inclusionProof"]["treeSize"].as_u64() != Some(cp.size) {
                    return Err("the proof is for another tree than its checkpoint".into());
                }
                verify_inclusion(&leaf_hash(&entry), index, cp.size, &proof, &cp.root)
                    .map_err(|e| format!("inclusion proof: {e}"))?;
                let claims = Claims::of_body(&entry)?;
                if !want(&claims) {
                    return Err("the entry does not match the query".into());
                }
                Ok(claims)
            };
            let (log_name, index) = (r["log"].as_str().unwrap_or_default(), &r["logIndex"]);
            match check() {
                Ok(claims) => {
                    // None: not judged (no --trusted-root, or a keyed entry).
                    let trusted = trust.as_ref().zip(claims.certificate.as_ref()).map(|(t, cert)| {
                        cairn_sigstore::certificate::verify_fulcio(
                            cert,
                            &[cert.not_before()],
                            &t.cas,
                            &t.ctlogs,
                        )
                        .is_ok()
                    });
                    let signer = claims
                        .certificate
                        .as_ref()
                        .map(|c| {
                            format!(
                                "{} ({})",
                                c.sans.join(", "),
                                c.issuer.as_deref().unwrap_or("no issuer")
                            )
                        })
                        .unwrap_or_else(|| format!("key {}", claims.fingerprint));
                    if args.json {
                        println!(
                            "{}",
                            json!({"log": log_name, "logIndex": index, "verified": true, "signer": signer,
                                   "digest": hex(&claims.digest), "fingerprint": claims.fingerprint,
                                   "certificateTrusted": trusted})
                        );
                    } else {
                        let mark = if trusted == Some(false) {
                            " [certificate not from a trusted CA]"
                        } else {
                            ""
                        };
                        println!(
                            "{log_name} #{index}: {signer}, digest {}{mark}",
                            hex(&claims.digest)
                        );
                    }
                }
                Err(e) => {
                    bad += 1;
                    if args.json {
                        println!(
                            "{}",
                            json!({"log": log_name, "logIndex": index, "verified": false, "error": e})
                        );
                    } else {
                        println!("{log_name} #{index}: DOES NOT VERIFY: {e}");
                    }
                }
            }
            shown += 1;
        }
        token = body["nextPageToken"].as_str().map(str::to_owned);
        if body["pending"] == true {
            eprintln!(
                "(more matches are indexed but not yet under a checkpoint the index trusts: ask again shortly)"
            );
            break;
        }
        if token.is_none() || shown >= args.max {
            break;
        }
    }
    eprintln!(
        "{shown} result(s), {bad} not verifying. A search proves presence only: entries it did not return may still exist."
    );
    Ok(if bad > 0 {
        ExitCode::from(EXIT_INVALID)
    } else {
        ExitCode::SUCCESS
    })
}
