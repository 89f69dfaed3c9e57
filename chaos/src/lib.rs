//! Reliability evidence for Cairn: a fault-injection harness over the real `cairn` binary, and an
//! independent checker of what the log published.
//!
//! A run ([`run::run`]) starts a cluster of `cairn serve` processes, each in its own network namespace
//! ([`lab`]) sharing an S3-protocol object store behind a fault layer ([`s3`]); drives writers of
//! opaque entries (gRPC) and Sigstore entries (the Rekor v2 API) through every node and observers of
//! every node's checkpoints ([`load`]); injects randomly scheduled, seeded faults ([`nemesis`]): SIGKILL,
//! SIGSTOP, network partitions (real packet loss), a full disk, a wiped data directory, slow and
//! failing object-store requests; ends with a loss of quorum; and then judges the run from the
//! published tiles and the recorded [`history`] alone ([`checker`]).
//!
//! `cairn-chaos` is the command (a long soak is `cairn-chaos --duration 1800`); `cli/tests/chaos.rs`
//! runs a short profile in the test suite. Both need root (network namespaces, tmpfs mounts) and
//! `s3s-fs`.

pub mod checker;
pub mod cluster;
pub mod history;
pub mod lab;
pub mod load;
pub mod nemesis;
pub mod run;
pub mod s3;

pub use checker::{Availability, Report};
pub use nemesis::Kind;
pub use run::{Outcome, Profile, run};

/// A human-readable summary of an outcome.
pub fn summary(o: &Outcome) -> String {
    let a = &o.availability;
    let r = &o.report;
    let pct = |q| {
        a.failover_quantile(q)
            .map(|(v, n)| format!("{v} ms (of {n})"))
            .unwrap_or_else(|| "-".into())
    };
    let mut s = format!(
        "seed {}: {:.0} s, {} faults {:?}, {} write calls\n\
         acknowledged {} entries ({} resubmissions answered with their original place), {} writes of \
         unknown outcome ({} of them logged), {} entries in the logs, {} checkpoints observed\n\
         lost {}, misplaced {}, duplicated {}, unexplained {}, inconsistent checkpoints {}, \
         observers going backwards {}\n\
         longest write gap under single faults {} ms (from {} ms); write gap around a fault on a leader p50 {} p99 {}\n",
        o.seed,
        o.seconds,
        o.fault_count,
        o.faults,
        o.calls,
        r.acknowledged,
        r.resubmissions,
        r.unknown,
        r.unknown_logged,
        r.entries,
        r.checkpoints,
        r.lost.len(),
        r.misplaced.len(),
        r.duplicated.len(),
        r.unexplained.len(),
        r.inconsistent.len(),
        r.regressions.len(),
        a.longest_gap_ms,
        a.longest_gap_from_ms,
        pct(0.5),
        pct(0.99),
    );
    if let Some(q) = &o.quorum {
        s.push_str(&format!(
            "quorum lost (nodes {:?} down): a write was refused: {}; writes resumed {} ms after the heal \
             (longest write gap {} ms)\n",
            q.stopped.iter().map(|i| i + 1).collect::<Vec<_>>(),
            q.refusal,
            q.recovered_ms,
            q.write_gap_ms
        ));
    }
    for d in &o.disk_full_felt {
        s.push_str(&format!("{d}\n"));
    }
    for c in &o.storage_stops {
        s.push_str(&format!("{c}\n"));
    }
    for c in &o.crashes {
        s.push_str(&format!("{c}\n"));
    }
    for v in &o.violations {
        s.push_str(&format!("VIOLATION {v}\n"));
    }
    s
}
