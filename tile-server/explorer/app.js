// The explorer's entry point: reading this origin, the pinned trust root, and hash routing (every
// view has a deep link: #/, #/shard/2, #/shard/2/entry/17, #/search?identity=..., #/trust).

import * as views from "./views.js";
import { parseVerifierKey, verifyCheckpoint } from "./tlog.js";

/** A failed request, with the server's message when it sent one. */
export class FetchError extends Error {
  constructor(url, status, message) {
    super(message || `${url}: HTTP ${status}`);
    this.status = status;
  }
}

const base = new URL(".", document.baseURI);

/** `path` under this page's base; anything that would leave this origin is refused. */
function url(path) {
  const u = new URL(path.replace(/^\//, ""), base);
  if (u.origin !== base.origin) throw new FetchError(path, 0, `refusing to read ${path}: not on this server`);
  return u;
}

async function get(path) {
  const u = url(path);
  // Full tiles and bundles never change (c2sp.org/tlog-tiles): the HTTP cache may keep them.
  const immutable = /\/tile\/[^?]*$/.test(u.pathname) && !u.pathname.includes(".p/");
  const r = await fetch(u, { cache: immutable ? "default" : "no-cache" });
  if (!r.ok) {
    let message = "";
    try {
      const t = await r.text();
      try {
        message = JSON.parse(t).error || t;
      } catch {
        message = t;
      }
    } catch {}
    throw new FetchError(u.pathname, r.status, message ? `${u.pathname}: ${r.status}: ${message.trim()}` : "");
  }
  return r;
}

/** Readers of one shard's files (relative paths under its prefix). */
export function shardFiles(shard) {
  const prefix = shard.prefix.replace(/\/$/, "");
  return {
    fetchBytes: async (p) => new Uint8Array(await (await get(`${prefix}/${p}`)).arrayBuffer()),
    fetchText: async (p) => (await get(`${prefix}/${p}`)).text(),
  };
}

// ---- the trust root: verifier keys pinned in this browser -------------------------------------

const TRUST_KEY = "cairn-explorer-trust";

/** Pinned keys by key name (= the log's origin): {vkey, kind, source, since}. */
export function pinned() {
  try {
    return JSON.parse(localStorage.getItem(TRUST_KEY) || "{}");
  } catch {
    return {};
  }
}

function savePins(pins) {
  try {
    localStorage.setItem(TRUST_KEY, JSON.stringify(pins));
  } catch {}
}

/**
 * Pins `vkey` under its name (entered by the user; `kind` is "sigstore" or "opaque"); throws on a
 * malformed or mislabelled key. Once any key is entered, no other key is trusted on first use.
 */
export async function pin(vkey, kind) {
  const key = await parseVerifierKey(vkey);
  const pins = pinned();
  pins[key.name] = { vkey: key.text, kind, source: "entered", since: new Date().toISOString() };
  savePins(pins);
  return key;
}

export function unpin(origin) {
  const pins = pinned();
  delete pins[origin];
  savePins(pins);
}

/** Whether the user entered keys: then nothing is trusted on first use any more. */
export function strict(pins = pinned()) {
  return Object.values(pins).some((p) => p.source === "entered");
}

/**
 * The trust this browser has in `shard`, looked up by the name in its key (which must equal its
 * origin). A log seen for the first time is pinned from shards.json, key and kind (trust on first
 * use; the verdicts say so), unless keys were entered. `problem` says why the shard's word is not
 * taken: its key is named for another origin, it differs from the pinned key or kind, or it is not
 * pinned at all.
 */
function keyFor(shard) {
  const name = String(shard.vkey).split("+")[0];
  if (name !== shard.origin) {
    return { vkey: null, problem: `shards.json names the key ${shard.vkey} for ${shard.origin}: a key for another log` };
  }
  const pins = pinned();
  let p = Object.hasOwn(pins, name) ? pins[name] : null;
  if (!p && strict(pins)) {
    return { vkey: null, problem: `no key is pinned for ${name}: pin its key on the Trust page` };
  }
  if (!p) {
    p = { vkey: shard.vkey, kind: shard.kind, source: "first use", since: new Date().toISOString() };
    pins[name] = p;
    savePins(pins);
  }
  const problems = [];
  if (p.vkey !== shard.vkey) {
    problems.push(`the server now names the key ${shard.vkey} for ${name}, but this browser pinned ${p.vkey}`);
  }
  if (p.kind && p.kind !== shard.kind) {
    problems.push(`the server now says ${name} holds ${shard.kind} entries, pinned as ${p.kind}`);
  }
  return { ...p, kind: p.kind || shard.kind, problem: problems.join("; ") || null };
}

// ---- shards ----------------------------------------------------------------------------------

let shardsCache = null;

/** shards.json, each shard with its pinned key. */
export async function shards() {
  if (!shardsCache) {
    shardsCache = get("shards.json")
      .then((r) => r.json())
      .then((doc) => doc.shards.map((s) => ({ ...s, pin: keyFor(s) })))
      .catch((e) => {
        shardsCache = null;
        throw e;
      });
  }
  return shardsCache;
}

export async function shard(id) {
  const s = (await shards()).find((s) => String(s.id) === String(id));
  if (!s) throw new FetchError("shards.json", 404, `there is no shard ${id} in shards.json`);
  return s;
}

/** A shard's latest checkpoint, verified against its pinned key: {checkpoint} or {error}. */
export async function latestCheckpoint(s) {
  try {
    if (!s.pin.vkey) throw new Error(s.pin.problem);
    const key = await parseVerifierKey(s.pin.vkey);
    const note = await shardFiles(s).fetchText("checkpoint");
    return { checkpoint: await verifyCheckpoint(note, key), note };
  } catch (e) {
    return { error: e.message, status: e.status };
  }
}

let casCache = null;

/**
 * The certificate chains (DER, issuer first) of the Fulcio CAs in this server's trusted_root.json,
 * or null when it serves none.
 */
export function trustedCAs() {
  if (!casCache) {
    casCache = get("trusted_root.json")
      .then((r) => r.json())
      .then((root) =>
        (root.certificateAuthorities || []).map((ca) =>
          ((ca.certChain && ca.certChain.certificates) || []).map((c) => Uint8Array.from(atob(c.rawBytes || ""), (ch) => ch.charCodeAt(0))),
        ),
      )
      .catch(() => null);
  }
  return casCache;
}

/** GET /api/v1/search with `params` (URLSearchParams). */
export async function search(params) {
  return (await get(`api/v1/search?${params}`)).json();
}

// ---- routing ---------------------------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  if (!hash.startsWith("/")) return null; // an in-page anchor (the skip link), not a view
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean);
  if (parts.length === 0) return views.home();
  if (parts[0] === "shard" && parts.length === 2) return views.shardView(parts[1], params);
  if (parts[0] === "shard" && parts[2] === "entry" && parts.length === 4) return views.entryView(parts[1], parts[3], params);
  if (parts[0] === "search") return views.searchView(params);
  if (parts[0] === "trust") return views.trustView();
  return views.notFound(hash);
}

let generation = 0;
let rendered = false;

async function render() {
  const mine = ++generation;
  const shown = location.hash;
  const main = document.getElementById("main");
  main.setAttribute("aria-busy", "true");
  let node;
  try {
    node = await route();
  } catch (e) {
    node = views.failure(e);
  }
  if (mine !== generation) return; // a later navigation won
  if (node === null && rendered) {
    main.dataset.view = shown;
    main.setAttribute("aria-busy", "false");
    main.focus();
    return;
  }
  if (node === null) node = await views.home().catch(views.failure);
  if (mine !== generation) return;
  rendered = true;
  main.replaceChildren(node);
  const verdict = main.querySelector("#verification h2");
  document.getElementById("status").textContent = verdict ? verdict.textContent : "";
  // Which location this view is of: a script (or a test) waiting for a navigation to finish
  // waits for this to equal location.hash with aria-busy false.
  main.dataset.view = shown;
  main.setAttribute("aria-busy", "false");
  const heading = main.querySelector("h1");
  if (heading) document.title = `${heading.textContent} · Cairn explorer`;
  main.focus({ preventScroll: true });
}

window.addEventListener("hashchange", () => {
  render();
  window.scrollTo(0, 0);
});
views.wireSearchForm(document.getElementById("search"));
render();
