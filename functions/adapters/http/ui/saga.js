// An order's saga as people read it: each event a step with its time and
// the latency since the previous one, failures with a readable reason,
// compensations marked. Shared by the shop's order page and the console.

import { h, fill, money, duration } from "./dom.js";

/** Every event of the saga: label, kind, and a note from its data. */
export const EVENTS = {
  "orders.evt.created": ["Order placed", "step", (d) => `${d.items?.length ?? 0} line(s)`],
  "inventory.evt.reserved": ["Stock reserved", "step", (d) => `total ${money(d.total_cents)}`],
  "customers.evt.credit_reserved": ["Credit held", "step", (d) => money(d.amount_cents)],
  "payments.evt.executed": ["Payment charged", "step", (d) => `${money(d.amount_cents)} · ${d.payment_id}`],
  "shipping.evt.scheduled": ["Shipped", "step", (d) => `shipment ${d.shipment_id} with ${d.worker}`],
  "shipping.evt.informed": ["Delivered to the courier", "step", (d) => `${d.worker} accepted ${d.shipment_id}`],
  "orders.evt.completed": ["Completed", "end-ok", () => ""],
  "inventory.evt.consumed": ["Stock taken from the shelf", "after", () => ""],
  "loyalty.evt.points_awarded": ["Loyalty points awarded", "after", (d) => `+${d.points} (balance ${d.balance})`],
  "inventory.evt.reservation_failed": ["Out of stock", "failure", (d) => d.reason],
  "customers.evt.credit_rejected": ["Credit refused", "failure", (d) => d.reason],
  "payments.evt.failed": ["Payment declined", "failure", (d) => d.reason],
  "shipping.evt.failed": ["Shipping failed", "failure", (d) => d.reason],
  "orders.evt.failed": ["Failed", "end-bad", (d) => d.reason],
  "orders.evt.cancel_requested": ["Cancel requested", "step", (d) => d.reason ?? ""],
  "shipping.evt.canceled": ["Shipment stopped", "step", () => "nothing had left the warehouse"],
  "orders.evt.cancel_refused": ["Cancel refused", "failure", (d) => d.reason],
  "orders.evt.canceled": ["Canceled", "end-bad", (d) => d.reason ?? ""],
  "orders.evt.deadline_passed": ["Deadline reached", "after", (d) => `${d.waiting_for === "saga" ? "the order" : d.waiting_for} had ${wait(d.after_ms)}`],
  "orders.evt.deadline_canceled": ["Deadline cleared", "after", (d) => `${d.waiting_for} deadline no longer pending`],
  "inventory.evt.released": ["Stock released", "compensation", () => "the reserved units are back on sale"],
  "customers.evt.credit_released": ["Credit released", "compensation", (d) => money(d.amount_cents)],
  "payments.evt.refunded": ["Payment refunded", "compensation", (d) => money(d.amount_cents)],
  "loyalty.evt.points_revoked": ["Loyalty points revoked", "compensation", (d) => `−${d.points ?? ""}`],
};

function wait(ms) {
  return ms % 60000 === 0 ? `${ms / 60000} min` : `${(ms / 1000).toFixed(ms % 1000 ? 1 : 0)} s`;
}

/** The happy path, for "what comes next". */
export const HAPPY_PATH = [
  "orders.evt.created",
  "inventory.evt.reserved",
  "customers.evt.credit_reserved",
  "payments.evt.executed",
  "shipping.evt.scheduled",
  "shipping.evt.informed",
  "orders.evt.completed",
];

const TERMINAL = ["orders.evt.completed", "orders.evt.failed", "orders.evt.canceled"];

/** Statuses in which a cancel may still succeed (nothing shipped yet). */
export const CANCELABLE = ["pending", "stock_reserved", "credit_reserved", "paid"];

/** Why an order failed, in a person's words, from the step that refused. */
export function failureTitle(step, reason = "") {
  if (/did not (answer|end) within/.test(reason)) return "Timed out";
  if (step === "inventory" || /stock/i.test(reason)) return "Out of stock";
  if (step === "customer" || /credit/i.test(reason)) return "Not enough credit";
  if (step === "payment" || /payment|declin/i.test(reason)) return "Payment declined";
  if (step === "shipping" || /deliver|ship/i.test(reason)) return "Shipping failed";
  return "The order failed";
}

/**
 * Follows an order live: `onEvent({seq, type, at, data, envelope})` for each
 * event once, in order, then `onEnd()`. Returns a function that stops.
 */
export function follow(orderId, onEvent, onEnd) {
  const seen = new Set();
  const source = new EventSource(`/api/orders/${encodeURIComponent(orderId)}/events`);
  const handle = (message) => {
    if (seen.has(message.lastEventId)) return;
    seen.add(message.lastEventId);
    let envelope;
    try {
      envelope = JSON.parse(message.data);
    } catch {
      return;
    }
    onEvent({
      seq: Number(message.lastEventId),
      type: envelope.type ?? message.type,
      at: envelope.occurred_at,
      data: envelope.data ?? {},
      envelope,
    });
  };
  for (const type of Object.keys(EVENTS)) source.addEventListener(type, handle);
  source.addEventListener("end", () => {
    source.close();
    onEnd?.();
  });
  return () => source.close();
}

/** A timeline that fills in as events arrive. */
export class Timeline {
  constructor({ showJson = false } = {}) {
    this.events = [];
    this.showJson = showJson;
    this.list = h("ol", { class: "timeline", "aria-label": "Saga timeline" });
    this.next = h("p", { class: "timeline-next muted" });
    this.el = h("div", { class: "timeline-box" }, this.list, this.next);
    this.render();
  }

  add(event) {
    this.events.push(event);
    this.events.sort((a, b) => a.seq - b.seq);
    this.render();
  }

  get ended() {
    return this.events.find((e) => TERMINAL.includes(e.type));
  }

  get compensations() {
    return this.events.filter((e) => EVENTS[e.type]?.[1] === "compensation");
  }

  render() {
    let previous = null;
    const first = this.events[0] ? Date.parse(this.events[0].at) : null;
    fill(
      this.list,
      this.events.map((event) => {
        const [label, kind, note] = EVENTS[event.type] ?? [event.type, "step", () => ""];
        const at = Date.parse(event.at);
        const since = previous === null ? null : at - previous;
        previous = at;
        return h(
          "li",
          { class: `tl tl-${kind}`, "data-event": event.type },
          h("span", { class: "tl-dot", "aria-hidden": "true" }),
          h(
            "div",
            { class: "tl-body" },
            h("div", { class: "tl-head" }, h("strong", {}, label), kind === "compensation" ? h("span", { class: "tag" }, "compensation") : null),
            note(event.data) ? h("p", { class: "tl-note" }, note(event.data)) : null,
            h(
              "p",
              { class: "tl-time" },
              h("time", { datetime: event.at }, new Date(event.at).toLocaleTimeString("en-US", { hour12: false, hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3 })),
              since === null ? "" : ` · +${duration(since)}`,
              first !== null && since !== null ? ` · ${duration(at - first)} in` : "",
            ),
            this.showJson
              ? h("details", { class: "tl-json" }, h("summary", {}, "Event JSON"), h("pre", { tabindex: 0, "aria-label": `${event.type} as JSON` }, JSON.stringify(event.envelope, null, 2)))
              : null,
          ),
        );
      }),
    );
    if (this.ended) {
      this.next.textContent = "";
      this.next.hidden = true;
    } else {
      const reached = new Set(this.events.map((e) => e.type));
      const upcoming = HAPPY_PATH.find((type) => !reached.has(type));
      this.next.hidden = false;
      this.next.textContent = upcoming && !reached.has("orders.evt.cancel_requested")
        ? `Next: ${EVENTS[upcoming][0].toLowerCase()}…`
        : "Waiting for the saga…";
    }
  }
}
