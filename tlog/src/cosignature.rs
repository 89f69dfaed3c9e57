//! The wire format of witness cosignatures (c2sp.org/tlog-cosignature), the timestamped Ed25519 type
//! `0x04`.
//!
//! A cosignature is a note signature whose bytes are `u64 big-endian timestamp || Ed25519 signature`
//! over the message `"cosignature/v1\ntime <timestamp>\n" || checkpoint text`. Its key id is
//! computed with type byte `0x04`, so the same key cannot be confused with a plain note signer.
//!
//! This module is the format alone and depends on no other module. The keys live with the other note
//! keys: [`crate::note::VerifierKey`] verifies either type, and [`crate::note::Cosigner`] signs.

/// Signature type byte of timestamped Ed25519 witness cosignatures.
pub const TYPE_COSIGNATURE: u8 = 0x04;

/// Timestamps above this are invalid (the spec caps them at 2^63 - 1).
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// Length of an Ed25519 signature.
const ED25519_SIGNATURE_SIZE: usize = 64;

/// The signed message for a cosignature at `timestamp` over a checkpoint's note text.
pub fn message(text: &[u8], timestamp: u64) -> Vec<u8> {
    let mut m = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    m.extend_from_slice(text);
    m
}

/// Cosignature bytes (a note signature's bytes after the key id): the timestamp, then the signature.
pub fn encode(timestamp: u64, signature: &[u8; 64]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + ED25519_SIGNATURE_SIZE);
    bytes.extend_from_slice(&timestamp.to_be_bytes());
    bytes.extend_from_slice(signature);
    bytes
}

/// Splits cosignature bytes into timestamp and Ed25519 signature; `None` if malformed.
pub fn split(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (ts, sig) = bytes.split_first_chunk::<8>()?;
    let ts = u64::from_be_bytes(*ts);
    (sig.len() == ED25519_SIGNATURE_SIZE && ts <= MAX_TIMESTAMP).then_some((ts, sig))
}

/// The timestamp of a cosignature (a note signature's bytes after the key id), if well-formed.
pub fn timestamp(bytes: &[u8]) -> Option<u64> {
    split(bytes).map(|(ts, _)| ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        assert_eq!(
            message(b"origin\n1\nroot\n", 7),
            b"cosignature/v1\ntime 7\norigin\n1\nroot\n"
        );
        let sig = [9u8; 64];
        let bytes = encode(0x0102_0304_0506_0708, &sig);
        assert_eq!(&bytes[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(split(&bytes), Some((0x0102_0304_0506_0708, sig.as_slice())));
        assert_eq!(timestamp(&bytes), Some(0x0102_0304_0506_0708));
        assert_eq!(timestamp(&bytes[..71]), None, "short signature");
        assert_eq!(timestamp(&[0; 7]), None, "short timestamp");
        assert_eq!(timestamp(&encode(MAX_TIMESTAMP, &sig)), Some(MAX_TIMESTAMP));
        assert_eq!(timestamp(&encode(MAX_TIMESTAMP + 1, &sig)), None);
    }
}
