//! Read-path conformance, over HTTP only: the verifier below knows nothing of Cairn but the C2SP
//! formats. It runs against the tile-server and against a plain static file server (Python's
//! `http.server`) serving the same directory, and both must give the same result. Then the
//! tile-server's own additions: proofs, caching headers, compression, CORS, and the bad-path table.

use std::io::Read;
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_client::HttpLog;
use cairn_store::testing::{test_shard, test_signer, write_log};
use cairn_store::{Lifecycle, ShardListing, ShardsJson, TileCache, open_bucket, shard_prefix};
use cairn_tile_server::{AppState, Config};
use cairn_tlog::{Hash, TlogProof, leaf_hash, verify_consistency, verify_inclusion};
use reqwest::StatusCode;

struct Site {
    client: reqwest::Client,
    base: String,
}

impl Site {
    async fn get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        Ok(self.client.get(format!("{}{path}", self.base)).send().await?)
    }

    async fn bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let r = self.get(path).await?;
        anyhow::ensure!(r.status() == StatusCode::OK, "GET {path}: {}", r.status());
        Ok(r.bytes().await?.to_vec())
    }
}

/// What a verifier learns from a site: per shard, the verified size and root, and the entries.
#[derive(Debug, PartialEq)]
struct SiteView {
    shards: Vec<(u64, u64, Hash, Vec<Vec<u8>>)>,
}

/// Verifies everything a site serves, over HTTP only, with `cairn-client`'s verifier: checkpoint
/// signatures, every bundle, the root recomputed from the entries, and every tile of every level.
async fn verify_site(site: &Site) -> anyhow::Result<SiteView> {
    let log = HttpLog::new(&site.base);
    let mut shards = Vec::new();
    for s in log.shards().await? {
        let v = log.verify_shard(&s).await?;
        shards.push((u64::from(s.id), v.checkpoint.size, v.checkpoint.root, v.entries));
    }
    Ok(SiteView { shards })
}

struct Static(Child);

impl Drop for Static {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_listening(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Sends `GET <path>` byte for byte and returns the status code.
async fn raw_status(port: u16, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    Ok(text.split_whitespace().nth(1).unwrap_or_default().to_owned())
}

fn entries(n: usize, tag: &str) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("{tag} entry {i}").into_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_path_conformance() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log1 = entries(70_000, "one");
    let log2 = entries(300, "two");
    let bucket = open_bucket(&format!("file://{}", dir.path().display()), &[])?;
    let cps1 = write_log(
        &bucket.child(&shard_prefix(1)),
        &test_signer(1),
        &log1,
        &[1, 255, 1000, 3, 30_000],
    )
    .await?;
    let cps2 = write_log(&bucket.child(&shard_prefix(2)), &test_signer(2), &log2, &[300]).await?;
    let shards = vec![test_shard(1), test_shard(2)];
    let list = ShardsJson {
        shards: shards
            .iter()
            .map(|s| ShardListing::new(s.clone(), cairn_store::ShardKind::Opaque, Lifecycle::Active))
            .collect(),
    };
    std::fs::write(dir.path().join("shards.json"), list.to_bytes())?;

    // The tile-server over the directory.
    let mut config = Config::new(shards, bucket);
    config.cache = TileCache::new(4 << 20);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(cairn_tile_server::serve(
        listener,
        AppState::new(config)?,
        async move {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::builder().no_gzip().build()?;
    let tiles = Site {
        client: client.clone(),
        base: format!("http://127.0.0.1:{port}"),
    };

    // A plain static server over the same directory.
    let static_port = free_port()?;
    let _static = Static(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                &static_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_listening(static_port).await?;
    let plain = Site {
        client: client.clone(),
        base: format!("http://127.0.0.1:{static_port}"),
    };

    let via_tiles = verify_site(&tiles).await?;
    let via_static = verify_site(&plain).await?;
    assert_eq!(
        via_tiles, via_static,
        "the tile-server and a static server must serve the same log"
    );
    assert_eq!(via_tiles.shards[0].3, log1);
    assert_eq!(via_tiles.shards[1].3, log2);
    assert_eq!(
        tiles.bytes("/shards.json").await?,
        plain.bytes("/shards.json").await?
    );

    // Inclusion proofs at every published size, sampled indexes.
    let vkey1 = test_signer(1).verifier();
    for cp in &cps1 {
        for index in [0, 1, cp.size / 3, cp.size / 2 + 7, cp.size - 1]
            .into_iter()
            .filter(|i| *i < cp.size)
        {
            let body = tiles
                .bytes(&format!("/logs/1/proof/inclusion/{}/{index}", cp.size))
                .await?;
            let proof: Vec<Hash> = String::from_utf8(body)?
                .lines()
                .map(Hash::from_base64)
                .collect::<Result<_, _>>()?;
            verify_inclusion(
                &leaf_hash(&log1[index as usize]),
                index,
                cp.size,
                &proof,
                &cp.root,
            )?;
        }
    }
    // Consistency between every pair of successive checkpoints.
    for pair in cps1.windows(2) {
        let body = tiles
            .bytes(&format!(
                "/logs/1/proof/consistency/{}/{}",
                pair[0].size, pair[1].size
            ))
            .await?;
        let proof: Vec<Hash> = String::from_utf8(body)?
            .lines()
            .map(Hash::from_base64)
            .collect::<Result<_, _>>()?;
        verify_consistency(pair[0].size, pair[1].size, &proof, &pair[0].root, &pair[1].root)?;
    }
    // Offline proofs against the current checkpoint.
    for index in [0usize, 12_345, 69_999] {
        let p = TlogProof::parse(&tiles.bytes(&format!("/logs/1/proof/{index}")).await?)?;
        p.verify(&log1[index], &vkey1, &[])?;
    }
    let p = TlogProof::parse(&tiles.bytes("/logs/2/proof/299").await?)?;
    p.verify(&log2[299], &test_signer(2).verifier(), &[])?;
    assert_eq!(cps2.last().map(|c| c.size), Some(300));

    // Headers.
    let r = tiles.get("/logs/1/tile/0/000").await?;
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let etag = r.headers()["etag"].to_str()?.to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong ETag: {etag}"
    );
    let r304 = client
        .get(format!("{}/logs/1/tile/0/000", tiles.base))
        .header("if-none-match", &etag)
        .send()
        .await?;
    assert_eq!(r304.status(), StatusCode::NOT_MODIFIED);
    let head = client
        .head(format!("{}/logs/1/tile/0/000", tiles.base))
        .send()
        .await?;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], "8192");
    let cp = tiles.get("/logs/1/checkpoint").await?;
    assert_eq!(cp.headers()["cache-control"], "public, max-age=2");
    assert!(cp.headers()["content-type"].to_str()?.starts_with("text/plain"));
    let proof = tiles.get("/logs/1/proof/inclusion/70000/5").await?;
    assert_eq!(
        proof.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(
        tiles.get("/logs/1/proof/5").await?.headers()["cache-control"],
        "public, max-age=2"
    );
    let gz = client
        .get(format!("{}/logs/1/tile/entries/000", tiles.base))
        .header("accept-encoding", "gzip")
        .send()
        .await?;
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz.bytes().await?[..]).read_to_end(&mut raw)?;
    assert_eq!(raw, plain.bytes("/logs/1/tile/entries/000").await?);
    let cors = client
        .get(format!("{}/logs/1/checkpoint", tiles.base))
        .header("origin", "https://verifier.example")
        .send()
        .await?;
    assert_eq!(cors.headers()["access-control-allow-origin"], "*");

    // Bad paths: 400 or 404 with a short text body, never a panic or anything outside a prefix.
    let table: &[(&str, u16)] = &[
        ("/logs/1/tile/0/0000", 400),
        ("/logs/1/tile/0/x000/001", 400),
        ("/logs/1/tile/0/001.p/0", 400),
        ("/logs/1/tile/0/001.p/256", 400),
        ("/logs/1/tile/0/001.p/01", 400),
        ("/logs/1/tile/64/000", 400),
        ("/logs/1/tile/00/000", 400),
        // The client resolves dot segments before sending: this arrives as /logs/1/2/checkpoint.
        ("/logs/1/tile/0/../../2/checkpoint", 404),
        ("/logs/1/tile/0/%2e%2e/000", 400),
        ("/logs/1/tile/0/x001%2F000", 400),
        ("/logs/1/tile/0/999", 404),
        ("/logs/1/tile/entries/000.p/7", 404),
        ("/logs/3/checkpoint", 404),
        ("/logs/01/checkpoint", 404),
        ("/logs/-1/checkpoint", 404),
        ("/logs/99999999999/checkpoint", 404),
        ("/logs/1/checkpoint/", 404),
        ("/logs/1/shards.json", 404),
        ("/logs/1/proof/inclusion/70001/5", 404),
        ("/logs/1/proof/inclusion/70000/70000", 400),
        ("/logs/1/proof/inclusion/070000/5", 400),
        ("/logs/1/proof/consistency/0/5", 400),
        ("/logs/1/proof/consistency/9/5", 400),
        ("/logs/1/proof/consistency/5/70001", 404),
        ("/logs/1/proof/70000", 404),
        ("/logs/1/proof/x", 400),
        ("/logs/1/proof/inclusion/18446744073709551616/1", 400),
        ("/etc/passwd", 404),
        ("/logs", 404),
    ];
    for (path, want) in table {
        let r = tiles.get(path).await?;
        let status = r.status().as_u16();
        let body = r.text().await?;
        assert_eq!(status, *want, "{path}: {body}");
        assert!(!body.is_empty() && body.len() < 200, "{path}: body {body:?}");
    }

    // Raw requests, exactly as written (no client-side normalisation).
    for (path, want) in [
        ("/logs/1/tile/0/../../2/checkpoint", "400"),
        ("/logs/1/../2/checkpoint", "404"),
        ("/logs/1/tile/./0/000", "400"),
        ("//logs/1/checkpoint", "404"),
    ] {
        let status = raw_status(port, path).await?;
        assert_eq!(status, want, "raw {path}");
    }

    // Metrics count cache hits and misses.
    let metrics = String::from_utf8(tiles.bytes("/metrics").await?)?;
    assert!(metrics.contains("cairn_tiles_cache_hits_total"), "{metrics}");
    assert_eq!(tiles.bytes("/healthz").await?, b"ok\n");
    assert_eq!(tiles.bytes("/readyz").await?, b"ok\n");

    let _ = stop.send(());
    server.await??;
    Ok(())
}
