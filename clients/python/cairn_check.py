#!/usr/bin/env python3
"""A Cairn client in Python, generated from proto/cairn/v1/log.proto with grpcio-tools.

It discovers the API with server reflection, checks the standard health service, logs entries with
wait=PUBLISHED, and verifies every reply itself: the checkpoint's Ed25519 signature (c2sp signed-note)
against the shard's verifier key, and the RFC 6962 inclusion proof against the checkpoint's root. It also
checks that an empty entry is refused with INVALID_ARGUMENT. Prints one JSON summary line; exit 0 only if
everything verified.

    python3 cairn_check.py --server 127.0.0.1:7400 --entries 200
"""

import argparse
import base64
import hashlib
import json
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.exceptions import InvalidSignature

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(HERE, "..", "..", "proto", "proto")


def generate_stubs():
    out = tempfile.mkdtemp(prefix="cairn-py-")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main([
        "protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}",
        os.path.join(PROTO_ROOT, "cairn", "v1", "log.proto"),
    ])
    if rc != 0:
        raise SystemExit("protoc failed")
    sys.path.insert(0, out)
    from cairn.v1 import log_pb2, log_pb2_grpc  # noqa: E402
    return log_pb2, log_pb2_grpc


def leaf_hash(entry):
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion_proof(index, size, leaf, proof):
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        raise ValueError("index beyond tree size")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ValueError("proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("proof too short")
    return r


def open_checkpoint(note, vkey):
    """Verifies a signed note by vkey `<name>+<hex id>+<base64(0x01||key)>`; returns (origin, size, root)."""
    name, key_id_hex, key_b64 = vkey.split("+", 2)
    raw = base64.b64decode(key_b64)
    if raw[0] != 1:
        raise ValueError("not an Ed25519 key")
    public = Ed25519PublicKey.from_public_bytes(raw[1:])
    key_id = bytes.fromhex(key_id_hex)
    text, sep, sigs = note.partition(b"\n\n")
    if not sep:
        raise ValueError("no signature block")
    text += b"\n"
    ok = False
    for line in sigs.decode().splitlines():
        if not line.startswith("\u2014 "):
            raise ValueError("bad signature line")
        signer, sig_b64 = line[2:].rsplit(" ", 1)
        sig = base64.b64decode(sig_b64)
        if signer == name and sig[:4] == key_id:
            public.verify(sig[4:], text)  # raises InvalidSignature
            ok = True
    if not ok:
        raise ValueError("no signature by the log's key")
    origin, size, root = text.decode().split("\n")[:3]
    if origin != name:
        raise ValueError("origin differs from the key name")
    return origin, int(size), base64.b64decode(root)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True, help="host:port of the gRPC API")
    ap.add_argument("--entries", type=int, default=100)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--tag", default="python")
    args = ap.parse_args()

    log_pb2, log_pb2_grpc = generate_stubs()
    channel = grpc.insecure_channel(args.server)
    grpc.channel_ready_future(channel).result(timeout=30)

    # Generic tools work: reflection lists the service, health reports it serving.
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    services = [s.name for r in replies for s in r.list_services_response.service]
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="cairn.v1.Log"))

    stub = log_pb2_grpc.LogStub(channel)
    keys = {s.id: s.vkey for s in stub.ListShards(log_pb2.ListShardsRequest()).shards}

    entries = [f"{args.tag}-entry-{i}".encode() for i in range(args.entries)]
    verified, results = 0, []
    for start in range(0, len(entries), args.batch):
        chunk = entries[start:start + args.batch]
        reply = stub.AddEntries(log_pb2.AddEntriesRequest(entries=chunk, wait=log_pb2.PUBLISHED), timeout=60)
        if len(reply.results) != len(chunk):
            raise SystemExit("wrong number of results")
        for entry, r in zip(chunk, reply.results):
            if r.leaf_hash != leaf_hash(entry):
                raise SystemExit("leaf hash mismatch")
            _, size, root = open_checkpoint(r.checkpoint, keys[r.shard_id])
            if root_from_inclusion_proof(r.index, size, leaf_hash(entry), list(r.inclusion_proof)) != root:
                raise SystemExit(f"inclusion proof for index {r.index} does not verify")
            verified += 1
            results.append({"shard": r.shard_id, "index": r.index, "entry": entry.decode()})

    try:
        stub.AddEntries(log_pb2.AddEntriesRequest(entries=[b""]))
        raise SystemExit("an empty entry was accepted")
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
            raise SystemExit(f"empty entry: expected INVALID_ARGUMENT, got {e.code()}")
        empty_status = e.code().name

    print(json.dumps({
        "services": sorted(services),
        "health": health_pb2.HealthCheckResponse.ServingStatus.Name(health.status),
        "verified": verified,
        "empty_entry": empty_status,
        "results": results,
    }))


if __name__ == "__main__":
    try:
        main()
    except InvalidSignature:
        raise SystemExit("checkpoint signature does not verify")
