/**
 * The README's quick start on real VMs, as a user runs it: `deno task
 * install --root <tmp>` (the real task, Deno copied next to the wrappers),
 * then, from another directory with only the install's `bin/` added to the
 * PATH (no deno there):
 *
 * 1. `openshell gateway start` (guest image checked, gateway + VM driver up,
 *    registered as `local`), `openshell sandbox create -- echo hi` prints
 *    `hi`, `openshell gateway stop` leaves no gateway, driver, qemu or
 *    forwarder process;
 * 2. `gateway start` again, a sandbox booting, `kill -9` of the gateway:
 *    its driver and qemu die with it (the wrappers exec, so the driver's
 *    parent is the gateway); `gateway stop` then finds nothing to stop, and
 *    `deno task install --uninstall` removes the install.
 *
 * Run by `e2e/vm.ts` as its last steps, or alone: `deno run -A e2e/installed.ts`
 * (step 11 needs the install of step 10).
 *
 * @module
 */
import { runCommand } from "../core/command.ts";
import { REPO_ROOT } from "../core/launcher.ts";
import { findProcesses, freePort, waitFor } from "../core/testing.ts";
import { cacheRoot } from "../driver_vm/image/host.ts";

/**
 * Runs one named step (the caller times and records it); resolves with
 * whether it passed. A step with a `needs` entry that is not `undefined` (what
 * is missing) is reported ignored and not run.
 */
export type StepRunner = (
  name: string,
  fn: () => Promise<void>,
  needs?: (string | undefined)[],
) => Promise<boolean>;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function show(r: Result): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

function check(cond: unknown, message: string): asserts cond {
  if (!cond) throw new Error(message);
}

/** Runs both steps with `runStep`; returns whether both passed. */
export async function installedSteps(runStep: StepRunner): Promise<boolean> {
  const base = await Deno.makeTempDir({ dir: "/tmp", prefix: "osinst" });
  // qemu's unprivileged account must pass through to the driver's state dir below it.
  await Deno.chmod(base, 0o711);
  const root = `${base}/root`;
  const state = `${base}/state`;
  const work = `${base}/work`;
  await Deno.mkdir(work);
  const env = {
    PATH: `${root}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
    HOME: Deno.env.get("HOME") ?? "/root",
    XDG_CONFIG_HOME: `${base}/cfg`,
    OPENSHELL_PROVISION_TIMEOUT: "240",
    NO_COLOR: "1",
  };
  const sh = (command: string, timeoutMs = 300_000, cwd = work): Promise<Result> =>
    runCommand(["/bin/sh", "-c", command], { cwd, env, clearEnv: true, timeoutMs });
  /** Every process of this install: gateway, driver, qemu, socat. */
  const ours = async () => (await findProcesses(`${state}/`)).filter((p) => p.pid !== Deno.pid);
  const describe = (ps: { pid: number; cmdline: string }[]) =>
    ps.map((p) => `${p.pid} ${p.cmdline.slice(0, 100)}`).join("; ");
  /** Whether a step ran: the state dir is worth keeping only then. */
  let ran = false;
  const step: StepRunner = (name, fn, needs) =>
    runStep(name, () => {
      ran = true;
      return fn();
    }, needs);

  const installed = await step(
    "10. installed: deno task install, gateway start, sandbox create -- echo hi, gateway stop",
    async () => {
      const deno = Deno.execPath();
      const install = await sh(
        `'${deno}' task install --root ${root} --state-dir ${state} ` +
          `--gateway-listen 127.0.0.1:${freePort()} --supervisor-listen 127.0.0.1:${freePort()} ` +
          `--vm-cache-dir ${cacheRoot()}`,
        300_000,
        REPO_ROOT,
      );
      check(install.code === 0, `deno task install: ${show(install)}`);
      const start = await sh("command -v deno && exit 9; openshell gateway start");
      check(
        start.code === 0 && start.stdout.includes("is running"),
        `gateway start: ${show(start)}`,
      );
      const hi = await sh("openshell sandbox create -- echo hi");
      check(hi.code === 0 && hi.stdout.split("\n").includes("hi"), `create: ${show(hi)}`);
      const before = await ours();
      check(
        before.some((p) => p.cmdline.includes("qemu-system")),
        "no qemu while the sandbox runs",
      );
      check(before.some((p) => p.cmdline.includes("driver_vm/main.ts")), "no driver process");
      const stop = await sh("openshell gateway stop", 60_000);
      check(stop.code === 0, `gateway stop: ${show(stop)}`);
      const left = await ours();
      check(left.length === 0, `left after gateway stop: ${describe(left)}`);
      console.error(`    ${stop.stdout.trim()}`);
    },
  );

  const killed = await step(
    "11. installed: kill -9 of the gateway takes its driver and qemu along; uninstall",
    async () => {
      const start = await sh("openshell gateway start");
      check(start.code === 0, `gateway start: ${show(start)}`);
      const pid = Number(await Deno.readTextFile(`${state}/gateway/gateway.pid`));
      // A sandbox booting is enough: its qemu runs.
      const creator = new Deno.Command("/bin/sh", {
        args: ["-c", "exec openshell sandbox create --name k9 -- true"],
        cwd: work,
        env,
        clearEnv: true,
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      try {
        await waitFor("a qemu of the installed driver", async () => {
          const ps = await ours();
          return ps.some((p) => p.cmdline.includes("qemu-system")) ? true : undefined;
        }, { timeoutMs: 120_000, intervalMs: 250 });
        Deno.kill(pid, "SIGKILL");
        await waitFor("the driver, qemu and forwarders gone", async () => {
          return (await ours()).length === 0 ? true : undefined;
        }, { timeoutMs: 15_000, intervalMs: 100 }).catch(async (err) => {
          throw new Error(`${err.message}: ${describe(await ours())}`);
        });
      } finally {
        try {
          creator.kill("SIGKILL");
        } catch { /* gone */ }
        await creator.status;
      }
      const stop = await sh("openshell gateway stop", 60_000);
      check(stop.code === 0 && stop.stdout.includes("No local gateway was running"), show(stop));
      const un = await sh(
        `'${Deno.execPath()}' task install --uninstall --root ${root}`,
        60_000,
        REPO_ROOT,
      );
      check(un.code === 0, `uninstall: ${show(un)}`);
      const gone = await sh("command -v openshell || echo gone");
      check(gone.stdout.trim() === "gone", `openshell still installed: ${show(gone)}`);
    },
    [installed ? undefined : "the install of step 10"],
  );

  const ok = installed && killed;
  if (ok || !ran) {
    await Deno.remove(base, { recursive: true }).catch(() => {});
  } else {
    const log = await Deno.readTextFile(`${state}/gateway/gateway.log`).catch(() => "(none)");
    console.error(`==== installed gateway log (${state}/gateway/gateway.log) ====\n${log}`);
    for (const p of await ours()) {
      try {
        Deno.kill(p.pid, "SIGKILL");
      } catch { /* gone */ }
    }
    console.error(`installed steps: state kept in ${base}`);
  }
  return ok;
}

if (import.meta.main) {
  const ok = await installedSteps(async (name, fn, needs = []) => {
    const missing = needs.filter((n) => n !== undefined);
    if (missing.length > 0) {
      console.error(`  - ${name}: skipped, needs ${missing.join(", ")}`);
      return false;
    }
    const t0 = Date.now();
    try {
      await fn();
      console.error(`  ✓ ${name} (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
      return true;
    } catch (err) {
      console.error(`  ✗ ${name}: ${(err as Error).message}`);
      return false;
    }
  });
  Deno.exit(ok ? 0 : 1);
}
