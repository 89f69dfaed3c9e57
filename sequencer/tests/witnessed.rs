//! A 3-node cluster whose checkpoints need a 2-of-3 witness quorum (c2sp.org/tlog-witness), with three
//! Cairn witnesses on loopback keeping their state in RocksDB: every published checkpoint carries at
//! least two valid cosignatures; with one witness down the shard still publishes; with two down it
//! publishes nothing (fail-closed) and `wait_published` says why; when one returns, publication resumes
//! and the waiting writer gets a cosigned checkpoint. A witness restarted from its disk keeps refusing
//! a checkpoint inconsistent with what it cosigned (a fork signed with the shard's own key), and no
//! verifier holding the policy accepts the fork.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_sequencer::testing::{Cluster, stored_checkpoint, test_signer, verify_published};
use cairn_sequencer::{Bucket, SequencerError};
use cairn_tlog::{Cosigner, Note};
use cairn_witness::collect::{Answer, add_checkpoint};
use cairn_witness::testing::{Served, TestLog, spawn};
use cairn_witness::{
    CollectConfig, CollectMetrics, Collector, Policy, QuorumError, RocksState, Witness, WitnessConfig,
};
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;

const SHARD: u32 = 1;

struct Witnesses {
    dirs: Vec<PathBuf>,
    addrs: Vec<SocketAddr>,
    urls: Vec<String>,
    served: Vec<Option<Served>>,
    log: cairn_tlog::VerifierKey,
    _tmp: tempfile::TempDir,
}

fn cosigner(i: usize) -> Cosigner {
    Cosigner::from_seed(&format!("witness.test/w{}", i + 1), [40 + i as u8; 32]).expect("key")
}

impl Witnesses {
    async fn start(log: cairn_tlog::VerifierKey) -> anyhow::Result<Self> {
        let tmp = tempfile::tempdir()?;
        let mut w = Self {
            dirs: vec![],
            addrs: vec![],
            urls: vec![],
            served: vec![],
            log,
            _tmp: tmp,
        };
        for i in 0..3 {
            let dir = w._tmp.path().join(format!("w{i}"));
            w.dirs.push(dir);
            w.addrs.push("127.0.0.1:0".parse()?);
            w.urls.push(String::new());
            w.served.push(None);
            w.up(i).await?;
        }
        Ok(w)
    }

    /// Starts witness `i` from its directory, on its address.
    async fn up(&mut self, i: usize) -> anyhow::Result<()> {
        let state = RocksState::open(&self.dirs[i])?;
        let witness = Arc::new(Witness::new(
            WitnessConfig::new(cosigner(i), vec![self.log.clone()]),
            Box::new(state),
        ));
        let served = spawn(witness, self.addrs[i]).await?;
        self.addrs[i] = served.addr;
        self.urls[i] = served.url.clone();
        self.served[i] = Some(served);
        Ok(())
    }

    /// Stops witness `i` and closes its database.
    async fn down(&mut self, i: usize) {
        if let Some(s) = self.served[i].take() {
            s.stop().await;
        }
    }

    fn policy(&self) -> Policy {
        let mut text = String::new();
        for i in 0..3 {
            text += &format!("witness w{} {} {}\n", i + 1, cosigner(i).verifier(), self.urls[i]);
        }
        text += "group two-of-three 2 w1 w2 w3\nquorum two-of-three\n";
        Policy::parse(&text).expect("policy")
    }
}

/// Appends `n` entries and waits for them to be published; returns the published note and how long
/// the wait took.
async fn append_published(
    cluster: &Cluster,
    tag: &str,
    n: usize,
    timeout: Duration,
) -> Result<(Vec<u8>, u64, Duration), SequencerError> {
    let entries = (0..n).map(|i| format!("{tag} {i}").into_bytes()).collect();
    let (node, appended) = cluster.append(SHARD, entries, Duration::from_secs(10)).await?;
    let last = appended.iter().map(|a| a.index).max().unwrap_or(0);
    let started = Instant::now();
    let note = cluster.node(node)?.wait_published(SHARD, last, timeout).await?;
    Ok((note, last, started.elapsed()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_of_three_witnesses_fail_closed_and_resume() -> anyhow::Result<()> {
    let signer = test_signer(SHARD);
    let mut witnesses = Witnesses::start(signer.verifier()).await?;
    let policy = witnesses.policy();
    let metrics = CollectMetrics::default();
    let for_nodes = policy.clone();
    let cluster = Cluster::start_with(
        3,
        1,
        Bucket::new(Arc::new(InMemory::new()), StorePath::default()),
        move |c| {
            for s in &mut c.shards {
                let collector = Collector::new(
                    CollectConfig {
                        policy: for_nodes.clone(),
                        timeout: Duration::from_millis(500),
                        fail_open: false,
                        greedy: false,
                    },
                    &s.shard.origin,
                    &metrics,
                )
                .expect("collector");
                s.witnesses = Some(Arc::new(collector));
            }
        },
    )
    .await?;
    let vkey = cluster.vkey(SHARD)?;
    cluster.wait_for_leader(SHARD, Duration::from_secs(10)).await?;
    let quorum = |note: &[u8]| -> anyhow::Result<Vec<String>> {
        let (_, _, names) = policy.verify(note, Some(&vkey))?;
        anyhow::ensure!(names.len() >= 2, "only {names:?}");
        Ok(names)
    };
    let bucket = cluster.shard_bucket(SHARD)?;
    let stored_note = |b: Bucket| async move { b.get("checkpoint").await.map(|n| n.map(|n| n.to_vec())) };

    // All three up.
    let (note, _, _) = append_published(&cluster, "all", 200, Duration::from_secs(10)).await?;
    quorum(&note)?;
    quorum(&stored_note(bucket.clone()).await?.expect("stored"))?;

    // One down: still published, with the other two.
    witnesses.down(2).await;
    let (note, _, _) = append_published(&cluster, "one-down", 200, Duration::from_secs(10)).await?;
    assert_eq!(quorum(&note)?, vec!["w1", "w2"]);

    // Two down: nothing more is published, and the wait says why.
    witnesses.down(1).await;
    let before = stored_checkpoint(&bucket).await?.expect("stored").size;
    let held = append_published(&cluster, "two-down", 200, Duration::from_secs(2)).await;
    let why = match held {
        Err(SequencerError::Timeout(why)) => why,
        other => panic!("expected a timeout, got {other:?}"),
    };
    assert!(why.contains("witness quorum"), "{why}");
    assert!(
        why.contains("w2") && why.contains("w3"),
        "names who failed: {why}"
    );
    assert_eq!(
        stored_checkpoint(&bucket).await?.expect("stored").size,
        before,
        "fail-closed"
    );

    // A writer waits; one witness returns; the writer gets a cosigned checkpoint after the outage.
    let waiting = {
        let entries: Vec<Vec<u8>> = (0..50).map(|i| format!("during {i}").into_bytes()).collect();
        let (node, appended) = cluster.append(SHARD, entries, Duration::from_secs(10)).await?;
        let last = appended.iter().map(|a| a.index).max().unwrap_or(0);
        (node, last)
    };
    let outage = Duration::from_millis(1500);
    let started = Instant::now();
    let node = cluster.node(waiting.0)?;
    let (published, ()) = tokio::join!(
        node.wait_published(SHARD, waiting.1, Duration::from_secs(30)),
        async {
            tokio::time::sleep(outage).await;
            witnesses.up(1).await.expect("witness 2 restarts");
        }
    );
    let waited = started.elapsed();
    let published = published?;
    assert!(waited >= outage, "published during the outage? waited {waited:?}");
    let names = quorum(&published)?;
    assert_eq!(names, vec!["w1", "w2"]);
    let size = cairn_tlog::Checkpoint::parse_note_unverified(&published)?.size;
    assert!(size > waiting.1, "covers the waiting entry");
    eprintln!("publication resumed {waited:?} after the wait began ({outage:?} outage)");

    // Everything published verifies, and the stored checkpoint still carries the quorum.
    let audited = verify_published(&bucket, &vkey).await?;
    assert!(audited.checkpoint.size >= size);
    quorum(&stored_note(bucket.clone()).await?.expect("stored"))?;

    // A fork signed with the shard's own key is refused by every witness, each with its own view
    // (witness 2 restarted from its disk above; witness 3 restarts from its disk now, behind).
    witnesses.up(2).await?;
    let latest = Note::parse(&stored_note(bucket.clone()).await?.expect("stored"))?;
    let latest_size = cairn_tlog::Checkpoint::parse(&latest.text)?.size;
    let http = reqwest::Client::new();
    for i in 0..3 {
        // What this witness last cosigned (witness 3 missed the last checkpoints).
        let seen = {
            let probe = TestLog::new(signer.clone(), "probe");
            match add_checkpoint(&http, &witnesses.urls[i], &probe.request(0))
                .await
                .map_err(anyhow::Error::msg)?
            {
                Answer::Conflict(size) => size,
                other => panic!("witness {i} answered a stale request with {other:?}"),
            }
        };
        assert!(seen > 0 && seen <= latest_size, "witness {i} saw {seen}");
        let mut fork = TestLog::new(signer.clone(), "fork");
        fork.grow_to(latest_size + 10);
        let answer = add_checkpoint(&http, &witnesses.urls[i], &fork.request(seen))
            .await
            .map_err(anyhow::Error::msg)?;
        assert!(
            matches!(answer, Answer::Refused(422, _)),
            "fork at witness {i}: {answer:?}"
        );
        // The same size as its latest with another root.
        let mut same = TestLog::new(signer.clone(), "same-size");
        same.grow_to(seen);
        let answer = add_checkpoint(&http, &witnesses.urls[i], &same.request(seen))
            .await
            .map_err(anyhow::Error::msg)?;
        assert_eq!(
            answer,
            Answer::Conflict(seen),
            "same size, other root at witness {i}"
        );
    }
    let fork = {
        let mut f = TestLog::new(signer.clone(), "fork");
        f.grow_to(latest_size + 10);
        f
    };
    // No verifier with the policy accepts the fork (signed by the log, cosigned by nobody).
    assert!(matches!(
        policy.verify(&fork.note(), Some(&vkey)),
        Err(QuorumError::NotMet { .. })
    ));

    for i in 0..3 {
        witnesses.down(i).await;
    }
    cluster.shutdown().await;
    Ok(())
}
