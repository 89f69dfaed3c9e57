//! Unmodified Sigstore clients against the real binary (the embedded default, whose shard 2 is a
//! Sigstore shard and which runs the timestamp authority): cosign v3 signs a blob with a key, logging
//! it through the Rekor v2 API and timestamping it with Cairn's TSA, configured only by the
//! `signing_config.json` and `trusted_root.json` that `cairn trust` fetched; cosign and sigstore-go's
//! conformance client then verify the bundle offline against that trusted root (a tampered artifact
//! and another key are refused), and the entry is in shard 2's published, verified log. Then the same
//! with a certificate from a private CA the operator lists in the trusted root (`[sigstore]
//! extra_trusted_root`): cosign verifies the signer's identity offline and refuses another one. The
//! same certificate flow with sigstore-js's bundle builder, its Rekor v2 client and its TSA client
//! (`clients/sigstore-js/sign.js`), verified by cosign and `cairn verify-bundle`. And a
//! rotation of the Sigstore log while it runs (a shard added with `cairn shard add --kind sigstore`,
//! the old one frozen), which the trust documents follow and the clients with them.
//!
//! The clients come from `scripts/sigstore-clients.sh` (pinned `go install`s and npm packages), which `scripts/test`
//! runs and whose paths it exports with `CAIRN_REQUIRE_SIGSTORE=1`, so in CI this test cannot pass by
//! skipping.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{SIGSTORE, Server, cairn, check_bundle_in_log, ok, required};

fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    Ok(cmd.output()?)
}

/// The trust documents, as a verifier fetches them once (`cairn trust`) and keeps them: the paths of
/// `trusted_root.json` and `signing_config.json`.
fn fetch_trust(d: &Path, http: &str) -> anyhow::Result<(String, String)> {
    fetch_trust_into(d, http, "trust")
}

/// [`fetch_trust`] into `d/<sub>`.
fn fetch_trust_into(d: &Path, http: &str, sub: &str) -> anyhow::Result<(String, String)> {
    let trust = d.join(sub);
    let (fetched, _, err) = cairn(
        d,
        &["trust", "--url", http, "--out", &trust.display().to_string()],
        None,
    )?;
    anyhow::ensure!(fetched, "cairn trust: {err}");
    Ok((
        trust.join("trusted_root.json").display().to_string(),
        trust.join("signing_config.json").display().to_string(),
    ))
}

fn cosign(bin: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<Output> {
    run(Command::new(bin)
        .args(args)
        .current_dir(dir)
        .env("COSIGN_PASSWORD", "")
        // Offline: no TUF, no public-good instance.
        .env("TUF_ROOT", dir.join("tuf"))
        .env("SIGSTORE_NO_CACHE", "1"))
}

/// The paths of cosign and sigstore-go's conformance client, or `None` (skipped) where they are not
/// required and not installed.
fn cosign_and_sigstore_go() -> anyhow::Result<Option<(std::path::PathBuf, std::path::PathBuf)>> {
    Ok(
        match (
            required("CAIRN_COSIGN", SIGSTORE)?,
            required("CAIRN_SIGSTORE_GO", SIGSTORE)?,
        ) {
            (Some(c), Some(g)) => Some((c, g)),
            _ => None,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosign_signs_to_cairn_and_cosign_and_sigstore_go_verify_offline() -> anyhow::Result<()> {
    let Some((cosign_bin, sigstore_go)) = cosign_and_sigstore_go()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let server = Server::start_loopback(d)?;

    let (root, signing) = fetch_trust(d, &server.http)?;

    let artifact = d.join("artifact.txt");
    std::fs::write(&artifact, b"release 1.0 of something people depend on\n")?;
    ok(
        "cosign generate-key-pair",
        &cosign(&cosign_bin, d, &["generate-key-pair"])?,
    )?;
    sign_blob(
        &cosign_bin,
        d,
        (&root, &signing),
        "artifact.txt",
        "artifact.sigstore.json",
    )?;

    // Offline verification, with the TSA's timestamp required.
    let verify = |artifact: &str, key: &str| {
        cosign(
            &cosign_bin,
            d,
            &[
                "verify-blob",
                "--key",
                key,
                "--bundle",
                "artifact.sigstore.json",
                "--trusted-root",
                &root,
                "--use-signed-timestamps",
                artifact,
            ],
        )
    };
    let go_verify = |artifact: &str| {
        run(Command::new(&sigstore_go).current_dir(d).args([
            "verify-bundle",
            "--bundle",
            "artifact.sigstore.json",
            "--trusted-root",
            &root,
            "--key",
            "cosign.pub",
            artifact,
        ]))
    };
    ok("cosign verify-blob", &verify("artifact.txt", "cosign.pub")?)?;
    ok("sigstore-go verify-bundle", &go_verify("artifact.txt")?)?;

    // A tampered artifact, and another key, are refused by both.
    std::fs::write(
        d.join("tampered.txt"),
        b"release 1.0 of something people depend on!\n",
    )?;
    anyhow::ensure!(
        !verify("tampered.txt", "cosign.pub")?.status.success(),
        "cosign accepted a tampered artifact"
    );
    anyhow::ensure!(
        !go_verify("tampered.txt")?.status.success(),
        "sigstore-go accepted a tampered artifact"
    );
    std::fs::create_dir_all(d.join("other"))?;
    ok(
        "cosign generate-key-pair",
        &cosign(&cosign_bin, &d.join("other"), &["generate-key-pair"])?,
    )?;
    anyhow::ensure!(
        !verify("artifact.txt", "other/cosign.pub")?.status.success(),
        "cosign accepted another key"
    );

    // The bundle holds a Rekor v2 entry and the TSA's timestamp, and the entry is in the Sigstore
    // shard's published, verified log.
    check_bundle_in_log(&server.http, &d.join("artifact.sigstore.json")).await?;
    anyhow::ensure!(server.stop()?.success(), "unclean exit");
    Ok(())
}

/// `cosign sign-blob --key cosign.key` of `artifact` into `bundle`, configured only by the trust
/// documents (`root`, `signing`).
fn sign_blob(
    cosign_bin: &Path,
    d: &Path,
    (root, signing): (&str, &str),
    artifact: &str,
    bundle: &str,
) -> anyhow::Result<()> {
    let sign = cosign(
        cosign_bin,
        d,
        &[
            "sign-blob",
            "--key",
            "cosign.key",
            "--signing-config",
            signing,
            "--trusted-root",
            root,
            "--bundle",
            bundle,
            "--yes",
            artifact,
        ],
    )?;
    ok("cosign sign-blob", &sign)
}

/// Signs `<name>.txt` (written here) into `<name>.sigstore.json` with the trust documents `trust`,
/// and returns the shard whose published log holds the entry.
async fn sign_and_find(
    cosign_bin: &Path,
    d: &Path,
    http: &str,
    trust: &(String, String),
    name: &str,
) -> anyhow::Result<u32> {
    let (artifact, bundle) = (format!("{name}.txt"), format!("{name}.sigstore.json"));
    std::fs::write(d.join(&artifact), format!("signed {name} the rotation\n"))?;
    sign_blob(cosign_bin, d, (&trust.0, &trust.1), &artifact, &bundle)?;
    Ok(check_bundle_in_log(http, &d.join(&bundle)).await?.0)
}

/// A Sigstore log rotated while it runs, as public logs do every half year: a second Sigstore shard
/// (origin `127.0.0.1`, another name of this host) is added through the control group with `cairn
/// shard add --kind sigstore`, and the first is frozen. The trust documents the read path serves
/// follow without a restart: the trusted root lists both logs (the frozen one with the end of its
/// validity), the signing config sends clients to the new one. cosign, configured only by the
/// documents fetched after the change, logs to the new shard; cosign and sigstore-go verify offline,
/// against that one trusted root, the new bundle and one logged in the first shard before the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigstore_shard_added_at_runtime_takes_over_and_earlier_bundles_still_verify() -> anyhow::Result<()>
{
    let Some((cosign_bin, sigstore_go)) = cosign_and_sigstore_go()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let server = Server::start_loopback(d)?;
    let port = server.http.rsplit(':').next().unwrap_or_default().to_owned();
    ok(
        "cosign generate-key-pair",
        &cosign(&cosign_bin, d, &["generate-key-pair"])?,
    )?;

    // Before the change: an entry in shard 2, the embedded default's Sigstore shard.
    let before = fetch_trust_into(d, &server.http, "trust-before")?;
    let shard = sign_and_find(&cosign_bin, d, &server.http, &before, "before").await?;
    anyhow::ensure!(shard == 2, "logged in shard {shard}, not 2");

    // Shard 3: its key in the node's key directory, its base URL on the host its origin names.
    let key = d.join("cairn-data/keys/shard-3.key");
    let (made, _, err) = cairn(
        d,
        &[
            "keygen",
            "--origin",
            "127.0.0.1",
            "--out",
            &key.display().to_string(),
        ],
        None,
    )?;
    anyhow::ensure!(made, "cairn keygen: {err}");
    let add = |base_url: &str| {
        cairn(
            d,
            &[
                "shard",
                "add",
                "--id",
                "3",
                "--origin",
                "127.0.0.1",
                "--key-file",
                &key.display().to_string(),
                "--kind",
                "sigstore",
                "--base-url",
                base_url,
                "--server",
                &server.grpc,
            ],
            None,
        )
    };
    let (added, _, err) = add(&format!("http://localhost:{port}/logs/3"))?;
    anyhow::ensure!(
        !added && err.contains("must be the host of its base_url"),
        "a base URL on another host than the origin: {err}"
    );
    let base3 = format!("http://127.0.0.1:{port}/logs/3");
    let (added, out, err) = add(&base3)?;
    anyhow::ensure!(added, "cairn shard add: {err}");
    // Repeating it is a no-op (the start recorded the first time is kept).
    let (again, _, err) = add(&base3)?;
    anyhow::ensure!(again, "repeated cairn shard add: {err} (first said {out})");
    let http = reqwest::Client::new();
    let listed = |id: u64, state: &'static str| {
        let http = http.clone();
        let url = format!("{}/shards.json", server.http);
        async move {
            let doc: serde_json::Value =
                serde_json::from_slice(&http.get(&url).send().await?.bytes().await?)?;
            Ok::<bool, anyhow::Error>(
                doc["shards"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|s| s["id"] == id && s["state"] == state)),
            )
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !listed(3, "active").await? {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "shard 3 not active after 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Freeze shard 2; once the control group recorded its end, the trusted root gives it.
    let (froze, _, err) = cairn(d, &["shard", "freeze", "2", "--server", &server.grpc], None)?;
    anyhow::ensure!(froze, "cairn shard freeze 2: {err}");
    let base2 = format!("http://localhost:{port}/logs/2");
    let window = |doc: &serde_json::Value, base: &str| {
        doc["tlogs"]
            .as_array()
            .and_then(|a| a.iter().find(|t| t["baseUrl"] == base))
            .map(|t| t["publicKey"]["validFor"].clone())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let root: serde_json::Value = loop {
        let root: serde_json::Value = serde_json::from_slice(
            &http
                .get(format!("{}/trusted_root.json", server.http))
                .send()
                .await?
                .bytes()
                .await?,
        )?;
        if window(&root, &base2).is_some_and(|w| w["end"].is_string()) {
            break root;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "shard 2's end not in the trusted root after 30 s: {root}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let new_window =
        window(&root, &base3).ok_or_else(|| anyhow::anyhow!("shard 3 not in the trusted root: {root}"))?;
    anyhow::ensure!(
        new_window["start"].is_string() && new_window["end"].is_null(),
        "shard 3's window: {new_window}"
    );

    // After the change: the documents as a verifier fetches them now.
    let after = fetch_trust_into(d, &server.http, "trust-after")?;
    let signing: serde_json::Value = serde_json::from_slice(&std::fs::read(&after.1)?)?;
    let tlogs: Vec<(String, bool)> = signing["rekorTlogUrls"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| {
                    (
                        t["url"].as_str().unwrap_or_default().to_owned(),
                        t["validFor"]["end"].is_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    anyhow::ensure!(
        tlogs == [(base2.clone(), true), (base3.clone(), false)],
        "signing config's logs (url, ended): {tlogs:?}"
    );
    let shard = sign_and_find(&cosign_bin, d, &server.http, &after, "after").await?;
    anyhow::ensure!(shard == 3, "logged in shard {shard}, not 3");

    // Both bundles verify offline against the one trusted root fetched after the change.
    for (artifact, bundle) in [
        ("before.txt", "before.sigstore.json"),
        ("after.txt", "after.sigstore.json"),
    ] {
        ok(
            &format!("cosign verify-blob {bundle}"),
            &cosign(
                &cosign_bin,
                d,
                &[
                    "verify-blob",
                    "--key",
                    "cosign.pub",
                    "--bundle",
                    bundle,
                    "--trusted-root",
                    &after.0,
                    "--use-signed-timestamps",
                    artifact,
                ],
            )?,
        )?;
        let go = |artifact: &str| {
            run(Command::new(&sigstore_go).current_dir(d).args([
                "verify-bundle",
                "--bundle",
                bundle,
                "--trusted-root",
                &after.0,
                "--key",
                "cosign.pub",
                artifact,
            ]))
        };
        ok(&format!("sigstore-go verify-bundle {bundle}"), &go(artifact)?)?;
        anyhow::ensure!(
            !go(if artifact == "after.txt" {
                "before.txt"
            } else {
                "after.txt"
            })?
            .status
            .success(),
            "sigstore-go accepted {bundle} for another artifact"
        );
    }

    // The new shard is read by its host name, as Sigstore clients and monitors address a log.
    let checkpoint = http
        .get(format!("http://127.0.0.1:{port}/api/v2/checkpoint"))
        .send()
        .await?
        .text()
        .await?;
    anyhow::ensure!(
        checkpoint.starts_with("127.0.0.1\n"),
        "checkpoint by host name: {checkpoint}"
    );
    anyhow::ensure!(server.stop()?.success(), "unclean exit");
    Ok(())
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    ok(
        &format!("openssl {}", args.join(" ")),
        &run(Command::new("openssl").current_dir(dir).args(args))?,
    )
}

/// A test CA (`ca.pem`, `ca.der`) and a code-signing leaf for `email` issued by it (`leaf.pem`,
/// key `leaf.key`), as a private CA an operator lists in the log's trusted root would issue.
fn issue_certificate(dir: &Path, email: &str) -> anyhow::Result<()> {
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca.key",
        ],
    )?;
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/O=Cairn test/CN=Cairn test CA",
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "ca.pem",
        ],
    )?;
    openssl(
        dir,
        &["x509", "-in", "ca.pem", "-outform", "DER", "-out", "ca.der"],
    )?;
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "leaf.ec.key",
        ],
    )?;
    openssl(
        dir,
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "leaf.ec.key",
            "-out",
            "leaf.key",
        ],
    )?;
    std::fs::write(
        dir.join("leaf.ext"),
        format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=codeSigning\nsubjectAltName=critical,email:{email}\n\
             authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
        ),
    )?;
    openssl(
        dir,
        &[
            "req", "-new", "-key", "leaf.key", "-subj", "/", "-out", "leaf.csr",
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.pem",
        ],
    )
}

/// `cosign verify-blob` of `bundle` over `artifact`, signed by a certificate for `identity` from the
/// test CA (a private CA: no OIDC issuer to match, no SCT to check).
fn cosign_verify_identity(
    bin: &Path,
    d: &Path,
    bundle: &str,
    root: &str,
    identity: &str,
    artifact: &str,
) -> anyhow::Result<Output> {
    cosign(
        bin,
        d,
        &[
            "verify-blob",
            "--bundle",
            bundle,
            "--trusted-root",
            root,
            "--certificate-identity",
            identity,
            "--certificate-oidc-issuer-regexp",
            ".*",
            "--insecure-ignore-sct",
            artifact,
        ],
    )
}

/// The embedded default's shards and TSA, with the test CA of [`issue_certificate`] added to the
/// served trusted root (as an operator lists the CA that issues its signers' certificates).
fn start_with_test_ca(d: &Path) -> anyhow::Result<Server> {
    // The operator's addition to the trusted root: the CA that issued the signer's certificate.
    let ca = STANDARD.encode(std::fs::read(d.join("ca.der"))?);
    let extra = serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "certificateAuthorities": [{
            "subject": { "organization": "Cairn test", "commonName": "Cairn test CA" },
            "uri": "https://ca.cairn.test",
            "certChain": { "certificates": [{ "rawBytes": ca }] },
            "validFor": { "start": "2020-01-01T00:00:00Z" }
        }]
    });
    std::fs::write(d.join("extra_root.json"), serde_json::to_vec(&extra)?)?;
    let config = d.join("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{dir}\"\nroles = [\"sequencer\", \"log\", \"tiles\", \"tsa\"]\n\n\
             [[shards]]\nid = 1\norigin = \"localhost/cairn/1\"\n\n\
             [[shards]]\nid = 2\norigin = \"localhost\"\nkind = \"sigstore\"\n\n\
             [sigstore]\nextra_trusted_root = \"{dir}/extra_root.json\"\n",
            dir = d.display()
        ),
    )?;
    let config = config.display().to_string();
    let mut args = vec!["--config", config.as_str()];
    args.extend(common::LOOPBACK);
    Server::start(d, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosign_signs_with_a_certificate_and_verifies_the_identity_offline() -> anyhow::Result<()> {
    let Some(cosign_bin) = required("CAIRN_COSIGN", SIGSTORE)? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    issue_certificate(d, "release@cairn.test")?;
    let server = start_with_test_ca(d)?;

    let (root, signing) = fetch_trust(d, &server.http)?;
    std::fs::write(d.join("artifact.txt"), b"built by the release pipeline\n")?;
    ok(
        "cosign import-key-pair",
        &cosign(
            &cosign_bin,
            d,
            &[
                "import-key-pair",
                "--key",
                "leaf.key",
                "--output-key-prefix",
                "signer",
            ],
        )?,
    )?;
    ok(
        "cosign sign-blob --certificate",
        &cosign(
            &cosign_bin,
            d,
            &[
                "sign-blob",
                "--key",
                "signer.key",
                "--certificate",
                "leaf.pem",
                "--signing-config",
                &signing,
                "--trusted-root",
                &root,
                "--bundle",
                "artifact.sigstore.json",
                "--yes",
                "artifact.txt",
            ],
        )?,
    )?;
    let verify = |identity: &str| {
        cosign_verify_identity(
            &cosign_bin,
            d,
            "artifact.sigstore.json",
            &root,
            identity,
            "artifact.txt",
        )
    };
    ok("cosign verify-blob (identity)", &verify("release@cairn.test")?)?;
    anyhow::ensure!(
        !verify("mallory@cairn.test")?.status.success(),
        "cosign accepted another identity"
    );
    check_bundle_in_log(&server.http, &d.join("artifact.sigstore.json")).await?;
    anyhow::ensure!(server.stop()?.success(), "unclean exit");
    Ok(())
}

/// sigstore-js (`@sigstore/sign`, the library npm's provenance is made with) signs with a
/// certificate through its own bundle builder: its Rekor v2 client logs the entry to Cairn's
/// Sigstore shard and its TSA client gets the timestamp from Cairn's TSA (the JSON form of the
/// request), both at the URLs of the served signing config. cosign and `cairn verify-bundle` then
/// verify the bundle offline, for the right identity only and the right artifact only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstore_js_logs_and_timestamps_and_its_bundle_verifies() -> anyhow::Result<()> {
    let Some(node_path) = required("CAIRN_SIGSTORE_JS", SIGSTORE)? else {
        return Ok(());
    };
    let Some(cosign_bin) = required("CAIRN_COSIGN", SIGSTORE)? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    issue_certificate(d, "npm-publisher@cairn.test")?;
    let server = start_with_test_ca(d)?;
    let (root, signing) = fetch_trust(d, &server.http)?;
    let signing: serde_json::Value = serde_json::from_slice(&std::fs::read(&signing)?)?;
    let rekor = signing["rekorTlogUrls"][0]["url"].as_str().unwrap_or_default();
    let tsa = signing["tsaUrls"][0]["url"].as_str().unwrap_or_default();
    anyhow::ensure!(!rekor.is_empty() && !tsa.is_empty(), "signing config: {signing}");
    std::fs::write(
        d.join("package.tgz"),
        b"a package as a registry would publish it\n",
    )?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../clients/sigstore-js/sign.js");
    ok(
        "sigstore-js sign",
        &run(Command::new("node")
            .current_dir(d)
            .env("NODE_PATH", &node_path)
            .args([
                script,
                "package.tgz",
                "leaf.pem",
                "leaf.key",
                rekor,
                tsa,
                "package.sigstore.json",
            ]))?,
    )?;

    let verify = |artifact: &str, identity: &str| {
        cosign_verify_identity(&cosign_bin, d, "package.sigstore.json", &root, identity, artifact)
    };
    ok(
        "cosign verify-blob",
        &verify("package.tgz", "npm-publisher@cairn.test")?,
    )?;
    anyhow::ensure!(
        !verify("package.tgz", "mallory@cairn.test")?.status.success(),
        "cosign accepted another identity"
    );
    std::fs::write(
        d.join("tampered.tgz"),
        b"a package as a registry would publish it!\n",
    )?;
    anyhow::ensure!(
        !verify("tampered.tgz", "npm-publisher@cairn.test")?
            .status
            .success(),
        "cosign accepted a tampered artifact"
    );
    let cairn_verify = |artifact: &str| {
        cairn(
            d,
            &[
                "verify-bundle",
                artifact,
                "--bundle",
                "package.sigstore.json",
                "--trusted-root",
                &root,
                "--certificate-identity",
                "npm-publisher@cairn.test",
                "--certificate-oidc-issuer-regexp",
                ".*",
                "--insecure-ignore-sct",
            ],
            None,
        )
    };
    let (valid, stdout, stderr) = cairn_verify("package.tgz")?;
    anyhow::ensure!(
        valid && stdout.starts_with("OK: "),
        "cairn verify-bundle: {stdout} {stderr}"
    );
    let (valid, stdout, _) = cairn_verify("tampered.tgz")?;
    anyhow::ensure!(
        !valid,
        "cairn verify-bundle accepted a tampered artifact: {stdout}"
    );
    check_bundle_in_log(&server.http, &d.join("package.sigstore.json")).await?;
    anyhow::ensure!(server.stop()?.success(), "unclean exit");
    Ok(())
}
