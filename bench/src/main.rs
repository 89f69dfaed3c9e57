//! `cairn-bench`: Cairn's load generator.
//!
//! - `write`: gRPC submission load (concurrency, batch, entry size, rate, ack level, repeated entries),
//!   with latency histograms, throughput over time and a JSON result as the last stdout line;
//! - `read`: HTTP read-path load (hot tile, every tile, bundles, inclusion proofs);
//! - `consumer`: monitor catch-up, search indexing and search latency over a local read path;
//! - `rekor`: Rekor v2 `CreateEntry` calls over gRPC, one pre-signed hashedrekord entry each, answered
//!   at publication with an inclusion proof;
//! - `ceiling`: the same write load against a trivial in-process tonic server that answers without
//!   logging anything: what the RPC stack alone carries on this machine.
//!
//! `--start embedded` or `--start cluster3` runs the servers under test itself (the `cairn` binary next
//! to this one, or `--cairn-bin`).

mod ceiling;
mod consumer;
mod read;
mod rekor;
mod spawn;
mod write;

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "cairn-bench", version, about = "Load generator for Cairn")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Write load shape, shared by `write` and `ceiling`.
#[derive(clap::Args, Clone, Debug)]
pub struct Load {
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Entries per request.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Bytes per entry.
    #[arg(long, default_value_t = 256)]
    pub entry_size: usize,
    /// Target entries per second over all workers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Fraction of entries (0 to 1) that repeat an earlier entry.
    #[arg(long, default_value_t = 0.0)]
    pub repeat: f64,
    /// Print the JSON result as the last line.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Write load over gRPC.
    Write {
        /// gRPC URL of a log server (ignored with --start).
        #[arg(long, default_value = "http://127.0.0.1:7400")]
        server: String,
        /// Acknowledgment level to wait for.
        #[arg(long, value_enum, default_value_t = WaitArg::Sequenced)]
        wait: WaitArg,
        /// Bearer token.
        #[arg(long)]
        token: Option<String>,
        /// Start the servers under test: the embedded default or a 3-node loopback cluster.
        #[arg(long, value_enum)]
        start: Option<spawn::Topology>,
        /// The `cairn` binary for --start (default: next to this one).
        #[arg(long)]
        cairn_bin: Option<std::path::PathBuf>,
        #[command(flatten)]
        load: Load,
    },
    /// Rekor v2 submissions over gRPC: pre-signed hashedrekord entries, one per call.
    Rekor {
        /// gRPC URL of a log server with a Sigstore shard (ignored with --start).
        #[arg(long, default_value = "http://127.0.0.1:7400")]
        server: String,
        /// Start the servers under test (the embedded default serves a Sigstore shard).
        #[arg(long, value_enum)]
        start: Option<spawn::Topology>,
        /// The `cairn` binary for --start (default: next to this one).
        #[arg(long)]
        cairn_bin: Option<std::path::PathBuf>,
        /// The key type the requests are signed with.
        #[arg(long, value_enum, default_value_t = rekor::KeyKind::P256)]
        key: rekor::KeyKind,
        /// Seconds to run.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Calls in flight at once (each waits for a published checkpoint).
        #[arg(long, default_value_t = 2000)]
        concurrency: usize,
        /// HTTP/2 connections the calls share.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Requests signed before the clock starts; each is sent once, so this bounds the run.
        #[arg(long, default_value_t = 400_000)]
        requests: usize,
        /// Print the JSON result as the last line.
        #[arg(long)]
        json: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// The same write load against a server that does nothing: the transport ceiling.
    Ceiling {
        #[command(flatten)]
        load: Load,
    },
    /// Monitor catch-up and search (indexing rate, latency at a rate) over a local read path.
    Consumer {
        /// Entries in the log read.
        #[arg(long, default_value_t = 200_000)]
        entries: u64,
        /// Search queries per second.
        #[arg(long, default_value_t = 200)]
        rate: u64,
        /// Seconds of search load.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Print the JSON result as the last line.
        #[arg(long)]
        json: bool,
    },
    /// Read load over HTTP.
    Read {
        /// Base URL of the read path.
        #[arg(long, default_value = "http://127.0.0.1:7480")]
        http: String,
        /// What to request.
        #[arg(long, value_enum, default_value_t = read::Kind::TileHot)]
        kind: read::Kind,
        /// Seconds to run.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Print the JSON result as the last line.
        #[arg(long)]
        json: bool,
    },
}

/// Acknowledgment level.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum WaitArg {
    /// Index assigned, durable on a majority.
    Sequenced,
    /// In a published checkpoint, with an inclusion proof.
    Published,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cli.command {
            Command::Write {
                server,
                wait,
                token,
                start,
                cairn_bin,
                load,
            } => {
                let spawned = match start {
                    Some(t) => Some(spawn::start(t, cairn_bin).await?),
                    None => None,
                };
                let server = spawned.as_ref().map_or(server, |s| s.grpc.clone());
                let r = write::run(&server, wait, token, &load).await;
                if let Some(s) = spawned {
                    s.stop();
                }
                r?.print(load.json)
            }
            Command::Rekor {
                server,
                start,
                cairn_bin,
                key,
                duration,
                concurrency,
                connections,
                requests,
                json,
                quiet,
            } => {
                let spawned = match start {
                    Some(spawn::Topology::Embedded) => {
                        Some(spawn::start(spawn::Topology::Embedded, cairn_bin).await?)
                    }
                    Some(_) => anyhow::bail!(
                        "rekor --start takes only `embedded`: the cluster topologies serve no Sigstore shard"
                    ),
                    None => None,
                };
                let server = spawned.as_ref().map_or(server, |s| s.grpc.clone());
                let opts = rekor::Options {
                    server,
                    duration,
                    concurrency,
                    connections,
                    requests,
                    key,
                    quiet,
                };
                let r = rekor::run(&opts).await;
                if let Some(s) = spawned {
                    s.stop();
                }
                r?.print(json)
            }
            Command::Ceiling { load } => {
                let (url, stop) = ceiling::start().await?;
                let r = write::run(&url, WaitArg::Sequenced, None, &load).await;
                let _ = stop.send(());
                r?.print(load.json)
            }
            Command::Consumer {
                entries,
                rate,
                duration,
                json,
            } => consumer::run(entries, rate, Duration::from_secs(duration))
                .await?
                .print(json),
            Command::Read {
                http,
                kind,
                duration,
                concurrency,
                json,
            } => read::run(&http, kind, Duration::from_secs(duration), concurrency)
                .await?
                .print(json),
        }
    })
}
