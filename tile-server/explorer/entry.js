// What an entry says: a Rekor v2 hashedrekord (v0.0.2) body decoded into digest, signature and
// signer (certificate or key), or an opaque entry shown as text or hex.

import { hex, sha256, unbase64 } from "./tlog.js";
import { parseCertificate, publicKeyInfo } from "./x509.js";

const DIGEST_NAMES = { SHA2_256: "sha256", SHA2_384: "sha384", SHA2_512: "sha512" };

/**
 * Decodes `bytes` as the kind of shard it came from. Returns `{type: "hashedrekord", ...}`,
 * `{type: "opaque", text | null, bytes}`, or `{type: "unreadable", error, bytes}` for a Sigstore
 * shard's entry that is not a hashedrekord this page can read.
 */
export async function describeEntry(bytes, shardKind) {
  if (shardKind !== "sigstore") {
    return { type: "opaque", text: printable(bytes), bytes };
  }
  try {
    return await hashedRekord(bytes);
  } catch (e) {
    return { type: "unreadable", error: e.message, bytes, text: printable(bytes) };
  }
}

async function hashedRekord(bytes) {
  const body = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  const spec = body && body.spec && body.spec.hashedRekordV002;
  if (!spec) throw new Error(`a ${body.kind || "?"} entry (apiVersion ${body.apiVersion || "?"}), not hashedrekord v0.0.2`);
  const data = spec.data || {};
  const signature = spec.signature || {};
  const verifier = signature.verifier || {};
  const algorithm = Object.hasOwn(DIGEST_NAMES, data.algorithm) ? DIGEST_NAMES[data.algorithm] : String(data.algorithm || "sha256");
  const out = {
    type: "hashedrekord",
    kind: body.kind,
    apiVersion: body.apiVersion,
    digest: { algorithm, hex: hex(unbase64(data.digest || "", "the digest")) },
    signature: signature.content || "",
    keyDetails: verifier.keyDetails || null,
    json: body,
  };
  const raw = (verifier.x509Certificate || verifier.publicKey || {}).rawBytes;
  if (!raw) throw new Error("the entry names no certificate or public key");
  const der = unbase64(raw, "the verifier");
  out.fingerprint = hex(await sha256(der));
  if (verifier.x509Certificate) {
    out.signer = "certificate";
    out.certificate = parseCertificate(der);
    out.keyFingerprint = hex(await sha256(out.certificate.key.der));
    // The identity Sigstore policies match: the first email or URI name (Fulcio issues one).
    const san = out.certificate.sans.find((n) => n.type === "email" || n.type === "URI") || out.certificate.sans[0];
    out.identity = san ? san.value : null;
    out.issuer = out.certificate.oidcIssuer;
  } else {
    out.signer = "key";
    out.key = publicKeyInfo(der);
    out.keyFingerprint = out.fingerprint;
    out.identity = null;
    out.issuer = null;
  }
  return out;
}

/** The bytes as text when they are UTF-8 without control or invisible characters (tab, newline allowed). */
export function printable(bytes) {
  let s;
  try {
    s = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return null;
  }
  // Control characters, bidirectional overrides and invisible characters make it binary here.
  return /[\u0000-\u0008\u000b-\u001f\u007f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/.test(s) ? null : s;
}

/** A classic hex dump of at most `limit` bytes. */
export function hexDump(bytes, limit = 4096) {
  const lines = [];
  for (let at = 0; at < Math.min(bytes.length, limit); at += 16) {
    const row = bytes.subarray(at, at + 16);
    const h = Array.from(row, (b) => b.toString(16).padStart(2, "0")).join(" ");
    const a = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${at.toString(16).padStart(8, "0")}  ${h.padEnd(47)}  ${a}`);
  }
  if (bytes.length > limit) lines.push(`… ${bytes.length - limit} more bytes`);
  return lines.join("\n");
}
