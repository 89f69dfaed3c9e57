//! Logs on stderr, and OpenTelemetry: traces and metrics exported over OTLP/gRPC.
//!
//! Export is off unless `[telemetry] otlp_endpoint` or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and `OTEL_SDK_DISABLED=true` turns it off. Off, no
//! OpenTelemetry layer is installed, the trace-context propagator stays OpenTelemetry's no-op, and the
//! sequencer records no spans for later (see `cairn_sequencer::trace`): nothing is spent on it.
//!
//! On, every span `CAIRN_TRACE` lets through (`info,openraft=warn` by default, like `CAIRN_LOG` for
//! logs) becomes an OpenTelemetry span; W3C `traceparent` is read from incoming calls and sent with forwarded writes. Metrics are the
//! ones `/metrics` serves, read from the same Prometheus registries at each export: counters as
//! cumulative sums, gauges as gauges, histograms as their `_sum` and `_count` (the buckets stay on
//! `/metrics`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{AsyncInstrument, Meter, MeterProvider as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use prometheus::proto::{MetricFamily, MetricType};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::TelemetryFile;

/// The service name when neither `[telemetry] service_name` nor `OTEL_SERVICE_NAME` gives one.
const DEFAULT_SERVICE: &str = "cairn";

/// What was installed; [`Telemetry::shutdown`] sends what is still buffered.
#[derive(Default)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether traces are exported.
    pub fn exporting(&self) -> bool {
        self.tracer.is_some()
    }

    /// Exports the spans still buffered, then stops.
    pub fn shutdown(self) {
        if let Some(t) = self.tracer
            && let Err(e) = t.shutdown()
        {
            eprintln!("warning: OpenTelemetry traces: {e}");
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Whether `file` and the environment ask for OTLP export.
pub fn enabled(file: &TelemetryFile) -> bool {
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return false;
    }
    file.otlp_endpoint.is_some()
        || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
}

fn resource(file: &TelemetryFile, node_id: Option<u64>) -> Resource {
    let name = file
        .service_name
        .clone()
        .or_else(|| env("OTEL_SERVICE_NAME"))
        .unwrap_or_else(|| DEFAULT_SERVICE.to_owned());
    let mut b = Resource::builder().with_service_name(name);
    if let Some(id) = node_id {
        b = b.with_attribute(KeyValue::new("service.instance.id", format!("node-{id}")));
    }
    b.build()
}

/// Installs the log subscriber (`json`: one object per line) with levels from `CAIRN_LOG`, and, when
/// `telemetry` asks for it, the OTLP trace exporter, whose spans' levels come from `CAIRN_TRACE`. Runs inside the Tokio runtime (the exporter's
/// gRPC channel lives there). `node_id` names the instance in the telemetry's resource.
pub fn init(
    json: bool,
    telemetry: Option<&TelemetryFile>,
    node_id: Option<u64>,
) -> anyhow::Result<Telemetry> {
    let logs = filter("CAIRN_LOG");
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let mut layers = vec![if json {
        fmt.json()
            .flatten_event(true)
            .with_current_span(false)
            .with_filter(logs)
            .boxed()
    } else {
        fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(logs)
            .boxed()
    }];
    let mut out = Telemetry::default();
    if let Some(file) = telemetry.filter(|f| enabled(f)) {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(e) = &file.otlp_endpoint {
            exporter = exporter.with_endpoint(e.clone());
        }
        let exporter = exporter
            .build()
            .context("OpenTelemetry: the OTLP span exporter")?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource(file, node_id))
            .build();
        // Spans have a filter of their own, so that quiet logs do not silence traces.
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("cairn"))
                .with_filter(filter("CAIRN_TRACE"))
                .boxed(),
        );
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        cairn_sequencer::trace::enable();
        out.tracer = Some(provider);
    }
    tracing_subscriber::registry().with(layers).init();
    Ok(out)
}

/// The filter in the variable `var`, else in `RUST_LOG`, else `info,openraft=warn`.
fn filter(var: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env(var)
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"))
}

/// One reading of every family, and when it was taken.
type Reading = (Instant, Arc<Vec<MetricFamily>>);

/// The families of `registries`, read at most once a second however many instruments ask.
#[derive(Clone)]
struct Families {
    registries: Arc<Vec<prometheus::Registry>>,
    cache: Arc<Mutex<Option<Reading>>>,
}

impl Families {
    fn get(&self) -> Arc<Vec<MetricFamily>> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, f)) = &*cache
            && at.elapsed() < Duration::from_secs(1)
        {
            return f.clone();
        }
        let f: Arc<Vec<MetricFamily>> = Arc::new(self.registries.iter().flat_map(|r| r.gather()).collect());
        *cache = Some((Instant::now(), f.clone()));
        f
    }
}

/// What of a Prometheus sample an instrument reports.
#[derive(Clone, Copy)]
enum Part {
    Value,
    Sum,
    Count,
}

fn observe(families: &Families, name: &str, part: Part, to: &dyn AsyncInstrument<f64>) {
    for family in families.get().iter().filter(|f| f.name() == name) {
        for m in family.get_metric() {
            let attrs: Vec<KeyValue> = m
                .get_label()
                .iter()
                .map(|l| KeyValue::new(l.name().to_owned(), l.value().to_owned()))
                .collect();
            let v = match (family.get_field_type(), part) {
                (MetricType::COUNTER, _) => m.get_counter().get_value(),
                (MetricType::GAUGE, _) => m.get_gauge().get_value(),
                (MetricType::HISTOGRAM, Part::Sum) => m.get_histogram().get_sample_sum(),
                (MetricType::HISTOGRAM, _) => m.get_histogram().get_sample_count() as f64,
                (MetricType::SUMMARY, Part::Sum) => m.get_summary().sample_sum(),
                (MetricType::SUMMARY, _) => m.get_summary().sample_count() as f64,
                // Not made by this process's registries.
                (MetricType::UNTYPED, _) => continue,
            };
            to.observe(v, &attrs);
        }
    }
}

/// Registers an instrument for every family not seen before.
fn register(meter: &Meter, families: &Families, seen: &mut HashSet<String>) {
    for family in families.get().iter() {
        let name = family.name().to_owned();
        if !seen.insert(name.clone()) {
            continue;
        }
        let help = family.help().to_owned();
        let f = families.clone();
        match family.get_field_type() {
            MetricType::COUNTER => {
                let n = name.clone();
                meter
                    .f64_observable_counter(name)
                    .with_description(help)
                    .with_callback(move |o| observe(&f, &n, Part::Value, o))
                    .build();
            }
            MetricType::HISTOGRAM | MetricType::SUMMARY => {
                for (suffix, part) in [("_sum", Part::Sum), ("_count", Part::Count)] {
                    let (n, f) = (name.clone(), f.clone());
                    meter
                        .f64_observable_counter(format!("{name}{suffix}"))
                        .with_description(help.clone())
                        .with_callback(move |o| observe(&f, &n, part, o))
                        .build();
                }
            }
            MetricType::GAUGE | MetricType::UNTYPED => {
                let n = name.clone();
                meter
                    .f64_observable_gauge(name)
                    .with_description(help)
                    .with_callback(move |o| observe(&f, &n, Part::Value, o))
                    .build();
            }
        }
    }
}

/// Exports the metrics of `registries` over OTLP when `file` asks for it, until the returned provider
/// is shut down. Families that first appear later (a label seen for the first time) are picked up at
/// the next interval.
pub fn export_metrics(
    file: &TelemetryFile,
    node_id: u64,
    registries: Vec<prometheus::Registry>,
) -> anyhow::Result<Option<SdkMeterProvider>> {
    if !enabled(file) {
        return Ok(None);
    }
    let mut exporter = opentelemetry_otlp::MetricExporter::builder().with_tonic();
    if let Some(e) = &file.otlp_endpoint {
        exporter = exporter.with_endpoint(e.clone());
    }
    let exporter = exporter
        .build()
        .context("OpenTelemetry: the OTLP metric exporter")?;
    let mut reader = PeriodicReader::builder(exporter);
    let interval = file.metrics_interval_ms.map(Duration::from_millis);
    if let Some(i) = interval {
        reader = reader.with_interval(i);
    }
    let provider = SdkMeterProvider::builder()
        .with_reader(reader.build())
        .with_resource(resource(file, Some(node_id)))
        .build();
    let meter = provider.meter("cairn");
    let families = Families {
        registries: Arc::new(registries),
        cache: Arc::new(Mutex::new(None)),
    };
    let every = interval
        .unwrap_or(Duration::from_secs(10))
        .min(Duration::from_secs(10));
    tokio::spawn(async move {
        let mut seen = HashSet::new();
        loop {
            register(&meter, &families, &mut seen);
            tokio::time::sleep(every).await;
        }
    });
    Ok(Some(provider))
}
