//! `cairn-chaos`: runs the fault-injection harness against the `cairn` binary and prints what the
//! checker found. Exits non-zero on any violation.

use std::path::PathBuf;
use std::time::Duration;

use cairn_chaos::{Kind, Profile, run, summary};
use clap::Parser;

/// Fault injection over the real `cairn` binary, checked from the published log.
#[derive(Parser)]
struct Args {
    /// Seed of every random choice; printed, so a run can be replayed. Default: from the clock.
    #[arg(long)]
    seed: Option<u64>,
    /// Seconds of fault injection.
    #[arg(long, default_value_t = 300)]
    duration: u64,
    /// Sequencer nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Opaque shards (a Sigstore shard is added).
    #[arg(long, default_value_t = 2)]
    shards: u32,
    /// Opaque writers.
    #[arg(long, default_value_t = 3)]
    writers: usize,
    /// Fault kinds to draw from (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    faults: Vec<Kind>,
    /// Skip the final loss of quorum.
    #[arg(long)]
    no_quorum_loss: bool,
    /// The `cairn` binary. Default: `cairn` beside this program.
    #[arg(long)]
    cairn: Option<PathBuf>,
    /// Where node logs, history.json and report.json go (default: a new temporary directory, kept).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.nodes >= 3,
        "--nodes must be 3 or more (a majority must survive one fault)"
    );
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let bin = match args.cairn {
        Some(b) => b,
        None => std::env::current_exe()?.with_file_name("cairn"),
    };
    let out = match args.out {
        Some(o) => o,
        None => tempfile::Builder::new().prefix("cairn-chaos-").tempdir()?.keep(),
    };
    println!("cairn-chaos seed {seed}, output in {}", out.display());
    let profile = Profile {
        seed,
        duration: Duration::from_secs(args.duration),
        nodes: args.nodes,
        opaque_shards: args.shards,
        writers: args.writers,
        kinds: if args.faults.is_empty() {
            Kind::ALL.to_vec()
        } else {
            args.faults
        },
        quorum_loss: !args.no_quorum_loss,
        bin,
        out,
    };
    let outcome = run(&profile).await?;
    print!("{}", summary(&outcome));
    anyhow::ensure!(
        outcome.violations.is_empty(),
        "{} violations (replay with --seed {seed})",
        outcome.violations.len()
    );
    Ok(())
}
