//! Errors of the submission API and their one mapping to gRPC statuses.

use std::time::Duration;

use cairn_proto::metadata::{LEADER, RETRY_AFTER_MS};
use cairn_sequencer::SequencerError;
use cairn_store::ReadError;
use tonic::{Code, Status};

/// How an answer saying "not the leader" begins (followed by the shard id).
pub(crate) const NOT_LEADER: &str = "this node does not lead shard";

/// What went wrong, classified by how the caller must react.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The request is malformed; the message says what to fix.
    #[error("{0}")]
    Invalid(String),
    /// No token, or a token that is not configured.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The caller is known but may not do this.
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// The caller must slow down: queue full or over its rate.
    #[error("{reason}; retry after {} ms", retry_after.as_millis())]
    Busy {
        /// Why.
        reason: String,
        /// Suggested wait.
        retry_after: Duration,
    },
    /// No leader can take the request right now; retrying (elsewhere) is safe.
    #[error("{reason}")]
    Unavailable {
        /// Why.
        reason: String,
        /// The leader's gRPC address, when known.
        leader: Option<String>,
    },
    /// The shard's leader could not be reached, or no longer leads it: retry at the new leader.
    #[error("{reason}")]
    LeaderUnreachable {
        /// Why.
        reason: String,
        /// The new leader's gRPC address, when known.
        leader: Option<String>,
    },
    /// Every shard is frozen: nothing will accept entries until a new shard is added.
    #[error("{0}")]
    Frozen(String),
    /// The request cannot be carried out in the cluster's present state; nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// No such shard, or a tree size that is not published yet.
    #[error("{0}")]
    NotFound(String),
    /// Publication took longer than the wait allows; the entries are sequenced and will be published.
    #[error("{0}")]
    Timeout(String),
    /// A failure inside the log; details are in the server's log.
    #[error("internal error")]
    Internal(String),
    /// The leader's answer to a forwarded call (anything but a failure to reach it), passed on.
    #[error("{}", .0.message())]
    Forwarded(Status),
}

impl LogError {
    /// The same error reported from a sequencer, with `leader_addr` resolving a leader's node id to its
    /// gRPC address.
    pub fn from_sequencer(e: SequencerError, leader_addr: impl Fn(u64) -> Option<String>) -> Self {
        match e {
            SequencerError::NotLeader { shard, leader } => Self::Unavailable {
                reason: format!("{NOT_LEADER} {shard}"),
                leader: leader.and_then(|(id, _)| leader_addr(id)),
            },
            SequencerError::Pushback { retry_after } => Self::Busy {
                reason: "the shard's queue is full".into(),
                retry_after,
            },
            // A shard frozen after routing chose it: the retry is routed among the remaining shards.
            SequencerError::Frozen(shard) => Self::Unavailable {
                reason: format!("shard {shard} was frozen; retry"),
                leader: None,
            },
            SequencerError::UnknownShard(shard) => Self::NotFound(format!("unknown shard {shard}")),
            SequencerError::Invalid(m) => Self::Invalid(m),
            SequencerError::Timeout(what) => Self::Timeout(format!("timed out {what}")),
            SequencerError::Retryable(m) => Self::Unavailable {
                reason: format!("temporarily unavailable: {m}"),
                leader: None,
            },
            SequencerError::Refused(m) => Self::Refused(m),
            SequencerError::Fatal(m) => Self::Internal(m),
        }
    }
}

impl LogError {
    /// The same error with `what` before its message (the caller's code and hints are kept).
    pub(crate) fn in_context(self, what: &str) -> Self {
        let put = |m: String| format!("{what}: {m}");
        match self {
            Self::Invalid(m) => Self::Invalid(put(m)),
            Self::Busy { reason, retry_after } => Self::Busy {
                reason: put(reason),
                retry_after,
            },
            Self::Unavailable { reason, leader } => Self::Unavailable {
                reason: put(reason),
                leader,
            },
            Self::LeaderUnreachable { reason, leader } => Self::LeaderUnreachable {
                reason: put(reason),
                leader,
            },
            Self::Frozen(m) => Self::Frozen(put(m)),
            Self::Refused(m) => Self::Refused(put(m)),
            Self::NotFound(m) => Self::NotFound(put(m)),
            Self::Timeout(m) => Self::Timeout(put(m)),
            Self::Forwarded(s) => Self::Forwarded(Status::with_metadata(
                s.code(),
                put(s.message().to_owned()),
                s.metadata().clone(),
            )),
            other @ (Self::Unauthenticated(_) | Self::PermissionDenied(_) | Self::Internal(_)) => other,
        }
    }
}

impl LogError {
    /// The one mapping of a status received from a forwarded call. A transport failure (no answer
    /// from the leader: `UNKNOWN` "transport error", a reset that tonic reports as `INTERNAL`, a call
    /// cancelled before the leader answered) or an answer saying it no longer leads the shard is
    /// [`LogError::LeaderUnreachable`]; the leader's other `UNAVAILABLE`s stay `Unavailable`. Both are
    /// `UNAVAILABLE` to the caller, retryable, with the leader hint the status carried. Everything else
    /// is the leader's answer, passed on.
    pub fn from_forwarded(s: Status) -> Self {
        let leader = s
            .metadata()
            .get(LEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let no_answer =
            std::error::Error::source(&s).is_some() || matches!(s.code(), Code::Unknown | Code::Cancelled);
        if no_answer {
            return Self::LeaderUnreachable {
                reason: format!("forwarding to the shard's leader failed: {}", s.message()),
                leader,
            };
        }
        match s.code() {
            Code::Unavailable if s.message().starts_with(NOT_LEADER) => Self::LeaderUnreachable {
                reason: s.message().to_owned(),
                leader,
            },
            Code::Unavailable => Self::Unavailable {
                reason: s.message().to_owned(),
                leader,
            },
            _ => Self::Forwarded(s),
        }
    }
}

impl LogError {
    /// The HTTP status of this error on the HTTP write routes (`/add`, the Rekor v2 API), with the gRPC
    /// code that grpc-gateway style bodies carry.
    pub(crate) fn http_status(&self) -> (http::StatusCode, Code) {
        use http::StatusCode as S;
        match self {
            LogError::Invalid(_) => (S::BAD_REQUEST, Code::InvalidArgument),
            LogError::Unauthenticated(_) => (S::UNAUTHORIZED, Code::Unauthenticated),
            LogError::PermissionDenied(_) => (S::FORBIDDEN, Code::PermissionDenied),
            LogError::Busy { .. } | LogError::Unavailable { .. } | LogError::LeaderUnreachable { .. } => {
                (S::SERVICE_UNAVAILABLE, Code::Unavailable)
            }
            LogError::Frozen(_) => (S::METHOD_NOT_ALLOWED, Code::Unimplemented),
            LogError::Refused(_) => (S::CONFLICT, Code::FailedPrecondition),
            LogError::NotFound(_) => (S::NOT_FOUND, Code::NotFound),
            LogError::Timeout(_) => (S::GATEWAY_TIMEOUT, Code::DeadlineExceeded),
            LogError::Internal(_) => (S::INTERNAL_SERVER_ERROR, Code::Internal),
            LogError::Forwarded(s) => {
                let status = match s.code() {
                    Code::InvalidArgument => S::BAD_REQUEST,
                    Code::Unavailable | Code::ResourceExhausted => S::SERVICE_UNAVAILABLE,
                    Code::DeadlineExceeded => S::GATEWAY_TIMEOUT,
                    Code::Unauthenticated => S::UNAUTHORIZED,
                    Code::PermissionDenied => S::FORBIDDEN,
                    Code::FailedPrecondition => S::METHOD_NOT_ALLOWED,
                    Code::NotFound => S::NOT_FOUND,
                    _ => S::INTERNAL_SERVER_ERROR,
                };
                (status, s.code())
            }
        }
    }

    /// The `Retry-After` (whole seconds, at least 1) of a retryable error on the HTTP write routes.
    pub(crate) fn retry_after_secs(&self) -> Option<u64> {
        match self {
            LogError::Busy { retry_after, .. } => Some(retry_after.as_secs_f64().ceil().max(1.0) as u64),
            LogError::Unavailable { .. } | LogError::LeaderUnreachable { .. } => Some(1),
            LogError::Forwarded(s) if s.code() == Code::ResourceExhausted => {
                let ms = s
                    .metadata()
                    .get(RETRY_AFTER_MS)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1_000);
                Some(ms.div_ceil(1_000).max(1))
            }
            _ => None,
        }
    }
}

impl From<ReadError> for LogError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::NoCheckpoint => Self::NotFound("the shard has no published checkpoint yet".into()),
            ReadError::NotPublished(m) => Self::NotFound(m),
            ReadError::NotFound(m) => Self::NotFound(format!("{m} not found")),
            ReadError::Invalid(m) => Self::Invalid(m),
            ReadError::Unavailable(m) => Self::Unavailable {
                reason: m,
                leader: None,
            },
            ReadError::Corrupt(m) => Self::Internal(format!("published log: {m}")),
        }
    }
}

impl From<LogError> for Status {
    fn from(e: LogError) -> Self {
        let message = e.to_string();
        match e {
            LogError::Invalid(_) => Status::invalid_argument(message),
            LogError::Unauthenticated(_) => Status::unauthenticated(message),
            LogError::PermissionDenied(_) => Status::permission_denied(message),
            LogError::Busy { retry_after, .. } => {
                let mut s = Status::resource_exhausted(message);
                if let Ok(v) = retry_after.as_millis().max(1).to_string().parse() {
                    s.metadata_mut().insert(RETRY_AFTER_MS, v);
                }
                s
            }
            LogError::Unavailable { leader, .. } | LogError::LeaderUnreachable { leader, .. } => {
                let mut s = Status::unavailable(message);
                if let Some(v) = leader.and_then(|l| l.parse().ok()) {
                    s.metadata_mut().insert(LEADER, v);
                }
                s
            }
            LogError::Frozen(_) | LogError::Refused(_) => Status::failed_precondition(message),
            LogError::NotFound(_) => Status::not_found(message),
            LogError::Timeout(_) => Status::deadline_exceeded(message),
            LogError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                Status::internal(message)
            }
            LogError::Forwarded(s) => s,
        }
    }
}
