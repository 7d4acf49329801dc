/**
 * Test helpers for the VM driver: a fake launcher whose "VMs" are promises
 * the test ends at will, a runtime dir of empty files, and a logger that
 * keeps its lines.
 *
 * @module
 */
import { Logger } from "../core/log.ts";
import type { Launcher, RuntimeFiles, VmHandle } from "./driver.ts";
import type { QemuSpec } from "./qemu.ts";

/** One fake VM. */
export interface FakeVm {
  spec: QemuSpec;
  handle: VmHandle;
  /** Signals it received. */
  signals: Deno.Signal[];
  /** Ends the VM with an exit code (or a signal). */
  exit(code: number, signal?: Deno.Signal | null): void;
}

/** A launcher that starts nothing real. */
export class FakeLauncher implements Launcher {
  /** Every VM launched, in order. */
  readonly vms: FakeVm[] = [];
  /** When true, SIGTERM is ignored (only SIGKILL ends a VM). */
  ignoreTerm = false;
  /** When set, launch fails with this message. */
  failWith?: string;
  #nextPid = 40000;

  /** Starts a fake VM. */
  launch(spec: QemuSpec): Promise<VmHandle> {
    if (this.failWith) return Promise.reject(new Error(this.failWith));
    let resolve!: (s: { code: number; signal: string | null }) => void;
    const status = new Promise<{ code: number; signal: string | null }>((r) => (resolve = r));
    let done = false;
    const signals: Deno.Signal[] = [];
    const exit = (code: number, signal: Deno.Signal | null = null) => {
      if (done) return;
      done = true;
      resolve({ code, signal });
    };
    const handle: VmHandle = {
      pid: this.#nextPid++,
      status,
      kill: (sig) => {
        signals.push(sig);
        if (sig === "SIGKILL") exit(137, "SIGKILL");
        else if (sig === "SIGTERM" && !this.ignoreTerm) exit(0);
      },
    };
    this.vms.push({ spec, handle, signals, exit });
    return Promise.resolve(handle);
  }
}

/** Creates empty runtime files in `dir`. */
export async function fakeRuntime(dir: string): Promise<RuntimeFiles> {
  const files = {
    kernel: `${dir}/vmlinuz`,
    initramfs: `${dir}/initramfs.cpio`,
    disk: `${dir}/guest.img`,
  };
  await Deno.mkdir(dir, { recursive: true });
  for (const f of Object.values(files)) await Deno.writeTextFile(f, "");
  return files;
}

/** A logger that collects its lines. */
export function memoryLogger(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: new Logger({ level: "debug", sink: (l) => lines.push(l) }), lines };
}
