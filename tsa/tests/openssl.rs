//! OpenSSL as an independent client: it makes the requests (`openssl ts -query`), verifies our replies
//! (`openssl ts -verify`, which also checks the ESS signing certificate and the leaf's critical timeStamping
//! EKU), prints our rejections (`openssl ts -reply -text`) and verifies the chain (`openssl verify -purpose
//! timestampsign`). A machine without openssl fails these tests: it is required, not optional.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, ensure};
use cairn_tsa::{Authority, Curve, TsaError};
use common::*;
use der::EncodePem;
use der::pem::LineEnding;

/// Writes `root.pem` and `leaf.pem` for `authority` into `dir`.
fn write_pems(authority: &Authority, dir: &Path) -> anyhow::Result<()> {
    let chain = authority.chain();
    std::fs::write(dir.join("leaf.pem"), chain[0].to_pem(LineEnding::LF)?)?;
    std::fs::write(dir.join("root.pem"), chain[1].to_pem(LineEnding::LF)?)?;
    Ok(())
}

fn run_ok(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = openssl(dir, args);
    let text = stdout_and_stderr(&output);
    ensure!(
        output.status.success(),
        "openssl {} failed:\n{text}",
        args.join(" ")
    );
    Ok(text)
}

/// An openssl-made query (`extra` picks the hash, nonce and certReq), answered, verified by openssl against
/// the data and against the query.
fn query_and_verify(authority: &Authority, dir: &Path, name: &str, extra: &[&str]) -> anyhow::Result<()> {
    let query = format!("{name}.tsq");
    let reply = format!("{name}.tsr");
    let mut args = vec!["ts", "-query", "-data", "data.txt", "-out", &query];
    args.extend_from_slice(extra);
    run_ok(dir, &args)?;
    let request = std::fs::read(dir.join(&query))?;
    let response = authority
        .timestamp(&request, SystemTime::now())
        .with_context(|| name.to_owned())?;
    std::fs::write(dir.join(&reply), response)?;

    let common = ["-in", &reply, "-CAfile", "root.pem", "-untrusted", "leaf.pem"];
    let text = run_ok(
        dir,
        &[&["ts", "-verify", "-data", "data.txt"][..], &common].concat(),
    )?;
    ensure!(text.contains("Verification: OK"), "{name}: {text}");
    let text = run_ok(
        dir,
        &[&["ts", "-verify", "-queryfile", &query][..], &common].concat(),
    )?;
    ensure!(text.contains("Verification: OK"), "{name}: {text}");

    // The same reply does not verify other data: the check above can fail.
    let output = openssl(
        dir,
        &[&["ts", "-verify", "-data", "other.txt"][..], &common].concat(),
    );
    ensure!(!output.status.success(), "{name}: verified against other data");
    Ok(())
}

#[test]
fn openssl_verifies_replies_to_openssl_queries() -> anyhow::Result<()> {
    for curve in [Curve::P256, Curve::P384] {
        let authority = Authority::generate_with_curve(curve, "Cairn test TSA", Duration::from_secs(3600))?;
        let dir = tempfile::tempdir()?;
        write_pems(&authority, dir.path())?;
        std::fs::write(dir.path().join("data.txt"), b"an artifact to timestamp\n")?;
        std::fs::write(dir.path().join("other.txt"), b"another artifact\n")?;
        for (name, extra) in [
            ("sha256-cert", &["-sha256", "-cert"][..]),
            ("sha256-nocert", &["-sha256"][..]),
            ("sha384-nononce", &["-sha384", "-cert", "-no_nonce"][..]),
            ("sha512", &["-sha512", "-cert"][..]),
        ] {
            query_and_verify(&authority, dir.path(), name, extra)
                .with_context(|| format!("{curve:?} {name}"))?;
        }
    }
    Ok(())
}

#[test]
fn openssl_reads_our_rejections() -> anyhow::Result<()> {
    let authority = Authority::generate("Cairn test TSA", Duration::from_secs(3600))?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("data.txt"), b"an artifact to timestamp\n")?;
    run_ok(
        dir.path(),
        &[
            "ts", "-query", "-data", "data.txt", "-sha1", "-cert", "-out", "sha1.tsq",
        ],
    )?;
    let request = std::fs::read(dir.path().join("sha1.tsq"))?;
    let rejection = match authority.timestamp(&request, SystemTime::now()) {
        Err(TsaError::Rejected(rejection)) => rejection,
        other => anyhow::bail!("a SHA-1 request was not rejected: {other:?}"),
    };
    std::fs::write(dir.path().join("sha1.tsr"), rejection.reply_der())?;
    let text = run_ok(dir.path(), &["ts", "-reply", "-in", "sha1.tsr", "-text"])?;
    ensure!(text.contains("Status: Rejected"), "{text}");
    ensure!(
        text.contains("Failure info: unrecognized or unsupported algorithm identifier"),
        "{text}"
    );
    ensure!(text.contains("hash with SHA-256, SHA-384 or SHA-512"), "{text}");

    // And a policy we do not serve: failInfo bit 15, which needs two octets.
    let policy = Req {
        policy: Some(oid("1.3.6.1.4.1.32473.42")),
        ..Req::sha256([1; 32])
    };
    let rejection = match authority.timestamp(&policy.der(), SystemTime::now()) {
        Err(TsaError::Rejected(rejection)) => rejection,
        other => anyhow::bail!("an unserved policy was not rejected: {other:?}"),
    };
    std::fs::write(dir.path().join("policy.tsr"), rejection.reply_der())?;
    let text = run_ok(dir.path(), &["ts", "-reply", "-in", "policy.tsr", "-text"])?;
    ensure!(
        text.contains("Failure info: the requested TSA policy is not supported by the TSA"),
        "{text}"
    );
    Ok(())
}

#[test]
fn openssl_accepts_the_leaf_for_timestamping() -> anyhow::Result<()> {
    for curve in [Curve::P256, Curve::P384] {
        let authority = Authority::generate_with_curve(curve, "Cairn test TSA", Duration::from_secs(3600))?;
        let dir = tempfile::tempdir()?;
        write_pems(&authority, dir.path())?;
        let text = run_ok(
            dir.path(),
            &[
                "verify",
                "-purpose",
                "timestampsign",
                "-CAfile",
                "root.pem",
                "leaf.pem",
            ],
        )?;
        ensure!(text.contains("leaf.pem: OK"), "{text}");
        // The root is not a timestamping certificate, so the purpose check has teeth.
        let output = openssl(
            dir.path(),
            &[
                "verify",
                "-purpose",
                "timestampsign",
                "-CAfile",
                "root.pem",
                "root.pem",
            ],
        );
        ensure!(
            !output.status.success(),
            "the root passed as a timestamping certificate"
        );
    }
    Ok(())
}
