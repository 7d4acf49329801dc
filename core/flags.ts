/**
 * Command-line flags with `OPENSHELL_*` environment twins, typed values,
 * validation with one-line messages, and `--help` text.
 *
 * Precedence: a flag on the command line, then its environment variable,
 * then the default.
 *
 * @module
 */
import { parseArgs } from "node:util";

/** Kinds of flag values. */
export type FlagType = "string" | "boolean" | "integer";

/** One flag. */
export interface FlagSpec {
  /** Long name without dashes, e.g. `port`. */
  name: string;
  /** Value kind. */
  type: FlagType;
  /** What it does (one line, for `--help`). */
  description: string;
  /** Environment twin, e.g. `OPENSHELL_SERVER_PORT`. */
  env?: string;
  /** Value when neither the flag nor its env twin is set. */
  default?: string | number | boolean;
  /** Allowed values of a string flag. */
  choices?: readonly string[];
  /** Bounds of an integer flag. */
  min?: number;
  /** Upper bound of an integer flag. */
  max?: number;
  /** Name of the value in `--help` (e.g. `PORT`). */
  placeholder?: string;
  /** One-letter alias. */
  short?: string;
}

/** A parsed flag value. */
export type FlagValue = string | number | boolean | undefined;

/** A flag error: bad name, missing or bad value. Its message is meant for the user. */
export class FlagError extends Error {
  /** Creates an error with a user-facing message. */
  constructor(message: string) {
    super(message);
    this.name = "FlagError";
  }
}

/** Result of {@link parseFlags}. */
export interface ParsedFlags {
  /** Values by flag name (undefined when unset and without default). */
  values: Record<string, FlagValue>;
  /** Words that are not flags (after `--` too). */
  positionals: string[];
  /** Whether `--help`/`-h` was given. */
  help: boolean;
}

/** Reads an environment variable; `undefined` when unset or not readable. */
export type EnvReader = (name: string) => string | undefined;

/** An {@link EnvReader} over `Deno.env` that treats denied variables as unset. */
export function denoEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

function convert(spec: FlagSpec, raw: string | boolean, source: string): FlagValue {
  if (spec.type === "boolean") {
    if (typeof raw === "boolean") return raw;
    const v = raw.trim().toLowerCase();
    if (["1", "true", "yes", "on"].includes(v)) return true;
    if (["0", "false", "no", "off", ""].includes(v)) return false;
    throw new FlagError(`${source}: expected true or false, got "${raw}"`);
  }
  const text = String(raw);
  if (spec.type === "integer") {
    if (!/^-?\d+$/.test(text.trim())) {
      throw new FlagError(`${source}: expected a whole number, got "${text}"`);
    }
    const n = Number(text.trim());
    if (spec.min !== undefined && n < spec.min) {
      throw new FlagError(`${source}: must be at least ${spec.min}, got ${n}`);
    }
    if (spec.max !== undefined && n > spec.max) {
      throw new FlagError(`${source}: must be at most ${spec.max}, got ${n}`);
    }
    return n;
  }
  if (spec.choices && !spec.choices.includes(text)) {
    throw new FlagError(
      `${source}: expected one of ${spec.choices.join(", ")}, got "${text}"`,
    );
  }
  return text;
}

/** Parses `args` against `specs`, falling back to env twins and defaults. */
export function parseFlags(
  specs: readonly FlagSpec[],
  args: readonly string[],
  env: EnvReader = denoEnv,
): ParsedFlags {
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = {
    help: { type: "boolean", short: "h" },
  };
  for (const s of specs) {
    options[s.name] = { type: s.type === "boolean" ? "boolean" : "string" };
    if (s.short) options[s.name].short = s.short;
  }
  let parsed;
  try {
    parsed = parseArgs(
      {
        args: [...args],
        options,
        strict: true,
        allowPositionals: true,
        allowNegative: true,
      } as Parameters<typeof parseArgs>[0],
    );
  } catch (err) {
    throw new FlagError(cleanParseError((err as Error).message));
  }
  const raw = parsed.values as Record<string, string | boolean | undefined>;
  const values: Record<string, FlagValue> = {};
  for (const s of specs) {
    const fromArgs = raw[s.name];
    if (fromArgs !== undefined) {
      values[s.name] = convert(s, fromArgs, `--${s.name}`);
      continue;
    }
    const fromEnv = s.env ? env(s.env) : undefined;
    if (fromEnv !== undefined && fromEnv !== "") {
      values[s.name] = convert(s, fromEnv, `${s.env}`);
      continue;
    }
    values[s.name] = s.default;
  }
  return { values, positionals: parsed.positionals, help: raw.help === true };
}

function cleanParseError(message: string): string {
  const unknown = /Unknown option '([^']+)'/.exec(message);
  if (unknown) return `unknown flag ${unknown[1]} (see --help)`;
  const missing = /Option '([^']+?)(?: <value>)?' argument missing/.exec(message);
  if (missing) return `${missing[1].replace(/^-\w, /, "")} needs a value`;
  const kind = /Option '([^']+)' does not take an argument/.exec(message);
  if (kind) return `${kind[1].replace(/^-\w, /, "")} does not take a value`;
  return message.split("\n")[0];
}

/** `--help` text: a usage line, then one line per flag with its env twin and default. */
export function renderHelp(usage: string, specs: readonly FlagSpec[]): string {
  const rows = specs.map((s) => {
    const value = s.type === "boolean" ? "" : ` ${s.placeholder ?? s.type.toUpperCase()}`;
    const left = `${s.short ? `-${s.short}, ` : "    "}--${s.name}${value}`;
    const extras = [
      s.choices ? `one of ${s.choices.join("|")}` : "",
      s.env ? `env ${s.env}` : "",
      s.default !== undefined && s.default !== "" ? `default ${s.default}` : "",
    ].filter(Boolean).join("; ");
    return [left, `${s.description}${extras ? ` [${extras}]` : ""}`];
  });
  const width = Math.min(40, Math.max(...rows.map(([l]) => l.length), 10)) + 2;
  const lines = rows.map(([l, r]) =>
    l.length + 2 > width ? `  ${l}\n  ${" ".repeat(width)}${r}` : `  ${l.padEnd(width)}${r}`
  );
  return `${usage}\n\nFlags:\n${lines.join("\n")}\n  -h, --help${
    " ".repeat(Math.max(2, width - 8))
  }Show this help\n`;
}
