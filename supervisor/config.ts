/**
 * The supervisor's configuration: options with `OPENSHELL_*` environment
 * twins (one table, `core/flags.ts`; an option wins over its twin), checked
 * completely before anything starts.
 *
 * Pure: the caller hands in the arguments and a lookup of the environment,
 * so every rule here is tested without a process.
 *
 * @module
 */
import { EndpointError, parseGatewayUrl } from "../core/endpoint.ts";
import {
  type EnvReader,
  envTwins,
  FlagError,
  type FlagTable,
  givenAs,
  noPositionals,
  parseFlags,
} from "../core/flags.ts";
import { renderHelp } from "../core/flags_help.ts";
import { DEFAULT_SESSION_CGROUP, DEFAULT_SSH_SOCKET_PATH } from "../core/grants.ts";
import type { LogFormat, LogLevel } from "../core/log.ts";
import { LOG_FORMAT, LOG_LEVEL, MAX_SOCKET_PATH_BYTES } from "../core/shared_flags.ts";
import { truncateForEcho } from "../core/text.ts";

/** The OpenSSH daemon used when neither `--sshd` nor `OPENSHELL_SSHD` says otherwise. */
export const DEFAULT_SSHD = "/usr/sbin/sshd";

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

/** Environment variable carrying the token itself (no option: tokens stay off argv). */
export const TOKEN_ENV = "OPENSHELL_SUPERVISOR_TOKEN";

const SANDBOX_ID = /^[A-Za-z0-9._-]{1,128}$/;

function socketPathProblem(value: string | number): string | undefined {
  const path = String(value);
  if (!path.startsWith("/")) return `must be an absolute path, got ${JSON.stringify(path)}`;
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x1f\x7f]/.test(path)) return "must not contain control characters";
  if (path.endsWith("/")) return "must name a file";
  if (socketDirOf(path) === "") return `must not live directly in "/" (its directory is owned)`;
  if (new TextEncoder().encode(path).length > MAX_SOCKET_PATH_BYTES) {
    return `is longer than ${MAX_SOCKET_PATH_BYTES} bytes (Unix socket path limit)`;
  }
  return undefined;
}

function cgroupProblem(value: string | number): string | undefined {
  const dir = String(value).trim();
  if (dir === "none") return undefined;
  if (!dir.startsWith("/")) return `must be an absolute path or none, got ${JSON.stringify(dir)}`;
  if (dir === "/" || dir.endsWith("/")) {
    return `must name a directory below a cgroup2 mount, not ${JSON.stringify(dir)}`;
  }
  return undefined;
}

/** The supervisor's options (each with its environment twin). */
export const FLAGS = {
  "sandbox-id": {
    kind: "string",
    required: true,
    env: "OPENSHELL_SANDBOX_ID",
    value: "ID",
    help: "Sandbox this supervisor serves",
    check: (id: string | number) =>
      SANDBOX_ID.test(String(id))
        ? undefined
        : `must be 1-128 characters of letters, digits, ".", "_" or "-", got ${
          JSON.stringify(truncateForEcho(String(id), 140))
        }`,
  },
  "openshell-endpoint": {
    kind: "string",
    required: true,
    env: "OPENSHELL_ENDPOINT",
    value: "URL",
    help: "Gateway URL (its supervisor plane), http://HOST:PORT or https://HOST:PORT",
    check: (url: string | number) => {
      try {
        parseGatewayUrl(String(url));
        return undefined;
      } catch (err) {
        if (err instanceof EndpointError) return err.message;
        throw err;
      }
    },
  },
  "ssh-socket-path": {
    kind: "string",
    env: "OPENSHELL_SSH_SOCKET_PATH",
    value: "PATH",
    default: DEFAULT_SSH_SOCKET_PATH,
    help: "sshd Unix socket; its directory belongs to the supervisor",
    check: socketPathProblem,
  },
  sshd: {
    kind: "path",
    env: "OPENSHELL_SSHD",
    default: DEFAULT_SSHD,
    help: "OpenSSH sshd binary",
  },
  "ssh-host-key": {
    kind: "path",
    env: "OPENSHELL_SSH_HOST_KEY",
    help: "OpenSSH private host key file (default: generate one at start)",
  },
  "tls-ca": {
    kind: "path",
    env: "OPENSHELL_TLS_CA",
    help: "CA bundle of the gateway (https:// only)",
  },
  "tls-cert": {
    kind: "path",
    env: "OPENSHELL_TLS_CERT",
    help: "Client certificate (https:// only)",
  },
  "tls-key": { kind: "path", env: "OPENSHELL_TLS_KEY", help: "Client private key (https:// only)" },
  "supervisor-token-file": {
    kind: "path",
    env: "OPENSHELL_SUPERVISOR_TOKEN_FILE",
    help: `File holding the supervisor token (or the token itself in ${TOKEN_ENV})`,
  },
  "supervisor-token": {
    kind: "string",
    env: TOKEN_ENV,
    envOnly: true,
    secret: true,
    value: "TOKEN",
    help: "The supervisor token (or a file holding it: --supervisor-token-file)",
  },
  "env-file": {
    kind: "path",
    env: "OPENSHELL_ENV_FILE",
    help: "JSON object of environment variables for every SSH session",
  },
  "session-cgroup": {
    kind: "string",
    env: "OPENSHELL_SESSION_CGROUP",
    value: "DIR",
    default: DEFAULT_SESSION_CGROUP,
    help: "cgroup v2 directory owned by this supervisor alone: one child per SSH " +
      "connection, killed when it ends; none = no containment",
    check: cgroupProblem,
  },
  "log-level": LOG_LEVEL,
  "log-format": LOG_FORMAT,
  version: { kind: "bool", action: true, help: "Print the version" },
} satisfies FlagTable;

/** Every environment variable the supervisor reads. */
export const CONFIG_ENV: readonly string[] = envTwins(FLAGS);

/** The `--help` text. */
export function usage(): string {
  return renderHelp({
    about: "openshell-sandbox: the supervisor inside a sandbox. It dials the gateway, keeps a " +
      "session, and relays SSH connections to a private sshd.",
    usage: "openshell-sandbox --sandbox-id ID --openshell-endpoint URL [OPTIONS]",
    sections: [{ title: "Options", flags: FLAGS, help: true }],
  });
}

/**
 * Parses the supervisor's arguments and environment (an option wins over its
 * environment twin). Throws `FlagError` with a one-line message for
 * anything missing or malformed.
 */
export function parseSupervisorConfig(args: readonly string[], env: EnvReader): ParsedCommand {
  const parsed = parseFlags(FLAGS, args, env);
  if (parsed.help) return { kind: "help" };
  if (parsed.values.version) return { kind: "version" };
  noPositionals(parsed.positionals);
  const v = parsed.values;
  const named = (name: keyof typeof FLAGS): string => givenAs(FLAGS, parsed.from, name);
  const { url: endpoint, scheme, host, port } = parseGatewayUrl(v["openshell-endpoint"]);

  let tls: TlsFiles | undefined;
  const [ca, cert, key] = [v["tls-ca"], v["tls-cert"], v["tls-key"]];
  if (scheme === "https") {
    if (!ca) {
      throw new FlagError(
        "an https:// endpoint needs --tls-ca (the CA of the gateway's supervisor plane)",
      );
    }
    if (!!cert !== !!key) {
      throw new FlagError("--tls-cert and --tls-key go together (or pass neither)");
    }
    tls = { ca, ...(cert && key ? { cert, key } : {}) };
  } else if (ca || cert || key) {
    const given = (["tls-ca", "tls-cert", "tls-key"] as const).filter((n) => v[n]).map(named);
    throw new FlagError(`${given.join(", ")} only apply to an https:// endpoint (got ${endpoint})`);
  }

  const token = v["supervisor-token"]?.trim() || undefined;
  const tokenFile = v["supervisor-token-file"];
  if (token !== undefined && tokenFile !== undefined) {
    throw new FlagError(`set either ${TOKEN_ENV} or ${named("supervisor-token-file")}, not both`);
  }
  const cgroup = v["session-cgroup"].trim();

  return {
    kind: "run",
    config: {
      sandboxId: v["sandbox-id"],
      endpoint,
      scheme,
      host,
      port,
      socketPath: v["ssh-socket-path"],
      sshd: v.sshd,
      hostKeyPath: v["ssh-host-key"],
      tls,
      token,
      tokenFile,
      envFile: v["env-file"],
      sessionCgroup: cgroup === "none" ? undefined : cgroup,
      logLevel: v["log-level"] as LogLevel,
      logFormat: v["log-format"] as LogFormat,
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
