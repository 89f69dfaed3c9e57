//! The fault-injection harness's short profile (`cairn-chaos`, RELIABILITY.md) over the real binary:
//! three nodes in network namespaces, two opaque shards and a Sigstore shard on an S3-protocol store,
//! three gRPC writers and a Rekor v2 writer, about 100 s of faults of every kind (SIGKILL, SIGSTOP,
//! partitions, a full disk, a wiped data directory, slow and failing object-store requests), then a loss
//! of quorum. The checker must find nothing lost, duplicated, misplaced or inconsistent, and the
//! cluster must recover from every fault. Needs root (namespaces, tmpfs) and `s3s-fs` (`scripts/test`
//! installs it). `CAIRN_CHAOS_SEED` replays a seed; `CAIRN_CHAOS_SECS` sets the length.

use std::time::Duration;

use cairn_chaos::{Kind, Profile, run, summary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_profile_loses_nothing() -> anyhow::Result<()> {
    let seed = match std::env::var("CAIRN_CHAOS_SEED") {
        Ok(s) => s.parse()?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    };
    let secs = std::env::var("CAIRN_CHAOS_SECS").map_or(Ok(100), |s| s.parse())?;
    let out = tempfile::Builder::new().prefix("cairn-chaos-").tempdir()?;
    println!(
        "chaos seed {seed} (replay: CAIRN_CHAOS_SEED={seed}), output in {}",
        out.path().display()
    );
    let profile = Profile {
        seed,
        duration: Duration::from_secs(secs),
        nodes: 3,
        opaque_shards: 2,
        writers: 3,
        kinds: Kind::ALL.to_vec(),
        quorum_loss: true,
        bin: env!("CARGO_BIN_EXE_cairn").into(),
        out: out.path().to_path_buf(),
    };
    let outcome = match run(&profile).await {
        Ok(o) => o,
        Err(e) => {
            let kept = out.keep();
            anyhow::bail!(
                "the harness failed with seed {seed}: {e:#}; node logs in {}",
                kept.display()
            );
        }
    };
    print!("{}", summary(&outcome));
    if !outcome.violations.is_empty() {
        // Keep the node logs and the history for study.
        let kept = out.keep();
        anyhow::bail!(
            "{} violations with seed {seed}; history and node logs in {}",
            outcome.violations.len(),
            kept.display()
        );
    }
    for kind in Kind::ALL {
        anyhow::ensure!(
            outcome.faults.contains_key(kind.name()),
            "no {} fault was injected",
            kind.name()
        );
    }
    anyhow::ensure!(
        outcome.report.acknowledged > 1000,
        "too few writes to judge: {outcome:?}"
    );
    anyhow::ensure!(outcome.report.checkpoints > 10, "too few checkpoints observed");
    anyhow::ensure!(outcome.quorum.is_some(), "the quorum loss did not run");
    Ok(())
}
