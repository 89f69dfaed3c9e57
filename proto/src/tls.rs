//! TLS on every listener and every connection between Cairn processes (rustls, AWS-LC provider).
//!
//! A node has one certificate chain and key (PEM files) and the cluster CA (PEM). It serves the chain
//! on its gRPC API and HTTP listeners (server authentication only: clients are the public) and on its
//! Raft listener, where the peer must present a client certificate issued by the cluster CA: a node
//! without one, or with one from another CA, cannot connect, so it can neither receive entries nor
//! vote. Any certificate of that CA is accepted there: the CA must issue only node certificates.
//! Connections to peers (Raft, and writes forwarded to a shard's leader's gRPC API) check the peer's
//! chain against the cluster CA and present the node's certificate when asked (Raft asks; the public
//! gRPC API does not).
//!
//! [`Tls`] watches its three files and reloads them when their contents change (a Kubernetes Secret
//! update swaps them in place): new connections get the new material, established ones keep theirs, and a
//! file that does not parse is logged and the previous material kept.
//!
//! [`Incoming`] accepts TCP connections, completes TLS handshakes off the accept loop (10 s at
//! most each, 1,024 at once; connections beyond that wait in the kernel's backlog), and yields connections for tonic (`Stream`) and for axum (through a wrapper implementing
//! its `Listener`). [`Connector`] opens TLS connections for tonic clients; [`client_config`] builds the
//! configuration of a command-line client (`--tls-ca`, `--tls-cert`, `--tls-key`).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once per listener; the accept loop waits for a slot beyond that.
const MAX_HANDSHAKES: usize = 1024;

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file holds no usable PEM item of the kind needed.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// rustls refused the material (a key that does not match the certificate, an unusable CA).
    #[error("{0}")]
    Config(String),
}

/// The files of a node's TLS material.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The node's certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// The node's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The cluster CA (PEM, one or more certificates): Raft peers' certificates must chain to it.
    pub ca: PathBuf,
}

/// Which listener: what it offers by ALPN, and whether it asks for client certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serve {
    /// The HTTP listener (HTTP/2 and HTTP/1.1), public: no client certificate asked.
    Http,
    /// The gRPC API (HTTP/2), public: no client certificate asked.
    Grpc,
    /// The Raft listener (HTTP/2): a certificate issued by the cluster CA is required.
    Raft,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The certificates of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            what: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        what: format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
    })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            what: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn config_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

/// The configuration of a client: trusting `ca` (PEM), or the system's roots without one; presenting
/// `identity` (certificate chain and key files) when given. ALPN `h2` (gRPC).
pub fn client_config(ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> Result<ClientConfig, TlsError> {
    let roots = match ca {
        Some(ca) => roots(ca)?,
        None => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::Config(
                    "no system root certificates found; give the server's CA with --tls-ca".into(),
                ));
            }
            roots
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(config_err)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// What was loaded from the files, and when they were last changed.
struct Loaded {
    http: Arc<ServerConfig>,
    grpc: Arc<ServerConfig>,
    raft: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    stamp: u64,
}

/// A node's TLS material, reloaded when its files change.
pub struct Tls {
    files: TlsFiles,
    loaded: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

/// A fingerprint of the three files' contents (unreadable ones included as such): a change of any
/// byte is a change, whatever the file times say.
fn stamp(files: &TlsFiles) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in [&files.cert, &files.key, &files.ca] {
        std::fs::read(p).ok().hash(&mut h);
    }
    h.finish()
}

fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let stamp = stamp(files);
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let ca = Arc::new(roots(&files.ca)?);
    let server = |serve: Serve| -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config_err)?;
        let builder = match serve {
            Serve::Http | Serve::Grpc => builder.with_no_client_auth(),
            Serve::Raft => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(ca.clone(), provider())
                    .build()
                    .map_err(config_err)?,
            ),
        };
        let mut config = builder
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| TlsError::Config(format!("{}: {e}", files.key.display())))?;
        config.alpn_protocols = match serve {
            Serve::Http => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Serve::Grpc | Serve::Raft => vec![b"h2".to_vec()],
        };
        Ok(Arc::new(config))
    };
    let mut client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .with_root_certificates(ca.clone())
        .with_client_auth_cert(certs.clone(), key.clone_key())
        .map_err(config_err)?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded {
        http: server(Serve::Http)?,
        grpc: server(Serve::Grpc)?,
        raft: server(Serve::Raft)?,
        client: Arc::new(client),
        stamp,
    })
}

impl Tls {
    /// Loads the files; fails with what is wrong with them.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let loaded = load(&files)?;
        Ok(Arc::new(Self {
            files,
            loaded: RwLock::new(Arc::new(loaded)),
        }))
    }

    fn current(&self) -> Arc<Loaded> {
        self.loaded.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reloads the files if any changed since the last load: `Ok(true)` if new material is in use.
    /// On an error the previous material stays in use.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        if stamp(&self.files) == self.current().stamp {
            return Ok(false);
        }
        let fresh = load(&self.files)?;
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(true)
    }

    /// Checks the files every `every` until the process ends, reloading them when they change.
    pub fn watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        let mut failed_stamp = None;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match tls.reload_if_changed() {
                    Ok(true) => {
                        tracing::info!(cert = %tls.files.cert.display(), "reloaded the TLS certificate, key and CA")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        // Once per change of the files, not once per tick.
                        let now = Some(stamp(&tls.files));
                        if failed_stamp != now {
                            tracing::warn!(error = %e, "TLS files changed but cannot be used; keeping the previous ones");
                            failed_stamp = now;
                        }
                    }
                }
            }
        })
    }

    fn server_config(&self, serve: Serve) -> Arc<ServerConfig> {
        let loaded = self.current();
        match serve {
            Serve::Http => loaded.http.clone(),
            Serve::Grpc => loaded.grpc.clone(),
            Serve::Raft => loaded.raft.clone(),
        }
    }

    /// A connector to peers: their chains checked against the cluster CA, this node's certificate
    /// presented.
    pub fn connector(self: &Arc<Self>) -> Connector {
        Connector {
            source: ClientSource::Node(self.clone()),
            timeout: Duration::from_secs(5),
        }
    }
}

/// A connection accepted by [`Incoming`]: plain TCP, or TLS over TCP.
pub enum Conn {
    /// Without TLS.
    Plain(TcpStream),
    /// With TLS (boxed: the session state is large).
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp().connect_info()
    }
}

/// Accepted connections of one listener, TLS handshakes done (when TLS is on).
pub struct Incoming {
    rx: mpsc::Receiver<(Conn, SocketAddr)>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Incoming {
    /// Accepts on `listener` (with `TCP_NODELAY`); with `tls`, each connection completes a handshake
    /// first (as `serve` says: ALPN, client certificates), on its own task, at most
    /// [`MAX_HANDSHAKES`] at once. Connections whose handshake fails are dropped, and logged (at `info`
    /// on the Raft listener: a peer refused).
    pub fn new(listener: TcpListener, tls: Option<(Arc<Tls>, Serve)>) -> Self {
        // A bound listener always has an address; the fallback only keeps this infallible.
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, rx) = mpsc::channel(64);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        let task = tokio::spawn(async move {
            loop {
                // A slot first: slow or silent clients hold at most MAX_HANDSHAKES descriptors here.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, %local, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let Some((tls, serve)) = &tls else {
                    drop(slot);
                    if tx.send((Conn::Plain(tcp), peer)).await.is_err() {
                        return;
                    }
                    continue;
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config(*serve));
                let (tx, serve) = (tx.clone(), *serve);
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                    drop(slot);
                    match handshake {
                        Ok(Ok(s)) => {
                            let _ = tx.send((Conn::Tls(Box::new(s)), peer)).await;
                        }
                        Ok(Err(e)) if serve == Serve::Raft => {
                            tracing::info!(%peer, %local, error = %e, "refused a peer's TLS connection");
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, %local, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, %local, "TLS handshake timed out"),
                    }
                });
            }
        });
        Self { rx, local, task }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The next connection and its peer address.
    pub async fn accept(&mut self) -> (Conn, SocketAddr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task never ends while `self` lives.
            None => std::future::pending().await,
        }
    }
}

impl From<TcpListener> for Incoming {
    /// Plain TCP.
    fn from(listener: TcpListener) -> Self {
        Self::new(listener, None)
    }
}

impl futures_core::Stream for Incoming {
    type Item = io::Result<Conn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|c| c.map(|(conn, _)| Ok(conn)))
    }
}

#[derive(Clone)]
enum ClientSource {
    Node(Arc<Tls>),
    Fixed(Arc<ClientConfig>),
}

/// Opens TLS connections for a tonic `Endpoint` (`connect_with_connector_lazy`): TCP to the URI's
/// host and port (443 by default), `TCP_NODELAY`, the host name (or IP address) checked against the
/// server's certificate.
#[derive(Clone)]
pub struct Connector {
    source: ClientSource,
    timeout: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector")
    }
}

impl Connector {
    /// A connector with a fixed client configuration (see [`client_config`]).
    pub fn new(config: ClientConfig) -> Self {
        Self {
            source: ClientSource::Fixed(Arc::new(config)),
            timeout: Duration::from_secs(5),
        }
    }

    /// The same connector, giving up on a connection (TCP and handshake) after `timeout` (5 s by
    /// default).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn config(&self) -> Arc<ClientConfig> {
        match &self.source {
            ClientSource::Node(tls) => tls.current().client.clone(),
            ClientSource::Fixed(c) => c.clone(),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for Connector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (config, timeout) = (self.config(), self.timeout);
        let connect = async move {
            let host = uri
                .host()
                .ok_or_else(|| format!("no host in {uri}"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let name = ServerName::try_from(host.clone()).map_err(|e| format!("server name {host}: {e}"))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok::<_, BoxError>(hyper_util::rt::TokioIo::new(tls))
        };
        Box::pin(async move {
            tokio::time::timeout(timeout, connect)
                .await
                .map_err(|_| format!("TLS connection not established within {timeout:?}"))?
        })
    }
}
