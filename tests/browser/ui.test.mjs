// The web UI in a real headless Chromium (Debian's, driven by
// playwright-core) against `jetsaga up` with its own nats-server: what a
// shopper and an administrator see and do, accessibility (axe-core), and a
// screenshot of each main page at desktop and phone widths.
//
// Needs: the jetsaga binary (JETSAGA_BIN, else $CARGO_TARGET_DIR/debug/jetsaga),
// nats-server on PATH (scripts/setup), Chromium (CHROMIUM, else /usr/bin/chromium).
// Screenshots go to JETSAGA_SCREENSHOTS (default: $CARGO_TARGET_DIR/screenshots;
// `JETSAGA_SCREENSHOTS=docs/screenshots scripts/test` refreshes the committed ones).
// The tests run in order and share one saga: the administrator's test
// finds the first shopper's completed order and the second's failed one.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, rmSync, existsSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import net from "node:net";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const root = path.resolve(import.meta.dirname, "../..");
const target = process.env.CARGO_TARGET_DIR ?? path.join(root, "target");
const jetsaga = process.env.JETSAGA_BIN ?? path.join(target, "debug", "jetsaga");
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const shots = path.resolve(root, process.env.JETSAGA_SCREENSHOTS ?? path.join(target, "screenshots"));
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const DESKTOP = { width: 1280, height: 860 };
const PHONE = { width: 390, height: 844 };
const LIVE = 20_000; // how long a saga may take to show, at most

assert.ok(existsSync(jetsaga), `the jetsaga binary is not at ${jetsaga}: build it (cargo build -p jetsaga-local --bins) or set JETSAGA_BIN`);
assert.ok(existsSync(chromiumPath), `Chromium is not at ${chromiumPath}: apt-get install chromium chromium-driver, or set CHROMIUM`);

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

/** `jetsaga up` in a temporary directory, with its own nats-server; resolves once it is up. */
async function startJetsaga(extraArgs = []) {
  const dir = mkdtempSync(path.join(tmpdir(), "jetsaga-ui-"));
  const natsPort = await freePort();
  const child = spawn(jetsaga, ["up", "--data-dir", dir, "--quiet", "--nats-port", String(natsPort), "--http-port", "0", ...extraArgs], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, NO_COLOR: "1" },
  });
  let output = "";
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`jetsaga up did not come up in 90 s:\n${output}`)), 90_000);
    const read = (chunk) => {
      output += chunk;
      const match = /web UI: (http:\/\/127\.0\.0\.1:\d+)\//.exec(output);
      if (/^jetsaga is up/m.test(output) && match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    };
    child.stdout.on("data", read);
    child.stderr.on("data", read);
    child.on("exit", (code) => reject(new Error(`jetsaga up exited with ${code}:\n${output}`)));
  });
  const natsUrl = readFileSync(path.join(dir, "nats.url"), "utf8").trim();
  return {
    url,
    natsUrl,
    cli: (...args) => execFileSync(jetsaga, ["--nats-url", natsUrl, ...args], { encoding: "utf8" }),
    async stop() {
      child.kill("SIGINT");
      await new Promise((resolve) => {
        const force = setTimeout(() => child.kill("SIGKILL"), 10_000);
        child.on("exit", () => { clearTimeout(force); resolve(); });
        if (child.exitCode !== null) resolve();
      });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

let shop; // the whole saga
let browser;

before(async () => {
  mkdirSync(shots, { recursive: true });
  shop = await startJetsaga();
  browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
});

after(async () => {
  await browser?.close();
  await shop?.stop();
});

/** A fresh browser session (its own cookies) on `base`. */
async function session(base = shop.url) {
  const context = await browser.newContext({ viewport: DESKTOP, baseURL: base, bypassCSP: false });
  const page = await context.newPage();
  page.setDefaultTimeout(LIVE);
  const problems = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error" && !/401|404|422|409/.test(message.text())) problems.push(`console: ${message.text()}`);
  });
  page.problems = problems;
  return { context, page };
}

/** axe-core on the page as it is: no serious or critical violation. */
async function assertAccessible(page, name) {
  // Evaluated, not a <script> tag: the UI's CSP allows no inline script, rightly.
  await page.evaluate(axeSource);
  const results = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const serious = results.violations.filter((v) => ["serious", "critical"].includes(v.impact));
  assert.deepEqual(
    serious.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).slice(0, 3).join("; ")})`),
    [],
    `accessibility violations on ${name}`,
  );
}

/** Screenshots of the page at desktop and phone widths, then axe at both. */
async function capture(page, name) {
  await page.waitForLoadState("networkidle").catch(() => {});
  await page.evaluate(() => document.getElementById("toasts")?.replaceChildren());
  await page.screenshot({ path: path.join(shots, `${name}-desktop.png`), fullPage: true });
  await assertAccessible(page, `${name} (desktop)`);
  await page.setViewportSize(PHONE);
  await page.waitForTimeout(200);
  await page.screenshot({ path: path.join(shots, `${name}-phone.png`), fullPage: true });
  await assertAccessible(page, `${name} (phone)`);
  await page.setViewportSize(DESKTOP);
}

async function signUp(page, name, email, password = "correct horse battery") {
  await page.goto("/#/signup");
  await page.getByLabel("Name").fill(name);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Create account" }).click();
  await page.getByRole("button", { name: "Log out" }).waitFor();
}

async function logIn(page, email, password = "correct horse battery") {
  await page.goto("/#/login");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("button", { name: "Log out" }).waitFor();
}

async function stockOf(page, productId) {
  const stock = page.locator(`[data-stock="${productId}"]`);
  await stock.waitFor();
  return Number(await stock.getAttribute("data-units"));
}

/** The events on the order page's timeline, in order. */
async function timelineEvents(page) {
  return page.locator(".timeline li").evaluateAll((items) => items.map((li) => li.dataset.event));
}

let adaOrder; // the first shopper's completed order

test("a shopper signs up, puts two products in the cart, checks out and sees the order complete live", async () => {
  const { context, page } = await session();
  await page.goto("/");
  await page.getByRole("heading", { name: "Catalog" }).waitFor();
  await capture(page, "catalog-signed-out");
  await signUp(page, "Ada Shopper", "ada.shopper@example.com");
  const keyboards = await stockOf(page, "p-keyboard");
  await page.getByRole("button", { name: "Add to cart: Mechanical keyboard" }).click();
  await page.getByRole("button", { name: "Add to cart: Wireless mouse" }).click();
  assert.equal(await page.locator("#cart-count").textContent(), "2");
  await capture(page, "catalog");
  await page.getByRole("link", { name: /Cart/ }).click();
  await page.getByRole("heading", { name: "Your cart" }).waitFor();
  await page.locator('[data-line="p-mouse"]').waitFor();
  await capture(page, "cart");
  // No reload from here on: a marker on the window would be gone.
  await page.evaluate(() => { window.__sameDocument = true; });
  await page.getByRole("button", { name: /Place order/ }).click();
  await page.waitForURL(/#\/orders\/o-/);
  adaOrder = decodeURIComponent(page.url().split("#/orders/")[1]);
  await page.locator('[data-event="orders.evt.completed"]').waitFor();
  await page.locator("#order-status-badge .badge-completed").waitFor();
  const events = await timelineEvents(page);
  const steps = ["orders.evt.created", "inventory.evt.reserved", "customers.evt.credit_reserved", "payments.evt.executed", "shipping.evt.scheduled", "shipping.evt.informed", "orders.evt.completed"];
  for (const step of steps) assert.ok(events.includes(step), `${step} on the timeline: ${events}`);
  assert.deepEqual(events.filter((e) => steps.includes(e)), steps, "the steps in saga order");
  assert.equal(await page.evaluate(() => window.__sameDocument), true, "the page was never reloaded");
  const firstStep = page.locator('[data-event="inventory.evt.reserved"] .tl-time');
  assert.match(await firstStep.textContent(), /\+\d/, "each step shows the latency since the previous one");
  assert.equal(await page.locator("#order-total").textContent(), "$69.98");
  await page.getByRole("button", { name: "Cancel order" }).waitFor({ state: "detached" });
  await capture(page, "order-completed");
  await page.getByRole("link", { name: "My orders" }).first().click();
  await page.locator(`[data-order="${adaOrder}"] .badge-completed`).waitFor();
  await capture(page, "my-orders");
  await page.goto("/");
  await page.waitForFunction((before) => Number(document.querySelector('[data-stock="p-keyboard"]')?.dataset.units) === before - 1, keyboards);
  assert.deepEqual(page.problems, []);
  await context.close();
});

test("an order for more than the stock fails with the reason, and the stock shown is unchanged", async () => {
  const { context, page } = await session();
  await signUp(page, "Max Many", "max.many@example.com");
  const before = await stockOf(page, "p-monitor");
  await page.getByRole("button", { name: "Add to cart: 27\" monitor" }).click();
  await page.getByRole("link", { name: /Cart/ }).click();
  const quantity = page.getByLabel('Quantity of 27" monitor');
  await quantity.fill(String(before + 1));
  await quantity.press("Tab");
  await page.getByRole("button", { name: /Place order/ }).click();
  await page.waitForURL(/#\/orders\/o-/);
  const outcome = page.locator('[data-outcome="failed"]');
  await outcome.waitFor();
  const text = await outcome.textContent();
  assert.match(text, /Out of stock/, text);
  assert.match(text, new RegExp(`requested ${before + 1}, available ${before}`), text);
  await page.locator('[data-event="orders.evt.failed"]').waitFor();
  await capture(page, "order-failed");
  await page.goto("/");
  // Give any (wrong) stock change time to show.
  await page.waitForTimeout(2500);
  assert.equal(await stockOf(page, "p-monitor"), before, "the stock is as it was");
  assert.deepEqual(page.problems, []);
  await context.close();
});

test("a second user sees none of the first user's orders", async () => {
  const { context, page } = await session();
  await signUp(page, "Bob Other", "bob.other@example.com");
  await page.goto("/#/orders");
  await page.getByText("No orders yet.").waitFor();
  await page.goto(`/#/orders/${encodeURIComponent(adaOrder)}`);
  await page.getByRole("heading", { name: "Order not found" }).waitFor();
  assert.equal(await page.locator(".timeline").count(), 0, "no timeline of someone else's order");
  assert.doesNotMatch(await page.locator("main").textContent(), /ada/i);
  await page.goto("/#/admin/sagas");
  await page.getByRole("heading", { name: "Administrators only" }).waitFor();
  await context.close();
});

test("an administrator finds a saga by status, opens its timeline, redrives a dead letter and sees it processed", async () => {
  const { context, page } = await session();
  await signUp(page, "Root Admin", "root.admin@example.com");
  shop.cli("users", "grant-admin", "root.admin@example.com");
  await page.goto("/#/admin");
  await page.reload();
  await page.getByRole("link", { name: "Console" }).waitFor();
  await page.locator('[data-function="order"]').waitFor();
  await page.locator(".chart svg").waitFor();
  await page.waitForFunction(() => /[1-9]/.test(document.querySelector(".kpis")?.textContent ?? ""), null, { timeout: 5000 }).catch(() => {});
  await capture(page, "console-overview");

  await page.getByRole("link", { name: "Sagas" }).click();
  await page.getByLabel("Status").selectOption("failed");
  await page.getByRole("button", { name: "Filter" }).click();
  // The list is replaced by the filtered one: failed sagas only.
  await page.waitForFunction(() => {
    const badges = [...document.querySelectorAll("[data-order] .badge")];
    return badges.length > 0 && badges.every((b) => b.classList.contains("badge-failed"));
  });
  await capture(page, "console-sagas");
  // Stuck: nothing is past its deadline here.
  await page.getByLabel("Status").selectOption("");
  await page.getByLabel(/Stuck only/).check();
  await page.getByRole("button", { name: "Filter" }).click();
  await page.getByText("No saga matches.").waitFor();
  await page.getByLabel(/Stuck only/).uncheck();
  await page.getByLabel("Status").selectOption("completed");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.getByRole("link", { name: adaOrder, exact: true }).click();
  await page.getByRole("heading", { name: `Saga ${adaOrder}` }).waitFor();
  await page.locator('[data-event="orders.evt.completed"]').waitFor();
  await page.locator(".tl-json summary").first().click();
  assert.match(await page.locator(".tl-json pre").first().textContent(), /"type": "orders.evt.created"/);
  await capture(page, "console-saga");

  // A command the order function gave up on (its store was down), as the runtime dead-letters it.
  const order = `o-redriven-${Date.now()}`;
  const me = await page.evaluate(() => fetch("/api/me").then((r) => r.json()));
  const command = JSON.stringify({ order_id: order, customer_id: me.customer_id, items: [{ product_id: "p-mouse", quantity: 1 }] });
  execFileSync(path.join(import.meta.dirname, "dead-letter.py"), [shop.natsUrl, "order", "orders.cmd.create", "the store is unavailable", command], { encoding: "utf8" });
  await page.getByRole("link", { name: "Dead letters" }).click();
  const letter = page.locator("[data-dlq]").filter({ hasText: "the store is unavailable" });
  await letter.waitFor();
  await capture(page, "console-dead-letters");
  await letter.getByRole("button", { name: "Redrive" }).click();
  await page.getByText(/Redriven to orders\.cmd\.create/).waitFor();
  await letter.waitFor({ state: "detached" });
  // Processed: the redriven order runs its saga.
  await page.goto(`/#/admin/sagas/${order}`);
  await page.locator('[data-event="orders.evt.completed"]').waitFor();

  // Delete: a second letter goes for good, never run.
  const dropped = `o-dropped-${Date.now()}`;
  execFileSync(path.join(import.meta.dirname, "dead-letter.py"), [shop.natsUrl, "order", "orders.cmd.create", "poison", JSON.stringify({ order_id: dropped, customer_id: me.customer_id, items: [{ product_id: "p-mouse", quantity: 1 }] })]);
  await page.goto("/#/admin/dlq");
  const poison = page.locator("[data-dlq]").filter({ hasText: "poison" });
  page.once("dialog", (dialog) => dialog.accept());
  await poison.getByRole("button", { name: "Delete" }).click();
  await poison.waitFor({ state: "detached" });
  const gone = await page.evaluate((id) => fetch(`/api/orders/${id}`).then((r) => r.status), dropped);
  assert.equal(gone, 404, "a deleted dead letter never runs");

  await page.getByRole("link", { name: "Products" }).click();
  await page.getByLabel("Product id").fill("p-lamp");
  await page.getByLabel("Name", { exact: true }).fill("Desk lamp");
  await page.getByLabel("Price (cents)").fill("3500");
  await page.getByLabel("Stock", { exact: true }).fill("7");
  await page.getByRole("button", { name: "Save product" }).click();
  await page.locator('[data-product="p-lamp"]').waitFor();
  await capture(page, "console-products");
  await page.getByRole("link", { name: "Customers" }).click();
  await page.locator("[data-customer]").first().waitFor();
  await capture(page, "console-customers");
  assert.deepEqual(page.problems, []);
  await context.close();
});

test("cancel before it ships: the timeline shows the compensations", async () => {
  // Payment is down (not hosted): the order waits with stock and credit held.
  const down = await startJetsaga(["order", "inventory", "customer", "shipping", "users", "loyalty"].flatMap((f) => ["--function", f]));
  try {
    const { context, page } = await session(down.url);
    await signUp(page, "Cleo Cancel", "cleo.cancel@example.com");
    await page.getByRole("button", { name: "Add to cart: Wireless mouse" }).click();
    await page.getByRole("link", { name: /Cart/ }).click();
    await page.getByRole("button", { name: /Place order/ }).click();
    await page.locator('[data-event="customers.evt.credit_reserved"]').waitFor();
    await page.getByText("Next: payment charged…").waitFor();
    await capture(page, "order-in-flight");
    await page.getByRole("button", { name: "Cancel order" }).click();
    await page.locator('[data-event="orders.evt.canceled"]').waitFor();
    await page.locator('[data-outcome="canceled"]').waitFor();
    for (const compensation of ["inventory.evt.released", "customers.evt.credit_released"]) {
      await page.locator(`[data-event="${compensation}"]`).waitFor();
    }
    const events = await timelineEvents(page);
    assert.ok(events.indexOf("orders.evt.cancel_requested") < events.indexOf("orders.evt.canceled"), `${events}`);
    assert.match(await page.locator('[data-outcome="canceled"]').textContent(), /Released: .*Stock released.*Credit released|Released: .*Credit released.*Stock released/);
    assert.equal(await page.locator(".tl-compensation").count() >= 2, true);
    await capture(page, "order-canceled");
    assert.deepEqual(page.problems, []);
    await context.close();
  } finally {
    await down.stop();
  }
});
