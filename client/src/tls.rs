//! A client's TLS settings: which CA to trust (the system's roots without one) and, for servers that
//! ask, which certificate to present. The same settings make the gRPC connections ([`Self::connector`],
//! used by [`crate::LogClient::with_servers_tls`]) and the HTTP client of the read path ([`Self::http_client`]).

use std::path::PathBuf;
use std::time::Duration;

use cairn_proto::tls::{Connector, client_config};

use crate::ClientError;

/// TLS settings of a client (`--tls-ca`, `--tls-cert`, `--tls-key`).
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// The CA (PEM) the servers' certificates must chain to; the system's roots when `None`.
    pub ca: Option<PathBuf>,
    /// A client certificate chain (PEM) to present, with its key.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key: Option<PathBuf>,
}

fn invalid(e: impl std::fmt::Display) -> ClientError {
    ClientError::Invalid(format!("TLS: {e}"))
}

impl TlsOptions {
    fn identity(&self) -> Result<Option<(&std::path::Path, &std::path::Path)>, ClientError> {
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Ok(Some((c.as_path(), k.as_path()))),
            (None, None) => Ok(None),
            _ => Err(invalid(
                "a client certificate needs both --tls-cert and --tls-key",
            )),
        }
    }

    /// The connector for `https://` gRPC servers.
    pub fn connector(&self) -> Result<Connector, ClientError> {
        let config = client_config(self.ca.as_deref(), self.identity()?).map_err(invalid)?;
        Ok(Connector::new(config))
    }

    /// An HTTP client for `https://` read paths with these settings (and `timeout` per request).
    pub fn http_client(&self, timeout: Option<Duration>) -> Result<reqwest::Client, ClientError> {
        let mut builder = reqwest::Client::builder();
        if let Some(t) = timeout {
            builder = builder.timeout(t);
        }
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).map_err(|e| invalid(format!("reading {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| invalid(format!("{}: {e}", ca.display())))?;
            builder = builder.tls_certs_only(certs);
        }
        if let Some((cert, key)) = self.identity()? {
            let mut pem =
                std::fs::read(cert).map_err(|e| invalid(format!("reading {}: {e}", cert.display())))?;
            pem.push(b'\n');
            pem.extend(std::fs::read(key).map_err(|e| invalid(format!("reading {}: {e}", key.display())))?);
            builder = builder.identity(reqwest::Identity::from_pem(&pem).map_err(invalid)?);
        }
        builder.build().map_err(invalid)
    }
}
