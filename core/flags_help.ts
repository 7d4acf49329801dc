/**
 * `--help` of every role in one layout (the options layer, `core/flags.ts`):
 * what it does, `Usage:`, sections of options (each with its facts in
 * brackets: required, choices, range, repeatable, default, env twin) or of
 * commands, examples, a closing line.
 *
 * @module
 */
import { type FlagSpec, type FlagTable, HELP_FLAG } from "./flags.ts";

/** One section of a help page: options of a table, or rows of name and summary. */
export interface HelpSection {
  /** Heading, e.g. `Options`. */
  title: string;
  /** Options to list (`-h, --help` is listed when `help` is true). */
  flags?: FlagTable;
  /** Whether to list `-h, --help` after the options. */
  help?: boolean;
  /** Rows of a list (commands): name and summary. */
  rows?: readonly (readonly [string, string])[];
}

/** A help page; every role's `--help` is one. */
export interface HelpPage {
  /** What the program or command does (wrapped). */
  about?: string;
  /** The usage line(s), without `Usage: `. */
  usage: string | readonly string[];
  /** Option and command sections in order. */
  sections: readonly HelpSection[];
  /** Example invocations. */
  examples?: readonly string[];
  /** Closing line(s). */
  footer?: string;
}

/** Width help text is wrapped to. */
const HELP_WIDTH = 100;

/** Words of `text` wrapped to `width` columns. */
export function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines;
}

function placeholder(spec: FlagSpec): string {
  if (spec.value) return spec.value;
  switch (spec.kind) {
    case "path":
      return "PATH";
    case "int":
      return "N";
    case "size":
      return "SIZE";
    case "duration":
      return "DURATION";
    case "list":
      return "A,B";
    case "choice": {
      const all = (spec.choices ?? []).join("|");
      return all.length <= 16 ? all : "VALUE";
    }
    default:
      return "VALUE";
  }
}

/** The left column of an option: `-n, --name VALUE`. */
export function optionLabel(name: string, spec: FlagSpec): string {
  const value = spec.kind === "bool" ? "" : ` ${placeholder(spec)}`;
  return `${spec.short ? `-${spec.short}, ` : "    "}--${name}${value}`;
}

function defaultText(spec: FlagSpec): string {
  const d = spec.default;
  if (d === undefined || spec.secret || d === false || d === "") return "";
  if (Array.isArray(d)) return d.length ? `default ${d.join(",")}` : "";
  if (spec.kind === "duration") return `default ${d}s`;
  if (spec.kind === "size") return `default ${d} ${spec.unit ?? "B"}`;
  return `default ${d}`;
}

/** The bracketed facts after an option's help: required, choices, range, default, env twin. */
export function optionFacts(spec: FlagSpec): string {
  const n = (v: number) => spec.kind === "duration" ? `${v}s` : String(v);
  const unit = spec.kind === "size" ? ` ${spec.unit ?? "B"}` : "";
  const range = spec.min !== undefined && spec.max !== undefined
    ? `${n(spec.min)} to ${n(spec.max)}${unit}`
    : spec.min !== undefined
    ? `at least ${n(spec.min)}${unit}`
    : spec.max !== undefined
    ? `at most ${n(spec.max)}${unit}`
    : "";
  const choices = spec.choices && placeholder(spec) !== spec.choices.join("|")
    ? `one of ${spec.choices.join(", ")}`
    : "";
  const facts = [
    spec.required ? "required" : "",
    choices,
    range,
    spec.repeatable ? "repeatable" : "",
    defaultText(spec),
    spec.env ? `env ${spec.env}${spec.envOnly ? " only" : ""}` : "",
  ].filter(Boolean);
  return facts.length ? ` [${facts.join("; ")}]` : "";
}

function twoColumns(rows: readonly (readonly [string, string])[]): string[] {
  if (rows.length === 0) return [];
  const width = Math.min(32, Math.max(...rows.map(([l]) => l.length)));
  const text = Math.max(30, HELP_WIDTH - width - 4);
  const pad = " ".repeat(width + 4);
  return rows.flatMap(([left, right]) => {
    // "env NAME" and "default VALUE" stay on one line.
    const glued = right.replace(/\b(env|default) (?=\S)/g, "$1\u0000");
    const wrapped = wrap(glued, text).map((l) => l.replaceAll("\u0000", " "));
    if (left.length > width) return [`  ${left}`, ...wrapped.map((l) => pad + l)];
    return [
      `  ${left.padEnd(width)}  ${wrapped[0] ?? ""}`,
      ...wrapped.slice(1).map((l) => pad + l),
    ];
  });
}

/** The rows (label, help with facts) of a table's visible options. */
export function optionRows(table: FlagTable, help = false): [string, string][] {
  const rows = Object.entries(table)
    .filter(([, s]) => !s.hidden)
    .map(([n, s]): [string, string] => [optionLabel(n, s), `${s.help}${optionFacts(s)}`]);
  if (help && !table.help) rows.push([optionLabel("help", HELP_FLAG), HELP_FLAG.help]);
  return rows;
}

/**
 * A help page in the one layout every role shares: what it does, `Usage:`,
 * sections (options with their facts and env twins; command lists),
 * examples, footer.
 */
export function renderHelp(page: HelpPage): string {
  const lines: string[] = [];
  if (page.about) {
    for (const para of page.about.split("\n\n")) lines.push(...wrap(para, HELP_WIDTH), "");
  }
  const usage = typeof page.usage === "string" ? [page.usage] : page.usage;
  lines.push(...usage.map((u, i) => `${i === 0 ? "Usage:" : "      "} ${u}`));
  for (const section of page.sections) {
    const rows = section.rows ?? optionRows(section.flags ?? {}, section.help);
    if (rows.length === 0) continue;
    lines.push("", `${section.title}:`, ...twoColumns(rows));
  }
  if (page.examples?.length) lines.push("", "Examples:", ...page.examples.map((e) => `  ${e}`));
  if (page.footer) lines.push("", ...wrap(page.footer, HELP_WIDTH));
  return lines.join("\n") + "\n";
}
