//! The client-side subcommands: submit, verify, keygen, shard.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cairn_client::{LogClient, Wait, verify_tlog_proof};
use cairn_tlog::{Checkpoint, TlogProof, VerifierKey};
use cairn_witness::Policy;

use crate::config::{ServeConfig, generate_signer, write_key_file};

/// Acknowledgment level.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WaitArg {
    /// Index assigned, durable on a majority.
    Sequenced,
    /// In a published checkpoint, with an inclusion proof.
    Published,
}

/// TLS settings of a client command, for `https://` servers.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// CA certificate(s) (PEM) that `https://` servers' certificates must chain to (default: the
    /// system's roots).
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate chain (PEM) to present to servers that ask for one (with --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The client library's form of these settings.
    pub fn options(&self) -> cairn_client::TlsOptions {
        cairn_client::TlsOptions {
            ca: self.tls_ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
        }
    }

    /// An HTTP client for the read path with these settings.
    pub fn http(&self, timeout: Option<std::time::Duration>) -> anyhow::Result<reqwest::Client> {
        Ok(self.options().http_client(timeout)?)
    }
}

/// Arguments of `cairn submit`.
#[derive(clap::Args)]
pub struct SubmitArgs {
    /// gRPC URL of a log server; repeat it to name several servers of the log: the client moves to the
    /// next when one cannot be reached or cannot take the write.
    #[arg(long = "server", default_value = "http://127.0.0.1:7400")]
    pub servers: Vec<String>,
    /// When to return.
    #[arg(long, value_enum, default_value_t = WaitArg::Sequenced)]
    pub wait: WaitArg,
    /// Bearer token.
    #[arg(long, env = "CAIRN_TOKEN")]
    pub token: Option<String>,
    /// Each line of the input (stdin when no FILE) is one entry.
    #[arg(long)]
    pub lines: bool,
    /// With --wait published: write a c2sp tlog-proof per entry here.
    #[arg(long)]
    pub proof_dir: Option<PathBuf>,
    /// Entries per request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Input files.
    pub files: Vec<PathBuf>,
    /// For `https://` servers.
    #[command(flatten)]
    pub tls: TlsArgs,
}

fn read_input(path: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    match path {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display())),
        None => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).context("reading stdin")?;
            Ok(buf)
        }
    }
}

/// Splits input into lines; a final newline does not start another entry.
fn split_lines(data: &[u8]) -> Vec<Vec<u8>> {
    let mut lines: Vec<Vec<u8>> = data.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    if lines.last().is_some_and(Vec::is_empty) {
        lines.pop();
    }
    lines
}

fn entries(args: &SubmitArgs) -> anyhow::Result<Vec<Vec<u8>>> {
    if args.lines {
        if args.files.is_empty() {
            return Ok(split_lines(&read_input(None)?));
        }
        let mut out = Vec::new();
        for f in &args.files {
            out.extend(split_lines(&read_input(Some(f))?));
        }
        return Ok(out);
    }
    if args.files.is_empty() {
        bail!("give one or more FILEs (each is one entry), or --lines to read entries from stdin");
    }
    args.files.iter().map(|f| read_input(Some(f))).collect()
}

/// `cairn submit`.
pub async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let entries = entries(&args)?;
    let wait = match args.wait {
        WaitArg::Sequenced => Wait::Sequenced,
        WaitArg::Published => Wait::Published,
    };
    if args.proof_dir.is_some() && wait != Wait::Published {
        bail!("--proof-dir needs --wait published");
    }
    if let Some(dir) = &args.proof_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut client = LogClient::with_servers_tls(&args.servers, Some(&args.tls.options()))?;
    if let Some(t) = &args.token {
        client = client.with_token(t.clone());
    }
    for chunk in entries.chunks(args.batch.max(1)) {
        let results = client.submit(chunk.to_vec(), wait).await?;
        for r in results {
            let mut line = serde_json::json!({
                "shard": r.shard,
                "index": r.index,
                "leaf_hash": STANDARD.encode(r.leaf_hash.as_bytes()),
                "duplicate": r.duplicate,
            });
            if let (Some(dir), Some(proof)) = (&args.proof_dir, r.tlog_proof()) {
                let path = dir.join(format!("{}-{}.proof", r.shard, r.index));
                std::fs::write(&path, proof.to_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
                line["proof"] = serde_json::Value::String(path.display().to_string());
            }
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn verify`: the tlog-proof against the log key and, with a policy, the policy's witness quorum.
pub fn verify(
    vkey: Option<&str>,
    policy: Option<&Path>,
    proof: &Path,
    entry: &Path,
) -> anyhow::Result<ExitCode> {
    let policy = policy
        .map(|p| -> anyhow::Result<Policy> {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Policy::parse(&text).with_context(|| format!("witness policy {}", p.display()))
        })
        .transpose()?;
    let proof_bytes = std::fs::read(proof).with_context(|| format!("reading {}", proof.display()))?;
    let entry_bytes = std::fs::read(entry).with_context(|| format!("reading {}", entry.display()))?;
    let vkey = match (vkey, &policy) {
        (Some(v), _) if Path::new(v).is_file() => {
            std::fs::read_to_string(v).with_context(|| format!("reading {v}"))?
        }
        (Some(v), _) => v.to_owned(),
        (None, Some(p)) => {
            // The log is the policy's log whose name is the proof's checkpoint origin.
            let origin = TlogProof::parse(&proof_bytes)
                .ok()
                .and_then(|tp| Checkpoint::parse_note_unverified(&tp.checkpoint).ok())
                .map(|c| c.origin)
                .unwrap_or_default();
            match p.logs().iter().find(|l| l.key.name == origin) {
                Some(l) => l.key.to_string(),
                None => {
                    eprintln!("INVALID: the proof's log ({origin:?}) is not in the witness policy");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        (None, None) => bail!("give the log's --vkey, or a --policy that lists the log"),
    };
    match verify_tlog_proof(&vkey, &proof_bytes, &entry_bytes) {
        Ok((index, cp)) => {
            let mut witnessed = String::new();
            if let Some(p) = &policy {
                let key = VerifierKey::parse(vkey.trim())?;
                let note = TlogProof::parse(&proof_bytes)?.checkpoint;
                match p.verify(&note, Some(&key)) {
                    Ok((_, _, names)) => witnessed = format!(", cosigned by {}", names.join(", ")),
                    Err(e) => {
                        eprintln!("INVALID: {e}");
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            println!(
                "OK: {} is entry {index} of {} (tree size {}, root {}){witnessed}",
                entry.display(),
                cp.origin,
                cp.size,
                cp.root.to_base64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("INVALID: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `cairn keygen`.
pub fn keygen(origin: &str, out: &Path) -> anyhow::Result<ExitCode> {
    let signer = generate_signer(origin)?;
    write_key_file(out, &signer)?;
    println!("{}", signer.verifier());
    Ok(ExitCode::SUCCESS)
}

/// `cairn shard list`.
pub async fn shard_list(server: &str, tls: &TlsArgs) -> anyhow::Result<ExitCode> {
    let mut client = LogClient::with_servers_tls(&[server.to_owned()], Some(&tls.options()))?;
    for s in client.shards().await? {
        let listing = cairn_store::ShardListing::try_from(s)?;
        println!("{}", serde_json::to_string(&listing)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn shard freeze`.
pub async fn shard_freeze(
    server: &str,
    token: Option<String>,
    id: u32,
    tls: &TlsArgs,
) -> anyhow::Result<ExitCode> {
    let mut client = LogClient::with_servers_tls(&[server.to_owned()], Some(&tls.options()))?;
    if let Some(t) = token {
        client = client.with_token(t);
    }
    client.freeze(id).await?;
    println!("shard {id} frozen");
    Ok(ExitCode::SUCCESS)
}

fn admin_client(server: &str, token: Option<String>, tls: &TlsArgs) -> anyhow::Result<LogClient> {
    let client = LogClient::with_servers_tls(&[server.to_owned()], Some(&tls.options()))?;
    Ok(match token {
        Some(t) => client.with_token(t),
        None => client,
    })
}

/// The sequencer a `cairn cluster` command asks, and how.
#[derive(clap::Args, Clone, Debug)]
pub struct AdminArgs {
    /// gRPC URL of a sequencer node's API.
    #[arg(long, default_value = "http://127.0.0.1:7400")]
    pub server: String,
    /// Admin token.
    #[arg(long, env = "CAIRN_ADMIN_TOKEN")]
    pub token: Option<String>,
    /// TLS to an `https://` server.
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl AdminArgs {
    fn client(&self) -> anyhow::Result<LogClient> {
        admin_client(&self.server, self.token.clone(), &self.tls)
    }
}

/// `cairn cluster status`: one line per shard (JSON with `--json`).
pub async fn cluster_status(admin: &AdminArgs, json: bool) -> anyhow::Result<ExitCode> {
    let status = admin.client()?.cluster_status().await?;
    if json {
        let groups: Vec<serde_json::Value> = status
            .groups
            .iter()
            .map(|g| {
                serde_json::json!({
                    "shard": g.shard_id,
                    "leader": (g.leader != 0).then_some(g.leader),
                    "term": g.term,
                    "voters": g.voters,
                    "learners": g.learners,
                    "joint": g.joint,
                    "last_log_index": g.last_log_index,
                    "applied_index": g.applied_index,
                    "matched": g.members.iter().map(|m| (m.node_id.to_string(), serde_json::Value::from(m.matched_index))).collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "node": status.node_id, "groups": groups })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("as seen by node {}", status.node_id);
    for g in &status.groups {
        let leader = if g.leader == 0 {
            "none".to_owned()
        } else {
            g.leader.to_string()
        };
        let mut line = format!(
            "shard {}: leader {leader}, term {}, voters {:?}",
            g.shard_id, g.term, g.voters
        );
        if !g.learners.is_empty() {
            line.push_str(&format!(", learners {:?}", g.learners));
        }
        if g.joint {
            line.push_str(", membership change under way");
        }
        line.push_str(&format!(", log {} applied {}", g.last_log_index, g.applied_index));
        if !g.members.is_empty() {
            let lag: Vec<String> = g
                .members
                .iter()
                .map(|m| {
                    format!(
                        "{}:{}",
                        m.node_id,
                        g.last_log_index.saturating_sub(m.matched_index)
                    )
                })
                .collect();
            line.push_str(&format!(", behind {}", lag.join(" ")));
        }
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn cluster transfer-leader`.
pub async fn cluster_transfer_leader(admin: &AdminArgs, shard: u32, to: u64) -> anyhow::Result<ExitCode> {
    admin.client()?.transfer_leader(shard, to).await?;
    println!("node {to} leads shard {shard}");
    Ok(ExitCode::SUCCESS)
}

/// `cairn cluster add-node`.
pub async fn cluster_add_node(admin: &AdminArgs, id: u64, raft: &str) -> anyhow::Result<ExitCode> {
    let shards = admin.client()?.add_node(id, raft).await?;
    println!("node {id} is a voter of {}", groups(&shards));
    Ok(ExitCode::SUCCESS)
}

/// `cairn cluster remove-node`.
pub async fn cluster_remove_node(admin: &AdminArgs, id: u64) -> anyhow::Result<ExitCode> {
    let shards = admin.client()?.remove_node(id).await?;
    println!(
        "node {id} is no longer a member of {}; it can be stopped",
        groups(&shards)
    );
    Ok(ExitCode::SUCCESS)
}

/// `cairn cluster settings`: one line per setting (JSON with `--json`).
pub async fn cluster_settings(admin: &AdminArgs, json: bool) -> anyhow::Result<ExitCode> {
    let reply = admin.client()?.settings().await?;
    if json {
        let settings: serde_json::Map<String, serde_json::Value> = reply
            .settings
            .iter()
            .map(|s| {
                let v = serde_json::json!({ "value": s.value, "recorded": s.recorded, "about": s.about });
                (s.key.clone(), v)
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "node": reply.node_id, "settings": settings })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("as in effect on node {}", reply.node_id);
    for s in &reply.settings {
        let from = if s.recorded { "cluster" } else { "node config" };
        println!("{} = {} ({from}): {}", s.key, s.value, s.about);
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn cluster set|unset`.
pub async fn cluster_set(admin: &AdminArgs, key: &str, value: Option<&str>) -> anyhow::Result<ExitCode> {
    admin.client()?.set_setting(key, value).await?;
    match value {
        Some(v) => println!("{key} = {v} recorded for every sequencer"),
        None => println!("{key} unset: each sequencer runs with its configured value"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Raft groups as an operator reads them: the control group (id 0), then the shards.
fn groups(ids: &[u32]) -> String {
    let shards: Vec<u32> = ids
        .iter()
        .copied()
        .filter(|id| *id != cairn_sequencer::CONTROL)
        .collect();
    if shards.len() == ids.len() {
        format!("shards {shards:?}")
    } else {
        format!("the control group and shards {shards:?}")
    }
}

/// `cairn shard archive`.
pub async fn shard_archive(admin: &AdminArgs, id: u32) -> anyhow::Result<ExitCode> {
    admin.client()?.archive_shard(id).await?;
    println!("shard {id} is archived: its Raft groups stop; object storage serves it");
    Ok(ExitCode::SUCCESS)
}

/// `cairn shard add` through the running cluster.
pub async fn shard_add_live(
    admin: &AdminArgs,
    req: cairn_proto::v1::AddShardRequest,
) -> anyhow::Result<ExitCode> {
    let id = req.shard_id;
    let (state, waiting) = admin.client()?.add_shard(req).await?;
    if waiting.is_empty() {
        println!("shard {id} is {state}");
    } else {
        println!("shard {id} is {state}: waiting for {waiting}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn shard add`: appends the shard to the configuration file and creates its key.
pub fn shard_add(config_path: &Path, id: u32, origin: &str) -> anyhow::Result<ExitCode> {
    let config = ServeConfig::load(config_path)?;
    if config.shards.iter().any(|s| s.id == id) {
        bail!("{} already has a shard {id}", config_path.display());
    }
    let key_file = PathBuf::from(format!("keys/shard-{id}.key"));
    let probe = crate::config::ShardFile {
        id,
        origin: origin.to_owned(),
        key_file: Some(key_file.clone()),
        vkey: None,
        kind: cairn_store::ShardKind::Opaque,
        base_url: None,
        valid_from: None,
        witness_policy: None,
    };
    let key_path = config.key_path(&probe);
    let signer = generate_signer(origin)?;
    write_key_file(&key_path, &signer)?;
    let mut text = std::fs::read_to_string(config_path)?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "\n[[shards]]\nid = {id}\norigin = {}\nkey_file = {}\nvkey = {}\n",
        toml_str(origin),
        toml_str(&key_file.display().to_string()),
        toml_str(&signer.verifier().to_string())
    ));
    ServeConfig::load_str(&text).context("the extended configuration does not parse")?;
    std::fs::write(config_path, text)?;
    println!(
        "added shard {id} ({origin}) to {}; key {} (copy it to every sequencer node, mode 0600); \
         restart the nodes to start it",
        config_path.display(),
        key_path.display()
    );
    println!("{}", signer.verifier());
    Ok(ExitCode::SUCCESS)
}

fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// `cairn trust`: writes the log's trust documents, as its read path serves them, into `out`.
pub async fn trust(url: &str, out: &Path, tls: &TlsArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let http = tls.http(None)?;
    for name in [
        "trusted_root.json",
        "signing_config.json",
        "client_trust_config.json",
    ] {
        let at = format!("{}/{name}", url.trim_end_matches('/'));
        let reply = http
            .get(&at)
            .send()
            .await
            .with_context(|| format!("fetching {at}"))?;
        if !reply.status().is_success() {
            bail!(
                "{at} answered {}: does the log have a Sigstore shard?",
                reply.status()
            );
        }
        let body = reply.bytes().await.with_context(|| format!("reading {at}"))?;
        let path = out.join(name);
        std::fs::write(&path, &body).with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
