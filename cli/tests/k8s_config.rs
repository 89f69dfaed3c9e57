//! The configuration the Kubernetes manifests ship works with this binary: the production overlay's
//! `cairn.toml` (`deploy/k8s/overlays/production/cairn.toml`, the source of its ConfigMap
//! `cairn-config`), assembled per pod by the manifests' entrypoint (`deploy/k8s/base/start.sh`) as in
//! the StatefulSet, runs a three-node cluster of real `cairn serve` processes that logs entries,
//! publishes them and proves them.
//!
//! Substitution rules: only what names the cluster's environment changes, in the parsed TOML, so
//! every other setting (roles, shards with their origins, kinds, base URLs and `valid_from`, `[tuning]`,
//! `[sigstore]`) is the shipped one:
//!
//! - `[[peers]]`: the host `cairn-sequencer-<i>.cairn-sequencer` (pod `i` under the headless Service)
//!   becomes `localhost` with node `i + 1`'s free loopback port: `raft = "localhost:<raft>"`,
//!   `grpc = "http://localhost:<grpc>"` (names, as in the cluster, not addresses); the shipped ports
//!   must be 7401 and 7400;
//! - `grpc_addr`, `http_addr`, `raft_addr` (`0.0.0.0:<port>`): `127.0.0.1:<that node's free port>`;
//! - `data_dir` (`/var/lib/cairn`, the PVC): `<tmp>/node-<n>/data`;
//! - `store` (`s3://…`): `file://<tmp>/bucket`, shared by the three nodes; `store_options` (S3
//!   settings) removed;
//! - every path under `/run/cairn` (shard `key_file`s, `key_dir`, `[sigstore] tsa_dir`, where start.sh
//!   copies the Secrets): the same path under `<tmp>/node-<n>/run`, that node's `CAIRN_RUN_DIR`;
//! - each shard's `vkey` placeholder: the verifier key `cairn keygen` printed for its origin.
//!
//! The Secrets are files in one directory, laid out as the pods' projected volume (`CAIRN_SECRETS`):
//! `shard-<id>.key` from `cairn keygen`, `admin-token` and `tenants.toml` with test tokens, and the
//! timestamp authority's `tsa-key.pem` and `tsa-chain.pem`, which node 1 generates on its first start
//! (there is none yet) and the test then copies there for nodes 2 and 3, as an operator would.
//!
//! Each node runs the sequencer container's `args` from `deploy/k8s/base/sequencer-statefulset.yaml`
//! (`cairn serve --config /run/cairn/cairn.toml --node-id-from-hostname`) with two substitutions: the
//! config path is the file start.sh assembled, and `--node-id-from-hostname` becomes `--node-id <i + 1>`,
//! what it derives from pod `cairn-sequencer-<i>`'s name (`common::Server` cannot give the child a
//! `HOSTNAME`; `cli/src/main.rs`'s unit test covers the name rule).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_cli::config::ServeConfig;
use common::{Server, cairn, cluster_ports};

const PRODUCTION: &str = "deploy/k8s/overlays/production/cairn.toml";
const DEV: &str = "deploy/k8s/overlays/dev/cairn.toml";
const START: &str = "deploy/k8s/base/start.sh";
const SEQUENCER: &str = "deploy/k8s/base/sequencer-statefulset.yaml";
const STATEFULSET: &str = "cairn-sequencer";
const TENANT_TOKEN: &str = "k8s-test-tenant-token";
const ADMIN_TOKEN: &str = "k8s-test-admin-token";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Runs start.sh (assemble only: no arguments); returns the assembled file, or start.sh's stderr as
/// the error.
fn assemble(config: &Path, secrets: &Path, run: &Path) -> anyhow::Result<PathBuf> {
    let out = Command::new("sh")
        .arg(repo(START))
        .env("CAIRN_CONFIG", config)
        .env("CAIRN_SECRETS", secrets)
        .env("CAIRN_RUN_DIR", run)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "start.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// The sequencer container's `args` in the shipped StatefulSet (a one-line flow sequence, which is
/// JSON), without the leading `cairn serve`.
fn sequencer_args() -> anyhow::Result<Vec<String>> {
    let yaml = std::fs::read_to_string(repo(SEQUENCER))?;
    let line = yaml
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("args:"))
        .ok_or_else(|| anyhow::anyhow!("no args: line in {SEQUENCER}"))?;
    let args: Vec<String> = serde_json::from_str(line.trim())
        .map_err(|e| anyhow::anyhow!("{SEQUENCER}: args is not a one-line flow sequence: {e}"))?;
    anyhow::ensure!(args.starts_with(&["cairn".into(), "serve".into()]), "{args:?}");
    Ok(args[2..].to_vec())
}

/// The shipped args for node `n`: the assembled config, and `--node-id-from-hostname` resolved as for
/// pod `cairn-sequencer-<n - 1>`.
fn node_args(shipped: &[String], assembled: &Path, n: usize) -> anyhow::Result<Vec<String>> {
    anyhow::ensure!(
        shipped.iter().any(|a| a == "/run/cairn/cairn.toml")
            && shipped.iter().any(|a| a == "--node-id-from-hostname"),
        "the StatefulSet no longer runs cairn serve --config /run/cairn/cairn.toml --node-id-from-hostname: {shipped:?}"
    );
    let mut out = Vec::new();
    for a in shipped {
        match a.as_str() {
            "/run/cairn/cairn.toml" => out.push(assembled.display().to_string()),
            "--node-id-from-hostname" => out.extend(["--node-id".to_owned(), n.to_string()]),
            _ => out.push(a.clone()),
        }
    }
    Ok(out)
}

/// `s` with `/run/cairn` at its start replaced by `run`.
fn under_run(s: &str, run: &Path) -> String {
    match s.strip_prefix("/run/cairn") {
        Some(rest) => format!("{}{rest}", run.display()),
        None => s.to_owned(),
    }
}

/// The shipped file with node `n`'s substitutions (see the module documentation).
fn substitute(
    shipped: &toml::Table,
    n: usize,
    ports: &[common::Ports],
    dir: &Path,
    vkeys: &[(i64, String)],
) -> anyhow::Result<toml::Table> {
    use toml::Value;
    let mut t = shipped.clone();
    let node = dir.join(format!("node-{n}"));
    let run = node.join("run");
    let (g, h, r) = ports[n - 1];
    for (key, port, shipped_port) in [
        ("grpc_addr", g, 7400),
        ("http_addr", h, 7480),
        ("raft_addr", r, 7401),
    ] {
        let addr = t.get(key).and_then(Value::as_str).unwrap_or_default();
        anyhow::ensure!(addr == format!("0.0.0.0:{shipped_port}"), "{key} is {addr}");
        t.insert(key.into(), Value::String(format!("127.0.0.1:{port}")));
    }
    anyhow::ensure!(t.get("data_dir").and_then(Value::as_str) == Some("/var/lib/cairn"));
    // Keys of shards added at runtime: where start.sh copies the Secret's shard-*.key.
    anyhow::ensure!(
        t.get("key_dir").and_then(Value::as_str) == Some("/run/cairn/keys"),
        "key_dir must be /run/cairn/keys, where start.sh copies the shard keys"
    );
    t.insert(
        "key_dir".into(),
        Value::String(under_run("/run/cairn/keys", &run)),
    );
    t.insert(
        "data_dir".into(),
        Value::String(node.join("data").display().to_string()),
    );
    anyhow::ensure!(
        t.get("store")
            .and_then(Value::as_str)
            .is_some_and(|s| s.starts_with("s3://")),
        "the production store is S3"
    );
    t.insert(
        "store".into(),
        Value::String(format!("file://{}", dir.join("bucket").display())),
    );
    t.remove("store_options");

    let peers = t
        .get_mut("peers")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| anyhow::anyhow!("no [[peers]]"))?;
    anyhow::ensure!(peers.len() == ports.len(), "{} peers", peers.len());
    for (i, peer) in peers.iter_mut().enumerate() {
        let p = peer.as_table_mut().ok_or_else(|| anyhow::anyhow!("peer"))?;
        let host = format!("{STATEFULSET}-{i}.{STATEFULSET}");
        anyhow::ensure!(p.get("id").and_then(Value::as_integer) == Some(i as i64 + 1));
        anyhow::ensure!(p.get("raft").and_then(Value::as_str) == Some(format!("{host}:7401").as_str()));
        anyhow::ensure!(
            p.get("grpc").and_then(Value::as_str) == Some(format!("http://{host}:7400").as_str())
        );
        let (pg, _, pr) = ports[i];
        p.insert("raft".into(), Value::String(format!("localhost:{pr}")));
        p.insert("grpc".into(), Value::String(format!("http://localhost:{pg}")));
    }

    let shards = t
        .get_mut("shards")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| anyhow::anyhow!("no [[shards]]"))?;
    for shard in shards.iter_mut() {
        let s = shard.as_table_mut().ok_or_else(|| anyhow::anyhow!("shard"))?;
        let id = s.get("id").and_then(Value::as_integer).unwrap_or_default();
        if let Some(k) = s.get("key_file").and_then(Value::as_str) {
            let k = under_run(k, &run);
            s.insert("key_file".into(), Value::String(k));
        }
        let vkey = vkeys
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| anyhow::anyhow!("no key made for shard {id}"))?;
        anyhow::ensure!(
            s.get("vkey")
                .and_then(Value::as_str)
                .is_some_and(|v| v.contains("REPLACE-ME")),
            "shard {id}: the shipped vkey is a placeholder"
        );
        s.insert("vkey".into(), Value::String(vkey));
    }
    if let Some(sig) = t.get_mut("sigstore").and_then(Value::as_table_mut)
        && let Some(dir) = sig.get("tsa_dir").and_then(Value::as_str)
    {
        let dir = under_run(dir, &run);
        sig.insert("tsa_dir".into(), Value::String(dir));
    }
    Ok(t)
}

async fn get(http: &reqwest::Client, url: &str) -> anyhow::Result<(u16, String)> {
    let r = http.get(url).send().await?;
    Ok((r.status().as_u16(), r.text().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_overlay_config_runs_a_three_node_cluster() -> anyhow::Result<()> {
    let started = Instant::now();
    let shipped_text = std::fs::read_to_string(repo(PRODUCTION))?;
    // The shipped files as they are: the schema (unknown keys are errors) and its checks.
    ServeConfig::load_str(&shipped_text).map_err(|e| anyhow::anyhow!("{PRODUCTION}: {e:#}"))?;
    ServeConfig::load_str(&std::fs::read_to_string(repo(DEV))?)
        .map_err(|e| anyhow::anyhow!("{DEV}: {e:#}"))?;
    let shipped: toml::Table = shipped_text.parse()?;

    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let secrets = d.join("secrets");
    std::fs::create_dir_all(&secrets)?;

    // start.sh refuses the shipped file while its placeholders are in it.
    let refused = assemble(&repo(PRODUCTION), &secrets, &d.join("refused"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    anyhow::ensure!(
        refused.contains("REPLACE-ME"),
        "start.sh accepted the placeholders: {refused}"
    );

    // The Secrets: shard keys made as the manifests say (cairn keygen), tokens.
    let mut vkeys = Vec::new();
    for shard in shipped["shards"].as_array().into_iter().flatten() {
        let id = shard["id"].as_integer().unwrap_or_default();
        let origin = shard["origin"].as_str().unwrap_or_default();
        let key = secrets.join(format!("shard-{id}.key"));
        let (ok, out, err) = cairn(
            d,
            &["keygen", "--origin", origin, "--out", &key.display().to_string()],
            None,
        )?;
        anyhow::ensure!(ok, "keygen: {err}");
        vkeys.push((id, out.trim().to_owned()));
    }
    std::fs::write(secrets.join("admin-token"), format!("{ADMIN_TOKEN}\n"))?;
    std::fs::write(
        secrets.join("tenants.toml"),
        format!(
            "[[tenants]]\nname = \"k8s-test\"\ntoken = \"{TENANT_TOKEN}\"\nrate = 20000\nburst = 40000\n"
        ),
    )?;

    let shipped_args = sequencer_args()?;
    let (ports, _) = cluster_ports(3)?;
    let mut servers = Vec::new();
    for n in 1..=3 {
        let node = d.join(format!("node-{n}"));
        std::fs::create_dir_all(&node)?;
        let config = node.join("cairn-config.toml");
        std::fs::write(
            &config,
            toml::to_string(&substitute(&shipped, n, &ports, d, &vkeys)?)?,
        )?;
        let assembled = assemble(&config, &secrets, &node.join("run"))?;
        let text = std::fs::read_to_string(&assembled)?;
        anyhow::ensure!(
            text.contains(&format!("admin_token = '{ADMIN_TOKEN}'")) && text.contains(TENANT_TOKEN),
            "start.sh did not add the tokens:\n{text}"
        );
        let args = node_args(&shipped_args, &assembled, n)?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        servers.push(Server::start(&node, &args)?);
        if n == 1 {
            // Node 1 generated the timestamp authority (no TSA Secret yet): share it, as an operator
            // puts it into Secret cairn-tsa.
            for f in ["tsa-key.pem", "tsa-chain.pem"] {
                std::fs::copy(node.join("run/tsa").join(f), secrets.join(f))?;
            }
        }
    }
    let shard_vkeys: Vec<String> = vkeys.iter().map(|(_, v)| v.clone()).collect();
    for s in &servers {
        anyhow::ensure!(s.vkeys == shard_vkeys, "a node printed other keys: {:?}", s.vkeys);
    }

    // The probes of the manifests, and the metrics the alerts use.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for s in &servers {
        loop {
            let (status, body) = get(&http, &format!("{}/readyz", s.http)).await?;
            if status == 200 {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{}/readyz stayed {status}: {body}",
                s.http
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::ensure!(get(&http, &format!("{}/healthz", s.http)).await?.0 == 200);
        let (_, metrics) = get(&http, &format!("{}/metrics", s.http)).await?;
        for m in [
            "cairn_shard_leader{",
            "cairn_shard_publishing_stopped{shard=\"1\"} 0",
        ] {
            anyhow::ensure!(metrics.contains(m), "{m} missing from {}/metrics", s.http);
        }
    }
    // Every pod serves the same Sigstore trust documents: one TSA, explicit valid_from.
    let root = get(&http, &format!("{}/trusted_root.json", servers[0].http)).await?;
    anyhow::ensure!(
        root.0 == 200 && root.1.contains("timestampAuthorities"),
        "{root:?}"
    );
    for s in &servers[1..] {
        anyhow::ensure!(
            get(&http, &format!("{}/trusted_root.json", s.http)).await? == root,
            "{} serves another trusted_root.json",
            s.http
        );
    }

    // Writes need a tenant's token (tenants.toml from the Secret); with it, through every node.
    std::fs::write(d.join("anonymous.txt"), b"anonymous\n")?;
    let grpc: Vec<&str> = servers.iter().map(|s| s.grpc.as_str()).collect();
    let (ok, _, err) = cairn(d, &["submit", "--server", grpc[1], "anonymous.txt"], None)?;
    anyhow::ensure!(!ok, "an anonymous write was accepted");
    anyhow::ensure!(
        err.to_lowercase().contains("unauthenticated") || err.contains("token"),
        "{err}"
    );

    let mut files = Vec::new();
    for i in 0..6 {
        let name = format!("artifact-{i}.json");
        std::fs::write(
            d.join(&name),
            format!("{{\"artifact\":\"k8s-{i}\",\"digest\":\"sha256:{i:064x}\"}}\n"),
        )?;
        files.push(name);
    }
    let mut logged = Vec::new();
    for (i, chunk) in files.chunks(2).enumerate() {
        let mut args = vec![
            "submit",
            "--token",
            TENANT_TOKEN,
            "--wait",
            "published",
            "--proof-dir",
            "proofs",
        ];
        // Each batch first to another node: followers forward to the shard leaders.
        for k in 0..3 {
            args.extend(["--server", grpc[(i + k) % 3]]);
        }
        args.extend(chunk.iter().map(String::as_str));
        let (ok, out, err) = cairn(d, &args, None)?;
        anyhow::ensure!(ok, "submit failed: {err}");
        let lines: Vec<serde_json::Value> =
            out.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
        anyhow::ensure!(lines.len() == chunk.len(), "{out}");
        for (line, file) in lines.into_iter().zip(chunk) {
            anyhow::ensure!(line["duplicate"] == false, "{line}");
            logged.push((file.clone(), line));
        }
    }

    // Every proof verifies offline with the shard's key; a changed entry does not.
    for (file, line) in &logged {
        let shard = line["shard"].as_i64().unwrap_or_default();
        let vkey = &vkeys
            .iter()
            .find(|(id, _)| *id == shard)
            .ok_or_else(|| anyhow::anyhow!("{line}"))?
            .1;
        let proof = line["proof"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no proof: {line}"))?;
        let (ok, out, err) = cairn(d, &["verify", "--vkey", vkey, "--proof", proof, file], None)?;
        anyhow::ensure!(ok && out.starts_with("OK: "), "{file}: {out}{err}");
    }
    std::fs::write(d.join("forged.json"), b"{\"artifact\":\"forged\"}\n")?;
    let proof = logged[0].1["proof"].as_str().unwrap_or_default();
    let (ok, _, _) = cairn(
        d,
        &["verify", "--vkey", &vkeys[0].1, "--proof", proof, "forged.json"],
        None,
    )?;
    anyhow::ensure!(!ok, "a forged entry verified");

    // The published log, read over HTTP from each node, holds each entry at its acknowledged index.
    for s in &servers {
        let site = cairn_client::HttpLog::new(&s.http);
        for listing in site.shards().await? {
            let verified = site.verify_shard(&listing).await?;
            let expected: Vec<_> = logged
                .iter()
                .filter(|(_, l)| l["shard"].as_u64() == Some(u64::from(listing.id)))
                .collect();
            anyhow::ensure!(
                verified.entries.len() == expected.len(),
                "shard {} holds {} entries, {} were logged",
                listing.id,
                verified.entries.len(),
                expected.len()
            );
            for (file, line) in expected {
                let index = line["index"].as_u64().unwrap_or(u64::MAX) as usize;
                anyhow::ensure!(
                    verified.entries.get(index) == Some(&std::fs::read(d.join(file))?),
                    "shard {} entry {index} is not {file}",
                    listing.id
                );
            }
        }
    }

    // The read path's metrics (the alerts' cairn_tiles_*) count what was just read.
    for s in &servers {
        let (_, metrics) = get(&http, &format!("{}/metrics", s.http)).await?;
        anyhow::ensure!(
            metrics.contains("cairn_tiles_requests_total{"),
            "no cairn_tiles_requests_total on {}/metrics",
            s.http
        );
    }

    // The admin token (from the Secret) is in force.
    let (ok, out, err) = cairn(
        d,
        &["shard", "freeze", "--server", grpc[2], "--token", "wrong", "1"],
        None,
    )?;
    anyhow::ensure!(!ok, "a wrong admin token froze a shard: {out}");
    let (ok, _, err2) = cairn(
        d,
        &[
            "shard",
            "freeze",
            "--server",
            grpc[2],
            "--token",
            ADMIN_TOKEN,
            "1",
        ],
        None,
    )?;
    anyhow::ensure!(
        ok,
        "freeze with the admin token failed: {err2} (wrong token: {err})"
    );

    for s in servers {
        let status = s.stop()?;
        anyhow::ensure!(status.success(), "cairn serve did not exit cleanly: {status}");
    }
    eprintln!(
        "k8s_config: 3 nodes from {PRODUCTION}, {} entries logged and verified in {:.1} s",
        logged.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A shard key added to the Secret while the pod runs (a shard added at runtime) reaches the key
/// directory without a restart: start.sh's loop copies it, mode 0600, whole; a key it copied before is
/// left as it was even when the Secret's file changes.
#[test]
fn start_sh_copies_a_key_added_to_the_secret_while_the_process_runs() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (secrets, run) = (tmp.path().join("secrets"), tmp.path().join("run"));
    std::fs::create_dir_all(&secrets)?;
    let config = tmp.path().join("cairn.toml");
    std::fs::write(&config, "data_dir = \"/var/lib/cairn\"\n")?;
    std::fs::write(secrets.join("shard-1.key"), "first key\n")?;
    let key = run.join("keys/shard-9.key");
    let started = tmp.path().join("started");
    // The process start.sh runs: says it started, waits for shard 9's key, then reports its mode and
    // both keys.
    let wait = format!(
        "touch {s}; until [ -f {k} ]; do sleep 0.1; done; stat -c %a {k}; cat {k} {one}",
        s = started.display(),
        k = key.display(),
        one = run.join("keys/shard-1.key").display()
    );
    let child = Command::new("sh")
        .arg(repo(START))
        .args(["sh", "-c", &wait])
        .env("CAIRN_CONFIG", &config)
        .env("CAIRN_SECRETS", &secrets)
        .env("CAIRN_RUN_DIR", &run)
        .env("CAIRN_KEY_SYNC_S", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    // Once the process runs (shard 1's key copied before it started), the Secret gains shard 9's
    // key and shard 1's changes, each file replaced whole as Kubernetes does.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !started.exists() {
        anyhow::ensure!(Instant::now() < deadline, "start.sh did not start the process");
        std::thread::sleep(Duration::from_millis(50));
    }
    for (name, text) in [("shard-9.key", "ninth key\n"), ("shard-1.key", "changed\n")] {
        std::fs::write(secrets.join(".new"), text)?;
        std::fs::rename(secrets.join(".new"), secrets.join(name))?;
    }
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(out) => out?,
        Err(_) => {
            let _ = Command::new("kill").arg(&pid).status();
            anyhow::bail!("shard-9.key was not copied within 20 s");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success() && stdout == "600\nninth key\nfirst key\n",
        "{}: {stdout}",
        out.status
    );
    Ok(())
}
