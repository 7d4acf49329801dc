/**
 * The gateway's configuration: flags with `OPENSHELL_*` twins, checked at
 * start, and the grant parameters they imply.
 *
 * @module
 */
import { EndpointError, parseEndpoint } from "../core/endpoint.ts";
import { type EnvReader, FlagError, type FlagSpec, parseFlags, renderHelp } from "../core/flags.ts";
import type { GatewayGrantParams } from "../core/grants.ts";
import type { LogFormat, LogLevel } from "../core/log.ts";
import { LOG_LEVELS } from "../core/log.ts";

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
  vmRuntimeDir?: string;
  vmAccel?: string;
  vmVcpus?: number;
  vmMemMib?: number;
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

/** Every gateway flag. */
export const GATEWAY_FLAGS: readonly FlagSpec[] = [
  {
    name: "port",
    type: "integer",
    env: "OPENSHELL_SERVER_PORT",
    default: 8080,
    min: 0,
    max: 65535,
    placeholder: "PORT",
    description: "TCP port for gRPC and HTTP (0 = any free port)",
  },
  {
    name: "bind",
    type: "string",
    env: "OPENSHELL_BIND_ADDRESS",
    default: "0.0.0.0",
    placeholder: "ADDR",
    description: "Address to listen on",
  },
  {
    name: "state-dir",
    type: "string",
    env: "OPENSHELL_STATE_DIR",
    default: DEFAULT_STATE_DIR,
    placeholder: "DIR",
    description: "Gateway state: internal sockets, default database",
  },
  {
    name: "db-url",
    type: "string",
    env: "OPENSHELL_DB_URL",
    placeholder: "URL",
    description:
      "sqlite::memory:, sqlite:PATH or postgres://… (default sqlite:<state-dir>/gateway.db)",
  },
  {
    name: "drivers",
    type: "string",
    env: "OPENSHELL_DRIVERS",
    default: "vm",
    choices: ["vm", "none"],
    description:
      "Compute driver (none: sandboxes are records that a supervisor started elsewhere attaches to)",
  },
  {
    name: "driver-dir",
    type: "string",
    env: "OPENSHELL_DRIVER_DIR",
    default: "/usr/local/libexec/openshell",
    placeholder: "DIR",
    description: "Directory holding openshell-driver-vm and openshell-egress",
  },
  {
    name: "vm-driver-state-dir",
    type: "string",
    env: "OPENSHELL_VM_DRIVER_STATE_DIR",
    default: "/var/lib/openshell/vm",
    placeholder: "DIR",
    description: "State dir of the VM driver (its socket lives there; keep it short)",
  },
  {
    name: "vm-runtime-dir",
    type: "string",
    env: "OPENSHELL_VM_RUNTIME_DIR",
    placeholder: "DIR",
    description: "Kernel and guest image for the VM driver",
  },
  {
    name: "vm-accel",
    type: "string",
    env: "OPENSHELL_VM_ACCEL",
    choices: ["auto", "kvm", "hvf", "tcg"],
    description: "VM accelerator passed to the driver",
  },
  {
    name: "vm-vcpus",
    type: "integer",
    env: "OPENSHELL_VM_VCPUS",
    min: 1,
    max: 64,
    description: "vCPUs per VM",
  },
  {
    name: "vm-mem-mib",
    type: "integer",
    env: "OPENSHELL_VM_MEM_MIB",
    min: 64,
    max: 262144,
    description: "Memory per VM in MiB",
  },
  {
    name: "grpc-endpoint",
    type: "string",
    env: "OPENSHELL_GRPC_ENDPOINT",
    placeholder: "URL",
    description:
      "URL supervisors dial: the supervisor plane (default: derived from --supervisor-bind/--supervisor-port)",
  },
  {
    name: "ssh-connect-path",
    type: "string",
    env: "OPENSHELL_SSH_CONNECT_PATH",
    default: "/connect/ssh",
    placeholder: "PATH",
    description: "HTTP path of the SSH CONNECT tunnel",
  },
  {
    name: "ssh-gateway-host",
    type: "string",
    env: "OPENSHELL_SSH_GATEWAY_HOST",
    placeholder: "HOST",
    description: "Host that CreateSshSession tells clients to dial (default: the bind address)",
  },
  {
    name: "ssh-gateway-port",
    type: "integer",
    env: "OPENSHELL_SSH_GATEWAY_PORT",
    min: 1,
    max: 65535,
    placeholder: "PORT",
    description: "Port that CreateSshSession tells clients to dial (default: the listen port)",
  },
  {
    name: "ssh-session-ttl-secs",
    type: "integer",
    env: "OPENSHELL_SSH_SESSION_TTL_SECS",
    default: 86400,
    min: 0,
    placeholder: "SECS",
    description: "Lifetime of SSH session tokens (0 = no expiry)",
  },
  {
    name: "supervisor-heartbeat-secs",
    type: "integer",
    env: "OPENSHELL_SUPERVISOR_HEARTBEAT_SECS",
    default: 15,
    min: 1,
    max: 3600,
    placeholder: "SECS",
    description: "Heartbeat interval announced to supervisors",
  },
  {
    name: "max-connections",
    type: "integer",
    env: "OPENSHELL_MAX_CONNECTIONS",
    default: 1024,
    min: 1,
    max: 1_000_000,
    placeholder: "N",
    description: "Open connections at most (idle ones are closed to make room)",
  },
  {
    name: "max-connections-per-peer",
    type: "integer",
    env: "OPENSHELL_MAX_CONNECTIONS_PER_PEER",
    default: 64,
    min: 0,
    max: 1_000_000,
    placeholder: "N",
    description: "Open connections per remote address at most (0 = no cap; loopback exempt)",
  },
  {
    name: "connection-idle-secs",
    type: "integer",
    env: "OPENSHELL_CONNECTION_IDLE_SECS",
    default: 300,
    min: 1,
    max: 86400,
    placeholder: "SECS",
    description: "Close an HTTP/2 connection that has had no open stream this long",
  },
  {
    name: "disable-tls",
    type: "boolean",
    env: "OPENSHELL_DISABLE_TLS",
    default: false,
    description: "Serve plaintext (development only)",
  },
  {
    name: "disable-gateway-auth",
    type: "boolean",
    env: "OPENSHELL_DISABLE_GATEWAY_AUTH",
    default: false,
    description:
      "Do not require client certificates on the user API (supervisor credentials stay checked)",
  },
  {
    name: "tls-cert",
    type: "string",
    env: "OPENSHELL_TLS_CERT",
    placeholder: "FILE",
    description: "Server certificate (PEM; default: the automatic PKI in <state-dir>/pki)",
  },
  {
    name: "tls-key",
    type: "string",
    env: "OPENSHELL_TLS_KEY",
    placeholder: "FILE",
    description: "Server private key (PEM)",
  },
  {
    name: "tls-client-ca",
    type: "string",
    env: "OPENSHELL_TLS_CLIENT_CA",
    placeholder: "FILE",
    description: "CA that signs client certificates (default with the automatic PKI: its CA)",
  },
  {
    name: "tls-san",
    type: "string",
    env: "OPENSHELL_TLS_SAN",
    placeholder: "NAMES",
    description: "Extra DNS names or IPs for the automatic server certificate (comma-separated)",
  },
  {
    name: "supervisor-bind",
    type: "string",
    env: "OPENSHELL_SUPERVISOR_BIND_ADDRESS",
    default: "127.0.0.1",
    placeholder: "ADDR",
    description: "Address of the supervisor plane (ConnectSupervisor and RelayStream only)",
  },
  {
    name: "supervisor-port",
    type: "integer",
    env: "OPENSHELL_SUPERVISOR_PORT",
    default: 8081,
    min: 0,
    max: 65535,
    placeholder: "PORT",
    description: "Port of the supervisor plane (0 = any free port)",
  },
  {
    name: "log-level",
    type: "string",
    env: "OPENSHELL_LOG_LEVEL",
    default: "info",
    choices: LOG_LEVELS,
    description: "Log level",
  },
  {
    name: "log-format",
    type: "string",
    env: "OPENSHELL_LOG_FORMAT",
    default: "text",
    choices: ["text", "json"],
    description: "Log line format",
  },
  {
    name: "log-file",
    type: "string",
    env: "OPENSHELL_LOG_FILE",
    placeholder: "FILE",
    description:
      "Write log lines to FILE instead of stderr; at 10 MiB it becomes FILE.1 and a new FILE starts",
  },
  {
    name: "egress",
    type: "boolean",
    env: "OPENSHELL_EGRESS",
    description: "Run the egress proxy, sandboxes' policy-governed way out (--no-egress: no " +
      "network at all; default: on with --drivers vm, off with --drivers none)",
  },
  {
    name: "egress-state-dir",
    type: "string",
    env: "OPENSHELL_EGRESS_STATE_DIR",
    placeholder: "DIR",
    description: "State dir of the egress proxy: its sockets (default <state-dir>/egress)",
  },
];

/** Usage line of `--help`. */
export const GATEWAY_USAGE = "usage: openshell-gateway [flags]";

/** The full `--help` text. */
export function gatewayHelp(): string {
  return renderHelp(GATEWAY_USAGE, GATEWAY_FLAGS);
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
      throw new FlagError(`--db-url: sqlite path must be absolute, got "${path}"`);
    }
    return { kind: "sqlite-file", path };
  }
  if (/^postgres(ql)?:\/\//.test(url)) return { kind: "postgres", url };
  throw new FlagError(
    `--db-url: unsupported database URL "${url}" (use sqlite::memory:, sqlite:/abs/path.db or postgres://…)`,
  );
}

function absolute(flag: string, path: string): string {
  if (!path.startsWith("/")) {
    throw new FlagError(`--${flag}: must be an absolute path, got "${path}"`);
  }
  return path.replace(/\/+$/, "") || "/";
}

function optionalString(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}

/** Result of {@link parseGatewayConfig}: a config, or a request for help. */
export type GatewayArgs = { help: true } | { help: false; config: GatewayConfig };

/** Parses and validates the gateway's flags; throws {@link FlagError} with a readable message. */
export function parseGatewayConfig(args: readonly string[], env?: EnvReader): GatewayArgs {
  const parsed = parseFlags(GATEWAY_FLAGS, args, env);
  if (parsed.help) return { help: true };
  if (parsed.positionals.length > 0) {
    throw new FlagError(`unexpected argument "${parsed.positionals[0]}" (see --help)`);
  }
  const v = parsed.values;
  const stateDir = absolute("state-dir", v["state-dir"] as string);
  const config: GatewayConfig = {
    port: v["port"] as number,
    bind: v["bind"] as string,
    stateDir,
    db: parseDbUrl(optionalString(v["db-url"]) ?? `sqlite:${stateDir}/gateway.db`),
    drivers: v["drivers"] as "vm" | "none",
    driverDir: absolute("driver-dir", v["driver-dir"] as string),
    vmDriverStateDir: absolute("vm-driver-state-dir", v["vm-driver-state-dir"] as string),
    vmRuntimeDir: optionalString(v["vm-runtime-dir"]),
    vmAccel: optionalString(v["vm-accel"]),
    vmVcpus: v["vm-vcpus"] as number | undefined,
    vmMemMib: v["vm-mem-mib"] as number | undefined,
    grpcEndpoint: optionalString(v["grpc-endpoint"]),
    sshConnectPath: v["ssh-connect-path"] as string,
    sshGatewayHost: optionalString(v["ssh-gateway-host"]),
    sshGatewayPort: v["ssh-gateway-port"] as number | undefined,
    sshSessionTtlSecs: v["ssh-session-ttl-secs"] as number,
    supervisorHeartbeatSecs: v["supervisor-heartbeat-secs"] as number,
    maxConnections: v["max-connections"] as number,
    maxConnectionsPerPeer: v["max-connections-per-peer"] as number,
    connectionIdleSecs: v["connection-idle-secs"] as number,
    disableTls: v["disable-tls"] as boolean,
    disableGatewayAuth: v["disable-gateway-auth"] as boolean,
    tlsCert: optionalString(v["tls-cert"]),
    tlsKey: optionalString(v["tls-key"]),
    tlsClientCa: optionalString(v["tls-client-ca"]),
    tlsSans: (optionalString(v["tls-san"]) ?? "").split(",").map((x) => x.trim()).filter((x) =>
      x !== ""
    ),
    supervisorBind: v["supervisor-bind"] as string,
    supervisorPort: v["supervisor-port"] as number,
    logLevel: v["log-level"] as LogLevel,
    logFormat: v["log-format"] as LogFormat,
    logFile: optionalString(v["log-file"]) === undefined
      ? undefined
      : absolute("log-file", v["log-file"] as string),
    egress: (v["egress"] as boolean | undefined) ?? v["drivers"] === "vm",
    egressStateDir: optionalString(v["egress-state-dir"]) === undefined
      ? `${stateDir}/egress`
      : absolute("egress-state-dir", v["egress-state-dir"] as string),
  };
  validate(config);
  return { help: false, config };
}

function validate(c: GatewayConfig): void {
  if (!/^\/[A-Za-z0-9._~!$&'()*+,;=:@/%-]*$/.test(c.sshConnectPath)) {
    throw new FlagError(
      `--ssh-connect-path: must start with "/" and hold URL path characters only`,
    );
  }
  if (c.grpcEndpoint) {
    try {
      parseEndpoint(c.grpcEndpoint);
    } catch (err) {
      if (err instanceof EndpointError) throw new FlagError(`--grpc-endpoint ${err.message}`);
      throw err;
    }
  }
  if (c.db.kind === "postgres") {
    throw new FlagError(
      "--db-url: postgres is not supported yet (use sqlite::memory: or sqlite:PATH)",
    );
  }
  for (const [flag, bind] of [["bind", c.bind], ["supervisor-bind", c.supervisorBind]]) {
    if (!/^[A-Za-z0-9.:\-\[\]]+$/.test(bind)) {
      throw new FlagError(`--${flag}: not an address: "${bind}"`);
    }
  }
  // A wildcard address overlaps every other one on the same port (EADDRINUSE at start).
  const wildcard = (a: string) => ["0.0.0.0", "::", "[::]"].includes(a);
  if (
    c.supervisorPort !== 0 && c.supervisorPort === c.port &&
    (c.supervisorBind === c.bind || wildcard(c.bind) || wildcard(c.supervisorBind))
  ) {
    throw new FlagError("--supervisor-port: must differ from --port (the planes are separate)");
  }
  for (const san of c.tlsSans) {
    if (!/^[A-Za-z0-9.:*-]{1,253}$/.test(san)) {
      throw new FlagError(`--tls-san: not a DNS name or IP address: "${san}"`);
    }
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
  if (c.drivers === "vm") sockets.push(["vm-driver-state-dir", driverSocketPath(c)]);
  if (c.egress) {
    sockets.push(["egress-state-dir", egressControlSocket(c)]);
    sockets.push(["egress-state-dir", egressGuestSocket(c)]);
  }
  for (const [flag, path] of sockets) {
    if (new TextEncoder().encode(path).length > MAX_UNIX_SOCKET_PATH) {
      throw new FlagError(
        `--${flag}: too long for a Unix socket path (${path} exceeds ${MAX_UNIX_SOCKET_PATH} bytes); use a shorter directory`,
      );
    }
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
