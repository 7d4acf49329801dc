/**
 * The VM driver's configuration: flags (each with an `OPENSHELL_*` twin; a
 * flag wins), checked completely before anything starts. Pure: arguments and
 * an environment lookup in, a config or a one-line error out.
 *
 * @module
 */
import {
  EndpointError,
  type GatewayEndpoint,
  parseEndpoint as parseGatewayUrl,
} from "../core/endpoint.ts";
import { parseArgs } from "node:util";
import { PRODUCTION_PARAMS } from "../core/grants.ts";
import { type LogLevel, parseLogLevel } from "../core/log.ts";
import { DEFAULT_DISK_GIB, DEFAULT_QEMU_IMG, MAX_DISK_GIB } from "./disk.ts";
import { DEFAULT_VM_USER } from "./vm_user.ts";

/** Accelerator choices. */
export type AccelChoice = "auto" | "kvm" | "hvf" | "tcg";
/** A concrete accelerator. */
export type Accel = Exclude<AccelChoice, "auto">;

/**
 * The `prlimit` qemu's limits are set with. setpriv execs it (Deno does
 * not), so the driver needs no grant for it.
 */
export const DEFAULT_PRLIMIT = "/usr/bin/prlimit";

/** A validated driver configuration. */
export interface DriverConfig {
  /** State dir: socket, per-sandbox dirs, the accelerator verdict. */
  stateDir: string;
  /** The gateway's gRPC endpoint as the host sees it. */
  endpoint: { scheme: "http" | "https"; host: string; port: number };
  /** Read-only runtime dir built by `deno task vm:rootfs`. */
  runtimeDir: string;
  accel: AccelChoice;
  /** vCPUs of a sandbox that asks for none. */
  vcpus: number;
  /** Memory (MiB) of a sandbox that asks for none. */
  memMib: number;
  /** Disk (GiB) of a sandbox that asks for none. */
  diskGiB: number;
  logLevel: LogLevel;
  /** qemu binary. */
  qemu: string;
  /** qemu-img binary (creates each sandbox's disk). */
  qemuImg: string;
  /** The image builder (`openshell image build|import`; image_builder.ts). */
  imageBuilder: string;
  /** setpriv binary (user, no-new-privs and parent-death signal for each qemu). */
  setpriv: string;
  /** prlimit binary (resource limits for each qemu). */
  prlimit: string;
  /** The account qemu runs as when the driver is root. */
  vmUser: string;
  /** Host program qemu runs per guest connection to reach the VM's forwarder socket (socat). */
  forwarder: string;
  /** Open connections per VM to the gateway at most. */
  maxGuestConnections: number;
  /**
   * The egress proxy's guest socket: guests reach the proxy (and DNS)
   * through it. Absent: guests reach nothing but the gateway.
   */
  egressSocket?: string;
}

/** What {@link parseDriverConfig} returns. */
export type ParsedDriverCommand =
  | { kind: "run"; config: DriverConfig }
  | { kind: "help" }
  | { kind: "version" };

/** A bad flag or value. */
export class DriverConfigError extends Error {
  /** Creates the error with its one-line message. */
  constructor(message: string) {
    super(message);
    this.name = "DriverConfigError";
  }
}

interface Opt {
  flag: string;
  env?: string;
  boolean?: boolean;
  help: string;
}

const OPTIONS: readonly Opt[] = [
  { flag: "state-dir", env: "OPENSHELL_VM_DRIVER_STATE_DIR", help: "state dir (required)" },
  {
    flag: "openshell-endpoint",
    env: "OPENSHELL_GRPC_ENDPOINT",
    help: "gateway gRPC endpoint, http://HOST:PORT (required)",
  },
  {
    flag: "runtime-dir",
    env: "OPENSHELL_VM_RUNTIME_DIR",
    help: `VM runtime dir (default ${PRODUCTION_PARAMS.driver.runtimeDir})`,
  },
  { flag: "vm-accel", env: "OPENSHELL_VM_ACCEL", help: "auto (default), kvm, hvf or tcg" },
  {
    flag: "vm-vcpus",
    env: "OPENSHELL_VM_VCPUS",
    help: "vCPUs of a sandbox that asks for none (default 2)",
  },
  {
    flag: "vm-mem-mib",
    env: "OPENSHELL_VM_MEM_MIB",
    help: "memory in MiB of a sandbox that asks for none (default 1024)",
  },
  {
    flag: "vm-disk-gib",
    env: "OPENSHELL_VM_DISK_GIB",
    help: `disk in GiB of a sandbox that asks for none (sparse; default ${DEFAULT_DISK_GIB})`,
  },
  { flag: "log-level", env: "OPENSHELL_LOG_LEVEL", help: "error, warn, info (default), debug" },
  {
    flag: "qemu",
    env: "OPENSHELL_VM_QEMU",
    help: `qemu binary (default ${PRODUCTION_PARAMS.driver.qemu})`,
  },
  {
    flag: "qemu-img",
    env: "OPENSHELL_VM_QEMU_IMG",
    help: `qemu-img (default ${DEFAULT_QEMU_IMG})`,
  },
  {
    flag: "image-builder",
    env: "OPENSHELL_VM_IMAGE_BUILDER",
    help:
      `the image builder for image build/import (default ${PRODUCTION_PARAMS.driver.imageBuilder})`,
  },
  {
    flag: "setpriv",
    env: "OPENSHELL_VM_SETPRIV",
    help: `setpriv (default ${PRODUCTION_PARAMS.driver.setpriv})`,
  },
  {
    flag: "prlimit",
    env: "OPENSHELL_VM_PRLIMIT",
    help: `prlimit (default ${DEFAULT_PRLIMIT})`,
  },
  {
    flag: "vm-user",
    env: "OPENSHELL_VM_USER",
    help: `unprivileged account qemu runs as when the driver is root (default ${DEFAULT_VM_USER})`,
  },
  {
    flag: "forwarder",
    env: "OPENSHELL_VM_FORWARDER",
    help: "program qemu runs per guest connection (default socat)",
  },
  {
    flag: "max-guest-connections",
    env: "OPENSHELL_VM_MAX_GUEST_CONNECTIONS",
    help: "open connections per VM to the gateway at most (default 8)",
  },
  {
    flag: "egress-socket",
    env: "OPENSHELL_EGRESS_SOCKET",
    help: "the egress proxy's guest socket; guests reach the network only through it " +
      "(default: none, guests reach only the gateway)",
  },
  { flag: "help", boolean: true, help: "print this help" },
  { flag: "version", boolean: true, help: "print the version" },
];

/** The `--help` text. */
export function driverUsage(): string {
  return [
    "openshell-driver-vm: boots one qemu VM per sandbox for the OpenShell gateway.",
    "Serves openshell.compute.v1.ComputeDriver on <state-dir>/compute-driver.sock.",
    "",
    "Usage: openshell-driver-vm --state-dir DIR --openshell-endpoint URL [options]",
    "",
    ...OPTIONS.map((o) => {
      const name = o.boolean ? `--${o.flag}` : `--${o.flag} VALUE`;
      return `  ${name.padEnd(28)}${o.help}${o.env ? ` [${o.env}]` : ""}`;
    }),
  ].join("\n");
}

/** Longest Unix socket path we accept (Linux sun_path is 108 bytes with the NUL; macOS 104). */
export const MAX_SOCKET_PATH_BYTES = 103;

/** The driver's socket in `stateDir`. */
export function socketPath(stateDir: string): string {
  return `${stateDir}/compute-driver.sock`;
}

function absolute(what: string, value: string): string {
  if (!value.startsWith("/")) {
    throw new DriverConfigError(`${what} must be an absolute path: "${value}"`);
  }
  if (/[\0\n\r,]/.test(value)) {
    throw new DriverConfigError(
      `${what} must not contain commas or control characters: "${value}"`,
    );
  }
  return value.length > 1 ? value.replace(/\/+$/, "") : value;
}

function positiveInt(what: string, value: string, max: number): number {
  if (!/^[0-9]+$/.test(value.trim())) {
    throw new DriverConfigError(`${what} must be a whole number, got "${value}"`);
  }
  const n = Number(value.trim());
  if (n < 1 || n > max) {
    throw new DriverConfigError(`${what} must be between 1 and ${max}, got ${n}`);
  }
  return n;
}

/** Parses the gateway endpoint; the driver forwards guests to its host and port. */
export function parseEndpoint(value: string, what: string): DriverConfig["endpoint"] {
  let ep: GatewayEndpoint;
  try {
    ep = parseGatewayUrl(value);
  } catch (err) {
    if (err instanceof EndpointError) throw new DriverConfigError(`${what} ${err.message}`);
    throw err;
  }
  // An unspecified listen address is reached on loopback.
  const host = ep.host === "0.0.0.0" ? "127.0.0.1" : ep.host === "::" ? "::1" : ep.host;
  if (!/^[A-Za-z0-9.:-]+$/.test(host)) {
    throw new DriverConfigError(`${what} has an invalid host: "${host}"`);
  }
  return { scheme: ep.scheme, host, port: ep.port };
}

/** Parses the driver's arguments and environment (`env` returns undefined when unset). */
export function parseDriverConfig(
  args: readonly string[],
  env: (name: string) => string | undefined,
): ParsedDriverCommand {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: [...args],
      options: Object.fromEntries(
        OPTIONS.map((o) => [o.flag, { type: o.boolean ? "boolean" : "string" }] as const),
      ),
      strict: true,
      allowPositionals: false,
    }).values as Record<string, string | boolean | undefined>;
  } catch (err) {
    throw new DriverConfigError(`${(err as Error).message.split("\n")[0]} (see --help)`);
  }
  if (values.help) return { kind: "help" };
  if (values.version) return { kind: "version" };
  const get = (flag: string): { value: string; what: string } | undefined => {
    const o = OPTIONS.find((x) => x.flag === flag)!;
    const v = values[flag];
    if (typeof v === "string") return { value: v, what: `--${flag}` };
    const e = o.env ? env(o.env) : undefined;
    return e !== undefined && e !== "" ? { value: e, what: o.env! } : undefined;
  };
  const required = (flag: string) => {
    const v = get(flag);
    if (!v || v.value.trim() === "") {
      const o = OPTIONS.find((x) => x.flag === flag)!;
      throw new DriverConfigError(`--${flag} (or ${o.env}) is required`);
    }
    return v;
  };

  const sd = required("state-dir");
  const stateDir = absolute(sd.what, sd.value);
  if (!/^\/[A-Za-z0-9_./-]*$/.test(stateDir)) {
    // The VMs' forwarder sockets live there and their paths go on qemu's command line.
    throw new DriverConfigError(
      `${sd.what} may hold only letters, digits, ".", "_", "-" and "/", got "${sd.value}"`,
    );
  }
  if (new TextEncoder().encode(socketPath(stateDir)).length > MAX_SOCKET_PATH_BYTES) {
    throw new DriverConfigError(
      `${sd.what} is too long: ${
        socketPath(stateDir)
      } exceeds the ${MAX_SOCKET_PATH_BYTES}-byte Unix socket path limit`,
    );
  }
  const ep = required("openshell-endpoint");
  const endpoint = parseEndpoint(ep.value, ep.what);
  const rd = get("runtime-dir");
  const runtimeDir = rd ? absolute(rd.what, rd.value) : PRODUCTION_PARAMS.driver.runtimeDir;

  const ac = get("vm-accel");
  const accel = (ac?.value.trim().toLowerCase() ?? "auto") as AccelChoice;
  if (!["auto", "kvm", "hvf", "tcg"].includes(accel)) {
    throw new DriverConfigError(`${ac!.what} must be auto, kvm, hvf or tcg, got "${ac!.value}"`);
  }
  const vc = get("vm-vcpus");
  const vcpus = vc ? positiveInt(vc.what, vc.value, 64) : 2;
  const mm = get("vm-mem-mib");
  const memMib = mm ? positiveInt(mm.what, mm.value, 1024 * 1024) : 1024;
  if (memMib < 256) {
    throw new DriverConfigError(`${mm!.what} must be at least 256 (the guest needs it)`);
  }

  const dg = get("vm-disk-gib");
  const diskGiB = dg ? positiveInt(dg.what, dg.value, MAX_DISK_GIB) : DEFAULT_DISK_GIB;

  const ll = get("log-level");
  let logLevel: LogLevel = "info";
  if (ll) {
    try {
      logLevel = parseLogLevel(ll.value);
    } catch (err) {
      throw new DriverConfigError(`${ll.what}: ${(err as Error).message}`);
    }
  }
  const q = get("qemu");
  const qi = get("qemu-img");
  const ib = get("image-builder");
  const sp = get("setpriv");
  const pl = get("prlimit");
  const vu = get("vm-user");
  const vmUser = vu?.value.trim() || DEFAULT_VM_USER;
  if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(vmUser) || vmUser === "root") {
    throw new DriverConfigError(
      `${vu!.what} must name an unprivileged account (lower-case letters, digits, _ or -), ` +
        `got "${vu!.value}"`,
    );
  }
  const fw = get("forwarder");
  const forwarder = fw?.value.trim() || "socat";
  if (!/^[A-Za-z0-9_./-]+$/.test(forwarder)) {
    throw new DriverConfigError(
      `${fw!.what} must be a plain program name or path, got "${fw!.value}"`,
    );
  }
  const mg = get("max-guest-connections");
  const es = get("egress-socket");
  const egressSocket = es && es.value.trim() !== ""
    ? absolute(es.what, es.value.trim())
    : undefined;
  if (egressSocket && new TextEncoder().encode(egressSocket).length > MAX_SOCKET_PATH_BYTES) {
    throw new DriverConfigError(
      `${
        es!.what
      } is too long: it exceeds the ${MAX_SOCKET_PATH_BYTES}-byte Unix socket path limit`,
    );
  }
  return {
    kind: "run",
    config: {
      stateDir,
      endpoint,
      runtimeDir,
      accel,
      vcpus,
      memMib,
      diskGiB,
      logLevel,
      qemu: q ? absolute(q.what, q.value) : PRODUCTION_PARAMS.driver.qemu,
      qemuImg: qi ? absolute(qi.what, qi.value) : DEFAULT_QEMU_IMG,
      imageBuilder: ib ? absolute(ib.what, ib.value) : PRODUCTION_PARAMS.driver.imageBuilder!,
      setpriv: sp ? absolute(sp.what, sp.value) : PRODUCTION_PARAMS.driver.setpriv,
      prlimit: pl ? absolute(pl.what, pl.value) : DEFAULT_PRLIMIT,
      vmUser,
      forwarder,
      maxGuestConnections: mg ? positiveInt(mg.what, mg.value, 1024) : 8,
      ...(egressSocket ? { egressSocket } : {}),
    },
  };
}
