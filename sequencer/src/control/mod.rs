//! The control group: a Raft group on every sequencer (group id [`CONTROL`], beside the shards'
//! groups) whose replicated log holds the shard map, so that shards are added without a configuration
//! edit or a restart.
//!
//! The control log is the shard machinery itself: each operation ([`Op`]) is one entry of group 0,
//! appended and applied like any entry (majority-durable, exact dedup: repeating an operation is a
//! no-op) and never published, so every entry stays staged on every replica and in its snapshots. The
//! map ([`ShardMap`]) is the fold of the entries in log order, the same on every node; an operation the
//! fold finds invalid (a second `Add` of an id with another identity) changes nothing.
//!
//! A shard's life in the map:
//! 1. `Add`: the control group's leader records the shard's identity, kind, window and its members:
//!    the control group's voters then. The shard is *planned*; discovery documents show it.
//! 2. Keys never travel over Raft: each node looks for the shard's signing key with its
//!    [`KeyProvider`] (a key directory, a mounted Secret). A node that finds it (its name the origin,
//!    its verifier the recorded one) starts hosting the shard's group and records `HoldsKey`. Until a
//!    majority of the members hold the key, [`ShardMap::waiting_for`] says who is missing.
//! 3. With a majority of key holders (ahead of its window, if it has one), each holder initializes the
//!    group with the recorded members (the same configuration on every node, which openraft allows);
//!    the group elects a leader among the holders, whose publisher records the identity and the first
//!    checkpoint. That leader then records `Activated`: log-servers route entries to the shard from
//!    then on.
//!    Entries are taken only within the window (log-servers route by it; the sequencer refuses an
//!    append outside it, so none lands after the end even before the freeze commits).
//! 4. At the window's end (or when an operator freezes it) the shard's leader freezes it (final
//!    checkpoint); `Frozen` and `Ended` record that in the map, `Ended` with the time, which discovery
//!    documents give as the end of the shard's validity. The leader of a configured shard records
//!    its `Ended` too.
//! 5. An operator may archive a frozen shard whose final checkpoint is in object storage: `Archived`
//!    makes every node stop the shard's group and delete its replica; the read path serves it from
//!    object storage alone, and discovery lists it frozen (and archived) forever.
//!
//! [`Schedule`] adds shards without an operator: the control group's leader adds each window's shard
//! its lead time ahead (temporal sharding).

use std::collections::{BTreeMap, BTreeSet};

use cairn_store::{Shard, ShardKind};
use cairn_tlog::Signer;
use serde::{Deserialize, Serialize};

use crate::types::{NodeId, ShardId};

mod api;
mod driver;
pub mod settings;
pub(crate) use driver::{MapCache, run, serve};

/// The control group's id (no log shard has it).
pub const CONTROL: ShardId = 0;

/// A shard as an operator adds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSpec {
    /// Identity: id, origin (the key's name), verifier key.
    pub shard: Shard,
    /// What it logs.
    pub kind: ShardKind,
    /// A Sigstore shard's base URL (its host is the origin; `AddShard` and the schedule require it);
    /// `None` for an opaque shard.
    pub base_url: Option<String>,
    /// Start of its validity window (Unix seconds): it takes no entries before. `None`: at once.
    pub valid_from: Option<u64>,
    /// End of its validity window (Unix seconds): its leader freezes it then. `None`: open-ended.
    pub valid_until: Option<u64>,
}

/// An operation in the control log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// A new shard, planned, with the nodes of its group (id, Raft address).
    Add {
        /// The shard.
        spec: ShardSpec,
        /// Its group's members.
        members: BTreeMap<NodeId, String>,
    },
    /// `node` holds the shard's signing key.
    HoldsKey {
        /// The shard.
        shard: ShardId,
        /// The node.
        node: NodeId,
    },
    /// The shard's group has a leader that published its first checkpoint: it takes entries.
    Activated {
        /// The shard.
        shard: ShardId,
    },
    /// The shard was frozen (its own group holds the truth; this tells discovery).
    Frozen {
        /// The shard.
        shard: ShardId,
    },
    /// The frozen shard's final checkpoint is in object storage and its group stops everywhere.
    Archived {
        /// The shard.
        shard: ShardId,
    },
    /// The shard (of the map, or a configured one) took no entry after `at`: recorded by its
    /// leader once its group froze it, as the end of its validity in the discovery documents (a
    /// shard of the map is frozen by it as by `Frozen`). The first record of a shard counts.
    /// (Appended last: operations are encoded by variant index.)
    Ended {
        /// The shard.
        shard: ShardId,
        /// Unix seconds, read by the leader after the freeze was applied.
        at: u64,
    },
    /// A cluster setting (see [`settings`]): `value` for every node, or `None` for each node's
    /// configured value. (Appended last.)
    Set {
        /// One of [`settings::SETTINGS`].
        key: String,
        /// Its value, checked by [`settings::check`].
        value: Option<String>,
    },
}

/// Where a shard of the map is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Added; waiting for key holders or its window.
    Planned,
    /// Taking entries.
    Active,
    /// Read-only forever.
    Frozen,
    /// Frozen, its group stopped and its replicas deleted: served from object storage alone.
    Archived,
}

/// A shard in the map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapEntry {
    /// What the operator added.
    pub spec: ShardSpec,
    /// Its group's members (id, Raft address) as recorded at `Add`.
    pub members: BTreeMap<NodeId, String>,
    /// Members that reported holding its key.
    pub holders: BTreeSet<NodeId>,
    /// Its phase.
    pub phase: Phase,
}

impl MapEntry {
    /// Whether a majority of the members hold the key.
    pub fn keyed(&self) -> bool {
        let held = self.members.keys().filter(|n| self.holders.contains(n)).count();
        held * 2 > self.members.len()
    }
}

/// The shards added at runtime, as the control log has them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardMap {
    /// By id.
    pub shards: BTreeMap<ShardId, MapEntry>,
    /// When each frozen shard took its last entry at the latest (Unix seconds), configured shards
    /// included: see [`Op::Ended`].
    pub ended: BTreeMap<ShardId, u64>,
    /// Configured shards that were archived (those of the map have their phase).
    pub archived: BTreeSet<ShardId>,
    /// The recorded cluster settings (see [`settings`]).
    pub settings: BTreeMap<String, String>,
}

impl ShardMap {
    /// The map after `ops`, in order.
    pub fn fold<'a>(ops: impl IntoIterator<Item = &'a Op>) -> Self {
        let mut map = Self::default();
        for op in ops {
            map.apply(op);
        }
        map
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Add { spec, members } => {
                if self.check_add(spec).is_ok() && !self.shards.contains_key(&spec.shard.id) {
                    self.shards.insert(
                        spec.shard.id,
                        MapEntry {
                            spec: spec.clone(),
                            members: members.clone(),
                            holders: BTreeSet::new(),
                            phase: Phase::Planned,
                        },
                    );
                }
            }
            Op::HoldsKey { shard, node } => {
                if let Some(e) = self.shards.get_mut(shard)
                    && e.members.contains_key(node)
                {
                    e.holders.insert(*node);
                }
            }
            Op::Activated { shard } => {
                if let Some(e) = self.shards.get_mut(shard)
                    && e.phase == Phase::Planned
                {
                    e.phase = Phase::Active;
                }
            }
            Op::Frozen { shard } => self.freeze(*shard),
            Op::Ended { shard, at } => {
                self.ended.entry(*shard).or_insert(*at);
                self.freeze(*shard);
            }
            Op::Archived { shard } => match self.shards.get_mut(shard) {
                Some(e) if e.phase == Phase::Frozen => e.phase = Phase::Archived,
                Some(_) => {}
                // A configured shard: once its end was recorded (its group froze it).
                None if self.ended.contains_key(shard) => {
                    self.archived.insert(*shard);
                }
                None => {}
            },
            Op::Set { key, value } => {
                // Any known key: a value this version does not take falls back to the node's
                // configuration where it is used (`settings::Live`), so every version folds alike.
                if settings::SETTINGS.iter().any(|s| s.key == key) {
                    match value {
                        Some(v) => self.settings.insert(key.clone(), v.clone()),
                        None => self.settings.remove(key),
                    };
                }
            }
        }
    }

    /// Whether `shard` (of the map or configured) was archived.
    pub fn is_archived(&self, shard: ShardId) -> bool {
        match self.shards.get(&shard) {
            Some(e) => e.phase == Phase::Archived,
            None => self.archived.contains(&shard),
        }
    }

    fn freeze(&mut self, shard: ShardId) {
        if let Some(e) = self.shards.get_mut(&shard)
            && e.phase != Phase::Archived
        {
            e.phase = Phase::Frozen;
        }
    }

    /// The end of `shard`'s validity (Unix seconds): the end of its window, or when it was frozen if
    /// that came first; `None` while it is open-ended and not frozen.
    pub fn valid_until(&self, shard: ShardId) -> Option<u64> {
        let window = self.shards.get(&shard).and_then(|e| e.spec.valid_until);
        match (window, self.ended.get(&shard).copied()) {
            (Some(w), Some(e)) => Some(w.min(e)),
            (w, e) => w.or(e),
        }
    }

    /// Whether `spec` can be added: a new id other than the control group's, an origin no other shard
    /// has, a window that ends after it starts. Adding the same spec again is fine (a no-op).
    pub fn check_add(&self, spec: &ShardSpec) -> Result<(), String> {
        let id = spec.shard.id;
        if id == CONTROL {
            return Err(format!(
                "shard id {CONTROL} is the control group's; choose another"
            ));
        }
        if let Some(e) = self.shards.get(&id) {
            if e.spec == *spec {
                return Ok(());
            }
            return Err(format!(
                "shard {id} exists already with origin {} (shard ids are never reused)",
                e.spec.shard.origin
            ));
        }
        if self.ended.contains_key(&id) || self.archived.contains(&id) {
            return Err(format!(
                "shard id {id} was a configured shard's, frozen (shard ids are never reused)"
            ));
        }
        if let Some(e) = self
            .shards
            .values()
            .find(|e| e.spec.shard.origin == spec.shard.origin)
        {
            return Err(format!(
                "shard {} has origin {} already (an origin names one log forever)",
                e.spec.shard.id, spec.shard.origin
            ));
        }
        if let (Some(from), Some(until)) = (spec.valid_from, spec.valid_until)
            && until <= from
        {
            return Err(format!("the window ends ({until}) before it starts ({from})"));
        }
        let vkey = cairn_tlog::VerifierKey::parse(&spec.shard.vkey)
            .map_err(|e| format!("vkey {}: {e}", spec.shard.vkey))?;
        if vkey.name != spec.shard.origin {
            return Err(format!(
                "the vkey is for {}, not for the origin {}",
                vkey.name, spec.shard.origin
            ));
        }
        if vkey.key_type != cairn_tlog::note::TYPE_ED25519 {
            return Err("the vkey is not an Ed25519 key (checkpoints are signed with Ed25519)".into());
        }
        Ok(())
    }

    /// What a planned shard waits for, or `None` once it is active or frozen.
    pub fn waiting_for(&self, id: ShardId, now: u64) -> Option<String> {
        let e = self.shards.get(&id)?;
        if e.phase == Phase::Active
            && let Some(from) = e.spec.valid_from
            && now < from
        {
            return Some(format!("its window starts at {from} (in {} s)", from - now));
        }
        if e.phase != Phase::Planned {
            return None;
        }
        if !e.keyed() {
            let missing: Vec<NodeId> = e
                .members
                .keys()
                .filter(|n| !e.holders.contains(n))
                .copied()
                .collect();
            return Some(format!(
                "a majority of its members {:?} must hold its signing key; nodes {missing:?} have not reported it \
                 (put the key file in their key directory)",
                e.members.keys().collect::<Vec<_>>()
            ));
        }
        Some("its group is electing a leader and publishing its first checkpoint".into())
    }
}

/// Where a node finds shards' signing keys (a key directory, a mounted Secret, a key service). Keys
/// never travel over Raft.
pub trait KeyProvider: Send + Sync + std::fmt::Debug {
    /// The signing key of `shard`, if this node has it (`Ok(None)`: not (yet)). An error says what
    /// is wrong with the key it found.
    fn signer(&self, shard: &Shard) -> Result<Option<Signer>, String>;
}

/// The control group as a hosted group: no signing key, nothing published.
pub(crate) fn control_config() -> crate::config::ShardConfig {
    crate::config::ShardConfig::new(
        Shard {
            id: CONTROL,
            origin: "cairn control".into(),
            vkey: String::new(),
        },
        None,
    )
}

/// Shards created on a schedule (temporal sharding: a new log every period, like CT logs and Rekor
/// rotate theirs). The control group's leader adds each shard `lead time` before its window starts;
/// it is listed as planned until then, takes entries during its window, and is frozen at its end.
pub trait Schedule: Send + Sync + std::fmt::Debug {
    /// The shards whose windows start before `now` plus the lead time and have not ended, as they are
    /// to be added (the same on every node: ids, origins and keys follow from the window).
    fn due(&self, now: u64) -> Vec<ShardSpec>;
}

pub(crate) use cairn_store::unix_now;

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: ShardId, origin: &str) -> ShardSpec {
        let signer = Signer::from_seed(origin, [id as u8; 32]).expect("signer");
        ShardSpec {
            shard: Shard {
                id,
                origin: origin.into(),
                vkey: signer.verifier().to_string(),
            },
            kind: ShardKind::Opaque,
            base_url: None,
            valid_from: None,
            valid_until: None,
        }
    }

    fn members() -> BTreeMap<NodeId, String> {
        (1..=3).map(|n| (n, format!("127.0.0.1:{n}"))).collect()
    }

    #[test]
    fn the_first_add_of_an_id_wins_and_key_holders_count_among_members_only() {
        let a = spec(4, "example.org/a");
        let ops = [
            Op::Add {
                spec: a.clone(),
                members: members(),
            },
            // The same id with another origin, committed after a concurrent check: ignored.
            Op::Add {
                spec: spec(4, "example.org/b"),
                members: members(),
            },
            Op::HoldsKey { shard: 4, node: 1 },
            // Not a member: does not count.
            Op::HoldsKey { shard: 4, node: 9 },
            // A shard that is not in the map: ignored.
            Op::HoldsKey { shard: 7, node: 1 },
        ];
        let map = ShardMap::fold(&ops);
        let e = &map.shards[&4];
        assert_eq!(e.spec, a);
        assert_eq!(e.holders, BTreeSet::from([1]));
        assert!(!e.keyed(), "one holder of three is no majority");
        assert!(map.waiting_for(4, 0).expect("planned").contains("nodes [2, 3]"));
        assert!(!map.shards.contains_key(&7));

        let mut ops = ops.to_vec();
        ops.push(Op::HoldsKey { shard: 4, node: 3 });
        ops.push(Op::Activated { shard: 4 });
        let map = ShardMap::fold(&ops);
        assert!(map.shards[&4].keyed());
        assert_eq!(map.shards[&4].phase, Phase::Active);
        assert_eq!(map.waiting_for(4, 0), None);
        // Archiving needs a frozen shard.
        let mut early = ops.clone();
        early.push(Op::Archived { shard: 4 });
        assert_eq!(ShardMap::fold(&early).shards[&4].phase, Phase::Active);
        ops.push(Op::Frozen { shard: 4 });
        // A late activation does not thaw a frozen shard.
        ops.push(Op::Activated { shard: 4 });
        assert_eq!(ShardMap::fold(&ops).shards[&4].phase, Phase::Frozen);
        ops.push(Op::Archived { shard: 4 });
        // A late freeze record does not bring an archived shard back.
        ops.push(Op::Frozen { shard: 4 });
        assert_eq!(ShardMap::fold(&ops).shards[&4].phase, Phase::Archived);
    }

    #[test]
    fn the_first_recorded_end_counts_and_a_window_bounds_it() {
        let mut windowed = spec(4, "log.example/w");
        windowed.valid_from = Some(100);
        windowed.valid_until = Some(200);
        let mut ops = vec![Op::Add {
            spec: windowed,
            members: BTreeMap::from([(1, "a".into())]),
        }];
        assert_eq!(ShardMap::fold(&ops).valid_until(4), Some(200));
        // Frozen early by an operator: the recorded end, which also freezes it.
        ops.push(Op::Activated { shard: 4 });
        ops.push(Op::Ended { shard: 4, at: 150 });
        ops.push(Op::Ended { shard: 4, at: 170 });
        let map = ShardMap::fold(&ops);
        assert_eq!(map.valid_until(4), Some(150));
        assert_eq!(map.shards[&4].phase, Phase::Frozen);
        // Recorded after the window ended: the window's end.
        ops.push(Op::Ended { shard: 9, at: 70 });
        ops.insert(1, Op::Ended { shard: 4, at: 250 });
        let map = ShardMap::fold(&ops);
        assert_eq!(map.valid_until(4), Some(200));
        // A configured shard (not in the map) has its end recorded too; an unknown one has none.
        assert_eq!(map.valid_until(9), Some(70));
        assert_eq!(map.valid_until(5), None);
        assert!(!map.shards.contains_key(&9));
    }

    #[test]
    fn configured_shards_are_archived_once_their_end_is_recorded() {
        // Archiving a configured shard whose freeze has no recorded end changes nothing.
        let mut ops = vec![Op::Archived { shard: 1 }];
        assert!(!ShardMap::fold(&ops).is_archived(1));
        ops.push(Op::Ended { shard: 1, at: 10 });
        ops.push(Op::Archived { shard: 1 });
        let map = ShardMap::fold(&ops);
        assert!(map.is_archived(1));
        assert!(!map.is_archived(2));
        assert!(map.shards.is_empty());
        // Its id is never given to a shard of the map.
        let err = map
            .check_add(&spec(1, "example.org/again"))
            .expect_err("id reused");
        assert!(err.contains("never reused"), "{err}");
        ops.push(Op::Add {
            spec: spec(1, "example.org/again"),
            members: members(),
        });
        assert!(ShardMap::fold(&ops).shards.is_empty());
    }

    #[test]
    fn settings_of_known_keys_are_recorded_and_unset() {
        let set = |key: &str, value: Option<&str>| Op::Set {
            key: key.into(),
            value: value.map(Into::into),
        };
        let mut ops = vec![
            set("publish_interval_ms", Some("1")),
            set("publish_interval_ms", Some("500")),
            set("schedule", Some("paused")),
            // Unknown keys change nothing (values are checked where they are used: `settings::Live`).
            set("no_such_setting", Some("1")),
        ];
        let map = ShardMap::fold(&ops);
        assert_eq!(
            map.settings,
            BTreeMap::from([
                ("publish_interval_ms".to_string(), "500".to_string()),
                ("schedule".to_string(), "paused".to_string()),
            ])
        );
        ops.push(set("schedule", None));
        let map = ShardMap::fold(&ops);
        assert_eq!(map.settings.len(), 1);
        assert_eq!(map.settings["publish_interval_ms"], "500");
    }

    #[test]
    fn adds_that_cannot_be_recorded_say_why() {
        let map = ShardMap::fold(&[Op::Add {
            spec: spec(4, "example.org/a"),
            members: members(),
        }]);
        assert!(
            map.check_add(&spec(4, "example.org/a")).is_ok(),
            "a repeat is fine"
        );
        let err = |s: &ShardSpec| map.check_add(s).expect_err("refused");
        assert!(err(&spec(CONTROL, "example.org/c")).contains("control group"));
        assert!(err(&spec(4, "example.org/b")).contains("exists already"));
        assert!(err(&spec(5, "example.org/a")).contains("has origin example.org/a already"));
        let mut backwards = spec(5, "example.org/e");
        (backwards.valid_from, backwards.valid_until) = (Some(20), Some(10));
        assert!(err(&backwards).contains("ends"));
        let mut foreign = spec(5, "example.org/f");
        foreign.shard.vkey = spec(6, "example.org/g").shard.vkey;
        assert!(err(&foreign).contains("not for the origin"));
    }
}
