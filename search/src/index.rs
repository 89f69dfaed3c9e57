//! The index: from artifact digest, signer identity and key fingerprint to (log, index), in RocksDB.
//!
//! Every posting is one key with an empty value:
//! `kind (1 byte) ‖ term length (u16 BE) ‖ term ‖ log number (u32 BE) ‖ entry index (u64 BE)`,
//! so the postings of a term are one contiguous range, ordered by log then index: a page boundary
//! is a (log, index) pair, and pages stay stable while the logs grow (new entries sort after
//! every entry already there). Writing a posting twice is harmless, which makes re-indexing a
//! stretch after a crash safe.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use cairn_client::watch::Claims;
use cairn_sigstore::certificate::hex;
use rocksdb::{DB, Direction, IteratorMode, Options, WriteBatch};
use sha2::{Digest, Sha256};

/// What went wrong in the index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// RocksDB failed.
    #[error("index database: {0}")]
    Db(#[from] rocksdb::Error),
    /// The query cannot be answered.
    #[error("{0}")]
    Query(String),
}

/// A search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// Entries signing this artifact digest (SHA-256, SHA-384 or SHA-512 by its length).
    Digest(Vec<u8>),
    /// Entries whose certificate names this identity (a subject alternative name), from this OIDC
    /// issuer if given.
    Identity {
        /// The SAN, exactly.
        identity: String,
        /// The issuer, exactly.
        issuer: Option<String>,
    },
    /// Entries signed by this certificate or key: lower-case hex SHA-256 of the DER certificate or
    /// of the DER public key.
    Fingerprint(String),
}

const DIGEST: u8 = b'd';
const IDENTITY: u8 = b'i';
const IDENTITY_ISSUER: u8 = b'I';
const FINGERPRINT: u8 = b'f';
const LOG_BY_KEY: &[u8] = b"\x00log-by-key/";
const KEY_BY_LOG: &[u8] = b"\x00key-by-log/";

impl Query {
    fn prefix(&self) -> Result<Vec<u8>, IndexError> {
        let (kind, term): (u8, Vec<u8>) = match self {
            Self::Digest(d) => (DIGEST, d.clone()),
            Self::Identity {
                identity,
                issuer: None,
            } => (IDENTITY, identity.as_bytes().to_vec()),
            Self::Identity {
                identity,
                issuer: Some(issuer),
            } => (IDENTITY_ISSUER, format!("{issuer}\n{identity}").into_bytes()),
            Self::Fingerprint(f) => (FINGERPRINT, f.to_ascii_lowercase().into_bytes()),
        };
        term_prefix(kind, &term)
    }
}

fn term_prefix(kind: u8, term: &[u8]) -> Result<Vec<u8>, IndexError> {
    let len =
        u16::try_from(term.len()).map_err(|_| IndexError::Query("the search term is too long".into()))?;
    let mut key = Vec::with_capacity(3 + term.len() + 12);
    key.push(kind);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(term);
    Ok(key)
}

/// A position in a log: (log number, entry index).
pub type Position = (u32, u64);

/// Postings gathered before one write: the indexer reads entries by the bundle, and a write per
/// entry cost more than reading it.
const PENDING_MAX: usize = 1024;

/// Postings not written yet, and how many.
#[derive(Default)]
struct Pending {
    batch: WriteBatch,
    postings: usize,
}

/// Writes the gathered postings. They stay gathered until a write succeeds: the follower may record
/// their entries as read in a later save, whose sync writes them then (or fails again).
fn write_pending(db: &DB, pending: &mut Pending) -> Result<(), IndexError> {
    if pending.postings > 0 {
        db.write(WriteBatch::from_data(pending.batch.data()))?;
        pending.batch.clear();
        pending.postings = 0;
    }
    Ok(())
}

/// The index.
pub struct Index {
    db: DB,
    /// Log key → log number, cached.
    logs: Mutex<BTreeMap<String, u32>>,
    pending: Mutex<Pending>,
}

impl Index {
    /// Opens (creating) the index at `path`.
    pub fn open(path: &Path) -> Result<Self, IndexError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, path)?;
        let mut logs = BTreeMap::new();
        for item in db.iterator(IteratorMode::From(LOG_BY_KEY, Direction::Forward)) {
            let (k, v) = item?;
            let Some(key) = k.strip_prefix(LOG_BY_KEY) else {
                break;
            };
            let no = <[u8; 4]>::try_from(&v[..])
                .map(u32::from_be_bytes)
                .unwrap_or(u32::MAX);
            logs.insert(String::from_utf8_lossy(key).into_owned(), no);
        }
        Ok(Self {
            db,
            logs: Mutex::new(logs),
            pending: Mutex::default(),
        })
    }

    /// Writes the postings [`Index::add`] gathered.
    pub fn flush(&self) -> Result<(), IndexError> {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        write_pending(&self.db, &mut pending)
    }

    /// The number of the log with verifier key `key`, assigned on first use.
    fn log_number(&self, key: &str) -> Result<u32, IndexError> {
        let mut logs = self
            .logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = logs.get(key) {
            return Ok(*n);
        }
        let n = u32::try_from(logs.len()).map_err(|_| IndexError::Query("too many logs".into()))?;
        let mut batch = WriteBatch::default();
        batch.put([LOG_BY_KEY, key.as_bytes()].concat(), n.to_be_bytes());
        batch.put([KEY_BY_LOG, &n.to_be_bytes()[..]].concat(), key.as_bytes());
        self.db.write(batch)?;
        logs.insert(key.to_owned(), n);
        Ok(n)
    }

    /// Makes every posting written so far durable (the WAL, synced): called before the follower
    /// records entries as read, so that a crash cannot leave read entries unindexed.
    pub fn sync(&self) -> Result<(), IndexError> {
        self.flush()?;
        Ok(self.db.flush_wal(true)?)
    }

    /// The verifier key of log number `n`.
    pub fn log_key(&self, n: u32) -> Option<String> {
        let logs = self
            .logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        logs.iter().find(|(_, v)| **v == n).map(|(k, _)| k.clone())
    }

    /// Indexes entry `index` of the log with key `log` (a Sigstore `hashedrekord` body; anything
    /// else is not indexed). Returns how many postings it made; they are written once enough are
    /// gathered, or by [`Index::flush`] (or [`Index::sync`]).
    pub fn add(&self, log: &str, index: u64, body: &[u8]) -> Result<usize, IndexError> {
        let Ok(claims) = Claims::of_body(body) else {
            return Ok(0);
        };
        let n = self.log_number(log)?;
        let mut terms: Vec<(u8, Vec<u8>)> = vec![
            (DIGEST, claims.digest.clone()),
            (FINGERPRINT, claims.fingerprint.clone().into_bytes()),
        ];
        if let Some(cert) = &claims.certificate {
            terms.push((FINGERPRINT, hex(&Sha256::digest(cert.key.spki())).into_bytes()));
            for san in &cert.sans {
                terms.push((IDENTITY, san.clone().into_bytes()));
                if let Some(issuer) = &cert.issuer {
                    terms.push((IDENTITY_ISSUER, format!("{issuer}\n{san}").into_bytes()));
                }
            }
        }
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (kind, term) in &terms {
            let mut key = term_prefix(*kind, term)?;
            key.extend_from_slice(&n.to_be_bytes());
            key.extend_from_slice(&index.to_be_bytes());
            pending.batch.put(key, []);
        }
        pending.postings += terms.len();
        if pending.postings >= PENDING_MAX {
            write_pending(&self.db, &mut pending)?;
        }
        Ok(terms.len())
    }

    /// Up to `limit` positions matching `query`, after `after` (exclusive), in (log, index) order.
    pub fn search(
        &self,
        query: &Query,
        after: Option<Position>,
        limit: usize,
    ) -> Result<Vec<Position>, IndexError> {
        let prefix = query.prefix()?;
        let mut start = prefix.clone();
        if let Some((log, index)) = after {
            start.extend_from_slice(&log.to_be_bytes());
            start.extend_from_slice(&index.to_be_bytes());
        }
        let mut out = Vec::new();
        for item in self.db.iterator(IteratorMode::From(&start, Direction::Forward)) {
            let (k, _) = item?;
            let Some(rest) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            let (Ok(log), Ok(index)) = (
                <[u8; 4]>::try_from(&rest[..4.min(rest.len())]),
                <[u8; 8]>::try_from(&rest[4.min(rest.len())..]),
            ) else {
                continue;
            };
            let pos = (u32::from_be_bytes(log), u64::from_be_bytes(index));
            if Some(pos) == after {
                continue;
            }
            out.push(pos);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}
