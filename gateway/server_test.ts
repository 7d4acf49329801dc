/**
 * Integration tests: a real gateway process (its exact grants, loopback,
 * ephemeral port) and in-process fake supervisors.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import http2 from "node:http2";
import net from "node:net";
import type { Duplex } from "node:stream";
import * as grpc from "@grpc/grpc-js";
import type { Sandbox, SandboxStreamEvent } from "../core/protocol.ts";
import { gatewayGrants } from "../core/grants.ts";
import { roleCommand } from "../core/launcher.ts";
import { SUPERVISOR_TOKEN_METADATA } from "../core/provisioning.ts";
import { Logger } from "../core/log.ts";
import { Code } from "../core/status.ts";
import { waitFor } from "../core/testing.ts";
import {
  H2_CONNECTION_WINDOW,
  H2_STREAM_WINDOW,
  http2ServersOf,
  MAX_HEADER_LIST_BYTES,
  tuneSessions,
} from "./server.ts";
import {
  type ApiClient,
  apiClient,
  type ByoSupervisor,
  byoSupervisor,
  connectFakeSupervisor,
  type FakeSupervisor,
  sendConnect,
  spawnGateway,
  type TestGateway,
} from "../testing/gateway.ts";

interface Fixture {
  gw: TestGateway;
  api: ApiClient;
}

/** A test body that has not finished by then fails instead of hanging the suite. */
const TEST_DEADLINE_MS = 60_000;

async function withGateway(
  fn: (f: Fixture) => Promise<void>,
  options: Parameters<typeof spawnGateway>[0] = {},
): Promise<void> {
  const gw = await spawnGateway(options);
  const api = apiClient(gw.port);
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      fn({ gw, api }),
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
    api.close();
    await gw.stop();
  }
}

async function create(api: ApiClient, name: string): Promise<Sandbox> {
  return (await api.call(api.raw.CreateSandbox, { name })).sandbox!;
}

async function phase(api: ApiClient, name: string): Promise<string> {
  return (await api.call(api.raw.GetSandbox, { name })).sandbox!.phase;
}

/** Resolves once `name` reaches `want`, using WatchSandbox (no polling). */
function waitPhase(api: ApiClient, id: string, want: string): Promise<Sandbox> {
  return new Promise((resolve, reject) => {
    const call = api.raw.WatchSandbox({ id, follow_status: true });
    call.on("data", (e: SandboxStreamEvent) => {
      if (e.payload === "sandbox" && e.sandbox.phase === want) {
        call.cancel();
        resolve(e.sandbox);
      }
    });
    call.on("error", (err: grpc.ServiceError) => {
      if (err.code !== Code.CANCELLED) reject(err);
    });
  });
}

function echo(relay: Duplex): void {
  relay.on("data", (c: Uint8Array) => relay.write(c));
  relay.on("end", () => relay.end());
}

async function readySandbox(
  f: Fixture,
  name: string,
  onRelay: (relay: Duplex, channel: string) => void = echo,
): Promise<{ sandbox: Sandbox; sup: FakeSupervisor; token: string; byo: ByoSupervisor }> {
  const byo = await byoSupervisor(f.gw, name);
  const sandbox = byo.sandbox;
  const ready = waitPhase(f.api, sandbox.id, "SANDBOX_PHASE_READY");
  const sup = byo.connect({ onRelay });
  await sup.accepted;
  await ready;
  const { token } = await f.api.call(f.api.raw.CreateSshSession, {
    sandbox_id: sandbox.id,
  });
  return { sandbox, sup, token, byo };
}

function readAll(socket: Duplex): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  socket.resume();
  return new Promise((resolve) => {
    socket.once("end", () => resolve(Buffer.concat(chunks)));
    socket.once("close", () => resolve(Buffer.concat(chunks)));
  });
}

async function rejectsCode(p: Promise<unknown>, code: number, text?: RegExp): Promise<void> {
  await assert.rejects(p, (e: grpc.ServiceError) => {
    assert.equal(e.code, code, e.details);
    if (text) assert.match(e.details, text);
    return true;
  });
}

Deno.test("sandbox API: health, create, get, list, delete and field errors", async () => {
  await withGateway(async ({ api }) => {
    const health = await api.call(api.raw.Health, {});
    assert.equal(health.status, "SERVICE_STATUS_HEALTHY");
    assert.match(health.version, /^\d+\.\d+\.\d+/);

    const a = await create(api, "alpha");
    assert.equal(a.phase, "SANDBOX_PHASE_PROVISIONING");
    assert.match(a.id, /^[0-9a-f-]{36}$/);
    const generated = (await api.call(api.raw.CreateSandbox, {})).sandbox!;
    assert.match(generated.name, /^sandbox-[a-z0-9]{6}$/);

    await rejectsCode(create(api, "alpha"), Code.ALREADY_EXISTS, /alpha/);
    await rejectsCode(create(api, "Not_Valid"), Code.INVALID_ARGUMENT, /^name:/);
    await rejectsCode(
      api.call(api.raw.CreateSandbox, { name: "envbad", spec: { environment: { "1X": "v" } } }),
      Code.INVALID_ARGUMENT,
      /spec\.environment/,
    );
    await rejectsCode(api.call(api.raw.GetSandbox, { name: "nope" }), Code.NOT_FOUND);
    await rejectsCode(api.call(api.raw.GetSandbox, { name: "" }), Code.INVALID_ARGUMENT, /name/);

    const list = await api.call(api.raw.ListSandboxes, { limit: 1, offset: 0 });
    assert.deepEqual(list.sandboxes.map((s) => s.name), ["alpha"]);
    const all = await api.call(api.raw.ListSandboxes, {});
    assert.equal(all.sandboxes.length, 2);

    assert.deepEqual(await api.call(api.raw.DeleteSandbox, { name: "alpha" }), { deleted: true });
    assert.deepEqual(await api.call(api.raw.DeleteSandbox, { name: "alpha" }), { deleted: false });
    await rejectsCode(api.call(api.raw.GetSandbox, { name: "alpha" }), Code.NOT_FOUND);
  });
});

Deno.test("readiness: a session promotes to READY, its end demotes to PROVISIONING", async () => {
  await withGateway(async (f) => {
    const byo = await byoSupervisor(f.gw, "ready-me");
    const sb = byo.sandbox;
    const ready = waitPhase(f.api, sb.id, "SANDBOX_PHASE_READY");
    const sup = byo.connect();
    const sessionId = await sup.accepted;
    assert.match(sessionId, /^[0-9a-f-]{36}$/);
    const r = await ready;
    const cond = r.status!.conditions.find((c) => c.type === "Ready")!;
    assert.deepEqual([cond.status, cond.reason], ["True", "SupervisorConnected"]);

    const demoted = waitPhase(f.api, sb.id, "SANDBOX_PHASE_PROVISIONING");
    sup.close();
    const d = await demoted;
    const c2 = d.status!.conditions.find((c) => c.type === "Ready")!;
    assert.deepEqual([c2.status, c2.reason], ["False", "SupervisorDisconnected"]);
  });
});

Deno.test("ConnectSupervisor: unknown sandbox, missing hello, tokens checked, supersede", async () => {
  await withGateway(async (f) => {
    const port = f.gw.supervisorPort;
    // No token: refused before the id is looked up.
    const ghost = connectFakeSupervisor({ port, sandboxId: "no-such-sandbox" });
    assert.equal((await ghost.ended).code, Code.UNAUTHENTICATED);
    ghost.close();
    const nohello = connectFakeSupervisor({ port, sandboxId: "x", hello: false });
    const st = await nohello.ended;
    assert.equal(st.code, Code.INVALID_ARGUMENT);
    assert.match(st.details, /SupervisorHello/);
    nohello.close();

    // Plaintext and --disable-gateway-auth: supervisor tokens are still checked.
    const { sandbox, sup: first, byo } = await readySandbox(f, "twice");
    const anonymous = connectFakeSupervisor({ port, sandboxId: sandbox.id });
    assert.equal((await anonymous.ended).code, Code.UNAUTHENTICATED);
    anonymous.close();
    const forged = byo.connect({ metadata: { [SUPERVISOR_TOKEN_METADATA]: "forged" } });
    assert.equal((await forged.ended).code, Code.PERMISSION_DENIED);
    forged.close();
    // A real token with an unknown id is refused like a forged one (no sandbox-id oracle).
    const lost = byo.connect({ sandboxId: "no-such-sandbox" });
    const lostEnd = await lost.ended;
    assert.equal(lostEnd.code, Code.PERMISSION_DENIED);
    assert.match(lostEnd.details, /credential is not valid for sandbox no-such-sandbox/);
    lost.close();
    assert.equal(first.received.filter((m) => m.payload === "session_accepted").length, 1);
    assert.equal(await phase(f.api, "twice"), "SANDBOX_PHASE_READY");

    const second = byo.connect({ onRelay: echo });
    await second.accepted;
    const old = await first.ended;
    assert.equal(old.code, Code.ABORTED);
    assert.match(old.details, /superseded/);
    assert.equal(await phase(f.api, "twice"), "SANDBOX_PHASE_READY");
    // Relays now go to the newest session.
    const { token } = await f.api.call(f.api.raw.CreateSshSession, {
      sandbox_id: sandbox.id,
    });
    const t = await sendConnect(f.gw.port, {
      "x-sandbox-id": sandbox.id,
      "x-sandbox-token": token,
    });
    assert.equal(t.status, 200);
    const got = readAll(t.socket);
    t.socket.end("via-second");
    assert.equal((await got).toString(), "via-second");
    assert.equal(first.received.filter((m) => m.payload === "relay_open").length, 0);
    first.close();
    second.close();
  });
});

Deno.test("relay: bytes round-trip; supervisor close gives the client EOF", async () => {
  await withGateway(async (f) => {
    const { sandbox, sup, token } = await readySandbox(f, "relay", (relay) => {
      // Collects until "bye" (however the bytes are chunked), answers, and closes.
      let seen = "";
      relay.on("data", (c: Uint8Array) => {
        seen += Buffer.from(c).toString();
        if (seen.endsWith("bye")) relay.end(seen.toUpperCase());
      });
    });
    const t = await sendConnect(f.gw.port, {
      "x-sandbox-id": sandbox.id,
      "x-sandbox-token": token,
    });
    assert.equal(t.status, 200);
    const got = readAll(t.socket);
    t.socket.write("ping-1 ");
    t.socket.write("bye");
    assert.equal((await got).toString(), "PING-1 BYE");
    t.socket.destroy();
    sup.close();
  });
});

Deno.test("relay: a client that goes away ends the supervisor's side", async () => {
  await withGateway(async (f) => {
    let relayEnded!: () => void;
    const ended = new Promise<void>((r) => relayEnded = r);
    const { sandbox, sup, token } = await readySandbox(f, "gone", (relay) => {
      relay.on("data", (c: Uint8Array) => relay.write(c));
      relay.on("close", () => relayEnded());
      relay.on("end", () => relayEnded());
    });
    const t = await sendConnect(f.gw.port, {
      "x-sandbox-id": sandbox.id,
      "x-sandbox-token": token,
    });
    t.socket.write("x");
    const echoed = new Promise((r) => t.socket.once("data", r));
    t.socket.resume();
    await echoed;
    t.socket.destroy();
    await ended;
    sup.close();
  });
});

Deno.test("relay: concurrent tunnels carry their own bytes", async () => {
  await withGateway(async (f) => {
    const { sandbox, sup } = await readySandbox(f, "many");
    const tokens = await Promise.all(
      Array.from(
        { length: 4 },
        () => f.api.call(f.api.raw.CreateSshSession, { sandbox_id: sandbox.id }),
      ),
    );
    const runs = Array.from({ length: 12 }, async (_, i) => {
      const t = await sendConnect(f.gw.port, {
        "x-sandbox-id": sandbox.id,
        "x-sandbox-token": tokens[i % 4].token,
      });
      assert.equal(t.status, 200);
      const payload = Buffer.alloc(200_000 + i * 1000, i + 1);
      const got = readAll(t.socket);
      t.socket.end(payload);
      const back = await got;
      assert.equal(back.length, payload.length, `tunnel ${i}`);
      assert.ok(back.every((b) => b === i + 1), `tunnel ${i} got foreign bytes`);
    });
    await Promise.all(runs);
    sup.close();
  });
});

Deno.test("CONNECT /connect/ssh: 405, 400, 401 (no sandbox-id oracle), 412, 429 and 200", async () => {
  await withGateway(async (f) => {
    const { sandbox, sup, token } = await readySandbox(f, "statuses");
    const id = sandbox.id;
    const status = async (headers: Record<string, string>, opts = {}) =>
      (await sendConnect(f.gw.port, headers, opts)).status;

    assert.equal(
      await status({ "x-sandbox-id": id, "x-sandbox-token": token }, { method: "GET" }),
      405,
    );
    assert.equal(await status({ "x-sandbox-id": id }), 401);
    assert.equal(await status({ "x-sandbox-id": " ", "x-sandbox-token": token }), 400);
    assert.equal(await status({ "x-sandbox-id": "caf\u00e9", "x-sandbox-token": token }), 400);
    // The token is checked first: an unknown id is no different from another sandbox's.
    assert.equal(await status({ "x-sandbox-id": "no-such-id", "x-sandbox-token": token }), 401);
    assert.equal(await status({ "x-sandbox-id": id, "x-sandbox-token": "wrong" }), 401);
    const otherByo = await byoSupervisor(f.gw, "other");
    const other = otherByo.sandbox;
    const otherSup = otherByo.connect();
    await otherSup.accepted;
    await waitPhase(f.api, other.id, "SANDBOX_PHASE_READY");
    const otherToken =
      (await f.api.call(f.api.raw.CreateSshSession, { sandbox_id: other.id })).token;
    assert.equal(await status({ "x-sandbox-id": id, "x-sandbox-token": otherToken }), 401);
    const revoked = (await f.api.call(f.api.raw.CreateSshSession, { sandbox_id: id })).token;
    assert.deepEqual(await f.api.call(f.api.raw.RevokeSshSession, { token: revoked }), {
      revoked: true,
    });
    assert.equal(await status({ "x-sandbox-id": id, "x-sandbox-token": revoked }), 401);

    // 429: a fourth tunnel on one token.
    const open = [];
    for (let i = 0; i < 3; i++) {
      const t = await sendConnect(f.gw.port, { "x-sandbox-id": id, "x-sandbox-token": token });
      assert.equal(t.status, 200);
      open.push(t.socket);
    }
    assert.equal(await status({ "x-sandbox-id": id, "x-sandbox-token": token }), 429);
    for (const s of open) s.destroy();

    // 412: the sandbox lost its supervisor.
    const demoted = waitPhase(f.api, other.id, "SANDBOX_PHASE_PROVISIONING");
    otherSup.close();
    await demoted;
    assert.equal(await status({ "x-sandbox-id": other.id, "x-sandbox-token": otherToken }), 412);
    sup.close();
  });
});

Deno.test("CONNECT: 20 tunnels per sandbox at most", async () => {
  await withGateway(async (f) => {
    const { sandbox, sup } = await readySandbox(f, "cap");
    const open = [];
    for (let i = 0; i < 7; i++) {
      const { token } = await f.api.call(f.api.raw.CreateSshSession, {
        sandbox_id: sandbox.id,
      });
      for (let j = 0; j < 3; j++) {
        const t = await sendConnect(f.gw.port, {
          "x-sandbox-id": sandbox.id,
          "x-sandbox-token": token,
        });
        open.push(t);
      }
    }
    const statuses = open.map((t) => t.status);
    assert.equal(statuses.filter((s) => s === 200).length, 20);
    assert.deepEqual(statuses.slice(20), [429]);
    for (const t of open) t.socket.destroy();
    sup.close();
  });
});

Deno.test("CONNECT: 502 when the supervisor never opens the relay", async () => {
  await withGateway(async (f) => {
    const byo = await byoSupervisor(f.gw, "silent");
    const sb = byo.sandbox;
    const ready = waitPhase(f.api, sb.id, "SANDBOX_PHASE_READY");
    const raw = byo.connect({ ignoreRelays: true });
    await raw.accepted;
    await ready;
    const { token } = await f.api.call(f.api.raw.CreateSshSession, {
      sandbox_id: sb.id,
    });
    const t = await sendConnect(f.gw.port, { "x-sandbox-id": sb.id, "x-sandbox-token": token });
    assert.equal(t.status, 502);
    raw.close();
  });
});

Deno.test("WatchSandbox: snapshot first, then changes; stop_on_terminal ends at READY", async () => {
  await withGateway(async (f) => {
    const byo = await byoSupervisor(f.gw, "watched");
    const sb = byo.sandbox;
    const events: SandboxStreamEvent[] = [];
    const call = f.api.raw.WatchSandbox({
      id: sb.id,
      follow_status: true,
      follow_logs: true,
      stop_on_terminal: true,
    });
    const ended = new Promise<void>((resolve, reject) => {
      call.on("data", (e: SandboxStreamEvent) => events.push(e));
      call.on("end", () => resolve());
      call.on("error", reject);
    });
    await new Promise<void>((r) => call.once("data", () => r()));
    const sup = byo.connect();
    await ended;
    const snapshots = events.filter((e) => e.payload === "sandbox").map((e) =>
      e.payload === "sandbox" ? e.sandbox.phase : ""
    );
    assert.equal(events[0].payload, "sandbox");
    assert.deepEqual(snapshots, ["SANDBOX_PHASE_PROVISIONING", "SANDBOX_PHASE_READY"]);
    assert.ok(
      events.some((e) => e.payload === "log" && /supervisor session connected/.test(e.log.message)),
    );
    const logs = await f.api.call(f.api.raw.GetSandboxLogs, {
      sandbox_id: sb.id,
    });
    assert.ok(logs.logs.some((l) => /sandbox watched created/.test(l.message)));
    sup.close();
  });
});

Deno.test("the gateway survives garbage, resets, half-open and vanishing clients", async () => {
  await withGateway(async (f) => {
    const { sandbox, sup, token, byo } = await readySandbox(f, "tough");
    const raw = async (bytes: Uint8Array | string, hold = false) => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: f.gw.port });
      await c.write(typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes);
      if (!hold) c.close();
      return c;
    };
    await raw(crypto.getRandomValues(new Uint8Array(4096)));
    await raw("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x40\x07garbage-after-preface");
    await raw("GET /healthz HTTP/1.1\r\n"); // never finishes its head
    const halfOpen = await raw("PRI * HTTP/2.0\r\n\r\n", true);
    // A tunnel whose client vanishes mid-transfer.
    const t = await sendConnect(f.gw.port, {
      "x-sandbox-id": sandbox.id,
      "x-sandbox-token": token,
    });
    t.socket.write(Buffer.alloc(1 << 20, 7));
    t.socket.destroy();
    // A supervisor whose connection vanishes mid-stream.
    const flaky = byo.connect();
    await flaky.accepted;
    flaky.close();
    halfOpen.close();
    // Still serving.
    const health = await f.api.call(f.api.raw.Health, {});
    assert.equal(health.status, "SERVICE_STATUS_HEALTHY");
    sup.close();
  });
});

Deno.test("SIGTERM: streams end with UNAVAILABLE and the gateway exits 0", async () => {
  const gw = await spawnGateway();
  try {
    const sup = (await byoSupervisor(gw, "bye")).connect();
    await sup.accepted;
    const code = await gw.stop();
    assert.equal(code, 0, gw.stderr());
    const end = await sup.ended;
    assert.equal(end.code, Code.UNAVAILABLE);
    assert.match(gw.stderr(), /shutting down[\s\S]*stopped/);
    sup.close();
  } finally {
    await gw.kill();
  }
});

Deno.test("a file database keeps sandboxes across a restart; supervisors bring them back to READY", async () => {
  const dir = await Deno.makeTempDir({ prefix: "osdb" });
  try {
    const dbUrl = `sqlite:${dir}/gw.db`;
    const first = await spawnGateway({ dbUrl, stateDir: `${dir}/s1` });
    // Credentials issued by the first gateway (the token is kept hashed in the database).
    const byo = await byoSupervisor(first, "persisted");
    const sb = byo.sandbox;
    assert.equal(await first.stop(), 0);

    const second = await spawnGateway({ dbUrl, stateDir: `${dir}/s2` });
    const api2 = apiClient(second.port);
    try {
      assert.equal(await phase(api2, "persisted"), "SANDBOX_PHASE_PROVISIONING");
      const ready = waitPhase(api2, sb.id, "SANDBOX_PHASE_READY");
      const sup = byo.connect({ port: second.supervisorPort });
      await ready;
      sup.close();
    } finally {
      api2.close();
      await second.stop();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the gateway heartbeats every session on its period; sessions that answer stay", async () => {
  await withGateway(async (f) => {
    // Two sessions that answer each gateway heartbeat with one of their own.
    const counts = [0, 0];
    const enough = Promise.withResolvers<void>();
    const sups: FakeSupervisor[] = [];
    for (const i of [0, 1]) {
      const byo = await byoSupervisor(f.gw, `beat-${i}`);
      const sup: FakeSupervisor = byo.connect({
        onMessage: (m) => {
          if (m.payload !== "heartbeat") return;
          counts[i]++;
          sup.heartbeat();
          if (counts.every((n) => n >= 3)) enough.resolve();
        },
      });
      sups.push(sup);
      await sup.accepted;
    }
    await enough.promise; // a period of 1 s: about 3 s
    assert.equal(await phase(f.api, "beat-0"), "SANDBOX_PHASE_READY");
    assert.equal(await phase(f.api, "beat-1"), "SANDBOX_PHASE_READY");
    for (const sup of sups) sup.close();
  }, { args: ["--supervisor-heartbeat-secs", "1"] });
});

Deno.test("a supervisor that stops heartbeating is dropped, its sandbox demoted, its tunnels ended", async () => {
  await withGateway(async (f) => {
    // The fake supervisor never heartbeats (frozen) and never closes its relays itself.
    const { sandbox, sup, token } = await readySandbox(f, "quiet", (relay) => {
      relay.on("data", (c: Uint8Array) => relay.write(c));
    });
    const t = await sendConnect(f.gw.port, {
      "x-sandbox-id": sandbox.id,
      "x-sandbox-token": token,
    });
    assert.equal(t.status, 200);
    const echoed = new Promise((r) => t.socket.once("data", r));
    t.socket.resume();
    t.socket.write("x");
    await echoed;
    const eof = new Promise<void>((r) => t.socket.once("end", () => r()));
    const demoted = waitPhase(f.api, sandbox.id, "SANDBOX_PHASE_PROVISIONING");
    const end = await sup.ended; // 3 × max(1 s, 5 s) of silence
    assert.equal(end.code, Code.UNAVAILABLE);
    assert.match(end.details, /heartbeat/);
    await demoted;
    // The tunnel ends with its session instead of hanging until the supervisor resumes.
    await eof;
    assert.match(f.gw.stderr(), /dropped the session and its relays.*relays_closed=1/);
    t.socket.destroy();
    sup.close();
  }, { args: ["--supervisor-heartbeat-secs", "1"] });
});

Deno.test("relay: when the gateway dies the supervisor's side of the relay ends", async () => {
  const gw = await spawnGateway();
  const api = apiClient(gw.port);
  try {
    let relayGone!: () => void;
    const gone = new Promise<void>((r) => relayGone = r);
    const f = { gw, api };
    const { sandbox, sup, token } = await readySandbox(f, "abandoned", (relay) => {
      relay.on("data", (c: Uint8Array) => relay.write(c));
      relay.on("close", () => relayGone());
    });
    const t = await sendConnect(gw.port, { "x-sandbox-id": sandbox.id, "x-sandbox-token": token });
    const echoed = new Promise((r) => t.socket.once("data", r));
    t.socket.resume();
    t.socket.write("x");
    await echoed;
    await gw.kill();
    await gone;
    const end = await sup.ended;
    assert.notEqual(end.code, Code.OK);
    t.socket.destroy();
    sup.close();
  } finally {
    api.close();
    await gw.kill();
  }
});

Deno.test("a gateway whose grants do not cover its flags stops with one clear line", async () => {
  const dir = await Deno.makeTempDir({ prefix: "osgr" });
  try {
    // Grants for port 1; flags ask for port 2 (like a compiled binary run with other flags).
    const grants = gatewayGrants({ listen: { host: "127.0.0.1", port: 1 }, stateDir: dir });
    const [exe, ...args] = roleCommand("gateway", grants, [
      "--bind",
      "127.0.0.1",
      "--port",
      "2",
      "--state-dir",
      dir,
      "--db-url",
      "sqlite::memory:",
      "--drivers",
      "none",
      "--disable-tls",
      "--disable-gateway-auth",
    ]);
    const out = await new Deno.Command(exe, { args, stdout: "piped", stderr: "piped" }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 1, stderr);
    assert.match(stderr, /not permitted to listen on 127\.0\.0\.1:2/);
    assert.equal(stderr.trim().split("\n").length, 1, stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A grpc-js server bound to a Unix socket in `dir`, tuned as the gateway tunes its own. */
async function tunedServer(dir: string, defaultWindows: boolean): Promise<grpc.Server> {
  const server = new grpc.Server();
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(
      `unix:${dir}/g.sock`,
      grpc.ServerCredentials.createInsecure(),
      (err) => err ? reject(err) : resolve(),
    )
  );
  tuneSessions(server, new Logger({ level: "error" }), defaultWindows);
  return server;
}

/**
 * The server's SETTINGS and connection window as a node:http2 client sees
 * them, once `tuned` holds (they follow grpc-js's own first SETTINGS).
 */
async function sessionView(
  dir: string,
  tuned: (settings: http2.Settings, connectionWindow: number) => boolean,
): Promise<{ settings: http2.Settings; connectionWindow: number }> {
  const session = http2.connect("http://gateway", {
    createConnection: () => net.connect({ path: `${dir}/g.sock` }),
  });
  session.on("error", () => {});
  const view = () => ({
    settings: session.remoteSettings,
    connectionWindow: session.state.remoteWindowSize ?? -1,
  });
  try {
    await new Promise((r) => session.once("remoteSettings", r));
    await waitFor("the tuned settings", () => tuned(view().settings, view().connectionWindow), {
      timeoutMs: 5_000,
    });
    return view();
  } finally {
    await new Promise<void>((r) => session.close(() => r()));
  }
}

Deno.test("HTTP/2 tuning: a real session carries the raised windows and the header-list cap", async () => {
  const dir = await Deno.makeTempDir({ prefix: "h2tune" });
  const server = await tunedServer(dir, false);
  try {
    const view = await sessionView(
      dir,
      (s, window) => s.maxHeaderListSize === MAX_HEADER_LIST_BYTES && window > 65_535,
    );
    assert.equal(view.settings.initialWindowSize, H2_STREAM_WINDOW);
    assert.equal(view.connectionWindow, H2_CONNECTION_WINDOW);
  } finally {
    server.forceShutdown();
    await Deno.remove(dir, { recursive: true });
  }
  // OPENSHELL_H2_DEFAULT_WINDOWS: the default windows, the cap still set.
  const dir2 = await Deno.makeTempDir({ prefix: "h2tune" });
  const plain = await tunedServer(dir2, true);
  try {
    const view = await sessionView(dir2, (s) => s.maxHeaderListSize === MAX_HEADER_LIST_BYTES);
    assert.equal(view.settings.initialWindowSize, 65_535);
    assert.equal(view.connectionWindow, 65_535);
  } finally {
    plain.forceShutdown();
    await Deno.remove(dir2, { recursive: true });
  }
});

Deno.test("HTTP/2 tuning: without grpc-js's http2Servers the gateway stops at start, saying why", () => {
  const log = new Logger({ level: "error" });
  const unbound = new grpc.Server();
  assert.throws(() => tuneSessions(unbound, log, false), /no private Server\.http2Servers map/);
  const renamed = { http2ServerMap: new Map() } as unknown as grpc.Server;
  assert.throws(
    () => tuneSessions(renamed, log, false),
    /use the @grpc\/grpc-js version in deno\.json/,
  );
  const reshaped = { http2Servers: new Map([[{}, {}]]) } as unknown as grpc.Server;
  assert.throws(() => http2ServersOf(reshaped), /http2Servers/);
  unbound.forceShutdown();
});
