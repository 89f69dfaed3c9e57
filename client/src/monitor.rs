//! A monitor: follows logs through their read path, trusts a checkpoint only once it is consistent
//! with the last one it trusted, and checks every entry against a watch list.
//!
//! For each log the monitor keeps (persisted, so a restart neither rescans nor re-alerts):
//! the last checkpoint it trusted, and the right edge of the tree of every entry it has read.
//! A new checkpoint is trusted when
//! - its signature verifies with the log's key,
//! - it does not go back (a smaller tree is a rollback) nor disagree at the same size (a split view),
//! - the log's consistency proof from the trusted checkpoint verifies, and
//! - the monitor's own root, recomputed from every entry it read, equals the checkpoint's root: the
//!   entries it checked are exactly the ones the log committed to.
//!
//! Anything else is a consistency alert and the checkpoint is not trusted. Matches are alerted once
//! per entry: alerts for a batch of entries are written before the state that records the batch
//! (a monitor killed between the two alerts that batch again when it restarts: at least once).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_sigstore::bundle::Trust;
use cairn_sigstore::certificate::verify_fulcio;
use cairn_store::{ShardKind, Source, TileCache, TileReader};
use cairn_tlog::tile::TILE_WIDTH;
use cairn_tlog::{Checkpoint, Hash, TreeEdge, VerifierKey, leaf_hash, verify_consistency};
use futures::{StreamExt, TryStreamExt};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::ClientError;
use crate::http::{HttpLog, HttpShard};
use crate::watch::{Claims, WatchList};

/// Bundles fetched at once while catching up.
const FETCH_AHEAD: usize = 16;
/// State is written at least every this many bundles.
const SAVE_EVERY: u64 = 64;

/// One log the monitor follows.
#[derive(Clone, Debug)]
pub struct Followed {
    /// Its read path (the prefix under which `checkpoint`, `tile/...` are served).
    pub url: String,
    /// Its checkpoint key.
    pub key: VerifierKey,
    /// Whether its entries are Sigstore `hashedrekord` bodies (matched against the watch list).
    pub sigstore: bool,
}

/// Where the logs to follow come from.
#[derive(Clone, Debug)]
pub enum Logs {
    /// A Cairn read path: every shard of its `shards.json`, re-read each round (new shards are
    /// picked up without a restart).
    Cairn(String),
    /// The transparency logs of a Sigstore trusted root, each a tlog-tiles log at its base URL (a
    /// Cairn Sigstore shard, or any Rekor v2 log).
    TrustedRoot(Trust),
}

/// An alert.
#[derive(Clone, Debug, PartialEq)]
pub enum Alert {
    /// An entry matched the watch list.
    Match(Value),
    /// The log misbehaved: a rollback, a split view, an inconsistent checkpoint, a bad signature.
    Consistency(Value),
}

impl Alert {
    /// The alert as one JSON object.
    pub fn to_json(&self) -> &Value {
        match self {
            Self::Match(v) | Self::Consistency(v) => v,
        }
    }
}

/// What the monitor remembers of one log.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct LogState {
    /// The trusted checkpoint's size and root (base64).
    size: u64,
    root: String,
    /// The trusted checkpoint, as signed.
    #[serde(default)]
    note: String,
    /// The log's read path and key, when it was last followed.
    #[serde(default)]
    url: String,
    /// Entries read so far, and the right edge of their tree (base64 hashes).
    read: u64,
    edge: Vec<String>,
    /// The right edge of the trusted tree (where reading restarts if the entries read after it do
    /// not hash to the next checkpoint).
    #[serde(default)]
    trusted_edge: Vec<String>,
}

/// A checkpoint the monitor trusts.
#[derive(Clone, Debug)]
pub struct Trusted {
    /// The log's verifier key (text).
    pub key: String,
    /// Its read path.
    pub url: String,
    /// The tree size.
    pub size: u64,
    /// The signed note.
    pub note: Vec<u8>,
}

/// Called for every entry read, in order: (log, index, entry bytes). An error stops the round
/// before the monitor records the entry as read.
pub type Visit<'a> = dyn FnMut(&Followed, u64, &[u8]) -> Result<(), String> + Send + 'a;

#[derive(Default, Serialize, Deserialize)]
struct StateFile {
    /// By log key (its verifier key text).
    logs: BTreeMap<String, LogState>,
    /// The key first seen at each shard path of the site (`shards.json` mode): a log does not get to
    /// change it.
    #[serde(default)]
    pins: BTreeMap<String, String>,
}

/// Metrics of a monitor.
#[derive(Clone)]
pub struct MonitorMetrics {
    registry: Registry,
    entries: IntCounterVec,
    alerts: IntCounterVec,
    untrusted: IntCounterVec,
    size: IntGaugeVec,
}

impl MonitorMetrics {
    fn new() -> Self {
        let registry = Registry::new();
        let entries = IntCounterVec::new(
            Opts::new("cairn_monitor_entries_total", "Entries read and checked."),
            &["log"],
        )
        .expect("valid metric");
        let alerts = IntCounterVec::new(
            Opts::new(
                "cairn_monitor_alerts_total",
                "Alerts raised, by type (match, consistency).",
            ),
            &["log", "type"],
        )
        .expect("valid metric");
        let untrusted = IntCounterVec::new(
            Opts::new(
                "cairn_monitor_untrusted_certificates_total",
                "Entries whose certificate does not chain to the trusted root (not matched).",
            ),
            &["log"],
        )
        .expect("valid metric");
        let size = IntGaugeVec::new(
            Opts::new(
                "cairn_monitor_trusted_tree_size",
                "Size of the last trusted checkpoint.",
            ),
            &["log"],
        )
        .expect("valid metric");
        for c in [&entries, &untrusted] {
            let _ = registry.register(Box::new(c.clone()));
        }
        let _ = registry.register(Box::new(alerts.clone()));
        let _ = registry.register(Box::new(size.clone()));
        Self {
            registry,
            entries,
            alerts,
            untrusted,
            size,
        }
    }

    /// The registry to serve.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// The monitor.
pub struct Monitor {
    logs: Logs,
    watch: Option<Arc<WatchList>>,
    trust: Option<Trust>,
    state_path: PathBuf,
    state: StateFile,
    http: HttpLog,
    metrics: MonitorMetrics,
    /// Checkpoints already alerted on (not to repeat an alert every round).
    alerted: std::collections::HashSet<Vec<u8>>,
    /// Called before the state is written (to make what the visitor wrote durable first).
    before_save: Option<Box<dyn Fn() -> Result<(), String> + Send + Sync>>,
}

/// The outcome of one round.
#[derive(Debug, Default)]
pub struct Round {
    /// Entries read.
    pub entries: u64,
    /// Alerts raised.
    pub alerts: Vec<Alert>,
    /// Logs that could not be read this round (unreachable, a file missing): (log, why).
    pub failed: Vec<(String, String)>,
}

impl Monitor {
    /// Reads the logs over `http` (for TLS settings: [`crate::TlsOptions`]).
    pub fn with_http(mut self, http: reqwest::Client) -> Self {
        self.http = HttpLog::with_client(self.http.base(), http);
        self
    }

    /// A monitor of `logs`, matching `watch`, judging certificates with `trust` (entries whose
    /// certificate does not chain to it are not matched), remembering in `state_path`.
    pub fn new(
        logs: Logs,
        watch: Option<WatchList>,
        trust: Option<Trust>,
        state_path: &Path,
    ) -> Result<Self, ClientError> {
        let state = match std::fs::read(state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                ClientError::Invalid(format!("{}: not a monitor state file: {e}", state_path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StateFile::default(),
            Err(e) => return Err(ClientError::Invalid(format!("{}: {e}", state_path.display()))),
        };
        let base = match &logs {
            Logs::Cairn(url) => url.clone(),
            Logs::TrustedRoot(_) => String::new(),
        };
        Ok(Self {
            logs,
            watch: watch.map(Arc::new),
            trust,
            state_path: state_path.to_path_buf(),
            state,
            http: HttpLog::new(&base),
            metrics: MonitorMetrics::new(),
            alerted: Default::default(),
            before_save: None,
        })
    }

    /// Runs `f` before every write of the state: whatever the entry visitor stored must be durable
    /// before the state says those entries were read.
    pub fn before_save(&mut self, f: impl Fn() -> Result<(), String> + Send + Sync + 'static) {
        self.before_save = Some(Box::new(f));
    }

    /// The metrics.
    pub fn metrics(&self) -> &MonitorMetrics {
        &self.metrics
    }

    /// The logs to follow now.
    async fn followed(
        &mut self,
        round: &mut Round,
        alert: &mut (dyn FnMut(&Alert) + Send),
    ) -> Result<Vec<Followed>, ClientError> {
        let logs = self.logs.clone();
        match &logs {
            Logs::Cairn(base) => {
                let base = base.trim_end_matches('/').to_owned();
                let listed = self.http.shards().await?;
                let mut out = Vec::new();
                let mut seen = std::collections::BTreeSet::new();
                for s in listed {
                    // Pinned by the shard's path on the site, so that the same state serves a mirror.
                    let pin = s.http_prefix.clone();
                    let url = format!("{base}{pin}");
                    seen.insert(pin.clone());
                    let Ok(key) = VerifierKey::parse(&s.vkey) else {
                        let why = format!("shards.json lists an unreadable key for {url}: {:?}", s.vkey);
                        self.consistency(&url, s.vkey.as_bytes(), why, round, alert);
                        continue;
                    };
                    match self.state.pins.get(&pin) {
                        Some(pinned) if *pinned != s.vkey => {
                            let why = format!(
                                "shards.json now names another key for {url} ({}) than the one first seen ({pinned}); the new key is not followed",
                                s.vkey
                            );
                            self.consistency(&key.name, s.vkey.as_bytes(), why, round, alert);
                            continue;
                        }
                        Some(_) => {}
                        None => {
                            self.state.pins.insert(pin, s.vkey.clone());
                        }
                    }
                    out.push(Followed {
                        url,
                        key,
                        sigstore: s.kind == ShardKind::Sigstore,
                    });
                }
                let vanished: Vec<(String, String)> = self
                    .state
                    .pins
                    .iter()
                    .filter(|(pin, _)| !seen.contains(*pin))
                    .map(|(p, k)| (p.clone(), k.clone()))
                    .collect();
                for (pin, key) in vanished {
                    let why = format!("{base}{pin} (key {key}) is no longer in shards.json");
                    self.consistency(&pin, key.as_bytes(), why, round, alert);
                }
                Ok(out)
            }
            Logs::TrustedRoot(trust) => {
                let mut out = Vec::new();
                for log in &trust.tlogs {
                    let source = HttpShard::new(&log.base_url, self.http.client());
                    // The key's name is the checkpoint's origin; the log id binds the two.
                    let Some(note) = source.get("checkpoint").await? else {
                        continue;
                    };
                    let origin = Checkpoint::parse_note_unverified(&note)
                        .map_err(|e| ClientError::Verify(format!("{}/checkpoint: {e}", log.base_url)))?
                        .origin;
                    let key = VerifierKey::new(&origin, 0x01, log.key)
                        .map_err(|e| ClientError::Verify(format!("{}: {e}", log.base_url)))?;
                    if key.key_hash().as_slice() != log.log_id.as_slice() {
                        return Err(ClientError::Verify(format!(
                            "{}: origin {origin:?} with the trusted key does not give the trusted log id",
                            log.base_url
                        )));
                    }
                    out.push(Followed {
                        url: log.base_url.clone(),
                        key,
                        sigstore: true,
                    });
                }
                Ok(out)
            }
        }
    }

    /// One round over every log: catch up to each log's latest checkpoint. `alert` is called for
    /// each alert as it is raised; `progress` with (log, entries read, entries to read).
    pub async fn round(
        &mut self,
        alert: &mut (dyn FnMut(&Alert) + Send),
        progress: &(dyn Fn(&str, u64, u64) + Sync),
    ) -> Result<Round, ClientError> {
        self.round_visiting(alert, progress, &mut |_, _, _| Ok(())).await
    }

    /// [`Monitor::round`], calling `visit` for every entry read.
    pub async fn round_visiting(
        &mut self,
        alert: &mut (dyn FnMut(&Alert) + Send),
        progress: &(dyn Fn(&str, u64, u64) + Sync),
        visit: &mut Visit<'_>,
    ) -> Result<Round, ClientError> {
        let mut round = Round::default();
        let logs = self.followed(&mut round, alert).await?;
        for log in logs {
            // One log that cannot be read now does not stop the others.
            if let Err(e) = self.follow(&log, &mut round, alert, progress, visit).await {
                round.failed.push((log.key.name.clone(), e.to_string()));
            }
        }
        self.save()?;
        Ok(round)
    }

    /// The checkpoints trusted now, one per log.
    pub fn trusted(&self) -> Vec<Trusted> {
        self.state
            .logs
            .iter()
            .filter(|(_, s)| s.size > 0)
            .map(|(key, s)| Trusted {
                key: key.clone(),
                url: s.url.clone(),
                size: s.size,
                note: s.note.clone().into_bytes(),
            })
            .collect()
    }

    fn raise(&mut self, log: &str, a: Alert, round: &mut Round, alert: &mut (dyn FnMut(&Alert) + Send)) {
        let kind = match a {
            Alert::Match(_) => "match",
            Alert::Consistency(_) => "consistency",
        };
        self.metrics.alerts.with_label_values(&[log, kind]).inc();
        alert(&a);
        round.alerts.push(a);
    }

    fn consistency(
        &mut self,
        log: &str,
        note: &[u8],
        why: String,
        round: &mut Round,
        alert: &mut (dyn FnMut(&Alert) + Send),
    ) {
        if !self.alerted.insert(note.to_vec()) {
            return;
        }
        let a = Alert::Consistency(json!({
            "type": "consistency",
            "log": log,
            "error": why,
            "checkpoint": String::from_utf8_lossy(note),
        }));
        self.raise(log, a, round, alert);
    }

    async fn follow(
        &mut self,
        log: &Followed,
        round: &mut Round,
        alert: &mut (dyn FnMut(&Alert) + Send),
        progress: &(dyn Fn(&str, u64, u64) + Sync),
        visit: &mut Visit<'_>,
    ) -> Result<(), ClientError> {
        let name = log.key.name.clone();
        let id = log.key.to_string();
        let source = HttpShard::new(&log.url, self.http.client());
        let Some(note) = source.get("checkpoint").await? else {
            return Ok(()); // nothing published yet
        };
        let reader = TileReader::new(source, log.key.clone(), TileCache::new(64 << 20));
        let latest = match reader.offer(&note) {
            Ok(v) => v.checkpoint.clone(),
            Err(e) => {
                self.consistency(
                    &name,
                    &note,
                    format!("the checkpoint does not verify with the log's key: {e}"),
                    round,
                    alert,
                );
                return Ok(());
            }
        };
        let mut state = self.state.logs.get(&id).cloned().unwrap_or_default();
        let trusted_root = if state.size == 0 {
            None
        } else {
            Some(Hash::from_base64(&state.root).map_err(|e| ClientError::Invalid(format!("state: {e}")))?)
        };
        if latest.size < state.size {
            let why = format!(
                "rollback: the log shows a tree of {} after one of {}",
                latest.size, state.size
            );
            self.consistency(&name, &note, why, round, alert);
            return Ok(());
        }
        if let Some(root) = trusted_root {
            if latest.size == state.size && latest.root != root {
                let why = format!("split view: two roots for the tree of {}", latest.size);
                self.consistency(&name, &note, why, round, alert);
                return Ok(());
            }
            if latest.size > state.size {
                let proof = match reader.consistency_proof(state.size, latest.size).await {
                    // Not reachable now: try again next round rather than accuse the log.
                    Err(e @ cairn_store::ReadError::Unavailable(_)) => return Err(e.into()),
                    other => other,
                };
                let ok = proof.as_ref().map_err(|e| e.to_string()).and_then(|p| {
                    verify_consistency(state.size, latest.size, p, &root, &latest.root)
                        .map_err(|e| e.to_string())
                });
                if let Err(e) = ok {
                    let why = format!(
                        "the tree of {} is not consistent with the trusted tree of {}: {e}",
                        latest.size, state.size
                    );
                    self.consistency(&name, &note, why, round, alert);
                    return Ok(());
                }
            }
        }
        if latest.size < state.read {
            // A consistent checkpoint older than what this monitor has read (a lagging mirror):
            // nothing new to read until the log is served past it again.
            return Ok(());
        }
        if latest.size == state.read && state.size == latest.size {
            self.metrics
                .size
                .with_label_values(&[&name])
                .set(latest.size as i64);
            return Ok(());
        }

        // Read every entry from where the last round stopped.
        let mut edge = TreeEdge::from_parts(
            state.read,
            state
                .edge
                .iter()
                .map(|h| Hash::from_base64(h))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ClientError::Invalid(format!("state: {e}")))?,
        )
        .map_err(|e| ClientError::Invalid(format!("state: {e}")))?;
        let width = u64::from(TILE_WIDTH);
        let first_bundle = state.read / width;
        let last_bundle = latest.size.div_ceil(width);
        let reader = Arc::new(reader);
        let size = latest.size;
        // Matching the watch list (parsing every body and certificate) runs beside the fetches, on
        // every core; the few candidates are judged in order below.
        let watch = self.watch.clone().filter(|_| log.sigstore);
        let mut bundles = futures::stream::iter(first_bundle..last_bundle)
            .map(|b| {
                let reader = reader.clone();
                let watch = watch.clone();
                async move {
                    let object = reader.bundle_at(b, size).await?;
                    let body = object.body.clone();
                    let entries = tokio::task::spawn_blocking(move || decode_bundle(&body, watch.as_deref()))
                        .await
                        .map_err(|e| ClientError::Invalid(e.to_string()))??;
                    Ok::<_, ClientError>((b, entries))
                }
            })
            .buffered(FETCH_AHEAD);
        let mut since_save = 0u64;
        while let Some((b, entries)) = bundles.try_next().await? {
            let before = state.read;
            for (i, (leaf, body, candidate)) in entries.into_iter().enumerate() {
                let index = b * width + i as u64;
                if index < state.read {
                    continue;
                }
                if index >= size {
                    break;
                }
                visit(log, index, &body).map_err(ClientError::Invalid)?;
                edge.append(leaf);
                if candidate && let Some(watch) = &self.watch {
                    for m in self.check_entry(watch, &name, &body) {
                        let mut m = m;
                        m["log"] = json!(name);
                        m["index"] = json!(index);
                        self.raise(&name, Alert::Match(m), round, alert);
                    }
                }
                state.read = index + 1;
                round.entries += 1;
            }
            self.metrics
                .entries
                .with_label_values(&[&name])
                .inc_by(state.read - before);
            progress(&name, state.read, size);
            since_save += 1;
            if since_save >= SAVE_EVERY {
                state.edge = edge.subtrees().iter().map(Hash::to_base64).collect();
                self.state.logs.insert(id.clone(), state.clone());
                self.save()?;
                since_save = 0;
            }
        }
        state.edge = edge.subtrees().iter().map(Hash::to_base64).collect();
        if edge.size() != size || edge.root() != latest.root {
            // Read again from the trusted tree next time: these entries are not the log's.
            state.read = state.size;
            state.edge = state.trusted_edge.clone();
            self.state.logs.insert(id.clone(), state);
            self.save()?;
            let why = format!(
                "the log's entries up to {size} do not hash to its checkpoint's root (the entries served are not the ones it committed to)"
            );
            self.consistency(&name, &note, why, round, alert);
            return Ok(());
        }
        state.size = latest.size;
        state.root = latest.root.to_base64();
        state.trusted_edge = state.edge.clone();
        state.note = String::from_utf8_lossy(&note).into_owned();
        state.url = log.url.clone();
        self.state.logs.insert(id, state);
        self.save()?;
        self.metrics
            .size
            .with_label_values(&[&name])
            .set(latest.size as i64);
        Ok(())
    }

    /// The watch-list matches of one entry (none if its certificate does not chain to the trusted
    /// root, when one is given).
    fn check_entry(&self, watch: &WatchList, log: &str, body: &[u8]) -> Vec<Value> {
        let Ok(claims) = Claims::of_body(body) else {
            return Vec::new();
        };
        let found = watch.matches(&claims);
        if found.is_empty() {
            return found;
        }
        if let (Some(trust), Some(cert)) = (&self.trust, &claims.certificate)
            && verify_fulcio(cert, &[cert.not_before()], &trust.cas, &trust.ctlogs).is_err()
        {
            self.metrics.untrusted.with_label_values(&[log]).inc();
            return Vec::new();
        }
        let digest = cairn_sigstore::certificate::hex(&claims.digest);
        found
            .into_iter()
            .map(|mut m| {
                m["fingerprint"] = json!(claims.fingerprint);
                m["digest"] = json!(digest);
                m
            })
            .collect()
    }

    fn save(&self) -> Result<(), ClientError> {
        if let Some(f) = &self.before_save {
            f().map_err(ClientError::Invalid)?;
        }
        let bytes =
            serde_json::to_vec_pretty(&self.state).map_err(|e| ClientError::Invalid(e.to_string()))?;
        let tmp = self.state_path.with_extension("tmp");
        let io =
            |e: std::io::Error| ClientError::Invalid(format!("writing {}: {e}", self.state_path.display()));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.state_path).map_err(io)?;
        Ok(())
    }
}

/// A bundle's entries with their leaf hashes, and whether each matches `watch` (before the
/// certificate is judged).
fn decode_bundle(body: &[u8], watch: Option<&WatchList>) -> Result<Vec<(Hash, Vec<u8>, bool)>, ClientError> {
    let entries = cairn_tlog::bundle::decode(body, None)
        .map_err(|e| ClientError::Verify(format!("entry bundle: {e}")))?;
    Ok(entries
        .into_iter()
        .map(|e| {
            let candidate =
                watch.is_some_and(|w| Claims::of_body(e).is_ok_and(|c| !w.matches(&c).is_empty()));
            (leaf_hash(e), e.to_vec(), candidate)
        })
        .collect())
}
