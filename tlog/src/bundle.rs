//! Entry bundles of c2sp.org/tlog-tiles: a sequence of entries, each as a big-endian `u16` length
//! followed by that many bytes. Cairn entries are 1 to 65,535 bytes long.

use crate::tile::TILE_WIDTH;

/// The largest entry a bundle can carry.
pub const MAX_ENTRY_SIZE: usize = u16::MAX as usize;

/// A malformed entry or bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// An entry is empty; entries are 1 to 65,535 bytes.
    #[error("entry {index} is empty; entries are 1 to 65535 bytes")]
    EmptyEntry {
        /// Position of the entry in the bundle.
        index: usize,
    },
    /// An entry is larger than a bundle can carry.
    #[error("entry {index} is {len} bytes; the limit is 65535")]
    EntryTooLarge {
        /// Position of the entry in the bundle.
        index: usize,
        /// Its length.
        len: usize,
    },
    /// The bundle ends inside a length prefix or an entry.
    #[error("bundle is truncated inside entry {index}")]
    Truncated {
        /// Position of the entry that is cut short.
        index: usize,
    },
    /// The bundle holds a different number of entries than its width says.
    #[error("bundle holds {got} entries, expected {expected}")]
    Count {
        /// Width of the bundle, from its path.
        expected: usize,
        /// Entries found.
        got: usize,
    },
}

/// The index of the first entry of the bundle that would hold entry number `size`: `size` rounded down
/// to a multiple of 256. Entries from there up to `size` are the partial bundle of a log of `size`.
pub fn bundle_floor(size: u64) -> u64 {
    size - size % u64::from(TILE_WIDTH)
}

/// Checks that an entry can be logged: 1 to 65,535 bytes.
pub fn check_entry(index: usize, entry: &[u8]) -> Result<(), BundleError> {
    match entry.len() {
        0 => Err(BundleError::EmptyEntry { index }),
        len if len > MAX_ENTRY_SIZE => Err(BundleError::EntryTooLarge { index, len }),
        _ => Ok(()),
    }
}

/// Appends one length-prefixed entry to a bundle under construction.
pub fn push_entry(bundle: &mut Vec<u8>, entry: &[u8]) -> Result<(), BundleError> {
    check_entry(0, entry)?;
    bundle.extend_from_slice(&(entry.len() as u16).to_be_bytes());
    bundle.extend_from_slice(entry);
    Ok(())
}

/// Encodes entries as a bundle.
pub fn encode<E: AsRef<[u8]>>(entries: &[E]) -> Result<Vec<u8>, BundleError> {
    let total: usize = entries.iter().map(|e| e.as_ref().len() + 2).sum();
    let mut out = Vec::with_capacity(total);
    for (index, entry) in entries.iter().enumerate() {
        check_entry(index, entry.as_ref())?;
        push_entry(&mut out, entry.as_ref())?;
    }
    Ok(out)
}

/// Decodes a bundle strictly: every byte belongs to an entry, no entry is empty, and at most 256 entries.
/// With `expected`, the bundle must hold exactly that many entries (its width).
pub fn decode(bundle: &[u8], expected: Option<usize>) -> Result<Vec<&[u8]>, BundleError> {
    let mut entries = Vec::with_capacity(expected.unwrap_or(0).min(usize::from(TILE_WIDTH)));
    let mut rest = bundle;
    while !rest.is_empty() {
        let index = entries.len();
        if index >= usize::from(TILE_WIDTH) {
            return Err(BundleError::Count {
                expected: expected.unwrap_or(usize::from(TILE_WIDTH)),
                got: index + 1,
            });
        }
        let (len, tail) = rest
            .split_first_chunk::<2>()
            .ok_or(BundleError::Truncated { index })?;
        let len = usize::from(u16::from_be_bytes(*len));
        if len == 0 {
            return Err(BundleError::EmptyEntry { index });
        }
        if tail.len() < len {
            return Err(BundleError::Truncated { index });
        }
        let (entry, tail) = tail.split_at(len);
        entries.push(entry);
        rest = tail;
    }
    match expected {
        Some(expected) if expected != entries.len() => Err(BundleError::Count {
            expected,
            got: entries.len(),
        }),
        _ => Ok(entries),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor() {
        for (size, floor) in [
            (0, 0),
            (1, 0),
            (255, 0),
            (256, 256),
            (257, 256),
            (65_539, 65_536),
            (u64::MAX, u64::MAX - 255),
        ] {
            assert_eq!(bundle_floor(size), floor, "{size}");
        }
    }

    #[test]
    fn round_trip_and_rejections() {
        let entries: Vec<Vec<u8>> = vec![b"a".to_vec(), vec![7; 300], vec![1; MAX_ENTRY_SIZE]];
        let b = encode(&entries).expect("valid entries");
        assert_eq!(&b[..3], &[0, 1, b'a']);
        let decoded = decode(&b, Some(3)).expect("decodes");
        assert_eq!(decoded, entries.iter().map(Vec::as_slice).collect::<Vec<_>>());
        assert_eq!(
            decode(&b, Some(2)),
            Err(BundleError::Count { expected: 2, got: 3 })
        );
        assert_eq!(
            decode(&b[..b.len() - 1], None),
            Err(BundleError::Truncated { index: 2 })
        );
        assert_eq!(decode(&[0], None), Err(BundleError::Truncated { index: 0 }));
        assert_eq!(decode(&[0, 0], None), Err(BundleError::EmptyEntry { index: 0 }));
        assert_eq!(
            encode(&[b"".as_slice()]),
            Err(BundleError::EmptyEntry { index: 0 })
        );
        assert_eq!(
            encode(&[b"x".to_vec(), vec![0; MAX_ENTRY_SIZE + 1]]),
            Err(BundleError::EntryTooLarge {
                index: 1,
                len: MAX_ENTRY_SIZE + 1
            })
        );
        let too_many = encode(&vec![b"z"; 257]).expect("encodes");
        assert!(matches!(decode(&too_many, None), Err(BundleError::Count { .. })));
    }
}
