/**
 * Options two roles take, declared once (see `core/flags.ts`): the gateway
 * passes the VM options, the log level and its endpoint on to the VM driver,
 * so both check them with the same rule and the gateway refuses at start
 * what the driver would refuse later. A role reuses a spec under its own
 * name (`"vm-mem-mib": VM_MEM_MIB`), adding a default or `required`, or its
 * own help text, by spreading it.
 *
 * @module
 */
import { EndpointError, parseGatewayUrl } from "./endpoint.ts";
import type { FlagSpec } from "./flags.ts";
import { LOG_LEVELS } from "./log.ts";

/** Least memory a guest boots with, in MiB. */
export const MIN_MEM_MIB = 256;
/** Most memory of one VM, in MiB. */
export const MAX_MEM_MIB = 1024 * 1024;
/** Most vCPUs a VM gets. */
export const MAX_VCPUS = 64;
/** Disk size of a sandbox that asks for none, in GiB (a sparse file). */
export const DEFAULT_DISK_GIB = 8;
/** Largest disk of a sandbox, in GiB. */
export const MAX_DISK_GIB = 2048;
/**
 * Longest Unix socket path accepted for a socket the roles create (Linux
 * `sun_path` holds 108 bytes with the NUL, macOS 104: stay under both).
 */
export const MAX_SOCKET_PATH_BYTES = 103;

/** `--log-level`: gateway, VM driver, supervisor and egress proxy. */
export const LOG_LEVEL = {
  kind: "choice",
  choices: LOG_LEVELS,
  value: "LEVEL",
  default: "info",
  env: "OPENSHELL_LOG_LEVEL",
  help: "Least severe log level written",
} satisfies FlagSpec;

/** `--log-format`: gateway and supervisor. */
export const LOG_FORMAT = {
  kind: "choice",
  choices: ["text", "json"],
  default: "text",
  env: "OPENSHELL_LOG_FORMAT",
  help: "Log line format",
} satisfies FlagSpec;

/** `--vm-accel`: gateway (passed on) and VM driver. */
export const VM_ACCEL = {
  kind: "choice",
  choices: ["auto", "kvm", "hvf", "tcg"],
  default: "auto",
  env: "OPENSHELL_VM_ACCEL",
  help: "VM accelerator (auto: hvf on macOS; kvm when a probe boot works, else tcg)",
} satisfies FlagSpec;

/** `--vm-vcpus`: gateway (passed on) and VM driver. */
export const VM_VCPUS = {
  kind: "int",
  min: 1,
  max: MAX_VCPUS,
  default: 2,
  env: "OPENSHELL_VM_VCPUS",
  help: "vCPUs of a sandbox that asks for none",
} satisfies FlagSpec;

/** `--vm-mem-mib`: gateway (passed on) and VM driver. */
export const VM_MEM_MIB = {
  kind: "size",
  unit: "MiB",
  value: "MIB",
  min: MIN_MEM_MIB,
  max: MAX_MEM_MIB,
  default: 1024,
  env: "OPENSHELL_VM_MEM_MIB",
  help: `Memory of a sandbox that asks for none (a guest needs at least ${MIN_MEM_MIB} MiB)`,
} satisfies FlagSpec;

/** Disk size in GiB: the VM driver's `--vm-disk-gib` (its default), the CLI's `--disk-gib`. */
export const DISK_GIB = {
  kind: "size",
  unit: "GiB",
  value: "GIB",
  min: 1,
  max: MAX_DISK_GIB,
  help: "Disk of a sandbox (a sparse file, kept until the sandbox is deleted)",
} satisfies FlagSpec;

/** Where the VM driver's socket lives: within the socket path limit, and safe on qemu's command line. */
export function driverStateDirProblem(dir: string): string | undefined {
  if (!/^\/[A-Za-z0-9_./-]*$/.test(dir)) {
    // The VMs' forwarder sockets live there and their paths go on qemu's command line.
    return `may hold only letters, digits, ".", "_", "-" and "/", got ${JSON.stringify(dir)}`;
  }
  const socket = `${dir}/compute-driver.sock`;
  if (new TextEncoder().encode(socket).length > MAX_SOCKET_PATH_BYTES) {
    return `is too long: ${socket} exceeds the ${MAX_SOCKET_PATH_BYTES}-byte Unix socket ` +
      "path limit; use a shorter directory";
  }
  return undefined;
}

/** The VM driver's state dir: its `--state-dir`, the gateway's `--vm-driver-state-dir`. */
export const VM_DRIVER_STATE_DIR = {
  kind: "path",
  value: "DIR",
  env: "OPENSHELL_VM_DRIVER_STATE_DIR",
  help: "State dir of the VM driver: its socket, per-sandbox dirs (keep it short)",
  check: (dir: string | number) => driverStateDirProblem(String(dir)),
} satisfies FlagSpec;

/** Longest state dir of the egress proxy: its sockets (`control.sock`) must fit the limit. */
export const MAX_EGRESS_STATE_DIR_BYTES = MAX_SOCKET_PATH_BYTES - "/control.sock".length;

/**
 * What is wrong with the egress proxy's state dir (its sockets' paths go
 * into comma-separated grant lists): the proxy's `--state-dir` check, and
 * the gateway's when it runs the proxy.
 */
export function egressStateDirProblem(dir: string): string | undefined {
  if (dir.includes(",")) return "must not contain commas (grant lists are comma-separated)";
  const socket = `${dir}/control.sock`;
  if (new TextEncoder().encode(socket).length > MAX_SOCKET_PATH_BYTES) {
    return `is too long for a Unix socket path (${socket} exceeds ${MAX_SOCKET_PATH_BYTES} ` +
      "bytes); use a shorter directory";
  }
  return undefined;
}

/**
 * The egress proxy's state dir: its `--state-dir` (with the check of
 * {@link egressStateDirProblem}), the gateway's `--egress-state-dir`
 * (checked only when it runs the proxy).
 */
export const EGRESS_STATE_DIR = {
  kind: "path",
  value: "DIR",
  env: "OPENSHELL_EGRESS_STATE_DIR",
  help: "State dir of the egress proxy: its guest and control sockets",
} satisfies FlagSpec;

/** The VM runtime (kernel, guest images): the driver's `--runtime-dir`, the gateway's `--vm-runtime-dir`. */
export const VM_RUNTIME_DIR = {
  kind: "path",
  value: "DIR",
  env: "OPENSHELL_VM_RUNTIME_DIR",
  help: "VM runtime dir: kernel and guest image (`deno task vm:rootfs` builds one)",
  check: (dir: string | number) =>
    /,/.test(String(dir)) ? "must not contain commas (qemu's option separator)" : undefined,
} satisfies FlagSpec;

/** The gateway's gRPC endpoint as the host sees it, with the host an unspecified address means. */
export function gatewayGrpcEndpoint(
  value: string,
): { scheme: "http" | "https"; host: string; port: number } {
  const ep = parseGatewayUrl(value);
  // An unspecified listen address is reached on loopback.
  const host = ep.host === "0.0.0.0" ? "127.0.0.1" : ep.host === "::" ? "::1" : ep.host;
  if (!/^[A-Za-z0-9.:-]+$/.test(host)) {
    throw new EndpointError(`has an invalid host: ${JSON.stringify(host)}`);
  }
  return { scheme: ep.scheme, host, port: ep.port };
}

/**
 * The gateway's gRPC endpoint the VM driver forwards guests to: the gateway's
 * `--grpc-endpoint` (passed on), the driver's `--openshell-endpoint`.
 */
export const GRPC_ENDPOINT = {
  kind: "string",
  value: "URL",
  env: "OPENSHELL_GRPC_ENDPOINT",
  help: "The gateway's gRPC endpoint the VM driver forwards guests to, http(s)://HOST:PORT",
  check: (url: string | number) => {
    try {
      gatewayGrpcEndpoint(String(url));
      return undefined;
    } catch (err) {
      if (err instanceof EndpointError) return err.message;
      throw err;
    }
  },
} satisfies FlagSpec;
