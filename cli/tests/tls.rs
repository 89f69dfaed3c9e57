//! TLS, through the real `cairn` binary, with certificates made here by rcgen: a three-node cluster
//! whose API, read path and Raft all speak TLS; clients that check the chain (and fail without the
//! CA); a node whose certificate comes from another CA can neither receive entries nor vote; a raw
//! connection to a Raft port without a client certificate, or with a foreign one, is refused; and a
//! certificate replaced on disk is served without a restart.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Server, cairn, cluster_ports, keygen_shards, node_config};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A certificate authority made for the test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let pem = dir.join(format!("{name}.ca.pem"));
        std::fs::write(&pem, issuer.pem())?;
        Ok(Self { issuer, pem })
    }

    /// A certificate for 127.0.0.1 and localhost, for serving and as a client, written to
    /// `<name>.pem` and `<name>.key` in `dir`; returns its DER and the two paths.
    fn issue(&self, dir: &Path, name: &str) -> anyhow::Result<(Vec<u8>, PathBuf, PathBuf)> {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let (cert_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        // Written whole then renamed, as a Secret update swaps files: a reload never sees half a file.
        for (path, text) in [(&key_path, key.serialize_pem()), (&cert_path, cert.pem())] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, path)?;
        }
        Ok((cert.der().to_vec(), cert_path, key_path))
    }
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn roots(ca: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::pem::PemObject::pem_file_iter(ca)? {
        roots.add(c?)?;
    }
    Ok(roots)
}

/// A TLS handshake with `addr` as a client trusting `ca`, presenting `identity` if given, then one
/// read (a server that refuses the client's certificate says so after the handshake in TLS 1.3).
/// Returns the server's leaf certificate, or the error.
async fn handshake(
    addr: &str,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> anyhow::Result<Result<Vec<u8>, String>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca)?);
    let mut config = match identity {
        Some((cert, key)) => {
            let certs = rustls::pki_types::pem::PemObject::pem_file_iter(cert)?
                .collect::<Result<Vec<CertificateDer<'static>>, _>>()?;
            let key = <PrivateKeyDer<'static> as rustls::pki_types::pem::PemObject>::from_pem_file(key)?;
            builder.with_client_auth_cert(certs, key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tls = match connector.connect(ServerName::try_from("127.0.0.1")?, tcp).await {
        Ok(t) => t,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    // The HTTP/2 preface: a server that took the handshake answers with its SETTINGS frame.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await?;
    let mut buf = [0u8; 9];
    Ok(
        match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => Ok(leaf),
            Ok(Ok(_)) => Err("closed without an answer".into()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 5 s".into()),
        },
    )
}

/// A Prometheus sample of `text` (first series of `name`).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_speaks_tls_refuses_foreign_peers_and_reloads_certificates() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let ca = Ca::new(d, "cluster")?;
    let rogue = Ca::new(d, "rogue")?;
    let (shards, _) = keygen_shards(d, "tls.test", 1, true)?;
    let (ports, _) = cluster_ports(3)?;
    let peers: String = ports
        .iter()
        .enumerate()
        .map(|(i, (g, _, r))| {
            format!(
                "[[peers]]\nid = {}\nraft = \"127.0.0.1:{r}\"\ngrpc = \"https://127.0.0.1:{g}\"\n\n",
                i + 1
            )
        })
        .collect();
    let mut servers = Vec::new();
    let mut node_certs = Vec::new();
    for (i, ports) in ports.iter().enumerate() {
        let id = i + 1;
        let node_dir = d.join(format!("node-{id}"));
        std::fs::create_dir_all(&node_dir)?;
        // Node 3's certificate comes from another CA: the others must not talk to it, nor it to them.
        let issuer = if id == 3 { &rogue } else { &ca };
        let (der, cert, key) = issuer.issue(&node_dir, "node")?;
        node_certs.push((der, cert.clone(), key.clone()));
        let tls = format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n",
            p(&cert),
            p(&key),
            p(if id == 3 { &rogue.pem } else { &ca.pem }),
        );
        let (node_dir, path) = node_config(d, id, *ports, "", &tls, &format!("{peers}{shards}"))?;
        servers.push(Server::start(&node_dir, &["--config", &p(&path)])?);
    }
    let grpc = |i: usize| format!("https://127.0.0.1:{}", ports[i].0);
    let http = |i: usize| format!("https://127.0.0.1:{}", ports[i].1);
    let raft = |i: usize| format!("127.0.0.1:{}", ports[i].2);

    // Writes over TLS to both good nodes (one of them forwards to the leader, over TLS), with the CA.
    let half = |from: usize| -> String { (from..from + 100).map(|i| format!("tls entry {i}\n")).collect() };
    for (i, part) in [(0, half(0)), (1, half(100))] {
        let (ok, out, err) = cairn(
            d,
            &["submit", "--lines", "--server", &grpc(i), "--tls-ca", &p(&ca.pem)],
            Some(part.as_bytes()),
        )?;
        anyhow::ensure!(ok, "submit over TLS to node {}: {err}", i + 1);
        anyhow::ensure!(out.lines().count() == 100, "{out}");
    }
    // Without the CA the client refuses the server's certificate (the system's roots don't know it).
    let (ok, _, err) = cairn(
        d,
        &["submit", "--lines", "--server", &grpc(0)],
        Some(b"no ca\n".as_slice()),
    )?;
    anyhow::ensure!(!ok && err.to_lowercase().contains("certificate"), "{err}");

    // The read path over TLS, chain checked: the whole shard verifies, all 200 entries.
    let options = cairn_client::TlsOptions {
        ca: Some(ca.pem.clone()),
        ..Default::default()
    };
    let site = cairn_client::HttpLog::with_client(&http(0), options.http_client(None)?);
    let listing = site.shards().await?;
    let shard = listing.first().ok_or_else(|| anyhow::anyhow!("no shard"))?;
    let verified = common::verified_shard_covering(&site, shard, 200).await?;
    anyhow::ensure!(verified.entries.len() == 200);
    let strangers = reqwest::Client::new()
        .get(format!("{}/shards.json", http(0)))
        .send()
        .await;
    anyhow::ensure!(
        strangers.is_err(),
        "a client without the CA accepted the certificate"
    );

    // Node 3 (foreign certificate) holds nothing and never led: nobody would talk to it.
    let rogue_http = cairn_client::TlsOptions {
        ca: Some(rogue.pem.clone()),
        ..Default::default()
    }
    .http_client(Some(Duration::from_secs(5)))?;
    let metrics = |client: reqwest::Client, url: String| async move {
        anyhow::Ok(client.get(format!("{url}/metrics")).send().await?.text().await?)
    };
    let m3 = metrics(rogue_http, http(2)).await?;
    anyhow::ensure!(
        sample(&m3, "cairn_raft_applied_index").unwrap_or(0.0) == 0.0,
        "node 3 applied entries: {:?}",
        sample(&m3, "cairn_raft_applied_index")
    );
    anyhow::ensure!(sample(&m3, "cairn_raft_is_leader") == Some(0.0), "node 3 leads");
    let good = options.http_client(Some(Duration::from_secs(5)))?;
    let (m1, m2) = (
        metrics(good.clone(), http(0)).await?,
        metrics(good.clone(), http(1)).await?,
    );
    let leaders = [&m1, &m2]
        .iter()
        .filter(|m| sample(m, "cairn_raft_is_leader") == Some(1.0))
        .count();
    anyhow::ensure!(leaders == 1, "{leaders} of nodes 1 and 2 lead");

    // A raw connection to node 1's Raft port: with the cluster's certificate it is served; without a
    // client certificate, or with the foreign one, it is refused.
    let (_, cert2, key2) = &node_certs[1];
    let (_, cert3, key3) = &node_certs[2];
    let with_own = handshake(&raft(0), &ca.pem, Some((cert2, key2))).await?;
    anyhow::ensure!(
        with_own.is_ok(),
        "a peer with the cluster's certificate: {with_own:?}"
    );
    let without = handshake(&raft(0), &ca.pem, None).await?;
    anyhow::ensure!(
        without.is_err(),
        "the Raft port served a client without a certificate"
    );
    let foreign = handshake(&raft(0), &ca.pem, Some((cert3, key3))).await?;
    anyhow::ensure!(
        foreign.is_err(),
        "the Raft port served a client with a foreign certificate"
    );

    // A new certificate for node 1, written over the old files: served without a restart.
    let (old_der, _, _) = &node_certs[0];
    let served = handshake(&http(0)["https://".len()..], &ca.pem, None).await?;
    anyhow::ensure!(
        served.as_ref().ok() == Some(old_der),
        "node 1 serves another certificate"
    );
    let (new_der, _, _) = ca.issue(&d.join("node-1"), "node")?;
    anyhow::ensure!(new_der != *old_der);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let served = handshake(&http(0)["https://".len()..], &ca.pem, None).await?;
        if served.as_ref().ok() == Some(&new_der) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the new certificate was not served within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The gRPC API and the cluster carry on with it: a write through node 1 is logged and published.
    let (ok, _, err) = cairn(
        d,
        &[
            "submit",
            "--lines",
            "--wait",
            "published",
            "--server",
            &grpc(0),
            "--tls-ca",
            &p(&ca.pem),
        ],
        Some(b"after the reload\n".as_slice()),
    )?;
    anyhow::ensure!(ok, "submit after the reload: {err}");
    let verified = common::verified_shard_covering(&site, shard, 201).await?;
    anyhow::ensure!(verified.entries.last().map(Vec::as_slice) == Some(b"after the reload".as_slice()));

    for s in servers {
        anyhow::ensure!(s.stop()?.success(), "unclean exit");
    }
    Ok(())
}
