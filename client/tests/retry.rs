//! The client's retry loop against servers that answer every write with `UNAVAILABLE` and a leader hint
//! naming each other (stale views of the leadership): the client follows the first hint at once, backs
//! off on the ones after it, and gives up at its deadline with the server's status.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};
use cairn_client::{ClientError, LogClient, RetryPolicy, Wait};
use tonic::Code;

/// A gRPC endpoint answering every call with a trailers-only `UNAVAILABLE` that names `leader`.
async fn hinting_server(leader: Arc<Mutex<String>>, calls: Arc<AtomicU64>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new().fallback(move || {
        let leader = leader.clone();
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            let mut h = HeaderMap::new();
            h.insert("content-type", HeaderValue::from_static("application/grpc"));
            h.insert("grpc-status", HeaderValue::from_static("14"));
            h.insert("grpc-message", HeaderValue::from_static("not the leader"));
            let hint = leader.lock().map(|l| l.clone()).unwrap_or_default();
            if let Ok(v) = HeaderValue::from_str(&hint) {
                h.insert("x-cairn-leader", v);
            }
            h
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

#[tokio::test]
async fn bouncing_leader_hints_back_off_and_end_at_the_deadline() -> anyhow::Result<()> {
    let a_names = Arc::new(Mutex::new(String::new()));
    let b_names = Arc::new(Mutex::new(String::new()));
    let calls = Arc::new(AtomicU64::new(0));
    let a = hinting_server(a_names.clone(), calls.clone()).await?;
    let b = hinting_server(b_names.clone(), calls.clone()).await?;
    *a_names.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = b.clone();
    *b_names.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = a.clone();

    let policy = RetryPolicy {
        deadline: Duration::from_secs(1),
        backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        ..RetryPolicy::default()
    };
    let mut client = LogClient::new(&a)?.with_retry(policy)?;
    let start = Instant::now();
    let err = client
        .submit(vec![b"entry".to_vec()], Wait::Sequenced)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a write no server accepts succeeded"))?;
    let took = start.elapsed();
    let n = calls.load(Ordering::SeqCst);
    // After the first hint the pauses are 50, 100, 200, 200, ... ms: about eight calls fit in 1 s, where
    // following hints at full speed would make hundreds.
    assert!(n >= 3, "the client gave up after {n} calls");
    assert!(
        n <= 15,
        "{n} calls in {took:?}: hints are followed without backoff"
    );
    assert!(
        took <= Duration::from_secs(2),
        "the deadline was not kept: {took:?}"
    );
    assert!(
        matches!(
            err,
            ClientError::Status {
                code: Code::Unavailable,
                ..
            }
        ),
        "unexpected error {err:?}"
    );
    assert_eq!(client.failed_attempts().len() as u64, n - 1);
    Ok(())
}
