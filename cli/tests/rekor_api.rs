//! The Rekor v2 API of the embedded default's Sigstore shard, through the real binary, over HTTP and
//! gRPC: a signed hashedrekord request answers 201 with a `TransparencyLogEntry` whose body is the
//! JCS/protojson bytes computed here independently and whose inclusion proof verifies against the
//! shard's signed checkpoint; the same request again is 409 with `x-log-index` (gRPC `ALREADY_EXISTS`);
//! a table of bad requests gets its status and message with nothing appended; a frozen shard is 405.
//! The shard's files are served by its origin as `Host` too (virtual hosting). And Rekor v2 logs on a
//! schedule, listed in the trust documents ahead of their windows.

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
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    // The same by `:authority` over HTTP/2 (which carries no `Host`; what a Go client sends over TLS,
    // where the listener offers h2), and by a host written in capitals with a trailing dot.
    let addr: std::net::SocketAddr = server.http.trim_start_matches("http://").parse()?;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve(&shard.origin, addr)
        .build()?;
    let r = h2
        .get(format!("http://{}:{port}/api/v2/checkpoint", shard.origin))
        .send()
        .await?;
    let (status, version) = (r.status(), r.version());
    let text = r.text().await?;
    anyhow::ensure!(
        status == 200
            && version == reqwest::Version::HTTP_2
            && text.starts_with(&format!("{}\n", shard.origin)),
        "/api/v2/checkpoint by :authority over HTTP/2: {status} {version:?} {text}"
    );
    let r = http
        .get(format!("{}/checkpoint", server.http))
        .header("host", format!("{}.:{port}", shard.origin.to_ascii_uppercase()))
        .send()
        .await?;
    anyhow::ensure!(
        r.status() == 200,
        "/checkpoint by a host in capitals: {}",
        r.status()
    );
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
    // A declared length past the limit is refused before its body is read: the answer comes while
    // the client has sent only the headers.
    let mut conn = tokio::net::TcpStream::connect(server.http.trim_start_matches("http://")).await?;
    conn.write_all(
        b"POST /api/v2/log/entries HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 1073741824\r\n\r\n",
    )
    .await?;
    let answer = async {
        let mut got = Vec::new();
        let mut buf = [0; 4096];
        loop {
            let n = conn.read(&mut buf).await?;
            got.extend_from_slice(&buf[..n]);
            if n == 0 || String::from_utf8_lossy(&got).contains("bytes (") {
                return anyhow::Ok(String::from_utf8_lossy(&got).into_owned());
            }
        }
    };
    let head = tokio::time::timeout(std::time::Duration::from_secs(10), answer)
        .await
        .map_err(|_| {
            anyhow::anyhow!("no answer to a 1 GiB declared body within 10 s: it is being waited for")
        })??;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 413") && head.contains("limit is 4194304 bytes"),
        "1 GiB declared: {head}"
    );
    // A URL naming no Sigstore shard is 404, whatever the body: the client is told its URL is wrong.
    let (fresh_digest, fresh_sig) = signer.sign(b"an artifact logged nowhere")?;
    let good = serde_json::to_vec(&signer.request(&fresh_digest, &fresh_sig, "PKIX_ECDSA_P256_SHA_256"))?;
    for (path, says) in [
        ("/logs/banana", "no shard \"banana\""),
        ("/logs/99", "no shard \"99\""),
        ("/logs/1", "shard 1 is not a Sigstore shard"),
    ] {
        let reply = http
            .post(format!("{}{path}/api/v2/log/entries", server.http))
            .header("content-type", "application/json")
            .body(good.clone())
            .send()
            .await?;
        let status = reply.status();
        let json: serde_json::Value = serde_json::from_slice(&reply.bytes().await?)?;
        anyhow::ensure!(
            status == 404 && json["message"].as_str().is_some_and(|m| m.contains(says)),
            "{path}: {status} {json}"
        );
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

/// Rekor v2 logs on a schedule (`[schedule] kind = "sigstore"`, windows of 10 s created 9 s ahead, no
/// configured Sigstore shard): the trust documents list each window's log before the window opens,
/// with its start and end; an entry submitted to the API lands in the log whose window holds its
/// acknowledgment, the next window's log takes over at the boundary, and the frozen log keeps its
/// entry with the end of its window. Each log is read by its host name (virtual hosting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_sigstore_logs_are_in_the_trust_documents_ahead_of_their_windows() -> anyhow::Result<()> {
    use cairn_sigstore::pb::trustroot::v1::{SigningConfig, TrustedRoot};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    const PERIOD: u64 = 10;
    let unix = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let seed = d.join("schedule.seed");
    std::fs::write(&seed, "3c".repeat(32))?;
    std::fs::set_permissions(&seed, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    // Window 0 opens 8 s from now; its log is created at once (9 s lead time) and listed until then
    // as planned.
    let start = unix() + 8;
    let config = d.join("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{dir}/data\"\nroles = [\"sequencer\", \"log\", \"tiles\", \"tsa\"]\n\n\
             [schedule]\nperiod_s = {PERIOD}\nlead_time_s = 9\norigin = \"w{{n}}.cairn.test\"\n\
             start = {start}\nfirst_id = 10\nseed_file = \"{seed}\"\nkind = \"sigstore\"\n\
             base_url = \"http://{{origin}}\"\n",
            dir = d.display(),
            seed = seed.display()
        ),
    )?;
    let config = config.display().to_string();
    let mut args = vec!["--config", config.as_str()];
    args.extend(common::LOOPBACK);
    let server = Server::start(d, &args)?;
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let url = format!("{}{path}", server.http);
        let http = http.clone();
        async move { anyhow::Ok(http.get(url).send().await?.bytes().await?) }
    };
    // (start, end) of a base URL's log in the trusted root and in the signing config.
    let windows = |root: &TrustedRoot, signing: &SigningConfig, base: &str| {
        let span = |r: Option<&cairn_sigstore::pb::common::v1::TimeRange>| {
            r.map(|r| {
                (
                    r.start.as_ref().map_or(0, |t| t.seconds as u64),
                    r.end.as_ref().map(|t| t.seconds as u64),
                )
            })
        };
        (
            span(
                root.tlogs
                    .iter()
                    .find(|t| t.base_url == base)
                    .and_then(|t| t.public_key.as_ref()?.valid_for.as_ref()),
            ),
            span(
                signing
                    .rekor_tlog_urls
                    .iter()
                    .find(|t| t.url == base)
                    .and_then(|t| t.valid_for.as_ref()),
            ),
        )
    };
    let documents = || async {
        let root: TrustedRoot = serde_json::from_slice(&get("/trusted_root.json").await?)?;
        let signing: SigningConfig = serde_json::from_slice(&get("/signing_config.json").await?)?;
        anyhow::Ok((root, signing))
    };
    let poll = |what: String| {
        let deadline = Instant::now() + Duration::from_secs(3 * PERIOD);
        move || {
            anyhow::ensure!(Instant::now() < deadline, "{what}: not after {} s", 3 * PERIOD);
            Ok(())
        }
    };

    // Ahead of time: window 0's log in both documents before it opens, with its window.
    let w0 = "http://w0.cairn.test";
    let w1 = "http://w1.cairn.test";
    let window0 = (start, Some(start + PERIOD));
    let check = poll("window 0's log in the trust documents".into());
    loop {
        let (root, signing) = documents().await?;
        let listed = windows(&root, &signing, w0);
        if listed.0.is_some() {
            anyhow::ensure!(unix() < start, "listed only once its window opened");
            anyhow::ensure!(
                listed == (Some(window0), Some(window0)),
                "window 0's log (trusted root, signing config): {listed:?}"
            );
            break;
        }
        check()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An entry submitted in window 0 is logged in window 0's log.
    let site = HttpLog::new(&server.http);
    let signer = Key::new()?;
    let submit = |artifact: &'static [u8]| {
        let http = http.clone();
        let url = format!("{}/api/v2/log/entries", server.http);
        let signer = &signer;
        async move {
            let (digest, sig) = signer.sign(artifact)?;
            let body = serde_json::to_vec(&signer.request(&digest, &sig, "PKIX_ECDSA_P256_SHA_256"))?;
            let check = poll("a 201".into());
            loop {
                let sent = unix();
                let reply = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?;
                let status = reply.status();
                let bytes = reply.bytes().await?;
                if status == 201 {
                    let entry: TransparencyLogEntry = serde_json::from_slice(&bytes)?;
                    return anyhow::Ok((entry, sent, unix(), body));
                }
                // Before window 0 opens no Sigstore log takes entries: 503 (retryable) while its
                // log is planned; retried.
                anyhow::ensure!(status == 503, "{status}: {}", String::from_utf8_lossy(&bytes));
                check()?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let logged_in = |entry: &TransparencyLogEntry| {
        let site = &site;
        let key_id = entry
            .log_id
            .as_ref()
            .map(|l| l.key_id.clone())
            .unwrap_or_default();
        async move {
            let shards = site.shards().await?;
            let shard = shards
                .iter()
                .find(|s| {
                    s.verifier()
                        .is_ok_and(|k| cairn_sigstore::log_id(&k).to_vec() == key_id)
                })
                .ok_or_else(|| anyhow::anyhow!("no shard has the entry's log id"))?;
            anyhow::Ok((shard.id, shard.origin.clone()))
        }
    };
    let (first, sent, acked, first_body) = submit(b"in window 0").await?;
    let shard = logged_in(&first).await?;
    let boundary = start + PERIOD;
    let expect: &[u32] = match (sent < boundary, acked < boundary) {
        (true, true) => &[10],
        (true, false) => &[10, 11],
        _ => &[11],
    };
    anyhow::ensure!(
        expect.contains(&shard.0),
        "sent at {sent}, acknowledged at {acked} (window 1 from {boundary}), logged in {shard:?}"
    );

    // Window 1's log takes over at the boundary; window 0's keeps its entry, ended with its window.
    let check = poll("window 0's end in the trust documents".into());
    loop {
        let (root, signing) = documents().await?;
        let (in_root, in_signing) = windows(&root, &signing, w0);
        if in_root == Some(window0) && unix() >= start + PERIOD {
            anyhow::ensure!(
                in_signing == Some(window0),
                "window 0 in the signing config: {in_signing:?}"
            );
            let next = windows(&root, &signing, w1);
            let window1 = (start + PERIOD, Some(start + 2 * PERIOD));
            anyhow::ensure!(next == (Some(window1), Some(window1)), "window 1's log: {next:?}");
            break;
        }
        check()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (second, sent, acked, _) = submit(b"in window 1").await?;
    anyhow::ensure!(sent >= boundary, "sent at {sent}");
    let shard = logged_in(&second).await?;
    anyhow::ensure!(
        shard.0 == 11,
        "acknowledged at {acked} in window 1 and logged in {shard:?}"
    );
    // Its leader freezes window 0's log right after the window ends (not at the same instant).
    let check = poll("window 0's shard listed frozen".into());
    while !site
        .shards()
        .await?
        .iter()
        .any(|s| s.id == 10 && s.state == cairn_store::Lifecycle::Frozen)
    {
        check()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Virtual hosting: each log by its host name.
    let port = server.http.rsplit(':').next().unwrap_or_default();
    for host in ["w0.cairn.test", "w1.cairn.test"] {
        let text = http
            .get(format!("{}/api/v2/checkpoint", server.http))
            .header("host", format!("{host}:{port}"))
            .send()
            .await?
            .text()
            .await?;
        anyhow::ensure!(
            text.starts_with(&format!("{host}\n")),
            "checkpoint by Host {host}: {text}"
        );
    }

    // Restarted after the rotation, the server has seen no earlier set of active logs, yet within
    // the reroute grace a retry of window 0's entry is answered from the log of its first attempt
    // (409 with its index there), not logged again in window 1's: the windows tell it.
    anyhow::ensure!(server.stop()?.success(), "unclean exit");
    let server = Server::start(d, &args)?;
    let url = format!("{}/api/v2/log/entries", server.http);
    let check = poll("an answer to the retry".into());
    let (status, index) = loop {
        let reply = http
            .post(&url)
            .header("content-type", "application/json")
            .body(first_body.clone())
            .send()
            .await?;
        let status = reply.status();
        let index = reply
            .headers()
            .get("x-log-index")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = reply.text().await?;
        if status != 503 {
            break (status, index.ok_or_else(|| anyhow::anyhow!("{status}: {text}"))?);
        }
        check()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    anyhow::ensure!(
        status == 409 && index == first.log_index.to_string(),
        "the retry after a restart: {status}, x-log-index {index}, logged first at {}",
        first.log_index
    );
    anyhow::ensure!(server.stop()?.success(), "unclean exit");
    Ok(())
}
