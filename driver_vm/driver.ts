/**
 * The VM driver's sandbox lifecycle, independent of gRPC: one qemu per
 * sandbox, its per-sandbox state dir, progress conditions, the watch bus,
 * console (driver_vm/console.ts), exit monitoring and deletion.
 *
 * Each sandbox boots from the default image through its own disk (a qcow2
 * overlay in its state dir, `disk.ts`), sized, like its vCPUs and memory,
 * from its template's resources (`resources.ts`); the driver reports what
 * it gave the VM as a `Resources` condition.
 *
 * Readiness belongs to the gateway: this driver reports `Ready=False` with
 * reason `Starting` while a VM runs, `ProcessExited` (terminal) when qemu
 * ends on its own, `Deleting` while it is being removed — never
 * `Ready=True`.
 *
 * @module
 */
import { splitProvisioning } from "../core/provisioning.ts";
import type { Logger } from "../core/log.ts";
import { LogRateLimiter } from "../core/rate_limit.ts";
import { truncateForEcho, utf8Length } from "../core/text.ts";
import type {
  DriverSandbox,
  PlatformEvent,
  SandboxCondition,
  WatchSandboxesEvent,
  Wire,
} from "../core/protocol.ts";
import { Code, StatusError } from "../core/status.ts";
import { VERSION } from "../core/version.ts";
import type { Accel } from "./config.ts";
import { LineSplitter, RotatingLog } from "./console.ts";
import { checkDiskFits, DEFAULT_DISK_GIB, DEFAULT_QEMU_IMG, Disks, type ImageRef } from "./disk.ts";
import { GUEST_DNS, GUEST_FILES, renderGuestConfig, renderGuestEnvironment } from "./guest.ts";
import {
  DEFAULT_MAX_GUEST_CONNECTIONS,
  type ForwarderFactory,
  type GuestForwarder,
  GuestForwarders,
} from "./guest_forwarder.ts";
import type { FwCfgFile, QemuSpec, RootDiskSpec } from "./qemu.ts";
import {
  describeResources,
  type HostLimits,
  resolveResources,
  type VmResources,
} from "./resources.ts";
import { giveFile, shareDir, type VmUser } from "./vm_user.ts";

/** Name reported by GetCapabilities. */
export const DRIVER_NAME = "openshell-driver-vm";

/** A running VM as the driver sees it. */
export interface VmHandle {
  /** The qemu process id. */
  pid: number;
  /** Resolves when qemu has exited. */
  status: Promise<{ code: number; signal: string | null }>;
  /** Sends a signal (no-op once gone). */
  kill(signal: Deno.Signal): void;
  /** The guest's serial console (qemu's stdout); ends when qemu exits. */
  console: ReadableStream<Uint8Array>;
  /** qemu's own messages (its stderr). */
  stderr: ReadableStream<Uint8Array>;
}

/** Starts VMs (the real one runs setpriv + qemu; tests inject fakes). */
export interface Launcher {
  launch(spec: QemuSpec): Promise<VmHandle>;
}

/** The runtime files every VM boots from. */
export interface RuntimeFiles {
  kernel: string;
  initramfs: string;
  /** The read-only runtime disk (Deno, the supervisor, the guest's PID 1). */
  disk: string;
}

/** Makes a sandbox's root disk (the real one is {@link Disks}). */
export interface DiskProvider {
  prepare(o: { dir: string; image: ImageRef; sizeGiB: number }): Promise<RootDiskSpec>;
}

/** Options of {@link VmDriver}. */
export interface VmDriverOptions {
  stateDir: string;
  runtime: RuntimeFiles;
  launcher: Launcher;
  /** Resolves to the accelerator (the `auto` probe may still be running). */
  accel: () => Promise<Accel>;
  /** vCPUs of a sandbox that asks for none. */
  vcpus: number;
  /** Memory (MiB) of a sandbox that asks for none. */
  memMib: number;
  /** Disk (GiB) of a sandbox that asks for none; default {@link DEFAULT_DISK_GIB}. */
  diskGiB?: number;
  /** What this host has: requests beyond it are RESOURCE_EXHAUSTED; default unchecked. */
  host?: HostLimits;
  /**
   * The image sandboxes boot (its key names the shared copy); throws a
   * StatusError when there is none. Default: none (create fails).
   */
  image?: () => Promise<ImageRef>;
  /** Sandbox disks; default {@link Disks} in `stateDir` with `qemuImg`. */
  disks?: DiskProvider;
  /** qemu-img for the default {@link Disks}; default {@link DEFAULT_QEMU_IMG}. */
  qemuImg?: string;
  /** Default supervisor log level when the spec has none. */
  logLevel: string;
  /** The gateway as the host reaches it (guest connections are carried there). */
  gateway: { host: string; port: number };
  /** The program qemu runs per guest connection (`socat`). */
  forwarder: string;
  /** Open connections per VM at most; default {@link DEFAULT_MAX_GUEST_CONNECTIONS}. */
  maxGuestConnections?: number;
  /** Per-VM forwarder sockets; default the real {@link GuestForwarders}. */
  forwarders?: ForwarderFactory;
  /** The user qemu runs as, when not the driver's own: it must reach the forwarder sockets. */
  forwarderOwner?: { uid: number; gid: number };
  allowEgress: boolean;
  /**
   * The unprivileged account qemu runs as (the driver is root): the files
   * qemu uses become its own, their directories reachable by its group
   * only (see `vm_user.ts`). Absent: qemu runs as the driver; all stays 0700.
   */
  vmUser?: VmUser;
  /** The runtime files qemu boots from (e.g. copies it can read); default `runtime`. */
  bootRuntime?: () => Promise<RuntimeFiles>;
  log: Logger;
  /** Grace period between SIGTERM and SIGKILL on delete; default 5000 ms. */
  stopGraceMs?: number;
  /** Size at which `console.log` rotates; default `CONSOLE_LOG_MAX_BYTES` (4 MiB). */
  consoleLogMaxBytes?: number;
  now?: () => number;
}

interface Record_ {
  id: string;
  name: string;
  namespace: string;
  dir: string;
  conditions: SandboxCondition[];
  deleting: boolean;
  /** What the VM got, reported as the `Resources` condition. */
  resources?: { value: VmResources; since: number };
  handle?: VmHandle;
  /** The VM's forwarder socket to the gateway. */
  forwarder?: GuestForwarder;
  exited?: boolean;
  deletion?: Promise<boolean>;
  /** Readers of the VM's output, cancelled when the sandbox goes. */
  readers: ReadableStreamDefaultReader<Uint8Array>[];
  /** Resolves once the console is drained and `console.log` closed. */
  consoleDone?: Promise<void>;
}

const SANDBOX_ID = /^[A-Za-z0-9._-]{1,128}$/;

/** Checks a create request; throws a StatusError saying what cannot be honoured. */
export function validateSandbox(sandbox: Wire<DriverSandbox> | null | undefined): void {
  if (!sandbox) throw new StatusError(Code.INVALID_ARGUMENT, "sandbox is required");
  const id = sandbox.id ?? "";
  if (!id) throw new StatusError(Code.INVALID_ARGUMENT, "sandbox.id is required");
  if (!SANDBOX_ID.test(id) || id === "." || id === "..") {
    throw new StatusError(
      Code.INVALID_ARGUMENT,
      `sandbox.id must be 1-128 letters, digits, ".", "_" or "-": ${
        JSON.stringify(truncateForEcho(id))
      }`,
    );
  }
  const spec = sandbox.spec;
  if (!spec) throw new StatusError(Code.INVALID_ARGUMENT, "sandbox.spec is required");
  if (spec.gpu) {
    throw new StatusError(Code.FAILED_PRECONDITION, "the VM driver does not support GPU sandboxes");
  }
  const t = spec.template;
  if (t) {
    if (t.image) {
      throw new StatusError(
        Code.FAILED_PRECONDITION,
        `the VM driver boots its own guest image; template.image "${t.image}" is not supported`,
      );
    }
    if (t.agent_socket_path) {
      throw new StatusError(
        Code.FAILED_PRECONDITION,
        "the VM driver does not support template.agent_socket_path",
      );
    }
    // resources and platform_config: resolveResources (needs the host's limits).
  }
  for (const k of Object.keys(spec.environment ?? {})) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) {
      throw new StatusError(
        Code.INVALID_ARGUMENT,
        `invalid environment variable name: ${JSON.stringify(truncateForEcho(k))}`,
      );
    }
  }
}

function condition(reason: string, message: string, now: number): SandboxCondition {
  return {
    type: "Ready",
    status: "False",
    reason,
    message,
    last_transition_time: new Date(now).toISOString(),
  };
}

/** The driver (see the module docs). */
export class VmDriver {
  readonly #o: VmDriverOptions;
  readonly #sandboxes = new Map<string, Record_>();
  readonly #listeners = new Set<(e: WatchSandboxesEvent) => void>();
  readonly #now: () => number;
  readonly #forwarders: ForwarderFactory;
  readonly #disks: DiskProvider;
  #closing = false;

  /** Creates the driver; nothing runs until {@link create}. */
  constructor(options: VmDriverOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
    this.#forwarders = options.forwarders ?? new GuestForwarders({
      stateDir: options.stateDir,
      gateway: options.gateway,
      maxConnections: options.maxGuestConnections ?? DEFAULT_MAX_GUEST_CONNECTIONS,
      log: options.log,
      owner: options.forwarderOwner,
    });
    this.#disks = options.disks ?? new Disks({
      stateDir: options.stateDir,
      qemuImg: options.qemuImg ?? DEFAULT_QEMU_IMG,
      vmUser: options.vmUser,
    });
  }

  /** The VM size a sandbox asks for, checked against this host (throws a StatusError). */
  #resources(sandbox: Wire<DriverSandbox>): VmResources {
    return resolveResources(sandbox.spec?.template, {
      defaults: {
        vcpus: this.#o.vcpus,
        memMib: this.#o.memMib,
        diskGiB: this.#o.diskGiB ?? DEFAULT_DISK_GIB,
      },
      host: this.#o.host ?? {},
    });
  }

  async #image(): Promise<ImageRef> {
    if (!this.#o.image) {
      throw new StatusError(
        Code.FAILED_PRECONDITION,
        "the VM driver has no guest image; build it with: deno task vm:rootfs",
      );
    }
    return await this.#o.image();
  }

  /** GetCapabilities. */
  capabilities(): {
    driver_name: string;
    driver_version: string;
    default_image: string;
    supports_gpu: boolean;
  } {
    return {
      driver_name: DRIVER_NAME,
      driver_version: VERSION,
      default_image: "",
      supports_gpu: false,
    };
  }

  #sandboxesDir(): string {
    return `${this.#o.stateDir}/sandboxes`;
  }

  /** The per-sandbox state dir. */
  sandboxDir(id: string): string {
    return `${this.#sandboxesDir()}/${id}`;
  }

  #snapshot(r: Record_): DriverSandbox {
    return {
      id: r.id,
      name: r.name,
      namespace: r.namespace,
      spec: null,
      status: {
        sandbox_name: r.name,
        instance_id: r.handle ? String(r.handle.pid) : "",
        agent_fd: "",
        sandbox_fd: "",
        conditions: [
          ...r.conditions.map((c) => ({ ...c })),
          ...(r.resources
            ? [{
              type: "Resources",
              status: "True",
              reason: "Allocated",
              message: describeResources(r.resources.value),
              last_transition_time: new Date(r.resources.since).toISOString(),
            }]
            : []),
        ],
        deleting: r.deleting,
      },
    };
  }

  #emit(e: WatchSandboxesEvent): void {
    for (const l of [...this.#listeners]) {
      try {
        l(e);
      } catch (err) {
        this.#o.log.warn("watch listener failed", { error: (err as Error).message });
      }
    }
  }

  #publish(r: Record_): void {
    this.#emit({ payload: "sandbox", sandbox: { sandbox: this.#snapshot(r) } });
  }

  #platformEvent(id: string, event: Omit<PlatformEvent, "timestamp_ms" | "metadata">): void {
    this.#emit({
      payload: "platform_event",
      platform_event: {
        sandbox_id: id,
        event: { timestamp_ms: this.#now(), metadata: {}, ...event },
      },
    });
  }

  /**
   * Subscribes to events: the current snapshot of every sandbox is delivered
   * first (synchronously), then live events. Returns the unsubscribe function.
   */
  watch(listener: (e: WatchSandboxesEvent) => void): () => void {
    for (const r of this.#sorted()) {
      listener({ payload: "sandbox", sandbox: { sandbox: this.#snapshot(r) } });
    }
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #sorted(): Record_[] {
    return [...this.#sandboxes.values()].sort((a, b) =>
      a.name < b.name ? -1 : a.name > b.name ? 1 : a.id < b.id ? -1 : 1
    );
  }

  /** ListSandboxes: snapshots sorted by name. */
  list(): DriverSandbox[] {
    return this.#sorted().map((r) => this.#snapshot(r));
  }

  #find(id: string, name: string): Record_ | undefined {
    if (id) return this.#sandboxes.get(id);
    if (name) return [...this.#sandboxes.values()].find((r) => r.name === name);
    return undefined;
  }

  /** GetSandbox by id, else by name. */
  get(id: string, name: string): DriverSandbox {
    if (!id && !name) {
      throw new StatusError(Code.INVALID_ARGUMENT, "sandbox_id or sandbox_name is required");
    }
    const r = this.#find(id, name);
    if (!r) {
      throw new StatusError(Code.NOT_FOUND, `sandbox ${truncateForEcho(id || name)} not found`);
    }
    if (id && name && r.name !== name) {
      throw new StatusError(
        Code.FAILED_PRECONDITION,
        `sandbox ${id} is named "${r.name}", not "${name}"`,
      );
    }
    return this.#snapshot(r);
  }

  async #checkRuntime(): Promise<void> {
    for (const [what, path] of Object.entries(this.#o.runtime)) {
      try {
        await Deno.stat(path);
      } catch (err) {
        const reason = err instanceof Deno.errors.NotFound ? "missing" : (err as Error).message;
        throw new StatusError(
          Code.FAILED_PRECONDITION,
          `VM runtime ${what} ${path} is ${reason}; build it with: deno task vm:rootfs`,
        );
      }
    }
  }

  /** Lets qemu's account reach `dir` (root mode only). */
  async #share(dir: string): Promise<void> {
    if (this.#o.vmUser) await shareDir(dir, this.#o.vmUser);
  }

  /** Gives qemu's account the file it reads or writes (root mode only). */
  async #give(file: string): Promise<void> {
    if (this.#o.vmUser) await giveFile(file, this.#o.vmUser);
  }

  async #writeGuestFiles(sandbox: Wire<DriverSandbox>, dir: string): Promise<FwCfgFile[]> {
    const spec = sandbox.spec!;
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(spec.template?.environment ?? {})) env[k] = String(v);
    for (const [k, v] of Object.entries(spec.environment ?? {})) env[k] = String(v);
    const prov = splitProvisioning(env);
    const guest = `${dir}/guest`;
    await Deno.mkdir(guest, { mode: 0o700 });
    await this.#share(guest);
    const files: FwCfgFile[] = [];
    const put = async (f: { fwcfg: string }, content: string) => {
      const path = `${guest}/${f.fwcfg}`;
      await Deno.writeTextFile(path, content, { mode: 0o600 });
      await this.#give(path);
      files.push({ name: f.fwcfg, file: path });
    };
    await put(
      GUEST_FILES.config,
      renderGuestConfig({
        sandboxId: sandbox.id!,
        sandboxName: sandbox.name || sandbox.id!,
        logLevel: spec.log_level || this.#o.logLevel,
        tls: !!prov.tlsCa,
        dns: this.#o.allowEgress ? GUEST_DNS : undefined,
      }),
    );
    await put(GUEST_FILES.environment, renderGuestEnvironment(prov.environment));
    if (prov.sshHostKey) {
      const key = prov.sshHostKey.endsWith("\n") ? prov.sshHostKey : prov.sshHostKey + "\n";
      await put(GUEST_FILES.sshHostKey, key);
    }
    if (prov.supervisorToken) await put(GUEST_FILES.supervisorToken, prov.supervisorToken);
    if (prov.tlsCa) await put(GUEST_FILES.tlsCa, prov.tlsCa);
    return files;
  }

  /** ValidateSandboxCreate. */
  async validate(sandbox: Wire<DriverSandbox> | null | undefined): Promise<void> {
    validateSandbox(sandbox);
    const resources = this.#resources(sandbox!);
    await this.#checkRuntime();
    const image = await this.#image();
    await checkDiskFits(image.path, resources.diskGiB).catch((err) => {
      if (err instanceof Deno.errors.NotFound) {
        throw new StatusError(
          Code.FAILED_PRECONDITION,
          `the guest image ${image.path} is missing; build it with: deno task vm:rootfs`,
        );
      }
      throw err;
    });
  }

  /** CreateSandbox: prepares the state dir and starts the VM. */
  async create(sandbox: Wire<DriverSandbox> | null | undefined): Promise<void> {
    if (this.#closing) throw new StatusError(Code.UNAVAILABLE, "the VM driver is shutting down");
    validateSandbox(sandbox);
    const resources = this.#resources(sandbox!);
    const id = sandbox!.id!;
    if (this.#sandboxes.has(id)) {
      throw new StatusError(Code.ALREADY_EXISTS, `sandbox ${id} already exists`);
    }
    const dir = this.sandboxDir(id);
    const r: Record_ = {
      id,
      name: sandbox!.name || id,
      namespace: sandbox!.namespace || "",
      dir,
      conditions: [condition("Starting", "VM is starting", this.#now())],
      deleting: false,
      resources: { value: resources, since: this.#now() },
      readers: [],
    };
    // Reserve the id before the first await so a concurrent duplicate fails.
    this.#sandboxes.set(id, r);
    const log = this.#o.log.with({ sandbox_id: id });
    let published = false;
    try {
      await this.#checkRuntime();
      await Deno.mkdir(this.#sandboxesDir(), { recursive: true, mode: 0o700 });
      await this.#share(this.#sandboxesDir());
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      await Deno.mkdir(dir, { mode: 0o700 });
      await this.#share(dir);
      const fwCfg = await this.#writeGuestFiles(sandbox!, dir);
      await Deno.writeTextFile(`${dir}/console.log`, "", { mode: 0o600 });
      // qemu cannot create files in a directory it does not own: it fills this one.
      await Deno.writeTextFile(`${dir}/qemu.pid`, "");
      await this.#give(`${dir}/qemu.pid`);
      this.#publish(r);
      published = true;
      const image = await this.#image();
      const rootDisk = await this.#disks.prepare({ dir, image, sizeGiB: resources.diskGiB });
      // What a restart of this sandbox's VM needs besides its disk.
      await Deno.writeTextFile(
        `${dir}/vm.json`,
        JSON.stringify({ resources, image: { key: image.key, format: image.format } }) + "\n",
        { mode: 0o600 },
      );
      const accel = await this.#o.accel();
      const boot = this.#o.bootRuntime ? await this.#o.bootRuntime() : this.#o.runtime;
      if (r.deleting || this.#closing) {
        throw new StatusError(Code.ABORTED, "sandbox deleted while starting");
      }
      r.forwarder = await this.#forwarders.open(id);
      const spec: QemuSpec = {
        id,
        accel,
        vcpus: resources.vcpus,
        memMib: resources.memMib,
        kernel: boot.kernel,
        initramfs: boot.initramfs,
        disk: boot.disk,
        rootDisk: {
          overlay: rootDisk.overlay,
          base: rootDisk.base,
          baseFormat: rootDisk.baseFormat,
        },
        pidFile: `${dir}/qemu.pid`,
        fwCfg,
        gatewaySocket: r.forwarder.path,
        forwarder: this.#o.forwarder,
        allowEgress: this.#o.allowEgress,
      };
      r.handle = await this.#o.launcher.launch(spec);
      r.conditions = [condition("Starting", `VM is starting (accel ${accel})`, this.#now())];
      log.info("VM started", {
        pid: r.handle.pid,
        accel,
        dir,
        vcpus: resources.vcpus,
        mem_mib: resources.memMib,
        disk_gib: resources.diskGiB,
      });
      this.#publish(r);
      this.#platformEvent(id, {
        source: "vm",
        type: "Normal",
        reason: "Started",
        message: `qemu started (accel ${accel}; ${describeResources(resources)})`,
      });
    } catch (err) {
      this.#sandboxes.delete(id);
      await r.forwarder?.close().catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      if (published) this.#emit({ payload: "deleted", deleted: { sandbox_id: id } });
      if (err instanceof StatusError) throw err;
      log.error("VM launch failed", { error: (err as Error).message });
      throw new StatusError(Code.INTERNAL, `cannot start the VM: ${(err as Error).message}`);
    }
    const handle = r.handle!;
    this.#startConsole(r, handle);
    handle.status.then((st) => this.#onExit(r, handle, st));
  }

  #onExit(r: Record_, handle: VmHandle, st: { code: number; signal: string | null }): void {
    r.exited = true;
    // No guest is left to connect: close its forwarder (and its connections) now.
    r.forwarder?.close().catch((err) =>
      this.#o.log.warn("cannot close a forwarder", { sandbox_id: r.id, error: String(err) })
    );
    if (r.deleting || this.#closing || this.#sandboxes.get(r.id) !== r) return;
    const status = st.signal ? 128 + (SIGNALS[st.signal] ?? 0) : st.code;
    const message = `VM process exited with status ${status}` +
      (st.signal ? ` (${st.signal})` : "");
    this.#o.log.warn("VM exited", { sandbox_id: r.id, pid: handle.pid, status });
    r.conditions = [condition("ProcessExited", message, this.#now())];
    this.#publish(r);
    this.#platformEvent(r.id, { source: "vm", type: "Warning", reason: "ProcessExited", message });
  }

  /**
   * Pumps the VM's output: every console byte into `console.log` (rotated),
   * qemu's own messages in as `qemu: …` lines, and each line, capped and
   * cleaned, as a `console` platform event under the sandbox's log rate
   * limit (a "N console lines dropped" event when it resumes). Reading waits
   * for the file write, so a guest cannot outrun the disk.
   */
  #startConsole(r: Record_, handle: VmHandle): void {
    const log = new RotatingLog(`${r.dir}/console.log`, {
      maxBytes: this.#o.consoleLogMaxBytes,
    });
    const limiter = new LogRateLimiter({ now: this.#now });
    const encoder = new TextEncoder();
    const emit = (line: string) => {
      const { admit, dropped } = limiter.admit(utf8Length(line));
      if (!admit) return;
      if (dropped > 0) {
        this.#platformEvent(r.id, {
          source: "console",
          type: "Warning",
          reason: "ConsoleDropped",
          message: limiter.droppedMessage(dropped, "console lines"),
        });
      }
      this.#platformEvent(r.id, {
        source: "console",
        type: "Normal",
        reason: "Console",
        message: line,
      });
    };
    const pump = async (stream: ReadableStream<Uint8Array>, qemu: boolean) => {
      const reader = stream.getReader();
      r.readers.push(reader);
      const lines = new LineSplitter();
      const take = async (found: string[]) => {
        for (const line of found) {
          const text = qemu ? `qemu: ${line}` : line;
          if (qemu) await log.write(encoder.encode(`${text}\n`));
          emit(text);
        }
      };
      try {
        while (true) {
          const { done, value } = await reader.read();
          if (done) break;
          if (!qemu) await log.write(value);
          await take(lines.push(value));
        }
        await take(lines.flush());
      } catch {
        // cancelled (sandbox deleted) or the pipe broke: nothing more to read
      }
    };
    r.consoleDone = Promise.all([pump(handle.console, false), pump(handle.stderr, true)])
      .then(() => log.close());
  }

  /** Stops reading the VM's output; resolves once `console.log` is closed. */
  async #stopConsole(r: Record_): Promise<void> {
    for (const reader of r.readers) reader.cancel().catch(() => {});
    await r.consoleDone;
  }

  async #stopVm(handle: VmHandle, graceMs: number): Promise<void> {
    handle.kill("SIGTERM");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = await Promise.race([
      handle.status.then(() => false),
      new Promise<boolean>((res) => {
        timer = setTimeout(() => res(true), graceMs);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      handle.kill("SIGKILL");
      await handle.status;
    }
  }

  /** DeleteSandbox by id, else name; false when unknown. */
  delete(id: string, name: string): Promise<boolean> {
    if (!id && !name) {
      return Promise.reject(
        new StatusError(Code.INVALID_ARGUMENT, "sandbox_id or sandbox_name is required"),
      );
    }
    const r = this.#find(id, name);
    if (!r) return Promise.resolve(false);
    r.deletion ??= this.#delete(r);
    return r.deletion;
  }

  async #delete(r: Record_): Promise<boolean> {
    r.deleting = true;
    r.conditions = [condition("Deleting", "VM is being deleted", this.#now())];
    this.#publish(r);
    if (r.handle && !r.exited) await this.#stopVm(r.handle, this.#o.stopGraceMs ?? 5000);
    await this.#stopConsole(r);
    await r.forwarder?.close().catch(() => {});
    try {
      await Deno.remove(r.dir, { recursive: true });
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) {
        r.deletion = undefined;
        throw new StatusError(
          Code.INTERNAL,
          `cannot remove ${r.dir}: ${(err as Error).message}`,
        );
      }
    }
    this.#sandboxes.delete(r.id);
    this.#o.log.info("sandbox deleted", { sandbox_id: r.id });
    this.#emit({ payload: "deleted", deleted: { sandbox_id: r.id } });
    return true;
  }

  /** Stops every VM (SIGTERM, then SIGKILL after `graceMs`) and ends all watches. */
  async shutdown(graceMs = 2000): Promise<void> {
    this.#closing = true;
    const running = [...this.#sandboxes.values()];
    await Promise.all(running.map(async (r) => {
      if (r.handle && !r.exited) await this.#stopVm(r.handle, graceMs);
      await this.#stopConsole(r);
      await r.forwarder?.close().catch(() => {});
    }));
    this.#listeners.clear();
  }

  /** Kills every VM at once (SIGKILL), without waiting: the last resort before exit. */
  killAll(): void {
    this.#closing = true;
    for (const r of this.#sandboxes.values()) {
      for (const reader of r.readers) reader.cancel().catch(() => {});
      if (r.handle && !r.exited) r.handle.kill("SIGKILL");
      r.forwarder?.close().catch(() => {});
    }
  }
}

const SIGNALS: Readonly<Record<string, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGABRT: 6,
  SIGKILL: 9,
  SIGSEGV: 11,
  SIGPIPE: 13,
  SIGTERM: 15,
};
