#![no_main]
//! Entry bundles: a decoded bundle must re-encode to exactly the input.
use cairn_tlog::bundle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = bundle::decode(data, None) {
        assert_eq!(bundle::encode(&entries).as_deref(), Ok(data));
    }
});
