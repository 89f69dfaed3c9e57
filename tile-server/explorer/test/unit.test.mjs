// Unit tests of the explorer's transparency-log module (../tlog.js) on Node's built-in test runner:
//
//   cd tile-server/explorer/test && node --test unit.test.mjs
//
// The vectors come from an independent implementation, in $CAIRN_TESTVECTORS or else in
// ../../../../shared/testvectors (the repository is checked out next to a `shared` directory).
// A missing vectors directory is a failure, not a skip.
//
// The tiles are built here by a small test-only builder that hashes with WebCrypto directly (not
// through tlog.js), and the builder itself is checked against the SHA-256 of every tile of the
// 70000-entry vector log.

import { test, describe, before } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import {
  TileTree,
  VerifyError,
  base64,
  bundleEntries,
  hex,
  leafHash,
  nodeHash,
  parseCheckpoint,
  parseNote,
  parseVerifierKey,
  rootFromInclusionProof,
  tileIndexPath,
  tilePath,
  unbase64,
  verifyCheckpoint,
  verifyEntry,
} from "../tlog.js";
import { hexDump, printable } from "../entry.js";

// ---- vectors --------------------------------------------------------------------------------------

const HERE = path.dirname(fileURLToPath(import.meta.url));
const VECTORS = process.env.CAIRN_TESTVECTORS
  ? path.resolve(process.env.CAIRN_TESTVECTORS)
  : path.resolve(HERE, "../../../../shared/testvectors");

function vectors(name) {
  if (!fs.existsSync(VECTORS) || !fs.statSync(VECTORS).isDirectory()) {
    throw new Error(
      `test vectors directory not found: ${VECTORS} ` +
        `(set CAIRN_TESTVECTORS to the directory holding merkle.json, notes.json, paths.json, tiles70000.json)`,
    );
  }
  const file = path.join(VECTORS, name);
  if (!fs.existsSync(file)) throw new Error(`test vector file not found: ${file}`);
  return JSON.parse(fs.readFileSync(file, "utf8"));
}

test("test vectors are present", () => {
  for (const name of ["paths.json", "merkle.json", "tiles70000.json", "notes.json"]) {
    const v = vectors(name);
    assert.equal(typeof v.description, "string", `${name} has a description`);
  }
});

// ---- independent helpers ------------------------------------------------------------------------

const utf8 = new TextEncoder();
const fromHex = (h) => Uint8Array.from(Buffer.from(h, "hex"));
const fromB64 = (b) => Uint8Array.from(Buffer.from(b, "base64"));
const toB64 = (u) => Buffer.from(u).toString("base64");
const toHex = (u) => Buffer.from(u).toString("hex");

// Node's own Buffer.concat, so the tests do not lean on tlog.js's helper.
const cat = (...parts) => new Uint8Array(Buffer.concat(parts.map((p) => Buffer.from(p))));

async function digest(bytes) {
  return new Uint8Array(await globalThis.crypto.subtle.digest("SHA-256", bytes));
}
const hLeaf = (entry) => digest(cat([0], entry));
const hNode = (l, r) => digest(cat([1], l, r));

/** Hashes many byte strings concurrently, in batches, keeping order. */
async function digestAll(inputs, batch = 4096) {
  const out = [];
  for (let i = 0; i < inputs.length; i += batch) {
    out.push(...(await Promise.all(inputs.slice(i, i + batch).map(digest))));
  }
  return out;
}

// The tile path encoding written out again here, so the builder does not rely on tlog.js.
function encodeIndex(n) {
  const groups = [];
  do {
    groups.unshift(String(n % 1000).padStart(3, "0"));
    n = Math.floor(n / 1000);
  } while (n > 0);
  return groups.map((g, i) => (i < groups.length - 1 ? "x" : "") + g).join("/");
}

/**
 * A test-only tlog-tiles log. `levels[l]` holds every hash stored at tile level l for the largest
 * size: level 0 the leaf hashes, level l the roots of the complete subtrees of 256^l leaves.
 * `files(size)` serves the tiles and entry bundles a tree of `size` (<= the largest size) has.
 */
async function buildLog(entries) {
  const leaves = [];
  for (let i = 0; i < entries.length; i += 4096) {
    leaves.push(...(await Promise.all(entries.slice(i, i + 4096).map(hLeaf))));
  }
  const levels = [leaves];
  while (levels[levels.length - 1].length >= 256) {
    // Eight rounds of pairwise hashing over every full group of 256 at once: the groups are
    // aligned, so each ends as the root of its perfect subtree.
    const below = levels[levels.length - 1];
    let hashes = below.slice(0, below.length - (below.length % 256));
    for (let round = 0; round < 8; round++) {
      const pairs = [];
      for (let k = 0; k < hashes.length; k += 2) pairs.push(cat([1], hashes[k], hashes[k + 1]));
      hashes = await digestAll(pairs);
    }
    levels.push(hashes);
  }
  // Concatenates the tile contents of one level, as of one tree size.
  const tilesOf = (map, name, items, count, encode) => {
    for (let n = 0; n * 256 < count; n++) {
      const width = Math.min(256, count - n * 256);
      const p = `tile/${name}/${encodeIndex(n)}` + (width < 256 ? `.p/${width}` : "");
      map.set(p, encode(items.slice(n * 256, n * 256 + width)));
    }
  };
  const files = (size) => {
    assert.ok(size <= entries.length, `the test log holds only ${entries.length} entries`);
    const map = new Map();
    for (let l = 0; l < levels.length; l++) {
      const count = Math.floor(size / 256 ** l);
      if (count === 0) break;
      tilesOf(map, String(l), levels[l], count, (hs) => cat(...hs));
    }
    tilesOf(map, "entries", entries, size, (es) =>
      cat(...es.flatMap((e) => [Uint8Array.of(e.length >> 8, e.length & 0xff), e])),
    );
    return map;
  };
  return { entries, leaves, levels, files };
}

/** A `fetchBytes` over a map of files; unknown paths fail like a 404 would. */
function fetcher(map) {
  const fetchBytes = async (p) => {
    if (!map.has(p)) throw new Error(`404 ${p}`);
    return map.get(p);
  };
  return fetchBytes;
}

/** RFC 6962 MTH over leaf hashes, recursively (for cross-checks on small trees). */
async function mth(hashes) {
  if (hashes.length === 0) return digest(new Uint8Array());
  if (hashes.length === 1) return hashes[0];
  let k = 1;
  while (k * 2 < hashes.length) k *= 2;
  return hNode(await mth(hashes.slice(0, k)), await mth(hashes.slice(k)));
}

// ---- signed notes, written here from c2sp.org/signed-note ----------------------------------------

async function keyId(name, type, pub) {
  return (await digest(cat(utf8.encode(name + "\n"), [type], pub))).subarray(0, 4);
}

async function newSigner(name, keyPair) {
  const kp = keyPair ?? (await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]));
  const pub = new Uint8Array(await crypto.subtle.exportKey("raw", kp.publicKey));
  const id = await keyId(name, 0x01, pub);
  return {
    name,
    pub,
    id,
    vkey: `${name}+${toHex(id)}+${toB64(cat([1], pub))}`,
    async sign(text) {
      const sig = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, kp.privateKey, utf8.encode(text)));
      return `${text}\n\u2014 ${name} ${toB64(cat(id, sig))}\n`;
    },
  };
}

/** An Ed25519 key pair from a 32-byte seed (PKCS #8 wrapping of RFC 8410). */
async function keyPairFromSeed(seedHex) {
  const pkcs8 = cat(fromHex("302e020100300506032b657004220420"), fromHex(seedHex));
  const privateKey = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, true, ["sign"]);
  const jwk = await crypto.subtle.exportKey("jwk", privateKey);
  const publicKey = await crypto.subtle.importKey(
    "raw",
    Buffer.from(jwk.x, "base64url"),
    { name: "Ed25519" },
    true,
    ["verify"],
  );
  return { privateKey, publicKey };
}

async function ed25519Verify(pub, sig, message) {
  const key = await crypto.subtle.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]);
  return crypto.subtle.verify({ name: "Ed25519" }, key, sig, message);
}

/** Changes one character of a note's text (not of its signatures): the first digit or letter at or after `at`. */
function alterText(note, at = 0) {
  const split = note.lastIndexOf("\n\n");
  for (let i = at; i < split; i++) {
    const c = note[i];
    let r = null;
    if (c >= "0" && c <= "8") r = String.fromCharCode(c.charCodeAt(0) + 1);
    else if (c === "9") r = "8";
    else if (/[a-y]/.test(c)) r = String.fromCharCode(c.charCodeAt(0) + 1);
    else if (c === "z") r = "y";
    if (r) return note.slice(0, i) + r + note.slice(i + 1);
  }
  throw new Error("nothing to alter");
}

const failedStep = (result) => result.steps.find((s) => !s.ok);

// ---- 1. tile paths --------------------------------------------------------------------------------

describe("tile paths (paths.json)", () => {
  let v;
  before(() => {
    v = vectors("paths.json");
  });

  test("tileIndexPath encodes every index", () => {
    const pairs = Object.entries(v.encode);
    assert.ok(pairs.length >= 10);
    for (const [n, want] of pairs) assert.equal(tileIndexPath(Number(n)), want, `index ${n}`);
  });

  test("tilePath names hash tiles, full and partial", () => {
    assert.ok(v.tile_paths.length > 0);
    // [level, index, width, path]: tile `index` at `level` is `width` hashes wide in a tree whose
    // size has exactly index * 256 + width hashes at that level.
    for (const [level, n, width, want] of v.tile_paths) {
      const size = (n * 256 + width) * 256 ** level;
      assert.ok(Number.isSafeInteger(size));
      assert.deepEqual(tilePath(level, n, size), { path: want, width }, `[${level}, ${n}, ${width}]`);
      // A larger tree has the tile full; the bare path then.
      const bigger = (n + 1) * 256 * 256 ** level + 256 ** level;
      assert.deepEqual(tilePath(level, n, bigger), { path: want.replace(/\.p\/\d+$/, ""), width: 256 });
    }
  });

  test("tilePath names entry bundles, full and partial", () => {
    assert.ok(v.bundle_paths.length > 0);
    // [index, width, path]
    for (const [n, width, want] of v.bundle_paths) {
      const size = n * 256 + width;
      assert.deepEqual(tilePath("entries", n, size), { path: want, width }, `bundle [${n}, ${width}]`);
    }
  });

  test("the partial tiles of each tree size are the ones tilePath makes partial", () => {
    for (const [sizeText, want] of Object.entries(v.partial_tiles)) {
      const size = Number(sizeText);
      const got = [];
      for (let level = 0; 256 ** level <= size; level++) {
        const n = Math.floor(size / 256 ** (level + 1));
        let t = null;
        try {
          t = tilePath(level, n, size);
        } catch (e) {
          assert.ok(e instanceof VerifyError, `size ${size} level ${level}: ${e}`);
        }
        if (t) {
          assert.match(t.path, /\.p\/\d+$/, `size ${size}: the last tile of level ${level} is partial`);
          got.push([level, n, t.width]);
          // The entry bundle of a partial level-0 tile is partial with the same width.
          if (level === 0) assert.equal(tilePath("entries", n, size).width, t.width);
        }
        // Tiles before it are full.
        if (n > 0) assert.equal(tilePath(level, n - 1, size).width, 256);
        // Nothing past it.
        assert.throws(() => tilePath(level, n + 1, size), VerifyError);
      }
      assert.deepEqual(got, want, `partial tiles of size ${size}`);
    }
  });
});

// ---- 2. RFC 6962 trees over the merkle.json leaves ----------------------------------------------

describe("Merkle trees from tiles (merkle.json)", () => {
  let v;
  let log;
  before(async () => {
    v = vectors("merkle.json");
    log = await buildLog(v.leaves.map(fromHex));
  });

  test("leafHash and nodeHash", async () => {
    for (let i = 0; i < v.leaves.length; i++) {
      assert.equal(hex(await leafHash(fromHex(v.leaves[i]))), v.leaf_hashes[i], `leaf ${i}`);
      assert.equal(toHex(log.leaves[i]), v.leaf_hashes[i], `builder leaf ${i}`);
    }
    // roots[2] = H(0x01 || leaf0 || leaf1)
    assert.equal(hex(await nodeHash(fromHex(v.leaf_hashes[0]), fromHex(v.leaf_hashes[1]))), v.roots[2]);
  });

  test("TileTree.root equals every root", async () => {
    assert.ok(v.roots.length >= 9);
    for (let size = 0; size < v.roots.length; size++) {
      if (!v.roots[size]) continue;
      const tree = new TileTree(fetcher(log.files(size)), size);
      assert.equal(hex(await tree.root()), v.roots[size], `root of size ${size}`);
      assert.equal(toHex(await mth(log.leaves.slice(0, size))), v.roots[size], `reference MTH of size ${size}`);
    }
  });

  test("TileTree.inclusionProof and rootFromInclusionProof match every inclusion vector", async () => {
    assert.ok(v.inclusion.length > 0);
    for (const { index, size, proof } of v.inclusion) {
      const tree = new TileTree(fetcher(log.files(size)), size);
      const got = await tree.inclusionProof(index);
      assert.deepEqual(got.map(hex), proof, `proof of ${index} in ${size}`);
      const root = await rootFromInclusionProof(index, size, fromHex(v.leaf_hashes[index]), proof.map(fromHex));
      assert.equal(hex(root), v.roots[size], `root from the proof of ${index} in ${size}`);
    }
  });

  test("rootFromInclusionProof rejects bad proofs", async () => {
    const { index, size, proof } = v.inclusion.find((p) => p.proof.length >= 2);
    const leaf = fromHex(v.leaf_hashes[index]);
    const hashes = proof.map(fromHex);
    // A changed proof hash leads elsewhere.
    const bad = hashes.map((h) => h.slice());
    bad[0][0] ^= 1;
    assert.notEqual(hex(await rootFromInclusionProof(index, size, leaf, bad)), v.roots[size]);
    // The wrong leaf leads elsewhere.
    const other = fromHex(v.leaf_hashes[(index + 1) % size]);
    assert.notEqual(hex(await rootFromInclusionProof(index, size, other, hashes)), v.roots[size]);
    await assert.rejects(rootFromInclusionProof(index, size, leaf, hashes.slice(0, -1)), /too short/);
    await assert.rejects(rootFromInclusionProof(index, size, leaf, [...hashes, hashes[0]]), /too long/);
    await assert.rejects(rootFromInclusionProof(size, size, leaf, hashes), VerifyError);
  });

  test("TileTree.entry reads entries back from the bundles", async () => {
    for (const size of [1, 5, 8]) {
      const tree = new TileTree(fetcher(log.files(size)), size);
      for (let i = 0; i < size; i++) assert.equal(hex(await tree.entry(i)), v.leaves[i], `entry ${i} of ${size}`);
    }
  });
});

// ---- 3. the 70000-entry log -------------------------------------------------------------------

describe("tiles of a 70000-entry log (tiles70000.json)", () => {
  let v;
  let log;
  before(async () => {
    v = vectors("tiles70000.json");
    assert.equal(v.entry_format, "entry %d");
    const entries = Array.from({ length: v.size }, (_, i) => utf8.encode(`entry ${i}`));
    log = await buildLog(entries);
  });

  test("the test tile builder reproduces every tile of size 70000", async () => {
    const files = log.files(v.size);
    const want = Object.keys(v.tiles).sort();
    assert.deepEqual([...files.keys()].sort(), want, "the same set of tile paths");
    const paths = [...files.keys()];
    const hashes = await digestAll(paths.map((p) => files.get(p)));
    paths.forEach((p, i) => assert.equal(toHex(hashes[i]), v.tiles[p], `SHA-256 of ${p}`));
    assert.equal(toB64(files.get("tile/1/000").subarray(0, 32)), v.level1_tile_000_first_hash);
  });

  test("tilePath agrees with the served paths", () => {
    const files = log.files(v.size);
    for (const p of Object.keys(v.tiles)) {
      const m = /^tile\/(entries|\d+)\/(.*?)(?:\.p\/(\d+))?$/.exec(p);
      assert.ok(m, p);
      const level = m[1] === "entries" ? "entries" : Number(m[1]);
      const n = Number(m[2].replace(/x/g, "").replace(/\//g, ""));
      const t = tilePath(level, n, v.size);
      assert.equal(t.path, p);
      assert.equal(t.width, m[3] ? Number(m[3]) : 256);
      if (level !== "entries") assert.equal(files.get(p).length, t.width * 32);
      else assert.equal(bundleEntries(files.get(p)).length, t.width);
    }
  });

  test("TileTree.root equals every listed root", async () => {
    const sizes = Object.keys(v.roots).map(Number);
    assert.ok(sizes.length >= 10);
    for (const size of sizes) {
      const tree = new TileTree(fetcher(log.files(size)), size);
      assert.equal(base64(await tree.root()), v.roots[size], `root of size ${size}`);
    }
  });

  test("TileTree.inclusionProof matches every inclusion vector", async () => {
    assert.ok(v.inclusion.length > 0);
    for (const { index, size, proof } of v.inclusion) {
      const tree = new TileTree(fetcher(log.files(size)), size);
      const got = await tree.inclusionProof(index);
      assert.deepEqual(got.map(base64), proof, `proof of ${index} in ${size}`);
      const root = await rootFromInclusionProof(index, size, log.leaves[index], proof.map(fromB64));
      if (v.roots[size]) assert.equal(base64(root), v.roots[size], `root from the proof of ${index} in ${size}`);
      else assert.equal(base64(root), base64(await tree.root()));
    }
  });

  test("a tile of the wrong length is rejected", async () => {
    const files = log.files(v.size);
    files.set("tile/1/001.p/17", files.get("tile/1/001.p/17").subarray(0, 16 * 32));
    const tree = new TileTree(fetcher(files), v.size);
    await assert.rejects(tree.root(), (e) => e instanceof VerifyError && /tile\/1\/001\.p\/17/.test(e.message));
  });
});

// ---- 4. verifyEntry end to end ------------------------------------------------------------------

describe("verifyEntry end to end", () => {
  const ORIGIN = "example.com/cairn-test";
  const SIZE = 1000;
  let log;
  let signer;
  let note;

  /** Shard files: the signed checkpoint and the tiles of SIZE, with optional tampering. */
  const shard = ({ checkpoint = note, files = log.files(SIZE) } = {}) => ({
    fetchBytes: fetcher(files),
    fetchText: async (p) => {
      if (p !== "checkpoint") throw new Error(`404 ${p}`);
      return checkpoint;
    },
  });
  const flip = (files, p, at) => {
    assert.ok(files.has(p), `the shard has ${p}`);
    const bytes = files.get(p).slice();
    bytes[at] ^= 0x01;
    files.set(p, bytes);
    return files;
  };

  before(async () => {
    const entries = Array.from({ length: SIZE }, (_, i) => utf8.encode(`entry ${i}`));
    log = await buildLog(entries);
    signer = await newSigner(ORIGIN);
    const root = await mth(log.leaves);
    note = await signer.sign(`${ORIGIN}\n${SIZE}\n${toB64(root)}\n`);
  });

  test("the shard layout of a 1000-entry log", () => {
    assert.deepEqual(
      [...log.files(SIZE).keys()].sort(),
      [
        "tile/0/000",
        "tile/0/001",
        "tile/0/002",
        "tile/0/003.p/232",
        "tile/1/000.p/3",
        "tile/entries/000",
        "tile/entries/001",
        "tile/entries/002",
        "tile/entries/003.p/232",
      ],
    );
  });

  test("accepts entries 0, 1, 255, 256, 511, 512, 767, 768 and 999", async () => {
    for (const index of [0, 1, 255, 256, 511, 512, 767, 768, 999]) {
      const r = await verifyEntry(shard(), signer.vkey, index);
      assert.equal(r.ok, true, `entry ${index}: ${JSON.stringify(r.steps)}`);
      assert.deepEqual(
        r.steps.map((s) => [s.name, s.ok]),
        [
          ["Pinned key", true],
          ["Checkpoint signature", true],
          ["Index in the tree", true],
          ["Entry bytes", true],
          ["Leaf hash in the level-0 tile", true],
          ["Inclusion proof to the signed root", true],
        ],
      );
      assert.equal(new TextDecoder().decode(r.entry), `entry ${index}`);
      assert.equal(r.checkpoint.size, SIZE);
      assert.equal(r.checkpoint.origin, ORIGIN);
      assert.ok(r.tiles.length > 0 && r.tiles.every((p) => p.startsWith("tile/")));
    }
  });

  test("a flipped byte in the entry's hash in its level-0 tile fails the leaf hash step", async () => {
    const r = await verifyEntry(shard({ files: flip(log.files(SIZE), "tile/0/000", 5) }), signer.vkey, 0);
    assert.equal(r.ok, false);
    assert.equal(failedStep(r).name, "Leaf hash in the level-0 tile");
    assert.match(failedStep(r).detail, /the tile holds .* the entry hashes to/);
    // In a partial tile too.
    const p = await verifyEntry(
      shard({ files: flip(log.files(SIZE), "tile/0/003.p/232", (999 - 768) * 32) }),
      signer.vkey,
      999,
    );
    assert.equal(p.ok, false);
    assert.equal(failedStep(p).name, "Leaf hash in the level-0 tile");
  });

  test("a flipped byte in a neighbour's hash in the level-0 tile fails the inclusion proof", async () => {
    // Leaf 1's hash is the first hash of leaf 0's proof.
    const r = await verifyEntry(shard({ files: flip(log.files(SIZE), "tile/0/000", 32 + 7) }), signer.vkey, 0);
    assert.equal(r.ok, false);
    const failed = r.steps.filter((s) => !s.ok).map((s) => s.name);
    assert.deepEqual(failed, ["Inclusion proof to the signed root"]);
    assert.match(failedStep(r).detail, /not to the checkpoint's root/);
  });

  test("a flipped byte in the level-1 tile fails the inclusion proof", async () => {
    // The level-1 tile holds the roots of leaves 0-255, 256-511 and 512-767; entry 0's proof uses
    // the second (sibling of 0-255 under 0-511) and the third (in the hash of 512-999).
    for (const [at, index] of [
      [32 + 3, 0],
      [64 + 3, 0],
      [0, 999],
      [0, 300],
    ]) {
      const r = await verifyEntry(shard({ files: flip(log.files(SIZE), "tile/1/000.p/3", at) }), signer.vkey, index);
      assert.equal(r.ok, false, `byte ${at} of the level-1 tile, entry ${index}`);
      assert.equal(failedStep(r).name, "Inclusion proof to the signed root");
      assert.ok(r.steps.find((s) => s.name === "Leaf hash in the level-0 tile").ok);
    }
  });

  test("a flipped byte in an entry bundle fails the leaf hash step", async () => {
    // Byte 2 is the first byte of entry 0 (after its u16 length).
    const r = await verifyEntry(shard({ files: flip(log.files(SIZE), "tile/entries/000", 2) }), signer.vkey, 0);
    assert.equal(r.ok, false);
    assert.ok(r.steps.find((s) => s.name === "Entry bytes").ok);
    assert.equal(failedStep(r).name, "Leaf hash in the level-0 tile");
    // A flipped length byte breaks the bundle itself.
    const l = await verifyEntry(shard({ files: flip(log.files(SIZE), "tile/entries/001", 1) }), signer.vkey, 300);
    assert.equal(l.ok, false);
    assert.equal(failedStep(l).name, "Entry bytes");
    assert.match(failedStep(l).detail, /entry bundle/);
  });

  test("a missing tile fails with the fetch error, not a throw", async () => {
    const files = log.files(SIZE);
    files.delete("tile/1/000.p/3");
    const r = await verifyEntry(shard({ files }), signer.vkey, 0);
    assert.equal(r.ok, false);
    assert.equal(failedStep(r).name, "Inclusion proof to the signed root");
    assert.match(failedStep(r).detail, /404/);
  });

  test("a flipped byte in the checkpoint's signature fails the signature step", async () => {
    const m = /\n\u2014 (\S+) (\S+)\n$/.exec(note);
    const raw = fromB64(m[2]);
    raw[4 + 10] ^= 0x01; // inside the Ed25519 signature, after the key id
    const bad = note.slice(0, m.index) + `\n\u2014 ${m[1]} ${toB64(raw)}\n`;
    const r = await verifyEntry(shard({ checkpoint: bad }), signer.vkey, 0);
    assert.equal(r.ok, false);
    assert.equal(r.steps.length, 2, "stops after the checkpoint");
    assert.equal(failedStep(r).name, "Checkpoint signature");
    assert.match(failedStep(r).detail, /does not verify/);
  });

  test("a changed checkpoint text fails the signature step", async () => {
    const bad = note.replace(`\n${SIZE}\n`, `\n${SIZE - 1}\n`);
    assert.notEqual(bad, note);
    const r = await verifyEntry(shard({ checkpoint: bad }), signer.vkey, 0);
    assert.equal(failedStep(r).name, "Checkpoint signature");
  });

  test("a correctly signed checkpoint with the wrong root fails the inclusion proof", async () => {
    const bad = await signer.sign(`${ORIGIN}\n${SIZE}\n${toB64(await mth(log.leaves.slice(0, SIZE - 1)))}\n`);
    const r = await verifyEntry(shard({ checkpoint: bad }), signer.vkey, 3);
    assert.equal(r.ok, false);
    assert.equal(failedStep(r).name, "Inclusion proof to the signed root");
  });

  test("another key with the same name fails the signature step", async () => {
    const other = await newSigner(ORIGIN);
    assert.notEqual(other.vkey, signer.vkey);
    const r = await verifyEntry(shard(), other.vkey, 0);
    assert.equal(r.ok, false);
    assert.equal(failedStep(r).name, "Checkpoint signature");
    assert.match(failedStep(r).detail, /no signature by the pinned key/);
    // And a key id forged to match, with another public key, is caught as well.
    const forged = `${ORIGIN}+${toHex(signer.id)}+${toB64(cat([1], other.pub))}`;
    const f = await verifyEntry(shard(), forged, 0);
    assert.equal(failedStep(f).name, "Pinned key");
  });

  test("a checkpoint signed under another origin fails the signature step", async () => {
    const stranger = await newSigner("example.com/elsewhere");
    const bad = await stranger.sign(`${ORIGIN}\n${SIZE}\n${toB64(await mth(log.leaves))}\n`);
    const r = await verifyEntry(shard({ checkpoint: bad }), stranger.vkey, 0);
    assert.equal(failedStep(r).name, "Checkpoint signature");
    assert.match(failedStep(r).detail, /origin/);
  });

  test("an index at or beyond the tree size fails the index step", async () => {
    for (const index of [SIZE, SIZE + 1, 1e9, -1, 0.5]) {
      const r = await verifyEntry(shard(), signer.vkey, index);
      assert.equal(r.ok, false);
      assert.equal(failedStep(r).name, "Index in the tree", `index ${index}`);
      assert.equal(r.steps.length, 3);
    }
  });

  test("a malformed pinned key fails the first step", async () => {
    const r = await verifyEntry(shard(), "not a key", 0);
    assert.equal(r.ok, false);
    assert.equal(failedStep(r).name, "Pinned key");
    assert.equal(r.steps.length, 1);
  });
});

// ---- 5. signed notes and checkpoints (notes.json) ---------------------------------------------

describe("signed notes and checkpoints (notes.json)", () => {
  let v;
  let merkle;
  before(() => {
    v = vectors("notes.json");
    merkle = vectors("merkle.json");
  });

  /** Verifies a note that need not be a checkpoint: parseNote, then the Ed25519 signature. */
  async function verifyNote(note, vkey) {
    const key = await parseVerifierKey(vkey);
    const { text, signatures } = parseNote(note);
    const mine = signatures.filter((s) => s.name === key.name && s.keyId === key.id && s.raw.length === 64);
    if (mine.length === 0) return { ok: false, text };
    for (const s of mine) if (await ed25519Verify(key.publicKey, s.raw, utf8.encode(text))) return { ok: true, text };
    return { ok: false, text };
  }

  test("verifier keys parse, with their names and key ids", async () => {
    for (const [vkey, name, id] of [
      [v.peter_neumann.vkey, "PeterNeumann", "c74f20a3"],
      [v.c2sp_example.vkey, "example.com/foo", "530d903a"],
      [v.log_key.vkey, "example.com/log", "d455c521"],
    ]) {
      const key = await parseVerifierKey(vkey);
      assert.equal(key.name, name);
      assert.equal(key.id, id);
      assert.equal(key.publicKey.length, 32);
    }
    // The log key is the one of its seed.
    const kp = await keyPairFromSeed(v.log_key.seed);
    const pub = new Uint8Array(await crypto.subtle.exportKey("raw", kp.publicKey));
    assert.equal(hex((await parseVerifierKey(v.log_key.vkey)).publicKey), toHex(pub));
  });

  test("verifier keys with a wrong id, type or length are rejected", async () => {
    // The base64 key may hold "+".
    const [, name, id, key] = /^([^+]+)\+([^+]+)\+(.+)$/.exec(v.log_key.vkey);
    const otherId = ((parseInt(id, 16) ^ 1) >>> 0).toString(16).padStart(8, "0");
    assert.equal(otherId.length, 8);
    await assert.rejects(parseVerifierKey(`${name}+${otherId}+${key}`), /does not match/);
    await assert.rejects(parseVerifierKey(`example.com/other+${id}+${key}`), /does not match/);
    const raw = fromB64(key);
    raw[0] = 0x04;
    await assert.rejects(parseVerifierKey(`${name}+${id}+${toB64(raw)}`), /not an Ed25519 key/);
    await assert.rejects(parseVerifierKey(`${name}+${id}+${toB64(raw.subarray(0, 32))}`), /not an Ed25519 key/);
    await assert.rejects(parseVerifierKey(`${name}+${id.toUpperCase()}+${key}`), VerifyError);
    await assert.rejects(parseVerifierKey(v.witness_key.vkey_cosignature), /not an Ed25519 key/);
  });

  test("plain signed notes verify, and not with one character of text changed", async () => {
    for (const { vkey, note } of [v.peter_neumann, v.c2sp_example]) {
      const r = await verifyNote(note, vkey);
      assert.equal(r.ok, true, note);
      const altered = alterText(note);
      assert.notEqual(altered, note);
      assert.equal((await verifyNote(altered, vkey)).ok, false, altered);
      // Not checkpoints: verifyCheckpoint refuses them.
      await assert.rejects(verifyCheckpoint(note, await parseVerifierKey(vkey)), VerifyError);
    }
    assert.equal(parseNote(v.peter_neumann.note).text, v.peter_neumann.text);
  });

  test("checkpoints verify, with the size and root of merkle.json", async () => {
    const key = await parseVerifierKey(v.log_key.vkey);
    const cp = await verifyCheckpoint(v.checkpoint_size8.signed, key);
    assert.equal(cp.origin, "example.com/log");
    assert.equal(cp.size, 8);
    assert.equal(hex(cp.root), merkle.roots[8]);
    assert.equal(cp.text, v.checkpoint_size8.text);
    assert.deepEqual(cp.extensions, []);
    assert.equal(cp.signatures.length, 1);
    assert.equal(cp.signatures[0].verified, true);

    const cosigned = await verifyCheckpoint(v.checkpoint_size8.cosigned, key);
    assert.equal(cosigned.size, 8);
    assert.equal(cosigned.signatures.length, 2);
    assert.equal(cosigned.signatures[1].name, v.witness_key.name);
    assert.notEqual(cosigned.signatures[1].verified, true, "the witness signature is not the log's");

    const empty = await verifyCheckpoint(v.checkpoint_empty.signed, key);
    assert.equal(empty.size, 0);
    assert.equal(hex(empty.root), merkle.roots[0]);
  });

  test("checkpoints with one character of text changed are rejected", async () => {
    const key = await parseVerifierKey(v.log_key.vkey);
    for (const note of [v.checkpoint_size8.signed, v.checkpoint_size8.cosigned, v.checkpoint_empty.signed]) {
      // A character of the origin, of the size, of the root.
      const lines = note.split("\n");
      for (const at of [0, lines[0].length + 1, lines[0].length + lines[1].length + 2 + 3]) {
        const altered = alterText(note, at);
        assert.notEqual(altered, note);
        await assert.rejects(verifyCheckpoint(altered, key), VerifyError, JSON.stringify(altered));
      }
    }
  });

  test("every must_reject note is rejected", async () => {
    assert.ok(v.must_reject.length > 0);
    for (const { why, vkey, note, checkpoint_only } of v.must_reject) {
      const key = await parseVerifierKey(vkey);
      await assert.rejects(verifyCheckpoint(note, key), VerifyError, why);
      if (!checkpoint_only) {
        let ok = false;
        try {
          ok = (await verifyNote(note, vkey)).ok;
        } catch (e) {
          assert.ok(e instanceof VerifyError, `${why}: ${e}`);
        }
        assert.equal(ok, false, why);
      }
    }
  });

  test("signing the checkpoint text with the log's seed reproduces the note byte for byte", async () => {
    // Proves that the note formatting used by the verifyEntry tests is the signed-note format.
    const signer = await newSigner(v.log_key.name, await keyPairFromSeed(v.log_key.seed));
    assert.equal(signer.vkey, v.log_key.vkey);
    assert.equal(await signer.sign(v.checkpoint_size8.text), v.checkpoint_size8.signed);
  });

  test("parseCheckpoint rejects malformed checkpoints", () => {
    const root = toB64(new Uint8Array(32));
    assert.throws(() => parseCheckpoint(`o\n08\n${root}\n`), /bad tree size/);
    assert.throws(() => parseCheckpoint(`o\n-1\n${root}\n`), /bad tree size/);
    assert.throws(() => parseCheckpoint(`o\n8\n`), VerifyError);
    assert.throws(() => parseCheckpoint(`o\n8\n${toB64(new Uint8Array(31))}\n`), /32 bytes/);
    assert.throws(() => parseCheckpoint(`o\n8\n%%%%\n`), /base64/);
    assert.deepEqual(parseCheckpoint(`o\n8\n${root}\next one\next two\n`).extensions, ["ext one", "ext two"]);
  });
});

// ---- 6. cosignatures -------------------------------------------------------------------------

describe("cosignatures (c2sp.org/tlog-cosignature)", () => {
  test("the cosignature in notes.json carries its timestamp and verifies", async () => {
    const v = vectors("notes.json");
    const { text, signatures } = parseNote(v.checkpoint_size8.cosigned);
    assert.equal(signatures.length, 2);
    const [log, witness] = signatures;
    assert.equal(log.cosignedAt, undefined);
    assert.equal(witness.name, v.witness_key.name);
    assert.equal(witness.keyId, "20324abe");
    assert.equal(witness.cosignedAt, v.witness_key.timestamp);
    assert.equal(witness.raw.length, 72);

    // The witness key (type 0x04) and its id; the signature covers the cosignature/v1 header.
    const [, name, id, key] = /^([^+]+)\+([^+]+)\+(.+)$/.exec(v.witness_key.vkey_cosignature);
    const raw = fromB64(key);
    assert.equal(raw[0], 0x04);
    assert.equal(toHex(await keyId(name, 0x04, raw.subarray(1))), id);
    const message = utf8.encode(`cosignature/v1\ntime ${witness.cosignedAt}\n${text}`);
    assert.equal(await ed25519Verify(raw.subarray(1), witness.raw.subarray(8), message), true);
  });

  test("parseNote reads an 8-byte big-endian timestamp from a cosignature line", async () => {
    const body = "example.com/log\n8\n" + toB64(new Uint8Array(32)) + "\n";
    const logSig = cat([0xde, 0xad, 0xbe, 0xef], new Uint8Array(64).fill(7));
    for (const ts of [0, 1, 1700000000, 0x12345678, 2 ** 32 + 5, 0x0012_3456_789a_bcde]) {
      const stamp = new Uint8Array(8);
      new DataView(stamp.buffer).setBigUint64(0, BigInt(ts));
      const cosig = cat([0x01, 0x02, 0x03, 0x04], stamp, new Uint8Array(64).fill(9));
      const note = `${body}\n\u2014 example.com/log ${toB64(logSig)}\n\u2014 witness.example/w ${toB64(cosig)}\n`;
      const { text, signatures } = parseNote(note);
      assert.equal(text, body);
      assert.equal(signatures.length, 2);
      assert.equal(signatures[0].keyId, "deadbeef");
      assert.equal(signatures[0].cosignedAt, undefined);
      assert.equal(signatures[1].name, "witness.example/w");
      assert.equal(signatures[1].keyId, "01020304");
      assert.equal(signatures[1].cosignedAt, ts, `timestamp ${ts}`);
      assert.equal(signatures[1].raw.length, 72);
      assert.ok(signatures[1].raw.subarray(8).every((b) => b === 9));
    }
  });

  test("parseNote rejects malformed notes", () => {
    const body = "example.com/log\n8\n" + toB64(new Uint8Array(32)) + "\n";
    const sig = toB64(new Uint8Array(68));
    assert.throws(() => parseNote(`${body}\u2014 k ${sig}\n`), VerifyError, "no blank line");
    assert.throws(() => parseNote(`${body}\n\u2014 k ${sig}`), VerifyError, "no final newline");
    assert.throws(() => parseNote(`${body}\n- k ${sig}\n`), /malformed signature line/);
    assert.throws(() => parseNote(`${body}\n\u2014 k ${toB64(new Uint8Array(4))}\n`), /too short/);
    assert.throws(() => parseNote(`${body}\n\u2014 k ###\n`), /base64/);
  });
});

// ---- bytes helpers and entry.js -----------------------------------------------------------------

describe("byte helpers", () => {
  test("base64 and unbase64 round-trip, hex", () => {
    const bytes = Uint8Array.from({ length: 70000 }, (_, i) => (i * 31) & 0xff);
    assert.equal(base64(bytes), toB64(bytes));
    assert.deepEqual(unbase64(toB64(bytes)), bytes);
    assert.equal(hex(Uint8Array.of(0, 1, 0xab, 0xff)), "0001abff");
    assert.throws(() => unbase64("!!", "the thing"), /the thing is not base64/);
  });

  test("bundleEntries splits bundles and rejects truncated ones", () => {
    const bundle = cat([0, 1], [0x41], [0, 0], [0, 3], [1, 2, 3]);
    assert.deepEqual(bundleEntries(bundle).map((e) => [...e]), [[0x41], [], [1, 2, 3]]);
    assert.throws(() => bundleEntries(bundle.subarray(0, bundle.length - 1)), /inside an entry/);
    assert.throws(() => bundleEntries(cat(bundle, [0])), /inside a length/);
  });

  test("printable and hexDump (entry.js)", () => {
    assert.equal(printable(utf8.encode("entry 1\twith tab\n")), "entry 1\twith tab\n");
    assert.equal(printable(Uint8Array.of(0x65, 0x00)), null);
    assert.equal(printable(Uint8Array.of(0xff, 0xfe)), null);
    const dump = hexDump(utf8.encode("entry 12345678901"));
    assert.equal(
      dump,
      "00000000  65 6e 74 72 79 20 31 32 33 34 35 36 37 38 39 30  entry 1234567890\n" +
        "00000010  31                                               1",
    );
    assert.match(hexDump(new Uint8Array(40), 16), /\n… 24 more bytes$/);
  });
});
