//! Search with proofs, against a brute-force scan of the log.
//!
//! A Sigstore shard gets a few thousand hashedrekord entries (`load_entries.py`: Fulcio-profile
//! identities from two issuers, plain keys). The search role of the same process, and a separate
//! search-only process that is SIGKILLed while it catches up and then restarted, must both return
//! every match of every query (digest, identity with and without issuer, certificate and key
//! fingerprints), compared with what a full, verified scan of the log finds; `cairn search` checks
//! every result's checkpoint and inclusion proof (exit 0), and paging is stable while the log grows.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use cairn_client::watch::Claims;
use cairn_sigstore::certificate::hex;
use common::{LOOPBACK, Server, SigstoreLog, sigstore_python, start_sigstore_log_with};
use sha2::Digest;

/// Query (as `cairn search` flags) → the indexes a brute-force scan finds.
fn brute_force(entries: &[Vec<u8>]) -> anyhow::Result<BTreeMap<Vec<String>, BTreeSet<u64>>> {
    let mut want: BTreeMap<Vec<String>, BTreeSet<u64>> = BTreeMap::new();
    for (i, body) in entries.iter().enumerate() {
        let i = i as u64;
        let c = Claims::of_body(body).map_err(anyhow::Error::msg)?;
        let mut add = |q: Vec<&str>| {
            want.entry(q.into_iter().map(str::to_owned).collect())
                .or_default()
                .insert(i);
        };
        add(vec!["--fingerprint", &c.fingerprint]);
        if let Some(cert) = &c.certificate {
            let key_fp = hex(&sha2::Sha256::digest(cert.key.spki()));
            add(vec!["--fingerprint", &key_fp]);
            for san in &cert.sans {
                add(vec!["--identity", san]);
                if let Some(issuer) = &cert.issuer {
                    add(vec!["--identity", san, "--issuer", issuer]);
                }
            }
        }
        if i.is_multiple_of(97) {
            add(vec!["--digest", &format!("sha256:{}", hex(&c.digest))]);
        }
    }
    Ok(want)
}

/// `cairn search ARGS --json` against `url`: the indexes returned, all verified (exit 0).
fn cairn_search(dir: &Path, url: &str, log_url: &str, query: &[String]) -> anyhow::Result<BTreeSet<u64>> {
    let out = std::process::Command::new(common::BIN)
        .args(["search", "--url", url, "--log-url", log_url, "--json"])
        .args(query)
        .current_dir(dir)
        .output()?;
    let stdout = String::from_utf8(out.stdout)?;
    anyhow::ensure!(
        out.status.success(),
        "cairn search {query:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut found = BTreeSet::new();
    for line in stdout.lines() {
        let r: serde_json::Value = serde_json::from_str(line)?;
        anyhow::ensure!(r["verified"] == true, "{r}");
        anyhow::ensure!(
            found.insert(r["logIndex"].as_u64().unwrap_or(u64::MAX)),
            "returned twice: {r}"
        );
    }
    Ok(found)
}

/// Polls until the search server at `url` answers `query` with `count` results.
fn wait_for(dir: &Path, url: &str, log_url: &str, query: &[String], count: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = cairn_search(dir, url, log_url, query)
            .map(|f| f.len())
            .unwrap_or(0);
        if got == count {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{query:?}: {got} of {count} results after 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn page_json(url: &str, query: &str, token: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let mut u = format!("{url}/api/v1/search?{query}&limit=7");
    if let Some(t) = token {
        u.push_str(&format!("&page_token={t}"));
    }
    Ok(serde_json::from_slice(&reqwest::get(u).await?.bytes().await?)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_every_match_with_proofs() -> anyhow::Result<()> {
    let Some(python) = sigstore_python()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let SigstoreLog { server, .. } = start_sigstore_log_with(d, &python, &["search"])?;
    let load = |count: &str, seed: &str, out: &str| {
        common::load_entries(&python, d, &server.http, count, seed, out).map(|_| ())
    };
    // A separate indexer of the same log, started before the entries arrive and SIGKILLed while
    // they do (it has indexed part of the log), then restarted once they are all in.
    let other = d.join("indexer");
    std::fs::create_dir_all(&other)?;
    std::fs::write(
        other.join("cairn.toml"),
        format!(
            "data_dir = \"{}\"\nroles = [\"search\"]\n\n[search]\nlog_url = \"{}\"\ninterval_ms = 100\n",
            other.display(),
            server.http
        ),
    )?;
    let config = other.join("cairn.toml").display().to_string();
    let mut args = vec!["--config", config.as_str()];
    args.extend(LOOPBACK);
    let indexer = Server::start(&other, &args)?;
    let probe_query: Vec<String> = [
        "--identity",
        "alice@cairn.test",
        "--issuer",
        "https://oidc.cairn.test",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let seen_at_kill = std::thread::scope(|scope| -> anyhow::Result<usize> {
        let loading = scope.spawn(|| load("2000", "1", "load-1.json"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let seen = loop {
            let n = cairn_search(d, &indexer.http, &server.http, &probe_query)
                .map(|f| f.len())
                .unwrap_or(0);
            if n > 0 {
                break n;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the separate indexer answered nothing in 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        indexer.signal("KILL")?;
        loading
            .join()
            .map_err(|_| anyhow::anyhow!("the load panicked"))??;
        Ok(seen)
    })?;
    indexer.kill()?;

    let (_, entries) = common::sigstore_entries(&server.http, 2000).await?;
    anyhow::ensure!(entries.len() == 2000, "{} entries", entries.len());
    let want = brute_force(&entries)?;
    let probe = want
        .get(&probe_query)
        .ok_or_else(|| anyhow::anyhow!("no entry by {probe_query:?} in the load"))?;
    anyhow::ensure!(
        seen_at_kill < probe.len(),
        "the indexer was not killed mid-way: {seen_at_kill} of {}",
        probe.len()
    );
    eprintln!(
        "indexer killed with {seen_at_kill} of {} results for {probe_query:?}",
        probe.len()
    );
    let indexer = Server::start(&other, &args)?;

    // Both indexers: every query returns exactly the brute-force answer, every result verified.
    for url in [&server.http, &indexer.http] {
        wait_for(d, url, &server.http, &probe_query, probe.len())?;
        for (query, indexes) in &want {
            let got = cairn_search(d, url, &server.http, query)?;
            anyhow::ensure!(
                &got == indexes,
                "{url} {query:?}: got {} results, brute force {}",
                got.len(),
                indexes.len()
            );
        }
    }

    // With the trusted root, results whose certificate is self-made (the load's spoofed signer,
    // which claims alice's identity) are marked, and only those.
    let (fetched, _, stderr) = common::cairn(
        d,
        &["trust", "--url", &server.http, "--out", &d.display().to_string()],
        None,
    )?;
    anyhow::ensure!(fetched, "cairn trust: {stderr}");
    let out = std::process::Command::new(common::BIN)
        .args(["search", "--url", &server.http, "--json", "--trusted-root"])
        .arg(d.join("trusted_root.json"))
        .args(&probe_query)
        .output()?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let truth: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("load-1.json"))?)?;
    let spoofed: BTreeSet<u64> = truth["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["trusted"] == false)
        .filter_map(|e| e["index"].as_u64())
        .collect();
    let mut untrusted = BTreeSet::new();
    for line in String::from_utf8(out.stdout)?.lines() {
        let r: serde_json::Value = serde_json::from_str(line)?;
        anyhow::ensure!(r["certificateTrusted"].is_boolean(), "{r}");
        if r["certificateTrusted"] == false {
            untrusted.insert(r["logIndex"].as_u64().unwrap_or(u64::MAX));
        }
    }
    anyhow::ensure!(
        !untrusted.is_empty() && untrusted == spoofed,
        "marked {} results untrusted, the load spoofed {}",
        untrusted.len(),
        spoofed.len()
    );

    // Paging stays stable while the log grows: pages taken before, during and after more entries
    // are logged give every earlier match once, in order.
    let identity = &probe_query[1];
    let issuer = &probe_query[3];
    let query = format!("identity={}&issuer={}", url_escape(identity), url_escape(issuer));
    let first = page_json(&server.http, &query, None).await?;
    let mut seen: Vec<u64> = first["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["logIndex"].as_u64())
        .collect();
    let mut token = first["nextPageToken"].as_str().map(str::to_owned);
    load("300", "2", "load-2.json")?;
    while let Some(t) = token {
        let page = page_json(&server.http, &query, Some(&t)).await?;
        seen.extend(
            page["results"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["logIndex"].as_u64()),
        );
        token = page["nextPageToken"].as_str().map(str::to_owned);
        if page["pending"] == true {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    anyhow::ensure!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "pages out of order or repeated"
    );
    let seen: BTreeSet<u64> = seen.into_iter().collect();
    anyhow::ensure!(probe.is_subset(&seen), "paging lost matches while the log grew");

    // Bad queries are refused with a message that says what to fix.
    let reply = reqwest::get(format!("{}/api/v1/search?digest=md5:00", server.http)).await?;
    anyhow::ensure!(reply.status() == 400);
    let body: serde_json::Value = serde_json::from_slice(&reply.bytes().await?)?;
    anyhow::ensure!(
        body["error"].as_str().is_some_and(|e| e.contains("sha256")),
        "{body}"
    );

    anyhow::ensure!(indexer.stop()?.success(), "unclean indexer exit");
    anyhow::ensure!(server.stop()?.success(), "unclean exit");
    Ok(())
}

fn url_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
