/**
 * TEST FIXTURE — a compute driver that runs each sandbox as a supervisor on
 * this host instead of a VM, so the gateway's `--drivers vm` path and the
 * CLI can be tested without qemu.
 *
 * It speaks the `ComputeDriver` service on `unix:<state-dir>/compute-driver.sock`
 * and takes the VM driver's command line
 * (`--state-dir D --openshell-endpoint URL [--runtime-dir D] [--vm-accel A]
 * [--vm-vcpus N] [--vm-mem-mib N] [--log-level L]`; the VM options are
 * accepted and ignored). Per sandbox: the provisioned host key and token are
 * written to 0600 files under `<state-dir>/sandboxes/<id>/`, and a supervisor
 * starts through `roleCommand` with exactly its grants (socket in a short
 * directory under the state dir, its stderr in `console.log`). The driver
 * reports `Ready=False reason=Starting` and, when a supervisor dies,
 * `Ready=False reason=ProcessExited`; the gateway alone decides READY.
 * Like the VM driver it stops and starts sandboxes (StopSandbox ends the
 * supervisor, StartSandbox runs it again from the saved `launch.json`),
 * keeps their dirs across its own restarts (restored as `Stopped`) and asks
 * the gateway to manage their lifecycle.
 * It exits on SIGTERM/SIGINT or when its parent dies, stopping its
 * supervisors (which also carry a parent-death signal via `setpriv`).
 *
 * This is test tooling and runs with `-A` (see {@link writeHostDriverDir});
 * the sandboxes it starts run with the supervisor's real grants.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import { parseArgs } from "node:util";
import { supervisorGrants } from "../core/grants.ts";
import { REPO_ROOT, roleCommand } from "../core/launcher.ts";
import { errorMessage, Logger, parseLogLevel } from "../core/log.ts";
import {
  ComputeDriverClient,
  type DriverSandbox,
  type SandboxCondition,
  type WatchSandboxesEvent,
  type Wire,
} from "../core/protocol.ts";
import { splitProvisioning } from "../core/provisioning.ts";
import { Code } from "../core/status.ts";
import { VERSION } from "../core/version.ts";
import { parseEndpoint } from "../supervisor/config.ts";

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
    "# Test fixture: the host driver (testing/host_driver.ts) in place of the VM driver.",
    `exec ${q(Deno.execPath())} run --quiet -A --config=${q(`${REPO_ROOT}/deno.json`)} ` +
    `${q(`${REPO_ROOT}/testing/host_driver.ts`)} "$@"`,
    "",
  ].join("\n");
  await Deno.writeTextFile(path, script, { mode: 0o755 });
  await Deno.chmod(path, 0o755);
  return path;
}

interface HostSandbox {
  sandbox: Wire<DriverSandbox>;
  conditions: SandboxCondition[];
  deleting: boolean;
  /** A stop is ending the supervisor (its exit is not a failure). */
  stopping: boolean;
  dir: string;
  socketPath: string;
  logLevel: string;
  child?: Deno.ChildProcess;
  exited: Promise<void>;
}

/** What `<dir>/launch.json` keeps to run a sandbox's supervisor again. */
interface Launch {
  sandbox: { id: string; name: string; namespace: string };
  socketPath: string;
  logLevel: string;
}

type Stream = grpc.ServerWritableStream<unknown, Wire<WatchSandboxesEvent>>;
type UnaryCallback = grpc.sendUnaryData<unknown>;

function fail(cb: UnaryCallback, code: number, details: string): void {
  cb({ code, details, name: "Error", message: details, metadata: new grpc.Metadata() });
}

function condition(reason: string, message: string): SandboxCondition {
  return {
    type: "Ready",
    status: "False",
    reason,
    message,
    last_transition_time: new Date().toISOString(),
  };
}

/** The sandboxes, their supervisors and the watch streams. */
class HostDriver {
  readonly #sandboxes = new Map<string, HostSandbox>();
  readonly #watchers = new Set<Stream>();
  readonly #stateDir: string;
  readonly #endpoint: string;
  readonly #gatewayAddresses: string[];
  readonly #logLevel: string;
  readonly #log: Logger;
  readonly #setpriv = (() => {
    try {
      return Deno.statSync(SETPRIV).isFile;
    } catch {
      return false;
    }
  })();
  #short = 0;

  constructor(o: {
    stateDir: string;
    endpoint: string;
    gatewayAddresses: string[];
    logLevel: string;
    log: Logger;
  }) {
    this.#stateDir = o.stateDir;
    this.#endpoint = o.endpoint;
    this.#gatewayAddresses = o.gatewayAddresses;
    this.#logLevel = o.logLevel;
    this.#log = o.log;
  }

  #snapshot(s: HostSandbox): Wire<DriverSandbox> {
    return {
      ...s.sandbox,
      status: {
        sandbox_name: s.sandbox.name ?? "",
        instance_id: s.child ? String(s.child.pid) : "",
        conditions: s.conditions,
        deleting: s.deleting,
      },
    };
  }

  #publish(event: Wire<WatchSandboxesEvent>): void {
    for (const w of this.#watchers) w.write(event);
  }

  #publishSandbox(s: HostSandbox): void {
    this.#publish({ payload: "sandbox", sandbox: { sandbox: this.#snapshot(s) } });
  }

  #find(id: string, name: string): HostSandbox | undefined {
    if (id) return this.#sandboxes.get(id);
    return [...this.#sandboxes.values()].find((s) => s.sandbox.name === name);
  }

  async #socketPath(id: string): Promise<string> {
    const base = `${this.#stateDir}/r`;
    await Deno.mkdir(base, { recursive: true, mode: 0o700 });
    const short = `${(++this.#short).toString(36)}${id.replace(/[^A-Za-z0-9]/g, "").slice(0, 8)}`;
    const path = `${base}/${short}/ssh.sock`;
    if (path.length <= 100) return path;
    const tmp = await Deno.makeTempDir({ prefix: "oshd-" });
    return `${tmp}/run/ssh.sock`;
  }

  async create(sandbox: Wire<DriverSandbox>): Promise<void> {
    const id = sandbox.id ?? "";
    const dir = `${this.#stateDir}/sandboxes/${id}`;
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    const provisioning = splitProvisioning(
      (sandbox.spec?.environment ?? {}) as Record<string, string>,
    );
    if (provisioning.sshHostKey) {
      await Deno.writeTextFile(`${dir}/host_key`, provisioning.sshHostKey, { mode: 0o600 });
    }
    if (provisioning.supervisorToken) {
      await Deno.writeTextFile(`${dir}/token`, provisioning.supervisorToken, { mode: 0o600 });
    }
    if (provisioning.tlsCa) {
      await Deno.writeTextFile(`${dir}/ca.crt`, provisioning.tlsCa, { mode: 0o600 });
    }
    const environment = {
      ...(sandbox.spec?.template?.environment ?? {}),
      ...provisioning.environment,
    } as Record<string, string>;
    await Deno.writeTextFile(`${dir}/environment.json`, JSON.stringify(environment));
    const launch: Launch = {
      sandbox: { id, name: sandbox.name ?? "", namespace: sandbox.namespace ?? "" },
      socketPath: await this.#socketPath(id),
      logLevel: parseLogLevel(sandbox.spec?.log_level || this.#logLevel || "info"),
    };
    await Deno.writeTextFile(`${dir}/launch.json`, JSON.stringify(launch), { mode: 0o600 });
    const entry = this.#entry(launch, dir, condition("Starting", "supervisor is starting"));
    this.#sandboxes.set(id, entry);
    this.#spawn(entry);
  }

  /** The supervisor's command line: the files in its dir, today's gateway endpoint. */
  #argv(entry: HostSandbox): string[] {
    const dir = entry.dir;
    const has = (f: string) => {
      try {
        return Deno.statSync(`${dir}/${f}`).isFile;
      } catch {
        return false;
      }
    };
    const id = entry.sandbox.id ?? "";
    const args = ["--sandbox-id", id, "--openshell-endpoint", this.#endpoint, "--sshd", SSHD];
    // Host sandboxes share this host: no session cgroup (startSupervisor's tests cover it).
    args.push("--session-cgroup", "none");
    const readFiles: string[] = [];
    const file = (name: string, flag: string) => {
      if (!has(name)) return;
      args.push(flag, `${dir}/${name}`);
      readFiles.push(`${dir}/${name}`);
    };
    file("host_key", "--ssh-host-key");
    file("token", "--supervisor-token-file");
    file("ca.crt", "--tls-ca");
    file("environment.json", "--env-file");
    args.push("--ssh-socket-path", entry.socketPath);
    args.push("--log-level", entry.logLevel);
    const { host, port } = parseEndpoint(this.#endpoint);
    const grants = supervisorGrants({
      gateway: { host, port },
      gatewayAddresses: this.#gatewayAddresses,
      socketPath: entry.socketPath,
      sshd: SSHD,
      readFiles,
    });
    const argv = roleCommand("supervisor", grants, args);
    return this.#setpriv ? [SETPRIV, "--pdeathsig", "KILL", "--", ...argv] : argv;
  }

  #entry(launch: Launch, dir: string, first: SandboxCondition): HostSandbox {
    return {
      sandbox: launch.sandbox,
      conditions: [first],
      deleting: false,
      stopping: false,
      dir,
      socketPath: launch.socketPath,
      logLevel: launch.logLevel,
      exited: Promise.resolve(),
    };
  }

  /** Reads back the sandboxes an earlier run left, as stopped sandboxes. */
  async restore(): Promise<void> {
    const root = `${this.#stateDir}/sandboxes`;
    try {
      for await (const e of Deno.readDir(root)) {
        const dir = `${root}/${e.name}`;
        try {
          const launch = JSON.parse(await Deno.readTextFile(`${dir}/launch.json`)) as Launch;
          if (launch.sandbox.id !== e.name) throw new Error("id does not match its dir");
          this.#sandboxes.set(
            e.name,
            this.#entry(launch, dir, condition("Stopped", "not running (the driver restarted)")),
          );
        } catch (err) {
          this.#log.warn("removing a sandbox dir it cannot restore", {
            dir,
            error: errorMessage(err),
          });
          await Deno.remove(dir, { recursive: true }).catch(() => {});
        }
      }
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }

  /** Runs the sandbox's supervisor (its stderr appended to `console.log`). */
  #spawn(entry: HostSandbox): void {
    const id = entry.sandbox.id ?? "";
    entry.conditions = [condition("Starting", "supervisor is starting")];
    let consoleLog: Deno.FsFile;
    try {
      consoleLog = Deno.openSync(`${entry.dir}/console.log`, {
        create: true,
        append: true,
        write: true,
      });
    } catch (err) {
      entry.conditions = [condition("ProcessExited", `cannot start: ${errorMessage(err)}`)];
      this.#publishSandbox(entry);
      return;
    }
    try {
      const argv = this.#argv(entry);
      entry.child = new Deno.Command(argv[0], {
        args: argv.slice(1),
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
    } catch (err) {
      consoleLog.close();
      entry.conditions = [condition("ProcessExited", `cannot start: ${errorMessage(err)}`)];
      this.#publishSandbox(entry);
      return;
    }
    const child = entry.child;
    const copied = child.stderr.pipeTo(consoleLog.writable).catch(() => {});
    entry.exited = child.status.then(async (status) => {
      await copied;
      if (entry.child === child) entry.child = undefined;
      if (entry.deleting || entry.stopping || !this.#sandboxes.has(id)) return;
      const how = status.signal ? `signal ${status.signal}` : `status ${status.code}`;
      entry.conditions = [condition("ProcessExited", `supervisor exited with ${how}`)];
      this.#log.warn("supervisor exited", { sandbox: id, how });
      this.#publish({
        payload: "platform_event",
        platform_event: {
          sandbox_id: id,
          event: {
            timestamp_ms: Date.now(),
            source: "vm",
            type: "Warning",
            reason: "ProcessExited",
            message: `supervisor exited with ${how}`,
            metadata: {},
          },
        },
      });
      this.#publishSandbox(entry);
    });
    this.#log.info("sandbox started", { sandbox: id, pid: child.pid, socket: entry.socketPath });
    this.#publishSandbox(entry);
  }

  /** Ends the supervisor, keeping the sandbox's dir (idempotent). */
  async stop(id: string, name: string): Promise<boolean> {
    const s = this.#find(id, name);
    if (!s) return false;
    s.stopping = true;
    try {
      await this.#stopChild(s);
    } finally {
      s.stopping = false;
    }
    s.child = undefined;
    s.conditions = [condition("Stopped", "supervisor stopped")];
    this.#publishSandbox(s);
    return true;
  }

  /** Runs a stopped sandbox's supervisor again; a running one is left alone. */
  start(id: string, name: string): boolean {
    const s = this.#find(id, name);
    if (!s) return false;
    if (!s.child) this.#spawn(s);
    return true;
  }

  async #stopChild(s: HostSandbox): Promise<void> {
    const child = s.child;
    if (!child) return;
    try {
      child.kill("SIGTERM");
    } catch {
      // already gone
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const killed = new Promise<void>((r) => {
      timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch {
          // gone
        }
        r();
      }, 5_000);
    });
    await Promise.race([s.exited, killed]);
    clearTimeout(timer);
    await s.exited;
  }

  async delete(id: string, name: string): Promise<boolean> {
    const s = this.#find(id, name);
    if (!s) return false;
    s.deleting = true;
    s.conditions = [condition("Deleting", "sandbox is being deleted")];
    this.#publishSandbox(s);
    await this.#stopChild(s);
    await Deno.remove(s.dir, { recursive: true }).catch(() => {});
    const socketDir = s.socketPath.slice(0, s.socketPath.lastIndexOf("/"));
    await Deno.remove(socketDir, { recursive: true }).catch(() => {});
    this.#sandboxes.delete(s.sandbox.id ?? "");
    this.#publish({ payload: "deleted", deleted: { sandbox_id: s.sandbox.id ?? "" } });
    return true;
  }

  service(): grpc.UntypedServiceImplementation {
    return {
      GetCapabilities: (_call: unknown, cb: UnaryCallback) =>
        cb(null, {
          driver_name: "host",
          driver_version: VERSION,
          default_image: "",
          supports_gpu: false,
          gateway_manages_lifecycle: true,
        }),
      ValidateSandboxCreate: (_call: unknown, cb: UnaryCallback) => cb(null, {}),
      GetSandbox: (
        call: grpc.ServerUnaryCall<{ sandbox_id: string; sandbox_name: string }, unknown>,
        cb: UnaryCallback,
      ) => {
        const s = this.#find(call.request.sandbox_id, call.request.sandbox_name);
        if (!s) return fail(cb, Code.NOT_FOUND, "sandbox not found");
        cb(null, { sandbox: this.#snapshot(s) });
      },
      ListSandboxes: (_call: unknown, cb: UnaryCallback) =>
        cb(null, {
          sandboxes: [...this.#sandboxes.values()].map((s) => this.#snapshot(s))
            .sort((a, b) => (a.name ?? "") < (b.name ?? "") ? -1 : 1),
        }),
      CreateSandbox: (
        call: grpc.ServerUnaryCall<{ sandbox: Wire<DriverSandbox> | null }, unknown>,
        cb: UnaryCallback,
      ) => {
        const sandbox = call.request.sandbox;
        if (!sandbox?.id) return fail(cb, Code.INVALID_ARGUMENT, "sandbox id is required");
        if (this.#sandboxes.has(sandbox.id)) {
          return fail(cb, Code.ALREADY_EXISTS, "sandbox already exists");
        }
        this.create(sandbox).then(
          () => cb(null, {}),
          (err) => fail(cb, Code.INTERNAL, `cannot start sandbox: ${errorMessage(err)}`),
        );
      },
      StopSandbox: (
        call: grpc.ServerUnaryCall<{ sandbox_id: string; sandbox_name: string }, unknown>,
        cb: UnaryCallback,
      ) => {
        this.stop(call.request.sandbox_id, call.request.sandbox_name).then(
          (found) => found ? cb(null, {}) : fail(cb, Code.NOT_FOUND, "sandbox not found"),
          (err) => fail(cb, Code.INTERNAL, errorMessage(err)),
        );
      },
      StartSandbox: (
        call: grpc.ServerUnaryCall<{ sandbox_id: string; sandbox_name: string }, unknown>,
        cb: UnaryCallback,
      ) => {
        if (!this.start(call.request.sandbox_id, call.request.sandbox_name)) {
          return fail(cb, Code.NOT_FOUND, "sandbox not found");
        }
        cb(null, {});
      },
      DeleteSandbox: (
        call: grpc.ServerUnaryCall<{ sandbox_id: string; sandbox_name: string }, unknown>,
        cb: UnaryCallback,
      ) => {
        this.delete(call.request.sandbox_id, call.request.sandbox_name).then(
          (deleted) => cb(null, { deleted }),
          (err) => fail(cb, Code.INTERNAL, errorMessage(err)),
        );
      },
      WatchSandboxes: (call: Stream) => {
        for (const s of this.#sandboxes.values()) {
          call.write({ payload: "sandbox", sandbox: { sandbox: this.#snapshot(s) } });
        }
        this.#watchers.add(call);
        const drop = () => this.#watchers.delete(call);
        call.on("cancelled", drop);
        call.on("close", drop);
        call.on("error", drop);
      },
    };
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.#sandboxes.values()].map((s) => {
      s.stopping = true;
      return this.#stopChild(s);
    }));
    for (const w of this.#watchers) w.end();
  }
}

async function resolveAddresses(host: string): Promise<string[]> {
  if (isIP(host)) return [];
  const found = await lookup(host, { all: true });
  return found.map((a) => a.address);
}

/** The parent pid, read as early as possible. */
const PARENT = Deno.ppid;

async function main(args: string[]): Promise<number> {
  let values: Record<string, string | undefined>;
  try {
    values = parseArgs({
      args,
      options: Object.fromEntries(
        [
          "state-dir",
          "openshell-endpoint",
          "runtime-dir",
          "vm-accel",
          "vm-vcpus",
          "vm-mem-mib",
          "log-level",
          // The egress proxy's guest socket: host sandboxes have the host's network.
          "egress-socket",
        ].map((k) => [k, { type: "string" as const }]),
      ),
      strict: true,
      allowPositionals: false,
    }).values as Record<string, string | undefined>;
  } catch (err) {
    console.error(`host driver: ${errorMessage(err)}`);
    return 2;
  }
  const stateDir = values["state-dir"];
  const endpoint = values["openshell-endpoint"];
  if (!stateDir || !endpoint) {
    console.error("host driver: --state-dir and --openshell-endpoint are required");
    return 2;
  }
  const logLevel = values["log-level"] ?? "info";
  const log = new Logger({ level: parseLogLevel(logLevel), target: "host-driver" });
  await Deno.mkdir(stateDir, { recursive: true, mode: 0o700 });
  const socket = `${stateDir}/compute-driver.sock`;
  await Deno.remove(socket).catch(() => {});
  const driver = new HostDriver({
    stateDir,
    endpoint,
    gatewayAddresses: await resolveAddresses(parseEndpoint(endpoint).host),
    logLevel,
    log,
  });
  await driver.restore();
  const server = new grpc.Server();
  server.addService(ComputeDriverClient.service, driver.service());
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(
      `unix:${socket}`,
      grpc.ServerCredentials.createInsecure(),
      (err) => err ? reject(err) : resolve(),
    )
  );
  log.info("host driver listening", { socket, endpoint });

  const stop = Promise.withResolvers<string>();
  Deno.addSignalListener("SIGTERM", () => stop.resolve("SIGTERM"));
  Deno.addSignalListener("SIGINT", () => stop.resolve("SIGINT"));
  // Orphaned: the parent changed, or it was already gone while this module loaded.
  const orphaned = () => Deno.ppid !== PARENT || Deno.ppid === 1;
  if (orphaned()) stop.resolve("parent exited");
  const watch = setInterval(() => {
    if (orphaned()) stop.resolve("parent exited");
  }, 250);
  const reason = await stop.promise;
  clearInterval(watch);
  log.info("host driver stopping", { reason });
  await driver.stopAll();
  server.forceShutdown();
  await Deno.remove(socket).catch(() => {});
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
