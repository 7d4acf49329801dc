/**
 * The egress proxy's configuration: flags, each with an `OPENSHELL_*` twin
 * (a flag wins), checked completely before anything starts. Pure:
 * arguments and an environment lookup in, a config or a one-line error out.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { type LogLevel, parseLogLevel } from "../core/log.ts";

/** Open guest connections per sandbox at most. */
export const DEFAULT_MAX_PER_SANDBOX = 64;
/** Open guest connections in all at most. */
export const DEFAULT_MAX_TOTAL = 1024;
/** A connection with no traffic either way for this long is closed. */
export const DEFAULT_IDLE_SECS = 300;
/** Events per second per sandbox before they are dropped (and counted). */
export const DEFAULT_EVENTS_PER_SEC = 100;

/** A validated egress configuration. */
export interface EgressConfig {
  /** State dir: `guest.sock`, `control.sock`, grpc-js's internal socket. */
  stateDir: string;
  logLevel: LogLevel;
  maxPerSandbox: number;
  maxTotal: number;
  idleSecs: number;
  eventsPerSec: number;
}

/** What {@link parseEgressConfig} returns. */
export type ParsedEgressCommand =
  | { kind: "run"; config: EgressConfig }
  | { kind: "help" }
  | { kind: "version" };

/** A bad flag or value. */
export class EgressConfigError extends Error {
  /** Creates the error with its one-line message. */
  constructor(message: string) {
    super(message);
    this.name = "EgressConfigError";
  }
}

interface Opt {
  flag: string;
  env?: string;
  boolean?: boolean;
  help: string;
}

const OPTIONS: readonly Opt[] = [
  { flag: "state-dir", env: "OPENSHELL_EGRESS_STATE_DIR", help: "state dir (required)" },
  { flag: "log-level", env: "OPENSHELL_LOG_LEVEL", help: "error, warn, info (default), debug" },
  {
    flag: "max-connections-per-sandbox",
    env: "OPENSHELL_EGRESS_MAX_CONNECTIONS_PER_SANDBOX",
    help: `open guest connections per sandbox (default ${DEFAULT_MAX_PER_SANDBOX})`,
  },
  {
    flag: "max-connections",
    env: "OPENSHELL_EGRESS_MAX_CONNECTIONS",
    help: `open guest connections in all (default ${DEFAULT_MAX_TOTAL})`,
  },
  {
    flag: "idle-timeout-secs",
    env: "OPENSHELL_EGRESS_IDLE_TIMEOUT_SECS",
    help: `close a connection idle this long (default ${DEFAULT_IDLE_SECS})`,
  },
  {
    flag: "events-per-sec",
    env: "OPENSHELL_EGRESS_EVENTS_PER_SEC",
    help: `connection events per sandbox per second (default ${DEFAULT_EVENTS_PER_SEC})`,
  },
  { flag: "help", boolean: true, help: "print this help" },
  { flag: "version", boolean: true, help: "print the version" },
];

/** The `--help` text. */
export function egressUsage(): string {
  return [
    "openshell-egress: the sandboxes' egress proxy (HTTP CONNECT/forward proxy and DNS over TCP),",
    "enforcing each sandbox's network policy. The gateway starts it; the VM driver carries",
    "guest connections to <state-dir>/guest.sock and the gateway controls it over",
    "<state-dir>/control.sock (openshell.egress.v1.EgressProxy).",
    "",
    "Usage: openshell-egress --state-dir DIR [options]",
    "",
    ...OPTIONS.map((o) => {
      const name = o.boolean ? `--${o.flag}` : `--${o.flag} VALUE`;
      return `  ${name.padEnd(40)}${o.help}${o.env ? ` [${o.env}]` : ""}`;
    }),
  ].join("\n");
}

/** Longest state dir: its sockets must fit a Unix socket path (103 bytes). */
export const MAX_STATE_DIR_BYTES = 103 - "/control.sock".length;

function integer(what: string, value: string, min: number, max: number): number {
  if (!/^\d{1,9}$/.test(value.trim())) {
    throw new EgressConfigError(`${what} must be a whole number, not "${value}"`);
  }
  const n = Number(value.trim());
  if (n < min || n > max) throw new EgressConfigError(`${what} must be ${min}..${max}, not ${n}`);
  return n;
}

/** Parses flags and their environment twins. */
export function parseEgressConfig(
  args: readonly string[],
  env: (name: string) => string | undefined,
): ParsedEgressCommand {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: [...args],
      strict: true,
      allowPositionals: false,
      options: Object.fromEntries(
        OPTIONS.map((o) => [o.flag, { type: o.boolean ? "boolean" : "string" }] as const),
      ),
    }).values as Record<string, string | boolean | undefined>;
  } catch (err) {
    throw new EgressConfigError(`${(err as Error).message} (see --help)`);
  }
  if (values.help) return { kind: "help" };
  if (values.version) return { kind: "version" };
  const get = (flag: string): { what: string; value: string } | undefined => {
    const opt = OPTIONS.find((o) => o.flag === flag)!;
    const v = values[flag];
    if (typeof v === "string") return { what: `--${flag}`, value: v };
    const e = opt.env ? env(opt.env) : undefined;
    return e !== undefined && e !== "" ? { what: opt.env!, value: e } : undefined;
  };
  const state = get("state-dir");
  if (!state) throw new EgressConfigError("--state-dir is required (see --help)");
  if (!state.value.startsWith("/")) {
    throw new EgressConfigError(`${state.what} must be an absolute path: "${state.value}"`);
  }
  if (/[\0\n\r,]/.test(state.value)) {
    throw new EgressConfigError(`${state.what} must not contain commas or control characters`);
  }
  const stateDir = state.value.length > 1 ? state.value.replace(/\/+$/, "") : state.value;
  if (new TextEncoder().encode(stateDir).length > MAX_STATE_DIR_BYTES) {
    throw new EgressConfigError(
      `${state.what} is too long for its Unix sockets (at most ${MAX_STATE_DIR_BYTES} bytes)`,
    );
  }
  const num = (flag: string, def: number, min: number, max: number) => {
    const v = get(flag);
    return v ? integer(v.what, v.value, min, max) : def;
  };
  let logLevel: LogLevel = "info";
  const level = get("log-level");
  if (level) {
    try {
      logLevel = parseLogLevel(level.value);
    } catch (err) {
      throw new EgressConfigError(`${level.what}: ${(err as Error).message}`);
    }
  }
  const maxTotal = num("max-connections", DEFAULT_MAX_TOTAL, 1, 65536);
  const maxPerSandbox = num("max-connections-per-sandbox", DEFAULT_MAX_PER_SANDBOX, 1, 65536);
  return {
    kind: "run",
    config: {
      stateDir,
      logLevel,
      maxTotal,
      maxPerSandbox: Math.min(maxPerSandbox, maxTotal),
      idleSecs: num("idle-timeout-secs", DEFAULT_IDLE_SECS, 1, 86400),
      eventsPerSec: num("events-per-sec", DEFAULT_EVENTS_PER_SEC, 1, 100000),
    },
  };
}

/** The guest socket the VM driver connects to. */
export function guestSocketPath(stateDir: string): string {
  return `${stateDir}/guest.sock`;
}

/** The control socket the gateway connects to. */
export function controlSocketPath(stateDir: string): string {
  return `${stateDir}/control.sock`;
}

/** grpc-js's internal socket behind the control socket's GOAWAY filter. */
export function innerSocketPath(stateDir: string): string {
  return `${stateDir}/grpc.sock`;
}
