/**
 * Running OpenSSH against a sandbox: a fresh `CreateSshSession`, the
 * `ssh-proxy` ProxyCommand that carries its token (and the host key
 * fingerprint to pin), and the `ssh` child process itself.
 *
 * @module
 */
import type { Sandbox } from "../../core/protocol.ts";
import { Code } from "../../core/status.ts";
import { GatewayError } from "../client.ts";
import type { Context } from "../context.ts";
import { CliError } from "../errors.ts";
import { phaseLabel } from "../output.ts";
import { netGrantsFor, selfCommand } from "../self.ts";
import { type SshAccess, sshArgs } from "../ssh.ts";
import { tunnelTargetOf, validateTarget } from "../ssh_proxy.ts";

const FINGERPRINT = /^SHA256:[A-Za-z0-9+/]+=*$/;

/** A URL host (IPv6 in brackets). */
function urlHost(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

/** Creates an SSH session for `sandbox` and the ssh settings that use it (token mode). */
export async function sessionAccess(ctx: Context, sandbox: Sandbox): Promise<SshAccess> {
  const client = await ctx.client();
  const gw = await ctx.gateway();
  let session;
  try {
    session = await client.createSshSession(sandbox.id);
  } catch (e) {
    if (e instanceof GatewayError && e.code === Code.FAILED_PRECONDITION) {
      const current = await client.getSandbox(sandbox.name).catch(() => sandbox);
      throw new CliError(`sandbox "${sandbox.name}" is not ready (${phaseLabel(current.phase)})`);
    }
    throw e;
  }
  const target = tunnelTargetOf(session, gw.endpoint);
  validateTarget(target);
  const fp = session.host_key_fingerprint;
  if (fp && !FINGERPRINT.test(fp)) {
    throw new CliError(`the gateway sent an invalid host key fingerprint "${fp.slice(0, 80)}"`);
  }
  const args = [
    "ssh-proxy",
    "--gateway",
    `${target.scheme}://${urlHost(target.host)}:${target.port}${target.path}`,
    "--sandbox-id",
    target.sandboxId,
    "--token",
    target.token,
    ...(fp ? ["--host-key-fingerprint", fp] : []),
    ...(gw.name ? ["--gateway-name", gw.name] : []),
    "--config-dir",
    ctx.store.root,
  ];
  await ctx.store.ensureRoot();
  return {
    sandboxName: sandbox.name,
    sandboxId: sandbox.id,
    proxyCommand: selfCommand(args, {
      configDir: ctx.store.root,
      gateways: netGrantsFor(target.host, target.port),
    }),
    knownHostsFile: ctx.store.knownHostsPath,
  };
}

/** The ssh settings of `sandbox ssh-config` (name mode: a fresh session per connection). */
export async function configAccess(ctx: Context, sandbox: Sandbox): Promise<SshAccess> {
  const gw = await ctx.gateway();
  const args = [
    "ssh-proxy",
    "--name",
    sandbox.name,
    "--sandbox-id",
    sandbox.id,
    "--gateway-endpoint",
    gw.endpoint.url,
    ...(gw.name ? ["--gateway", gw.name] : []),
    "--config-dir",
    ctx.store.root,
  ];
  await ctx.store.ensureRoot();
  return {
    sandboxName: sandbox.name,
    sandboxId: sandbox.id,
    proxyCommand: selfCommand(args, {
      configDir: ctx.store.root,
      gateways: netGrantsFor(gw.endpoint.host, gw.endpoint.port),
    }),
    knownHostsFile: ctx.store.knownHostsPath,
  };
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };

/** Options of {@link runSsh}. */
export interface RunSshOptions {
  /** Remote argv; none = a shell. */
  command?: readonly string[];
  /** Request a pseudo-terminal. */
  tty: boolean;
}

/**
 * Runs `ssh` with the terminal attached and returns its exit status (the
 * remote command's, or 255 when ssh itself failed). Ctrl-C reaches ssh.
 */
export async function runSsh(
  ctx: Context,
  access: SshAccess,
  options: RunSshOptions,
): Promise<number> {
  ctx.handleInterrupts();
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("ssh", {
      args: sshArgs(access, options),
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new CliError("ssh not found: install the OpenSSH client");
    }
    if (e instanceof Deno.errors.NotCapable) throw new CliError("not permitted to run ssh");
    throw e;
  }
  const forward = () => {
    try {
      child.kill("SIGINT");
    } catch {
      // already gone
    }
  };
  ctx.interrupt.addEventListener("abort", forward, { once: true });
  try {
    const status = await child.status;
    return status.signal ? 128 + (SIGNALS[status.signal] ?? 1) : status.code;
  } finally {
    ctx.interrupt.removeEventListener("abort", forward);
  }
}
