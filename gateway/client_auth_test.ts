import assert from "node:assert/strict";
import { LogThrottle } from "./client_auth.ts";

Deno.test("LogThrottle: at most N lines a window, then one count of what it skipped", () => {
  let now = 0;
  const t = new LogThrottle({ perWindow: 3, windowMs: 1_000, now: () => now });
  const first = Array.from({ length: 1_000 }, () => t.take());
  assert.equal(first.filter((x) => x.log).length, 3, "a flood logs only the first 3 lines");
  assert.ok(first.every((x) => x.skipped === 0));
  now = 1_000;
  assert.deepEqual(t.take(), { log: true, skipped: 997 }, "the next window reports the skips");
  assert.deepEqual(t.take(), { log: true, skipped: 0 });
});
