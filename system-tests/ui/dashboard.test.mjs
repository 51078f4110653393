// The dashboard page in a real browser: headless Chromium (Debian's) driven
// by playwright-core, against the four debug binaries on the embedded
// defaults (SQLite in a temporary directory, in-process bus), so every
// figure on the page is known. Screenshots go to $ARTIFACTS.
//
//   node dashboard.test.mjs        (after `cargo build --bins`; CHROMIUM, BIN_DIR, ARTIFACTS override)
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const binDir = process.env.BIN_DIR || path.join(root, "target/debug");
const artifacts = process.env.ARTIFACTS || path.join(root, "data/artifacts");
const secret = "ui-test-secret-0123456789abcdef01";
fs.mkdirSync(artifacts, { recursive: true });

const freePort = () => new Promise((resolve) => {
  const server = net.createServer();
  server.listen(0, "127.0.0.1", () => { const { port } = server.address(); server.close(() => resolve(port)); });
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const data = fs.mkdtempSync(path.join(os.tmpdir(), "tm-ui-"));
// The local topology (scripts/topology.txt, format described there): each
// binary's listeners on free ports here, and the URLs of what it calls.
const topology = fs.readFileSync(path.join(root, "scripts/topology.txt"), "utf8").split("\n")
  .filter((line) => line.trim() && !line.startsWith("#"))
  .map((line) => {
    const [name, http, grpc, admin, calls] = line.trim().split(/\s+/);
    const listeners = Object.entries({ http, grpc, admin }).filter(([, port]) => port !== "-").map(([kind]) => kind);
    return { name, listeners, calls: calls === "-" ? [] : calls.split(",").map((c) => c.split("=")) };
  });
const addr = {};
for (const { name, listeners } of topology) {
  for (const kind of listeners) addr[`${name}.${kind}`] = `127.0.0.1:${await freePort()}`;
}
const envOf = (name) => {
  const { listeners, calls } = topology.find((s) => s.name === name);
  return Object.fromEntries([
    ...listeners.map((kind) => [`${kind.toUpperCase()}_ADDR`, addr[`${name}.${kind}`]]),
    ...calls.map(([variable, callee]) => [variable, `http://${addr[`${callee}.grpc`]}`]),
  ]);
};
const processes = new Map();
function start(name, env) {
  const child = spawn(path.join(binDir, name), [], {
    env: { PATH: process.env.PATH, LOG_FORMAT: "json", RUST_LOG: "warn", ...env },
    stdio: ["ignore", "ignore", "inherit"],
  });
  processes.set(name, child);
  return child;
}
const extra = {
  "app-storage": { DATABASE_URL: `sqlite:${data}/ui.db?mode=rwc` },
  "app-gateway": { WEBHOOK_SECRET: secret },
};
const gatewayEnv = { ...envOf("app-gateway"), ...extra["app-gateway"] };
// From the topology's last line up: what each calls is already listening.
for (const { name } of [...topology].reverse()) start(name, { ...envOf(name), ...extra[name] });
const base = `http://${addr["app-gateway.http"]}`;

async function stopAll() {
  for (const child of processes.values()) if (child.exitCode === null) child.kill("SIGTERM");
  await sleep(300);
  fs.rmSync(data, { recursive: true, force: true });
}

async function waitReady() {
  for (let i = 0; i < 200; i++) {
    try { if ((await fetch(`${base}/ready`)).ok) return; } catch { /* not up yet */ }
    await sleep(100);
  }
  throw new Error("the stack did not become ready in 20 s");
}

function delivery(event, number, category, amount, reason) {
  return JSON.stringify({ event, details: { ticket: {
    number, type: "online_presale", title: `Night ${number}`, category, eventId: 4821, event: "Case a Chocs",
    cancellationReason: reason, sessions: [{ name: "Main", date: "2027-01-15", time: "21:30:00", doors: "20:30:00",
      location: { name: "Case a Chocs", street: "Quai Philippe-Godet 20", city: "Neuchatel", postcode: "2000" } }],
    promoter: "Jane Roe", price: { amount, currency: "CHF" } },
    buyer: { role: "customer", firstName: "John", lastName: "Doe", postcode: "2000" } } });
}

async function send(body) {
  const t = Math.floor(Date.now() / 1000);
  const v1 = crypto.createHmac("sha256", secret).update(`${t}.${body}`).digest("hex");
  const r = await fetch(`${base}/webhook`, { method: "POST", body,
    headers: { "content-type": "application/json", "petzi-version": "2", "petzi-signature": `t=${t},v1=${v1}` } });
  if (r.status !== 200) throw new Error(`webhook answered ${r.status}: ${await r.text()}`);
}

function check(condition, message) { if (!condition) throw new Error(message); }

let browser;
let failed = false;
try {
  await waitReady();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  await page.goto(`${base}/ui`);
  await page.waitForSelector('#state[data-state="live"]', { timeout: 10000 });
  console.log("ok   the page loads and its event stream is live");

  const tag = Date.now();
  const sent = [
    [`UI${tag}A`, "Concert", "40.00"],
    [`UI${tag}B`, "Theater", "20.00"],
    [`UI${tag}C`, "Concert", "30.00"],
  ];
  const started = Date.now();
  for (const [n, category, amount] of sent) await send(delivery("ticket_created", n, category, amount, ""));
  await send(delivery("ticket_updated", sent[1][0], "Theater", "20.00", "event_cancellation"));
  const numbers = sent.map(([n]) => n);
  await page.waitForFunction((numbers) => numbers.every((n) => document.querySelector(`tr[data-number="${n}"]`)),
    numbers, { timeout: 10000 });
  await page.waitForFunction(() =>
    document.querySelector("#stat-tickets").textContent === "3"
    && document.querySelector("#stat-average").textContent === "30.00 CHF"
    && document.querySelector("#stat-refund").textContent === "33.3 %"
    && document.querySelector("#stat-cancelled-events").textContent === "1"
    && document.querySelector('tr[data-number$="B"] td:last-child').textContent === "event_cancellation",
    null, { timeout: 10000 });
  console.log(`ok   rows and figures of 3 tickets and 1 cancellation are on the page ${Date.now() - started} ms after sending`);

  const table = await page.$$eval("#tickets tr", (trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent)));
  check(table.length === 3, `3 rows, got ${JSON.stringify(table)}`);
  check(table[0][1] === `Night ${sent[1][0]}` && table[0][5] === "event_cancellation",
    `the cancelled ticket moved to the top with its reason: ${JSON.stringify(table[0])}`);
  check(table[1][1] === `Night ${sent[2][0]}` && table[1][3] === "Concert" && table[1][4] === "30.00 CHF"
    && table[1][2] === "online_presale", `newest first, with title, type, category and price: ${JSON.stringify(table[1])}`);
  const bars = await page.$$eval("#by-category li", (lis) => lis.map((li) => [li.dataset.category, li.querySelector(".n").textContent]));
  check(JSON.stringify(bars) === JSON.stringify([["Concert", "2"], ["Theater", "1"]]), `tickets per category: ${JSON.stringify(bars)}`);
  console.log("ok   the table is newest first with every column, and tickets per category are counted");

  await page.selectOption("#category-filter", "Concert");
  const visible = await page.$$eval("#tickets tr", (trs) => trs.filter((tr) => !tr.hidden).map((tr) => tr.dataset.category));
  check(JSON.stringify(visible) === JSON.stringify(["Concert", "Concert"]), `filter by category: ${JSON.stringify(visible)}`);
  await page.selectOption("#category-filter", "");
  console.log("ok   the category filter shows only that category");

  const unlabelled = await page.$$eval("select, input", (els) => els.filter((el) => !document.querySelector(`label[for="${el.id}"]`)).length);
  check(unlabelled === 0, `${unlabelled} form controls without a label`);
  await page.screenshot({ path: path.join(artifacts, "ui-dashboard.png"), fullPage: true });

  // The gateway goes away: the page says so, then reconnects by itself when it is back.
  processes.get("app-gateway").kill("SIGTERM");
  await page.waitForSelector('#state[data-state="reconnecting"]', { timeout: 10000 });
  console.log("ok   the page shows 'reconnecting' when the stream drops");
  await sleep(500);
  start("app-gateway", gatewayEnv);
  await waitReady();
  await page.waitForSelector('#state[data-state="live"]', { timeout: 20000 });
  await send(delivery("ticket_created", `UI${tag}D`, "Comedy Show", "25.00", ""));
  await page.waitForSelector(`tr[data-number="UI${tag}D"]`, { timeout: 10000 });
  console.log("ok   it reconnects by itself, and new tickets arrive again");

  await page.setViewportSize({ width: 375, height: 800 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  check(overflow <= 0, `on a 375 px screen the page scrolls sideways by ${overflow} px`);
  await page.screenshot({ path: path.join(artifacts, "ui-dashboard-narrow.png"), fullPage: true });
  console.log("ok   usable on a 375 px screen (only the table scrolls sideways)");
  check(pageErrors.length === 0, `errors in the page: ${pageErrors.join("; ")}`);
  console.log(`screenshots in ${artifacts}`);
} catch (e) {
  failed = true;
  console.error(`FAIL ${e.message}`);
} finally {
  if (browser) await browser.close();
  await stopAll();
}
process.exit(failed ? 1 : 0);
