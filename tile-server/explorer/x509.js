// A small DER reader for what the explorer shows of X.509 certificates and public keys: names,
// validity, key type, subject alternative names, extended key usage and the Fulcio extensions
// (OID arc 1.3.6.1.4.1.57264.1). It decodes for display only; it checks no signature. Every read is
// bounds-checked: a malformed certificate is an error, never a wrong field.

export class DerError extends Error {}

/** One TLV: where it starts, tag byte, class, constructed flag, and the content's [start, end). */
function read(bytes, at, end = bytes.length) {
  if (at + 2 > end) throw new DerError("truncated DER");
  const tag = bytes[at];
  if ((tag & 0x1f) === 0x1f) throw new DerError("multi-byte DER tags are not supported");
  let len = bytes[at + 1];
  let start = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || start + n > end) throw new DerError("bad DER length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + bytes[start + i];
    start += n;
  }
  if (start + len > end) throw new DerError("DER value runs past its container");
  return { header: at, tag, cls: tag >> 6, constructed: (tag & 0x20) !== 0, number: tag & 0x1f, start, end: start + len };
}

function children(bytes, tlv) {
  const out = [];
  for (let at = tlv.start; at < tlv.end; ) {
    const c = read(bytes, at, tlv.end);
    out.push(c);
    at = c.end;
  }
  return out;
}

function expect(tlv, tag, what) {
  if (tlv.tag !== tag) throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, found 0x${tlv.tag.toString(16)}`);
  return tlv;
}

function oid(bytes, tlv) {
  expect(tlv, 0x06, "object identifier");
  if (tlv.end === tlv.start) throw new DerError("empty object identifier");
  const arcs = [];
  let v = 0;
  let fresh = true;
  for (let i = tlv.start; i < tlv.end; i++) {
    if (fresh && bytes[i] === 0x80) throw new DerError("object identifier arc with a leading zero byte");
    v = v * 128 + (bytes[i] & 0x7f);
    if (v > Number.MAX_SAFE_INTEGER) throw new DerError("object identifier arc too large");
    fresh = !(bytes[i] & 0x80);
    if (fresh) {
      if (arcs.length === 0) arcs.push(v < 80 ? Math.floor(v / 40) : 2, v < 80 ? v % 40 : v - 80);
      else arcs.push(v);
      v = 0;
    }
  }
  if (!fresh) throw new DerError("object identifier ends inside an arc");
  return arcs.join(".");
}

const decoder = new TextDecoder("utf-8", { fatal: false });

/** `table[key]` for own keys only (an OID or name is never read from Object.prototype). */
function lookup(table, key) {
  return Object.hasOwn(table, key) ? table[key] : undefined;
}

function text(bytes, tlv) {
  return decoder.decode(bytes.subarray(tlv.start, tlv.end));
}

function time(bytes, tlv) {
  const s = text(bytes, tlv);
  const m = tlv.tag === 0x17 ? /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(s) : /^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(s);
  if (!m) throw new DerError(`unreadable time "${s}"`);
  let year = Number(m[1]);
  if (tlv.tag === 0x17) year += year < 50 ? 2000 : 1900;
  const [month, day, hour, minute, second] = m.slice(2).map(Number);
  const d = new Date(0);
  d.setUTCFullYear(year, month - 1, day);
  d.setUTCHours(hour, minute, second);
  // Date rolls over (month 13, day 32, hour 24); a valid time reads back the same.
  if (d.getUTCFullYear() !== year || d.getUTCMonth() !== month - 1 || d.getUTCDate() !== day || d.getUTCHours() !== hour || d.getUTCMinutes() !== minute || d.getUTCSeconds() !== second) {
    throw new DerError(`impossible time "${s}"`);
  }
  return d;
}

const NAME_ATTRIBUTES = {
  "2.5.4.3": "CN",
  "2.5.4.6": "C",
  "2.5.4.7": "L",
  "2.5.4.8": "ST",
  "2.5.4.10": "O",
  "2.5.4.11": "OU",
  "1.2.840.113549.1.9.1": "emailAddress",
};

function name(bytes, tlv) {
  const parts = [];
  for (const rdn of children(bytes, expect(tlv, 0x30, "name"))) {
    for (const atv of children(bytes, rdn)) {
      const [type, value] = children(bytes, atv);
      const t = oid(bytes, type);
      parts.push(`${lookup(NAME_ATTRIBUTES, t) || t}=${text(bytes, value)}`);
    }
  }
  return parts.join(", ");
}

const KEY_ALGORITHMS = {
  "1.2.840.10045.2.1": "ECDSA",
  "1.2.840.113549.1.1.1": "RSA",
  "1.3.101.112": "Ed25519",
};
const CURVES = { "1.2.840.10045.3.1.7": "P-256", "1.3.132.0.34": "P-384", "1.3.132.0.35": "P-521" };

/** The algorithm of a DER SubjectPublicKeyInfo, e.g. "ECDSA P-256". */
export function publicKeyInfo(bytes, tlv = read(bytes, 0)) {
  const [alg, key] = children(bytes, expect(tlv, 0x30, "public key"));
  const [algOid, params] = children(bytes, expect(alg, 0x30, "key algorithm"));
  const a = oid(bytes, algOid);
  let algorithm = lookup(KEY_ALGORITHMS, a) || a;
  if (a === "1.2.840.10045.2.1" && params && params.tag === 0x06) {
    const c = oid(bytes, params);
    algorithm += " " + (lookup(CURVES, c) || c);
  }
  if (a === "1.2.840.113549.1.1.1") {
    const rsa = read(bytes, key.start + 1, key.end);
    const [modulus] = children(bytes, rsa);
    let n = modulus.end - modulus.start;
    if (bytes[modulus.start] === 0) n--;
    algorithm += ` ${n * 8}`;
  }
  return { algorithm, der: bytes.subarray(0, tlv.end) };
}

const EKU = {
  "1.3.6.1.5.5.7.3.1": "serverAuth",
  "1.3.6.1.5.5.7.3.2": "clientAuth",
  "1.3.6.1.5.5.7.3.3": "codeSigning",
  "1.3.6.1.5.5.7.3.4": "emailProtection",
  "1.3.6.1.5.5.7.3.8": "timeStamping",
};

/** Fulcio's certificate extensions (github.com/sigstore/fulcio docs/oid-info.md). */
export const FULCIO = {
  "1.3.6.1.4.1.57264.1.1": ["OIDC issuer (v1)", "raw"],
  "1.3.6.1.4.1.57264.1.2": ["GitHub workflow trigger (v1)", "raw"],
  "1.3.6.1.4.1.57264.1.3": ["GitHub workflow SHA (v1)", "raw"],
  "1.3.6.1.4.1.57264.1.4": ["GitHub workflow name (v1)", "raw"],
  "1.3.6.1.4.1.57264.1.5": ["GitHub workflow repository (v1)", "raw"],
  "1.3.6.1.4.1.57264.1.6": ["GitHub workflow ref (v1)", "raw"],
  "1.3.6.1.4.1.57264.1.8": ["OIDC issuer", "der"],
  "1.3.6.1.4.1.57264.1.9": ["Build signer URI", "der"],
  "1.3.6.1.4.1.57264.1.10": ["Build signer digest", "der"],
  "1.3.6.1.4.1.57264.1.11": ["Runner environment", "der"],
  "1.3.6.1.4.1.57264.1.12": ["Source repository URI", "der"],
  "1.3.6.1.4.1.57264.1.13": ["Source repository digest", "der"],
  "1.3.6.1.4.1.57264.1.14": ["Source repository ref", "der"],
  "1.3.6.1.4.1.57264.1.15": ["Source repository identifier", "der"],
  "1.3.6.1.4.1.57264.1.16": ["Source repository owner URI", "der"],
  "1.3.6.1.4.1.57264.1.17": ["Source repository owner identifier", "der"],
  "1.3.6.1.4.1.57264.1.18": ["Build config URI", "der"],
  "1.3.6.1.4.1.57264.1.19": ["Build config digest", "der"],
  "1.3.6.1.4.1.57264.1.20": ["Build trigger", "der"],
  "1.3.6.1.4.1.57264.1.21": ["Run invocation URI", "der"],
  "1.3.6.1.4.1.57264.1.22": ["Source repository visibility at signing", "der"],
};

function generalNames(bytes, tlv) {
  const out = [];
  for (const gn of children(bytes, expect(tlv, 0x30, "subject alternative names"))) {
    if (gn.cls !== 2) continue;
    switch (gn.number) {
      case 1:
        out.push({ type: "email", value: text(bytes, gn) });
        break;
      case 2:
        out.push({ type: "DNS", value: text(bytes, gn) });
        break;
      case 6:
        out.push({ type: "URI", value: text(bytes, gn) });
        break;
      case 0: {
        // otherName: type-id, [0] EXPLICIT value (Fulcio's username SAN is a UTF8String).
        const [typeId, wrapped] = children(bytes, gn);
        const inner = wrapped && children(bytes, wrapped)[0];
        out.push({ type: `otherName ${oid(bytes, typeId)}`, value: inner ? text(bytes, inner) : "" });
        break;
      }
      default:
        out.push({ type: `[${gn.number}]`, value: "(not shown)" });
    }
  }
  return out;
}

/** Decodes a DER certificate into the fields the explorer shows. */
export function parseCertificate(bytes) {
  const cert = expect(read(bytes, 0), 0x30, "certificate");
  if (cert.end !== bytes.length) throw new DerError("trailing bytes after the certificate");
  const [tbs, sigAlg, sigValue] = children(bytes, cert);
  if (!sigValue) throw new DerError("the certificate has no signature");
  const fields = children(bytes, expect(tbs, 0x30, "TBSCertificate"));
  let i = 0;
  let version = 1;
  if (fields[0] && fields[0].tag === 0xa0) {
    const v = children(bytes, fields[0])[0];
    version = bytes[v.end - 1] + 1;
    i++;
  }
  const serial = fields[i++];
  const innerAlgorithm = oid(bytes, children(bytes, expect(fields[i++], 0x30, "signature algorithm"))[0]);
  const issuerRaw = bytes.subarray(fields[i].header, fields[i].end);
  const issuer = name(bytes, fields[i++]);
  const [notBefore, notAfter] = children(bytes, expect(fields[i++], 0x30, "validity"));
  const subjectRaw = bytes.subarray(fields[i].header, fields[i].end);
  const subject = name(bytes, fields[i++]);
  const spki = fields[i++];
  if (!spki) throw new DerError("the certificate has no public key");
  const out = {
    version,
    serial: Array.from(bytes.subarray(serial.start, serial.end), (b) => b.toString(16).padStart(2, "0")).join(":"),
    issuer,
    subject,
    notBefore: time(bytes, notBefore),
    notAfter: time(bytes, notAfter),
    key: publicKeyInfo(bytes.subarray(spki.header, spki.end)),
    sans: [],
    extendedKeyUsage: [],
    fulcio: [],
    isCA: false,
    issuerRaw,
    subjectRaw,
    signed: bytes.subarray(tbs.header, tbs.end),
    signatureAlgorithm: oid(bytes, children(bytes, expect(sigAlg, 0x30, "signature algorithm"))[0]),
    innerAlgorithm,
    signature: bytes.subarray(expect(sigValue, 0x03, "signature").start + 1, sigValue.end),
  };
  for (; i < fields.length; i++) {
    if (fields[i].tag !== 0xa3) continue;
    const [exts] = children(bytes, fields[i]);
    for (const ext of children(bytes, exts)) {
      const parts = children(bytes, ext);
      const id = oid(bytes, parts[0]);
      const value = expect(parts[parts.length - 1], 0x04, `extension ${id}`);
      if (id === "2.5.29.17") out.sans = generalNames(bytes, read(bytes, value.start, value.end));
      else if (id === "2.5.29.37") {
        for (const u of children(bytes, read(bytes, value.start, value.end))) {
          const o = oid(bytes, u);
          out.extendedKeyUsage.push(lookup(EKU, o) || o);
        }
      } else if (id === "2.5.29.19") {
        const bc = children(bytes, read(bytes, value.start, value.end));
        out.isCA = bc.length > 0 && bc[0].tag === 0x01 && bytes[bc[0].start] !== 0;
      } else if (lookup(FULCIO, id)) {
        const [label, encoding] = FULCIO[id];
        const v = encoding === "der" ? text(bytes, read(bytes, value.start, value.end)) : text(bytes, value);
        out.fulcio.push({ oid: id, label, value: v });
      }
    }
  }
  const issuerV2 = out.fulcio.find((f) => f.oid === "1.3.6.1.4.1.57264.1.8");
  const issuerV1 = out.fulcio.find((f) => f.oid === "1.3.6.1.4.1.57264.1.1");
  out.oidcIssuer = (issuerV2 || issuerV1 || {}).value || null;
  return out;
}

const ECDSA_HASHES = { "1.2.840.10045.4.3.2": "SHA-256", "1.2.840.10045.4.3.3": "SHA-384" };
const CURVE_SIZES = { "P-256": 32, "P-384": 48 };

/** A DER ECDSA signature (SEQUENCE of r, s) as WebCrypto's r || s of `size` bytes each. */
function rawEcdsa(der, size) {
  const seq = expect(read(der, 0), 0x30, "ECDSA signature");
  const ints = children(der, seq);
  if (ints.length !== 2) throw new DerError("an ECDSA signature is two integers");
  const out = new Uint8Array(2 * size);
  ints.forEach((n, k) => {
    let v = der.subarray(expect(n, 0x02, "ECDSA integer").start, n.end);
    while (v.length > size && v[0] === 0) v = v.subarray(1);
    if (v.length > size) throw new DerError("ECDSA integer too long for the curve");
    out.set(v, (k + 1) * size - v.length);
  });
  return out;
}

/** Whether `cert` (parsed) carries a valid ECDSA signature by `issuer`'s key, and names it. */
export async function issuedBy(cert, issuer) {
  if (!equalBytes(cert.issuerRaw, issuer.subjectRaw) || cert.innerAlgorithm !== cert.signatureAlgorithm) return false;
  const hash = lookup(ECDSA_HASHES, cert.signatureAlgorithm);
  const curve = issuer.key.algorithm.startsWith("ECDSA ") ? issuer.key.algorithm.slice(6) : null;
  if (!hash || !lookup(CURVE_SIZES, curve)) return false; // only what Fulcio issues is checked here
  const key = await crypto.subtle.importKey("spki", issuer.key.der, { name: "ECDSA", namedCurve: curve }, false, ["verify"]);
  return crypto.subtle.verify({ name: "ECDSA", hash }, key, rawEcdsa(cert.signature, CURVE_SIZES[curve]), cert.signed);
}

function equalBytes(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * The first chain (DER certificates, issuer first, as a trusted root lists a CA) that `leaf` is
 * issued through, each link's signature verified and each issuer a CA; or null.
 */
export async function chainOf(leaf, chains) {
  for (const chain of chains) {
    let cur = leaf;
    let ok = chain.length > 0;
    for (const der of chain) {
      const ca = parseCertificate(der);
      if (!ca.isCA || !(await issuedBy(cur, ca))) {
        ok = false;
        break;
      }
      cur = ca;
    }
    if (ok) return chain.map(parseCertificate);
  }
  return null;
}
