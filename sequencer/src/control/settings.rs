//! Cluster settings: values every sequencer runs with, recorded in the control group
//! ([`Op::Set`](super::Op::Set)) and changed at runtime, like the shard map.
//!
//! Each node's configuration gives a setting's value until the control group records one; a recorded
//! value applies on every node within one turn of the control loop (a quarter second) once the node
//! applied the operation, and `unset` returns each node to its configured value. Only the settings
//! listed in [`SETTINGS`] exist; a value is checked before it is proposed and again when it is applied
//! (an operation the fold finds invalid changes nothing).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::NodeConfig;

/// A cluster setting: its name and what it does.
#[derive(Clone, Copy, Debug)]
pub struct SettingDoc {
    /// The key.
    pub key: &'static str,
    /// What it does and what it takes.
    pub about: &'static str,
}

/// Every cluster setting.
pub const SETTINGS: &[SettingDoc] = &[
    SettingDoc {
        key: "publish_interval_ms",
        about: "time between the starts of a shard leader's publishing rounds (1 to 10000 ms; keep it well under the log-servers' publish_timeout_s, which PUBLISHED writes wait)",
    },
    SettingDoc {
        key: "balance_leaders_ms",
        about: "how often each node's leader placement balancer runs (0: never; else 100 to 3600000 ms)",
    },
    SettingDoc {
        key: "max_unpublished",
        about: "appends are pushed back while a shard has this many entries sequenced but not published (at least 1)",
    },
    SettingDoc {
        key: "archive_after_s",
        about: "how long a frozen shard's final checkpoint must have been in object storage before the shard can be archived (0 to 2592000 s; keep it at least the log-servers' reroute_grace_s, or a retry within that grace may be logged again)",
    },
    SettingDoc {
        key: "schedule",
        about: "`on`: the control group's leader adds the schedule's shards; `paused`: it adds none (shards added already keep their windows)",
    },
];

/// A setting's value as the running cluster has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value {
    Millis(u64),
    Count(u64),
    Secs(u64),
    Paused(bool),
}

/// Checks `value` for `key`: `Ok` with the parsed value, or an error saying what the setting takes.
fn parse(key: &str, value: &str) -> Result<Value, String> {
    let number = |lo: u64, hi: u64| -> Result<u64, String> {
        let n: u64 = value
            .trim()
            .parse()
            .map_err(|_| format!("{key} takes a whole number, not {value:?}"))?;
        if !(lo..=hi).contains(&n) {
            return Err(format!("{key} must be between {lo} and {hi}, not {n}"));
        }
        Ok(n)
    };
    match key {
        "publish_interval_ms" => number(1, 10_000).map(Value::Millis),
        "balance_leaders_ms" => {
            let n = number(0, 3_600_000)?;
            if n != 0 && n < 100 {
                return Err(format!(
                    "balance_leaders_ms must be 0 (off) or at least 100, not {n}"
                ));
            }
            Ok(Value::Millis(n))
        }
        "max_unpublished" => number(1, u64::MAX).map(Value::Count),
        "archive_after_s" => number(0, 30 * 86_400).map(Value::Secs),
        "schedule" => match value.trim() {
            "on" => Ok(Value::Paused(false)),
            "paused" => Ok(Value::Paused(true)),
            other => Err(format!("schedule takes `on` or `paused`, not {other:?}")),
        },
        _ => Err(unknown(key)),
    }
}

fn unknown(key: &str) -> String {
    format!(
        "no cluster setting {key:?}; the settings are {}",
        SETTINGS.iter().map(|s| s.key).collect::<Vec<_>>().join(", ")
    )
}

/// Whether `value` can be recorded for `key` (`None`: unset, allowed for every setting).
pub fn check(key: &str, value: Option<&str>) -> Result<(), String> {
    match value {
        Some(v) => parse(key, v).map(|_| ()),
        None if SETTINGS.iter().any(|s| s.key == key) => Ok(()),
        None => Err(unknown(key)),
    }
}

/// A setting as one node runs with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The key.
    pub key: &'static str,
    /// The value in effect on this node.
    pub value: String,
    /// Whether the control group recorded it (else it is this node's configured value).
    pub recorded: bool,
    /// What it does.
    pub about: &'static str,
}

/// The settings in effect on this node, read by the publishers, the balancer, admission and the
/// control loop at each use.
#[derive(Debug)]
pub(crate) struct Live {
    publish_interval_ms: AtomicU64,
    balance_leaders_ms: AtomicU64,
    max_unpublished: AtomicU64,
    archive_after_s: AtomicU64,
    schedule_paused: AtomicBool,
}

impl Live {
    /// The configured values.
    pub(crate) fn new(config: &NodeConfig) -> Self {
        let live = Self {
            publish_interval_ms: AtomicU64::new(0),
            balance_leaders_ms: AtomicU64::new(0),
            max_unpublished: AtomicU64::new(0),
            archive_after_s: AtomicU64::new(0),
            schedule_paused: AtomicBool::new(false),
        };
        live.update(config, &Default::default());
        live
    }

    /// Each setting as recorded in `recorded` (the control map's), else as `config` gives it.
    pub(crate) fn update(&self, config: &NodeConfig, recorded: &std::collections::BTreeMap<String, String>) {
        for doc in SETTINGS {
            let value = recorded
                .get(doc.key)
                .and_then(|v| parse(doc.key, v).ok())
                .unwrap_or_else(|| configured(config, doc.key));
            match value {
                Value::Millis(n) if doc.key == "publish_interval_ms" => {
                    self.publish_interval_ms.store(n.max(1), Ordering::Relaxed)
                }
                Value::Millis(n) => self.balance_leaders_ms.store(n, Ordering::Relaxed),
                Value::Count(n) => self.max_unpublished.store(n, Ordering::Relaxed),
                Value::Secs(n) => self.archive_after_s.store(n, Ordering::Relaxed),
                Value::Paused(p) => self.schedule_paused.store(p, Ordering::Relaxed),
            }
        }
    }

    /// Every setting with its value here and whether it was recorded.
    pub(crate) fn list(&self, recorded: &std::collections::BTreeMap<String, String>) -> Vec<Setting> {
        SETTINGS
            .iter()
            .map(|doc| {
                let value = match doc.key {
                    "publish_interval_ms" => self.publish_interval().as_millis().to_string(),
                    "balance_leaders_ms" => self.balance_interval().map_or(0, |d| d.as_millis()).to_string(),
                    "max_unpublished" => self.max_unpublished().to_string(),
                    "archive_after_s" => self.archive_after().as_secs().to_string(),
                    _ => if self.schedule_paused() { "paused" } else { "on" }.to_string(),
                };
                Setting {
                    key: doc.key,
                    value,
                    recorded: recorded.get(doc.key).is_some_and(|v| parse(doc.key, v).is_ok()),
                    about: doc.about,
                }
            })
            .collect()
    }

    pub(crate) fn publish_interval(&self) -> Duration {
        Duration::from_millis(self.publish_interval_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn balance_interval(&self) -> Option<Duration> {
        match self.balance_leaders_ms.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_millis(n)),
        }
    }

    pub(crate) fn max_unpublished(&self) -> u64 {
        self.max_unpublished.load(Ordering::Relaxed)
    }

    pub(crate) fn archive_after(&self) -> Duration {
        Duration::from_secs(self.archive_after_s.load(Ordering::Relaxed))
    }

    pub(crate) fn schedule_paused(&self) -> bool {
        self.schedule_paused.load(Ordering::Relaxed)
    }
}

/// A setting's value as this node's configuration gives it.
fn configured(config: &NodeConfig, key: &str) -> Value {
    match key {
        "publish_interval_ms" => Value::Millis(config.publish_interval.as_millis() as u64),
        "balance_leaders_ms" => Value::Millis(config.balance_interval.map_or(0, |d| d.as_millis() as u64)),
        "max_unpublished" => Value::Count(config.max_unpublished),
        "archive_after_s" => Value::Secs(config.archive_after.as_secs()),
        _ => Value::Paused(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn config() -> NodeConfig {
        let mut c = NodeConfig::new(
            1,
            "/nonexistent".into(),
            "127.0.0.1:0".parse().expect("addr"),
            cairn_store::Bucket::new(
                std::sync::Arc::new(object_store::memory::InMemory::new()),
                Default::default(),
            ),
            Vec::new(),
        );
        c.publish_interval = Duration::from_millis(200);
        c.balance_interval = Some(Duration::from_secs(2));
        c
    }

    #[test]
    fn recorded_values_override_the_configuration_and_unset_returns_to_it() {
        let config = config();
        let live = Live::new(&config);
        assert_eq!(live.publish_interval(), Duration::from_millis(200));
        assert_eq!(live.balance_interval(), Some(Duration::from_secs(2)));
        assert!(!live.schedule_paused());
        assert!(live.list(&BTreeMap::new()).iter().all(|s| !s.recorded));

        let recorded: BTreeMap<String, String> = [
            ("publish_interval_ms", "1000"),
            ("balance_leaders_ms", "0"),
            ("schedule", "paused"),
            ("archive_after_s", "5"),
            ("max_unpublished", "77"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        live.update(&config, &recorded);
        assert_eq!(live.publish_interval(), Duration::from_secs(1));
        assert_eq!(live.balance_interval(), None);
        assert!(live.schedule_paused());
        assert_eq!(live.archive_after(), Duration::from_secs(5));
        assert_eq!(live.max_unpublished(), 77);
        let listed = live.list(&recorded);
        assert_eq!(listed.len(), SETTINGS.len());
        assert!(listed.iter().all(|s| s.recorded));
        assert!(listed.iter().any(|s| s.key == "schedule" && s.value == "paused"));

        live.update(&config, &BTreeMap::new());
        assert_eq!(live.publish_interval(), Duration::from_millis(200));
        assert_eq!(live.max_unpublished(), config.max_unpublished);

        // A recorded value this version does not take (another version's range) is not in effect:
        // the configured value is, and the listing says so.
        let odd = BTreeMap::from([("publish_interval_ms".to_string(), "60000".to_string())]);
        live.update(&config, &odd);
        assert_eq!(live.publish_interval(), Duration::from_millis(200));
        assert!(live.list(&odd).iter().all(|s| !s.recorded));
    }

    #[test]
    fn bad_keys_and_values_are_refused_with_what_they_take() {
        let err = check("publish_interval", Some("5")).expect_err("unknown key");
        assert!(err.contains("publish_interval_ms"), "{err}");
        assert!(check("publish_interval", None).is_err());
        assert!(check("publish_interval_ms", None).is_ok());
        assert!(
            check("publish_interval_ms", Some("0"))
                .expect_err("zero")
                .contains("between 1 and 10000")
        );
        assert!(
            check("publish_interval_ms", Some("fast"))
                .expect_err("text")
                .contains("whole number")
        );
        assert!(
            check("balance_leaders_ms", Some("50"))
                .expect_err("too often")
                .contains("at least 100")
        );
        assert!(check("balance_leaders_ms", Some("0")).is_ok());
        assert!(
            check("schedule", Some("off"))
                .expect_err("word")
                .contains("`paused`")
        );
        assert!(check("max_unpublished", Some("0")).is_err());
    }
}
