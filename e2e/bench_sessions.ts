/**
 * Idle supervisor sessions at scale, and a relay storm, against ONE real
 * gateway process (`testing/gateway.ts` `spawnGateway`, `--drivers none`),
 * each figure printed beside a baseline from the same run:
 *
 * - `sessions`: simulated supervisors spread over several child processes
 *   (one grpc-js channel, so one HTTP/2 connection, per supervisor; their
 *   sandboxes are created and their supervisor tokens issued through the
 *   user API; heartbeats on, at the interval the gateway announces). At
 *   each level (default 1,000, 5,000 and 10,000 sessions) the bench prints
 *   the gateway's VmRSS, its CPU time over two heartbeat intervals in a row
 *   (the first may still hold the set-up's garbage collection), its open
 *   fds, the supervisors' TCP connections, and the relay-open latency
 *   (`CONNECT /connect/ssh` → `200`, and → the first echoed byte through
 *   the relay) against random sessions, p50/p99. Baselines: the idle
 *   gateway with 0 sessions (RSS, CPU), 10 sessions (latency), and a raw
 *   loopback TCP connect + echo right after each relay open (what the
 *   loaded machine adds at that moment). A level the gateway's open-files
 *   limit cannot hold (at the fds per session measured so far) is replaced
 *   by the largest one it can, and the bench says so: past the limit the
 *   gateway's listener stops accepting (see docs/benchmarks.md).
 * - `storm`: N concurrent relays (default 50, one token each) on one
 *   sandbox whose supervisor runs in its own process: how many opened, were
 *   refused (429 at the per-sandbox tunnel cap) or failed, open p50/p99, and
 *   the TCP connections between that supervisor and the gateway (relays
 *   share the supervisor's HTTP/2 connection: must stay 1). Baseline: one
 *   relay opened alone.
 *
 * The bench raises RLIMIT_NOFILE of itself (so of the gateway and the
 * simulators it starts) with `prlimit` when it runs as root, and passes the
 * gateway the connection cap it needs; both are printed.
 *
 * Usage: `deno run -A e2e/bench_sessions.ts [--levels 1000,5000,10000]
 * [--procs 4] [--samples 200] [--storm 50] [--heartbeat-secs 15]
 * [--sections sessions,storm]`. No figure is asserted.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import type net from "node:net";
import { parseArgs } from "node:util";
import { relayFrameDuplex } from "../core/bridge.ts";
import {
  type GatewayMessage,
  OpenShellClient,
  type RelayFrame,
  type SupervisorMessage,
  type Wire,
} from "../core/protocol.ts";
import { SUPERVISOR_TOKEN_METADATA } from "../core/provisioning.ts";
import { type ApiClient, apiClient, sendConnect, spawnGateway } from "../testing/gateway.ts";
import {
  cpuMs,
  echoSession,
  fixed,
  type RawPeer,
  rssKiB,
  servePeer,
  startRawPeer,
  table,
  waitPhase,
} from "./benchkit.ts";

/** Relay-open attempts give up after this long (counted as failures). */
const OPEN_TIMEOUT_MS = 30_000;
/** Sandboxes a simulator creates at once (CreateSandbox + IssueSupervisorCredentials). */
const CREATE_CONCURRENCY = 16;
/** Sessions a simulator connects at once. */
const CONNECT_CONCURRENCY = 64;
/** How often a simulator's shared heartbeat ticker runs. */
const TICK_MS = 250;
/** Open-file limit the bench asks for (root only): 3 gateway fds per session, plus margin. */
const NOFILE = 65_536;
/** Fds kept free in the gateway beyond its sessions (API clients, relays, log, sqlite). */
const FD_MARGIN = 300;

// ---- small helpers ------------------------------------------------------------------------

/** The `q` quantile (nearest rank) of `values`. */
function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
}

function p50p99(values: readonly number[]): string {
  if (values.length === 0) return "-";
  return `${fixed(quantile(values, 0.5), 2)} / ${fixed(quantile(values, 0.99), 2)}`;
}

/** Runs `fn(i)` for i in [0, n) with at most `limit` in flight; results in order. */
async function pool<R>(n: number, limit: number, fn: (i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(n);
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      out[i] = await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, n) }, worker));
  return out;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Rejects with `what` after `ms` unless `p` settles first. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** A random OpenShell-style SHA256 host key fingerprint (what a supervisor's hello carries). */
function randomFingerprint(): string {
  const b64 = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));
  return `SHA256:${b64.replace(/=+$/, "")}`;
}

/** Lines of a byte stream. */
async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buf = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.trim()) yield line;
    }
  }
}

/** Open fds of process `pid`. */
async function fdCount(pid: number): Promise<number> {
  let n = 0;
  for await (const _ of Deno.readDir(`/proc/${pid}/fd`)) n++;
  return n;
}

/** The open-files limit (soft) of process `pid`. */
async function nofile(pid: number): Promise<number> {
  const limits = await Deno.readTextFile(`/proc/${pid}/limits`);
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(limits);
  return m ? (m[1] === "unlimited" ? Infinity : Number(m[1])) : NaN;
}

/**
 * Established loopback TCP connections whose remote port is `port`, i.e.
 * the client ends of connections to a local server on `port`; only those
 * whose socket belongs to `pid` when given.
 */
async function tcpClientsOf(port: number, pid?: number): Promise<number> {
  const text = await Deno.readTextFile("/proc/net/tcp");
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  const inodes = new Set<string>();
  for (const line of text.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    if (f[2].endsWith(`:${hex}`) && f[3] === "01") inodes.add(f[9]);
  }
  if (pid === undefined) return inodes.size;
  let n = 0;
  for await (const e of Deno.readDir(`/proc/${pid}/fd`)) {
    try {
      const target = await Deno.readLink(`/proc/${pid}/fd/${e.name}`);
      const m = /^socket:\[(\d+)\]$/.exec(target);
      if (m && inodes.has(m[1])) n++;
    } catch { /* closed meanwhile */ }
  }
  return n;
}

// ---- the simulator (child process) ---------------------------------------------------------

/** A command to a simulator (one JSON line on its stdin). */
type SimCommand =
  | { op: "create"; count: number; prefix: string }
  | { op: "connect" }
  | { op: "stats" }
  | { op: "quit" };

/** What a simulator answers to `stats`. */
interface SimStats {
  sessions: number;
  /** Sessions the gateway ended (by status code). */
  ended: Record<string, number>;
  heartbeatsSent: number;
  heartbeatsReceived: number;
  relays: number;
}

/** What a simulator answers to `create` (sandboxes made) and `connect` (sessions accepted). */
interface SimDone {
  ids: string[];
  errors: string[];
}

type SessionCall = grpc.ClientDuplexStream<Wire<SupervisorMessage>, GatewayMessage>;
type RelayCall = grpc.ClientDuplexStream<Wire<RelayFrame>, RelayFrame>;
interface SupervisorStub {
  ConnectSupervisor(md: grpc.Metadata): SessionCall;
  RelayStream(md: grpc.Metadata): RelayCall;
}

/**
 * Runs a simulator: reads commands on stdin, answers each with one JSON line
 * on stdout. Each supervisor has its own channel (a local subchannel pool,
 * as the real supervisor: grpc-js would otherwise share one connection
 * among channels to the same address) and heartbeats every
 * `heartbeatSecs`, staggered over one shared ticker.
 */
async function simulator(port: number, supervisorPort: number): Promise<void> {
  const api = apiClient(port);
  const stats: SimStats = {
    sessions: 0,
    ended: {},
    heartbeatsSent: 0,
    heartbeatsReceived: 0,
    relays: 0,
  };
  const live: { call: SessionCall; heartbeatMs: number; client: grpc.Client }[] = [];
  let tick = 0;
  const ticker = setInterval(() => {
    tick++;
    for (let i = 0; i < live.length; i++) {
      const s = live[i];
      const every = Math.max(1, Math.round(s.heartbeatMs / TICK_MS));
      if ((tick + i) % every !== 0 || s.call.writableEnded) continue;
      s.call.write({ heartbeat: {} });
      stats.heartbeatsSent++;
    }
  }, TICK_MS);

  const connect = (sandboxId: string, token: string): Promise<void> => {
    const client = new OpenShellClient(
      `127.0.0.1:${supervisorPort}`,
      grpc.credentials.createInsecure(),
      { "grpc.use_local_subchannel_pool": 1 },
    );
    const stub = client as unknown as SupervisorStub;
    const md = new grpc.Metadata();
    md.set(SUPERVISOR_TOKEN_METADATA, token);
    const call = stub.ConnectSupervisor(md);
    return new Promise<void>((resolve, reject) => {
      let accepted = false;
      call.on("data", (m: GatewayMessage) => {
        if (m.payload === "session_accepted") {
          accepted = true;
          stats.sessions++;
          live.push({
            call,
            client,
            heartbeatMs: m.session_accepted.heartbeat_interval_secs * 1000,
          });
          resolve();
        } else if (m.payload === "heartbeat") {
          stats.heartbeatsReceived++;
        } else if (m.payload === "relay_open") {
          stats.relays++;
          const relay = stub.RelayStream(md);
          relay.write({ init: { channel_id: m.relay_open.channel_id } });
          const bytes = relayFrameDuplex(relay, { abort: () => relay.cancel() });
          bytes.on("error", () => {});
          servePeer(bytes);
        }
      });
      call.on("error", () => {});
      call.on("status", (s: grpc.StatusObject) => {
        if (!accepted) return reject(new Error(`session refused: ${s.code} ${s.details}`));
        stats.sessions--;
        stats.ended[s.code] = (stats.ended[s.code] ?? 0) + 1;
      });
      call.write({
        hello: {
          sandbox_id: sandboxId,
          instance_id: crypto.randomUUID(),
          ssh_host_key_fingerprint: randomFingerprint(),
        },
      });
    });
  };

  /** Sandboxes created and credentialed, not connected yet. */
  let made: { id: string; token: string }[] = [];
  const create = async (count: number, prefix: string): Promise<SimDone> => {
    const errors: string[] = [];
    const out = await pool(count, CREATE_CONCURRENCY, async (i) => {
      const name = `${prefix}-${i}`;
      try {
        const { sandbox } = await api.call(api.raw.CreateSandbox, { name, spec: {} });
        const creds = await api.call(api.raw.IssueSupervisorCredentials, { name });
        return { id: sandbox!.id, token: creds.token };
      } catch (err) {
        errors.push(`create ${name}: ${err instanceof Error ? err.message : err}`);
        return undefined;
      }
    });
    const ok = out.filter((m) => m !== undefined);
    made.push(...ok);
    return { ids: ok.map((m) => m.id), errors };
  };
  const connectAll = async (): Promise<SimDone> => {
    const todo = made;
    made = [];
    const errors: string[] = [];
    const ids: string[] = [];
    await pool(todo.length, CONNECT_CONCURRENCY, async (i) => {
      try {
        await within(connect(todo[i].id, todo[i].token), OPEN_TIMEOUT_MS, "hello");
        ids.push(todo[i].id);
      } catch (err) {
        errors.push(`connect ${todo[i].id}: ${err instanceof Error ? err.message : err}`);
      }
    });
    return { ids, errors };
  };

  const reply = (v: unknown) => console.log(JSON.stringify(v));
  for await (const line of lines(Deno.stdin.readable)) {
    const cmd = JSON.parse(line) as SimCommand;
    if (cmd.op === "create") reply(await create(cmd.count, cmd.prefix));
    else if (cmd.op === "connect") reply(await connectAll());
    else if (cmd.op === "stats") reply(stats);
    else break;
  }
  clearInterval(ticker);
  for (const s of live) {
    s.call.cancel();
    s.client.close();
  }
  api.close();
}

/** The parent's handle on a simulator process. */
interface Sim {
  pid: number;
  create(count: number, prefix: string): Promise<SimDone>;
  connect(): Promise<SimDone>;
  stats(): Promise<SimStats>;
  close(): Promise<void>;
}

function startSim(port: number, supervisorPort: number): Sim {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL(import.meta.url).pathname,
      "--simulator",
      String(port),
      String(supervisorPort),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const writer = child.stdin.getWriter();
  const replies = lines(child.stdout);
  let chain = Promise.resolve<unknown>(undefined);
  const ask = <T>(cmd: SimCommand): Promise<T> => {
    const p = chain.then(async () => {
      await writer.write(new TextEncoder().encode(JSON.stringify(cmd) + "\n"));
      const r = await replies.next();
      if (r.done) throw new Error(`simulator ${child.pid} exited`);
      return JSON.parse(r.value) as T;
    });
    chain = p.catch(() => {});
    return p;
  };
  let closed: Promise<void> | undefined;
  return {
    pid: child.pid,
    create: (count, prefix) => ask<SimDone>({ op: "create", count, prefix }),
    connect: () => ask<SimDone>({ op: "connect" }),
    stats: () => ask<SimStats>({ op: "stats" }),
    close: () =>
      closed ??= (async () => {
        try {
          await writer.write(new TextEncoder().encode(JSON.stringify({ op: "quit" }) + "\n"));
          await writer.close();
        } catch { /* gone */ }
        const timer = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch { /* gone */ }
        }, 10_000);
        await child.status;
        clearTimeout(timer);
        await replies.return(undefined);
      })(),
  };
}

// ---- relay opens ---------------------------------------------------------------------------

/** One relay open: ms to `200`, ms to the first echoed byte, or why it failed. */
interface Open {
  status: number;
  openMs: number;
  echoMs: number;
  error?: string;
  socket?: net.Socket;
}

/**
 * Opens a relay to `sandboxId` with `token` (CONNECT → 200), then sends one
 * byte through it and waits for its echo. Keeps the tunnel open when `hold`.
 */
async function openRelay(
  port: number,
  sandboxId: string,
  token: string,
  hold = false,
): Promise<Open> {
  const t0 = performance.now();
  try {
    const t = await within(
      sendConnect(port, { "x-sandbox-id": sandboxId, "x-sandbox-token": token }),
      OPEN_TIMEOUT_MS,
      "CONNECT",
    );
    const openMs = performance.now() - t0;
    if (t.status !== 200) return { status: t.status, openMs, echoMs: NaN, error: t.head };
    t.socket.setNoDelay(true);
    const echo = echoSession(t.socket);
    await within(echo.roundTrip(1), OPEN_TIMEOUT_MS, "echo");
    const echoMs = performance.now() - t0;
    if (!hold) await echo.close();
    return { status: 200, openMs, echoMs, socket: hold ? t.socket : undefined };
  } catch (err) {
    return {
      status: 0,
      openMs: NaN,
      echoMs: NaN,
      error: err instanceof Error ? err.message : String(err),
    };
  }
}

async function mintToken(api: ApiClient, sandboxId: string): Promise<string> {
  return (await api.call(api.raw.CreateSshSession, { sandbox_id: sandboxId })).token;
}

/** Relay-open latencies, and the same-moment raw TCP baseline. */
interface Opens {
  /** ms to `200`, and to the first echoed byte, of the relays that opened. */
  open: number[];
  echo: number[];
  /** Raw loopback TCP connect + 1-byte echo, one right after each relay open. */
  raw: number[];
  failures: string[];
}

/**
 * `n` relay opens, one at a time, each to a random one of `ids`; after
 * each, a raw TCP connect + echo to `raw` (when given) measures what the
 * machine itself adds at that moment (other work on the cores shows in
 * both).
 */
async function sequentialOpens(
  api: ApiClient,
  port: number,
  ids: readonly string[],
  n: number,
  raw?: RawPeer,
): Promise<Opens> {
  const out: Opens = { open: [], echo: [], raw: [], failures: [] };
  for (let i = 0; i < n; i++) {
    const id = ids[Math.floor(Math.random() * ids.length)];
    const r = await openRelay(port, id, await mintToken(api, id));
    if (r.status === 200) {
      out.open.push(r.openMs);
      out.echo.push(r.echoMs);
    } else out.failures.push(`${r.status} ${r.error ?? ""}`.trim());
    if (raw) {
      const t0 = performance.now();
      const echo = echoSession(await raw.connect());
      await echo.roundTrip(1);
      out.raw.push(performance.now() - t0);
      await echo.close();
    }
  }
  return out;
}

// ---- the parent ----------------------------------------------------------------------------

interface Options {
  levels: number[];
  procs: number;
  samples: number;
  storm: number;
  heartbeatSecs: number;
  sections: string[];
}

function parseOptions(args: string[]): Options {
  const { values } = parseArgs({
    args,
    options: {
      levels: { type: "string", default: "1000,5000,10000" },
      procs: { type: "string", default: "4" },
      samples: { type: "string", default: "200" },
      storm: { type: "string", default: "50" },
      "heartbeat-secs": { type: "string", default: "15" },
      sections: { type: "string", default: "storm,sessions" },
    },
  });
  const int = (name: string, v: string, min: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name}: expected an integer ≥ ${min}`);
    return n;
  };
  const levels = values.levels.split(",").map((v) => int("levels", v, 1));
  for (let i = 1; i < levels.length; i++) {
    if (levels[i] <= levels[i - 1]) throw new Error("--levels must increase");
  }
  const sections = values.sections.split(",");
  for (const s of sections) {
    if (s !== "storm" && s !== "sessions") throw new Error(`--sections: unknown "${s}"`);
  }
  return {
    levels,
    procs: int("procs", values.procs, 1),
    samples: int("samples", values.samples, 1),
    storm: int("storm", values.storm, 1),
    heartbeatSecs: int("heartbeat-secs", values["heartbeat-secs"], 1),
    sections,
  };
}

/** Raises this process's open-file limit (inherited by what it starts) when root. */
async function raiseNofile(): Promise<string> {
  const before = await nofile(Deno.pid);
  if (before >= NOFILE) return `RLIMIT_NOFILE ${before} (enough)`;
  if (Deno.uid() !== 0) return `RLIMIT_NOFILE ${before} (not root: not raised)`;
  const out = await new Deno.Command("prlimit", {
    args: ["--pid", String(Deno.pid), `--nofile=${NOFILE}:${NOFILE}`],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) {
    return `RLIMIT_NOFILE ${before} (prlimit failed: ${
      new TextDecoder().decode(out.stderr).trim()
    })`;
  }
  return `RLIMIT_NOFILE ${before} → ${await nofile(Deno.pid)} (prlimit on the bench; inherited)`;
}

const cleanups = new Set<() => Promise<void>>();

async function settledRss(pid: number): Promise<number> {
  await sleep(2_000);
  return await rssKiB(pid);
}

async function main(): Promise<number> {
  let o: Options;
  try {
    o = parseOptions(Deno.args);
  } catch (err) {
    console.error(`bench_sessions: ${err instanceof Error ? err.message : err}`);
    return 2;
  }
  let interrupted = false;
  const onSignal = async () => {
    if (interrupted) return;
    interrupted = true;
    console.error("\n(interrupted: stopping what this run started)");
    await Promise.all([...cleanups].map((c) => c().catch(() => {})));
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);

  const limit = await raiseNofile();
  const top = o.levels[o.levels.length - 1];
  const gatewayFlags = [
    "--log-level",
    "info",
    "--supervisor-heartbeat-secs",
    String(o.heartbeatSecs),
    // Every supervisor holds one connection; the default cap (1024) would refuse the rest.
    "--max-connections",
    String(Math.max(1024, top + o.storm + 256)),
  ];
  console.log(
    `# openshell-deno idle sessions and relay storm (deno ${Deno.version.deno}, ` +
      `${navigator.hardwareConcurrency} CPUs, load ${Deno.loadavg().map((l) => l.toFixed(2))})`,
  );
  console.log(`\n${limit}`);
  console.log(
    `gateway flags (beyond spawnGateway's --drivers none --disable-tls ...): ${
      gatewayFlags.join(" ")
    }`,
  );
  console.log(
    "(the per-peer cap, --max-connections-per-peer 64, exempts loopback: everything here is)",
  );
  const started = performance.now();
  try {
    if (o.sections.includes("storm")) await storm(o, gatewayFlags);
    if (o.sections.includes("sessions")) await sessions(o, gatewayFlags);
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
  console.log(`\n(total ${fixed((performance.now() - started) / 1000)} s)`);
  return 0;
}

async function withGateway<R>(
  flags: string[],
  fn: (gw: Awaited<ReturnType<typeof spawnGateway>>, api: ApiClient) => Promise<R>,
): Promise<R> {
  const gw = await spawnGateway({ args: flags, startTimeoutMs: 60_000 });
  const api = apiClient(gw.port);
  const close = async () => {
    api.close();
    await gw.shutdown(10_000);
  };
  cleanups.add(close);
  try {
    return await fn(gw, api);
  } finally {
    cleanups.delete(close);
    await close();
  }
}

async function withSims<R>(
  n: number,
  port: number,
  supervisorPort: number,
  fn: (sims: Sim[]) => Promise<R>,
): Promise<R> {
  const sims = Array.from({ length: n }, () => startSim(port, supervisorPort));
  const close = async () => void await Promise.all(sims.map((s) => s.close()));
  cleanups.add(close);
  try {
    return await fn(sims);
  } finally {
    cleanups.delete(close);
    await close();
  }
}

async function storm(o: Options, flags: string[]): Promise<void> {
  console.log(`\n## Relay storm: ${o.storm} concurrent relays on one sandbox\n`);
  await withGateway(flags, (gw, api) =>
    withSims(1, gw.port, gw.supervisorPort, async ([sim]) => {
      await sim.create(1, "storm");
      const added = await sim.connect();
      if (added.ids.length !== 1) throw new Error(`storm sandbox: ${added.errors.join("; ")}`);
      const id = added.ids[0];
      // Warm-up, then the baseline: relays opened one at a time.
      await sequentialOpens(api, gw.port, [id], 5);
      const alone = await sequentialOpens(api, gw.port, [id], 20);
      const rows: (string | number)[][] = [[
        "one relay at a time (baseline), n=20",
        20,
        alone.open.length,
        0,
        alone.failures.length,
        p50p99(alone.open),
        p50p99(alone.echo),
        "-",
        await tcpClientsOf(gw.supervisorPort, sim.pid),
      ]];
      for (const n of [...new Set([20, o.storm])]) {
        const tokens = await Promise.all(Array.from({ length: n }, () => mintToken(api, id)));
        const relaysBefore = (await sim.stats()).relays;
        const opens = await Promise.all(tokens.map((t) => openRelay(gw.port, id, t, true)));
        const ok = opens.filter((r) => r.status === 200);
        const tcp = await tcpClientsOf(gw.supervisorPort, sim.pid);
        const relays = (await sim.stats()).relays - relaysBefore;
        await Promise.all(ok.map((r) => echoSession(r.socket!).close()));
        const refused = opens.filter((r) => r.status === 429);
        const failed = opens.filter((r) => r.status !== 200 && r.status !== 429);
        for (const f of failed.slice(0, 3)) console.log(`  failure: ${f.status} ${f.error}`);
        rows.push([
          `${n} at once, held open together`,
          n,
          ok.length,
          refused.length,
          failed.length,
          p50p99(ok.map((r) => r.openMs)),
          p50p99(ok.map((r) => r.echoMs)),
          relays,
          tcp,
        ]);
      }
      console.log(table([
        "relays",
        "asked",
        "opened",
        "429 (cap)",
        "failed",
        "CONNECT → 200 ms p50 / p99",
        "→ first echo ms p50 / p99",
        "relay_open seen by the supervisor",
        "supervisor ↔ gateway TCP connections",
      ], rows));
      console.log(
        "\n(429: the tunnel's per-sandbox cap, MAX_CONNECTIONS_PER_SANDBOX = 20 in " +
          "gateway/ssh_tunnel.ts; each relay has its own token, so the per-token cap of 3 is not hit)",
      );
    }));
}

/** What one step of the sessions section measures against. */
interface SessionsRun {
  o: Options;
  gw: Awaited<ReturnType<typeof spawnGateway>>;
  api: ApiClient;
  sims: Sim[];
  /** Sandbox ids with a live session. */
  ids: string[];
  /** Gateway VmRSS (KiB) and open fds with no session. */
  rss0: number;
  fd0: number;
  rows: (string | number)[][];
  batches: number;
  /** A loopback echo server in this process: the raw TCP baseline. */
  raw: RawPeer;
}

/** Sum of the simulators' CPU ms. */
async function simCpu(run: SessionsRun): Promise<number> {
  return (await Promise.all(run.sims.map((s) => cpuMs(s.pid)))).reduce((a, b) => a + b, 0);
}

/** CPU ms of the gateway and of the simulators over one heartbeat interval. */
async function cpuOverInterval(run: SessionsRun): Promise<{ gateway: number; sims: number }> {
  const g0 = await cpuMs(run.gw.pid);
  const s0 = await simCpu(run);
  await sleep(run.o.heartbeatSecs * 1000);
  return { gateway: (await cpuMs(run.gw.pid)) - g0, sims: (await simCpu(run)) - s0 };
}

function cpuCell(run: SessionsRun, ms: number): string {
  return `${ms} (${fixed((ms / (run.o.heartbeatSecs * 1000)) * 100, 1)} %)`;
}

/** Splits `n` over the simulators and runs `fn` on each with its share; the ids made. */
async function spread(
  run: SessionsRun,
  n: number,
  fn: (s: Sim, share: number, i: number) => Promise<SimDone>,
): Promise<string[]> {
  const results = await Promise.all(run.sims.map((s, i) => {
    const share = Math.floor(n / run.sims.length) + (i < n % run.sims.length ? 1 : 0);
    return fn(s, share, i);
  }));
  const errors = results.flatMap((r) => r.errors);
  if (errors.length) console.log(`  ${errors.length} failed; first: ${errors[0]}`);
  return results.flatMap((r) => r.ids);
}

/**
 * Grows to `target` sessions (sandboxes first, then their sessions) and
 * measures; the baseline step measures latency only. True when every
 * session was made.
 */
async function grow(run: SessionsRun, target: number, baseline: boolean): Promise<boolean> {
  const { gw, api, sims, ids, o } = run;
  const need = target - ids.length;
  const b = run.batches++;
  const t0 = performance.now();
  const created = await spread(run, need, (s, share, i) => s.create(share, `b${b}-p${i}`));
  const t1 = performance.now();
  const rssSandboxes = await settledRss(gw.pid);
  const t2 = performance.now();
  ids.push(...await spread(run, need, (s) => s.connect()));
  // One more session, connected last: the gateway marks sessions READY in the order they
  // registered (one queue), so once this one is READY, all are.
  await sims[0].create(1, `probe${b}`);
  const probe = await sims[0].connect();
  if (probe.ids.length === 1) {
    await waitPhase(api, probe.ids[0], "SANDBOX_PHASE_READY");
    ids.push(probe.ids[0]);
  }
  const t3 = performance.now();
  const rss = await settledRss(gw.pid);
  // Two intervals back to back: the first may still hold the set-up's garbage collection.
  const cpu = baseline ? undefined : [await cpuOverInterval(run), await cpuOverInterval(run)];
  // The first relays of a fresh gateway are slow (code not compiled yet): not measured.
  if (baseline) await sequentialOpens(api, gw.port, ids, 30, run.raw);
  const lat = await sequentialOpens(api, gw.port, ids, o.samples, run.raw);
  const st = await Promise.all(sims.map((s) => s.stats()));
  const ended = st.reduce((n, s) => n + Object.values(s.ended).reduce((x, y) => x + y, 0), 0);
  for (const f of lat.failures.slice(0, 3)) console.log(`  relay failure: ${f}`);
  run.rows.push([
    baseline ? `${ids.length} (relay latency baseline)` : String(ids.length),
    `${fixed((t1 - t0) / 1000)} s`,
    `${fixed((t3 - t2) / 1000)} s`,
    fixed(rssSandboxes / 1024),
    fixed(rss / 1024),
    ids.length >= 100 ? fixed((rss - run.rss0) / ids.length, 1) : "-",
    await fdCount(gw.pid),
    await tcpClientsOf(gw.supervisorPort),
    cpu ? cpu.map((c) => cpuCell(run, c.gateway)).join(", ") : "-",
    cpu ? cpu.map((c) => c.sims).join(", ") : "-",
    p50p99(lat.open),
    p50p99(lat.echo),
    p50p99(lat.raw),
    `${lat.failures.length}/${lat.open.length + lat.failures.length}`,
    ended,
  ]);
  console.log(`\n(${ids.length} sessions; ${created.length + 1} sandboxes created in this step)`);
  console.log(table(HEADERS, run.rows));
  return ids.length >= target;
}

/**
 * The largest session count the gateway's open-files limit leaves room
 * for, at the fds per session measured so far (keeping {@link FD_MARGIN}).
 */
async function sessionRoom(run: SessionsRun, limit: number): Promise<[number, number]> {
  const fds = await fdCount(run.gw.pid);
  const perSession = (fds - run.fd0) / run.ids.length;
  return [Math.floor((limit - FD_MARGIN - fds) / perSession) + run.ids.length, perSession];
}

async function sessions(o: Options, flags: string[]): Promise<void> {
  const raw = await startRawPeer();
  const closeRaw = () => raw.close();
  cleanups.add(closeRaw);
  try {
    await sessionsWith(o, flags, raw);
  } finally {
    cleanups.delete(closeRaw);
    await closeRaw();
  }
}

async function sessionsWith(o: Options, flags: string[], raw: RawPeer): Promise<void> {
  console.log(
    `\n## Idle supervisor sessions: ${o.procs} simulator processes, one HTTP/2 connection per ` +
      `supervisor, heartbeats every ${o.heartbeatSecs} s\n`,
  );
  await withGateway(
    flags,
    (gw, api) =>
      withSims(o.procs, gw.port, gw.supervisorPort, async (sims) => {
        const run: SessionsRun = {
          o,
          gw,
          api,
          sims,
          ids: [],
          rss0: await settledRss(gw.pid),
          fd0: await fdCount(gw.pid),
          rows: [],
          batches: 0,
          raw,
        };
        const cpu0 = await cpuOverInterval(run);
        run.rows.push([
          "0 (idle gateway: baseline)",
          "-",
          "-",
          "-",
          fixed(run.rss0 / 1024),
          "-",
          run.fd0,
          0,
          cpuCell(run, cpu0.gateway),
          cpu0.sims,
          "-",
          "-",
          "-",
          "-",
          0,
        ]);
        let complete = await grow(run, Math.min(10, o.levels[0]), true);
        const limit = await nofile(gw.pid);
        for (const level of o.levels) {
          if (!complete) break;
          const [room, perSession] = await sessionRoom(run, limit);
          if (level > room) {
            const reachable = Math.floor(room / 100) * 100;
            console.log(
              `\n(stopping short of ${level}: the gateway's open-files limit is ${limit} and each ` +
                `session holds ${fixed(perSession, 2)} fds, so about ${room} sessions fit; ` +
                `measuring at ${reachable} instead. Raise the hard limit (root with ` +
                "CAP_SYS_RESOURCE: prlimit --nofile) to go further)",
            );
            if (reachable > run.ids.length) await grow(run, reachable, false);
            break;
          }
          complete = await grow(run, level, false);
          if (!complete) {
            console.log(`\n(stopped: only ${run.ids.length} of ${level} sessions could be made)`);
          }
        }
        const st = await Promise.all(sims.map((s) => s.stats()));
        const sent = st.reduce((n, s) => n + s.heartbeatsSent, 0);
        const got = st.reduce((n, s) => n + s.heartbeatsReceived, 0);
        const simRss = await Promise.all(sims.map((s) => rssKiB(s.pid)));
        console.log(
          `\n(heartbeats: the supervisors sent ${sent} and received ${got}; simulator VmRSS MiB: ` +
            `${
              simRss.map((k) => fixed(k / 1024, 0)).join(", ")
            }; gateway open-files limit ${limit})`,
        );
      }),
  );
}

const HEADERS = [
  "sessions",
  "create sandboxes",
  "connect sessions (→ all READY)",
  "gateway VmRSS MiB: sandboxes only",
  "+ sessions",
  "KiB/session over idle",
  "gateway fds",
  "supervisor TCP conns",
  "gateway CPU ms per heartbeat interval (% of a core), two in a row",
  "simulators CPU ms, same intervals",
  "CONNECT → 200 ms p50 / p99",
  "→ first echo ms p50 / p99",
  "raw TCP connect + echo ms p50 / p99 (same moments)",
  "relay failures",
  "sessions ended by the gateway",
];

if (import.meta.main) {
  if (Deno.args[0] === "--simulator") {
    await simulator(Number(Deno.args[1]), Number(Deno.args[2]));
  } else {
    Deno.exit(await main());
  }
}
