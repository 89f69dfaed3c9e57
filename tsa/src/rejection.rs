//! The rejection reply (RFC 3161 §2.4.2): a `TimeStampResp` with status `rejection`, a `statusString` saying
//! what to change and the `failInfo` bit, and no token.
//!
//! `x509-tsp`'s `TimeStampResp` carries `cmpv2` 0.2's `PkiStatusInfo`, whose `PkiFailureInfoValues` declares
//! bit numbers where its `flagset` type expects bit masks (`BadDataFormat = 5` is bits 0 and 2, and bits 16
//! and 25 do not fit its `u16`), so it cannot express our failures. These two structures are that
//! `PKIStatusInfo` with `failInfo` as a plain BIT STRING.

use cmpv2::status::PkiStatus;
use der::asn1::{BitString, Utf8StringRef};
use der::{Encode, Sequence};

use crate::error::{FailureInfo, TsaError};

/// `TimeStampResp` without its optional token.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct RejectionResp<'a> {
    status: StatusInfo<'a>,
}

/// `PKIStatusInfo` (RFC 3161 §2.4.2).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct StatusInfo<'a> {
    status: PkiStatus,
    /// `PKIFreeText`: a SEQUENCE OF UTF8String.
    #[asn1(optional = "true")]
    status_string: Option<Vec<Utf8StringRef<'a>>>,
    #[asn1(optional = "true")]
    fail_info: Option<BitString>,
}

/// The DER `TimeStampResp` refusing a request for `failure`, with `message` as its `statusString`.
pub(crate) fn reply(failure: FailureInfo, message: &str) -> Result<Vec<u8>, TsaError> {
    let reply = RejectionResp {
        status: StatusInfo {
            status: PkiStatus::Rejection,
            status_string: Some(vec![Utf8StringRef::new(message)?]),
            fail_info: Some(failure_bits(failure)?),
        },
    };
    Ok(reply.to_der()?)
}

/// The `PKIFailureInfo` BIT STRING with only `failure`'s bit set. DER drops trailing zero bits of a named bit
/// list (X.690 §11.2.2), so the string ends at that bit: bit n is the (n mod 8)-th most significant bit of
/// octet n / 8, followed by 7 - n mod 8 unused bits.
fn failure_bits(failure: FailureInfo) -> Result<BitString, TsaError> {
    let bit = usize::from(failure.bit());
    let mut octets = vec![0u8; bit / 8 + 1];
    octets[bit / 8] = 0x80 >> (bit % 8);
    let unused = 7 - (bit % 8) as u8;
    Ok(BitString::new(unused, octets)?)
}
