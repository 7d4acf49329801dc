/**
 * `openshell sandbox get|list|delete|logs`.
 *
 * @module
 */
import type { Sandbox, SandboxLogLine } from "../../core/protocol.ts";
import { readOcsfLine } from "../../core/ocsf.ts";
import { stripControls } from "../../core/text.ts";
import { sinceOption, UsageError } from "../args.ts";
import type { Context } from "../context.ts";
import { CliError } from "../errors.ts";
import { sandboxDetails, sandboxTable, type Style, toJson } from "../output.ts";
import { Code } from "../../core/status.ts";
import { GatewayError } from "../client.ts";
import { forgetHostKey, lookupSandbox, sandboxNameArg } from "./common.ts";

/** `sandbox get [NAME] [--output text|json]`. */
export async function sandboxGetCommand(ctx: Context): Promise<number> {
  const format = ctx.str("output");
  const sandbox = await lookupSandbox(ctx, await sandboxNameArg(ctx));
  await ctx.out(
    format === "json" ? toJson(sandbox) : sandboxDetails(sandbox, Date.now(), ctx.style),
  );
  return 0;
}

/** `sandbox list [--names|--ids] [--output table|json] [--limit N] [--offset N]`. */
export async function sandboxListCommand(ctx: Context): Promise<number> {
  const format = ctx.str("output");
  if (ctx.flag("names") && ctx.flag("ids")) {
    throw new UsageError("--names and --ids exclude each other", "sandbox list");
  }
  const limit = ctx.num("limit");
  const offset = ctx.num("offset") ?? 0;
  const client = await ctx.client();
  let sandboxes: Sandbox[];
  if (limit !== undefined) {
    sandboxes = await client.listSandboxes(limit, offset);
  } else {
    sandboxes = (await client.listAllSandboxes()).slice(offset);
  }
  if (ctx.flag("names") || ctx.flag("ids")) {
    const key = ctx.flag("names") ? "name" : "id";
    await ctx.out(sandboxes.map((s) => `${s[key]}\n`).join(""));
    return 0;
  }
  if (format === "json") {
    await ctx.out(toJson(sandboxes));
    return 0;
  }
  if (sandboxes.length === 0) {
    ctx.err("No sandboxes.\n");
    return 0;
  }
  await ctx.out(sandboxTable(sandboxes, Date.now(), ctx.style));
  return 0;
}

/** The one error line of `sandbox delete` for the names that did not exist. */
export function notFoundMessage(missing: readonly string[]): string {
  const quoted = missing.map((n) => `"${n}"`).join(", ");
  return `${missing.length === 1 ? "sandbox" : "sandboxes"} ${quoted} not found`;
}

/**
 * `sandbox delete NAME…|--all`: deletes each, forgetting its host key in
 * the CLI's known_hosts; exit 1 (one error line) when any named sandbox
 * did not exist.
 */
export async function sandboxDeleteCommand(ctx: Context): Promise<number> {
  const all = ctx.flag("all");
  const names = ctx.invocation.positionals;
  if (all && names.length) {
    throw new UsageError("give sandbox names or --all, not both", "sandbox delete");
  }
  if (!all && !names.length) {
    throw new UsageError("missing NAME (or --all)", "sandbox delete");
  }
  const client = await ctx.client();
  const gw = await ctx.gateway();
  let targets: { name: string; id?: string }[] = names.map((name) => ({ name }));
  if (all) {
    targets = (await client.listAllSandboxes()).map((s) => ({ name: s.name, id: s.id }));
    if (!targets.length) {
      ctx.err("No sandboxes to delete.\n");
      return 0;
    }
  }
  const missing: string[] = [];
  for (const { name, id } of targets) {
    // Its id names its host key; a sandbox that is not there is simply missing.
    const sandboxId = id ?? (await client.getSandbox(name).catch((e) => {
      if (e instanceof GatewayError && e.code === Code.NOT_FOUND) return undefined;
      throw e;
    }))?.id;
    if (sandboxId !== undefined && await client.deleteSandbox(name)) {
      await ctx.out(`Deleted sandbox ${ctx.style.cyan(name)}\n`);
      await ctx.store.clearLastSandbox(gw.key, name).catch(() => {});
      await forgetHostKey(ctx, sandboxId);
    } else {
      missing.push(name);
    }
  }
  if (missing.length) throw new CliError(notFoundMessage(missing));
  return 0;
}

/**
 * One log line as text: `TIME LEVEL [source] target: message key=value…`.
 * Every string in it came from the gateway, and console lines from a guest:
 * all C0/C1 controls but tab and newline are removed (escape sequences
 * whole: no OSC 52 clipboard writes, no DCS, no cursor games).
 */
export function formatLogLine(line: SandboxLogLine, style: Style): string {
  const time = line.timestamp_ms ? new Date(line.timestamp_ms).toISOString() : "-";
  const source = stripControls(line.source || "gateway");
  // An OCSF event (its JSON is the message) shows as its own one-line message.
  const event = line.target === "ocsf" ? readOcsfLine(line.message) : undefined;
  const message = event ? event.message : line.message;
  const level = stripControls((line.level || "info").toUpperCase());
  const painted = level === "ERROR"
    ? style.red(level.padEnd(5))
    : level === "WARN" || level === "WARNING"
    ? style.yellow(level.padEnd(5))
    : style.dim(level.padEnd(5));
  const fields = Object.entries(line.fields ?? {})
    .map(([k, v]) => ` ${stripControls(k)}=${stripControls(String(v))}`)
    .join("");
  // The target only when it says more than the source does.
  const targetText = stripControls(line.target);
  const target = targetText && !sameAsSource(targetText, source) ? `${targetText}: ` : "";
  return `${style.dim(time)} ${painted} [${source}] ${target}${stripControls(message)}${fields}\n`;
}

function sameAsSource(target: string, source: string): boolean {
  return target === source || target === `openshell_${source}` || target === `openshell-${source}`;
}

/**
 * One log line as a JSON line. JSON escapes C0 controls itself; DEL and the
 * C1 range (U+007F–U+009F) are escaped too, so printing it on a terminal is
 * safe, and parsing it gives back exactly what the gateway sent — except
 * that an OCSF event line carries the event as an object in `ocsf` and its
 * one-line message in `message` (instead of the event's JSON as a string).
 */
export function jsonLogLine(line: SandboxLogLine): string {
  const event = line.target === "ocsf" ? readOcsfLine(line.message) : undefined;
  const value = event ? { ...line, message: event.message, ocsf: event.event } : line;
  return JSON.stringify(value).replace(
    /[\u007f-\u009f]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  ) + "\n";
}

/**
 * `sandbox logs [NAME] [--follow] [--lines N] [--since WHEN] [--level L]
 * [--source SRC]… [--output text|json]`: the filters are the gateway's
 * (`GetSandboxLogs`, and `WatchSandbox` for `--follow`).
 */
export async function sandboxLogsCommand(ctx: Context): Promise<number> {
  const format = ctx.str("output");
  const lines = ctx.num("lines") ?? 200;
  const sinceMs = sinceOption("since", ctx.str("since"), Date.now()) ?? 0;
  const minLevel = ctx.str("level") ?? "";
  const sources = [...new Set(ctx.list("source"))];
  const sandbox = await lookupSandbox(ctx, await sandboxNameArg(ctx));
  const client = await ctx.client();
  const print = (line: SandboxLogLine) =>
    ctx.out(format === "json" ? jsonLogLine(line) : formatLogLine(line, ctx.style));
  if (!ctx.flag("follow")) {
    const res = await client.getSandboxLogs({
      sandbox_id: sandbox.id,
      lines,
      since_ms: sinceMs,
      sources,
      min_level: minLevel,
    });
    for (const line of res.logs) await print(line);
    return 0;
  }
  ctx.handleInterrupts();
  const stream = client.watchSandbox({
    id: sandbox.id,
    follow_logs: true,
    log_tail_lines: lines,
    log_since_ms: sinceMs,
    log_sources: sources,
    log_min_level: minLevel,
  });
  const onInterrupt = () => stream.cancel();
  ctx.interrupt.addEventListener("abort", onInterrupt, { once: true });
  try {
    for await (const event of stream) {
      if (event.payload === "log") await print(event.log);
      else if (event.payload === "warning") {
        ctx.err(`warning: ${stripControls(event.warning.message)}\n`);
      }
    }
  } finally {
    ctx.interrupt.removeEventListener("abort", onInterrupt);
  }
  return 0;
}
