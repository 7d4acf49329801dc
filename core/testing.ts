/**
 * Helpers shared by the tests of every role and by the e2e: find processes
 * by a string in their command line (Linux `/proc`), check liveness, wait
 * for a condition that has no event to await, pick a free port, and probe
 * what a role's exact grants let it do.
 *
 * @module
 */
import { type Grants, renderFlags } from "./grants.ts";
import { REPO_ROOT } from "./launcher.ts";

/** A process whose command line matched. */
export interface ProcInfo {
  pid: number;
  /** argv joined with spaces. */
  cmdline: string;
}

/** Every process (but this one) whose command line contains `needle`. */
export async function findProcesses(needle: string): Promise<ProcInfo[]> {
  const found: ProcInfo[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^[0-9]+$/.test(e.name)) continue;
    const pid = Number(e.name);
    if (pid === Deno.pid) continue;
    let raw: Uint8Array;
    try {
      raw = await Deno.readFile(`/proc/${pid}/cmdline`);
    } catch {
      continue; // gone
    }
    const cmdline = new TextDecoder().decode(raw).replaceAll("\0", " ").trim();
    if (cmdline.includes(needle)) found.push({ pid, cmdline });
  }
  return found;
}

/** Whether `pid` is alive (zombies count as gone). */
export async function alive(pid: number): Promise<boolean> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** Options of {@link waitFor}. */
export interface WaitForOptions {
  /** Give up after this long; default 10 s. */
  timeoutMs?: number;
  /** Pause between checks; default 50 ms. */
  intervalMs?: number;
  /** Treat a throwing check as "not yet" (e.g. a server that is still starting). */
  ignoreErrors?: boolean;
}

/**
 * Polls `check` until it returns something other than `undefined` or
 * `false`, and resolves with that; throws once the deadline passes. For
 * conditions that no event announces (a process exiting, a file growing).
 */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  options: WaitForOptions = {},
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const deadline = Date.now() + timeoutMs;
  while (true) {
    let v: T | undefined | false;
    try {
      v = await check();
    } catch (err) {
      if (!options.ignoreErrors) throw err;
      v = undefined;
    }
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, options.intervalMs ?? 50));
  }
}

/** A free TCP port on 127.0.0.1 (bound and released). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** One thing {@link probeGrants} tries; `name` keys its outcome. */
export type GrantAttempt =
  & { name: string }
  & (
    | { op: "listen" | "listen-node" | "connect" | "connect-node"; host: string; port: number }
    | { op: "listen-unix" | "connect-unix" | "read" | "write"; path: string }
    | { op: "spawn"; cmd: string; args?: string[] }
    | { op: "env"; var: string }
    | { op: "sys"; call?: "hostname" | "networkInterfaces" }
  );

/**
 * Runs `core/testdata/grants_probe.ts` through `deno run` with exactly the
 * permission flags `renderFlags(grants)` gives a role (the flags its
 * launcher and compiled binary get), tries every attempt, and resolves with
 * `{ name: outcome }`: `"ok"`, `"NotCapable"`, `"unset"` (an env variable
 * hidden by `--ignore-env`) or `"<Error>: <message>"`. `env` is the probe's
 * whole environment.
 */
export async function probeGrants(
  grants: Grants,
  attempts: readonly GrantAttempt[],
  env: Record<string, string> = {},
): Promise<Record<string, string>> {
  const names = new Set(attempts.map((a) => a.name));
  if (names.size !== attempts.length) throw new Error("probeGrants: attempt names must differ");
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      `--config=${REPO_ROOT}/deno.json`,
      ...renderFlags(grants),
      `${REPO_ROOT}/core/testdata/grants_probe.ts`,
      JSON.stringify(attempts),
    ],
    clearEnv: true,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`grants probe failed (${out.code}): ${new TextDecoder().decode(out.stderr)}`);
  }
  return JSON.parse(text);
}
