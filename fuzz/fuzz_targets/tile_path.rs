#![no_main]
//! Tile paths: a parsed path must re-encode to exactly the input (one canonical form).
use cairn_tlog::TilePath;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(p) = TilePath::parse(s) {
        assert_eq!(p.to_string(), s);
    }
});
