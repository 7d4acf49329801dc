/**
 * A small structured logger shared by the roles: levels, text or JSON lines,
 * written to stderr (or any sink).
 *
 * @module
 */
import { codeName } from "./status.ts";
import { truncateForEcho } from "./text.ts";

/** Log levels, most severe first. */
export const LOG_LEVELS = ["error", "warn", "info", "debug", "trace"] as const;
/** One log level. */
export type LogLevel = typeof LOG_LEVELS[number];
/** Output formats. */
export type LogFormat = "text" | "json";

/** Longest field value written, in characters (longer ones are cut with a marker). */
export const MAX_FIELD_CHARS = 2048;

/** Extra key/value context on a line. */
export type LogFields = Record<string, string | number | boolean | undefined | null>;

/** Options of {@link Logger}. */
export interface LoggerOptions {
  /** Least severe level written; default `info`. */
  level?: LogLevel;
  /** Default `text`. */
  format?: LogFormat;
  /** Component name put on every line (e.g. `gateway`). */
  target?: string;
  /** Where finished lines go; default stderr. */
  sink?: (line: string) => void;
  /** Clock; default `Date.now`. */
  now?: () => number;
}

/** Parses a level name (case-insensitive); throws a readable error otherwise. */
export function parseLogLevel(value: string): LogLevel {
  const v = value.trim().toLowerCase();
  if ((LOG_LEVELS as readonly string[]).includes(v)) return v as LogLevel;
  throw new Error(`invalid log level "${value}" (expected one of ${LOG_LEVELS.join(", ")})`);
}

const encoder = new TextEncoder();

function writeStderr(line: string): void {
  try {
    Deno.stderr.writeSync(encoder.encode(line + "\n"));
  } catch {
    // stderr gone (closed pipe): nothing sensible left to do with a log line.
  }
}

function boundValue(v: string | number | boolean): string | number | boolean {
  return typeof v === "string" ? truncateForEcho(v, MAX_FIELD_CHARS) : v;
}

function formatValue(v: string | number | boolean): string {
  const s = String(boundValue(v));
  return /^[A-Za-z0-9._:/@+-]*$/.test(s) && s !== "" ? s : JSON.stringify(s);
}

/** Writes leveled lines with fields. */
export class Logger {
  readonly #rank: number;
  readonly #format: LogFormat;
  readonly #target: string;
  readonly #sink: (line: string) => void;
  readonly #now: () => number;
  readonly #base: LogFields;

  /** Creates a logger; `base` fields are added to every line. */
  constructor(options: LoggerOptions = {}, base: LogFields = {}) {
    this.#rank = LOG_LEVELS.indexOf(options.level ?? "info");
    this.#format = options.format ?? "text";
    this.#target = options.target ?? "";
    this.#sink = options.sink ?? writeStderr;
    this.#now = options.now ?? Date.now;
    this.#base = base;
  }

  /** A logger that adds `fields` to every line. */
  with(fields: LogFields): Logger {
    return new Logger(
      {
        level: LOG_LEVELS[this.#rank],
        format: this.#format,
        target: this.#target,
        sink: this.#sink,
        now: this.#now,
      },
      { ...this.#base, ...fields },
    );
  }

  /**
   * A logger that writes under another target (e.g. a child process's lines
   * passed through under the child's own name), keeping level, format, sink
   * and fields.
   */
  withTarget(target: string): Logger {
    return new Logger(
      {
        level: LOG_LEVELS[this.#rank],
        format: this.#format,
        target,
        sink: this.#sink,
        now: this.#now,
      },
      this.#base,
    );
  }

  /** Whether lines at `level` are written. */
  enabled(level: LogLevel): boolean {
    return LOG_LEVELS.indexOf(level) <= this.#rank;
  }

  /** Writes one line at `level`. */
  log(level: LogLevel, message: string, fields: LogFields = {}): void {
    if (!this.enabled(level)) return;
    const all: LogFields = { ...this.#base, ...fields };
    const time = new Date(this.#now()).toISOString();
    if (this.#format === "json") {
      const clean = Object.fromEntries(
        Object.entries(all).filter(([, v]) => v != null).map(([k, v]) => [
          k,
          boundValue(v as string | number | boolean),
        ]),
      );
      this.#sink(JSON.stringify({ time, level, target: this.#target, message, ...clean }));
      return;
    }
    const extra = Object.entries(all)
      .filter(([, v]) => v != null)
      .map(([k, v]) => `${k}=${formatValue(v as string | number | boolean)}`)
      .join(" ");
    const target = this.#target ? ` ${this.#target}:` : "";
    this.#sink(
      `${time} ${level.toUpperCase().padEnd(5)}${target} ${message}${extra ? " " + extra : ""}`,
    );
  }

  /** Writes an `error` line. */
  error(message: string, fields?: LogFields): void {
    this.log("error", message, fields);
  }
  /** Writes a `warn` line. */
  warn(message: string, fields?: LogFields): void {
    this.log("warn", message, fields);
  }
  /** Writes an `info` line. */
  info(message: string, fields?: LogFields): void {
    this.log("info", message, fields);
  }
  /** Writes a `debug` line. */
  debug(message: string, fields?: LogFields): void {
    this.log("debug", message, fields);
  }
}

/** A log line of ours read back: what {@link Logger} wrote, without its timestamp. */
export interface ParsedLogLine {
  /** Its time in ms (as the writer's clock said). */
  timeMs: number;
  /** Its level. */
  level: LogLevel;
  /** Its target ("" when none). */
  target: string;
  /** The message; in text format with its `key=value` fields (text cannot tell them apart). */
  message: string;
  /** Fields (JSON format only), values as strings. */
  fields: Record<string, string>;
}

const TEXT_LINE =
  /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) (ERROR|WARN|INFO|DEBUG|TRACE) +(?:([A-Za-z0-9_.@/-]{1,64}): )?(.*)$/;

/**
 * Reads back one line {@link Logger} wrote (text or JSON format), so that a
 * process passing on another one's output (the gateway its driver's, the
 * gateway a guest's console) can re-emit it once, with one timestamp and
 * one level, instead of wrapping it whole in its own line. `undefined` for
 * anything else.
 */
export function parseLogLine(line: string): ParsedLogLine | undefined {
  const text = line.trimEnd();
  if (text.startsWith("{")) {
    let o: unknown;
    try {
      o = JSON.parse(text);
    } catch {
      return undefined;
    }
    if (!o || typeof o !== "object" || Array.isArray(o)) return undefined;
    const { time, level, target, message, ...rest } = o as Record<string, unknown>;
    if (typeof time !== "string" || typeof level !== "string" || typeof message !== "string") {
      return undefined;
    }
    if (!(LOG_LEVELS as readonly string[]).includes(level)) return undefined;
    const timeMs = Date.parse(time);
    if (Number.isNaN(timeMs)) return undefined;
    const fields: Record<string, string> = {};
    for (const [k, v] of Object.entries(rest)) {
      if (v === null || typeof v === "object") continue;
      fields[k] = String(v);
    }
    return {
      timeMs,
      level: level as LogLevel,
      target: typeof target === "string" ? target : "",
      message,
      fields,
    };
  }
  const m = TEXT_LINE.exec(text);
  if (!m) return undefined;
  const timeMs = Date.parse(m[1]);
  if (Number.isNaN(timeMs)) return undefined;
  return {
    timeMs,
    level: m[2].toLowerCase() as LogLevel,
    target: m[3] ?? "",
    message: m[4],
    fields: {},
  };
}

/**
 * A readable message for any thrown or emitted value: an Error's message; for
 * a plain status object such as grpc-js emits (`{code, details}`) or any
 * object with `message`, `CODE_NAME: text`; otherwise its JSON (bounded).
 */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  if (typeof err === "object" && err !== null) {
    const o = err as { message?: unknown; details?: unknown; code?: unknown };
    const text = typeof o.details === "string" && o.details
      ? o.details
      : typeof o.message === "string" && o.message
      ? o.message
      : undefined;
    const code = typeof o.code === "number"
      ? codeName(o.code)
      : typeof o.code === "string" && o.code
      ? o.code
      : undefined;
    if (text !== undefined) return code ? `${code}: ${text}` : text;
    if (code) return code;
    try {
      const json = JSON.stringify(err);
      if (json !== undefined && json !== "{}") return truncateForEcho(json, MAX_FIELD_CHARS);
    } catch {
      // cyclic or otherwise unserialisable: fall through
    }
    const name = (err as { constructor?: { name?: unknown } }).constructor?.name;
    return typeof name === "string" && name ? `[${name}]` : "[object]";
  }
  return String(err);
}
