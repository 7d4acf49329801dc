/**
 * `openshell sandbox stop NAME…` and `openshell sandbox start NAME…`: stop a
 * sandbox's VM (its disk and files are kept) and boot it again.
 *
 * @module
 */
import { Code } from "../../core/status.ts";
import { UsageError } from "../args.ts";
import { GatewayError } from "../client.ts";
import type { Context } from "../context.ts";
import { CliError } from "../errors.ts";
import { phaseReason } from "../output.ts";
import { rememberSandbox } from "./common.ts";
import { DEFAULT_PROVISION_TIMEOUT_S, waitUntilReady } from "./create.ts";

function names(ctx: Context, id: string): string[] {
  const given = ctx.invocation.positionals;
  if (!given.length) throw new UsageError("missing NAME", id);
  return [...new Set(given)];
}

function notFound(e: unknown, name: string): never {
  if (e instanceof GatewayError && e.code === Code.NOT_FOUND) {
    throw new CliError(`sandbox "${name}" not found`);
  }
  throw e;
}

/** `sandbox stop NAME…`: each sandbox's VM shuts down; its disk stays. */
export async function sandboxStopCommand(ctx: Context): Promise<number> {
  const client = await ctx.client();
  for (const name of names(ctx, "sandbox stop")) {
    const sandbox = await client.stopSandbox(name).catch((e) => notFound(e, name));
    if (sandbox.phase !== "SANDBOX_PHASE_STOPPED") {
      const why = phaseReason(sandbox);
      throw new CliError(`sandbox ${name} did not stop${why ? `: ${why}` : ""}`);
    }
    await ctx.out(`Stopped sandbox ${ctx.style.cyan(name)}\n`);
  }
  return 0;
}

/**
 * `sandbox start NAME… [--no-wait] [--timeout S]`: each sandbox boots again
 * and, unless `--no-wait`, the command follows it until READY.
 */
export async function sandboxStartCommand(ctx: Context): Promise<number> {
  const timeoutS = ctx.num("timeout") ?? DEFAULT_PROVISION_TIMEOUT_S;
  const wait = !ctx.flag("no-wait");
  const client = await ctx.client();
  ctx.handleInterrupts();
  for (const name of names(ctx, "sandbox start")) {
    const sandbox = await client.startSandbox(name).catch((e) => notFound(e, name));
    await rememberSandbox(ctx, name);
    if (sandbox.phase === "SANDBOX_PHASE_READY") {
      ctx.err(`Sandbox ${ctx.errStyle.cyan(name)} is ready\n`);
      continue;
    }
    ctx.err(`Starting sandbox ${ctx.errStyle.cyan(name)}\n`);
    if (wait) await waitUntilReady(ctx, sandbox, { timeoutS });
  }
  return 0;
}
