//! The write load and the report every mode prints.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_proto::v1::AddEntriesRequest;
use cairn_proto::v1::log_client::LogClient;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tonic::transport::{Channel, Endpoint};

use crate::{Load, WaitArg};

/// What a run measured.
pub struct Report {
    /// Mode and target.
    pub name: String,
    /// Wall-clock seconds measured.
    pub duration_s: f64,
    /// Successful requests.
    pub requests: u64,
    /// Entries acknowledged (reads: responses).
    pub entries: u64,
    /// Failed requests.
    pub errors: u64,
    /// Requests answered RESOURCE_EXHAUSTED (waited out, not counted as errors).
    pub pushback: u64,
    /// Latency of successful requests, microseconds.
    pub latency: Histogram<u64>,
    /// Entries (or responses) completed in each second of the run.
    pub per_second: Vec<u64>,
    /// Mode-specific settings, echoed in the JSON.
    pub settings: serde_json::Value,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Report {
    /// The report of a load run: `entries` done over `duration_s`, the workers' latencies and counts.
    pub fn of_run(
        name: String,
        duration_s: f64,
        entries: u64,
        (latency, totals): (Histogram<u64>, Totals),
        per_second: Vec<u64>,
        settings: serde_json::Value,
    ) -> Self {
        Self {
            name,
            duration_s,
            requests: totals.requests,
            entries,
            errors: totals.errors,
            pushback: totals.pushback,
            latency,
            per_second,
            settings,
        }
    }

    /// Prints a table to stderr and, with `json`, the JSON result as the last stdout line.
    pub fn print(&self, json: bool) -> anyhow::Result<()> {
        let rate = self.entries as f64 / self.duration_s.max(1e-9);
        let q = |p: f64| ms(self.latency.value_at_quantile(p));
        eprintln!("{}", self.name);
        eprintln!("  duration      {:>12.1} s", self.duration_s);
        eprintln!("  entries/s     {:>12.0}", rate);
        eprintln!(
            "  requests/s    {:>12.0}",
            self.requests as f64 / self.duration_s.max(1e-9)
        );
        eprintln!("  errors        {:>12}   pushback {}", self.errors, self.pushback);
        eprintln!(
            "  latency ms    p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            ms(self.latency.max())
        );
        if json {
            let out = serde_json::json!({
                "name": self.name,
                "entries_per_sec": rate.round(),
                "requests_per_sec": (self.requests as f64 / self.duration_s.max(1e-9)).round(),
                "p50_ms": q(0.5),
                "p90_ms": q(0.9),
                "p99_ms": q(0.99),
                "p999_ms": q(0.999),
                "max_ms": ms(self.latency.max()),
                "errors": self.errors,
                "pushback": self.pushback,
                "requests": self.requests,
                "entries": self.entries,
                "duration_s": self.duration_s,
                "per_second": self.per_second,
                "settings": self.settings,
            });
            println!("{out}");
        }
        Ok(())
    }
}

/// A progress bar over `secs`, fed once a second from `done`; returns per-second counts at the end.
pub fn sampler(secs: u64, done: Arc<AtomicU64>, quiet: bool) -> tokio::task::JoinHandle<Vec<u64>> {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(secs)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    tokio::spawn(async move {
        let mut samples = Vec::new();
        let mut last = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        for _ in 0..secs {
            tick.tick().await;
            let now = done.load(Ordering::Relaxed);
            samples.push(now - last);
            bar.set_message(format!("{}/s", now - last));
            bar.inc(1);
            last = now;
        }
        bar.finish_and_clear();
        samples
    })
}

/// xorshift64*: cheap, deterministic per worker.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Entries for one worker: unique (worker, counter, run nonce) headers padded to size, and with
/// probability `repeat` an entry this worker sent before.
struct Entries {
    worker: u64,
    nonce: u64,
    size: usize,
    counter: u64,
    repeat: f64,
    sent: Vec<Vec<u8>>,
    rng: Rng,
}

impl Entries {
    fn next(&mut self) -> Vec<u8> {
        let r = (self.rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        if !self.sent.is_empty() && r < self.repeat {
            let i = (self.rng.next() % self.sent.len() as u64) as usize;
            return self.sent[i].clone();
        }
        self.counter += 1;
        let mut e = Vec::with_capacity(self.size.max(24));
        e.extend_from_slice(&self.nonce.to_be_bytes());
        e.extend_from_slice(&self.worker.to_be_bytes());
        e.extend_from_slice(&self.counter.to_be_bytes());
        while e.len() < self.size {
            e.extend_from_slice(&self.rng.next().to_le_bytes());
        }
        e.truncate(self.size.max(24));
        if self.repeat > 0.0 && self.sent.len() < 4096 {
            self.sent.push(e.clone());
        }
        e
    }
}

/// A worker's counts.
#[derive(Default)]
pub struct Totals {
    /// Successful requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Requests pushed back (and retried or waited out).
    pub pushback: u64,
}

/// What a worker task ends with.
pub type Worker = tokio::task::JoinHandle<anyhow::Result<(Histogram<u64>, Totals)>>;

/// The workers' latencies and counts, summed.
pub async fn gather(workers: Vec<Worker>) -> anyhow::Result<(Histogram<u64>, Totals)> {
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut totals = Totals::default();
    for w in workers {
        let (h, t) = w.await??;
        latency.add(h)?;
        totals.requests += t.requests;
        totals.errors += t.errors;
        totals.pushback += t.pushback;
    }
    Ok((latency, totals))
}

/// Runs the write load against `server` and reports.
pub async fn run(server: &str, wait: WaitArg, token: Option<String>, load: &Load) -> anyhow::Result<Report> {
    let channels: Vec<Channel> = (0..load.concurrency.div_ceil(8).max(1))
        .map(|_| {
            Ok(Endpoint::from_shared(server.to_owned())?
                .tcp_nodelay(true)
                .connect_lazy())
        })
        .collect::<anyhow::Result<_>>()?;
    let wait = match wait {
        WaitArg::Sequenced => cairn_proto::v1::Wait::Sequenced,
        WaitArg::Published => cairn_proto::v1::Wait::Published,
    };
    let nonce = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(load.duration);
    let per_worker_rate = (load.rate > 0).then(|| load.rate as f64 / load.concurrency.max(1) as f64);
    let samples = sampler(load.duration, done.clone(), load.quiet);
    let mut workers: Vec<Worker> = Vec::new();
    let workers_n = load.concurrency.max(1);
    for w in 0..workers_n {
        let mut client = LogClient::new(channels[w % channels.len()].clone())
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        let mut entries = Entries {
            worker: w as u64,
            nonce,
            size: load.entry_size,
            counter: 0,
            repeat: load.repeat,
            sent: Vec::new(),
            rng: Rng::new(nonce ^ (w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        };
        let token = token.clone();
        let done = done.clone();
        let batch = load.batch.max(1);
        workers.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
            let mut totals = Totals::default();
            // Paced workers start spread over one interval, so that a target rate is an even stream
            // and not every worker's request at the same instant.
            let mut next_send = Instant::now();
            if let Some(rate) = per_worker_rate {
                next_send += Duration::from_secs_f64(batch as f64 / rate * w as f64 / workers_n as f64);
            }
            while Instant::now() < deadline {
                if let Some(rate) = per_worker_rate {
                    tokio::time::sleep_until(next_send.into()).await;
                    next_send += Duration::from_secs_f64(batch as f64 / rate);
                }
                let mut req = tonic::Request::new(AddEntriesRequest {
                    entries: (0..batch).map(|_| entries.next()).collect(),
                    wait: wait as i32,
                });
                if let Some(t) = &token {
                    req.metadata_mut().insert(
                        cairn_proto::metadata::AUTHORIZATION,
                        format!("Bearer {t}").parse()?,
                    );
                }
                let t0 = Instant::now();
                match client.add_entries(req).await {
                    Ok(reply) => {
                        let n = reply.into_inner().results.len() as u64;
                        hist.saturating_record(t0.elapsed().as_micros() as u64);
                        totals.requests += 1;
                        done.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                        totals.pushback += 1;
                        let hint = s
                            .metadata()
                            .get(cairn_proto::metadata::RETRY_AFTER_MS)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(50);
                        tokio::time::sleep(Duration::from_millis(hint)).await;
                    }
                    Err(s) => {
                        totals.errors += 1;
                        if totals.errors <= 3 {
                            eprintln!("request failed: {:?}: {}", s.code(), s.message());
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            Ok::<_, anyhow::Error>((hist, totals))
        }));
    }
    let gathered = gather(workers).await?;
    let duration_s = start.elapsed().as_secs_f64();
    let per_second = samples.await?;
    Ok(Report::of_run(
        format!("write {server} wait={wait:?}"),
        duration_s,
        done.load(Ordering::Relaxed),
        gathered,
        per_second,
        serde_json::json!({
            "server": server, "wait": format!("{wait:?}"), "concurrency": load.concurrency,
            "batch": load.batch, "entry_size": load.entry_size, "rate": load.rate, "repeat": load.repeat,
            "duration": load.duration,
        }),
    ))
}
