/**
 * The real VM launcher: `setpriv --pdeathsig KILL -- qemu …` so each qemu
 * dies with the driver process (Linux parent-death signal; `setpriv` execs
 * qemu, so the pid we hold is qemu's). qemu's stdout carries the guest's
 * serial console and its stderr qemu's own messages (errors such as a
 * missing disk); the driver reads both (`console.ts`).
 *
 * @module
 */
import type { Launcher, VmHandle } from "./driver.ts";
import { buildQemuArgs, type QemuSpec } from "./qemu.ts";

/** Options of {@link QemuLauncher}. */
export interface QemuLauncherOptions {
  qemu: string;
  /** setpriv binary; on macOS (no setpriv) the driver's parent watch is the only guard. */
  setpriv?: string;
}

/** The command (executable + args) that starts one VM. */
export function launchCommand(options: QemuLauncherOptions, spec: QemuSpec): string[] {
  const qemu = [options.qemu, ...buildQemuArgs(spec)];
  return options.setpriv ? [options.setpriv, "--pdeathsig", "KILL", "--", ...qemu] : qemu;
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
