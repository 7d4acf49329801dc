/**
 * Where a VM sandbox's create → READY time goes, stage by stage:
 *
 * ```
 * deno run -A e2e/bench_boot.ts [--runs N] [--plaintext] [--accel tcg|kvm|auto] [--keep]
 * ```
 *
 * Stages the VM runtime like `deno task e2e:vm` (`ensureRuntime`, cached;
 * `e2e/stage.ts`), starts a gateway with `--drivers vm` (secure defaults
 * unless `--plaintext`; `--vm-accel tcg` unless `--accel`), then creates one
 * warm-up sandbox (the driver's first: it copies the runtime and the image
 * into its state dir) and `--runs` (default 3) more, one after another,
 * each deleted once READY. For each it reads the sandbox's log lines
 * (`GetSandboxLogs`: the driver's "qemu started" event and every console
 * line, stamped with the host time the driver read them) and splits the
 * time from `CreateSandbox` to `READY` (seen on `WatchSandbox`) at these
 * points (see {@link bootStages}):
 *
 * - qemu started (the driver's event);
 * - the kernel starts: the earliest (host time − guest uptime) of the
 *   init's uptime-stamped lines;
 * - the initramfs `/init` runs (`userspace up after`);
 * - the init's stamps (`boot stages (uptime s): modules= disks= network=`;
 *   `resize=` too from runtimes that grew the disk before switching root);
 * - PID 1 starts the supervisor (`starting supervisor after`);
 * - the supervisor's `main()` runs (`loaded_ms`: Deno's start-up and
 *   loading the bundle) and its sshd socket listens (`startup_ms`);
 * - the gateway accepts the supervisor's session (its own log line);
 * - READY.
 *
 * Prints a table: one column per run, the median of the measured runs (the
 * warm-up is shown but not counted). Nothing is asserted. Stops the gateway
 * (and so every VM) and removes its temp dir, also on Ctrl-C, unless
 * `--keep`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { parseLogLine } from "../core/log.ts";
import { ensureRuntime } from "../driver_vm/image/rootfs.ts";
import { freePort, waitFor } from "../core/testing.ts";
import { apiClient, spawnGateway, type TestGateway } from "../testing/gateway.ts";
import { gatewayApi } from "../testing/supervisor.ts";
import { fixed, stats, table } from "./benchkit.ts";
import { stageDriverDir } from "./stage.ts";

/** A sandbox log line as `GetSandboxLogs` returns it (the fields this bench reads). */
export interface BootLogLine {
  timestamp_ms: number | string;
  source: string;
  message: string;
}

/** One stage: the time from the previous point to this one. */
export interface BootStage {
  /** What happened in it (the label of the point it ends at). */
  name: string;
  ms: number;
}

/** The points a boot is split at, in order; a stage ends at each. */
export const BOOT_POINTS = [
  "gateway + driver: create → qemu started",
  "firmware, kernel and initramfs loading",
  "kernel: start → /init",
  "init: kernel modules",
  "init: disks (wait for vda/vdb, mount)",
  "init: resize2fs",
  "init: fw_cfg files, identity, network",
  "init: cgroups, switch_root, PID 1 → supervisor exec",
  "supervisor: Deno start-up + bundle load",
  "supervisor: start-up (files, sshd -t, socket)",
  "supervisor: connect, TLS, hello → session accepted by the gateway",
  "gateway: session → READY seen by the client",
] as const;

const n = (t: number | string) => Number(t);

/**
 * Splits one create → READY into {@link BOOT_POINTS} stages from the
 * sandbox's log lines and the gateway's "supervisor session accepted" line
 * (host times; see {@link gatewayLines}), `createMs` (just before
 * `CreateSandbox`) and `readyMs` (READY seen). A point whose line is
 * missing (e.g. a runtime without the init's stamps) is skipped: its time
 * goes to the next stage, whose name then joins both ("a + b"). The stages
 * sum to `readyMs - createMs`.
 */
export function bootStages(
  lines: readonly BootLogLine[],
  createMs: number,
  readyMs: number,
): BootStage[] {
  const find = (re: RegExp, console = true) => {
    for (const l of lines) {
      if ((l.source === "console") !== console) continue;
      const m = re.exec(l.message);
      if (m) return { at: n(l.timestamp_ms), m };
    }
    return undefined;
  };
  const qemu = find(/qemu started/, false);
  const userspace = find(/openshell-init: userspace up after ([\d.]+)s/);
  const stamps = find(/openshell-init: boot stages \(uptime s\):(.*)$/);
  const guestReady = find(/openshell-init: guest ready after ([\d.]+)s/);
  const supStart = find(/openshell-init: starting supervisor after ([\d.]+)s/);
  const listening = find(/sshd socket listening\b/);
  const accepted = find(/supervisor session accepted/, false);
  // The kernel's start in host time: the earliest (arrival - uptime) of the uptime-stamped lines.
  const uptimed = [userspace, guestReady, supStart].filter((x) => x !== undefined);
  const kernelStart = uptimed.length
    ? Math.min(...uptimed.map((x) => x.at - Number(x.m[1]) * 1000))
    : undefined;
  const up = (s: number | undefined) =>
    kernelStart === undefined || s === undefined || Number.isNaN(s)
      ? undefined
      : kernelStart + s * 1000;
  const stamp = (name: string) => {
    const m = stamps ? new RegExp(`\\b${name}=([\\d.]+)`).exec(stamps.m[1]) : null;
    return m ? Number(m[1]) : undefined;
  };
  const field = (name: string) => {
    const m = listening ? new RegExp(`\\b${name}=(\\d+)`).exec(listening.m.input) : null;
    return m ? Number(m[1]) : undefined;
  };
  const supAt = up(supStart ? Number(supStart.m[1]) : undefined);
  const loaded = field("loaded_ms");
  const startup = field("startup_ms");
  const points: (number | undefined)[] = [
    qemu?.at,
    kernelStart,
    up(userspace ? Number(userspace.m[1]) : undefined),
    up(stamp("modules")),
    up(stamp("disks")),
    up(stamp("resize")),
    up(stamp("network")),
    supAt,
    supAt !== undefined && loaded !== undefined ? supAt + loaded : undefined,
    supAt !== undefined && startup !== undefined ? supAt + startup : listening?.at,
    accepted?.at,
    readyMs,
  ];
  const out: BootStage[] = [];
  let prev = createMs;
  let pending: string[] = [];
  points.forEach((at, i) => {
    // Runtimes that grow the disk in PID 1 have no resize stamp and no such stage.
    if (at === undefined && BOOT_POINTS[i] === "init: resize2fs") return;
    pending.push(BOOT_POINTS[i]);
    if (at === undefined) return;
    out.push({ name: pending.join(" + "), ms: at - prev });
    prev = at;
    pending = [];
  });
  return out;
}

/** The gateway's own log lines about sandbox `id` (from its stderr), as {@link BootLogLine}s. */
export function gatewayLines(stderr: string, id: string): BootLogLine[] {
  const out: BootLogLine[] = [];
  for (const line of stderr.split("\n")) {
    if (!line.includes(`sandbox=${id}`)) continue;
    const parsed = parseLogLine(line);
    if (parsed) {
      out.push({ timestamp_ms: parsed.timeMs, source: "gateway", message: parsed.message });
    }
  }
  return out;
}

interface Run {
  label: string;
  totalMs: number;
  stages: BootStage[];
}

/** The table: one row per stage name (in first-seen order), one column per run, the median. */
export function stageTable(runs: readonly Run[], measured: readonly Run[]): string {
  const names: string[] = [];
  for (const r of runs) for (const s of r.stages) if (!names.includes(s.name)) names.push(s.name);
  const cell = (r: Run, name: string) => {
    const s = r.stages.find((x) => x.name === name);
    return s ? fixed(s.ms, 0) : "-";
  };
  const median = (pick: (r: Run) => number | undefined) => {
    const v = measured.map(pick).filter((x): x is number => x !== undefined);
    return v.length ? fixed(stats(v).median, 0) : "-";
  };
  const rows = names.map((name) => [
    name,
    ...runs.map((r) => cell(r, name)),
    median((r) => r.stages.find((x) => x.name === name)?.ms),
  ]);
  rows.push([
    "**create → READY (total)**",
    ...runs.map((r) => fixed(r.totalMs, 0)),
    median((r) => r.totalMs),
  ]);
  return table(["stage (ms)", ...runs.map((r) => r.label), "median (measured runs)"], rows);
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      runs: { type: "string", default: "3" },
      plaintext: { type: "boolean", default: false },
      accel: { type: "string", default: "tcg" },
      keep: { type: "boolean", default: false },
    },
  });
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1 || runs > 50) {
    console.error("bench_boot: --runs must be 1 to 50");
    return 2;
  }
  const runtime = await ensureRuntime();
  console.error(`bench_boot: runtime ${runtime.dir} (${runtime.built ? "built" : "cached"})`);

  // A short base dir (socket paths), reachable by qemu's unprivileged account.
  const base = await Deno.makeTempDir({ dir: "/tmp", prefix: "osbb" });
  await Deno.chmod(base, 0o711);
  const S = `${base}/gw`;
  const V = `${base}/vm`;
  const D = `${base}/bin`;
  await Deno.mkdir(S, { recursive: true });
  await Deno.mkdir(V, { recursive: true, mode: 0o700 });
  let gw: TestGateway | undefined;
  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    await gw?.shutdown().catch(() => {});
    if (values.keep) console.error(`bench_boot: kept ${base}`);
    else await Deno.remove(base, { recursive: true }).catch(() => {});
  };
  const onSignal = async () => {
    console.error("\n(interrupted: stopping the gateway and its VMs)");
    await cleanup();
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    const port = freePort();
    const planePort = freePort();
    await stageDriverDir({
      dir: D,
      stateDir: V,
      runtimeDir: runtime.dir,
      gateway: { host: "127.0.0.1", port: planePort },
    });
    gw = await spawnGateway({
      stateDir: S,
      driverDir: D,
      vmDriverStateDir: V,
      port,
      supervisorPort: planePort,
      tls: !values.plaintext,
      args: ["--vm-runtime-dir", runtime.dir, "--vm-accel", values.accel, "--log-level", "info"],
      startTimeoutMs: 60_000,
    });
    const g = gw;
    await waitFor(
      "the gateway's compute driver",
      () => g.stderr().includes("compute driver ready"),
      { timeoutMs: 60_000, intervalMs: 100 },
    );
    const tls = g.pki ? { ca: g.pki.ca, cert: g.pki.clientCert, key: g.pki.clientKey } : undefined;
    const api = gatewayApi(g.port, tls);
    const raw = apiClient(g.port, g.pki);
    const all: Run[] = [];
    try {
      for (let i = 0; i <= runs; i++) {
        const name = `boot-${i}`;
        const t0 = Date.now();
        const sandbox = await api.create(name);
        try {
          await api.waitForPhase(sandbox.id, "SANDBOX_PHASE_READY", 300_000);
        } catch (err) {
          const consoleLog = await Deno.readTextFile(`${V}/sandboxes/${sandbox.id}/console.log`)
            .catch((e) => `(no console log: ${e})`);
          console.error(
            `bench_boot: ${name}'s console:\n${consoleLog.split("\n").slice(-60).join("\n")}`,
          );
          throw err;
        }
        const t1 = Date.now();
        const { logs } = await raw.call(raw.raw.GetSandboxLogs, {
          sandbox_id: sandbox.id,
          lines: 2000,
        });
        const run: Run = {
          label: i === 0 ? "warm-up" : `run ${i}`,
          totalMs: t1 - t0,
          stages: bootStages([...logs, ...gatewayLines(g.stderr(), sandbox.id)], t0, t1),
        };
        all.push(run);
        console.error(`bench_boot: ${run.label}: create → READY ${fixed(run.totalMs, 0)} ms`);
        await api.delete(name);
        await waitFor(
          `sandbox ${name}'s VM gone`,
          async () => !(await Deno.stat(`${V}/sandboxes/${sandbox.id}`).catch(() => undefined)),
          { timeoutMs: 30_000, intervalMs: 100 },
        );
      }
    } finally {
      api.close();
      raw.close();
    }
    console.log(
      `# create → READY of a VM sandbox by stage (deno ${Deno.version.deno}, ` +
        `${navigator.hardwareConcurrency} CPUs, accel ${values.accel}, ` +
        `${values.plaintext ? "plaintext" : "TLS"}, load ${
          Deno.loadavg().map((l) => l.toFixed(2))
        })\n`,
    );
    console.log(stageTable(all, all.slice(1)));
    return 0;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    await cleanup();
  }
}

if (import.meta.main) Deno.exit(await main());
