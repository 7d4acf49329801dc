import assert from "node:assert/strict";
import { LogRateLimiter, TokenBucket } from "./rate_limit.ts";

Deno.test("TokenBucket: starts full, refills at its rate, never above its burst", () => {
  let now = 0;
  const b = new TokenBucket(10, 5, () => now);
  for (let i = 0; i < 5; i++) assert.ok(b.take(), `token ${i}`);
  assert.equal(b.take(), false, "empty");
  now = 100; // 0.1 s → 1 token
  assert.ok(b.take());
  assert.equal(b.take(), false);
  now = 60_000;
  assert.equal(b.available(), 5, "capped at the burst");
  assert.equal(b.take(6), false, "more than the burst is never available");
  assert.ok(b.take(5));
});

Deno.test("LogRateLimiter: a flood is cut to the rate with one marker per resume", () => {
  let now = 0;
  const l = new LogRateLimiter({
    linesPerSec: 100,
    lineBurst: 200,
    bytesPerSec: 1e9,
    byteBurst: 1e9,
    now: () => now,
  });
  let admitted = 0;
  let markers = 0;
  let droppedTotal = 0;
  // 10 s of a flood at 10,000 lines/s, in 1 ms steps of 10 lines
  for (let ms = 0; ms < 10_000; ms++) {
    now = ms;
    for (let i = 0; i < 10; i++) {
      const a = l.admit(10);
      if (a.admit) {
        admitted++;
        if (a.dropped > 0) {
          markers++;
          droppedTotal += a.dropped;
        }
      }
    }
  }
  // burst + rate × time, give or take the hysteresis
  assert.ok(admitted <= 200 + 100 * 10, `admitted ${admitted}`);
  assert.ok(admitted >= 100 * 10 * 0.9, `admitted ${admitted}`);
  assert.ok(markers >= 5 && markers <= 11, `about one marker per second, got ${markers}`);
  assert.equal(admitted + droppedTotal + l.dropped, 100_000, "every line is admitted or counted");
});

Deno.test("LogRateLimiter: the byte budget applies too; it resumes with the count", () => {
  let now = 0;
  const l = new LogRateLimiter({
    linesPerSec: 1e6,
    lineBurst: 1e6,
    bytesPerSec: 1000,
    byteBurst: 2000,
    now: () => now,
  });
  assert.ok(l.admit(1000).admit);
  assert.ok(l.admit(1000).admit);
  assert.equal(l.admit(1).admit, false, "byte burst spent");
  assert.equal(l.admit(1).admit, false);
  now = 500; // half a second's bytes: not yet a full second's worth
  assert.equal(l.admit(1).admit, false, "hysteresis: waits for a second's budget");
  now = 1000;
  assert.deepEqual(l.admit(10), { admit: true, dropped: 3 });
  assert.deepEqual(l.admit(10), { admit: true, dropped: 0 });
  assert.match(l.droppedMessage(3, "console lines"), /^3 console lines dropped: more than /);
});
