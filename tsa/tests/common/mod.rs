//! Helpers shared by the integration tests: requests built with `x509-tsp`, replies taken apart with `x509-tsp`
//! and `cms`, and the few RFC 3161 / RFC 5035 structures those crates lack, written here from the RFCs
//! (independently of the crate's own definitions).

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context, anyhow, ensure};
use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use const_oid::ObjectIdentifier;
use der::asn1::{BitString, Int, OctetString};
use der::{Any, Decode, Encode, Sequence};
use spki::AlgorithmIdentifierOwned;
use x509_cert::ext::pkix::name::GeneralNames;
use x509_cert::serial_number::SerialNumber;
use x509_tsp::{MessageImprint, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

pub const SHA256: &str = "2.16.840.1.101.3.4.2.1";
pub const SHA384: &str = "2.16.840.1.101.3.4.2.2";
pub const SHA512: &str = "2.16.840.1.101.3.4.2.3";
pub const SHA1: &str = "1.3.14.3.2.26";
pub const MD5: &str = "1.2.840.113549.2.5";
pub const ID_CT_TST_INFO: &str = "1.2.840.113549.1.9.16.1.4";
pub const ID_SIGNED_DATA: &str = "1.2.840.113549.1.7.2";
pub const CONTENT_TYPE: &str = "1.2.840.113549.1.9.3";
pub const MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";
pub const SIGNING_TIME: &str = "1.2.840.113549.1.9.5";
pub const SIGNING_CERTIFICATE_V2: &str = "1.2.840.113549.1.9.16.2.47";
pub const ECDSA_WITH_SHA256: &str = "1.2.840.10045.4.3.2";
pub const ECDSA_WITH_SHA384: &str = "1.2.840.10045.4.3.3";
pub const TIME_STAMPING: &str = "1.3.6.1.5.5.7.3.8";

pub fn oid(dotted: &str) -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap(dotted)
}

/// What goes into a test request.
#[derive(Clone, Debug)]
pub struct Req {
    pub hash: &'static str,
    pub null_params: bool,
    pub digest: Vec<u8>,
    pub nonce: Option<Vec<u8>>,
    pub cert_req: bool,
    pub policy: Option<ObjectIdentifier>,
    pub extensions: bool,
}

impl Req {
    /// A SHA-256 request for `digest` with a nonce and certReq.
    pub fn sha256(digest: [u8; 32]) -> Self {
        Req {
            hash: SHA256,
            null_params: true,
            digest: digest.to_vec(),
            nonce: Some(vec![0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x42]),
            cert_req: true,
            policy: None,
            extensions: false,
        }
    }

    pub fn der(&self) -> Vec<u8> {
        let extensions = self.extensions.then(|| {
            vec![x509_cert::ext::Extension {
                extn_id: oid("1.3.6.1.4.1.32473.99"),
                critical: false,
                extn_value: OctetString::new(vec![0x05, 0x00]).unwrap(),
            }]
        });
        TimeStampReq {
            version: TspVersion::V1,
            message_imprint: MessageImprint {
                hash_algorithm: AlgorithmIdentifierOwned {
                    oid: oid(self.hash),
                    parameters: self.null_params.then(Any::null),
                },
                hashed_message: OctetString::new(self.digest.clone()).unwrap(),
            },
            req_policy: self.policy,
            nonce: self.nonce.as_ref().map(|n| Int::new(n).unwrap()),
            cert_req: self.cert_req,
            extensions,
        }
        .to_der()
        .unwrap()
    }
}

/// A granted reply taken apart.
pub struct Granted {
    pub resp: TimeStampResp<'static>,
    pub token: ContentInfo,
    pub signed_data: SignedData,
    /// The eContent octets: the DER TSTInfo as signed.
    pub tst_der: Vec<u8>,
    pub tst: TstInfo,
}

pub fn parse_granted(reply: &'static [u8]) -> anyhow::Result<Granted> {
    let resp = TimeStampResp::from_der(reply).context("TimeStampResp")?;
    ensure!(
        resp.status.status == cmpv2::status::PkiStatus::Accepted,
        "status {:?}",
        resp.status
    );
    ensure!(resp.status.fail_info.is_none() && resp.status.status_string.is_none());
    let token = resp.time_stamp_token.clone().ok_or_else(|| anyhow!("no token"))?;
    let signed_data: SignedData = token.content.decode_as().context("SignedData")?;
    let econtent = signed_data
        .encap_content_info
        .econtent
        .clone()
        .ok_or_else(|| anyhow!("no eContent"))?;
    let tst_der = OctetString::from_der(&econtent.to_der()?)?.as_bytes().to_vec();
    let tst = TstInfo::from_der(&tst_der).context("TSTInfo")?;
    Ok(Granted {
        resp,
        token,
        signed_data,
        tst_der,
        tst,
    })
}

/// RFC 3161 §2.4.2 `TimeStampResp` as the rejection tests read it: `failInfo` as a plain BIT STRING.
#[derive(Clone, Debug, Sequence)]
pub struct RawResp {
    pub status: RawStatus,
    #[asn1(optional = "true")]
    pub token: Option<Any>,
}

/// RFC 3161 §2.4.2 `PKIStatusInfo`.
#[derive(Clone, Debug, Sequence)]
pub struct RawStatus {
    pub status: u8,
    #[asn1(optional = "true")]
    pub status_string: Option<Vec<String>>,
    #[asn1(optional = "true")]
    pub fail_info: Option<BitString>,
}

/// RFC 5035 §3 `SigningCertificateV2`.
#[derive(Clone, Debug, Sequence)]
pub struct SigningCertificateV2 {
    pub certs: Vec<EssCertIdV2>,
    #[asn1(optional = "true")]
    pub policies: Option<Any>,
}

/// RFC 5035 §4 `ESSCertIDv2`.
#[derive(Clone, Debug, Sequence)]
pub struct EssCertIdV2 {
    #[asn1(optional = "true")]
    pub hash_algorithm: Option<AlgorithmIdentifierOwned>,
    pub cert_hash: OctetString,
    #[asn1(optional = "true")]
    pub issuer_serial: Option<IssuerSerial>,
}

/// RFC 5035 §4 `IssuerSerial`.
#[derive(Clone, Debug, Sequence)]
pub struct IssuerSerial {
    pub issuer: GeneralNames,
    pub serial_number: SerialNumber,
}

/// Runs openssl with `args` in `dir`; a missing openssl fails the test (it is a required tool, not optional).
pub fn openssl(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed (apt-get install openssl): these tests check our output with it")
}

pub fn stdout_and_stderr(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Leaks `bytes` so that borrowing decoders (`TimeStampResp<'a>`) can keep them for the test's life.
pub fn leak(bytes: Vec<u8>) -> &'static [u8] {
    Box::leak(bytes.into_boxed_slice())
}
