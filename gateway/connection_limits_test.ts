/**
 * Connection limits of a real gateway process (its exact grants, default
 * limits unless a test says otherwise): a flood of idle HTTP/2 connections
 * is capped and a normal client is still served; idle connections are
 * closed without hurting a supervisor session or a client's next call.
 *
 * The flood opens 2,000 sockets from this process and the gateway holds up
 * to three descriptors per forwarded connection (client, internal socket,
 * grpc-js's end): both stay far below this machine's `ulimit -n` (Deno
 * raises its soft limit to the hard one).
 */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import http2 from "node:http2";
import net from "node:net";
import { H2_PREFACE } from "../core/goaway_filter.ts";
import { MAX_CONCURRENT_STREAMS } from "../core/h2_forward.ts";
import { waitFor } from "../core/testing.ts";
import { DEFAULT_MAX_CONNECTIONS } from "./listener.ts";
import { apiClient, byoSupervisor, type FakeSupervisor, spawnGateway } from "../testing/gateway.ts";

const FLOOD = 2_000;
const BATCH = 100;
/** An empty SETTINGS frame: what a client sends right after the preface. */
const SETTINGS = new Uint8Array([0, 0, 0, 4, 0, 0, 0, 0, 0]);

async function fdCount(pid: number): Promise<number> {
  let n = 0;
  for await (const _ of Deno.readDir(`/proc/${pid}/fd`)) n++;
  return n;
}

interface Idle {
  socket: net.Socket;
  closed: boolean;
}

function idleH2(port: number): Promise<Idle> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: "127.0.0.1" });
    const c: Idle = { socket, closed: false };
    socket.on("error", () => {});
    socket.on("data", () => {});
    socket.on("close", () => {
      c.closed = true;
      resolve(c);
    });
    socket.once("connect", () => {
      socket.write(H2_PREFACE);
      socket.write(SETTINGS);
      resolve(c);
    });
  });
}

Deno.test(`${FLOOD} idle HTTP/2 connections are capped and a normal client is still served`, async () => {
  const gw = await spawnGateway({ args: ["--log-level", "info"] });
  const api = apiClient(gw.port);
  const flood: Idle[] = [];
  try {
    assert.equal(
      (await api.call(api.raw.Health, {})).status,
      "SERVICE_STATUS_HEALTHY",
    );
    api.close();
    const baseline = await fdCount(gw.pid);
    const t0 = performance.now();
    for (let i = 0; i < FLOOD; i += BATCH) {
      flood.push(
        ...await Promise.all(
          Array.from({ length: Math.min(BATCH, FLOOD - i) }, () => idleH2(gw.port)),
        ),
      );
    }
    const openAfter = () => flood.filter((c) => !c.closed).length;
    // Every connection past the cap made the oldest idle one close.
    await waitFor("the flood to settle at the cap", () => openAfter() <= DEFAULT_MAX_CONNECTIONS, {
      timeoutMs: 30_000,
    });
    const floodMs = performance.now() - t0;
    const peakFds = await fdCount(gw.pid);
    assert.ok(
      peakFds <= baseline + 3 * DEFAULT_MAX_CONNECTIONS + 32,
      `gateway holds ${peakFds} fds (baseline ${baseline})`,
    );

    const t1 = performance.now();
    const normal = apiClient(gw.port);
    try {
      const h = await normal.call(normal.raw.Health, {});
      assert.equal(h.status, "SERVICE_STATUS_HEALTHY");
    } finally {
      normal.close();
    }
    const healthMs = performance.now() - t1;
    assert.ok(openAfter() <= DEFAULT_MAX_CONNECTIONS);
    console.log(
      `flood: ${FLOOD} connections in ${floodMs.toFixed(0)} ms; ${openAfter()} left open; ` +
        `gateway fds ${baseline} → ${peakFds}; Health under the flood ${healthMs.toFixed(0)} ms`,
    );

    for (const c of flood) c.socket.destroy();
    await waitFor(
      "the gateway's fds back to baseline",
      async () => (await fdCount(gw.pid)) <= baseline + 8,
      { timeoutMs: 30_000 },
    );
    assert.ok(gw.stderr().includes("connection limit reached"), "the cap is logged");
  } finally {
    for (const c of flood) c.socket.destroy();
    api.close();
    const code = await gw.stop();
    assert.equal(code, 0, gw.stderr().slice(-2000));
  }
});

Deno.test("idle connections are closed; a supervisor session stays, a client's next call reconnects", async () => {
  const gw = await spawnGateway({ args: ["--connection-idle-secs", "1"] });
  const api = apiClient(gw.port);
  let sup: FakeSupervisor | undefined;
  try {
    // On the supervisor plane, its own connection (idle-capped like the user API's).
    sup = (await byoSupervisor(gw, "idle")).connect();
    await sup.accepted;
    let ended = false;
    sup.ended.then(() => ended = true);
    const channel = api.raw.getChannel();
    for (let round = 1; round <= 3; round++) {
      const h = await api.call(api.raw.Health, {});
      assert.equal(h.status, "SERVICE_STATUS_HEALTHY", `round ${round}`);
      assert.equal(channel.getConnectivityState(false), grpc.connectivityState.READY);
      // No stream for a second: the gateway closes the connection (no GOAWAY).
      await waitFor(
        "the client's idle connection to be closed",
        () => channel.getConnectivityState(false) !== grpc.connectivityState.READY,
        { timeoutMs: 10_000 },
      );
    }
    assert.equal(ended, false, "the supervisor session outlived three idle timeouts");
    sup.heartbeat();
    const got = (await api.call(api.raw.GetSandbox, { name: "idle" })).sandbox!;
    assert.equal(got.phase, "SANDBOX_PHASE_READY");
    assert.equal(gw.stderr().match(/supervisor session accepted/g)?.length, 1, "no reconnect");
    assert.equal(gw.stderr().includes("supervisor session ended"), false);
  } finally {
    sup?.close();
    api.close();
    const code = await gw.stop();
    assert.equal(code, 0, gw.stderr().slice(-2000));
  }
});

Deno.test("the gateway advertises max_concurrent_streams 256 to HTTP/2 clients", async () => {
  const gw = await spawnGateway();
  const session = http2.connect(`http://127.0.0.1:${gw.port}`);
  session.on("error", () => {});
  try {
    const settings = await new Promise<http2.Settings>((r) => session.once("remoteSettings", r));
    assert.equal(settings.maxConcurrentStreams, MAX_CONCURRENT_STREAMS);
  } finally {
    session.destroy();
    const code = await gw.stop();
    assert.equal(code, 0, gw.stderr().slice(-2000));
  }
});
