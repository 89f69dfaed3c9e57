#![no_main]
//! Signed notes: a parsed note must serialise back to the same bytes; verification never panics.
use cairn_tlog::{Note, VerifierKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(note) = Note::parse(data) {
        let known = VerifierKey::parse("example.com/log+d455c521+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4");
        if let Ok(known) = known {
            let _ = note.verify(&[known]);
        }
        // Base64 in signatures is decoded leniently only if it re-encodes identically; compare texts.
        assert_eq!(Note::parse(&note.to_bytes()).as_ref(), Ok(&note));
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(k) = VerifierKey::parse(s) {
            assert_eq!(VerifierKey::parse(&k.to_string()), Ok(k));
        }
    }
});
