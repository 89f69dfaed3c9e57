"""Writes N distinct signed hashedrekord v0.0.2 requests (protojson, one per line) for the Rekor v2
load test: each signs a different artifact with one ECDSA P-256 key, so every request is a new entry.

    python make_requests.py N OUT      (needs the `cryptography` package)
"""

import base64
import hashlib
import json
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils


def main() -> None:
    n, out = int(sys.argv[1]), sys.argv[2]
    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    b64 = lambda b: base64.b64encode(b).decode()
    with open(out, "w") as f:
        for i in range(n):
            digest = hashlib.sha256(b"artifact %d" % i).digest()
            sig = key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
            req = {
                "hashedRekordRequestV002": {
                    "digest": b64(digest),
                    "signature": {
                        "content": b64(sig),
                        "verifier": {
                            "publicKey": {"rawBytes": b64(spki)},
                            "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                        },
                    },
                }
            }
            f.write(json.dumps(req, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
