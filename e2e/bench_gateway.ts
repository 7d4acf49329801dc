/**
 * Relay-plane benchmarks against a real gateway process (started through
 * `deno run` with its exact grants), each printed side by side with a
 * baseline measured in the same process at the same time:
 *
 * - `throughput`: MB/s through CONNECT tunnel → gateway → relay → fake
 *   supervisor (in this process), upload and download, for a few payload
 *   sizes; baseline: a raw loopback TCP socket pair in this process.
 * - `windows`: the same with HTTP/2 default windows vs the raised ones, for
 *   relay frames of 16/64/256 KiB (`OPENSHELL_H2_DEFAULT_WINDOWS`,
 *   `OPENSHELL_RELAY_CHUNK_BYTES`, see gateway/tuning.ts).
 * - `hop`: the same, 64 MiB, with the listeners forwarding HTTP/2 to
 *   grpc-js through the internal Unix socket (`OPENSHELL_H2_UNIX_HOP=1`, the
 *   old way) vs in process.
 * - `h2`: the ceiling under the relay: `node:http2` alone (one stream, a
 *   server and a client in this process, the gateway's windows, 64 KiB
 *   writes as the other sections make, no gRPC, no relay) vs a raw TCP socket pair, round-robin.
 * - `latency`: CONNECT → 200 → first byte round trip vs a raw TCP connect
 *   and echo; and a 1-byte round trip on an open tunnel vs raw TCP.
 * - `exec`: `ExecSandbox` of `true` (real supervisor and OpenSSH's sshd;
 *   needs root or a prepared `sandbox` user) vs the same exec by an
 *   in-process `ssh2` client straight on the supervisor's sshd socket (what
 *   the gateway does, minus gRPC and the relay), and spawning `sh -c true`.
 * - `ready`: CreateSandbox → supervisor hello → READY with a fake
 *   supervisor vs a fresh gRPC channel's first unary call.
 * - `memory`: the gateway's RSS per idle supervisor session, per idle gRPC
 *   channel and per idle raw TCP connection (VmRSS before and after).
 *
 * Usage: `deno run -A e2e/bench_gateway.ts [SECTION...]` (default: all).
 * Figures are MB/s = 10^6 bytes/s; times in ms. No figure is asserted.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import http2 from "node:http2";
import net from "node:net";
import ssh2 from "ssh2";
import { fingerprintOfBlob } from "../core/ssh_keys.ts";
import type { ExecSandboxEvent } from "../core/protocol.ts";
import { OpenShellClient, unaryCall } from "../core/protocol.ts";
import { RELAY_CHUNK_BYTES } from "../core/bridge.ts";
import { H2_CONNECTION_WINDOW, H2_STREAM_WINDOW } from "../gateway/server.ts";
import {
  type ApiClient,
  apiClient,
  type ByoSupervisor,
  byoSupervisor,
  sendConnect,
  spawnGateway,
  type TestGateway,
} from "../testing/gateway.ts";
import {
  ENV_H2_DEFAULT_WINDOWS,
  ENV_H2_UNIX_HOP,
  ENV_RELAY_CHUNK_BYTES,
} from "../gateway/tuning.ts";
import {
  ensureSandboxUser,
  gatewayApi,
  startSupervisor,
  type SupervisorProcess,
} from "../testing/supervisor.ts";
import {
  closeSocket,
  cpuMs,
  echoSession,
  fixed,
  mbps,
  type RawPeer,
  type RelayRig,
  rssKiB,
  startRawPeer,
  startRelayRig,
  stats,
  SUPERVISOR_WINDOW_BYTES,
  table,
  timeDownload,
  timeUpload,
  waitPhase,
  writeBytes,
} from "./benchkit.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** The sections, in the order they run. */
export const SECTIONS = [
  "throughput",
  "windows",
  "hop",
  "h2",
  "latency",
  "exec",
  "ready",
  "memory",
] as const;
type Section = typeof SECTIONS[number];

/** Cleanups of everything started so far, run on exit or Ctrl-C. */
const cleanups = new Set<() => Promise<void>>();

async function withResource<T extends { close(): Promise<void> }, R>(
  resource: T,
  fn: (r: T) => Promise<R>,
): Promise<R> {
  const close = () => resource.close();
  cleanups.add(close);
  try {
    return await fn(resource);
  } finally {
    cleanups.delete(close);
    await close();
  }
}

function gatewayResource(gw: TestGateway): { gw: TestGateway; close(): Promise<void> } {
  return { gw, close: () => gw.shutdown() };
}

function heading(title: string): void {
  console.log(`\n## ${title}\n`);
}

function size(bytes: number): string {
  return bytes >= MiB ? `${bytes / MiB} MiB` : `${bytes / KiB} KiB`;
}

type Direction = "upload" | "download";

/** One timed transfer: its rate, and the CPU time the gateway and this process spent. */
interface Sample {
  mbps: number;
  bytes: number;
  /** Gateway CPU ms (0 for the raw path). */
  gatewayCpu: number;
  /** This process's CPU ms (client, and the raw peer or the fake supervisor). */
  selfCpu: number;
}

async function transfer(
  connect: () => Promise<net.Socket>,
  direction: Direction,
  bytes: number,
  gatewayPid?: number,
): Promise<Sample> {
  const socket = await connect();
  try {
    const g0 = gatewayPid ? await cpuMs(gatewayPid) : 0;
    const s0 = await cpuMs(Deno.pid);
    const ms = direction === "upload"
      ? await timeUpload(socket, bytes)
      : await timeDownload(socket, bytes);
    const s1 = await cpuMs(Deno.pid);
    const g1 = gatewayPid ? await cpuMs(gatewayPid) : 0;
    return { mbps: mbps(bytes, ms), bytes, gatewayCpu: g1 - g0, selfCpu: s1 - s0 };
  } finally {
    await closeSocket(socket);
  }
}

/** Median MB/s of samples. */
function rate(samples: Sample[]): string {
  return fixed(stats(samples.map((s) => s.mbps)).median);
}

/** Median rate of `samples` as a percentage of the median rate of `baseline`. */
function percentOf(samples: Sample[], baseline: Sample[]): string {
  const ratio = stats(samples.map((x) => x.mbps)).median /
    stats(baseline.map((x) => x.mbps)).median;
  return `${fixed(ratio * 100, 0)} %`;
}

/** CPU ms per MiB moved, over all samples. */
function cpuPerMiB(samples: Sample[], which: "gatewayCpu" | "selfCpu"): string {
  const cpu = samples.reduce((n, s) => n + s[which], 0);
  const mib = samples.reduce((n, s) => n + s.bytes, 0) / MiB;
  return fixed(cpu / mib, 2);
}

async function throughput(): Promise<void> {
  heading("Relay throughput (MB/s, median of runs; production windows and 64 KiB frames)");
  await withResource(await startRawPeer(), async (raw) => {
    await withResource(
      await startRelayRig({ clientWindow: SUPERVISOR_WINDOW_BYTES }),
      async (rig) => {
        const paths = { raw: () => raw.connect(), relay: () => rig.tunnel() };
        for (const d of ["upload", "download"] as const) {
          await transfer(paths.raw, d, 4 * MiB);
          await transfer(paths.relay, d, 4 * MiB);
        }
        const rows: (string | number)[][] = [];
        for (const [bytes, runs] of [[1 * MiB, 7], [8 * MiB, 5], [64 * MiB, 3]]) {
          for (const d of ["upload", "download"] as const) {
            const r: Sample[] = [];
            const g: Sample[] = [];
            for (let i = 0; i < runs; i++) {
              r.push(await transfer(paths.raw, d, bytes));
              g.push(await transfer(paths.relay, d, bytes, rig.gw.pid));
            }
            rows.push([
              size(bytes),
              d,
              runs,
              rate(r),
              rate(g),
              percentOf(g, r),
              cpuPerMiB(r, "selfCpu"),
              cpuPerMiB(g, "gatewayCpu"),
              cpuPerMiB(g, "selfCpu"),
            ]);
          }
        }
        console.log(
          table([
            "payload",
            "direction",
            "runs",
            "raw TCP MB/s (baseline)",
            "relay MB/s",
            "relay/raw",
            "raw: CPU ms/MiB, both ends",
            "relay: gateway CPU ms/MiB",
            "relay: client + fake supervisor CPU ms/MiB",
          ], rows),
        );
      },
    );
  });
}

/** One gateway configuration of a side-by-side comparison. */
interface RigCase {
  /** First column of its row. */
  label: string;
  /** Gateway environment (tuning knobs). */
  env: Record<string, string>;
  /** The fake supervisor's flow-control window (undefined: grpc-js default). */
  clientWindow?: number;
  /** Largest relay frame both ends send. */
  chunk: number;
}

/**
 * Starts one gateway per case, then moves `bytes` up and down through each,
 * round-robin for `rounds` rounds with a raw TCP pair in every round, and
 * prints a row per case plus the raw baseline.
 */
async function compareRigs(
  cases: RigCase[],
  bytes: number,
  rounds: number,
  columns: { first: string; chunk: boolean },
): Promise<void> {
  await withResource(await startRawPeer(), async (raw) => {
    const rigs: RelayRig[] = [];
    const all = { close: async () => void await Promise.all(rigs.map((r) => r.close())) };
    await withResource(all, async () => {
      // Started one after the other: each start is CPU-bound on two cores anyway.
      for (const c of cases) {
        rigs.push(
          await startRelayRig({
            env: { ...c.env, [ENV_RELAY_CHUNK_BYTES]: String(c.chunk) },
            clientWindow: c.clientWindow,
            chunkBytes: c.chunk,
          }),
        );
      }
      const up = cases.map(() => [] as Sample[]);
      const down = cases.map(() => [] as Sample[]);
      const rawUp: Sample[] = [];
      const rawDown: Sample[] = [];
      for (const rig of rigs) await transfer(() => rig.tunnel(), "download", 2 * MiB);
      for (let r = 0; r < rounds; r++) {
        for (let i = 0; i < rigs.length; i++) {
          const pid = rigs[i].gw.pid;
          up[i].push(await transfer(() => rigs[i].tunnel(), "upload", bytes, pid));
          down[i].push(await transfer(() => rigs[i].tunnel(), "download", bytes, pid));
        }
        rawUp.push(await transfer(() => raw.connect(), "upload", bytes));
        rawDown.push(await transfer(() => raw.connect(), "download", bytes));
      }
      const chunkCell = (c: string | number) => columns.chunk ? [c] : [];
      const rows: (string | number)[][] = cases.map((c, i) => [
        c.label,
        ...chunkCell(size(c.chunk)),
        rate(up[i]),
        rate(down[i]),
        cpuPerMiB(up[i], "gatewayCpu"),
        cpuPerMiB(down[i], "gatewayCpu"),
      ]);
      rows.push([
        "raw TCP, same process (baseline; CPU of both ends)",
        ...chunkCell("-"),
        rate(rawUp),
        rate(rawDown),
        cpuPerMiB(rawUp, "selfCpu"),
        cpuPerMiB(rawDown, "selfCpu"),
      ]);
      console.log(table([
        columns.first,
        ...chunkCell("relay frame") as string[],
        "upload MB/s",
        "download MB/s",
        "gateway CPU ms/MiB up",
        "down",
      ], rows));
    });
  });
}

async function windows(): Promise<void> {
  const bytes = 16 * MiB;
  const rounds = 5;
  heading(
    `Flow-control windows and relay frame size (MB/s, ${size(bytes)}, median of ${rounds} ` +
      "rounds; every configuration has its own gateway, measured round-robin)",
  );
  const configs: { label: string; env: Record<string, string>; clientWindow?: number }[] = [
    {
      label: "default (64 KiB both sides)",
      env: { [ENV_H2_DEFAULT_WINDOWS]: "1" },
    },
    {
      label: `raised (gateway ${size(H2_STREAM_WINDOW)}/${size(H2_CONNECTION_WINDOW)}, ` +
        `supervisor ${size(SUPERVISOR_WINDOW_BYTES)})`,
      env: {},
      clientWindow: SUPERVISOR_WINDOW_BYTES,
    },
  ];
  const cases = configs.flatMap((config) =>
    [16 * KiB, 64 * KiB, 256 * KiB].map((chunk) => ({
      ...config,
      label: config.label +
        (chunk === RELAY_CHUNK_BYTES && config.clientWindow ? " (production)" : ""),
      chunk,
    }))
  );
  await compareRigs(cases, bytes, rounds, { first: "HTTP/2 windows", chunk: true });
}

async function hop(): Promise<void> {
  const bytes = 64 * MiB;
  const rounds = 5;
  heading(
    `HTTP/2 into grpc-js through the internal Unix socket or in process (MB/s, ${size(bytes)}, ` +
      `median of ${rounds} rounds; one gateway each, measured round-robin)`,
  );
  const common = { clientWindow: SUPERVISOR_WINDOW_BYTES, chunk: RELAY_CHUNK_BYTES };
  await compareRigs(
    [
      {
        ...common,
        label: `Unix socket hop (before; ${ENV_H2_UNIX_HOP}=1)`,
        env: { [ENV_H2_UNIX_HOP]: "1" },
      },
      { ...common, label: "in process (the default)", env: {} },
    ],
    bytes,
    rounds,
    { first: "listener → grpc-js", chunk: false },
  );
}

/** An HTTP/2 server and client in this process (cleartext), with the gateway's windows. */
async function h2Pair(): Promise<{
  client: http2.ClientHttp2Session;
  close(): Promise<void>;
}> {
  const settings = { initialWindowSize: H2_STREAM_WINDOW };
  const server = http2.createServer({ settings });
  server.on("stream", (stream: http2.ServerHttp2Stream, headers) => {
    const down = Number(headers["x-download"] ?? 0);
    stream.respond({ ":status": 200 });
    if (down > 0) {
      void writeBytes(stream, down).then(() => stream.end(), () => stream.destroy());
      stream.resume();
      return;
    }
    let n = 0;
    stream.on("data", (d: Uint8Array) => n += d.length);
    stream.on("end", () => stream.end(String(n)));
  });
  server.on("session", (session) => session.setLocalWindowSize(H2_CONNECTION_WINDOW));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as net.AddressInfo).port;
  const client = http2.connect(`http://127.0.0.1:${port}`, { settings });
  client.on("error", () => {});
  await new Promise<void>((r) => client.once("connect", () => r()));
  client.setLocalWindowSize(H2_CONNECTION_WINDOW);
  return {
    client,
    close: async () => {
      client.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** One stream moving `bytes` up (request body) or down (response body). */
async function h2Transfer(
  client: http2.ClientHttp2Session,
  direction: Direction,
  bytes: number,
): Promise<Sample> {
  const s0 = await cpuMs(Deno.pid);
  const t0 = performance.now();
  const req = client.request({
    ":method": "POST",
    ":path": "/",
    ...(direction === "download" ? { "x-download": String(bytes) } : {}),
  });
  let got = 0;
  let answer = "";
  const text = new TextDecoder();
  req.on("data", (d: Uint8Array) => {
    got += d.length;
    if (direction === "upload") answer += text.decode(d, { stream: true });
  });
  const ended = new Promise<void>((resolve, reject) => {
    req.once("end", () => resolve());
    req.once("error", reject);
  });
  if (direction === "upload") {
    void writeBytes(req, bytes).then(() => req.end(), () => req.destroy());
  } else req.end();
  await ended;
  const ms = performance.now() - t0;
  const s1 = await cpuMs(Deno.pid);
  const moved = direction === "download" ? got : Number(answer);
  if (moved !== bytes) throw new Error(`h2: ${direction} moved ${moved} of ${bytes} bytes`);
  return { mbps: mbps(bytes, ms), bytes, gatewayCpu: 0, selfCpu: s1 - s0 };
}

async function h2(): Promise<void> {
  const bytes = 64 * MiB;
  const rounds = 5;
  heading(
    `The ceiling: node:http2 alone, one stream, both ends in this process (MB/s, ${size(bytes)}, ` +
      `median of ${rounds} rounds, 64 KiB writes, the gateway's windows)`,
  );
  await withResource(await startRawPeer(), async (raw) => {
    await withResource(await h2Pair(), async ({ client }) => {
      const rows: (string | number)[][] = [];
      const h: Record<Direction, Sample[]> = { upload: [], download: [] };
      const r: Record<Direction, Sample[]> = { upload: [], download: [] };
      await h2Transfer(client, "upload", 4 * MiB);
      for (let i = 0; i < rounds; i++) {
        for (const d of ["upload", "download"] as const) {
          r[d].push(await transfer(() => raw.connect(), d, bytes));
          h[d].push(await h2Transfer(client, d, bytes));
        }
      }
      for (const d of ["upload", "download"] as const) {
        rows.push([
          d,
          rate(r[d]),
          rate(h[d]),
          percentOf(h[d], r[d]),
          cpuPerMiB(r[d], "selfCpu"),
          cpuPerMiB(h[d], "selfCpu"),
        ]);
      }
      console.log(table([
        "direction",
        "raw TCP MB/s (baseline)",
        "node:http2 MB/s",
        "http2/raw",
        "raw: CPU ms/MiB, both ends",
        "http2: CPU ms/MiB, both ends",
      ], rows));
    });
  });
}

async function openAndEcho(
  open: () => Promise<net.Socket>,
): Promise<{ open: number; total: number }> {
  const t0 = performance.now();
  const socket = await open();
  const t1 = performance.now();
  const echo = echoSession(socket);
  await echo.roundTrip(1);
  const t2 = performance.now();
  await echo.close();
  return { open: t1 - t0, total: t2 - t0 };
}

function ms(values: number[]): string {
  const s = stats(values);
  return `${fixed(s.median, 2)} (${fixed(s.p90, 2)})`;
}

async function latency(): Promise<void> {
  heading("Relay latency (ms, median (p90))");
  await withResource(await startRawPeer(), async (raw: RawPeer) => {
    await withResource(
      await startRelayRig({ clientWindow: SUPERVISOR_WINDOW_BYTES }),
      async (rig) => {
        const n = 40;
        const rawT: number[] = [];
        const relayT: number[] = [];
        const relayOpen: number[] = [];
        const rawOpen: number[] = [];
        for (let i = 0; i < n + 5; i++) {
          const headers = { "x-sandbox-id": rig.sandbox.id, "x-sandbox-token": await rig.token() };
          const r = await openAndEcho(() => raw.connect());
          const g = await openAndEcho(async () => {
            const t = await sendConnect(rig.gw.port, headers);
            if (t.status !== 200) throw new Error(`CONNECT answered ${t.head}`);
            t.socket.setNoDelay(true);
            return t.socket;
          });
          if (i < 5) continue;
          rawT.push(r.total);
          rawOpen.push(r.open);
          relayT.push(g.total);
          relayOpen.push(g.open);
        }
        const rtt = async (socket: net.Socket) => {
          const echo = echoSession(socket);
          const out: number[] = [];
          for (let i = 0; i < 220; i++) {
            const t = await echo.roundTrip(1);
            if (i >= 20) out.push(t);
          }
          await echo.close();
          return out;
        };
        const rawRtt = await rtt(await raw.connect());
        const relayRtt = await rtt(await rig.tunnel());
        console.log(table(["measure", "raw TCP (baseline)", "relay"], [
          [`connect (raw) / CONNECT → 200 (relay), n=${n}`, ms(rawOpen), ms(relayOpen)],
          [`… plus first 1-byte echo round trip, n=${n}`, ms(rawT), ms(relayT)],
          ["1-byte round trip on an open connection, n=200", ms(rawRtt), ms(relayRtt)],
        ]));
      },
    );
  });
}

function execTrue(api: OpenShellClient, sandboxId: string): Promise<number> {
  const call = api.ExecSandbox({ sandbox_id: sandboxId, command: ["true"] });
  return new Promise((resolve, reject) => {
    let exit: number | undefined;
    call.on("data", (e: ExecSandboxEvent) => {
      if (e.payload === "exit") exit = e.exit.exit_code;
    });
    call.on("end", () => exit === 0 ? resolve(0) : reject(new Error(`exec exit ${exit}`)));
    call.on("error", reject);
  });
}

/** The parts of ssh2's `Client` the direct baseline uses. */
interface SshClient {
  on(event: "ready" | "close", listener: () => void): SshClient;
  on(event: "error", listener: (err: Error) => void): SshClient;
  connect(config: Record<string, unknown>): void;
  exec(
    command: string,
    callback: (err: Error | undefined, channel: net.Socket) => void,
  ): void;
  end(): void;
}

const { Client: SshClientClass } = ssh2 as unknown as { Client: new () => SshClient };

/**
 * `true` over one SSH connection made in this process straight to the
 * supervisor's sshd socket, with the options the gateway's exec uses
 * (`gateway/exec.ts`: user `sandbox`, "none" auth, the host key checked by
 * its fingerprint): the baseline of `ExecSandbox`.
 */
function sshExecTrue(socketPath: string, hostKeyFingerprint: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const client = new SshClientClass();
    let exit: number | undefined;
    client.on("ready", () => {
      client.exec("true", (err, channel) => {
        if (err) return reject(err);
        channel.on("exit", (code: number) => exit = code);
        channel.on("close", () => client.end());
        channel.resume();
        channel.end();
      });
    });
    client.on("error", reject);
    client.on("close", () => exit === 0 ? resolve() : reject(new Error(`ssh exit ${exit}`)));
    client.connect({
      sock: net.connect(socketPath),
      username: "sandbox",
      authHandler: ["none"],
      readyTimeout: 20_000,
      keepaliveInterval: 0,
      hostVerifier: (key: Uint8Array) => fingerprintOfBlob(key) === hostKeyFingerprint,
    });
  });
}

async function exec(): Promise<void> {
  heading("ExecSandbox latency of `true` (ms)");
  try {
    await ensureSandboxUser();
  } catch (err) {
    console.log(`(skipped: ${err instanceof Error ? err.message : err})`);
    return;
  }
  const gw = await spawnGateway({ args: ["--log-level", "info"] });
  await withResource(gatewayResource(gw), async () => {
    const api = gatewayApi(gw.port);
    const raw = apiClient(gw.port);
    try {
      // A supervisor of our own on the supervisor plane, with its token and host key.
      const byo = await byoSupervisor(gw, "bench-exec");
      const sandbox = byo.sandbox;
      const sup: SupervisorProcess = await startSupervisor({
        endpoint: gw.supervisorEndpoint,
        sandboxId: sandbox.id,
        token: byo.token,
        hostKey: byo.hostKey.privateKey,
      });
      await withResource(sup, async () => {
        await api.waitForPhase(sandbox.id, "SANDBOX_PHASE_READY");
        const fingerprint = byo.hostKey.fingerprint;
        const n = 15;
        const execT: number[] = [];
        const directT: number[] = [];
        const spawnT: number[] = [];
        for (let i = 0; i < n + 2; i++) {
          let t0 = performance.now();
          await execTrue(raw.raw, sandbox.id);
          const e = performance.now() - t0;
          t0 = performance.now();
          await sshExecTrue(sup.socketPath, fingerprint);
          const d = performance.now() - t0;
          t0 = performance.now();
          const out = await new Deno.Command("sh", {
            args: ["-c", "true"],
            stdin: "null",
            stdout: "null",
            stderr: "null",
          }).output();
          const s = performance.now() - t0;
          if (!out.success) throw new Error("sh -c true failed");
          if (i < 2) continue;
          execT.push(e);
          directT.push(d);
          spawnT.push(s);
        }
        const row = (label: string, v: number[]) => {
          const s = stats(v);
          return [label, fixed(s.median), fixed(s.p90), fixed(s.min), fixed(s.max)];
        };
        console.log(table(["measure", "median", "p90", "min", "max"], [
          row(`local spawn of sh -c true, n=${n}`, spawnT),
          row(`ssh2 exec of true straight on the sshd socket (baseline), n=${n}`, directT),
          row(`ExecSandbox ["true"] via gateway → relay → sshd, n=${n}`, execT),
        ]));
        const ratio = stats(execT).median / stats(directT).median;
        console.log(`\n(ExecSandbox / direct ssh2 exec, medians: ${fixed(ratio, 2)})`);
      });
    } finally {
      api.close();
      raw.close();
    }
  });
}

async function ready(): Promise<void> {
  heading("Time to READY with a fake supervisor (ms, median (p90))");
  const gw = await spawnGateway({ args: ["--log-level", "info"] });
  await withResource(gatewayResource(gw), async () => {
    const api = apiClient(gw.port);
    try {
      const n = 20;
      const create: number[] = [];
      const hello: number[] = [];
      const total: number[] = [];
      const firstCall: number[] = [];
      for (let i = 0; i < n + 2; i++) {
        // Baseline: a fresh channel (TCP + HTTP/2 handshake) and one unary call.
        let t0 = performance.now();
        const probe = new OpenShellClient(
          `127.0.0.1:${gw.port}`,
          grpc.credentials.createInsecure(),
        );
        await unaryCall(probe, probe.Health, {});
        const f = performance.now() - t0;
        probe.close();

        t0 = performance.now();
        const sandbox = (await api.call(api.raw.CreateSandbox, { name: `ready-${i}` })).sandbox!;
        const t1 = performance.now();
        // Its token and host key (a driver hands them over at create): not timed.
        const byo = await byoSupervisor(gw, `ready-${i}`, { create: false });
        const credentialsMs = performance.now() - t1;
        const readyP = waitPhase(api, sandbox.id, "SANDBOX_PHASE_READY");
        const t1b = performance.now();
        const client = new OpenShellClient(
          `127.0.0.1:${gw.supervisorPort}`,
          grpc.credentials.createInsecure(),
        );
        const sup = byo.connect({ client });
        await sup.accepted;
        const t2 = performance.now();
        await readyP;
        const t3 = performance.now();
        sup.close();
        client.close();
        if (i < 2) continue;
        firstCall.push(f);
        create.push(t1 - t0);
        hello.push(t2 - t1b);
        total.push(t3 - t0 - credentialsMs);
      }
      console.log(table(["measure", "ms"], [
        [`fresh gRPC channel + one unary Health call (baseline), n=${n}`, ms(firstCall)],
        ["CreateSandbox call", ms(create)],
        ["fresh channel + hello → session_accepted", ms(hello)],
        ["create → hello → READY seen by WatchSandbox (total)", ms(total)],
      ]));
    } finally {
      api.close();
    }
  });
}

async function settledRss(pid: number): Promise<number> {
  await new Promise((r) => setTimeout(r, 1_500));
  return await rssKiB(pid);
}

async function memory(): Promise<void> {
  const n = 200;
  heading(`Gateway memory per idle connection/session (VmRSS, ${n} of each)`);
  const gw = await spawnGateway({ args: ["--log-level", "info"] });
  await withResource(gatewayResource(gw), async () => {
    const api: ApiClient = apiClient(gw.port);
    const clients: OpenShellClient[] = [];
    const sessions: { close(): void }[] = [];
    const sockets: net.Socket[] = [];
    try {
      const byos: ByoSupervisor[] = [];
      for (let i = 0; i < n; i++) byos.push(await byoSupervisor(gw, `mem-${i}`));
      const rss0 = await settledRss(gw.pid);

      // n idle gRPC channels to the supervisor plane (each made one unary call, so HTTP/2 is
      // set up; the plane answers Health with PERMISSION_DENIED, which is an answer).
      for (let i = 0; i < n; i++) {
        const c = new OpenShellClient(
          `127.0.0.1:${gw.supervisorPort}`,
          grpc.credentials.createInsecure(),
        );
        clients.push(c);
        await unaryCall(c, c.Health, {}).catch(() => {});
      }
      const rss1 = await settledRss(gw.pid);

      // One idle supervisor session on each of those channels.
      const accepted: Promise<string>[] = [];
      for (let i = 0; i < n; i++) {
        const s = byos[i].connect({ client: clients[i] });
        sessions.push(s);
        accepted.push(s.accepted);
      }
      await Promise.all(accepted);
      const rss2 = await settledRss(gw.pid);

      // Baseline: n idle raw TCP connections (no bytes sent; closed before the head timeout).
      for (let i = 0; i < n; i++) {
        const s = net.connect({ port: gw.port, host: "127.0.0.1" });
        s.on("error", () => {});
        await new Promise<void>((r) => s.once("connect", () => r()));
        sockets.push(s);
      }
      const rss3 = await settledRss(gw.pid);

      const per = (a: number, b: number) => fixed((b - a) / n, 1);
      console.log(table(["step (in measured order)", "gateway VmRSS (MiB)", "KiB per item"], [
        [`${n} sandboxes created, nothing connected`, fixed(rss0 / 1024), "-"],
        [`+ ${n} idle gRPC channels (one Health call each)`, fixed(rss1 / 1024), per(rss0, rss1)],
        [
          `+ ${n} idle supervisor sessions on those channels`,
          fixed(rss2 / 1024),
          per(rss1, rss2),
        ],
        [`+ ${n} idle raw TCP connections (baseline)`, fixed(rss3 / 1024), per(rss2, rss3)],
      ]));
      console.log(`\n(one idle supervisor = channel + session: ${per(rss0, rss2)} KiB)`);
    } finally {
      for (const s of sockets) s.destroy();
      for (const s of sessions) s.close();
      for (const c of clients) c.close();
      api.close();
    }
  });
}

const RUNNERS: Record<Section, () => Promise<void>> = {
  throughput,
  windows,
  hop,
  h2,
  latency,
  exec,
  ready,
  memory,
};

async function main(): Promise<number> {
  const wanted = Deno.args.length ? Deno.args : [...SECTIONS];
  for (const w of wanted) {
    if (!(SECTIONS as readonly string[]).includes(w)) {
      console.error(`bench_gateway: unknown section "${w}" (expected ${SECTIONS.join(", ")})`);
      return 2;
    }
  }
  // On Ctrl-C/SIGTERM: stop everything started (in-flight transfers then fail; ignore that).
  let interrupted = false;
  const onSignal = async () => {
    if (interrupted) return;
    interrupted = true;
    console.error("\n(interrupted: stopping what this run started)");
    await Promise.all([...cleanups].map((c) => c().catch(() => {})));
    Deno.exit(130);
  };
  globalThis.addEventListener("unhandledrejection", (e) => {
    if (interrupted) e.preventDefault();
  });
  globalThis.addEventListener("error", (e) => {
    if (interrupted) e.preventDefault();
  });
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  console.log(
    `# openshell-deno relay benchmarks (deno ${Deno.version.deno}, ` +
      `${navigator.hardwareConcurrency} CPUs, load ${Deno.loadavg().map((l) => l.toFixed(2))})`,
  );
  const started = performance.now();
  try {
    for (const w of wanted) {
      const t0 = performance.now();
      await RUNNERS[w as Section]();
      console.log(`\n(${w}: ${fixed((performance.now() - t0) / 1000)} s)`);
    }
  } catch (err) {
    if (interrupted) await new Promise(() => {}); // onSignal exits once cleaned up
    throw err;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
  console.log(`\n(total ${fixed((performance.now() - started) / 1000)} s)`);
  return 0;
}

if (import.meta.main) Deno.exit(await main());
