import assert from "node:assert/strict";
import type { GatewayMessage } from "./protocol.ts";
import {
  MAX_PENDING_RELAYS,
  MAX_PENDING_RELAYS_PER_SANDBOX,
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
  const opening = reg.openRelay("sb", { sessionWaitMs: 2_000 });
  await new Promise((r) => setTimeout(r, 30));
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

Deno.test("global cap: RESOURCE_EXHAUSTED once 256 relays are in flight", async () => {
  const reg = new SessionRegistry<string>({ newChannelId: ids() });
  reg.register("a", "s1", new FakeSink());
  reg.register("b", "s2", new FakeSink());
  reg.register("c", "s3", new FakeSink());
  const relays = [];
  // 32 per sandbox is the other cap, so spread 256 over 8 sandboxes.
  for (let i = 0; i < MAX_PENDING_RELAYS; i++) {
    const sb = `x${i % 8}`;
    if (!reg.hasSession(sb)) reg.register(sb, `s-${sb}`, new FakeSink());
    relays.push(await reg.openRelay(sb, { sessionWaitMs: 10 }));
  }
  assert.equal(reg.pendingCount(), MAX_PENDING_RELAYS);
  await rejectsWith(
    reg.openRelay("a", { sessionWaitMs: 10 }),
    Code.RESOURCE_EXHAUSTED,
    /gateway relay capacity reached \(256 in flight\)/,
  );
  for (const r of relays) r.cancel();
  // Cancelled requesters no longer count as in flight.
  const again = await reg.openRelay("a", { sessionWaitMs: 10 });
  again.cancel();
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
  for (const r of relays) r.cancel();
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
  reg.claimRelay(relay.channelId, "via-new-session");
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
  setTimeout(() => ctl.abort(), 20);
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
