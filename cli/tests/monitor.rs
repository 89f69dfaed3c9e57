//! `cairn monitor` on a live Sigstore shard: it catches up on a log of a few thousand hashedrekord
//! entries (three Fulcio-profile identities from two issuers, two plain keys, and a certificate from
//! an untrusted CA that claims a watched identity), alerts exactly once for each entry the watch list
//! (rekor-monitor's format) matches and for no other, survives a restart without alerting again,
//! alerts only for new entries after more are logged, and raises a consistency alert (exit 1 in
//! `--once` mode) when a forked copy of the log (same key, another history) is served to it, when the
//! site's `shards.json` names another key for the shard, and when it drops the shard. Alerts
//! also reach a webhook, the same ones as on stdout. Following the logs a trusted root names (no
//! `--log-url`) raises the same alerts; running continuously, `/metrics` counts entries and alerts.
//!
//! The entries come from `clients/sigstore-python/load_entries.py`, whose ground truth (signer of
//! every index) the alerts are checked against; the log itself is also scanned by brute force to
//! check that ground truth.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::{SigstoreLog, cairn, sigstore_python, start_sigstore_log};

const WATCH: &str = r#"# rekor-monitor's configuration format
monitoredValues:
  certIdentities:
    - certSubject: '^alice@cairn\.test$'
      issuers:
        - '^https://oidc\.cairn\.test$'
  subjects:
    - '^carol@'
  fingerprints:
    - FINGERPRINT
"#;

/// The (index, match type) pairs the watch list must raise for `entries` of a ground-truth file.
fn expected(truth: &serde_json::Value, key_fingerprint: &str) -> BTreeSet<(u64, String)> {
    let mut out = BTreeSet::new();
    for e in truth["entries"].as_array().into_iter().flatten() {
        let index = e["index"].as_u64().unwrap_or(u64::MAX);
        if e["trusted"] == false {
            continue;
        }
        if e["identity"] == "alice@cairn.test" && e["issuer"] == "https://oidc.cairn.test" {
            out.insert((index, "certIdentity".to_owned()));
        }
        if e["identity"].as_str().is_some_and(|i| i.starts_with("carol@")) {
            out.insert((index, "subject".to_owned()));
        }
        if e["fingerprint"] == key_fingerprint {
            out.insert((index, "fingerprint".to_owned()));
        }
    }
    out
}

/// Runs `cairn monitor ARGS --once`: (exit code, alerts); stderr is printed.
fn monitor_once(dir: &Path, args: &[&str]) -> anyhow::Result<(Option<i32>, Vec<serde_json::Value>)> {
    let out = std::process::Command::new(common::BIN)
        .arg("monitor")
        .args(args)
        .arg("--once")
        .current_dir(dir)
        .output()?;
    let stdout = String::from_utf8(out.stdout)?;
    eprintln!(
        "monitor --once: {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let alerts = stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<Vec<serde_json::Value>, _>>()
        .map_err(|e| anyhow::anyhow!("{e}: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr)))?;
    Ok((out.status.code(), alerts))
}

fn matches(alerts: &[serde_json::Value]) -> anyhow::Result<BTreeSet<(u64, String)>> {
    let mut seen = BTreeSet::new();
    for a in alerts {
        anyhow::ensure!(a["type"] != "consistency", "unexpected consistency alert: {a}");
        let key = (
            a["index"].as_u64().unwrap_or(u64::MAX),
            a["type"].as_str().unwrap_or_default().to_owned(),
        );
        anyhow::ensure!(seen.insert(key.clone()), "alerted twice: {key:?}");
    }
    Ok(seen)
}

type Received = std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>;

/// A webhook receiver on loopback: its URL and what it was sent, in order.
async fn webhook() -> anyhow::Result<(String, Received)> {
    let received = Received::default();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(move |body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                if let Ok(v) = serde_json::from_slice(&body) {
                    store
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(v);
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/alerts", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, received))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_alerts_once_per_match_and_on_a_fork() -> anyhow::Result<()> {
    let Some(python) = sigstore_python()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let dir_arg = d.display().to_string();
    let SigstoreLog { server, .. } = start_sigstore_log(d, &python)?;
    let load =
        |count: &str, seed: &str, out: &str| common::load_entries(&python, d, &server.http, count, seed, out);
    let first = load("2000", "1", "load-1.json")?;
    let key_fingerprint = first["signers"]["key-1"]["fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    anyhow::ensure!(key_fingerprint.len() == 64, "{}", first["signers"]);

    // The ground truth agrees with a brute-force scan of the verified log.
    let (_, entries) = common::sigstore_entries(&server.http, 2000).await?;
    anyhow::ensure!(entries.len() == 2000, "{} entries", entries.len());
    let truth: BTreeMap<u64, String> = first["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["index"].as_u64().unwrap_or(u64::MAX),
                e["fingerprint"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for (i, body) in entries.iter().enumerate() {
        let claims = cairn_client::watch::Claims::of_body(body).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            truth.get(&(i as u64)) == Some(&claims.fingerprint),
            "entry {i}: ground truth disagrees"
        );
    }

    std::fs::write(
        d.join("watch.yaml"),
        WATCH.replace("FINGERPRINT", &key_fingerprint),
    )?;
    let root = d.join("trusted_root.json");
    let (fetched, _, stderr) = cairn(d, &["trust", "--url", &server.http, "--out", &dir_arg], None)?;
    anyhow::ensure!(fetched, "cairn trust: {stderr}");
    let root = root.display().to_string();
    let args = [
        "--log-url",
        server.http.as_str(),
        "--trusted-root",
        &root,
        "--watch",
        "watch.yaml",
        "--state",
        "state.json",
    ];

    // Catch up: exactly the expected alerts, each once; the spoofed certificate raises none. The
    // same alerts reach a webhook.
    let (hook_url, received) = webhook().await?;
    let mut with_hook: Vec<&str> = args.to_vec();
    with_hook.extend(["--webhook", hook_url.as_str()]);
    let (code, alerts) = monitor_once(d, &with_hook)?;
    let posted = received
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    anyhow::ensure!(
        posted == alerts,
        "the webhook got {} alerts, stdout {}",
        posted.len(),
        alerts.len()
    );
    anyhow::ensure!(code == Some(0), "exit {code:?} after {} alerts", alerts.len());
    let want = expected(&first, &key_fingerprint);
    anyhow::ensure!(
        want.len() > 100,
        "too few watched entries in the load: {}",
        want.len()
    );
    let got = matches(&alerts)?;
    anyhow::ensure!(
        got == want,
        "alerts differ: missing {:?}, extra {:?}",
        want.difference(&got).take(5).collect::<Vec<_>>(),
        got.difference(&want).take(5).collect::<Vec<_>>()
    );

    // A restart alerts nothing again.
    let (code, alerts) = monitor_once(d, &args)?;
    anyhow::ensure!(
        code == Some(0) && alerts.is_empty(),
        "after a restart: exit {code:?}, {alerts:?}"
    );

    // New entries: only their matches.
    let second = load("300", "2", "load-2.json")?;
    common::sigstore_entries(&server.http, 2300).await?;
    let (code, alerts) = monitor_once(d, &args)?;
    anyhow::ensure!(code == Some(0), "exit {code:?}");
    let want = expected(&second, &key_fingerprint);
    anyhow::ensure!(!want.is_empty() && want.iter().all(|(i, _)| *i >= 2000));
    anyhow::ensure!(matches(&alerts)? == want, "second round: {alerts:?}");

    // A forked copy: the same shard key signs a log that shares the first 1000 entries and then
    // differs; served by a test server, it must raise a consistency alert and exit 1.
    let fork = common::fork_server(d, &server, &entries[..1000], 2600).await?;
    let fork_args: Vec<&str> = args
        .iter()
        .map(|a| {
            if *a == server.http.as_str() {
                fork.url.as_str()
            } else {
                a
            }
        })
        .collect();
    let (code, alerts) = monitor_once(d, &fork_args)?;
    anyhow::ensure!(
        code == Some(1),
        "the fork was not refused: exit {code:?}, {alerts:?}"
    );
    anyhow::ensure!(
        alerts.iter().any(|a| a["type"] == "consistency"),
        "no consistency alert: {alerts:?}"
    );
    // The fork was not trusted: the real log still continues from the state.
    let (code, alerts) = monitor_once(d, &args)?;
    anyhow::ensure!(
        code == Some(0) && alerts.is_empty(),
        "after the fork: exit {code:?}, {alerts:?}"
    );

    // The site's shards.json names another key for the Sigstore shard (same origin), then drops the
    // shard: each is a consistency alert (exit 1), and the key first seen stays the one followed.
    let other_key = cairn_tlog::Signer::from_seed("localhost", [9; 32])?
        .verifier()
        .to_string();
    let real_key = server
        .vkeys
        .iter()
        .find(|v| v.starts_with("localhost+"))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no Sigstore shard key: {:?}", server.vkeys))?;
    let swapped = common::rewriting_proxy(server.http.clone(), {
        let (real_key, other_key) = (real_key.clone(), other_key.clone());
        move |path, body| {
            if path == "/shards.json" {
                *body = String::from_utf8_lossy(body)
                    .replace(&real_key, &other_key)
                    .into_bytes();
            }
        }
    })
    .await?;
    let dropped = common::rewriting_proxy(server.http.clone(), move |path, body| {
        if path == "/shards.json" {
            let mut doc: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            if let Some(shards) = doc["shards"].as_array_mut() {
                shards.retain(|s| s["kind"] != "sigstore");
            }
            *body = serde_json::to_vec(&doc).unwrap_or_default();
        }
    })
    .await?;
    for (proxy, says) in [
        (&swapped, "now names another key"),
        (&dropped, "no longer in shards.json"),
    ] {
        let proxied: Vec<&str> = args
            .iter()
            .map(|a| {
                if *a == server.http.as_str() {
                    proxy.url.as_str()
                } else {
                    a
                }
            })
            .collect();
        let (code, alerts) = monitor_once(d, &proxied)?;
        anyhow::ensure!(
            code == Some(1)
                && alerts
                    .iter()
                    .any(|a| a["type"] == "consistency" && a.to_string().contains(says)),
            "{says}: exit {code:?}, {alerts:?}"
        );
    }
    let (code, alerts) = monitor_once(d, &args)?;
    anyhow::ensure!(
        code == Some(0) && alerts.is_empty(),
        "after the key change: exit {code:?}, {alerts:?}"
    );

    // The trusted root alone names the logs to follow (its tlogs' base URLs): the same alerts for the
    // whole log, from a fresh state.
    let all: BTreeSet<(u64, String)> = expected(&first, &key_fingerprint)
        .union(&expected(&second, &key_fingerprint))
        .cloned()
        .collect();
    let root_only = [
        "--trusted-root",
        &root,
        "--watch",
        "watch.yaml",
        "--state",
        "state-root.json",
    ];
    let (code, alerts) = monitor_once(d, &root_only)?;
    anyhow::ensure!(code == Some(0), "trusted-root mode: exit {code:?}");
    anyhow::ensure!(
        matches(&alerts)? == all,
        "trusted-root mode: {} alerts",
        alerts.len()
    );

    // Running continuously, the monitor's /metrics count what it read and raised.
    let port = common::free_port()?;
    let metrics_addr = format!("127.0.0.1:{port}");
    let mut live = std::process::Command::new(common::BIN)
        .args([
            "monitor",
            "--log-url",
            &server.http,
            "--trusted-root",
            &root,
            "--watch",
            "watch.yaml",
        ])
        .args([
            "--state",
            "state-live.json",
            "--interval",
            "1",
            "--metrics-addr",
            &metrics_addr,
        ])
        .current_dir(d)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let sum = |text: &str, prefix: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (entries_read, match_alerts) = loop {
        let text = match reqwest::get(format!("http://{metrics_addr}/metrics")).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let read = sum(&text, "cairn_monitor_entries_total{");
        let raised = sum(&text, "cairn_monitor_alerts_total{");
        if read >= 2300 && raised >= all.len() as u64 || std::time::Instant::now() > deadline {
            break (read, raised);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let _ = live.kill();
    let _ = live.wait();
    anyhow::ensure!(
        entries_read == 2300 && match_alerts == all.len() as u64,
        "metrics: {entries_read} entries read, {match_alerts} alerts; want 2300 and {}",
        all.len()
    );

    anyhow::ensure!(server.stop()?.success(), "unclean exit");
    Ok(())
}
