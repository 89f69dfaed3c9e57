//! The Rekor v2 API of the embedded default's Sigstore shard, through the real binary, over HTTP and
//! gRPC: a signed hashedrekord request answers 201 with a `TransparencyLogEntry` whose body is the
//! JCS/protojson bytes computed here independently and whose inclusion proof verifies against the
//! shard's signed checkpoint; the same request again is 409 with `x-log-index` (gRPC `ALREADY_EXISTS`);
//! a table of bad requests gets its status and message with nothing appended; a frozen shard is 405.
//! The shard's files are served by its origin as `Host` too (virtual hosting).

mod common;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as lc, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cairn_client::HttpLog;
use cairn_proto::rekor_v2::rekor_client::RekorClient;
use cairn_sigstore::pb::rekor::v1::TransparencyLogEntry;
use cairn_sigstore::pb::rekor::v2::CreateEntryRequest;
use cairn_tlog::{Checkpoint, Hash, Note, VerifierKey};
use common::{Server, cairn};
use sha2::Digest;

struct Key {
    pair: EcdsaKeyPair,
    spki: Vec<u8>,
}

impl Key {
    fn new() -> anyhow::Result<Self> {
        let alg = &lc::ECDSA_P256_SHA256_ASN1_SIGNING;
        let pair = EcdsaKeyPair::from_pkcs8(
            alg,
            EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new())?.as_ref(),
        )?;
        let spki = pair.public_key().as_der()?.as_ref().to_vec();
        Ok(Self { pair, spki })
    }

    /// (digest, signature) of an artifact.
    fn sign(&self, artifact: &[u8]) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let sig = self.pair.sign(&SystemRandom::new(), artifact)?.as_ref().to_vec();
        Ok((sha2::Sha256::digest(artifact).to_vec(), sig))
    }

    fn request(&self, digest: &[u8], sig: &[u8], details: &str) -> serde_json::Value {
        serde_json::json!({ "hashedRekordRequestV002": {
            "digest": STANDARD.encode(digest),
            "signature": { "content": STANDARD.encode(sig), "verifier": {
                "publicKey": { "rawBytes": STANDARD.encode(&self.spki) }, "keyDetails": details } } } })
    }
}

/// The body Cairn must log, written out from the .proto's JSON names with keys in JCS order.
fn expected_body(digest: &[u8], sig: &[u8], spki: &[u8]) -> String {
    format!(
        concat!(
            r#"{{"apiVersion":"0.0.2","kind":"hashedrekord","spec":{{"hashedRekordV002":{{"data":{{"#,
            r#""algorithm":"SHA2_256","digest":"{}"}},"signature":{{"content":"{}","verifier":{{"#,
            r#""keyDetails":"PKIX_ECDSA_P256_SHA_256","publicKey":{{"rawBytes":"{}"}}}}}}}}}}}}"#
        ),
        STANDARD.encode(digest),
        STANDARD.encode(sig),
        STANDARD.encode(spki)
    )
}

/// Checks an entry against the shard's key: signed checkpoint, inclusion of the body at its index.
fn check_entry(e: &TransparencyLogEntry, key: &VerifierKey, body: &[u8]) -> anyhow::Result<()> {
    anyhow::ensure!(
        e.canonicalized_body == body,
        "the logged body differs from the request's"
    );
    anyhow::ensure!(
        e.log_id.as_ref().map(|l| l.key_id.clone()) == Some(key.key_hash().to_vec()),
        "logId"
    );
    let proof = e
        .inclusion_proof
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no inclusion proof"))?;
    let note = proof
        .checkpoint
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no checkpoint"))?;
    let note = Note::open(note.envelope.as_bytes(), std::slice::from_ref(key))?;
    let cp = Checkpoint::parse(&note.text)?;
    anyhow::ensure!(
        proof.tree_size as u64 == cp.size && proof.root_hash == cp.root.as_bytes(),
        "proof/checkpoint"
    );
    let hashes = proof
        .hashes
        .iter()
        .map(|h| Hash::from_slice(h))
        .collect::<Result<Vec<_>, _>>()?;
    cairn_tlog::verify_inclusion(
        &cairn_tlog::leaf_hash(body),
        e.log_index as u64,
        cp.size,
        &hashes,
        &cp.root,
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekor_v2_api_over_http_and_grpc() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start_loopback(dir.path())?;
    let site = HttpLog::new(&server.http);
    let shard = site
        .shards()
        .await?
        .into_iter()
        .find(|s| s.kind == cairn_store::ShardKind::Sigstore)
        .ok_or_else(|| anyhow::anyhow!("no Sigstore shard"))?;
    let key = shard.verifier()?;
    let url = format!("{}{}/api/v2/log/entries", server.http, shard.http_prefix);
    let http = reqwest::Client::new();
    let post = |body: Vec<u8>| {
        http.post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    // HTTP: 201 with the entry, then 409 with its index.
    let signer = Key::new()?;
    let (digest, sig) = signer.sign(b"artifact one")?;
    let req = serde_json::to_vec(&signer.request(&digest, &sig, "PKIX_ECDSA_P256_SHA_256"))?;
    let reply = post(req.clone()).await?;
    anyhow::ensure!(reply.status() == 201, "first submission: {}", reply.status());
    let json: serde_json::Value = serde_json::from_slice(&reply.bytes().await?)?;
    for field in [
        "logIndex",
        "logId",
        "kindVersion",
        "integratedTime",
        "inclusionProof",
        "canonicalizedBody",
    ] {
        anyhow::ensure!(json.get(field).is_some(), "the reply has no {field}: {json}");
    }
    anyhow::ensure!(json["inclusionProof"]["hashes"].is_array(), "hashes: {json}");
    let entry: TransparencyLogEntry = serde_json::from_value(json)?;
    check_entry(
        &entry,
        &key,
        expected_body(&digest, &sig, &signer.spki).as_bytes(),
    )?;
    // Virtual hosting: the shard's origin as `Host` reads the shard from the root and under
    // /api/v2/; another host gets 404 there.
    let port = server.http.rsplit(':').next().unwrap_or_default();
    for path in ["/checkpoint", "/api/v2/checkpoint"] {
        let r = http
            .get(format!("{}{path}", server.http))
            .header("host", format!("{}:{port}", shard.origin))
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        anyhow::ensure!(
            status == 200 && text.starts_with(&format!("{}\n", shard.origin)),
            "{path} by Host: {status} {text}"
        );
    }
    let other = http.get(format!("{}/checkpoint", server.http)).send().await?;
    anyhow::ensure!(
        other.status() == 404,
        "/checkpoint without the shard's Host: {}",
        other.status()
    );

    let again = post(req).await?;
    anyhow::ensure!(again.status() == 409, "duplicate: {}", again.status());
    anyhow::ensure!(
        again.headers().get("x-log-index").and_then(|v| v.to_str().ok())
            == Some(&entry.log_index.to_string()),
        "x-log-index"
    );

    // gRPC: the same service, the same answers.
    let mut grpc = RekorClient::connect(server.grpc.clone()).await?;
    let (digest2, sig2) = signer.sign(b"artifact two")?;
    let req2: CreateEntryRequest =
        serde_json::from_value(signer.request(&digest2, &sig2, "PKIX_ECDSA_P256_SHA_256"))?;
    let e2 = grpc.create_entry(req2.clone()).await?.into_inner();
    check_entry(&e2, &key, expected_body(&digest2, &sig2, &signer.spki).as_bytes())?;
    let dup = grpc
        .create_entry(req2)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("duplicate accepted"))?;
    anyhow::ensure!(
        dup.code() == tonic::Code::AlreadyExists,
        "gRPC duplicate: {dup:?}"
    );
    anyhow::ensure!(
        dup.metadata().get("x-log-index").and_then(|v| v.to_str().ok()) == Some(&e2.log_index.to_string()),
        "gRPC x-log-index"
    );
    let size_before = common::verified_shard_covering(&site, &shard, e2.log_index as usize + 1)
        .await?
        .entries
        .len() as u64;

    // Bad requests: status, a message that says what to fix, and nothing appended.
    let (_, other_sig) = signer.sign(b"something else")?;
    let bad: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "bad signature",
            serde_json::to_vec(&signer.request(&digest, &other_sig, "PKIX_ECDSA_P256_SHA_256"))?,
            400,
            "does not verify",
        ),
        (
            "digest length",
            serde_json::to_vec(&signer.request(&digest[..16], &sig, "PKIX_ECDSA_P256_SHA_256"))?,
            400,
            "digests are 32 bytes",
        ),
        (
            "unknown keyDetails",
            serde_json::to_vec(&signer.request(&digest, &sig, "PKIX_MYSTERY"))?,
            400,
            "PKIX_MYSTERY",
        ),
        (
            "key/keyDetails mismatch",
            serde_json::to_vec(&signer.request(&digest, &sig, "PKIX_ECDSA_P521_SHA_512"))?,
            400,
            "needs a ECDSA P-521 key",
        ),
        (
            "pure Ed25519",
            serde_json::to_vec(&signer.request(&digest, &sig, "PKIX_ED25519"))?,
            400,
            "Ed25519ph",
        ),
        (
            "RSA-PSS",
            serde_json::to_vec(&signer.request(&digest, &sig, "PKIX_RSA_PSS_2048_SHA256"))?,
            400,
            "RSA-PSS",
        ),
        (
            "garbage DER",
            serde_json::to_vec(
                &serde_json::json!({"hashedRekordRequestV002": {"digest": STANDARD.encode(&digest), "signature": {"content": STANDARD.encode(&sig), "verifier": {"publicKey": {"rawBytes": "AAEC"}, "keyDetails": "PKIX_ECDSA_P256_SHA_256"}}}}),
            )?,
            400,
            "SubjectPublicKeyInfo",
        ),
        (
            "DSSE",
            br#"{"dsseRequestV002": {"verifiers": []}}"#.to_vec(),
            400,
            "PAE",
        ),
        (
            "unknown field",
            br#"{"hashedRekordRequestV002": {}, "integratedTime": "5"}"#.to_vec(),
            400,
            "integratedTime",
        ),
        ("empty body", Vec::new(), 400, "empty"),
        ("5 MiB body", vec![b' '; 5 << 20], 413, "limit is 4194304 bytes"),
    ];
    for (what, body, status, says) in bad {
        let reply = post(body).await?;
        let got = reply.status().as_u16();
        let text = reply.text().await?;
        anyhow::ensure!(got == status && text.contains(says), "{what}: {got} {text}");
    }
    anyhow::ensure!(
        site.reader(&shard)?.checkpoint().await?.checkpoint.size == size_before,
        "a bad request was appended"
    );

    // The forwarding marker of cairn.v1.Log is not a way around the checks: a write that claims to be
    // forwarded for the Sigstore shard must carry checked, canonical hashedrekord bodies.
    let mut raw = cairn_proto::v1::log_client::LogClient::connect(server.grpc.clone()).await?;
    let forwarded = |entries: Vec<Vec<u8>>| {
        let mut r = tonic::Request::new(cairn_proto::v1::AddEntriesRequest {
            entries,
            wait: cairn_proto::v1::Wait::Sequenced as i32,
        });
        r.metadata_mut()
            .insert(cairn_proto::metadata::FORWARDED_SHARD, shard.id.into());
        r
    };
    let refused = raw.add_entries(forwarded(vec![b"opaque bytes".to_vec()])).await;
    anyhow::ensure!(
        refused.as_ref().err().map(|s| s.code()) == Some(tonic::Code::InvalidArgument),
        "opaque bytes reached the Sigstore shard: {refused:?}"
    );
    let spaced = expected_body(&digest, &sig, &signer.spki)
        .replace(',', ", ")
        .into_bytes();
    let refused = raw.add_entries(forwarded(vec![spaced])).await;
    anyhow::ensure!(
        refused.as_ref().err().map(|s| s.message().contains("canonical")) == Some(true),
        "a non-canonical body reached the Sigstore shard: {refused:?}"
    );
    anyhow::ensure!(
        site.reader(&shard)?.checkpoint().await?.checkpoint.size == size_before,
        "appended"
    );
    let (digest4, sig4) = signer.sign(b"artifact four")?;
    let canonical = expected_body(&digest4, &sig4, &signer.spki).into_bytes();
    let accepted = raw.add_entries(forwarded(vec![canonical])).await?.into_inner();
    anyhow::ensure!(accepted.results[0].shard_id == shard.id, "{accepted:?}");

    // A frozen shard (the only Sigstore one) takes nothing: 405, naming where to go instead.
    let (frozen, _, err) = cairn(
        dir.path(),
        &["shard", "freeze", "--server", &server.grpc, &shard.id.to_string()],
        None,
    )?;
    anyhow::ensure!(frozen, "freeze: {err}");
    let (digest3, sig3) = signer.sign(b"artifact three")?;
    let reply = post(serde_json::to_vec(&signer.request(
        &digest3,
        &sig3,
        "PKIX_ECDSA_P256_SHA_256",
    ))?)
    .await?;
    let got = reply.status().as_u16();
    let text = reply.text().await?;
    anyhow::ensure!(
        got == 405 && text.contains("active Sigstore shard"),
        "frozen: {got} {text}"
    );
    anyhow::ensure!(server.stop()?.success(), "unclean exit");
    Ok(())
}
