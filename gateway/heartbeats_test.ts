import assert from "node:assert/strict";
import { HEARTBEAT_TICK_MS, HeartbeatWheel, type RepeatTimer } from "./heartbeats.ts";

/** A repeat timer driven by hand: records what runs and how often. */
interface ManualTimer {
  every: RepeatTimer;
  /** Timers started and not stopped. */
  running: number;
  /** The interval each start asked for. */
  intervals: number[];
}

function manualTimer(): ManualTimer {
  const t: ManualTimer = {
    running: 0,
    intervals: [],
    every: (_fn, ms) => {
      t.running++;
      t.intervals.push(ms);
      return () => t.running--;
    },
  };
  return t;
}

Deno.test("HeartbeatWheel: each member beats once per period, first after one period", () => {
  const timer = manualTimer();
  const wheel = new HeartbeatWheel({ periodMs: 1_000, tickMs: 100, every: timer.every });
  assert.equal(wheel.periodMs, 1_000);
  const beats: number[] = [];
  wheel.add(() => beats.push(wheel.size));
  assert.deepEqual(timer.intervals, [100]);
  for (let i = 0; i < 9; i++) wheel.tick();
  assert.equal(beats.length, 0, "not before a whole period");
  wheel.tick();
  assert.equal(beats.length, 1);
  for (let i = 0; i < 30; i++) wheel.tick();
  assert.equal(beats.length, 4, "then every period");
});

Deno.test("HeartbeatWheel: members that join at different times stay spread over the period", () => {
  const timer = manualTimer();
  const wheel = new HeartbeatWheel({ periodMs: 1_000, tickMs: 100, every: timer.every });
  const perTick: number[] = [];
  let now = 0;
  for (let i = 0; i < 10; i++) {
    // one member joins during each tick of the first period
    wheel.add(() => now++);
    wheel.tick();
  }
  for (let i = 0; i < 20; i++) {
    now = 0;
    wheel.tick();
    perTick.push(now);
  }
  assert.deepEqual(perTick, Array(20).fill(1), "one beat per tick, never all ten at once");
  assert.equal(timer.running, 1, "one timer for all members");
});

Deno.test("HeartbeatWheel: the timer runs only while there are members; removal is idempotent", () => {
  const timer = manualTimer();
  const wheel = new HeartbeatWheel({ periodMs: 500, tickMs: 100, every: timer.every });
  assert.equal(wheel.running, false);
  let a = 0;
  let b = 0;
  const removeA = wheel.add(() => a++);
  const removeB = wheel.add(() => b++);
  assert.equal(timer.running, 1);
  removeA();
  removeA();
  assert.equal(wheel.size, 1);
  for (let i = 0; i < 5; i++) wheel.tick();
  assert.deepEqual([a, b], [0, 1], "a removed member never beats again");
  removeB();
  assert.equal(wheel.size, 0);
  assert.equal(timer.running, 0, "stopped with the last member");
  assert.equal(wheel.running, false);
  wheel.add(() => {});
  assert.equal(timer.running, 1, "started again by the next member");
});

Deno.test("HeartbeatWheel: a beat may remove others, add members, or throw", () => {
  const timer = manualTimer();
  const wheel = new HeartbeatWheel({ periodMs: 100, tickMs: 100, every: timer.every });
  const calls: string[] = [];
  let removeC: () => void = () => {};
  wheel.add(() => {
    calls.push("a");
    removeC(); // e.g. a shutdown that ends every session from one beat
    wheel.add(() => calls.push("new"));
  });
  wheel.add(() => {
    calls.push("b");
    throw new Error("this member's own failure");
  });
  removeC = wheel.add(() => calls.push("c"));
  wheel.tick();
  assert.deepEqual(calls, ["a", "b"], "c was removed by a; the new member waits a period");
  calls.length = 0;
  removeC = () => {};
  wheel.tick();
  assert.deepEqual(calls.sort(), ["a", "b", "new"]);
});

Deno.test("HeartbeatWheel: the period is whole ticks, at least the one asked for; tick ≤ period", () => {
  const timer = manualTimer();
  assert.equal(new HeartbeatWheel({ periodMs: 15_000 }).periodMs, 15_000);
  assert.equal(new HeartbeatWheel({ periodMs: 1_030, tickMs: 100 }).periodMs, 1_100);
  const short = new HeartbeatWheel({ periodMs: 20, tickMs: 100, every: timer.every });
  assert.equal(short.periodMs, 20);
  short.add(() => {});
  assert.deepEqual(timer.intervals, [20]);
  assert.equal(HEARTBEAT_TICK_MS, 50);
});
