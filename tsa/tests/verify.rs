//! The relying party's side: a timestamp this authority granted verifies against it, and only
//! against it, only over the data it was made for, and only within the period it is trusted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_tsa::{Authority, TrustedAuthority, verify_timestamp};

/// `openssl ts -query -data hello.txt -sha256 -no_nonce` ("hello\n"), as in the crate's example.
const REQUEST: [u8; 56] = [
    0x30, 0x36, 0x02, 0x01, 0x01, 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03,
    0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20, 0x58, 0x91, 0xb5, 0xb5, 0x22, 0xd5, 0xdf, 0x08, 0x6d, 0x0f,
    0xf0, 0xb1, 0x10, 0xfb, 0xd9, 0xd2, 0x1b, 0xb4, 0xfc, 0x71, 0x63, 0xaf, 0x34, 0xd0, 0x82, 0x86, 0xa2,
    0xe8, 0x46, 0xf6, 0xbe, 0x03,
];

fn trusted(a: &Authority) -> TrustedAuthority {
    TrustedAuthority {
        chain: a.chain_der().to_vec(),
        valid_from: None,
        valid_until: None,
    }
}

#[test]
fn a_granted_timestamp_verifies_only_where_it_should() -> anyhow::Result<()> {
    let tsa = Authority::generate("Cairn test TSA", Duration::from_secs(86_400))?;
    let other = Authority::generate("another TSA", Duration::from_secs(86_400))?;
    let now = UNIX_EPOCH + Duration::from_secs(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs());
    let reply = tsa.timestamp(&REQUEST, now)?;

    let v = verify_timestamp(&reply, b"hello\n", &[trusted(&other), trusted(&tsa)])
        .map_err(anyhow::Error::msg)?;
    anyhow::ensure!(v.time == now && v.authority == 1, "{v:?}");

    let err = |r: Result<_, String>| r.err().unwrap_or_default();
    let e = err(verify_timestamp(&reply, b"hello!\n", &[trusted(&tsa)]));
    anyhow::ensure!(e.contains("message imprint"), "{e}");
    let e = err(verify_timestamp(&reply, b"hello\n", &[trusted(&other)]));
    anyhow::ensure!(e.contains("not in the trusted root"), "{e}");
    let mut later = trusted(&tsa);
    later.valid_from = Some(now + Duration::from_secs(60));
    let e = err(verify_timestamp(&reply, b"hello\n", &[later]));
    anyhow::ensure!(e.contains("outside the period"), "{e}");
    // A trusted chain whose leaf is not signed by the next certificate.
    let mut spliced = trusted(&tsa);
    spliced.chain[1] = other.chain_der()[1].clone();
    let e = err(verify_timestamp(&reply, b"hello\n", &[spliced]));
    anyhow::ensure!(e.contains("not signed by the next"), "{e}");
    // Any flipped byte in the reply fails (a few positions across the token).
    for at in [reply.len() / 3, reply.len() / 2, reply.len() - 5] {
        let mut bad = reply.clone();
        bad[at] ^= 0x01;
        anyhow::ensure!(
            verify_timestamp(&bad, b"hello\n", &[trusted(&tsa)]).is_err(),
            "a reply with byte {at} flipped verified"
        );
    }
    let e = err(verify_timestamp(b"not DER", b"hello\n", &[trusted(&tsa)]));
    anyhow::ensure!(e.contains("neither a TimeStampResp nor a token"), "{e}");
    Ok(())
}
