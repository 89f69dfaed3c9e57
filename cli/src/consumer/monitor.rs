//! `cairn monitor`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::{EXIT_INVALID, EXIT_USAGE, read_trust};

/// Arguments of `cairn monitor`.
#[derive(clap::Args)]
pub struct MonitorArgs {
    /// A Cairn read path: every shard of its `shards.json` is followed (new shards too).
    #[arg(long, required_unless_present = "trusted_root")]
    pub log_url: Option<String>,
    /// A Sigstore trusted root: its certificate authorities judge certificates (entries whose
    /// certificate does not chain to them are not matched); without --log-url, its transparency logs
    /// are the logs followed (each a tlog-tiles read path at its base URL: Cairn or any Rekor v2 log).
    #[arg(long)]
    pub trusted_root: Option<PathBuf>,
    /// The watch list: a rekor-monitor configuration file (YAML or JSON, `monitoredValues`).
    #[arg(long)]
    pub watch: Option<PathBuf>,
    /// Where the monitor keeps what it trusts and how far it has read.
    #[arg(long, default_value = "cairn-monitor.state.json")]
    pub state: PathBuf,
    /// One round, then exit: 0 if every log was read and behaved, 1 if one did not behave (a
    /// consistency alert), 2 if one could not be read.
    #[arg(long)]
    pub once: bool,
    /// Seconds between rounds.
    #[arg(long, default_value_t = 10)]
    pub interval: u64,
    /// POST each alert (JSON) to this URL, besides printing it.
    #[arg(long)]
    pub webhook: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// For an `https://` --log-url.
    #[command(flatten)]
    pub tls: crate::commands::TlsArgs,
}

/// `cairn monitor`.
pub async fn monitor(args: MonitorArgs) -> anyhow::Result<ExitCode> {
    use cairn_client::monitor::{Alert, Logs, Monitor};
    use cairn_client::watch::WatchList;

    let trust = args.trusted_root.as_ref().map(|p| read_trust(p)).transpose()?;
    let watch = args
        .watch
        .as_ref()
        .map(|p| -> anyhow::Result<WatchList> {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            WatchList::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        })
        .transpose()?;
    let logs = match (&args.log_url, &trust) {
        (Some(url), _) => Logs::Cairn(url.clone()),
        (None, Some(t)) => Logs::TrustedRoot(t.clone()),
        (None, None) => anyhow::bail!("give --log-url or --trusted-root"),
    };
    let mut monitor = Monitor::new(logs, watch, trust, &args.state)?.with_http(args.tls.http(None)?);
    if let Some(addr) = args.metrics_addr {
        let registry = monitor.metrics().registry().clone();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let registry = registry.clone();
                async move {
                    let mut out = String::new();
                    let _ = prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut out);
                    out
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    // Webhooks are anywhere: the system's roots, not the log's --tls-ca.
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let bars = indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr());
    let bar_of = std::sync::Mutex::new(std::collections::HashMap::<String, indicatif::ProgressBar>::new());
    let style = indicatif::ProgressStyle::with_template(
        "{prefix} [{bar:30}] {pos}/{len} entries, {per_sec}, {eta} left",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    let progress = |log: &str, read: u64, size: u64| {
        let mut map = bar_of.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let bar = map.entry(log.to_owned()).or_insert_with(|| {
            let b = bars.add(indicatif::ProgressBar::new(size));
            b.set_style(style.clone());
            b.set_prefix(log.to_owned());
            b.set_position(read);
            b.reset_eta();
            b
        });
        bar.set_length(size);
        bar.set_position(read);
    };
    let mut failed = false;
    let mut unreadable = false;
    loop {
        let mut pending = Vec::new();
        let mut on_alert = |a: &Alert| {
            println!("{}", a.to_json());
            if matches!(a, Alert::Consistency(_)) {
                failed = true;
            }
            pending.push(a.to_json().clone());
        };
        let result = monitor.round(&mut on_alert, &progress).await;
        if let Some(url) = &args.webhook {
            for alert in pending {
                if let Err(e) = http
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(alert.to_string())
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                {
                    eprintln!("monitor: webhook {url}: {e} (the alert is on stdout)");
                }
            }
        }
        match result {
            Ok(round) => {
                for (log, why) in &round.failed {
                    eprintln!("monitor: {log} could not be read this round: {why}");
                    unreadable = true;
                }
            }
            Err(e) if args.once => return Err(e.into()),
            Err(e) => eprintln!("monitor: this round failed, retrying: {e}"),
        }
        if args.once {
            for bar in bar_of
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .values()
            {
                bar.finish_and_clear();
            }
            return Ok(if failed {
                ExitCode::from(EXIT_INVALID)
            } else if unreadable {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            });
        }
        tokio::time::sleep(std::time::Duration::from_secs(args.interval)).await;
    }
}
