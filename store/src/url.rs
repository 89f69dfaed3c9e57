//! Opening object storage by URL: `memory://`, `file:///dir`, `s3://bucket/prefix` (with `AWS_*`
//! settings or explicit options, e.g. an S3-compatible endpoint), `gs://`, `az://`.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::memory::InMemory;
use object_store::path::Path;

use crate::bucket::Bucket;

/// An object-store URL that cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreUrlError {
    /// The URL does not parse.
    #[error("invalid object store URL {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The backend refused the configuration.
    #[error(transparent)]
    Store(#[from] object_store::Error),
    /// The local directory cannot be created.
    #[error("cannot create {path}: {source}")]
    Dir {
        /// Directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Opens an object store by URL; returns the store and the path prefix inside it. `options` are
/// backend settings such as `("aws_endpoint", "http://127.0.0.1:9000")` or `("aws_allow_http", "true")`;
/// S3 settings are also read from `AWS_*` environment variables.
pub fn open_store(
    url: &str,
    options: &[(String, String)],
) -> Result<(Arc<dyn ObjectStore>, Path), StoreUrlError> {
    let bad = |reason: String| StoreUrlError::Url {
        url: url.to_owned(),
        reason,
    };
    if url == "memory://" || url.starts_with("memory:") {
        return Ok((Arc::new(InMemory::new()), Path::default()));
    }
    if let Some(dir) = url.strip_prefix("file://") {
        std::fs::create_dir_all(dir).map_err(|source| StoreUrlError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true);
        return Ok((Arc::new(fs), Path::default()));
    }
    let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    if parsed.scheme() == "s3" {
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_url(url);
        for (k, v) in options {
            let key = k.parse().map_err(|e: object_store::Error| bad(e.to_string()))?;
            builder = builder.with_config(key, v);
        }
        let prefix = Path::from(parsed.path().trim_start_matches('/'));
        return Ok((Arc::new(builder.build()?), prefix));
    }
    let (store, prefix) = object_store::parse_url_opts(&parsed, options.iter().cloned())?;
    Ok((Arc::from(store), prefix))
}

/// [`open_store`] as a [`Bucket`] at the URL's prefix.
pub fn open_bucket(url: &str, options: &[(String, String)]) -> Result<Bucket, StoreUrlError> {
    let (store, prefix) = open_store(url, options)?;
    Ok(Bucket::new(store, prefix))
}
