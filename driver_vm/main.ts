/**
 * `openshell-driver-vm`: the VM compute driver process the gateway starts
 * (`--drivers vm`). Serves ComputeDriver on `<state-dir>/compute-driver.sock`
 * and boots one qemu per sandbox.
 *
 * No orphans: every qemu runs under `setpriv --pdeathsig KILL`, so it dies
 * with this process; this process watches its parent (the gateway) and,
 * when it is gone, kills its VMs and exits. SIGTERM/SIGINT ask every guest
 * to power off, kill what is still running after 5 s, and exit. Either way
 * the sandbox dirs stay: the next start restores them as stopped sandboxes
 * and the gateway starts the ones it wants running.
 *
 * Run as root, it runs every qemu as `--vm-user` (see `vm_user.ts`) and
 * refuses to start, in one line naming the command, when that account is
 * missing.
 *
 * @module
 */
import { hostPortGrant } from "../core/grants.ts";
import { stripTaskSeparator } from "../core/launcher.ts";
import { checkPrivateDir, UnsafePathError } from "../core/secure_fs.ts";
import { FlagError } from "../core/flags.ts";
import { errorMessage, Logger } from "../core/log.ts";
import { VERSION } from "../core/version.ts";
import { decideAccel, probeCachePath, probeKvm, readProbeCache, writeProbeCache } from "./accel.ts";
import {
  type Accel,
  type DriverConfig,
  driverUsage,
  parseDriverConfig,
  socketPath,
} from "./config.ts";
import { Code, StatusError } from "../core/status.ts";
import { Disks, type ImageRef } from "./disk.ts";
import { type RuntimeFiles, VmDriver, type VmDriverOptions } from "./driver.ts";
import type { HostLimits } from "./resources.ts";
import { forwarderBindPath, forwarderDir } from "./guest_forwarder.ts";
import { QemuLauncher } from "./qemu_launcher.ts";
import { qmpBindPath, qmpDir } from "./qmp.ts";
import { builderRunner, Images } from "./images.ts";
import { serveDriver } from "./server.ts";
import {
  ownIds,
  resolveVmUser,
  type RunAs,
  runAsPrefix,
  shareDir,
  stageRuntime,
  vmLimits,
  type VmUser,
  VmUserError,
} from "./vm_user.ts";

/** How often the parent process is checked. */
const PARENT_POLL_MS = 500;
/**
 * How long the guests get to power off when the driver is told to stop
 * (SIGTERM) before their qemu is killed; the gateway waits 10 s for it.
 */
const SHUTDOWN_POWERDOWN_MS = 5000;

/** The runtime files inside a runtime dir (as `deno task vm:rootfs` writes them). */
export function runtimeFiles(runtimeDir: string): RuntimeFiles {
  return {
    kernel: `${runtimeDir}/vmlinuz`,
    initramfs: `${runtimeDir}/initramfs.cpio`,
    disk: `${runtimeDir}/openshell.img`,
  };
}

/**
 * The default image of a runtime dir, from its `manifest.json` (written by
 * `deno task vm:rootfs`); a FAILED_PRECONDITION naming the fix otherwise.
 */
export async function defaultImage(runtimeDir: string): Promise<ImageRef> {
  const fix = "rebuild it with: deno task vm:rootfs";
  let manifest: { image?: { key?: unknown; file?: unknown; format?: unknown } };
  try {
    manifest = JSON.parse(await Deno.readTextFile(`${runtimeDir}/manifest.json`));
  } catch (err) {
    throw new StatusError(
      Code.FAILED_PRECONDITION,
      `cannot read the VM runtime's manifest ${runtimeDir}/manifest.json ` +
        `(${errorMessage(err)}); ${fix}`,
    );
  }
  const im = manifest.image;
  const key = typeof im?.key === "string" ? im.key : "";
  const file = typeof im?.file === "string" ? im.file : "";
  const format = im?.format === "qcow2" ? "qcow2" : im?.format === "raw" ? "raw" : undefined;
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(key) || !/^[A-Za-z0-9_.-]+$/.test(file) || !format) {
    throw new StatusError(
      Code.FAILED_PRECONDITION,
      `the VM runtime ${runtimeDir} names no guest image (built before images existed); ${fix}`,
    );
  }
  return { path: `${runtimeDir}/${file}`, key, format };
}

/** What this host has: CPUs, and memory when this process may read it. */
export function hostLimits(): HostLimits {
  let memMib: number | undefined;
  try {
    memMib = Math.floor(Deno.systemMemoryInfo().total / 2 ** 20);
  } catch {
    memMib = undefined; // no --allow-sys=systemMemoryInfo: memory requests are not checked
  }
  return { cpus: navigator.hardwareConcurrency || undefined, memMib };
}

async function sha256File(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Whether KVM may be there. Deno refuses to stat `/dev/kvm` without
 * `--allow-all`, so on Linux the probe boot decides (it fails at once when
 * `/dev/kvm` is absent or not accessible).
 */
function kvmDevicePossible(): boolean {
  return Deno.build.os === "linux";
}

/** Resolves the accelerator once, logging one line saying which and why. */
async function resolveAccel(
  config: DriverConfig,
  runtime: RuntimeFiles,
  probe: { runAs?: RunAs; boot: () => Promise<RuntimeFiles> },
  log: Logger,
): Promise<Accel> {
  const facts = { os: Deno.build.os, kvmDevice: kvmDevicePossible() };
  let decision = decideAccel(config.accel, facts);
  if (decision.kind === "probe") {
    let key = "";
    try {
      const version = await new Deno.Command(config.qemu, {
        args: ["-version"],
        stdout: "piped",
        stderr: "null",
      })
        .output();
      key = new TextDecoder().decode(version.stdout).split("\n")[0] + " " +
        (await sha256File(runtime.kernel));
    } catch (err) {
      log.warn("cannot identify qemu/kernel for the accelerator probe", {
        error: errorMessage(err),
      });
    }
    const cache = probeCachePath(config.stateDir);
    let verdict = key ? await readProbeCache(cache, key) : undefined;
    const cached = verdict !== undefined;
    if (!verdict) {
      const boot = await probe.boot();
      const limits = vmLimits({ memMib: 256, vcpus: 1 }, { dedicatedUser: !!probe.runAs?.user });
      verdict = await probeKvm({
        qemu: config.qemu,
        prefix: probe.runAs ? runAsPrefix(probe.runAs, limits) : [],
        kernel: boot.kernel,
        initramfs: boot.initramfs,
      });
      if (key) await writeProbeCache(cache, key, verdict).catch(() => {});
    }
    decision = decideAccel(config.accel, { ...facts, probe: verdict });
    if (decision.kind === "decided" && cached) decision.reason += " [cached verdict]";
  }
  if (decision.kind !== "decided") throw new Error("unreachable: accelerator undecided");
  log.info(`accelerator: ${decision.accel} (${decision.reason})`, { accel: decision.accel });
  return decision.accel;
}

/**
 * Throws one clear line unless this process may reach the gateway (guest
 * connections are carried there): a compiled binary's grants are fixed at
 * build time.
 */
export function checkGatewayGrant(gateway: { host: string; port: number }): void {
  const host = hostPortGrant(gateway);
  if (Deno.permissions.querySync({ name: "net", host }).state !== "granted") {
    throw new Error(
      `this driver is not permitted to reach the gateway at ${host} for its guests ` +
        "(a compiled binary keeps the grants it was built with: rebuild it for this gateway, " +
        "or use `deno task driver-vm`)",
    );
  }
}

/**
 * Throws one line unless this process may use the egress proxy's guest
 * socket (net, read and write of exactly that path; see `driverGrants`).
 */
export function checkEgressGrant(socket: string): void {
  const granted = [
    Deno.permissions.querySync({ name: "net", host: `unix:${socket}` }),
    Deno.permissions.querySync({ name: "read", path: socket }),
    Deno.permissions.querySync({ name: "write", path: socket }),
  ].every((p) => p.state === "granted");
  if (!granted) {
    throw new Error(
      `this driver is not permitted to use the egress proxy's socket ${socket} for its guests ` +
        "(a compiled binary keeps the grants it was built with: rebuild it for this gateway's " +
        "state dir, or use `deno task driver-vm`)",
    );
  }
}

/**
 * Removes what an earlier run left that belongs to no VM any more: the
 * forwarder and QMP sockets (every VM gets new ones when it starts). The
 * sandbox dirs stay: {@link VmDriver.restore} reads them back.
 */
async function removeStaleSockets(stateDir: string): Promise<void> {
  for (const dir of [forwarderDir(stateDir), qmpDir(stateDir)]) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  for (const path of [forwarderBindPath(stateDir), qmpBindPath(stateDir)]) {
    await Deno.remove(path).catch(() => {});
  }
}

/**
 * Runs the driver until it is told to stop; resolves with the exit code.
 * `backend` boots the sandboxes (default {@link qemuBackend}).
 */
export async function main(
  args: readonly string[],
  backend: BackendFactory = qemuBackend,
): Promise<number> {
  let config: DriverConfig;
  try {
    const parsed = parseDriverConfig(stripTaskSeparator(args), (n) => Deno.env.get(n));
    if (parsed.kind === "help") {
      console.log(driverUsage());
      return 0;
    }
    if (parsed.kind === "version") {
      console.log(`openshell-driver-vm ${VERSION}`);
      return 0;
    }
    config = parsed.config;
  } catch (err) {
    if (err instanceof FlagError) {
      console.error(`openshell-driver-vm: ${err.message}`);
      return 2;
    }
    throw err;
  }
  const log = new Logger({ level: config.logLevel, target: "openshell-driver-vm" });
  checkGatewayGrant(config.endpoint);
  if (config.egressSocket) checkEgressGrant(config.egressSocket);
  const parent = Deno.ppid;
  try {
    // Keys, tokens and sockets live here: refuse a symlink, another user's dir, or one
    // that others can write.
    await checkPrivateDir(config.stateDir, { create: true, what: "state dir" });
  } catch (err) {
    if (!(err instanceof UnsafePathError)) throw err;
    log.error(`cannot start: ${err.message}`);
    return 1;
  }
  await removeStaleSockets(config.stateDir);
  let machine: DriverBackend;
  try {
    machine = await backend(config, log);
  } catch (err) {
    if (!(err instanceof VmUserError)) throw err;
    console.error(`openshell-driver-vm: ${err.message}`);
    return 1;
  }
  const { started, ...parts } = machine;
  const driver = new VmDriver({
    stateDir: config.stateDir,
    diskGiB: config.diskGiB,
    vcpus: config.vcpus,
    memMib: config.memMib,
    logLevel: config.logLevel,
    gateway: { host: config.endpoint.host, port: config.endpoint.port },
    forwarder: config.forwarder,
    maxGuestConnections: config.maxGuestConnections,
    egressSocket: config.egressSocket,
    log,
    ...parts,
  });
  const restored = await driver.restore();
  if (restored > 0) {
    log.info(`restored ${restored} sandbox(es) from the state dir; the gateway starts them`);
  }
  const socket = socketPath(config.stateDir);
  const server = await serveDriver(driver, {
    socket,
    log,
    filterGoaway: Deno.env.get("OPENSHELL_UNSAFE_KEEP_GOAWAY") !== "1",
    images: parts.images,
  });
  // The state dir is reachable by qemu's group: only root may use the socket.
  await Deno.chmod(socket, 0o600);
  log.info("listening", {
    socket: `unix:${socket}`,
    gateway: `${config.endpoint.host}:${config.endpoint.port}`,
    max_guest_connections: config.maxGuestConnections,
    runtime: config.runtimeDir,
    egress: config.egressSocket
      ? `unix:${config.egressSocket}`
      : "off (guests reach only the gateway)",
  });
  started?.(driver);

  return await new Promise<number>((resolve) => {
    let stopping = false;
    const finish = async (code: number, graceMs: number, why: string) => {
      if (stopping) return;
      stopping = true;
      clearInterval(watchParent);
      for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
      log.info(`stopping: ${why}`);
      if (graceMs > 0) await driver.shutdown(graceMs);
      else driver.killAll();
      await server.close();
      await Deno.remove(socket).catch(() => {});
      resolve(code);
    };
    const watchParent = setInterval(() => {
      const now = Deno.ppid;
      if (now !== parent || now === 1) {
        finish(1, 0, `parent process ${parent} is gone`);
      }
    }, PARENT_POLL_MS);
    const handlers: [Deno.Signal, () => void][] = [
      ["SIGTERM", () => finish(0, SHUTDOWN_POWERDOWN_MS, "SIGTERM")],
      ["SIGINT", () => finish(0, SHUTDOWN_POWERDOWN_MS, "SIGINT")],
    ];
    for (const [s, h] of handlers) Deno.addSignalListener(s, h);
  });
}

/**
 * What a driver process boots its sandboxes with: the parts of
 * {@link VmDriverOptions} that depend on the machine. {@link main} uses
 * {@link qemuBackend}; a test passes its own (e.g. one whose launcher runs
 * each sandbox's supervisor as a host process) and gets the real driver,
 * service, socket, restore and shutdown around it.
 */
export type DriverBackend =
  & Pick<VmDriverOptions, "runtime" | "launcher" | "accel">
  & Partial<
    Pick<
      VmDriverOptions,
      | "host"
      | "image"
      | "images"
      | "disks"
      | "vmUser"
      | "forwarderOwner"
      | "bootRuntime"
      | "qmp"
      | "forwarders"
    >
  >
  & {
    /** Called once the driver serves (background work: image pruning, accelerator probe). */
    started?(driver: VmDriver): void;
  };

/** Builds the {@link DriverBackend} for a config (throws {@link VmUserError} to refuse). */
export type BackendFactory = (config: DriverConfig, log: Logger) => Promise<DriverBackend>;

/**
 * The production backend: qemu (as `--vm-user` when the driver is root),
 * the runtime dir's files and image, qemu-img disks, named images.
 */
export async function qemuBackend(config: DriverConfig, log: Logger): Promise<DriverBackend> {
  const runtime = runtimeFiles(config.runtimeDir);
  // Who qemu runs as: a dedicated account when we are root, else ourselves.
  const linux = Deno.build.os === "linux";
  let vmUser: VmUser | undefined;
  const me = await ownIds(config.stateDir);
  if (linux && me.uid === 0) {
    vmUser = await resolveVmUser(config.vmUser);
    await shareDir(config.stateDir, vmUser);
    log.info("qemu runs unprivileged", { user: vmUser.name, uid: vmUser.uid, gid: vmUser.gid });
  } else {
    log.info("qemu runs as the driver's own user (the driver is not root)", { uid: me.uid });
  }
  const runAs: RunAs | undefined = linux
    ? { setpriv: config.setpriv, prlimit: config.prlimit, user: vmUser }
    : undefined;
  let staged: Promise<RuntimeFiles> | undefined;
  const boot = (): Promise<RuntimeFiles> => {
    if (!vmUser) return Promise.resolve(runtime);
    const user = vmUser;
    const copying = staged ??
      (staged = stageRuntime(runtime, `${config.stateDir}/runtime`, user).catch((err) => {
        staged = undefined;
        throw err;
      }));
    return copying;
  };
  let accelPromise: Promise<Accel> | undefined;
  const accel = () => {
    accelPromise ??= resolveAccel(config, runtime, { runAs, boot }, log);
    return accelPromise;
  };
  const host = hostLimits();
  log.info("host limits for sandbox resources", { cpus: host.cpus, mem_mib: host.memMib });
  const disks = new Disks({ stateDir: config.stateDir, qemuImg: config.qemuImg, vmUser });
  const image = () => defaultImage(config.runtimeDir);
  // The image builder runs in a process of its own (image_builder.ts, its own grants).
  let users = (): Map<string, string[]> => new Map();
  const images = new Images({
    stateDir: config.stateDir,
    defaultImage: image,
    runner: builderRunner(config.imageBuilder),
    builderPath: config.imageBuilder,
    inUse: () => users(),
    vmUser,
    log,
  });
  return {
    runtime,
    image,
    images,
    disks,
    host,
    launcher: new QemuLauncher({ qemu: config.qemu, runAs }),
    accel,
    vmUser,
    // qemu's forwarder (socat) runs as the VM user and must reach the VM's socket.
    forwarderOwner: vmUser ? { uid: vmUser.uid, gid: vmUser.gid } : undefined,
    bootRuntime: vmUser ? boot : undefined,
    started(driver) {
      users = () => driver.imageUsers();
      // Images no sandbox boots any more (not the default, not under a kept disk) go.
      image().then(
        async (im) => {
          const keep = new Set([im.key, ...driver.imageKeys(), ...(await images.keys())]);
          const removed = await disks.prune(keep);
          if (removed.length) {
            log.info("removed unused guest images", { images: removed.join(",") });
          }
          // Copy it for the first sandbox now rather than during its create.
          await disks.stage(im);
        },
        () => {},
      ).catch((err) => log.warn("cannot stage the guest image", { error: errorMessage(err) }));
      // Start the accelerator decision now (the probe may take seconds), unless
      // the runtime is missing: then CreateSandbox explains that instead.
      Deno.stat(runtime.kernel).then(() => accel().catch(() => {}), () => {});
    },
  };
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (err) {
    console.error(`openshell-driver-vm: ${errorMessage(err)}`);
    Deno.exit(1);
  }
}
