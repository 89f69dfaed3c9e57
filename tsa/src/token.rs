//! The granted reply: a `TimeStampResp` whose token is a CMS `SignedData` (RFC 5652) over a `TSTInfo`
//! (RFC 3161 §2.4.2), signed with signed attributes including `signingCertificateV2` (RFC 5035, RFC 5816).

use std::time::SystemTime;

use cmpv2::status::{PkiStatus, PkiStatusInfo};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedAttributes, SignedData, SignerIdentifier, SignerInfo,
    SignerInfos,
};
use const_oid::ObjectIdentifier;
use const_oid::db::rfc5911::{
    ID_AA_SIGNING_CERTIFICATE_V_2, ID_CONTENT_TYPE, ID_MESSAGE_DIGEST, ID_SIGNED_DATA, ID_SIGNING_TIME,
};
use der::asn1::{GeneralizedTime, Int, OctetString, SetOfVec, Uint, UtcTime};
use der::{Any, Encode, Sequence, Tag};
use sha2::Digest;
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::certpolicy::PolicyInformation;
use x509_cert::ext::pkix::name::{GeneralName, GeneralNames};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Time;
use x509_tsp::{Accuracy, TimeStampResp, TspVersion, TstInfo};

use crate::chain::random_positive_16;
use crate::error::TsaError;
use crate::key::TsaKey;
use crate::request::Accepted;

/// `id-ct-TSTInfo` (RFC 3161 §2.4.2), the content type of a timestamp token's `TSTInfo` (not in `const-oid`
/// 0.9's database).
pub(crate) const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");

/// `SigningCertificateV2` (RFC 5035 §3): names the certificate that signed, so that it cannot be swapped.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct SigningCertificateV2 {
    certs: Vec<EssCertIdV2>,
    #[asn1(optional = "true")]
    policies: Option<Vec<PolicyInformation>>,
}

/// `ESSCertIDv2` (RFC 5035 §4): the hash of a certificate and its issuer and serial number.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct EssCertIdV2 {
    /// `DEFAULT {algorithm id-sha256}`: `None`, as we hash with SHA-256 and DER omits a default value.
    #[asn1(optional = "true")]
    hash_algorithm: Option<AlgorithmIdentifierOwned>,
    cert_hash: OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<IssuerSerial>,
}

/// `IssuerSerial` (RFC 5035 §4).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct IssuerSerial {
    issuer: GeneralNames,
    serial_number: SerialNumber,
}

/// What every token of one authority shares: the key, its certificate and the attributes naming it.
#[derive(Debug)]
pub(crate) struct TokenSigner {
    key: TsaKey,
    leaf: Certificate,
    sid: SignerIdentifier,
    digest_algorithm: AlgorithmIdentifierOwned,
    signature_algorithm: AlgorithmIdentifierOwned,
    signing_certificate: Attribute,
}

impl TokenSigner {
    /// A signer with `key`, whose certificate is `leaf`.
    pub(crate) fn new(key: TsaKey, leaf: Certificate) -> Result<Self, TsaError> {
        let tbs = &leaf.tbs_certificate;
        let ess = SigningCertificateV2 {
            certs: vec![EssCertIdV2 {
                hash_algorithm: None,
                cert_hash: OctetString::new(sha2::Sha256::digest(leaf.to_der()?).to_vec())?,
                issuer_serial: Some(IssuerSerial {
                    issuer: vec![GeneralName::DirectoryName(tbs.issuer.clone())],
                    serial_number: tbs.serial_number.clone(),
                }),
            }],
            policies: None,
        };
        let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer.clone(),
            serial_number: tbs.serial_number.clone(),
        });
        Ok(TokenSigner {
            digest_algorithm: key.digest_algorithm(),
            signature_algorithm: key.signature_algorithm()?,
            signing_certificate: attribute(ID_AA_SIGNING_CERTIFICATE_V_2, Any::encode_from(&ess)?)?,
            key,
            leaf,
            sid,
        })
    }

    /// The signing key.
    pub(crate) fn key(&self) -> &TsaKey {
        &self.key
    }

    /// The DER `TimeStampResp` granting `request` at `now` (whole seconds) under `policy`.
    pub(crate) fn grant(
        &self,
        policy: ObjectIdentifier,
        request: Accepted,
        now: SystemTime,
    ) -> Result<Vec<u8>, TsaError> {
        // Whole seconds: der's GeneralizedTime has no fraction, so genTime is "YYYYMMDDHHMMSSZ".
        let gen_time = GeneralizedTime::from_system_time(now)?;
        let tst_info = TstInfo {
            version: TspVersion::V1,
            policy,
            message_imprint: request.imprint,
            serial_number: Int::from(Uint::new(&random_positive_16())?),
            gen_time,
            accuracy: Some(Accuracy {
                seconds: Some(1),
                millis: None,
                micros: None,
            }),
            ordering: false,
            nonce: request.nonce,
            tsa: None,
            extensions: None,
        }
        .to_der()?;

        // RFC 5652 §11.3: signingTime is a UTCTime until 2049, a GeneralizedTime after.
        let signing_time = if gen_time.to_date_time().year() <= UtcTime::MAX_YEAR {
            Time::UtcTime(UtcTime::from_date_time(gen_time.to_date_time())?)
        } else {
            Time::GeneralTime(gen_time)
        };
        let signed_attributes = SignedAttributes::try_from(vec![
            attribute(ID_CONTENT_TYPE, Any::encode_from(&ID_CT_TST_INFO)?)?,
            attribute(ID_SIGNING_TIME, Any::encode_from(&signing_time)?)?,
            attribute(
                ID_MESSAGE_DIGEST,
                Any::new(Tag::OctetString, self.key.digest(&tst_info))?,
            )?,
            self.signing_certificate.clone(),
        ])?;
        // RFC 5652 §5.4: the signature covers the DER of the attributes with the SET OF tag; the SET is sorted
        // by encoding (der's `SetOfVec` sorts on construction), as DER and the verifiers that re-encode it want.
        let signature = self.key.sign(&signed_attributes.to_der()?)?;

        let signer_info = SignerInfo {
            // RFC 5652 §5.3: version 1 with an issuerAndSerialNumber sid.
            version: CmsVersion::V1,
            sid: self.sid.clone(),
            digest_alg: self.digest_algorithm.clone(),
            signed_attrs: Some(signed_attributes),
            signature_algorithm: self.signature_algorithm.clone(),
            signature: OctetString::new(signature)?,
            unsigned_attrs: None,
        };
        // With certReq, the leaf only: RFC 3161 §2.4.1 asks for the certificate named by the ESSCertID; the
        // root is a trust anchor the verifier must already hold. One certificate also keeps the set's order
        // fixed, which clients that take the first certificate as the TSA's rely on.
        let certificates = if request.cert_req {
            let leaf = CertificateChoices::Certificate(self.leaf.clone());
            Some(CertificateSet(SetOfVec::try_from(vec![leaf])?))
        } else {
            None
        };
        let signed_data = SignedData {
            // RFC 5652 §5.1: version 3 because eContentType is not id-data.
            version: CmsVersion::V3,
            digest_algorithms: SetOfVec::try_from(vec![self.digest_algorithm.clone()])?,
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: ID_CT_TST_INFO,
                econtent: Some(Any::new(Tag::OctetString, tst_info)?),
            },
            certificates,
            crls: None,
            signer_infos: SignerInfos(SetOfVec::try_from(vec![signer_info])?),
        };
        let token = ContentInfo {
            content_type: ID_SIGNED_DATA,
            content: Any::encode_from(&signed_data)?,
        };

        let reply = TimeStampResp {
            status: PkiStatusInfo {
                status: PkiStatus::Accepted,
                status_string: None,
                fail_info: None,
            },
            time_stamp_token: Some(token),
        };
        Ok(reply.to_der()?)
    }
}

/// A signed attribute with one value.
fn attribute(oid: ObjectIdentifier, value: Any) -> Result<Attribute, TsaError> {
    Ok(Attribute {
        oid,
        values: SetOfVec::try_from(vec![value])?,
    })
}
