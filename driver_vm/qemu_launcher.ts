/**
 * The real VM launcher: `setpriv [--reuid … --init-groups] --no-new-privs
 * --pdeathsig KILL -- prlimit … -- qemu …` (see `vm_user.ts`), so each qemu
 * runs unprivileged, within limits, and dies with the driver process (Linux
 * parent-death signal; both helpers exec, so the pid we hold is qemu's).
 * qemu's stdout carries the guest's serial console and its stderr qemu's own
 * messages (errors such as a missing disk); the driver reads both
 * (`console.ts`).
 *
 * @module
 */
import type { Launcher, VmHandle } from "./driver.ts";
import { buildQemuArgs, type QemuSpec } from "./qemu.ts";
import { type RunAs, runAsPrefix, vmLimits } from "./vm_user.ts";

/** Options of {@link QemuLauncher}. */
export interface QemuLauncherOptions {
  qemu: string;
  /**
   * Helpers and account (Linux); absent (macOS: no setpriv) = qemu runs as
   * the driver, and the driver's parent watch is the only guard.
   */
  runAs?: RunAs;
}

/** The command (executable + args) that starts one VM. */
export function launchCommand(options: QemuLauncherOptions, spec: QemuSpec): string[] {
  const qemu = [options.qemu, ...buildQemuArgs(spec)];
  if (!options.runAs) return qemu;
  const limits = vmLimits(spec, { dedicatedUser: options.runAs.user !== undefined });
  return [...runAsPrefix(options.runAs, limits), ...qemu];
}

/** Launches qemu processes. */
export class QemuLauncher implements Launcher {
  readonly #o: QemuLauncherOptions;

  /** Creates a launcher. */
  constructor(options: QemuLauncherOptions) {
    this.#o = options;
  }

  /** Starts the VM; resolves once the process exists. */
  launch(spec: QemuSpec): Promise<VmHandle> {
    const [exe, ...args] = launchCommand(this.#o, spec);
    const child = new Deno.Command(exe, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      clearEnv: true,
      env: { PATH: "/usr/local/bin:/usr/bin:/bin", LANG: "C" },
    }).spawn();
    let done = false;
    const status = child.status.then((s) => {
      done = true;
      return { code: s.code, signal: s.signal };
    });
    return Promise.resolve({
      pid: child.pid,
      status,
      console: child.stdout,
      stderr: child.stderr,
      kill(signal: Deno.Signal) {
        if (done) return;
        try {
          child.kill(signal);
        } catch {
          // already gone
        }
      },
    });
  }
}
