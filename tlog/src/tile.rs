//! Tile coordinates and paths of c2sp.org/tlog-tiles.
//!
//! Hash tiles are 8 levels of the tree (height 8): the `n`-th tile at level `l` holds the hashes
//! `MTH(D[(n*256 + i) * 256^l .. (n*256 + i + 1) * 256^l])` for `i` in `0..256`. Level 0 holds leaf
//! hashes; a hash in a level `l >= 1` tile is the root of one full tile at level `l - 1`. At level `l`
//! a tree of size `s` has `floor(s / 256^l)` hashes: `floor(that / 256)` full tiles and, when
//! `that mod 256 != 0`, one partial tile of that width. Partial tiles are never hashed upwards.
//!
//! Entry bundles follow level 0: bundle `n` holds entries `n*256 .. n*256 + width`.
//!
//! Paths: `tile/<L>/<N>[.p/<W>]` and `tile/entries/<N>[.p/<W>]`, with `N` in groups of three decimal
//! digits, every group but the last prefixed by `x`. Parsing is strict: a path is accepted only in the
//! one canonical form that [`TileId::path`] and [`BundleId::path`] produce.

use std::fmt;

/// Height of a tile in tree levels: 2^8 = 256 hashes per full tile.
pub const TILE_HEIGHT: u32 = 8;
/// Hashes in (or entries in a bundle of) a full tile.
pub const TILE_WIDTH: u16 = 256;
/// The highest tile level the tlog-tiles path grammar allows.
pub const MAX_LEVEL: u8 = 63;

/// A hash tile: its level, its index within the level, and its width (1..=256; 256 is a full tile).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    /// Tile level, 0 for leaf hashes.
    pub level: u8,
    /// Index of the tile within its level.
    pub index: u64,
    /// Number of hashes, 1..=256.
    pub width: u16,
}

/// An entry bundle: its index and its width (1..=256; 256 is a full bundle).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BundleId {
    /// Index of the bundle; it holds entries from `index * 256`.
    pub index: u64,
    /// Number of entries, 1..=256.
    pub width: u16,
}

/// Any resource a tiled log serves under `tile/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TilePath {
    /// `tile/<L>/<N>[.p/<W>]`
    Hash(TileId),
    /// `tile/entries/<N>[.p/<W>]`
    Entries(BundleId),
}

/// Why a path is not a canonical tile path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `tile/`.
    #[error("tile paths start with \"tile/\"")]
    Prefix,
    /// The level is not a decimal 0..=63 without leading zeros.
    #[error("tile level must be a decimal from 0 to 63 without leading zeros")]
    Level,
    /// The index is not in canonical `x`-grouped three-digit form, or overflows 64 bits.
    #[error(
        "tile index must be three-digit groups, all but the last prefixed with 'x', without leading zero groups"
    )]
    Index,
    /// The `.p/<W>` suffix is malformed or the width is outside 1..=255.
    #[error("partial tile width must be .p/<W> with W a decimal from 1 to 255 without leading zeros")]
    Width,
}

impl TileId {
    /// A full tile.
    pub fn full(level: u8, index: u64) -> Self {
        Self {
            level,
            index,
            width: TILE_WIDTH,
        }
    }

    /// Whether the tile holds 256 hashes.
    pub fn is_full(&self) -> bool {
        self.width == TILE_WIDTH
    }

    /// The canonical path, `tile/<L>/<N>[.p/<W>]`.
    pub fn path(&self) -> String {
        format!(
            "tile/{}/{}{}",
            self.level,
            encode_index(self.index),
            width_suffix(self.width)
        )
    }

    /// Size in bytes of the tile's contents.
    pub fn byte_len(&self) -> usize {
        usize::from(self.width) * crate::hash::HASH_SIZE
    }

    /// This tile (same level and index) at the width the tree of `size` gives it, or `None` if that
    /// tree has no such tile.
    pub fn at_size(self, size: u64) -> Option<TileId> {
        tile_width(size, self.level, self.index).map(|width| TileId { width, ..self })
    }
}

impl BundleId {
    /// A full bundle.
    pub fn full(index: u64) -> Self {
        Self {
            index,
            width: TILE_WIDTH,
        }
    }

    /// Whether the bundle holds 256 entries.
    pub fn is_full(&self) -> bool {
        self.width == TILE_WIDTH
    }

    /// The canonical path, `tile/entries/<N>[.p/<W>]`.
    pub fn path(&self) -> String {
        format!(
            "tile/entries/{}{}",
            encode_index(self.index),
            width_suffix(self.width)
        )
    }

    /// Index of the first entry in the bundle.
    pub fn first_entry(&self) -> u64 {
        self.index * u64::from(TILE_WIDTH)
    }

    /// This bundle (same index) at the width the log of `size` entries gives it, or `None` if that log
    /// has no such bundle. Bundles follow the level-0 hash tiles.
    pub fn at_size(self, size: u64) -> Option<BundleId> {
        tile_width(size, 0, self.index).map(|width| BundleId { width, ..self })
    }

    /// The level-0 hash tile that holds this bundle's leaf hashes.
    pub fn hash_tile(&self) -> TileId {
        TileId {
            level: 0,
            index: self.index,
            width: self.width,
        }
    }
}

impl fmt::Display for TileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

impl fmt::Display for BundleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

impl fmt::Display for TilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TilePath::Hash(t) => t.fmt(f),
            TilePath::Entries(b) => b.fmt(f),
        }
    }
}

fn width_suffix(width: u16) -> String {
    if width >= TILE_WIDTH {
        String::new()
    } else {
        format!(".p/{width}")
    }
}

/// Encodes a tile index as `x`-prefixed three-digit groups: 1234067 -> `x001/x234/067`.
pub fn encode_index(mut n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    n /= 1000;
    while n > 0 {
        groups.push(format!("x{:03}", n % 1000));
        n /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

/// Parses a canonical tile index such as `x001/x234/067`.
pub fn parse_index(s: &str) -> Result<u64, PathError> {
    let groups: Vec<&str> = s.split('/').collect();
    let last = groups.len() - 1;
    let mut n: u64 = 0;
    for (i, group) in groups.iter().enumerate() {
        let digits = if i < last {
            group.strip_prefix('x').ok_or(PathError::Index)?
        } else {
            group
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PathError::Index);
        }
        // A leading group of zeros would encode the same number a second way.
        if i == 0 && i < last && digits == "000" {
            return Err(PathError::Index);
        }
        let value: u64 = digits.parse().map_err(|_| PathError::Index)?;
        n = n
            .checked_mul(1000)
            .and_then(|n| n.checked_add(value))
            .ok_or(PathError::Index)?;
    }
    Ok(n)
}

/// Parses a decimal with no sign and no leading zeros ("0" itself is fine).
pub(crate) fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

/// Splits off a `.p/<W>` suffix, returning the index part and the width.
fn split_width(s: &str) -> Result<(&str, u16), PathError> {
    match s.split_once(".p/") {
        None => Ok((s, TILE_WIDTH)),
        Some((index, w)) => {
            let width = parse_decimal(w).ok_or(PathError::Width)?;
            if !(1..u64::from(TILE_WIDTH)).contains(&width) {
                return Err(PathError::Width);
            }
            Ok((index, width as u16))
        }
    }
}

impl TilePath {
    /// Parses `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`, accepting only the canonical form.
    pub fn parse(path: &str) -> Result<Self, PathError> {
        let rest = path.strip_prefix("tile/").ok_or(PathError::Prefix)?;
        let (head, tail) = rest.split_once('/').ok_or(PathError::Index)?;
        let (index, width) = split_width(tail)?;
        let index = parse_index(index)?;
        if head == "entries" {
            return Ok(TilePath::Entries(BundleId { index, width }));
        }
        let level = parse_decimal(head)
            .filter(|l| *l <= u64::from(MAX_LEVEL))
            .ok_or(PathError::Level)?;
        Ok(TilePath::Hash(TileId {
            level: level as u8,
            index,
            width,
        }))
    }
}

/// Number of hashes at `level` in a tree of `size` leaves: `floor(size / 256^level)`.
pub fn hashes_at_level(size: u64, level: u8) -> u64 {
    let shift = u32::from(level) * TILE_HEIGHT;
    if shift >= 64 { 0 } else { size >> shift }
}

/// The width of hash tile (`level`, `index`) in a tree of `size`, or `None` if the tree has no such tile.
pub fn tile_width(size: u64, level: u8, index: u64) -> Option<u16> {
    let n = hashes_at_level(size, level);
    let start = index.checked_mul(u64::from(TILE_WIDTH))?;
    if start >= n {
        return None;
    }
    Some((n - start).min(u64::from(TILE_WIDTH)) as u16)
}

/// The partial hash tiles of a tree of `size`, lowest level first.
pub fn partial_tiles(size: u64) -> Vec<TileId> {
    (0..=MAX_LEVEL)
        .map_while(|level| {
            let n = hashes_at_level(size, level);
            (n > 0).then_some((level, n))
        })
        .filter(|(_, n)| n % u64::from(TILE_WIDTH) != 0)
        .map(|(level, n)| TileId {
            level,
            index: n / u64::from(TILE_WIDTH),
            width: (n % u64::from(TILE_WIDTH)) as u16,
        })
        .collect()
}

/// Every hash tile (full and partial) a tree of `size2` serves that a tree of `size1` does not: the
/// tiles to write when the tree grows from `size1` to `size2`. With `size1 = 0`, every tile of `size2`.
/// Lowest level first, by index within a level.
pub fn new_tiles(size1: u64, size2: u64) -> Vec<TileId> {
    let mut out = Vec::new();
    if size2 <= size1 {
        return out;
    }
    for level in 0..=MAX_LEVEL {
        let (n1, n2) = (hashes_at_level(size1, level), hashes_at_level(size2, level));
        if n2 == 0 {
            break;
        }
        push_new(&mut out, n1, n2, |index, width| TileId { level, index, width });
    }
    out
}

/// Every entry bundle a tree of `size2` serves that a tree of `size1` does not.
pub fn new_bundles(size1: u64, size2: u64) -> Vec<BundleId> {
    let mut out = Vec::new();
    if size2 > size1 {
        push_new(&mut out, size1, size2, |index, width| BundleId { index, width });
    }
    out
}

/// Tiles at one level going from `n1` to `n2` hashes: the full tiles completed, then the new partial.
fn push_new<T>(out: &mut Vec<T>, n1: u64, n2: u64, make: impl Fn(u64, u16) -> T) {
    if n2 == n1 {
        return;
    }
    let w = u64::from(TILE_WIDTH);
    for index in n1 / w..n2 / w {
        out.push(make(index, TILE_WIDTH));
    }
    if !n2.is_multiple_of(w) {
        out.push(make(n2 / w, (n2 % w) as u16));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_encoding() {
        assert_eq!(encode_index(0), "000");
        assert_eq!(encode_index(1000), "x001/000");
        assert_eq!(encode_index(1234067), "x001/x234/067");
        assert_eq!(parse_index("x001/x234/067"), Ok(1234067));
        assert_eq!(parse_index(&encode_index(u64::MAX)), Ok(u64::MAX));
        for bad in [
            "",
            "1",
            "0001",
            "x000/001",
            "001/000",
            "x01/000",
            "x001/x000",
            "x1a2/000",
            "x018/x446/x744/x073/x709/x551/616",
        ] {
            assert!(parse_index(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parse_rejects_noncanonical() {
        for bad in [
            "tile/00/000",
            "tile/64/000",
            "tile/-1/000",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/01",
            "tile/0/000.p/",
            "tile/0/000.p",
            "tile/0/../000",
            "tile/entries/000/",
            "tile/0",
            "tile//000",
            "/tile/0/000",
            "tile/0/000.p/1/",
            "tile/entries/x000/000",
            "tiles/0/000",
            "tile/0/%30%30%30",
            "tile/0/000.p/1.p/1",
            "tile/entries/",
            "tile/1/000.p/+1",
        ] {
            assert!(TilePath::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            TilePath::parse("tile/63/000"),
            Ok(TilePath::Hash(TileId::full(63, 0)))
        );
    }

    #[test]
    fn new_tiles_between_sizes() {
        assert_eq!(new_tiles(0, 0), vec![]);
        assert_eq!(new_tiles(5, 5), vec![]);
        assert_eq!(
            new_tiles(0, 1),
            vec![TileId {
                level: 0,
                index: 0,
                width: 1
            }]
        );
        assert_eq!(
            new_tiles(255, 257),
            vec![
                TileId::full(0, 0),
                TileId {
                    level: 0,
                    index: 1,
                    width: 1
                },
                TileId {
                    level: 1,
                    index: 0,
                    width: 1
                }
            ]
        );
        // 256 -> 300: level 1 is unchanged (still one hash), level 0 gains a partial tile.
        assert_eq!(
            new_tiles(256, 300),
            vec![TileId {
                level: 0,
                index: 1,
                width: 44
            }]
        );
        assert_eq!(new_bundles(256, 512), vec![BundleId::full(1)]);
        assert_eq!(tile_width(70000, 1, 1), Some(17));
        assert_eq!(tile_width(70000, 1, 2), None);
        assert_eq!(tile_width(u64::MAX, 7, u64::MAX), None);
    }

    #[test]
    fn tiles_and_bundles_at_a_size() {
        let t = |level, index, width| TileId { level, index, width };
        // 70000 leaves: 273 full level-0 tiles and one of 112; 273 level-1 hashes, so one full level-1
        // tile and one of 17; one level-2 hash.
        assert_eq!(TileId::full(0, 273).at_size(70_000), Some(t(0, 273, 112)));
        assert_eq!(t(0, 272, 3).at_size(70_000), Some(t(0, 272, 256)));
        assert_eq!(TileId::full(0, 274).at_size(70_000), None);
        assert_eq!(TileId::full(1, 1).at_size(70_000), Some(t(1, 1, 17)));
        assert_eq!(TileId::full(2, 0).at_size(70_000), Some(t(2, 0, 1)));
        assert_eq!(TileId::full(3, 0).at_size(70_000), None);
        assert_eq!(TileId::full(0, 0).at_size(0), None);
        assert_eq!(TileId::full(63, 0).at_size(u64::MAX), None);
        assert_eq!(TileId::full(7, 0).at_size(u64::MAX), Some(t(7, 0, 255)));
        assert_eq!(TileId::full(0, u64::MAX).at_size(u64::MAX), None);

        let b = |index, width| BundleId { index, width };
        assert_eq!(BundleId::full(0).at_size(0), None);
        assert_eq!(BundleId::full(0).at_size(1), Some(b(0, 1)));
        assert_eq!(BundleId::full(0).at_size(255), Some(b(0, 255)));
        assert_eq!(b(0, 1).at_size(256), Some(b(0, 256)));
        assert_eq!(BundleId::full(1).at_size(256), None);
        assert_eq!(BundleId::full(1).at_size(257), Some(b(1, 1)));
        assert_eq!(BundleId::full(273).at_size(70_000), Some(b(273, 112)));
        assert_eq!(BundleId::full(u64::MAX).at_size(u64::MAX), None);
    }
}
