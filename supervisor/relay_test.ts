import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { Duplex } from "node:stream";
import { Logger } from "../core/log.ts";
import type { NetworkActivityEvent } from "../core/ocsf.ts";
import type { RelayFrame } from "../core/protocol.ts";
import { RELAY_CAPACITY_ERROR } from "../core/registry.ts";
import { waitFor } from "../core/testing.ts";
import { SupervisorEvents } from "./events.ts";
import { RelayManager } from "./relay.ts";

/** A client-side RelayStream call; the test plays the gateway. */
class FakeRelayCall extends Duplex {
  readonly written: RelayFrame[] = [];
  endedByClient = false;
  cancelled = false;

  constructor() {
    super({ objectMode: true, allowHalfOpen: true });
  }
  override _read(): void {}
  override _write(frame: RelayFrame, _enc: string, cb: () => void): void {
    this.written.push(frame);
    cb();
  }
  override _final(cb: () => void): void {
    this.endedByClient = true;
    cb();
  }
  cancel(): void {
    this.cancelled = true;
    this.destroy(Object.assign(new Error("1 CANCELLED: Cancelled on client"), { code: 1 }));
  }
  /** Gateway → supervisor bytes. */
  sendData(text: string): void {
    this.push({ payload: "data", data: Buffer.from(text) });
  }
  /** Bytes the supervisor sent after its init frame. */
  dataText(): string {
    return this.written.filter((f) => f.payload === "data")
      .map((f) => Buffer.from((f as { data: Uint8Array }).data).toString()).join("");
  }
}

/** A Unix socket server that answers `got:<everything it read>` after the client's EOF. */
function halfCloseEcho(path: string): { close: () => Promise<void>; served: Promise<void>[] } {
  const listener = Deno.listen({ transport: "unix", path });
  const served: Promise<void>[] = [];
  const loop = (async () => {
    for await (const conn of listener) {
      served.push((async () => {
        const chunks: Uint8Array[] = [];
        const buf = new Uint8Array(1024);
        while (true) {
          const n = await conn.read(buf).catch(() => null);
          if (n === null) break;
          chunks.push(buf.slice(0, n));
        }
        const text = new TextDecoder().decode(Buffer.concat(chunks));
        try {
          await conn.write(new TextEncoder().encode(`got:${text}`));
          await conn.closeWrite();
          await conn.read(buf);
        } catch {
          // the relay tore the connection down
        }
        conn.close();
      })());
    }
  })();
  return {
    served,
    close: async () => {
      listener.close();
      await loop;
      await Promise.all(served);
    },
  };
}

function setup(socketPath: string) {
  const events: NetworkActivityEvent[] = [];
  const relays = new RelayManager({
    socketPath,
    events: new SupervisorEvents({
      sandboxId: "sb",
      endpoint: "http://gw:1",
      sink: (e) => events.push(e),
    }),
    logger: new Logger({ sink: () => {} }),
  });
  return { events, relays };
}

Deno.test("relay: init first, bytes both ways, half-close in both directions", async () => {
  const dir = await Deno.makeTempDir({ prefix: "osup-r-" });
  const server = halfCloseEcho(`${dir}/s.sock`);
  try {
    const { events, relays } = setup(`${dir}/s.sock`);
    const call = new FakeRelayCall();
    const done = relays.open("ch-1", () => call);
    assert.equal(relays.active, 1);
    call.sendData("hello ");
    call.sendData("world");
    call.push(null); // the gateway half-closes; the socket still answers
    await done;
    assert.deepEqual(call.written[0], { payload: "init", init: { channel_id: "ch-1" } });
    assert.equal(call.dataText(), "got:hello world");
    assert.ok(call.endedByClient, "the supervisor ended its half after sshd's EOF");
    assert.equal(call.cancelled, false);
    assert.deepEqual(events.map((e) => e.activity_name), ["Open", "Close"]);
    assert.equal(events[1].unmapped.channel_id, "ch-1");
    assert.equal(events[1].unmapped.bytes_from_gateway, 11);
    assert.equal(events[1].unmapped.bytes_to_gateway, 15);
    assert.equal(relays.active, 0);
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("relay: the gateway closing a relay (CANCELLED, an exec that ended) is a Close, not a Fail", async () => {
  const dir = await Deno.makeTempDir({ prefix: "osup-r-" });
  const server = halfCloseEcho(`${dir}/s.sock`);
  try {
    const { events, relays } = setup(`${dir}/s.sock`);
    const call = new FakeRelayCall();
    call.on("error", () => {});
    const done = relays.open("ch-9", () => call);
    call.sendData("uname");
    await waitFor("sshd's connection", () => server.served.length >= 1);
    // What the supervisor sees when the gateway's side of the relay is torn down.
    call.destroy(Object.assign(new Error("1 CANCELLED: relay closed"), { code: 1 }));
    await done;
    assert.deepEqual(events.map((e) => [e.activity_name, e.status]), [
      ["Open", "Success"],
      ["Close", "Success"],
    ]);
    assert.equal(events[1].message, "relay closed channel_id=ch-9: closed by the gateway");
    // Any other error is still a failure.
    const broken = new FakeRelayCall();
    broken.on("error", () => {});
    const failing = relays.open("ch-10", () => broken);
    await waitFor("the second connection", () => server.served.length >= 2);
    broken.destroy(Object.assign(new Error("14 UNAVAILABLE: connection reset"), { code: 14 }));
    await failing;
    assert.deepEqual([events.at(-1)?.activity_name, events.at(-1)?.status], ["Fail", "Failure"]);
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("relay: no sshd socket → the call is cancelled and a fail event names it", async () => {
  const { events, relays } = setup("/nonexistent/ssh.sock");
  const call = new FakeRelayCall();
  call.on("error", () => {});
  await relays.open("ch-2", () => call);
  assert.ok(call.cancelled);
  assert.deepEqual(call.written[0], { payload: "init", init: { channel_id: "ch-2" } });
  const fail = events.find((e) => e.activity_name === "Fail");
  assert.match(fail?.status_detail ?? "", /cannot connect to sshd socket/);
});

Deno.test("relay: a call that cannot be opened fails only that relay", async () => {
  const { events, relays } = setup("/nonexistent/ssh.sock");
  await relays.open("ch-3", () => {
    throw new Error("channel closed");
  });
  assert.match(events[1].status_detail ?? "", /cannot open relay stream: channel closed/);
});

Deno.test("relay: closeAll cancels live relays and refuses new ones; duplicates are ignored", async () => {
  const dir = await Deno.makeTempDir({ prefix: "osup-r-" });
  const server = halfCloseEcho(`${dir}/s.sock`);
  try {
    const { events, relays } = setup(`${dir}/s.sock`);
    const call = new FakeRelayCall();
    const done = relays.open("ch-4", () => call);
    let second = 0;
    await relays.open("ch-4", () => {
      second++;
      return new FakeRelayCall();
    });
    assert.equal(second, 0, "a duplicate relay_open opens nothing");
    call.sendData("x"); // in flight, never half-closed
    await waitFor("the relay's connection to the socket", () => server.served.length > 0);
    await relays.closeAll();
    await done;
    assert.ok(call.cancelled);
    assert.equal(relays.active, 0);
    // Cancelled while stopping: closed on purpose, not a failure.
    assert.equal(events.at(-1)?.activity_name, "Close");
    assert.equal(events.at(-1)?.status, "Success");
    assert.match(events.at(-1)?.message ?? "", /: cancelled by the supervisor$/);
    let third = 0;
    await relays.open("ch-5", () => {
      third++;
      return new FakeRelayCall();
    });
    assert.equal(third, 0, "no relays after closeAll");
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("relay: beyond its cap a relay_open is refused with a capacity reason, nothing opened", async () => {
  const dir = await Deno.makeTempDir({ prefix: "osup-r-" });
  const server = halfCloseEcho(`${dir}/s.sock`);
  try {
    const relays = new RelayManager({
      socketPath: `${dir}/s.sock`,
      events: new SupervisorEvents({ sandboxId: "sb", endpoint: "http://gw:1", sink: () => {} }),
      logger: new Logger({ sink: () => {} }),
      maxRelays: 2,
    });
    const calls = [new FakeRelayCall(), new FakeRelayCall()];
    const done = calls.map((c, i) => relays.open(`ch-${i}`, () => c));
    assert.equal(relays.active, 2);
    let opened = 0;
    const refusals: string[] = [];
    for (let i = 0; i < 1_000; i++) {
      await relays.open(`flood-${i}`, () => {
        opened++;
        return new FakeRelayCall();
      }, (reason) => refusals.push(reason));
    }
    assert.equal(opened, 0, "no stream opened beyond the cap");
    assert.equal(refusals.length, 1_000);
    assert.match(refusals[0], new RegExp(`^${RELAY_CAPACITY_ERROR}: 2 relays open`));
    assert.equal(relays.active, 2);
    // One relay ends: there is room again.
    calls[0].push(null);
    await done[0];
    const third = new FakeRelayCall();
    const thirdDone = relays.open("ch-2", () => third, () => assert.fail("refused"));
    assert.equal(relays.active, 2);
    third.push(null);
    calls[1].push(null);
    await Promise.all([thirdDone, done[1]]);
    assert.equal(relays.active, 0);
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});
