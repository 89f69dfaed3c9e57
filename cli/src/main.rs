//! `cairn`: one binary for every role of a Cairn log, and its command-line client.
//!
//! - `cairn serve` runs a log (with no flags, the embedded default: one node, an opaque and a Sigstore
//!   shard, the TSA, search and the explorer, `./cairn-data`);
//! - `cairn submit` logs entries, `cairn verify` checks a tlog-proof offline;
//! - `cairn keygen` makes a checkpoint signing key, `cairn shard` lists and freezes shards.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use cairn_cli::config::{Role, ServeConfig};
use cairn_cli::{commands, telemetry};
use clap::{Parser, Subcommand};

/// mimalloc: the servers allocate per request and per entry. Under one-entry `POST /add` load, glibc's
/// malloc and free took about 20% of `cairn serve`'s CPU and mimalloc's about 7% (`perf`); batched
/// writes (`cairn-bench write --start embedded`) went from 45,771 and 37,732 to 54,053 and 45,831
/// entries/s (two 30 s runs each, 2 cores; BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: a sharded, tile-based transparency log"
)]
struct Cli {
    /// Log format on stderr: `text` for people, `json` (one object per line) for log collectors.
    /// Levels come from `CAIRN_LOG` or `RUST_LOG` (e.g. `info,openraft=warn`).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "CAIRN_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a log. With no flags: the embedded default (one node, an opaque and a Sigstore shard, the
    /// TSA, search, the explorer at /; ./cairn-data, loopback).
    Serve {
        /// TOML configuration (clusters, tokens, object store); flags below override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (RocksDB, keys, tiles by default).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// gRPC API address.
        #[arg(long)]
        grpc_addr: Option<SocketAddr>,
        /// HTTP read path address.
        #[arg(long)]
        http_addr: Option<SocketAddr>,
        /// Raft address.
        #[arg(long)]
        raft_addr: Option<SocketAddr>,
        /// Roles to run (comma-separated): sequencer, log, tiles, tsa, witness.
        #[arg(long, value_delimiter = ',')]
        roles: Option<Vec<Role>>,
        /// This node's id, overriding the config's `node_id`.
        #[arg(long, env = "CAIRN_NODE_ID")]
        node_id: Option<u64>,
        /// Take the node id from the host name's trailing ordinal plus one (`cairn-sequencer-0` is
        /// node 1), as a Kubernetes StatefulSet names its pods.
        #[arg(long, conflicts_with = "node_id")]
        node_id_from_hostname: bool,
    },
    /// Log entries: each FILE is one entry; with --lines each input line is one.
    Submit(commands::SubmitArgs),
    /// Verify a c2sp tlog-proof for an entry, offline. Exit status 0 only if it is valid.
    Verify {
        /// The log's verifier key, or a file holding it (optional with a --policy that lists the log).
        #[arg(long)]
        vkey: Option<String>,
        /// A witness policy (c2sp.org/tlog-policy): the proof's checkpoint must carry its quorum of
        /// valid witness cosignatures.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// The tlog-proof file.
        #[arg(long)]
        proof: PathBuf,
        /// The entry's exact bytes.
        entry: PathBuf,
    },
    /// Verify a Sigstore bundle for an artifact, offline: who signed it (identity and OIDC issuer, or
    /// a key), when (RFC 3161 timestamps), and that the log holds it (inclusion in a signed
    /// checkpoint). Exit status: 0 valid, 1 invalid, 2 usage or I/O error.
    VerifyBundle(cairn_cli::consumer::VerifyBundleArgs),
    /// Follow logs: trust each checkpoint only if it is consistent with the last, read every entry,
    /// alert on entries matching a watch list (rekor-monitor's format) and on any misbehaviour.
    Monitor(cairn_cli::consumer::MonitorArgs),
    /// Search a log (a search-role server) by artifact digest, signer identity or fingerprint; every
    /// result is checked against its checkpoint before it is printed.
    Search(cairn_cli::consumer::SearchArgs),
    /// Generate a checkpoint signing key: writes the signer key file (mode 0600), prints the verifier key.
    Keygen {
        /// Checkpoint origin (and key name), e.g. log.example.org/2026h2-a.
        #[arg(long)]
        origin: String,
        /// Signer key file to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Fetch a log's Sigstore trust documents (trusted_root.json, signing_config.json,
    /// client_trust_config.json) from its read path into a directory, for offline verification.
    Trust {
        /// HTTP URL of the log's read path.
        #[arg(long, default_value = "http://127.0.0.1:7480")]
        url: String,
        /// Directory to write them to.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        #[command(flatten)]
        tls: commands::TlsArgs,
    },
    /// Shard administration.
    Shard {
        #[command(subcommand)]
        command: ShardCommand,
    },
    /// Cluster administration: the Raft groups and their leaders (admin token).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Every shard's Raft group as a sequencer node sees it: leader, term, voters, learners, log
    /// positions (and, on the groups it leads, how far each member is behind).
    Status {
        #[command(flatten)]
        admin: commands::AdminArgs,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Move a shard's leadership to another voter; returns once it leads. Writes to the shard pause
    /// for a few Raft round trips and are retried by clients. The request reaches the shard's leader.
    TransferLeader {
        #[command(flatten)]
        admin: commands::AdminArgs,
        /// Shard id.
        #[arg(long)]
        shard: u32,
        /// The node to lead it.
        #[arg(long)]
        to: u64,
    },
    /// Make a running sequencer node a voter of every shard's Raft group: each group's leader adds
    /// it as a learner, waits until it has caught up, then promotes it (joint consensus). Start the
    /// node first with the shards and their keys configured and `initialize = false`. Safe to repeat.
    AddNode {
        #[command(flatten)]
        admin: commands::AdminArgs,
        /// The new node's id.
        #[arg(long)]
        id: u64,
        /// Its Raft address (`host:port`), as the other sequencers reach it.
        #[arg(long)]
        raft: String,
    },
    /// The cluster settings in effect on a sequencer node: each recorded by the control group (the
    /// same on every node) or that node's configured value, with what it does.
    Settings {
        #[command(flatten)]
        admin: commands::AdminArgs,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Record a cluster setting for every sequencer through the control group, no restart: it
    /// applies on each node within a second. See `cairn cluster settings` for the keys.
    Set {
        #[command(flatten)]
        admin: commands::AdminArgs,
        /// The setting.
        key: String,
        /// Its value.
        value: String,
    },
    /// Remove a recorded cluster setting: each node runs with its configured value again.
    Unset {
        #[command(flatten)]
        admin: commands::AdminArgs,
        /// The setting.
        key: String,
    },
    /// Remove a sequencer node from every shard's Raft group (a group it leads hands its leadership
    /// to another voter first). Refused, with nothing changed, when a majority of the remaining
    /// voters does not answer. Works for a node that is down or whose disk is lost; ask another
    /// node. Safe to repeat.
    RemoveNode {
        #[command(flatten)]
        admin: commands::AdminArgs,
        /// The node's id.
        #[arg(long)]
        id: u64,
    },
}

#[derive(Subcommand)]
enum ShardCommand {
    /// List shards with their verifier keys and states.
    List {
        /// gRPC URL of a log server.
        #[arg(long, default_value = "http://127.0.0.1:7400")]
        server: String,
        #[command(flatten)]
        tls: commands::TlsArgs,
    },
    /// Freeze a shard: no more entries, a final checkpoint (admin token).
    Freeze {
        /// gRPC URL of a log server.
        #[arg(long, default_value = "http://127.0.0.1:7400")]
        server: String,
        /// Admin token.
        #[arg(long, env = "CAIRN_ADMIN_TOKEN")]
        token: Option<String>,
        /// Shard id.
        id: u32,
        #[command(flatten)]
        tls: commands::TlsArgs,
    },
    /// Archive a frozen shard, configured or added at runtime (admin token): every sequencer stops its Raft group and
    /// deletes its replica; the read path serves it from object storage alone.
    Archive {
        /// Shard id.
        id: u32,
        #[command(flatten)]
        admin: commands::AdminArgs,
    },
    /// Add a shard. Through the running cluster (admin token): it is planned at once and active once
    /// a majority of the sequencers hold its key in their key directory (`keys/shard-<id>.key` under
    /// the data directory) and its window has started; no restart. With `--config`: appends it to a
    /// configuration file (generating its key), and nodes pick it up when restarted.
    Add {
        /// Configuration file to extend instead (the offline way).
        #[arg(long)]
        config: Option<PathBuf>,
        /// New shard id (never reused).
        #[arg(long)]
        id: u32,
        /// Its origin.
        #[arg(long)]
        origin: String,
        /// Its verifier key (`cairn keygen` prints it).
        #[arg(long, conflicts_with_all = ["config", "key_file"])]
        vkey: Option<String>,
        /// Or the key file to read the verifier key from.
        #[arg(long, conflicts_with = "config")]
        key_file: Option<PathBuf>,
        /// Start of its window (Unix seconds): it takes entries from then on.
        #[arg(long)]
        valid_from: Option<u64>,
        /// End of its window (Unix seconds): its leader freezes it then.
        #[arg(long)]
        valid_until: Option<u64>,
        /// What it logs: `opaque` (any bytes, `cairn.v1.Log`) or `sigstore` (hashedrekord entries
        /// through the Rekor v2 API; needs `--base-url`).
        #[arg(long, default_value = "opaque", value_parser = ["opaque", "sigstore"], conflicts_with = "config")]
        kind: String,
        /// A Sigstore shard's base URL, whose host is its origin, e.g. `https://log2027h1.example.org`:
        /// clients sign to `<base-url>/api/v2/log/entries` and read it there.
        #[arg(long, conflicts_with = "config")]
        base_url: Option<String>,
        #[command(flatten)]
        admin: commands::AdminArgs,
    },
}

/// The host name: `$HOSTNAME`, else `/etc/hostname`.
fn hostname() -> anyhow::Result<String> {
    if let Ok(h) = std::env::var("HOSTNAME")
        && !h.is_empty()
    {
        return Ok(h);
    }
    Ok(std::fs::read_to_string("/etc/hostname")
        .map_err(|e| anyhow::anyhow!("--node-id-from-hostname: no HOSTNAME and /etc/hostname: {e}"))?
        .trim()
        .to_owned())
}

/// Node id from a StatefulSet pod name: its trailing `-<ordinal>`, plus one.
fn node_id_from(hostname: &str) -> anyhow::Result<u64> {
    hostname
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse::<u64>().ok())
        .map(|n| n + 1)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--node-id-from-hostname: host name {hostname:?} does not end in -<ordinal> (as cairn-sequencer-0)"
            )
        })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let json = matches!(cli.log_format, LogFormat::Json);
    if !matches!(cli.command, Command::Serve { .. }) {
        telemetry::init(json, None, None)?;
    }
    match cli.command {
        Command::Serve {
            config,
            data_dir,
            grpc_addr,
            http_addr,
            raft_addr,
            roles,
            node_id,
            node_id_from_hostname,
        } => {
            let mut c = match config {
                Some(path) => ServeConfig::load(&path)?,
                None => ServeConfig::embedded(),
            };
            if let Some(d) = data_dir {
                c.data_dir = d;
            }
            if let Some(a) = grpc_addr {
                c.grpc_addr = a;
            }
            if let Some(a) = http_addr {
                c.http_addr = a;
            }
            if let Some(a) = raft_addr {
                c.raft_addr = a;
            }
            if let Some(r) = roles {
                c.roles = r;
            }
            if let Some(id) = node_id {
                c.node_id = id;
            }
            if node_id_from_hostname {
                c.node_id = node_id_from(&hostname()?)?;
            }
            // After the configuration, whose `[telemetry]` may turn on export.
            let telemetry = telemetry::init(json, Some(&c.telemetry), Some(c.node_id))?;
            let served = cairn_cli::run(c, shutdown_signal()).await;
            telemetry.shutdown();
            match served {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) if e.is::<cairn_cli::serve::StorageFailed>() => {
                    eprintln!("error: {e:#}");
                    Ok(ExitCode::from(cairn_cli::serve::StorageFailed::EXIT_CODE))
                }
                Err(e) => Err(e),
            }
        }
        Command::Submit(args) => commands::submit(args).await,
        Command::Verify {
            vkey,
            policy,
            proof,
            entry,
        } => commands::verify(vkey.as_deref(), policy.as_deref(), &proof, &entry),
        Command::VerifyBundle(args) => Ok(cairn_cli::consumer::verify_bundle(args).await),
        Command::Monitor(args) => cairn_cli::consumer::monitor(args).await,
        Command::Search(args) => cairn_cli::consumer::search(args).await,
        Command::Keygen { origin, out } => commands::keygen(&origin, &out),
        Command::Trust { url, out, tls } => commands::trust(&url, &out, &tls).await,
        Command::Shard { command } => match command {
            ShardCommand::List { server, tls } => commands::shard_list(&server, &tls).await,
            ShardCommand::Freeze {
                server,
                token,
                id,
                tls,
            } => commands::shard_freeze(&server, token, id, &tls).await,
            ShardCommand::Archive { id, admin } => commands::shard_archive(&admin, id).await,
            ShardCommand::Add {
                config: Some(config),
                id,
                origin,
                ..
            } => commands::shard_add(&config, id, &origin),
            ShardCommand::Add {
                config: None,
                id,
                origin,
                vkey,
                key_file,
                valid_from,
                valid_until,
                kind,
                base_url,
                admin,
            } => {
                let vkey = match (vkey, key_file) {
                    (Some(v), _) => v,
                    (None, Some(path)) => cairn_cli::config::read_key_file(&path)?.verifier().to_string(),
                    (None, None) => anyhow::bail!(
                        "give --vkey or --key-file (or --config to extend a configuration file)"
                    ),
                };
                commands::shard_add_live(
                    &admin,
                    cairn_proto::v1::AddShardRequest {
                        shard_id: id,
                        origin,
                        vkey,
                        kind,
                        base_url: base_url.unwrap_or_default(),
                        valid_from: valid_from.unwrap_or(0),
                        valid_until: valid_until.unwrap_or(0),
                    },
                )
                .await
            }
        },
        Command::Cluster { command } => match command {
            ClusterCommand::Status { admin, json } => commands::cluster_status(&admin, json).await,
            ClusterCommand::TransferLeader { admin, shard, to } => {
                commands::cluster_transfer_leader(&admin, shard, to).await
            }
            ClusterCommand::AddNode { admin, id, raft } => {
                commands::cluster_add_node(&admin, id, &raft).await
            }
            ClusterCommand::RemoveNode { admin, id } => commands::cluster_remove_node(&admin, id).await,
            ClusterCommand::Settings { admin, json } => commands::cluster_settings(&admin, json).await,
            ClusterCommand::Set { admin, key, value } => {
                commands::cluster_set(&admin, &key, Some(&value)).await
            }
            ClusterCommand::Unset { admin, key } => commands::cluster_set(&admin, &key, None).await,
        },
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::node_id_from;

    #[test]
    fn node_id_from_statefulset_names() {
        assert_eq!(node_id_from("cairn-sequencer-0").ok(), Some(1));
        assert_eq!(node_id_from("cairn-sequencer-12").ok(), Some(13));
        assert!(node_id_from("cairn-sequencer").is_err());
        assert!(node_id_from("sequencer-x").is_err());
    }
}
