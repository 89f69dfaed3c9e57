//! OpenTelemetry export, received by an OTLP collector of our own (a tonic server implementing the
//! collector's `TraceService` and `MetricsService` from `opentelemetry-proto`): three `cairn serve`
//! processes export to it through `[telemetry]`; one submission sent to a follower must arrive as one
//! trace whose spans cover the follower's API call, the forward, the leader's API call, the Raft
//! proposal, apply and publication, linked parent to child across the two processes, with the shard and
//! the entry's index as attributes; and the processes' metrics must arrive too.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::{LogClient, Wait};
use common::{Server, cluster_ports, free_port, keygen_shards, node_config};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;
use tonic::{Request, Response, Status};

const T: Duration = Duration::from_secs(60);

/// What the collector received: spans with their process's `service.instance.id`, and metrics.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    metrics: Arc<Mutex<Vec<(String, Metric)>>>,
}

impl Collector {
    fn spans(&self) -> anyhow::Result<Vec<(String, Span)>> {
        Ok(self
            .spans
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone())
    }

    fn metrics(&self) -> anyhow::Result<Vec<(String, Metric)>> {
        Ok(self
            .metrics
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone())
    }
}

fn instance(attrs: &[KeyValue]) -> String {
    attrs
        .iter()
        .find(|kv| kv.key == "service.instance.id")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().map_err(|_| Status::internal("poisoned"))?;
        for rs in req.into_inner().resource_spans {
            let who = instance(&rs.resource.map(|r| r.attributes).unwrap_or_default());
            for ss in rs.scope_spans {
                spans.extend(ss.spans.into_iter().map(|s| (who.clone(), s)));
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        req: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let mut metrics = self.metrics.lock().map_err(|_| Status::internal("poisoned"))?;
        for rm in req.into_inner().resource_metrics {
            let who = instance(&rm.resource.map(|r| r.attributes).unwrap_or_default());
            for sm in rm.scope_metrics {
                metrics.extend(sm.metrics.into_iter().map(|m| (who.clone(), m)));
            }
        }
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// An integer attribute (`tracing-opentelemetry` sends unsigned fields as decimal strings).
fn int(span: &Span, key: &str) -> Option<i64> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::IntValue(v) => Some(*v),
            any_value::Value::StringValue(v) => v.parse().ok(),
            _ => None,
        }
    })
}

/// The largest value any data point of the metrics named `name` carried.
fn largest(metrics: &[(String, Metric)], name: &str) -> Option<f64> {
    let points = metrics
        .iter()
        .filter(|(_, m)| m.name == name)
        .flat_map(|(_, m)| match &m.data {
            Some(metric::Data::Gauge(g)) => g.data_points.clone(),
            Some(metric::Data::Sum(s)) => s.data_points.clone(),
            _ => Vec::new(),
        });
    points
        .filter_map(|p| match p.value? {
            number_data_point::Value::AsDouble(v) => Some(v),
            number_data_point::Value::AsInt(v) => Some(v as f64),
        })
        .reduce(f64::max)
}

/// The node (index) whose `/metrics` says it leads shard 1.
async fn leader(http: &reqwest::Client, servers: &[Server]) -> anyhow::Result<usize> {
    let deadline = Instant::now() + T;
    loop {
        for (i, s) in servers.iter().enumerate() {
            let text = http
                .get(format!("{}/metrics", s.http))
                .send()
                .await?
                .text()
                .await?;
            if text.lines().any(|l| l == "cairn_raft_is_leader{shard=\"1\"} 1") {
                return Ok(i);
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "no leader of shard 1");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_through_a_follower_is_one_trace_and_metrics_arrive() -> anyhow::Result<()> {
    let collector = Collector::default();
    let port = free_port()?;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(collector.clone()))
        .add_service(MetricsServiceServer::new(collector.clone()))
        .serve(addr);
    tokio::spawn(server);

    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (shards, _) = keygen_shards(d, "otel.test", 1, true)?;
    let (ports, peers) = cluster_ports(3)?;
    let telemetry = format!(
        "[telemetry]\notlp_endpoint = \"http://127.0.0.1:{port}\"\nservice_name = \"cairn-test\"\n\
         metrics_interval_ms = 500\n"
    );
    let mut servers = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let (node_dir, path) = node_config(d, i + 1, *p, "", &telemetry, &format!("{peers}{shards}"))?;
        servers.push(Server::start(
            &node_dir,
            &["--config", &path.display().to_string()],
        )?);
    }
    let http = reqwest::Client::new();
    let lead = leader(&http, &servers).await?;
    let follower = (lead + 1) % servers.len();

    let mut client = LogClient::new(&servers[follower].grpc)?;
    let entry = b"one traced entry".to_vec();
    let index = client.submit(vec![entry], Wait::Published).await?[0].index as i64;
    let me = format!("node-{}", follower + 1);

    // The trace: from the follower's API span (the only call the follower served), every span with
    // its trace id, by span id.
    let deadline = Instant::now() + T;
    let trace = loop {
        let spans = collector.spans()?;
        let root = spans
            .iter()
            .find(|(who, s)| *who == me && s.name == "add_entries" && s.parent_span_id.is_empty());
        if let Some((_, root)) = root {
            let trace: Vec<(String, Span)> = spans
                .iter()
                .filter(|(_, s)| s.trace_id == root.trace_id)
                .cloned()
                .collect();
            let names: Vec<&str> = trace.iter().map(|(_, s)| s.name.as_str()).collect();
            if ["forward", "raft_append", "apply", "publish"]
                .iter()
                .all(|n| names.contains(n))
                && names.iter().filter(|n| **n == "add_entries").count() == 2
            {
                break trace;
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no complete trace; spans received: {:?}",
            spans
                .iter()
                .map(|(who, s)| format!("{who}:{}", s.name))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let by_id: HashMap<&[u8], &(String, Span)> = trace.iter().map(|t| (t.1.span_id.as_slice(), t)).collect();
    let one = |who: &str, name: &str| {
        trace
            .iter()
            .find(|(w, s)| w == who && s.name == name)
            .map(|(_, s)| s)
            .ok_or_else(|| anyhow::anyhow!("no {name} span from {who}"))
    };
    // Whether `ancestor` is `span`'s parent, or its parent's, and so on.
    let descends = |span: &Span, ancestor: &Span| {
        let mut at = span.parent_span_id.as_slice();
        while let Some((_, p)) = by_id.get(at) {
            if p.span_id == ancestor.span_id {
                return true;
            }
            at = p.parent_span_id.as_slice();
        }
        false
    };
    let api = one(&me, "add_entries")?;
    let forward = one(&me, "forward")?;
    // The leader is whichever process served the forward (leadership may have moved since it was read
    // from /metrics).
    let (them, served) = trace
        .iter()
        .find(|(w, s)| *w != me && s.name == "add_entries")
        .map(|(w, s)| (w.clone(), s))
        .ok_or_else(|| anyhow::anyhow!("no add_entries span from another process"))?;
    let proposal = one(&them, "raft_append")?;
    let apply = one(&them, "apply")?;
    let publish = one(&them, "publish")?;
    anyhow::ensure!(
        descends(forward, api),
        "the forward is not within the follower's call"
    );
    anyhow::ensure!(
        served.parent_span_id == forward.span_id,
        "the leader's call does not continue the forward (traceparent)"
    );
    anyhow::ensure!(
        descends(proposal, served),
        "the proposal is not within the leader's call"
    );
    anyhow::ensure!(
        apply.parent_span_id == proposal.span_id,
        "apply is not the proposal's child"
    );
    anyhow::ensure!(
        publish.parent_span_id == proposal.span_id,
        "publish is not the proposal's child"
    );
    for (span, what) in [(proposal, "raft_append"), (apply, "apply"), (publish, "publish")] {
        anyhow::ensure!(
            int(span, "shard") == Some(1),
            "{what} has no shard attribute 1: {:?}",
            span.attributes
        );
    }
    anyhow::ensure!(
        int(proposal, "first_index") == Some(index),
        "raft_append first_index"
    );
    anyhow::ensure!(int(apply, "first_index") == Some(index), "apply first_index");
    anyhow::ensure!(
        int(publish, "from").is_some_and(|f| f <= index) && int(publish, "size").is_some_and(|s| s > index),
        "publish is not the round that published index {index}: {:?}",
        publish.attributes
    );
    println!(
        "trace of entry {index}: {}",
        trace
            .iter()
            .map(|(w, s)| format!("{w}:{}", s.name))
            .collect::<Vec<_>>()
            .join(" ")
    );

    // An HTTP write continues the caller's trace from its `traceparent` header.
    let (trace_id, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let added = http
        .post(format!("{}/logs/1/add", servers[follower].http))
        .header("traceparent", format!("00-{trace_id}-{parent}-01"))
        .body("an entry whose caller traces it")
        .send()
        .await?;
    anyhow::ensure!(added.status().is_success(), "POST /add: {}", added.status());
    let deadline = Instant::now() + T;
    loop {
        let spans = collector.spans()?;
        let continued = spans.iter().any(|(who, s)| {
            *who == me
                && s.name == "http_add"
                && hex::encode(&s.trace_id) == trace_id
                && hex::encode(&s.parent_span_id) == parent
        });
        if continued {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no http_add span in the caller's trace"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Metrics: the leader's API and sequencer series, with the entry counted.
    let deadline = Instant::now() + T;
    loop {
        let metrics = collector.metrics()?;
        let from_leader: Vec<(String, Metric)> = metrics.into_iter().filter(|(w, _)| *w == them).collect();
        let sequenced = largest(&from_leader, "cairn_shard_sequenced_entries");
        let requests = largest(&from_leader, "cairn_api_requests_total");
        let proposals = largest(&from_leader, "cairn_raft_proposal_seconds_count");
        if sequenced.is_some_and(|v| v >= 1.0)
            && requests.is_some_and(|v| v >= 1.0)
            && proposals.is_some_and(|v| v >= 1.0)
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "metrics did not arrive: sequenced {sequenced:?}, requests {requests:?}, proposals {proposals:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for s in servers {
        anyhow::ensure!(s.stop()?.success(), "unclean exit");
    }
    Ok(())
}
