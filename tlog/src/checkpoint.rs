//! Checkpoints (c2sp.org/tlog-checkpoint): the signed note text `<origin>\n<size>\n<base64 root>\n`
//! followed by optional non-empty extension lines.

use crate::hash::{Hash, HashError};
use crate::note::{Note, NoteError, Signer, VerifierKey};
use crate::tile::parse_decimal;

/// A checkpoint body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line.
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Root hash at that size.
    pub root: Hash,
    /// Extension lines (opaque, not recommended).
    pub extensions: Vec<String>,
}

/// A malformed checkpoint, or one that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The text does not follow the checkpoint format.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// The root line is not a base64 32-byte hash.
    #[error("malformed checkpoint root: {0}")]
    Root(#[from] HashError),
    /// The checkpoint is for another log.
    #[error("checkpoint origin is {got:?}, expected {expected:?}")]
    Origin {
        /// The origin the verifier expects.
        expected: String,
        /// The origin in the checkpoint.
        got: String,
    },
    /// The note is malformed, or its signatures do not verify.
    #[error(transparent)]
    Note(#[from] NoteError),
}

impl Checkpoint {
    /// A checkpoint with no extension lines.
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Self {
        Self {
            origin: origin.into(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// The note text.
    pub fn to_text(&self) -> String {
        let mut s = format!("{}\n{}\n{}\n", self.origin, self.size, self.root.to_base64());
        for line in &self.extensions {
            s.push_str(line);
            s.push('\n');
        }
        s
    }

    /// Parses a note text strictly.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::Malformed("text must end in a newline"))?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next()) else {
            return Err(CheckpointError::Malformed("need origin, size and root lines"));
        };
        if origin.is_empty() {
            return Err(CheckpointError::Malformed("empty origin"));
        }
        let size = parse_decimal(size).ok_or(CheckpointError::Malformed(
            "size must be a decimal without leading zeros",
        ))?;
        let root = Hash::from_base64(root)?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(CheckpointError::Malformed("empty extension line"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// Reads the checkpoint in a signed note's bytes WITHOUT checking any signature. Only for notes
    /// from a source already trusted (such as our own replicated state); use [`Checkpoint::open`] for
    /// anything else. A malformed note is [`CheckpointError::Note`], a malformed text is as in
    /// [`Checkpoint::parse`].
    pub fn parse_note_unverified(note: &[u8]) -> Result<Checkpoint, CheckpointError> {
        Self::parse(&Note::parse(note)?.text)
    }

    /// Signs the checkpoint as a note.
    pub fn sign(&self, signer: &Signer) -> Note {
        let mut note = Note {
            text: self.to_text(),
            signatures: Vec::new(),
        };
        note.sign(signer);
        note
    }

    /// Opens a signed checkpoint: the note must carry a valid signature by `log_key`, whose name must be
    /// the checkpoint's origin. Signatures by `witnesses` are verified too if present (quorum policy is
    /// the caller's: see the returned note's signatures). Unknown signatures are ignored.
    pub fn open(
        bytes: &[u8],
        log_key: &VerifierKey,
        witnesses: &[VerifierKey],
    ) -> Result<(Self, Note), CheckpointError> {
        let note = Note::parse(bytes)?;
        let mut known = Vec::with_capacity(witnesses.len() + 1);
        known.push(log_key.clone());
        known.extend_from_slice(witnesses);
        let verified = note.verify(&known)?;
        if !verified
            .iter()
            .any(|s| s.name == log_key.name && s.key_id == log_key.key_id)
        {
            return Err(NoteError::Unverified.into());
        }
        let checkpoint = Self::parse(&note.text)?;
        if checkpoint.origin != log_key.name {
            return Err(CheckpointError::Origin {
                expected: log_key.name.clone(),
                got: checkpoint.origin,
            });
        }
        Ok((checkpoint, note))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_note_unverified_ignores_signatures() {
        let signer = Signer::from_seed("example.com/log", [1; 32]).expect("valid");
        let other = Signer::from_seed("example.com/log", [2; 32]).expect("valid");
        let root = crate::hash::leaf_hash(b"root");
        let text = format!("example.com/log\n5\n{}\nextra\n", root.to_base64());
        let expected = Checkpoint {
            origin: "example.com/log".into(),
            size: 5,
            root,
            extensions: vec!["extra".into()],
        };
        let mut note = Note::new(text).expect("text");
        note.sign(&other);
        let bytes = note.to_bytes();
        assert_eq!(Checkpoint::parse_note_unverified(&bytes), Ok(expected));
        assert!(
            Checkpoint::open(&bytes, &signer.verifier(), &[]).is_err(),
            "the same note does not open under the log's key"
        );

        // A corrupted signature is not looked at either.
        let mut corrupt = note.clone();
        corrupt.signatures[0].bytes[0] ^= 1;
        assert!(Checkpoint::parse_note_unverified(&corrupt.to_bytes()).is_ok());

        assert!(matches!(
            Checkpoint::parse_note_unverified(b"example.com/log\n5\n"),
            Err(CheckpointError::Note(NoteError::Malformed(_)))
        ));
        let mut bad_text = Note::new("example.com/log\nfive\nroot\n").expect("text");
        bad_text.sign(&signer);
        assert!(matches!(
            Checkpoint::parse_note_unverified(&bad_text.to_bytes()),
            Err(CheckpointError::Malformed(_))
        ));
    }
}
