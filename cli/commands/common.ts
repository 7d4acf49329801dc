/**
 * Helpers shared by the sandbox commands: which sandbox a command means,
 * looking it up with a readable error, and remembering the last one used.
 *
 * @module
 */
import type { Sandbox } from "../../core/protocol.ts";
import { Code } from "../../core/status.ts";
import { GatewayError } from "../client.ts";
import type { Context } from "../context.ts";
import { CliError } from "../errors.ts";

/** The sandbox named on the command line, else the one last used on this gateway. */
export async function sandboxNameArg(ctx: Context): Promise<string> {
  const given = ctx.invocation.positionals[0];
  if (given) return given;
  const gw = await ctx.gateway();
  const last = await ctx.store.lastSandbox(gw.key);
  if (!last) {
    throw new CliError(
      `no sandbox given and none used before on this gateway (usage: openshell ${ctx.invocation.spec.id} NAME)`,
    );
  }
  return last;
}

/** `GetSandbox` with a `sandbox "NAME" not found` error. */
export async function lookupSandbox(ctx: Context, name: string): Promise<Sandbox> {
  const client = await ctx.client();
  try {
    return await client.getSandbox(name);
  } catch (e) {
    if (e instanceof GatewayError && e.code === Code.NOT_FOUND) {
      throw new CliError(`sandbox "${name}" not found`);
    }
    throw e;
  }
}

/** Remembers `name` as the last sandbox used on this gateway (best effort). */
export async function rememberSandbox(ctx: Context, name: string): Promise<void> {
  try {
    const gw = await ctx.gateway();
    await ctx.store.setLastSandbox(gw.key, name);
  } catch {
    // Remembering is a convenience; a read-only config dir must not fail the command.
  }
}
