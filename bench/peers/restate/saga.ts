// The jetsaga benchmark's saga on Restate (TypeScript SDK): the order is a
// workflow that calls four virtual objects in turn (stock per product,
// credit per customer, payment and shipping per order) and, when a step
// refuses, runs the compensations of the steps before it in reverse. Each
// object's state is kept by Restate, so every step is durable in Restate's
// log before the workflow moves on, as every jetsaga step is in its store.
import * as restate from "@restatedev/restate-sdk";

// The SDK uses Promise.withResolvers (Node.js 22+); the machine has Node.js 20.
if (!("withResolvers" in Promise)) {
  Object.assign(Promise, {
    withResolvers<T>() {
      let resolve!: (value: T) => void;
      let reject!: (reason?: unknown) => void;
      const promise = new Promise<T>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      return { promise, resolve, reject };
    },
  });
}

type Line = { product_id: string; quantity: number };
type Order = { customer_id: string; items: Line[]; prices: Record<string, number> };

const inventory = restate.object({
  name: "inventory",
  handlers: {
    set: async (ctx: restate.ObjectContext, stock: number) => {
      ctx.set("stock", stock);
      ctx.set("reserved", 0);
    },
    get: async (ctx: restate.ObjectContext) => ({
      stock: (await ctx.get<number>("stock")) ?? 0,
      reserved: (await ctx.get<number>("reserved")) ?? 0,
      consumed: (await ctx.get<number>("consumed")) ?? 0,
    }),
    reserve: async (ctx: restate.ObjectContext, quantity: number) => {
      const stock = (await ctx.get<number>("stock")) ?? 0;
      if (stock < quantity) throw new restate.TerminalError(`only ${stock} of ${ctx.key} left`);
      ctx.set("stock", stock - quantity);
      ctx.set("reserved", ((await ctx.get<number>("reserved")) ?? 0) + quantity);
    },
    release: async (ctx: restate.ObjectContext, quantity: number) => {
      ctx.set("stock", ((await ctx.get<number>("stock")) ?? 0) + quantity);
      ctx.set("reserved", ((await ctx.get<number>("reserved")) ?? 0) - quantity);
    },
    consume: async (ctx: restate.ObjectContext, quantity: number) => {
      ctx.set("reserved", ((await ctx.get<number>("reserved")) ?? 0) - quantity);
      ctx.set("consumed", ((await ctx.get<number>("consumed")) ?? 0) + quantity);
    },
  },
});

const customer = restate.object({
  name: "customer",
  handlers: {
    create: async (ctx: restate.ObjectContext, limit: number) => {
      ctx.set("limit", limit);
      ctx.set("used", 0);
    },
    reserve: async (ctx: restate.ObjectContext, amount: number) => {
      const limit = (await ctx.get<number>("limit")) ?? 0;
      const used = (await ctx.get<number>("used")) ?? 0;
      if (used + amount > limit) throw new restate.TerminalError(`credit limit of ${ctx.key} reached`);
      ctx.set("used", used + amount);
    },
    release: async (ctx: restate.ObjectContext, amount: number) => {
      ctx.set("used", ((await ctx.get<number>("used")) ?? 0) - amount);
    },
  },
});

const payment = restate.object({
  name: "payment",
  handlers: {
    execute: async (ctx: restate.ObjectContext, amount: number) => {
      // jetsaga's payment rule: an amount ending in 99 cents is declined.
      if (amount % 100 === 99) throw new restate.TerminalError("declined");
      ctx.set("charged", amount);
    },
    refund: async (ctx: restate.ObjectContext) => {
      ctx.set("refunded", (await ctx.get<number>("charged")) ?? 0);
    },
  },
});

const shipping = restate.object({
  name: "shipping",
  handlers: {
    schedule: async (ctx: restate.ObjectContext, lines: Line[]) => {
      ctx.set("lines", lines);
    },
  },
});

const order = restate.workflow({
  name: "order",
  handlers: {
    run: async (ctx: restate.WorkflowContext, order: Order) => {
      const undo: (() => Promise<unknown>)[] = [];
      let total = 0;
      try {
        for (const line of order.items) {
          await ctx.objectClient(inventory, line.product_id).reserve(line.quantity);
          undo.push(() => ctx.objectClient(inventory, line.product_id).release(line.quantity));
          total += order.prices[line.product_id] * line.quantity;
        }
        await ctx.objectClient(customer, order.customer_id).reserve(total);
        undo.push(() => ctx.objectClient(customer, order.customer_id).release(total));
        await ctx.objectClient(payment, ctx.key).execute(total);
        undo.push(() => ctx.objectClient(payment, ctx.key).refund());
        await ctx.objectClient(shipping, ctx.key).schedule(order.items);
      } catch (e) {
        if (!(e instanceof restate.TerminalError)) throw e;
        for (const step of undo.reverse()) await step();
        return { outcome: "failed", reason: e.message };
      }
      // As jetsaga's inventory does once an order completes: the reservation is used up.
      for (const line of order.items) ctx.objectSendClient(inventory, line.product_id).consume(line.quantity);
      return { outcome: "completed", total_cents: total };
    },
  },
});

restate
  .endpoint()
  .bind(inventory)
  .bind(customer)
  .bind(payment)
  .bind(shipping)
  .bind(order)
  .listen(Number(process.env.PORT ?? 9080));
