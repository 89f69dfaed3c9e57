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

function url(path) {
  return new URL(path.replace(/^\//, ""), base);
}

async function get(path) {
  const u = url(path);
  const r = await fetch(u, { cache: "no-cache" });
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

/** Pinned keys by origin: {vkey, source, since}. */
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

/** Pins `vkey` for its origin (entered by the user); throws on a malformed or mislabelled key. */
export async function pin(vkey) {
  const key = await parseVerifierKey(vkey);
  const pins = pinned();
  pins[key.name] = { vkey: key.text, source: "entered", since: new Date().toISOString() };
  savePins(pins);
  return key;
}

export function unpin(origin) {
  const pins = pinned();
  delete pins[origin];
  savePins(pins);
}

/**
 * The key pinned for `shard`; a shard seen for the first time is pinned from shards.json (trust on
 * first use, and the trust view says so). `changed` is set when the server now names another key.
 */
function keyFor(shard) {
  const pins = pinned();
  let p = pins[shard.origin];
  if (!p) {
    p = { vkey: shard.vkey, source: "first use", since: new Date().toISOString() };
    pins[shard.origin] = p;
    savePins(pins);
  }
  return { ...p, changed: p.vkey !== shard.vkey };
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
    const key = await parseVerifierKey(s.pin.vkey);
    const note = await shardFiles(s).fetchText("checkpoint");
    return { checkpoint: await verifyCheckpoint(note, key), note };
  } catch (e) {
    return { error: e.message, status: e.status };
  }
}

/** GET /api/v1/search with `params` (URLSearchParams). */
export async function search(params) {
  return (await get(`api/v1/search?${params}`)).json();
}

// ---- routing ---------------------------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean);
  if (parts.length === 0) return views.home();
  if (parts[0] === "shard" && parts.length === 2) return views.shardView(parts[1], params);
  if (parts[0] === "shard" && parts[2] === "entry" && parts.length === 4) return views.entryView(parts[1], parts[3]);
  if (parts[0] === "search") return views.searchView(params);
  if (parts[0] === "trust") return views.trustView();
  return views.notFound(hash);
}

let generation = 0;

async function render() {
  const mine = ++generation;
  const main = document.getElementById("main");
  main.setAttribute("aria-busy", "true");
  let node;
  try {
    node = await route();
  } catch (e) {
    node = views.failure(e);
  }
  if (mine !== generation) return; // a later navigation won
  main.replaceChildren(node);
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
