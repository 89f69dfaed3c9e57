//! Opening object storage by URL: `memory://`, `file://` (a directory, created if needed, with objects
//! as files under it), `s3://` (built, not contacted), and URLs that cannot be opened.

use bytes::Bytes;
use cairn_store::{StoreUrlError, open_bucket, open_store};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

async fn round_trip(store: &dyn ObjectStore, path: &str) {
    let path = Path::from(path);
    store
        .put(&path, PutPayload::from_static(b"hello"))
        .await
        .unwrap_or_else(|e| panic!("put {path}: {e}"));
    let got = store
        .get(&path)
        .await
        .unwrap_or_else(|e| panic!("get {path}: {e}"));
    assert_eq!(got.bytes().await.expect("bytes"), Bytes::from_static(b"hello"));
}

#[tokio::test]
async fn memory_url_opens_a_fresh_store() {
    let (store, prefix) = open_store("memory://", &[]).expect("memory://");
    assert_eq!(prefix, Path::default());
    round_trip(store.as_ref(), "logs/1/checkpoint").await;

    // Each open is a store of its own.
    let (other, _) = open_store("memory://", &[]).expect("memory://");
    assert!(other.get(&Path::from("logs/1/checkpoint")).await.is_err());
}

#[tokio::test]
async fn file_url_creates_the_directory_and_writes_files_under_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("not/yet/there");
    assert!(!dir.exists());
    let url = format!("file://{}", dir.display());

    let (store, prefix) = open_store(&url, &[]).expect("file://");
    assert!(dir.is_dir());
    assert_eq!(prefix, Path::default());
    round_trip(store.as_ref(), "logs/1/checkpoint").await;
    assert_eq!(
        std::fs::read(dir.join("logs/1/checkpoint")).expect("file"),
        b"hello"
    );

    // Through a bucket, under a shard's prefix; opening an existing directory again sees it.
    let bucket = open_bucket(&url, &[]).expect("file://").child("logs/2");
    bucket
        .put_immutable("tile/0/000", Bytes::from_static(&[7; 32]))
        .await
        .expect("put");
    assert_eq!(
        std::fs::read(dir.join("logs/2/tile/0/000")).expect("file"),
        [7; 32]
    );
    let again = open_bucket(&url, &[]).expect("file://");
    assert_eq!(
        again.get("logs/2/tile/0/000").await.expect("get"),
        Some(Bytes::from_static(&[7; 32]))
    );
}

#[test]
fn file_url_under_a_regular_file_is_a_dir_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("plain");
    std::fs::write(&file, b"x").expect("write");
    let url = format!("file://{}/sub", file.display());
    assert!(matches!(open_store(&url, &[]), Err(StoreUrlError::Dir { .. })));
}

#[test]
fn s3_url_keeps_its_prefix() {
    let options = [
        ("aws_endpoint".to_owned(), "http://127.0.0.1:9".to_owned()),
        ("aws_allow_http".to_owned(), "true".to_owned()),
        ("aws_region".to_owned(), "us-east-1".to_owned()),
    ];
    let (_, prefix) = open_store("s3://bucket/some/prefix", &options).expect("s3://");
    assert_eq!(prefix, Path::from("some/prefix"));
    let bucket = open_bucket("s3://bucket", &options).expect("s3://");
    assert_eq!(bucket.prefix(), &Path::default());

    let unknown = [("no_such_option".to_owned(), "x".to_owned())];
    assert!(matches!(
        open_store("s3://bucket/p", &unknown),
        Err(StoreUrlError::Url { .. })
    ));
}

#[test]
fn unparseable_urls_are_url_errors() {
    for url in [
        "",
        "not a url",
        "/just/a/path",
        "s3//missing-colon",
        "http://[::1",
    ] {
        match open_store(url, &[]) {
            Err(StoreUrlError::Url { url: given, reason }) => {
                assert_eq!(given, url);
                assert!(!reason.is_empty());
            }
            other => panic!("{url:?}: {:?}", other.map(|(s, p)| (s.to_string(), p))),
        }
    }
}

#[test]
fn unknown_schemes_are_errors() {
    for url in [
        "ftp://example.com/logs",
        "nope://x/y",
        "mailto:someone@example.com",
    ] {
        let result = open_store(url, &[]);
        assert!(
            matches!(result, Err(StoreUrlError::Store(_))),
            "{url:?}: {:?}",
            result.map(|(s, p)| (s.to_string(), p))
        );
    }
}
