//! `cairn`: one binary for every role of a Cairn log, and its command-line client.
//!
//! - `cairn serve` runs a log (with no flags, the embedded default: one node, one shard, `./cairn-data`);
//! - `cairn submit` logs entries, `cairn verify` checks a tlog-proof offline;
//! - `cairn keygen` makes a checkpoint signing key, `cairn shard` lists and freezes shards.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use cairn_cli::commands;
use cairn_cli::config::{Role, ServeConfig};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: a sharded, tile-based transparency log"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a log. With no flags: the embedded default (one node, one shard, ./cairn-data, loopback).
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
        /// Roles to run (comma-separated): sequencer, log, tiles, tsa.
        #[arg(long, value_delimiter = ',')]
        roles: Option<Vec<Role>>,
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
    },
    /// Shard administration.
    Shard {
        #[command(subcommand)]
        command: ShardCommand,
    },
}

#[derive(Subcommand)]
enum ShardCommand {
    /// List shards with their verifier keys and states.
    List {
        /// gRPC URL of a log server.
        #[arg(long, default_value = "http://127.0.0.1:7400")]
        server: String,
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
    },
    /// Add a shard to a configuration file (generating its key); nodes pick it up when restarted.
    Add {
        /// Configuration file to extend.
        #[arg(long)]
        config: PathBuf,
        /// New shard id.
        #[arg(long)]
        id: u32,
        /// Its origin.
        #[arg(long)]
        origin: String,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
    match cli.command {
        Command::Serve {
            config,
            data_dir,
            grpc_addr,
            http_addr,
            raft_addr,
            roles,
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
            cairn_cli::run(c, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit(args) => commands::submit(args).await,
        Command::Verify {
            vkey,
            policy,
            proof,
            entry,
        } => commands::verify(vkey.as_deref(), policy.as_deref(), &proof, &entry),
        Command::Keygen { origin, out } => commands::keygen(&origin, &out),
        Command::Trust { url, out } => commands::trust(&url, &out).await,
        Command::Shard { command } => match command {
            ShardCommand::List { server } => commands::shard_list(&server).await,
            ShardCommand::Freeze { server, token, id } => commands::shard_freeze(&server, token, id).await,
            ShardCommand::Add { config, id, origin } => commands::shard_add(&config, id, &origin),
        },
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
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
