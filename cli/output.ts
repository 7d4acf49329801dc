/**
 * Everything the CLI prints that is not a command's raw data stream:
 * colours (only on a terminal, never with `NO_COLOR`), aligned tables, JSON,
 * ages and phase names.
 *
 * @module
 */
import type { Sandbox, SandboxPhase } from "../core/protocol.ts";

/** What decides whether colours are used. */
export interface ColorInputs {
  /** Whether the stream the text goes to is a terminal. */
  isTerminal: boolean;
  /** `NO_COLOR`: any non-empty value turns colours off (no-color.org). */
  noColor?: string;
  /** `TERM`: `dumb` turns colours off. */
  term?: string;
}

/** True when colours should be used. */
export function colorEnabled(inputs: ColorInputs): boolean {
  if (!inputs.isTerminal) return false;
  if (inputs.noColor !== undefined && inputs.noColor !== "") return false;
  return inputs.term !== "dumb";
}

/** Text styles; each is the identity when colours are off. */
export interface Style {
  /** Whether the functions add escape codes. */
  readonly enabled: boolean;
  /** Bold. */
  bold(text: string): string;
  /** Dim (secondary information). */
  dim(text: string): string;
  /** Green (success, READY). */
  green(text: string): string;
  /** Red (errors). */
  red(text: string): string;
  /** Yellow (in progress, warnings). */
  yellow(text: string): string;
  /** Cyan (names). */
  cyan(text: string): string;
}

function sgr(enabled: boolean, open: number, close: number): (text: string) => string {
  return enabled ? (text) => `\x1b[${open}m${text}\x1b[${close}m` : (text) => text;
}

/** A {@link Style} that colours when `enabled`. */
export function createStyle(enabled: boolean): Style {
  return {
    enabled,
    bold: sgr(enabled, 1, 22),
    dim: sgr(enabled, 2, 22),
    green: sgr(enabled, 32, 39),
    red: sgr(enabled, 31, 39),
    yellow: sgr(enabled, 33, 39),
    cyan: sgr(enabled, 36, 39),
  };
}

// deno-lint-ignore no-control-regex
const ANSI = /\x1b\[[0-9;?]*[A-Za-z]/g;

/** `text` without ANSI escape sequences. */
export function stripAnsi(text: string): string {
  return text.replace(ANSI, "");
}

/** Columns `text` occupies on a terminal (escape codes excluded; one per code point). */
export function displayWidth(text: string): number {
  return [...stripAnsi(text)].length;
}

/**
 * Rows aligned under a header, columns separated by three spaces, no
 * trailing blanks. Cells may already contain colour codes.
 */
export function renderTable(
  headers: readonly string[],
  rows: readonly (readonly string[])[],
  style: Style = createStyle(false),
): string {
  const widths = headers.map((h, i) =>
    Math.max(displayWidth(h), ...rows.map((r) => displayWidth(r[i] ?? "")))
  );
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => i === cells.length - 1 ? c : c + " ".repeat(widths[i] - displayWidth(c)))
      .join("   ")
      .trimEnd();
  return [line(headers.map((h) => style.bold(h))), ...rows.map(line)].join("\n") + "\n";
}

/** Pretty JSON followed by a newline. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, null, 2) + "\n";
}

/** A compact age such as `42s`, `5m`, `3h`, `2d` (0 or a future time → `0s`). */
export function formatAge(thenMs: number, nowMs: number): string {
  if (!thenMs) return "-";
  const s = Math.max(0, Math.floor((nowMs - thenMs) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** Seconds with one decimal, e.g. `3.4s`. */
export function formatElapsed(ms: number): string {
  return `${(Math.max(0, ms) / 1000).toFixed(1)}s`;
}

const PHASE_LABELS: Record<SandboxPhase, string> = {
  SANDBOX_PHASE_UNSPECIFIED: "Unknown",
  SANDBOX_PHASE_PROVISIONING: "Provisioning",
  SANDBOX_PHASE_READY: "Ready",
  SANDBOX_PHASE_ERROR: "Error",
  SANDBOX_PHASE_DELETING: "Deleting",
  SANDBOX_PHASE_UNKNOWN: "Unknown",
  SANDBOX_PHASE_STOPPING: "Stopping",
  SANDBOX_PHASE_STOPPED: "Stopped",
  SANDBOX_PHASE_STARTING: "Starting",
};

/** A human name for a phase (`SANDBOX_PHASE_READY` → `Ready`). */
export function phaseLabel(phase: SandboxPhase | string): string {
  return PHASE_LABELS[phase as SandboxPhase] ?? String(phase).replace(/^SANDBOX_PHASE_/, "");
}

/** {@link phaseLabel} coloured by meaning: green ready, red error, dim stopped, yellow in between. */
export function styledPhase(phase: SandboxPhase | string, style: Style): string {
  const label = phaseLabel(phase);
  if (phase === "SANDBOX_PHASE_READY") return style.green(label);
  if (phase === "SANDBOX_PHASE_ERROR") return style.red(label);
  if (phase === "SANDBOX_PHASE_STOPPED") return style.dim(label);
  return style.yellow(label);
}

/** The `Ready` condition of a sandbox, if it has one. */
export function readyCondition(
  sandbox: Sandbox,
): { status: string; reason: string; message: string } | undefined {
  return sandbox.status?.conditions?.find((c) => c.type === "Ready");
}

/** Why a sandbox is in its phase, from its `Ready` condition (`reason: message`), or "". */
export function phaseReason(sandbox: Sandbox): string {
  const c = readyCondition(sandbox);
  if (!c) return "";
  if (c.reason && c.message) return `${c.reason}: ${c.message}`;
  return c.reason || c.message;
}

/** `sandbox list` as a table: NAME, ID, PHASE, AGE. */
export function sandboxTable(sandboxes: readonly Sandbox[], nowMs: number, style: Style): string {
  return renderTable(
    ["NAME", "ID", "PHASE", "AGE"],
    sandboxes.map((s) => [
      style.cyan(s.name),
      s.id,
      styledPhase(s.phase, style),
      formatAge(s.created_at_ms, nowMs),
    ]),
    style,
  );
}

/** `sandbox get` as aligned `Key: value` lines. */
export function sandboxDetails(sandbox: Sandbox, nowMs: number, style: Style): string {
  const created = sandbox.created_at_ms
    ? `${new Date(sandbox.created_at_ms).toISOString()} (${
      formatAge(sandbox.created_at_ms, nowMs)
    } ago)`
    : "-";
  const pairs: [string, string][] = [
    ["Name", style.cyan(sandbox.name)],
    ["Id", sandbox.id],
    ["Namespace", sandbox.namespace || "-"],
    ["Phase", styledPhase(sandbox.phase, style)],
    ["Created", created],
  ];
  const reason = phaseReason(sandbox);
  if (reason) pairs.push(["Reason", reason]);
  const env = Object.keys(sandbox.spec?.environment ?? {}).sort();
  if (env.length) pairs.push(["Environment", env.join(", ")]);
  const width = Math.max(...pairs.map(([k]) => k.length)) + 1;
  let text = pairs.map(([k, v]) => `${(k + ":").padEnd(width)}  ${v}`).join("\n") + "\n";
  const conditions = sandbox.status?.conditions ?? [];
  if (conditions.length) {
    text += `${style.bold("Conditions:")}\n`;
    for (const c of conditions) {
      const detail = [c.reason, c.message].filter(Boolean).join(": ");
      text += `  ${c.type}=${c.status}${detail ? `  ${detail}` : ""}\n`;
    }
  }
  return text;
}
