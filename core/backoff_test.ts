import assert from "node:assert/strict";
import { Backoff, sleep } from "./backoff.ts";

Deno.test("backoff doubles up to its cap and resets", () => {
  const b = new Backoff({ initialMs: 100, maxMs: 2_000 });
  assert.deepEqual(Array.from({ length: 7 }, () => b.next()), [
    100,
    200,
    400,
    800,
    1600,
    2000,
    2000,
  ]);
  assert.equal(b.attempts, 7);
  b.reset();
  assert.equal(b.next(), 100);
});

Deno.test("jitter stays within the spread around each step", () => {
  const low = new Backoff({ initialMs: 1_000, maxMs: 30_000, jitter: 0.2, random: () => 0 });
  const high = new Backoff({
    initialMs: 1_000,
    maxMs: 30_000,
    jitter: 0.2,
    random: () => 0.999999,
  });
  assert.deepEqual([low.next(), low.next(), low.next()], [800, 1600, 3200]);
  assert.deepEqual([high.next(), high.next(), high.next()], [1200, 2400, 4800]);
});

Deno.test("bad backoff settings are refused", () => {
  assert.throws(() => new Backoff({ initialMs: 0, maxMs: 1 }), RangeError);
  assert.throws(() => new Backoff({ initialMs: 5, maxMs: 1 }), RangeError);
  assert.throws(() => new Backoff({ initialMs: 1, maxMs: 2, jitter: 2 }), RangeError);
});

Deno.test("sleep resolves after its delay and rejects at once when aborted", async () => {
  const t0 = Date.now();
  await sleep(20);
  assert.ok(Date.now() - t0 >= 15);
  const ctl = new AbortController();
  const p = sleep(10_000, ctl.signal);
  ctl.abort(new Error("stop"));
  await assert.rejects(p, /stop/);
  await assert.rejects(sleep(1, AbortSignal.abort(new Error("early"))), /early/);
});
