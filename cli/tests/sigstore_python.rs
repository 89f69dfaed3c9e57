//! sigstore-python (4.5.1, unmodified) signs keyless through Cairn: the real binary, configured with a
//! test CA and CT log (`[sigstore] extra_trusted_root`) and a Fulcio URL (`ca_urls`), serves a
//! `client_trust_config.json` from which `clients/sigstore-python/sign_and_verify.py` builds
//! sigstore-python's `SigningContext`. The client gets a Fulcio-profile certificate (email SAN, OIDC
//! issuer extensions, an embedded SCT from the test CT log) from a fake Fulcio inside the script,
//! timestamps the signature with Cairn's TSA, and logs a hashedrekord 0.0.2 entry into shard 2 through
//! its own Rekor v2 client. Its `Verifier`, built from the served trust config, accepts the bundle with
//! an identity policy and refuses a tampered artifact, another identity and another issuer; the entry
//! is in shard 2's published, verified log.
//!
//! The venv comes from `scripts/sigstore-clients.sh` (`CAIRN_SIGSTORE_PYTHON`, default
//! `~/.cache/cairn-sigstore-py/bin/python`), which `scripts/test` runs and exports with
//! `CAIRN_REQUIRE_SIGSTORE=1`, so in CI this test cannot pass by skipping.

mod common;

use common::{SigstoreLog, check_bundle_in_log, ok, sigstore_python, sigstore_script, start_sigstore_log};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstore_python_signs_keyless_to_cairn_and_verifies_with_identity() -> anyhow::Result<()> {
    let Some(python) = sigstore_python()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let dir_arg = d.display().to_string();
    let SigstoreLog { server, fulcio_port } = start_sigstore_log(d, &python)?;

    std::fs::write(d.join("artifact"), b"release 1.0 of something people depend on\n")?;
    let run = sigstore_script(
        &python,
        "sign_and_verify.py",
        &[
            "run",
            "--dir",
            &dir_arg,
            "--log",
            &server.http,
            "--fulcio-port",
            &fulcio_port,
        ],
    )?;
    ok("sign_and_verify.py run", &run)?;
    let stdout = String::from_utf8(run.stdout)?;
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())?;
    anyhow::ensure!(summary["verified"] == true, "{summary}");
    anyhow::ensure!(
        summary["fulcio_certificates"] == 1,
        "Fulcio from caUrls not used: {summary}"
    );
    for refused in ["tampered", "wrong_identity", "wrong_issuer"] {
        anyhow::ensure!(summary[refused].is_string(), "{refused} was accepted: {summary}");
    }

    // The bundle holds a Rekor v2 hashedrekord entry, the TSA's timestamp and the signing
    // certificate; the entry is in the Sigstore shard's published, verified log.
    let bundle = d.join("artifact.sigstore.json");
    let (_, index) = check_bundle_in_log(&server.http, &bundle).await?;
    anyhow::ensure!(summary["log_index"] == index, "{summary} vs index {index}");
    let bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(&bundle)?)?;
    anyhow::ensure!(
        bundle["verificationMaterial"]["certificate"]["rawBytes"].is_string(),
        "no signing certificate in the bundle"
    );
    anyhow::ensure!(server.stop()?.success(), "unclean exit");
    Ok(())
}
