#![no_main]
//! Checkpoints: a parsed checkpoint must serialise back to the same text, and opening arbitrary
//! signed notes against a fixed key must never panic.
use cairn_tlog::{Checkpoint, Signer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(c) = Checkpoint::parse(text) {
        assert_eq!(c.to_text(), text);
    }
    if let Ok(signer) = Signer::from_seed("example.com/log", [1; 32]) {
        let _ = Checkpoint::open(data, &signer.verifier(), &[]);
    }
});
