//! The load: writers of opaque entries (gRPC, through every node, with the client's documented
//! retries), a writer of Sigstore entries (the Rekor v2 HTTP API, moving to the next node on a
//! retryable answer), and observers reading every node's checkpoints. Everything they see goes into
//! the [`History`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as lc, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cairn_client::{LogClient, RetryPolicy, Wait};
use cairn_tlog::leaf_hash;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::Digest;
use tokio::sync::Mutex;

use crate::cluster::TOKEN;
use crate::history::{Ack, History, Observation, Unknown};

/// The shared record and the clock it is kept against.
#[derive(Clone)]
pub struct Recorder {
    /// The history.
    pub history: Arc<Mutex<History>>,
    /// Time zero of the run.
    pub start: Instant,
}

impl Recorder {
    /// A new, empty record starting now.
    pub fn new() -> Self {
        Self {
            history: Arc::new(Mutex::new(History::default())),
            start: Instant::now(),
        }
    }

    /// Milliseconds since the start.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// How long a write may take, retries included, before its outcome is recorded as unknown.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(30);

/// An opaque writer: calls of 10 new entries (and, every 8th call, one entry it had acknowledged
/// before, which must come back at its original index), `Wait::Sequenced`, sent first to node
/// `first` and then around all `servers`. Returns its number of successful calls.
pub fn opaque_writer(
    w: usize,
    mut servers: Vec<String>,
    seed: u64,
    rec: Recorder,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<anyhow::Result<u64>> {
    let n = servers.len().max(1);
    servers.rotate_left(w % n);
    tokio::spawn(async move {
        let mut client = LogClient::with_servers(&servers)?
            .with_retry(RetryPolicy {
                deadline: WRITE_DEADLINE,
                backoff: Duration::from_millis(20),
                max_backoff: Duration::from_millis(200),
                ..RetryPolicy::default()
            })?
            .with_token(TOKEN);
        let mut rng = StdRng::seed_from_u64(seed ^ (w as u64) << 32);
        let mut acked: Vec<Vec<u8>> = Vec::new();
        let mut calls = 0u64;
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let mut batch: Vec<Vec<u8>> = (0..10)
                .map(|k| format!("chaos seed {seed} writer {w} call {n} entry {k}").into_bytes())
                .collect();
            n += 1;
            let fresh = batch.len();
            if n.is_multiple_of(8) && !acked.is_empty() {
                batch.push(acked[rng.random_range(0..acked.len())].clone());
            }
            let result = client.submit(batch.clone(), Wait::Sequenced).await;
            let at = rec.now();
            let mut h = rec.history.lock().await;
            match result {
                Ok(acks) => {
                    calls += 1;
                    if acks.len() != batch.len() {
                        h.anomalies.push(format!(
                            "writer {w} at {at} ms: {} acknowledgments for {} entries",
                            acks.len(),
                            batch.len()
                        ));
                    }
                    let mut shards: Vec<u32> = acks.iter().map(|a| a.shard).collect();
                    shards.sort_unstable();
                    shards.dedup();
                    h.successes.extend(shards.into_iter().map(|s| (at, s)));
                    for (k, (entry, a)) in batch.iter().zip(acks).enumerate() {
                        let leaf = leaf_hash(entry);
                        if a.leaf_hash != leaf {
                            h.anomalies.push(format!(
                                "writer {w} at {at} ms: entry {} acknowledged with leaf hash {}",
                                leaf.to_base64(),
                                a.leaf_hash.to_base64()
                            ));
                        }
                        h.acks.push(Ack {
                            shard: a.shard,
                            index: a.index,
                            leaf: leaf.to_base64(),
                            at_ms: at,
                            resubmitted: k >= fresh,
                        });
                    }
                    acked.extend(batch.into_iter().take(fresh));
                }
                Err(e) => {
                    for entry in batch.iter().take(fresh) {
                        h.unknown.push(Unknown {
                            leaf: leaf_hash(entry).to_base64(),
                            at_ms: at,
                            error: e.to_string(),
                        });
                    }
                }
            }
        }
        Ok(calls)
    })
}

/// A signer of hashedrekord entries (ECDSA P-256, a public key as verifier).
struct Signer {
    pair: EcdsaKeyPair,
    spki: Vec<u8>,
}

impl Signer {
    fn new() -> anyhow::Result<Self> {
        let alg = &lc::ECDSA_P256_SHA256_ASN1_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new())?;
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref())?;
        let spki = pair.public_key().as_der()?.as_ref().to_vec();
        Ok(Self { pair, spki })
    }

    /// The request body for `artifact`, and the canonical body the log must store for it (the
    /// JCS form of the Rekor v2 entry, written out here independently of the server).
    fn entry(&self, artifact: &[u8]) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let digest = STANDARD.encode(sha2::Sha256::digest(artifact));
        let sig = STANDARD.encode(self.pair.sign(&SystemRandom::new(), artifact)?.as_ref());
        let key = STANDARD.encode(&self.spki);
        let request = serde_json::json!({ "hashedRekordRequestV002": {
            "digest": digest,
            "signature": { "content": sig, "verifier": {
                "publicKey": { "rawBytes": key }, "keyDetails": "PKIX_ECDSA_P256_SHA_256" } } } });
        let body = format!(
            concat!(
                r#"{{"apiVersion":"0.0.2","kind":"hashedrekord","spec":{{"hashedRekordV002":{{"data":{{"#,
                r#""algorithm":"SHA2_256","digest":"{}"}},"signature":{{"content":"{}","verifier":{{"#,
                r#""keyDetails":"PKIX_ECDSA_P256_SHA_256","publicKey":{{"rawBytes":"{}"}}}}}}}}}}}}"#
            ),
            digest, sig, key
        );
        Ok((serde_json::to_vec(&request)?, body.into_bytes()))
    }
}

/// What one Rekor v2 request came to.
enum Outcome {
    /// Logged (201) or already logged (409), at this index; with the reply's checkpoint for a 201,
    /// and what is wrong with its inclusion proof, if anything.
    Logged(u64, Option<String>, Option<String>),
    /// Every attempt failed until the deadline; the last error.
    Failed(String),
}

/// Checks a `TransparencyLogEntry`'s inclusion proof: of its canonical body's leaf hash, at
/// `index`, up to the root it names.
fn proof_fault(v: &serde_json::Value, index: u64) -> Result<(), String> {
    let b64 = |x: &serde_json::Value| -> Result<Vec<u8>, String> {
        STANDARD
            .decode(x.as_str().ok_or("a field is missing")?)
            .map_err(|e| e.to_string())
    };
    let hash = |x: &serde_json::Value| -> Result<cairn_tlog::Hash, String> {
        cairn_tlog::Hash::from_slice(&b64(x)?).map_err(|e| e.to_string())
    };
    let p = &v["inclusionProof"];
    let body = b64(&v["canonicalizedBody"])?;
    let size: u64 = p["treeSize"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or("no treeSize")?;
    let hashes: Vec<cairn_tlog::Hash> = (p["hashes"].as_array().ok_or("no hashes")?.iter())
        .map(hash)
        .collect::<Result<_, _>>()?;
    cairn_tlog::verify_inclusion(&leaf_hash(&body), index, size, &hashes, &hash(&p["rootHash"])?)
        .map_err(|e| format!("inclusion proof does not verify: {e}"))
}

/// POSTs `body` to `/api/v2/log/entries` of each node in turn until one logs it (or says it is
/// logged) or the deadline passes. `503`, `5xx` and transport errors move on to the next node.
async fn create_entry(http: &reqwest::Client, nodes: &[String], first: usize, body: &[u8]) -> Outcome {
    let deadline = Instant::now() + WRITE_DEADLINE;
    let mut last = String::new();
    let mut at = first;
    while Instant::now() < deadline {
        let node = &nodes[at % nodes.len()];
        at += 1;
        let resp = http
            .post(format!("{node}/api/v2/log/entries"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await;
        match resp {
            Ok(r) if r.status().as_u16() == 201 => {
                let v = r
                    .bytes()
                    .await
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
                let Some(v) = v else {
                    last = "201 with an unreadable body".into();
                    continue;
                };
                let index = v["logIndex"].as_str().and_then(|s| s.parse().ok());
                let note = v["inclusionProof"]["checkpoint"]["envelope"]
                    .as_str()
                    .map(str::to_owned);
                match index {
                    Some(i) => return Outcome::Logged(i, note, proof_fault(&v, i).err()),
                    None => last = format!("201 without a logIndex: {v}"),
                }
            }
            Ok(r) if r.status().as_u16() == 409 => {
                let index = r
                    .headers()
                    .get("x-log-index")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.parse().ok());
                match index {
                    Some(i) => return Outcome::Logged(i, None, None),
                    None => last = "409 without x-log-index".into(),
                }
            }
            // Overloaded or rate limited: another node, or the same one a little later.
            Ok(r) if r.status().is_server_error() || [408, 429].contains(&r.status().as_u16()) => {
                last = format!("{} from {node}", r.status());
            }
            Ok(r) => {
                // 4xx other than 409: the request is wrong; retrying cannot help.
                let status = r.status();
                return Outcome::Failed(format!(
                    "{status} from {node}: {}",
                    r.text().await.unwrap_or_default()
                ));
            }
            Err(e) => last = format!("{node}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Outcome::Failed(last)
}

/// The Sigstore writer: one hashedrekord entry per request, a new artifact each time, and every 10th
/// request one it had logged before (which must answer 409 with its original index).
pub fn sigstore_writer(
    nodes: Vec<String>,
    shard: u32,
    seed: u64,
    rec: Recorder,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<anyhow::Result<u64>> {
    tokio::spawn(async move {
        let signer = Signer::new()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(1))
            .build()?;
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5167);
        // (request, leaf hash) of every entry logged so far.
        let mut logged: Vec<(Vec<u8>, String)> = Vec::new();
        let (mut n, mut calls) = (0u64, 0u64);
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            let again = n.is_multiple_of(10) && !logged.is_empty();
            let (request, leaf) = if again {
                logged[rng.random_range(0..logged.len())].clone()
            } else {
                let (request, body) = signer.entry(format!("chaos seed {seed} artifact {n}").as_bytes())?;
                (request, leaf_hash(&body).to_base64())
            };
            let outcome = create_entry(&http, &nodes, n as usize, &request).await;
            let at = rec.now();
            let mut h = rec.history.lock().await;
            match outcome {
                Outcome::Logged(index, note, proof) => {
                    calls += 1;
                    if let Some(p) = proof {
                        h.anomalies
                            .push(format!("Rekor v2 reply at {at} ms for index {index}: {p}"));
                    }
                    h.successes.push((at, shard));
                    h.acks.push(Ack {
                        shard,
                        index,
                        leaf: leaf.clone(),
                        at_ms: at,
                        resubmitted: again,
                    });
                    if let Some(note) = note {
                        h.observations.push(Observation {
                            observer: "rekor-reply".into(),
                            shard,
                            at_ms: at,
                            note,
                        });
                    }
                    if !again {
                        logged.push((request, leaf));
                    }
                }
                Outcome::Failed(error) if !again => h.unknown.push(Unknown {
                    leaf,
                    at_ms: at,
                    error,
                }),
                Outcome::Failed(_) => {}
            }
        }
        Ok(calls)
    })
}

/// An observer: reads every shard's checkpoint from `node`'s read path every 200 ms and records each
/// new one it sees.
pub fn observer(
    name: String,
    node: String,
    shards: Vec<u32>,
    rec: Recorder,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .connect_timeout(Duration::from_millis(500))
            .build()?;
        let mut last: Vec<String> = vec![String::new(); shards.len()];
        while !stop.load(Ordering::SeqCst) {
            for (k, shard) in shards.iter().enumerate() {
                let resp = http.get(format!("{node}/logs/{shard}/checkpoint")).send().await;
                let Ok(r) = resp else { continue };
                if !r.status().is_success() {
                    continue;
                }
                let Ok(note) = r.text().await else { continue };
                if note != last[k] {
                    rec.history.lock().await.observations.push(Observation {
                        observer: name.clone(),
                        shard: *shard,
                        at_ms: rec.now(),
                        note: note.clone(),
                    });
                    last[k] = note;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    })
}
