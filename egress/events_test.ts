import assert from "node:assert/strict";
import type { EgressEvent } from "../core/protocol.ts";
import { EventHub, MAX_SUBSCRIBERS } from "./events.ts";

function hub(now: () => number) {
  const h = new EventHub({ perSecond: 3, now, productVersion: "t" });
  const got: EgressEvent[] = [];
  let open = true;
  const sub = h.subscribe((e) => {
    got.push(e);
    return open;
  })!;
  return { h, got, sub, block: () => open = false, unblock: () => (open = true, sub.ready()) };
}

Deno.test("events: a per-sandbox budget, dropped counted into the next event", () => {
  let t = 0;
  const { h, got } = hub(() => t);
  const ev = (sandboxId: string, host = "h") =>
    h.publish({ sandboxId, decision: "denied", host, port: 1 });
  assert.deepEqual([ev("a"), ev("a"), ev("a"), ev("a"), ev("a"), ev("b")], [
    true,
    true,
    true,
    false,
    false,
    true,
  ]);
  t += 1000;
  assert.equal(ev("a", "later"), true);
  assert.deepEqual(got.map((e) => [e.sandbox_id, e.dropped]), [["a", 0], ["a", 0], ["a", 0], [
    "b",
    0,
  ], ["a", 2]]);
  assert.equal(h.stats.dropped, 2);
  assert.equal(got[0].policy_name, "");
  assert.equal(JSON.parse(got[0].ocsf_json).metadata.product.version, "t");
});

Deno.test("events: a subscriber that cannot keep up is skipped and told how many it missed", () => {
  let t = 0;
  const { h, got, block, unblock } = hub(() => t);
  h.publish({ sandboxId: "a", decision: "allowed", host: "x", port: 1 });
  block();
  h.publish({ sandboxId: "a", decision: "allowed", host: "x", port: 2 }); // delivered, then blocked
  h.publish({ sandboxId: "a", decision: "allowed", host: "x", port: 3 }); // skipped
  t += 1000;
  h.publish({ sandboxId: "a", decision: "allowed", host: "x", port: 4 }); // skipped
  unblock();
  h.publish({ sandboxId: "a", decision: "allowed", host: "x", port: 5 });
  assert.deepEqual(got.map((e) => [e.port, e.dropped]), [[1, 0], [2, 0], [5, 2]]);
});

Deno.test("events: at most MAX_SUBSCRIBERS watchers", () => {
  const h = new EventHub();
  const subs = Array.from({ length: MAX_SUBSCRIBERS }, () => h.subscribe(() => true));
  assert.ok(subs.every((s) => s));
  assert.equal(h.subscribe(() => true), undefined);
  subs[0]!.close();
  assert.ok(h.subscribe(() => true));
});
