// The explorer's views. DOM is built with textContent only (entries are untrusted input; nothing
// from the log is ever parsed as HTML).

import { latestCheckpoint, pin, pinned, search, shard, shardFiles, shards, strict, trustedCAs, unpin } from "./app.js";
import { describeEntry, hexDump } from "./entry.js";
import { chainOf } from "./x509.js";
import { TileTree, base64, leafHash, verifyEntry } from "./tlog.js";

const PAGE = 25;

// Bidirectional overrides and invisible characters in what a log says are shown as escapes, so
// text cannot be made to read as something else on screen.
const HIDDEN = /[\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/g;
const visible = (s) => s.replace(HIDDEN, (c) => `\\u{${c.codePointAt(0).toString(16)}}`);

/** Builds an element: h("a", {href: "#/"}, "text", child, ...). */
function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = visible(String(v));
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : visible(String(kid)));
  }
  return el;
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toISOString().replace(".000Z", "Z") : "—";
}

function date(d) {
  return d.toISOString().replace(".000Z", "Z");
}

/** A definition list from [term, value] pairs (values may be nodes); empty values are left out. */
function facts(pairs, attrs = {}) {
  return h(
    "dl",
    { class: "facts", ...attrs },
    pairs
      .filter(([, v]) => v !== null && v !== undefined && v !== "")
      .map(([k, v, id]) => [h("dt", {}, k), h("dd", id ? { id } : {}, v)]),
  );
}

function code(text, attrs = {}) {
  return h("code", { class: "hash", ...attrs }, text);
}

function status(ok, yes, no) {
  return h("span", { class: ok ? "ok" : "bad" }, ok ? `✓ ${yes}` : `✗ ${no}`);
}

function searchLink(params, label) {
  return h("a", { href: `#/search?${new URLSearchParams(params)}` }, label);
}

function entryLink(shardId, index, label = String(index)) {
  return h("a", { href: `#/shard/${shardId}/entry/${index}` }, label);
}

export function failure(e) {
  return h(
    "section",
    { class: "card error", role: "alert" },
    h("h1", {}, "Something went wrong"),
    h("p", {}, e.message || String(e)),
    h("p", {}, h("a", { href: "#/" }, "Back to the shards")),
  );
}

export function notFound(hash) {
  return h("section", { class: "card" }, h("h1", {}, "Not found"), h("p", {}, `No view is called "${hash}".`));
}

// ---- checkpoints -----------------------------------------------------------------------------

function checkpointBlock(s, latest) {
  if (latest.error) {
    const none = latest.status === 404;
    return h(
      "div",
      { class: "checkpoint" },
      none ? h("p", {}, "No checkpoint published yet.") : status(false, "", `Checkpoint rejected: ${latest.error}`),
    );
  }
  const cp = latest.checkpoint;
  const rows = cp.signatures.map((sig) => {
    const role =
      sig.name === s.origin && sig.verified
        ? status(true, "log signature, verified against the pinned key", "")
        : sig.cosignedAt !== undefined
          ? `cosignature at ${when(sig.cosignedAt)} (witness key not pinned: not checked)`
          : "signature (key not pinned: not checked)";
    return h("tr", {}, h("td", {}, sig.name), h("td", {}, code(sig.keyId)), h("td", {}, role));
  });
  return h(
    "div",
    { class: "checkpoint" },
    facts([
      ["Tree size", cp.size.toLocaleString("en-US")],
      ["Root hash", code(base64(cp.root))],
    ]),
    h(
      "div",
      { class: "scroll" },
      h(
        "table",
        {},
        h("caption", {}, `Signatures (${cp.signatures.length})`),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Signer"), h("th", { scope: "col" }, "Key id"), h("th", { scope: "col" }, "Status"))),
        h("tbody", {}, rows),
      ),
    ),
    h("details", {}, h("summary", {}, "Checkpoint as published"), h("pre", {}, latest.note)),
  );
}

function keyWarning(s) {
  if (!s.pin.problem) return null;
  return h(
    "p",
    { class: "bad", role: "alert" },
    `Not trusted as served: ${s.pin.problem}. Checks use what this browser pinned; if the operator ` +
      "changed it, pin the new key on the Trust page.",
  );
}

function pinSource(p) {
  return p.source === "entered" ? `entered by you ${p.since}` : `trusted on first use ${p.since}, from this server`;
}

// ---- home ------------------------------------------------------------------------------------

export async function home() {
  const list = await shards();
  const latest = await Promise.all(list.map(latestCheckpoint));
  return h(
    "section",
    {},
    h("h1", {}, "Shards"),
    h("p", { class: "lead" }, `${list.length} shard${list.length === 1 ? "" : "s"} on this log. Checkpoints are verified in this browser against the keys pinned on the `, h("a", { href: "#/trust" }, "Trust"), " page."),
    list.map((s, i) =>
      h(
        "article",
        { class: "card shard", "data-shard": s.id },
        h("h2", {}, h("a", { href: `#/shard/${s.id}` }, `Shard ${s.id}`), " ", h("span", { class: "origin" }, s.origin)),
        keyWarning(s),
        facts([
          ["Kind", s.kind === "sigstore" ? "Sigstore (Rekor v2 hashedrekord)" : "opaque entries"],
          ["State", h("span", { class: s.state === "active" || s.state === "frozen" ? `state ${s.state}` : "state" }, s.state)],
          ["Valid from", s.valid_from ? when(s.valid_from) : null],
          ["Valid until", s.valid_until ? when(s.valid_until) : null],
          ["Verifier key", code(s.vkey)],
        ]),
        s.pin.vkey ? h("p", { class: "muted" }, `Pinned key: ${pinSource(s.pin)}.`) : null,
        checkpointBlock(s, latest[i]),
        latest[i].checkpoint && latest[i].checkpoint.size > 0
          ? h("p", {}, h("a", { href: `#/shard/${s.id}` }, "Latest entries →"))
          : null,
      ),
    ),
  );
}

// ---- a shard's entries -----------------------------------------------------------------------

function summary(d) {
  if (d.type === "hashedrekord") {
    const who = d.identity ? `${d.identity}${d.issuer ? ` (${d.issuer})` : ""}` : `key ${d.fingerprint.slice(0, 16)}…`;
    return [h("span", { class: "who" }, who), " ", code(`${d.digest.algorithm}:${d.digest.hex.slice(0, 16)}…`)];
  }
  if (d.type === "unreadable") return h("span", { class: "muted" }, d.error);
  const preview = d.text === null ? `${d.bytes.length} bytes (binary)` : d.text.slice(0, 120);
  return h("span", { class: "preview" }, preview);
}

export async function shardView(id, params) {
  const s = await shard(id);
  const latest = await latestCheckpoint(s);
  const size = latest.checkpoint ? latest.checkpoint.size : 0;
  let end = Number(params.get("before") || size);
  if (!Number.isSafeInteger(end) || end < 1 || end > size) end = size;
  const start = Math.max(0, end - PAGE);
  const tree = new TileTree(shardFiles(s).fetchBytes, size);
  const rows = [];
  for (let i = end - 1; i >= start; i--) {
    const bytes = await tree.entry(i);
    const d = await describeEntry(bytes, s.pin.kind);
    rows.push(h("tr", { class: "entry-row", "data-index": i }, h("td", {}, entryLink(s.id, i)), h("td", {}, summary(d))));
  }
  const goto = h(
    "form",
    {
      class: "inline",
      onsubmit: (e) => {
        e.preventDefault();
        const v = e.target.elements.index.value.trim();
        location.hash = `#/shard/${s.id}/entry/${v}`;
      },
    },
    h("label", { for: "goto-index" }, "Entry index"),
    h("input", { id: "goto-index", name: "index", type: "number", min: 0, max: Math.max(0, size - 1), required: true, inputmode: "numeric" }),
    h("button", { type: "submit" }, "Open"),
  );
  return h(
    "section",
    {},
    h("h1", {}, `Shard ${s.id} · ${s.origin}`),
    keyWarning(s),
    h("article", { class: "card" }, h("h2", {}, "Latest checkpoint"), checkpointBlock(s, latest)),
    h(
      "article",
      { class: "card" },
      h("h2", {}, size ? `Entries ${start}–${end - 1} of ${size.toLocaleString("en-US")}` : "No entries yet"),
      goto,
      h("div", { class: "scroll" }, h("table", { class: "entries" }, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Index"), h("th", { scope: "col" }, "Entry"))), h("tbody", {}, rows))),
      h(
        "nav",
        { class: "pager", "aria-label": "Pages" },
        end < size ? h("a", { href: `#/shard/${s.id}?before=${Math.min(size, end + PAGE)}` }, "← Newer") : null,
        start > 0 ? h("a", { href: `#/shard/${s.id}?before=${start}` }, "Older →") : null,
      ),
    ),
  );
}

// ---- one entry -------------------------------------------------------------------------------

function verificationBlock(result) {
  const verdict = result.ok ? "verified" : "failed";
  return h(
    "article",
    { class: `card verification ${verdict}`, id: "verification", "data-result": verdict, "aria-live": "polite" },
    h("h2", {}, result.ok ? "✓ Verified in this browser" : "✗ Verification failed"),
    h(
      "p",
      {},
      result.ok
        ? "This page fetched the checkpoint, the entry and the tiles itself and recomputed the proof; it did not take the server's word."
        : "A check below did not hold. The entry is not proven to be in the log as this server presents it.",
    ),
    h(
      "ol",
      { class: "steps" },
      result.steps.map((st) => h("li", { class: st.ok ? "ok" : "bad" }, h("strong", {}, `${st.ok ? "✓" : "✗"} ${st.name}: `), st.detail)),
    ),
    result.tiles.length ? h("details", {}, h("summary", {}, `Files fetched (${result.tiles.length})`), h("ul", {}, result.tiles.map((t) => h("li", {}, code(t))))) : null,
  );
}

/** Whether the certificate was issued by a CA of this server's trusted root: a line saying which. */
async function issuerCheck(c) {
  const chains = await trustedCAs();
  if (chains === null) return h("span", { class: "muted" }, "not checked: this server serves no trusted_root.json");
  let chain = null;
  try {
    chain = await chainOf(c, chains);
  } catch (e) {
    return h("span", { class: "bad", id: "signer-chain", "data-result": "failed" }, `✗ the chain could not be read: ${e.message}`);
  }
  if (!chain) {
    return h("span", { class: "bad", id: "signer-chain", "data-result": "failed" }, "✗ not issued by any certificate authority in this log's trusted_root.json: anyone could have made this certificate");
  }
  return h("span", { class: "ok", id: "signer-chain", "data-result": "verified" }, `✓ issued by ${chain[0].subject}, a certificate authority in this log's trusted_root.json (signatures checked)`);
}

async function certificateBlock(d) {
  const c = d.certificate;
  const issued = await issuerCheck(c);
  return h(
    "article",
    { class: "card" },
    h("h2", {}, "Signer"),
    facts([
      ["Identity", d.identity || "—", "signer-identity"],
      ["OIDC issuer", d.issuer || "—", "signer-issuer"],
      ["Issuing CA", issued],
      ["Subject alternative names", c.sans.length ? h("ul", {}, c.sans.map((s) => h("li", {}, `${s.type}: `, s.value))) : "—"],
      ...c.fulcio.filter((f) => f.oid !== "1.3.6.1.4.1.57264.1.8" && f.oid !== "1.3.6.1.4.1.57264.1.1").map((f) => [f.label, f.value]),
      ["Valid", `${date(c.notBefore)} to ${date(c.notAfter)}`],
      ["Certificate issuer", c.issuer],
      ["Subject", c.subject || "—"],
      ["Serial", code(c.serial)],
      ["Key", c.key.algorithm],
      ["Extended key usage", c.extendedKeyUsage.join(", ") || "—"],
      ["Certificate SHA-256", code(d.fingerprint, { id: "signer-fingerprint" })],
    ]),
    h(
      "p",
      { class: "links" },
      d.identity ? searchLink(d.issuer ? { identity: d.identity, issuer: d.issuer } : { identity: d.identity }, "Other entries by this identity") : null,
      " ",
      searchLink({ fingerprint: d.fingerprint }, "Entries with this certificate"),
    ),
    h("p", { class: "muted" }, "The certificate's signatures are checked up to a CA of the trusted root this server serves now (not pinned), not its validity at signing time or its SCT: for those, verify the bundle with cairn verify-bundle or a Sigstore client."),
  );
}

function keyBlock(d) {
  return h(
    "article",
    { class: "card" },
    h("h2", {}, "Signer"),
    facts([
      ["Public key", d.key.algorithm],
      ["Key details", d.keyDetails],
      ["Key SHA-256", code(d.fingerprint, { id: "signer-fingerprint" })],
    ]),
    h("p", { class: "links" }, searchLink({ fingerprint: d.fingerprint }, "Entries with this key")),
  );
}

export async function entryView(id, indexText, params) {
  const s = await shard(id);
  const index = Number(indexText);
  if (!/^\d+$/.test(indexText) || !Number.isSafeInteger(index)) throw new Error(`"${indexText}" is not an entry index`);
  const result = s.pin.vkey
    ? await verifyEntry(shardFiles(s), s.pin.vkey, index)
    : { ok: false, steps: [{ name: "Pinned key", ok: false, detail: s.pin.problem }], tiles: [], entry: null, checkpoint: null };
  if (s.pin.vkey && result.steps[0].ok) result.steps[0].detail += ` (${pinSource(s.pin)})`;
  // Opened from a search result: the entry must be the one the result showed.
  const expected = params && params.get("leaf");
  if (expected && result.entry) {
    const leaf = base64(await leafHash(result.entry));
    const same = leaf === expected;
    result.steps.push({
      name: "Same entry as the search result",
      ok: same,
      detail: same ? "the search answer showed this entry" : `the search answer showed another entry (leaf hash ${expected}) for this index`,
    });
    result.ok = result.ok && same;
  }
  const parts = [h("h1", {}, `Entry ${index} of shard ${s.id}`), h("p", { class: "lead" }, s.origin), keyWarning(s), verificationBlock(result)];
  if (result.entry) {
    const d = await describeEntry(result.entry, s.pin.kind);
    if (d.type === "hashedrekord") {
      parts.push(d.signer === "certificate" ? await certificateBlock(d) : keyBlock(d));
      parts.push(
        h(
          "article",
          { class: "card" },
          h("h2", {}, "Artifact"),
          facts([
            ["Digest", code(`${d.digest.algorithm}:${d.digest.hex}`, { id: "artifact-digest" })],
            ["Signature", code(d.signature)],
            ["Entry", `${d.kind} ${d.apiVersion}`],
          ]),
          h("p", { class: "links" }, searchLink({ digest: `${d.digest.algorithm}:${d.digest.hex}` }, "Other entries for this digest")),
        ),
      );
      parts.push(h("article", { class: "card" }, h("h2", {}, "Body"), h("pre", { class: "raw" }, JSON.stringify(d.json, null, 2))));
    } else {
      if (d.type === "unreadable") parts.push(h("p", { class: "bad" }, `This entry could not be decoded: ${d.error}`));
      parts.push(h("article", { class: "card" }, h("h2", {}, `Body (${d.bytes.length} bytes)`), h("pre", { class: "raw" }, d.text !== null ? d.text : hexDump(d.bytes))));
    }
  }
  parts.push(h("nav", { class: "pager", "aria-label": "Neighbours" }, index > 0 ? entryLink(s.id, index - 1, "← Previous") : null, h("a", { href: `#/shard/${s.id}` }, "Shard"), result.checkpoint && index + 1 < result.checkpoint.size ? entryLink(s.id, index + 1, "Next →") : null));
  return h("section", {}, parts);
}

// ---- search ----------------------------------------------------------------------------------

export function wireSearchForm(form) {
  const kind = form.elements.kind;
  const issuer = form.querySelector(".issuer");
  const sync = () => {
    issuer.hidden = kind.value !== "identity";
  };
  kind.addEventListener("change", sync);
  sync();
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    let q = form.elements.q.value.trim();
    if (!q) return;
    const params = new URLSearchParams();
    const algorithms = { 64: "sha256", 96: "sha384", 128: "sha512" };
    if (kind.value === "digest" && /^[0-9a-fA-F]+$/.test(q) && algorithms[q.length]) q = `${algorithms[q.length]}:${q.toLowerCase()}`;
    params.set(kind.value, q);
    const iss = form.elements.issuer.value.trim();
    if (kind.value === "identity" && iss) params.set("issuer", iss);
    location.hash = `#/search?${params}`;
  });
}

export async function searchView(params) {
  const query = new URLSearchParams();
  for (const k of ["digest", "identity", "issuer", "fingerprint", "page_token"]) if (params.get(k)) query.set(k, params.get(k));
  const what = params.get("digest") || params.get("fingerprint") || `${params.get("identity") || ""}${params.get("issuer") ? ` from ${params.get("issuer")}` : ""}`;
  const title = h("h1", {}, "Search");
  let answer;
  try {
    answer = await search(query);
  } catch (e) {
    const message = e.status === 404 ? "This server does not run the search role (GET /api/v1/search is not here)." : e.message;
    return h("section", {}, title, h("p", { class: "bad", role: "alert" }, message));
  }
  const list = await shards();
  const rows = [];
  for (const r of answer.results) {
    const s = list.find((x) => x.pin.vkey && x.pin.vkey === r.logKey);
    let d;
    let leaf = "";
    try {
      const bytes = Uint8Array.from(atob(r.entry), (c) => c.charCodeAt(0));
      leaf = base64(await leafHash(bytes));
      d = await describeEntry(bytes, "sigstore");
    } catch (e) {
      d = { type: "unreadable", error: e.message };
    }
    const link = s ? h("a", { href: `#/shard/${s.id}/entry/${r.logIndex}?${new URLSearchParams({ leaf })}` }, String(r.logIndex)) : String(r.logIndex);
    rows.push(
      h(
        "tr",
        { class: "result-row", "data-index": r.logIndex, "data-shard": s ? s.id : "" },
        h("td", {}, s ? `${s.id}` : r.log),
        h("td", {}, link),
        h("td", {}, summary(d)),
      ),
    );
  }
  const next = answer.nextPageToken ? new URLSearchParams(query) : null;
  if (next) next.set("page_token", answer.nextPageToken);
  return h(
    "section",
    {},
    title,
    h("p", { class: "lead" }, `Entries matching `, code(what), ", as the search server states them. Open an entry to verify it in this browser (and that it is the entry listed here); a search proves presence, never absence."),
    rows.length
      ? h("div", { class: "scroll" }, h("table", { class: "results" }, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Shard"), h("th", { scope: "col" }, "Index"), h("th", { scope: "col" }, "Entry"))), h("tbody", {}, rows)))
      : h("p", { id: "no-results" }, "No entries found."),
    answer.pending ? h("p", { class: "muted" }, "More matches are indexed but not yet under a checkpoint; search again in a moment.") : null,
    next ? h("nav", { class: "pager" }, h("a", { href: `#/search?${next}` }, "More results →")) : null,
  );
}

// ---- trust -----------------------------------------------------------------------------------

export async function trustView() {
  const pins = pinned();
  const served = await shards().catch(() => []);
  const message = h("p", { role: "status" });
  const area = h("textarea", { id: "pin-keys", rows: 3, spellcheck: "false", placeholder: "origin+1234abcd+AQ... sigstore" });
  const form = h(
    "form",
    {
      onsubmit: async (e) => {
        e.preventDefault();
        const done = [];
        try {
          for (const line of area.value.split("\n").map((l) => l.trim()).filter(Boolean)) {
            const [vkey, kindWord, ...rest] = line.split(/\s+/);
            if (rest.length || (kindWord && kindWord !== "sigstore" && kindWord !== "opaque")) {
              throw new Error(`"${line}": write a verifier key, then optionally sigstore or opaque`);
            }
            const listed = served.find((x) => x.origin === vkey.split("+")[0]);
            const kind = kindWord || (listed ? listed.kind : "opaque");
            done.push(`${(await pin(vkey, kind)).name} (${kind})`);
          }
          message.textContent = `Pinned: ${done.join(", ")}. Reloading…`;
          location.reload();
        } catch (err) {
          message.textContent = `Not pinned: ${err.message}`;
        }
      },
    },
    h("label", { for: "pin-keys" }, "Pin verifier keys you got from the operator, one per line, each optionally followed by sigstore or opaque (default: what shards.json lists)"),
    area,
    h("button", { type: "submit" }, "Pin"),
    message,
  );
  const rows = Object.entries(pins).map(([name, p]) =>
    h(
      "tr",
      {},
      h("td", {}, name),
      h("td", {}, code(p.vkey)),
      h("td", {}, p.kind || "—"),
      h("td", {}, pinSource(p)),
      h("td", {}, h("button", { type: "button", onclick: () => { unpin(name); location.reload(); } }, "Forget")),
    ),
  );
  return h(
    "section",
    {},
    h("h1", {}, "Trust"),
    h(
      "p",
      { class: "lead" },
      strict(pins)
        ? "Checkpoints are checked against these keys, kept in this browser. Because you entered keys, a log whose key is not listed here is not trusted at all."
        : "Checkpoints are checked against these keys, kept in this browser. A log seen for the first time is pinned from the server's shards.json (trust on first use). Once you enter a key from a source you trust, that first-use step stops: only keys listed here are used.",
    ),
    h("div", { class: "scroll" }, h("table", {}, h("thead", {}, h("tr", {}, ["Log (key name)", "Key", "Entries", "Source", ""].map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows))),
    form,
  );
}
