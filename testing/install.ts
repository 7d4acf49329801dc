/**
 * Test fixture: a real `deno task install` layout in a temp dir (wrappers,
 * manifest; Deno referenced by path, not copied), with free ports and its
 * state, VM cache and CLI config below the same dir, plus the environment
 * a user of it has (its `bin/` first on a PATH that holds no `deno`).
 *
 * @module
 */
import { runCommand } from "../core/command.ts";
import { applyPlan, installDefaults, type InstallPlan, installPlan } from "../core/install.ts";
import { freePort } from "../core/testing.ts";

/** An install in a temp dir. */
export interface TestInstall {
  /** The temp dir holding everything (mode 0711: qemu's user may pass through). */
  dir: string;
  plan: InstallPlan;
  /** Environment for the installed commands (PATH with `bin/` first, HOME, XDG_CONFIG_HOME). */
  env: Record<string, string>;
  /** A directory that is not the checkout, to run commands from. */
  cwd: string;
  /** Removes the temp dir. */
  remove(): Promise<void>;
}

/** Options of {@link makeTestInstall}. */
export interface TestInstallOptions {
  /** VM cache (default: `<dir>/cache`, empty). */
  vmCacheDir?: string;
  /** Copy deno into the install (default false: referenced by path). */
  copyDeno?: boolean;
  /** Run `deno cache` first (default false: the checkout's node_modules is there). */
  cache?: boolean;
}

/** Installs into a fresh temp dir (short, under /tmp: socket paths stay short). */
export async function makeTestInstall(options: TestInstallOptions = {}): Promise<TestInstall> {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "osinst" });
  await Deno.chmod(dir, 0o711);
  const defaults = installDefaults((n) => Deno.env.get(n), {
    uid: Deno.uid() ?? -1,
    deno: Deno.execPath(),
  });
  const plan = installPlan({
    ...defaults,
    root: `${dir}/root`,
    stateDir: `${dir}/state`,
    vmCacheDir: options.vmCacheDir ?? `${dir}/cache`,
    copyDeno: options.copyDeno ?? false,
    gatewayListen: { host: "127.0.0.1", port: freePort() },
    supervisorListen: { host: "127.0.0.1", port: freePort() },
    supervisorGateway: { host: "127.0.0.1", port: 1 },
  });
  await applyPlan(plan, { cache: options.cache ?? false });
  const cwd = `${dir}/work`;
  await Deno.mkdir(cwd);
  await Deno.mkdir(`${dir}/cfg`);
  return {
    dir,
    plan,
    cwd,
    env: {
      PATH: `${dir}/root/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
      HOME: Deno.env.get("HOME") ?? "/root",
      XDG_CONFIG_HOME: `${dir}/cfg`,
      NO_COLOR: "1",
    },
    remove: () => Deno.remove(dir, { recursive: true }).catch(() => {}),
  };
}

/** Result of {@link runInstalled}. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command line through `sh -c` in the install's environment, from its `cwd`. */
export function runInstalled(
  inst: TestInstall,
  command: string,
  options: { timeoutMs?: number } = {},
): Promise<RunResult> {
  return runCommand(["/bin/sh", "-c", command], {
    cwd: inst.cwd,
    env: inst.env,
    clearEnv: true,
    timeoutMs: options.timeoutMs ?? 60_000,
  });
}
