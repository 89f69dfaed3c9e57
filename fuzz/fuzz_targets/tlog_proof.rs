#![no_main]
//! tlog-proof: parsing and verifying arbitrary proofs never panics; a parsed proof round-trips.
use cairn_tlog::{Signer, TlogProof};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = TlogProof::parse(data) {
        assert_eq!(TlogProof::parse(&p.to_bytes()).as_ref(), Ok(&p));
        if let Ok(signer) = Signer::from_seed("example.com/log", [1; 32]) {
            let _ = p.verify(b"entry", &signer.verifier(), &[]);
        }
    }
});
