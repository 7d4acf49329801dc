import assert from "node:assert/strict";
import { PolicyTable } from "./policies.ts";

Deno.test("policies: validated, versioned, capped, listed in id order", () => {
  const p = new PolicyTable({ now: () => 77, max: 2 });
  assert.deepEqual(p.apply("b", 1, null), { version: 1, policy: {}, loadedAtMs: 77 });
  p.apply("a", 5, { network_policies: { r: { endpoints: [{ host: "x.test", port: 1 }] } } });
  assert.throws(() => p.apply("c", 1, {}), /RESOURCE_EXHAUSTED|holds policies for 2 sandboxes/);
  assert.throws(() => p.apply("a", 4, {}), /older than the loaded version 5/);
  assert.throws(
    () => p.apply("a", 6, { network_policies: { r: { endpoints: [{ host: "*", port: 1 }] } } }),
    /matches every host/,
  );
  assert.equal(p.get("a")?.version, 5);
  p.apply("a", 5, {});
  assert.deepEqual(p.list(), [
    { sandbox_id: "a", version: 5, loaded_at_ms: 77 },
    { sandbox_id: "b", version: 1, loaded_at_ms: 77 },
  ]);
  assert.equal(p.remove("a"), true);
  assert.equal(p.remove("a"), false);
  p.apply("c", 1, {});
  // The stored policy is a copy: changing the caller's object changes nothing.
  const mine = { network_policies: { r: { endpoints: [{ host: "x.test", port: 1 }] } } };
  p.apply("b", 2, mine);
  mine.network_policies.r.endpoints[0].host = "evil.test";
  assert.equal(p.get("b")?.policy.network_policies?.r.endpoints?.[0].host, "x.test");
});
