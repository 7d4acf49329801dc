import assert from "node:assert/strict";
import type { GatewayMessage } from "./protocol.ts";
import {
  MAX_PENDING_RELAYS,
  MAX_PENDING_RELAYS_PER_SANDBOX,
  RESERVED_RELAYS_PER_SANDBOX,
  SessionRegistry,
  type SessionSink,
} from "./registry.ts";
import { Code, StatusError } from "./status.ts";

/** A session sink that records what the registry sends to it. */
class FakeSink implements SessionSink {
  sent: GatewayMessage[] = [];
  stopped = 0;
  open = true;
  send(message: GatewayMessage): boolean {
    if (!this.open) return false;
    this.sent.push(message);
    return true;
  }
  stop(): void {
    this.stopped++;
  }
  relayOpens(): string[] {
    return this.sent.flatMap((m) => m.payload === "relay_open" ? [m.relay_open.channel_id] : []);
  }
}

async function rejectsWith(p: Promise<unknown>, code: number, text?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof StatusError, `expected StatusError, got ${err}`);
    assert.equal(err.code, code, `code ${err.code}: ${err.message}`);
    if (text) assert.match(err.message, text);
    return true;
  });
}

function throwsWith(fn: () => unknown, code: number, text?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof StatusError);
    assert.equal(err.code, code, err.message);
    if (text) assert.match(err.message, text);
    return true;
  });
}

let counter = 0;
function ids(): () => string {
  return () => `ch-${++counter}`;
}

Deno.test("register then lookup; the first register does not supersede", () => {
  const reg = new SessionRegistry<string>();
  assert.equal(reg.hasSession("sb"), false);
  assert.equal(reg.register("sb", "s1", new FakeSink()), false);
  assert.equal(reg.hasSession("sb"), true);
  assert.equal(reg.currentSessionId("sb"), "s1");
  assert.equal(reg.sessionCount, 1);
});

Deno.test("a second register supersedes and tells the old session to stop", () => {
  const reg = new SessionRegistry<string>();
  const old = new FakeSink();
  const neu = new FakeSink();
  reg.register("sb", "s1", old);
  assert.equal(reg.register("sb", "s2", neu), true);
  assert.equal(old.stopped, 1);
  assert.equal(neu.stopped, 0);
  assert.equal(reg.currentSessionId("sb"), "s2");
});

Deno.test("removeIfCurrent with a stale session id leaves the new session in place", () => {
  const reg = new SessionRegistry<string>();
  reg.register("sb", "s1", new FakeSink());
  reg.register("sb", "s2", new FakeSink());
  assert.equal(reg.removeIfCurrent("sb", "s1"), false);
  assert.equal(reg.currentSessionId("sb"), "s2");
  assert.equal(reg.removeIfCurrent("sb", "s2"), true);
  assert.equal(reg.hasSession("sb"), false);
  assert.equal(reg.removeIfCurrent("other", "s9"), false);
});

Deno.test("openRelay sends relay_open with the channel id it returns", async () => {
  const reg = new SessionRegistry<string>();
  const sink = new FakeSink();
  reg.register("sb", "s1", sink);
  const relay = await reg.openRelay("sb", { sessionWaitMs: 100 });
  assert.deepEqual(sink.relayOpens(), [relay.channelId]);
  assert.equal(relay.sandboxId, "sb");
  reg.claimRelay(relay.channelId, "the-stream");
  assert.equal(await relay.stream, "the-stream");
  assert.equal(reg.pendingEntries, 0);
});

Deno.test("openRelay without a session times out with UNAVAILABLE", async () => {
  const reg = new SessionRegistry<string>();
  const started = Date.now();
  await rejectsWith(reg.openRelay("sb", { sessionWaitMs: 50 }), Code.UNAVAILABLE, /not connected/);
  assert.ok(Date.now() - started >= 45);
  assert.equal(reg.pendingEntries, 0);
});

Deno.test("openRelay succeeds when the session appears mid-wait", async () => {
  const reg = new SessionRegistry<string>();
  const sink = new FakeSink();
  // openRelay registers its wait before it returns: the session appears mid-wait.
  const opening = reg.openRelay("sb", { sessionWaitMs: 2_000 });
  assert.equal(sink.sent.length, 0);
  reg.register("sb", "s1", sink);
  const relay = await opening;
  assert.deepEqual(sink.relayOpens(), [relay.channelId]);
  relay.cancel();
});

Deno.test("openRelay fails with UNAVAILABLE and leaves no entry when the sender is gone", async () => {
  const reg = new SessionRegistry<string>();
  const sink = new FakeSink();
  sink.open = false;
  reg.register("sb", "s1", sink);
  await rejectsWith(reg.openRelay("sb", { sessionWaitMs: 100 }), Code.UNAVAILABLE, /disconnected/);
  assert.equal(reg.pendingEntries, 0);
  assert.equal(reg.pendingCount(), 0);
});

Deno.test("shared pool: beyond their reserves sandboxes share 256; a reserve stays available", async () => {
  const reg = new SessionRegistry<string>({ newChannelId: ids() });
  const beyond = MAX_PENDING_RELAYS_PER_SANDBOX - RESERVED_RELAYS_PER_SANDBOX;
  const full = MAX_PENDING_RELAYS / beyond; // sandboxes at their cap that drain the pool
  for (let i = 0; i < full; i++) {
    reg.register(`x${i}`, `s-x${i}`, new FakeSink());
    for (let j = 0; j < MAX_PENDING_RELAYS_PER_SANDBOX; j++) {
      await reg.openRelay(`x${i}`, { sessionWaitMs: 10 });
    }
  }
  assert.equal(reg.sharedPending, MAX_PENDING_RELAYS);
  assert.equal(reg.pendingCount(), full * MAX_PENDING_RELAYS_PER_SANDBOX);
  // A newcomer still gets its whole reserve, then hits the exhausted pool.
  reg.register("a", "s-a", new FakeSink());
  for (let j = 0; j < RESERVED_RELAYS_PER_SANDBOX; j++) {
    await reg.openRelay("a", { sessionWaitMs: 10 });
  }
  await rejectsWith(
    reg.openRelay("a", { sessionWaitMs: 10 }),
    Code.RESOURCE_EXHAUSTED,
    /gateway relay capacity reached \(256 shared relays in flight\)/,
  );
  assert.equal(reg.pendingCount("a"), RESERVED_RELAYS_PER_SANDBOX);
  // The table stays bounded: the pool plus one reserve per sandbox.
  assert.ok(reg.pendingEntries <= MAX_PENDING_RELAYS + (full + 1) * RESERVED_RELAYS_PER_SANDBOX);
  reg.close();
});

Deno.test("9 silent sandboxes at their cap do not block a healthy one", async () => {
  const reg = new SessionRegistry<string>({ newChannelId: ids() });
  for (let i = 0; i < 9; i++) {
    reg.register(`silent${i}`, `s${i}`, new FakeSink());
    for (let j = 0; j < MAX_PENDING_RELAYS_PER_SANDBOX; j++) {
      (await reg.openRelay(`silent${i}`, { sessionWaitMs: 10 })).cancel();
    }
    await rejectsWith(reg.openRelay(`silent${i}`, { sessionWaitMs: 10 }), Code.RESOURCE_EXHAUSTED);
  }
  // 9 × 32 = 288 entries: more than the pool, yet the healthy sandbox gets its full 32.
  assert.equal(reg.pendingCount(), 9 * MAX_PENDING_RELAYS_PER_SANDBOX);
  reg.register("healthy", "sh", new FakeSink());
  const relays = [];
  for (let j = 0; j < MAX_PENDING_RELAYS_PER_SANDBOX; j++) {
    relays.push(await reg.openRelay("healthy", { sessionWaitMs: 10 }));
  }
  for (const r of relays) reg.claimRelay(r.channelId, "ok");
  assert.equal(reg.pendingCount("healthy"), 0);
  reg.close();
});

Deno.test("1,000 open-and-cancel cycles leave at most 32 entries and 32 relay_opens", async () => {
  let now = 1_000_000;
  const reg = new SessionRegistry<string>({ newChannelId: ids(), now: () => now });
  const sink = new FakeSink(); // a supervisor that never answers
  reg.register("sb", "s1", sink);
  let refused = 0;
  for (let i = 0; i < 1_000; i++) {
    try {
      (await reg.openRelay("sb", { sessionWaitMs: 10 })).cancel();
    } catch (err) {
      assert.equal((err as StatusError).code, Code.RESOURCE_EXHAUSTED);
      refused++;
    }
  }
  assert.equal(reg.pendingEntries, MAX_PENDING_RELAYS_PER_SANDBOX);
  assert.equal(reg.pendingCount("sb"), MAX_PENDING_RELAYS_PER_SANDBOX);
  assert.equal(sink.relayOpens().length, MAX_PENDING_RELAYS_PER_SANDBOX);
  assert.equal(refused, 1_000 - MAX_PENDING_RELAYS_PER_SANDBOX);
  // Past the claim deadline the entries are reaped on the next open, which succeeds.
  now += 10_001;
  const fresh = await reg.openRelay("sb", { sessionWaitMs: 10 });
  assert.equal(reg.pendingEntries, 1);
  assert.equal(sink.relayOpens().length, MAX_PENDING_RELAYS_PER_SANDBOX + 1);
  fresh.cancel();
  reg.close();
});

Deno.test("a cancelled relay counts until claimed; the claim frees its slot", async () => {
  const reg = new SessionRegistry<string>({ newChannelId: ids(), maxPendingPerSandbox: 2 });
  reg.register("sb", "s1", new FakeSink());
  const a = await reg.openRelay("sb", { sessionWaitMs: 10 });
  const b = await reg.openRelay("sb", { sessionWaitMs: 10 });
  a.cancel();
  b.cancel();
  assert.equal(reg.pendingCount("sb"), 2);
  await rejectsWith(reg.openRelay("sb", { sessionWaitMs: 10 }), Code.RESOURCE_EXHAUSTED);
  throwsWith(() => reg.claimRelay(a.channelId, "late"), Code.INTERNAL);
  assert.equal(reg.pendingCount("sb"), 1);
  (await reg.openRelay("sb", { sessionWaitMs: 10 })).cancel();
  reg.close();
});

Deno.test("per-sandbox cap: RESOURCE_EXHAUSTED at 32, other sandboxes unaffected", async () => {
  const reg = new SessionRegistry<string>({ newChannelId: ids() });
  reg.register("a", "s1", new FakeSink());
  reg.register("b", "s2", new FakeSink());
  const relays = [];
  for (let i = 0; i < MAX_PENDING_RELAYS_PER_SANDBOX; i++) {
    relays.push(await reg.openRelay("a", { sessionWaitMs: 10 }));
  }
  await rejectsWith(
    reg.openRelay("a", { sessionWaitMs: 10 }),
    Code.RESOURCE_EXHAUSTED,
    /per-sandbox relay limit reached \(32 in flight for a\)/,
  );
  relays.push(await reg.openRelay("b", { sessionWaitMs: 10 }));
  reg.close();
});

Deno.test("failRelay: the session that was asked fails it at once; others cannot", async () => {
  const reg = new SessionRegistry<string>({ newChannelId: ids() });
  reg.register("sb", "s1", new FakeSink());
  reg.register("other", "s9", new FakeSink());
  const relay = await reg.openRelay("sb", { sessionWaitMs: 10 });
  const refused = new StatusError(Code.RESOURCE_EXHAUSTED, "supervisor full");
  assert.equal(
    reg.failRelay(relay.channelId, { sandboxId: "other", sessionId: "s9" }, refused),
    false,
  );
  assert.equal(
    reg.failRelay(relay.channelId, { sandboxId: "sb", sessionId: "s0" }, refused),
    false,
  );
  assert.equal(reg.pendingCount("sb"), 1);
  assert.equal(reg.failRelay(relay.channelId, { sandboxId: "sb", sessionId: "s1" }, refused), true);
  await rejectsWith(relay.stream, Code.RESOURCE_EXHAUSTED, /supervisor full/);
  assert.equal(reg.pendingCount("sb"), 0);
  throwsWith(() => reg.claimRelay(relay.channelId, "s"), Code.NOT_FOUND);
  reg.close();
});

Deno.test("dropSessionRelays: only that session's relays go, waiting requesters fail", async () => {
  const reg = new SessionRegistry<string>({ newChannelId: ids() });
  reg.register("sb", "s1", new FakeSink());
  reg.register("other", "s2", new FakeSink());
  const waiting = await reg.openRelay("sb", { sessionWaitMs: 10 });
  const left = await reg.openRelay("sb", { sessionWaitMs: 10 });
  left.cancel();
  const kept = await reg.openRelay("other", { sessionWaitMs: 10 });
  const gone = new StatusError(Code.UNAVAILABLE, "supervisor stopped answering");
  assert.equal(reg.dropSessionRelays("sb", "s2", gone), 0);
  assert.equal(reg.dropSessionRelays("sb", "s1", gone), 2);
  await rejectsWith(waiting.stream, Code.UNAVAILABLE, /stopped answering/);
  assert.equal(reg.pendingCount("sb"), 0);
  assert.equal(reg.pendingCount("other"), 1);
  assert.deepEqual(reg.claimRelay(kept.channelId, "k"), { sandboxId: "other", sessionId: "s2" });
  reg.close();
});

Deno.test("a burst of 64 concurrent opens gives exactly 32 ok and 32 RESOURCE_EXHAUSTED", async () => {
  const reg = new SessionRegistry<string>({ newChannelId: ids() });
  const sink = new FakeSink();
  reg.register("sb", "s1", sink);
  const results = await Promise.allSettled(
    Array.from({ length: 64 }, () => reg.openRelay("sb", { sessionWaitMs: 100 })),
  );
  const ok = results.filter((r) => r.status === "fulfilled");
  const exhausted = results.filter((r) =>
    r.status === "rejected" && (r.reason as StatusError).code === Code.RESOURCE_EXHAUSTED
  );
  assert.equal(ok.length, 32);
  assert.equal(exhausted.length, 32);
  assert.equal(sink.relayOpens().length, 32);
  for (const r of ok) (r as PromiseFulfilledResult<{ cancel(): void }>).value.cancel();
});

Deno.test("after supersede, new relays go to the newest session only", async () => {
  const reg = new SessionRegistry<string>();
  const old = new FakeSink();
  const neu = new FakeSink();
  reg.register("sb", "s1", old);
  reg.register("sb", "s2", neu);
  const relay = await reg.openRelay("sb", { sessionWaitMs: 10 });
  assert.deepEqual(old.relayOpens(), []);
  assert.deepEqual(neu.relayOpens(), [relay.channelId]);
  relay.cancel();
});

Deno.test("pending relays are replayed to the superseding session", async () => {
  const reg = new SessionRegistry<string>();
  const old = new FakeSink();
  reg.register("sb", "s1", old);
  const relay = await reg.openRelay("sb", { sessionWaitMs: 10 });
  const cancelled = await reg.openRelay("sb", { sessionWaitMs: 10 });
  cancelled.cancel();
  const neu = new FakeSink();
  reg.register("sb", "s2", neu);
  assert.deepEqual(neu.relayOpens(), [relay.channelId]);
  assert.deepEqual(reg.claimRelay(relay.channelId, "via-new-session"), {
    sandboxId: "sb",
    sessionId: "s2",
  });
  assert.equal(await relay.stream, "via-new-session");
});

Deno.test("claim of an unknown channel is NOT_FOUND", () => {
  const reg = new SessionRegistry<string>();
  throwsWith(() => reg.claimRelay("nope", "s"), Code.NOT_FOUND, /unknown or expired/);
});

Deno.test("claim of an expired channel is DEADLINE_EXCEEDED and consumes it", async () => {
  let now = 1_000_000;
  const reg = new SessionRegistry<string>({ now: () => now });
  reg.register("sb", "s1", new FakeSink());
  const relay = await reg.openRelay("sb", { sessionWaitMs: 10, relayWaitMs: 60_000 });
  now += 60_000;
  throwsWith(() => reg.claimRelay(relay.channelId, "late"), Code.DEADLINE_EXCEEDED, /timed out/);
  assert.equal(reg.pendingEntries, 0);
  await rejectsWith(relay.stream, Code.DEADLINE_EXCEEDED);
  throwsWith(() => reg.claimRelay(relay.channelId, "again"), Code.NOT_FOUND);
});

Deno.test("claim after the requester dropped is INTERNAL", async () => {
  const reg = new SessionRegistry<string>();
  reg.register("sb", "s1", new FakeSink());
  const relay = await reg.openRelay("sb", { sessionWaitMs: 10 });
  relay.cancel();
  await rejectsWith(relay.stream, Code.CANCELLED);
  throwsWith(() => reg.claimRelay(relay.channelId, "s"), Code.INTERNAL, /requester dropped/);
  assert.equal(reg.pendingEntries, 0);
});

Deno.test("a requester that waits too long gets DEADLINE_EXCEEDED", async () => {
  const reg = new SessionRegistry<string>();
  reg.register("sb", "s1", new FakeSink());
  const relay = await reg.openRelay("sb", { sessionWaitMs: 10, relayWaitMs: 20 });
  await rejectsWith(relay.stream, Code.DEADLINE_EXCEEDED, /relay open timed out/);
  throwsWith(() => reg.claimRelay(relay.channelId, "s"), Code.INTERNAL);
});

Deno.test("an aborted signal cancels the session wait", async () => {
  const reg = new SessionRegistry<string>();
  const ctl = new AbortController();
  const opening = reg.openRelay("sb", { sessionWaitMs: 5_000, signal: ctl.signal });
  ctl.abort(); // mid-wait: openRelay registered its wait before it returned
  await rejectsWith(opening, Code.CANCELLED);
});

Deno.test("the reaper removes old entries and keeps fresh ones", async () => {
  let now = 5_000_000;
  const reg = new SessionRegistry<string>({ now: () => now });
  reg.register("sb", "s1", new FakeSink());
  const old = await reg.openRelay("sb", { sessionWaitMs: 10, relayWaitMs: 60_000 });
  now += 11_000;
  const fresh = await reg.openRelay("sb", { sessionWaitMs: 10, relayWaitMs: 60_000 });
  assert.equal(reg.reapExpired(), 1);
  assert.equal(reg.pendingEntries, 1);
  await rejectsWith(old.stream, Code.DEADLINE_EXCEEDED);
  throwsWith(() => reg.claimRelay(old.channelId, "s"), Code.NOT_FOUND);
  reg.claimRelay(fresh.channelId, "fresh");
  assert.equal(await fresh.stream, "fresh");
});

Deno.test("observer: once per connect, once per disconnect, not for a superseded session", () => {
  const reg = new SessionRegistry<string>();
  const events: string[] = [];
  const stop = reg.observe((sb, connected) => {
    // The registry is consistent when observers run.
    assert.equal(reg.hasSession(sb), connected);
    events.push(`${sb}:${connected ? "up" : "down"}`);
  });
  reg.register("sb", "s1", new FakeSink());
  reg.register("sb", "s2", new FakeSink()); // supersede: still connected, no event
  reg.removeIfCurrent("sb", "s1"); // the superseded session's late cleanup: no event
  assert.deepEqual(events, ["sb:up"]);
  reg.removeIfCurrent("sb", "s2");
  reg.removeIfCurrent("sb", "s2");
  assert.deepEqual(events, ["sb:up", "sb:down"]);
  reg.register("sb", "s3", new FakeSink());
  assert.deepEqual(events, ["sb:up", "sb:down", "sb:up"]);
  stop();
  reg.removeIfCurrent("sb", "s3");
  assert.equal(events.length, 3);
});

Deno.test("a throwing observer does not break the registry", () => {
  const reg = new SessionRegistry<string>();
  reg.observe(() => {
    throw new Error("observer bug");
  });
  assert.equal(reg.register("sb", "s1", new FakeSink()), false);
  assert.equal(reg.hasSession("sb"), true);
});

Deno.test("close fails waiting requesters with UNAVAILABLE", async () => {
  const reg = new SessionRegistry<string>();
  reg.register("sb", "s1", new FakeSink());
  reg.startReaper(60_000);
  const relay = await reg.openRelay("sb", { sessionWaitMs: 10 });
  reg.close();
  await rejectsWith(relay.stream, Code.UNAVAILABLE);
  assert.equal(reg.pendingEntries, 0);
});

Deno.test("endSession stops and removes the current session once", () => {
  const reg = new SessionRegistry<string>();
  const sink = new FakeSink();
  const events: boolean[] = [];
  reg.observe((_sb, up) => events.push(up));
  reg.register("sb", "s1", sink);
  assert.equal(reg.endSession("sb"), true);
  assert.equal(sink.stopped, 1);
  assert.equal(reg.hasSession("sb"), false);
  assert.equal(reg.endSession("sb"), false);
  assert.deepEqual(events, [true, false]);
});
