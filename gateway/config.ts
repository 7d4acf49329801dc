/**
 * The gateway's configuration: options with `OPENSHELL_*` twins (one table,
 * `core/flags.ts`), checked at start, and the grant parameters they imply.
 * The options it passes on to the VM driver are the driver's own
 * (`core/shared_flags.ts`): what the driver would refuse, the gateway refuses.
 *
 * @module
 */
import {
  type EnvReader,
  FlagError,
  type FlagTable,
  noPositionals,
  parseFlags,
} from "../core/flags.ts";
import { renderHelp } from "../core/flags_help.ts";
import type { GatewayGrantParams } from "../core/grants.ts";
import type { LogFormat, LogLevel } from "../core/log.ts";
import {
  EGRESS_STATE_DIR,
  egressStateDirProblem,
  GRPC_ENDPOINT,
  LOG_FORMAT,
  LOG_LEVEL,
  VM_ACCEL,
  VM_DRIVER_STATE_DIR,
  VM_MEM_MIB,
  VM_RUNTIME_DIR,
  VM_VCPUS,
} from "../core/shared_flags.ts";

/** Where the gateway keeps sandboxes. */
export type DbUrl =
  | { kind: "sqlite-memory" }
  | { kind: "sqlite-file"; path: string }
  | { kind: "postgres"; url: string };

/** The gateway's settings after validation. */
export interface GatewayConfig {
  port: number;
  bind: string;
  stateDir: string;
  db: DbUrl;
  drivers: "vm" | "none";
  driverDir: string;
  vmDriverStateDir: string;
  /** Passed on to the VM driver when set (else the driver's default applies). */
  vmRuntimeDir?: string;
  /** Passed on to the VM driver. */
  vmAccel: string;
  vmVcpus: number;
  vmMemMib: number;
  /** URL supervisors dial (the supervisor plane); undefined = derived once listening. */
  grpcEndpoint?: string;
  sshConnectPath: string;
  sshGatewayHost?: string;
  sshGatewayPort?: number;
  sshSessionTtlSecs: number;
  supervisorHeartbeatSecs: number;
  /** Open connections at most on the listener. */
  maxConnections: number;
  /** Open connections per remote address at most (0 = no cap; loopback is exempt). */
  maxConnectionsPerPeer: number;
  /** An HTTP/2 connection without an open stream this long is closed. */
  connectionIdleSecs: number;
  disableTls: boolean;
  disableGatewayAuth: boolean;
  /** Server certificate and key; both absent = the automatic PKI in `<state-dir>/pki`. */
  tlsCert?: string;
  tlsKey?: string;
  /** CA of client certificates; absent with the automatic PKI = its own CA. */
  tlsClientCa?: string;
  /** Extra names the automatic server certificate covers (`--tls-san`). */
  tlsSans: string[];
  /** The supervisor plane's listen address: guests and supervisors reach only this. */
  supervisorBind: string;
  supervisorPort: number;
  logLevel: LogLevel;
  logFormat: LogFormat;
  /** Log lines go to this file (rotated at a cap) instead of stderr. */
  logFile?: string;
  /** Run the egress proxy (sandboxes' only way out; off: no network at all). */
  egress: boolean;
  /** The egress proxy's state dir (its control and guest sockets). */
  egressStateDir: string;
}

/** Default state dir (the compiled binary's grants point here). */
export const DEFAULT_STATE_DIR = "/var/lib/openshell/gateway";

/** Every gateway option; the VM options, log level and endpoint are the driver's own (shared). */
export const GATEWAY_FLAGS = {
  port: {
    kind: "int",
    env: "OPENSHELL_SERVER_PORT",
    default: 8080,
    min: 0,
    max: 65535,
    value: "PORT",
    help: "TCP port for gRPC and HTTP (0 = any free port)",
  },
  bind: {
    kind: "string",
    env: "OPENSHELL_BIND_ADDRESS",
    default: "0.0.0.0",
    value: "ADDR",
    help: "Address to listen on",
    check: addressProblem,
  },
  "state-dir": {
    kind: "path",
    env: "OPENSHELL_STATE_DIR",
    default: DEFAULT_STATE_DIR,
    value: "DIR",
    help: "Gateway state: internal sockets, default database",
  },
  "db-url": {
    kind: "string",
    env: "OPENSHELL_DB_URL",
    value: "URL",
    help: "sqlite::memory:, sqlite:PATH or postgres://… (default sqlite:<state-dir>/gateway.db)",
  },
  drivers: {
    kind: "choice",
    env: "OPENSHELL_DRIVERS",
    default: "vm",
    choices: ["vm", "none"],
    help:
      "Compute driver (none: sandboxes are records that a supervisor started elsewhere attaches to)",
  },
  "driver-dir": {
    kind: "path",
    env: "OPENSHELL_DRIVER_DIR",
    default: "/usr/local/libexec/openshell",
    value: "DIR",
    help: "Directory holding openshell-driver-vm and openshell-egress",
  },
  "vm-driver-state-dir": { ...VM_DRIVER_STATE_DIR, default: "/var/lib/openshell/vm" },
  "vm-runtime-dir": { ...VM_RUNTIME_DIR, help: `${VM_RUNTIME_DIR.help}, passed to the driver` },
  "vm-accel": VM_ACCEL,
  "vm-vcpus": VM_VCPUS,
  "vm-mem-mib": VM_MEM_MIB,
  "grpc-endpoint": {
    ...GRPC_ENDPOINT,
    help: "URL supervisors dial: the supervisor plane (default: derived from " +
      "--supervisor-bind/--supervisor-port)",
  },
  "ssh-connect-path": {
    kind: "string",
    env: "OPENSHELL_SSH_CONNECT_PATH",
    default: "/connect/ssh",
    value: "PATH",
    help: "HTTP path of the SSH CONNECT tunnel",
    check: (p: string | number) =>
      /^\/[A-Za-z0-9._~!$&'()*+,;=:@/%-]*$/.test(String(p))
        ? undefined
        : `must start with "/" and hold URL path characters only`,
  },
  "ssh-gateway-host": {
    kind: "string",
    env: "OPENSHELL_SSH_GATEWAY_HOST",
    value: "HOST",
    help: "Host that CreateSshSession tells clients to dial (default: the bind address)",
  },
  "ssh-gateway-port": {
    kind: "int",
    env: "OPENSHELL_SSH_GATEWAY_PORT",
    min: 1,
    max: 65535,
    value: "PORT",
    help: "Port that CreateSshSession tells clients to dial (default: the listen port)",
  },
  "ssh-session-ttl-secs": {
    kind: "int",
    env: "OPENSHELL_SSH_SESSION_TTL_SECS",
    default: 86400,
    min: 0,
    value: "SECS",
    help: "Lifetime of SSH session tokens (0 = no expiry)",
  },
  "supervisor-heartbeat-secs": {
    kind: "int",
    env: "OPENSHELL_SUPERVISOR_HEARTBEAT_SECS",
    default: 15,
    min: 1,
    max: 3600,
    value: "SECS",
    help: "Heartbeat interval announced to supervisors",
  },
  "max-connections": {
    kind: "int",
    env: "OPENSHELL_MAX_CONNECTIONS",
    default: 1024,
    min: 1,
    max: 1_000_000,
    help: "Open connections at most (idle ones are closed to make room)",
  },
  "max-connections-per-peer": {
    kind: "int",
    env: "OPENSHELL_MAX_CONNECTIONS_PER_PEER",
    default: 64,
    min: 0,
    max: 1_000_000,
    help: "Open connections per remote address at most (0 = no cap; loopback exempt)",
  },
  "connection-idle-secs": {
    kind: "int",
    env: "OPENSHELL_CONNECTION_IDLE_SECS",
    default: 300,
    min: 1,
    max: 86400,
    value: "SECS",
    help: "Close an HTTP/2 connection that has had no open stream this long",
  },
  "disable-tls": {
    kind: "bool",
    env: "OPENSHELL_DISABLE_TLS",
    help: "Serve plaintext (development only)",
  },
  "disable-gateway-auth": {
    kind: "bool",
    env: "OPENSHELL_DISABLE_GATEWAY_AUTH",
    help:
      "Do not require client certificates on the user API (supervisor credentials stay checked)",
  },
  "tls-cert": {
    kind: "string",
    env: "OPENSHELL_TLS_CERT",
    value: "FILE",
    help: "Server certificate (PEM; default: the automatic PKI in <state-dir>/pki)",
  },
  "tls-key": {
    kind: "string",
    env: "OPENSHELL_TLS_KEY",
    value: "FILE",
    help: "Server private key (PEM)",
  },
  "tls-client-ca": {
    kind: "string",
    env: "OPENSHELL_TLS_CLIENT_CA",
    value: "FILE",
    help: "CA that signs client certificates (default with the automatic PKI: its CA)",
  },
  "tls-san": {
    kind: "list",
    repeatable: true,
    env: "OPENSHELL_TLS_SAN",
    value: "NAMES",
    help: "Extra DNS names or IPs for the automatic server certificate (comma-separated)",
    check: (san: string | number) =>
      /^[A-Za-z0-9.:*-]{1,253}$/.test(String(san))
        ? undefined
        : `is not a DNS name or IP address: ${JSON.stringify(san)}`,
  },
  "supervisor-bind": {
    kind: "string",
    env: "OPENSHELL_SUPERVISOR_BIND_ADDRESS",
    default: "127.0.0.1",
    value: "ADDR",
    help: "Address of the supervisor plane (ConnectSupervisor and RelayStream only)",
    check: addressProblem,
  },
  "supervisor-port": {
    kind: "int",
    env: "OPENSHELL_SUPERVISOR_PORT",
    default: 8081,
    min: 0,
    max: 65535,
    value: "PORT",
    help: "Port of the supervisor plane (0 = any free port)",
  },
  "log-level": LOG_LEVEL,
  "log-format": LOG_FORMAT,
  "log-file": {
    kind: "path",
    env: "OPENSHELL_LOG_FILE",
    value: "FILE",
    help:
      "Write log lines to FILE instead of stderr; at 10 MiB it becomes FILE.1 and a new FILE starts",
  },
  "egress": {
    kind: "bool",
    env: "OPENSHELL_EGRESS",
    help: "Run the egress proxy, sandboxes' policy-governed way out (--no-egress: no " +
      "network at all; default: on with --drivers vm, off with --drivers none)",
  },
  "egress-state-dir": {
    ...EGRESS_STATE_DIR,
    help: "State dir of the egress proxy: its sockets (default <state-dir>/egress)",
  },
} satisfies FlagTable;

function addressProblem(address: string | number): string | undefined {
  return /^[A-Za-z0-9.:\-\[\]]+$/.test(String(address))
    ? undefined
    : `is not an address: ${JSON.stringify(address)}`;
}

/** The full `--help` text. */
export function gatewayHelp(): string {
  return renderHelp({
    about: "openshell-gateway: serves the OpenShell API (gRPC and HTTP on one port), owns " +
      "sandboxes and their readiness, starts the VM driver, and relays to supervisors.",
    usage: "openshell-gateway [OPTIONS]",
    sections: [{ title: "Options", flags: GATEWAY_FLAGS, help: true }],
  });
}

/** Parses a `--db-url`; throws a {@link FlagError} for anything unsupported. */
export function parseDbUrl(url: string): DbUrl {
  if (url === "sqlite::memory:" || url === "sqlite://:memory:") return { kind: "sqlite-memory" };
  if (url.startsWith("sqlite:")) {
    // `sqlite://REST` is the URL form: REST is the path (`sqlite:///abs.db` is absolute,
    // `sqlite://rel.db` relative and refused below), never `//REST`.
    const path = url.slice("sqlite:".length).replace(/^\/\//, "");
    if (!path || path === ":memory:") return { kind: "sqlite-memory" };
    if (!path.startsWith("/")) {
      throw new FlagError(`--db-url must name an absolute sqlite path, got "${path}"`);
    }
    return { kind: "sqlite-file", path };
  }
  if (/^postgres(ql)?:\/\//.test(url)) return { kind: "postgres", url };
  throw new FlagError(
    `--db-url is not a supported database URL: "${url}" (use sqlite::memory:, sqlite:/abs/path.db or postgres://…)`,
  );
}

/** Result of {@link parseGatewayConfig}: a config, or a request for help. */
export type GatewayArgs = { help: true } | { help: false; config: GatewayConfig };

/** Parses and validates the gateway's options; throws {@link FlagError} with a readable message. */
export function parseGatewayConfig(args: readonly string[], env?: EnvReader): GatewayArgs {
  const parsed = parseFlags(GATEWAY_FLAGS, args, env);
  if (parsed.help) return { help: true };
  noPositionals(parsed.positionals);
  const v = parsed.values;
  const config: GatewayConfig = {
    port: v.port,
    bind: v.bind,
    stateDir: v["state-dir"],
    db: parseDbUrl(v["db-url"] ?? `sqlite:${v["state-dir"]}/gateway.db`),
    drivers: v.drivers as GatewayConfig["drivers"],
    driverDir: v["driver-dir"],
    vmDriverStateDir: v["vm-driver-state-dir"],
    vmRuntimeDir: v["vm-runtime-dir"],
    vmAccel: v["vm-accel"],
    vmVcpus: v["vm-vcpus"],
    vmMemMib: v["vm-mem-mib"],
    grpcEndpoint: v["grpc-endpoint"],
    sshConnectPath: v["ssh-connect-path"],
    sshGatewayHost: v["ssh-gateway-host"],
    sshGatewayPort: v["ssh-gateway-port"],
    sshSessionTtlSecs: v["ssh-session-ttl-secs"],
    supervisorHeartbeatSecs: v["supervisor-heartbeat-secs"],
    maxConnections: v["max-connections"],
    maxConnectionsPerPeer: v["max-connections-per-peer"],
    connectionIdleSecs: v["connection-idle-secs"],
    disableTls: v["disable-tls"],
    disableGatewayAuth: v["disable-gateway-auth"],
    tlsCert: v["tls-cert"],
    tlsKey: v["tls-key"],
    tlsClientCa: v["tls-client-ca"],
    tlsSans: v["tls-san"],
    supervisorBind: v["supervisor-bind"],
    supervisorPort: v["supervisor-port"],
    logLevel: v["log-level"] as LogLevel,
    logFormat: v["log-format"] as LogFormat,
    logFile: v["log-file"],
    egress: parsed.from["egress"] === "default" ? v["drivers"] === "vm" : v["egress"],
    egressStateDir: v["egress-state-dir"] ?? `${v["state-dir"]}/egress`,
  };
  validate(config);
  return { help: false, config };
}

/** Rules across options. */
function validate(c: GatewayConfig): void {
  if (c.db.kind === "postgres") {
    throw new FlagError(
      "--db-url postgres://… is not supported yet (use sqlite::memory: or sqlite:PATH)",
    );
  }
  // A wildcard address overlaps every other one on the same port (EADDRINUSE at start).
  const wildcard = (a: string) => ["0.0.0.0", "::", "[::]"].includes(a);
  if (
    c.supervisorPort !== 0 && c.supervisorPort === c.port &&
    (c.supervisorBind === c.bind || wildcard(c.bind) || wildcard(c.supervisorBind))
  ) {
    throw new FlagError("--supervisor-port must differ from --port (the planes are separate)");
  }
  if (c.disableTls) {
    if (!c.disableGatewayAuth) {
      throw new FlagError(
        "--disable-tls needs --disable-gateway-auth as well: without TLS no client certificate " +
          "can be checked, and the gateway never drops authentication silently",
      );
    }
  } else {
    if (!!c.tlsCert !== !!c.tlsKey) {
      throw new FlagError(
        "--tls-cert and --tls-key go together (or pass neither: the gateway then makes its own " +
          "PKI in <state-dir>/pki)",
      );
    }
    if (c.tlsCert && !c.disableGatewayAuth && !c.tlsClientCa) {
      throw new FlagError(
        "with your own --tls-cert, gateway auth needs --tls-client-ca (the CA of client " +
          "certificates), or pass --disable-gateway-auth",
      );
    }
  }
  const sockets: [string, string][] = [
    ["state-dir", internalSocketPath(c)],
    ["state-dir", supervisorSocketPath(c)],
  ];
  if (c.egress) {
    sockets.push(["egress-state-dir", egressControlSocket(c)]);
    sockets.push(["egress-state-dir", egressGuestSocket(c)]);
  }
  for (const [flag, path] of sockets) {
    if (new TextEncoder().encode(path).length > MAX_UNIX_SOCKET_PATH) {
      throw new FlagError(
        `--${flag} is too long for a Unix socket path (${path} exceeds ${MAX_UNIX_SOCKET_PATH} bytes); use a shorter directory`,
      );
    }
  }
  if (c.egress) {
    // The proxy's own rule, also for the default <state-dir>/egress: it would refuse it later.
    const problem = egressStateDirProblem(c.egressStateDir);
    if (problem) throw new FlagError(`--egress-state-dir ${problem}`);
  }
}

/** Longest Unix socket path Linux accepts (sun_path is 108 bytes with the NUL). */
export const MAX_UNIX_SOCKET_PATH = 107;

/** Path of the gateway's internal gRPC socket. */
export function internalSocketPath(c: Pick<GatewayConfig, "stateDir">): string {
  return `${c.stateDir}/grpc.sock`;
}

/** Path of the supervisor plane's internal gRPC socket. */
export function supervisorSocketPath(c: Pick<GatewayConfig, "stateDir">): string {
  return `${c.stateDir}/supervisor.sock`;
}

/** Directory of the automatic PKI. */
export function pkiDir(c: Pick<GatewayConfig, "stateDir">): string {
  return `${c.stateDir}/pki`;
}

/** Whether the gateway makes and uses its own PKI (TLS on, no `--tls-cert`). */
export function usesAutoPki(c: Pick<GatewayConfig, "disableTls" | "tlsCert">): boolean {
  return !c.disableTls && !c.tlsCert;
}

/** Path of the VM driver's socket. */
export function driverSocketPath(c: Pick<GatewayConfig, "vmDriverStateDir">): string {
  return `${c.vmDriverStateDir}/compute-driver.sock`;
}

/** The VM driver's arguments: the options the gateway passes on, under the driver's names. */
export function driverArgs(c: GatewayConfig, grpcEndpoint: string): string[] {
  return [
    "--state-dir",
    c.vmDriverStateDir,
    "--openshell-endpoint",
    grpcEndpoint,
    "--log-level",
    c.logLevel,
    ...(c.vmRuntimeDir ? ["--runtime-dir", c.vmRuntimeDir] : []),
    "--vm-accel",
    c.vmAccel,
    "--vm-vcpus",
    String(c.vmVcpus),
    "--vm-mem-mib",
    String(c.vmMemMib),
    ...(c.egress ? ["--egress-socket", egressGuestSocket(c)] : []),
  ];
}

/** The egress proxy's executable: `openshell-egress` beside the driver. */
export function egressBinary(c: Pick<GatewayConfig, "driverDir">): string {
  return `${c.driverDir}/openshell-egress`;
}

/** The egress proxy's control socket (the gateway is its only client). */
export function egressControlSocket(c: Pick<GatewayConfig, "egressStateDir">): string {
  return `${c.egressStateDir}/control.sock`;
}

/** The egress proxy's socket for guests' connections (the VM driver carries them there). */
export function egressGuestSocket(c: Pick<GatewayConfig, "egressStateDir">): string {
  return `${c.egressStateDir}/guest.sock`;
}

/** The grant parameters this configuration needs (for launchers and tests). */
export function gatewayGrantParams(c: GatewayConfig): GatewayGrantParams {
  return {
    listen: { host: c.bind, port: c.port },
    supervisorListen: { host: c.supervisorBind, port: c.supervisorPort },
    stateDir: c.stateDir,
    dbPath: c.db.kind === "sqlite-file" && !c.db.path.startsWith(c.stateDir + "/")
      ? c.db.path
      : undefined,
    logFile: c.logFile && !c.logFile.startsWith(c.stateDir + "/") ? c.logFile : undefined,
    driverBinary: c.drivers === "vm" ? `${c.driverDir}/openshell-driver-vm` : undefined,
    driverStateDir: c.drivers === "vm" ? c.vmDriverStateDir : undefined,
    tlsFiles: c.disableTls
      ? []
      : [c.tlsCert, c.tlsKey, c.tlsClientCa].filter((f): f is string => !!f),
    egressBinary: c.egress ? egressBinary(c) : undefined,
    egressStateDir: c.egress ? c.egressStateDir : undefined,
  };
}
