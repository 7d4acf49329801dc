/**
 * The VM driver's sandbox lifecycle, independent of gRPC: one qemu per
 * sandbox, its per-sandbox state dir, progress conditions, the watch bus,
 * console (driver_vm/console.ts), exit monitoring, stop/start and deletion.
 *
 * Each sandbox boots from its image through its own disk (a qcow2 overlay
 * in its state dir, `disk.ts`), sized, like its vCPUs and memory, from its
 * template's resources (`resources.ts`); the driver reports what it gave
 * the VM as a `Resources` condition.
 *
 * Readiness belongs to the gateway: this driver reports `Ready=False` with
 * reason `Starting` while a VM runs, `Stopping`/`Stopped` around a stop,
 * `ProcessExited` (terminal) when qemu ends on its own, `Deleting` while it
 * is being removed — never `Ready=True`.
 *
 * Persistence: each sandbox's dir (`<state-dir>/sandboxes/<id>/`) holds a
 * manifest (`sandbox.json`, written once the dir is complete), its disk
 * (`disk.qcow2`) and what its VM was given (`vm.json`: resources, image
 * key), the guest's files (`guest/`: config, environment, SSH host key,
 * supervisor token, CA — the only copy of those secrets; the gateway keeps
 * hashes; plus `network` and `environment.boot`, rewritten at every boot
 * from whether egress is on then) and its console log. A stop keeps all of it; only delete removes it. When the driver
 * starts, {@link VmDriver.restore} reads every manifest back as a stopped
 * sandbox; the gateway, which owns the intent, starts the ones that should
 * run (`gateway_manages_lifecycle`). A dir without a manifest is an
 * unfinished create and is removed.
 *
 * Stopping asks the guest to power off through the VM's QMP channel
 * (`qmp.ts`), waits up to `powerdownGraceMs`, then SIGTERM and, after
 * `stopGraceMs`, SIGKILL. Operations on one sandbox (start, stop, delete)
 * run one at a time.
 *
 * @module
 */
import { splitProvisioning } from "../core/provisioning.ts";
import type { Logger } from "../core/log.ts";
import { LogRateLimiter } from "../core/rate_limit.ts";
import { truncateForEcho, utf8Length } from "../core/text.ts";
import type {
  DriverSandbox,
  DriverWatchSandboxesEvent,
  PlatformEvent,
  SandboxCondition,
  Wire,
} from "../core/protocol.ts";
import { Code, StatusError } from "../core/status.ts";
import { VERSION } from "../core/version.ts";
import type { Accel } from "./config.ts";
import { LineSplitter, RotatingLog } from "./console.ts";
import {
  checkDiskFits,
  DEFAULT_DISK_GIB,
  DEFAULT_QEMU_IMG,
  Disks,
  type ImageRef,
  OVERLAY_FILE,
} from "./disk.ts";
import {
  bootEnvironment,
  GUEST_FILES,
  renderGuestConfig,
  renderGuestEnvironment,
  renderGuestNetwork,
} from "./guest.ts";
import {
  DEFAULT_MAX_GUEST_CONNECTIONS,
  egressRoute,
  type ForwarderFactory,
  gatewayRoute,
  type GuestForwarder,
  GuestForwarders,
} from "./guest_forwarder.ts";
import type { FwCfgFile, QemuSpec, RootDiskSpec } from "./qemu.ts";
import type { Images } from "./images.ts";
import { type QmpChannel, QmpChannels, type QmpFactory } from "./qmp.ts";
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
  /** Where the shared copy of an image lives. */
  imagePath(image: Pick<ImageRef, "key" | "format">): string;
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
  /** Named images (`template.image`); absent: only the default image boots. */
  images?: Images;
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
  /**
   * The egress proxy's guest socket (`--egress-socket`): each VM then gets
   * the egress alias's proxy and DNS ports, carried there, and its logins
   * the proxy variables. Absent: no network beyond the gateway.
   */
  egressSocket?: string;
  /**
   * Per-VM forwarder sockets (a `gateway` route, and `proxy` and `dns` with
   * egress on); default the real {@link GuestForwarders}.
   */
  forwarders?: ForwarderFactory;
  /** The user qemu runs as, when not the driver's own: it must reach the forwarder sockets. */
  forwarderOwner?: { uid: number; gid: number };
  /**
   * The unprivileged account qemu runs as (the driver is root): the files
   * qemu uses become its own, their directories reachable by its group
   * only (see `vm_user.ts`). Absent: qemu runs as the driver; all stays 0700.
   */
  vmUser?: VmUser;
  /** The runtime files qemu boots from (e.g. copies it can read); default `runtime`. */
  bootRuntime?: () => Promise<RuntimeFiles>;
  log: Logger;
  /** Per-VM QMP channels (clean shutdown); default the real {@link QmpChannels}. */
  qmp?: QmpFactory;
  /** How long a stop waits for the guest to power off before SIGTERM; default 30000 ms. */
  powerdownGraceMs?: number;
  /** Grace period between SIGTERM and SIGKILL on stop and delete; default 5000 ms. */
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
  createdAtMs: number;
  conditions: SandboxCondition[];
  deleting: boolean;
  /** What the VM gets, reported as the `Resources` condition. */
  resources?: { value: VmResources; since: number };
  /** The image its disk is an overlay of. */
  image?: Pick<ImageRef, "key" | "format">;
  /** Its root disk (overlay over the shared image). */
  rootDisk?: RootDiskSpec;
  handle?: VmHandle;
  /** The VM's forwarder sockets (gateway; proxy and DNS with egress on). */
  forwarder?: GuestForwarder;
  /** The VM's QMP channel. */
  qmp?: QmpChannel;
  exited?: boolean;
  /** A stop is shutting the VM down (its exit is not a failure). */
  stopping?: boolean;
  deletion?: Promise<boolean>;
  /** Readers of the VM's output, cancelled when the sandbox goes. */
  readers: ReadableStreamDefaultReader<Uint8Array>[];
  /** Resolves once the console is drained and `console.log` closed. */
  consoleDone?: Promise<void>;
  /** The last start/stop/delete of this sandbox (they run one at a time). */
  lifecycle: Promise<unknown>;
}

const SANDBOX_ID = /^[A-Za-z0-9._-]{1,128}$/;

/** The environment handed to the guest at its latest boot (beside `guest/environment`). */
export const BOOT_ENVIRONMENT_FILE = "environment.boot";

/** The manifest file in each sandbox dir. */
export const MANIFEST_FILE = "sandbox.json";
/** Format tag of {@link SandboxManifest}. */
export const MANIFEST_FORMAT = "openshell-vm-sandbox/1";
/** Largest manifest read back. */
export const MAX_MANIFEST_BYTES = 64 * 1024;

/** What a sandbox dir records about its sandbox (`sandbox.json`). */
export interface SandboxManifest {
  format: typeof MANIFEST_FORMAT;
  id: string;
  name: string;
  namespace: string;
  created_at_ms: number;
}

/** The file beside a sandbox's disk that records what its VM was given. */
export const VM_FILE = "vm.json";

/** What `vm.json` records: the VM's size and the image its disk is an overlay of. */
export interface VmRecord {
  resources: VmResources;
  image: Pick<ImageRef, "key" | "format">;
}

/** Parses and checks `vm.json`; throws one line saying what is wrong. */
export function parseVmRecord(text: string): VmRecord {
  if (text.length > MAX_MANIFEST_BYTES) throw new Error("vm.json is too large");
  const v = JSON.parse(text) as {
    resources?: Record<string, unknown>;
    image?: Record<string, unknown>;
  };
  const n = (k: string, max: number): number => {
    const x = v?.resources?.[k];
    if (typeof x !== "number" || !Number.isSafeInteger(x) || x < 1 || x > max) {
      throw new Error(`vm.json resources.${k} is invalid`);
    }
    return x;
  };
  const resources = {
    vcpus: n("vcpus", 1024),
    memMib: n("memMib", 2 ** 24),
    diskGiB: n("diskGiB", 2 ** 20),
  };
  const key = v?.image?.key;
  const format = v?.image?.format;
  if (typeof key !== "string" || !/^[A-Za-z0-9_.-]{1,64}$/.test(key) || key.startsWith(".")) {
    throw new Error("vm.json image.key is invalid");
  }
  if (format !== "raw" && format !== "qcow2") throw new Error("vm.json image.format is invalid");
  return { resources, image: { key, format } };
}

/** Parses and checks a manifest; throws one line saying what is wrong. */
export function parseManifest(text: string, dirName: string): SandboxManifest {
  if (text.length > MAX_MANIFEST_BYTES) throw new Error("manifest is too large");
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(text);
  } catch (err) {
    throw new Error(`manifest is not JSON: ${(err as Error).message}`);
  }
  if (!m || typeof m !== "object") throw new Error("manifest is not an object");
  if (m.format !== MANIFEST_FORMAT) {
    throw new Error(`manifest format ${JSON.stringify(m.format)} is not ${MANIFEST_FORMAT}`);
  }
  const str = (k: string, max: number): string => {
    const v = m[k];
    if (typeof v !== "string" || v.length > max) throw new Error(`manifest ${k} is invalid`);
    return v;
  };
  const id = str("id", 128);
  if (id !== dirName || !SANDBOX_ID.test(id) || id === "." || id === "..") {
    throw new Error(`manifest id ${JSON.stringify(truncateForEcho(id))} does not match its dir`);
  }
  const created = m.created_at_ms;
  if (typeof created !== "number" || !Number.isSafeInteger(created) || created < 0) {
    throw new Error("manifest created_at_ms is invalid");
  }
  return {
    format: MANIFEST_FORMAT,
    id,
    name: str("name", 1024) || id,
    namespace: str("namespace", 1024),
    created_at_ms: created,
  };
}

/** The path of a VM's forwarder socket of `route`; throws when the factory made none. */
function forwarderPath(f: GuestForwarder, route: string): string {
  const socket = f.sockets[route];
  if (!socket) throw new Error(`the VM's forwarders have no ${route} socket`);
  return socket.path;
}

/**
 * The sandbox's own environment (`guest/environment`, written at create);
 * `{}` when absent. A damaged one is FAILED_PRECONDITION.
 */
async function readGuestEnvironment(path: string): Promise<Record<string, string>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return {};
    throw err;
  }
  try {
    const v: unknown = JSON.parse(text);
    if (!v || typeof v !== "object" || Array.isArray(v)) throw new Error("not a JSON object");
    const env: Record<string, string> = {};
    for (const [k, x] of Object.entries(v)) {
      if (typeof x !== "string") throw new Error(`the value of ${k} is not a string`);
      env[k] = x;
    }
    return env;
  } catch (err) {
    throw new StatusError(
      Code.FAILED_PRECONDITION,
      `the sandbox's ${path} is damaged (${(err as Error).message}); delete the sandbox and ` +
        "create it again",
    );
  }
}

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
  readonly #listeners = new Set<(e: DriverWatchSandboxesEvent) => void>();
  readonly #now: () => number;
  readonly #forwarders: ForwarderFactory;
  readonly #qmp: QmpFactory;
  readonly #disks: DiskProvider;
  #closing = false;

  /** Creates the driver; nothing runs until {@link create} or {@link restore}. */
  constructor(options: VmDriverOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
    const egress = options.egressSocket;
    this.#forwarders = options.forwarders ?? new GuestForwarders({
      stateDir: options.stateDir,
      routes: [
        gatewayRoute(
          options.gateway,
          options.maxGuestConnections ?? DEFAULT_MAX_GUEST_CONNECTIONS,
        ),
        ...(egress ? [egressRoute(egress, "http"), egressRoute(egress, "dns")] : []),
      ],
      log: options.log,
      owner: options.forwarderOwner,
    });
    this.#qmp = options.qmp ?? new QmpChannels({
      stateDir: options.stateDir,
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

  /** The image `template.image` names ("" or `default`: the built-in one). */
  async #image(name = ""): Promise<ImageRef> {
    if (this.#o.images) return await this.#o.images.resolve(name);
    if (name && name !== "default") {
      throw new StatusError(
        Code.FAILED_PRECONDITION,
        `this VM driver has no named images; template.image "${truncateForEcho(name)}" cannot boot`,
      );
    }
    if (!this.#o.image) {
      throw new StatusError(
        Code.FAILED_PRECONDITION,
        "the VM driver has no guest image; build it with: deno task vm:rootfs",
      );
    }
    return await this.#o.image();
  }

  /** Keys of the images this driver's sandboxes boot (their disks are overlays of them). */
  imageKeys(): Set<string> {
    return new Set(this.imageUsers().keys());
  }

  /** The sandboxes (names) whose disks are overlays of each image key. */
  imageUsers(): Map<string, string[]> {
    const users = new Map<string, string[]>();
    for (const r of this.#sorted()) {
      if (!r.image) continue;
      users.set(r.image.key, [...(users.get(r.image.key) ?? []), r.name]);
    }
    return users;
  }

  /** GetCapabilities. */
  capabilities(): {
    driver_name: string;
    driver_version: string;
    default_image: string;
    supports_gpu: boolean;
    gateway_manages_lifecycle: boolean;
  } {
    return {
      driver_name: DRIVER_NAME,
      driver_version: VERSION,
      default_image: "",
      supports_gpu: false,
      gateway_manages_lifecycle: true,
    };
  }

  #sandboxesDir(): string {
    return `${this.#o.stateDir}/sandboxes`;
  }

  /** The per-sandbox state dir. */
  sandboxDir(id: string): string {
    return `${this.#sandboxesDir()}/${id}`;
  }

  #running(r: Record_): boolean {
    return !!r.handle && !r.exited;
  }

  #snapshot(r: Record_): DriverSandbox {
    return {
      id: r.id,
      name: r.name,
      namespace: r.namespace,
      spec: null,
      status: {
        sandbox_name: r.name,
        instance_id: this.#running(r) ? String(r.handle!.pid) : "",
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

  #emit(e: DriverWatchSandboxesEvent): void {
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
  watch(listener: (e: DriverWatchSandboxesEvent) => void): () => void {
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

  /** The sandbox by id, else name; INVALID_ARGUMENT/NOT_FOUND/FAILED_PRECONDITION otherwise. */
  #require(id: string, name: string): Record_ {
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
        `sandbox ${id} is named "${truncateForEcho(r.name)}", not "${truncateForEcho(name)}"`,
      );
    }
    return r;
  }

  /** GetSandbox by id, else by name. */
  get(id: string, name: string): DriverSandbox {
    return this.#snapshot(this.#require(id, name));
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

  async #writeGuestFiles(sandbox: Wire<DriverSandbox>, dir: string): Promise<void> {
    const spec = sandbox.spec!;
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(spec.template?.environment ?? {})) env[k] = String(v);
    for (const [k, v] of Object.entries(spec.environment ?? {})) env[k] = String(v);
    const prov = splitProvisioning(env);
    const guest = `${dir}/guest`;
    await Deno.mkdir(guest, { mode: 0o700 });
    await this.#share(guest);
    const put = async (f: { fwcfg: string }, content: string) => {
      const path = `${guest}/${f.fwcfg}`;
      await Deno.writeTextFile(path, content, { mode: 0o600 });
      await this.#give(path);
    };
    await put(
      GUEST_FILES.config,
      renderGuestConfig({
        sandboxId: sandbox.id!,
        sandboxName: sandbox.name || sandbox.id!,
        logLevel: spec.log_level || this.#o.logLevel,
        tls: !!prov.tlsCa,
      }),
    );
    await put(GUEST_FILES.environment, renderGuestEnvironment(prov.environment));
    if (prov.sshHostKey) {
      const key = prov.sshHostKey.endsWith("\n") ? prov.sshHostKey : prov.sshHostKey + "\n";
      await put(GUEST_FILES.sshHostKey, key);
    }
    if (prov.supervisorToken) await put(GUEST_FILES.supervisorToken, prov.supervisorToken);
    if (prov.tlsCa) await put(GUEST_FILES.tlsCa, prov.tlsCa);
  }

  /**
   * The guest files of a boot, in fw_cfg order (the same at every boot):
   * those of `dir/guest` written at create, and this boot's `network` and
   * environment (the sandbox's, plus the proxy's variables with egress on),
   * written now.
   */
  async #guestFiles(dir: string): Promise<FwCfgFile[]> {
    const guest = `${dir}/guest`;
    const egress = this.#o.egressSocket !== undefined;
    const put = async (name: string, content: string): Promise<string> => {
      const path = `${guest}/${name}`;
      await Deno.writeTextFile(path, content, { mode: 0o600 });
      await this.#give(path);
      return path;
    };
    const own = await readGuestEnvironment(`${guest}/${GUEST_FILES.environment.fwcfg}`);
    const environment = await put(
      BOOT_ENVIRONMENT_FILE,
      renderGuestEnvironment(bootEnvironment(own, egress)),
    );
    await put(GUEST_FILES.network.fwcfg, renderGuestNetwork({ egress }));
    const files: FwCfgFile[] = [];
    for (const f of Object.values(GUEST_FILES)) {
      const path = f === GUEST_FILES.environment ? environment : `${guest}/${f.fwcfg}`;
      try {
        if ((await Deno.lstat(path)).isFile) files.push({ name: f.fwcfg, file: path });
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
    }
    if (!files.some((f) => f.name === GUEST_FILES.config.fwcfg)) {
      throw new StatusError(
        Code.FAILED_PRECONDITION,
        `the sandbox's guest config ${dir}/guest/${GUEST_FILES.config.fwcfg} is missing; ` +
          "delete the sandbox and create it again",
      );
    }
    return files;
  }

  async #writeManifest(r: Record_): Promise<void> {
    const manifest: SandboxManifest = {
      format: MANIFEST_FORMAT,
      id: r.id,
      name: r.name,
      namespace: r.namespace,
      created_at_ms: r.createdAtMs,
    };
    const tmp = `${r.dir}/${MANIFEST_FILE}.tmp`;
    await Deno.writeTextFile(tmp, JSON.stringify(manifest) + "\n", { mode: 0o600 });
    await Deno.rename(tmp, `${r.dir}/${MANIFEST_FILE}`);
  }

  /** ValidateSandboxCreate. */
  async validate(sandbox: Wire<DriverSandbox> | null | undefined): Promise<void> {
    validateSandbox(sandbox);
    const resources = this.#resources(sandbox!);
    await this.#checkRuntime();
    const image = await this.#image(sandbox!.spec?.template?.image ?? "");
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

  /**
   * Reads back the sandboxes an earlier run left (their manifests) as
   * stopped sandboxes; removes dirs without a manifest (an unfinished
   * create). Call once, before serving. Returns how many were restored.
   */
  async restore(): Promise<number> {
    const root = this.#sandboxesDir();
    const entries: Deno.DirEntry[] = [];
    try {
      for await (const e of Deno.readDir(root)) entries.push(e);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return 0;
      throw err;
    }
    let restored = 0;
    for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const dir = `${root}/${e.name}`;
      const log = this.#o.log.with({ sandbox_id: e.name });
      if (!e.isDirectory) {
        log.warn("ignoring a non-directory in the sandboxes dir", { path: dir });
        continue;
      }
      let text: string;
      try {
        text = await Deno.readTextFile(`${dir}/${MANIFEST_FILE}`);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
        await Deno.remove(dir, { recursive: true }).catch(() => {});
        log.info("removed a sandbox dir without a manifest (an unfinished create)", { dir });
        continue;
      }
      let m: SandboxManifest;
      try {
        m = parseManifest(text, e.name);
      } catch (err) {
        log.warn(
          `ignoring sandbox dir ${dir}: ${(err as Error).message} (remove it by hand)`,
        );
        continue;
      }
      if (this.#sandboxes.has(m.id)) continue;
      let vm: VmRecord | undefined;
      try {
        vm = parseVmRecord(await Deno.readTextFile(`${dir}/${VM_FILE}`));
      } catch (err) {
        // Kept (its files may matter to someone), but it cannot boot: start says why.
        log.warn(`sandbox dir ${dir} has no usable ${VM_FILE}: ${(err as Error).message}`);
      }
      await Deno.remove(`${dir}/${MANIFEST_FILE}.tmp`).catch(() => {});
      this.#sandboxes.set(m.id, {
        id: m.id,
        name: m.name,
        namespace: m.namespace,
        dir,
        createdAtMs: m.created_at_ms,
        ...(vm ? { resources: { value: vm.resources, since: this.#now() }, image: vm.image } : {}),
        conditions: [condition("Stopped", "VM is not running (the driver restarted)", this.#now())],
        deleting: false,
        readers: [],
        lifecycle: Promise.resolve(),
      });
      restored++;
      log.info("restored a sandbox from its state dir (stopped until started)", { dir });
    }
    return restored;
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
      createdAtMs: this.#now(),
      conditions: [condition("Starting", "VM is starting", this.#now())],
      deleting: false,
      resources: { value: resources, since: this.#now() },
      readers: [],
      lifecycle: Promise.resolve(),
    };
    // Reserve the id before the first await so a concurrent duplicate fails.
    this.#sandboxes.set(id, r);
    let published = false;
    const creating = (async () => {
      try {
        await this.#checkRuntime();
        await Deno.mkdir(this.#sandboxesDir(), { recursive: true, mode: 0o700 });
        await this.#share(this.#sandboxesDir());
        await Deno.remove(dir, { recursive: true }).catch(() => {});
        await Deno.mkdir(dir, { mode: 0o700 });
        await this.#share(dir);
        await this.#writeGuestFiles(sandbox!, dir);
        await Deno.writeTextFile(`${dir}/console.log`, "", { mode: 0o600 });
        this.#publish(r);
        published = true;
        const image = await this.#image(sandbox!.spec?.template?.image ?? "");
        r.rootDisk = await this.#disks.prepare({ dir, image, sizeGiB: resources.diskGiB });
        r.image = { key: image.key, format: image.format };
        // What a restart of this sandbox's VM needs besides its disk.
        const vm: VmRecord = { resources, image: r.image };
        await Deno.writeTextFile(`${dir}/${VM_FILE}`, JSON.stringify(vm) + "\n", { mode: 0o600 });
        // Last: a dir with a manifest is a complete sandbox (restore keeps it).
        await this.#writeManifest(r);
        await this.#launch(r);
      } catch (err) {
        this.#sandboxes.delete(id);
        await Deno.remove(dir, { recursive: true }).catch(() => {});
        if (published) this.#emit({ payload: "deleted", deleted: { sandbox_id: id } });
        throw err;
      }
    })();
    r.lifecycle = creating.catch(() => {});
    await creating;
  }

  /**
   * Boots the sandbox's VM from its state dir (create and start): forwarder
   * and QMP sockets, qemu, console, exit watch. On failure nothing of the
   * attempt is left running and the error is a StatusError.
   */
  async #launch(r: Record_): Promise<void> {
    const id = r.id;
    const log = this.#o.log.with({ sandbox_id: id });
    const dir = r.dir;
    try {
      await this.#checkRuntime();
      // qemu cannot create files in a directory it does not own: it fills this one.
      await Deno.writeTextFile(`${dir}/qemu.pid`, "");
      await this.#give(`${dir}/qemu.pid`);
      const fwCfg = await this.#guestFiles(dir);
      const rootDisk = r.rootDisk ?? await this.#existingDisk(r);
      const resources = r.resources?.value;
      if (!resources) {
        throw new StatusError(
          Code.FAILED_PRECONDITION,
          `the sandbox's ${dir}/${VM_FILE} is missing or damaged; delete the sandbox and create ` +
            "it again",
        );
      }
      const accel = await this.#o.accel();
      const boot = this.#o.bootRuntime ? await this.#o.bootRuntime() : this.#o.runtime;
      if (r.deleting || this.#closing) {
        throw new StatusError(Code.ABORTED, "sandbox deleted while starting");
      }
      r.forwarder = await this.#forwarders.open(id);
      r.qmp = await this.#qmp.open(id);
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
        gatewaySocket: forwarderPath(r.forwarder, "gateway"),
        ...(this.#o.egressSocket
          ? {
            egress: {
              proxySocket: forwarderPath(r.forwarder, "proxy"),
              dnsSocket: forwarderPath(r.forwarder, "dns"),
            },
          }
          : {}),
        forwarder: this.#o.forwarder,
        qmpSocket: r.qmp.path,
      };
      const handle = await this.#o.launcher.launch(spec);
      r.handle = handle;
      r.exited = false;
      r.conditions = [condition("Starting", `VM is starting (accel ${accel})`, this.#now())];
      log.info("VM started", {
        pid: handle.pid,
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
      this.#startConsole(r, handle);
      handle.status.then((st) => this.#onExit(r, handle, st));
    } catch (err) {
      await r.forwarder?.close().catch(() => {});
      await r.qmp?.close().catch(() => {});
      r.forwarder = undefined;
      r.qmp = undefined;
      if (err instanceof StatusError) throw err;
      log.error("VM launch failed", { error: (err as Error).message });
      throw new StatusError(Code.INTERNAL, `cannot start the VM: ${(err as Error).message}`);
    }
  }

  /**
   * The root disk of a sandbox whose VM ran before (its overlay and the
   * shared copy of its image must still be there); FAILED_PRECONDITION
   * saying what is missing otherwise.
   */
  async #existingDisk(r: Record_): Promise<RootDiskSpec> {
    if (!r.image) {
      throw new StatusError(
        Code.FAILED_PRECONDITION,
        `the sandbox's ${r.dir}/${VM_FILE} is missing or damaged; delete the sandbox and create ` +
          "it again",
      );
    }
    const overlay = `${r.dir}/${OVERLAY_FILE}`;
    const base = this.#disks.imagePath(r.image);
    for (const [path, what] of [[overlay, "disk"], [base, `image ${r.image.key}`]]) {
      try {
        await Deno.stat(path);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
        throw new StatusError(
          Code.FAILED_PRECONDITION,
          `the sandbox's ${what} (${path}) is gone; delete the sandbox and create it again`,
        );
      }
    }
    r.rootDisk = { overlay, base, baseFormat: r.image.format };
    return r.rootDisk;
  }

  #onExit(r: Record_, handle: VmHandle, st: { code: number; signal: string | null }): void {
    if (r.handle !== handle) return;
    r.exited = true;
    // No guest is left to connect: close its forwarder (and its connections) now.
    r.forwarder?.close().catch((err) =>
      this.#o.log.warn("cannot close a forwarder", { sandbox_id: r.id, error: String(err) })
    );
    r.qmp?.close().catch(() => {});
    if (r.deleting || r.stopping || this.#closing || this.#sandboxes.get(r.id) !== r) return;
    const status = st.signal ? 128 + (SIGNALS[st.signal] ?? 0) : st.code;
    const message = `VM process exited with status ${status}` +
      (st.signal ? ` (${st.signal})` : "") +
      "; its disk is kept: start the sandbox again, or delete it";
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
    const readers: ReadableStreamDefaultReader<Uint8Array>[] = [];
    const pump = async (stream: ReadableStream<Uint8Array>, qemu: boolean) => {
      const reader = stream.getReader();
      readers.push(reader);
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
        // cancelled (sandbox stopped or deleted) or the pipe broke: nothing more to read
      }
    };
    r.consoleDone = Promise.all([pump(handle.console, false), pump(handle.stderr, true)])
      .then(() => log.close())
      .then(() => {
        r.readers = r.readers.filter((x) => !readers.includes(x));
      });
  }

  /** Stops reading the VM's output; resolves once `console.log` is closed. */
  async #stopConsole(r: Record_): Promise<void> {
    for (const reader of r.readers) reader.cancel().catch(() => {});
    await r.consoleDone;
  }

  /**
   * Ends a VM: the guest is asked to power off (QMP) and given `powerdownMs`,
   * then SIGTERM and `termMs`, then SIGKILL. Returns how it ended.
   */
  async #haltVm(
    r: Record_,
    handle: VmHandle,
    opts: { powerdownMs: number; termMs: number },
  ): Promise<"powerdown" | "term" | "kill"> {
    const exitedWithin = async (ms: number): Promise<boolean> => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const done = await Promise.race([
        handle.status.then(() => true),
        new Promise<boolean>((res) => {
          timer = setTimeout(() => res(false), ms);
        }),
      ]);
      clearTimeout(timer);
      return done;
    };
    if (opts.powerdownMs > 0 && r.qmp) {
      const asked = await r.qmp.powerdown().catch(() => false);
      if (asked && await exitedWithin(opts.powerdownMs)) return "powerdown";
      if (asked) {
        this.#o.log.warn("the guest did not power off in time; terminating qemu", {
          sandbox_id: r.id,
          grace_ms: opts.powerdownMs,
        });
      }
    }
    if (opts.termMs > 0) {
      handle.kill("SIGTERM");
      if (await exitedWithin(opts.termMs)) return "term";
    }
    handle.kill("SIGKILL");
    await handle.status;
    return "kill";
  }

  /** Runs `op` after every earlier start/stop/delete of `r`. */
  #serial<T>(r: Record_, op: () => Promise<T>): Promise<T> {
    const run = r.lifecycle.then(op);
    r.lifecycle = run.catch(() => {});
    return run;
  }

  /**
   * StopSandbox: shuts the VM down cleanly (see the module docs) and keeps
   * its state dir; idempotent. NOT_FOUND when unknown.
   */
  stop(id: string, name: string): Promise<void> {
    let r: Record_;
    try {
      r = this.#require(id, name);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#serial(r, () => this.#stop(r));
  }

  async #stop(r: Record_): Promise<void> {
    if (r.deleting) throw new StatusError(Code.FAILED_PRECONDITION, "sandbox is being deleted");
    const handle = r.handle;
    let how = "";
    if (handle && !r.exited) {
      r.stopping = true;
      r.conditions = [condition("Stopping", "VM is shutting down", this.#now())];
      this.#publish(r);
      try {
        how = await this.#haltVm(r, handle, {
          powerdownMs: this.#o.powerdownGraceMs ?? 30_000,
          termMs: this.#o.stopGraceMs ?? 5000,
        });
      } finally {
        r.stopping = false;
      }
    }
    await this.#stopConsole(r);
    await r.forwarder?.close().catch(() => {});
    await r.qmp?.close().catch(() => {});
    r.forwarder = undefined;
    r.qmp = undefined;
    r.handle = undefined;
    r.exited = false;
    const message = how === "powerdown"
      ? "VM powered off; its disk is kept"
      : how
      ? `VM stopped (${how === "term" ? "SIGTERM" : "SIGKILL"}: the guest did not power off); ` +
        "its disk is kept"
      : "VM is not running; its disk is kept";
    r.conditions = [condition("Stopped", message, this.#now())];
    this.#o.log.info("sandbox stopped", { sandbox_id: r.id, how: how || "not running" });
    this.#publish(r);
    this.#platformEvent(r.id, { source: "vm", type: "Normal", reason: "Stopped", message });
  }

  /**
   * StartSandbox: boots a stopped (or exited) sandbox's VM again from its
   * state dir; a running one is left alone. NOT_FOUND when unknown.
   */
  start(id: string, name: string): Promise<void> {
    if (this.#closing) {
      return Promise.reject(new StatusError(Code.UNAVAILABLE, "the VM driver is shutting down"));
    }
    let r: Record_;
    try {
      r = this.#require(id, name);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#serial(r, async () => {
      if (r.deleting) throw new StatusError(Code.FAILED_PRECONDITION, "sandbox is being deleted");
      if (this.#running(r)) return;
      // A VM that exited on its own: its console pump has ended; drop what is left.
      await this.#stopConsole(r);
      r.handle = undefined;
      r.conditions = [condition("Starting", "VM is starting", this.#now())];
      this.#publish(r);
      try {
        await this.#launch(r);
      } catch (err) {
        r.conditions = [
          condition(
            "Stopped",
            `VM could not start: ${(err as Error).message}`,
            this.#now(),
          ),
        ];
        this.#publish(r);
        throw err;
      }
    });
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
    if (!r.deletion) {
      // Marked at once (a start or stop in progress sees it), torn down after them.
      r.deleting = true;
      r.conditions = [condition("Deleting", "VM is being deleted", this.#now())];
      this.#publish(r);
      r.deletion = this.#serial(r, () => this.#delete(r));
    }
    return r.deletion;
  }

  async #delete(r: Record_): Promise<boolean> {
    const handle = r.handle;
    if (handle && !r.exited) {
      await this.#haltVm(r, handle, { powerdownMs: 0, termMs: this.#o.stopGraceMs ?? 5000 });
    }
    await this.#stopConsole(r);
    await r.forwarder?.close().catch(() => {});
    await r.qmp?.close().catch(() => {});
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

  /**
   * Stops every VM — each guest is asked to power off and given `graceMs`,
   * then SIGKILL — keeps every state dir (the next start restores them) and
   * ends all watches.
   */
  async shutdown(graceMs = 2000): Promise<void> {
    this.#closing = true;
    const all = [...this.#sandboxes.values()];
    await Promise.all(all.map(async (r) => {
      const handle = r.handle;
      if (handle && !r.exited) await this.#haltVm(r, handle, { powerdownMs: graceMs, termMs: 0 });
      await this.#stopConsole(r);
      await r.forwarder?.close().catch(() => {});
      await r.qmp?.close().catch(() => {});
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
      r.qmp?.close().catch(() => {});
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
