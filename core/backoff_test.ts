import assert from "node:assert/strict";
import { Backoff, retryWhile, sleep } from "./backoff.ts";

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

class NotReady extends Error {}

Deno.test("retryWhile: retries a retryable failure with growing delays until it succeeds", async () => {
  let calls = 0;
  const delays: [number, number][] = [];
  const value = await retryWhile(() => {
    calls++;
    return calls < 3 ? Promise.reject(new NotReady(`try ${calls}`)) : Promise.resolve("ready");
  }, {
    initialMs: 1,
    maxMs: 8,
    maxWaitMs: 1_000,
    retryable: (e) => e instanceof NotReady,
    onRetry: (d, n) => delays.push([d, n]),
  });
  assert.equal(value, "ready");
  assert.equal(calls, 3);
  assert.deepEqual(delays, [[1, 1], [2, 2]]);
});

Deno.test("retryWhile: another failure is thrown at once", async () => {
  let calls = 0;
  await assert.rejects(
    retryWhile(() => {
      calls++;
      return Promise.reject(new Error("refused"));
    }, { initialMs: 1, maxMs: 1, maxWaitMs: 1_000, retryable: (e) => e instanceof NotReady }),
    /refused/,
  );
  assert.equal(calls, 1);
});

Deno.test("retryWhile: the last failure is thrown once the next wait would pass maxWaitMs", async () => {
  let t = 0;
  let calls = 0;
  await assert.rejects(
    retryWhile(() => {
      calls++;
      t += 5; // each attempt takes 5 ms of the injected clock
      return Promise.reject(new NotReady(`try ${calls}`));
    }, {
      initialMs: 1,
      maxMs: 4,
      maxWaitMs: 12,
      now: () => t,
      retryable: (e) => e instanceof NotReady,
    }),
    // 5 + 1 ≤ 12: retry; 10 + 2 ≤ 12: retry; 15 + 4 > 12: the third failure stands.
    /try 3/,
  );
  assert.equal(calls, 3);
});

Deno.test("retryWhile: an abort during a wait rejects with the signal's reason", async () => {
  const ctl = new AbortController();
  await assert.rejects(
    retryWhile(() => Promise.reject(new NotReady()), {
      initialMs: 60_000,
      maxMs: 60_000,
      maxWaitMs: 120_000,
      retryable: (e) => e instanceof NotReady,
      onRetry: () => ctl.abort(new Error("interrupted")),
      signal: ctl.signal,
    }),
    /interrupted/,
  );
});
