// The web UI's entry: who is signed in, the navigation, and a router on
// the URL's fragment (#/orders/o-1), so that links and reloads keep the page.

import { me, del } from "./api.js";
import { h, fill, toast } from "./dom.js";
import * as shop from "./shop.js";
import * as ops from "./console.js";

const routes = [
  [/^\/$/, shop.catalog, "Catalog"],
  [/^\/login$/, shop.login, "Log in"],
  [/^\/signup$/, shop.signup, "Create an account"],
  [/^\/cart$/, shop.cart, "Cart"],
  [/^\/orders$/, shop.myOrders, "My orders"],
  [/^\/orders\/(?<id>[^/]+)$/, shop.orderPage, "Order"],
  [/^\/admin$/, ops.overview, "Operations"],
  [/^\/admin\/sagas$/, ops.sagas, "Sagas"],
  [/^\/admin\/sagas\/(?<id>[^/]+)$/, ops.saga, "Saga"],
  [/^\/admin\/dlq$/, ops.deadLetters, "Dead letters"],
  [/^\/admin\/products$/, ops.products, "Products"],
  [/^\/admin\/customers$/, ops.customers, "Customers"],
];

const ctx = {
  user: null,
  cart: new shop.Cart(null),
  async refreshUser() {
    ctx.user = await me();
    ctx.cart = new shop.Cart(ctx.user);
    renderNav();
  },
  requireUser() {
    if (ctx.user) return true;
    toast("Log in first");
    location.hash = "#/login";
    return false;
  },
  requireAdmin() {
    if (!ctx.requireUser()) return false;
    if (ctx.user.role === "admin") return true;
    fill(document.getElementById("main"), h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, "Administrators only")),
      h("p", { class: "notice notice-bad" }, "The operations console needs an administrator (jetsaga users grant-admin <email>)."));
    return false;
  },
};

function renderNav() {
  const nav = document.getElementById("nav");
  const here = location.hash || "#/";
  const link = (href, text, extra = {}) =>
    h("a", { href, "aria-current": here === href || (href !== "#/" && here.startsWith(`${href}/`)) ? "page" : undefined, ...extra }, text);
  const count = ctx.cart.count;
  if (!ctx.user) {
    fill(nav, link("#/", "Catalog"), link("#/login", "Log in"), link("#/signup", "Sign up", { class: "btn btn-primary btn-sm" }));
    return;
  }
  fill(nav,
    link("#/", "Catalog"),
    link("#/orders", "My orders"),
    ctx.user.role === "admin" ? link("#/admin", "Console") : null,
    link("#/cart", h("span", {}, "Cart", h("span", { class: "count", id: "cart-count", "aria-label": `${count} items` }, String(count)))),
    h("span", { class: "who", title: ctx.user.email }, ctx.user.name),
    h("button", { class: "btn btn-ghost btn-sm", type: "button", onclick: logOut }, "Log out"));
}

async function logOut() {
  try {
    await del("/api/session");
  } catch {
    // The cookie is cleared either way once the token expires; say nothing.
  }
  await ctx.refreshUser();
  toast("Logged out");
  location.hash = "#/";
}

let cleanup = null;

async function route() {
  if (typeof cleanup === "function") cleanup();
  cleanup = null;
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, search] = hash.split("?");
  const main = document.getElementById("main");
  renderNav();
  for (const [pattern, view, title] of routes) {
    const match = pattern.exec(path);
    if (!match) continue;
    const params = { ...(match.groups ?? {}), query: new URLSearchParams(search ?? "") };
    if (params.id) params.id = decodeURIComponent(params.id);
    document.title = `${title} · jetsaga`;
    const result = view(main, params, ctx);
    cleanup = result instanceof Promise ? null : result;
    if (result instanceof Promise) {
      const token = (route.token = {});
      result.then((c) => {
        if (route.token === token) cleanup = c;
        else if (typeof c === "function") c();
      });
    }
    main.querySelector("h1")?.focus({ preventScroll: false });
    return;
  }
  document.title = "Not found · jetsaga";
  fill(main, h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, "Page not found")), h("p", {}, h("a", { href: "#/" }, "Back to the catalog")));
}

window.addEventListener("hashchange", route);
document.addEventListener("cart", renderNav);
await ctx.refreshUser().catch(() => {});
route();
