//! Starting the real `cairn` binary in tests.

#![allow(dead_code)] // each test binary uses part of this

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_cairn");

/// `cairn serve` flags that put every listener on an ephemeral loopback port.
pub const LOOPBACK: [&str; 6] = [
    "--grpc-addr",
    "127.0.0.1:0",
    "--http-addr",
    "127.0.0.1:0",
    "--raft-addr",
    "127.0.0.1:0",
];

/// A running `cairn serve`.
pub struct Server {
    child: Child,
    pub grpc: String,
    pub http: String,
    pub vkeys: Vec<String>,
    /// With the witness role: its verifier key (type 0x04) and submission prefix URL.
    pub witness: Option<(String, String)>,
}

impl Server {
    /// Starts `cairn serve ARGS` and waits for its startup lines.
    pub fn start(dir: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let mut cmd = Command::new(BIN);
        cmd.env(
            "CAIRN_LOG",
            std::env::var("CAIRN_TEST_SERVER_LOG").unwrap_or_else(|_| "warn,openraft=off".into()),
        )
        .stderr(Stdio::inherit());
        Self::start_with(cmd, dir, args)
    }

    /// Starts `cairn serve ARGS` with its log (filter `filter`, JSON lines) written to `log`.
    pub fn start_logging_to(dir: &Path, args: &[&str], filter: &str, log: &Path) -> anyhow::Result<Self> {
        let mut cmd = Command::new(BIN);
        cmd.env("CAIRN_LOG", filter)
            .env("CAIRN_LOG_FORMAT", "json")
            .stderr(std::fs::File::create(log)?);
        Self::start_with(cmd, dir, args)
    }

    fn start_with(mut cmd: Command, dir: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let mut child = cmd
            .arg("serve")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Self {
            child,
            grpc: String::new(),
            http: String::new(),
            vkeys: Vec::new(),
            witness: None,
        };
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .map_err(|_| anyhow::anyhow!("cairn serve did not report its addresses"))?;
            if line.starts_with("shard ")
                && let Some(v) = line.split("vkey=").nth(1)
            {
                server.vkeys.push(v.to_owned());
            }
            if let Some(rest) = line.strip_prefix("witness vkey=")
                && let Some((vkey, url)) = rest.split_once(" url=")
            {
                server.witness = Some((vkey.to_owned(), url.to_owned()));
            }
            // The last startup line.
            if let Some(rest) = line.strip_prefix("cairn serving: ") {
                for kv in rest.split(' ') {
                    match kv.split_once('=') {
                        Some(("grpc", a)) => server.grpc = format!("http://{a}"),
                        Some(("http", a)) => server.http = format!("http://{a}"),
                        _ => {}
                    }
                }
                return Ok(server);
            }
        }
    }

    /// Starts the embedded default in `dir` with every listener on an ephemeral loopback port.
    pub fn start_loopback(dir: &Path) -> anyhow::Result<Self> {
        Self::start(dir, &LOOPBACK)
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`, …) to the process.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} failed");
        Ok(())
    }

    /// SIGKILL, and waits until the process is gone.
    pub fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill failed");
        Ok(self.child.wait()?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago.
///
/// Ports come from below the kernel's ephemeral range: a port the kernel hands out for `bind(0)` can be
/// handed out again as the source port of some outgoing connection before the server binds it (or while
/// a killed node is down), which then fails with "address in use". Each call in this process returns a
/// different port.
pub fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|l| *l > LOW + 1_000)
        .unwrap_or(32_768);
    let span = ephemeral_low - LOW;
    // Processes start at different offsets, so test binaries running side by side rarely probe the
    // same ports (and a port in use is skipped anyway).
    let base = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let port = LOW + (base + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return Ok(port as u16);
        }
    }
    anyhow::bail!("no free port below the ephemeral range")
}

/// Runs `cairn ARGS` to completion: (exit success, stdout, stderr).
pub fn cairn(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> anyhow::Result<(bool, String, String)> {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut sin) = child.stdin.take() {
        sin.write_all(stdin.unwrap_or_default())?;
    }
    let out = child.wait_with_output()?;
    Ok((
        out.status.success(),
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}

pub fn path(p: &Path) -> PathBuf {
    p.to_path_buf()
}

/// Makes `count` shard signing keys with `cairn keygen` in `dir`, origins `<domain>/shard-<id>`.
/// Returns the `[[shards]]` tables (with `vkey` when `with_vkey`) and the verifier keys.
pub fn keygen_shards(
    dir: &Path,
    domain: &str,
    count: u32,
    with_vkey: bool,
) -> anyhow::Result<(String, Vec<String>)> {
    let mut toml = String::new();
    let mut vkeys = Vec::new();
    for id in 1..=count {
        let origin = format!("{domain}/shard-{id}");
        let key = dir.join(format!("shard-{id}.key"));
        let (ok, vkey, err) = cairn(
            dir,
            &["keygen", "--origin", &origin, "--out", &key.display().to_string()],
            None,
        )?;
        anyhow::ensure!(ok, "keygen: {err}");
        let vkey = vkey.trim().to_owned();
        toml.push_str(&format!(
            "[[shards]]\nid = {id}\norigin = \"{origin}\"\nkey_file = \"{}\"\n",
            key.display()
        ));
        if with_vkey {
            toml.push_str(&format!("vkey = \"{vkey}\"\n"));
        }
        toml.push('\n');
        vkeys.push(vkey);
    }
    Ok((toml, vkeys))
}

/// A node's (gRPC, HTTP, Raft) ports.
pub type Ports = (u16, u16, u16);

/// Free ports for `n` nodes, and the `[[peers]]` tables naming them (ids 1..=n).
pub fn cluster_ports(n: usize) -> anyhow::Result<(Vec<Ports>, String)> {
    let ports: Vec<Ports> = (0..n)
        .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
        .collect::<anyhow::Result<_>>()?;
    let peers = ports
        .iter()
        .enumerate()
        .map(|(i, (g, _, r))| {
            format!(
                "[[peers]]\nid = {}\nraft = \"127.0.0.1:{r}\"\ngrpc = \"http://127.0.0.1:{g}\"\n\n",
                i + 1
            )
        })
        .collect();
    Ok((ports, peers))
}

/// Writes `<d>/node-<id>/cairn.toml` for node `id` of a loopback cluster on `ports` sharing the store
/// `<d>/bucket`, publishing every 100 ms: `tuning` holds more `[tuning]` lines, `tables` more tables (as
/// `[tls]`), `cluster` the `[[peers]]` and `[[shards]]`. Returns the node's directory and config path.
pub fn node_config(
    d: &Path,
    id: usize,
    (g, h, r): Ports,
    tuning: &str,
    tables: &str,
    cluster: &str,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let node_dir = d.join(format!("node-{id}"));
    std::fs::create_dir_all(&node_dir)?;
    let config = format!(
        "node_id = {id}\ndata_dir = \"{}\"\ngrpc_addr = \"127.0.0.1:{g}\"\nhttp_addr = \"127.0.0.1:{h}\"\n\
         raft_addr = \"127.0.0.1:{r}\"\nstore = \"file://{}\"\n\n[tuning]\npublish_interval_ms = 100\n{tuning}\n\
         {tables}\n{cluster}",
        node_dir.display(),
        d.join("bucket").display()
    );
    let path = node_dir.join("cairn.toml");
    std::fs::write(&path, config)?;
    Ok((node_dir, path))
}

/// Checks a Sigstore bundle (v0.3 JSON) against the log at `http`: its tlog entry is a Rekor v2
/// hashedrekord 0.0.2 entry, it carries an RFC 3161 timestamp, and its canonical body is the entry at
/// its index in the Sigstore shard its log id names, whose published log verifies as a whole.
/// Returns the shard and the index.
pub async fn check_bundle_in_log(http: &str, bundle: &Path) -> anyhow::Result<(u32, u64)> {
    use base64::Engine;
    let bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle)?)?;
    let material = &bundle["verificationMaterial"];
    let entry = &material["tlogEntries"][0];
    // protojson leaves a zero index out.
    let index: u64 = entry["logIndex"].as_str().unwrap_or("0").parse()?;
    anyhow::ensure!(
        entry["kindVersion"]["kind"] == "hashedrekord" && entry["kindVersion"]["version"] == "0.0.2",
        "not a Rekor v2 hashedrekord entry: {entry}"
    );
    anyhow::ensure!(
        material["timestampVerificationData"]["rfc3161Timestamps"][0]["signedTimestamp"].is_string(),
        "no RFC 3161 timestamp in the bundle"
    );
    // The shard the entry names (its log id is the shard's key hash).
    let log_id = entry["logId"]["keyId"].as_str().unwrap_or_default();
    let site = cairn_client::HttpLog::new(http);
    let shards = site.shards().await?;
    let shard = shards
        .iter()
        .find(|s| {
            s.kind == cairn_store::ShardKind::Sigstore
                && s.verifier().is_ok_and(|k| {
                    base64::engine::general_purpose::STANDARD.encode(cairn_sigstore::log_id(&k)) == log_id
                })
        })
        .ok_or_else(|| anyhow::anyhow!("no Sigstore shard in shards.json has log id {log_id}"))?;
    let verified = verified_shard_covering(&site, shard, index as usize + 1).await?;
    let body = base64::engine::general_purpose::STANDARD
        .decode(entry["canonicalizedBody"].as_str().unwrap_or_default())?;
    anyhow::ensure!(
        verified.entries.get(index as usize) == Some(&body),
        "entry {index} of shard {} is not the bundle's body",
        shard.id
    );
    Ok((shard.id, index))
}

/// Fails with the command's output unless it exited successfully.
pub fn ok(what: &str, out: &std::process::Output) -> anyhow::Result<()> {
    anyhow::ensure!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Where a kind of outside tool comes from: the variable that makes a missing one an error (set by
/// `scripts/test`, so CI cannot pass by skipping) and the script that installs it.
pub struct Tools {
    pub require: &'static str,
    pub installer: &'static str,
}

/// The Sigstore clients.
pub const SIGSTORE: Tools = Tools {
    require: "CAIRN_REQUIRE_SIGSTORE",
    installer: "scripts/sigstore-clients.sh",
};

/// The witness-protocol peers.
pub const WITNESS_PEERS: Tools = Tools {
    require: "CAIRN_REQUIRE_WITNESS_PEERS",
    installer: "scripts/witness-peers.sh",
};

/// The installed tool `var` names. Missing: an error when `tools.require` is set, else a printed skip.
pub fn required(var: &str, tools: Tools) -> anyhow::Result<Option<PathBuf>> {
    let found = std::env::var_os(var).map(PathBuf::from).filter(|p| p.exists());
    if found.is_none() {
        anyhow::ensure!(
            std::env::var_os(tools.require).is_none(),
            "{var} does not name an installed tool (run: eval \"$({} --print-env)\", or scripts/test)",
            tools.installer
        );
        eprintln!(
            "skipped: {var} is not set; {} --print-env installs it",
            tools.installer
        );
    }
    Ok(found)
}

/// The interpreter of sigstore-python's venv (`CAIRN_SIGSTORE_PYTHON`, default
/// `~/.cache/cairn-sigstore-py/bin/python`); missing: an error under `CAIRN_REQUIRE_SIGSTORE`, else a
/// printed skip.
pub fn sigstore_python() -> anyhow::Result<Option<PathBuf>> {
    let found = match std::env::var_os("CAIRN_SIGSTORE_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/cairn-sigstore-py/bin/python"))
        }
    }
    .filter(|p| p.exists());
    if found.is_none() {
        anyhow::ensure!(
            std::env::var_os(SIGSTORE.require).is_none(),
            "sigstore-python missing (run {}, or scripts/test)",
            SIGSTORE.installer
        );
        eprintln!(
            "skipped: no sigstore-python venv; {} installs it",
            SIGSTORE.installer
        );
    }
    Ok(found)
}

/// Runs `clients/sigstore-python/<script>` with `python`.
pub fn sigstore_script(python: &Path, script: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../clients/sigstore-python")
        .join(script);
    Ok(Command::new(python).arg(script).args(args).output()?)
}

/// A Cairn with a Sigstore shard (2, origin `localhost`) beside a plain one (1), the TSA role, and a
/// test CA + CT log (`sign_and_verify.py prepare` in `dir`) whose fake Fulcio listens on
/// `fulcio_port` while a script signs.
pub struct SigstoreLog {
    pub server: Server,
    pub fulcio_port: String,
}

/// Starts a [`SigstoreLog`] in `dir`.
pub fn start_sigstore_log(dir: &Path, python: &Path) -> anyhow::Result<SigstoreLog> {
    start_sigstore_log_with(dir, python, &[])
}

/// Starts a [`SigstoreLog`] in `dir` running `extra_roles` too (e.g. `search`).
pub fn start_sigstore_log_with(
    dir: &Path,
    python: &Path,
    extra_roles: &[&str],
) -> anyhow::Result<SigstoreLog> {
    let roles = ["sequencer", "log", "tiles", "tsa"]
        .iter()
        .chain(extra_roles)
        .map(|r| format!("{r:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let fulcio_port = free_port()?.to_string();
    let dir_arg = dir.display().to_string();
    ok(
        "sign_and_verify.py prepare",
        &sigstore_script(
            python,
            "sign_and_verify.py",
            &["prepare", "--dir", &dir_arg, "--fulcio-port", &fulcio_port],
        )?,
    )?;
    let config = dir.join("cairn.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{dir}"
roles = [{roles}]

[[shards]]
id = 1
origin = "localhost/cairn/1"

[[shards]]
id = 2
origin = "localhost"
kind = "sigstore"

[sigstore]
extra_trusted_root = "{dir}/extra_root.json"
ca_urls = ["http://127.0.0.1:{fulcio_port}"]

[search]
interval_ms = 200
"#,
            dir = dir.display()
        ),
    )?;
    let config = config.display().to_string();
    let mut args = vec!["--config", config.as_str()];
    args.extend(LOOPBACK);
    Ok(SigstoreLog {
        server: Server::start(dir, &args)?,
        fulcio_port,
    })
}

/// A forked copy of a Sigstore shard served over HTTP by the test itself.
pub struct Fork {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fork {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves, under `server`'s own `shards.json`, a fork of shard 2 signed with its real key (read from
/// `dir/keys/shard-2.key`): the entries `shared`, then others up to `size` entries.
pub async fn fork_server(
    dir: &Path,
    server: &Server,
    shared: &[Vec<u8>],
    size: usize,
) -> anyhow::Result<Fork> {
    let signer = cairn_tlog::Signer::parse(std::fs::read_to_string(dir.join("keys/shard-2.key"))?.trim())?;
    let mut entries = shared.to_vec();
    let mut i = 0;
    while entries.len() < size {
        entries.push(format!("an entry only the fork has: {i}").into_bytes());
        i += 1;
    }
    let root = dir.join("fork");
    std::fs::create_dir_all(&root)?;
    let bucket = cairn_store::open_bucket(&format!("file://{}", root.display()), &[])?;
    cairn_store::testing::write_log(&bucket.child("logs/2"), &signer, &entries, &[shared.len()]).await?;
    let shards = reqwest::get(format!("{}/shards.json", server.http))
        .await?
        .bytes()
        .await?;
    let app = axum::Router::new()
        .route(
            "/shards.json",
            axum::routing::get(move || async move { shards.clone() }),
        )
        .route(
            "/logs/2/{*rest}",
            axum::routing::get(move |axum::extract::Path(rest): axum::extract::Path<String>| {
                let path = root.join("logs/2").join(&rest);
                async move {
                    match std::fs::read(&path) {
                        Ok(b) if !rest.contains("..") => Ok(b),
                        _ => Err(axum::http::StatusCode::NOT_FOUND),
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Fork { url, task })
}

/// The Sigstore shard of the log at `http` once its served checkpoint covers `size` entries (the read
/// path may serve a checkpoint a moment old), and its entries, verified from the tiles.
pub async fn sigstore_entries(
    http: &str,
    size: usize,
) -> anyhow::Result<(cairn_store::ShardListing, Vec<Vec<u8>>)> {
    let site = cairn_client::HttpLog::new(http);
    let shard = site
        .shards()
        .await?
        .into_iter()
        .find(|s| s.kind == cairn_store::ShardKind::Sigstore)
        .ok_or_else(|| anyhow::anyhow!("no Sigstore shard in shards.json"))?;
    let entries = verified_shard_covering(&site, &shard, size).await?.entries;
    Ok((shard, entries))
}

/// `shard` read and verified as a whole once the read path's checkpoint covers `size` entries: it
/// may serve one up to a second old (its cache), or none yet right after a log starts, so a read right
/// after a write polls (30 s at most); a verification failure is returned at once.
pub async fn verified_shard_covering(
    site: &cairn_client::HttpLog,
    shard: &cairn_store::ShardListing,
    size: usize,
) -> anyhow::Result<cairn_client::VerifiedShard> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let verified = match site.verify_shard(shard).await {
            Ok(v) => v,
            // Nothing published yet (or the read path briefly unreachable): wait like for a short one.
            Err(cairn_client::ClientError::Http(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if verified.entries.len() >= size {
            return Ok(verified);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the served checkpoint of shard {} covers {} entries, not {size}, after 30 s",
            shard.id,
            verified.entries.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Logs `count` hashedrekord entries into the Sigstore shard at `http` with
/// `clients/sigstore-python/load_entries.py` (signers kept in `dir`), writing its ground truth to
/// `dir/out`, and returns that ground truth.
pub fn load_entries(
    python: &Path,
    dir: &Path,
    http: &str,
    count: &str,
    seed: &str,
    out: &str,
) -> anyhow::Result<serde_json::Value> {
    let out_path = dir.join(out);
    let (dir_arg, out_arg) = (dir.display().to_string(), out_path.display().to_string());
    ok(
        "load_entries.py",
        &sigstore_script(
            python,
            "load_entries.py",
            &[
                "--dir", &dir_arg, "--log", http, "--count", count, "--seed", seed, "--out", &out_arg,
            ],
        )?,
    )?;
    Ok(serde_json::from_slice(&std::fs::read(out_path)?)?)
}

/// A read path served by the test itself in front of another: every GET is forwarded, and the body
/// passed through `rewrite(path, &mut body)` on its way back. Stops when dropped.
pub struct Proxy {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a [`Proxy`] on loopback in front of `upstream`.
pub async fn rewriting_proxy(
    upstream: String,
    rewrite: impl Fn(&str, &mut Vec<u8>) + Clone + Send + Sync + 'static,
) -> anyhow::Result<Proxy> {
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let (client, upstream, rewrite) = (client.clone(), upstream.clone(), rewrite.clone());
        async move {
            let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
            let bad_gateway = |e: reqwest::Error| (axum::http::StatusCode::BAD_GATEWAY, e.to_string());
            let r = client
                .get(format!("{upstream}{path}"))
                .send()
                .await
                .map_err(bad_gateway)?;
            let status = r.status();
            let mut headers = axum::http::HeaderMap::new();
            for name in ["content-type", "content-security-policy", "cache-control"] {
                if let Some(v) = r.headers().get(name) {
                    headers.insert(name, v.clone());
                }
            }
            let mut body = r.bytes().await.map_err(bad_gateway)?.to_vec();
            rewrite(uri.path(), &mut body);
            Ok::<_, (axum::http::StatusCode, String)>((status, headers, body))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Proxy { url, task })
}
