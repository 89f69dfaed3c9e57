//! The consumer side: `cairn verify-bundle` (offline Sigstore bundle verification with an identity
//! policy).

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

/// Exit status of a bundle that does not verify.
pub const EXIT_INVALID: u8 = 1;
/// Exit status of a usage or I/O error (nothing was verified).
pub const EXIT_USAGE: u8 = 2;

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
    /// Where pinned trusted roots are kept.
    #[arg(long, default_value = ".cairn-trust")]
    pub trust_dir: PathBuf,
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
        (None, Some(url)) => pinned_trusted_root(url, &args.trust_dir).await?,
        (None, None) => {
            anyhow::bail!("give --trusted-root FILE, or --log-url URL to fetch and pin a log's trusted root")
        }
    };
    let trust = Trust::from_json(&trust_bytes).map_err(anyhow::Error::msg)?;
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

/// A Sigstore trusted root file (or a client trust config holding one).
fn read_trust(path: &Path) -> anyhow::Result<Trust> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Trust::from_json(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
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

/// The trusted root of the log at `url`: the pinned copy under `dir` if there is one, else fetched
/// now and pinned (trust on first use, said on stderr with the document's digest).
async fn pinned_trusted_root(url: &str, dir: &Path) -> anyhow::Result<Vec<u8>> {
    let name: String = url
        .trim_end_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!("{name}.trusted_root.json"));
    if let Ok(bytes) = std::fs::read(&path) {
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

/// Arguments of `cairn monitor`.
#[derive(clap::Args)]
pub struct MonitorArgs {
    /// A Cairn read path: every shard of its `shards.json` is followed (new shards too).
    #[arg(long, required_unless_present = "trusted_root")]
    pub log_url: Option<String>,
    /// A Sigstore trusted root: its certificate authorities judge certificates (entries whose
    /// certificate does not chain to them are not matched); without --log-url, its transparency logs
    /// are the logs followed (each a tlog-tiles read path at its base URL: Cairn or any Rekor v2 log).
    #[arg(long)]
    pub trusted_root: Option<PathBuf>,
    /// The watch list: a rekor-monitor configuration file (YAML or JSON, `monitoredValues`).
    #[arg(long)]
    pub watch: Option<PathBuf>,
    /// Where the monitor keeps what it trusts and how far it has read.
    #[arg(long, default_value = "cairn-monitor.state.json")]
    pub state: PathBuf,
    /// One round, then exit: 0 if every log was read and behaved, 1 if one did not behave (a
    /// consistency alert), 2 if one could not be read.
    #[arg(long)]
    pub once: bool,
    /// Seconds between rounds.
    #[arg(long, default_value_t = 10)]
    pub interval: u64,
    /// POST each alert (JSON) to this URL, besides printing it.
    #[arg(long)]
    pub webhook: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// `cairn monitor`.
pub async fn monitor(args: MonitorArgs) -> anyhow::Result<ExitCode> {
    use cairn_client::monitor::{Alert, Logs, Monitor};
    use cairn_client::watch::WatchList;

    let trust = args.trusted_root.as_ref().map(|p| read_trust(p)).transpose()?;
    let watch = args
        .watch
        .as_ref()
        .map(|p| -> anyhow::Result<WatchList> {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            WatchList::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        })
        .transpose()?;
    let logs = match (&args.log_url, &trust) {
        (Some(url), _) => Logs::Cairn(url.clone()),
        (None, Some(t)) => Logs::TrustedRoot(t.clone()),
        (None, None) => anyhow::bail!("give --log-url or --trusted-root"),
    };
    let mut monitor = Monitor::new(logs, watch, trust, &args.state)?;
    if let Some(addr) = args.metrics_addr {
        let registry = monitor.metrics().registry().clone();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let registry = registry.clone();
                async move {
                    let mut out = String::new();
                    let _ = prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut out);
                    out
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let bars = indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr());
    let bar_of = std::sync::Mutex::new(std::collections::HashMap::<String, indicatif::ProgressBar>::new());
    let style = indicatif::ProgressStyle::with_template(
        "{prefix} [{bar:30}] {pos}/{len} entries, {per_sec}, {eta} left",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    let progress = |log: &str, read: u64, size: u64| {
        let mut map = bar_of.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let bar = map.entry(log.to_owned()).or_insert_with(|| {
            let b = bars.add(indicatif::ProgressBar::new(size));
            b.set_style(style.clone());
            b.set_prefix(log.to_owned());
            b.set_position(read);
            b.reset_eta();
            b
        });
        bar.set_length(size);
        bar.set_position(read);
    };
    let mut failed = false;
    let mut unreadable = false;
    loop {
        let mut pending = Vec::new();
        let mut on_alert = |a: &Alert| {
            println!("{}", a.to_json());
            if matches!(a, Alert::Consistency(_)) {
                failed = true;
            }
            pending.push(a.to_json().clone());
        };
        let result = monitor.round(&mut on_alert, &progress).await;
        if let Some(url) = &args.webhook {
            for alert in pending {
                if let Err(e) = http
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(alert.to_string())
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                {
                    eprintln!("monitor: webhook {url}: {e} (the alert is on stdout)");
                }
            }
        }
        match result {
            Ok(round) => {
                for (log, why) in &round.failed {
                    eprintln!("monitor: {log} could not be read this round: {why}");
                    unreadable = true;
                }
            }
            Err(e) if args.once => return Err(e.into()),
            Err(e) => eprintln!("monitor: this round failed, retrying: {e}"),
        }
        if args.once {
            for bar in bar_of
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .values()
            {
                bar.finish_and_clear();
            }
            return Ok(if failed {
                ExitCode::from(EXIT_INVALID)
            } else if unreadable {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            });
        }
        tokio::time::sleep(std::time::Duration::from_secs(args.interval)).await;
    }
}

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
            cairn_client::HttpLog::new(log_url.as_deref().unwrap_or(&args.url))
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
    let http = reqwest::Client::new();
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

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Reading a JSON body without reqwest's `json` feature.
trait JsonValue {
    async fn json_value(self) -> anyhow::Result<serde_json::Value>;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> anyhow::Result<serde_json::Value> {
        let bytes = self.bytes().await?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&bytes)))
    }
}
