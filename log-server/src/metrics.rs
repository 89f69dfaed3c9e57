//! Request metrics of the write APIs: requests by API, method and status, and latency histograms, as a
//! tower layer in front of the gRPC server and the Rekor v2 HTTP routes.
//!
//! The method label is one of a fixed set (unknown paths count as `other`), so a scanner cannot grow
//! the series without bound. A gRPC status is read from the response headers, where tonic puts every
//! error of a unary call ("trailers-only" answers); a call whose headers carry no status succeeded as
//! far as the layer can tell (a stream that fails later reports that in its trailers, which the layer
//! does not wait for).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Methods a label may name (exact paths); anything else is `other`.
const KNOWN_GRPC: [&str; 12] = [
    "/cairn.v1.Log/AddEntries",
    "/cairn.v1.Log/AddEntriesStream",
    "/cairn.v1.Log/GetCheckpoint",
    "/cairn.v1.Log/GetInclusionProof",
    "/cairn.v1.Log/GetConsistencyProof",
    "/cairn.v1.Log/ListShards",
    "/cairn.v1.Log/FreezeShard",
    "/dev.sigstore.rekor.v2.Rekor/CreateEntry",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The write APIs' request counters and latency histograms.
#[derive(Clone)]
pub struct ApiMetrics {
    registry: Registry,
    requests: IntCounterVec,
    seconds: HistogramVec,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "cairn_api_requests_total",
                "Write API requests by API (grpc, http), method and status (gRPC code or HTTP status)",
            ),
            &["api", "method", "code"],
        )
        .expect("valid metric");
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "cairn_api_request_seconds",
                "Write API latency until the response headers (a PUBLISHED write includes the wait)",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["api", "method"],
        )
        .expect("valid metric");
        registry.register(Box::new(requests.clone())).expect("register");
        registry.register(Box::new(seconds.clone())).expect("register");
        Self {
            registry,
            requests,
            seconds,
        }
    }
}

impl ApiMetrics {
    /// The registry holding the metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A layer recording requests as `api` (`grpc` or `http`).
    pub fn layer(&self, api: &'static str) -> MetricsLayer {
        MetricsLayer {
            metrics: self.clone(),
            api,
        }
    }
}

fn method_label(api: &str, path: &str) -> String {
    if api == "grpc" {
        if KNOWN_GRPC.contains(&path) {
            return path.trim_start_matches('/').to_owned();
        }
        return "other".into();
    }
    if path.ends_with("/api/v2/log/entries") {
        "create_entry".into()
    } else {
        "other".into()
    }
}

/// See [`ApiMetrics::layer`].
#[derive(Clone)]
pub struct MetricsLayer {
    metrics: ApiMetrics,
    api: &'static str,
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
            api: self.api,
        }
    }
}

/// The service [`MetricsLayer`] wraps around another.
#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: ApiMetrics,
    api: &'static str,
}

impl<S, B, RB> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let api = self.api;
        let method = method_label(api, req.uri().path());
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            let code = match &result {
                Ok(res) if api == "grpc" => res
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0")
                    .to_owned(),
                Ok(res) => res.status().as_str().to_owned(),
                Err(_) => "error".to_owned(),
            };
            metrics
                .requests
                .with_label_values(&[api, method.as_str(), code.as_str()])
                .inc();
            metrics
                .seconds
                .with_label_values(&[api, method.as_str()])
                .observe(started.elapsed().as_secs_f64());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::method_label;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(
            method_label("grpc", "/cairn.v1.Log/AddEntries"),
            "cairn.v1.Log/AddEntries"
        );
        assert_eq!(method_label("grpc", "/evil/AAAA"), "other");
        assert_eq!(method_label("grpc", "/cairn.v1.Log/Nonsense"), "other");
        assert_eq!(method_label("http", "/logs/2/api/v2/log/entries"), "create_entry");
        assert_eq!(method_label("http", "/api/v2/log/entries"), "create_entry");
        assert_eq!(method_label("http", "/whatever"), "other");
    }
}
