#!/usr/bin/env python3
"""Sigstore bundles, good and bad, made through Cairn, and sigstore-python's (4.5.1, unmodified) verdict on them.

A Rust test compares these verdicts with Cairn's own `cairn verify-bundle`, so the expected answer comes from
an independent verifier. Test doubles (test CA and CT key from `sign_and_verify.py prepare`, its fake Fulcio,
unsigned JWTs) are reused from `sign_and_verify.py`; Cairn logs every entry and its TSA timestamps every
signature.

`make` writes D/trusted_root.json (the `trustedRoot` of the ClientTrustConfig Cairn serves) and one directory
per case, D/cases/<name>/, holding `artifact`, `bundle.json`, `case.json` = {identity, issuer, expect
("valid" | "invalid"), why} and, for a case that needs its own, `trusted_root.json`. The cases:

- `good-<i>`, i < N: signed with sigstore-python's public API (`SigningContext.from_trust_config`,
  `signer.sign_artifact`) by three identities (email SANs) from two issuers, in turn.
- `tampered-artifact`: good-0's bundle; the artifact's last byte changed.
- `wrong-identity`, `wrong-issuer`: good-0's bundle and artifact; the policy names another email / issuer.
- `expired-at-timestamp`: the signing certificate's notAfter is a minute before signing, so before the
  TSA's genTime. sigstore-python's signer refuses such a certificate (`ExpiredCertificate`), so a `Signer`
  subclass hands it over (the notes' private-API route (B)); the entry is still logged by Cairn and
  timestamped by Cairn's TSA through sigstore-python's own clients.
- `unknown-tsa`: good-0, judged against a trusted root whose TSA chain is an unrelated, fresh CA and TSA.
- `other-checkpoint`: good-0's bundle carrying the signed checkpoint from the last good bundle (same shard,
  larger tree), so the checkpoint's signature verifies but its root is not the inclusion proof's.
- `body-mismatch`: good-0's bundle with good-1's whole tlog entry (logIndex, inclusion proof, body): the
  proof verifies, but the body is for another signature and certificate.

`verify` runs `Verifier(trusted_root=TrustedRoot.from_file(F))` with an `Identity` policy on one bundle,
offline (any network use is an error), and prints one JSON line, `{"valid": true}` or
`{"valid": false, "error": "..."}`, with exit 0 either way; exit 2 on usage, I/O or trusted-root errors.

    python bundle_cases.py make --dir D --log http://127.0.0.1:PORT --fulcio-port P --count N
    python bundle_cases.py verify --trusted-root F --artifact A --bundle B --identity I --issuer S

`make` needs D prepared by `sign_and_verify.py prepare` and Cairn serving with P's Fulcio in `ca_urls`.
Needs the venv of scripts/sigstore-clients.sh (sigstore, cryptography, requests).
"""

import argparse
import copy
import datetime
import json
import os
import shutil
import socket
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sigstore.errors import Error as SigstoreError
from sigstore.models import Bundle, ClientTrustConfig, TrustedRoot
from sigstore.sign import Signer, SigningContext
from sigstore.verify import Verifier
from sigstore.verify.policy import Identity

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sign_and_verify as sv  # noqa: E402 (found through the path set just above)

OTHER_ISSUER = "https://accounts.cairn.test"
# good-<i> is signed by SIGNERS[i % 3]: three identities, two issuers.
SIGNERS = [
    (sv.IDENTITY, sv.ISSUER),
    ("maintainer@cairn.test", OTHER_ISSUER),
    ("ci@cairn.test", sv.ISSUER),
]
OTHER_IDENTITY = "mallory@cairn.test"


class CertSigner(Signer):
    """A sigstore-python `Signer` that signs with a key and certificate of our choosing.

    The public signer refuses a certificate past its notAfter before signing (`ExpiredCertificate`); this
    one skips Fulcio and that check, and keeps everything else: the TSA request, the Rekor v2 entry and
    the bundle are sigstore-python's own."""

    def __init__(self, token, ctx, key, cert):
        super().__init__(token, ctx, cache=False)
        self._key, self._cert = key, cert

    @property
    def _private_key(self):
        return self._key

    def _signing_cert(self):
        return self._cert


def tlog_entry(bundle):
    return bundle["verificationMaterial"]["tlogEntries"][0]


def checkpoint_size(bundle):
    """The tree size of the bundle's signed checkpoint (its note's second line)."""
    return int(tlog_entry(bundle)["inclusionProof"]["checkpoint"]["envelope"].split("\n")[1])


def stranger_tsa_chain():
    """[TSA leaf, root] from a fresh CA nobody trusts, shaped as a real TSA's chain."""
    start = sv.now() - datetime.timedelta(hours=1)
    root_key = ec.generate_private_key(ec.SECP256R1())
    tsa_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stranger timestamp authority root")])
    root = sv.ca_cert(root_name, root_key, root_name, root_key, start, 0)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stranger timestamp authority")]))
        .issuer_name(root_name)
        .public_key(tsa_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(tsa_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    return [leaf, root]


def sign_expired(ctx, fulcio, data, identity, issuer):
    """A bundle whose certificate's notAfter is a minute in the past when it is timestamped and logged."""
    key = ec.generate_private_key(ec.SECP256R1())
    not_before = sv.now() - sv.LEAF_LIFETIME - datetime.timedelta(minutes=1)
    leaf = fulcio.issue(key.public_key(), identity, issuer, not_before=not_before)[0]
    signer = CertSigner(sv.identity_token(identity, issuer), ctx, key, leaf)
    bundle = signer.sign_artifact(data)
    gen_time = bundle.verification_material.timestamp_verification_data.rfc3161_timestamps[0].tst_info.gen_time
    if not leaf.not_valid_after_utc < gen_time:
        raise RuntimeError(f"certificate valid until {leaf.not_valid_after_utc}, timestamp {gen_time}")
    return bundle, leaf.not_valid_after_utc, gen_time


class Cases:
    """Writes D/cases/<name>/ and remembers the names."""

    def __init__(self, d):
        self.dir = os.path.join(d, "cases")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.names = []

    def write(self, name, artifact, bundle, identity, issuer, expect, why, trusted_root=None):
        """`bundle` is a JSON string (as sigstore-python wrote it) or a dict (one we changed)."""
        text = bundle if isinstance(bundle, str) else json.dumps(bundle)
        Bundle.from_json(text)  # every case must parse: a bad case fails verification, not loading
        d = os.path.join(self.dir, name)
        os.makedirs(d)
        with open(os.path.join(d, "artifact"), "wb") as f:
            f.write(artifact)
        with open(os.path.join(d, "bundle.json"), "w") as f:
            f.write(text)
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump({"identity": identity, "issuer": issuer, "expect": expect, "why": why}, f, indent=2)
        if trusted_root is not None:
            with open(os.path.join(d, "trusted_root.json"), "w") as f:
                json.dump(trusted_root, f, indent=2)
        self.names.append(name)


def make(args):
    d = args.dir
    if args.count < len(SIGNERS):
        print(f"--count must be at least {len(SIGNERS)} (one bundle per identity)", file=sys.stderr)
        return 2
    trust_json = sv.served_trust_config(args.log)
    trusted_root = json.loads(trust_json)["trustedRoot"]
    with open(os.path.join(d, "trusted_root.json"), "w") as f:
        json.dump(trusted_root, f, indent=2)
    ctx = SigningContext.from_trust_config(ClientTrustConfig.from_json(trust_json))
    cases = Cases(d)

    fulcio = sv.Fulcio(d)
    server = sv.serve_fulcio(fulcio, args.fulcio_port)
    good = []  # (artifact, bundle as a dict, identity, issuer)
    try:
        for i in range(args.count):
            identity, issuer = SIGNERS[i % len(SIGNERS)]
            data = f"cairn bundle case good-{i}: release {i}.0, signed by {identity}\n".encode()
            with ctx.signer(sv.identity_token(identity, issuer)) as signer:
                text = signer.sign_artifact(data).to_json()
            bundle = json.loads(text)
            cases.write(f"good-{i}", data, text, identity, issuer, "valid",
                        f"signed by {identity} from {issuer} with sigstore-python's public API; "
                        f"logged at index {tlog_entry(bundle)['logIndex']}, timestamped by Cairn's TSA")
            good.append((data, bundle, identity, issuer))
    finally:
        server.shutdown()
    data, bundle, identity, issuer = good[0]

    tampered = data[:-1] + bytes([data[-1] ^ 0x01])
    cases.write("tampered-artifact", tampered, bundle, identity, issuer, "invalid",
                "good-0's bundle; the artifact's last byte changed, so neither its digest nor the signature match")
    cases.write("wrong-identity", data, bundle, OTHER_IDENTITY, issuer, "invalid",
                f"good-0's bundle and artifact; the certificate names {identity}, the policy {OTHER_IDENTITY}")
    other_issuer = next(s for _, s in SIGNERS if s != issuer)
    cases.write("wrong-issuer", data, bundle, identity, other_issuer, "invalid",
                f"good-0's bundle and artifact; the certificate's issuer is {issuer}, the policy's {other_issuer}")

    expired_data = b"cairn bundle case expired-at-timestamp\n"
    expired, not_after, gen_time = sign_expired(ctx, fulcio, expired_data, identity, issuer)
    expired = json.loads(expired.to_json())
    cases.write("expired-at-timestamp", expired_data, expired, identity, issuer, "invalid",
                f"the signing certificate expired at {not_after.isoformat()}, before the TSA's genTime "
                f"{gen_time.isoformat()}; the entry is logged at index {tlog_entry(expired)['logIndex']}")

    stranger = copy.deepcopy(trusted_root)
    chain = [{"rawBytes": sv.b64(c.public_bytes(serialization.Encoding.DER))} for c in stranger_tsa_chain()]
    for tsa in stranger["timestampAuthorities"]:
        tsa["certChain"]["certificates"] = chain
    cases.write("unknown-tsa", data, bundle, identity, issuer, "invalid",
                "good-0; this case's trusted root has an unrelated CA and TSA in place of Cairn's TSA chain, "
                "so the bundle's timestamp is from a TSA the verifier does not know", trusted_root=stranger)

    # Bundles were logged one after another, so the last one's checkpoint is of a larger tree.
    other = copy.deepcopy(bundle)
    tlog_entry(other)["inclusionProof"]["checkpoint"] = tlog_entry(good[-1][1])["inclusionProof"]["checkpoint"]
    if checkpoint_size(other) == checkpoint_size(bundle):
        raise RuntimeError(f"good-0 and good-{args.count - 1} have checkpoints of the same tree size")
    cases.write("other-checkpoint", data, other, identity, issuer, "invalid",
                f"good-0's bundle with good-{args.count - 1}'s signed checkpoint (tree size "
                f"{checkpoint_size(other)}, not {checkpoint_size(bundle)}): the checkpoint's signature "
                "verifies, but its root hash is not the inclusion proof's")

    mismatch = copy.deepcopy(bundle)
    mismatch["verificationMaterial"]["tlogEntries"] = [copy.deepcopy(tlog_entry(good[1][1]))]
    if tlog_entry(mismatch)["canonicalizedBody"] == tlog_entry(bundle)["canonicalizedBody"]:
        raise RuntimeError("good-0 and good-1 have the same log entry body")
    cases.write("body-mismatch", data, mismatch, identity, issuer, "invalid",
                f"good-0's bundle with good-1's whole tlog entry (index {tlog_entry(mismatch)['logIndex']}, "
                "inclusion proof, body): the proof verifies, but the body is another signature and certificate")

    print(json.dumps({"trusted_root": os.path.join(d, "trusted_root.json"), "cases": cases.names}))
    return 0


class NetworkUse(Exception):
    """Verification tried to open a connection or resolve a name."""


def offline():
    """From here on, any connection or name lookup raises `NetworkUse`."""
    def refuse(*_args, **_kwargs):
        raise NetworkUse("sigstore-python tried to use the network while verifying")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse


def verdict_error(e):
    """sigstore-python's message; the exception's type too when it is not one of sigstore's own errors."""
    message = str(e) or type(e).__name__
    return message if isinstance(e, SigstoreError) else f"{type(e).__name__}: {message}"


def verify(args):
    offline()
    try:
        with open(args.artifact, "rb") as f:
            data = f.read()
        with open(args.bundle, "rb") as f:
            bundle_bytes = f.read()
        verifier = Verifier(trusted_root=TrustedRoot.from_file(args.trusted_root))
    except Exception as e:  # the tuple cannot be judged (NetworkUse included): not a verdict
        print(f"bundle_cases.py verify: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    try:
        bundle = Bundle.from_json(bundle_bytes)
        verifier.verify_artifact(data, bundle, Identity(identity=args.identity, issuer=args.issuer))
    except NetworkUse as e:
        print(f"bundle_cases.py verify: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # whatever sigstore-python raises, it did not accept the bundle
        print(json.dumps({"valid": False, "error": verdict_error(e)}))
        return 0
    print(json.dumps({"valid": True}))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make", help="sign good bundles through Cairn and derive the bad cases")
    m.add_argument("--dir", required=True, help="a directory prepared by sign_and_verify.py prepare")
    m.add_argument("--log", required=True, help="Cairn's HTTP read path, e.g. http://127.0.0.1:7401")
    m.add_argument("--fulcio-port", type=int, required=True)
    m.add_argument("--count", type=int, required=True, help="how many good bundles (at least 3)")
    v = sub.add_parser("verify", help="sigstore-python's verdict on one bundle, offline")
    v.add_argument("--trusted-root", required=True)
    v.add_argument("--artifact", required=True)
    v.add_argument("--bundle", required=True)
    v.add_argument("--identity", required=True)
    v.add_argument("--issuer", required=True)
    args = ap.parse_args()
    return make(args) if args.command == "make" else verify(args)


if __name__ == "__main__":
    sys.exit(main())
