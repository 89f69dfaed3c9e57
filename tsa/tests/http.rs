//! The HTTP routes through `tower::ServiceExt::oneshot`: a good request, every kind of bad one with its status
//! and a message saying what to fix, and the certificate chain.

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use cairn_tsa::{Authority, router};
use common::*;
use der::Decode;
use tower::ServiceExt;

const QUERY: &str = "application/timestamp-query";
const REPLY: &str = "application/timestamp-reply";

fn authority() -> Arc<Authority> {
    Arc::new(Authority::generate("Cairn test TSA", Duration::from_secs(3600)).expect("generate"))
}

/// Sends `body` with `content_type`; returns the status, the content type and the body.
async fn post(
    authority: &Arc<Authority>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> anyhow::Result<(StatusCode, String, Vec<u8>)> {
    let mut request = Request::post("/api/v1/timestamp");
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    let response = router(authority.clone())
        .oneshot(request.body(Body::from(body))?)
        .await?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await?
        .to_vec();
    Ok((status, content_type, body))
}

/// The failInfo BIT STRING for one failure, computed by hand from RFC 3161 §2.4.2 and X.690 §11.2.2:
/// (unused bits, octets).
fn fail_bits(bit: usize) -> (u8, Vec<u8>) {
    match bit {
        0 => (7, vec![0x80]),              // badAlg
        2 => (5, vec![0x20]),              // badRequest
        5 => (2, vec![0x04]),              // badDataFormat
        15 => (0, vec![0x00, 0x01]),       // unacceptedPolicy
        16 => (7, vec![0x00, 0x00, 0x80]), // unacceptedExtension
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn bad_requests_are_refused_with_what_to_fix() -> anyhow::Result<()> {
    let authority = authority();
    let good = Req::sha256([9; 32]);
    let cases: Vec<(&str, Vec<u8>, usize, &str)> = vec![
        (
            "garbage",
            vec![0xde, 0xad, 0xbe, 0xef],
            5,
            "not a DER-encoded RFC 3161 TimeStampReq",
        ),
        ("empty body", vec![], 5, "empty request"),
        (
            "trailing bytes",
            [good.der(), vec![0]].concat(),
            5,
            "not a DER-encoded",
        ),
        (
            "MD5",
            Req {
                hash: MD5,
                digest: vec![1; 16],
                ..good.clone()
            }
            .der(),
            0,
            "1.2.840.113549.2.5",
        ),
        (
            "SHA-1",
            Req {
                hash: SHA1,
                digest: vec![1; 20],
                ..good.clone()
            }
            .der(),
            0,
            "SHA-256, SHA-384 or SHA-512",
        ),
        (
            "SHA-256 parameters not NULL",
            {
                // NULL parameters replaced by an OCTET STRING of the same length: 05 00 -> 04 00.
                let mut der = good.der();
                let at = der.windows(2).position(|w| w == [0x05, 0x00]).context("NULL")?;
                der[at] = 0x04;
                der
            },
            0,
            "absent or NULL",
        ),
        (
            "short digest",
            Req {
                digest: vec![1; 20],
                ..good.clone()
            }
            .der(),
            5,
            "a SHA-256 digest is 32 bytes",
        ),
        (
            "hex digest",
            Req {
                digest: vec![b'a'; 64],
                ..good.clone()
            }
            .der(),
            5,
            "not the data or its hex",
        ),
        (
            "another policy",
            Req {
                policy: Some(oid("1.3.6.1.4.1.57264.2")),
                ..good.clone()
            }
            .der(),
            15,
            "omit reqPolicy",
        ),
        (
            "extensions",
            Req {
                extensions: true,
                ..good.clone()
            }
            .der(),
            16,
            "without extensions",
        ),
        (
            "huge nonce",
            Req {
                nonce: Some(vec![0x11; 33]),
                ..good.clone()
            }
            .der(),
            2,
            "at most 32",
        ),
    ];
    for (name, body, bit, hint) in cases {
        let (status, content_type, body) = post(&authority, Some(QUERY), body).await?;
        ensure!(status == StatusCode::BAD_REQUEST, "{name}: {status}");
        ensure!(content_type == REPLY, "{name}: content type {content_type}");
        let resp = RawResp::from_der(&body).with_context(|| format!("{name}: rejection TimeStampResp"))?;
        ensure!(resp.status.status == 2, "{name}: status {}", resp.status.status);
        ensure!(resp.token.is_none(), "{name}: a rejection with a token");
        let fail_info = resp
            .status
            .fail_info
            .with_context(|| format!("{name}: no failInfo"))?;
        let (unused, octets) = fail_bits(bit);
        ensure!(
            fail_info.unused_bits() == unused && fail_info.raw_bytes() == octets.as_slice(),
            "{name}: failInfo {fail_info:?}, want bit {bit}"
        );
        let text = resp.status.status_string.unwrap_or_default().join(" ");
        ensure!(
            text.contains(hint),
            "{name}: statusString {text:?} lacks {hint:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn wrong_content_type_is_415_and_large_body_413() -> anyhow::Result<()> {
    let authority = authority();
    let good = Req::sha256([9; 32]).der();
    for content_type in [
        None,
        Some("application/octet-stream"),
        Some("application/timestamp-reply"),
    ] {
        let (status, _, body) = post(&authority, content_type, good.clone()).await?;
        ensure!(
            status == StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}: {status}"
        );
        let text = String::from_utf8(body)?;
        ensure!(
            text.contains("Content-Type: application/timestamp-query"),
            "{content_type:?}: {text}"
        );
    }
    // Media types are case-insensitive and may carry parameters.
    let (status, _, _) = post(
        &authority,
        Some("Application/TimeStamp-Query; charset=binary"),
        good,
    )
    .await?;
    ensure!(status == StatusCode::OK, "{status}");

    for size in [64 * 1024 + 1, 1024 * 1024] {
        let (status, _, body) = post(&authority, Some(QUERY), vec![0x30; size]).await?;
        ensure!(status == StatusCode::PAYLOAD_TOO_LARGE, "{size} bytes: {status}");
        let text = String::from_utf8(body)?;
        ensure!(text.contains("larger than 65536 bytes"), "{text}");
    }
    // Exactly the limit is read (and refused as a bad request, not as too large).
    let (status, _, _) = post(&authority, Some(QUERY), vec![0x30; 64 * 1024]).await?;
    ensure!(status == StatusCode::BAD_REQUEST, "{status}");
    Ok(())
}

#[tokio::test]
async fn a_good_request_is_granted() -> anyhow::Result<()> {
    let authority = authority();
    let request = Req::sha256([9; 32]);
    let (status, content_type, body) = post(&authority, Some(QUERY), request.der()).await?;
    ensure!(status == StatusCode::OK, "{status}");
    ensure!(content_type == REPLY, "{content_type}");
    let granted = parse_granted(leak(body))?;
    ensure!(granted.tst.message_imprint.hashed_message.as_bytes() == [9; 32]);
    ensure!(granted.tst.nonce.map(|n| n.as_bytes().to_vec()) == request.nonce);

    // A 256-bit nonce with its top bit set: 33 bytes of DER (a 0x00 sign byte), 32 of magnitude.
    let mut nonce = vec![0x00];
    nonce.extend([0xf1; 32]);
    let request = Req {
        nonce: Some(nonce),
        ..Req::sha256([9; 32])
    };
    let (status, _, body) = post(&authority, Some(QUERY), request.der()).await?;
    ensure!(status == StatusCode::OK, "a 256-bit nonce: {status}");
    let granted = parse_granted(leak(body))?;
    ensure!(granted.tst.nonce.map(|n| n.as_bytes().to_vec()) == request.nonce);
    Ok(())
}

#[tokio::test]
async fn certchain_is_leaf_then_root() -> anyhow::Result<()> {
    let authority = authority();
    let request = Request::get("/api/v1/timestamp/certchain").body(Body::empty())?;
    let response = router(authority.clone()).oneshot(request).await?;
    ensure!(response.status() == StatusCode::OK);
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .context("no content type")?;
    ensure!(
        content_type == "application/pem-certificate-chain",
        "{content_type:?}"
    );
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
    let chain = x509_cert::Certificate::load_pem_chain(&body)?;
    ensure!(chain.len() == 2, "{} certificates", chain.len());
    let der: Vec<Vec<u8>> = chain.iter().map(der::Encode::to_der).collect::<Result<_, _>>()?;
    ensure!(der == authority.chain_der(), "not the authority's chain");
    ensure!(chain[0].tbs_certificate.subject.to_string() == "CN=Cairn test TSA");
    ensure!(chain[1].tbs_certificate.subject.to_string() == "CN=Cairn test TSA Root CA");
    Ok(())
}

#[tokio::test]
async fn the_json_form_is_answered_like_the_der_one() -> anyhow::Result<()> {
    use base64::Engine;
    let authority = authority();
    // What sigstore-js sends: the SHA-256 of the signature, base64, and the algorithm's name.
    let digest = [5u8; 32];
    let body = serde_json::json!({
        "artifactHash": base64::engine::general_purpose::STANDARD.encode(digest),
        "hashAlgorithm": "sha256",
        "certificates": true,
        "nonce": 1234567,
    });
    let (status, content_type, reply) = post(
        &authority,
        Some("application/json"),
        body.to_string().into_bytes(),
    )
    .await?;
    ensure!(status == StatusCode::OK, "{status}");
    ensure!(content_type == REPLY, "{content_type}");
    let granted = parse_granted(leak(reply))?;
    ensure!(granted.tst.message_imprint.hashed_message.as_bytes() == digest);
    ensure!(
        granted.tst.nonce.map(|n| n.as_bytes().to_vec()) == Some(1234567u32.to_be_bytes()[1..].to_vec()),
        "nonce"
    );
    ensure!(
        granted.signed_data.certificates.is_some(),
        "certificates were asked for"
    );

    // Refused, in JSON: a client's mistake in the JSON, and one the DER checks find.
    for (body, says) in [
        (r#"{"artifactHash": "AAAA"}"#.to_owned(), "hashAlgorithm is missing"),
        (
            serde_json::json!({"artifactHash": base64::engine::general_purpose::STANDARD.encode([1u8; 20]), "hashAlgorithm": "sha256"}).to_string(),
            "a SHA-256 digest is 32 bytes",
        ),
    ] {
        let (status, content_type, reply) =
            post(&authority, Some("application/json; charset=utf-8"), body.clone().into_bytes()).await?;
        let reply: serde_json::Value = serde_json::from_slice(&reply).context("a JSON error")?;
        ensure!(
            status == StatusCode::BAD_REQUEST
                && content_type == "application/json"
                && reply["code"] == 400
                && reply["message"].as_str().is_some_and(|m| m.contains(says)),
            "{body}: {status} {content_type} {reply}"
        );
    }
    Ok(())
}
