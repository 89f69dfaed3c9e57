//! The `cairn serve` configuration file (TOML) and the embedded default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cairn_store::ShardKind;
use cairn_tlog::Signer;
use serde::Deserialize;

/// Everything `cairn serve` runs with. Unknown keys are errors, so typos do not pass silently.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// This node's id (unique in the cluster).
    #[serde(default = "one")]
    pub node_id: u64,
    /// RocksDB, keys and (by default) tiles live here.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Roles this process plays: `sequencer`, `log`, `tiles`.
    #[serde(default = "all_roles")]
    pub roles: Vec<Role>,
    /// Public gRPC API (`cairn.v1.Log`, health, reflection).
    #[serde(default = "default_grpc")]
    pub grpc_addr: SocketAddr,
    /// HTTP read path.
    #[serde(default = "default_http")]
    pub http_addr: SocketAddr,
    /// Raft between sequencers.
    #[serde(default = "default_raft")]
    pub raft_addr: SocketAddr,
    /// Object store URL (`file:///abs/dir`, `s3://bucket/prefix`, `gs://…`, `az://…`, `memory://`);
    /// default `file://<data_dir>/tiles`.
    #[serde(default)]
    pub store: Option<String>,
    /// Backend options for the store, e.g. `aws_endpoint`, `aws_allow_http`.
    #[serde(default)]
    pub store_options: Vec<(String, String)>,
    /// Bootstrap the Raft groups from this node (exactly one node of a new cluster). Default: true for
    /// the node with the smallest id among `peers` (or when there are no peers).
    #[serde(default)]
    pub initialize: Option<bool>,
    /// Sequencer nodes of the cluster (including this one).
    #[serde(default)]
    pub peers: Vec<Peer>,
    /// The log's shards.
    #[serde(default)]
    pub shards: Vec<ShardFile>,
    /// Submitters and their tokens; none means anonymous writes, allowed only on loopback.
    #[serde(default)]
    pub tenants: Vec<TenantFile>,
    /// Token for `cairn shard freeze|add` and `cairn cluster`.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// Where this sequencer finds the signing keys of shards added at runtime (`cairn shard add`
    /// without `--config`): `shard-<id>.key` files (`cairn keygen`, mode 0600), relative to
    /// `data_dir` unless absolute; default `keys`. In Kubernetes, a mounted Secret.
    #[serde(default)]
    pub key_dir: Option<PathBuf>,
    /// Temporal shards (`[schedule]`): a new shard every period, created ahead of its window and
    /// frozen at its end.
    #[serde(default)]
    pub schedule: Option<crate::schedule::ScheduleFile>,
    /// Batching and publishing.
    #[serde(default)]
    pub tuning: Tuning,
    /// Sigstore: trust documents, accepted algorithms, the timestamp authority.
    #[serde(default)]
    pub sigstore: SigstoreFile,
    /// Cosignatures the shards' checkpoints collect from witnesses before they are published.
    #[serde(default)]
    pub witnessing: WitnessingFile,
    /// The witness role: the logs this process witnesses and its key.
    #[serde(default)]
    pub witness: Option<WitnessFile>,
    /// The search role: which log it indexes.
    #[serde(default)]
    pub search: SearchFile,
    /// TLS on every listener and between nodes (`[tls]`); plain TCP without it.
    #[serde(default)]
    pub tls: Option<TlsFile>,
    /// OpenTelemetry export (`[telemetry]`); the standard `OTEL_*` variables also turn it on.
    #[serde(default)]
    pub telemetry: TelemetryFile,
}

/// The `[telemetry]` table: OTLP export of traces and metrics over gRPC. Off unless `otlp_endpoint`
/// or `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and never with
/// `OTEL_SDK_DISABLED=true`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryFile {
    /// The collector's OTLP/gRPC endpoint, e.g. `http://otel-collector:4317` (overrides
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub otlp_endpoint: Option<String>,
    /// `service.name` of this process's telemetry (overrides `OTEL_SERVICE_NAME`; default `cairn`).
    pub service_name: Option<String>,
    /// Milliseconds between metric exports (overrides `OTEL_METRIC_EXPORT_INTERVAL`; default 60,000).
    pub metrics_interval_ms: Option<u64>,
}

/// The `[tls]` table: this node's certificate and key, and the cluster CA. The gRPC API and HTTP
/// listeners serve the certificate; the Raft listener requires peers to present a certificate issued
/// by the CA, and this node presents its own to them. The files are reloaded when they change.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// Certificate chain (PEM, leaf first); its names must cover the addresses peers and clients use.
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// The cluster CA (PEM) that issued every node's certificate.
    pub ca: PathBuf,
}

/// The `[search]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchFile {
    /// The read path indexed (every shard of its `shards.json`). Default: this process's own HTTP
    /// listener, which then needs the tiles role.
    pub log_url: Option<String>,
    /// Milliseconds between rounds of following the log.
    pub interval_ms: u64,
}

impl Default for SearchFile {
    fn default() -> Self {
        Self {
            log_url: None,
            interval_ms: 1000,
        }
    }
}

/// The `[witnessing]` table: how checkpoints collect cosignatures (c2sp.org/tlog-witness).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WitnessingFile {
    /// A c2sp.org/tlog-policy file (relative to `data_dir` unless absolute) for every shard without
    /// its own `witness_policy`. Its witnesses with a URL are asked; its quorum must hold.
    pub policy: Option<PathBuf>,
    /// How long one collection may take, in milliseconds.
    pub timeout_ms: u64,
    /// Publish with the cosignatures obtained when the quorum cannot be had in time. Default false:
    /// nothing is published without the quorum.
    pub fail_open: bool,
    /// Wait for every witness (until the timeout) rather than returning once the quorum holds.
    pub greedy: bool,
}

impl Default for WitnessingFile {
    fn default() -> Self {
        Self {
            policy: None,
            timeout_ms: 5_000,
            fail_open: false,
            greedy: false,
        }
    }
}

/// The `[witness]` table, for the `witness` role.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessFile {
    /// The witness's name (its key name), e.g. `witness.example.org/w1`.
    pub name: String,
    /// Its key file (signed-note private key form), relative to `data_dir` unless absolute; created
    /// (mode 0600) on first start. Default `keys/witness.key`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Verifier keys of the logs it witnesses (`<origin>+<key id>+<key>`).
    pub logs: Vec<String>,
    /// Requests per second per log (0: unlimited).
    #[serde(default = "witness_rate")]
    pub rate_per_log: u32,
    /// Burst per log above the rate.
    #[serde(default = "witness_burst")]
    pub burst_per_log: u32,
}

fn witness_rate() -> u32 {
    20
}
fn witness_burst() -> u32 {
    100
}

/// The `[sigstore]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigstoreFile {
    /// Public URL of this log's HTTP read path (`https://log.example.org`), where clients find the
    /// trust documents and the timestamp authority; default `http://<http_addr>`.
    pub public_url: Option<String>,
    /// A trusted-root-shaped JSON file whose `certificateAuthorities` and `ctlogs` are added to the
    /// served trusted root (the Fulcio instances and CT logs that clients of this log trust).
    pub extra_trusted_root: Option<PathBuf>,
    /// Fulcio URLs for the signing config's `caUrls`.
    pub ca_urls: Vec<String>,
    /// OIDC provider URLs for the signing config's `oidcUrls`.
    pub oidc_urls: Vec<String>,
    /// Accepted client key details (`PKIX_ECDSA_P256_SHA_256`, ...); default rekor-tiles' set.
    pub key_details: Option<Vec<String>>,
    /// Operator name in the signing config.
    pub operator: String,
    /// Directory of the timestamp authority's key and chain (generated on first start), relative to
    /// `data_dir` unless absolute.
    pub tsa_dir: PathBuf,
    /// The policy OID of the timestamp authority's timestamps (`TSTInfo.policy`), under an arc the
    /// operator controls; default a documentation placeholder (`cairn_tsa::DEFAULT_POLICY`).
    pub tsa_policy: Option<String>,
}

impl SigstoreFile {
    /// `tsa_policy` as an object identifier; an error says what a good one looks like.
    pub fn tsa_policy(&self) -> anyhow::Result<Option<cairn_tsa::ObjectIdentifier>> {
        let Some(text) = &self.tsa_policy else {
            return Ok(None);
        };
        text.parse().map(Some).map_err(|e| {
            anyhow::anyhow!(
                "[sigstore] tsa_policy = {text:?} is not an object identifier ({e}): give dotted \
                 decimal arcs under an arc you control, like \"1.3.6.1.4.1.<enterprise>.3161.1\""
            )
        })
    }
}

impl Default for SigstoreFile {
    fn default() -> Self {
        Self {
            public_url: None,
            extra_trusted_root: None,
            ca_urls: Vec::new(),
            oidc_urls: Vec::new(),
            key_details: None,
            operator: "cairn".into(),
            tsa_dir: PathBuf::from("tsa"),
            tsa_policy: None,
        }
    }
}

/// A role of the `cairn` process.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A Raft member hosting every shard: orders, stores and publishes.
    Sequencer,
    /// The gRPC submission API.
    Log,
    /// The HTTP read path.
    Tiles,
    /// The RFC 3161 timestamp authority (`POST /api/v1/timestamp` on the HTTP listener).
    Tsa,
    /// A c2sp.org/tlog-witness witness of the logs in `[witness]` (`/witness/add-checkpoint` on the
    /// HTTP listener).
    Witness,
    /// The search index of a log's read path (`[search]`), answering `GET /api/v1/search` on the HTTP
    /// listener with inclusion proofs.
    Search,
}

/// A sequencer node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Node id.
    pub id: u64,
    /// Raft address (`host:port`).
    pub raft: String,
    /// gRPC API URL (`http://host:port`), where writes for shards it leads are forwarded.
    pub grpc: String,
}

/// A shard in the configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardFile {
    /// Shard id.
    pub id: u32,
    /// Checkpoint origin, e.g. `log.example.org/2026h2-a`.
    pub origin: String,
    /// Signer key file (`cairn keygen`), relative to `data_dir` unless absolute. Sequencers need it;
    /// it is created (mode 0600) on first start when missing.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Verifier key; derived from the key file when that is readable.
    #[serde(default)]
    pub vkey: Option<String>,
    /// What it logs: `opaque` (any bytes, `cairn.v1.Log`) or `sigstore` (hashedrekord entries through
    /// the Rekor v2 API; its origin must be the host of its `base_url`).
    #[serde(default)]
    pub kind: ShardKind,
    /// A Sigstore shard's base URL (clients append `/api/v2/log/entries`); default
    /// `http://<origin>:<http port>/logs/<id>`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Since when the shard's key signs (Unix seconds), for the trust documents; default the key
    /// file's modification time.
    #[serde(default)]
    pub valid_from: Option<u64>,
    /// This shard's witness policy (c2sp.org/tlog-policy), instead of `[witnessing] policy`.
    #[serde(default)]
    pub witness_policy: Option<PathBuf>,
}

/// A tenant in the configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantFile {
    /// Name.
    pub name: String,
    /// Bearer token.
    pub token: String,
    /// Sustained entries per second.
    #[serde(default)]
    pub rate: Option<u32>,
    /// Burst size in entries.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// Batching and publishing knobs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tuning {
    /// Entries per Raft proposal.
    pub batch_max_entries: usize,
    /// How long a proposal waits to fill, in milliseconds.
    pub batch_max_delay_ms: u64,
    /// How often the leader publishes tiles and a checkpoint, in milliseconds.
    pub publish_interval_ms: u64,
    /// How long a `PUBLISHED` write waits, in seconds.
    pub publish_timeout_s: u64,
    /// Raft heartbeat, in milliseconds (elections time out after 4 to 8 heartbeats).
    pub heartbeat_ms: u64,
    /// Bytes of tiles the read path keeps in memory.
    pub tile_cache_bytes: u64,
    /// How often each sequencer checks that the shard leaders are spread over the nodes (each shard
    /// prefers one voter, in turn), moving a leadership where they are not, in milliseconds; 0 turns
    /// leader placement off.
    pub balance_leaders_ms: u64,
    /// For how long after the active shards change a write looks for its entries in the shards they
    /// routed to before (so a retry is not logged twice), in seconds; a frozen shard can be archived
    /// only this long after its final checkpoint. Longer than writers keep retrying.
    pub reroute_grace_s: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        let batch = cairn_sequencer::BatchConfig::default();
        Self {
            batch_max_entries: batch.max_entries,
            batch_max_delay_ms: batch.max_delay.as_millis() as u64,
            publish_interval_ms: 200,
            publish_timeout_s: 30,
            heartbeat_ms: 100,
            tile_cache_bytes: 256 << 20,
            balance_leaders_ms: 2000,
            reroute_grace_s: 90,
        }
    }
}

fn one() -> u64 {
    1
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./cairn-data")
}
fn all_roles() -> Vec<Role> {
    vec![Role::Sequencer, Role::Log, Role::Tiles]
}
fn default_grpc() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7400))
}
fn default_http() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7480))
}
fn default_raft() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7401))
}

/// Origin of the embedded default's opaque shard.
pub const DEFAULT_ORIGIN: &str = "localhost/cairn/1";
/// Origin of the embedded default's Sigstore shard: the host of its base URL, as Sigstore clients
/// check.
pub const DEFAULT_SIGSTORE_ORIGIN: &str = "localhost";

impl ServeConfig {
    /// The embedded default: one node; shard 1 opaque, shard 2 Sigstore; the TSA, search and the
    /// explorer; everything under `./cairn-data`, loopback only.
    pub fn embedded() -> Self {
        Self {
            node_id: 1,
            data_dir: default_data_dir(),
            roles: vec![Role::Sequencer, Role::Log, Role::Tiles, Role::Tsa, Role::Search],
            grpc_addr: default_grpc(),
            http_addr: default_http(),
            raft_addr: default_raft(),
            store: None,
            store_options: Vec::new(),
            initialize: Some(true),
            peers: Vec::new(),
            shards: vec![
                ShardFile {
                    id: 1,
                    origin: DEFAULT_ORIGIN.into(),
                    key_file: Some(PathBuf::from("keys/shard-1.key")),
                    vkey: None,
                    kind: ShardKind::Opaque,
                    base_url: None,
                    valid_from: None,
                    witness_policy: None,
                },
                ShardFile {
                    id: 2,
                    origin: DEFAULT_SIGSTORE_ORIGIN.into(),
                    key_file: Some(PathBuf::from("keys/shard-2.key")),
                    vkey: None,
                    kind: ShardKind::Sigstore,
                    base_url: None,
                    valid_from: None,
                    witness_policy: None,
                },
            ],
            tenants: Vec::new(),
            admin_token: None,
            key_dir: None,
            schedule: None,
            tuning: Tuning::default(),
            sigstore: SigstoreFile::default(),
            witnessing: WitnessingFile::default(),
            witness: None,
            search: SearchFile::default(),
            tls: None,
            telemetry: TelemetryFile::default(),
        }
    }

    /// Reads a configuration file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::load_str(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses a configuration.
    pub fn load_str(text: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text)?;
        config.sigstore.tsa_policy()?;
        let serves_shards = config
            .roles
            .iter()
            .any(|r| matches!(r, Role::Sequencer | Role::Log | Role::Tiles));
        if config.shards.is_empty() && serves_shards && config.schedule.is_none() {
            bail!(
                "at least one [[shards]] (or a [schedule]) is required: the sequencer, log and tiles roles serve them"
            );
        }
        if config.shards.iter().any(|s| s.id == cairn_sequencer::CONTROL) {
            bail!(
                "shard id {} is the control group's (the replicated shard map); give the shard another id",
                cairn_sequencer::CONTROL
            );
        }
        let mut ids: Vec<u32> = config.shards.iter().map(|s| s.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            bail!("shard ids must be unique");
        }
        Ok(config)
    }

    /// Whether this process plays `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The store URL, defaulting to the data directory.
    pub fn store_url(&self) -> anyhow::Result<String> {
        if let Some(s) = &self.store {
            return Ok(s.clone());
        }
        let dir = self.data_dir.join("tiles");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let abs = std::fs::canonicalize(&dir)?;
        Ok(format!("file://{}", abs.display()))
    }

    /// Whether this node bootstraps the cluster.
    pub fn initializes(&self) -> bool {
        self.initialize.unwrap_or_else(|| {
            self.peers
                .iter()
                .map(|p| p.id)
                .min()
                .is_none_or(|min| min == self.node_id)
        })
    }

    /// A path from the configuration: relative ones are under `data_dir`.
    pub fn data_path(&self, rel: &Path) -> PathBuf {
        if rel.is_absolute() {
            rel.to_path_buf()
        } else {
            self.data_dir.join(rel)
        }
    }

    /// Where a shard's key file is.
    pub fn key_path(&self, shard: &ShardFile) -> PathBuf {
        let rel = shard
            .key_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("keys/shard-{}.key", shard.id)));
        if rel.is_absolute() {
            rel
        } else {
            self.data_dir.join(rel)
        }
    }
}

/// Writes a new signer key file readable by its owner only. Fails if the file exists.
pub fn write_key_file(path: &Path, signer: &Signer) -> anyhow::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(path)
        .with_context(|| format!("creating key file {}", path.display()))?;
    writeln!(f, "{}", signer.to_skey())?;
    f.sync_all()?;
    Ok(())
}

/// A new random signer for `origin`.
pub fn generate_signer(origin: &str) -> anyhow::Result<Signer> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(Signer::from_seed(origin, seed)?)
}

/// Refuses a secret file (`what`) that others than its owner can read.
pub fn check_private(path: &Path, what: &str) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("reading {what} {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "{what} {} is readable by others (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
    }
    Ok(())
}

/// Reads a signer key file, refusing one that others can read.
pub fn read_key_file(path: &Path) -> anyhow::Result<Signer> {
    check_private(path, "key file")?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading key file {}", path.display()))?;
    Signer::parse(text.trim()).with_context(|| format!("parsing key file {}", path.display()))
}

/// The signing keys of shards added at runtime, as files `shard-<id>.key` in a directory.
#[derive(Debug)]
pub struct KeyDir(pub PathBuf);

impl cairn_sequencer::KeyProvider for KeyDir {
    fn signer(&self, shard: &cairn_store::Shard) -> Result<Option<Signer>, String> {
        let path = self.0.join(format!("shard-{}.key", shard.id));
        if !path.exists() {
            return Ok(None);
        }
        read_key_file(&path).map(Some).map_err(|e| format!("{e:#}"))
    }
}

#[cfg(test)]
mod tests {
    use super::SigstoreFile;

    #[test]
    fn tsa_policy_is_an_object_identifier_or_a_clear_error() {
        let file = |text: &str| toml::from_str::<SigstoreFile>(text).map_err(|e| e.to_string());
        let none = file("").and_then(|f| f.tsa_policy().map_err(|e| e.to_string()));
        assert!(matches!(none, Ok(None)), "{none:?}");
        let set = file("tsa_policy = \"1.3.6.1.4.1.57264.3161.7\"")
            .and_then(|f| f.tsa_policy().map_err(|e| e.to_string()));
        assert_eq!(
            set.ok().flatten().map(|o| o.to_string()).as_deref(),
            Some("1.3.6.1.4.1.57264.3161.7")
        );
        let bad = file("tsa_policy = \"our-policy\"").and_then(|f| f.tsa_policy().map_err(|e| e.to_string()));
        assert!(
            bad.as_ref()
                .is_err_and(|e| e.contains("tsa_policy") && e.contains("dotted decimal")),
            "{bad:?}"
        );
        // Refused when the configuration is read, whatever roles it names.
        let loaded =
            super::ServeConfig::load_str("roles = [\"witness\"]\n[sigstore]\ntsa_policy = \"our-policy\"\n");
        assert!(
            loaded
                .as_ref()
                .is_err_and(|e| e.to_string().contains("tsa_policy")),
            "{:?}",
            loaded.map(|_| ())
        );
    }
}
