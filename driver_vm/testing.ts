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
import type { QmpChannel, QmpFactory } from "./qmp.ts";

/** One fake VM. */
export interface FakeVm {
  spec: QemuSpec;
  handle: VmHandle;
  /** Signals it received. */
  signals: Deno.Signal[];
  /** Ends the VM with an exit code (or a signal); its output streams end. */
  exit(code: number, signal?: Deno.Signal | null): void;
  /** Writes to the guest's serial console; waits while the pipe is full (the driver not reading). */
  writeConsole(data: string | Uint8Array): Promise<void>;
  /** Writes to qemu's stderr. */
  writeStderr(data: string | Uint8Array): Promise<void>;
}

/** A byte stream a test writes into, with backpressure like a pipe's. */
function pipe(): {
  readable: ReadableStream<Uint8Array>;
  write(d: string | Uint8Array): Promise<void>;
  close(): void;
} {
  const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>(
    undefined,
    { highWaterMark: 1 },
    { highWaterMark: 1 },
  );
  const writer = writable.getWriter();
  let closed = false;
  return {
    readable,
    write: async (d) => {
      if (closed) return;
      await writer.write(typeof d === "string" ? new TextEncoder().encode(d) : d).catch(() => {});
    },
    close: () => {
      if (closed) return;
      closed = true;
      writer.close().catch(() => {});
    },
  };
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
    const serial = pipe();
    const stderr = pipe();
    const exit = (code: number, signal: Deno.Signal | null = null) => {
      if (done) return;
      done = true;
      serial.close();
      stderr.close();
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
      console: serial.readable,
      stderr: stderr.readable,
    };
    this.vms.push({
      spec,
      handle,
      signals,
      exit,
      writeConsole: serial.write,
      writeStderr: stderr.write,
    });
    return Promise.resolve(handle);
  }
}

/**
 * QMP channels that reach the fake VMs: a power-down request ends the VM
 * launched with that channel (exit 0, like a guest powering off) unless
 * {@link ignorePowerdown} is set.
 */
export class FakeQmp implements QmpFactory {
  /** Paths of the channels asked to power down, in order. */
  readonly powerdowns: string[] = [];
  /** Channels closed, by path. */
  readonly closed = new Set<string>();
  /** When true, the guest ignores power-down requests. */
  ignorePowerdown = false;
  readonly #launcher: FakeLauncher;
  #next = 0;

  /** Channels for the VMs of `launcher`. */
  constructor(launcher: FakeLauncher) {
    this.#launcher = launcher;
  }

  /** A fake channel named `fake-qmp/<n>`. */
  open(_sandboxId: string): Promise<QmpChannel> {
    const path = `fake-qmp/${this.#next++}`;
    return Promise.resolve({
      path,
      powerdown: () => {
        this.powerdowns.push(path);
        const vm = this.#launcher.vms.find((v) => v.spec.qmpSocket === path);
        if (!vm) return Promise.resolve(false);
        if (!this.ignorePowerdown) vm.exit(0);
        return Promise.resolve(true);
      },
      close: () => {
        this.closed.add(path);
        return Promise.resolve();
      },
    });
  }
}

/**
 * Creates a runtime dir as `deno task vm:rootfs` lays it out, with empty
 * files, a 64 KiB image (`rootfs.img`, key `fakeimage`) and its manifest.
 */
export async function fakeRuntime(dir: string): Promise<RuntimeFiles> {
  const files = {
    kernel: `${dir}/vmlinuz`,
    initramfs: `${dir}/initramfs.cpio`,
    disk: `${dir}/openshell.img`,
  };
  await Deno.mkdir(dir, { recursive: true });
  for (const f of Object.values(files)) await Deno.writeTextFile(f, "");
  await Deno.writeFile(`${dir}/rootfs.img`, new Uint8Array(64 * 1024));
  await Deno.writeTextFile(
    `${dir}/manifest.json`,
    JSON.stringify({ image: { key: "fakeimage", file: "rootfs.img", format: "raw" } }),
  );
  return files;
}

/** A logger that collects its lines. */
export function memoryLogger(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: new Logger({ level: "debug", sink: (l) => lines.push(l) }), lines };
}
