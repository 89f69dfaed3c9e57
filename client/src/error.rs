//! Client errors.

/// What went wrong on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status (after retries, when the status was retryable).
    #[error("server: {code:?}: {message}")]
    Status {
        /// gRPC status code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
    /// The server could not be reached.
    #[error("transport: {0}")]
    Transport(String),
    /// An HTTP request failed or returned an unexpected status.
    #[error("http: {0}")]
    Http(String),
    /// Something the server sent does not verify.
    #[error("verification failed: {0}")]
    Verify(String),
    /// The caller passed something unusable.
    #[error("{0}")]
    Invalid(String),
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        Self::Status {
            code: s.code(),
            message: s.message().to_owned(),
        }
    }
}

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        Self::Http(e.to_string())
    }
}
