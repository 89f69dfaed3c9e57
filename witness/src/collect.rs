//! The log's side of witnessing: send a freshly signed checkpoint to a policy's witnesses
//! (c2sp.org/tlog-witness `add-checkpoint`, in parallel), handle their answers, and return the checkpoint
//! with the cosignatures that verify, once the policy's quorum holds.
//!
//! Each witness's latest cosigned size is remembered; a 409 answer (`text/x.tlog.size`) corrects it and
//! the request is sent again with a proof from that size. A witness ahead of the checkpoint (it cosigned a
//! larger tree, e.g. for a leader that crashed before committing) cannot cosign this one; it will cosign
//! the next, larger checkpoint.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cairn_tlog::note::Signature;
use cairn_tlog::{Hash, Note};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::policy::{Policy, Witness};
use crate::protocol::{ADD_CHECKPOINT, AddCheckpoint, SIZE_CONTENT_TYPE, parse_size};

/// A future of a consistency proof from an old size to the checkpoint's size.
pub type ProofFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<Hash>, String>> + Send + 'a>>;

/// The largest witness answer read (a few cosignature lines are a few hundred bytes).
const MAX_ANSWER: usize = 64 << 10;

/// A witness's error text as it may appear in logs and in errors shown to writers: printable, short.
fn printable(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(256)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// What a witness answered to one `add-checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200: its cosignature lines.
    Cosigned(Vec<u8>),
    /// 409 with its latest size.
    Conflict(u64),
    /// Any other answer: status and body.
    Refused(u16, String),
}

/// Sends one `add-checkpoint` to the witness whose submission prefix is `url`.
pub async fn add_checkpoint(
    http: &reqwest::Client,
    url: &str,
    req: &AddCheckpoint,
) -> Result<Answer, String> {
    let resp = http
        .post(format!("{}/{ADD_CHECKPOINT}", url.trim_end_matches('/')))
        .body(req.to_bytes())
        .send()
        .await
        .map_err(|e| format!("{e}"))?;
    let status = resp.status().as_u16();
    let size_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with(SIZE_CONTENT_TYPE));
    if resp.content_length().is_some_and(|n| n > MAX_ANSWER as u64) {
        return Ok(Answer::Refused(status, "answer too large".into()));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    if body.len() > MAX_ANSWER {
        return Ok(Answer::Refused(status, "answer too large".into()));
    }
    Ok(match status {
        200 => Answer::Cosigned(body.to_vec()),
        409 if size_type => match parse_size(&body) {
            Some(size) => Answer::Conflict(size),
            None => Answer::Refused(status, printable(&body)),
        },
        _ => Answer::Refused(status, printable(&body)),
    })
}

/// How a log collects cosignatures.
#[derive(Clone, Debug)]
pub struct CollectConfig {
    /// The policy: its witnesses with a URL are asked; its quorum must hold.
    pub policy: Policy,
    /// How long one collection may take.
    pub timeout: Duration,
    /// Publish without the quorum when it cannot be had in time (with the cosignatures obtained).
    pub fail_open: bool,
    /// Wait for every witness (until the timeout) instead of returning once the quorum holds.
    pub greedy: bool,
}

/// The result of a collection.
#[derive(Debug, Clone)]
pub struct Collected {
    /// The checkpoint with the log's signatures first, then the cosignatures that verified.
    pub note: Note,
    /// Names (in the policy) of the witnesses that cosigned.
    pub cosigned: Vec<String>,
    /// Witnesses that did not, with why.
    pub failures: Vec<(String, String)>,
    /// Whether the quorum holds (false only when failing open).
    pub quorum: bool,
}

/// The quorum could not be had (fail-closed).
#[derive(Debug, Clone, thiserror::Error)]
#[error("witness quorum ({needed}) not reached: cosigned by [{}]; {}", .cosigned.join(", "),
    .failures.iter().map(|(w, e)| format!("{w}: {e}")).collect::<Vec<_>>().join("; "))]
pub struct QuorumFailed {
    /// Who cosigned.
    pub cosigned: Vec<String>,
    /// Who did not, and why.
    pub failures: Vec<(String, String)>,
    /// The quorum rule in words.
    pub needed: String,
}

/// Metrics of cosignature collection, shared by the collectors of a process (one per log).
#[derive(Clone)]
pub struct CollectMetrics {
    registry: Registry,
    latency: HistogramVec,
    failures: IntCounterVec,
}

impl Default for CollectMetrics {
    fn default() -> Self {
        let registry = Registry::new();
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "cairn_witness_cosign_seconds",
                "Time from the start of a collection until a witness's cosignature arrived",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["log", "witness"],
        )
        .expect("valid metric");
        let failures = IntCounterVec::new(
            Opts::new(
                "cairn_witness_cosign_failures_total",
                "Collections in which a witness did not cosign, by reason",
            ),
            &["log", "witness", "reason"],
        )
        .expect("valid metric");
        registry.register(Box::new(latency.clone())).expect("register");
        registry.register(Box::new(failures.clone())).expect("register");
        Self {
            registry,
            latency,
            failures,
        }
    }
}

impl CollectMetrics {
    /// The registry holding the collection metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// Collects cosignatures for one log from the witnesses of a policy.
pub struct Collector {
    config: CollectConfig,
    log: String,
    http: reqwest::Client,
    /// The last size each witness (by index in the policy) is known to have cosigned.
    known: Mutex<Vec<Option<u64>>>,
    metrics: CollectMetrics,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("quorum", &self.config.policy.describe_quorum())
            .finish()
    }
}

impl Collector {
    /// A collector for the log `origin` with `config`, counting in `metrics`. Witnesses without a URL
    /// in the policy cannot be asked; the policy must still be satisfiable by those with one.
    pub fn new(config: CollectConfig, origin: &str, metrics: &CollectMetrics) -> Result<Self, String> {
        let reachable: BTreeSet<usize> = config
            .policy
            .witnesses()
            .iter()
            .enumerate()
            .filter(|(_, w)| w.url.is_some())
            .map(|(i, _)| i)
            .collect();
        if reachable.len() + 1 > cairn_tlog::note::MAX_SIGNATURES {
            return Err(format!(
                "the policy asks {} witnesses; a checkpoint note carries at most {} signatures with the log's",
                reachable.len(),
                cairn_tlog::note::MAX_SIGNATURES
            ));
        }
        if !config.policy.satisfied_by(&reachable) {
            return Err(format!(
                "the quorum ({}) cannot be met by the witnesses that have a URL in the policy",
                config.policy.describe_quorum()
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        let n = config.policy.witnesses().len();
        Ok(Self {
            config,
            log: origin.to_owned(),
            http,
            known: Mutex::new(vec![None; n]),
            metrics: metrics.clone(),
        })
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.config.policy
    }

    fn failed(&self, witness: &str, reason: &str) {
        self.metrics
            .failures
            .with_label_values(&[self.log.as_str(), witness, reason])
            .inc();
    }

    /// Collects cosignatures for `note` (a checkpoint of `size` signed by the log). `previous` is the
    /// size of the log's previous checkpoint, the best first guess of what a witness saw last; `proof`
    /// gives the consistency proof from an old size to `size`.
    pub async fn collect<'a, F>(
        &'a self,
        note: &Note,
        size: u64,
        previous: u64,
        proof: F,
    ) -> Result<Collected, QuorumFailed>
    where
        F: Fn(u64) -> ProofFuture<'a> + Sync + 'a,
    {
        let policy = &self.config.policy;
        let started = Instant::now();
        let body = note.to_bytes();
        let mut pending: FuturesUnordered<_> = policy
            .witnesses()
            .iter()
            .enumerate()
            .filter_map(|(i, w)| w.url.as_deref().map(|url| (i, w, url)))
            .map(|(i, w, url)| {
                let proof = &proof;
                let body = &body;
                async move {
                    let r = self.ask(i, w, url, size, previous, body, note, proof).await;
                    (i, r)
                }
            })
            .collect();
        let mut cosigs: Vec<(usize, Signature)> = Vec::new();
        let mut failures = Vec::new();
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        loop {
            let have: BTreeSet<usize> = cosigs.iter().map(|(i, _)| *i).collect();
            if policy.satisfied_by(&have) && !self.config.greedy {
                break;
            }
            match tokio::time::timeout_at(deadline, pending.next()).await {
                Ok(Some((i, Ok(sig)))) => {
                    self.metrics
                        .latency
                        .with_label_values(&[self.log.as_str(), policy.witnesses()[i].name.as_str()])
                        .observe(started.elapsed().as_secs_f64());
                    cosigs.push((i, sig));
                }
                Ok(Some((i, Err((reason, e))))) => {
                    let name = policy.witnesses()[i].name.clone();
                    self.failed(&name, reason);
                    failures.push((name, e));
                }
                Ok(None) => break,
                Err(_) => {
                    // Everyone still pending timed out.
                    drop(pending);
                    for (i, w) in policy.witnesses().iter().enumerate() {
                        if w.url.is_some()
                            && !cosigs.iter().any(|(j, _)| *j == i)
                            && !failures.iter().any(|(n, _)| *n == w.name)
                        {
                            self.failed(&w.name, "timeout");
                            failures.push((
                                w.name.clone(),
                                format!("no answer within {:?}", self.config.timeout),
                            ));
                        }
                    }
                    break;
                }
            }
        }
        cosigs.sort_by_key(|(i, _)| *i);
        let have: BTreeSet<usize> = cosigs.iter().map(|(i, _)| *i).collect();
        let quorum = policy.satisfied_by(&have);
        let cosigned: Vec<String> = cosigs
            .iter()
            .map(|(i, _)| policy.witnesses()[*i].name.clone())
            .collect();
        if !quorum && !self.config.fail_open {
            return Err(QuorumFailed {
                cosigned,
                failures,
                needed: policy.describe_quorum(),
            });
        }
        let mut out = note.clone();
        for (_, sig) in cosigs {
            out.push(sig);
        }
        Ok(Collected {
            note: out,
            cosigned,
            failures,
            quorum,
        })
    }

    /// Asks witness `i` to cosign; on a 409 resends once from the size it reported.
    #[allow(clippy::too_many_arguments)]
    async fn ask<'a, F>(
        &self,
        i: usize,
        w: &Witness,
        url: &str,
        size: u64,
        previous: u64,
        body: &[u8],
        note: &Note,
        proof: &F,
    ) -> Result<Signature, (&'static str, String)>
    where
        F: Fn(u64) -> ProofFuture<'a> + Sync + 'a,
    {
        let mut old = self.known.lock().expect("known sizes")[i]
            .unwrap_or(previous)
            .min(size);
        for _ in 0..3 {
            let hashes = if old == 0 || old == size {
                Vec::new()
            } else {
                proof(old)
                    .await
                    .map_err(|e| ("proof", format!("consistency proof from {old}: {e}")))?
            };
            let req = AddCheckpoint {
                old,
                proof: hashes,
                checkpoint: body.to_vec(),
            };
            match add_checkpoint(&self.http, url, &req).await {
                Err(e) => return Err(("unreachable", e)),
                Ok(Answer::Conflict(latest)) => {
                    self.known.lock().expect("known sizes")[i] = Some(latest);
                    if latest > size {
                        return Err((
                            "ahead",
                            format!("witness has cosigned size {latest}, beyond this checkpoint's {size}"),
                        ));
                    }
                    if latest == old {
                        return Err((
                            "conflict",
                            format!("409 at the size it reported ({latest}): it saw another tree"),
                        ));
                    }
                    old = latest;
                }
                Ok(Answer::Refused(status, msg)) => return Err(("refused", format!("{status}: {msg}"))),
                Ok(Answer::Cosigned(lines)) => {
                    let sig = verified_cosignature(w, note, &lines)?;
                    self.known.lock().expect("known sizes")[i] = Some(size);
                    return Ok(sig);
                }
            }
        }
        Err(("conflict", "the witness's size kept changing".into()))
    }
}

/// The cosignature by `w`'s key among the signature lines of an answer, verified over the checkpoint.
fn verified_cosignature(w: &Witness, note: &Note, lines: &[u8]) -> Result<Signature, (&'static str, String)> {
    let text = std::str::from_utf8(lines).map_err(|_| ("invalid", "answer is not UTF-8".to_string()))?;
    for line in text.lines() {
        let Ok(sig) = Signature::parse_line(line) else {
            continue;
        };
        if sig.name == w.key.name && sig.key_id == w.key.key_id {
            if w.key.verify(note.text.as_bytes(), &sig.bytes) {
                return Ok(sig);
            }
            return Err(("invalid", "its cosignature does not verify".into()));
        }
    }
    Err((
        "invalid",
        format!("no cosignature by {} in the answer", w.key.name),
    ))
}
