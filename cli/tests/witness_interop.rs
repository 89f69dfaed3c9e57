//! Witnessing against independent c2sp.org/tlog-witness implementations, all on 127.0.0.1:
//!
//! - Cairn's publisher collects cosignatures from litewitness (filippo.io/torchwood), an unmodified
//!   witness that is not ours: every published checkpoint carries its cosignature, `cairn verify
//!   --policy` accepts the tlog-proofs (and refuses them under a policy naming another witness), the Go
//!   note library with transparency-dev's cosignature/v1 verifier accepts the checkpoints, and
//!   litewitness follows the log across checkpoints (consistency proofs from a non-zero size).
//! - Cairn's witness role cosigns the checkpoints of a log played by `cairn-go-witness` (Go's
//!   sumdb/note and sumdb/tlog, which checks every cosignature it gets), refuses a fork signed by
//!   the same log key, and still refuses it after a restart on the same data directory.
//!
//! The peers come from `scripts/witness-peers.sh --print-env` (`CAIRN_LITEWITNESS`,
//! `CAIRN_GO_WITNESS`); litewitness also needs `ssh-keygen`, `ssh-agent`, `ssh-add` and `sqlite3` on
//! PATH. Without the variables the tests print a skip, unless `CAIRN_REQUIRE_WITNESS_PEERS` is set
//! (CI), where a missing peer is an error.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Server, WITNESS_PEERS, cairn, free_port, ok, required};
use sha2::{Digest, Sha256};

/// The RFC 6962 hash of the empty tree, base64: the state litewitness starts a registered log at.
const EMPTY_TREE: &str = "47DEQpj8HBSa+/TImW+5JCeuQeRBm5NMpJWZG3hSuFU=";

fn run(program: &Path, args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(program).args(args).stdin(Stdio::null()).output()?)
}

/// Runs a command and returns its stdout; fails with its output unless it exited 0.
fn stdout_of(what: &str, cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.stdin(Stdio::null()).output()?;
    ok(what, &out)?;
    Ok(String::from_utf8(out.stdout)?)
}

/// A child process killed (and reaped) when dropped.
struct Guard(Child, &'static str);

impl Guard {
    /// Fails if the process has exited.
    fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.0.try_wait()? {
            anyhow::bail!("{} exited early: {status}", self.1);
        }
        Ok(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `ready` every 20 ms until it holds or `timeout` passes.
fn wait_until(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !ready()? {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A running litewitness: its witness key lives in a dedicated ssh-agent.
struct Litewitness {
    // Dropped in this order: litewitness before its agent.
    _process: Guard,
    _agent: Guard,
    vkey: String,
    url: String,
    db: PathBuf,
    log: PathBuf,
}

impl Litewitness {
    const NAME: &str = "example.com/cairn-interop-litewitness";

    /// Starts it in `dir` (a short path: the agent socket's path must fit in 108 bytes).
    fn start(bin: &Path, go_witness: &Path, dir: &Path) -> anyhow::Result<Self> {
        let key = dir.join("witness_key");
        let sock = dir.join("agent.sock");
        let key_s = key.display().to_string();
        stdout_of(
            "ssh-keygen",
            Command::new("ssh-keygen").args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "litewitness",
                "-f",
                &key_s,
            ]),
        )?;
        let mut agent = Guard(
            Command::new("ssh-agent")
                .args(["-D", "-a"])
                .arg(&sock)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
            "ssh-agent",
        );
        wait_until("the ssh-agent socket", Duration::from_secs(10), || {
            agent.alive()?;
            Ok(sock.exists())
        })?;
        stdout_of(
            "ssh-add",
            Command::new("ssh-add").arg(&key).env("SSH_AUTH_SOCK", &sock),
        )?;
        let fingerprint = stdout_of(
            "ssh-keygen -l",
            Command::new("ssh-keygen").args(["-l", "-E", "sha256", "-f", &format!("{key_s}.pub")]),
        )?
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no fingerprint from ssh-keygen -l"))?
        .to_owned();

        let port = free_port()?;
        let db = dir.join("litewitness.db");
        let log = dir.join("litewitness.log");
        let mut process = Guard(
            Command::new(bin)
                .args(["-name", Self::NAME, "-db"])
                .arg(&db)
                .arg("-ssh-agent")
                .arg(&sock)
                .args(["-key", &fingerprint, "-listen", &format!("127.0.0.1:{port}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()?,
            "litewitness",
        );
        // It logs `listening` just before it binds: wait for a connection instead.
        let started = wait_until("litewitness to listen", Duration::from_secs(15), || {
            process.alive()?;
            Ok(
                TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
                    .is_ok(),
            )
        });
        if let Err(e) = started {
            anyhow::bail!(
                "{e}; litewitness log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let logged = std::fs::read_to_string(&log)?;
        let vkey = logged
            .lines()
            .find(|l| l.contains("msg=\"verifier key\""))
            .and_then(|l| l.split("vkey=").nth(1))
            .map(|v| v.split_whitespace().next().unwrap_or_default().to_owned())
            .ok_or_else(|| anyhow::anyhow!("litewitness logged no verifier key:\n{logged}"))?;
        // The same key, computed independently from the ssh public key by the Go client.
        let computed = stdout_of(
            "cairn-go-witness witness-vkey",
            Command::new(go_witness).args([
                "witness-vkey",
                "--name",
                Self::NAME,
                "--ssh-pubkey",
                &format!("{key_s}.pub"),
            ]),
        )?;
        anyhow::ensure!(
            computed.trim() == vkey,
            "litewitness's vkey {vkey} differs from the one computed from its key ({})",
            computed.trim()
        );
        Ok(Self {
            _process: process,
            _agent: agent,
            vkey,
            url: format!("http://127.0.0.1:{port}"),
            db,
            log,
        })
    }

    /// Registers a log (what witnessctl add-log + add-key do) at size 0.
    fn register(&self, origin: &str, vkey: &str) -> anyhow::Result<()> {
        self.sql(&format!(
            "INSERT INTO log (origin, tree_size, tree_hash) VALUES ('{origin}', 0, '{EMPTY_TREE}'); \
             INSERT INTO key (origin, key) VALUES ('{origin}', '{vkey}');"
        ))?;
        Ok(())
    }

    /// The size of the latest checkpoint it cosigned for `origin`.
    fn size(&self, origin: &str) -> anyhow::Result<u64> {
        let out = self.sql(&format!("SELECT tree_size FROM log WHERE origin = '{origin}';"))?;
        Ok(out.trim().parse()?)
    }

    fn sql(&self, sql: &str) -> anyhow::Result<String> {
        stdout_of("sqlite3", Command::new("sqlite3").arg(&self.db).arg(sql))
    }

    fn logged(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Submits entries (one file each, named `<tag>-<i>.json` in `d`) waiting for publication; returns
/// (entry file, tlog-proof file) pairs.
fn submit_published(d: &Path, grpc: &str, tag: &str, n: usize) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
    let mut files = Vec::new();
    for i in 0..n {
        let name = format!("{tag}-{i}.json");
        std::fs::write(d.join(&name), format!("{{\"artifact\":\"{tag}\",\"n\":{i}}}\n"))?;
        files.push(name);
    }
    let mut args = vec![
        "submit",
        "--server",
        grpc,
        "--wait",
        "published",
        "--proof-dir",
        "proofs",
    ];
    args.extend(files.iter().map(String::as_str));
    let (submitted, out, err) = cairn(d, &args, None)?;
    anyhow::ensure!(submitted, "cairn submit --wait published failed: {err}");
    let mut pairs = Vec::new();
    for (line, file) in out.lines().zip(&files) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        anyhow::ensure!(v["duplicate"] == false, "{line}");
        let proof = v["proof"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no tlog-proof in {line}"))?;
        pairs.push((d.join(file), d.join(proof)));
    }
    anyhow::ensure!(
        pairs.len() == n,
        "{} results for {n} entries:\n{out}",
        pairs.len()
    );
    Ok(pairs)
}

/// The checkpoint note inside a tlog-proof file, and its size.
fn proof_checkpoint(proof: &Path) -> anyhow::Result<(Vec<u8>, u64)> {
    let note = cairn_tlog::TlogProof::parse(&std::fs::read(proof)?)?.checkpoint;
    let size = cairn_tlog::Checkpoint::parse_note_unverified(&note)?.size;
    Ok((note, size))
}

/// `cairn-go-witness verify` on a note (stdin): the log's signature and `quorum` of `witnesses`.
fn go_verify(
    go: &Path,
    note: &[u8],
    log_vkey: &str,
    witnesses: &[&str],
    quorum: usize,
) -> anyhow::Result<Output> {
    use std::io::Write;
    let mut cmd = Command::new(go);
    cmd.args([
        "verify",
        "--note",
        "-",
        "--log-vkey",
        log_vkey,
        "--quorum",
        &quorum.to_string(),
    ]);
    for w in witnesses {
        cmd.args(["--witness-vkey", w]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?
        .write_all(note)?;
    Ok(child.wait_with_output()?)
}

/// A cosignature verifier key (type 0x04) of a witness nobody runs.
fn random_witness_vkey(name: &str) -> anyhow::Result<String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(cairn_tlog::Cosigner::from_seed(name, seed)?
        .verifier()
        .to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn litewitness_cosigns_cairn_checkpoints() -> anyhow::Result<()> {
    let (Some(lw_bin), Some(go)) = (
        required("CAIRN_LITEWITNESS", WITNESS_PEERS)?,
        required("CAIRN_GO_WITNESS", WITNESS_PEERS)?,
    ) else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    // The agent socket lives here: keep the path short.
    let lw_dir = tempfile::Builder::new().prefix("lw").tempdir_in("/tmp")?;
    let lw = Litewitness::start(&lw_bin, &go, lw_dir.path())?;

    // The shard key first, so that its log is registered with litewitness before the first
    // checkpoint is published.
    let origin = "example.com/cairn-interop/1";
    let key_file = d.join("shard-1.key");
    let (made, vkey, err) = cairn(
        d,
        &[
            "keygen",
            "--origin",
            origin,
            "--out",
            &key_file.display().to_string(),
        ],
        None,
    )?;
    anyhow::ensure!(made, "cairn keygen: {err}");
    let vkey = vkey.trim().to_owned();
    lw.register(origin, &vkey)?;

    // The policy, relative to data_dir in the config.
    let data = d.join("data");
    std::fs::create_dir_all(&data)?;
    let policy = data.join("witness-policy");
    std::fs::write(&policy, format!("witness lw {} {}\nquorum lw\n", lw.vkey, lw.url))?;
    let config = d.join("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = 1\ndata_dir = \"{}\"\ngrpc_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\n\
             raft_addr = \"127.0.0.1:0\"\n\n[tuning]\npublish_interval_ms = 100\n\n\
             [witnessing]\npolicy = \"witness-policy\"\ntimeout_ms = 10000\n\n\
             [[shards]]\nid = 1\norigin = \"{origin}\"\nkey_file = \"{}\"\n",
            data.display(),
            key_file.display()
        ),
    )?;
    let server = Server::start(d, &["--config", &config.display().to_string()])?;
    anyhow::ensure!(
        server.vkeys == [vkey.clone()],
        "shard keys {:?}, want {vkey}",
        server.vkeys
    );

    let first = submit_published(d, &server.grpc, "first", 3)?;
    let second = submit_published(d, &server.grpc, "second", 3)?;
    let (_, first_size) = proof_checkpoint(&first[2].1)?;
    let (_, second_size) = proof_checkpoint(&second[2].1)?;
    anyhow::ensure!(
        (3..6).contains(&first_size) && second_size >= 6,
        "checkpoint sizes {first_size} and {second_size}"
    );
    // litewitness followed the log from the first batch's checkpoint to the second's: it verified a
    // consistency proof from a non-zero size.
    let lw_size = lw.size(origin)?;
    anyhow::ensure!(
        lw_size == 6,
        "litewitness is at size {lw_size}, the log at 6; its log:\n{}",
        lw.logged()
    );

    // A verifier's policy that names the log too: no --vkey needed.
    let verifier_policy = d.join("verifier-policy");
    std::fs::write(
        &verifier_policy,
        format!("log {vkey}\nwitness lw {}\nquorum lw\n", lw.vkey),
    )?;
    let other_policy = d.join("other-policy");
    std::fs::write(
        &other_policy,
        format!(
            "witness other {}\nquorum other\n",
            random_witness_vkey("example.com/not-litewitness")?
        ),
    )?;
    for (entry, proof) in first.iter().chain(&second) {
        let (entry, proof) = (entry.display().to_string(), proof.display().to_string());
        // (a) Cairn's verifier: the proof, and the policy's quorum on its checkpoint.
        for args in [
            vec![
                "verify",
                "--policy",
                "data/witness-policy",
                "--vkey",
                &vkey,
                "--proof",
                &proof,
                &entry,
            ],
            vec!["verify", "--policy", "verifier-policy", "--proof", &proof, &entry],
        ] {
            let (verified, out, err) = cairn(d, &args, None)?;
            anyhow::ensure!(
                verified && out.starts_with("OK: ") && out.contains("cosigned by lw"),
                "{args:?}: {out}{err}"
            );
        }
        // (c) Another witness's policy: the quorum is not met.
        let (verified, out, err) = cairn(
            d,
            &[
                "verify",
                "--policy",
                "other-policy",
                "--vkey",
                &vkey,
                "--proof",
                &proof,
                &entry,
            ],
            None,
        )?;
        anyhow::ensure!(
            !verified && err.contains("quorum"),
            "verified under a policy naming another witness: {out}{err}"
        );
    }
    // (b) Go's note library and transparency-dev's cosignature/v1 verifier: both batches'
    // checkpoints, and the one the read path serves.
    let published = reqwest::get(format!("{}/logs/1/checkpoint", server.http))
        .await?
        .error_for_status()?
        .bytes()
        .await?
        .to_vec();
    for note in [
        proof_checkpoint(&first[0].1)?.0,
        proof_checkpoint(&second[0].1)?.0,
        published,
    ] {
        let out = go_verify(&go, &note, &vkey, &[&lw.vkey], 1)?;
        ok("cairn-go-witness verify", &out)?;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        anyhow::ensure!(
            report["ok"] == true && report["cosigned_by"] == serde_json::json!([Litewitness::NAME]),
            "{report}"
        );
    }
    anyhow::ensure!(server.stop()?.success(), "cairn serve did not exit cleanly");
    Ok(())
}

/// The JSON line of `fork`'s second phase.
fn fork_phase(out: &Output) -> anyhow::Result<serde_json::Value> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["phase"] == "fork")
        .ok_or_else(|| anyhow::anyhow!("no fork phase in the output:\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_witness_cosigns_go_log() -> anyhow::Result<()> {
    let Some(go) = required("CAIRN_GO_WITNESS", WITNESS_PEERS)? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let origin = "example.com/go-log";
    let keys = stdout_of(
        "cairn-go-witness keygen",
        Command::new(&go).args(["keygen", "--name", origin]),
    )?;
    let [skey, log_vkey] = keys.lines().collect::<Vec<_>>()[..] else {
        anyhow::bail!("keygen printed {keys:?}");
    };
    // The config loader needs a shard; this process only witnesses, so its vkey is all it needs.
    let unused = stdout_of(
        "cairn-go-witness keygen",
        Command::new(&go).args(["keygen", "--name", "example.com/unused-shard"]),
    )?;
    let unused_vkey = unused
        .lines()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("keygen printed {unused:?}"))?;
    let port = free_port()?;
    let config = d.join("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nroles = [\"witness\"]\nhttp_addr = \"127.0.0.1:{port}\"\n\n\
             [witness]\nname = \"example.com/cairn-interop-witness\"\nlogs = [\"{log_vkey}\"]\n\n\
             [[shards]]\nid = 1\norigin = \"example.com/unused-shard\"\nvkey = \"{unused_vkey}\"\n",
            d.join("data").display()
        ),
    )?;
    let config = config.display().to_string();
    let start = || -> anyhow::Result<(Server, String, String)> {
        let server = Server::start(d, &["--config", &config])?;
        let (wvkey, url) = server
            .witness
            .clone()
            .ok_or_else(|| anyhow::anyhow!("cairn serve printed no witness line"))?;
        anyhow::ensure!(
            url == format!("http://127.0.0.1:{port}/witness"),
            "witness url {url}"
        );
        Ok((server, wvkey, url))
    };
    let (server, wvkey, url) = start()?;

    // Three rounds of four entries: the Go side checks each cosignature with its note library.
    let (entries, rounds) = (4, 3);
    let size = entries * rounds;
    let logged = run(
        &go,
        &[
            "log",
            "--skey",
            skey,
            "--witness",
            &url,
            "--witness-vkey",
            &wvkey,
            "--entries",
            &entries.to_string(),
            "--rounds",
            &rounds.to_string(),
            "--seed",
            "interop",
        ],
    )?;
    ok("cairn-go-witness log", &logged)?;
    let reports: Vec<serde_json::Value> = String::from_utf8_lossy(&logged.stdout)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(
        reports.len() == rounds && reports.iter().all(|r| r["status"] == 200),
        "{reports:?}"
    );

    // A fork at a larger size, signed with the same log key: a consistency proof that cannot verify.
    let fork = |extra: u64| {
        run(
            &go,
            &[
                "fork",
                "--skey",
                skey,
                "--witness",
                &url,
                "--witness-vkey",
                &wvkey,
                "--size",
                &size.to_string(),
                "--seed",
                "interop",
                "--extra",
                &extra.to_string(),
            ],
        )
    };
    let forked = fork(1)?;
    ok("cairn-go-witness fork --extra 1", &forked)?;
    let phase = fork_phase(&forked)?;
    anyhow::ensure!(phase["status"] == 422, "fork at a larger size: {phase}");

    let origin_hash: String = Sha256::digest(origin.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let checkpoint_url = format!("{url}/{origin_hash}/checkpoint");
    let latest = |expected: usize, wvkey: String| {
        let checkpoint_url = checkpoint_url.clone();
        let go = go.clone();
        async move {
            let note = reqwest::get(&checkpoint_url)
                .await?
                .error_for_status()?
                .bytes()
                .await?
                .to_vec();
            let parsed = cairn_tlog::Checkpoint::parse_note_unverified(&note)?;
            anyhow::ensure!(
                parsed.origin == origin && parsed.size == expected as u64,
                "the witness's latest checkpoint is {} at size {}, want {origin} at {expected}",
                parsed.origin,
                parsed.size
            );
            // The stored note carries the log's signature and the witness's cosignature.
            let out = go_verify(&go, &note, log_vkey, &[&wvkey], 1)?;
            ok("cairn-go-witness verify (witness's latest checkpoint)", &out)?;
            anyhow::Ok(())
        }
    };
    latest(size, wvkey.clone()).await?;

    // Restarted on the same data directory: same key, same state, and the fork is still refused, now
    // at the same size (409, as c2sp.org/tlog-witness requires for another root at the latest size).
    anyhow::ensure!(server.stop()?.success(), "cairn serve did not exit cleanly");
    let (server, wvkey2, url2) = start()?;
    anyhow::ensure!(
        wvkey2 == wvkey && url2 == url,
        "the witness changed across a restart"
    );
    latest(size, wvkey.clone()).await?;
    let forked = fork(0)?;
    ok("cairn-go-witness fork --extra 0 (after a restart)", &forked)?;
    let phase = fork_phase(&forked)?;
    anyhow::ensure!(
        phase["status"] == 409 && phase["body"] == format!("{size}\n"),
        "fork at the same size after a restart: {phase}"
    );
    let forked = fork(1)?;
    ok("cairn-go-witness fork --extra 1 (after a restart)", &forked)?;
    anyhow::ensure!(fork_phase(&forked)?["status"] == 422, "fork after a restart");
    latest(size, wvkey).await?;
    anyhow::ensure!(server.stop()?.success(), "cairn serve did not exit cleanly");
    Ok(())
}
