/**
 * The supervisor's configuration: flags with `OPENSHELL_*` environment twins
 * (a flag wins over its twin), checked completely before anything starts.
 *
 * Pure: the caller hands in the arguments and a lookup of the environment,
 * so every rule here is tested without a process.
 *
 * @module
 */
import {
  EndpointError,
  type GatewayEndpoint,
  parseEndpoint as parseGatewayUrl,
} from "../core/endpoint.ts";
import { type EnvReader, FlagError, type FlagSpec, parseFlags, renderHelp } from "../core/flags.ts";
import { DEFAULT_SESSION_CGROUP, DEFAULT_SSH_SOCKET_PATH } from "../core/grants.ts";
import { type LogFormat, type LogLevel, parseLogLevel } from "../core/log.ts";

/** The OpenSSH daemon used when neither `--sshd` nor `OPENSHELL_SSHD` says otherwise. */
export const DEFAULT_SSHD = "/usr/sbin/sshd";

/**
 * Longest socket path the supervisor accepts: `sun_path` holds 108 bytes on
 * Linux including the terminating NUL (104 on macOS; stay under both).
 */
export const MAX_SOCKET_PATH_BYTES = 103;

/** Client TLS files (PEM) for an `https://` endpoint: the CA, and optionally a client certificate. */
export interface TlsFiles {
  /** CA bundle the gateway's certificate must chain to. */
  ca: string;
  /** Client certificate presented to the gateway (mTLS; with `key`). */
  cert?: string;
  /** Private key of the client certificate. */
  key?: string;
}

/** A validated supervisor configuration. */
export interface SupervisorConfig {
  /** The sandbox this supervisor serves. */
  sandboxId: string;
  /** Gateway endpoint, normalised to `scheme://host:port` (IPv6 hosts in brackets). */
  endpoint: string;
  /** `https` (mTLS) or `http` (plaintext). */
  scheme: "http" | "https";
  /** Gateway host as written in the endpoint (IPv6 without brackets). */
  host: string;
  /** Gateway port (the scheme's default when the endpoint names none). */
  port: number;
  /** The sshd Unix socket; its parent directory belongs to the supervisor. */
  socketPath: string;
  /** The OpenSSH `sshd` binary. */
  sshd: string;
  /**
   * OpenSSH private host key file; generated there (0600) when missing, so a
   * restarted supervisor keeps its key. Absent = a new key at every start.
   */
  hostKeyPath?: string;
  /** Client TLS files; set exactly when `scheme` is `https`. */
  tls?: TlsFiles;
  /** The supervisor token itself (from `OPENSHELL_SUPERVISOR_TOKEN`). */
  token?: string;
  /** File holding the supervisor token (from `--supervisor-token-file`). */
  tokenFile?: string;
  /** JSON file of the sandbox's environment, applied to every SSH session. */
  envFile?: string;
  /**
   * The cgroup v2 directory this supervisor owns, one child per SSH
   * connection (see `session_cgroup.ts`); absent (`none`) = no containment.
   */
  sessionCgroup?: string;
  /** Least severe log level written. */
  logLevel: LogLevel;
  /** Log line format. */
  logFormat: LogFormat;
}

/** What {@link parseSupervisorConfig} returns: a config, or a request for help/version. */
export type ParsedCommand =
  | { kind: "run"; config: SupervisorConfig }
  | { kind: "help" }
  | { kind: "version" };

/** The supervisor's flags (each with its environment twin). */
export const FLAGS: readonly FlagSpec[] = [
  {
    name: "sandbox-id",
    type: "string",
    env: "OPENSHELL_SANDBOX_ID",
    placeholder: "ID",
    description: "sandbox this supervisor serves (required)",
  },
  {
    name: "openshell-endpoint",
    type: "string",
    env: "OPENSHELL_ENDPOINT",
    placeholder: "URL",
    description: "gateway URL, http://HOST:PORT or https://HOST:PORT (required)",
  },
  {
    name: "ssh-socket-path",
    type: "string",
    env: "OPENSHELL_SSH_SOCKET_PATH",
    placeholder: "PATH",
    default: DEFAULT_SSH_SOCKET_PATH,
    description: "sshd Unix socket; its directory belongs to the supervisor",
  },
  {
    name: "sshd",
    type: "string",
    env: "OPENSHELL_SSHD",
    placeholder: "PATH",
    default: DEFAULT_SSHD,
    description: "OpenSSH sshd binary",
  },
  {
    name: "ssh-host-key",
    type: "string",
    env: "OPENSHELL_SSH_HOST_KEY",
    placeholder: "PATH",
    description: "OpenSSH private host key file (default: generate one at start)",
  },
  {
    name: "tls-ca",
    type: "string",
    env: "OPENSHELL_TLS_CA",
    placeholder: "PATH",
    description: "CA bundle of the gateway (https:// only)",
  },
  {
    name: "tls-cert",
    type: "string",
    env: "OPENSHELL_TLS_CERT",
    placeholder: "PATH",
    description: "client certificate (https:// only)",
  },
  {
    name: "tls-key",
    type: "string",
    env: "OPENSHELL_TLS_KEY",
    placeholder: "PATH",
    description: "client private key (https:// only)",
  },
  {
    name: "supervisor-token-file",
    type: "string",
    env: "OPENSHELL_SUPERVISOR_TOKEN_FILE",
    placeholder: "PATH",
    description: "file holding the supervisor token (or the token itself in " +
      "OPENSHELL_SUPERVISOR_TOKEN)",
  },
  {
    name: "env-file",
    type: "string",
    env: "OPENSHELL_ENV_FILE",
    placeholder: "PATH",
    description: "JSON object of environment variables for every SSH session",
  },
  {
    name: "session-cgroup",
    type: "string",
    env: "OPENSHELL_SESSION_CGROUP",
    placeholder: "DIR",
    default: DEFAULT_SESSION_CGROUP,
    description: "cgroup v2 directory owned by this supervisor alone: one child per SSH " +
      "connection, killed when it ends; none = no containment",
  },
  {
    name: "log-level",
    type: "string",
    env: "OPENSHELL_LOG_LEVEL",
    placeholder: "LEVEL",
    default: "info",
    description: "error, warn, info, debug or trace",
  },
  {
    name: "log-format",
    type: "string",
    env: "OPENSHELL_LOG_FORMAT",
    choices: ["text", "json"],
    default: "text",
    description: "log line format",
  },
  { name: "version", type: "boolean", description: "print the version" },
];

/** Environment variable carrying the token itself (no flag twin: tokens stay off argv). */
export const TOKEN_ENV = "OPENSHELL_SUPERVISOR_TOKEN";

/** Every environment variable the supervisor reads. */
export const CONFIG_ENV: readonly string[] = [
  ...FLAGS.flatMap((f) => (f.env ? [f.env] : [])),
  TOKEN_ENV,
];

/** The `--help` text. */
export function usage(): string {
  return renderHelp(
    "openshell-sandbox: the supervisor inside a sandbox. It dials the gateway, keeps a\n" +
      "session, and relays SSH connections to a private sshd.\n\n" +
      "Usage: openshell-sandbox --sandbox-id ID --openshell-endpoint URL [flags]\n" +
      `The supervisor token is read from ${TOKEN_ENV} or --supervisor-token-file.`,
    FLAGS,
  );
}

const SANDBOX_ID = /^[A-Za-z0-9._-]{1,128}$/;

function requireAbsolute(what: string, value: string): string {
  if (!value.startsWith("/")) throw new FlagError(`${what} must be an absolute path: "${value}"`);
  if (/[\0\n\r]/.test(value)) throw new FlagError(`${what} contains a control character`);
  return value;
}

interface ParsedEndpoint {
  endpoint: string;
  scheme: "http" | "https";
  host: string;
  port: number;
}

/** Validates a gateway endpoint URL and normalises it (exported for tests). */
export function parseEndpoint(value: string, what = "--openshell-endpoint"): ParsedEndpoint {
  let ep: GatewayEndpoint;
  try {
    ep = parseGatewayUrl(value);
  } catch (err) {
    if (err instanceof EndpointError) throw new FlagError(`${what} ${err.message}`);
    throw err;
  }
  return { endpoint: ep.url, scheme: ep.scheme, host: ep.host, port: ep.port };
}

/**
 * Parses the supervisor's arguments and environment (a flag wins over its
 * environment twin). Throws `FlagError` with a one-line message for
 * anything missing or malformed.
 */
export function parseSupervisorConfig(args: readonly string[], env: EnvReader): ParsedCommand {
  const parsed = parseFlags(FLAGS, args, env);
  if (parsed.help) return { kind: "help" };
  if (parsed.values.version === true) return { kind: "version" };
  if (parsed.positionals.length > 0) {
    throw new FlagError(`unexpected argument "${parsed.positionals[0]}" (see --help)`);
  }
  const given = (name: string): string | undefined => {
    const i = args.findIndex((a) => a === `--${name}` || a.startsWith(`--${name}=`));
    return i >= 0 ? `--${name}` : FLAGS.find((f) => f.name === name)?.env;
  };
  const get = (name: string): { value: string; what: string } | undefined => {
    const value = parsed.values[name];
    if (typeof value !== "string") return undefined;
    return { value, what: given(name) ?? `--${name}` };
  };
  const required = (name: string): { value: string; what: string } => {
    const v = get(name);
    if (!v || v.value.trim() === "") {
      const spec = FLAGS.find((f) => f.name === name)!;
      throw new FlagError(`--${name} (or ${spec.env}) is required`);
    }
    return v;
  };

  const id = required("sandbox-id");
  if (!SANDBOX_ID.test(id.value)) {
    throw new FlagError(
      `${id.what} must be 1-128 characters of letters, digits, ".", "_" or "-": "${id.value}"`,
    );
  }

  const ep = required("openshell-endpoint");
  const { endpoint, scheme, host, port } = parseEndpoint(ep.value, ep.what);

  const sock = get("ssh-socket-path")!;
  const socketPath = requireAbsolute(sock.what, sock.value);
  if (socketPath.endsWith("/")) throw new FlagError(`${sock.what} must name a file`);
  const socketDir = socketPath.slice(0, socketPath.lastIndexOf("/"));
  if (socketDir === "") {
    throw new FlagError(`${sock.what} must not live directly in "/" (its directory is owned)`);
  }
  if (new TextEncoder().encode(socketPath).length > MAX_SOCKET_PATH_BYTES) {
    throw new FlagError(
      `${sock.what} is longer than ${MAX_SOCKET_PATH_BYTES} bytes (Unix socket path limit)`,
    );
  }

  const sshdOpt = get("sshd")!;
  const sshd = requireAbsolute(sshdOpt.what, sshdOpt.value);

  const hk = get("ssh-host-key");
  const hostKeyPath = hk ? requireAbsolute(hk.what, hk.value) : undefined;

  const ca = get("tls-ca");
  const cert = get("tls-cert");
  const key = get("tls-key");
  let tls: TlsFiles | undefined;
  if (scheme === "https") {
    if (!ca) {
      throw new FlagError(
        "an https:// endpoint needs --tls-ca (the CA of the gateway's supervisor plane)",
      );
    }
    if (!!cert !== !!key) {
      throw new FlagError("--tls-cert and --tls-key go together (or pass neither)");
    }
    tls = {
      ca: requireAbsolute(ca.what, ca.value),
      ...(cert && key
        ? {
          cert: requireAbsolute(cert.what, cert.value),
          key: requireAbsolute(key.what, key.value),
        }
        : {}),
    };
  } else if (ca || cert || key) {
    const given = [ca, cert, key].filter((v) => v).map((v) => v!.what).join(", ");
    throw new FlagError(`${given} only apply to an https:// endpoint (got ${endpoint})`);
  }

  const tokenValue = env(TOKEN_ENV);
  const token = tokenValue !== undefined && tokenValue.trim() !== ""
    ? tokenValue.trim()
    : undefined;
  const tf = get("supervisor-token-file");
  const tokenFile = tf ? requireAbsolute(tf.what, tf.value) : undefined;
  if (token !== undefined && tokenFile !== undefined) {
    throw new FlagError(`set either ${TOKEN_ENV} or ${tf!.what}, not both`);
  }

  const ef = get("env-file");
  const envFile = ef && ef.value.trim() !== "" ? requireAbsolute(ef.what, ef.value) : undefined;

  const sc = get("session-cgroup")!;
  const sessionCgroup = sc.value.trim() === "none"
    ? undefined
    : requireAbsolute(sc.what, sc.value.trim() === "" ? DEFAULT_SESSION_CGROUP : sc.value);
  if (sessionCgroup !== undefined && (sessionCgroup === "/" || sessionCgroup.endsWith("/"))) {
    throw new FlagError(
      `${sc.what} must name a directory below a cgroup2 mount, not "${sc.value}"`,
    );
  }

  const lv = get("log-level")!;
  let logLevel: LogLevel;
  try {
    // An empty value (a launcher script's unset variable) means the default.
    logLevel = lv.value.trim() === "" ? "info" : parseLogLevel(lv.value);
  } catch (err) {
    throw new FlagError(`${lv.what}: ${(err as Error).message}`);
  }
  const logFormat = get("log-format")!.value as LogFormat;

  return {
    kind: "run",
    config: {
      sandboxId: id.value,
      endpoint,
      scheme,
      host,
      port,
      socketPath,
      sshd,
      hostKeyPath,
      tls,
      token,
      tokenFile,
      envFile,
      sessionCgroup,
      logLevel,
      logFormat,
    },
  };
}

/** The directory holding the socket (and the supervisor's private sshd files). */
export function socketDirOf(socketPath: string): string {
  return socketPath.slice(0, socketPath.lastIndexOf("/"));
}

/** Files outside the socket dir the supervisor reads with `config` (for its read grant). */
export function filesRead(config: SupervisorConfig): string[] {
  return [
    ...(config.hostKeyPath ? [config.hostKeyPath] : []),
    ...(config.tokenFile ? [config.tokenFile] : []),
    ...(config.envFile ? [config.envFile] : []),
    ...(config.tls ? [config.tls.ca, config.tls.cert, config.tls.key] : []),
  ].filter((f): f is string => f !== undefined);
}

/** Files outside the socket dir the supervisor may create (a missing host key file). */
export function filesWritten(config: SupervisorConfig): string[] {
  return config.hostKeyPath ? [config.hostKeyPath] : [];
}
