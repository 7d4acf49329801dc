import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { Logger } from "../core/log.ts";
import { waitFor } from "../core/testing.ts";
import type { NetworkActivityEvent } from "../core/ocsf.ts";
import type { GatewayMessage, SupervisorMessage } from "../core/protocol.ts";
import { SupervisorEvents } from "./events.ts";
import type { RelayCall } from "./relay.ts";
import { type ControlCall, type SupervisorChannel, SupervisorSession } from "./session.ts";

/** The gateway end of one fake `ConnectSupervisor` call. */
class FakeCall extends EventEmitter implements ControlCall {
  readonly sent: SupervisorMessage[] = [];
  ended = false;
  cancelled = false;
  #waiters: (() => void)[] = [];

  write(message: SupervisorMessage): boolean {
    this.sent.push(message);
    for (const w of this.#waiters.splice(0)) w();
    return true;
  }
  end(): void {
    this.ended = true;
  }
  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    queueMicrotask(() => this.emit("error", Object.assign(new Error("1 CANCELLED"), { code: 1 })));
  }
  /** Resolves once `n` messages of `payload` were written. */
  async waitFor(payload: SupervisorMessage["payload"], n = 1): Promise<void> {
    while (this.sent.filter((m) => m.payload === payload).length < n) {
      await new Promise<void>((r) => this.#waiters.push(r));
    }
  }
  send(message: GatewayMessage): void {
    this.emit("data", message);
  }
  accept(sessionId = "s1", heartbeatSecs = 0): void {
    this.send({
      payload: "session_accepted",
      session_accepted: { session_id: sessionId, heartbeat_interval_secs: heartbeatSecs },
    });
  }
}

/** Channels whose calls a test drives; `next()` waits for the next call. */
class FakeChannels {
  readonly calls: FakeCall[] = [];
  readonly relayCalls: number[] = [];
  channelsMade = 0;
  channelsClosed = 0;
  #waiters: ((c: FakeCall) => void)[] = [];

  factory = (): SupervisorChannel => {
    const index = this.channelsMade++;
    return {
      connectSupervisor: () => {
        const call = new FakeCall();
        this.calls.push(call);
        const w = this.#waiters.shift();
        if (w) queueMicrotask(() => w(call));
        return call;
      },
      relayStream: () => {
        this.relayCalls.push(index);
        return {} as RelayCall;
      },
      broken: () => false,
      close: () => {
        this.channelsClosed++;
      },
    };
  };

  /** The call of attempt `i` (0-based), once the session opened it. */
  async call(i: number): Promise<FakeCall> {
    while (this.calls.length <= i) {
      await new Promise<FakeCall>((r) => this.#waiters.push(r));
    }
    return this.calls[i];
  }
}

function setup(overrides: Partial<ConstructorParameters<typeof SupervisorSession>[0]> = {}) {
  const channels = new FakeChannels();
  const events: NetworkActivityEvent[] = [];
  const relaysOpened: string[] = [];
  const stop = new AbortController();
  const session = new SupervisorSession({
    sandboxId: "sb-1",
    channels: channels.factory,
    relays: {
      open: (channelId, open) => {
        relaysOpened.push(channelId);
        open();
        return Promise.resolve();
      },
    },
    events: new SupervisorEvents({
      sandboxId: "sb-1",
      endpoint: "http://127.0.0.1:9",
      sink: (e) => events.push(e),
    }),
    logger: new Logger({ sink: () => {} }),
    backoff: { initialMs: 5, maxMs: 40, jitter: 0 },
    minHeartbeatMs: 20,
    handshakeTimeoutMs: 2_000,
    ...overrides,
  });
  const done = session.run(stop.signal);
  return { channels, events, relaysOpened, stop, done, session };
}

function failures(events: NetworkActivityEvent[]): NetworkActivityEvent[] {
  return events.filter((e) => e.activity_name === "Fail");
}

Deno.test("session: hello carries the sandbox id and a fresh instance id per attempt", async () => {
  const t = setup();
  const first = await t.channels.call(0);
  await first.waitFor("hello");
  first.emit("end");
  const second = await t.channels.call(1);
  await second.waitFor("hello");
  const [h1, h2] = [first.sent[0], second.sent[0]];
  assert.ok(h1.payload === "hello" && h2.payload === "hello");
  assert.equal(h1.hello.sandbox_id, "sb-1");
  assert.equal(h2.hello.sandbox_id, "sb-1");
  assert.match(h1.hello.instance_id, /^[0-9a-f-]{36}$/);
  assert.notEqual(h1.hello.instance_id, h2.hello.instance_id);
  t.stop.abort();
  await t.done;
});

Deno.test("session: accepted → open event and heartbeats at max(interval, floor)", async () => {
  const t = setup({ minHeartbeatMs: 20 });
  const call = await t.channels.call(0);
  await call.waitFor("hello");
  call.accept("sess-a", 0);
  assert.equal(t.session.sessionId, "sess-a");
  // keep the gateway talking so it never counts as silent
  const chatter = setInterval(() => call.send({ payload: "heartbeat", heartbeat: {} }), 10);
  await call.waitFor("heartbeat", 3);
  clearInterval(chatter);
  const opened = t.events.find((e) => e.activity_name === "Open");
  assert.equal(opened?.unmapped.session_id, "sess-a");
  assert.equal(opened?.unmapped.sandbox_id, "sb-1");
  assert.deepEqual(opened?.dst_endpoint, { hostname: "127.0.0.1", port: 9 });
  t.stop.abort();
  await t.done;
});

Deno.test("session: a silent gateway is left after 3 intervals, on a new channel", async () => {
  const t = setup({ minHeartbeatMs: 20 });
  const call = await t.channels.call(0);
  await call.waitFor("hello");
  call.accept("quiet", 0);
  const next = await t.channels.call(1);
  await next.waitFor("hello");
  assert.ok(call.cancelled, "the silent session's call was cancelled");
  const [fail] = failures(t.events);
  assert.match(fail.message, /gateway silent/);
  assert.equal(fail.unmapped.session_id, "quiet");
  assert.equal(t.channels.channelsMade, 2, "a silent gateway's channel is replaced");
  assert.equal(t.channels.channelsClosed, 1);
  t.stop.abort();
  await t.done;
});

Deno.test("session: rejection, a wrong first message and a stream error each fail the attempt", async () => {
  const t = setup();
  const c0 = await t.channels.call(0);
  c0.send({ payload: "session_rejected", session_rejected: { reason: "no such sandbox" } });
  const c1 = await t.channels.call(1);
  c1.send({ payload: "heartbeat", heartbeat: {} });
  const c2 = await t.channels.call(2);
  c2.emit("error", new Error("14 UNAVAILABLE: Connection dropped"));
  const c3 = await t.channels.call(3);
  c3.emit("end");
  await t.channels.call(4);
  const messages = failures(t.events).map((e) => e.status_detail);
  assert.deepEqual(messages, [
    "session rejected: no such sandbox",
    "expected session_accepted, got heartbeat",
    "session stream failed: 14 UNAVAILABLE: Connection dropped",
    "gateway closed the session stream",
  ]);
  assert.equal(t.channels.channelsMade, 1, "a healthy channel is reused");
  t.stop.abort();
  await t.done;
});

Deno.test("session: no session_accepted in time fails the attempt", async () => {
  const t = setup({ handshakeTimeoutMs: 30 });
  await t.channels.call(1);
  assert.match(failures(t.events)[0].message, /no session_accepted within 30 ms/);
  t.stop.abort();
  await t.done;
});

Deno.test("session: backoff doubles to its cap and restarts after a healthy session", async () => {
  let now = 1_000;
  const t = setup({
    backoff: { initialMs: 5, maxMs: 20, jitter: 0 },
    healthyAfterMs: 40,
    now: () => now,
  });
  for (let i = 0; i < 4; i++) (await t.channels.call(i)).emit("end");
  const healthy = await t.channels.call(4);
  healthy.accept("long", 60);
  now += 40; // the session has lasted healthyAfterMs
  healthy.emit("end");
  (await t.channels.call(5)).emit("end");
  await t.channels.call(6);
  const delays = failures(t.events).map((e) => e.unmapped.retry_in_ms);
  assert.deepEqual(delays, [5, 10, 20, 20, 5, 10]);
  const attempts = failures(t.events).map((e) => e.unmapped.attempt);
  assert.deepEqual(attempts, [1, 2, 3, 4, 1, 2]);
  t.stop.abort();
  await t.done;
});

Deno.test("session: a short session does not reset the backoff", async () => {
  let now = 1_000;
  const t = setup({
    backoff: { initialMs: 5, maxMs: 40, jitter: 0 },
    healthyAfterMs: 10_000,
    now: () => now,
  });
  (await t.channels.call(0)).emit("end");
  const short = await t.channels.call(1);
  short.accept("short", 60);
  now += 9_999; // one millisecond short of healthy
  short.emit("end");
  await t.channels.call(2);
  assert.deepEqual(failures(t.events).map((e) => e.unmapped.retry_in_ms), [5, 10]);
  t.stop.abort();
  await t.done;
});

Deno.test("session: relay_open starts a relay on the session's channel", async () => {
  const t = setup();
  const call = await t.channels.call(0);
  call.accept("s", 60);
  call.send({ payload: "relay_open", relay_open: { channel_id: "ch-1" } });
  call.send({ payload: "relay_open", relay_open: { channel_id: "" } });
  call.send({ payload: "relay_open", relay_open: { channel_id: "ch-2" } });
  assert.deepEqual(t.relaysOpened, ["ch-1", "ch-2"]);
  assert.deepEqual(t.channels.relayCalls, [0, 0]);
  t.stop.abort();
  await t.done;
});

Deno.test("session: a refused relay_open is answered with relay_open_result{success: false}", async () => {
  const t = setup({
    relays: {
      open: (_channelId, _open, refuse) => {
        refuse?.("relay capacity reached: 64 relays open");
        return Promise.resolve();
      },
    },
  });
  const call = await t.channels.call(0);
  call.accept("s", 60);
  call.send({ payload: "relay_open", relay_open: { channel_id: "ch-9" } });
  await call.waitFor("relay_open_result");
  assert.deepEqual(call.sent.find((m) => m.payload === "relay_open_result"), {
    payload: "relay_open_result",
    relay_open_result: {
      channel_id: "ch-9",
      success: false,
      error: "relay capacity reached: 64 relays open",
    },
  });
  assert.deepEqual(t.channels.relayCalls, [], "no relay stream was opened");
  t.stop.abort();
  await t.done;
});

Deno.test("session: stopping ends the live session with a close event", async () => {
  const t = setup();
  const call = await t.channels.call(0);
  call.accept("bye", 60);
  t.stop.abort();
  await t.done;
  assert.ok(call.ended, "the stream was half-closed");
  const closed = t.events.filter((e) => e.activity_name === "Close");
  assert.equal(closed.length, 1);
  assert.equal(closed[0].unmapped.session_id, "bye");
  assert.equal(failures(t.events).length, 0);
  assert.equal(t.session.sessionId, undefined);
  t.session.closeChannel();
  assert.equal(t.channels.channelsClosed, 1);
});

Deno.test("session: stopping while backing off resolves at once", async () => {
  const t = setup({ backoff: { initialMs: 60_000, maxMs: 60_000, jitter: 0 } });
  (await t.channels.call(0)).emit("end");
  await waitFor("the first failure", () => failures(t.events).length > 0, { intervalMs: 1 });
  t.stop.abort();
  await t.done;
  assert.equal(t.channels.calls.length, 1);
});
