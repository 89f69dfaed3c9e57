#!/usr/bin/env python3
"""Logs many hashedrekord v0.0.2 entries into a Cairn Sigstore shard through its Rekor v2 API, with known
signers, and writes the ground truth: which signer made the entry at each index.

Signers (kept in D/load-signers/ and reused by later runs, so their fingerprints stay the same):

- `alice` (alice@cairn.test, https://oidc.cairn.test), `bob` (bob@cairn.test, https://oidc.cairn.test),
  `carol` (carol@cairn.test, https://accounts.cairn.test) and `alice-accounts` (alice@cairn.test,
  https://accounts.cairn.test: same email, other issuer): each a P-256 key with one Fulcio-profile leaf
  from the test CA of `sign_and_verify.py prepare` (its `Fulcio` class: email SAN, OIDC issuer extensions,
  embedded SCT from the test CT key), valid from a minute before it is made for --cert-lifetime minutes;
- `key-1`, `key-2`: plain P-256 keys, logged as DER SubjectPublicKeyInfo;
- `spoof`: a leaf claiming alice@cairn.test / https://oidc.cairn.test in the same Fulcio profile, with an
  embedded SCT, but issued by a freshly generated CA (same subject names as the test CA's) and signed by a
  fresh CT key: nothing in it chains to what Cairn's trusted root names. Cairn logs it all the same (the
  log checks the signature against the certificate's key, not the certificate's issuer).

Each entry: the digest is SHA-256 of 64 random bytes (seeded), signed with ECDSA P-256 over the digest
(prehashed SHA-256, deterministic RFC 6979 nonces, so a seed always gives the same bodies and a rerun
with a used seed is refused as duplicates instead of logging the digests again); signers take equal
shares (round robin, then a seeded shuffle). All requests are made before the clock starts; then a
thread pool (one requests.Session per thread) POSTs them to `<log>/api/v2/log/entries` (or
`<log>/logs/<shard>/api/v2/log/entries` with --shard). Connection errors, 5xx and 429 are retried with a
short backoff; a 409 (duplicate) on a first attempt is an error, on a retry it means an earlier attempt
was logged and its `x-log-index` is taken. Each reply's canonicalized body must carry the entry's digest.

Writes --out (default D/load.json):
    {"entries": [{"index", "signer", "kind": "certificate"|"key", "identity", "issuer", "trusted",
                  "fingerprint", "digest"}...] sorted by index,
     "signers": {name: {"kind", "identity", "issuer", "fingerprint", "trusted"}}}
where fingerprint is the lower-case hex SHA-256 of the DER certificate or DER SPKI, and prints one JSON line
(count, seconds, entries_per_s, ...); seconds covers the submissions only, not making the signers and
requests. Exit 0 only if every entry was logged, at distinct indices; otherwise the entries that were
logged go to <out>.partial and --out is left alone.

    python load_entries.py --dir D --log http://127.0.0.1:PORT --count N [--threads 32] [--seed S] [--out F]

D must be prepared by `sign_and_verify.py prepare`. Needs the venv of scripts/sigstore-clients.sh.
"""

import argparse
import base64
import collections
import concurrent.futures
import datetime
import hashlib
import json
import os
import random
import sys
import threading
import time

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.x509.oid import NameOID

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sign_and_verify as sv  # noqa: E402 (found through the path set just above)

OIDC = "https://oidc.cairn.test"
ACCOUNTS = "https://accounts.cairn.test"
# name, kind, identity, issuer, trusted
SIGNERS = [
    ("alice", "certificate", "alice@cairn.test", OIDC, True),
    ("bob", "certificate", "bob@cairn.test", OIDC, True),
    ("carol", "certificate", "carol@cairn.test", ACCOUNTS, True),
    ("alice-accounts", "certificate", "alice@cairn.test", ACCOUNTS, True),
    ("key-1", "key", None, None, True),
    ("key-2", "key", None, None, True),
    ("spoof", "certificate", "alice@cairn.test", OIDC, False),
]
SIGNERS_DIR = "load-signers"
KEY_DETAILS = "PKIX_ECDSA_P256_SHA_256"
# RFC 6979 signatures: the same seed gives the same request bodies, so a rerun is a 409, not a second
# entry for the same digest (Cairn, like Rekor, deduplicates whole bodies, signature included).
SIGNATURE = ec.ECDSA(utils.Prehashed(hashes.SHA256()), deterministic_signing=True)
ATTEMPTS = 6
TIMEOUT_S = 60  # a POST returns once a published checkpoint covers the entry


def write_atomic(path, data):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


class UntrustedFulcio(sv.Fulcio):
    """sign_and_verify's Fulcio, but with a CA and CT key of its own that no trusted root names."""

    def __init__(self, ca_key, chain, ct_key):  # pylint: disable=super-init-not-called
        self.ca_key, self.chain, self.ct_key = ca_key, chain, ct_key
        self.issued = []


def spoof_fulcio(sd):
    """The untrusted CA (made on first use, kept in `sd`): root + intermediate with the test CA's names."""
    key_path, chain_path, ct_path = (os.path.join(sd, n) for n in ("spoof-ca.key", "spoof-ca-chain.pem",
                                                                    "spoof-ct.key"))
    if not os.path.exists(chain_path):
        start = sv.now() - datetime.timedelta(hours=1)
        root_key = ec.generate_private_key(ec.SECP256R1())
        inter_key = ec.generate_private_key(ec.SECP256R1())
        org = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cairn-test")]
        root_name = x509.Name(org + [x509.NameAttribute(NameOID.COMMON_NAME, "cairn-test fulcio root")])
        inter_name = x509.Name(org + [x509.NameAttribute(NameOID.COMMON_NAME, "cairn-test fulcio intermediate")])
        root = sv.ca_cert(root_name, root_key, root_name, root_key, start, 1)
        inter = sv.ca_cert(inter_name, inter_key, root_name, root_key, start, 0)
        sv.write_key(key_path, inter_key)
        sv.write_key(ct_path, ec.generate_private_key(ec.SECP256R1()))
        write_atomic(chain_path, pem(inter) + pem(root))
    with open(chain_path, "rb") as f:
        chain = x509.load_pem_x509_certificates(f.read())
    return UntrustedFulcio(sv.read_key(key_path), chain, sv.read_key(ct_path))


class Signer:
    def __init__(self, name, kind, identity, issuer, trusted, key, cert):
        self.name, self.kind, self.identity, self.issuer, self.trusted = name, kind, identity, issuer, trusted
        self.key, self.cert = key, cert
        if kind == "certificate":
            self.verifier_der = cert_der(cert)
            self.verifier = {"keyDetails": KEY_DETAILS, "x509Certificate": {"rawBytes": sv.b64(self.verifier_der)}}
        else:
            self.verifier_der = sv.spki_der(key.public_key())
            self.verifier = {"keyDetails": KEY_DETAILS, "publicKey": {"rawBytes": sv.b64(self.verifier_der)}}
        self.fingerprint = hashlib.sha256(self.verifier_der).hexdigest()

    def describe(self):
        return {"kind": self.kind, "identity": self.identity, "issuer": self.issuer,
                "fingerprint": self.fingerprint, "trusted": self.trusted}


def load_signers(d, lifetime):
    """The signers, made on first use and kept in D/load-signers/ (keys, and leaf-first chains)."""
    sd = os.path.join(d, SIGNERS_DIR)
    os.makedirs(sd, exist_ok=True)
    fulcio = spoof = None
    signers, expired = [], []
    for name, kind, identity, issuer, trusted in SIGNERS:
        key_path, cert_path = os.path.join(sd, f"{name}.key"), os.path.join(sd, f"{name}.pem")
        if not os.path.exists(key_path):
            sv.write_key(key_path, ec.generate_private_key(ec.SECP256R1()))
        key = sv.read_key(key_path)
        cert = None
        if kind == "certificate":
            if not os.path.exists(cert_path):
                if trusted:
                    fulcio = fulcio or sv.Fulcio(d)
                    ca = fulcio
                else:
                    spoof = spoof or spoof_fulcio(sd)
                    ca = spoof
                chain = ca.issue(key.public_key(), identity, issuer, lifetime=lifetime)
                write_atomic(cert_path, b"".join(pem(c) for c in chain))
            with open(cert_path, "rb") as f:
                cert = x509.load_pem_x509_certificates(f.read())[0]
            if cert.not_valid_after_utc <= sv.now():
                expired.append(name)
        signers.append(Signer(name, kind, identity, issuer, trusted, key, cert))
    if expired:
        print(f"load_entries: note: the certificates of {', '.join(expired)} have expired (kept so that "
              f"fingerprints stay the same; remove {sd} for new ones)", file=sys.stderr)
    return signers


def make_requests(signers, count, seed):
    """[(signer, digest, body)]: `count` distinct digests, equal shares per signer, in a seeded order."""
    rng = random.Random(seed)
    order = [signers[i % len(signers)] for i in range(count)]
    rng.shuffle(order)
    out, seen = [], set()
    for signer in order:
        while True:
            digest = hashlib.sha256(rng.randbytes(64)).digest()
            if digest not in seen:
                break
        seen.add(digest)
        sig = signer.key.sign(digest, SIGNATURE)
        body = json.dumps({"hashedRekordRequestV002": {
            "digest": sv.b64(digest),
            "signature": {"content": sv.b64(sig), "verifier": signer.verifier},
        }}).encode()
        out.append((signer, digest, body))
    return out


class Failed(Exception):
    pass


_local = threading.local()


def session():
    s = getattr(_local, "session", None)
    if s is None:
        s = _local.session = requests.Session()
    return s


def submit(url, digest, body):
    """(index, retries, recovered_duplicate) for one entry; raises Failed."""
    last = None
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(min(0.1 * 2 ** attempt, 2.0))
        try:
            resp = session().post(url, data=body, timeout=TIMEOUT_S,
                                  headers={"Content-Type": "application/json"})
        except requests.RequestException as e:
            last = f"{type(e).__name__}: {e}"
            continue
        if resp.status_code == 201:
            entry = resp.json()
            index = int(entry.get("logIndex") or entry.get("inclusionProof", {}).get("logIndex") or 0)
            logged = base64.b64decode(entry.get("canonicalizedBody", ""))
            if sv.b64(digest).encode() not in logged:
                raise Failed(f"index {index}: the logged body does not carry digest {digest.hex()}")
            return index, attempt, False
        if resp.status_code == 409:
            if attempt and resp.headers.get("x-log-index"):
                # An earlier attempt of ours was logged (its reply was lost or late).
                return int(resp.headers["x-log-index"]), attempt, True
            raise Failed(f"409 duplicate (x-log-index {resp.headers.get('x-log-index')}): {resp.text[:200]}")
        last = f"HTTP {resp.status_code}: {resp.text[:200]}"
        if resp.status_code == 429 or resp.status_code >= 500:
            retry_after = resp.headers.get("Retry-After")
            if retry_after and retry_after.isdigit():
                time.sleep(min(int(retry_after), 5))
            continue
        raise Failed(last)
    raise Failed(f"gave up after {ATTEMPTS} attempts: {last}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True, help="prepared by `sign_and_verify.py prepare`")
    ap.add_argument("--log", required=True, help="Cairn's HTTP address, e.g. http://127.0.0.1:7401")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--seed", type=int, help="default: a random one (printed in the summary)")
    ap.add_argument("--out", help="ground truth file (default D/load.json)")
    ap.add_argument("--shard", type=int, help="POST to /logs/<shard>/api/v2/log/entries instead")
    ap.add_argument("--cert-lifetime", type=int, default=60,
                    help="minutes the signers' certificates are valid for, when first made (default 60)")
    args = ap.parse_args()
    if args.count < 0 or args.threads < 1:
        ap.error("--count must be >= 0 and --threads >= 1")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(8), "big")
    out = args.out or os.path.join(args.dir, "load.json")
    base = args.log.rstrip("/")
    url = f"{base}/api/v2/log/entries" if args.shard is None else f"{base}/logs/{args.shard}/api/v2/log/entries"

    signers = load_signers(args.dir, datetime.timedelta(minutes=args.cert_lifetime))
    prepared = make_requests(signers, args.count, seed)

    results, errors = [], []
    retries = recovered = 0
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.threads) as pool:
        futures = {pool.submit(submit, url, digest, body): (signer, digest) for signer, digest, body in prepared}
        for fut in concurrent.futures.as_completed(futures):
            signer, digest = futures[fut]
            try:
                index, tries, dup = fut.result()
            except Exception as e:  # noqa: BLE001 (every failure is reported, none stops the others)
                errors.append(f"{signer.name} {digest.hex()}: {e}")
                continue
            retries += tries
            recovered += dup
            results.append((index, signer, digest))
    seconds = time.monotonic() - start

    results.sort(key=lambda r: r[0])
    indices = [r[0] for r in results]
    if len(set(indices)) != len(indices):
        dups = sorted(i for i, n in collections.Counter(indices).items() if n > 1)
        errors.append(f"indices given to more than one entry: {dups[:20]}")
    truth = {
        "entries": [dict(index=i, signer=s.name, kind=s.kind, identity=s.identity, issuer=s.issuer,
                         trusted=s.trusted, fingerprint=s.fingerprint, digest=digest.hex())
                    for i, s, digest in results],
        "signers": {s.name: s.describe() for s in signers},
    }
    if errors:
        out += ".partial"  # what did get logged; never in place of a complete ground truth
    write_atomic(out, (json.dumps(truth, indent=1) + "\n").encode())
    summary = {
        "count": len(results),
        "requested": args.count,
        "seconds": round(seconds, 3),
        "entries_per_s": round(len(results) / seconds, 1) if seconds > 0 else None,
        "threads": args.threads,
        "seed": seed,
        "first_index": indices[0] if indices else None,
        "last_index": indices[-1] if indices else None,
        "retries": retries,
        "recovered_duplicates": recovered,
        "errors": len(errors),
        "out": out,
    }
    for e in errors[:10]:
        print(f"load_entries: {e}", file=sys.stderr)
    print(json.dumps(summary))
    return 0 if not errors and len(results) == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
