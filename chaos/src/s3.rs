//! The shared object store: a real S3-protocol server (`s3s-fs`) behind a fault layer the nemesis
//! controls. The layer is an HTTP proxy in the harness: every request is forwarded with its headers
//! untouched (the SigV4 signature covers `Host`), and while a fault is on, requests are delayed or
//! answered `503 SlowDown` as an overloaded S3 does.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;

/// What the fault layer does to requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreFault {
    /// Forward as is.
    None,
    /// Delay every request by this long before forwarding it.
    Slow(Duration),
    /// Answer this share (per mille) of requests `503 SlowDown` without forwarding them.
    Failing(u32),
}

#[derive(Clone)]
struct Layer {
    upstream: String,
    fault: Arc<Mutex<StoreFault>>,
    http: reqwest::Client,
    counts: Arc<Mutex<(u64, u64)>>,
}

/// `s3s-fs` plus the fault layer in front of it; both stop when dropped.
pub struct Store {
    child: Child,
    /// The layer's URL, which nodes use as their S3 endpoint.
    pub endpoint: String,
    fault: Arc<Mutex<StoreFault>>,
    counts: Arc<Mutex<(u64, u64)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Store {
    /// Starts `s3s-fs` (from `CAIRN_S3S_FS`, else `PATH`) on loopback over `root` with a bucket
    /// `cairn`, and the fault layer on `listen_ip`.
    pub async fn start(root: &std::path::Path, listen_ip: &str) -> anyhow::Result<Self> {
        let bin = std::env::var("CAIRN_S3S_FS").unwrap_or_else(|_| "s3s-fs".into());
        std::fs::create_dir_all(root.join("cairn"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "cairn", "--secret-key", "cairn-secret"])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {bin}: scripts/test installs it (or set CAIRN_S3S_FS)"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            anyhow::ensure!(Instant::now() < deadline, "s3s-fs did not start listening");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let fault = Arc::new(Mutex::new(StoreFault::None));
        let counts = Arc::new(Mutex::new((0, 0)));
        let layer = Layer {
            upstream: format!("http://127.0.0.1:{port}"),
            fault: fault.clone(),
            http: reqwest::Client::builder().build()?,
            counts: counts.clone(),
        };
        let listener = tokio::net::TcpListener::bind((listen_ip, 0)).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new().fallback(forward).with_state(layer);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            child,
            endpoint,
            fault,
            counts,
            task,
        })
    }

    /// Sets the fault.
    pub fn set(&self, fault: StoreFault) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
    }

    /// (requests forwarded, requests failed by the layer) so far.
    pub fn counts(&self) -> (u64, u64) {
        *self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `store_options` a node needs for this store.
    pub fn options(&self) -> String {
        format!(
            "store_options = [[\"aws_endpoint\", \"{}\"], [\"aws_allow_http\", \"true\"], \
             [\"aws_access_key_id\", \"cairn\"], [\"aws_secret_access_key\", \"cairn-secret\"], \
             [\"aws_region\", \"us-east-1\"], [\"aws_virtual_hosted_style_request\", \"false\"]]\n",
            self.endpoint
        )
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn forward(State(layer): State<Layer>, req: Request) -> Response {
    let fault = *layer.fault.lock().unwrap_or_else(|p| p.into_inner());
    match fault {
        StoreFault::None => {}
        StoreFault::Slow(d) => tokio::time::sleep(d).await,
        StoreFault::Failing(per_mille) => {
            if rand::rng().random_range(0..1000) < per_mille {
                layer.counts.lock().unwrap_or_else(|p| p.into_inner()).1 += 1;
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>\
                            <Message>Please reduce your request rate.</Message></Error>";
                return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
            }
        }
    }
    layer.counts.lock().unwrap_or_else(|p| p.into_inner()).0 += 1;
    match relay(&layer, req).await {
        Ok(r) => r,
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

async fn relay(layer: &Layer, req: Request) -> anyhow::Result<Response> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let body = axum::body::to_bytes(body, 64 << 20).await?;
    let mut headers: HeaderMap = parts.headers.clone();
    headers.remove(axum::http::header::CONTENT_LENGTH);
    let resp = layer
        .http
        .request(parts.method.clone(), format!("{}{path}", layer.upstream))
        .headers(headers)
        .body(body)
        .send()
        .await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await?;
    let mut out = Response::new(Body::from(bytes));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out.headers_mut().remove(axum::http::header::TRANSFER_ENCODING);
    Ok(out)
}
