/**
 * The egress proxy's configuration: options, each with an `OPENSHELL_*`
 * twin (an option wins), declared in one table (`core/flags.ts`; the state
 * dir and log level shared through `core/shared_flags.ts`), checked
 * completely before anything starts. Pure: arguments and an environment
 * lookup in, a config or a one-line `FlagError` out.
 *
 * @module
 */
import { type EnvReader, type FlagTable, noPositionals, parseFlags } from "../core/flags.ts";
import { renderHelp } from "../core/flags_help.ts";
import type { LogLevel } from "../core/log.ts";
import { EGRESS_STATE_DIR, egressStateDirProblem, LOG_LEVEL } from "../core/shared_flags.ts";

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
  /** Least severe log level written. */
  logLevel: LogLevel;
  /** Open guest connections per sandbox at most (never more than {@link maxTotal}). */
  maxPerSandbox: number;
  /** Open guest connections in all at most. */
  maxTotal: number;
  /** Seconds a connection may pass no traffic either way. */
  idleSecs: number;
  /** Connection events per sandbox per second before they are dropped (and counted). */
  eventsPerSec: number;
}

/** What {@link parseEgressConfig} returns. */
export type ParsedEgressCommand =
  | { kind: "run"; config: EgressConfig }
  | { kind: "help" }
  | { kind: "version" };

/** Every option of the egress proxy (state dir and log level shared with the gateway). */
export const EGRESS_FLAGS = {
  "state-dir": {
    ...EGRESS_STATE_DIR,
    required: true,
    check: (dir: string | number) => egressStateDirProblem(String(dir)),
  },
  "log-level": LOG_LEVEL,
  "max-connections": {
    kind: "int",
    env: "OPENSHELL_EGRESS_MAX_CONNECTIONS",
    min: 1,
    max: 65536,
    default: DEFAULT_MAX_TOTAL,
    help: "Open guest connections in all at most",
  },
  "max-connections-per-sandbox": {
    kind: "int",
    env: "OPENSHELL_EGRESS_MAX_CONNECTIONS_PER_SANDBOX",
    min: 1,
    max: 65536,
    default: DEFAULT_MAX_PER_SANDBOX,
    help: "Open guest connections per sandbox at most (never more than --max-connections)",
  },
  "idle-timeout-secs": {
    kind: "duration",
    env: "OPENSHELL_EGRESS_IDLE_TIMEOUT_SECS",
    min: 1,
    max: 86400,
    default: DEFAULT_IDLE_SECS,
    help: "Close a connection that passed no traffic either way for this long",
  },
  "events-per-sec": {
    kind: "int",
    env: "OPENSHELL_EGRESS_EVENTS_PER_SEC",
    min: 1,
    max: 100000,
    default: DEFAULT_EVENTS_PER_SEC,
    help: "Connection events per sandbox per second; the rest are dropped and counted",
  },
  version: { kind: "bool", action: true, help: "Print the version" },
} satisfies FlagTable;

/** The `--help` text. */
export function egressUsage(): string {
  return renderHelp({
    about: "openshell-egress: the sandboxes' egress proxy (HTTP CONNECT/forward proxy and DNS " +
      "over TCP), enforcing each sandbox's network policy. The gateway starts it; the VM driver " +
      "carries guest connections to <state-dir>/guest.sock and the gateway controls it over " +
      "<state-dir>/control.sock (openshell.egress.v1.EgressProxy).",
    usage: "openshell-egress --state-dir DIR [OPTIONS]",
    sections: [{ title: "Options", flags: EGRESS_FLAGS, help: true }],
  });
}

/**
 * Parses the egress proxy's arguments and environment (an option wins over
 * its environment twin). Throws `FlagError` with a one-line message for
 * anything missing or malformed.
 */
export function parseEgressConfig(args: readonly string[], env: EnvReader): ParsedEgressCommand {
  const parsed = parseFlags(EGRESS_FLAGS, args, env);
  if (parsed.help) return { kind: "help" };
  if (parsed.values.version) return { kind: "version" };
  noPositionals(parsed.positionals);
  const v = parsed.values;
  const maxTotal = v["max-connections"];
  return {
    kind: "run",
    config: {
      stateDir: v["state-dir"],
      logLevel: v["log-level"] as LogLevel,
      maxTotal,
      maxPerSandbox: Math.min(v["max-connections-per-sandbox"], maxTotal),
      idleSecs: v["idle-timeout-secs"],
      eventsPerSec: v["events-per-sec"],
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
