/**
 * Shared parts of the relay benchmarks (`e2e/bench_gateway.ts`,
 * `e2e/tunnel_bench.ts`): a byte "peer" that both a raw loopback TCP server
 * and a fake supervisor's relays run, client-side transfers that work on
 * any connected socket (a raw TCP socket or a CONNECT tunnel), a gateway
 * with one READY sandbox behind a fake supervisor, and small statistics and
 * table helpers. Benchmarks only: nothing here asserts a speed.
 *
 * Peer protocol: the client's first 5 bytes are a mode letter and a
 * big-endian uint32 `n`:
 * - `U` (upload): the peer reads and drops everything, and ends its side
 *   when the client's side ended;
 * - `D` (download): the peer writes `n` bytes and ends;
 * - `E` (echo): the peer writes back every byte it reads.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import net from "node:net";
import type { Duplex } from "node:stream";
import { OpenShellClient, type Sandbox, type SandboxStreamEvent } from "../core/protocol.ts";
import {
  type ApiClient,
  apiClient,
  byoSupervisor,
  type FakeSupervisor,
  sendConnect,
  spawnGateway,
  type TestGateway,
} from "../testing/gateway.ts";

/** Size of the buffers the client and the peer write. */
export const WRITE_BYTES = 64 * 1024;
const PAYLOAD = crypto.getRandomValues(new Uint8Array(WRITE_BYTES));
const MiB = 1024 * 1024;

/** Runs the peer side of the benchmark protocol on `d`. */
export function servePeer(d: Duplex): void {
  let head = new Uint8Array(0);
  let mode: "U" | "D" | "E" | undefined;
  let sending = false; // a download is being written; it ends the peer's side itself
  d.on("error", () => {});
  const echo = (chunk: Uint8Array) => {
    if (chunk.length > 0 && !d.write(chunk)) {
      d.pause();
      d.once("drain", () => d.resume());
    }
  };
  d.on("data", (chunk: Uint8Array) => {
    if (mode === "U") return;
    if (mode === "E") return echo(chunk);
    const next = new Uint8Array(head.length + chunk.length);
    next.set(head);
    next.set(chunk, head.length);
    head = next;
    if (head.length < 5) return;
    const letter = String.fromCharCode(head[0]);
    const n = new DataView(head.buffer, head.byteOffset).getUint32(1);
    const rest = head.subarray(5);
    if (letter === "E") {
      mode = "E";
      echo(rest);
    } else if (letter === "D") {
      mode = "U";
      sending = true;
      writeBytes(d, n).then(() => d.end(), () => d.destroy());
    } else if (letter === "U") {
      mode = "U";
    } else {
      d.destroy();
    }
  });
  d.on("end", () => {
    if (!sending) d.end();
  });
}

/** Writes `n` bytes to `d` in {@link WRITE_BYTES} pieces, honouring backpressure. */
export function writeBytes(d: Duplex, n: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let left = n;
    const onError = (err: Error) => reject(err);
    d.once("error", onError);
    const more = () => {
      while (left > 0) {
        const piece = left >= WRITE_BYTES ? PAYLOAD : PAYLOAD.subarray(0, left);
        left -= piece.length;
        if (!d.write(piece)) {
          d.once("drain", more);
          return;
        }
      }
      d.removeListener("error", onError);
      resolve();
    };
    more();
  });
}

function header(mode: "U" | "D" | "E", n: number): Uint8Array {
  const h = new Uint8Array(5);
  h[0] = mode.charCodeAt(0);
  new DataView(h.buffer).setUint32(1, n);
  return h;
}

/** Bytes read from `socket` until its end (rejects on error or early close). */
function drain(socket: net.Socket): Promise<number> {
  return new Promise((resolve, reject) => {
    let got = 0;
    socket.on("data", (c: Uint8Array) => got += c.length);
    socket.once("end", () => resolve(got));
    socket.once("error", reject);
    socket.once("close", () => reject(new Error(`closed after ${got} bytes without an end`)));
    socket.resume();
  });
}

/** Sends `n` bytes to an `U` peer; resolves with the ms until the peer's end came back. */
export async function timeUpload(socket: net.Socket, n: number): Promise<number> {
  const done = drain(socket);
  const t0 = performance.now();
  socket.write(header("U", n));
  await writeBytes(socket, n);
  socket.end();
  await done;
  return performance.now() - t0;
}

/** Asks a peer for `n` bytes; resolves with the ms until all of them and the end arrived. */
export async function timeDownload(socket: net.Socket, n: number): Promise<number> {
  const done = drain(socket);
  const t0 = performance.now();
  socket.write(header("D", n));
  const got = await done;
  const ms = performance.now() - t0;
  if (got !== n) throw new Error(`download: got ${got} of ${n} bytes`);
  socket.end();
  return ms;
}

/** Starts echo mode on a socket; `roundTrip(n)` then times n bytes out and back. */
export function echoSession(socket: net.Socket): {
  roundTrip(n: number): Promise<number>;
  close(): Promise<void>;
} {
  let pending: { left: number; resolve: () => void } | undefined;
  let failure: Error | undefined;
  socket.on("data", (c: Uint8Array) => {
    if (!pending) return;
    pending.left -= c.length;
    if (pending.left <= 0) {
      const p = pending;
      pending = undefined;
      p.resolve();
    }
  });
  socket.on("error", (err: Error) => failure = err);
  socket.resume();
  let first = true;
  return {
    async roundTrip(n: number): Promise<number> {
      if (failure) throw failure;
      const back = new Promise<void>((resolve) => pending = { left: n, resolve });
      const t0 = performance.now();
      if (first) socket.write(header("E", 0));
      first = false;
      await writeBytes(socket, n);
      await back;
      return performance.now() - t0;
    },
    close: () => closeSocket(socket),
  };
}

/** Ends `socket` and resolves once it closed. */
export function closeSocket(socket: net.Socket): Promise<void> {
  if (socket.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    socket.once("close", () => resolve());
    socket.end();
    setTimeout(() => socket.destroy(), 2_000).unref?.();
  });
}

/** A loopback TCP server whose connections run {@link servePeer}. */
export interface RawPeer {
  port: number;
  /** Connects a fresh client socket (paused). */
  connect(): Promise<net.Socket>;
  close(): Promise<void>;
}

/** Starts a {@link RawPeer} on 127.0.0.1. */
export async function startRawPeer(): Promise<RawPeer> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
    s.setNoDelay(true);
    servePeer(s);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    connect: () =>
      new Promise((resolve, reject) => {
        const s = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true }, () => {
          s.removeListener("error", reject);
          s.setNoDelay(true);
          s.pause();
          resolve(s);
        });
        s.once("error", reject);
      }),
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

/** HTTP/2 flow-control window the real supervisor asks for (supervisor/session.ts). */
export const SUPERVISOR_WINDOW_BYTES = 8 * MiB;

/** Options of {@link startRelayRig}. */
export interface RelayRigOptions {
  /** Extra gateway environment (e.g. the `OPENSHELL_*` tuning knobs). */
  env?: Record<string, string>;
  /** The fake supervisor's `grpc-node.flow_control_window`; undefined = grpc-js default. */
  clientWindow?: number;
  /** Largest relay frame the fake supervisor sends. */
  chunkBytes?: number;
}

/** A gateway process with one READY sandbox whose relays run {@link servePeer}. */
export interface RelayRig {
  gw: TestGateway;
  api: ApiClient;
  sandbox: Sandbox;
  /** Mints a token and opens a CONNECT tunnel; the socket is paused. */
  tunnel(): Promise<net.Socket>;
  /** Mints a token (one `CreateSshSession`). */
  token(): Promise<string>;
  close(): Promise<void>;
}

/** Resolves once sandbox `id` reaches `phase` (WatchSandbox; no polling). */
export function waitPhase(api: ApiClient, id: string, phase: string): Promise<Sandbox> {
  return new Promise((resolve, reject) => {
    const call = api.raw.WatchSandbox({ id, follow_status: true });
    let done = false;
    call.on("data", (e: SandboxStreamEvent) => {
      if (!done && e.payload === "sandbox" && e.sandbox.phase === phase) {
        done = true;
        call.cancel();
        resolve(e.sandbox);
      }
    });
    call.on("error", (err: grpc.ServiceError) => {
      if (!done) reject(err);
    });
  });
}

/** Starts a gateway, creates a sandbox and makes it READY with a fake supervisor. */
export async function startRelayRig(options: RelayRigOptions = {}): Promise<RelayRig> {
  const gw = await spawnGateway({ env: options.env, args: ["--log-level", "info"] });
  const api = apiClient(gw.port);
  let sup: FakeSupervisor | undefined;
  let supClient: OpenShellClient | undefined;
  try {
    // A bring-your-own supervisor: its token and host key, on the supervisor plane.
    const byo = await byoSupervisor(gw, "bench");
    const sandbox = byo.sandbox;
    const ready = waitPhase(api, sandbox.id, "SANDBOX_PHASE_READY");
    supClient = new OpenShellClient(
      `127.0.0.1:${gw.supervisorPort}`,
      grpc.credentials.createInsecure(),
      options.clientWindow ? { "grpc-node.flow_control_window": options.clientWindow } : {},
    );
    sup = byo.connect({
      client: supClient,
      chunkBytes: options.chunkBytes,
      onRelay: (relay) => servePeer(relay),
    });
    await sup.accepted;
    await ready;
    const token = async () =>
      (await api.call(api.raw.CreateSshSession, { sandbox_id: sandbox.id })).token;
    return {
      gw,
      api,
      sandbox,
      token,
      tunnel: async () => {
        const t = await sendConnect(gw.port, {
          "x-sandbox-id": sandbox.id,
          "x-sandbox-token": await token(),
        });
        if (t.status !== 200) throw new Error(`CONNECT answered ${t.head}`);
        t.socket.setNoDelay(true);
        return t.socket;
      },
      close: async () => {
        sup?.close();
        supClient?.close();
        api.close();
        await gw.shutdown();
      },
    };
  } catch (err) {
    sup?.close();
    supClient?.close();
    api.close();
    await gw.shutdown();
    throw err;
  }
}

/** Summary statistics of a sample. */
export interface Stats {
  n: number;
  min: number;
  median: number;
  p90: number;
  max: number;
}

/** Statistics of `values` (at least one). */
export function stats(values: readonly number[]): Stats {
  const s = [...values].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * (s.length - 1) + 0.5))];
  return { n: s.length, min: s[0], median: at(0.5), p90: at(0.9), max: s[s.length - 1] };
}

/** MB/s (10^6 bytes per second) for `bytes` moved in `ms`. */
export function mbps(bytes: number, ms: number): number {
  return bytes / 1e6 / (ms / 1000);
}

/** A markdown table with right-aligned columns after the first. */
export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => r[i]?.length ?? 0)));
  const line = (r: string[]) =>
    "| " + r.map((c, i) => i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])).join(" | ") +
    " |";
  const rule = "|" + widths.map((w, i) => i === 0 ? "-".repeat(w + 2) : "-".repeat(w + 1) + ":")
    .join("|") +
    "|";
  return [line(headers), rule, ...cells.slice(1).map(line)].join("\n");
}

/** `x` with `digits` decimals. */
export function fixed(x: number, digits = 1): string {
  return x.toFixed(digits);
}

/** Resident set size of process `pid` in KiB (`VmRSS` of /proc/PID/status). */
export async function rssKiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

/**
 * CPU time (user + system, all threads) process `pid` has used so far, in
 * ms, from /proc/PID/stat (clock ticks of 10 ms: Linux's USER_HZ is 100).
 * Unlike wall time it barely moves when other work shares the cores.
 */
export async function cpuMs(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}
