//! Unmodified Sigstore clients against the real binary (the embedded default, whose shard 2 is a
//! Sigstore shard and which runs the timestamp authority): cosign v3 signs a blob with a key, logging
//! it through the Rekor v2 API and timestamping it with Cairn's TSA, configured only by the
//! `signing_config.json` and `trusted_root.json` that `cairn trust` fetched; cosign and sigstore-go's
//! conformance client then verify the bundle offline against that trusted root (a tampered artifact
//! and another key are refused), and the entry is in shard 2's published, verified log.
//!
//! The clients come from `scripts/sigstore-clients.sh` (pinned `go install`s), which `scripts/test`
//! runs and whose paths it exports with `CAIRN_REQUIRE_SIGSTORE=1`, so in CI this test cannot pass by
//! skipping.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cairn_client::HttpLog;
use common::{Server, cairn};

fn tool(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).map(PathBuf::from).filter(|p| p.exists())
}

fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd.output()?;
    Ok(out)
}

fn ok(what: &str, out: &Output) -> anyhow::Result<()> {
    anyhow::ensure!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
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
    let (Some(cosign_bin), Some(sigstore_go)) = (tool("CAIRN_COSIGN"), tool("CAIRN_SIGSTORE_GO")) else {
        anyhow::ensure!(
            std::env::var_os("CAIRN_REQUIRE_SIGSTORE").is_none(),
            "cosign or sigstore-go missing (run scripts/sigstore-clients.sh, or scripts/test)"
        );
        eprintln!("skipped: no cosign / sigstore-go; scripts/test installs them");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let server = Server::start_loopback(d)?;

    // The trust documents, as a verifier fetches them once and keeps them.
    let trust = d.join("trust");
    let (fetched, _, err) = cairn(
        d,
        &[
            "trust",
            "--url",
            &server.http,
            "--out",
            &trust.display().to_string(),
        ],
        None,
    )?;
    anyhow::ensure!(fetched, "cairn trust: {err}");
    let root = trust.join("trusted_root.json").display().to_string();
    let signing = trust.join("signing_config.json").display().to_string();

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

    // The bundle names Cairn's Sigstore shard and carries the TSA's timestamp.
    let bundle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("artifact.sigstore.json"))?)?;
    let entry = &bundle["verificationMaterial"]["tlogEntries"][0];
    // protojson leaves a zero index out.
    let index: u64 = entry["logIndex"].as_str().unwrap_or("0").parse()?;
    anyhow::ensure!(
        entry["kindVersion"]["version"] == "0.0.2",
        "not a Rekor v2 entry: {entry}"
    );
    anyhow::ensure!(
        bundle["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0]["signedTimestamp"]
            .is_string(),
        "no RFC 3161 timestamp in the bundle"
    );

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

    // The entry is in shard 2's published log, which verifies as a whole, and its canonical body is
    // the leaf at that index.
    let site = HttpLog::new(&server.http);
    let shards = site.shards().await?;
    let shard = shards
        .iter()
        .find(|s| s.kind == cairn_store::ShardKind::Sigstore)
        .ok_or_else(|| anyhow::anyhow!("no Sigstore shard in shards.json"))?;
    let verified = site.verify_shard(shard).await?;
    let body = STANDARD.decode(entry["canonicalizedBody"].as_str().unwrap_or_default())?;
    anyhow::ensure!(
        verified.entries.get(index as usize) == Some(&body),
        "entry {index} of shard {} is not the bundle's body",
        shard.id
    );
    anyhow::ensure!(server.stop()?.success(), "unclean exit");
    Ok(())
}
