// Transparency-log checks done in the browser, from c2sp.org/tlog-tiles, tlog-checkpoint,
// signed-note and tlog-cosignature and RFC 9162: checkpoint signatures (WebCrypto Ed25519), tiles,
// subtree hashes, inclusion proofs computed from tiles and verified against the signed root.
// Nothing here trusts the server: every hash is recomputed from bytes the page fetched.

const TILE_HEIGHT = 8;
const TILE_WIDTH = 1 << TILE_HEIGHT;
const HASH_SIZE = 32;

/** A verification failure with a message that says what did not hold. */
export class VerifyError extends Error {}

// ---- bytes -----------------------------------------------------------------------------------

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function equal(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function base64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/** Decodes standard base64; throws VerifyError naming `what` when it is not base64. */
export function unbase64(text, what = "value") {
  // Strict standard base64 (padded, no whitespace), as the specifications write it.
  if (text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) {
    throw new VerifyError(`${what} is not base64`);
  }
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

const utf8 = new TextEncoder();

export function subtle() {
  if (!globalThis.crypto || !crypto.subtle) {
    throw new VerifyError(
      "this browser offers no WebCrypto here (pages served over plain HTTP from a host other than " +
        "localhost are not a secure context): open the explorer over HTTPS",
    );
  }
  return crypto.subtle;
}

export async function sha256(bytes) {
  return new Uint8Array(await subtle().digest("SHA-256", bytes));
}

/** RFC 6962 leaf hash: SHA-256(0x00 || entry). */
export function leafHash(entry) {
  return sha256(concat([0], entry));
}

/** RFC 6962 interior node: SHA-256(0x01 || left || right). */
export function nodeHash(left, right) {
  return sha256(concat([1], left, right));
}

// ---- notes, keys and checkpoints ---------------------------------------------------------------

/**
 * A verifier key `<name>+<8 hex key id>+<base64(0x01 || Ed25519 public key)>` (c2sp.org/signed-note),
 * checked: the key id must be the hash of the name and key.
 */
export async function parseVerifierKey(vkey) {
  // The name holds no "+"; the base64 key may.
  const m = /^([^+\s]+)\+([^+]*)\+(\S+)$/.exec(vkey.trim());
  if (!m) throw new VerifyError(`"${vkey}" is not a verifier key (name+id+key)`);
  const [, name, id, key] = m;
  if (!/^[0-9a-f]{8}$/.test(id)) throw new VerifyError(`the key id in "${vkey}" is not 8 hex digits`);
  const bytes = unbase64(key, "the verifier key");
  if (bytes.length !== 33 || bytes[0] !== 1) {
    throw new VerifyError(`the verifier key of ${name} is not an Ed25519 key (type 0x01, 32 bytes)`);
  }
  const expect = hex((await sha256(concat(utf8.encode(name + "\n"), bytes))).subarray(0, 4));
  if (expect !== id) throw new VerifyError(`the key id ${id} of ${name} does not match its key (${expect})`);
  return { name, id, publicKey: bytes.subarray(1), text: vkey.trim() };
}

/** Splits a signed note into its text and signature lines. */
export function parseNote(note) {
  const split = note.lastIndexOf("\n\n");
  if (split < 0 || !note.endsWith("\n")) throw new VerifyError("the checkpoint is not a signed note");
  const text = note.slice(0, split + 1);
  const signatures = [];
  for (const line of note.slice(split + 2, -1).split("\n")) {
    const m = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!m) throw new VerifyError(`malformed signature line: ${JSON.stringify(line)}`);
    const raw = unbase64(m[2], "a signature");
    if (raw.length < 5) throw new VerifyError(`the signature of ${m[1]} is too short`);
    const sig = { name: m[1], keyId: hex(raw.subarray(0, 4)), raw: raw.subarray(4) };
    // A c2sp.org/tlog-cosignature is 8 bytes of timestamp and an Ed25519 signature.
    if (sig.raw.length === 72) {
      const view = new DataView(sig.raw.buffer, sig.raw.byteOffset, 8);
      sig.cosignedAt = Number(view.getBigUint64(0));
    }
    signatures.push(sig);
  }
  return { text, signatures };
}

/** Parses checkpoint text: origin, size, root hash, extension lines. */
export function parseCheckpoint(text) {
  const lines = text.slice(0, -1).split("\n");
  if (lines.length < 3) throw new VerifyError("a checkpoint has an origin, a size and a root hash");
  const [origin, sizeText, rootText] = lines;
  if (!origin) throw new VerifyError("the checkpoint's origin line is empty");
  if (!/^(0|[1-9][0-9]{0,15})$/.test(sizeText)) throw new VerifyError(`bad tree size "${sizeText}"`);
  const size = Number(sizeText);
  if (!Number.isSafeInteger(size)) throw new VerifyError(`tree size ${sizeText} is too large for this page`);
  const root = unbase64(rootText, "the root hash");
  if (root.length !== HASH_SIZE) throw new VerifyError("the root hash is not 32 bytes");
  return { origin, size, root, extensions: lines.slice(3) };
}

/**
 * Verifies `note` as a checkpoint signed by `key` (from parseVerifierKey): the log's signature line,
 * then the origin line equal to the key's name. Returns the checkpoint with its signature lines.
 */
export async function verifyCheckpoint(note, key) {
  const { text, signatures } = parseNote(note);
  const mine = signatures.filter((s) => s.name === key.name && s.keyId === key.id);
  if (mine.length === 0) {
    throw new VerifyError(`no signature by the pinned key ${key.name}+${key.id} on the checkpoint`);
  }
  const pub = await subtle().importKey("raw", key.publicKey, { name: "Ed25519" }, false, ["verify"]);
  let ok = false;
  for (const s of mine) {
    if (s.raw.length === 64 && (await subtle().verify({ name: "Ed25519" }, pub, s.raw, utf8.encode(text)))) {
      ok = true;
      s.verified = true;
    }
  }
  if (!ok) throw new VerifyError(`the signature of ${key.name} on the checkpoint does not verify`);
  const checkpoint = parseCheckpoint(text);
  if (checkpoint.origin !== key.name) {
    throw new VerifyError(`the checkpoint's origin "${checkpoint.origin}" is not the key's name "${key.name}"`);
  }
  return { ...checkpoint, text, signatures, note };
}

// ---- tiles -----------------------------------------------------------------------------------

/** The index N of a tile path: groups of three digits, all but the last prefixed with `x`. */
export function tileIndexPath(n) {
  const groups = [];
  do {
    groups.unshift(String(n % 1000).padStart(3, "0"));
    n = Math.floor(n / 1000);
  } while (n > 0);
  return groups.map((g, i) => (i < groups.length - 1 ? "x" + g : g)).join("/");
}

/** The path of tile `n` at tile level `level` (or "entries") as of tree size `size`. */
export function tilePath(level, n, size) {
  const levelSize = Math.floor(size / TILE_WIDTH ** (level === "entries" ? 0 : level));
  const full = Math.floor(levelSize / TILE_WIDTH);
  const base = `tile/${level}/${tileIndexPath(n)}`;
  if (n < full) return { path: base, width: TILE_WIDTH };
  const width = levelSize % TILE_WIDTH;
  if (n === full && width > 0) return { path: `${base}.p/${width}`, width };
  throw new VerifyError(`tile ${level}/${n} lies beyond tree size ${size}`);
}

/** Splits an entry bundle into its entries (u16 big-endian length, then the bytes). */
export function bundleEntries(bundle) {
  const out = [];
  for (let at = 0; at < bundle.length; ) {
    if (at + 2 > bundle.length) throw new VerifyError("the entry bundle ends inside a length");
    const len = (bundle[at] << 8) | bundle[at + 1];
    if (at + 2 + len > bundle.length) throw new VerifyError("the entry bundle ends inside an entry");
    out.push(bundle.subarray(at + 2, at + 2 + len));
    at += 2 + len;
  }
  return out;
}

/**
 * Reads a shard's tiles as of one tree size through `fetchBytes(path) -> Uint8Array` (relative to the
 * shard's prefix) and computes hashes from them. Every tile is fetched once.
 */
export class TileTree {
  constructor(fetchBytes, size) {
    this.fetchBytes = fetchBytes;
    this.size = size;
    this.tiles = new Map();
    this.fetched = [];
  }

  async tile(level, n) {
    const { path, width } = tilePath(level, n, this.size);
    if (!this.tiles.has(path)) {
      this.tiles.set(
        path,
        Promise.resolve(path).then(this.fetchBytes).then((bytes) => {
          this.fetched.push(path);
          if (level === "entries") return bytes;
          if (bytes.length !== width * HASH_SIZE) {
            throw new VerifyError(`tile ${path} has ${bytes.length} bytes, not ${width * HASH_SIZE}`);
          }
          return bytes;
        }),
      );
    }
    return this.tiles.get(path);
  }

  /** The entry at `index`, from its entry bundle. */
  async entry(index) {
    const n = Math.floor(index / TILE_WIDTH);
    const { path } = tilePath("entries", n, this.size);
    const entries = bundleEntries(await this.tile("entries", n));
    const want = n < Math.floor(this.size / TILE_WIDTH) ? TILE_WIDTH : this.size % TILE_WIDTH;
    if (entries.length !== want) {
      throw new VerifyError(`entry bundle ${path} holds ${entries.length} entries, not ${want}`);
    }
    return entries[index % TILE_WIDTH];
  }

  /** The hash of the complete subtree of 2^height leaves starting at leaf `index * 2^height`. */
  async subtree(height, index) {
    const level = Math.floor(height / TILE_HEIGHT);
    const span = 2 ** (height % TILE_HEIGHT);
    const first = index * span; // position among the hashes stored at tree level 8 * level
    const tile = await this.tile(level, Math.floor(first / TILE_WIDTH));
    let hashes = [];
    for (let k = 0; k < span; k++) {
      const at = ((first % TILE_WIDTH) + k) * HASH_SIZE;
      hashes.push(tile.subarray(at, at + HASH_SIZE));
    }
    while (hashes.length > 1) {
      const next = [];
      for (let k = 0; k < hashes.length; k += 2) next.push(await nodeHash(hashes[k], hashes[k + 1]));
      hashes = next;
    }
    return hashes[0];
  }

  /** MTH(D[a:b]) for a range whose start is aligned to the largest power of two below its length. */
  async rangeHash(a, b) {
    const parts = [];
    while (a < b) {
      let h = 0;
      while (a % 2 ** (h + 1) === 0 && a + 2 ** (h + 1) <= b) h++;
      parts.push(await this.subtree(h, a / 2 ** h));
      a += 2 ** h;
    }
    let acc = parts.pop();
    while (parts.length > 0) acc = await nodeHash(parts.pop(), acc);
    return acc;
  }

  /** The tree's root hash. */
  root() {
    return this.size === 0 ? sha256(new Uint8Array()) : this.rangeHash(0, this.size);
  }

  /** The RFC 9162 inclusion proof of leaf `index`, computed from the tiles. */
  async inclusionProof(index) {
    const path = async (m, a, b) => {
      const n = b - a;
      if (n === 1) return [];
      let k = 1;
      while (k * 2 < n) k *= 2;
      if (m < k) return [...(await path(m, a, a + k)), await this.rangeHash(a + k, b)];
      return [...(await path(m - k, a + k, b)), await this.rangeHash(a, a + k)];
    };
    return path(index, 0, this.size);
  }
}

/** RFC 9162 §2.1.3.2: the root that `proof` leads to from `leaf` at `index` in a tree of `size`. */
export async function rootFromInclusionProof(index, size, leaf, proof) {
  if (index >= size) throw new VerifyError(`index ${index} is not below tree size ${size}`);
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0) throw new VerifyError("the inclusion proof is too long");
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new VerifyError("the inclusion proof is too short");
  return r;
}

/**
 * Verifies entry `index` of a shard from scratch: the checkpoint against the pinned key, the entry
 * from its bundle, its leaf hash against the level-0 tile, an inclusion proof computed from the tiles
 * and evaluated up to the signed root. `fetchBytes(path)` and `fetchText(path)` read the shard's
 * files. Returns `{ok, steps: [{name, ok, detail}], entry, checkpoint, tiles}`; never throws.
 */
export async function verifyEntry({ fetchBytes, fetchText }, key, index) {
  const steps = [];
  const out = { ok: false, steps, entry: null, checkpoint: null, tiles: [] };
  const step = async (name, run) => {
    try {
      const detail = await run();
      steps.push({ name, ok: true, detail });
      return true;
    } catch (e) {
      steps.push({ name, ok: false, detail: e instanceof VerifyError ? e.message : `error: ${e.message}` });
      return false;
    }
  };
  let pinned;
  if (!(await step("Pinned key", async () => {
    pinned = await parseVerifierKey(key);
    return `${pinned.name}+${pinned.id}`;
  }))) return out;
  if (!(await step("Checkpoint signature", async () => {
    out.checkpoint = await verifyCheckpoint(await fetchText("checkpoint"), pinned);
    return `Ed25519 signature of ${pinned.name} verified; tree size ${out.checkpoint.size}`;
  }))) return out;
  const cp = out.checkpoint;
  if (!(await step("Index in the tree", async () => {
    if (!Number.isSafeInteger(index) || index < 0 || index >= cp.size) {
      throw new VerifyError(`entry ${index} is not in the tree of size ${cp.size}`);
    }
    return `${index} < ${cp.size}`;
  }))) return out;
  const tree = new TileTree(fetchBytes, cp.size);
  let leaf;
  if (!(await step("Entry bytes", async () => {
    out.entry = await tree.entry(index);
    leaf = await leafHash(out.entry);
    return `${out.entry.length} bytes, leaf hash ${base64(leaf)}`;
  }))) return out;
  await step("Leaf hash in the level-0 tile", async () => {
    const stored = await tree.subtree(0, index);
    if (!equal(stored, leaf)) {
      throw new VerifyError(`the tile holds ${base64(stored)}, the entry hashes to ${base64(leaf)}`);
    }
    return "matches the entry";
  });
  await step("Inclusion proof to the signed root", async () => {
    const proof = await tree.inclusionProof(index);
    const root = await rootFromInclusionProof(index, cp.size, leaf, proof);
    if (!equal(root, cp.root)) {
      throw new VerifyError(
        `the ${proof.length} proof hashes computed from the tiles lead to ${base64(root)}, ` +
          `not to the checkpoint's root ${base64(cp.root)}`,
      );
    }
    return `${proof.length} hashes computed from ${tree.fetched.length} tiles lead to the root ${base64(cp.root)}`;
  });
  out.tiles = tree.fetched;
  out.ok = steps.every((s) => s.ok);
  return out;
}
