//! `cairn verify-bundle` agrees with sigstore-python (4.5.1, unmodified) on every case, valid and
//! each way to be invalid.
//!
//! `clients/sigstore-python/bundle_cases.py make` signs artifacts keyless through the real binary
//! (a Sigstore shard, the TSA, a test CA and CT log, a fake Fulcio) with three identities from two
//! issuers, and builds the bad cases from real bundles: a tampered artifact, a wrong identity, a
//! wrong issuer, a certificate expired before its timestamp, a timestamp from a TSA the trusted root
//! does not know, a proof carrying a different checkpoint, and an entry whose body is another
//! signature's. For each, sigstore-python's `Verifier` and `cairn verify-bundle --json` must give
//! the same verdict, and Cairn must name the check the case was built to break, each with its own
//! message. Then the trusted root is fetched from the log once, pinned, and used again with the log
//! stopped: verification needs no network.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{SigstoreLog, cairn, ok, sigstore_python, sigstore_script, start_sigstore_log};

/// The check each bad case must fail (its directory name → `check` in the JSON output).
const BAD: [(&str, &str); 7] = [
    ("tampered-artifact", "artifact"),
    ("wrong-identity", "identity"),
    ("wrong-issuer", "issuer"),
    ("expired-at-timestamp", "certificate"),
    ("unknown-tsa", "timestamp"),
    ("other-checkpoint", "checkpoint"),
    ("body-mismatch", "body"),
];

fn cairn_verdict(
    dir: &Path,
    case: &Path,
    root: &Path,
    meta: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let artifact = case.join("artifact").display().to_string();
    let bundle = case.join("bundle.json").display().to_string();
    let root = root.display().to_string();
    let args = [
        "verify-bundle",
        &artifact,
        "--bundle",
        &bundle,
        "--trusted-root",
        &root,
        "--certificate-identity",
        meta["identity"].as_str().unwrap_or_default(),
        "--certificate-oidc-issuer",
        meta["issuer"].as_str().unwrap_or_default(),
        "--json",
    ];
    let (_, stdout, stderr) = cairn(dir, &args, None)?;
    serde_json::from_str(stdout.trim())
        .map_err(|e| anyhow::anyhow!("verify-bundle printed {stdout:?} ({e}); stderr {stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_bundle_agrees_with_sigstore_python() -> anyhow::Result<()> {
    let Some(python) = sigstore_python()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let dir_arg = d.display().to_string();
    let SigstoreLog { server, fulcio_port } = start_sigstore_log(d, &python)?;
    ok(
        "bundle_cases.py make",
        &sigstore_script(
            &python,
            "bundle_cases.py",
            &[
                "make",
                "--dir",
                &dir_arg,
                "--log",
                &server.http,
                "--fulcio-port",
                &fulcio_port,
                "--count",
                "6",
            ],
        )?,
    )?;

    let mut seen = BTreeMap::new();
    let mut messages = BTreeMap::new();
    for case in std::fs::read_dir(d.join("cases"))? {
        let case = case?.path();
        let name = case
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(case.join("case.json"))?)?;
        let root = if case.join("trusted_root.json").exists() {
            case.join("trusted_root.json")
        } else {
            d.join("trusted_root.json")
        };
        let theirs = sigstore_script(
            &python,
            "bundle_cases.py",
            &[
                "verify",
                "--trusted-root",
                &root.display().to_string(),
                "--artifact",
                &case.join("artifact").display().to_string(),
                "--bundle",
                &case.join("bundle.json").display().to_string(),
                "--identity",
                meta["identity"].as_str().unwrap_or_default(),
                "--issuer",
                meta["issuer"].as_str().unwrap_or_default(),
            ],
        )?;
        ok(&format!("bundle_cases.py verify {name}"), &theirs)?;
        let theirs: serde_json::Value = serde_json::from_slice(&theirs.stdout)?;
        let ours = cairn_verdict(d, &case, &root, &meta)?;
        let expect_valid = meta["expect"] == "valid";
        anyhow::ensure!(
            theirs["valid"] == expect_valid,
            "{name}: sigstore-python says {theirs}, the case expects {}",
            meta["expect"]
        );
        anyhow::ensure!(
            ours["valid"] == theirs["valid"],
            "{name}: cairn says {ours}, sigstore-python says {theirs}"
        );
        if let Some((_, check)) = BAD.iter().find(|(n, _)| *n == name) {
            anyhow::ensure!(
                ours["check"] == *check,
                "{name}: expected the {check} check to fail: {ours}"
            );
            let message = ours["error"].as_str().unwrap_or_default().to_owned();
            anyhow::ensure!(!message.is_empty(), "{name}: no message");
            if let Some(other) = messages.insert(message.clone(), name.clone()) {
                anyhow::bail!("{name} and {other} fail with the same message: {message}");
            }
        } else {
            anyhow::ensure!(name.starts_with("good-"), "unknown case {name}");
            anyhow::ensure!(ours["identities"][0] == meta["identity"], "{name}: {ours}");
        }
        seen.insert(name, ours);
    }
    for (name, _) in BAD {
        anyhow::ensure!(seen.contains_key(name), "case {name} was not made");
    }
    anyhow::ensure!(
        seen.keys().filter(|n| n.starts_with("good-")).count() == 6,
        "{:?}",
        seen.keys()
    );

    // A witness policy on the checkpoint: one that only names the log holds; one that needs a
    // witness the log never had is a checkpoint failure (exit 1), said as such.
    let good = d.join("cases/good-1");
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(good.join("case.json"))?)?;
    // `cairn verify-bundle --json` of one good bundle against `root`, with `extra` arguments: its exit
    // code and verdict.
    let judge =
        |root: &Path, extra: &[&std::ffi::OsStr]| -> anyhow::Result<(Option<i32>, serde_json::Value)> {
            let out = std::process::Command::new(common::BIN)
                .arg("verify-bundle")
                .arg(good.join("artifact"))
                .arg("--bundle")
                .arg(good.join("bundle.json"))
                .arg("--trusted-root")
                .arg(root)
                .args([
                    "--certificate-identity",
                    meta["identity"].as_str().unwrap_or_default(),
                ])
                .args([
                    "--certificate-oidc-issuer",
                    meta["issuer"].as_str().unwrap_or_default(),
                ])
                .args(extra)
                .arg("--json")
                .current_dir(d)
                .output()?;
            Ok((out.status.code(), serde_json::from_slice(&out.stdout)?))
        };
    let log_vkey = server
        .vkeys
        .iter()
        .find(|v| v.starts_with("localhost+"))
        .ok_or_else(|| anyhow::anyhow!("no vkey of the Sigstore shard: {:?}", server.vkeys))?
        .clone();
    let witness_vkey = cairn_tlog::Cosigner::from_seed("witness.example/w1", [7; 32])?
        .verifier()
        .to_string();
    for (name, policy, want_valid) in [
        ("log-only", format!("log {log_vkey}\nquorum none\n"), true),
        (
            "needs-witness",
            format!("witness w1 {witness_vkey}\nquorum w1\n"),
            false,
        ),
    ] {
        let path = d.join(format!("{name}.policy"));
        std::fs::write(&path, policy)?;
        let (code, verdict) = judge(
            &d.join("trusted_root.json"),
            &["--policy".as_ref(), path.as_os_str()],
        )?;
        if want_valid {
            anyhow::ensure!(code == Some(0) && verdict["valid"] == true, "{name}: {verdict}");
        } else {
            anyhow::ensure!(
                code == Some(1)
                    && verdict["check"] == "checkpoint"
                    && verdict["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("witness policy")),
                "{name}: exit {:?}, {verdict}",
                code
            );
        }
    }

    // Trusted roots edited: without CT logs the certificate's SCT cannot be checked, so the bundle
    // is invalid (as in sigstore-python and cosign) unless the verifier says to go without. A log
    // window that opens after the signing time holds (a signature is timestamped before it is
    // logged; the reference clients check no log window for Rekor v2 entries); one that closed
    // before it does not.
    let root: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("trusted_root.json"))?)?;
    let edited = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| -> anyhow::Result<PathBuf> {
        let mut root = root.clone();
        edit(if root.get("trustedRoot").is_some() {
            &mut root["trustedRoot"]
        } else {
            &mut root
        });
        let path = d.join(name);
        std::fs::write(&path, serde_json::to_vec(&root)?)?;
        Ok(path)
    };
    let window = |start: &'static str, end: Option<&'static str>| {
        move |r: &mut serde_json::Value| {
            for log in r["tlogs"].as_array_mut().into_iter().flatten() {
                log["publicKey"]["validFor"] = serde_json::json!({ "start": start });
                if let Some(end) = end {
                    log["publicKey"]["validFor"]["end"] = serde_json::json!(end);
                }
            }
        }
    };
    anyhow::ensure!(
        root.pointer("/ctlogs")
            .or(root.pointer("/trustedRoot/ctlogs"))
            .and_then(|c| c.as_array())
            .is_some_and(|c| !c.is_empty()),
        "the test's root has no CT logs to take away"
    );
    let no_ctlogs = edited("no_ctlogs.json", &|r| r["ctlogs"] = serde_json::json!([]))?;
    let opens_later = edited("opens_later.json", &window("2999-01-01T00:00:00Z", None))?;
    let closed = edited(
        "closed.json",
        &window("2000-01-01T00:00:00Z", Some("2001-01-01T00:00:00Z")),
    )?;
    for (root, extra, want) in [
        (&no_ctlogs, None, Err(("certificate", "no CT logs"))),
        (&no_ctlogs, Some("--insecure-ignore-sct"), Ok(())),
        (&opens_later, None, Ok(())),
        (&closed, None, Err(("checkpoint", "trusted until 2001-01-01"))),
    ] {
        let extra: Vec<&std::ffi::OsStr> = extra.iter().map(std::ffi::OsStr::new).collect();
        let (code, verdict) = judge(root, &extra)?;
        let as_wanted = match want {
            Ok(()) => code == Some(0) && verdict["valid"] == true,
            Err((check, says)) => {
                code == Some(1)
                    && verdict["check"] == check
                    && verdict["error"].as_str().is_some_and(|e| e.contains(says))
            }
        };
        anyhow::ensure!(
            as_wanted,
            "{} {extra:?}: exit {:?}, {verdict}",
            root.display(),
            code
        );
    }

    // Trust on first use: fetched from the log and pinned, then used offline.
    let args = |url: &str| -> Vec<String> {
        vec![
            "verify-bundle".into(),
            good.join("artifact").display().to_string(),
            "--bundle".into(),
            good.join("bundle.json").display().to_string(),
            "--log-url".into(),
            url.into(),
            "--trust-dir".into(),
            d.join("pinned").display().to_string(),
            "--certificate-identity".into(),
            meta["identity"].as_str().unwrap_or_default().into(),
            "--certificate-oidc-issuer".into(),
            meta["issuer"].as_str().unwrap_or_default().into(),
        ]
    };
    let url = server.http.clone();
    let first = args(&url);
    let (valid, stdout, stderr) = cairn(d, &first.iter().map(String::as_str).collect::<Vec<_>>(), None)?;
    anyhow::ensure!(valid && stdout.starts_with("OK: "), "{stdout} {stderr}");
    anyhow::ensure!(stderr.contains("pinned the trusted root"), "{stderr}");
    anyhow::ensure!(server.stop()?.success(), "unclean exit");
    let (valid, stdout, stderr) = cairn(d, &first.iter().map(String::as_str).collect::<Vec<_>>(), None)?;
    anyhow::ensure!(
        valid && stdout.starts_with("OK: "),
        "offline with the pinned root: {stdout} {stderr}"
    );
    // A pin under the name earlier versions gave it (no digest of the URL) is still the pin.
    let pins: Vec<PathBuf> = std::fs::read_dir(d.join("pinned"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    let [pin] = pins.as_slice() else {
        anyhow::bail!("one pin expected: {pins:?}");
    };
    let name = pin.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let old_name = match name
        .strip_suffix(".trusted_root.json")
        .and_then(|n| n.rsplit_once('-'))
    {
        Some((readable, digest)) if digest.len() == 16 => format!("{readable}.trusted_root.json"),
        _ => anyhow::bail!("a pin's name carries no digest of the URL: {name}"),
    };
    std::fs::rename(pin, d.join("pinned").join(&old_name))?;
    let (valid, stdout, stderr) = cairn(d, &first.iter().map(String::as_str).collect::<Vec<_>>(), None)?;
    anyhow::ensure!(
        valid && stdout.starts_with("OK: ") && stderr.contains("earlier version"),
        "offline with a pin under its earlier name {old_name}: {stdout} {stderr}"
    );

    // Usage errors exit 2, not 1: nothing was judged.
    let out = std::process::Command::new(common::BIN)
        .args([
            "verify-bundle",
            "missing-artifact",
            "--bundle",
            "missing.json",
            "--trusted-root",
            "none.json",
        ])
        .arg("--certificate-identity=a")
        .arg("--certificate-oidc-issuer=b")
        .current_dir(d)
        .output()?;
    anyhow::ensure!(out.status.code() == Some(2), "{out:?}");
    Ok(())
}
