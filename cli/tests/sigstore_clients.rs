//! Unmodified Sigstore clients against the real binary (the embedded default, whose shard 2 is a
//! Sigstore shard and which runs the timestamp authority): cosign v3 signs a blob with a key, logging
//! it through the Rekor v2 API and timestamping it with Cairn's TSA, configured only by the
//! `signing_config.json` and `trusted_root.json` that `cairn trust` fetched; cosign and sigstore-go's
//! conformance client then verify the bundle offline against that trusted root (a tampered artifact
//! and another key are refused), and the entry is in shard 2's published, verified log. Then the same
//! with a certificate from a private CA the operator lists in the trusted root (`[sigstore]
//! extra_trusted_root`): cosign verifies the signer's identity offline and refuses another one.
//!
//! The clients come from `scripts/sigstore-clients.sh` (pinned `go install`s), which `scripts/test`
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
    let trust = d.join("trust");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosign_signs_to_cairn_and_cosign_and_sigstore_go_verify_offline() -> anyhow::Result<()> {
    let (Some(cosign_bin), Some(sigstore_go)) = (
        required("CAIRN_COSIGN", SIGSTORE)?,
        required("CAIRN_SIGSTORE_GO", SIGSTORE)?,
    ) else {
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
    let sign = cosign(
        &cosign_bin,
        d,
        &[
            "sign-blob",
            "--key",
            "cosign.key",
            "--signing-config",
            &signing,
            "--trusted-root",
            &root,
            "--bundle",
            "artifact.sigstore.json",
            "--yes",
            "artifact.txt",
        ],
    )?;
    ok("cosign sign-blob", &sign)?;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosign_signs_with_a_certificate_and_verifies_the_identity_offline() -> anyhow::Result<()> {
    let Some(cosign_bin) = required("CAIRN_COSIGN", SIGSTORE)? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    issue_certificate(d, "release@cairn.test")?;
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
    let server = Server::start(d, &args)?;

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
        cosign(
            &cosign_bin,
            d,
            &[
                "verify-blob",
                "--bundle",
                "artifact.sigstore.json",
                "--trusted-root",
                &root,
                "--certificate-identity",
                identity,
                "--certificate-oidc-issuer-regexp",
                ".*",
                "--insecure-ignore-sct",
                "artifact.txt",
            ],
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
