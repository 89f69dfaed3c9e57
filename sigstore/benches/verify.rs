//! Which crate verifies: one signature check, key parsing included (every Sigstore entry brings its
//! own key), for the key types the embedded default accepts most, on one core.
//!
//! - ECDSA P-256 over a given SHA-256 digest: aws-lc-rs (what `cairn-sigstore` uses) and RustCrypto's
//!   `p256`; `ring`, for reference, can only verify a message (it hashes it itself), which a
//!   hashedrekord entry does not carry.
//! - Ed25519ph over a given SHA-512 digest: ed25519-dalek (what `cairn-sigstore` uses; neither
//!   aws-lc-rs nor ring offers Ed25519ph); pure Ed25519, which Rekor v2 refuses, for reference.
//!
//! `cargo bench -p cairn-sigstore --bench verify`

use aws_lc_rs::digest as lcd;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as lc, EcdsaKeyPair, KeyPair, UnparsedPublicKey};
use cairn_sigstore::verify::{Hash, PublicKey};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::pkcs8::DecodePublicKey;
use sha2::Digest;

const MESSAGE: &[u8] = b"an artifact";

struct P256Case {
    spki: Vec<u8>,
    point: Vec<u8>,
    sig: Vec<u8>,
    digest: [u8; 32],
}

fn p256_case() -> Option<P256Case> {
    let rng = SystemRandom::new();
    let alg = &lc::ECDSA_P256_SHA256_ASN1_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).ok()?;
    let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).ok()?;
    Some(P256Case {
        spki: pair.public_key().as_der().ok()?.as_ref().to_vec(),
        point: pair.public_key().as_ref().to_vec(),
        sig: pair.sign(&rng, MESSAGE).ok()?.as_ref().to_vec(),
        digest: sha2::Sha256::digest(MESSAGE).into(),
    })
}

fn aws_lc_p256(c: &P256Case) -> bool {
    let Ok(digest) = lcd::Digest::import_less_safe(&c.digest, &lcd::SHA256) else {
        return false;
    };
    UnparsedPublicKey::new(&lc::ECDSA_P256_SHA256_ASN1, &c.spki)
        .verify_digest(&digest, &c.sig)
        .is_ok()
}

fn rustcrypto_p256(c: &P256Case) -> bool {
    let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(&c.spki) else {
        return false;
    };
    let Ok(sig) = p256::ecdsa::Signature::from_der(&c.sig) else {
        return false;
    };
    key.verify_prehash(&c.digest, &sig).is_ok()
}

fn ring_p256_message(c: &P256Case) -> bool {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, &c.point)
        .verify(MESSAGE, &c.sig)
        .is_ok()
}

struct Ed25519Case {
    key: [u8; 32],
    spki: Vec<u8>,
    ph_sig: [u8; 64],
    pure_sig: [u8; 64],
    digest: [u8; 64],
}

fn ed25519_case() -> Ed25519Case {
    use ed25519_dalek::Signer;
    let sk = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let mut h = sha2::Sha512::new();
    h.update(MESSAGE);
    Ed25519Case {
        key: sk.verifying_key().to_bytes(),
        spki: cairn_sigstore::trust::ed25519_spki(&sk.verifying_key().to_bytes()),
        ph_sig: sk
            .sign_prehashed(h, None)
            .map(|s| s.to_bytes())
            .unwrap_or([0; 64]),
        pure_sig: sk.sign(MESSAGE).to_bytes(),
        digest: sha2::Sha512::digest(MESSAGE).into(),
    }
}

/// What `cairn-sigstore` runs per entry: the key parsed from its SPKI, then verified over the digest.
fn cairn_ed25519ph(c: &Ed25519Case) -> bool {
    PublicKey::from_spki(&c.spki)
        .and_then(|k| k.verify_digest(Hash::Sha512, &c.digest, &c.ph_sig))
        .is_ok()
}

fn cairn_p256(c: &P256Case) -> bool {
    PublicKey::from_spki(&c.spki)
        .and_then(|k| k.verify_digest(Hash::Sha256, &c.digest, &c.sig))
        .is_ok()
}

fn dalek_pure(c: &Ed25519Case) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&c.key) else {
        return false;
    };
    key.verify_strict(MESSAGE, &ed25519_dalek::Signature::from_bytes(&c.pure_sig))
        .is_ok()
}

fn aws_lc_pure(c: &Ed25519Case) -> bool {
    UnparsedPublicKey::new(&lc::ED25519, &c.key)
        .verify(MESSAGE, &c.pure_sig)
        .is_ok()
}

fn bench(c: &mut Criterion) {
    let Some(p) = p256_case() else {
        panic!("could not make a P-256 key");
    };
    let e = ed25519_case();
    type Case<'a> = (&'a str, Box<dyn Fn() -> bool + 'a>);
    let cases: [(&str, Vec<Case>); 2] = [
        (
            "verify_p256",
            vec![
                ("cairn_sigstore_digest_aws_lc_rs", Box::new(|| cairn_p256(&p))),
                ("aws_lc_rs_digest", Box::new(|| aws_lc_p256(&p))),
                ("rustcrypto_p256_digest", Box::new(|| rustcrypto_p256(&p))),
                ("ring_message", Box::new(|| ring_p256_message(&p))),
            ],
        ),
        (
            "verify_ed25519",
            vec![
                (
                    "cairn_sigstore_ed25519ph_digest_dalek",
                    Box::new(|| cairn_ed25519ph(&e)),
                ),
                ("dalek_pure", Box::new(|| dalek_pure(&e))),
                ("aws_lc_rs_pure", Box::new(|| aws_lc_pure(&e))),
            ],
        ),
    ];
    for (group, cases) in cases {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(1));
        for (name, verify) in cases {
            assert!(verify(), "{group}/{name} does not verify a good signature");
            g.bench_function(name, |b| b.iter(&verify));
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
