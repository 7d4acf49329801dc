/**
 * The VM driver's configuration: options (each with an `OPENSHELL_*` twin; an
 * option wins), declared in one table (`core/flags.ts`; the VM options, log
 * level and endpoint shared with the gateway through `core/shared_flags.ts`),
 * checked completely before anything starts. Pure: arguments and an
 * environment lookup in, a config or a one-line `FlagError` out.
 *
 * @module
 */
import {
  type EnvReader,
  type FlagSpec,
  type FlagTable,
  noPositionals,
  parseFlags,
} from "../core/flags.ts";
import { renderHelp } from "../core/flags_help.ts";
import { PRODUCTION_PARAMS } from "../core/grants.ts";
import type { LogLevel } from "../core/log.ts";
import {
  DEFAULT_DISK_GIB,
  DISK_GIB,
  gatewayGrpcEndpoint,
  GRPC_ENDPOINT,
  LOG_LEVEL,
  MAX_SOCKET_PATH_BYTES,
  VM_ACCEL,
  VM_DRIVER_STATE_DIR,
  VM_MEM_MIB,
  VM_RUNTIME_DIR,
  VM_VCPUS,
} from "../core/shared_flags.ts";
import { DEFAULT_QEMU_IMG } from "./disk.ts";
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

function noCommas(path: string | number): string | undefined {
  return String(path).includes(",")
    ? "must not contain commas (qemu's option separator)"
    : undefined;
}

function program(env: string, fallback: string, help: string) {
  return {
    kind: "path",
    env,
    default: fallback,
    help,
    check: noCommas,
  } as const satisfies FlagSpec;
}

/** Every option of the driver (the VM ones, log level and endpoint shared with the gateway). */
export const DRIVER_FLAGS = {
  "state-dir": { ...VM_DRIVER_STATE_DIR, required: true },
  "openshell-endpoint": { ...GRPC_ENDPOINT, required: true },
  "runtime-dir": { ...VM_RUNTIME_DIR, default: PRODUCTION_PARAMS.driver.runtimeDir },
  "vm-accel": VM_ACCEL,
  "vm-vcpus": VM_VCPUS,
  "vm-mem-mib": VM_MEM_MIB,
  "vm-disk-gib": {
    ...DISK_GIB,
    env: "OPENSHELL_VM_DISK_GIB",
    default: DEFAULT_DISK_GIB,
    help: "Disk of a sandbox that asks for none (a sparse file)",
  },
  "log-level": LOG_LEVEL,
  qemu: program("OPENSHELL_VM_QEMU", PRODUCTION_PARAMS.driver.qemu, "qemu binary"),
  "qemu-img": program(
    "OPENSHELL_VM_QEMU_IMG",
    DEFAULT_QEMU_IMG,
    "qemu-img (creates each sandbox's disk)",
  ),
  "image-builder": program(
    "OPENSHELL_VM_IMAGE_BUILDER",
    PRODUCTION_PARAMS.driver.imageBuilder!,
    "The image builder of `openshell image build|import`",
  ),
  setpriv: program("OPENSHELL_VM_SETPRIV", PRODUCTION_PARAMS.driver.setpriv, "setpriv binary"),
  prlimit: program("OPENSHELL_VM_PRLIMIT", DEFAULT_PRLIMIT, "prlimit binary"),
  "vm-user": {
    kind: "string",
    env: "OPENSHELL_VM_USER",
    default: DEFAULT_VM_USER,
    value: "USER",
    help: "Unprivileged account qemu runs as when the driver is root",
    check: (user: string | number) => {
      const u = String(user).trim();
      return /^[a-z_][a-z0-9_-]{0,31}$/.test(u) && u !== "root"
        ? undefined
        : "must name an unprivileged account (lower-case letters, digits, _ or -), " +
          `got ${JSON.stringify(user)}`;
    },
  },
  forwarder: {
    kind: "string",
    env: "OPENSHELL_VM_FORWARDER",
    default: "socat",
    value: "PROGRAM",
    help: "Program qemu runs per guest connection",
    check: (p: string | number) =>
      /^[A-Za-z0-9_./-]+$/.test(String(p).trim())
        ? undefined
        : `must be a plain program name or path, got ${JSON.stringify(p)}`,
  },
  "max-guest-connections": {
    kind: "int",
    env: "OPENSHELL_VM_MAX_GUEST_CONNECTIONS",
    min: 1,
    max: 1024,
    default: 8,
    help: "Open connections per VM to the gateway at most",
  },
  "egress-socket": {
    kind: "path",
    env: "OPENSHELL_EGRESS_SOCKET",
    value: "PATH",
    help: "The egress proxy's guest socket: guests reach the network only through it " +
      "(default: none, guests reach only the gateway)",
    check: (p: string | number) =>
      new TextEncoder().encode(String(p)).length > MAX_SOCKET_PATH_BYTES
        ? `is too long: it exceeds the ${MAX_SOCKET_PATH_BYTES}-byte Unix socket path limit`
        : undefined,
  },
  version: { kind: "bool", action: true, help: "Print the version" },
} satisfies FlagTable;

/** The `--help` text. */
export function driverUsage(): string {
  return renderHelp({
    about: "openshell-driver-vm: boots one qemu VM per sandbox for the OpenShell gateway. " +
      "Serves openshell.compute.v1.ComputeDriver on <state-dir>/compute-driver.sock.",
    usage: "openshell-driver-vm --state-dir DIR --openshell-endpoint URL [OPTIONS]",
    sections: [{ title: "Options", flags: DRIVER_FLAGS, help: true }],
  });
}

/** The driver's socket in `stateDir`. */
export function socketPath(stateDir: string): string {
  return `${stateDir}/compute-driver.sock`;
}

/** Parses the driver's arguments and environment (`env` returns undefined when unset). */
export function parseDriverConfig(
  args: readonly string[],
  env: EnvReader,
): ParsedDriverCommand {
  const parsed = parseFlags(DRIVER_FLAGS, args, env);
  if (parsed.help) return { kind: "help" };
  if (parsed.values.version) return { kind: "version" };
  noPositionals(parsed.positionals);
  const v = parsed.values;
  return {
    kind: "run",
    config: {
      stateDir: v["state-dir"],
      endpoint: gatewayGrpcEndpoint(v["openshell-endpoint"]),
      runtimeDir: v["runtime-dir"],
      accel: v["vm-accel"] as AccelChoice,
      vcpus: v["vm-vcpus"],
      memMib: v["vm-mem-mib"],
      diskGiB: v["vm-disk-gib"],
      logLevel: v["log-level"] as LogLevel,
      qemu: v.qemu,
      qemuImg: v["qemu-img"],
      imageBuilder: v["image-builder"],
      setpriv: v.setpriv,
      prlimit: v.prlimit,
      vmUser: v["vm-user"].trim(),
      forwarder: v.forwarder.trim(),
      maxGuestConnections: v["max-guest-connections"],
      ...(v["egress-socket"] ? { egressSocket: v["egress-socket"] } : {}),
    },
  };
}
