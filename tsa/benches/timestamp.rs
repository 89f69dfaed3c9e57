//! Timestamps per second on one core: parsing a request and signing a reply (ECDSA P-256), with the
//! certificate requested and not.
//!
//! `cargo bench -p cairn-tsa --bench timestamp`

use std::time::{Duration, SystemTime};

use cairn_tsa::Authority;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// `openssl ts -query -sha256 [-cert]` for a fixed SHA-256 digest: DER by hand, since the request
/// encoding is not what is measured.
fn request(cert: bool) -> Vec<u8> {
    let mut imprint = vec![
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00,
        0x04, 0x20,
    ];
    imprint.extend_from_slice(&[0x5a; 32]);
    let mut body = vec![0x02, 0x01, 0x01];
    body.extend_from_slice(&imprint);
    if cert {
        body.extend_from_slice(&[0x01, 0x01, 0xff]);
    }
    let mut req = vec![0x30, body.len() as u8];
    req.extend_from_slice(&body);
    req
}

fn bench(c: &mut Criterion) {
    let Ok(tsa) = Authority::generate("bench TSA", Duration::from_secs(86_400)) else {
        return;
    };
    let mut g = c.benchmark_group("tsa_timestamp");
    g.throughput(Throughput::Elements(1));
    for (name, cert) in [("p256", false), ("p256_cert_req", true)] {
        let req = request(cert);
        assert!(
            tsa.timestamp(&req, SystemTime::now()).is_ok(),
            "{name} request refused"
        );
        g.bench_function(name, |b| b.iter(|| tsa.timestamp(&req, SystemTime::now())));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
