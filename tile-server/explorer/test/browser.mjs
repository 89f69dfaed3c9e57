// Drives Cairn's web explorer in headless Chromium (playwright-core, the Debian `chromium` binary)
// and reports what the page showed, as one JSON object on stdout; the Rust test that runs this
// (cli/tests/explorer.rs) compares it with the ground truth. Screenshots go to --out.
//
//   node browser.mjs --chromium /usr/bin/chromium --url http://127.0.0.1:P --tampered http://127.0.0.1:Q \
//        --cases cases.json --out DIR
//
// cases.json: {"digest": "sha256:<hex>", "identity": "<SAN>", "issuer": "<URL>",
//              "entry": {"shard": 2, "index": N}, "opaque": {"shard": 1, "index": M},
//              "spoof": {"shard": 2, "index": S},
//              "tampered": {"shard": 2, "index": K}}

import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values: args } = parseArgs({
  options: {
    chromium: { type: "string", default: "/usr/bin/chromium" },
    url: { type: "string" },
    tampered: { type: "string" },
    cases: { type: "string" },
    out: { type: "string" },
  },
});
for (const k of ["url", "tampered", "cases", "out"]) {
  if (!args[k]) {
    console.error(`browser.mjs: --${k} is required`);
    process.exit(2);
  }
}
const cases = JSON.parse(readFileSync(args.cases, "utf8"));
mkdirSync(args.out, { recursive: true });

const TIMEOUT = 30_000;
const browser = await chromium.launch({ executablePath: args.chromium, args: ["--no-sandbox"] });
const report = { requests: [], foreign: [], errors: [], screenshots: [] };

/** A fresh browser context (empty storage: the first visit pins keys) watching every request. */
async function open(origin, viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("request", (r) => {
    report.requests.push(r.url());
    const u = new URL(r.url());
    if (u.origin !== new URL(origin).origin && u.protocol !== "data:") report.foreign.push(r.url());
  });
  page.on("pageerror", (e) => report.errors.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") report.errors.push(`console: ${m.text()}`);
  });
  return { context, page };
}

/** Waits until the view for the current hash has rendered. */
/** Waits until the page shows the view of the current location (hashchange fires after a click returns). */
async function settled(page) {
  await page.waitForFunction(() => {
    const main = document.getElementById("main");
    return main.getAttribute("aria-busy") === "false" && main.dataset.view === location.hash;
  });
}

async function goto(page, origin, hash) {
  await page.goto(`${origin}/${hash}`);
  await settled(page);
}

async function shot(page, name) {
  const path = join(args.out, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  report.screenshots.push(path);
}

/** Every search result (following "More results" links): [{shard, index}]. */
async function results(page) {
  const out = [];
  for (;;) {
    out.push(
      ...(await page.$$eval(".result-row", (rows) =>
        rows.map((r) => ({ shard: Number(r.dataset.shard), index: Number(r.dataset.index) })),
      )),
    );
    const more = await page.$("a:text('More results')");
    if (!more) return out;
    const before = await page.evaluate(() => location.hash);
    await more.click();
    await page.waitForFunction((old) => location.hash !== old, before);
    await settled(page);
  }
}

async function entryFacts(page) {
  return page.evaluate(() => {
    const text = (id) => document.getElementById(id)?.textContent ?? null;
    const v = document.getElementById("verification");
    return {
      verification: v?.dataset.result ?? null,
      steps: Array.from(document.querySelectorAll("#verification .steps li"), (li) => ({
        ok: li.classList.contains("ok"),
        text: li.textContent,
      })),
      identity: text("signer-identity"),
      issuer: text("signer-issuer"),
      digest: text("artifact-digest"),
      fingerprint: text("signer-fingerprint"),
      chain: document.getElementById("signer-chain")?.dataset.result ?? null,
      body: document.querySelector("pre.raw")?.textContent ?? null,
    };
  });
}

try {
  // First view: time from navigation to the rendered, verified shard list.
  {
    const { context, page } = await open(args.url);
    const started = Date.now();
    await goto(page, args.url, "");
    report.firstViewMs = Date.now() - started;
    report.navigation = await page.evaluate(() => {
      const n = performance.getEntriesByType("navigation")[0];
      return { domContentLoadedMs: n.domContentLoadedEventEnd, loadMs: n.loadEventEnd };
    });
    report.home = await page.evaluate(() => ({
      shards: document.querySelectorAll("article.shard").length,
      verifiedCheckpoints: document.querySelectorAll("article.shard .ok").length,
      classicScripts: document.querySelectorAll("script:not([type=module])").length,
      moduleScripts: document.querySelectorAll("script[type=module]").length,
    }));
    await shot(page, "home");

    // Search by digest, typed into the header form.
    await page.selectOption("#search-kind", "digest");
    await page.fill("#search-q", cases.digest);
    await page.click("header button[type=submit]");
    await page.waitForFunction(() => location.hash.startsWith("#/search"));
    await settled(page);
    report.digestResults = await results(page);
    report.digestHash = await page.evaluate(() => location.hash);

    // Search by identity and issuer, through the form again.
    await goto(page, args.url, "");
    await page.selectOption("#search-kind", "identity");
    await page.fill("#search-q", cases.identity);
    await page.fill("#search-issuer", cases.issuer);
    await page.click("header button[type=submit]");
    await page.waitForFunction(() => location.hash.startsWith("#/search"));
    await settled(page);
    await shot(page, "search-identity");
    report.identityResults = await results(page);

    // Open an entry from the results, by clicking its link.
    await goto(page, args.url, `#/search?${new URLSearchParams({ digest: cases.digest })}`);
    await page.click(`.result-row[data-index="${cases.entry.index}"] a`);
    await page.waitForFunction((i) => new RegExp(`/entry/${i}(\\?|$)`).test(location.hash), cases.entry.index);
    await settled(page);
    report.entry = await entryFacts(page);
    report.entryHash = await page.evaluate(() => location.hash);
    await shot(page, "entry");

    // A shard's latest entries.
    await goto(page, args.url, `#/shard/${cases.entry.shard}`);
    report.shardRows = await page.$$eval(".entry-row", (rows) => rows.map((r) => Number(r.dataset.index)));
    await shot(page, "shard");
    await context.close();
  }

  // Deep links in a fresh browser: an opaque entry; a certificate no trusted CA issued.
  {
    const { context, page } = await open(args.url);
    await goto(page, args.url, `#/shard/${cases.opaque.shard}/entry/${cases.opaque.index}`);
    report.opaque = await entryFacts(page);
    await goto(page, args.url, `#/shard/${cases.spoof.shard}/entry/${cases.spoof.index}`);
    report.spoof = await entryFacts(page);
    await shot(page, "spoofed-certificate");
    await context.close();
  }

  // A phone: the entry view without horizontal scrolling.
  {
    const { context, page } = await open(args.url, { width: 390, height: 844 });
    await goto(page, args.url, `#/shard/${cases.entry.shard}/entry/${cases.entry.index}`);
    report.phone = await page.evaluate(() => ({
      verification: document.getElementById("verification")?.dataset.result ?? null,
      scrollWidth: document.documentElement.scrollWidth,
      viewportWidth: window.innerWidth,
    }));
    await shot(page, "entry-phone");
    await context.close();
  }

  // A shards.json that lies after the first visit pinned the real keys (intercepted in the browser):
  // another log's key for shard 1 under a look-alike origin, then shard 1 relabelled as Sigstore.
  {
    const { context, page } = await open(args.url);
    await goto(page, args.url, "");
    const real = await (await page.request.get(`${args.url}/shards.json`)).json();
    const one = real.shards.find((s) => s.id === cases.opaque.shard);
    const other = real.shards.find((s) => s.id !== cases.opaque.shard);
    const lie = async (change) => {
      await page.unroute("**/shards.json");
      await page.route("**/shards.json", (route) =>
        route.fulfill({
          contentType: "application/json",
          body: JSON.stringify({ shards: real.shards.map((s) => (s.id === one.id ? { ...s, ...change } : s)) }),
        }),
      );
      await page.goto(`${args.url}/#/shard/${one.id}/entry/${cases.opaque.index}`);
      await page.reload();
      await settled(page);
      return {
        ...(await entryFacts(page)),
        alert: await page.evaluate(() => document.querySelector("main [role=alert]")?.textContent ?? null),
      };
    };
    report.lookAlike = await lie({ origin: `${one.origin}\u200b`, vkey: other.vkey.replace(/^[^+]+/, one.origin) });
    report.relabelled = await lie({ kind: "sigstore" });
    await context.close();
  }

  // The same entry through a read path that serves a tampered tile.
  {
    const { context, page } = await open(args.tampered);
    await goto(page, args.tampered, `#/shard/${cases.tampered.shard}/entry/${cases.tampered.index}`);
    report.tampered = await entryFacts(page);
    await shot(page, "tampered");
    await context.close();
  }
} catch (e) {
  report.failure = e.stack || String(e);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report) + "\n");
