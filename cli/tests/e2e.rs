//! End to end, through the real `cairn` binary: the embedded default and a three-node cluster (plus a
//! gateway running only the log API and the read path), 10,000 entries each with both ack levels,
//! resubmissions, every returned proof verified, and the whole log verified from its tiles over HTTP.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cairn_client::{HttpLog, LogClient, Submitted, Wait};
use cairn_tlog::{VerifierKey, leaf_hash};
use common::{Server, cairn, cluster_ports, keygen_shards, node_config};
use tokio::task::JoinSet;

const BATCH: usize = 500;

fn entry(tag: &str, i: usize) -> Vec<u8> {
    format!("{{\"artifact\":\"{tag}-{i}\",\"digest\":\"sha256:{i:064x}\"}}").into_bytes()
}

/// Submits `entries` in batches over `servers` (round robin), `BATCH` per request, all at once. Also
/// says, per result, whether its request was retried (a retried request may report entries an earlier
/// attempt logged as duplicates).
async fn submit_all(
    servers: &[String],
    entries: &[Vec<u8>],
    wait: Wait,
) -> anyhow::Result<Vec<(Submitted, bool)>> {
    let mut tasks = JoinSet::new();
    for (n, chunk) in entries.chunks(BATCH).enumerate() {
        let mut client = LogClient::new(&servers[n % servers.len()])?;
        let chunk = chunk.to_vec();
        tasks.spawn(async move {
            let r = client.submit(chunk, wait).await;
            (n, r, client.retries() > 0)
        });
    }
    let mut parts = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (n, results, retried) = r?;
        parts.push((n, results?, retried));
    }
    parts.sort_by_key(|(n, _, _)| *n);
    Ok(parts
        .into_iter()
        .flat_map(|(_, r, retried)| r.into_iter().map(move |s| (s, retried)))
        .collect())
}

/// The whole exercise against running servers: 10,000 entries, half sequenced and half published,
/// 1,000 resubmitted; proofs and the published log verified.
/// The shard the documented routing rule picks for `entry` among the `active` shards: the highest
/// weight, the first 8 bytes (big endian) of SHA-256(RFC 6962 leaf hash || shard id, 4 bytes big
/// endian).
fn routed(entry: &[u8], active: &[u32]) -> u32 {
    let leaf = leaf_hash(entry);
    let weight = |shard: u32| {
        use sha2::{Digest, Sha256};
        let d = Sha256::new()
            .chain_update(leaf.as_bytes())
            .chain_update(shard.to_be_bytes())
            .finalize();
        u64::from_be_bytes(d[..8].try_into().unwrap_or_default())
    };
    active
        .iter()
        .copied()
        .max_by_key(|&s| weight(s))
        .unwrap_or_default()
}

/// `POST <base>/logs/<shard>/add` until it is answered (a 503 is retried after its `Retry-After`, as
/// documented): the index and whether it was a duplicate, checking that the entry went to `shard`.
async fn http_add(
    client: &reqwest::Client,
    base: &str,
    shard: u32,
    entry: &[u8],
) -> anyhow::Result<(u64, bool)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client
            .post(format!("{base}/logs/{shard}/add"))
            .body(entry.to_vec())
            .send()
            .await?;
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (status, to, dup) = (r.status(), header("cairn-shard"), header("cairn-duplicate"));
        let retry = header("retry-after").and_then(|v| v.parse::<u64>().ok());
        let body = r.text().await?;
        if status == 503 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(retry.unwrap_or(1))).await;
            continue;
        }
        anyhow::ensure!(status == 200, "POST {base}/logs/{shard}/add: {status} {body}");
        anyhow::ensure!(to == Some(shard.to_string()), "the entry went to shard {to:?}");
        return Ok((body.parse()?, dup.as_deref() == Some("true")));
    }
}

async fn exercise(grpc: &[String], http_writers: &[String], http: &str, tag: &str) -> anyhow::Result<()> {
    let mut admin = LogClient::new(&grpc[0])?;
    let keys: HashMap<u32, VerifierKey> = admin
        .shards()
        .await?
        .into_iter()
        .map(|s| Ok((s.id, VerifierKey::parse(&s.vkey)?)))
        .collect::<anyhow::Result<_>>()?;
    let entries: Vec<Vec<u8>> = (0..10_000).map(|i| entry(tag, i)).collect();
    let (first, second) = entries.split_at(5_000);

    let sequenced = submit_all(grpc, first, Wait::Sequenced).await?;
    let published = submit_all(grpc, second, Wait::Published).await?;
    for (r, retried) in sequenced.iter().chain(&published) {
        anyhow::ensure!(
            !r.duplicate || *retried,
            "a new entry was reported as a duplicate"
        );
    }
    let sequenced: Vec<Submitted> = sequenced.into_iter().map(|(r, _)| r).collect();
    let published: Vec<Submitted> = published.into_iter().map(|(r, _)| r).collect();
    anyhow::ensure!(sequenced.len() == 5_000 && published.len() == 5_000);
    anyhow::ensure!(
        sequenced.iter().all(|r| r.proof.is_none()),
        "a sequenced ack carries a proof"
    );
    let mut at = HashMap::new();
    for (e, r) in entries.iter().zip(sequenced.iter().chain(&published)) {
        anyhow::ensure!(r.leaf_hash == leaf_hash(e), "wrong leaf hash");
        anyhow::ensure!(
            at.insert((r.shard, r.index), e.clone()).is_none(),
            "index {} given twice",
            r.index
        );
    }
    for (e, r) in second.iter().zip(&published) {
        let proof = r
            .tlog_proof()
            .ok_or_else(|| anyhow::anyhow!("published ack without a proof"))?;
        proof.verify(e, &keys[&r.shard], &[])?;
    }

    // Resubmit every 10th entry of both halves, some waiting for publication: original indexes come back.
    let again: Vec<Vec<u8>> = entries.iter().step_by(10).cloned().collect();
    let originals: Vec<&Submitted> = sequenced.iter().chain(&published).step_by(10).collect();
    for wait in [Wait::Sequenced, Wait::Published] {
        let dups: Vec<Submitted> = submit_all(grpc, &again, wait)
            .await?
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        anyhow::ensure!(dups.len() == again.len());
        for ((d, o), e) in dups.iter().zip(&originals).zip(&again) {
            anyhow::ensure!(d.duplicate, "a resubmitted entry was not reported as a duplicate");
            anyhow::ensure!(
                (d.shard, d.index) == (o.shard, o.index),
                "a duplicate got a new index"
            );
            if wait == Wait::Published {
                d.tlog_proof()
                    .ok_or_else(|| anyhow::anyhow!("no proof"))?
                    .verify(e, &keys[&d.shard], &[])?;
            }
        }
    }

    // The plain HTTP write path, `POST /logs/<id>/add`, on every server given (in a cluster, followers
    // and the gateway forward it): each entry lands in the shard it names, whatever the routing rule
    // would pick, and a repeat gets its original index.
    let site = HttpLog::new(http);
    let listing = site.shards().await?;
    let opaque: Vec<u32> = listing
        .iter()
        .filter(|s| s.kind == cairn_store::ShardKind::Opaque)
        .map(|s| s.id)
        .collect();
    let client = reqwest::Client::new();
    let mut added = 0;
    for (w, base) in http_writers.iter().enumerate() {
        for &shard in &opaque {
            // With several shards, an entry the routing rule would send to another one.
            let e = (0..)
                .map(|i| entry(&format!("{tag}-http-{w}-{shard}"), i))
                .find(|e| opaque.len() < 2 || routed(e, &opaque) != shard)
                .unwrap_or_default();
            let (index, dup) = http_add(&client, base, shard, &e).await?;
            anyhow::ensure!(!dup, "a new entry was reported as a duplicate");
            anyhow::ensure!(
                at.insert((shard, index), e.clone()).is_none(),
                "index {index} given twice"
            );
            anyhow::ensure!(http_add(&client, base, shard, &e).await? == (index, true));
            added += 1;
        }
    }

    // Everything is published once the checkpoints cover it; then the read path alone shows each entry
    // at the index it was acknowledged with.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut total = 0;
    for s in &listing {
        let expected = at.keys().filter(|(shard, _)| *shard == s.id).count() as u64;
        loop {
            let cp = site.checkpoint(s).await?;
            if cp.size >= expected {
                anyhow::ensure!(
                    cp.size == expected,
                    "shard {} holds more entries than were sent",
                    s.id
                );
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "shard {} not published in time", s.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let verified = site.verify_shard(s).await?;
        for (i, e) in verified.entries.iter().enumerate() {
            anyhow::ensure!(
                at.get(&(s.id, i as u64)) == Some(e),
                "shard {} entry {i} differs",
                s.id
            );
        }
        total += verified.entries.len();
        // Sequenced acks get their proofs later, from the API.
        let mut client = LogClient::new(&grpc[grpc.len() - 1])?;
        let size = verified.checkpoint.size;
        for i in (0..size).step_by(997) {
            let proof = client.inclusion_proof(s.id, i, size).await?;
            cairn_tlog::verify_inclusion(
                &leaf_hash(&verified.entries[i as usize]),
                i,
                size,
                &proof,
                &verified.checkpoint.root,
            )?;
        }
    }
    anyhow::ensure!(total == 10_000 + added, "the shards hold {total} entries");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_logs_and_proves_ten_thousand_entries() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start_loopback(dir.path())?;
    exercise(
        std::slice::from_ref(&server.grpc),
        std::slice::from_ref(&server.http),
        &server.http,
        "embedded",
    )
    .await?;
    anyhow::ensure!(
        server.stop()?.success(),
        "cairn serve did not exit cleanly on SIGTERM"
    );
    Ok(())
}

/// The session README shows: submit lines and a file, verify offline, a tampered entry fails; the key
/// is created 0600 and reused after a restart, and resubmissions after the restart are duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_session_submit_verify_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let server = Server::start_loopback(d)?;
    let vkey = server
        .vkeys
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no vkey printed"))?;

    let (ok, out, err) = cairn(
        d,
        &["submit", "--server", &server.grpc, "--lines"],
        Some(b"alpha\nbeta\n"),
    )?;
    anyhow::ensure!(ok, "submit --lines failed: {err}");
    let lines: Vec<serde_json::Value> = out.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    anyhow::ensure!(
        lines.len() == 2 && lines[0]["index"] == 0 && lines[1]["index"] == 1,
        "{out}"
    );

    std::fs::write(
        d.join("artifact.json"),
        b"{\"name\":\"demo\",\"version\":\"1.0.0\"}\n",
    )?;
    let (ok, out, err) = cairn(
        d,
        &[
            "submit",
            "--server",
            &server.grpc,
            "--wait",
            "published",
            "--proof-dir",
            "proofs",
            "artifact.json",
        ],
        None,
    )?;
    anyhow::ensure!(ok, "submit --wait published failed: {err}");
    let line: serde_json::Value = serde_json::from_str(out.trim())?;
    anyhow::ensure!(line["index"] == 2 && line["duplicate"] == false, "{out}");
    let proof = line["proof"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no proof path: {out}"))?
        .to_owned();

    let (ok, out, err) = cairn(
        d,
        &["verify", "--vkey", &vkey, "--proof", &proof, "artifact.json"],
        None,
    )?;
    anyhow::ensure!(
        ok && out.starts_with("OK: artifact.json is entry 2 of localhost/cairn/1"),
        "{out}{err}"
    );
    std::fs::write(
        d.join("forged.json"),
        b"{\"name\":\"demo\",\"version\":\"6.6.6\"}\n",
    )?;
    let (ok, _, err) = cairn(
        d,
        &["verify", "--vkey", &vkey, "--proof", &proof, "forged.json"],
        None,
    )?;
    anyhow::ensure!(!ok && err.contains("INVALID"), "a forged entry verified: {err}");
    let (ok, _, err) = cairn(
        d,
        &["verify", "--vkey", "nonsense", "--proof", &proof, "artifact.json"],
        None,
    )?;
    anyhow::ensure!(!ok && err.contains("verifier key"), "bad vkey: {err}");

    let (ok, out, _) = cairn(d, &["shard", "list", "--server", &server.grpc], None)?;
    anyhow::ensure!(
        ok && out.contains("\"state\":\"active\"") && out.contains(&vkey),
        "{out}"
    );

    anyhow::ensure!(server.stop()?.success(), "unclean exit");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("cairn-data/keys/shard-1.key"))?
            .permissions()
            .mode();
        anyhow::ensure!(mode & 0o777 == 0o600, "key file mode {:o}", mode & 0o777);
    }
    let server = Server::start_loopback(d)?;
    anyhow::ensure!(
        server.vkeys.first() == Some(&vkey),
        "the key changed across a restart"
    );
    let (ok, out, err) = cairn(d, &["submit", "--server", &server.grpc, "artifact.json"], None)?;
    let line: serde_json::Value = serde_json::from_str(out.trim())?;
    anyhow::ensure!(
        ok && line["index"] == 2 && line["duplicate"] == true,
        "{out}{err}"
    );

    // Freezing (allowed without a token only on the loopback default): the read path's shards.json
    // shows it at once, from the replicated state, and a frozen-only log refuses new entries.
    let (ok, _, err) = cairn(d, &["shard", "freeze", "--server", &server.grpc, "1"], None)?;
    anyhow::ensure!(ok, "freeze: {err}");
    let listing = HttpLog::new(&server.http).shards().await?;
    anyhow::ensure!(
        listing[0].id == 1 && listing[0].state == cairn_client::Lifecycle::Frozen,
        "{listing:?}"
    );
    // Shard 2, the Sigstore shard, is still active but takes only hashedrekord entries through the
    // Rekor v2 API: opaque entries have nowhere to go.
    anyhow::ensure!(
        listing[1].kind == cairn_store::ShardKind::Sigstore
            && listing[1].state == cairn_client::Lifecycle::Active,
        "{listing:?}"
    );
    std::fs::write(d.join("late.json"), b"{\"late\":true}\n")?;
    let (ok, _, err) = cairn(d, &["submit", "--server", &server.grpc, "late.json"], None)?;
    anyhow::ensure!(!ok && err.contains("frozen"), "a frozen log took an entry: {err}");

    // Archiving the configured shard, once its final checkpoint is as old as the cluster setting
    // archive_after_s, lowered at runtime through the control group.
    let settings = |grpc: &str| -> anyhow::Result<serde_json::Value> {
        let (ok, out, err) = cairn(d, &["cluster", "settings", "--json", "--server", grpc], None)?;
        anyhow::ensure!(ok, "cluster settings: {err}");
        Ok(serde_json::from_str::<serde_json::Value>(out.trim())?["settings"].clone())
    };
    let archive_after = &settings(&server.grpc)?["archive_after_s"];
    anyhow::ensure!(
        archive_after["value"] == "90" && archive_after["recorded"] == false,
        "archive_after_s before it was set: {archive_after}"
    );
    let archive = |grpc: &str| cairn(d, &["shard", "archive", "1", "--server", grpc], None);
    // Refused (the end of its validity may take a moment to be recorded), saying what to wait for.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, _, err) = archive(&server.grpc)?;
        anyhow::ensure!(!ok, "archived before archive_after_s passed");
        if err.contains("can be archived 90 s after (cluster setting archive_after_s)") {
            break;
        }
        anyhow::ensure!(
            err.contains("not recorded yet") && Instant::now() < deadline,
            "archive: {err}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (args, says) in [
        (&["publish_interval_ms", "0"][..], "between 1 and 10000"),
        (&["archive_after", "0"][..], "archive_after_s"),
        (&["schedule", "off"][..], "`paused`"),
    ] {
        let mut argv = vec!["cluster", "set", "--server", &server.grpc];
        argv.extend_from_slice(args);
        let (ok, _, err) = cairn(d, &argv, None)?;
        anyhow::ensure!(!ok && err.contains(says), "cluster set {args:?}: {err}");
    }
    let (ok, _, err) = cairn(
        d,
        &["cluster", "set", "--server", &server.grpc, "archive_after_s", "0"],
        None,
    )?;
    anyhow::ensure!(ok, "cluster set: {err}");
    let archive_after = &settings(&server.grpc)?["archive_after_s"];
    anyhow::ensure!(
        archive_after["value"] == "0" && archive_after["recorded"] == true,
        "archive_after_s once set: {archive_after}"
    );
    let (ok, _, err) = archive(&server.grpc)?;
    anyhow::ensure!(ok, "archive: {err}");
    let hosted = |grpc: &str| -> anyhow::Result<Vec<u64>> {
        let (ok, out, err) = cairn(d, &["cluster", "status", "--json", "--server", grpc], None)?;
        anyhow::ensure!(ok, "cluster status: {err}");
        let status: serde_json::Value = serde_json::from_str(out.trim())?;
        Ok(status["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g["shard"].as_u64())
            .collect())
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while hosted(&server.grpc)?.contains(&1) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "shard 1's group still runs 5 s after it was archived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Served from object storage alone: listed frozen and archived, every entry verified from its
    // tiles against its checkpoint; and still so after a restart, which does not start its group.
    let (ok, _, err) = archive(&server.grpc)?;
    anyhow::ensure!(ok, "repeated archive: {err}");
    anyhow::ensure!(server.stop()?.success(), "unclean exit");
    let server = Server::start_loopback(d)?;
    anyhow::ensure!(
        !hosted(&server.grpc)?.contains(&1),
        "a restart started the archived shard's group"
    );
    let http = HttpLog::new(&server.http);
    let listing = http.shards().await?;
    let s1 = listing
        .iter()
        .find(|l| l.id == 1)
        .ok_or_else(|| anyhow::anyhow!("shard 1 is not listed: {listing:?}"))?;
    anyhow::ensure!(
        s1.state == cairn_client::Lifecycle::Frozen && s1.archived,
        "shard 1 after archiving: {s1:?}"
    );
    let verified = http.verify_shard(s1).await?;
    anyhow::ensure!(
        verified.checkpoint.size == 3 && verified.entries.len() == 3,
        "the archived shard holds {} entries (checkpoint {})",
        verified.entries.len(),
        verified.checkpoint.size
    );
    let (ok, _, err) = cairn(d, &["submit", "--server", &server.grpc, "late.json"], None)?;
    anyhow::ensure!(
        !ok && err.contains("frozen"),
        "an archived log took an entry: {err}"
    );
    // The setting outlived the restart; unset, the node's configured value applies again.
    anyhow::ensure!(settings(&server.grpc)?["archive_after_s"]["recorded"] == true);
    let (ok, _, err) = cairn(
        d,
        &["cluster", "unset", "--server", &server.grpc, "archive_after_s"],
        None,
    )?;
    anyhow::ensure!(ok, "cluster unset: {err}");
    let archive_after = &settings(&server.grpc)?["archive_after_s"];
    anyhow::ensure!(
        archive_after["value"] == "90" && archive_after["recorded"] == false,
        "archive_after_s once unset: {archive_after}"
    );
    anyhow::ensure!(server.stop()?.success(), "unclean exit");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_cluster_logs_and_proves_ten_thousand_entries() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    // Two shards, keys made with `cairn keygen` and shared by every sequencer.
    let (shards, _) = keygen_shards(d, "cluster.test", 2, true)?;
    let (ports, peers) = cluster_ports(3)?;
    let mut servers = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let (node_dir, path) = node_config(d, i + 1, *p, "", "", &format!("{peers}{shards}"))?;
        servers.push(Server::start(
            &node_dir,
            &["--config", &path.display().to_string()],
        )?);
    }
    // A gateway without a sequencer: the log API forwards to the leaders it finds among the peers, and
    // the read path serves the shared store.
    let gateway_dir = d.join("gateway");
    std::fs::create_dir_all(&gateway_dir)?;
    let node1_config = d.join("node-1/cairn.toml").display().to_string();
    let gateway = Server::start(
        &gateway_dir,
        &[
            "--config",
            &node1_config,
            "--roles",
            "log,tiles",
            "--data-dir",
            &gateway_dir.display().to_string(),
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ],
    )?;
    // Writes go to the gateway and to two nodes: followers forward each shard's share to its leader.
    let grpc = vec![
        gateway.grpc.clone(),
        servers[1].grpc.clone(),
        servers[2].grpc.clone(),
    ];
    let http_writers: Vec<String> = std::iter::once(&gateway)
        .chain(&servers)
        .map(|s| s.http.clone())
        .collect();
    exercise(&grpc, &http_writers, &gateway.http, "cluster").await?;

    // Shard 1 frozen through node 1: the gateway, which runs no sequencer, learns it from the
    // sequencers' listing and routes every new entry to shard 2.
    let (ok, _, err) = cairn(d, &["shard", "freeze", "--server", &servers[0].grpc, "1"], None)?;
    anyhow::ensure!(ok, "freeze: {err}");
    let mut client = LogClient::with_servers(std::slice::from_ref(&gateway.grpc))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shards = client.shards().await?;
        if shards.iter().any(|s| s.id == 1 && s.state == "frozen") {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gateway lists {shards:?} 10 s after shard 1 was frozen"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines: String = (0..20).map(|i| format!("after the freeze {i}\n")).collect();
    let (ok, out, err) = cairn(
        d,
        &["submit", "--server", &gateway.grpc, "--lines"],
        Some(lines.as_bytes()),
    )?;
    anyhow::ensure!(ok, "submit through the gateway after the freeze: {err}");
    let shards: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).map(|v| v["shard"].clone()))
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(
        shards.len() == 20 && shards.iter().all(|s| *s == 2),
        "entries went to shards {shards:?}"
    );
    anyhow::ensure!(gateway.stop()?.success(), "unclean exit");
    for s in servers {
        anyhow::ensure!(s.stop()?.success(), "unclean exit");
    }
    Ok(())
}
