/**
 * The private configuration of the sandbox's OpenSSH daemon.
 *
 * sshd runs in inetd mode (`sshd -i`), one process per connection accepted
 * on the supervisor's Unix socket. Only root can reach that socket (its
 * directory is 0700), so the one login it allows — the `sandbox` user — needs
 * no password: OpenSSH accepts the "none" method when `PermitEmptyPasswords`
 * and `PasswordAuthentication` are on and the account's password is empty.
 * Public keys work too, for users who install their own. Checked against
 * Debian's OpenSSH 9.2 with `sshd -t`.
 *
 * @module
 */
import type { LogLevel } from "../core/log.ts";

/** The account every SSH session logs in as. */
export const SANDBOX_USER = "sandbox";

/** Options of {@link renderSshdConfig}. */
export interface SshdConfigOptions {
  /** Absolute path of the host private key file (mode 0600). */
  hostKeyPath: string;
  /** The one account allowed to log in; default {@link SANDBOX_USER}. */
  user?: string;
  /** The supervisor's log level, mapped to sshd's `LogLevel`. */
  logLevel?: LogLevel;
  /** The sandbox's environment, set for every session (`SetEnv`). */
  environment?: Readonly<Record<string, string>>;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * One `SetEnv` argument: `"NAME=value"` with `\` and `"` escaped the way
 * sshd's config parser reads them. Throws for a bad name or a control
 * character in the value.
 */
export function setEnvArgument(name: string, value: string): string {
  if (!ENV_NAME.test(name)) {
    throw new Error(`invalid environment variable name: ${JSON.stringify(name)}`);
  }
  if ([...value].some((ch) => ch.charCodeAt(0) < 0x20 || ch === "\x7f")) {
    throw new Error(`environment value of ${name} contains a control character`);
  }
  return `"${name}=${value.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;
}

const SSHD_LOG_LEVEL: Readonly<Record<LogLevel, string>> = {
  error: "ERROR",
  warn: "ERROR",
  info: "INFO",
  debug: "DEBUG",
  trace: "DEBUG3",
};

function quoted(what: string, value: string): string {
  const unsafe = [...value].some((ch) => ch === '"' || ch.charCodeAt(0) < 0x20 || ch === "\x7f");
  if (unsafe) {
    throw new Error(`${what} contains a quote or control character: ${JSON.stringify(value)}`);
  }
  return /\s/.test(value) ? `"${value}"` : value;
}

/** Renders the sshd configuration file. Throws when a value cannot be written safely. */
export function renderSshdConfig(options: SshdConfigOptions): string {
  if (!options.hostKeyPath.startsWith("/")) {
    throw new Error(`host key path must be absolute: ${options.hostKeyPath}`);
  }
  const user = options.user ?? SANDBOX_USER;
  if (!/^[a-z_][a-z0-9_-]*$/.test(user)) throw new Error(`invalid user name: ${user}`);
  const lines: [string, string][] = [
    ["HostKey", quoted("host key path", options.hostKeyPath)],
    // Authentication: only `user`, with an empty password ("none") or a key.
    ["UsePAM", "no"],
    ["PermitEmptyPasswords", "yes"],
    ["PasswordAuthentication", "yes"],
    ["KbdInteractiveAuthentication", "no"],
    ["PubkeyAuthentication", "yes"],
    ["AllowUsers", user],
    ["PermitRootLogin", "no"],
    // The sandbox owns its files; do not refuse keys over home-dir modes.
    ["StrictModes", "no"],
    // What a session may do: PTYs, SFTP, local port forwarding; no X11, no agent.
    ["PermitTTY", "yes"],
    ["Subsystem", "sftp internal-sftp"],
    ["AllowTcpForwarding", "local"],
    ["AllowStreamLocalForwarding", "no"],
    ["AllowAgentForwarding", "no"],
    ["X11Forwarding", "no"],
    ["PermitTunnel", "no"],
    ["GatewayPorts", "no"],
    ["PermitUserEnvironment", "no"],
    ["PrintMotd", "no"],
    ["PrintLastLog", "no"],
    ["UseDNS", "no"],
    ["LogLevel", SSHD_LOG_LEVEL[options.logLevel ?? "info"]],
  ];
  // sshd honours only the first SetEnv line: every variable goes on one.
  const env = Object.keys(options.environment ?? {}).sort();
  if (env.length > 0) {
    lines.push(["SetEnv", env.map((k) => setEnvArgument(k, options.environment![k])).join(" ")]);
  }
  return [
    "# Written by openshell-sandbox for `sshd -i` on its private Unix socket.",
    ...lines.map(([k, v]) => `${k} ${v}`),
    "",
  ].join("\n");
}
