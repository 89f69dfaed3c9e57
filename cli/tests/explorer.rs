//! The web explorer in a real browser (Debian's Chromium, driven by playwright-core from
//! `tile-server/explorer/test/browser.mjs`) against the real binary.
//!
//! A Sigstore shard gets hashedrekord entries from several identities (`load_entries.py`: three
//! Fulcio-profile identities from two issuers, plain keys, and a certificate from an untrusted CA
//! that claims one of the identities), the opaque shard a few lines. In the browser: the shard list
//! shows every shard with its checkpoint verified; a search by digest and one by identity and issuer,
//! typed into the page's form, list exactly the entries the ground truth says (all pages); an entry
//! opened from the results shows the decoded identity, issuer and digest of the ground truth and a
//! "verified" result computed in the page, and that a CA of the trusted root issued its certificate,
//! while a certificate claiming the same identity from a CA nobody trusts is flagged; an opaque entry
//! reached by deep link verifies; on a phone the entry view needs no horizontal scrolling. Served through a proxy that alters one hash in a
//! tile, the same entry shows "failed", at the inclusion-proof step. No request leaves the server's
//! origin and no script error occurs. Screenshots of the main views are kept in
//! `$CARGO_TARGET_TMPDIR/explorer` (README links copies of them).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{SigstoreLog, Tools, cairn, load_entries, required, sigstore_python, start_sigstore_log_with};

/// Chromium and playwright-core (scripts/browser.sh).
const BROWSER: Tools = Tools {
    require: "CAIRN_REQUIRE_BROWSER",
    installer: "scripts/browser.sh",
};

/// Every index the search API returns for `query` (all pages), once nothing is pending.
async fn search_all(http: &str, query: &[(&str, &str)]) -> anyhow::Result<(BTreeSet<u64>, bool)> {
    let client = reqwest::Client::new();
    let mut found = BTreeSet::new();
    let mut token: Option<String> = None;
    loop {
        let mut params: Vec<(&str, &str)> = query.to_vec();
        params.push(("limit", "7"));
        if let Some(t) = &token {
            params.push(("page_token", t));
        }
        let body = client
            .get(reqwest::Url::parse_with_params(
                &format!("{http}/api/v1/search"),
                &params,
            )?)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let page: serde_json::Value = serde_json::from_slice(&body)?;
        for r in page["results"].as_array().into_iter().flatten() {
            found.insert(r["logIndex"].as_u64().unwrap_or(u64::MAX));
        }
        if page["pending"] == true {
            return Ok((found, true));
        }
        match page["nextPageToken"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => return Ok((found, false)),
        }
    }
}

/// Polls the search API until `query` answers `want`, nothing pending.
async fn wait_for_index(http: &str, query: &[(&str, &str)], want: &BTreeSet<u64>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (got, pending) = search_all(http, query).await?;
        if !pending && &got == want {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "search {query:?}: {} results (pending {pending}), want {}",
            got.len(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A read path in front of `upstream` that serves everything unchanged except level-0 hash tiles of
/// shard 2, in which the hash of leaf `sibling` (the proof's first hash for its neighbour) is altered.
async fn tampering_proxy(upstream: String, sibling: u64) -> anyhow::Result<common::Proxy> {
    let tile = format!("/logs/2/tile/0/{:03}", sibling / 256);
    common::rewriting_proxy(upstream, move |path, body| {
        if (path == tile || path.starts_with(&format!("{tile}.p/")))
            && let Some(b) = body.get_mut((sibling % 256) as usize * 32)
        {
            *b ^= 0x01;
        }
    })
    .await
}

fn node() -> PathBuf {
    std::env::var_os("CAIRN_NODE").map_or_else(|| PathBuf::from("node"), PathBuf::from)
}

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tile-server/explorer/test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explorer_in_chromium_searches_shows_and_verifies_entries() -> anyhow::Result<()> {
    let Some(python) = sigstore_python()? else {
        return Ok(());
    };
    let Some(chromium) = required("CAIRN_CHROMIUM", BROWSER)? else {
        return Ok(());
    };
    anyhow::ensure!(
        tests_dir().join("node_modules/playwright-core").exists(),
        "playwright-core is not installed in {} (run scripts/browser.sh)",
        tests_dir().display()
    );
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let SigstoreLog { server, .. } = start_sigstore_log_with(d, &python, &["search"])?;
    let truth = load_entries(&python, d, &server.http, "200", "11", "load.json")?;
    let entries = truth["entries"].as_array().cloned().unwrap_or_default();
    anyhow::ensure!(
        entries.len() == 200,
        "load_entries logged {} entries",
        entries.len()
    );

    let (ok, _, err) = cairn(
        d,
        &[
            "submit",
            "--server",
            &server.grpc,
            "--lines",
            "--wait",
            "published",
        ],
        Some(b"first opaque line\nsecond opaque line\nthird opaque line\n"),
    )?;
    anyhow::ensure!(ok, "cairn submit: {err}");

    // The case: an entry by alice@cairn.test from https://oidc.cairn.test (a trusted certificate).
    let pick = entries
        .iter()
        .rev()
        .find(|e| {
            e["identity"] == "alice@cairn.test"
                && e["issuer"] == "https://oidc.cairn.test"
                && e["trusted"] == true
        })
        .ok_or_else(|| anyhow::anyhow!("no entry by alice in the ground truth"))?;
    let index = pick["index"].as_u64().unwrap_or(u64::MAX);
    let digest_hex = pick["digest"].as_str().unwrap_or_default();
    let digest = format!("sha256:{digest_hex}");
    // An entry whose certificate claims alice but was made by a CA nobody trusts.
    let spoof = entries
        .iter()
        .find(|e| e["signer"] == "spoof")
        .and_then(|e| e["index"].as_u64())
        .ok_or_else(|| anyhow::anyhow!("no spoofed entry in the ground truth"))?;
    let by_identity: BTreeSet<u64> = entries
        .iter()
        .filter(|e| e["identity"] == "alice@cairn.test" && e["issuer"] == "https://oidc.cairn.test")
        .filter_map(|e| e["index"].as_u64())
        .collect();
    let by_digest: BTreeSet<u64> = entries
        .iter()
        .filter(|e| e["digest"] == digest_hex)
        .filter_map(|e| e["index"].as_u64())
        .collect();
    // Several pages in the browser (50 results a page), and the spoofed certificate among them.
    anyhow::ensure!(
        by_identity.len() > 50,
        "only {} entries by alice",
        by_identity.len()
    );
    wait_for_index(
        &server.http,
        &[
            ("identity", "alice@cairn.test"),
            ("issuer", "https://oidc.cairn.test"),
        ],
        &by_identity,
    )
    .await?;
    wait_for_index(&server.http, &[("digest", &digest)], &by_digest).await?;

    // The tampered copy alters the hash of the entry's neighbour in its level-0 tile.
    let proxy = tampering_proxy(server.http.clone(), index ^ 1).await?;
    let tampered = proxy.url.clone();

    let cases = serde_json::json!({
        "digest": digest,
        "identity": "alice@cairn.test",
        "issuer": "https://oidc.cairn.test",
        "entry": {"shard": 2, "index": index},
        "opaque": {"shard": 1, "index": 1},
        "spoof": {"shard": 2, "index": spoof},
        "tampered": {"shard": 2, "index": index},
    });
    let cases_path = d.join("cases.json");
    std::fs::write(&cases_path, serde_json::to_vec(&cases)?)?;
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("explorer");
    let out = std::process::Command::new(node())
        .arg(tests_dir().join("browser.mjs"))
        .args(["--chromium".as_ref(), chromium.as_os_str()])
        .args(["--url", &server.http, "--tampered", &tampered])
        .args([
            "--cases".as_ref(),
            cases_path.as_os_str(),
            "--out".as_ref(),
            out_dir.as_os_str(),
        ])
        .current_dir(tests_dir())
        .output()?;
    drop(proxy);
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "browser.mjs: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim())?;
    anyhow::ensure!(
        report["failure"].is_null(),
        "the browser run failed: {}",
        report["failure"]
    );
    println!(
        "first view {} ms (DOMContentLoaded {} ms, load {} ms; measured, not asserted); screenshots in {}",
        report["firstViewMs"],
        report["navigation"]["domContentLoadedMs"],
        report["navigation"]["loadMs"],
        out_dir.display()
    );

    let empty = Vec::new();
    let errors = report["errors"].as_array().unwrap_or(&empty);
    anyhow::ensure!(errors.is_empty(), "errors in the page: {errors:?}");
    let foreign = report["foreign"].as_array().unwrap_or(&empty);
    anyhow::ensure!(foreign.is_empty(), "requests to other origins: {foreign:?}");
    anyhow::ensure!(
        report["home"]["classicScripts"] == 0 && report["home"]["moduleScripts"] == 1,
        "scripts: {}",
        report["home"]
    );
    anyhow::ensure!(
        report["home"]["shards"] == 2 && report["home"]["verifiedCheckpoints"] == 2,
        "shard list: {}",
        report["home"]
    );

    let indexes = |v: &serde_json::Value| -> anyhow::Result<BTreeSet<u64>> {
        let mut set = BTreeSet::new();
        for r in v.as_array().into_iter().flatten() {
            anyhow::ensure!(r["shard"] == 2, "result outside shard 2: {r}");
            anyhow::ensure!(
                set.insert(r["index"].as_u64().unwrap_or(u64::MAX)),
                "listed twice: {r}"
            );
        }
        Ok(set)
    };
    anyhow::ensure!(
        indexes(&report["digestResults"])? == by_digest,
        "digest search: {}",
        report["digestResults"]
    );
    anyhow::ensure!(
        indexes(&report["identityResults"])? == by_identity,
        "identity search found {} entries, want {}",
        report["identityResults"].as_array().map_or(0, Vec::len),
        by_identity.len()
    );

    let entry = &report["entry"];
    anyhow::ensure!(
        report["entryHash"]
            .as_str()
            .is_some_and(|h| h.starts_with(&format!("#/shard/2/entry/{index}?leaf="))),
        "deep link {}",
        report["entryHash"]
    );
    // Opened from the search results: the page checked it is the entry the result showed.
    anyhow::ensure!(
        entry["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["ok"] == true
                && s["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("Same entry as the search result"))),
        "no check against the search result: {entry}"
    );
    anyhow::ensure!(entry["verification"] == "verified", "entry: {entry}");
    anyhow::ensure!(
        entry["identity"] == "alice@cairn.test",
        "identity: {}",
        entry["identity"]
    );
    anyhow::ensure!(
        entry["issuer"] == "https://oidc.cairn.test",
        "issuer: {}",
        entry["issuer"]
    );
    anyhow::ensure!(entry["digest"] == digest.as_str(), "digest: {}", entry["digest"]);
    anyhow::ensure!(
        entry["fingerprint"] == pick["fingerprint"],
        "fingerprint: {}",
        entry["fingerprint"]
    );
    anyhow::ensure!(
        entry["chain"] == "verified",
        "alice's certificate chain: {}",
        entry["chain"]
    );
    // The spoofed certificate is in the log (its inclusion verifies) and claims the same identity,
    // but the page says no trusted CA issued it.
    let spoofed = &report["spoof"];
    anyhow::ensure!(
        spoofed["verification"] == "verified"
            && spoofed["identity"] == "alice@cairn.test"
            && spoofed["chain"] == "failed",
        "spoofed certificate: {spoofed}"
    );

    let newest = entries.len() as u64 - 1;
    let rows: Vec<u64> = report["shardRows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    anyhow::ensure!(
        rows.first() == Some(&newest) && rows.len() == 25,
        "latest entries: {rows:?}"
    );

    let opaque = &report["opaque"];
    anyhow::ensure!(opaque["verification"] == "verified", "opaque entry: {opaque}");
    anyhow::ensure!(
        opaque["body"]
            .as_str()
            .is_some_and(|b| b.contains("second opaque line")),
        "opaque body: {}",
        opaque["body"]
    );

    anyhow::ensure!(
        report["phone"]["verification"] == "verified",
        "phone: {}",
        report["phone"]
    );
    anyhow::ensure!(
        report["phone"]["scrollWidth"].as_u64() <= report["phone"]["viewportWidth"].as_u64(),
        "the phone view scrolls sideways: {}",
        report["phone"]
    );

    // A lying shards.json after the first visit: a look-alike origin with another key is refused at
    // the pinned-key step; a shard relabelled as Sigstore is flagged and still shown as opaque.
    let look_alike = &report["lookAlike"];
    anyhow::ensure!(
        look_alike["verification"] == "failed"
            && look_alike["steps"][0]["ok"] == false
            && look_alike["steps"][0]["text"]
                .as_str()
                .is_some_and(|t| t.contains("Pinned key")),
        "look-alike origin: {look_alike}"
    );
    let relabelled = &report["relabelled"];
    anyhow::ensure!(
        relabelled["alert"]
            .as_str()
            .is_some_and(|a| a.contains("pinned as opaque"))
            && relabelled["identity"].is_null()
            && relabelled["body"]
                .as_str()
                .is_some_and(|b| b.contains("second opaque line")),
        "relabelled shard: {relabelled}"
    );

    let t = &report["tampered"];
    anyhow::ensure!(t["verification"] == "failed", "tampered tile, yet: {t}");
    let failed: Vec<&str> = t["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["ok"] == false)
        .filter_map(|s| s["text"].as_str())
        .collect();
    anyhow::ensure!(
        failed.len() == 1 && failed[0].contains("Inclusion proof"),
        "failed steps: {failed:?}"
    );
    Ok(())
}
