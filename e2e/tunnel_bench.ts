/**
 * `deno bench -A e2e/tunnel_bench.ts`: the relay through a real gateway
 * process (its exact grants; a fake supervisor in this process answers the
 * relays) next to a raw loopback TCP socket pair in this process.
 *
 * - 1 MiB echo round trip on an already open connection;
 * - opening a connection and echoing its first byte (CONNECT → 200 → relay).
 *
 * The gateway starts when this module loads and is killed when it unloads.
 * `e2e/bench_gateway.ts` has the fuller comparison (payload sizes, windows,
 * exec, READY, memory).
 *
 * @module
 */
import type net from "node:net";
import { echoSession, startRawPeer, startRelayRig, SUPERVISOR_WINDOW_BYTES } from "./benchkit.ts";
import { sendConnect } from "../testing/gateway.ts";

const raw = await startRawPeer();
const rig = await startRelayRig({ clientWindow: SUPERVISOR_WINDOW_BYTES });
globalThis.addEventListener("unload", () => {
  // No async work runs at unload: kill synchronously and remove the state dir here.
  try {
    Deno.kill(rig.gw.pid, "SIGKILL");
  } catch { /* already gone */ }
  try {
    Deno.removeSync(rig.gw.stateDir, { recursive: true });
  } catch { /* already removed */ }
});

const rawEcho = echoSession(await raw.connect());
const relayEcho = echoSession(await rig.tunnel());
const MiB = 1024 * 1024;

Deno.bench({
  name: "raw TCP (baseline)",
  group: "1 MiB echo round trip on an open connection",
  baseline: true,
  n: 40,
  warmup: 5,
  async fn() {
    await rawEcho.roundTrip(MiB);
  },
});

Deno.bench({
  name: "CONNECT tunnel → gateway → relay",
  group: "1 MiB echo round trip on an open connection",
  n: 40,
  warmup: 5,
  async fn() {
    await relayEcho.roundTrip(MiB);
  },
});

async function openEchoClose(b: Deno.BenchContext, open: () => Promise<net.Socket>) {
  b.start();
  const echo = echoSession(await open());
  await echo.roundTrip(1);
  b.end();
  await echo.close();
}

Deno.bench({
  name: "raw TCP connect (baseline)",
  group: "open a connection + 1-byte echo",
  baseline: true,
  n: 40,
  warmup: 5,
  async fn(b) {
    await openEchoClose(b, () => raw.connect());
  },
});

Deno.bench({
  name: "CONNECT → 200 → relay",
  group: "open a connection + 1-byte echo",
  n: 40,
  warmup: 5,
  async fn(b) {
    const headers = { "x-sandbox-id": rig.sandbox.id, "x-sandbox-token": await rig.token() };
    await openEchoClose(b, async () => {
      const t = await sendConnect(rig.gw.port, headers);
      if (t.status !== 200) throw new Error(`CONNECT answered ${t.head}`);
      t.socket.setNoDelay(true);
      return t.socket;
    });
  },
});
