//! `cairn serve`: wires the sequencer node, the gRPC log API and the HTTP read path of one process.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use cairn_log_server::{AuthConfig, Backend, LogServer, LogServerConfig, Tenant};
use cairn_proto::tls::{Incoming, Serve};
use cairn_sequencer::{Node, ShardConfig};
use cairn_store::{Lifecycle, Shard, ShardKind, TileCache, open_bucket};
use cairn_tlog::{Cosigner, VerifierKey};
use cairn_witness::{CollectConfig, CollectMetrics, Collector, Policy, RocksState, Witness, WitnessConfig};
use tokio::sync::watch;

use crate::config::{Role, ServeConfig, ShardFile, generate_signer, read_key_file, write_key_file};

mod cluster;

/// A shard with what this process knows of it.
pub(crate) struct Resolved {
    pub(crate) config: ShardConfig,
    pub(crate) kind: ShardKind,
    /// A Sigstore shard's base URL.
    pub(crate) base_url: Option<String>,
    /// Since when its key signs.
    pub(crate) valid_from: SystemTime,
}

/// A Sigstore shard's base URL: configured, or `http://<origin>:<http port>/logs/<id>` (`https://`
/// with `[tls]`); its host must be the shard's origin (Sigstore clients check the checkpoint's origin
/// against it).
fn sigstore_base_url(s: &ShardFile, http_port: u16, tls: bool) -> anyhow::Result<String> {
    let base = match &s.base_url {
        Some(b) => b.trim_end_matches('/').to_owned(),
        None => format!(
            "{}://{}:{}{}",
            if tls { "https" } else { "http" },
            s.origin,
            http_port,
            cairn_store::http_prefix(s.id)
        ),
    };
    cairn_sigstore::trust::check_base_url(s.id, &s.origin, &base)
        .map_err(|e| anyhow::anyhow!("shard {} is a Sigstore shard: {e}", s.id))?;
    Ok(base)
}

/// The witness collector of a shard whose checkpoints this node signs, from its policy file.
fn witnessing(
    config: &ServeConfig,
    s: &ShardFile,
    vkey: &str,
    metrics: &CollectMetrics,
) -> anyhow::Result<Option<Arc<Collector>>> {
    let Some(rel) = s.witness_policy.as_ref().or(config.witnessing.policy.as_ref()) else {
        return Ok(None);
    };
    let path = config.data_path(rel);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("shard {}: reading witness policy {}", s.id, path.display()))?;
    let policy = Policy::parse(&text).with_context(|| format!("witness policy {}", path.display()))?;
    if !policy.logs().is_empty() && !policy.logs().iter().any(|l| l.key.to_string() == vkey) {
        bail!(
            "witness policy {} lists logs, but not shard {} ({vkey}): add a `log` line for it, or use a policy without log lines",
            path.display(),
            s.id
        );
    }
    let collector = Collector::new(
        CollectConfig {
            policy,
            timeout: Duration::from_millis(config.witnessing.timeout_ms.max(1)),
            fail_open: config.witnessing.fail_open,
            greedy: config.witnessing.greedy,
        },
        &s.origin,
        metrics,
    )
    .map_err(|e| anyhow::anyhow!("witness policy {}: {e}", path.display()))?;
    Ok(Some(Arc::new(collector)))
}

/// The witness role: its key (created on first start), the logs it witnesses, its state database.
fn witness(config: &ServeConfig) -> anyhow::Result<Arc<Witness>> {
    let Some(w) = &config.witness else {
        bail!("the witness role needs a [witness] table (name, logs)");
    };
    let path = config.data_path(w.key_file.as_deref().unwrap_or(Path::new("keys/witness.key")));
    if !path.exists() {
        write_key_file(&path, &generate_signer(&w.name)?)?;
        tracing::info!(path = %path.display(), "generated a new witness key");
    }
    let signer = read_key_file(&path)?;
    if signer.name() != w.name {
        bail!(
            "witness key file {} is for {}, but [witness] name is {}",
            path.display(),
            signer.name(),
            w.name
        );
    }
    let logs = w
        .logs
        .iter()
        .map(|v| {
            let key = VerifierKey::parse(v).with_context(|| format!("[witness] logs: {v}"))?;
            if key.key_type != cairn_tlog::note::TYPE_ED25519 {
                bail!("[witness] logs: {v} is not an Ed25519 checkpoint key");
            }
            Ok(key)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut wc = WitnessConfig::new(Cosigner::from_signer(signer), logs);
    wc.rate_per_log = NonZeroU32::new(w.rate_per_log);
    wc.burst_per_log = NonZeroU32::new(w.burst_per_log);
    let db = config.data_dir.join("witness-db");
    let state = RocksState::open(&db).with_context(|| format!("opening {}", db.display()))?;
    Ok(Arc::new(Witness::new(wc, Box::new(state))))
}

fn resolve_shards(
    config: &ServeConfig,
    http_port: u16,
    metrics: &CollectMetrics,
) -> anyhow::Result<Vec<Resolved>> {
    let mut out = Vec::new();
    for s in &config.shards {
        let path = config.key_path(s);
        let sequencer = config.has(Role::Sequencer);
        let signer = if sequencer {
            if !path.exists() {
                let signer = generate_signer(&s.origin)?;
                write_key_file(&path, &signer)?;
                tracing::info!(shard = s.id, path = %path.display(), "generated a new signing key");
            }
            let signer = read_key_file(&path)?;
            if signer.name() != s.origin {
                bail!(
                    "key file {} is for origin {}, but shard {} has origin {}",
                    path.display(),
                    signer.name(),
                    s.id,
                    s.origin
                );
            }
            Some(signer)
        } else {
            None
        };
        // Without the sequencer role the key is only read to learn its verifier key, when no vkey is
        // configured (`cairn serve --roles tiles` on the embedded default's data directory).
        let derived = match &signer {
            Some(k) => Some(k.verifier().to_string()),
            None if s.vkey.is_none() && path.exists() => Some(read_key_file(&path)?.verifier().to_string()),
            None => None,
        };
        let vkey = match (&s.vkey, derived) {
            (Some(v), Some(d)) if *v != d => {
                bail!(
                    "shard {}: the configured vkey does not match key file {}",
                    s.id,
                    path.display()
                )
            }
            (_, Some(d)) => d,
            (Some(v), None) => v.clone(),
            (None, None) => bail!(
                "shard {}: set `vkey` (this process has no sequencer role to read the key)",
                s.id
            ),
        };
        let base_url = match s.kind {
            ShardKind::Sigstore => Some(sigstore_base_url(s, http_port, config.tls.is_some())?),
            ShardKind::Opaque => None,
        };
        let valid_from = match s.valid_from {
            Some(secs) => UNIX_EPOCH + Duration::from_secs(secs),
            None => std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .unwrap_or(UNIX_EPOCH),
        };
        let mut shard_config = ShardConfig::new(
            Shard {
                id: s.id,
                origin: s.origin.clone(),
                vkey: vkey.clone(),
            },
            signer,
        );
        if sequencer {
            shard_config.witnesses = witnessing(config, s, &vkey, metrics)?;
        }
        out.push(Resolved {
            config: shard_config,
            kind: s.kind,
            base_url,
            valid_from,
        });
    }
    Ok(out)
}

/// How often the `[tls]` files are checked for changes.
const TLS_RELOAD_EVERY: Duration = Duration::from_secs(1);

/// A task that ends when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why `cairn serve` stopped without being asked to: a shard's Raft group on this node stopped on a
/// storage error (the disk full, an I/O error). The process exits with [`StorageFailed::EXIT_CODE`] so
/// that its supervisor restarts it; the other voters keep every shard writable meanwhile, and the
/// restarted node reopens the database and catches up from them.
#[derive(Debug, thiserror::Error)]
#[error(
    "shard {shard}'s Raft group stopped on a storage error: {why}; the node stopped so that it can be \
     restarted (free the disk or fix the data directory's volume, then start it again)"
)]
pub struct StorageFailed {
    /// The shard whose group stopped (the first seen, when several did).
    pub shard: u32,
    /// The error.
    pub why: String,
}

impl StorageFailed {
    /// The exit status of `cairn serve` after a storage failure (`EX_IOERR` of sysexits.h).
    pub const EXIT_CODE: u8 = 74;
}

/// Runs the configured roles until `shutdown` resolves, then stops them cleanly (the database is closed
/// when this returns). Returns [`StorageFailed`] (after the same orderly stop) if a shard's Raft group
/// on this node stops on a storage error first.
pub async fn run(config: ServeConfig, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    if config.roles.is_empty() {
        bail!("no roles to run");
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let tls = match &config.tls {
        Some(t) => {
            for p in &config.peers {
                if !p.grpc.starts_with("https://") {
                    bail!(
                        "peer {}: its grpc URL ({}) must be https:// when [tls] is set: every node's gRPC API serves TLS",
                        p.id,
                        p.grpc
                    );
                }
            }
            let tls = cairn_proto::tls::Tls::load(cairn_proto::tls::TlsFiles {
                cert: t.cert.clone(),
                key: t.key.clone(),
                ca: t.ca.clone(),
            })
            .context("[tls]")?;
            Some(tls)
        }
        None => None,
    };
    // Reloads the files when they change, for as long as the process runs.
    let _tls_watch = tls.as_ref().map(|t| AbortOnDrop(t.watch(TLS_RELOAD_EVERY)));
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Bound first: default URLs in the trust documents name its port.
    let http_listener = if [Role::Tiles, Role::Log, Role::Tsa, Role::Witness, Role::Search]
        .iter()
        .any(|r| config.has(*r))
    {
        Some(
            tokio::net::TcpListener::bind(config.http_addr)
                .await
                .with_context(|| format!("binding HTTP to {}", config.http_addr))?,
        )
    } else {
        None
    };
    let http_bound = match &http_listener {
        Some(l) => l.local_addr()?,
        None => config.http_addr,
    };
    let collect_metrics = CollectMetrics::default();
    let shards = resolve_shards(&config, http_bound.port(), &collect_metrics)?;
    let url = config.store_url()?;
    let bucket = open_bucket(&url, &config.store_options).with_context(|| format!("opening store {url}"))?;
    // One tile cache for the write API's proofs and the read path.
    let cache = TileCache::new(config.tuning.tile_cache_bytes);

    let node = if config.has(Role::Sequencer) {
        Some(cluster::start_sequencer(&config, &shards, &bucket, tls.clone(), scheme).await?)
    } else {
        None
    };

    let (stop, _) = watch::channel(false);
    let stopped = |stop: &watch::Sender<bool>| {
        let mut rx = stop.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = Vec::new();
    // Shards added at runtime: from the sequencer in this process, else asked of the sequencers.
    let (added, peer_listing) = match &node {
        Some(node) => (Some(cluster::catalog(node)), None),
        None if !config.peers.is_empty() && (config.has(Role::Log) || config.has(Role::Tiles)) => {
            let (catalog, listing, task) = cluster::catalog_from_peers(&config, stop.subscribe())?;
            tasks.push(task);
            (Some(catalog), Some(listing))
        }
        None => (None, None),
    };
    let mut grpc_addr = None;
    let mut http_addr = None;
    let kinds: BTreeMap<u32, ShardKind> = shards.iter().map(|s| (s.config.shard.id, s.kind)).collect();
    // What discovery lists of the configured shards: the start of each one's validity, and each
    // Sigstore shard's base URL.
    let valid_from: BTreeMap<u32, u64> = shards
        .iter()
        .filter_map(|s| {
            let secs = s.valid_from.duration_since(UNIX_EPOCH).ok()?.as_secs();
            (secs > 0).then_some((s.config.shard.id, secs))
        })
        .collect();
    let base_urls: BTreeMap<u32, String> = shards
        .iter()
        .filter_map(|s| Some((s.config.shard.id, s.base_url.clone()?)))
        .collect();
    // The HTTP listener serves every HTTP role of the process: the read path, the Rekor v2 write
    // API, the timestamp authority.
    let mut http_routes = axum::Router::new();
    let public_url = config
        .sigstore
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{http_bound}"))
        .trim_end_matches('/')
        .to_owned();
    let tsa = if config.has(Role::Tsa) {
        let dir = if config.sigstore.tsa_dir.is_absolute() {
            config.sigstore.tsa_dir.clone()
        } else {
            config.data_dir.join(&config.sigstore.tsa_dir)
        };
        let mut authority = cairn_tsa::Authority::load_or_generate(&dir, "Cairn timestamp authority")
            .with_context(|| format!("timestamp authority key in {}", dir.display()))?;
        if let Some(policy) = config.sigstore.tsa_policy()? {
            authority = authority.with_policy(policy);
        }
        let authority = Arc::new(authority);
        http_routes = http_routes.merge(cairn_tsa::router(authority.clone()));
        Some(authority)
    } else {
        None
    };

    // Metrics of every part of the process: on the read path's `/metrics` with the tiles role, else on
    // a `/metrics` of their own on the HTTP listener.
    let mut registries: Vec<prometheus::Registry> = vec![process_metrics()];
    if let Some(node) = &node {
        registries.push(node.registry().clone());
        registries.push(collect_metrics.registry().clone());
    }
    let witness = if config.has(Role::Witness) {
        let w = witness(&config)?;
        http_routes = http_routes.nest("/witness", cairn_witness::router(w.clone()));
        Some(w)
    } else {
        None
    };

    if config.has(Role::Search) {
        let log_url = match &config.search.log_url {
            Some(u) => u.clone(),
            None if config.tls.is_some() => bail!(
                "with [tls], the search role needs [search] log_url: it reads the read path with the system's \
                 root certificates, which do not know the cluster CA"
            ),
            None if config.has(Role::Tiles) => format!("http://{http_bound}"),
            None => bail!("the search role needs [search] log_url when this process has no tiles role"),
        };
        let indexer = cairn_search::Indexer::open(&log_url, &config.data_dir.join("search"))
            .map_err(|e| anyhow::anyhow!("search index: {e}"))?;
        http_routes = http_routes.merge(cairn_search::router(indexer.searcher()));
        let done = stopped(&stop);
        let interval = Duration::from_millis(config.search.interval_ms.max(10));
        tasks.push(tokio::spawn(indexer.run(interval, done)));
    }
    if config.has(Role::Log) {
        let anonymous = config.tenants.is_empty();
        if anonymous && !config.grpc_addr.ip().is_loopback() {
            bail!(
                "no [[tenants]] are configured: anonymous writes are only allowed on loopback, and grpc_addr is {}",
                config.grpc_addr
            );
        }
        let mut lc = LogServerConfig::new(shards.iter().map(|s| s.config.shard.clone()).collect());
        lc.kinds = kinds.clone();
        lc.valid_from = valid_from.clone();
        lc.base_urls = base_urls.clone();
        lc.catalog = added.clone();
        if let Some(listing) = &peer_listing {
            // Without a sequencer here: the configured shards' state as the sequencers list them.
            let listing = listing.clone();
            lc.configured_state = Some(cairn_log_server::ListingSource(Arc::new(move |id| {
                listing.get(id)
            })));
        }
        if let Some(names) = &config.sigstore.key_details {
            lc.sigstore_policy = cairn_sigstore::Policy::from_names(names)
                .map_err(|e| anyhow::anyhow!("[sigstore] key_details: {e}"))?;
        }
        lc.peers = config.peers.iter().map(|p| (p.id, p.grpc.clone())).collect();
        lc.tls = tls.clone();
        lc.auth = AuthConfig {
            tenants: config
                .tenants
                .iter()
                .map(|t| Tenant {
                    name: t.name.clone(),
                    token: t.token.clone(),
                    rate: t.rate.and_then(NonZeroU32::new),
                    burst: t.burst.and_then(NonZeroU32::new),
                })
                .collect(),
            admin_token: config.admin_token.clone(),
            allow_anonymous: anonymous,
        };
        lc.publish_timeout = Duration::from_secs(config.tuning.publish_timeout_s.max(1));
        lc.reroute_grace = Duration::from_secs(config.tuning.reroute_grace_s);
        // Twice the longest election timeout (8 heartbeats): a leader that has not answered by then is
        // either gone (and replaced) or unreachable from here.
        lc.forward_deadline = Duration::from_millis(config.tuning.heartbeat_ms.max(10) * 16);
        let server = LogServer::new(
            lc,
            Backend {
                node: node.clone(),
                bucket: bucket.clone(),
                cache: cache.clone(),
            },
        )?;
        http_routes = http_routes.merge(cairn_log_server::rekor::router(server.clone())?);
        // Opaque writes over HTTP follow the gRPC API's rule: anonymous only on loopback.
        if !anonymous || http_bound.ip().is_loopback() {
            http_routes = http_routes.merge(cairn_log_server::add::router(server.clone()));
        } else {
            tracing::warn!(
                http = %http_bound,
                "POST /add is off: no [[tenants]] are configured and the HTTP listener is not loopback"
            );
        }
        registries.push(server.metrics().registry().clone());
        let routes = cairn_log_server::grpc_routes(server).await?;
        let listener = tokio::net::TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("binding gRPC to {}", config.grpc_addr))?;
        grpc_addr = Some(listener.local_addr()?);
        let done = stopped(&stop);
        let incoming = Incoming::new(listener, tls.clone().map(|t| (t, Serve::Grpc)));
        tasks.push(tokio::spawn(async move {
            if let Err(e) = cairn_log_server::serve(incoming, routes, done).await {
                tracing::error!(error = %e, "gRPC server failed");
            }
        }));
    }

    // OTLP export of the same metrics, when `[telemetry]` or `OTEL_*` asks for it.
    let metrics_export =
        crate::telemetry::export_metrics(&config.telemetry, config.node_id, registries.clone())?;

    if config.has(Role::Tiles) {
        let mut tc = cairn_tile_server::Config::new(
            shards.iter().map(|s| s.config.shard.clone()).collect(),
            bucket.clone(),
        );
        tc.cache = cache.clone();
        tc.kinds = kinds.clone();
        tc.catalog = added.clone();
        tc.valid_from = valid_from.clone();
        tc.base_urls = base_urls.clone();
        tc.documents = Some(crate::trust::documents(&config, tsa.as_deref(), &public_url)?);
        tc.extra_metrics = registries.clone();
        if let Some(listing) = peer_listing {
            // Without a sequencer here: the configured shards' state and end as the sequencers list
            // them.
            let l = listing.clone();
            tc.live_state = Some(Arc::new(move |id| l.get(id).map(|s| s.state)));
            let l = listing.clone();
            tc.archived = Some(Arc::new(move |id| l.get(id).is_some_and(|s| s.archived)));
            tc.valid_until = Some(Arc::new(move |id| listing.get(id)?.valid_until));
        }
        if let Some(node) = &node {
            let weak: Weak<Node> = Arc::downgrade(node);
            tc.live_state = Some(Arc::new(move |id| {
                let node = weak.upgrade()?;
                let frozen = node.frozen(id).ok()?;
                Some(if frozen {
                    Lifecycle::Frozen
                } else {
                    Lifecycle::Active
                })
            }));
            let weak: Weak<Node> = Arc::downgrade(node);
            tc.valid_until = Some(Arc::new(move |id| weak.upgrade()?.valid_until(id)));
            let weak: Weak<Node> = Arc::downgrade(node);
            tc.archived = Some(Arc::new(move |id| weak.upgrade().is_some_and(|n| n.archived(id))));
            let weak: Weak<Node> = Arc::downgrade(node);
            tc.status = Some(Arc::new(move || {
                let Some(node) = weak.upgrade() else {
                    return Vec::new();
                };
                node.shard_ids()
                    .into_iter()
                    .map(|id| cairn_tile_server::ShardStatus {
                        id,
                        leader: node.leader(id),
                        publishing_stopped: node.publishing_stopped(id),
                    })
                    .collect()
            }));
        }
        let state = cairn_tile_server::AppState::new(tc)?;
        http_routes = cairn_tile_server::router(state).merge(http_routes);
    }
    if !config.has(Role::Tiles) {
        let registries = registries.clone();
        http_routes = http_routes
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let registries = registries.clone();
                    async move {
                        let mut out = Vec::new();
                        for r in &registries {
                            let _ = prometheus::Encoder::encode(
                                &prometheus::TextEncoder::new(),
                                &r.gather(),
                                &mut out,
                            );
                        }
                        ([(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], out)
                    }
                }),
            )
            .route("/healthz", axum::routing::get(|| async { "ok\n" }));
    }
    if let Some(listener) = http_listener {
        http_addr = Some(listener.local_addr()?);
        let done = stopped(&stop);
        let incoming = Incoming::new(listener, tls.clone().map(|t| (t, Serve::Http)));
        tasks.push(tokio::spawn(async move {
            if let Err(e) = cairn_tile_server::serve_router(incoming, http_routes, done).await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        }));
    }

    // Shard lines first: the `cairn serving:` line is the last startup line, for scripts to wait on.
    for s in &shards {
        let s = &s.config.shard;
        println!("shard {} origin={} vkey={}", s.id, s.origin, s.vkey);
    }
    if let Some(w) = &witness {
        println!(
            "witness vkey={} url={scheme}://{}/witness",
            w.verifier(),
            http_addr.map_or_else(|| "off".to_owned(), |a| a.to_string())
        );
    }
    let show = |a: Option<std::net::SocketAddr>| a.map_or_else(|| "off".to_owned(), |a| a.to_string());
    println!(
        "cairn serving: node={} grpc={} http={} raft={} store={} data={}",
        config.node_id,
        show(grpc_addr),
        show(http_addr),
        node.as_ref()
            .map_or_else(|| "off".to_owned(), |n| n.raft_addr().to_string()),
        url,
        config.data_dir.display()
    );
    use std::io::Write;
    std::io::stdout().flush()?;

    let failure = async {
        match &node {
            Some(n) => Some(n.failed().await),
            None => std::future::pending().await,
        }
    };
    let failed = tokio::select! {
        _ = shutdown => None,
        f = failure => f,
    };
    match &failed {
        Some((shard, why)) => tracing::error!(
            shard,
            error = %why,
            "a Raft group stopped on a storage error; stopping the node so that it is restarted"
        ),
        None => tracing::info!("shutting down"),
    }
    let _ = stop.send(true);
    for t in tasks {
        let _ = t.await;
    }
    if let Some(node) = node {
        // The servers are stopped; in-flight handlers release their handles shortly.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut node = node;
        loop {
            match Arc::try_unwrap(node) {
                Ok(n) => {
                    n.shutdown().await;
                    break;
                }
                Err(again) if Instant::now() < deadline => {
                    node = again;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => {
                    tracing::warn!("node still in use at shutdown; exiting without a clean close");
                    break;
                }
            }
        }
    }
    if let Some(m) = metrics_export
        && let Err(e) = m.shutdown()
    {
        tracing::warn!(error = %e, "OpenTelemetry metrics export did not shut down cleanly");
    }
    if let Some((shard, why)) = failed {
        return Err(StorageFailed { shard, why }.into());
    }
    println!("cairn stopped");
    Ok(())
}

/// The process's own series (`process_resident_memory_bytes`, `process_open_fds`, `process_max_fds`,
/// `process_cpu_seconds_total`, `process_start_time_seconds`, …), on every role's `/metrics`.
fn process_metrics() -> prometheus::Registry {
    let registry = prometheus::Registry::new();
    // The collector reads /proc: Linux only.
    #[cfg(target_os = "linux")]
    if let Err(e) = registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    )) {
        tracing::warn!(error = %e, "process metrics are not available");
    }
    registry
}
