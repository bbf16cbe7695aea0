// The operations console (administrators): live throughput and latency,
// the functions' backlogs, every saga with filters, dead letters with
// redrive and delete, products and customers.

import { get, post, put, del, query } from "./api.js";
import { h, fill, money, when, toast, field, showError, loading, duration } from "./dom.js";
import { ordersTable, sagaView } from "./shop.js";

function heading(text, ...rest) {
  return h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, text), ...rest);
}

export function consoleNav() {
  return h("nav", { class: "subnav", "aria-label": "Console" },
    [["#/admin", "Overview"], ["#/admin/sagas", "Sagas"], ["#/admin/dlq", "Dead letters"], ["#/admin/products", "Products"], ["#/admin/customers", "Customers"]]
      .map(([href, text]) => h("a", { href, "aria-current": location.hash === href ? "page" : undefined }, text)));
}

/** An SVG chart of the last minute: bars of orders ended per second, a line of p99 latency. */
function chart(seconds) {
  const width = 600, height = 180, pad = 28;
  const ns = "http://www.w3.org/2000/svg";
  const svg = (tag, attrs, ...kids) => {
    const el = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    el.append(...kids);
    return el;
  };
  const total = (s) => s.completed + s.failed + s.canceled;
  const maxCount = Math.max(1, ...seconds.map(total));
  const maxLatency = Math.max(1, ...seconds.map((s) => s.p99_ms ?? 0));
  const step = (width - pad * 2) / Math.max(1, seconds.length);
  const y = (v, max) => height - pad - (v / max) * (height - pad * 2);
  const bars = seconds.flatMap((s, i) => {
    const x = pad + i * step;
    const ok = svg("rect", { x, y: y(s.completed, maxCount), width: Math.max(1, step - 1), height: height - pad - y(s.completed, maxCount), class: "bar-ok" });
    const bad = svg("rect", { x, y: y(total(s), maxCount), width: Math.max(1, step - 1), height: y(s.completed, maxCount) - y(total(s), maxCount), class: "bar-bad" });
    return [ok, bad];
  });
  const points = seconds.map((s, i) => (s.p99_ms === null ? null : `${pad + i * step + step / 2},${y(s.p99_ms, maxLatency)}`)).filter(Boolean);
  const latest = seconds.at(-1) ?? { completed: 0, failed: 0, canceled: 0 };
  const rate = seconds.slice(-10).reduce((a, s) => a + total(s), 0) / 10;
  const p50 = seconds.slice(-10).map((s) => s.p50_ms).filter((v) => v !== null);
  const p99 = seconds.slice(-10).map((s) => s.p99_ms).filter((v) => v !== null);
  const description = `Orders ended per second over the last minute: ${rate.toFixed(1)} per second on average over the last 10 seconds; p99 latency up to ${duration(Math.max(0, ...p99))}.`;
  return h("figure", { class: "chart" },
    svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": description },
      svg("line", { x1: pad, y1: height - pad, x2: width - pad, y2: height - pad, class: "axis" }),
      svg("text", { x: pad, y: 14, class: "axis-label" }, `${maxCount}/s`),
      svg("text", { x: width - pad, y: 14, class: "axis-label", "text-anchor": "end" }, `p99 ${duration(maxLatency)}`),
      svg("text", { x: pad, y: height - 8, class: "axis-label" }, "60 s ago"),
      svg("text", { x: width - pad, y: height - 8, class: "axis-label", "text-anchor": "end" }, "now"),
      ...bars,
      points.length > 1 ? svg("polyline", { points: points.join(" "), class: "line-p99" }) : svg("g", {})),
    h("figcaption", { class: "kpis" },
      kpi("Sagas/s (10 s)", rate.toFixed(1)),
      kpi("p50", p50.length ? duration(Math.max(...p50)) : "—"),
      kpi("p99", p99.length ? duration(Math.max(...p99)) : "—"),
      kpi("Last second", `${latest.completed} ok · ${latest.failed + latest.canceled} not`),
      h("span", { class: "legend" }, h("span", { class: "key key-ok" }), "completed ", h("span", { class: "key key-bad" }), "failed or canceled ", h("span", { class: "key key-line" }), "p99 latency")));
}

function kpi(label, value) {
  return h("span", { class: "kpi" }, h("span", { class: "kpi-label" }, label), h("strong", {}, value));
}

/** `#/admin`: live throughput and the functions. */
export function overview(main, _params, ctx) {
  if (!ctx.requireAdmin()) return;
  const chartBox = h("section", { class: "card", "aria-labelledby": "tp" }, h("h2", { id: "tp" }, "Throughput and latency"), loading());
  const functions = h("section", { class: "card", "aria-labelledby": "fn" }, h("h2", { id: "fn" }, "Functions"), loading());
  fill(main, heading("Operations"), consoleNav(), chartBox, functions);
  const n = (v) => (v === null || v === undefined ? "—" : String(v));
  const refresh = async () => {
    try {
      const tp = await get("/api/throughput");
      fill(chartBox, h("h2", { id: "tp" }, "Throughput and latency"), chart(tp.seconds));
    } catch (e) {
      fill(chartBox, h("h2", { id: "tp" }, "Throughput and latency"), h("p", { class: "notice notice-bad" }, e.message));
    }
    try {
      const status = await get("/api/status");
      fill(functions, h("h2", { id: "fn" }, "Functions"),
        ...(status.warnings || []).map((w) => h("p", { class: "notice notice-bad", role: "alert" }, w)),
        h("p", { class: "muted" }, `Stream ${status.stream}: ${status.messages} messages. Dead letters: `, h("a", { href: "#/admin/dlq" }, String(status.dead_letters))),
        h("div", { class: "scroll" }, h("table", { class: "table" },
          h("thead", {}, h("tr", {}, ["Function", "Consumer lag", "Ack pending", "Redelivered", "Commands waiting", "Outbox backlog", "Oldest unpublished"].map((t) => h("th", { scope: "col", class: t === "Function" ? "" : "num" }, t)))),
          h("tbody", {}, status.consumers.map((c) => h("tr", { "data-function": c.function },
            h("th", { scope: "row" }, c.function),
            h("td", { class: "num" }, n(c.pending)), h("td", { class: "num" }, n(c.ack_pending)),
            h("td", { class: "num" }, n(c.redelivered)), h("td", { class: "num" }, n(c.commands_pending)),
            h("td", { class: "num" }, n(c.unpublished)),
            h("td", { class: "num" }, c.oldest_unpublished_age_ms === null || c.oldest_unpublished_age_ms === undefined ? "—" : duration(c.oldest_unpublished_age_ms))))))));
    } catch (e) {
      fill(functions, h("h2", { id: "fn" }, "Functions"), h("p", { class: "notice notice-bad" }, e.message));
    }
  };
  refresh();
  const timer = setInterval(refresh, 2000);
  return () => clearInterval(timer);
}

/** `#/admin/sagas`: every saga, filtered by status, customer and time, a page at a time. */
export function sagas(main, params, ctx) {
  if (!ctx.requireAdmin()) return;
  const [statusField, status] = field("Status", { name: "status", options: [["", "Any"], ...["pending", "stock_reserved", "credit_reserved", "paid", "shipped", "completed", "failed", "canceling", "canceled"].map((s) => [s, s.replace(/_/g, " ")])] });
  const [customerField, customer] = field("Customer", { name: "customer_id", placeholder: "c-ada", maxlength: 128 });
  customer.value = params.query?.get("customer") ?? "";
  const [fromField, from] = field("Created from", { name: "created_from", type: "datetime-local", step: 1 });
  const [untilField, until] = field("Created before", { name: "created_until", type: "datetime-local", step: 1 });
  const stuck = h("input", { type: "checkbox", id: "f-past_due", name: "past_due" });
  stuck.checked = params.query?.get("stuck") === "1";
  const stuckField = h("div", { class: "field field-check" }, h("label", { for: "f-past_due" }, stuck, " Stuck only (past their deadline, not ended)"));
  const form = h("form", { class: "card filters-form", role: "search", "aria-label": "Filter sagas" }, statusField, customerField, fromField, untilField, stuckField,
    h("div", { class: "field" }, h("button", { class: "btn btn-primary", type: "submit" }, "Filter")),
    h("p", { class: "form-error notice notice-bad", role: "alert", hidden: true }));
  const list = h("div", { class: "card" }, loading());
  const pager = h("div", { class: "actions" });
  let cursors = [undefined];
  const iso = (local) => (local ? new Date(local).toISOString() : undefined);
  const load = async () => {
    let page;
    try {
      page = await get(`/api/sagas${query({ status: status.value, customer_id: customer.value.trim(), created_from: iso(from.value), created_until: iso(until.value), past_due: stuck.checked ? "true" : undefined, limit: 20, after: cursors.at(-1) })}`);
      showError(form, { message: "" });
      form.querySelector(".form-error").hidden = true;
    } catch (e) {
      showError(form, e);
      return;
    }
    fill(list, page.orders.length ? ordersTable(page.orders, true) : h("p", { class: "empty" }, "No saga matches."));
    fill(pager,
      h("span", { class: "muted" }, `Page ${cursors.length}`),
      cursors.length > 1 ? h("button", { class: "btn", type: "button", onclick: () => { cursors.pop(); load(); } }, "Newer") : null,
      page.next ? h("button", { class: "btn", type: "button", onclick: () => { cursors.push(page.next); load(); } }, "Older") : null);
  };
  form.addEventListener("submit", (event) => { event.preventDefault(); cursors = [undefined]; load(); });
  fill(main, heading("Sagas"), consoleNav(), form, list, pager);
  load();
}

/** `#/admin/sagas/:id`. */
export function saga(main, params, ctx) {
  if (!ctx.requireAdmin()) return;
  const body = h("div", {});
  fill(main, consoleNav(), body);
  return sagaView(body, params.id, { admin: true });
}

/** `#/admin/dlq`: dead letters, redrive and delete. */
export function deadLetters(main, _params, ctx) {
  if (!ctx.requireAdmin()) return;
  const list = h("div", {}, loading());
  fill(main, heading("Dead letters"), consoleNav(), h("p", { class: "muted" }, "Messages a function gave up on. Redrive sends one to its subject again; delete drops it for good."), list);
  const load = async () => {
    let letters;
    try {
      letters = (await get("/api/dlq")).dead_letters;
    } catch (e) {
      fill(list, h("p", { class: "notice notice-bad" }, e.message));
      return;
    }
    if (!letters.length) {
      fill(list, h("div", { class: "card empty" }, h("p", {}, "No dead letters. Every message was processed.")));
      return;
    }
    fill(list, letters.map((l) => h("article", { class: "card letter", "data-dlq": l.dlq_sequence, "aria-labelledby": `dlq-${l.dlq_sequence}` },
      h("div", { class: "letter-head" },
        h("h2", { id: `dlq-${l.dlq_sequence}` }, `#${l.dlq_sequence} · ${l.function}`),
        h("div", { class: "actions" },
          h("button", { class: "btn btn-primary", type: "button", onclick: () => act("redrive", l) }, "Redrive"),
          h("button", { class: "btn btn-danger", type: "button", onclick: () => act("delete", l) }, "Delete"))),
      h("dl", { class: "facts" },
        h("dt", {}, "Reason"), h("dd", { class: "reason-text" }, l.reason),
        h("dt", {}, "Subject"), h("dd", {}, l.subject),
        h("dt", {}, "Origin"), h("dd", {}, l.origin),
        h("dt", {}, "Attempts"), h("dd", {}, String(l.attempts)),
        h("dt", {}, "When"), h("dd", {}, when(l.at))),
      h("details", {}, h("summary", {}, "Payload"), h("pre", { tabindex: 0, "aria-label": `Payload of dead letter ${l.dlq_sequence}` }, pretty(l.payload))))));
  };
  const act = async (action, letter) => {
    if (action === "delete" && !confirm(`Delete dead letter #${letter.dlq_sequence} for good? Its message will never run.`)) return;
    try {
      if (action === "redrive") {
        const done = await post(`/api/dlq/${letter.dlq_sequence}/redrive`);
        toast(`Redriven to ${done.subject}: ${done.answer}`, "ok");
      } else {
        await del(`/api/dlq/${letter.dlq_sequence}`);
        toast(`Dead letter #${letter.dlq_sequence} deleted`, "ok");
      }
    } catch (e) {
      toast(e.message, "bad");
    }
    load();
  };
  load();
}

function pretty(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

/**
 * An administration page: a table of `kind` (loaded by `fetchRows`, one row
 * each by `row`) and a form of `fields` that saves one (`save`) and reloads.
 * `row` gets the form, to fill it for editing.
 */
function adminPage(main, { title, kind, fields, columns, fetchRows, row, save }) {
  const list = h("div", { class: "card" }, loading());
  const form = h("form", { class: "card form-inline", "aria-label": `Add or change a ${kind}` },
    h("h2", {}, `Add or change a ${kind}`), h("p", { class: "form-error notice notice-bad", role: "alert", hidden: true }),
    h("div", { class: "row" }, fields.map(([label, attrs]) => field(label, attrs)[0])),
    h("button", { class: "btn btn-primary", type: "submit" }, `Save ${kind}`));
  const load = async () => {
    try {
      const rows = await fetchRows();
      fill(list, h("div", { class: "scroll" }, h("table", { class: "table" },
        h("thead", {}, h("tr", {}, columns.map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows.map((r) => row(r, form))))));
    } catch (e) {
      fill(list, h("p", { class: "notice notice-bad" }, e.message));
    }
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const saved = await save(Object.fromEntries(new FormData(form)));
      toast(`${saved.name} saved`, "ok");
      form.reset();
      load();
    } catch (e) {
      showError(form, e);
    }
  });
  fill(main, heading(title), consoleNav(), list, form);
  load();
}

/** `#/admin/products`: the catalog, editable. */
export function products(main, _params, ctx) {
  if (!ctx.requireAdmin()) return;
  adminPage(main, {
    title: "Products",
    kind: "product",
    fields: [
      ["Product id", { name: "product_id", required: true, placeholder: "p-lamp", maxlength: 128 }],
      ["Name", { name: "name", required: true, maxlength: 200 }],
      ["Price (cents)", { name: "price_cents", type: "number", min: 0, required: true }],
      ["Stock", { name: "stock", type: "number", min: 0, required: true }],
    ],
    columns: ["Product", "Name", "Price", "Stock", "Reserved", ""],
    fetchRows: async () => (await get("/api/products")).products,
    row: (p, form) => h("tr", { "data-product": p.product_id },
      h("td", {}, p.product_id), h("th", { scope: "row" }, p.name), h("td", {}, money(p.price_cents)),
      h("td", {}, String(p.stock)), h("td", {}, String(p.reserved)),
      h("td", {}, h("button", { class: "btn btn-ghost", type: "button", "aria-label": `Edit ${p.name}`, onclick: () => {
        form.elements.product_id.value = p.product_id;
        form.elements.name.value = p.name;
        form.elements.price_cents.value = p.price_cents;
        form.elements.stock.value = p.stock;
        form.elements.name.focus();
      } }, "Edit"))),
    save: (data) => put(`/api/products/${encodeURIComponent(data.product_id.trim())}`,
      { name: data.name, price_cents: Number(data.price_cents), stock: Number(data.stock) }),
  });
}

/** `#/admin/customers`: customers and their credit. */
export function customers(main, _params, ctx) {
  if (!ctx.requireAdmin()) return;
  adminPage(main, {
    title: "Customers",
    kind: "customer",
    fields: [
      ["Customer id", { name: "customer_id", required: true, placeholder: "c-new", maxlength: 128 }],
      ["Name", { name: "name", required: true, maxlength: 200 }],
      ["Credit limit (cents)", { name: "credit_limit_cents", type: "number", min: 0, required: true }],
    ],
    columns: ["Customer", "Name", "Credit limit", "Used", "Available", ""],
    fetchRows: async () => (await get("/api/customers")).customers,
    row: (c) => h("tr", { "data-customer": c.customer_id },
      h("td", {}, c.customer_id), h("th", { scope: "row" }, c.name), h("td", {}, money(c.credit_limit_cents)),
      h("td", {}, money(c.used_cents)), h("td", {}, money(c.available_cents)),
      h("td", {}, h("a", { href: `#/admin/sagas?customer=${encodeURIComponent(c.customer_id)}`, class: "btn btn-ghost" }, "Sagas"))),
    save: (data) => post("/api/customers",
      { customer_id: data.customer_id.trim(), name: data.name, credit_limit_cents: Number(data.credit_limit_cents) }),
  });
}
