// A headless Chromium driven by playwright-core, for the Python browser tests.
//
//   node tests/support/browser_driver.mjs /usr/bin/chromium
//
// Speaks JSON lines: reads one command per line on stdin ({"id", "cmd", ...params}) and
// answers each with one line on stdout ({"id", "ok": true, "result"} or {"id", "ok":
// false, "error"}). The first line it prints is {"ready": true, "version"}. Commands run one
// at a time, in order; each Playwright wait has its own timeout (ms, default 15000), so
// nothing waits forever. Console messages and page errors of the current page are kept
// for the "console" command. EOF on stdin or "close" closes the browser and exits.
//
// Chromium gets the flags this machine needs (no sandbox as root, no GPU, no QUIC, no
// background or component traffic to the closed internet); Playwright gives it a new,
// empty profile directory of its own and removes it on close.

import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const DEFAULT_TIMEOUT = 15000;

const executablePath = process.argv[2] || "/usr/bin/chromium";
const browser = await chromium.launch({ executablePath, args: FLAGS, timeout: 60000 });
let context = null;
let page = null;
let logs = [];

function write(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

function current() {
  if (!page) throw new Error("no page: send newPage first");
  return page;
}

const commands = {
  async newPage({ width = 1200, height = 900 } = {}) {
    if (context) await context.close();
    context = await browser.newContext({ viewport: { width, height }, deviceScaleFactor: 1 });
    page = await context.newPage();
    page.setDefaultTimeout(DEFAULT_TIMEOUT);
    logs = [];
    page.on("console", (msg) => logs.push(`console.${msg.type()}: ${msg.text()}`));
    page.on("pageerror", (err) => logs.push(`pageerror: ${err.message}`));
    page.on("requestfailed", (req) => logs.push(`requestfailed: ${req.url().replace(/token=[^&]+/, "token=[redacted]")} ${req.failure()?.errorText}`));
    return { width, height };
  },
  async goto({ url, timeout }) {
    const response = await current().goto(url, { timeout, waitUntil: "load" });
    return { status: response?.status() ?? null };
  },
  async click({ selector, timeout }) {
    await current().click(selector, { timeout });
    return null;
  },
  async fill({ selector, value, timeout }) {
    await current().fill(selector, String(value), { timeout });
    return null;
  },
  async select({ selector, value, timeout }) {
    return current().selectOption(selector, String(value), { timeout });
  },
  async waitFor({ selector, state = "visible", timeout }) {
    await current().waitForSelector(selector, { state, timeout });
    return null;
  },
  // `expression` is a JavaScript expression evaluated in the page until it is truthy;
  // returns its (JSON) value.
  async waitForFunction({ expression, timeout, polling = 100 }) {
    const handle = await current().waitForFunction(expression, null, { timeout, polling });
    const value = await handle.jsonValue();
    await handle.dispose();
    return value;
  },
  async text({ selector, timeout }) {
    return current().textContent(selector, { timeout });
  },
  async evaluate({ expression }) {
    return current().evaluate(expression);
  },
  async screenshot({ path, fullPage = true }) {
    const buffer = await current().screenshot({ path, fullPage, animations: "disabled" });
    return { bytes: buffer.length };
  },
  async console() {
    return logs;
  },
  async close() {
    await browser.close();
    return null;
  },
};

write({ ready: true, version: browser.version() });

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (!line.trim()) continue;
  let request;
  try {
    request = JSON.parse(line);
  } catch (err) {
    write({ id: null, ok: false, error: `not JSON: ${err.message}` });
    continue;
  }
  const { id, cmd, ...params } = request;
  const handler = commands[cmd];
  if (!handler) {
    write({ id, ok: false, error: `unknown command ${cmd}` });
    continue;
  }
  try {
    const result = await handler(params);
    write({ id, ok: true, result: result ?? null });
  } catch (err) {
    write({ id, ok: false, error: String(err?.message ?? err) });
  }
  if (cmd === "close") break;
}
await browser.close().catch(() => {});
process.exit(0);
