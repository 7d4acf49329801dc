/**
 * `openshell sandbox get|list|delete|logs`.
 *
 * @module
 */
import type { Sandbox, SandboxLogLine } from "../../core/protocol.ts";
import { stripControls } from "../../core/text.ts";
import { integerOption, outputOption, UsageError } from "../args.ts";
import type { Context } from "../context.ts";
import { CliError } from "../errors.ts";
import { sandboxDetails, sandboxTable, type Style, toJson } from "../output.ts";
import { lookupSandbox, sandboxNameArg } from "./common.ts";

/** `sandbox get [NAME] [--output text|json]`. */
export async function sandboxGetCommand(ctx: Context): Promise<number> {
  const format = outputOption(ctx.str("output"), ["text", "json"] as const);
  const sandbox = await lookupSandbox(ctx, await sandboxNameArg(ctx));
  await ctx.out(
    format === "json" ? toJson(sandbox) : sandboxDetails(sandbox, Date.now(), ctx.style),
  );
  return 0;
}

/** `sandbox list [--names|--ids] [--output table|json] [--limit N] [--offset N]`. */
export async function sandboxListCommand(ctx: Context): Promise<number> {
  const format = outputOption(ctx.str("output"), ["table", "json"] as const);
  if (ctx.flag("names") && ctx.flag("ids")) {
    throw new UsageError("--names and --ids exclude each other", "sandbox list");
  }
  const limit = integerOption("limit", ctx.str("limit"), { min: 1 });
  const offset = integerOption("offset", ctx.str("offset")) ?? 0;
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

/** `sandbox delete NAME…|--all`; exit 1 when any named sandbox did not exist. */
export async function sandboxDeleteCommand(ctx: Context): Promise<number> {
  let names = ctx.invocation.positionals;
  const all = ctx.flag("all");
  if (all && names.length) {
    throw new UsageError("give sandbox names or --all, not both", "sandbox delete");
  }
  if (!all && !names.length) {
    throw new UsageError("missing NAME (or --all)", "sandbox delete");
  }
  const client = await ctx.client();
  const gw = await ctx.gateway();
  if (all) {
    names = (await client.listAllSandboxes()).map((s) => s.name);
    if (!names.length) {
      ctx.err("No sandboxes to delete.\n");
      return 0;
    }
  }
  let missing = 0;
  for (const name of names) {
    if (await client.deleteSandbox(name)) {
      await ctx.out(`Deleted sandbox ${ctx.style.cyan(name)}\n`);
      await ctx.store.clearLastSandbox(gw.key, name).catch(() => {});
    } else {
      ctx.err(`${ctx.errStyle.yellow("!")} Sandbox ${name} not found\n`);
      missing++;
    }
  }
  if (missing) throw new CliError(`${missing} of ${names.length} sandboxes not found`);
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
  const level = stripControls((line.level || "info").toUpperCase());
  const painted = level === "ERROR"
    ? style.red(level.padEnd(5))
    : level === "WARN" || level === "WARNING"
    ? style.yellow(level.padEnd(5))
    : style.dim(level.padEnd(5));
  const fields = Object.entries(line.fields ?? {})
    .map(([k, v]) => ` ${stripControls(k)}=${stripControls(String(v))}`)
    .join("");
  const target = line.target ? `${stripControls(line.target)}: ` : "";
  return `${style.dim(time)} ${painted} [${stripControls(line.source || "gateway")}] ${target}${
    stripControls(line.message)
  }${fields}\n`;
}

/**
 * One log line as a JSON line. JSON escapes C0 controls itself; DEL and the
 * C1 range (U+007F–U+009F) are escaped too, so printing it on a terminal is
 * safe, and parsing it gives back exactly what the gateway sent.
 */
export function jsonLogLine(line: SandboxLogLine): string {
  return JSON.stringify(line).replace(
    /[\u007f-\u009f]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  ) + "\n";
}

/** `sandbox logs [NAME] [--follow] [--lines N] [--output text|json]`. */
export async function sandboxLogsCommand(ctx: Context): Promise<number> {
  const format = outputOption(ctx.str("output"), ["text", "json"] as const);
  const lines = integerOption("lines", ctx.str("lines"), { min: 1, max: 100_000 }) ?? 200;
  const sandbox = await lookupSandbox(ctx, await sandboxNameArg(ctx));
  const client = await ctx.client();
  const print = (line: SandboxLogLine) =>
    ctx.out(format === "json" ? jsonLogLine(line) : formatLogLine(line, ctx.style));
  if (!ctx.flag("follow")) {
    const res = await client.getSandboxLogs({ sandbox_id: sandbox.id, lines });
    for (const line of res.logs) await print(line);
    return 0;
  }
  ctx.handleInterrupts();
  const stream = client.watchSandbox({
    id: sandbox.id,
    follow_logs: true,
    log_tail_lines: lines,
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
