//! Rekor v2 load: hashedrekord submissions to a Sigstore shard over gRPC
//! (`dev.sigstore.rekor.v2.Rekor/CreateEntry`), one entry per call as Sigstore clients send them. Every
//! request signs a different artifact with one key (ECDSA P-256 or Ed25519ph), signed before the clock
//! starts, so the server's cost per entry is all that is measured: the signature check, the canonical
//! body, the append, the wait for a published checkpoint and the inclusion proof in the reply.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use cairn_proto::rekor_v2::rekor_client::RekorClient;
use cairn_sigstore::pb::common::v1::PublicKeyDetails;
use cairn_sigstore::pb::rekor::v2::{
    CreateEntryRequest, HashedRekordRequestV002, PublicKey, Signature, Verifier, create_entry_request,
    verifier,
};
use hdrhistogram::Histogram;
use sha2::Digest;
use tonic::transport::{Channel, Endpoint};

use crate::write::{Report, Totals, Worker, gather, sampler};

/// The key every request is signed with.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum KeyKind {
    /// ECDSA P-256 with SHA-256 (`PKIX_ECDSA_P256_SHA_256`).
    P256,
    /// Ed25519 over the SHA-512 digest (`PKIX_ED25519_PH`).
    Ed25519ph,
}

/// What to run.
pub struct Options {
    /// gRPC URL of a log server.
    pub server: String,
    /// Seconds to run.
    pub duration: u64,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// HTTP/2 connections the calls share.
    pub connections: usize,
    /// Requests signed ahead (each is sent once).
    pub requests: usize,
    /// The signing key's type.
    pub key: KeyKind,
    /// No progress bar.
    pub quiet: bool,
}

/// A key that signs artifacts' digests.
enum Key {
    P256(EcdsaKeyPair, SystemRandom),
    Ed25519ph(Box<ed25519_dalek::SigningKey>),
}

impl Key {
    fn new(kind: KeyKind) -> anyhow::Result<Self> {
        Ok(match kind {
            KeyKind::P256 => {
                let rng = SystemRandom::new();
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
                    .map_err(|e| anyhow::anyhow!("P-256 key: {e}"))?;
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
                    .map_err(|e| anyhow::anyhow!("P-256 key: {e}"))?;
                Self::P256(pair, rng)
            }
            KeyKind::Ed25519ph => {
                let mut seed = [0u8; 32];
                aws_lc_rs::rand::fill(&mut seed).map_err(|e| anyhow::anyhow!("Ed25519 seed: {e}"))?;
                Self::Ed25519ph(Box::new(ed25519_dalek::SigningKey::from_bytes(&seed)))
            }
        })
    }

    fn spki(&self) -> anyhow::Result<Vec<u8>> {
        Ok(match self {
            Self::P256(pair, _) => pair
                .public_key()
                .as_der()
                .map_err(|e| anyhow::anyhow!("P-256 public key: {e}"))?
                .as_ref()
                .to_vec(),
            Self::Ed25519ph(sk) => cairn_sigstore::trust::ed25519_spki(&sk.verifying_key().to_bytes()),
        })
    }

    fn details(&self) -> PublicKeyDetails {
        match self {
            Self::P256(..) => PublicKeyDetails::PkixEcdsaP256Sha256,
            Self::Ed25519ph(_) => PublicKeyDetails::PkixEd25519Ph,
        }
    }

    /// The artifact's digest and the signature over it.
    fn sign(&self, artifact: &[u8]) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        Ok(match self {
            Self::P256(pair, rng) => {
                let sig = pair
                    .sign(rng, artifact)
                    .map_err(|e| anyhow::anyhow!("P-256 signature: {e}"))?;
                (sha2::Sha256::digest(artifact).to_vec(), sig.as_ref().to_vec())
            }
            Self::Ed25519ph(sk) => {
                let mut h = sha2::Sha512::new();
                h.update(artifact);
                let digest = h.clone().finalize().to_vec();
                let sig = sk
                    .sign_prehashed(h, None)
                    .map_err(|e| anyhow::anyhow!("Ed25519ph signature: {e}"))?;
                (digest, sig.to_bytes().to_vec())
            }
        })
    }
}

/// `n` requests for distinct artifacts, signed on every core.
fn presign(kind: KeyKind, n: usize) -> anyhow::Result<Vec<CreateEntryRequest>> {
    let key = Key::new(kind)?;
    let spki = key.spki()?;
    let details = key.details();
    let nonce = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
    let per = n.div_ceil(threads).max(1);
    let chunks: Vec<anyhow::Result<Vec<CreateEntryRequest>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(per)
            .map(|from| {
                let (key, spki) = (&key, &spki);
                s.spawn(move || {
                    (from..(from + per).min(n))
                        .map(|i| {
                            let (digest, content) =
                                key.sign(format!("cairn-bench {nonce} {i}").as_bytes())?;
                            let verifier = Verifier {
                                key_details: details as i32,
                                verifier: Some(verifier::Verifier::PublicKey(PublicKey {
                                    raw_bytes: spki.clone(),
                                })),
                            };
                            Ok(CreateEntryRequest {
                                spec: Some(create_entry_request::Spec::HashedRekordRequestV002(
                                    HashedRekordRequestV002 {
                                        digest,
                                        signature: Some(Signature {
                                            content,
                                            verifier: Some(verifier),
                                        }),
                                    },
                                )),
                            })
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a signing thread panicked")))
            })
            .collect()
    });
    let mut out = Vec::with_capacity(n);
    for c in chunks {
        out.extend(c?);
    }
    Ok(out)
}

/// Signs `opts.requests` requests, then sends them for `opts.duration` seconds and reports.
pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    let t0 = Instant::now();
    let requests = Arc::new(presign(opts.key, opts.requests)?);
    eprintln!(
        "signed {} requests ({:?}) in {:.1} s",
        requests.len(),
        opts.key,
        t0.elapsed().as_secs_f64()
    );
    let channels: Vec<Channel> = (0..opts.connections.max(1))
        .map(|_| {
            Ok(Endpoint::from_shared(opts.server.clone())?
                .tcp_nodelay(true)
                .connect_lazy())
        })
        .collect::<anyhow::Result<_>>()?;
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(opts.duration);
    let samples = sampler(opts.duration, done.clone(), opts.quiet);
    let mut workers: Vec<Worker> = Vec::new();
    for w in 0..opts.concurrency.max(1) {
        let mut client = RekorClient::new(channels[w % channels.len()].clone());
        let (requests, next, done) = (requests.clone(), next.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
            let mut totals = Totals::default();
            let mut pending: Option<usize> = None;
            while Instant::now() < deadline {
                let i = match pending.take() {
                    Some(i) => i,
                    None => next.fetch_add(1, Ordering::Relaxed),
                };
                let Some(req) = requests.get(i) else {
                    if i == requests.len() {
                        eprintln!(
                            "all {} pre-signed requests were sent before the time was up: the rate is over the time the last ones took; sign more with --requests",
                            requests.len()
                        );
                    }
                    break;
                };
                let t = Instant::now();
                match client.create_entry(req.clone()).await {
                    Ok(reply) if reply.get_ref().inclusion_proof.is_some() => {
                        hist.saturating_record(t.elapsed().as_micros() as u64);
                        totals.requests += 1;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {
                        totals.errors += 1;
                        if totals.errors <= 3 {
                            eprintln!("request {i}: the reply has no inclusion proof");
                        }
                    }
                    // Pushback and leaderless moments: the client's documented answer is to retry.
                    Err(s) if matches!(s.code(), tonic::Code::ResourceExhausted | tonic::Code::Unavailable) => {
                        totals.pushback += 1;
                        pending = Some(i);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(s) => {
                        totals.errors += 1;
                        if totals.errors <= 3 {
                            eprintln!("request {i} failed: {:?}: {}", s.code(), s.message());
                        }
                    }
                }
            }
            Ok::<_, anyhow::Error>((hist, totals))
        }));
    }
    let gathered = gather(workers).await?;
    let duration_s = start.elapsed().as_secs_f64();
    let per_second = samples.await?;
    Ok(Report::of_run(
        format!("rekor {} key={:?}", opts.server, opts.key),
        duration_s,
        done.load(Ordering::Relaxed),
        gathered,
        per_second,
        serde_json::json!({
            "server": opts.server, "key": format!("{:?}", opts.key), "concurrency": opts.concurrency,
            "connections": opts.connections, "duration": opts.duration, "requests": opts.requests,
        }),
    ))
}
