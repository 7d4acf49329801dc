/**
 * `openshell sandbox connect [NAME]` and `openshell sandbox ssh-config NAME`.
 *
 * @module
 */
import type { Context } from "../context.ts";
import { renderSshConfig } from "../ssh.ts";
import { lookupSandbox, rememberSandbox, sandboxNameArg } from "./common.ts";
import { configAccess, runSsh, sessionAccess } from "./ssh_session.ts";

/** `sandbox connect [NAME]`: an interactive shell; exits with ssh's status. */
export async function sandboxConnectCommand(ctx: Context): Promise<number> {
  const sandbox = await lookupSandbox(ctx, await sandboxNameArg(ctx));
  const access = await sessionAccess(ctx, sandbox);
  await rememberSandbox(ctx, sandbox.name);
  return await runSsh(ctx, access, { tty: ctx.streams.stdin.isTerminal() });
}

/** `sandbox ssh-config NAME`: prints a `Host openshell-NAME` block. */
export async function sandboxSshConfigCommand(ctx: Context): Promise<number> {
  const sandbox = await lookupSandbox(ctx, ctx.invocation.positionals[0]);
  await ctx.out(renderSshConfig(await configAccess(ctx, sandbox)));
  return 0;
}
