//! Temporal shards on a schedule (`[schedule]`): a new shard (opaque, or a Sigstore log) for every period, created
//! `lead_time_s` before its window, active during it, frozen at its end — shard rotation as CT logs
//! and Rekor do it, without an operator.
//!
//! Every sequencer computes the same plan: window `n` is `[start + n·period, start + (n+1)·period)`,
//! its shard id is `first_id + n`, its origin the template with `{n}`, `{id}`, `{year}` and `{half}`
//! (of the window's start, UTC) filled in, and its Ed25519 key is derived from the schedule's seed (a
//! secret every sequencer holds, like a key file: SHA-256 of a label, the seed and the origin), so no
//! key travels between nodes and none has to be provisioned per window.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cairn_sequencer::ShardSpec;
use cairn_store::{Shard, ShardKind};
use cairn_tlog::Signer;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The `[schedule]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleFile {
    /// Length of each window, in seconds (half a year is 15,778,800).
    pub period_s: u64,
    /// How long before its window a shard is created (listed as planned, its group started), in
    /// seconds.
    pub lead_time_s: u64,
    /// Origin template, e.g. `log{year}h{half}.example.org` or `example.org/log/{n}`: `{n}` the
    /// window's number, `{id}` the shard id, `{year}` and `{half}` (1 or 2) of the window's start.
    pub origin: String,
    /// Start of window 0, in Unix seconds; windows follow back to back.
    pub start: u64,
    /// Shard id of window 0; window `n` is shard `first_id + n`. Keep it above every configured and
    /// added shard id.
    pub first_id: u32,
    /// The seed the shards' keys are derived from: 64 hex digits (`openssl rand -hex 32`), mode 0600,
    /// the same on every sequencer. Relative to `data_dir` unless absolute; default
    /// `keys/schedule.seed`.
    #[serde(default)]
    pub seed_file: Option<PathBuf>,
    /// What the shards log: `opaque` (default) or `sigstore` (Rekor v2 logs, listed with their
    /// windows in the trust documents ahead of time; needs `base_url`).
    #[serde(default)]
    pub kind: ShardKind,
    /// A Sigstore schedule's base URL template, with the same placeholders and `{origin}`, e.g.
    /// `https://{origin}`: its host must be the origin.
    #[serde(default)]
    pub base_url: Option<String>,
}

/// The schedule with its seed.
pub struct Plan {
    file: ScheduleFile,
    seed: [u8; 32],
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the seed.
        f.debug_struct("Plan")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// Reads a seed file: 64 hex digits, readable by its owner only.
fn read_seed(path: &Path) -> anyhow::Result<[u8; 32]> {
    crate::config::check_private(path, "the schedule's seed")?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the schedule's seed {}", path.display()))?;
    let text = text.trim();
    let mut seed = [0u8; 32];
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "the schedule's seed {} must be 64 hex digits (`openssl rand -hex 32`)",
            path.display()
        );
    }
    for (i, byte) in seed.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)?;
    }
    Ok(seed)
}

/// The year and the half (1 or 2) of a Unix time, UTC.
fn year_half(secs: u64) -> (i64, u8) {
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, if month <= 6 { 1 } else { 2 })
}

impl Plan {
    /// Checks the table and reads the seed (`seed_file` relative to `data_dir`).
    pub fn load(file: &ScheduleFile, data_dir: &Path) -> anyhow::Result<Self> {
        if file.period_s == 0 {
            bail!("[schedule] period_s must be positive");
        }
        if file.lead_time_s >= file.period_s {
            bail!("[schedule] lead_time_s must be shorter than period_s (one window ahead at most)");
        }
        if !file.origin.contains("{n}") && !file.origin.contains("{id}") {
            bail!(
                "[schedule] origin must contain {{n}} or {{id}}: every window's shard needs an origin of its own"
            );
        }
        if file.first_id == cairn_sequencer::CONTROL {
            bail!("[schedule] first_id must not be 0 (the control group's id)");
        }
        let rel = file
            .seed_file
            .clone()
            .unwrap_or_else(|| PathBuf::from("keys/schedule.seed"));
        let path = if rel.is_absolute() {
            rel
        } else {
            data_dir.join(rel)
        };
        let plan = Self {
            file: file.clone(),
            seed: read_seed(&path)?,
        };
        // The first window's origin must make a valid key name (and, for Sigstore, a base URL).
        plan.signer(0).context("[schedule] origin")?;
        match (file.kind, &file.base_url) {
            (ShardKind::Sigstore, None) => bail!(
                "[schedule] kind = \"sigstore\" needs base_url, e.g. \"https://{{origin}}\": clients sign to <base_url>/api/v2/log/entries"
            ),
            (ShardKind::Sigstore, Some(_)) => {
                // Two windows: a host written out matches at most one window's origin.
                for n in [0, 1] {
                    let (origin, url) = (plan.origin(n), plan.base_url(n).unwrap_or_default());
                    let id = plan.id(n).unwrap_or_default();
                    cairn_sigstore::trust::check_base_url(id, &origin, &url)
                        .map_err(|e| anyhow::anyhow!("[schedule] window {n}: {e}"))?;
                }
            }
            (ShardKind::Opaque, Some(_)) => bail!("[schedule] base_url is for kind = \"sigstore\" only"),
            (ShardKind::Opaque, None) => {}
        }
        Ok(plan)
    }

    fn window(&self, n: u64) -> (u64, u64) {
        let from = self.file.start + n * self.file.period_s;
        (from, from + self.file.period_s)
    }

    fn id(&self, n: u64) -> Option<u32> {
        u32::try_from(u64::from(self.file.first_id) + n).ok()
    }

    fn origin(&self, n: u64) -> String {
        self.fill(n, &self.file.origin)
    }

    /// `template` with window `n`'s placeholders filled in.
    fn fill(&self, n: u64, template: &str) -> String {
        let (from, _) = self.window(n);
        let (year, half) = year_half(from);
        template
            .replace("{n}", &n.to_string())
            .replace("{id}", &self.id(n).unwrap_or(0).to_string())
            .replace("{year}", &year.to_string())
            .replace("{half}", &half.to_string())
    }

    /// Window `n`'s base URL (a Sigstore schedule's).
    fn base_url(&self, n: u64) -> Option<String> {
        let origin = self.origin(n);
        let template = self.file.base_url.as_ref()?.replace("{origin}", &origin);
        Some(self.fill(n, &template).trim_end_matches('/').to_owned())
    }

    fn signer(&self, n: u64) -> anyhow::Result<Signer> {
        let origin = self.origin(n);
        let seed: [u8; 32] = Sha256::new()
            .chain_update(b"cairn schedule key v1\n")
            .chain_update(self.seed)
            .chain_update(origin.as_bytes())
            .finalize()
            .into();
        Ok(Signer::from_seed(&origin, seed)?)
    }

    fn spec(&self, n: u64) -> Option<ShardSpec> {
        let signer = self.signer(n).ok()?;
        let (from, until) = self.window(n);
        Some(ShardSpec {
            shard: Shard {
                id: self.id(n)?,
                origin: signer.name().to_owned(),
                vkey: signer.verifier().to_string(),
            },
            kind: self.file.kind,
            base_url: self.base_url(n),
            valid_from: Some(from),
            valid_until: Some(until),
        })
    }

    /// The key of `shard` if it is one of the schedule's.
    pub fn key_of(&self, shard: &Shard) -> Option<Signer> {
        let n = u64::from(shard.id.checked_sub(self.file.first_id)?);
        let signer = self.signer(n).ok()?;
        (signer.name() == shard.origin).then_some(signer)
    }
}

impl cairn_sequencer::Schedule for Plan {
    fn due(&self, now: u64) -> Vec<ShardSpec> {
        let horizon = now + self.file.lead_time_s;
        if horizon < self.file.start {
            return Vec::new();
        }
        // The window open now (none ended is re-created), and the next one once its lead time came.
        let current = now.saturating_sub(self.file.start) / self.file.period_s;
        (current..)
            .take_while(|n| self.window(*n).0 <= horizon)
            .filter_map(|n| self.spec(n))
            .collect()
    }
}

/// Where a sequencer finds the keys of shards added at runtime: `shard-<id>.key` in its key
/// directory, else the schedule's derived key for a shard of the schedule.
#[derive(Debug)]
pub struct Keys {
    /// The key directory.
    pub dir: crate::config::KeyDir,
    /// The schedule, if any.
    pub plan: Option<std::sync::Arc<Plan>>,
}

impl cairn_sequencer::KeyProvider for Keys {
    fn signer(&self, shard: &Shard) -> Result<Option<Signer>, String> {
        if let Some(signer) = self.dir.signer(shard)? {
            return Ok(Some(signer));
        }
        Ok(self.plan.as_ref().and_then(|p| p.key_of(shard)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_sequencer::Schedule;

    fn plan(start: u64, period: u64, lead: u64) -> Plan {
        Plan {
            file: ScheduleFile {
                period_s: period,
                lead_time_s: lead,
                origin: "log{year}h{half}-{n}.example.org".into(),
                start,
                first_id: 100,
                seed_file: None,
                kind: ShardKind::Opaque,
                base_url: None,
            },
            seed: [7; 32],
        }
    }

    #[test]
    fn year_and_half_of_known_dates() {
        assert_eq!(year_half(0), (1970, 1));
        // 2026-06-30T23:59:59Z and 2026-07-01T00:00:00Z.
        assert_eq!(year_half(1_782_863_999), (2026, 1));
        assert_eq!(year_half(1_782_864_000), (2026, 2));
        // 2024-02-29 (a leap day) and 2027-01-01.
        assert_eq!(year_half(1_709_164_800), (2024, 1));
        assert_eq!(year_half(1_798_761_600), (2027, 1));
    }

    #[test]
    fn due_windows_are_the_open_one_and_the_next_within_its_lead_time() {
        let p = plan(1_000, 20, 5);
        assert!(p.due(990).is_empty(), "nothing before window 0's lead time");
        let ids = |now| p.due(now).iter().map(|s| s.shard.id).collect::<Vec<_>>();
        assert_eq!(ids(995), [100]);
        assert_eq!(ids(1_000), [100]);
        assert_eq!(ids(1_014), [100]);
        assert_eq!(ids(1_015), [100, 101]);
        assert_eq!(ids(1_020), [101]);
        let s = &p.due(1_020)[0];
        assert_eq!((s.valid_from, s.valid_until), (Some(1_020), Some(1_040)));
        assert_eq!(s.shard.origin, "log1970h1-1.example.org");
    }

    #[test]
    fn keys_are_derived_per_origin_and_match_the_spec() {
        let p = plan(1_000, 20, 5);
        let a = p.spec(0).expect("spec");
        let b = p.spec(1).expect("spec");
        assert_ne!(a.shard.vkey, b.shard.vkey);
        let key = p.key_of(&a.shard).expect("derived");
        assert_eq!(key.verifier().to_string(), a.shard.vkey);
        // Another seed, another key; a shard outside the schedule has none.
        let mut other = plan(1_000, 20, 5);
        other.seed = [8; 32];
        assert_ne!(other.spec(0).expect("spec").shard.vkey, a.shard.vkey);
        let stranger = Shard {
            id: 5,
            origin: "x.example.org".into(),
            vkey: String::new(),
        };
        assert!(p.key_of(&stranger).is_none());
    }

    #[test]
    fn a_sigstore_schedule_names_each_window_by_its_host() -> anyhow::Result<()> {
        let mut p = plan(1_000, 20, 5);
        p.file.kind = ShardKind::Sigstore;
        p.file.base_url = Some("https://{origin}/".into());
        let s = p.spec(1).expect("spec");
        assert_eq!(s.kind, ShardKind::Sigstore);
        assert_eq!(s.base_url.as_deref(), Some("https://log1970h1-1.example.org"));

        // Loading checks the template against the origin, and that a Sigstore schedule has one.
        let dir = tempfile::tempdir()?;
        let seed = dir.path().join("keys/schedule.seed");
        std::fs::create_dir_all(seed.parent().expect("parent"))?;
        std::fs::write(&seed, "07".repeat(32))?;
        std::fs::set_permissions(&seed, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let mut file = p.file.clone();
        Plan::load(&file, dir.path())?;
        file.base_url = Some("https://log1970h1-0.example.org".into());
        let err = Plan::load(&file, dir.path()).expect_err("host is not the origin");
        assert!(
            format!("{err:#}").contains("must be the host of its base_url"),
            "{err:#}"
        );
        file.base_url = Some("https://{origin}/rekor".into());
        let err = Plan::load(&file, dir.path()).expect_err("a path Cairn does not serve");
        assert!(format!("{err:#}").contains("its path must be empty"), "{err:#}");
        file.base_url = None;
        let err = Plan::load(&file, dir.path()).expect_err("no base_url");
        assert!(format!("{err:#}").contains("needs base_url"), "{err:#}");
        file.kind = ShardKind::Opaque;
        file.base_url = Some("https://{origin}".into());
        let err = Plan::load(&file, dir.path()).expect_err("base_url on an opaque schedule");
        assert!(
            format!("{err:#}").contains("for kind = \"sigstore\" only"),
            "{err:#}"
        );
        Ok(())
    }
}
