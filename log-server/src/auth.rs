//! Bearer tokens per tenant, per-tenant rate limits, and the admin token.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use tonic::metadata::MetadataMap;

use crate::error::LogError;

/// A submitter and what it may send.
#[derive(Clone, Debug)]
pub struct Tenant {
    /// Name, for logs and metrics.
    pub name: String,
    /// The bearer token it presents.
    pub token: String,
    /// Sustained entries per second; `None` for no limit.
    pub rate: Option<NonZeroU32>,
    /// Entries that may arrive at once above the sustained rate (defaults to one second's worth).
    pub burst: Option<NonZeroU32>,
}

/// Who may write and who may administer.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    /// Configured submitters.
    pub tenants: Vec<Tenant>,
    /// Token for admin calls (freezing shards).
    pub admin_token: Option<String>,
    /// Accept writes (and admin calls, when no admin token is set) without a token. The `cairn` binary
    /// sets this only for the embedded default listening on loopback.
    pub allow_anonymous: bool,
}

struct TenantState {
    name: String,
    limiter: Option<DefaultDirectRateLimiter>,
}

/// The authenticated caller of a write.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Tenant name, or `anonymous`.
    pub tenant: String,
}

pub(crate) struct Auth {
    tenants: HashMap<String, Arc<TenantState>>,
    admin_token: Option<String>,
    allow_anonymous: bool,
}

/// The request metadata the write path reads from an HTTP request: its `Authorization` header.
pub(crate) fn metadata_of(headers: &http::HeaderMap) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    if let Some(auth) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| tonic::metadata::MetadataValue::try_from(v).ok())
    {
        metadata.insert(cairn_proto::metadata::AUTHORIZATION, auth);
    }
    // W3C trace context, so that an HTTP call continues its caller's trace like a gRPC one.
    for key in ["traceparent", "tracestate"] {
        if let Some(v) = headers
            .get(key)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| tonic::metadata::MetadataValue::try_from(v).ok())
        {
            metadata.insert(key, v);
        }
    }
    metadata
}

fn bearer(metadata: &MetadataMap) -> Result<Option<&str>, LogError> {
    let Some(v) = metadata.get(cairn_proto::metadata::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| LogError::Unauthenticated("the authorization header is not text"))?;
    v.strip_prefix("Bearer ")
        .map(|t| Some(t.trim()))
        .ok_or(LogError::Unauthenticated(
            "authorization must be `Bearer <token>`",
        ))
}

impl Auth {
    pub(crate) fn new(config: &AuthConfig) -> Self {
        let tenants = config
            .tenants
            .iter()
            .map(|t| {
                let limiter = t.rate.map(|rate| {
                    DefaultDirectRateLimiter::direct(
                        Quota::per_second(rate).allow_burst(t.burst.unwrap_or(rate)),
                    )
                });
                (
                    t.token.clone(),
                    Arc::new(TenantState {
                        name: t.name.clone(),
                        limiter,
                    }),
                )
            })
            .collect();
        Self {
            tenants,
            admin_token: config.admin_token.clone(),
            allow_anonymous: config.allow_anonymous,
        }
    }

    /// Authenticates a write of `entries` entries and charges them to the tenant's rate.
    pub(crate) fn writer(&self, metadata: &MetadataMap, entries: usize) -> Result<Caller, LogError> {
        let tenant = match bearer(metadata)? {
            None if self.allow_anonymous => {
                return Ok(Caller {
                    tenant: "anonymous".into(),
                });
            }
            None => return Err(LogError::Unauthenticated("missing bearer token")),
            Some(token) => self
                .tenants
                .get(token)
                .ok_or(LogError::Unauthenticated("unknown token"))?,
        };
        if let Some(limiter) = &tenant.limiter {
            let n = NonZeroU32::new(u32::try_from(entries).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
            match limiter.check_n(n) {
                Ok(Ok(())) => {}
                Ok(Err(not_until)) => {
                    return Err(LogError::Busy {
                        reason: format!("tenant {} is over its rate limit", tenant.name),
                        retry_after: not_until.wait_time_from(DefaultClock::default().now()),
                    });
                }
                Err(_) => {
                    return Err(LogError::Invalid(format!(
                        "{entries} entries exceed tenant {}'s burst size; send smaller requests",
                        tenant.name
                    )));
                }
            }
        }
        Ok(Caller {
            tenant: tenant.name.clone(),
        })
    }

    /// Authorizes an admin call.
    pub(crate) fn admin(&self, metadata: &MetadataMap) -> Result<(), LogError> {
        let token = bearer(metadata)?;
        match (&self.admin_token, token) {
            (None, None) if self.allow_anonymous => Ok(()),
            (None, _) => Err(LogError::PermissionDenied(
                "admin calls are disabled: no admin token is configured",
            )),
            (Some(_), None) => Err(LogError::Unauthenticated("missing bearer token")),
            (Some(admin), Some(t)) if admin == t => Ok(()),
            (Some(_), Some(_)) => Err(LogError::PermissionDenied("this token may not administer shards")),
        }
    }
}
