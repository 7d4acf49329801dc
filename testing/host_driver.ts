/**
 * TEST FIXTURE — the real VM driver (`driver_vm/main.ts`: its config,
 * ComputeDriver service, state dirs, restore, stop/start, exit watch and
 * shutdown) with a host backend: each sandbox's "VM" is its supervisor
 * started as a process on this host, so the gateway's `--drivers vm` path
 * and the CLI can be tested without qemu.
 *
 * What the backend replaces, and nothing more:
 * - the launcher ({@link HostSupervisors}): reads the guest files the driver
 *   hands qemu as fw_cfg entries (config, environment, SSH host key,
 *   supervisor token, CA) and runs the supervisor through `roleCommand`
 *   with exactly its grants, dialling the gateway's supervisor plane
 *   directly (`--openshell-endpoint`) instead of through the VM's forwarder;
 *   its stderr goes to `supervisor.log` in the sandbox's dir (the console
 *   stays silent);
 * - the QMP channel: a power-down request is SIGTERM to the supervisor;
 * - the runtime, image and disks: empty files (no qemu, no qemu-img).
 *
 * Every supervisor runs under `setpriv --pdeathsig KILL` (when available),
 * so it dies with the driver, which dies with the gateway.
 *
 * This is test tooling and runs with `-A` (see {@link writeHostDriverDir});
 * the sandboxes it starts run with the supervisor's real grants.
 *
 * @module
 */
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import { hostPort } from "../core/endpoint.ts";
import { supervisorGrants } from "../core/grants.ts";
import { REPO_ROOT, roleCommand } from "../core/launcher.ts";
import { errorMessage, type Logger } from "../core/log.ts";
import type { DriverConfig } from "../driver_vm/config.ts";
import { type ImageRef, OVERLAY_FILE } from "../driver_vm/disk.ts";
import type { DiskProvider, Launcher, VmHandle } from "../driver_vm/driver.ts";
import { GUEST_FILES } from "../driver_vm/guest.ts";
import { type DriverBackend, main } from "../driver_vm/main.ts";
import type { QemuSpec, RootDiskSpec } from "../driver_vm/qemu.ts";
import type { QmpChannel, QmpFactory } from "../driver_vm/qmp.ts";
import { fakeRuntime } from "../driver_vm/testing.ts";

/** The sshd every host sandbox uses. */
const SSHD = "/usr/sbin/sshd";
/** Wraps each supervisor so it dies with the driver (when available). */
const SETPRIV = "/usr/bin/setpriv";
/** Name of the driver executable the gateway runs from `--driver-dir`. */
export const DRIVER_BINARY = "openshell-driver-vm";

/**
 * Writes `<dir>/openshell-driver-vm`, an executable wrapper that runs this
 * fixture, so a gateway started with `--drivers vm --driver-dir <dir>` uses
 * it. Returns the wrapper's path.
 */
export async function writeHostDriverDir(dir: string): Promise<string> {
  const path = `${dir}/${DRIVER_BINARY}`;
  const q = (s: string) => `'${s.replaceAll("'", `'"'"'`)}'`;
  const script = [
    "#!/bin/sh",
    "# Test fixture: the VM driver with host supervisors (testing/host_driver.ts).",
    `exec ${q(Deno.execPath())} run --quiet -A --config=${q(`${REPO_ROOT}/deno.json`)} ` +
    `${q(`${REPO_ROOT}/testing/host_driver.ts`)} "$@"`,
    "",
  ].join("\n");
  await Deno.writeTextFile(path, script, { mode: 0o755 });
  await Deno.chmod(path, 0o755);
  return path;
}

/**
 * Reads the guest config the driver writes (`KEY=word` lines, each word as
 * `shellQuote` renders it: bare, or single-quoted pieces joined by `"'"`).
 * Throws on a line it cannot read.
 */
export function parseGuestConfig(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!m) throw new Error(`guest config: cannot read line ${JSON.stringify(line)}`);
    let value = "";
    let rest = m[2];
    while (rest.length > 0) {
      const piece = /^'([^']*)'|^"'"|^([^'"\s\\$`]+)/.exec(rest);
      if (!piece) throw new Error(`guest config: cannot read the value of ${m[1]}`);
      value += piece[1] ?? piece[2] ?? "'";
      rest = rest.slice(piece[0].length);
    }
    out[m[1]] = value;
  }
  return out;
}

/** Options of {@link HostSupervisors}. */
export interface HostSupervisorsOptions {
  /** The driver's state dir (the supervisors' SSH sockets go below it). */
  stateDir: string;
  /** The gateway's supervisor plane (`--openshell-endpoint`). */
  gateway: DriverConfig["endpoint"];
  /** What the gateway's host name resolves to (its grant), [] for an address. */
  gatewayAddresses: string[];
  log: Logger;
}

/**
 * A {@link Launcher} whose "VMs" are supervisors on this host, and the
 * {@link QmpFactory} that powers them down (SIGTERM).
 */
export class HostSupervisors implements Launcher, QmpFactory {
  readonly #o: HostSupervisorsOptions;
  /** Running supervisors by the QMP path of their launch. */
  readonly #running = new Map<string, VmHandle>();
  readonly #setpriv = (() => {
    try {
      return Deno.statSync(SETPRIV).isFile;
    } catch {
      return false;
    }
  })();
  #next = 0;

  /** Creates the launcher; nothing runs until {@link launch}. */
  constructor(options: HostSupervisorsOptions) {
    this.#o = options;
  }

  /** A short socket path (sun_path holds ~100 bytes). */
  async #socketPath(id: string): Promise<string> {
    const base = `${this.#o.stateDir}/r`;
    await Deno.mkdir(base, { recursive: true, mode: 0o700 });
    const short = `${(++this.#next).toString(36)}${id.replace(/[^A-Za-z0-9]/g, "").slice(0, 8)}`;
    const path = `${base}/${short}/ssh.sock`;
    if (path.length <= 100) return path;
    const tmp = await Deno.makeTempDir({ prefix: "oshd-" });
    return `${tmp}/run/ssh.sock`;
  }

  /** The supervisor's command line for the guest files in `spec`. */
  async #argv(spec: QemuSpec, socketPath: string): Promise<string[]> {
    const files = new Map(spec.fwCfg.map((f) => [f.name, f.file]));
    const configFile = files.get(GUEST_FILES.config.fwcfg);
    if (!configFile) throw new Error("the driver handed no guest config");
    const guest = parseGuestConfig(await Deno.readTextFile(configFile));
    if (guest.OPENSHELL_SANDBOX_ID !== spec.id) {
      throw new Error(`guest config names sandbox ${guest.OPENSHELL_SANDBOX_ID}, not ${spec.id}`);
    }
    const { scheme, host, port } = this.#o.gateway;
    const endpoint = `${scheme}://${hostPort(host, port)}`;
    const args = ["--sandbox-id", spec.id, "--openshell-endpoint", endpoint, "--sshd", SSHD];
    // Host sandboxes share this host: no session cgroup (startSupervisor's tests cover it).
    args.push("--session-cgroup", "none");
    const readFiles: string[] = [];
    const file = (f: { fwcfg: string }, flag: string) => {
      const path = files.get(f.fwcfg);
      if (!path) return;
      args.push(flag, path);
      readFiles.push(path);
    };
    file(GUEST_FILES.sshHostKey, "--ssh-host-key");
    file(GUEST_FILES.supervisorToken, "--supervisor-token-file");
    file(GUEST_FILES.tlsCa, "--tls-ca");
    file(GUEST_FILES.environment, "--env-file");
    args.push("--ssh-socket-path", socketPath);
    args.push("--log-level", guest.OPENSHELL_LOG_LEVEL || "info");
    const grants = supervisorGrants({
      gateway: { host, port },
      gatewayAddresses: this.#o.gatewayAddresses,
      socketPath,
      sshd: SSHD,
      readFiles,
    });
    const argv = roleCommand("supervisor", grants, args);
    return this.#setpriv ? [SETPRIV, "--pdeathsig", "KILL", "--", ...argv] : argv;
  }

  /**
   * Starts the sandbox's supervisor. Its stderr goes to `supervisor.log` in
   * the sandbox's dir, not to the console stream: a VM's console lines become
   * the sandbox's `console` log lines, and a host supervisor's debug log
   * would flood them.
   */
  async launch(spec: QemuSpec): Promise<VmHandle> {
    const qmp = spec.qmpSocket ?? "";
    const socketPath = await this.#socketPath(spec.id);
    const argv = await this.#argv(spec, socketPath);
    const sandboxDir = spec.pidFile.slice(0, spec.pidFile.lastIndexOf("/"));
    const logFile = await Deno.open(`${sandboxDir}/supervisor.log`, {
      create: true,
      append: true,
      mode: 0o600,
    });
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(argv[0], {
        args: argv.slice(1),
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
    } catch (err) {
      logFile.close();
      throw err;
    }
    const copied = child.stderr.pipeTo(logFile.writable).catch(() => {});
    let done = false;
    const status = child.status.then(async (s) => {
      done = true;
      this.#running.delete(qmp);
      await copied;
      await Deno.remove(socketPath.slice(0, socketPath.lastIndexOf("/")), { recursive: true })
        .catch(() => {});
      return { code: s.code, signal: s.signal };
    });
    const empty = () => new ReadableStream<Uint8Array>({ start: (c) => c.close() });
    const handle: VmHandle = {
      pid: child.pid,
      status,
      console: empty(),
      stderr: empty(),
      kill(signal: Deno.Signal) {
        if (done) return;
        try {
          child.kill(signal);
        } catch {
          // already gone
        }
      },
    };
    this.#running.set(qmp, handle);
    this.#o.log.info("host supervisor started", { sandbox_id: spec.id, pid: child.pid });
    return handle;
  }

  /** A channel whose power-down is SIGTERM to the supervisor launched with it. */
  open(_sandboxId: string): Promise<QmpChannel> {
    const path = `host-qmp/${this.#next++}`;
    return Promise.resolve({
      path,
      powerdown: () => {
        const handle = this.#running.get(path);
        handle?.kill("SIGTERM");
        return Promise.resolve(!!handle);
      },
      close: () => Promise.resolve(),
    });
  }
}

/** Disks that are empty files: the supervisor boots from nothing. */
class HostDisks implements DiskProvider {
  readonly #image: ImageRef;

  constructor(image: ImageRef) {
    this.#image = image;
  }

  async prepare(o: { dir: string; image: ImageRef }): Promise<RootDiskSpec> {
    const overlay = `${o.dir}/${OVERLAY_FILE}`;
    await Deno.writeFile(overlay, new Uint8Array(), { mode: 0o600 });
    return { overlay, base: o.image.path, baseFormat: o.image.format };
  }

  imagePath(): string {
    return this.#image.path;
  }
}

async function resolveAddresses(host: string): Promise<string[]> {
  if (isIP(host)) return [];
  const found = await lookup(host, { all: true });
  return found.map((a) => a.address);
}

/** The driver backend of this fixture: host supervisors, empty runtime and disks. */
export async function hostBackend(config: DriverConfig, log: Logger): Promise<DriverBackend> {
  const runtimeDir = `${config.stateDir}/host-runtime`;
  const runtime = await fakeRuntime(runtimeDir);
  const image: ImageRef = { path: `${runtimeDir}/rootfs.img`, key: "fakeimage", format: "raw" };
  const supervisors = new HostSupervisors({
    stateDir: config.stateDir,
    gateway: config.endpoint,
    gatewayAddresses: await resolveAddresses(config.endpoint.host),
    log,
  });
  return {
    runtime,
    image: () => Promise.resolve(image),
    disks: new HostDisks(image),
    launcher: supervisors,
    qmp: supervisors,
    accel: () => Promise.resolve("tcg"),
    host: {},
  };
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args, hostBackend));
  } catch (err) {
    console.error(`host driver: ${errorMessage(err)}`);
    Deno.exit(1);
  }
}
