//! The witness over HTTP (c2sp.org/tlog-witness), driven by the collector's client: every answer the
//! spec names, persistence across a restart, atomic updates under concurrent requests; then the
//! collector against three witnesses and a 2-of-3 policy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cairn_tlog::{Checkpoint, Cosigner, Note, Signer, VerifierKey, leaf_hash};
use cairn_witness::collect::{Answer, ProofFuture, add_checkpoint};
use cairn_witness::testing::{Served, TestLog, spawn};
use cairn_witness::{
    AddCheckpoint, CollectConfig, CollectMetrics, Collector, MemoryState, Policy, RocksState, Witness,
    WitnessConfig, WitnessState,
};

const ORIGIN: &str = "log.example/witnessed";

fn test_log(tag: &str) -> TestLog {
    TestLog::new(Signer::from_seed(ORIGIN, [7; 32]).expect("key"), tag)
}

fn cosigner(i: u8) -> Cosigner {
    Cosigner::from_seed(&format!("witness.example/w{i}"), [i; 32]).expect("key")
}

fn log_key() -> VerifierKey {
    test_log("a").signer.verifier()
}

fn witness(i: u8, state: Box<dyn WitnessState>) -> Arc<Witness> {
    let mut config = WitnessConfig::new(cosigner(i), vec![log_key()]);
    config.rate_per_log = None;
    Arc::new(Witness::new(config, state))
}

fn verifies(w: &Cosigner, note: &[u8], answer: &Answer) -> bool {
    let Answer::Cosigned(lines) = answer else {
        return false;
    };
    let mut n = Note::parse(note).expect("note");
    for line in std::str::from_utf8(lines).expect("utf-8").lines() {
        n.push(cairn_tlog::note::Signature::parse_line(line).expect("signature line"));
    }
    n.verify(&[w.verifier()]).is_ok()
}

#[tokio::test]
async fn every_answer_the_spec_names() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let w = witness(1, Box::new(RocksState::open(&dir.path().join("db"))?));
    let served = spawn(w, "127.0.0.1:0".parse()?).await?;
    let url = served.url.clone();
    let http = reqwest::Client::new();
    let send = |req: AddCheckpoint| {
        let http = http.clone();
        let url = url.clone();
        async move {
            add_checkpoint(&http, &url, &req)
                .await
                .map_err(anyhow::Error::msg)
        }
    };

    let mut log = test_log("honest");
    let note = log.grow_to(10);
    let first = send(log.request(0)).await?;
    assert!(
        verifies(&cosigner(1), &note, &first),
        "first checkpoint cosigned: {first:?}"
    );

    log.grow_to(300);
    assert_eq!(
        send(log.request(0)).await?,
        Answer::Conflict(10),
        "old size is not the latest"
    );
    let answer = send(log.request(10)).await?;
    assert!(verifies(&cosigner(1), &log.note(), &answer), "{answer:?}");
    // The same checkpoint again: old == size with the same root.
    assert!(verifies(
        &cosigner(1),
        &log.note(),
        &send(log.request(300)).await?
    ));

    let status = |a: Answer| match a {
        Answer::Refused(s, body) => (s, body),
        other => panic!("expected a refusal, got {other:?}"),
    };
    // A fork: same key, a different history from index 3 on.
    let mut fork = test_log("fork");
    fork.grow_to(300);
    let (s, body) = match send(fork.request(300)).await? {
        Answer::Conflict(size) => (409, size.to_string()),
        other => status(other),
    };
    assert_eq!((s, body.as_str()), (409, "300"), "same size, different root");
    fork.grow_to(400);
    let (s, body) = status(send(fork.request(300)).await?);
    assert_eq!(s, 422, "inconsistent proof: {body}");
    assert!(body.contains("does not verify"), "{body}");
    // A garbled proof of the honest log.
    log.grow_to(400);
    let mut bad = log.request(300);
    bad.proof[0] = leaf_hash(b"garbage");
    assert_eq!(status(send(bad).await?).0, 422);
    // Old size above the checkpoint's.
    let mut above = log.request(300);
    above.old = 500;
    assert_eq!(status(send(above).await?).0, 400);
    // A proof with old size 0.
    let mut zero = log.request(300);
    zero.old = 0;
    assert_eq!(status(send(zero).await?).0, 400);
    // Unknown origin.
    let stranger = Signer::from_seed("log.example/stranger", [9; 32])?;
    let req = AddCheckpoint {
        old: 0,
        proof: vec![],
        checkpoint: Checkpoint::new("log.example/stranger", 1, leaf_hash(b"x"))
            .sign(&stranger)
            .to_bytes(),
    };
    assert_eq!(status(send(req).await?).0, 404);
    // The right origin signed by another key.
    let impostor = Signer::from_seed(ORIGIN, [8; 32])?;
    let req = AddCheckpoint {
        old: 300,
        proof: log.proof(300),
        checkpoint: Checkpoint::new(ORIGIN, 400, log.root())
            .sign(&impostor)
            .to_bytes(),
    };
    assert_eq!(status(send(req).await?).0, 403);
    // A known key's signature that does not verify.
    let mut forged = Note::parse(&log.note())?;
    forged.signatures[0].bytes[0] ^= 1;
    let req = AddCheckpoint {
        old: 300,
        proof: log.proof(300),
        checkpoint: forged.to_bytes(),
    };
    assert_eq!(status(send(req).await?).0, 403);
    // Malformed and oversized bodies.
    let r = http
        .post(format!("{url}/add-checkpoint"))
        .body("old 01\n\nx\n")
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    assert!(r.text().await?.contains("leading zeros"));
    let r = http
        .post(format!("{url}/add-checkpoint"))
        .body(vec![b'a'; 70 << 10])
        .send()
        .await?;
    assert_eq!(r.status(), 413);

    // None of the refusals moved the witness: the honest log continues from 300.
    assert!(verifies(
        &cosigner(1),
        &log.note(),
        &send(log.request(300)).await?
    ));
    let latest = http
        .get(format!(
            "{url}/{}/checkpoint",
            cairn_witness::server::origin_hash(ORIGIN)
        ))
        .send()
        .await?;
    assert_eq!(latest.status(), 200);
    let latest = Note::parse(&latest.bytes().await?)?;
    let cp = Checkpoint::parse(&latest.text)?;
    assert_eq!(cp.size, 400);
    latest.verify(&[cosigner(1).verifier()])?;
    let metrics = http.get(format!("{url}/metrics")).send().await?.text().await?;
    assert!(
        metrics.contains(&format!(
            "cairn_witness_add_checkpoint_total{{code=\"422\",log=\"{ORIGIN}\"}} 2"
        )),
        "{metrics}"
    );
    served.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_restarted_witness_remembers_and_keeps_refusing_the_fork() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("db");
    let http = reqwest::Client::new();
    let mut log = test_log("honest");
    let mut fork = test_log("fork");
    let addr = {
        let w = witness(2, Box::new(RocksState::open(&db)?));
        let served = spawn(w, "127.0.0.1:0".parse()?).await?;
        log.grow_to(700);
        let a = add_checkpoint(&http, &served.url, &log.request(0))
            .await
            .map_err(anyhow::Error::msg)?;
        assert!(verifies(&cosigner(2), &log.note(), &a));
        let addr = served.addr;
        served.stop().await;
        addr
    };
    // Same directory, new process state.
    let w = witness(2, Box::new(RocksState::open(&db)?));
    let served = spawn(w, addr).await?;
    let url = served.url.clone();
    fork.grow_to(800);
    match add_checkpoint(&http, &url, &fork.request(700))
        .await
        .map_err(anyhow::Error::msg)?
    {
        Answer::Refused(422, _) => {}
        other => panic!("fork accepted or wrongly refused after restart: {other:?}"),
    }
    assert_eq!(
        add_checkpoint(&http, &url, &log.request(0))
            .await
            .map_err(anyhow::Error::msg)?,
        Answer::Conflict(700)
    );
    log.grow_to(800);
    let a = add_checkpoint(&http, &url, &log.request(700))
        .await
        .map_err(anyhow::Error::msg)?;
    assert!(verifies(&cosigner(2), &log.note(), &a));
    served.stop().await;
    Ok(())
}

#[tokio::test]
async fn concurrent_requests_never_roll_the_witness_back() -> anyhow::Result<()> {
    let w = witness(3, Box::new(MemoryState::default()));
    let served = spawn(w.clone(), "127.0.0.1:0".parse()?).await?;
    let url = served.url.clone();
    let http = reqwest::Client::new();
    let mut log = test_log("honest");
    log.grow_to(5);
    add_checkpoint(&http, &url, &log.request(0))
        .await
        .map_err(anyhow::Error::msg)?;
    // Eight checkpoints of different sizes, all claiming the witness is at 5.
    let mut requests = Vec::new();
    for size in (1..=8).map(|k| 5 + k * 11) {
        log.grow_to(size);
        requests.push(log.request(5));
    }
    let answers = futures::future::join_all(requests.iter().map(|r| add_checkpoint(&http, &url, r))).await;
    let cosigned: Vec<usize> = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| matches!(a, Ok(Answer::Cosigned(_))))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(cosigned.len(), 1, "exactly one wins: {answers:?}");
    let winner = Checkpoint::parse_note_unverified(&requests[cosigned[0]].checkpoint)?.size;
    for a in &answers {
        if let Ok(Answer::Conflict(size)) = a {
            assert_eq!(*size, winner, "losers are told the winner's size");
        }
    }
    let stored = Checkpoint::parse_note_unverified(&w.latest(ORIGIN)?.expect("stored"))?;
    assert_eq!(stored.size, winner);
    served.stop().await;
    Ok(())
}

#[tokio::test]
async fn rate_limit_per_log() -> anyhow::Result<()> {
    let mut config = WitnessConfig::new(cosigner(4), vec![log_key()]);
    config.rate_per_log = std::num::NonZeroU32::new(1);
    config.burst_per_log = std::num::NonZeroU32::new(2);
    let served = spawn(
        Arc::new(Witness::new(config, Box::new(MemoryState::default()))),
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let url = served.url.clone();
    let http = reqwest::Client::new();
    let mut log = test_log("honest");
    log.grow_to(3);
    // Anyone can name the log's origin: requests it did not sign do not use up its quota.
    let mut impostor = TestLog::new(Signer::from_seed(ORIGIN, [8; 32])?, "honest");
    impostor.grow_to(3);
    for _ in 0..5 {
        let a = add_checkpoint(&http, &url, &impostor.request(0))
            .await
            .map_err(anyhow::Error::msg)?;
        assert!(matches!(a, Answer::Refused(403, _)), "{a:?}");
    }
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            match add_checkpoint(&http, &url, &log.request(0))
                .await
                .map_err(anyhow::Error::msg)?
            {
                Answer::Cosigned(_) => 200,
                Answer::Conflict(_) => 409,
                Answer::Refused(s, _) => s,
            },
        );
    }
    assert_eq!(statuses, vec![200, 409, 429, 429]);
    served.stop().await;
    Ok(())
}

/// Three witnesses, a 2-of-3 policy.
struct Three {
    urls: Vec<String>,
    served: Vec<Option<Served>>,
    addrs: Vec<SocketAddr>,
    states: Vec<Arc<MemoryState>>,
}

struct Shared(Arc<MemoryState>);

impl WitnessState for Shared {
    fn get(&self, origin: &str) -> Result<Option<Vec<u8>>, String> {
        self.0.get(origin)
    }
    fn put(&self, origin: &str, note: &[u8]) -> Result<(), String> {
        self.0.put(origin, note)
    }
}

impl Three {
    async fn start() -> anyhow::Result<Self> {
        let mut three = Self {
            urls: vec![],
            served: vec![],
            addrs: vec![],
            states: vec![],
        };
        for i in 1..=3u8 {
            let state = Arc::new(MemoryState::default());
            let served = spawn(
                witness(i, Box::new(Shared(state.clone()))),
                "127.0.0.1:0".parse()?,
            )
            .await?;
            three.addrs.push(served.addr);
            three.urls.push(served.url.clone());
            three.served.push(Some(served));
            three.states.push(state);
        }
        Ok(three)
    }

    async fn stop(&mut self, i: usize) {
        if let Some(s) = self.served[i].take() {
            s.stop().await;
        }
    }

    async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let served = spawn(
            witness(i as u8 + 1, Box::new(Shared(self.states[i].clone()))),
            self.addrs[i],
        )
        .await?;
        self.served[i] = Some(served);
        Ok(())
    }

    fn policy(&self) -> Policy {
        let text = (0..3)
            .map(|i| {
                format!(
                    "witness w{} {} {}\n",
                    i + 1,
                    cosigner(i as u8 + 1).verifier(),
                    self.urls[i]
                )
            })
            .collect::<String>()
            + "group two 2 w1 w2 w3\nquorum two\n";
        Policy::parse(&text).expect("policy")
    }
}

fn collector(policy: Policy, fail_open: bool, greedy: bool) -> Collector {
    Collector::new(
        CollectConfig {
            policy,
            timeout: Duration::from_secs(2),
            fail_open,
            greedy,
        },
        ORIGIN,
        &CollectMetrics::default(),
    )
    .expect("collector")
}

async fn collect(
    c: &Collector,
    log: &TestLog,
    previous: u64,
) -> Result<cairn_witness::Collected, cairn_witness::QuorumFailed> {
    let note = Note::parse(&log.note()).expect("note");
    let proof = |old: u64| -> ProofFuture<'_> {
        let p = log.proof(old);
        Box::pin(async move { Ok(p) })
    };
    c.collect(&note, log.size(), previous, proof).await
}

#[tokio::test]
async fn collector_meets_a_two_of_three_quorum() -> anyhow::Result<()> {
    let mut three = Three::start().await?;
    let policy = three.policy();
    let greedy = collector(policy.clone(), false, true);
    let mut log = test_log("honest");
    log.grow_to(50);
    let all = collect(&greedy, &log, 0).await?;
    assert_eq!(all.cosigned, vec!["w1", "w2", "w3"]);
    let (cp, _, names) = policy.verify(&all.note.to_bytes(), Some(&log_key()))?;
    assert_eq!((cp.size, names.len()), (50, 3));

    // A second collector (another leader) that knows nothing: its guess of 0 is corrected by 409s.
    let fresh = collector(policy.clone(), false, false);
    log.grow_to(120);
    let quorum = collect(&fresh, &log, 0).await?;
    assert!(quorum.cosigned.len() >= 2, "{quorum:?}");
    policy.verify(&quorum.note.to_bytes(), Some(&log_key()))?;

    // One witness down: still a quorum.
    three.stop(2).await;
    log.grow_to(200);
    let two = collect(&greedy, &log, 120).await?;
    assert_eq!(two.cosigned, vec!["w1", "w2"]);
    assert_eq!(two.failures.len(), 1);

    // Two down: fail-closed refuses, saying who failed; fail-open publishes what it has.
    three.stop(1).await;
    log.grow_to(260);
    let err = collect(&greedy, &log, 200).await.expect_err("no quorum");
    assert_eq!(err.cosigned, vec!["w1"]);
    assert_eq!(err.failures.len(), 2);
    assert!(err.to_string().contains("2 of (w1, w2, w3)"), "{err}");
    let open = collect(&collector(policy.clone(), true, false), &log, 200).await?;
    assert!(!open.quorum);
    assert!(matches!(
        policy.verify(&open.note.to_bytes(), Some(&log_key())),
        Err(cairn_witness::QuorumError::NotMet { .. })
    ));

    // One comes back: the quorum holds again, from the size it last cosigned (200, not 260).
    three.restart(1).await?;
    log.grow_to(300);
    let back = collect(&greedy, &log, 260).await?;
    assert_eq!(back.cosigned, vec!["w1", "w2"]);
    policy.verify(&back.note.to_bytes(), Some(&log_key()))?;
    three.stop(0).await;
    three.stop(1).await;
    Ok(())
}
