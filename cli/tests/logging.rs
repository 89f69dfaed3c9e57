//! The server's log as a log collector receives it (`CAIRN_LOG_FORMAT=json`, debug level): every line is
//! one JSON object with a level and a message, and no secret ever appears in it: not a tenant's token
//! (used and mistyped), not the admin token, not a shard's, the witness's or the timestamp authority's
//! private key.

mod common;

use std::path::Path;

use common::{Server, cairn, free_port};

const TOKEN: &str = "tenant-token-0d5f1c9a7e3b";
const ADMIN: &str = "admin-token-8c2e4a6b1f90";

/// The base64 body of a `PRIVATE+KEY+...` key file (the seed), and of a PEM file's lines.
fn secrets_in(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)?;
    let mut out: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with("-----") && !l.trim().is_empty())
        .map(|l| l.rsplit('+').next().unwrap_or(l).trim().to_owned())
        .collect();
    // Any 16-character piece is enough to find the key in the log.
    out.retain(|s| s.len() >= 16);
    out.iter_mut().for_each(|s| s.truncate(24));
    Ok(out)
}

#[test]
fn json_logs_carry_no_secrets() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (made, vkey, err) = cairn(
        d,
        &["keygen", "--origin", "log.test/secrets", "--out", "shard.key"],
        None,
    )?;
    anyhow::ensure!(made, "keygen: {err}");
    let vkey = vkey.trim();
    let grpc = free_port()?;
    let http = free_port()?;
    let raft = free_port()?;
    std::fs::write(
        d.join("cairn.toml"),
        format!(
            r#"
roles = ["sequencer", "log", "tiles", "tsa", "witness"]
data_dir = "{data}"
grpc_addr = "127.0.0.1:{grpc}"
http_addr = "127.0.0.1:{http}"
raft_addr = "127.0.0.1:{raft}"
admin_token = "{ADMIN}"

[[tenants]]
name = "ci"
token = "{TOKEN}"

[[shards]]
id = 1
origin = "log.test/secrets"
key_file = "{key}"

[witness]
name = "witness.test/w"
logs = ["{vkey}"]
"#,
            data = d.join("data").display(),
            key = d.join("shard.key").display(),
        ),
    )?;
    let log = d.join("server.log");
    let server = Server::start_logging_to(
        d,
        &["--config", "cairn.toml"],
        "debug,openraft=info,h2=info,hyper=info,tower=info,reqwest=info",
        &log,
    )?;
    let (ok, _, err) = cairn(
        d,
        &[
            "submit",
            "--server",
            &server.grpc,
            "--token",
            TOKEN,
            "--wait",
            "published",
            "--lines",
        ],
        Some(b"one\ntwo\nthree\n"),
    )?;
    anyhow::ensure!(ok, "submit: {err}");
    let wrong = format!("{TOKEN}-wrong");
    let (ok, _, _) = cairn(
        d,
        &["submit", "--server", &server.grpc, "--token", &wrong, "--lines"],
        Some(b"four\n"),
    )?;
    anyhow::ensure!(!ok, "a wrong token was accepted");
    let (ok, _, _) = cairn(
        d,
        &[
            "shard",
            "freeze",
            "--server",
            &server.grpc,
            "--token",
            "nope",
            "1",
        ],
        None,
    )?;
    anyhow::ensure!(!ok, "a wrong admin token froze the shard");
    let status = server.stop()?;
    anyhow::ensure!(status.success(), "cairn serve exited with {status}");

    let text = std::fs::read_to_string(&log)?;
    let lines: Vec<&str> = text.lines().collect();
    anyhow::ensure!(
        lines.len() >= 5,
        "too few log lines to mean anything: {}",
        lines.len()
    );
    let mut debug_lines = 0;
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| anyhow::anyhow!("not a JSON line ({e}): {line}"))?;
        let level = v["level"].as_str().unwrap_or_default();
        anyhow::ensure!(!level.is_empty(), "no level: {line}");
        anyhow::ensure!(
            v.get("message").is_some() || v.get("timestamp").is_some(),
            "no message: {line}"
        );
        debug_lines += usize::from(level == "DEBUG");
    }
    anyhow::ensure!(debug_lines > 0, "the filter asked for debug lines; none came");

    let mut secrets = vec![TOKEN.to_owned(), ADMIN.to_owned(), wrong];
    secrets.extend(secrets_in(&d.join("shard.key"))?);
    secrets.extend(secrets_in(&d.join("data/keys/witness.key"))?);
    secrets.extend(secrets_in(&d.join("data/tsa/tsa-key.pem"))?);
    anyhow::ensure!(
        secrets.len() >= 6,
        "expected key material to look for: {secrets:?}"
    );
    for s in &secrets {
        if let Some(line) = lines.iter().find(|l| l.contains(s.as_str())) {
            anyhow::bail!("secret {s:?} appears in the log: {line}");
        }
    }
    Ok(())
}
