//! The wire format of c2sp.org/tlog-witness `add-checkpoint`: the request body, and the media type of a
//! 409 answer.
//!
//! ```text
//! old <size>\n
//! <base64 consistency proof hash>\n    (0 to 63 lines)
//! \n
//! <signed checkpoint note>
//! ```

use cairn_tlog::Hash;

/// The path of the call under a witness's submission prefix.
pub const ADD_CHECKPOINT: &str = "add-checkpoint";
/// Content type of a 409 answer whose body is the witness's latest size for the log.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";
/// The most consistency proof lines a request may carry.
pub const MAX_PROOF_LINES: usize = 63;

/// A request body that does not follow the spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed add-checkpoint request: {0}")]
pub struct MalformedRequest(pub String);

/// An `add-checkpoint` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The size of the checkpoint the witness last cosigned for the log, as the client believes.
    pub old: u64,
    /// The consistency proof from `old` to the checkpoint's size (empty when `old` is 0).
    pub proof: Vec<Hash>,
    /// The signed checkpoint note.
    pub checkpoint: Vec<u8>,
}

impl AddCheckpoint {
    /// Parses a request body. Only the framing is checked here; the checkpoint is the witness's to
    /// verify.
    pub fn parse(body: &[u8]) -> Result<Self, MalformedRequest> {
        let bad = |m: &str| MalformedRequest(m.to_owned());
        let (first, mut rest) = split_line(body).ok_or_else(|| bad("no old size line"))?;
        let old = first
            .strip_prefix(b"old ")
            .and_then(|d| std::str::from_utf8(d).ok())
            .filter(|d| {
                !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) && (*d == "0" || !d.starts_with('0'))
            })
            .and_then(|d| d.parse::<u64>().ok())
            .ok_or_else(|| bad("the first line must be \"old <size>\" in decimal without leading zeros"))?;
        let mut proof = Vec::new();
        loop {
            let (line, next) = split_line(rest).ok_or_else(|| bad("no empty line before the checkpoint"))?;
            rest = next;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_LINES {
                return Err(bad("more than 63 consistency proof lines"));
            }
            let hash = std::str::from_utf8(line)
                .ok()
                .and_then(|l| Hash::from_base64(l).ok())
                .ok_or_else(|| bad("a consistency proof line is not a base64 SHA-256 hash"))?;
            proof.push(hash);
        }
        if rest.is_empty() {
            return Err(bad("no checkpoint after the empty line"));
        }
        Ok(Self {
            old,
            proof,
            checkpoint: rest.to_vec(),
        })
    }

    /// The request body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("old {}\n", self.old).into_bytes();
        for h in &self.proof {
            out.extend_from_slice(h.to_base64().as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(&self.checkpoint);
        out
    }
}

fn split_line(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = b.iter().position(|&c| c == b'\n')?;
    Some((&b[..i], &b[i + 1..]))
}

/// Parses the body of a 409 answer (`<size>\n`).
pub fn parse_size(body: &[u8]) -> Option<u64> {
    let d = std::str::from_utf8(body).ok()?.strip_suffix('\n')?;
    (!d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())).then(|| d.parse().ok())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_tlog::leaf_hash;

    #[test]
    fn round_trip_and_strictness() {
        let req = AddCheckpoint {
            old: 20,
            proof: vec![leaf_hash(b"a"), leaf_hash(b"b")],
            checkpoint: b"origin\n25\nroot\n\n- sig\n".to_vec(),
        };
        let bytes = req.to_bytes();
        assert_eq!(AddCheckpoint::parse(&bytes), Ok(req.clone()));
        let empty = AddCheckpoint {
            old: 0,
            proof: vec![],
            checkpoint: b"x\n".to_vec(),
        };
        assert_eq!(empty.to_bytes(), b"old 0\n\nx\n");
        assert_eq!(AddCheckpoint::parse(&empty.to_bytes()), Ok(empty));

        let line = format!("{}\n", leaf_hash(b"a").to_base64());
        for bad in [
            "".to_string(),
            "old\n\nx\n".into(),
            "old 01\n\nx\n".into(),
            "old -1\n\nx\n".into(),
            "old 1 \n\nx\n".into(),
            "new 1\n\nx\n".into(),
            "old 1\nnot base64!\n\nx\n".into(),
            "old 1\nAAAA\n\nx\n".into(),
            "old 1\n".into(),
            "old 1\n\n".into(),
            format!("old 1\n{}\nx\n", line.repeat(64)),
        ] {
            assert!(AddCheckpoint::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(AddCheckpoint::parse(format!("old 1\n{}\nx\n", line.repeat(63)).as_bytes()).is_ok());
        assert_eq!(parse_size(b"42\n"), Some(42));
        assert_eq!(parse_size(b"42"), None);
        assert_eq!(parse_size(b"\n"), None);
    }
}
