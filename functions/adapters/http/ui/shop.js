// The shop: sign up, log in, the catalog with live stock, the cart,
// checkout, my orders, and an order's saga live.

import { get, post, query, ApiError } from "./api.js";
import { h, fill, money, when, toast, field, showError, badge, loading } from "./dom.js";
import { Timeline, follow, failureTitle, CANCELABLE, EVENTS } from "./saga.js";

/** The cart, kept in this browser per user: {product_id: quantity}. */
export class Cart {
  constructor(user) {
    this.key = `jetsaga.cart.${user?.user_id ?? "guest"}`;
    try {
      this.lines = JSON.parse(localStorage.getItem(this.key) ?? "{}");
    } catch {
      this.lines = {};
    }
  }
  save() {
    localStorage.setItem(this.key, JSON.stringify(this.lines));
    document.dispatchEvent(new CustomEvent("cart"));
  }
  add(productId, quantity = 1) {
    this.lines[productId] = Math.min(999, (this.lines[productId] ?? 0) + quantity);
    this.save();
  }
  set(productId, quantity) {
    if (quantity > 0) this.lines[productId] = Math.min(999, quantity);
    else delete this.lines[productId];
    this.save();
  }
  clear() {
    this.lines = {};
    this.save();
  }
  get count() {
    return Object.values(this.lines).reduce((a, b) => a + b, 0);
  }
  get items() {
    return Object.entries(this.lines).map(([product_id, quantity]) => ({ product_id, quantity }));
  }
}

function heading(text, ...rest) {
  return h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, text), ...rest);
}

/** `#/`: the catalog, its stock refreshed every two seconds. */
export function catalog(main, _params, ctx) {
  const grid = h("ul", { class: "products", "aria-label": "Products" });
  const updated = h("span", { class: "live-dot", "aria-hidden": "true" });
  fill(main, heading("Catalog", h("p", { class: "muted" }, updated, " Stock updates live")), grid);
  grid.append(loading("Loading the catalog"));
  const cards = new Map();
  const refresh = async () => {
    let list;
    try {
      list = await get("/api/products");
    } catch (e) {
      fill(grid, h("li", { class: "notice notice-bad" }, e.message));
      return;
    }
    if (!cards.size) grid.replaceChildren();
    for (const product of [...list.products].sort((a, b) => a.name.localeCompare(b.name))) {
      let card = cards.get(product.product_id);
      if (!card) {
        const stock = h("p", { class: "stock", "data-stock": product.product_id });
        const add = h("button", { class: "btn btn-primary", type: "button", onclick: () => addToCart(product) }, "Add to cart");
        card = { stock, add, el: h("li", { class: "product", "data-product": product.product_id },
          h("div", { class: "product-art", "aria-hidden": "true" }, product.name.slice(0, 1)),
          h("h2", { class: "product-name" }, product.name),
          h("p", { class: "price" }, money(product.price_cents)),
          stock, add) };
        cards.set(product.product_id, card);
        grid.append(card.el);
      }
      card.stock.textContent = product.stock > 0 ? `${product.stock} in stock` : "Out of stock";
      card.stock.className = `stock ${product.stock === 0 ? "stock-out" : product.stock < 5 ? "stock-low" : ""}`;
      card.stock.dataset.units = String(product.stock);
      card.add.setAttribute("aria-label", `Add to cart: ${product.name}`);
    }
  };
  const addToCart = (product) => {
    if (!ctx.user) {
      toast("Log in to shop");
      location.hash = "#/login";
      return;
    }
    ctx.cart.add(product.product_id);
    toast(`${product.name} added to the cart`, "ok");
  };
  refresh();
  const timer = setInterval(refresh, 2000);
  return () => clearInterval(timer);
}

/** `#/login`. */
export function login(main, _params, ctx) {
  const [email, emailInput] = field("Email", { name: "email", type: "email", autocomplete: "username", required: true });
  const [password] = field("Password", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const form = h("form", { class: "card form", novalidate: true },
    h("p", { class: "form-error notice notice-bad", role: "alert", hidden: true }),
    email, password,
    h("button", { class: "btn btn-primary", type: "submit" }, "Log in"),
    h("p", { class: "muted" }, "New here? ", h("a", { href: "#/signup" }, "Create an account")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    try {
      await post("/api/session", data);
      await ctx.refreshUser();
      toast("Welcome back", "ok");
      location.hash = "#/";
    } catch (e) {
      showError(form, e);
    }
  });
  fill(main, heading("Log in"), form);
  emailInput.focus();
}

/** `#/signup`. */
export function signup(main, _params, ctx) {
  const [name, nameInput] = field("Name", { name: "name", autocomplete: "name", required: true, maxlength: 200 });
  const [email] = field("Email", { name: "email", type: "email", autocomplete: "email", required: true });
  const [password] = field("Password", { name: "password", type: "password", autocomplete: "new-password", required: true, minlength: 8 }, "At least 8 characters.");
  const form = h("form", { class: "card form", novalidate: true },
    h("p", { class: "form-error notice notice-bad", role: "alert", hidden: true }),
    name, email, password,
    h("button", { class: "btn btn-primary", type: "submit" }, "Create account"),
    h("p", { class: "muted" }, "Have an account? ", h("a", { href: "#/login" }, "Log in")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await post("/api/users", data);
      await post("/api/session", { email: data.email, password: data.password });
      await ctx.refreshUser();
      toast(`Welcome, ${data.name}`, "ok");
      location.hash = "#/";
    } catch (e) {
      showError(form, e);
    } finally {
      button.disabled = false;
    }
  });
  fill(main, heading("Create an account"), form);
  nameInput.focus();
}

/** `#/cart`: the lines, the total, checkout. */
export async function cart(main, _params, ctx) {
  if (!ctx.requireUser()) return;
  fill(main, heading("Your cart"), loading());
  let products;
  try {
    products = new Map((await get("/api/products")).products.map((p) => [p.product_id, p]));
  } catch (e) {
    fill(main, heading("Your cart"), h("p", { class: "notice notice-bad" }, e.message));
    return;
  }
  const render = () => {
    const items = ctx.cart.items.filter((i) => products.has(i.product_id));
    if (!items.length) {
      fill(main, heading("Your cart"), h("div", { class: "card empty" }, h("p", {}, "Your cart is empty."), h("a", { class: "btn", href: "#/" }, "Browse the catalog")));
      return;
    }
    const total = items.reduce((sum, i) => sum + products.get(i.product_id).price_cents * i.quantity, 0);
    const rows = items.map((item) => {
      const product = products.get(item.product_id);
      const qty = h("input", { type: "number", min: 0, max: 999, value: item.quantity, id: `qty-${item.product_id}`, class: "qty", name: `qty-${item.product_id}` });
      qty.addEventListener("change", () => {
        ctx.cart.set(item.product_id, Math.max(0, Math.floor(Number(qty.value) || 0)));
        render();
      });
      return h("tr", { "data-line": item.product_id },
        h("th", { scope: "row" }, product.name),
        h("td", {}, money(product.price_cents)),
        h("td", {}, h("label", { class: "sr-only", for: qty.id }, `Quantity of ${product.name}`), qty),
        h("td", { class: "num" }, money(product.price_cents * item.quantity)),
        h("td", {}, h("button", { class: "btn btn-ghost", type: "button", "aria-label": `Remove ${product.name}`, onclick: () => { ctx.cart.set(item.product_id, 0); render(); } }, "Remove")));
    });
    const error = h("p", { class: "notice notice-bad", role: "alert", hidden: true });
    const checkout = h("button", { class: "btn btn-primary btn-lg", type: "button" }, `Place order · ${money(total)}`);
    checkout.addEventListener("click", async () => {
      checkout.disabled = true;
      // One key per checkout: a double click or a retry makes one order.
      ctx.cart.checkoutKey ??= crypto.randomUUID();
      try {
        const accepted = await post("/api/orders", { items }, { "Idempotency-Key": ctx.cart.checkoutKey });
        ctx.cart.checkoutKey = undefined;
        ctx.cart.clear();
        location.hash = `#/orders/${encodeURIComponent(accepted.order_id)}`;
      } catch (e) {
        error.textContent = e.message;
        error.hidden = false;
        checkout.disabled = false;
      }
    });
    fill(main, heading("Your cart"),
      h("div", { class: "card" },
        h("table", { class: "table" },
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Product"), h("th", { scope: "col" }, "Price"), h("th", { scope: "col" }, "Quantity"), h("th", { scope: "col", class: "num" }, "Subtotal"), h("td", {}))),
          h("tbody", {}, rows),
          h("tfoot", {}, h("tr", {}, h("th", { scope: "row", colspan: 3 }, "Total"), h("td", { class: "num total" }, money(total)), h("td", {})))),
        error,
        h("div", { class: "actions" }, h("a", { class: "btn", href: "#/" }, "Keep shopping"), checkout)));
  };
  render();
}

/** `#/orders`: the caller's orders, newest first, refreshed while any is in flight. */
export function myOrders(main, _params, ctx) {
  if (!ctx.requireUser()) return;
  const status = h("select", { id: "order-status", name: "status" },
    [["", "All"], ["completed", "Completed"], ["failed", "Failed"], ["canceled", "Canceled"], ["pending", "Pending"], ["paid", "Paid"], ["shipped", "Shipped"]].map(([v, t]) => h("option", { value: v }, t)));
  const list = h("div", { class: "card" }, loading());
  const pager = h("div", { class: "actions" });
  let cursors = [undefined];
  let timer;
  const load = async () => {
    clearTimeout(timer);
    let page;
    try {
      page = await get(`/api/orders${query({ status: status.value, limit: 10, after: cursors.at(-1) })}`);
    } catch (e) {
      fill(list, h("p", { class: "notice notice-bad" }, e.message));
      return;
    }
    fill(list, page.orders.length ? ordersTable(page.orders, false) : h("p", { class: "empty" }, "No orders yet. ", h("a", { href: "#/" }, "Start shopping")));
    fill(pager,
      cursors.length > 1 ? h("button", { class: "btn", type: "button", onclick: () => { cursors.pop(); load(); } }, "Newer") : null,
      page.next ? h("button", { class: "btn", type: "button", onclick: () => { cursors.push(page.next); load(); } }, "Older") : null);
    if (page.orders.some((o) => !["completed", "failed", "canceled"].includes(o.status))) timer = setTimeout(load, 1500);
  };
  status.addEventListener("change", () => { cursors = [undefined]; load(); });
  fill(main, heading("My orders", h("div", { class: "filters" }, h("label", { for: "order-status" }, "Status"), status)), list, pager);
  load();
  return () => clearTimeout(timer);
}

/** A table of order summaries (the shop's and the console's). */
export function ordersTable(orders, admin) {
  const link = (id) => (admin ? `#/admin/sagas/${encodeURIComponent(id)}` : `#/orders/${encodeURIComponent(id)}`);
  return h("table", { class: "table" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Order"), admin ? h("th", { scope: "col" }, "Customer") : null, h("th", { scope: "col" }, "Placed"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col", class: "num" }, "Total"))),
    h("tbody", {}, orders.map((o) => h("tr", { "data-order": o.order_id },
      h("td", {}, h("a", { href: link(o.order_id) }, o.order_id)),
      admin ? h("td", {}, o.customer_id) : null,
      h("td", {}, when(o.created_at)),
      h("td", {}, badge(o.status), o.reason ? h("span", { class: "reason" }, o.reason) : null),
      h("td", { class: "num" }, money(o.total_cents))))));
}

/** `#/orders/:id`: the order, its saga filling in live, cancel while possible. */
export async function orderPage(main, params, ctx) {
  if (!ctx.requireUser()) return;
  return sagaView(main, params.id, { admin: false });
}

/** The order page's body, for the shop and (with `admin`) the console. */
export async function sagaView(main, orderId, { admin }) {
  fill(main, loading("Loading the order"));
  let order;
  try {
    order = await get(`/api/orders/${encodeURIComponent(orderId)}`);
  } catch (e) {
    fill(main, h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, "Order not found")), h("p", { class: "notice notice-bad" }, e.status === 404 ? `There is no order ${orderId} for you to see.` : e.message));
    return;
  }
  const timeline = new Timeline({ showJson: admin });
  const statusBadge = h("span", { id: "order-status-badge" }, badge(order.status));
  const outcome = h("div", { class: "outcome", "aria-live": "polite" });
  const cancelBox = h("div", { class: "actions" });
  const summary = h("dl", { class: "facts" },
    h("dt", {}, "Order"), h("dd", {}, order.order_id),
    h("dt", {}, "Customer"), h("dd", {}, order.customer_id),
    h("dt", {}, "Items"), h("dd", {}, order.items.map((i) => `${i.quantity} × ${i.product_id}`).join(", ")),
    h("dt", {}, "Total"), h("dd", { id: "order-total" }, money(order.total_cents)));
  const refresh = async () => {
    try {
      order = await get(`/api/orders/${encodeURIComponent(orderId)}`);
    } catch {
      return;
    }
    fill(statusBadge, badge(order.status));
    document.getElementById("order-total").textContent = money(order.total_cents);
    renderOutcome();
  };
  const renderOutcome = () => {
    const failedEvent = timeline.events.find((e) => e.type === "orders.evt.failed");
    const released = timeline.compensations.map((e) => EVENTS[e.type][0]);
    if (order.status === "completed") {
      fill(outcome, h("div", { class: "notice notice-ok" }, h("strong", {}, "Completed. "), "Your order is on its way."));
    } else if (order.status === "failed") {
      fill(outcome, h("div", { class: "notice notice-bad", "data-outcome": "failed" },
        h("strong", {}, `${failureTitle(failedEvent?.data?.step, order.reason)}. `), order.reason ?? "",
        released.length ? h("p", { class: "released" }, `Released: ${released.join(", ")}.`) : h("p", { class: "released" }, "Nothing was held.")));
    } else if (order.status === "canceled") {
      fill(outcome, h("div", { class: "notice notice-warn", "data-outcome": "canceled" },
        h("strong", {}, "Canceled. "), order.reason ?? "",
        released.length ? h("p", { class: "released" }, `Released: ${released.join(", ")}.`) : null));
    } else fill(outcome);
    const cancelable = CANCELABLE.includes(order.status) && !timeline.events.some((e) => e.type === "orders.evt.cancel_requested");
    fill(cancelBox, cancelable ? h("button", { class: "btn btn-danger", type: "button", id: "cancel-order", onclick: cancel }, "Cancel order") : null);
  };
  const cancel = async () => {
    const button = document.getElementById("cancel-order");
    if (button) button.disabled = true;
    try {
      await post(`/api/orders/${encodeURIComponent(orderId)}/cancel`, { reason: admin ? "canceled by an administrator" : "canceled by the customer" });
      toast("Cancel requested", "ok");
    } catch (e) {
      toast(e.message, "bad");
      if (button) button.disabled = false;
    }
  };
  fill(main,
    h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, admin ? `Saga ${order.order_id}` : "Your order"), statusBadge),
    h("div", { class: "split" },
      h("section", { class: "card", "aria-labelledby": "tl-title" }, h("h2", { id: "tl-title" }, "Progress"), timeline.el),
      h("aside", { class: "card" }, h("h2", {}, "Details"), summary, outcome, cancelBox,
        admin ? null : h("p", {}, h("a", { href: "#/orders" }, "All my orders")))));
  renderOutcome();
  const stop = follow(orderId, (event) => {
    timeline.add(event);
    renderOutcome();
    refresh();
  }, refresh);
  return stop;
}
