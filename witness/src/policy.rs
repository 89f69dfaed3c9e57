//! Witness policies in the c2sp.org/tlog-policy format: which logs and witnesses are known, and the
//! quorum of cosignatures a checkpoint needs before it is trusted.
//!
//! ```text
//! log <vkey> [<url>]
//! witness <name> <vkey> [<url>]
//! group <name> <k|any|all> <member>...
//! quorum <name|none>
//! ```
//!
//! Parsing is strict and says what is wrong and on which line: names are defined before they are used,
//! a member is listed at most once per group, `1 <= k <= n`, keys are not repeated (two vkeys are the same
//! key when they wrap the same public key), log keys are Ed25519 note keys (type 0x01) and witness keys
//! are cosignature keys (type 0x04), and there is exactly one quorum line.

use std::collections::{BTreeSet, HashMap};

use cairn_tlog::note::{NoteError, TYPE_COSIGNATURE, TYPE_ED25519};
use cairn_tlog::{Checkpoint, Note, VerifierKey};

/// The most logs, witnesses and groups a policy may define (the spec recommends supporting 32 of each).
pub const MAX_ITEMS: usize = 256;

/// A policy that does not parse, with the line it is on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy line {line}: {message}")]
pub struct PolicyError {
    /// 1-based line number (0 for the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Why a checkpoint does not satisfy a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuorumError {
    /// The note is malformed, unsigned by a known log, or a known key's signature does not verify.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The log signed, but too few witnesses cosigned.
    #[error("witness quorum not met: cosigned by {} of the policy's witnesses ({}), quorum needs {needed}",
        .cosigned.len(), if .cosigned.is_empty() { "none".to_string() } else { .cosigned.join(", ") })]
    NotMet {
        /// Names of the witnesses whose cosignatures verified.
        cosigned: Vec<String>,
        /// The quorum rule, in words.
        needed: String,
    },
}

/// A known log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// Its checkpoint key (the key name is the log's origin).
    pub key: VerifierKey,
    /// Where to reach it, if given.
    pub url: Option<String>,
}

/// A known witness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    /// Its name in the policy (used by groups and the quorum).
    pub name: String,
    /// Its cosignature key (type 0x04).
    pub key: VerifierKey,
    /// Its submission prefix (c2sp.org/tlog-witness), needed only to collect cosignatures.
    pub url: Option<String>,
}

/// A group or witness named by the quorum or by a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Member {
    Witness(usize),
    Group(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    name: String,
    threshold: usize,
    members: Vec<Member>,
}

/// A parsed c2sp.org/tlog-policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    logs: Vec<Log>,
    witnesses: Vec<Witness>,
    groups: Vec<Group>,
    /// `None` for `quorum none`.
    quorum: Option<Member>,
}

impl Policy {
    /// Parses a policy file.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let err = |line: usize, message: String| PolicyError { line, message };
        if let Some(b) = text
            .bytes()
            .find(|&b| b < 0x20 && b != b'\t' && b != b'\n' || b == 0x7f)
        {
            let line = text
                .bytes()
                .take_while(|&c| c != b)
                .filter(|&c| c == b'\n')
                .count()
                + 1;
            return Err(err(line, format!("control character 0x{b:02x} is not allowed")));
        }
        let mut logs: Vec<Log> = Vec::new();
        let mut witnesses: Vec<Witness> = Vec::new();
        let mut groups: Vec<Group> = Vec::new();
        let mut names: HashMap<String, Member> = HashMap::new();
        let mut keys: BTreeSet<[u8; 32]> = BTreeSet::new();
        let mut quorum: Option<Option<Member>> = None;
        for (i, raw) in text.split('\n').enumerate() {
            let n = i + 1;
            let words: Vec<&str> = raw.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
            let Some((&keyword, args)) = words.split_first() else {
                continue;
            };
            if keyword.starts_with('#') {
                continue;
            }
            if keyword != "quorum" && logs.len() + witnesses.len() + groups.len() >= MAX_ITEMS {
                return Err(err(
                    n,
                    format!("more than {MAX_ITEMS} logs, witnesses and groups"),
                ));
            }
            let mut fresh_key = |vkey: &str, want: u8, what: &str| -> Result<VerifierKey, PolicyError> {
                let key = VerifierKey::parse(vkey).map_err(|e| err(n, format!("{what} key: {e}")))?;
                if key.key_type != want {
                    return Err(err(
                        n,
                        format!(
                            "{what} key {} has signature type {}; a {what} key must be type {want} ({})",
                            key.name,
                            key.key_type,
                            if want == TYPE_ED25519 {
                                "Ed25519"
                            } else {
                                "Ed25519 cosignature/v1"
                            }
                        ),
                    ));
                }
                if !keys.insert(key.public_key()) {
                    return Err(err(
                        n,
                        format!("duplicate key: {} is already in the policy", key.name),
                    ));
                }
                Ok(key)
            };
            match keyword {
                "log" => {
                    let (vkey, url) = match args {
                        [vkey] => (vkey, None),
                        [vkey, url] => (vkey, Some(url.to_string())),
                        _ => return Err(err(n, "expected: log <vkey> [<url>]".into())),
                    };
                    let key = fresh_key(vkey, TYPE_ED25519, "log")?;
                    logs.push(Log { key, url });
                }
                "witness" => {
                    let (name, vkey, url) = match args {
                        [name, vkey] => (name, vkey, None),
                        [name, vkey, url] => (name, vkey, Some(url.to_string())),
                        _ => return Err(err(n, "expected: witness <name> <vkey> [<url>]".into())),
                    };
                    define(&names, name, n)?;
                    let key = fresh_key(vkey, TYPE_COSIGNATURE, "witness")?;
                    names.insert(name.to_string(), Member::Witness(witnesses.len()));
                    witnesses.push(Witness {
                        name: name.to_string(),
                        key,
                        url,
                    });
                }
                "group" => {
                    let [name, k, members @ ..] = args else {
                        return Err(err(n, "expected: group <name> <k|any|all> <member>...".into()));
                    };
                    if members.is_empty() {
                        return Err(err(n, format!("group {name} has no members")));
                    }
                    define(&names, name, n)?;
                    let mut resolved = Vec::with_capacity(members.len());
                    for m in members {
                        let member = lookup(&names, m, n)?;
                        if resolved.contains(&member) {
                            return Err(err(n, format!("{m} is listed twice in group {name}")));
                        }
                        resolved.push(member);
                    }
                    let threshold = match *k {
                        "any" => 1,
                        "all" => resolved.len(),
                        k => {
                            let t = k
                                .parse::<usize>()
                                .ok()
                                .filter(|t| t.to_string() == k)
                                .ok_or_else(|| {
                                    err(n, format!("threshold {k:?} must be a decimal number, any or all"))
                                })?;
                            if t == 0 || t > resolved.len() {
                                return Err(err(
                                    n,
                                    format!(
                                        "threshold {t} must be between 1 and the {} members",
                                        resolved.len()
                                    ),
                                ));
                            }
                            t
                        }
                    };
                    names.insert(name.to_string(), Member::Group(groups.len()));
                    groups.push(Group {
                        name: name.to_string(),
                        threshold,
                        members: resolved,
                    });
                }
                "quorum" => {
                    let [name] = args else {
                        return Err(err(n, "expected: quorum <name>".into()));
                    };
                    if quorum.is_some() {
                        return Err(err(n, "a policy has exactly one quorum line".into()));
                    }
                    quorum = Some(if *name == "none" {
                        None
                    } else {
                        Some(lookup(&names, name, n)?)
                    });
                }
                other => {
                    return Err(err(
                        n,
                        format!("unknown keyword {other:?}; expected log, witness, group or quorum"),
                    ));
                }
            }
        }
        let quorum = quorum.ok_or_else(|| err(0, "no quorum line (use \"quorum none\" for none)".into()))?;
        Ok(Self {
            logs,
            witnesses,
            groups,
            quorum,
        })
    }

    /// The known logs.
    pub fn logs(&self) -> &[Log] {
        &self.logs
    }

    /// The known witnesses.
    pub fn witnesses(&self) -> &[Witness] {
        &self.witnesses
    }

    /// Whether the policy requires any cosignature.
    pub fn requires_witnesses(&self) -> bool {
        self.quorum.is_some()
    }

    /// Whether the witnesses at these indexes (into [`Policy::witnesses`]) satisfy the quorum.
    pub fn satisfied_by(&self, cosigned: &BTreeSet<usize>) -> bool {
        self.quorum.is_none_or(|q| self.holds(q, cosigned))
    }

    fn holds(&self, m: Member, cosigned: &BTreeSet<usize>) -> bool {
        match m {
            Member::Witness(i) => cosigned.contains(&i),
            Member::Group(g) => {
                let group = &self.groups[g];
                group.members.iter().filter(|&&m| self.holds(m, cosigned)).count() >= group.threshold
            }
        }
    }

    /// The quorum rule in words, for error messages.
    pub fn describe_quorum(&self) -> String {
        match self.quorum {
            None => "none".into(),
            Some(m) => self.describe(m),
        }
    }

    fn describe(&self, m: Member) -> String {
        match m {
            Member::Witness(i) => self.witnesses[i].name.clone(),
            Member::Group(g) => {
                let group = &self.groups[g];
                let members: Vec<String> = group.members.iter().map(|&m| self.describe(m)).collect();
                format!("{} of ({})", group.threshold, members.join(", "))
            }
        }
    }

    /// The indexes of the policy's witnesses that validly cosigned `note` (signatures by keys the policy
    /// does not know are ignored).
    pub fn cosigners(&self, note: &Note) -> BTreeSet<usize> {
        note.signatures
            .iter()
            .filter_map(|sig| {
                let i = self
                    .witnesses
                    .iter()
                    .position(|w| w.key.name == sig.name && w.key.key_id == sig.key_id)?;
                self.witnesses[i]
                    .key
                    .verify(note.text.as_bytes(), &sig.bytes)
                    .then_some(i)
            })
            .collect()
    }

    /// Verifies a signed checkpoint: signed by `log` if given, else by one of the policy's logs (whose
    /// key name must be the checkpoint's origin), and cosigned by a quorum of the policy's witnesses.
    /// Returns the checkpoint, its note and the names of the witnesses that cosigned.
    pub fn verify(
        &self,
        note: &[u8],
        log: Option<&VerifierKey>,
    ) -> Result<(Checkpoint, Note, Vec<String>), QuorumError> {
        let parsed = Note::parse(note).map_err(|e| QuorumError::Checkpoint(e.to_string()))?;
        let origin = Checkpoint::parse(&parsed.text)
            .map_err(|e| QuorumError::Checkpoint(e.to_string()))?
            .origin;
        // The given key, else every key the policy lists for this origin (a log may have rotated).
        let keys: Vec<&VerifierKey> = match log {
            Some(k) => vec![k],
            None => self
                .logs
                .iter()
                .filter(|l| l.key.name == origin)
                .map(|l| &l.key)
                .collect(),
        };
        if keys.is_empty() {
            return Err(QuorumError::Checkpoint(format!(
                "log {origin} is not in the policy"
            )));
        }
        let witness_keys: Vec<VerifierKey> = self.witnesses.iter().map(|w| w.key.clone()).collect();
        let mut failed = String::new();
        let mut opened = None;
        for key in keys {
            match Checkpoint::open(note, key, &witness_keys) {
                Ok(ok) => {
                    opened = Some(ok);
                    break;
                }
                Err(cairn_tlog::checkpoint::CheckpointError::Note(NoteError::Unverified)) => {
                    failed = format!("not signed by the log key {}", key.name);
                }
                Err(other) => failed = other.to_string(),
            }
        }
        let (checkpoint, note) = opened.ok_or(QuorumError::Checkpoint(failed))?;
        let cosigned = self.cosigners(&note);
        let names = cosigned.iter().map(|&i| self.witnesses[i].name.clone()).collect();
        if !self.satisfied_by(&cosigned) {
            return Err(QuorumError::NotMet {
                cosigned: names,
                needed: self.describe_quorum(),
            });
        }
        Ok((checkpoint, note, names))
    }
}

fn define(names: &HashMap<String, Member>, name: &str, line: usize) -> Result<(), PolicyError> {
    if name == "none" {
        return Err(PolicyError {
            line,
            message: "\"none\" is reserved and cannot be defined".into(),
        });
    }
    if names.contains_key(name) {
        return Err(PolicyError {
            line,
            message: format!("{name} is already defined"),
        });
    }
    Ok(())
}

fn lookup(names: &HashMap<String, Member>, name: &str, line: usize) -> Result<Member, PolicyError> {
    names.get(name).copied().ok_or_else(|| PolicyError {
        line,
        message: if name == "none" {
            "\"none\" can only be the quorum".into()
        } else {
            format!("{name} is not defined on an earlier line")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_tlog::{Cosigner, Signer, leaf_hash};

    fn witness(i: u8) -> Cosigner {
        Cosigner::from_seed(&format!("w{i}.example"), [i; 32]).expect("key")
    }

    fn log() -> Signer {
        Signer::from_seed("log.example/a", [100; 32]).expect("key")
    }

    fn two_of_three() -> String {
        format!(
            "# comment\nlog {}\n\twitness w1 {} http://127.0.0.1:1\nwitness w2 {}\nwitness w3 {}  \n\ngroup g 2 w1 w2 w3\nquorum g\n",
            log().verifier(),
            witness(1).verifier(),
            witness(2).verifier(),
            witness(3).verifier()
        )
    }

    #[test]
    fn quorum_of_nested_groups() {
        let text = format!(
            "witness X1 {}\nwitness X2 {}\nwitness Y1 {}\ngroup X all X1 X2\ngroup Y any Y1\ngroup XY 2 X Y\nquorum XY\n",
            witness(1).verifier(),
            witness(2).verifier(),
            witness(3).verifier()
        );
        let p = Policy::parse(&text).expect("parses");
        let set = |v: &[usize]| v.iter().copied().collect::<BTreeSet<_>>();
        assert!(p.satisfied_by(&set(&[0, 1, 2])));
        assert!(!p.satisfied_by(&set(&[0, 2])), "X needs all of X1, X2");
        assert!(!p.satisfied_by(&set(&[0, 1])), "Y needs one");
        assert_eq!(p.describe_quorum(), "2 of (2 of (X1, X2), 1 of (Y1))");
        let none = Policy::parse("quorum none\n").expect("parses");
        assert!(none.satisfied_by(&BTreeSet::new()));
        assert!(!none.requires_witnesses());
    }

    #[test]
    fn verify_counts_valid_cosignatures_only() {
        let p = Policy::parse(&two_of_three()).expect("parses");
        assert_eq!(p.witnesses()[0].url.as_deref(), Some("http://127.0.0.1:1"));
        let cp = Checkpoint::new("log.example/a", 3, leaf_hash(b"x"));
        let mut note = cp.sign(&log());
        note.push(witness(1).sign(&note.text, 10).expect("cosign"));
        let one = note.to_bytes();
        match p.verify(&one, None) {
            Err(QuorumError::NotMet { cosigned, needed }) => {
                assert_eq!(cosigned, vec!["w1".to_string()]);
                assert_eq!(needed, "2 of (w1, w2, w3)");
            }
            other => panic!("expected NotMet, got {other:?}"),
        }
        // An unknown cosigner does not count.
        note.push(witness(9).sign(&note.text, 10).expect("cosign"));
        assert!(matches!(
            p.verify(&note.to_bytes(), None),
            Err(QuorumError::NotMet { .. })
        ));
        note.push(witness(3).sign(&note.text, 11).expect("cosign"));
        let (got, _, names) = p.verify(&note.to_bytes(), None).expect("quorum");
        assert_eq!(got, cp);
        assert_eq!(names, vec!["w1".to_string(), "w3".to_string()]);
        // A bad cosignature by a known witness rejects the note.
        let mut bad = note.clone();
        bad.signatures[1].bytes[20] ^= 1;
        assert!(matches!(
            p.verify(&bad.to_bytes(), None),
            Err(QuorumError::Checkpoint(_))
        ));
        // A checkpoint of a log the policy does not know.
        let other = Signer::from_seed("log.example/b", [7; 32]).expect("key");
        let mut foreign = Checkpoint::new("log.example/b", 3, leaf_hash(b"x")).sign(&other);
        foreign.push(witness(1).sign(&foreign.text, 1).expect("cosign"));
        foreign.push(witness(2).sign(&foreign.text, 1).expect("cosign"));
        assert!(p.verify(&foreign.to_bytes(), None).is_err());
        assert!(
            p.verify(&foreign.to_bytes(), Some(&other.verifier())).is_ok(),
            "log given by the caller"
        );
    }

    #[test]
    fn any_listed_key_of_a_log_signs() {
        let old = Signer::from_seed("log.example/a", [1; 32]).expect("key");
        let new = log();
        let p = Policy::parse(&format!(
            "log {}\nlog {}\nquorum none\n",
            old.verifier(),
            new.verifier()
        ))
        .expect("parses");
        let cp = Checkpoint::new("log.example/a", 9, leaf_hash(b"y"));
        for signer in [&old, &new] {
            assert!(p.verify(&cp.sign(signer).to_bytes(), None).is_ok(), "{signer:?}");
        }
        let stranger = Signer::from_seed("log.example/a", [2; 32]).expect("key");
        assert!(matches!(
            p.verify(&cp.sign(&stranger).to_bytes(), None),
            Err(QuorumError::Checkpoint(m)) if m.contains("not signed")
        ));
    }

    #[test]
    fn parse_errors_name_the_line() {
        let w1 = witness(1).verifier().to_string();
        let w2 = witness(2).verifier().to_string();
        let cases: Vec<(String, usize, &str)> = vec![
            ("".into(), 0, "no quorum"),
            (
                format!("witness a {w1}\nquorum a\nquorum a\n"),
                3,
                "exactly one quorum",
            ),
            ("quorum b\n".into(), 1, "not defined"),
            (
                format!("witness a {w1}\ngroup g 3 a\nquorum g\n"),
                2,
                "between 1 and",
            ),
            (
                format!("witness a {w1}\ngroup g 0 a\nquorum g\n"),
                2,
                "between 1 and",
            ),
            (format!("witness a {w1}\ngroup g 01 a\nquorum g\n"), 2, "decimal"),
            (
                format!("witness a {w1}\ngroup g any a a\nquorum g\n"),
                2,
                "listed twice",
            ),
            (
                format!("witness a {w1}\nwitness a {w2}\nquorum a\n"),
                2,
                "already defined",
            ),
            (
                format!("witness a {w1}\nwitness b {w1}\nquorum a\n"),
                2,
                "duplicate key",
            ),
            (format!("witness none {w1}\nquorum none\n"), 1, "reserved"),
            (
                format!("witness a {w1}\ngroup g any none\nquorum g\n"),
                2,
                "only be the quorum",
            ),
            (format!("log {w1}\nquorum none\n"), 1, "must be type 1"),
            (
                format!("witness a {}\nquorum a\n", log().verifier()),
                1,
                "must be type 4",
            ),
            ("witness a nope\nquorum none\n".into(), 1, "witness key"),
            ("frobnicate x\nquorum none\n".into(), 1, "unknown keyword"),
            ("quorum none\r\n".into(), 1, "control character"),
        ];
        for (text, line, want) in cases {
            let e = Policy::parse(&text).expect_err(&text);
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(want), "{text:?}: {e}");
        }
    }
}
