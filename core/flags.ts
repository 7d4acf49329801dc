/**
 * The one options layer of every role (gateway, VM driver, supervisor, CLI):
 * each option is declared once in a table — kind, default, choices, bounds,
 * repeatable, its `OPENSHELL_*` environment twin, help text, secret — then
 * parsed from argv and the environment (an option on the command line wins
 * over its env twin, which wins over the default), validated into typed
 * values, and rendered as `--help` in one layout.
 *
 * Every mistake is a {@link FlagError}: one line naming the option (or its
 * env twin) and what it takes.
 *
 * Values two roles take (VM size, log level, the gateway's endpoint, …) are
 * declared once in `core/shared_flags.ts` and reused, so both roles apply
 * the same rule.
 *
 * @module
 */
import { truncateForEcho } from "./text.ts";

/**
 * Kinds of option values:
 * - `string`: any text; `path`: an absolute path (a trailing `/` dropped);
 * - `int`: a whole number; `bool`: no value on the command line (`--no-X` is false);
 * - `choice`: one of `choices` (any case); `list`: comma-separated words;
 * - `duration`: seconds, or with a unit (`90s`, `10m`, `1h`, `2d`); the value is seconds;
 * - `size`: a number of `unit`s, or a quantity (`512Mi`, `2Gi`); the value is in `unit`s.
 */
export type FlagKind =
  | "string"
  | "path"
  | "int"
  | "bool"
  | "choice"
  | "list"
  | "duration"
  | "size";

/** Units of a `size` option: a plain number counts these, and so does its value. */
export type SizeUnit = "B" | "KiB" | "MiB" | "GiB";

/** A parsed value. */
export type FlagValue = string | number | boolean | string[] | number[];

/** One option. */
export interface FlagSpec {
  /** What it takes. */
  kind: FlagKind;
  /** What it does (one sentence, for `--help`). */
  help: string;
  /** Environment twin, e.g. `OPENSHELL_SERVER_PORT`. */
  env?: string;
  /** Value when neither the option nor its env twin is given (in `unit`s / seconds). */
  default?: string | number | boolean | readonly string[];
  /** Must be given (on the command line or in its env twin). */
  required?: boolean;
  /** Allowed values of a `choice`, or of each word of a `list`. */
  choices?: readonly string[];
  /** Smallest value of an `int`, `size` (in `unit`s) or `duration` (seconds). */
  min?: number;
  /** Largest value of an `int`, `size` (in `unit`s) or `duration` (seconds). */
  max?: number;
  /** Unit of a `size` (default bytes). */
  unit?: SizeUnit;
  /** May be given several times; the value is the list of them (a `list` joins its words). */
  repeatable?: boolean;
  /** One-letter alias (`-n`). */
  short?: string;
  /** Name of the value in help (`PORT`, `DIR`); a default follows from the kind. */
  value?: string;
  /** Never echoed back (errors, help's default): tokens, passwords. */
  secret?: boolean;
  /** Refused on the command line (where `ps` shows it): read from the env twin only. */
  envOnly?: boolean;
  /** A `bool` that answers and exits (`--version`): given, required options may be missing. */
  action?: boolean;
  /** Left out of help (compatibility spellings). */
  hidden?: boolean;
  /** A further rule: returns what is wrong with a converted value ("must …"), or undefined. */
  check?(value: string | number): string | undefined;
}

/** Every option of a command, by long name (without dashes), in help order. */
export type FlagTable = Readonly<Record<string, FlagSpec>>;

type Scalar<S> = S extends { kind: "int" | "duration" | "size" } ? number
  : S extends { kind: "bool" } ? boolean
  : S extends { kind: "list" } ? string[]
  : string;
type Value<S> = S extends { repeatable: true }
  ? (S extends { kind: "list" } ? string[] : Scalar<S>[])
  : Scalar<S>;
type AlwaysSet =
  | { kind: "bool" | "list" }
  | { repeatable: true }
  | { default: string | number | boolean | readonly string[] }
  | { required: true };

/** Typed values of a table: an option without default or requirement may be undefined. */
export type FlagValues<T extends FlagTable> = {
  -readonly [K in keyof T]: T[K] extends AlwaysSet ? Value<T[K]> : Value<T[K]> | undefined;
};

/** Where a value came from. */
export type FlagSource = "argv" | "env" | "default";

/** A bad option, value or argument. Its message is one line meant for the user. */
export class FlagError extends Error {
  /** Index in argv of the word at fault (absent for env twins and missing options). */
  readonly index?: number;

  /** Creates the error with its one-line message. */
  constructor(message: string, index?: number) {
    super(message);
    this.name = "FlagError";
    if (index !== undefined) this.index = index;
  }
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

/** An environment without variables (tests, and parsing without env twins). */
export const NO_ENV: EnvReader = (): undefined => undefined;

/** `-h, --help`, added to every table that does not declare it. */
export const HELP_FLAG: FlagSpec = { kind: "bool", short: "h", help: "Show this help" };

function withHelp(table: FlagTable): FlagTable {
  return table.help ? table : { ...table, help: HELP_FLAG };
}

/** The environment variables a table reads. */
export function envTwins(table: FlagTable): string[] {
  return Object.values(table).flatMap((s) => (s.env ? [s.env] : []));
}

// ---------------------------------------------------------------------------------------------
// Words → tokens

/** One word (or one letter of a short group) of argv. */
export type FlagToken =
  | {
    kind: "option";
    /** Long name of the option. */
    name: string;
    /** As written: `--port`, `-p`, `--no-tls`. */
    raw: string;
    /** Its value (inline after `=`, the rest of a short group, or the next word). */
    value?: string;
    /** Whether the value was written inline (`--x=v`). */
    inline?: boolean;
    /** `--no-X` of a bool. */
    negated?: boolean;
    /** Index in argv. */
    index: number;
  }
  | { kind: "unknown"; raw: string; index: number }
  | { kind: "positional"; value: string; index: number }
  | { kind: "terminator"; index: number };

function shortOf(table: FlagTable, letter: string): string | undefined {
  return Object.keys(table).find((n) => table[n].short === letter);
}

function isKnownOption(table: FlagTable, word: string): boolean {
  if (word === "--") return true;
  if (word.startsWith("--")) {
    const name = word.slice(2).split("=")[0];
    return name in table || (name.startsWith("no-") && table[name.slice(3)]?.kind === "bool");
  }
  return /^-[A-Za-z]/.test(word) && shortOf(table, word[1]) !== undefined;
}

/**
 * Splits argv into tokens against `table` (`-h/--help` added): options with
 * their values, unknown options, positionals, and `--` (after which nothing
 * is tokenized). Never throws: {@link tokenProblem} says what is wrong with
 * a token.
 */
export function tokenize(table: FlagTable, argv: readonly string[]): FlagToken[] {
  const t = withHelp(table);
  const tokens: FlagToken[] = [];
  const takesValue = (name: string) => t[name].kind !== "bool";
  // The next word is an option's value unless it is missing or clearly another option.
  const next = (i: number) =>
    i + 1 < argv.length && !isKnownOption(t, argv[i + 1]) ? argv[i + 1] : undefined;
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i];
    if (word === "--") {
      tokens.push({ kind: "terminator", index: i });
      break;
    }
    if (word.startsWith("--")) {
      const eq = word.indexOf("=");
      const name = eq < 0 ? word.slice(2) : word.slice(2, eq);
      const raw = `--${name}`;
      const inline = eq < 0 ? undefined : word.slice(eq + 1);
      if (name in t) {
        if (inline !== undefined) {
          tokens.push({ kind: "option", name, raw, value: inline, inline: true, index: i });
        } else if (takesValue(name)) {
          const value = next(i);
          tokens.push({
            kind: "option",
            name,
            raw,
            index: i,
            ...(value !== undefined ? { value } : {}),
          });
          if (value !== undefined) i++;
        } else tokens.push({ kind: "option", name, raw, index: i });
      } else if (name.startsWith("no-") && t[name.slice(3)]?.kind === "bool") {
        tokens.push({
          kind: "option",
          name: name.slice(3),
          raw,
          negated: true,
          index: i,
          ...(inline !== undefined ? { value: inline, inline: true } : {}),
        });
      } else tokens.push({ kind: "unknown", raw, index: i });
      continue;
    }
    if (word.startsWith("-") && word.length > 1) {
      for (let j = 1; j < word.length; j++) {
        const name = shortOf(t, word[j]);
        const raw = `-${word[j]}`;
        if (name === undefined) {
          tokens.push({ kind: "unknown", raw, index: i });
          break;
        }
        if (!takesValue(name)) {
          tokens.push({ kind: "option", name, raw, index: i });
          continue;
        }
        const rest = word.slice(j + 1);
        const value = rest !== "" ? rest : next(i);
        tokens.push({
          kind: "option",
          name,
          raw,
          index: i,
          ...(value !== undefined ? { value } : {}),
        });
        if (rest === "" && value !== undefined) i++;
        break;
      }
      continue;
    }
    tokens.push({ kind: "positional", value: word, index: i });
  }
  return tokens;
}

/** Long names of `table` within two edits of `name` (for "did you mean"). */
function nearest(table: FlagTable, name: string): string | undefined {
  const distance = (a: string, b: string): number => {
    let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
    for (let i = 1; i <= a.length; i++) {
      const cur = [i];
      for (let j = 1; j <= b.length; j++) {
        cur[j] = Math.min(
          prev[j] + 1,
          cur[j - 1] + 1,
          prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1),
        );
      }
      prev = cur;
    }
    return prev[b.length];
  };
  const visible = Object.keys(table).filter((n) => !table[n].hidden);
  return visible.find((n) => n.startsWith(name) && name.length >= 3) ??
    visible.find((n) => distance(n, name) <= 2);
}

/**
 * What is wrong with a token by itself: an unknown option, an option
 * without its value, a value given to a `bool`. Undefined when nothing is.
 */
export function tokenProblem(table: FlagTable, token: FlagToken): string | undefined {
  if (token.kind === "unknown") {
    const guess = token.raw.startsWith("--") ? nearest(table, token.raw.slice(2)) : undefined;
    return `unknown option ${token.raw}${guess ? ` (did you mean --${guess}?)` : ""}`;
  }
  if (token.kind !== "option") return undefined;
  const spec = withHelp(table)[token.name];
  if (spec.kind === "bool") {
    return token.inline ? `${token.raw} takes no value` : undefined;
  }
  if (token.value === undefined) return `${token.raw} needs a value`;
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Tokens + environment → values

const SIZE_UNITS: Readonly<Record<SizeUnit, number>> = {
  B: 1,
  KiB: 2 ** 10,
  MiB: 2 ** 20,
  GiB: 2 ** 30,
};
const SIZE_SUFFIXES: Readonly<Record<string, number>> = {
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
};
const DURATION_UNITS: Readonly<Record<string, number>> = { s: 1, m: 60, h: 3600, d: 86400 };

function shown(spec: FlagSpec, raw: string): string {
  return spec.secret ? "" : `, got ${JSON.stringify(truncateForEcho(raw, 80))}`;
}

function unitOf(spec: FlagSpec): string {
  if (spec.kind === "size") return ` ${spec.unit ?? "B"}`;
  if (spec.kind === "duration") return " seconds";
  return "";
}

function bounded(spec: FlagSpec, n: number, where: string): number {
  const unit = unitOf(spec);
  const { min, max } = spec;
  if ((min !== undefined && n < min) || (max !== undefined && n > max)) {
    const rule = min !== undefined && max !== undefined
      ? `between ${min} and ${max}${unit}`
      : min !== undefined
      ? `at least ${min}${unit}`
      : `at most ${max}${unit}`;
    throw new FlagError(`${where} must be ${rule}${spec.secret ? "" : `, got ${n}${unit}`}`);
  }
  return n;
}

function convert(spec: FlagSpec, raw: string, where: string): string | number | string[] {
  const text = raw.trim();
  switch (spec.kind) {
    case "int": {
      const n = /^-?\d{1,16}$/.test(text) ? Number(text) : NaN;
      if (!Number.isSafeInteger(n)) {
        throw new FlagError(`${where} must be a whole number${shown(spec, raw)}`);
      }
      return bounded(spec, n, where);
    }
    case "size": {
      const unit = spec.unit ?? "B";
      const m = /^(\d{1,16})(Ki|Mi|Gi|Ti)?$/.exec(text);
      const bytes = m ? Number(m[1]) * (m[2] ? SIZE_SUFFIXES[m[2]] : SIZE_UNITS[unit]) : NaN;
      if (!Number.isSafeInteger(bytes) || bytes % SIZE_UNITS[unit] !== 0) {
        throw new FlagError(
          `${where} must be a whole number of ${unit} (or a size such as 512Mi, 2Gi)${
            shown(spec, raw)
          }`,
        );
      }
      return bounded(spec, bytes / SIZE_UNITS[unit], where);
    }
    case "duration": {
      const m = /^(\d{1,9})([smhd]?)$/.exec(text);
      if (!m) {
        throw new FlagError(
          `${where} must be seconds or a duration such as 90s, 10m, 1h, 2d${shown(spec, raw)}`,
        );
      }
      return bounded(spec, Number(m[1]) * DURATION_UNITS[m[2] || "s"], where);
    }
    case "choice": {
      const found = spec.choices?.find((c) => c.toLowerCase() === text.toLowerCase());
      if (found === undefined) {
        throw new FlagError(
          `${where} must be one of ${(spec.choices ?? []).join(", ")}${shown(spec, raw)}`,
        );
      }
      return found;
    }
    case "list": {
      const words = raw.split(",").map((w) => w.trim()).filter((w) => w !== "");
      for (const w of words) {
        if (spec.choices && !spec.choices.includes(w)) {
          throw new FlagError(
            `${where} must be one of ${spec.choices.join(", ")}${shown(spec, w)}`,
          );
        }
      }
      return words;
    }
    case "path": {
      if (!raw.startsWith("/")) {
        throw new FlagError(`${where} must be an absolute path${shown(spec, raw)}`);
      }
      // deno-lint-ignore no-control-regex
      if (/[\x00-\x1f\x7f]/.test(raw)) {
        throw new FlagError(`${where} must not contain control characters`);
      }
      return raw.length > 1 ? raw.replace(/\/+$/, "") || "/" : raw;
    }
    default:
      return raw;
  }
}

function envBool(spec: FlagSpec, raw: string, where: string): boolean {
  const v = raw.trim().toLowerCase();
  if (["1", "true", "yes", "on"].includes(v)) return true;
  if (["0", "false", "no", "off"].includes(v)) return false;
  throw new FlagError(`${where} must be true or false${shown(spec, raw)}`);
}

function checked<V extends string | number | string[]>(spec: FlagSpec, value: V, where: string): V {
  if (!spec.check) return value;
  for (const item of Array.isArray(value) ? value : [value]) {
    const problem = spec.check(item);
    if (problem !== undefined) throw new FlagError(`${where} ${problem}`);
  }
  return value;
}

/** Result of {@link resolveFlags}. */
export interface ResolvedFlags<T extends FlagTable> {
  /** Typed values by long name. */
  values: FlagValues<T>;
  /** Where each value came from. */
  from: Record<keyof T, FlagSource>;
  /** Whether `-h`/`--help` was given. */
  help: boolean;
}

/**
 * Values of `table` from `tokens` (see {@link tokenize}; their problems
 * already reported), then env twins, then defaults; validated. An empty
 * value (a launcher's unset variable) counts as not given.
 */
export function resolveFlags<T extends FlagTable>(
  table: T,
  tokens: readonly FlagToken[],
  env: EnvReader,
): ResolvedFlags<T> {
  const given = new Map<string, Extract<FlagToken, { kind: "option" }>[]>();
  for (const token of tokens) {
    if (token.kind !== "option") continue;
    given.set(token.name, [...(given.get(token.name) ?? []), token]);
  }
  const help = (given.get("help") ?? []).some((t) => !t.negated);
  const acting = help ||
    Object.keys(table).some((n) => table[n].action && given.get(n)?.some((t) => !t.negated));
  const values: Record<string, unknown> = {};
  const from: Record<string, FlagSource> = {};
  for (const [name, spec] of Object.entries(table)) {
    const many = spec.repeatable === true;
    const onArgv = (given.get(name) ?? []).filter((t) => spec.kind === "bool" || t.value?.trim());
    if (onArgv.length > 0 && spec.envOnly) {
      throw new FlagError(
        `${onArgv[0].raw} is not accepted on the command line, where every user can read it ` +
          `(ps): set ${spec.env ?? "its environment variable"} instead`,
        onArgv[0].index,
      );
    }
    if (onArgv.length > 0) {
      from[name] = "argv";
      if (spec.kind === "bool") {
        values[name] = !onArgv[onArgv.length - 1].negated;
        continue;
      }
      const converted = (many ? onArgv : onArgv.slice(-1)).map((t) =>
        checked(spec, convert(spec, t.value!, `--${name}`), `--${name}`)
      );
      values[name] = many ? (spec.kind === "list" ? converted.flat() : converted) : converted[0];
      continue;
    }
    const fromEnv = spec.env ? env(spec.env) : undefined;
    if (fromEnv !== undefined && fromEnv.trim() !== "") {
      from[name] = "env";
      const where = `${spec.env} (--${name})`;
      if (spec.kind === "bool") values[name] = envBool(spec, fromEnv, where);
      else {
        const v = checked(spec, convert(spec, fromEnv, where), where);
        values[name] = many && spec.kind !== "list" ? [v] : v;
      }
      continue;
    }
    if (spec.required && !acting) {
      throw new FlagError(`--${name}${spec.env ? ` (or ${spec.env})` : ""} is required`);
    }
    from[name] = "default";
    values[name] = spec.default !== undefined
      ? (Array.isArray(spec.default) ? [...spec.default] : spec.default)
      : spec.kind === "bool"
      ? false
      : spec.kind === "list" || many
      ? []
      : undefined;
  }
  return { values: values as FlagValues<T>, from: from as Record<keyof T, FlagSource>, help };
}

/**
 * How the user gave an option, for a message: its env twin when the value
 * came from there, else `--name`.
 */
export function givenAs<T extends FlagTable>(
  table: T,
  from: Record<keyof T, FlagSource>,
  name: keyof T & string,
): string {
  return from[name] === "env" && table[name].env ? table[name].env! : `--${name}`;
}

/** Result of {@link parseFlags}. */
export interface ParsedFlags<T extends FlagTable> extends ResolvedFlags<T> {
  /** Words that are not options, and every word after `--`. */
  positionals: string[];
}

/**
 * Parses `argv` against `table`: options, then env twins, then defaults.
 * Throws a {@link FlagError} for an unknown option, a missing or bad value,
 * or a missing required option; with `--help` only unknown options are
 * reported, so help always shows.
 */
export function parseFlags<T extends FlagTable>(
  table: T,
  argv: readonly string[],
  env: EnvReader = denoEnv,
): ParsedFlags<T> {
  const tokens = tokenize(table, argv);
  const positionals: string[] = [];
  for (const token of tokens) {
    const problem = tokenProblem(table, token);
    if (problem) throw new FlagError(`${problem} (see --help)`, token.index);
    if (token.kind === "positional") positionals.push(token.value);
    if (token.kind === "terminator") positionals.push(...argv.slice(token.index + 1));
  }
  const wantsHelp = tokens.some((t) => t.kind === "option" && t.name === "help" && !t.negated);
  if (wantsHelp && !table.help) {
    return {
      values: {} as FlagValues<T>,
      from: {} as Record<keyof T, FlagSource>,
      help: true,
      positionals,
    };
  }
  return { ...resolveFlags(table, tokens, env), positionals };
}

/** Throws the usual error for the first positional when a command takes none. */
export function noPositionals(positionals: readonly string[]): void {
  if (positionals.length > 0) {
    throw new FlagError(`unexpected argument ${JSON.stringify(positionals[0])} (see --help)`);
  }
}
