//! The submission API over a real socket, in front of a one-node sequencer with two shards: the
//! malformed-input table (each gets its documented status and message, and the log is unchanged),
//! routing around a frozen shard, the streaming call, and health.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use cairn_log_server::{AuthConfig, Backend, Limits, LogServer, LogServerConfig, Tenant};
use cairn_proto::v1::log_client::LogClient;
use cairn_proto::v1::{
    AddEntriesRequest, FreezeShardRequest, GetCheckpointRequest, GetConsistencyProofRequest,
    GetInclusionProofRequest, ListShardsRequest, Wait,
};
use cairn_sequencer::testing::test_shards;
use cairn_sequencer::{Node, NodeConfig};
use cairn_store::{Bucket, TileCache};
use object_store::memory::InMemory;
use sha2::{Digest, Sha256};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

struct Fixture {
    node: Arc<Node>,
    server: LogServer,
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start() -> anyhow::Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let bucket = Bucket::new(Arc::new(InMemory::new()), Default::default());
    let shards = test_shards(2);
    let config = NodeConfig::new(
        1,
        dir.path().join("db"),
        "127.0.0.1:0".parse()?,
        bucket.clone(),
        shards.clone(),
    );
    let node = Node::start(config).await?;
    node.initialize(BTreeMap::from([(1, node.advertise_addr())]))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.leader(1).is_none() || node.leader(2).is_none() {
        anyhow::ensure!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let node = Arc::new(node);
    let mut config = LogServerConfig::new(shards.iter().map(|s| s.shard.clone()).collect());
    config.limits = Limits {
        max_entries: 100,
        max_bytes: 256 << 10,
    };
    config.auth = AuthConfig {
        tenants: vec![
            Tenant {
                name: "npm".into(),
                token: "npm-token".into(),
                rate: None,
                burst: None,
            },
            Tenant {
                name: "tiny".into(),
                token: "tiny-token".into(),
                rate: NonZeroU32::new(1),
                burst: NonZeroU32::new(5),
            },
        ],
        admin_token: Some("admin-token".into()),
        allow_anonymous: false,
    };
    let server = LogServer::new(
        config,
        Backend {
            node: Some(node.clone()),
            bucket,
            cache: TileCache::new(16 << 20),
        },
    )?;
    let routes = cairn_log_server::grpc_routes(server.clone()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(cairn_log_server::serve(listener, routes, async move {
        let _ = rx.await;
    }));
    Ok(Fixture {
        node,
        server,
        addr,
        stop,
        _dir: dir,
    })
}

fn client(addr: SocketAddr) -> anyhow::Result<LogClient<Channel>> {
    let channel = Channel::from_shared(format!("http://{addr}"))?.connect_lazy();
    Ok(LogClient::new(channel).max_encoding_message_size(64 << 20))
}

fn with_token<T>(body: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(body);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", t.parse().expect("ascii header"));
    }
    r
}

fn add(entries: Vec<Vec<u8>>, token: Option<&str>) -> Request<AddEntriesRequest> {
    with_token(
        AddEntriesRequest {
            entries,
            wait: Wait::Sequenced as i32,
        },
        token,
    )
}

/// Sends raw bytes as the request message, to test what the server does with garbage.
#[derive(Default)]
struct RawCodec;
struct Raw;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let v = buf.chunk().to_vec();
        buf.advance(v.len());
        Ok(Some(v))
    }
}

async fn raw_add_entries(addr: SocketAddr, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| Status::internal(e.to_string()))?
        .connect()
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| Status::internal(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/cairn.v1.Log/AddEntries");
    let mut req = Request::new(body);
    req.metadata_mut()
        .insert("authorization", "Bearer npm-token".parse().expect("ascii"));
    grpc.unary(req, path, RawCodec).await.map(|r| r.into_inner())
}

fn total_size(node: &Node) -> anyhow::Result<u64> {
    Ok(node.state(1)?.size + node.state(2)?.size)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_gets_its_documented_status_and_changes_nothing() -> anyhow::Result<()> {
    let f = start().await?;
    let mut c = client(f.addr)?;
    let ok = Some("Bearer npm-token");
    let e = |n: usize| vec![7u8; n];
    type Case = (&'static str, Result<(), Status>, Code, &'static str);
    let cases: Vec<Case> = vec![
        (
            "no entries",
            c.add_entries(add(vec![], ok)).await.map(drop),
            Code::InvalidArgument,
            "no entries",
        ),
        (
            "empty entry",
            c.add_entries(add(vec![e(3), vec![]], ok)).await.map(drop),
            Code::InvalidArgument,
            "entry 1 is empty",
        ),
        (
            "oversized entry",
            c.add_entries(add(vec![e(65_536)], ok)).await.map(drop),
            Code::InvalidArgument,
            "entry 0 is 65536 bytes; the limit is 65535 bytes",
        ),
        (
            "too many entries",
            c.add_entries(add((0..101u8).map(|i| vec![i]).collect(), ok))
                .await
                .map(drop),
            Code::InvalidArgument,
            "101 entries; the limit is 100",
        ),
        (
            "oversized request",
            c.add_entries(add((0..5u8).map(|i| vec![i; 60_000]).collect(), ok))
                .await
                .map(drop),
            Code::InvalidArgument,
            "300000 bytes of entries; the limit is 262144 bytes",
        ),
        (
            "no token",
            c.add_entries(add(vec![e(1)], None)).await.map(drop),
            Code::Unauthenticated,
            "missing bearer token",
        ),
        (
            "wrong token",
            c.add_entries(add(vec![e(1)], Some("Bearer nope")))
                .await
                .map(drop),
            Code::Unauthenticated,
            "unknown token",
        ),
        (
            "not a bearer token",
            c.add_entries(add(vec![e(1)], Some("Basic dXNlcg==")))
                .await
                .map(drop),
            Code::Unauthenticated,
            "Bearer <token>",
        ),
        (
            "over the burst",
            c.add_entries(add(
                (0..6u8).map(|i| vec![i]).collect(),
                Some("Bearer tiny-token"),
            ))
            .await
            .map(drop),
            Code::InvalidArgument,
            "exceed tenant tiny's burst size",
        ),
        (
            "garbage protobuf",
            raw_add_entries(f.addr, vec![0xff, 0xff, 0xff, 0xff])
                .await
                .map(drop),
            Code::InvalidArgument,
            "malformed request message",
        ),
        (
            "wrong wire type",
            raw_add_entries(f.addr, vec![0x08, 0x01]).await.map(drop),
            Code::InvalidArgument,
            "malformed request message",
        ),
        (
            "unknown shard checkpoint",
            c.get_checkpoint(GetCheckpointRequest { shard_id: 99 })
                .await
                .map(drop),
            Code::NotFound,
            "unknown shard 99",
        ),
        (
            "unknown shard proof",
            c.get_inclusion_proof(GetInclusionProofRequest {
                shard_id: 99,
                index: 0,
                tree_size: 1,
            })
            .await
            .map(drop),
            Code::NotFound,
            "unknown shard 99",
        ),
        (
            "nothing published yet",
            c.get_consistency_proof(GetConsistencyProofRequest {
                shard_id: 1,
                first_size: 1,
                second_size: 2,
            })
            .await
            .map(drop),
            Code::NotFound,
            // Either the empty tree is not published yet, or it is and size 2 is beyond it.
            "published",
        ),
        (
            "freeze with a tenant token",
            c.freeze_shard(with_token(FreezeShardRequest { shard_id: 1 }, ok))
                .await
                .map(drop),
            Code::PermissionDenied,
            "may not administer",
        ),
        (
            "freeze without a token",
            c.freeze_shard(with_token(FreezeShardRequest { shard_id: 1 }, None))
                .await
                .map(drop),
            Code::Unauthenticated,
            "missing bearer token",
        ),
        (
            "freeze unknown shard",
            c.freeze_shard(with_token(
                FreezeShardRequest { shard_id: 9 },
                Some("Bearer admin-token"),
            ))
            .await
            .map(drop),
            Code::NotFound,
            "unknown shard 9",
        ),
    ];
    let mut failures = Vec::new();
    for (name, got, code, message) in cases {
        match got {
            Err(s) if s.code() == code && s.message().contains(message) => {}
            other => failures.push(format!(
                "{name}: expected {code:?} containing {message:?}, got {other:?}"
            )),
        }
    }
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("\n"));
    anyhow::ensure!(total_size(&f.node)? == 0, "a rejected request appended something");

    // A tenant over its rate is told when to come back.
    c.add_entries(add(
        (0..5u8).map(|i| vec![i]).collect(),
        Some("Bearer tiny-token"),
    ))
    .await?;
    let s = c
        .add_entries(add(vec![e(9)], Some("Bearer tiny-token")))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("the rate limit did not apply"))?;
    anyhow::ensure!(s.code() == Code::ResourceExhausted, "{s:?}");
    let ms: u64 = s
        .metadata()
        .get(cairn_log_server::RETRY_AFTER_MS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no retry hint"))?;
    anyhow::ensure!((1..=1_000).contains(&ms), "retry hint {ms} ms");
    anyhow::ensure!(
        total_size(&f.node)? == 5,
        "only the five accepted entries are logged"
    );

    // A valid request after all that works, and the published tree answers proofs past it with NOT_FOUND.
    let r = c
        .add_entries(with_token(
            AddEntriesRequest {
                entries: vec![b"fine".to_vec()],
                wait: Wait::Published as i32,
            },
            ok,
        ))
        .await?
        .into_inner();
    let shard = r.results[0].shard_id;
    let s = c
        .get_inclusion_proof(GetInclusionProofRequest {
            shard_id: shard,
            index: 0,
            tree_size: 1_000,
        })
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a proof against an unpublished size"))?;
    anyhow::ensure!(
        s.code() == Code::NotFound && s.message().contains("not published"),
        "{s:?}"
    );
    let _ = f.stop.send(());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_spreads_entries_and_never_chooses_a_frozen_shard() -> anyhow::Result<()> {
    let f = start().await?;
    let mut c = client(f.addr)?;
    let ok = Some("Bearer npm-token");
    let entries: Vec<Vec<u8>> = (0..100).map(|i| format!("entry {i}").into_bytes()).collect();
    let first = c
        .add_entries(add(entries.clone(), ok))
        .await?
        .into_inner()
        .results;
    let on1 = first.iter().filter(|r| r.shard_id == 1).count();
    anyhow::ensure!((20..=80).contains(&on1), "{on1} of 100 entries went to shard 1");
    for (e, r) in entries.iter().zip(&first) {
        // The documented rule, computed here from its definition (see `routed`).
        let expected = Some(routed(e, &[1, 2])?);
        anyhow::ensure!(
            Some(r.shard_id) == expected,
            "entry routed to {} not {expected:?}",
            r.shard_id
        );
    }

    c.freeze_shard(with_token(
        FreezeShardRequest { shard_id: 1 },
        Some("Bearer admin-token"),
    ))
    .await?;
    let shards = c.list_shards(ListShardsRequest {}).await?.into_inner().shards;
    let states: Vec<(u32, &str)> = shards.iter().map(|s| (s.id, s.state.as_str())).collect();
    anyhow::ensure!(states == [(1, "frozen"), (2, "active")], "{states:?}");
    let more: Vec<Vec<u8>> = (100..200).map(|i| format!("entry {i}").into_bytes()).collect();
    let second = c.add_entries(add(more, ok)).await?.into_inner().results;
    anyhow::ensure!(
        second.iter().all(|r| r.shard_id == 2),
        "an entry went to the frozen shard"
    );
    let _ = f.stop.send(());
    Ok(())
}

/// One `POST` to the `/add` routes, answered in process: status, `Cairn-Shard`, whether it was marked a
/// duplicate, `Retry-After`, and the body.
struct Reply {
    status: u16,
    shard: Option<u32>,
    duplicate: bool,
    retry_after: Option<u64>,
    body: String,
}

async fn post(f: &Fixture, path: &str, body: Vec<u8>, token: Option<&str>) -> anyhow::Result<Reply> {
    use tower::ServiceExt;
    let mut req = axum::http::Request::post(path);
    if let Some(t) = token {
        req = req.header("authorization", t);
    }
    let resp = cairn_log_server::add::router(f.server.clone())
        .oneshot(req.body(axum::body::Body::from(body))?)
        .await?;
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Ok(Reply {
        status: resp.status().as_u16(),
        shard: header("cairn-shard").and_then(|v| v.parse().ok()),
        duplicate: header("cairn-duplicate").as_deref() == Some("true"),
        retry_after: header("retry-after").and_then(|v| v.parse().ok()),
        body: String::from_utf8(axum::body::to_bytes(resp.into_body(), 1 << 20).await?.to_vec())?,
    })
}

/// The shard the documented routing rule picks for `entry` among `active`: the one with the highest
/// weight, the first 8 bytes (big endian) of SHA-256(RFC 6962 leaf hash || shard id, 4 bytes big
/// endian).
fn routed(entry: &[u8], active: &[u32]) -> anyhow::Result<u32> {
    let leaf = Sha256::new().chain_update([0u8]).chain_update(entry).finalize();
    let mut best = None;
    for &shard in active {
        let w = Sha256::new()
            .chain_update(leaf)
            .chain_update(shard.to_be_bytes())
            .finalize();
        let weight = u64::from_be_bytes(w[..8].try_into()?);
        if best.is_none_or(|(b, _)| weight > b) {
            best = Some((weight, shard));
        }
    }
    best.map(|(_, s)| s)
        .ok_or_else(|| anyhow::anyhow!("no active shard"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_add_appends_one_entry_and_answers_with_its_index() -> anyhow::Result<()> {
    let f = start().await?;
    let ok = Some("Bearer npm-token");

    // The index is the whole body; the entry is in the named shard at that index.
    let r = post(&f, "/logs/1/add", b"first".to_vec(), ok).await?;
    anyhow::ensure!(r.status == 200 && r.body == "0", "{} {:?}", r.status, r.body);
    anyhow::ensure!(r.shard == Some(1) && !r.duplicate);
    let r = post(&f, "/logs/1/add", b"second".to_vec(), ok).await?;
    anyhow::ensure!(r.status == 200 && r.body == "1", "{} {:?}", r.status, r.body);
    anyhow::ensure!(f.node.state(1)?.size == 2 && f.node.state(2)?.size == 0);

    // A repeated entry gets its original index and appends nothing.
    let r = post(&f, "/logs/1/add", b"first".to_vec(), ok).await?;
    anyhow::ensure!(
        r.status == 200 && r.body == "0" && r.duplicate,
        "{} {:?}",
        r.status,
        r.body
    );
    anyhow::ensure!(f.node.state(1)?.size == 2);

    // A named shard is honoured whatever the routing rule would pick.
    let (to1, to2) = {
        let mut picks = (0..).map(|i| format!("named {i}").into_bytes());
        let to1 = picks.find(|e| routed(e, &[1, 2]).ok() == Some(1));
        let to2 = picks.find(|e| routed(e, &[1, 2]).ok() == Some(2));
        (to1.unwrap_or_default(), to2.unwrap_or_default())
    };
    let r = post(&f, "/logs/2/add", to1.clone(), ok).await?;
    anyhow::ensure!(
        r.status == 200 && r.shard == Some(2) && r.body == "0",
        "{} {:?}",
        r.status,
        r.body
    );
    // `/add` routes by leaf hash, as the gRPC API does, and says where the entry went.
    let r = post(&f, "/add", to2.clone(), ok).await?;
    anyhow::ensure!(
        r.status == 200 && r.shard == Some(2) && r.body == "1",
        "{} {:?}",
        r.status,
        r.body
    );
    let r = post(&f, "/add", b"routed".to_vec(), ok).await?;
    anyhow::ensure!(r.status == 200 && r.shard == Some(routed(b"routed", &[1, 2])?));
    let before = total_size(&f.node)?;

    // Refusals: each its status and a message that says what to fix; nothing is appended.
    type Case<'a> = (&'a str, &'a str, Vec<u8>, Option<&'a str>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("empty body", "/logs/1/add", vec![], ok, 400, "the body is empty"),
        (
            "too large",
            "/logs/1/add",
            vec![7; 65_536],
            ok,
            413,
            "limit of 65535 bytes",
        ),
        ("no token", "/logs/1/add", b"x".to_vec(), None, 401, "token"),
        (
            "unknown token",
            "/logs/1/add",
            b"x".to_vec(),
            Some("Bearer nope"),
            401,
            "",
        ),
        (
            "not bearer",
            "/add",
            b"x".to_vec(),
            Some("Basic bnBt"),
            401,
            "Bearer",
        ),
        (
            "unknown shard",
            "/logs/9/add",
            b"x".to_vec(),
            ok,
            404,
            "no shard 9",
        ),
        (
            "not a shard id",
            "/logs/one/add",
            b"x".to_vec(),
            ok,
            404,
            "not a shard id",
        ),
    ];
    let mut failures = Vec::new();
    for (name, path, body, token, status, message) in cases {
        let r = post(&f, path, body, token).await?;
        if r.status != status || !r.body.contains(message) || !r.body.ends_with('\n') {
            failures.push(format!(
                "{name}: expected {status} containing {message:?}, got {} {:?}",
                r.status, r.body
            ));
        }
    }
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("\n"));
    anyhow::ensure!(
        total_size(&f.node)? == before,
        "a refused request appended something"
    );

    // Back-pressure: a tenant over its rate gets 503 and when to come back; the entry is not logged.
    let tiny = Some("Bearer tiny-token");
    for i in 0..5 {
        let r = post(&f, "/logs/1/add", format!("tiny {i}").into_bytes(), tiny).await?;
        anyhow::ensure!(r.status == 200, "burst entry {i}: {} {:?}", r.status, r.body);
    }
    let r = post(&f, "/logs/1/add", b"tiny 5".to_vec(), tiny).await?;
    anyhow::ensure!(r.status == 503, "{} {:?}", r.status, r.body);
    anyhow::ensure!(
        matches!(r.retry_after, Some(1..=2)),
        "Retry-After {:?}",
        r.retry_after
    );
    anyhow::ensure!(total_size(&f.node)? == before + 5);

    // The forwarding marker alone does not pick a shard: a request "forwarded" for a shard the routing
    // rule would not choose is refused as retryable; with the named-shard mark too, it goes there.
    let mut c = client(f.addr)?;
    let forwarded = |entry: &[u8], named: bool| {
        let mut r = add(vec![entry.to_vec()], ok);
        r.metadata_mut()
            .insert(cairn_log_server::FORWARDED_SHARD, "1".parse().expect("ascii"));
        if named {
            r.metadata_mut()
                .insert(cairn_proto::metadata::NAMED_SHARD, "1".parse().expect("ascii"));
        }
        r
    };
    let to2_again = {
        let mut picks = (0..).map(|i| format!("forwarded {i}").into_bytes());
        picks
            .find(|e| routed(e, &[1, 2]).ok() == Some(2))
            .unwrap_or_default()
    };
    let s = c
        .add_entries(forwarded(&to2_again, false))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a forwarded entry went to a shard routing did not pick"))?;
    anyhow::ensure!(
        s.code() == Code::Unavailable && s.message().contains("retry"),
        "{s:?}"
    );
    let r = c
        .add_entries(forwarded(&to2_again, true))
        .await?
        .into_inner()
        .results;
    anyhow::ensure!(r.len() == 1 && r[0].shard_id == 1, "{r:?}");

    // A frozen shard takes nothing by name, and `/add` routes around it.
    c.freeze_shard(with_token(
        FreezeShardRequest { shard_id: 1 },
        Some("Bearer admin-token"),
    ))
    .await?;
    let r = post(&f, "/logs/1/add", b"late".to_vec(), ok).await?;
    anyhow::ensure!(
        r.status == 405 && r.body.contains("frozen"),
        "{} {:?}",
        r.status,
        r.body
    );
    let r = post(&f, "/add", to1, ok).await?;
    anyhow::ensure!(
        r.status == 200 && r.shard == Some(2) && r.duplicate,
        "{} {:?}",
        r.status,
        r.body
    );
    let r = post(&f, "/add", b"late".to_vec(), ok).await?;
    anyhow::ensure!(
        r.status == 200 && r.shard == Some(2) && !r.duplicate,
        "{} {:?}",
        r.status,
        r.body
    );
    let _ = f.stop.send(());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_answers_every_request_in_order() -> anyhow::Result<()> {
    let f = start().await?;
    let mut c = client(f.addr)?;
    let requests: Vec<AddEntriesRequest> = (0..40)
        .map(|r| AddEntriesRequest {
            entries: (0..25).map(|i| format!("stream {r} {i}").into_bytes()).collect(),
            wait: Wait::Sequenced as i32,
        })
        .collect();
    let mut req = Request::new(futures::stream::iter(requests.clone()));
    req.metadata_mut()
        .insert("authorization", "Bearer npm-token".parse()?);
    let mut replies = c.add_entries_stream(req).await?.into_inner();
    let mut n = 0;
    while let Some(reply) = replies.message().await? {
        let sent = &requests[n];
        anyhow::ensure!(reply.results.len() == sent.entries.len());
        for (e, r) in sent.entries.iter().zip(&reply.results) {
            anyhow::ensure!(
                r.leaf_hash == cairn_tlog::leaf_hash(e).as_bytes().to_vec(),
                "reply out of order"
            );
        }
        n += 1;
    }
    anyhow::ensure!(n == 40, "{n} replies for 40 requests");
    anyhow::ensure!(total_size(&f.node)? == 1_000);

    // Health: the standard service reports the log API as serving.
    let channel = Channel::from_shared(format!("http://{}", f.addr))?
        .connect()
        .await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "cairn.v1.Log".into(),
        })
        .await?
        .into_inner()
        .status;
    anyhow::ensure!(status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    let _ = f.stop.send(());
    Ok(())
}
