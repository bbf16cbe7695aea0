// DOM helpers: elements are built with text nodes, never from HTML strings,
// so nothing a user typed (a name, a reason, a payload) can run as markup.

/** An element: h("a", {href: "#/"}, "text", child, ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** $12.34 from cents. */
export function money(cents) {
  if (cents === undefined || cents === null) return "—";
  return (cents / 100).toLocaleString("en-US", { style: "currency", currency: "USD" });
}

/** A date and time a person reads. */
export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return date.toLocaleString("en-US", { dateStyle: "medium", timeStyle: "medium" });
}

/** Milliseconds, short: 3.2 ms, 1.4 s. */
export function duration(ms) {
  if (ms === undefined || ms === null || Number.isNaN(ms)) return "";
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
  return `${(ms / 1000).toFixed(1)} s`;
}

/** A short-lived message in the live region. */
export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const item = h("div", { class: `toast toast-${kind}` }, message);
  box.append(item);
  setTimeout(() => item.remove(), 5000);
}

/** A labelled form field; returns [wrapper, input]. */
export function field(label, attrs = {}, hint) {
  const id = attrs.id ?? `f-${attrs.name}`;
  const input = attrs.options
    ? h("select", { ...attrs, options: undefined, id }, attrs.options.map(([value, text]) => h("option", { value }, text)))
    : h("input", { ...attrs, id });
  const error = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
  input.setAttribute("aria-describedby", `${id}-error`);
  const wrapper = h("div", { class: "field" }, h("label", { for: id }, label), input, hint ? h("p", { class: "hint" }, hint) : null, error);
  return [wrapper, input];
}

/** Shows an API error at the field it names, or above the form. */
export function showError(form, error) {
  for (const el of form.querySelectorAll(".field-error")) el.hidden = true;
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  const input = error.field ? form.querySelector(`[name="${CSS.escape(error.field)}"]`) : null;
  if (input) {
    const box = document.getElementById(`${input.id}-error`);
    box.textContent = error.message;
    box.hidden = false;
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }
  const top = form.querySelector(".form-error");
  if (top) {
    top.textContent = input ? "" : error.message;
    top.hidden = !!input;
  }
}

/** A status badge. */
export function badge(status) {
  const text = String(status).replace(/_/g, " ");
  return h("span", { class: `badge badge-${status}` }, text);
}

/** A loading placeholder. */
export function loading(what = "Loading") {
  return h("p", { class: "muted loading" }, `${what}…`);
}
