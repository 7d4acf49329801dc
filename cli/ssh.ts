/**
 * OpenSSH client settings for reaching a sandbox through `ssh-proxy`: the
 * `-o` options of `sandbox create`/`connect`, the `Host` block of
 * `sandbox ssh-config`, and the ssh argv. Host keys are pinned, never
 * ignored: `HostKeyAlias openshell-<sandbox id>` in the CLI's own
 * known_hosts with `StrictHostKeyChecking accept-new`, while `ssh-proxy`
 * checks the key against the gateway's fingerprint before ssh sees it.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createHmac } from "node:crypto";
import { shellJoin } from "../core/shell.ts";
import { CliError } from "./errors.ts";

/** The user sshd logs in as inside a sandbox. */
export const SANDBOX_USER = "sandbox";

/** Seconds of silence from the sandbox after which ssh sends a keepalive probe. */
export const SERVER_ALIVE_INTERVAL_SECS = 10;
/** Unanswered probes ssh tolerates; it gives up on the next one. */
export const SERVER_ALIVE_COUNT_MAX = 3;

/**
 * Longest time (s) before ssh notices a sandbox that stopped answering:
 * OpenSSH disconnects on the (CountMax+1)-th unanswered probe, so after
 * (CountMax + 1) × Interval seconds of silence (40 s with 10 × 3).
 */
export function deadSandboxNoticeSecs(
  intervalSecs: number = SERVER_ALIVE_INTERVAL_SECS,
  countMax: number = SERVER_ALIVE_COUNT_MAX,
): number {
  return (countMax + 1) * intervalSecs;
}

/** What ssh needs to reach one sandbox. */
export interface SshAccess {
  /** Sandbox name (the `Host` alias is `openshell-<name>`). */
  sandboxName: string;
  /** Sandbox id (the host key alias is `openshell-<id>`). */
  sandboxId: string;
  /** argv of the ProxyCommand (`openshell ssh-proxy …`). */
  proxyCommand: readonly string[];
  /** The known_hosts file that remembers sandbox host keys. */
  knownHostsFile: string;
}

/** `openshell-<id>`: the name ssh remembers a sandbox's host key under (`HostKeyAlias`). */
export function hostKeyAlias(sandboxId: string): string {
  return `openshell-${sandboxId}`;
}

/** Whether a known_hosts host pattern field (`a,b` or `|1|salt|hash`) names `host`. */
function namesHost(field: string, host: string): boolean {
  return field.split(",").some((pattern) => {
    const hashed = /^\|1\|([^|]+)\|([^|]+)$/.exec(pattern);
    if (!hashed) return pattern === host;
    try {
      const salt = Buffer.from(hashed[1], "base64");
      return createHmac("sha1", salt).update(host).digest("base64") === hashed[2];
    } catch {
      return false;
    }
  });
}

/**
 * `known_hosts` text without the lines for `host` (plain, in a list, or
 * hashed as ssh's HashKnownHosts writes them; a `@marker` first field is
 * skipped); comments and other hosts' lines are kept as they are.
 */
export function withoutKnownHost(text: string, host: string): { text: string; removed: number } {
  let removed = 0;
  const kept = text.split("\n").filter((line) => {
    const fields = line.trim().split(/\s+/);
    const hosts = fields[0]?.startsWith("@") ? fields[1] : fields[0];
    if (!hosts || hosts.startsWith("#") || !namesHost(hosts, host)) return true;
    removed++;
    return false;
  });
  return { text: kept.join("\n"), removed };
}

/** `openshell-<name>`: the host name ssh-config defines. */
export function hostAlias(sandboxName: string): string {
  return `openshell-${sandboxName}`;
}

/** Checks a name or id before it goes into an ssh config. */
export function validateSshName(kind: string, value: string): string {
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(value)) {
    throw new CliError(`${kind} "${value}" cannot be used in an ssh config`);
  }
  return value;
}

/** The ProxyCommand line: shell-quoted argv with ssh's `%` tokens escaped. */
export function proxyCommandLine(argv: readonly string[]): string {
  return shellJoin(argv).replaceAll("%", "%%");
}

/** A path as an ssh_config value (`%` escaped, double-quoted when it has blanks). */
export function sshConfigPath(path: string): string {
  if (/["\n\r]/.test(path)) throw new CliError(`path "${path}" cannot be used in an ssh config`);
  const escaped = path.replaceAll("%", "%%");
  return /[\s#'\\]/.test(escaped) ? `"${escaped}"` : escaped;
}

/** The ssh settings as `[keyword, value]` pairs, in config order. */
export function sshSettings(access: SshAccess): [string, string][] {
  validateSshName("sandbox name", access.sandboxName);
  validateSshName("sandbox id", access.sandboxId);
  return [
    ["User", SANDBOX_USER],
    ["HostKeyAlias", hostKeyAlias(access.sandboxId)],
    ["UserKnownHostsFile", sshConfigPath(access.knownHostsFile)],
    ["GlobalKnownHostsFile", "/dev/null"],
    ["StrictHostKeyChecking", "accept-new"],
    ["ServerAliveInterval", String(SERVER_ALIVE_INTERVAL_SECS)],
    ["ServerAliveCountMax", String(SERVER_ALIVE_COUNT_MAX)],
    ["LogLevel", "ERROR"],
    ["ProxyCommand", proxyCommandLine(access.proxyCommand)],
  ];
}

/** `-o Keyword=value` arguments for the ssh command line. */
export function sshOptions(access: SshAccess): string[] {
  return sshSettings(access).flatMap(([k, v]) => ["-o", `${k}=${v}`]);
}

/** The `Host openshell-<name>` block printed by `sandbox ssh-config`. */
export function renderSshConfig(access: SshAccess): string {
  const lines = [`Host ${hostAlias(access.sandboxName)}`];
  for (const [k, v] of sshSettings(access)) lines.push(`    ${k} ${v}`);
  return lines.join("\n") + "\n";
}

/** Options of {@link sshArgs}. */
export interface SshArgsOptions {
  /** argv to run remotely; none = a login shell. */
  command?: readonly string[];
  /** Ask for a pseudo-terminal (`-t`), else `-T`. */
  tty: boolean;
}

/** The full argument list of `ssh` (without the program name). */
export function sshArgs(access: SshAccess, options: SshArgsOptions): string[] {
  const args = [...sshOptions(access), options.tty ? "-t" : "-T", hostAlias(access.sandboxName)];
  if (options.command?.length) args.push("--", shellJoin(options.command));
  return args;
}
