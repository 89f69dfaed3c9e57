//! Submission and queries over gRPC.

use std::time::{Duration, Instant};

use cairn_proto::metadata::{AUTHORIZATION, LEADER, RETRY_AFTER_MS};
use cairn_proto::tls::Connector;
use cairn_proto::v1::log_client::LogClient as Raw;
use cairn_proto::v1::{
    AddEntriesRequest, EntryResult, FreezeShardRequest, GetCheckpointRequest, GetConsistencyProofRequest,
    GetInclusionProofRequest, ListShardsRequest, Shard, Wait,
};
use cairn_tlog::{Hash, TlogProof};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::error::ClientError;

const MAX_MESSAGE: usize = 256 << 20;

/// How [`LogClient::submit`] retries.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Give up after this long.
    pub deadline: Duration,
    /// First wait after `UNAVAILABLE` without a hint; doubles up to `max_backoff`.
    pub backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Longest wait for one attempt's answer (a `PUBLISHED` attempt waits this plus the server's
    /// publication wait, 30 s): a server that does not answer by then is treated as down.
    pub attempt_timeout: Duration,
    /// A server whose connection shows no sign of life for this long while a call waits (it does not
    /// answer HTTP/2 pings: paused, or gone without a reset) is treated as down and the call goes to
    /// the next server, however long the call itself may legitimately take.
    pub stall_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(60),
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(2),
        }
    }
}

/// One logged entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// Shard it went to.
    pub shard: u32,
    /// Its index in that shard (the original index for a duplicate).
    pub index: u64,
    /// RFC 6962 leaf hash.
    pub leaf_hash: Hash,
    /// Whether it was logged before.
    pub duplicate: bool,
    /// With `Wait::Published`: inclusion proof and the signed checkpoint it proves against.
    pub proof: Option<(Vec<Hash>, Vec<u8>)>,
}

impl Submitted {
    /// The c2sp tlog-proof of this entry, when it was submitted with `Wait::Published`.
    pub fn tlog_proof(&self) -> Option<TlogProof> {
        self.proof.as_ref().map(|(proof, checkpoint)| TlogProof {
            extra: None,
            index: self.index,
            proof: proof.clone(),
            checkpoint: checkpoint.clone(),
        })
    }
}

fn hash(bytes: &[u8]) -> Result<Hash, ClientError> {
    Hash::from_slice(bytes)
        .map_err(|_| ClientError::Verify("the server sent a hash that is not 32 bytes".into()))
}

impl TryFrom<EntryResult> for Submitted {
    type Error = ClientError;

    fn try_from(r: EntryResult) -> Result<Self, ClientError> {
        let proof = if r.checkpoint.is_empty() {
            None
        } else {
            let hashes = r
                .inclusion_proof
                .iter()
                .map(|h| hash(h))
                .collect::<Result<_, _>>()?;
            Some((hashes, r.checkpoint))
        };
        Ok(Self {
            shard: r.shard_id,
            index: r.index,
            leaf_hash: hash(&r.leaf_hash)?,
            duplicate: r.duplicate,
            proof,
        })
    }
}

/// Whether `status` comes from this client's own transport (the server's answer has no source error).
fn transport_failure(status: &Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// The reason a TLS connection was refused because of a certificate (the server's, as this client
/// judged it: unknown issuer, wrong name, expired): a configuration error that no retry mends.
fn certificate_failure(status: &Status) -> Option<String> {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let text = e.to_string();
        if text.contains("invalid peer certificate") {
            return Some(text);
        }
        source = e.source();
    }
    None
}

/// How to retry a failed attempt.
enum Retry {
    /// At the leader the server named (already switched to).
    Hinted,
    /// After this pause, at the server now selected.
    After(Duration),
}

/// A gRPC client of a Cairn log: one server, or several it fails over between.
#[derive(Clone)]
pub struct LogClient {
    url: String,
    raw: Raw<Channel>,
    /// Every server this client may use, in order; it moves to the next on transport failures.
    servers: Vec<String>,
    token: Option<String>,
    retry: RetryPolicy,
    retries: u64,
    failed: Vec<FailedAttempt>,
    /// How `https://` servers are connected to.
    tls: Option<Connector>,
    /// Servers whose certificate this client refused during the current write, with why.
    cert_failed: Vec<String>,
}

/// An attempt of a write that failed and was retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedAttempt {
    /// The server it was sent to.
    pub server: String,
    /// The status it got.
    pub code: Code,
    /// The status message.
    pub message: String,
    /// Whether the server answered with this status; `false` when this client's own transport failed
    /// (connection refused or reset: the request may not have reached the server).
    pub answered: bool,
    /// When it failed.
    pub at: Instant,
}

/// A lazily connected channel to `url`: over TLS with `tls` for `https://` URLs (the system's roots
/// when no connector was configured), plain TCP for `http://`.
fn connect(url: &str, stall: Duration, tls: Option<&Connector>) -> Result<Raw<Channel>, ClientError> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| ClientError::Invalid(format!("server URL {url}: {e}")))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        // A server that stops answering (paused, or gone without a reset) is noticed by keep-alive: a
        // ping after half the stall timeout of silence, and the connection fails if it is not
        // acknowledged within the other half.
        .http2_keep_alive_interval(stall / 2)
        .keep_alive_timeout(stall / 2);
    let channel = if url.starts_with("https://") {
        let connector = match tls {
            Some(c) => c.clone(),
            None => crate::TlsOptions::default().connector()?,
        };
        endpoint.connect_with_connector_lazy(connector)
    } else {
        endpoint.connect_lazy()
    };
    Ok(Raw::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

impl LogClient {
    /// A client of the server at `url` (`http://host:port`); connects on first use.
    pub fn new(url: &str) -> Result<Self, ClientError> {
        Self::with_servers(&[url.to_owned()])
    }

    /// A client of several servers of one log (`http://host:port` each): it starts with the first and,
    /// when a server cannot be reached or cannot take a write and names no leader, moves to the next.
    pub fn with_servers(urls: &[String]) -> Result<Self, ClientError> {
        Self::with_servers_tls(urls, None)
    }

    /// [`Self::with_servers`], connecting to `https://` servers with `tls` (a CA to trust, a client
    /// certificate; the system's roots without it).
    pub fn with_servers_tls(urls: &[String], tls: Option<&crate::TlsOptions>) -> Result<Self, ClientError> {
        // Built only when a server needs it: plain `http://` never reads certificates.
        let tls = match tls {
            Some(t) if urls.iter().any(|u| u.starts_with("https://")) => Some(t.connector()?),
            _ => None,
        };
        let first = urls
            .first()
            .ok_or_else(|| ClientError::Invalid("no server given".into()))?;
        let retry = RetryPolicy::default();
        for u in urls {
            Endpoint::from_shared(u.clone())
                .map_err(|e| ClientError::Invalid(format!("server URL {u}: {e}")))?;
        }
        Ok(Self {
            url: first.clone(),
            raw: connect(first, retry.stall_timeout, tls.as_ref())?,
            tls,
            cert_failed: Vec::new(),
            servers: urls.to_vec(),
            token: None,
            retry,
            retries: 0,
            failed: Vec::new(),
        })
    }

    /// Sends `authorization: Bearer <token>` with every call.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Result<Self, ClientError> {
        if retry.stall_timeout != self.retry.stall_timeout {
            self.raw = connect(&self.url, retry.stall_timeout, self.tls.as_ref())?;
        }
        self.retry = retry;
        Ok(self)
    }

    /// Requests this client has sent again after a retryable error. A retried write may report some of
    /// its entries as duplicates: an earlier attempt logged them before another part of it failed.
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// Every failed attempt this client retried, oldest first (for diagnosis and tests).
    pub fn failed_attempts(&self) -> &[FailedAttempt] {
        &self.failed
    }

    /// The server this client currently talks to (it moves to the leader on hints).
    pub fn url(&self) -> &str {
        &self.url
    }

    fn request<T>(&self, body: T) -> Result<Request<T>, ClientError> {
        let mut req = Request::new(body);
        if let Some(t) = &self.token {
            let v = format!("Bearer {t}")
                .parse()
                .map_err(|_| ClientError::Invalid("the token is not valid header text".into()))?;
            req.metadata_mut().insert(AUTHORIZATION, v);
        }
        Ok(req)
    }

    /// Logs `entries` and waits for `wait`. Retries, until the policy's deadline, what is safe to retry
    /// (writes are idempotent by leaf hash): `UNAVAILABLE` (moving to the leader the server names, or to
    /// the next server), `RESOURCE_EXHAUSTED` (after the server's hint), and transport failures
    /// (`UNKNOWN`, `CANCELLED`: the next server). Results are in the order of `entries`.
    pub async fn submit(&mut self, entries: Vec<Vec<u8>>, wait: Wait) -> Result<Vec<Submitted>, ClientError> {
        let start = Instant::now();
        self.cert_failed.clear();
        let mut backoff = self.retry.backoff;
        // Whether the last retry followed a leader hint: a second hint in a row waits the backoff, so
        // servers with stale views of the leadership cannot bounce a write between them at full speed.
        let mut hinted = false;
        // Whether the last attempt was answered by this server with "no leader now": it is asked once
        // more before the next server, since a server that answers is better than one not yet known to.
        let mut stayed = false;
        loop {
            let req = self.request(AddEntriesRequest {
                entries: entries.clone(),
                wait: wait as i32,
            })?;
            let mut limit = self.retry.attempt_timeout;
            if wait == Wait::Published {
                limit += Duration::from_secs(30);
            }
            let call = tokio::time::timeout(limit, self.raw.add_entries(req));
            // No answer in time: the server is paused or unreachable; the next server is tried.
            let (answer, timed_out) = match call.await {
                Ok(answer) => (answer, false),
                Err(_) => (
                    Err(Status::unavailable(format!(
                        "no answer from {} within {limit:?}",
                        self.url
                    ))),
                    true,
                ),
            };
            let status = match answer {
                Ok(reply) => {
                    return reply
                        .into_inner()
                        .results
                        .into_iter()
                        .map(Submitted::try_from)
                        .collect();
                }
                Err(s) => s,
            };
            let server = self.url.clone();
            let answered = !timed_out && !transport_failure(&status);
            let (pause, hint) = match self.retry_after(&status, backoff, answered, &mut stayed)? {
                Some(Retry::Hinted) if hinted => (backoff, true),
                Some(Retry::Hinted) => (Duration::ZERO, true),
                Some(Retry::After(p)) => (p, false),
                None => return Err(status.into()),
            };
            hinted = hint;
            if start.elapsed() + pause > self.retry.deadline {
                return Err(status.into());
            }
            tracing::debug!(code = ?status.code(), message = status.message(), ?pause, "retrying");
            self.failed.push(FailedAttempt {
                server,
                code: status.code(),
                message: status.message().to_owned(),
                answered,
                at: Instant::now(),
            });
            tokio::time::sleep(pause).await;
            self.retries += 1;
            backoff = (backoff * 2).min(self.retry.max_backoff);
        }
    }

    /// Whether and when to retry after `status` (`answered`: the server itself sent it); moves to a
    /// hinted leader, or to the next server. `stayed` records a second try at the same server.
    fn retry_after(
        &mut self,
        status: &Status,
        backoff: Duration,
        answered: bool,
        stayed: &mut bool,
    ) -> Result<Option<Retry>, ClientError> {
        let hint = |key: &str| {
            status
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if let Some(why) = certificate_failure(status) {
            // That server cannot be used (a configuration error, not a passing failure): the next one
            // whose certificate has not been refused yet, or the error once none is left.
            self.cert_failed.push(format!("{}: {why}", self.url));
            let refused = |u: &String| self.cert_failed.iter().any(|f| f.starts_with(&format!("{u}: ")));
            return match self.servers.iter().find(|u| !refused(u)).cloned() {
                Some(next) => {
                    self.switch(next)?;
                    Ok(Some(Retry::After(Duration::ZERO)))
                }
                None => Err(ClientError::Invalid(format!(
                    "TLS: {} (is --tls-ca the CA that issued the servers' certificates?)",
                    self.cert_failed.join("; ")
                ))),
            };
        }
        match status.code() {
            Code::ResourceExhausted => {
                let ms = hint(RETRY_AFTER_MS).and_then(|v| v.parse::<u64>().ok());
                Ok(Some(Retry::After(
                    ms.map(Duration::from_millis).unwrap_or(backoff),
                )))
            }
            // A failure of this client's own connection (tonic reports some resets as INTERNAL), or no
            // answer at all: the next server.
            code if transport_failure(status)
                || matches!(code, Code::Unavailable | Code::Unknown | Code::Cancelled) =>
            {
                if status.code() == Code::Unavailable
                    && !transport_failure(status)
                    && let Some(leader) = hint(LEADER)
                    && leader != self.url
                {
                    self.switch(leader)?;
                    *stayed = false;
                    return Ok(Some(Retry::Hinted));
                }
                // Answered without a hint (no leader elected yet, or the leader it knows did not
                // answer it): an election is probably under way, and this server has just shown it is
                // alive, unlike the next one, which may be the leader that stopped. Once more here.
                if answered && status.code() == Code::Unavailable && !*stayed {
                    *stayed = true;
                    return Ok(Some(Retry::After(backoff)));
                }
                *stayed = false;
                // No hint: this server cannot help now (down, or no leader it knows); try the next one.
                if let Some(pos) = self.servers.iter().position(|s| *s == self.url) {
                    let next = self.servers[(pos + 1) % self.servers.len()].clone();
                    if next != self.url {
                        self.switch(next)?;
                        return Ok(Some(Retry::After(backoff.min(Duration::from_millis(50)))));
                    }
                } else if let Some(first) = self.servers.first().cloned() {
                    // We followed a hint to a server outside the list and it failed: back to the list.
                    self.switch(first)?;
                    return Ok(Some(Retry::After(backoff.min(Duration::from_millis(50)))));
                }
                Ok(Some(Retry::After(backoff)))
            }
            _ => Ok(None),
        }
    }

    fn switch(&mut self, url: String) -> Result<(), ClientError> {
        self.raw = connect(&url, self.retry.stall_timeout, self.tls.as_ref())?;
        self.url = url;
        Ok(())
    }

    /// Every shard with its verifier key and state.
    pub async fn shards(&mut self) -> Result<Vec<Shard>, ClientError> {
        let req = self.request(ListShardsRequest {})?;
        Ok(self.raw.list_shards(req).await?.into_inner().shards)
    }

    /// The latest published checkpoint of a shard.
    pub async fn checkpoint(&mut self, shard: u32) -> Result<Vec<u8>, ClientError> {
        let req = self.request(GetCheckpointRequest { shard_id: shard })?;
        Ok(self.raw.get_checkpoint(req).await?.into_inner().checkpoint)
    }

    /// The inclusion proof of `index` in the published tree of `size`.
    pub async fn inclusion_proof(
        &mut self,
        shard: u32,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, ClientError> {
        let req = self.request(GetInclusionProofRequest {
            shard_id: shard,
            index,
            tree_size: size,
        })?;
        let reply = self.raw.get_inclusion_proof(req).await?.into_inner();
        reply.hashes.iter().map(|h| hash(h)).collect()
    }

    /// The consistency proof between two published sizes.
    pub async fn consistency_proof(
        &mut self,
        shard: u32,
        size1: u64,
        size2: u64,
    ) -> Result<Vec<Hash>, ClientError> {
        let req = self.request(GetConsistencyProofRequest {
            shard_id: shard,
            first_size: size1,
            second_size: size2,
        })?;
        let reply = self.raw.get_consistency_proof(req).await?.into_inner();
        reply.hashes.iter().map(|h| hash(h)).collect()
    }

    /// Freezes a shard (admin token).
    pub async fn freeze(&mut self, shard: u32) -> Result<(), ClientError> {
        let req = self.request(FreezeShardRequest { shard_id: shard })?;
        self.raw.freeze_shard(req).await?;
        Ok(())
    }

    /// Every shard's Raft group as the server's sequencer sees it (admin token).
    pub async fn cluster_status(&mut self) -> Result<cairn_proto::v1::ClusterStatusResponse, ClientError> {
        let req = self.request(cairn_proto::v1::ClusterStatusRequest {})?;
        Ok(self.raw.cluster_status(req).await?.into_inner())
    }

    /// Moves `shard`'s leadership to the voter `to` (admin token); returns once it leads.
    pub async fn transfer_leader(&mut self, shard: u32, to: u64) -> Result<(), ClientError> {
        let req = self.request(cairn_proto::v1::TransferLeaderRequest {
            shard_id: shard,
            to_node: to,
        })?;
        self.raw.transfer_leader(req).await?;
        Ok(())
    }

    /// Makes the running sequencer `node` (Raft address `raft_addr`) a voter of every shard's group
    /// (admin token); returns the shards, once it is a voter of each. Safe to repeat.
    pub async fn add_node(&mut self, node: u64, raft_addr: &str) -> Result<Vec<u32>, ClientError> {
        let req = self.request(cairn_proto::v1::AddNodeRequest {
            node_id: node,
            raft_addr: raft_addr.to_owned(),
            shard_id: 0,
        })?;
        Ok(self.raw.add_node(req).await?.into_inner().shards)
    }

    /// Adds a shard through the cluster's control group (admin token); returns its state (`planned`
    /// or `active`) and, while planned, what it waits for. Safe to repeat.
    pub async fn add_shard(
        &mut self,
        req: cairn_proto::v1::AddShardRequest,
    ) -> Result<(String, String), ClientError> {
        let req = self.request(req)?;
        let reply = self.raw.add_shard(req).await?.into_inner();
        Ok((reply.state, reply.waiting_for))
    }

    /// Archives a frozen shard added at runtime (admin token): its Raft groups stop and object storage
    /// alone serves it. Safe to repeat.
    pub async fn archive_shard(&mut self, shard: u32) -> Result<(), ClientError> {
        let req = self.request(cairn_proto::v1::ArchiveShardRequest { shard_id: shard })?;
        self.raw.archive_shard(req).await?;
        Ok(())
    }

    /// The cluster settings in effect on the answering sequencer (admin token).
    pub async fn settings(&mut self) -> Result<cairn_proto::v1::ListSettingsResponse, ClientError> {
        let req = self.request(cairn_proto::v1::ListSettingsRequest {})?;
        Ok(self.raw.list_settings(req).await?.into_inner())
    }

    /// Records cluster setting `key` for every sequencer (`None`: unsets it) (admin token).
    pub async fn set_setting(&mut self, key: &str, value: Option<&str>) -> Result<(), ClientError> {
        let req = self.request(cairn_proto::v1::SetSettingRequest {
            key: key.to_string(),
            value: value.unwrap_or_default().to_string(),
            unset: value.is_none(),
        })?;
        self.raw.set_setting(req).await?;
        Ok(())
    }

    /// Which of `leaf_hashes` shard `shard`'s log holds, with their indexes (a writer's token): for a
    /// writer whose answer was lost. Final for a frozen shard; for an active one as of every append
    /// its leader had queued.
    pub async fn find_entries(
        &mut self,
        shard: u32,
        leaf_hashes: &[Hash],
    ) -> Result<Vec<Option<u64>>, ClientError> {
        let req = self.request(cairn_proto::v1::FindEntriesRequest {
            shard_id: shard,
            leaf_hashes: leaf_hashes.iter().map(|h| h.as_bytes().to_vec()).collect(),
            active: Vec::new(),
        })?;
        let reply = self.raw.find_entries(req).await?.into_inner();
        Ok(reply
            .results
            .into_iter()
            .map(|r| r.found.then_some(r.index))
            .collect())
    }

    /// Removes sequencer `node` from every shard's group (admin token); returns the shards. Safe to
    /// repeat.
    pub async fn remove_node(&mut self, node: u64) -> Result<Vec<u32>, ClientError> {
        let req = self.request(cairn_proto::v1::RemoveNodeRequest {
            node_id: node,
            shard_id: 0,
        })?;
        Ok(self.raw.remove_node(req).await?.into_inner().shards)
    }
}
