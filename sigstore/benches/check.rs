//! The per-entry cost a Sigstore shard adds: parsing, checking and verifying one hashedrekord request
//! and building its canonical body, for ECDSA P-256 and Ed25519ph keys (one core).
//!
//! `cargo bench -p cairn-sigstore --bench check`

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as lc, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cairn_sigstore::Policy;
use cairn_sigstore::hashedrekord::{check, parse_json};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sha2::Digest;

fn request(digest: &[u8], sig: &[u8], spki: &[u8], details: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "hashedRekordRequestV002": {
            "digest": STANDARD.encode(digest),
            "signature": { "content": STANDARD.encode(sig), "verifier": {
                "publicKey": { "rawBytes": STANDARD.encode(spki) }, "keyDetails": details } }
        }
    }))
    .unwrap_or_default()
}

fn p256() -> Vec<u8> {
    let rng = SystemRandom::new();
    let alg = &lc::ECDSA_P256_SHA256_ASN1_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).ok();
    let Some(pair) = pkcs8.and_then(|p| EcdsaKeyPair::from_pkcs8(alg, p.as_ref()).ok()) else {
        return Vec::new();
    };
    let spki = pair
        .public_key()
        .as_der()
        .map(|d| d.as_ref().to_vec())
        .unwrap_or_default();
    let sig = pair
        .sign(&rng, b"artifact")
        .map(|s| s.as_ref().to_vec())
        .unwrap_or_default();
    request(
        &sha2::Sha256::digest(b"artifact"),
        &sig,
        &spki,
        "PKIX_ECDSA_P256_SHA_256",
    )
}

fn ed25519ph() -> Vec<u8> {
    let sk = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let spki = cairn_sigstore::trust::ed25519_spki(&sk.verifying_key().to_bytes());
    let mut h = sha2::Sha512::new();
    h.update(b"artifact");
    let sig = sk
        .sign_prehashed(h, None)
        .map(|s| s.to_bytes().to_vec())
        .unwrap_or_default();
    request(&sha2::Sha512::digest(b"artifact"), &sig, &spki, "PKIX_ED25519_PH")
}

fn bench(c: &mut Criterion) {
    let policy = Policy::default();
    let mut g = c.benchmark_group("hashedrekord_check");
    g.throughput(Throughput::Elements(1));
    for (name, body) in [("ecdsa_p256", p256()), ("ed25519ph", ed25519ph())] {
        assert!(
            parse_json(&body).and_then(|r| check(r, &policy)).is_ok(),
            "{name} request is refused"
        );
        g.bench_function(name, |b| {
            b.iter(|| parse_json(&body).and_then(|r| check(r, &policy)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
