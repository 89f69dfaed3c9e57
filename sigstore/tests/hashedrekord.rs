//! hashedrekord v0.0.2 submissions: the canonical body byte for byte, each accepted key type, and a
//! table of refused requests with the message each gets.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as lc, EcdsaKeyPair, KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cairn_sigstore::hashedrekord::{EntryError, check, parse_json, parse_protobuf};
use cairn_sigstore::{LogEntry, Policy};
use ed25519_dalek::Signer;
use prost::Message;
use sha2::Digest;

const ARTIFACT: &[u8] = b"an artifact someone signed";

fn b64(b: &[u8]) -> String {
    STANDARD.encode(b)
}

/// A request as clients send it (camelCase protojson).
fn request(digest: &[u8], sig: &[u8], verifier: serde_json::Value, details: &str) -> Vec<u8> {
    let mut v = verifier;
    v["keyDetails"] = serde_json::Value::String(details.into());
    serde_json::to_vec(&serde_json::json!({
        "hashedRekordRequestV002": {
            "digest": b64(digest),
            "signature": { "content": b64(sig), "verifier": v }
        }
    }))
    .unwrap_or_default()
}

fn public_key(spki: &[u8]) -> serde_json::Value {
    serde_json::json!({ "publicKey": { "rawBytes": b64(spki) } })
}

struct P256 {
    pair: EcdsaKeyPair,
}

impl P256 {
    fn new() -> anyhow::Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&lc::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)?;
        Ok(Self {
            pair: EcdsaKeyPair::from_pkcs8(&lc::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())?,
        })
    }

    fn spki(&self) -> anyhow::Result<Vec<u8>> {
        use aws_lc_rs::encoding::AsDer;
        Ok(self.pair.public_key().as_der()?.as_ref().to_vec())
    }

    /// (sha256(artifact), signature over the artifact).
    fn sign(&self, artifact: &[u8]) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let sig = self.pair.sign(&SystemRandom::new(), artifact)?;
        Ok((sha2::Sha256::digest(artifact).to_vec(), sig.as_ref().to_vec()))
    }
}

fn refused(body: &[u8]) -> anyhow::Result<EntryError> {
    let req = match parse_json(body) {
        Ok(r) => r,
        Err(e) => return Ok(e),
    };
    match check(req, &Policy::default()) {
        Ok(_) => anyhow::bail!("accepted: {}", String::from_utf8_lossy(body)),
        Err(e) => Ok(e),
    }
}

#[test]
fn the_body_is_jcs_of_the_protojson_entry_byte_for_byte() -> anyhow::Result<()> {
    let key = P256::new()?;
    let spki = key.spki()?;
    let (digest, sig) = key.sign(ARTIFACT)?;
    let body = request(&digest, &sig, public_key(&spki), "PKIX_ECDSA_P256_SHA_256");
    let sub = check(parse_json(&body)?, &Policy::default())?;
    // Written out by hand from the .proto's json names, keys in JCS order.
    let expected = format!(
        concat!(
            r#"{{"apiVersion":"0.0.2","kind":"hashedrekord","spec":{{"hashedRekordV002":{{"data":{{"#,
            r#""algorithm":"SHA2_256","digest":"{}"}},"signature":{{"content":"{}","verifier":{{"#,
            r#""keyDetails":"PKIX_ECDSA_P256_SHA_256","publicKey":{{"rawBytes":"{}"}}}}}}}}}}}}"#
        ),
        b64(&digest),
        b64(&sig),
        b64(&spki)
    );
    assert_eq!(String::from_utf8(sub.body.clone())?, expected);

    // The same request with the .proto's field names, and as protobuf, gives the same body.
    let snake = serde_json::to_vec(&serde_json::json!({
        "hashed_rekord_request_v002": {
            "digest": b64(&digest),
            "signature": { "content": b64(&sig), "verifier": {
                "public_key": { "raw_bytes": b64(&spki) }, "key_details": "PKIX_ECDSA_P256_SHA_256" } }
        }
    }))?;
    assert_eq!(check(parse_json(&snake)?, &Policy::default())?.body, sub.body);
    let proto = parse_json(&body)?.encode_to_vec();
    assert_eq!(check(parse_protobuf(&proto)?, &Policy::default())?.body, sub.body);

    // A forwarded body is checked again: the canonical one passes, the same JSON spaced out does not.
    cairn_sigstore::hashedrekord::check_body(&sub.body, &Policy::default())?;
    let spaced = expected.replace(',', ", ");
    let e = cairn_sigstore::hashedrekord::check_body(spaced.as_bytes(), &Policy::default())
        .err()
        .ok_or_else(|| anyhow::anyhow!("a non-canonical body passed"))?;
    assert!(e.to_string().contains("canonical"), "{e}");
    Ok(())
}

#[test]
fn certificates_are_logged_as_sent_with_their_key_checked() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let key = dir.join("k.pem");
    let cert = dir.join("c.der");
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &key.display().to_string(),
    ])?;
    openssl(&[
        "req",
        "-new",
        "-x509",
        "-key",
        &key.display().to_string(),
        "-subj",
        "/CN=signer",
        "-days",
        "1",
        "-outform",
        "DER",
        "-out",
        &cert.display().to_string(),
    ])?;
    let der = std::fs::read(&cert)?;
    let data = dir.join("artifact");
    std::fs::write(&data, ARTIFACT)?;
    let sig_path = dir.join("sig");
    openssl(&[
        "dgst",
        "-sha256",
        "-sign",
        &key.display().to_string(),
        "-out",
        &sig_path.display().to_string(),
        &data.display().to_string(),
    ])?;
    let sig = std::fs::read(&sig_path)?;
    let digest = sha2::Sha256::digest(ARTIFACT).to_vec();
    let verifier = serde_json::json!({ "x509Certificate": { "rawBytes": b64(&der) } });
    let body = request(&digest, &sig, verifier, "PKIX_ECDSA_P256_SHA_256");
    let sub = check(parse_json(&body)?, &Policy::default())?;
    let text = String::from_utf8(sub.body)?;
    assert!(
        text.contains(&format!(r#""x509Certificate":{{"rawBytes":"{}"}}"#, b64(&der))),
        "{text}"
    );
    // Another key's signature with that certificate is refused.
    let other = P256::new()?;
    let (_, other_sig) = other.sign(ARTIFACT)?;
    let verifier = serde_json::json!({ "x509Certificate": { "rawBytes": b64(&der) } });
    let e = refused(&request(&digest, &other_sig, verifier, "PKIX_ECDSA_P256_SHA_256"))?;
    assert!(matches!(e, EntryError::Signature(_)), "{e}");
    Ok(())
}

#[test]
fn every_accepted_algorithm_verifies() -> anyhow::Result<()> {
    // ECDSA P-384 / SHA-384 and P-521 / SHA-512.
    for (alg, details, hash) in [
        (
            &lc::ECDSA_P384_SHA384_ASN1_SIGNING,
            "PKIX_ECDSA_P384_SHA_384",
            384,
        ),
        (
            &lc::ECDSA_P521_SHA512_ASN1_SIGNING,
            "PKIX_ECDSA_P521_SHA_512",
            512,
        ),
    ] {
        use aws_lc_rs::encoding::AsDer;
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(alg, EcdsaKeyPair::generate_pkcs8(alg, &rng)?.as_ref())?;
        let spki = pair.public_key().as_der()?.as_ref().to_vec();
        let sig = pair.sign(&rng, ARTIFACT)?.as_ref().to_vec();
        let digest = if hash == 384 {
            sha2::Sha384::digest(ARTIFACT).to_vec()
        } else {
            sha2::Sha512::digest(ARTIFACT).to_vec()
        };
        let sub = check(
            parse_json(&request(&digest, &sig, public_key(&spki), details))?,
            &Policy::default(),
        )?;
        assert!(String::from_utf8(sub.body)?.contains(if hash == 384 { "SHA2_384" } else { "SHA2_512" }));
    }
    // RSA PKCS#1 v1.5, 2048 bits.
    {
        use aws_lc_rs::encoding::AsDer;
        let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)?;
        let spki = pair.public_key().as_der()?.as_ref().to_vec();
        let mut sig = vec![0; pair.public_modulus_len()];
        pair.sign(&lc::RSA_PKCS1_SHA256, &SystemRandom::new(), ARTIFACT, &mut sig)?;
        let digest = sha2::Sha256::digest(ARTIFACT).to_vec();
        let req = request(&digest, &sig, public_key(&spki), "PKIX_RSA_PKCS1V15_2048_SHA256");
        check(parse_json(&req)?, &Policy::default())?;
        let e = refused(&request(
            &digest,
            &sig,
            public_key(&spki),
            "PKIX_RSA_PKCS1V15_3072_SHA256",
        ))?;
        assert!(e.to_string().contains("needs a RSA 3072-bit key"), "{e}");
    }
    // Ed25519ph over SHA-512.
    {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let spki = cairn_sigstore::trust::ed25519_spki(&sk.verifying_key().to_bytes());
        let mut h = sha2::Sha512::new();
        h.update(ARTIFACT);
        let sig = sk.sign_prehashed(h, None)?.to_bytes();
        let digest = sha2::Sha512::digest(ARTIFACT).to_vec();
        check(
            parse_json(&request(&digest, &sig, public_key(&spki), "PKIX_ED25519_PH"))?,
            &Policy::default(),
        )?;
        // The same key signing the artifact itself (pure Ed25519) is refused with the reason.
        let pure = sk.sign(ARTIFACT).to_bytes();
        let e = refused(&request(&digest, &pure, public_key(&spki), "PKIX_ED25519"))?;
        assert!(e.to_string().contains("Ed25519ph"), "{e}");
    }
    Ok(())
}

fn openssl(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("openssl").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn bad_requests_are_refused_with_what_to_fix() -> anyhow::Result<()> {
    let key = P256::new()?;
    let spki = key.spki()?;
    let (digest, sig) = key.sign(ARTIFACT)?;
    let good = |d: &str| request(&digest, &sig, public_key(&spki), d);
    let (_, other_sig) = key.sign(b"another artifact")?;

    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let rsa1024 = dir.join("rsa1024.der");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:1024",
        "-out",
        &dir.join("r.pem").display().to_string(),
    ])?;
    openssl(&[
        "pkey",
        "-in",
        &dir.join("r.pem").display().to_string(),
        "-pubout",
        "-outform",
        "DER",
        "-out",
        &rsa1024.display().to_string(),
    ])?;
    let rsa1024 = std::fs::read(&rsa1024)?;

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "bad signature",
            request(&digest, &other_sig, public_key(&spki), "PKIX_ECDSA_P256_SHA_256"),
            "does not verify",
        ),
        (
            "digest length",
            request(&digest[..20], &sig, public_key(&spki), "PKIX_ECDSA_P256_SHA_256"),
            "digests are 32 bytes",
        ),
        ("unknown keyDetails", good("PKIX_NOT_A_KEY"), "PKIX_NOT_A_KEY"),
        (
            "key/keyDetails mismatch",
            good("PKIX_ECDSA_P384_SHA_384"),
            "needs a ECDSA P-384 key",
        ),
        ("pure Ed25519", good("PKIX_ED25519"), "Ed25519ph"),
        (
            "RSA-PSS",
            good("PKIX_RSA_PSS_2048_SHA256"),
            "RSA-PSS is not accepted",
        ),
        (
            "RSA 1024",
            request(
                &digest,
                &sig,
                public_key(&rsa1024),
                "PKIX_RSA_PKCS1V15_2048_SHA256",
            ),
            "RSA 1024-bit",
        ),
        (
            "garbage DER",
            request(
                &digest,
                &sig,
                public_key(b"\x30\x03garbage"),
                "PKIX_ECDSA_P256_SHA_256",
            ),
            "not a DER SubjectPublicKeyInfo",
        ),
        (
            "garbage certificate",
            request(
                &digest,
                &sig,
                serde_json::json!({"x509Certificate": {"rawBytes": b64(b"nope")}}),
                "PKIX_ECDSA_P256_SHA_256",
            ),
            "not a DER X.509 certificate",
        ),
        (
            "DSSE",
            serde_json::to_vec(
                &serde_json::json!({"dsseRequestV002": {"envelope": {"payload": "e30=", "payloadType": "x", "signatures": []}, "verifiers": []}}),
            )?,
            "PAE",
        ),
        (
            "unknown field",
            serde_json::to_vec(
                &serde_json::json!({"hashedRekordRequestV002": {"digest": b64(&digest)}, "extra": 1}),
            )?,
            "extra",
        ),
        ("empty body", Vec::new(), "empty"),
        ("no spec", b"{}".to_vec(), "no spec"),
        (
            "missing signature",
            serde_json::to_vec(&serde_json::json!({"hashedRekordRequestV002": {"digest": b64(&digest)}}))?,
            "missing signature",
        ),
    ];
    for (what, body, says) in cases {
        let e = refused(&body)?;
        assert!(e.to_string().contains(says), "{what}: {e}");
    }
    Ok(())
}

#[test]
fn the_reply_carries_every_field_rekor_v2_clients_read() -> anyhow::Result<()> {
    let signer = cairn_tlog::Signer::from_seed("log.example", [5; 32])?;
    let body = b"{}".to_vec();
    let leaf = cairn_tlog::hash::leaf_hash(&body);
    let cp = cairn_tlog::Checkpoint {
        origin: "log.example".into(),
        size: 1,
        root: leaf,
        extensions: Vec::new(),
    };
    let mut note = cairn_tlog::Note::new(cp.to_text())?;
    note.sign(&signer);
    let entry = LogEntry {
        index: 0,
        log_id: cairn_sigstore::log_id(&signer.verifier()),
        body: body.clone(),
        proof: Vec::new(),
        checkpoint: note.to_bytes(),
    };
    let v: serde_json::Value = serde_json::from_str(&entry.to_json().map_err(anyhow::Error::msg)?)?;
    assert_eq!(v["logIndex"], "0");
    assert_eq!(v["inclusionProof"]["logIndex"], "0");
    assert_eq!(v["inclusionProof"]["treeSize"], "1");
    assert_eq!(v["inclusionProof"]["hashes"], serde_json::json!([]));
    assert_eq!(v["inclusionProof"]["rootHash"], b64(leaf.as_bytes()));
    assert_eq!(v["integratedTime"], "0");
    assert_eq!(v["kindVersion"]["kind"], "hashedrekord");
    assert_eq!(v["kindVersion"]["version"], "0.0.2");
    assert_eq!(v["canonicalizedBody"], b64(&body));
    assert!(v.get("inclusionPromise").is_none());
    // The log id is SHA-256(origin || "\n" || 0x01 || key), and its first four bytes are the key id
    // on the checkpoint's signature line.
    let mut h = sha2::Sha256::new();
    h.update(b"log.example\n\x01");
    h.update(signer.verifier().public_key());
    let id = h.finalize();
    assert_eq!(v["logId"]["keyId"], b64(&id));
    assert_eq!(u32::from_be_bytes([id[0], id[1], id[2], id[3]]), signer.key_id());
    // The protobuf form parses back from the JSON with the Sigstore types (no unknown fields).
    let parsed: cairn_sigstore::pb::rekor::v1::TransparencyLogEntry = serde_json::from_value(v)?;
    assert_eq!(parsed, entry.to_proto().map_err(anyhow::Error::msg)?);
    // With a proof of several hashes, at an index past 0, the same holds.
    let entry = LogEntry {
        index: 5,
        proof: vec![
            leaf,
            cairn_tlog::hash::leaf_hash(b"x"),
            cairn_tlog::hash::leaf_hash(b"y"),
        ],
        ..entry
    };
    let json = entry.to_json().map_err(anyhow::Error::msg)?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    assert_eq!(
        v["inclusionProof"]["hashes"][2],
        b64(cairn_tlog::hash::leaf_hash(b"y").as_bytes())
    );
    assert_eq!(v["logIndex"], "5");
    let parsed: cairn_sigstore::pb::rekor::v1::TransparencyLogEntry = serde_json::from_str(&json)?;
    assert_eq!(parsed, entry.to_proto().map_err(anyhow::Error::msg)?);
    Ok(())
}
