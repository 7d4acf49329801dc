/**
 * `openshell gateway start|stop|status|logs`: the local gateway that
 * `deno task install` installed (its paths and addresses come from the
 * install manifest the `openshell` wrapper names in `OPENSHELL_INSTALL`).
 *
 * - `start` builds the guest image when it is missing or stale (the
 *   installed image builder, progress on stderr), starts the gateway in the
 *   background with the VM driver and secure defaults (its own PKI), imports
 *   its client bundle as the gateway `local` (as `gateway add --mtls-dir`
 *   does) and makes it active, waits until it answers healthy, and prints
 *   where its state and logs are. A pid file refuses a second start.
 * - `stop` sends SIGTERM (the gateway stops its driver, which stops every
 *   VM), then checks that no process of its state dirs is left (SIGKILL
 *   for any that is).
 * - `status` says whether it runs and answers; `logs` prints (and with
 *   `--follow` keeps printing) its log file.
 *
 * @module
 */
import {
  InstallError,
  type InstallManifest,
  KILL,
  pidFileOwner,
  readManifest,
} from "../../core/install.ts";
import { sleep } from "../../core/backoff.ts";
import { listProcesses } from "../../core/procs.ts";
import { checkPrivateDir, UnsafePathError } from "../../core/secure_fs.ts";
import { stripControls } from "../../core/text.ts";
import { GatewayClient } from "../client.ts";
import { resolveGateway } from "../config.ts";
import type { Context } from "../context.ts";
import { CliError } from "../errors.ts";
import { importMtlsBundle } from "./gateway.ts";

/** The name the local gateway is registered under. */
export const LOCAL_GATEWAY = "local";

/** How long `start` waits for the gateway to answer healthy. */
const START_TIMEOUT_MS = 120_000;
/** How long `stop` waits after SIGTERM before SIGKILL. */
const STOP_TIMEOUT_MS = 30_000;
/** How often state is polled while waiting. */
const POLL_MS = 200;

/** The install this CLI belongs to; a one-line error when there is none. */
export async function installedManifest(ctx: Context): Promise<InstallManifest> {
  const path = ctx.env("OPENSHELL_INSTALL");
  if (!path) {
    throw new CliError(
      `'openshell ${ctx.invocation.spec.id}' runs the installed gateway: install it from a ` +
        "checkout with 'deno task install' and use the openshell it puts on the PATH",
    );
  }
  try {
    return await readManifest(path);
  } catch (err) {
    if (err instanceof InstallError) throw new CliError(err.message);
    throw err;
  }
}

/** Whether `pid` runs (a zombie counts as gone). */
async function alive(pid: number): Promise<boolean> {
  return (await listProcesses()).some((p) => p.pid === pid);
}

/** The programs of a local gateway: the gateway, its driver, qemu and qemu's forwarders. */
const OUR_PROGRAMS = ["/gateway/main.ts", "/driver_vm/main.ts", "qemu-system", "socat"];

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * Whether a command line (NULs as spaces) is one of our programs working in
 * one of `dirs` (the gateway's and the driver's state dirs).
 */
export function isOurProcess(cmd: string, dirs: readonly string[]): boolean {
  if (!OUR_PROGRAMS.some((p) => cmd.includes(p))) return false;
  return dirs.some((d) => new RegExp(`(^|[ =,:])${escapeRegExp(d)}(/|[ ,]|$)`).test(cmd));
}

/** Every process of the local gateway (see {@link isOurProcess}). */
export async function processesUnder(dirs: readonly string[]): Promise<number[]> {
  return (await listProcesses())
    .filter((p) => p.pid !== Deno.pid && isOurProcess(p.args, dirs))
    .map((p) => p.pid);
}

function parentOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

/**
 * As root, the driver runs qemu as an unprivileged user, which must be able
 * to pass through every directory above the driver's state dir: the state
 * base is created 0711, and a directory on the way that others cannot pass
 * through is refused in one line naming the fix.
 */
async function ensureVmReach(m: InstallManifest, uid: number | null): Promise<void> {
  const base = parentOf(m.vm.stateDir);
  try {
    await Deno.lstat(base);
  } catch {
    await Deno.mkdir(base, { recursive: true, mode: 0o711 });
    await Deno.chmod(base, 0o711);
  }
  if (uid !== 0) return;
  for (let p = base; p !== "/"; p = parentOf(p)) {
    const mode = ((await Deno.stat(p)).mode ?? 0) & 0o7777;
    if (!(mode & 0o001)) {
      throw new CliError(
        `qemu runs as an unprivileged user, which cannot pass through ${p} (mode ${
          mode.toString(8).padStart(4, "0")
        }): chmod o+x ${p}, or install with another --state-dir`,
      );
    }
  }
}

async function signal(pids: readonly number[], sig: "TERM" | "KILL"): Promise<void> {
  if (pids.length === 0) return;
  await new Deno.Command(KILL, {
    args: [`-${sig}`, ...pids.map(String)],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).output();
}

async function waitUntil(
  cond: () => Promise<boolean>,
  timeoutMs: number,
  interrupt?: AbortSignal,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await cond()) return true;
    if (interrupt?.aborted) return false;
    await sleep(POLL_MS);
  }
  return await cond();
}

async function fileSize(path: string): Promise<number> {
  try {
    return (await Deno.stat(path)).size;
  } catch {
    return 0;
  }
}

/** The last `n` lines of a file (read from its end, at most 8 MiB). */
export async function tailLines(path: string, n: number): Promise<string[]> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw err;
  }
  try {
    const size = (await file.stat()).size;
    const chunk = 64 * 1024;
    let pos = size;
    let text = "";
    const dec = new TextDecoder();
    while (pos > 0 && size - pos < 8 * 1024 * 1024) {
      const start = Math.max(0, pos - chunk);
      const buf = new Uint8Array(pos - start);
      await file.seek(start, Deno.SeekMode.Start);
      let off = 0;
      while (off < buf.length) {
        const r = await file.read(buf.subarray(off));
        if (r === null) break;
        off += r;
      }
      text = dec.decode(buf.subarray(0, off)) + text;
      pos = start;
      if (text.split("\n").length > n + 1) break;
    }
    const lines = text.split("\n");
    if (lines.at(-1) === "") lines.pop();
    if (pos > 0) lines.shift(); // possibly cut
    return lines.slice(-n);
  } finally {
    file.close();
  }
}

async function buildImage(ctx: Context, m: InstallManifest): Promise<string> {
  ctx.err("Checking the guest image (the first build takes a few minutes)…\n");
  const out = await new Deno.Command(m.imageBuilder, {
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const dir = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "";
  if (!out.success || !dir.startsWith(`${m.vm.cacheDir}/`)) {
    throw new CliError(
      `building the guest image failed (status ${out.code}, messages above); fix that and ` +
        "run 'openshell gateway start' again",
    );
  }
  return dir;
}

/** Whether something accepts TCP connections on `host:port` (an unspecified host: loopback). */
async function listening(host: string, port: number): Promise<boolean> {
  const hostname = ["0.0.0.0", "::", "[::]", ""].includes(host) ? "127.0.0.1" : host;
  try {
    const conn = await Deno.connect({ hostname, port });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

/** Takes the pid file for this start (holding our own pid until the gateway runs). */
async function claimPidFile(m: InstallManifest): Promise<void> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await Deno.writeTextFile(m.gateway.pidFile, `${Deno.pid}\n`, {
        createNew: true,
        mode: 0o600,
      });
      return;
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    }
    const owner = await pidFileOwner(m);
    if (owner?.kind === "gateway") {
      throw new CliError(
        `a local gateway is already running (pid ${owner.pid}, ${m.gateway.url}); ` +
          "stop it with: openshell gateway stop",
      );
    }
    if (owner?.kind === "starting") {
      throw new CliError(`another 'openshell gateway start' is starting it (pid ${owner.pid})`);
    }
    await Deno.remove(m.gateway.pidFile).catch(() => {});
  }
  throw new CliError(`cannot take the pid file ${m.gateway.pidFile}; remove it and try again`);
}

/** The gateway's flags: the install's paths and addresses (its grants allow exactly these). */
export function gatewayArgs(
  m: InstallManifest,
  o: { drivers: "vm" | "none"; runtimeDir?: string; extra?: readonly string[] },
): string[] {
  const g = m.gateway;
  return [
    "--state-dir",
    g.stateDir,
    "--bind",
    g.listen.host,
    "--port",
    String(g.listen.port),
    "--supervisor-bind",
    g.supervisorListen.host,
    "--supervisor-port",
    String(g.supervisorListen.port),
    "--drivers",
    o.drivers,
    "--driver-dir",
    g.driverDir,
    "--vm-driver-state-dir",
    m.vm.stateDir,
    ...(o.runtimeDir ? ["--vm-runtime-dir", o.runtimeDir] : []),
    "--log-file",
    g.logFile,
    ...(o.extra ?? []),
  ];
}

/** The last error line of the log written since `offset`, for a failed start. */
async function lastError(m: InstallManifest, offset: number): Promise<string> {
  const lines = await tailLines(m.gateway.logFile, 200);
  const size = await fileSize(m.gateway.logFile);
  const recent = size >= offset ? lines : [];
  const err = [...recent].reverse().find((l) => / (ERROR|WARN) /.test(l)) ?? recent.at(-1);
  return err ? stripControls(err.replace(/^\S+ (ERROR|WARN) +(gateway: )?/, "")).slice(0, 300) : "";
}

/** Creates the state base (reachable for qemu) and the gateway's private state dir. */
async function prepareStateDirs(m: InstallManifest): Promise<void> {
  try {
    await ensureVmReach(m, null);
    await checkPrivateDir(m.gateway.stateDir, { create: true, what: "state dir" });
  } catch (err) {
    if (err instanceof UnsafePathError) throw new CliError(err.message);
    throw err;
  }
}

/** Refuses to start when something else listens on the install's addresses. */
async function checkAddressesFree(m: InstallManifest): Promise<void> {
  for (const hp of [m.gateway.listen, m.gateway.supervisorListen]) {
    if (await listening(hp.host, hp.port)) {
      throw new CliError(
        `something else already listens on ${hp.host}:${hp.port}, which this install's ` +
          "gateway uses; stop it, or install again with other --gateway-listen/" +
          "--supervisor-listen addresses",
      );
    }
  }
}

/** The gateway process `start` spawned (detached: it outlives the CLI). */
interface StartedGateway {
  pid: number;
  /** Resolves when it exits. */
  status: Promise<Deno.CommandStatus>;
  /** Its exit code, once it has exited. */
  readonly exitCode: number | undefined;
}

/** Spawns the installed gateway in the background with `args`. */
function launchGateway(m: InstallManifest, args: string[]): StartedGateway {
  const child = new Deno.Command(m.bin.gateway, {
    args,
    detached: true,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let exitCode: number | undefined;
  child.status.then((s) => exitCode = s.code);
  child.unref();
  return {
    pid: child.pid,
    status: child.status,
    get exitCode() {
      return exitCode;
    },
  };
}

/**
 * Asks the local gateway for its health: the first time its client bundle
 * is imported as {@link LOCAL_GATEWAY} (which fails until the gateway has
 * written its PKI). {@link lastProblem} says why it is not healthy yet.
 */
class LocalHealth {
  readonly #ctx: Context;
  readonly #m: InstallManifest;
  #client: GatewayClient | undefined;
  /** Why the last check was not healthy. */
  lastProblem = "";

  /** A probe of the gateway `m` installs. */
  constructor(ctx: Context, m: InstallManifest) {
    this.#ctx = ctx;
    this.#m = m;
  }

  /** Whether the gateway answers healthy now. */
  async healthy(): Promise<boolean> {
    if (!this.#client) {
      try {
        await importMtlsBundle(this.#ctx, {
          name: LOCAL_GATEWAY,
          url: this.#m.gateway.url,
          dir: `${this.#m.gateway.stateDir}/pki`,
          force: true,
        });
      } catch (err) {
        this.lastProblem = (err as Error).message;
        return false; // the gateway has not written its PKI yet
      }
      const gw = await resolveGateway(this.#ctx.store, {
        gatewayFlag: LOCAL_GATEWAY,
        env: () => undefined,
      });
      this.#client = new GatewayClient({ endpoint: gw.endpoint, tls: gw.tls, name: LOCAL_GATEWAY });
    }
    try {
      const h = await this.#client.health();
      if (h.status === "SERVICE_STATUS_HEALTHY") return true;
      this.lastProblem = `it answers ${h.status.replace(/^SERVICE_STATUS_/, "").toLowerCase()}`;
    } catch (err) {
      this.lastProblem = (err as Error).message;
    }
    return false;
  }

  /** Closes its client. */
  close(): void {
    this.#client?.close();
  }
}

/**
 * Waits until the started gateway answers healthy. One that exits first
 * (its pid file removed) or is not ready in {@link START_TIMEOUT_MS} is a
 * {@link CliError} naming the reason and the log.
 */
async function awaitHealthy(
  ctx: Context,
  m: InstallManifest,
  o: { gateway: StartedGateway; logOffset: number },
): Promise<void> {
  const g = m.gateway;
  const child = o.gateway;
  const health = new LocalHealth(ctx, m);
  try {
    const ready = await waitUntil(
      async () => child.exitCode !== undefined || await health.healthy(),
      START_TIMEOUT_MS,
      ctx.interrupt,
    );
    // It answered: make sure it was this gateway, still running, and not a stranger.
    if (ready && child.exitCode === undefined && !(await alive(child.pid))) await child.status;
    if (child.exitCode !== undefined) {
      await Deno.remove(g.pidFile).catch(() => {});
      const why = await lastError(m, o.logOffset);
      throw new CliError(
        `the gateway exited with status ${child.exitCode} while starting${why ? `: ${why}` : ""} ` +
          `(full log: ${g.logFile})`,
      );
    }
    if (!ready) {
      throw new CliError(
        `the gateway (pid ${child.pid}) did not become ready in ${START_TIMEOUT_MS / 1000} s` +
          `${health.lastProblem ? ` (${health.lastProblem})` : ""}; see ${g.logFile}, stop it ` +
          "with: openshell gateway stop",
      );
    }
  } finally {
    health.close();
  }
}

/** What `start` prints once the gateway is running. */
function startedText(
  ctx: Context,
  m: InstallManifest,
  o: { pid: number; drivers: "vm" | "none" },
): string {
  const g = m.gateway;
  const s = ctx.style;
  return `Gateway ${s.cyan(LOCAL_GATEWAY)} is running (pid ${o.pid}): ${g.url}` +
    `${o.drivers === "vm" ? ", VM driver ready" : ", no compute driver"}\n` +
    `  state: ${g.stateDir} (its PKI in pki/)\n` +
    (o.drivers === "vm" ? `  VMs:   ${m.vm.stateDir}\n` : "") +
    `  logs:  ${g.logFile} (openshell gateway logs --follow)\n` +
    `It is the active gateway: openshell sandbox create -- echo hi\n` +
    `Stop it and every VM with: openshell gateway stop\n`;
}

/** `gateway start [--drivers vm|none] [-- GATEWAY FLAGS…]`. */
export async function gatewayStartCommand(ctx: Context): Promise<number> {
  const m = await installedManifest(ctx);
  const drivers = ctx.str("drivers") === "none" ? "none" : "vm";
  const g = m.gateway;
  await prepareStateDirs(m);
  await claimPidFile(m);
  let started = false;
  try {
    await ensureVmReach(m, (await Deno.stat(g.pidFile)).uid);
    await checkAddressesFree(m);
    const runtimeDir = drivers === "vm" ? await buildImage(ctx, m) : undefined;
    const logOffset = await fileSize(g.logFile);
    const gateway = launchGateway(
      m,
      gatewayArgs(m, { drivers, runtimeDir, extra: ctx.invocation.trailing }),
    );
    await Deno.writeTextFile(g.pidFile, `${gateway.pid}\n`, { mode: 0o600 });
    started = true;
    ctx.err(`Starting the gateway (pid ${gateway.pid}, log ${g.logFile})…\n`);
    await awaitHealthy(ctx, m, { gateway, logOffset });
    await ctx.store.setActiveGateway(LOCAL_GATEWAY);
    await ctx.out(startedText(ctx, m, { pid: gateway.pid, drivers }));
    return 0;
  } catch (err) {
    if (!started) await Deno.remove(g.pidFile).catch(() => {});
    throw err;
  }
}

/** `gateway stop`: SIGTERM, wait, SIGKILL whatever is left of it. */
export async function gatewayStopCommand(ctx: Context): Promise<number> {
  const m = await installedManifest(ctx);
  const dirs = [m.gateway.stateDir, m.vm.stateDir];
  const owner = await pidFileOwner(m);
  if (owner?.kind === "starting") {
    throw new CliError(
      `'openshell gateway start' (pid ${owner.pid}) is still starting it; ` +
        "wait for it, then stop",
    );
  }
  let stopped: number | undefined;
  if (owner) {
    stopped = owner.pid;
    ctx.err(`Stopping the gateway (pid ${owner.pid}) and its VMs…\n`);
    await signal([owner.pid], "TERM");
    if (!(await waitUntil(async () => !(await alive(owner.pid)), STOP_TIMEOUT_MS))) {
      ctx.err(`It did not stop in ${STOP_TIMEOUT_MS / 1000} s: SIGKILL.\n`);
      await signal([owner.pid], "KILL");
    }
  }
  // The driver exits when the gateway is gone and takes its qemus along; wait for that,
  // then make sure (a crashed gateway may have left them).
  const gone = await waitUntil(async () => (await processesUnder(dirs)).length === 0, 15_000);
  let killed = 0;
  if (!gone) {
    const left = await processesUnder(dirs);
    killed = left.length;
    await signal(left, "KILL");
    await waitUntil(async () => (await processesUnder(dirs)).length === 0, 5_000);
  }
  const remaining = await processesUnder(dirs);
  await Deno.remove(m.gateway.pidFile).catch(() => {});
  if (remaining.length > 0) {
    throw new CliError(
      `processes of the local gateway are still running: ${remaining.join(" ")} ` +
        `(kill -9 ${remaining.join(" ")})`,
    );
  }
  const extra = killed > 0 ? ` (killed ${killed} leftover process${killed === 1 ? "" : "es"})` : "";
  await ctx.out(
    stopped
      ? `Stopped gateway ${LOCAL_GATEWAY} (pid ${stopped}); no driver or VM left${extra}.\n`
      : `No local gateway was running${extra}.\n`,
  );
  return 0;
}

/** `gateway status`: exit 0 when it runs and answers, 1 otherwise. */
export async function gatewayStatusCommand(ctx: Context): Promise<number> {
  const m = await installedManifest(ctx);
  const g = m.gateway;
  const owner = await pidFileOwner(m);
  const s = ctx.style;
  if (!owner || owner.kind !== "gateway") {
    await ctx.out(
      `Local gateway: ${s.yellow(owner ? "starting" : "not running")} ` +
        `(start it with: openshell gateway start)\n  logs:  ${g.logFile}\n`,
    );
    return 1;
  }
  let health = "";
  let ok = false;
  try {
    const gw = await resolveGateway(ctx.store, {
      gatewayFlag: LOCAL_GATEWAY,
      env: () => undefined,
    });
    const client = new GatewayClient({ endpoint: gw.endpoint, tls: gw.tls, name: LOCAL_GATEWAY });
    try {
      const h = await client.health();
      ok = h.status === "SERVICE_STATUS_HEALTHY";
      health = ok
        ? s.green("Connected")
        : s.yellow(`Connected (${h.status.replace(/^SERVICE_STATUS_/, "").toLowerCase()})`);
    } finally {
      client.close();
    }
  } catch (err) {
    health = s.red(`not answering: ${(err as Error).message}`);
  }
  await ctx.out(
    `Local gateway: running (pid ${owner.pid}), ${g.url}, ${health}\n` +
      `  state: ${g.stateDir}\n  VMs:   ${m.vm.stateDir}\n  logs:  ${g.logFile}\n`,
  );
  return ok ? 0 : 1;
}

/** `gateway logs [-n N] [--follow]`. */
export async function gatewayLogsCommand(ctx: Context): Promise<number> {
  const m = await installedManifest(ctx);
  const path = m.gateway.logFile;
  const n = ctx.num("lines") ?? 100;
  let lines = await tailLines(path, n);
  if (lines.length < n) lines = [...(await tailLines(`${path}.1`, n - lines.length)), ...lines];
  if (lines.length === 0 && !ctx.flag("follow")) {
    ctx.err(`No gateway log yet (${path}); start it with: openshell gateway start\n`);
    return 0;
  }
  for (const l of lines) await ctx.out(`${stripControls(l)}\n`);
  if (!ctx.flag("follow")) return 0;
  ctx.handleInterrupts();
  let offset = await fileSize(path);
  let rest = "";
  const dec = new TextDecoder();
  while (!ctx.interrupt.aborted) {
    const size = await fileSize(path);
    if (size < offset) offset = 0; // rotated: FILE started afresh
    if (size > offset) {
      using f = await Deno.open(path);
      await f.seek(offset, Deno.SeekMode.Start);
      const buf = new Uint8Array(Math.min(size - offset, 1024 * 1024));
      const r = (await f.read(buf)) ?? 0;
      offset += r;
      rest += dec.decode(buf.subarray(0, r), { stream: true });
      const parts = rest.split("\n");
      rest = parts.pop() ?? "";
      // A line without its end yet is held back, but never more than 64 KiB of it.
      if (rest.length > 64 * 1024) {
        parts.push(rest);
        rest = "";
      }
      for (const l of parts) await ctx.out(`${stripControls(l)}\n`);
    } else {
      await sleep(250);
    }
  }
  return 0;
}
