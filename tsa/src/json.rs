//! The JSON form of a timestamp request, which Sigstore's timestamp-authority takes beside the DER
//! one and sigstore-js sends (`{"artifactHash": base64 digest, "hashAlgorithm": "sha256"}`, with
//! optional `certificates`, `nonce` and `tsaPolicyOID`). It is turned into the DER `TimeStampReq` it
//! stands for, so both forms meet the same checks; the reply is the same DER `TimeStampResp`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use const_oid::ObjectIdentifier;
use const_oid::db::rfc5912::{ID_SHA_256, ID_SHA_384, ID_SHA_512};
use der::Encode;
use der::asn1::{Int, OctetString};
use serde::Deserialize;
use spki::AlgorithmIdentifier;
use x509_tsp::{MessageImprint, TimeStampReq, TspVersion};

/// A JSON timestamp request. Unknown members are ignored, as the reference server does.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonRequest {
    artifact_hash: Option<String>,
    hash_algorithm: Option<String>,
    #[serde(default)]
    certificates: bool,
    nonce: Option<serde_json::Number>,
    #[serde(rename = "tsaPolicyOID")]
    tsa_policy_oid: Option<String>,
}

/// The DER `TimeStampReq` a JSON request stands for; the error says what to fix.
pub(crate) fn to_der(body: &[u8]) -> Result<Vec<u8>, String> {
    const FORM: &str = r#"send {"artifactHash": "<base64 digest>", "hashAlgorithm": "sha256"}"#;
    let request: JsonRequest =
        serde_json::from_slice(body).map_err(|e| format!("not a JSON timestamp request ({e}): {FORM}"))?;
    let algorithm = request
        .hash_algorithm
        .ok_or_else(|| format!("hashAlgorithm is missing: {FORM}"))?;
    let oid = match algorithm.to_ascii_lowercase().as_str() {
        "sha256" => ID_SHA_256,
        "sha384" => ID_SHA_384,
        "sha512" => ID_SHA_512,
        "sha1" => return Err("hashAlgorithm sha1 is too weak: use sha256, sha384 or sha512".into()),
        _ => {
            return Err(format!(
                "hashAlgorithm {algorithm:?} is not accepted: use sha256, sha384 or sha512"
            ));
        }
    };
    let digest = request
        .artifact_hash
        .ok_or_else(|| format!("artifactHash is missing: {FORM}"))?;
    let digest = STANDARD
        .decode(digest.as_bytes())
        .map_err(|e| format!("artifactHash is not standard base64 ({e})"))?;
    let nonce = match request.nonce {
        None => None,
        Some(n) => {
            let n = n
                .as_u64()
                .ok_or_else(|| format!("nonce {n} is not an integer from 0 to 2^64-1"))?;
            Some(positive_int(n)?)
        }
    };
    let req_policy = match request.tsa_policy_oid.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            text.parse::<ObjectIdentifier>()
                .map_err(|e| format!("tsaPolicyOID {text:?} is not an object identifier ({e})"))?,
        ),
    };
    let request = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: MessageImprint {
            hash_algorithm: AlgorithmIdentifier {
                oid,
                parameters: None,
            },
            hashed_message: OctetString::new(digest).map_err(|e| format!("artifactHash: {e}"))?,
        },
        req_policy,
        nonce,
        cert_req: request.certificates,
        extensions: None,
    };
    request.to_der().map_err(|e| format!("encoding the request: {e}"))
}

/// `n` as a DER INTEGER: big-endian without leading zeros, with a zero byte before a set top bit.
fn positive_int(n: u64) -> Result<Int, String> {
    let bytes = n.to_be_bytes();
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len() - 1);
    let mut minimal = Vec::with_capacity(9);
    if bytes[first] & 0x80 != 0 {
        minimal.push(0);
    }
    minimal.extend_from_slice(&bytes[first..]);
    Int::new(&minimal).map_err(|e| format!("nonce: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Decode;

    #[test]
    fn the_json_form_is_the_der_request_it_stands_for() {
        let digest = [7u8; 32];
        let body = format!(
            r#"{{"artifactHash":"{}","hashAlgorithm":"SHA256","certificates":true,"nonce":18446744073709551615,"tsaPolicyOID":"1.2.3.4","extra":1}}"#,
            STANDARD.encode(digest)
        );
        let der = to_der(body.as_bytes()).unwrap_or_default();
        let request = TimeStampReq::from_der(&der).ok();
        let request = request.as_ref();
        assert_eq!(
            request.map(|r| r.message_imprint.hash_algorithm.oid),
            Some(ID_SHA_256)
        );
        assert_eq!(
            request.map(|r| r.message_imprint.hashed_message.as_bytes()),
            Some(&digest[..])
        );
        assert_eq!(request.map(|r| r.cert_req), Some(true));
        assert_eq!(
            request
                .and_then(|r| r.nonce.as_ref())
                .map(|n| n.as_bytes().to_vec()),
            Some([&[0u8][..], &[0xff; 8]].concat())
        );
        assert_eq!(
            request
                .and_then(|r| r.req_policy)
                .map(|o| o.to_string())
                .as_deref(),
            Some("1.2.3.4")
        );
        for (n, bytes) in [
            (0u64, vec![0u8]),
            (127, vec![127]),
            (128, vec![0, 128]),
            (256, vec![1, 0]),
        ] {
            assert_eq!(positive_int(n).map(|i| i.as_bytes().to_vec()), Ok(bytes), "{n}");
        }
    }

    #[test]
    fn bad_json_requests_say_what_to_fix() {
        for (body, says) in [
            ("", "not a JSON timestamp request"),
            (r#"{"artifactHash":"AAAA"}"#, "hashAlgorithm is missing"),
            (r#"{"hashAlgorithm":"sha256"}"#, "artifactHash is missing"),
            (r#"{"artifactHash":"AAAA","hashAlgorithm":"sha1"}"#, "too weak"),
            (r#"{"artifactHash":"AAAA","hashAlgorithm":"md5"}"#, "not accepted"),
            (
                r#"{"artifactHash":"@@","hashAlgorithm":"sha256"}"#,
                "not standard base64",
            ),
            (
                r#"{"artifactHash":"AAAA","hashAlgorithm":"sha256","nonce":-1}"#,
                "nonce -1",
            ),
            (
                r#"{"artifactHash":"AAAA","hashAlgorithm":"sha256","tsaPolicyOID":"x"}"#,
                "tsaPolicyOID",
            ),
        ] {
            let got = to_der(body.as_bytes());
            assert!(got.as_ref().is_err_and(|e| e.contains(says)), "{body}: {got:?}");
        }
    }
}
