/**
 * Relay capacity and tunnel lifetime against a real gateway process
 * (loopback, its exact grants) with in-process fake supervisors: pending
 * relays that cannot pile up, fair shares between sandboxes, supervisor
 * refusals answered with 429, and tokens whose revocation or expiry closes
 * their tunnels.
 */
import * as grpc from "@grpc/grpc-js";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import http from "node:http";
import net from "node:net";
import type { Duplex } from "node:stream";
import { type GatewayMessage, OpenShellClient } from "../core/protocol.ts";
import { MAX_PENDING_RELAYS_PER_SANDBOX, RELAY_CAPACITY_ERROR } from "../core/registry.ts";
import { waitFor } from "../core/testing.ts";
import { grpcTlsCredentials } from "../core/tls.ts";
import {
  type ApiClient,
  apiClient,
  type ByoSupervisor,
  byoSupervisor,
  type FakeSupervisor,
  sendConnect,
  spawnGateway,
  type TestGateway,
} from "../testing/gateway.ts";

/** A test body that has not finished by then fails instead of hanging the suite. */
const TEST_DEADLINE_MS = 60_000;

interface Fixture {
  gw: TestGateway;
  api: ApiClient;
  /** Closed after the test. */
  cleanup: (() => void)[];
}

async function withGateway(
  fn: (f: Fixture) => Promise<void>,
  options: Parameters<typeof spawnGateway>[0] = {},
): Promise<void> {
  const gw = await spawnGateway(options);
  const f: Fixture = { gw, api: apiClient(gw.port), cleanup: [] };
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      fn(f),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`test did not finish in ${TEST_DEADLINE_MS / 1000} s`)),
          TEST_DEADLINE_MS,
        );
      }),
    ]);
  } catch (err) {
    console.error(gw.stderr());
    throw err;
  } finally {
    clearTimeout(timer);
    for (const c of f.cleanup) c();
    f.api.close();
    await gw.stop();
  }
}

async function token(f: Fixture, sandboxId: string): Promise<string> {
  return (await f.api.call(f.api.raw.CreateSshSession, { sandbox_id: sandboxId }))
    .token;
}

/** Resolves once the sandbox is READY (the session registers asynchronously). */
async function ready(f: Fixture, name: string): Promise<void> {
  await waitFor(`sandbox ${name} to be READY`, async () => {
    const s = await f.api.call(f.api.raw.GetSandbox, { name });
    return s.sandbox!.phase === "SANDBOX_PHASE_READY";
  }, { intervalMs: 25 });
}

/** A READY sandbox whose fake supervisor never answers `relay_open`, and counts them. */
async function silentSandbox(
  f: Fixture,
  name: string,
): Promise<{ id: string; opens: () => number; nextOpen: () => Promise<void> }> {
  const byo = await byoSupervisor(f.gw, name);
  let opens = 0;
  let waiters: (() => void)[] = [];
  const sup = byo.connect({
    ignoreRelays: true,
    onMessage: (m) => {
      if (m.payload !== "relay_open") return;
      opens++;
      for (const w of waiters) w();
      waiters = [];
    },
  });
  f.cleanup.push(() => sup.close());
  await sup.accepted;
  await ready(f, name);
  return {
    id: byo.sandbox.id,
    opens: () => opens,
    nextOpen: () => new Promise((r) => waiters.push(r)),
  };
}

function echo(relay: Duplex): void {
  relay.on("data", (c: Uint8Array) => relay.write(c));
  relay.on("end", () => relay.end());
}

async function echoSandbox(f: Fixture, name: string): Promise<{ id: string; sup: FakeSupervisor }> {
  const byo = await byoSupervisor(f.gw, name);
  const sup = byo.connect({ onRelay: echo });
  f.cleanup.push(() => sup.close());
  await sup.accepted;
  await ready(f, name);
  return { id: byo.sandbox.id, sup };
}

/**
 * One open-and-cancel cycle: sends CONNECT and closes the connection as soon
 * as the supervisor was asked for a relay. Returns "cancelled", or the
 * status and body of a reply that came first.
 */
function openAndCancel(
  port: number,
  headers: Record<string, string>,
  asked: Promise<void>,
): Promise<"cancelled" | { status: number; body: string }> {
  return new Promise((resolve, reject) => {
    let done = false;
    const req = http.request({
      method: "CONNECT",
      path: "/connect/ssh",
      headers: { Host: "gateway", ...headers },
      createConnection: () => net.connect({ port, host: "127.0.0.1" }),
    });
    req.once("error", (err) => {
      if (!done) reject(err);
    });
    req.once("connect", (res: http.IncomingMessage, socket: net.Socket, rest: Buffer) => {
      let body = rest;
      socket.on("data", (c: Buffer) => body = Buffer.concat([body, c]));
      socket.on("end", () => {
        if (done) return;
        done = true;
        socket.destroy();
        resolve({ status: res.statusCode ?? 0, body: body.toString("latin1") });
      });
    });
    asked.then(() => {
      if (done) return;
      done = true;
      req.destroy();
      resolve("cancelled");
    });
    req.end();
  });
}

/** Runs open-and-cancel cycles until `cycles` ran or, with `untilFull`, the first capacity 429. */
async function drain(
  f: Fixture,
  sb: { id: string; nextOpen: () => Promise<void> },
  tokens: string[],
  cycles: number,
  untilFull = false,
): Promise<{ cancelled: number; capacity: number; other: string[] }> {
  const out = { cancelled: 0, capacity: 0, other: [] as string[] };
  for (let i = 0; i < cycles; i++) {
    const r = await openAndCancel(f.gw.port, {
      "x-sandbox-id": sb.id,
      "x-sandbox-token": tokens[i % tokens.length],
    }, sb.nextOpen());
    if (r === "cancelled") out.cancelled++;
    else if (r.status === 429 && r.body.includes("no relay capacity")) {
      out.capacity++;
      if (untilFull) break;
    } else out.other.push(`${r.status} ${r.body.trim()}`);
  }
  return out;
}

Deno.test("CONNECT: 1,000 open-and-cancel cycles send at most 32 relay_opens to a silent supervisor", async () => {
  await withGateway(async (f) => {
    const sb = await silentSandbox(f, "silent");
    const tokens = await Promise.all(Array.from({ length: 5 }, () => token(f, sb.id)));
    const r = await drain(f, sb, tokens, 1_000);
    assert.equal(sb.opens(), MAX_PENDING_RELAYS_PER_SANDBOX, "relay_opens outstanding");
    assert.equal(r.cancelled, MAX_PENDING_RELAYS_PER_SANDBOX);
    // Nearly everything else is a capacity 429; a rare tunnel-slot 429 is a cycle
    // whose predecessor's close the gateway had not read yet.
    assert.ok(r.other.every((o) => o.startsWith("429 too many connections")), r.other.join("\n"));
    assert.equal(r.cancelled + r.capacity + r.other.length, 1_000);
  });
});

Deno.test("CONNECT: 9 silent sandboxes at their relay cap do not block a healthy one", async () => {
  await withGateway(async (f) => {
    for (let i = 0; i < 9; i++) {
      const sb = await silentSandbox(f, `silent-${i}`);
      const tokens = await Promise.all(Array.from({ length: 5 }, () => token(f, sb.id)));
      const r = await drain(f, sb, tokens, 3 * MAX_PENDING_RELAYS_PER_SANDBOX, true);
      assert.equal(r.capacity, 1, `silent-${i}: ${JSON.stringify(r)}`);
      assert.equal(sb.opens(), MAX_PENDING_RELAYS_PER_SANDBOX);
    }
    // 9 × 32 = 288 relays in flight: more than the shared 256, yet a healthy sandbox
    // gets 17 tunnels at once.
    const healthy = await echoSandbox(f, "healthy");
    const tokens = await Promise.all(Array.from({ length: 6 }, () => token(f, healthy.id)));
    const tunnels = await Promise.all(
      Array.from(
        { length: 17 },
        (_, i) =>
          sendConnect(f.gw.port, { "x-sandbox-id": healthy.id, "x-sandbox-token": tokens[i % 6] }),
      ),
    );
    assert.deepEqual(tunnels.map((t) => t.status), Array(17).fill(200));
    const back = await new Promise<string>((resolve) => {
      tunnels[16].socket.once("data", (d: Buffer) => resolve(d.toString()));
      tunnels[16].socket.resume();
      tunnels[16].socket.write("still served");
    });
    assert.equal(back, "still served");
    for (const t of tunnels) t.socket.destroy();
  });
});

/**
 * A supervisor session (on the supervisor plane, with `byo`'s credentials)
 * that answers every `relay_open` with a refusal saying `error`.
 */
function refusingSupervisor(f: Fixture, byo: ByoSupervisor, error: () => string): Promise<void> {
  const ca = byo.credentials.ca_cert_pem;
  const secure = ca ? grpcTlsCredentials("127.0.0.1", { ca }) : undefined;
  const client = new OpenShellClient(
    `127.0.0.1:${f.gw.supervisorPort}`,
    secure?.credentials ?? grpc.credentials.createInsecure(),
    secure?.options ?? {},
  );
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(byo.metadata)) md.set(k, v);
  const call = client.ConnectSupervisor(md);
  call.on("error", () => {});
  f.cleanup.push(() => {
    call.cancel();
    client.close();
  });
  return new Promise((resolve) => {
    call.on("data", (m: GatewayMessage) => {
      if (m.payload === "session_accepted") resolve();
      if (m.payload === "relay_open") {
        call.write({
          relay_open_result: {
            channel_id: m.relay_open.channel_id,
            success: false,
            error: error(),
          },
        });
      }
    });
    call.write({
      hello: {
        sandbox_id: byo.sandbox.id,
        instance_id: crypto.randomUUID(),
        ssh_host_key_fingerprint: byo.hostKey.fingerprint,
      },
    });
  });
}

Deno.test("CONNECT: a supervisor's capacity refusal is 429 at once, another refusal 502", async () => {
  await withGateway(async (f) => {
    const byo = await byoSupervisor(f.gw, "full");
    const sb = byo.sandbox;
    let error = `${RELAY_CAPACITY_ERROR}: 64 relays open on this sandbox's supervisor`;
    await refusingSupervisor(f, byo, () => error);
    await ready(f, "full");
    const tok = await token(f, sb.id);
    const headers = { "x-sandbox-id": sb.id, "x-sandbox-token": tok };
    const never = new Promise<void>(() => {});
    // The replies name the supervisor's refusal: nobody waited out the 10 s relay deadline.
    const full = await openAndCancel(f.gw.port, headers, never);
    assert.equal(typeof full === "object" && full.status, 429);
    assert.match(
      typeof full === "object" ? full.body : "",
      /could not open the relay: relay capacity/,
    );
    error = "cannot connect to sshd socket";
    const broken = await openAndCancel(f.gw.port, headers, never);
    assert.equal(typeof broken === "object" && broken.status, 502);
    assert.match(typeof broken === "object" ? broken.body : "", /could not open the relay: cannot/);
    assert.match(f.gw.stderr(), /supervisor could not open relay/);
  });
});

/** Resolves when `socket` reads its end. */
function eof(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    socket.once("end", () => resolve());
    socket.once("close", () => resolve());
    socket.resume();
  });
}

Deno.test("RevokeSshSession closes the tunnels opened with that token, and only those", async () => {
  await withGateway(async (f) => {
    const sb = await echoSandbox(f, "revoke");
    const [revoked, kept] = [await token(f, sb.id), await token(f, sb.id)];
    const a = await sendConnect(f.gw.port, { "x-sandbox-id": sb.id, "x-sandbox-token": revoked });
    const b = await sendConnect(f.gw.port, { "x-sandbox-id": sb.id, "x-sandbox-token": kept });
    assert.deepEqual([a.status, b.status], [200, 200]);
    const closed = eof(a.socket);
    assert.deepEqual(await f.api.call(f.api.raw.RevokeSshSession, { token: revoked }), {
      revoked: true,
    });
    await closed;
    const back = await new Promise<string>((resolve) => {
      b.socket.once("data", (d: Buffer) => resolve(d.toString()));
      b.socket.resume();
      b.socket.write("kept");
    });
    assert.equal(back, "kept");
    assert.match(f.gw.stderr(), /closing ssh tunnel.*token revoked/);
    b.socket.destroy();
  });
});

Deno.test("an expiring token closes its tunnel (--ssh-session-ttl-secs 1)", async () => {
  await withGateway(async (f) => {
    const sb = await echoSandbox(f, "expire");
    const t = await sendConnect(f.gw.port, {
      "x-sandbox-id": sb.id,
      "x-sandbox-token": await token(f, sb.id),
    });
    assert.equal(t.status, 200);
    await eof(t.socket); // 1 s of token life, then the next sweep (every 1 s)
    assert.match(f.gw.stderr(), /closing ssh tunnel.*token expired/);
    t.socket.destroy();
  }, { args: ["--ssh-session-ttl-secs", "1"] });
});
