//! The checker: judges a run from its [`History`] and the log as published, nothing else.
//!
//! The published log of each shard is read over HTTP and audited as a whole against its final signed
//! checkpoint (every entry bundle, every hash tile, the root: `cairn_tlog::audit` through
//! [`cairn_client::HttpLog::verify_shard`]); [`check`] then holds the history against those entries:
//!
//! - every acknowledged entry is in the log exactly at the (shard, index) it was acknowledged at
//!   (otherwise *lost*, or *misplaced* when it sits elsewhere);
//! - every acknowledgment of the same entry names the same place (a resubmission got its original index);
//! - no entry appears twice in the log, in one shard or across shards (*duplicated*);
//! - every entry in the log was submitted by a writer (acknowledged or with an unknown outcome);
//! - every observed checkpoint is signed by its shard's key, no larger than the final tree, and its root
//!   is the root of the final tree's first `size` leaves (no split view, no rewritten history);
//! - each observer's checkpoints never go backwards in size.
//!
//! [`availability`] measures, from the history alone, the longest interval without a successful write
//! and the write gap around each fault.

use std::collections::{BTreeMap, HashMap};

use cairn_tlog::{Checkpoint, Hash, TreeEdge, VerifierKey};
use serde::Serialize;

use crate::history::History;

/// One shard's published log, as audited: its verifier key and its entries' leaf hashes in order.
#[derive(Clone, Debug)]
pub struct FinalLog {
    /// Shard id.
    pub shard: u32,
    /// The shard's verifier key.
    pub key: VerifierKey,
    /// Leaf hash of every entry, in log order.
    pub leaves: Vec<Hash>,
}

/// What the checker found. Every list holds one line per violation, empty when the run is clean.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Distinct entries acknowledged.
    pub acknowledged: usize,
    /// Acknowledgments of deliberate resubmissions.
    pub resubmissions: usize,
    /// Writes with unknown outcome, and how many of them are in the log.
    pub unknown: usize,
    /// Unknown writes found in the log (each at most once).
    pub unknown_logged: usize,
    /// Entries in the final logs.
    pub entries: u64,
    /// Observed checkpoints checked.
    pub checkpoints: usize,
    /// Acknowledged entries missing from the log.
    pub lost: Vec<String>,
    /// Acknowledged entries present at another place than acknowledged.
    pub misplaced: Vec<String>,
    /// Entries acknowledged at two different places.
    pub conflicting_acks: Vec<String>,
    /// Entries present more than once.
    pub duplicated: Vec<String>,
    /// Entries nobody submitted.
    pub unexplained: Vec<String>,
    /// Observed checkpoints that disagree with the final tree (or are not validly signed).
    pub inconsistent: Vec<String>,
    /// Observers whose checkpoints went backwards.
    pub regressions: Vec<String>,
    /// Answers a writer saw break the API's contract.
    pub anomalies: Vec<String>,
}

impl Report {
    /// Every violation, one line each.
    pub fn violations(&self) -> Vec<String> {
        let kinds = [
            ("lost", &self.lost),
            ("misplaced", &self.misplaced),
            ("conflicting acknowledgments", &self.conflicting_acks),
            ("duplicated", &self.duplicated),
            ("unexplained", &self.unexplained),
            ("inconsistent checkpoint", &self.inconsistent),
            ("checkpoint went backwards", &self.regressions),
            ("writer saw", &self.anomalies),
        ];
        kinds
            .iter()
            .flat_map(|(kind, list)| list.iter().map(move |l| format!("{kind}: {l}")))
            .collect()
    }
}

/// Holds `history` against the published `logs` (one per shard). See the module documentation.
pub fn check(history: &History, logs: &[FinalLog]) -> Report {
    let mut report = Report::default();

    // Where each leaf is in the published logs.
    let mut found: HashMap<String, Vec<(u32, u64)>> = HashMap::new();
    for log in logs {
        report.entries += log.leaves.len() as u64;
        for (i, leaf) in log.leaves.iter().enumerate() {
            found
                .entry(leaf.to_base64())
                .or_default()
                .push((log.shard, i as u64));
        }
    }
    for (leaf, places) in &found {
        if places.len() > 1 {
            report
                .duplicated
                .push(format!("entry {leaf} is at {}", places_text(places)));
        }
    }

    // Acknowledgments: one place per entry, and that place holds it.
    let mut acked: BTreeMap<&str, (u32, u64)> = BTreeMap::new();
    for ack in &history.acks {
        report.resubmissions += usize::from(ack.resubmitted);
        match acked.get(ack.leaf.as_str()) {
            Some(&(shard, index)) if (shard, index) != (ack.shard, ack.index) => {
                report.conflicting_acks.push(format!(
                    "entry {} acknowledged at shard {shard} index {index}, then at shard {} index {} \
                     ({} ms)",
                    ack.leaf, ack.shard, ack.index, ack.at_ms
                ));
                continue;
            }
            Some(_) => continue,
            None => {}
        }
        acked.insert(&ack.leaf, (ack.shard, ack.index));
        let at = found.get(&ack.leaf).cloned().unwrap_or_default();
        if at.contains(&(ack.shard, ack.index)) {
            continue;
        }
        let what = format!(
            "entry {} acknowledged at shard {} index {} ({} ms)",
            ack.leaf, ack.shard, ack.index, ack.at_ms
        );
        if at.is_empty() {
            report.lost.push(format!("{what} is not in the log"));
        } else {
            report
                .misplaced
                .push(format!("{what} is at {}", places_text(&at)));
        }
    }
    report.acknowledged = acked.len();

    // Everything in the log was submitted.
    report.unknown = history.unknown.len();
    let unknown: HashMap<&str, ()> = history.unknown.iter().map(|u| (u.leaf.as_str(), ())).collect();
    for (leaf, places) in &found {
        if acked.contains_key(leaf.as_str()) {
            continue;
        }
        if unknown.contains_key(leaf.as_str()) {
            report.unknown_logged += 1;
        } else {
            report.unexplained.push(format!(
                "entry {leaf} at {} was never submitted",
                places_text(places)
            ));
        }
    }

    check_observations(history, logs, &mut report);
    report.anomalies = history.anomalies.clone();
    report.lost.sort();
    report.duplicated.sort();
    report.unexplained.sort();
    report
}

/// Observed checkpoints against the final trees, and per observer monotony.
fn check_observations(history: &History, logs: &[FinalLog], report: &mut Report) {
    // (shard, size) -> the roots observed at that size, with who saw them.
    let mut by_size: BTreeMap<(u32, u64), Vec<(Hash, String)>> = BTreeMap::new();
    let mut last: HashMap<(&str, u32), (u64, u64)> = HashMap::new();
    let keys: HashMap<u32, &FinalLog> = logs.iter().map(|l| (l.shard, l)).collect();
    for o in &history.observations {
        report.checkpoints += 1;
        let who = format!("{} at {} ms (shard {})", o.observer, o.at_ms, o.shard);
        let Some(log) = keys.get(&o.shard) else {
            report
                .inconsistent
                .push(format!("{who}: no such shard in the final logs"));
            continue;
        };
        let checkpoint = match Checkpoint::open(o.note.as_bytes(), &log.key, &[]) {
            Ok((c, _)) => c,
            Err(e) => {
                report.inconsistent.push(format!("{who}: {e}"));
                continue;
            }
        };
        if checkpoint.size > log.leaves.len() as u64 {
            report.inconsistent.push(format!(
                "{who}: size {} is beyond the final tree's {}",
                checkpoint.size,
                log.leaves.len()
            ));
            continue;
        }
        by_size
            .entry((o.shard, checkpoint.size))
            .or_default()
            .push((checkpoint.root, who.clone()));
        let key = (o.observer.as_str(), o.shard);
        if let Some(&(size, at)) = last.get(&key)
            && checkpoint.size < size
        {
            report.regressions.push(format!(
                "{who}: size {} after size {size} at {at} ms",
                checkpoint.size
            ));
        }
        last.insert(key, (checkpoint.size, o.at_ms));
    }
    // One pass over each final tree, taking the root at every observed size.
    for log in logs {
        let mut edge = TreeEdge::new();
        let sizes = by_size.range((log.shard, 0)..=(log.shard, u64::MAX));
        let mut leaves = log.leaves.iter();
        for ((_, size), seen) in sizes {
            while edge.size() < *size {
                match leaves.next() {
                    Some(l) => edge.append(*l),
                    None => break,
                }
            }
            let root = edge.root();
            for (r, who) in seen {
                if *r != root {
                    report.inconsistent.push(format!(
                        "{who}: root {} at size {size}, the final tree's first {size} leaves hash to {}",
                        r.to_base64(),
                        root.to_base64()
                    ));
                }
            }
        }
    }
}

fn places_text(places: &[(u32, u64)]) -> String {
    places
        .iter()
        .map(|(s, i)| format!("shard {s} index {i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Write availability, from the history alone.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Availability {
    /// The longest interval with no successful write call to any shard.
    pub longest_gap_ms: u64,
    /// Start of that interval.
    pub longest_gap_from_ms: u64,
    /// Per fault: (kind, target, whether it hit a shard leader, the longest write gap on the shards it
    /// hit (on every shard for other faults) that overlaps the fault).
    pub per_fault: Vec<(String, String, bool, u64)>,
}

impl Availability {
    /// The `q`-quantile (0..=1) of the write gaps around faults that hit a shard leader, and how many
    /// such faults there were.
    pub fn failover_quantile(&self, q: f64) -> Option<(u64, usize)> {
        let mut gaps: Vec<u64> = self
            .per_fault
            .iter()
            .filter(|f| f.2 && f.0 != "quorum-loss")
            .map(|f| f.3)
            .collect();
        gaps.sort_unstable();
        let i = ((gaps.len() as f64 - 1.0) * q).round() as usize;
        gaps.get(i).map(|g| (*g, gaps.len()))
    }
}

/// The intervals between successive successes (of `shards`, or of any shard when empty) from
/// `from_ms` to `end_ms`, both ends included as boundaries.
fn gaps(history: &History, shards: &[u32], from_ms: u64, end_ms: u64) -> Vec<(u64, u64)> {
    let mut times: Vec<u64> = (history.successes.iter())
        .filter(|(t, s)| (from_ms..=end_ms).contains(t) && (shards.is_empty() || shards.contains(s)))
        .map(|(t, _)| *t)
        .collect();
    times.sort_unstable();
    times.dedup();
    let mut points = vec![from_ms];
    points.extend(times);
    points.push(end_ms.max(*points.last().unwrap_or(&from_ms)));
    points.windows(2).map(|w| (w[0], w[1])).collect()
}

/// The longest gaps between successful writes from `from_ms` to `end_ms`: overall, and for each fault
/// that started in that time, on the shards whose leader it hit (every shard for other faults).
pub fn availability(history: &History, from_ms: u64, end_ms: u64) -> Availability {
    let mut a = Availability::default();
    if let Some((s, e)) = gaps(history, &[], from_ms, end_ms)
        .iter()
        .max_by_key(|(s, e)| e - s)
    {
        a.longest_gap_ms = e - s;
        a.longest_gap_from_ms = *s;
    }
    for f in history
        .faults
        .iter()
        .filter(|f| (from_ms..end_ms).contains(&f.from_ms))
    {
        let gap = gaps(history, &f.shards, from_ms, end_ms)
            .iter()
            .filter(|(s, e)| *e > f.from_ms && *s < f.to_ms.max(f.from_ms + 1))
            .map(|(s, e)| e - s)
            .max()
            .unwrap_or(0);
        a.per_fault
            .push((f.kind.clone(), f.target.clone(), !f.shards.is_empty(), gap));
    }
    a
}

#[cfg(test)]
mod tests {
    //! The checker is shown to catch violations: a clean synthetic run passes, and each deliberate
    //! breakage (a dropped entry, a swapped index, a duplicate, an entry nobody sent, a forked or
    //! badly signed checkpoint, an observer going backwards, a resubmission given a new index) fails
    //! with a report naming it.

    use cairn_tlog::{Signer, leaf_hash};

    use super::*;
    use crate::history::{Ack, Observation, Unknown};

    struct Fixture {
        history: History,
        logs: Vec<FinalLog>,
        signer: Signer,
        entries: Vec<Vec<u8>>,
    }

    fn b64(h: Hash) -> String {
        h.to_base64()
    }

    fn note(signer: &Signer, entries: &[Vec<u8>], size: usize) -> String {
        let mut edge = TreeEdge::new();
        for e in &entries[..size] {
            edge.append(leaf_hash(e));
        }
        let note = Checkpoint::new(signer.name(), size as u64, edge.root()).sign(signer);
        String::from_utf8(note.to_bytes()).expect("a note is text")
    }

    /// A shard of 20 entries: 0..18 acknowledged, 18 resubmitted (same index), 19 with an unknown
    /// outcome; checkpoints at sizes 5, 12, 20 seen by two observers.
    fn fixture() -> Fixture {
        let signer = Signer::from_seed("chaos.test/shard-1", [7; 32]).expect("signer");
        let entries: Vec<Vec<u8>> = (0..20).map(|i| format!("entry {i}").into_bytes()).collect();
        let mut history = History::default();
        for (i, e) in entries.iter().enumerate().take(19) {
            history.acks.push(Ack {
                shard: 1,
                index: i as u64,
                leaf: b64(leaf_hash(e)),
                at_ms: i as u64,
                resubmitted: false,
            });
        }
        history.acks.push(Ack {
            shard: 1,
            index: 3,
            leaf: b64(leaf_hash(&entries[3])),
            at_ms: 30,
            resubmitted: true,
        });
        history.unknown.push(Unknown {
            leaf: b64(leaf_hash(&entries[19])),
            at_ms: 25,
            error: "deadline".into(),
        });
        for (at, size) in [(5u64, 5usize), (12, 12), (20, 20)] {
            for observer in ["node-1", "node-2"] {
                history.observations.push(Observation {
                    observer: observer.into(),
                    shard: 1,
                    at_ms: at,
                    note: note(&signer, &entries, size),
                });
            }
        }
        let logs = vec![FinalLog {
            shard: 1,
            key: signer.verifier(),
            leaves: entries.iter().map(|e| leaf_hash(e)).collect(),
        }];
        Fixture {
            history,
            logs,
            signer,
            entries,
        }
    }

    #[test]
    fn a_clean_run_passes() {
        let f = fixture();
        let r = check(&f.history, &f.logs);
        assert_eq!(r.violations(), Vec::<String>::new());
        assert_eq!((r.acknowledged, r.resubmissions, r.unknown_logged), (19, 1, 1));
        assert_eq!((r.entries, r.checkpoints), (20, 6));
    }

    #[test]
    fn a_dropped_entry_is_lost_and_every_later_checkpoint_forks() {
        let mut f = fixture();
        f.logs[0].leaves.remove(7);
        let r = check(&f.history, &f.logs);
        // Entries after 7 moved down one place; entry 7 is gone.
        assert_eq!(r.lost.len(), 1, "{r:?}");
        assert!(r.lost[0].contains("index 7 ") && r.lost[0].contains("not in the log"));
        assert_eq!(r.misplaced.len(), 11, "entries 8..=18 sit one index lower");
        assert!(
            r.misplaced
                .iter()
                .any(|m| m.contains("index 8 ") && m.contains("shard 1 index 7"))
        );
        // Size 20 is now beyond the tree; size 12 hashes differently; size 5 still agrees.
        assert_eq!(r.inconsistent.len(), 4, "{:?}", r.inconsistent);
        assert!(
            r.inconsistent
                .iter()
                .any(|m| m.contains("beyond the final tree's 19"))
        );
        assert!(r.inconsistent.iter().any(|m| m.contains("at size 12")));
    }

    #[test]
    fn a_swapped_index_is_misplaced() {
        let mut f = fixture();
        f.history.acks[4].index = 5;
        let r = check(&f.history, &f.logs);
        assert_eq!(r.misplaced.len(), 1, "{r:?}");
        assert!(
            r.misplaced[0].contains("acknowledged at shard 1 index 5")
                && r.misplaced[0].contains("is at shard 1 index 4")
        );
        assert_eq!(r.violations().len(), 1);
    }

    #[test]
    fn a_forked_checkpoint_is_inconsistent() {
        let mut f = fixture();
        // A second tree, signed by the same key, that differs from the final one at entry 10.
        let mut fork = f.entries.clone();
        fork[10] = b"another entry 10".to_vec();
        f.history.observations.push(Observation {
            observer: "node-3".into(),
            shard: 1,
            at_ms: 13,
            note: note(&f.signer, &fork, 12),
        });
        let r = check(&f.history, &f.logs);
        assert_eq!(r.inconsistent.len(), 1, "{r:?}");
        assert!(r.inconsistent[0].starts_with("node-3 at 13 ms (shard 1): root "));
        assert!(r.inconsistent[0].contains("first 12 leaves"));
    }

    #[test]
    fn a_checkpoint_signed_by_another_key_is_inconsistent() {
        let mut f = fixture();
        let other = Signer::from_seed("chaos.test/shard-1", [8; 32]).expect("signer");
        f.history.observations[0].note = note(&other, &f.entries, 5);
        let r = check(&f.history, &f.logs);
        assert_eq!(r.inconsistent.len(), 1, "{r:?}");
        assert!(r.inconsistent[0].starts_with("node-1 at 5 ms"));
    }

    #[test]
    fn a_duplicate_and_an_entry_nobody_sent_are_reported() {
        let mut f = fixture();
        f.logs[0].leaves.push(leaf_hash(&f.entries[2]));
        f.logs[0].leaves.push(leaf_hash(b"nobody sent this"));
        let r = check(&f.history, &f.logs);
        assert_eq!(r.duplicated.len(), 1, "{r:?}");
        assert!(r.duplicated[0].contains("shard 1 index 2, shard 1 index 20"));
        assert_eq!(r.unexplained.len(), 1);
        assert!(r.unexplained[0].contains("index 21 was never submitted"));
    }

    #[test]
    fn a_resubmission_with_a_new_index_conflicts() {
        let mut f = fixture();
        let last = f.history.acks.len() - 1;
        f.history.acks[last].index = 19;
        let r = check(&f.history, &f.logs);
        assert_eq!(r.conflicting_acks.len(), 1, "{r:?}");
        assert!(r.conflicting_acks[0].contains("then at shard 1 index 19"));
    }

    #[test]
    fn an_observer_going_backwards_is_reported() {
        let mut f = fixture();
        let late = Observation {
            at_ms: 40,
            ..f.history.observations[0].clone()
        };
        f.history.observations.push(late);
        let r = check(&f.history, &f.logs);
        assert_eq!(r.regressions.len(), 1, "{r:?}");
        assert!(r.regressions[0].contains("node-1 at 40 ms (shard 1): size 5 after size 20"));
    }

    #[test]
    fn gaps_are_measured_around_faults() {
        // Shard 1 stalls from 300 to 2300 ms; shard 2 keeps going.
        let mut h = History {
            successes: vec![
                (100, 1),
                (200, 1),
                (300, 1),
                (2300, 1),
                (2400, 1),
                (1000, 2),
                (1500, 2),
            ],
            ..History::default()
        };
        let fault = |shards: Vec<u32>| crate::history::FaultRecord {
            kind: "kill".into(),
            target: "node-1".into(),
            shards,
            from_ms: 250,
            to_ms: 400,
        };
        h.faults.push(fault(vec![1]));
        h.faults.push(fault(vec![]));
        let a = availability(&h, 0, 3000);
        // Overall, shard 2's writes break the stall: the longest gap is 1500 -> 2300.
        assert_eq!((a.longest_gap_ms, a.longest_gap_from_ms), (800, 1500));
        // On the shard the fault hit: 300 -> 2300.
        assert_eq!(a.per_fault[0].3, 2000);
        assert!(a.per_fault[0].2 && !a.per_fault[1].2);
        assert_eq!(a.failover_quantile(0.5), Some((2000, 1)));
        // Only what lies between the bounds counts.
        assert_eq!(availability(&h, 0, 250).longest_gap_ms, 100);
    }
}
