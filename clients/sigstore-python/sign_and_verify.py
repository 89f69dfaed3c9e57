#!/usr/bin/env python3
"""sigstore-python (4.5.1, unmodified) signs and verifies through Cairn's Sigstore shard.

Keyless signing as in production, with every outside party played by a test double except Cairn:

- a test CA (root + intermediate, ECDSA P-256) standing in for Fulcio's, and a test CT log key
  (P-256); `prepare` writes both into a trusted-root-shaped `extra_root.json` that Cairn merges into
  the trusted root it serves (`[sigstore] extra_trusted_root`);
- a fake Fulcio (`POST /api/v2/signingCert`) that takes the key from the client's CSR and the identity
  from the bearer token, and issues a Fulcio-profile leaf: empty subject, critical email SAN, OIDC
  issuer extensions 1.3.6.1.4.1.57264.1.1 and .1.8, codeSigning EKU, AKI, and one embedded SCT that
  the CT key signed over the precertificate (RFC 6962 §3.2: TBS with the poison extension removed);
- a self-made, unsigned JWT as the OIDC identity token (sigstore-python forwards it, never checks it).

`run` loads the ClientTrustConfig Cairn serves (`/client_trust_config.json`) and uses only
sigstore-python's public API: `SigningContext.from_trust_config`, `signer.sign_artifact` (which checks
the SCT, timestamps the signature with Cairn's TSA and logs a hashedrekord 0.0.2 entry through its
Rekor v2 client), then `Verifier` with an `Identity` policy on the bundle as written to disk. The
bundle must verify; a tampered artifact, another identity and another issuer must not. Prints one
JSON line; exit 0 only if everything held.

    python sign_and_verify.py prepare --dir D --fulcio-port P
    python sign_and_verify.py run --dir D --log http://127.0.0.1:PORT --fulcio-port P

`run` signs D/artifact and writes D/artifact.sigstore.json. Needs the venv of
scripts/sigstore-clients.sh (sigstore, cryptography, requests).
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from sigstore.errors import VerificationError
from sigstore.models import Bundle, ClientTrustConfig
from sigstore.oidc import IdentityToken
from sigstore.sign import SigningContext
from sigstore.verify import Verifier
from sigstore.verify.policy import Identity

IDENTITY = "release-bot@cairn.test"
ISSUER = "https://oidc.cairn.test"
OIDC_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")  # raw UTF-8 bytes
OIDC_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")  # DER UTF8String
EMBEDDED_SCTS = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
PRECERT_POISON = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.3")
LEAF_LIFETIME = datetime.timedelta(minutes=10)  # as Fulcio's


def now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def der_length(n):
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def der(tag, content):
    return bytes([tag]) + der_length(len(content)) + content


def der_split(buf):
    """The elements of concatenated DER `buf`, each as (tag, header+content, content).

    Single-byte tags only, which is all a TBSCertificate's top level and its extensions use."""
    items, off = [], 0
    while off < len(buf):
        tag, n, head = buf[off], buf[off + 1], 2
        if n & 0x80:
            head += n & 0x7F
            n = int.from_bytes(buf[off + 2:off + head], "big")
        items.append((tag, buf[off:off + head + n], buf[off + head:off + head + n]))
        off += head + n
    return items


def oid_der(oid):
    arcs = [int(a) for a in oid.dotted_string.split(".")]
    out = bytes([40 * arcs[0] + arcs[1]])
    for a in arcs[2:]:
        group = [a & 0x7F]
        while a > 0x7F:
            a >>= 7
            group.append(0x80 | (a & 0x7F))
        out += bytes(reversed(group))
    return der(0x06, out)


def without_extension(tbs, oid):
    """DER TBSCertificate `tbs` with extension `oid` removed: RFC 6962 §3.2's precertificate TBS."""
    [(_, _, fields)] = der_split(tbs)
    fields = der_split(fields)
    tag, _, explicit = fields[-1]
    if tag != 0xA3:
        raise ValueError("TBSCertificate without extensions")
    [(_, _, extensions)] = der_split(explicit)
    kept = [whole for _, whole, ext in der_split(extensions) if der_split(ext)[0][1] != oid_der(oid)]
    if len(kept) == len(der_split(extensions)):
        raise ValueError(f"no extension {oid.dotted_string}")
    return der(0x30, b"".join(whole for _, whole, _ in fields[:-1]) + der(0xA3, der(0x30, b"".join(kept))))


def spki_der(key):
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def b64(data):
    return base64.b64encode(data).decode()


def rfc3339(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_key(path, key):
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def read_key(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), None)


def read_cert(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def ca_cert(subject, key, issuer, issuer_key, not_before, path_length):
    """A CA certificate as the webpki profile (sigstore-python 4.5.1) wants it."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer_key is not key:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def prepare(args):
    """The test CA, the CT log key, and the trusted-root fragment that names them."""
    d = args.dir
    start = now() - datetime.timedelta(hours=1)
    root_key = ec.generate_private_key(ec.SECP256R1())
    inter_key = ec.generate_private_key(ec.SECP256R1())
    ct_key = ec.generate_private_key(ec.SECP256R1())
    org = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cairn-test")]
    root_name = x509.Name(org + [x509.NameAttribute(NameOID.COMMON_NAME, "cairn-test fulcio root")])
    inter_name = x509.Name(org + [x509.NameAttribute(NameOID.COMMON_NAME, "cairn-test fulcio intermediate")])
    root = ca_cert(root_name, root_key, root_name, root_key, start, 1)
    inter = ca_cert(inter_name, inter_key, root_name, root_key, start, 0)
    write_key(os.path.join(d, "ca.key"), inter_key)
    write_key(os.path.join(d, "ct.key"), ct_key)
    with open(os.path.join(d, "ca-chain.pem"), "wb") as f:
        for c in (inter, root):
            f.write(c.public_bytes(serialization.Encoding.PEM))
    ct_spki = spki_der(ct_key.public_key())
    extra = {
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [],
        "certificateAuthorities": [{
            "subject": {"organization": "cairn-test", "commonName": "cairn-test fulcio"},
            "uri": f"http://127.0.0.1:{args.fulcio_port}",
            "certChain": {"certificates": [
                {"rawBytes": b64(c.public_bytes(serialization.Encoding.DER))} for c in (inter, root)
            ]},
            "validFor": {"start": rfc3339(start)},
        }],
        "ctlogs": [{
            "baseUrl": "https://ct.cairn.test",
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": b64(ct_spki),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": rfc3339(start)},
            },
            "logId": {"keyId": b64(hashlib.sha256(ct_spki).digest())},
        }],
    }
    with open(os.path.join(d, "extra_root.json"), "w") as f:
        json.dump(extra, f, indent=2)
    print(json.dumps({"extra_root": os.path.join(d, "extra_root.json")}))


class Fulcio:
    """Issues Fulcio-profile leaves from the test intermediate, with an SCT from the test CT key."""

    def __init__(self, d):
        self.ca_key = read_key(os.path.join(d, "ca.key"))
        self.ct_key = read_key(os.path.join(d, "ct.key"))
        with open(os.path.join(d, "ca-chain.pem"), "rb") as f:
            self.chain = x509.load_pem_x509_certificates(f.read())
        self.issued = []

    def sct(self, tbs, ts_ms):
        """RFC 6962 §3.2 SCT (v1, precert_entry) over precertificate TBS `tbs`, as the extension's DER."""
        issuer_key_hash = hashlib.sha256(spki_der(self.ca_key.public_key())).digest()
        signed = (struct.pack("!BBQH", 0, 0, ts_ms, 1) + issuer_key_hash
                  + len(tbs).to_bytes(3, "big") + tbs + struct.pack("!H", 0))
        sig = self.ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        log_id = hashlib.sha256(spki_der(self.ct_key.public_key())).digest()
        # version v1, log id, timestamp, no extensions, sha256(4) / ecdsa(3), signature.
        sct = (bytes([0]) + log_id + struct.pack("!QH", ts_ms, 0) + bytes([4, 3])
               + struct.pack("!H", len(sig)) + sig)
        sct_list = struct.pack("!H", len(sct) + 2) + struct.pack("!H", len(sct)) + sct
        return der(0x04, sct_list)

    def issue(self, public_key, email, issuer, not_before=None, lifetime=LEAF_LIFETIME):
        """[leaf, intermediate, root], the leaf valid from `not_before` (default: a minute ago) for `lifetime`."""
        inter = self.chain[0]
        if not_before is None:
            not_before = now() - datetime.timedelta(minutes=1)
        serial = x509.random_serial_number()

        def builder():
            return (
                x509.CertificateBuilder()
                .subject_name(x509.Name([]))
                .issuer_name(inter.subject)
                .public_key(public_key)
                .serial_number(serial)
                .not_valid_before(not_before)
                .not_valid_after(not_before + lifetime)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, key_cert_sign=False, crl_sign=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                               critical=False)
                # An empty subject makes the SAN critical (RFC 5280 §4.2.1.6), as Fulcio does.
                .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=True)
                .add_extension(x509.UnrecognizedExtension(OIDC_ISSUER_V1, issuer.encode()), critical=False)
                .add_extension(x509.UnrecognizedExtension(OIDC_ISSUER_V2, der(0x0C, issuer.encode())),
                               critical=False)
            )

        precert = builder().add_extension(x509.PrecertPoison(), critical=True).sign(self.ca_key, hashes.SHA256())
        ts_ms = int(now().timestamp()) * 1000  # whole seconds: sigstore-python rebuilds ms from a float
        tbs = without_extension(precert.tbs_certificate_bytes, PRECERT_POISON)
        sct = self.sct(tbs, ts_ms)
        leaf = (builder().add_extension(x509.UnrecognizedExtension(EMBEDDED_SCTS, sct), critical=False)
                .sign(self.ca_key, hashes.SHA256()))
        # cryptography's own RFC 6962 reconstruction, from the final certificate, must agree.
        if leaf.tbs_precertificate_bytes != tbs:
            raise RuntimeError("the leaf's TBS does not match the precertificate's")
        self.issued.append(leaf)
        return [leaf] + self.chain


def jwt_claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def serve_fulcio(fulcio, port):
    class Handler(BaseHTTPRequestHandler):
        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):  # noqa: N802 (http.server's naming)
            try:
                if self.path != "/api/v2/signingCert":
                    return self.reply(404, {"code": 5, "message": f"no route {self.path}"})
                auth = self.headers.get("Authorization", "")
                if not auth.startswith("Bearer "):
                    return self.reply(401, {"code": 16, "message": "no bearer token"})
                claims = jwt_claims(auth[len("Bearer "):])
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                pem = base64.b64decode(body["certificateSigningRequest"])
                csr = x509.load_pem_x509_csr(pem)
                if not csr.is_signature_valid:
                    return self.reply(400, {"code": 3, "message": "CSR signature does not verify"})
                chain = fulcio.issue(csr.public_key(), claims["email"], claims["iss"])
                pems = [c.public_bytes(serialization.Encoding.PEM).decode() for c in chain]
                self.reply(201, {"signedCertificateEmbeddedSct": {"chain": {"certificates": pems}}})
            except Exception as e:  # a test double: report, don't hang the client
                self.reply(500, {"code": 13, "message": f"fake fulcio: {e!r}"})

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def unsigned_jwt(claims):
    enc = lambda o: base64.urlsafe_b64encode(json.dumps(o).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{enc({'alg': 'none', 'typ': 'JWT'})}.{enc(claims)}."


def identity_token(email, issuer):
    """An unsigned OIDC token for `email` from `issuer`, valid for ten minutes."""
    t = int(now().timestamp())
    return IdentityToken(unsigned_jwt({
        "iss": issuer, "sub": email, "email": email, "email_verified": True,
        "aud": "sigstore", "iat": t, "nbf": t, "exp": t + 600,
    }))


def served_trust_config(log):
    """The ClientTrustConfig JSON text Cairn serves at `log`."""
    resp = requests.get(f"{log}/client_trust_config.json", timeout=30)
    resp.raise_for_status()
    return resp.text


def refused(verifier, data, bundle, policy):
    """The VerificationError's message if the bundle is refused, else None."""
    try:
        verifier.verify_artifact(data, bundle, policy)
    except VerificationError as e:
        return str(e) or type(e).__name__
    return None


def run(args):
    d = args.dir
    trust_json = served_trust_config(args.log)
    trust = ClientTrustConfig.from_json(trust_json)

    fulcio = Fulcio(d)
    server = serve_fulcio(fulcio, args.fulcio_port)
    try:
        token = identity_token(IDENTITY, ISSUER)
        artifact = os.path.join(d, "artifact")
        with open(artifact, "rb") as f:
            data = f.read()
        with SigningContext.from_trust_config(trust).signer(token) as signer:
            bundle = signer.sign_artifact(data)
    finally:
        server.shutdown()
    bundle_path = artifact + ".sigstore.json"
    with open(bundle_path, "w") as f:
        f.write(bundle.to_json())

    # Verification starts again from what a verifier has: the served trust config and the bundle file.
    verifier = Verifier(trusted_root=ClientTrustConfig.from_json(trust_json).trusted_root)
    with open(bundle_path, "rb") as f:
        on_disk = Bundle.from_json(f.read())
    verifier.verify_artifact(data, on_disk, Identity(identity=IDENTITY, issuer=ISSUER))
    result = {
        "verified": True,
        "identity": IDENTITY,
        "issuer": ISSUER,
        "fulcio_certificates": len(fulcio.issued),
        "log_index": int(json.loads(bundle.to_json())["verificationMaterial"]["tlogEntries"][0]["logIndex"]),
        "bundle": bundle_path,
        "tampered": refused(verifier, data + b"!", on_disk, Identity(identity=IDENTITY, issuer=ISSUER)),
        "wrong_identity": refused(verifier, data, on_disk, Identity(identity="mallory@cairn.test", issuer=ISSUER)),
        "wrong_issuer": refused(verifier, data, on_disk, Identity(identity=IDENTITY, issuer="https://evil.test")),
    }
    print(json.dumps(result))
    held = (result["fulcio_certificates"] == 1 and result["tampered"] and result["wrong_identity"]
            and result["wrong_issuer"])
    return 0 if held else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write the test CA, CT key and extra_root.json into --dir")
    p.add_argument("--dir", required=True)
    p.add_argument("--fulcio-port", type=int, required=True)
    r = sub.add_parser("run", help="sign --dir/artifact through Cairn, then verify")
    r.add_argument("--dir", required=True)
    r.add_argument("--log", required=True, help="Cairn's HTTP read path, e.g. http://127.0.0.1:7401")
    r.add_argument("--fulcio-port", type=int, required=True)
    args = ap.parse_args()
    if args.command == "prepare":
        prepare(args)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
