import assert from "node:assert/strict";
import { SandboxTopics, type Subscriber } from "./topics.ts";

function recorder<T>(): Subscriber<T> & { items: T[]; ended: number } {
  const r = {
    items: [] as T[],
    ended: 0,
    next(item: T) {
      r.items.push(item);
    },
    end() {
      r.ended++;
    },
  };
  return r;
}

Deno.test("publish reaches only the sandbox's subscribers, in order", () => {
  const topics = new SandboxTopics<number>(10);
  const a = recorder<number>();
  const a2 = recorder<number>();
  const b = recorder<number>();
  topics.subscribe("a", a);
  topics.subscribe("a", a2);
  topics.subscribe("b", b);
  topics.publish("a", 1);
  topics.publish("a", 2);
  topics.publish("b", 9);
  assert.deepEqual(a.items, [1, 2]);
  assert.deepEqual(a2.items, [1, 2]);
  assert.deepEqual(b.items, [9]);
  assert.equal(topics.subscriberCount("a"), 2);
});

Deno.test("the replay buffer keeps the last `capacity` items; total counts all", () => {
  const topics = new SandboxTopics<number>(3);
  for (let i = 1; i <= 5; i++) topics.publish("a", i);
  assert.deepEqual(topics.buffered("a"), [3, 4, 5]);
  assert.equal(topics.total("a"), 5);
  assert.deepEqual(topics.buffered("none"), []);
  assert.equal(topics.total("none"), 0);
  // a copy: changing it does not change the buffer
  topics.buffered("a").push(99);
  assert.deepEqual(topics.buffered("a"), [3, 4, 5]);
  // a late subscriber gets only new items (replay is the caller's job)
  const late = recorder<number>();
  topics.subscribe("a", late);
  topics.publish("a", 6);
  assert.deepEqual(late.items, [6]);
  assert.deepEqual(topics.buffered("a"), [4, 5, 6]);
});

Deno.test("capacity 0 buffers nothing but still delivers and counts", () => {
  const topics = new SandboxTopics<void>(0);
  const s = recorder<void>();
  topics.subscribe("a", s);
  topics.publish("a");
  topics.publish("a");
  assert.equal(s.items.length, 2);
  assert.deepEqual(topics.buffered("a"), []);
  assert.equal(topics.total("a"), 2);
});

Deno.test("unsubscribe stops delivery and is idempotent", () => {
  const topics = new SandboxTopics<number>(0);
  const s = recorder<number>();
  const other = recorder<number>();
  const off = topics.subscribe("a", s);
  topics.subscribe("a", other);
  topics.publish("a", 1);
  off();
  off();
  topics.publish("a", 2);
  assert.deepEqual(s.items, [1]);
  assert.deepEqual(other.items, [1, 2]);
  assert.equal(topics.subscriberCount("a"), 1);
});

Deno.test("a subscriber may unsubscribe itself while being called", () => {
  const topics = new SandboxTopics<number>(0);
  const seen: number[] = [];
  const after = recorder<number>();
  const off = topics.subscribe("a", {
    next(n) {
      seen.push(n);
      off();
    },
    end() {},
  });
  topics.subscribe("a", after);
  topics.publish("a", 1);
  topics.publish("a", 2);
  assert.deepEqual(seen, [1]);
  assert.deepEqual(after.items, [1, 2]);
});

Deno.test("a throwing subscriber does not stop the others", () => {
  const topics = new SandboxTopics<number>(1);
  const good = recorder<number>();
  topics.subscribe("a", {
    next() {
      throw new Error("broken");
    },
    end() {
      throw new Error("broken too");
    },
  });
  topics.subscribe("a", good);
  topics.publish("a", 1);
  assert.deepEqual(good.items, [1]);
  topics.drop("a");
  assert.equal(good.ended, 1);
});

Deno.test("drop ends the sandbox's subscribers once and forgets its buffer", () => {
  const topics = new SandboxTopics<number>(5);
  const a = recorder<number>();
  const b = recorder<number>();
  topics.subscribe("a", a);
  topics.subscribe("b", b);
  topics.publish("a", 1);
  topics.publish("b", 2);
  topics.drop("a");
  assert.equal(a.ended, 1);
  assert.equal(b.ended, 0);
  assert.deepEqual(topics.buffered("a"), []);
  assert.equal(topics.total("a"), 0);
  assert.equal(topics.subscriberCount("a"), 0);
  topics.publish("a", 3);
  assert.deepEqual(a.items, [1], "a dropped subscriber hears nothing more");
  topics.drop("a");
  assert.equal(a.ended, 1);
  assert.deepEqual(topics.buffered("b"), [2]);
});

Deno.test("an unsubscribe after drop does not remove a newer subscription", () => {
  const topics = new SandboxTopics<number>(0);
  const old = recorder<number>();
  const off = topics.subscribe("a", old);
  topics.drop("a");
  const fresh = recorder<number>();
  topics.subscribe("a", fresh);
  off();
  topics.publish("a", 1);
  assert.deepEqual(fresh.items, [1]);
  assert.equal(topics.subscriberCount("a"), 1);
});

Deno.test("close ends every subscription and clears buffers", () => {
  const topics = new SandboxTopics<number>(5);
  const a = recorder<number>();
  const b = recorder<number>();
  topics.subscribe("a", a);
  topics.subscribe("b", b);
  topics.publish("a", 1);
  topics.publish("c", 3);
  topics.close();
  assert.equal(a.ended, 1);
  assert.equal(b.ended, 1);
  assert.deepEqual(topics.buffered("a"), []);
  assert.deepEqual(topics.buffered("c"), []);
  assert.equal(topics.subscriberCount("a"), 0);
});

Deno.test("the replay buffer is bounded by bytes as well: the oldest go first", () => {
  const topics = new SandboxTopics<string>(100, { maxBytes: 10, sizeOf: (s) => s.length });
  topics.publish("a", "aaaa");
  topics.publish("a", "bbbb");
  assert.equal(topics.bufferedBytes("a"), 8);
  topics.publish("a", "cccc");
  assert.deepEqual(topics.buffered("a"), ["bbbb", "cccc"]);
  assert.equal(topics.bufferedBytes("a"), 8);
  topics.publish("a", "x".repeat(11));
  assert.deepEqual(topics.buffered("a"), [], "an item larger than the bound is not kept");
  assert.equal(topics.bufferedBytes("a"), 0);
  topics.publish("a", "dd");
  assert.deepEqual(topics.buffered("a"), ["dd"]);
  assert.equal(topics.total("a"), 5, "total still counts every item");
  topics.publish("b", "123");
  assert.equal(topics.totalBufferedBytes(), 5);
  assert.throws(() => new SandboxTopics<string>(1, { maxBytes: 1 }), /needs sizeOf/);
});

Deno.test("count and byte bounds together: whichever is tighter wins", () => {
  const topics = new SandboxTopics<string>(3, { maxBytes: 1000, sizeOf: (s) => s.length });
  for (let i = 0; i < 10; i++) topics.publish("a", String(i));
  assert.deepEqual(topics.buffered("a"), ["7", "8", "9"]);
  assert.equal(topics.bufferedBytes("a"), 3);
});
