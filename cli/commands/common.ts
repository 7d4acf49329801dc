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
import { phaseLabel, phaseReason } from "../output.ts";
import { hostKeyAlias } from "../ssh.ts";

/** What to do about a sandbox that failed or never got ready. */
export function inspectHint(name: string): string {
  return `see 'openshell sandbox logs ${name}', delete it with 'openshell sandbox delete ${name}'`;
}

/** `Phase` or `Phase: reason: message` from the sandbox's Ready condition. */
function phaseWithReason(sandbox: Sandbox): string {
  const reason = phaseReason(sandbox);
  return `${phaseLabel(sandbox.phase)}${reason ? `: ${reason}` : ""}`;
}

/**
 * Why a command cannot use `sandbox` now, and what to do, in one line: a
 * failed one shows the reason its Ready condition gives and points at its
 * logs and at delete; one still provisioning says so; `detail` (the
 * gateway's own message) is added when the phase does not explain it.
 */
export function notReadyMessage(sandbox: Sandbox, detail = ""): string {
  const name = `sandbox "${sandbox.name}"`;
  switch (sandbox.phase) {
    case "SANDBOX_PHASE_ERROR":
      return `${name} failed (${phaseReason(sandbox) || "no reason given"}): ${
        inspectHint(sandbox.name)
      }`;
    case "SANDBOX_PHASE_PROVISIONING":
      return `${name} is not ready yet (${phaseWithReason(sandbox)}): see 'openshell sandbox ` +
        `logs ${sandbox.name}'`;
    case "SANDBOX_PHASE_DELETING":
      return `${name} is being deleted`;
    case "SANDBOX_PHASE_READY":
      return `${name} is not ready${detail ? `: ${detail}` : ""}`;
    default:
      return `${name} is not ready (${phaseWithReason(sandbox)})${detail ? `: ${detail}` : ""}`;
  }
}

/** The one line `create` reports for a name that is taken. */
export function nameTakenMessage(name: string): string {
  return `sandbox "${name}" already exists: pick another --name, or delete it with ` +
    `'openshell sandbox delete ${name}'`;
}

/** The line that says which sandbox a command without NAME uses. */
export function lastUsedNotice(name: string): string {
  return `→ using sandbox '${name}' (last used)`;
}

/**
 * The sandbox named on the command line, else the one last used on this
 * gateway (announced on stderr, so nothing runs somewhere unsaid).
 */
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
  ctx.err(`${ctx.errStyle.dim(lastUsedNotice(last))}\n`);
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

/**
 * Removes a deleted sandbox's host key from the CLI's known_hosts (best
 * effort: a read-only config dir must not fail the delete).
 */
export async function forgetHostKey(ctx: Context, sandboxId: string): Promise<void> {
  try {
    await ctx.store.forgetKnownHost(hostKeyAlias(sandboxId));
  } catch {
    // the entry stays; ssh pins by sandbox id, so it matches no other sandbox
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
